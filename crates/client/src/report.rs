//! The outcome of a load run: a table for people and the same numbers as JSON.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bad::BadRequestSummary;
use crate::error::{Error, Result};
use crate::stats::{LatencySummary, RequestKind};

/// Everything a load run measured and found.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// The front-end's base URL.
    pub frontend: String,
    /// Simulated clients.
    pub clients: usize,
    /// Iterations per client, for a run of set length.
    pub iterations_per_client: Option<u64>,
    /// Seconds, for a run of set duration.
    pub duration_s: Option<f64>,
    /// Probability of a trade after each lookup.
    pub trade_probability: f64,
    /// The seed that repeats this run's requests.
    pub seed: u64,
    /// Stocks the front-end listed.
    pub stocks: usize,
    /// Wall-clock seconds of the lookups and trades.
    pub load_elapsed_s: f64,
    /// Wall-clock seconds of the order queries.
    pub verify_elapsed_s: f64,
    /// `GET /stocks/{name}`.
    pub lookup: LatencySummary,
    /// `POST /orders`.
    pub trade: LatencySummary,
    /// `GET /orders/{number}`.
    pub order_query: LatencySummary,
    /// Orders acknowledged to the clients.
    pub orders_recorded: u64,
    /// Orders read back exactly as sent.
    pub orders_verified: u64,
    /// Orders read back differently, missing, or numbered twice.
    pub mismatches: u64,
    /// The first few mismatches, described.
    pub mismatch_samples: Vec<String>,
    /// The first few failed requests, described.
    pub error_samples: Vec<String>,
    /// Connections reopened after they broke.
    pub reconnects: u64,
    /// Invalid requests mixed in (`--bad-requests`) and what they got.
    #[serde(default)]
    pub bad_requests: BadRequestSummary,
}

impl LoadReport {
    /// One request type's results.
    #[must_use]
    pub fn summary(&self, kind: RequestKind) -> &LatencySummary {
        match kind {
            RequestKind::Lookup => &self.lookup,
            RequestKind::Trade => &self.trade,
            RequestKind::OrderQuery => &self.order_query,
        }
    }

    /// Failed requests of every type.
    #[must_use]
    pub fn errors(&self) -> u64 {
        RequestKind::ALL
            .iter()
            .map(|&k| self.summary(k).errors)
            .sum()
    }

    /// True when no order mismatched, no request failed, and every invalid request got its
    /// documented error.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.mismatches == 0 && self.errors() == 0 && self.bad_requests.wrong() == 0
    }

    /// Writes the report as pretty JSON.
    ///
    /// # Errors
    /// The file cannot be written.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Io {
            path: path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(path, json).map_err(|e| Error::io(path, e))
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let length = match (self.iterations_per_client, self.duration_s) {
            (Some(n), _) => format!("{n} iterations"),
            (None, Some(s)) => format!("{s:.1} s"),
            (None, None) => "?".into(),
        };
        writeln!(
            f,
            "{} clients x {length}, p = {:.2}, seed {}, {} stocks, front-end {}",
            self.clients, self.trade_probability, self.seed, self.stocks, self.frontend
        )?;
        writeln!(
            f,
            "{:<12} {:>8} {:>7} {:>6} {:>9} {:>8} {:>8} {:>8} {:>9} {:>10}",
            "request",
            "count",
            "errors",
            "409s",
            "mean_us",
            "p50_us",
            "p90_us",
            "p99_us",
            "max_us",
            "req/s"
        )?;
        for kind in RequestKind::ALL {
            let s = self.summary(kind);
            let rejected = if kind == RequestKind::Trade {
                s.rejected.to_string()
            } else {
                "-".into()
            };
            writeln!(
                f,
                "{:<12} {:>8} {:>7} {:>6} {:>9.1} {:>8} {:>8} {:>8} {:>9} {:>10.0}",
                kind.as_str(),
                s.count,
                s.errors,
                rejected,
                s.mean_us,
                s.p50_us,
                s.p90_us,
                s.p99_us,
                s.max_us,
                s.throughput_per_s
            )?;
        }
        writeln!(
            f,
            "(count: replies as expected, 409s included; latency of those; req/s over the phase: \
             load {:.2} s, verify {:.2} s)",
            self.load_elapsed_s, self.verify_elapsed_s
        )?;
        writeln!(
            f,
            "orders: {} acknowledged, {} verified, {} mismatches; connections reopened: {}",
            self.orders_recorded, self.orders_verified, self.mismatches, self.reconnects
        )?;
        if self.bad_requests.sent > 0 {
            writeln!(
                f,
                "invalid requests: {} sent, {} answered with the documented error",
                self.bad_requests.sent, self.bad_requests.as_documented
            )?;
        }
        for sample in &self.bad_requests.samples {
            writeln!(f, "invalid request answered wrongly: {sample}")?;
        }
        for sample in &self.mismatch_samples {
            writeln!(f, "mismatch: {sample}")?;
        }
        for sample in &self.error_samples {
            writeln!(f, "error: {sample}")?;
        }
        if self.ok() {
            write!(f, "result: OK")
        } else {
            write!(
                f,
                "result: FAILED ({} mismatches, {} failed requests, {} invalid requests answered \
                 wrongly)",
                self.mismatches,
                self.errors(),
                self.bad_requests.wrong()
            )
        }
    }
}
