//! Latency statistics per request type: an HDR histogram at microsecond resolution plus the
//! counts that are not latencies (errors, expected rejections).
//!
//! Each simulated client keeps its own [`LatencyStats`] so the hot path takes no lock; the
//! load generator merges them once at the end.

use std::fmt;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency the histogram tells apart, in microseconds (one minute). Longer replies are
/// recorded as this value; every request times out well before it anyway.
pub const LATENCY_US_MAX: u64 = 60_000_000;

/// Significant decimal digits the histogram keeps: values are exact to 0.1 %.
const SIGNIFICANT_DIGITS: u8 = 3;

/// The kinds of request the load generator sends, each measured on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// `GET /stocks/{name}`.
    Lookup,
    /// `POST /orders`.
    Trade,
    /// `GET /orders/{number}`, sent while verifying.
    OrderQuery,
}

impl RequestKind {
    /// Every kind, in report order.
    pub const ALL: [Self; 3] = [Self::Lookup, Self::Trade, Self::OrderQuery];

    /// The name used in tables, CSV files and plots.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lookup => "lookup",
            Self::Trade => "trade",
            Self::OrderQuery => "order_query",
        }
    }

    /// A title for plots.
    #[must_use]
    pub fn title(self) -> &'static str {
        match self {
            Self::Lookup => "Lookup (GET /stocks/{name})",
            Self::Trade => "Trade (POST /orders)",
            Self::OrderQuery => "Order query (GET /orders/{number})",
        }
    }
}

impl fmt::Display for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one client measured for one request type.
#[derive(Debug, Clone)]
pub struct LatencyStats {
    /// Latency of every request that got an expected reply (200, or 409 for a trade).
    histogram: Histogram<u64>,
    /// Requests that failed: transport errors, timeouts, unexpected statuses, unreadable bodies.
    errors: u64,
    /// Trades refused with 409 (not enough stock): expected, and also in the histogram.
    rejected: u64,
}

impl Default for LatencyStats {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyStats {
    /// Empty statistics.
    #[must_use]
    pub fn new() -> Self {
        Self {
            histogram: Histogram::new_with_bounds(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS)
                .expect("constant histogram bounds are valid"),
            errors: 0,
            rejected: 0,
        }
    }

    /// Records the latency of a request that got an expected reply.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        // Sub-microsecond replies do not exist over TCP, but the histogram's lowest bucket is 1.
        self.histogram.saturating_record(us.max(1));
    }

    /// Records an expected rejection (409) that took `latency`.
    pub fn record_rejected(&mut self, latency: Duration) {
        self.record(latency);
        self.rejected += 1;
    }

    /// Counts a failed request.
    pub fn record_error(&mut self) {
        self.errors += 1;
    }

    /// Adds another client's statistics to these.
    pub fn merge(&mut self, other: &Self) {
        // Both histograms have the same bounds, so adding cannot fail; saturate if it ever did.
        if self.histogram.add(&other.histogram).is_err() {
            for v in other.histogram.iter_recorded() {
                self.histogram
                    .saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
        self.errors += other.errors;
        self.rejected += other.rejected;
    }

    /// Requests with an expected reply.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// Failed requests.
    #[must_use]
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// The summary over `elapsed` of wall-clock time (for the throughput).
    #[must_use]
    pub fn summary(&self, elapsed: Duration) -> LatencySummary {
        let h = &self.histogram;
        let count = h.len();
        let secs = elapsed.as_secs_f64();
        let (mean_us, p50_us, p90_us, p99_us, max_us) = if count == 0 {
            (0.0, 0, 0, 0, 0)
        } else {
            (
                h.mean(),
                h.value_at_quantile(0.50),
                h.value_at_quantile(0.90),
                h.value_at_quantile(0.99),
                h.max(),
            )
        };
        LatencySummary {
            count,
            errors: self.errors,
            rejected: self.rejected,
            mean_us,
            p50_us,
            p90_us,
            p99_us,
            max_us,
            throughput_per_s: if secs > 0.0 { count as f64 / secs } else { 0.0 },
        }
    }
}

/// One request type's results, as printed, written to JSON and plotted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Requests with an expected reply (200, or 409 for trades); their latencies are below.
    pub count: u64,
    /// Requests that failed.
    pub errors: u64,
    /// Trades refused with 409 (included in `count`).
    pub rejected: u64,
    /// Mean latency in microseconds.
    pub mean_us: f64,
    /// Median latency in microseconds.
    pub p50_us: u64,
    /// 90th percentile in microseconds.
    pub p90_us: u64,
    /// 99th percentile in microseconds.
    pub p99_us: u64,
    /// Slowest reply in microseconds.
    pub max_us: u64,
    /// `count` per second of the phase the requests were sent in.
    pub throughput_per_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn percentiles_of_a_uniform_sample() {
        let mut stats = LatencyStats::new();
        for v in 1..=1000 {
            stats.record(us(v));
        }
        let s = stats.summary(Duration::from_secs(2));
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50_us, 500);
        assert_eq!(s.p90_us, 900);
        assert_eq!(s.p99_us, 990);
        assert_eq!(s.max_us, 1000);
        assert!((s.mean_us - 500.5).abs() < 0.5, "mean {}", s.mean_us);
        assert!((s.throughput_per_s - 500.0).abs() < 1e-9);
    }

    #[test]
    fn large_values_keep_three_significant_digits() {
        let mut stats = LatencyStats::new();
        stats.record(Duration::from_millis(12_345));
        let s = stats.summary(Duration::from_secs(1));
        let relative = (s.max_us as f64 - 12_345_000.0).abs() / 12_345_000.0;
        assert!(relative < 0.001, "max {}", s.max_us);
    }

    #[test]
    fn merging_adds_counts_errors_and_rejections() {
        let mut a = LatencyStats::new();
        let mut b = LatencyStats::new();
        for _ in 0..90 {
            a.record(us(100));
        }
        for _ in 0..10 {
            b.record(us(10_000));
        }
        b.record_rejected(us(200));
        b.record_error();
        a.merge(&b);
        let s = a.summary(Duration::from_secs(1));
        assert_eq!((s.count, s.errors, s.rejected), (101, 1, 1));
        assert_eq!(s.p50_us, 100);
        assert!(
            s.p99_us >= 9_995,
            "the slow tail must show at p99: {}",
            s.p99_us
        );
    }

    #[test]
    fn an_empty_summary_is_all_zero() {
        let mut stats = LatencyStats::new();
        stats.record_error();
        let s = stats.summary(Duration::ZERO);
        assert_eq!((s.count, s.errors, s.p50_us, s.max_us), (0, 1, 0, 0));
        assert!(s.mean_us.abs() < f64::EPSILON);
        assert!(s.throughput_per_s.abs() < f64::EPSILON);
    }

    #[test]
    fn a_too_slow_reply_saturates_instead_of_failing() {
        let mut stats = LatencyStats::new();
        stats.record(Duration::from_secs(3600));
        stats.record(Duration::ZERO);
        let s = stats.summary(Duration::from_secs(1));
        assert_eq!(s.count, 2);
        assert!(s.max_us >= LATENCY_US_MAX);
    }
}
