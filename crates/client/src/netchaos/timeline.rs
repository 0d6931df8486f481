//! What clients saw over time, from the recorded history: fixed-width buckets of latency,
//! answers and errors (CSV and JSON, and the figure), and per fault the same figures over the
//! time it lasted plus how long the first acknowledged trade took to come after it healed.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::history::{Call, Op, Outcome};

/// Width of a timeline bucket.
pub const BUCKET_US: u64 = 250_000;

/// One bucket of the timeline, by completion time.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Bucket {
    /// Start of the bucket, seconds from the start of the run.
    pub start_s: f64,
    /// Operations that completed in it.
    pub ops: u64,
    /// Trades acknowledged.
    pub trades_ok: u64,
    /// Lookups answered.
    pub lookups_ok: u64,
    /// Requests that failed with a clear answer (4xx other than 404/409, or never sent).
    pub errors: u64,
    /// Requests without a usable reply (timeout, broken connection, 5xx).
    pub unknown: u64,
    /// Median latency of acknowledged trades, ms.
    pub trade_p50_ms: Option<f64>,
    /// 99th percentile of acknowledged trades, ms.
    pub trade_p99_ms: Option<f64>,
    /// Longest operation of any kind that completed in it, ms.
    pub max_ms: Option<f64>,
}

/// A fault as drawn on the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FaultSpan {
    /// Start, seconds from the start of the run.
    pub start_s: f64,
    /// End (healed, continued or restarted), seconds.
    pub end_s: f64,
    /// What it was.
    pub label: String,
}

/// What clients saw over an interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClientView {
    /// Operations invoked in the interval.
    pub ops: u64,
    /// Of them, answered as the API promises (200, 404, 409).
    pub answered: u64,
    /// Trades acknowledged.
    pub trades_ok: u64,
    /// Requests that failed with a clear answer.
    pub errors: u64,
    /// Requests without a usable reply.
    pub unknown: u64,
    /// Longest operation, ms.
    pub max_ms: f64,
    /// 99th percentile of every operation, ms.
    pub p99_ms: f64,
}

fn latency_ms(op: &Op) -> f64 {
    op.completed_us.saturating_sub(op.invoked_us) as f64 / 1000.0
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

fn is_error(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Rejected { .. } | Outcome::NotSent { .. })
}

/// The buckets covering `0..end_us`.
#[must_use]
pub fn buckets(ops: &[Op], end_us: u64) -> Vec<Bucket> {
    let count = usize::try_from(end_us.div_ceil(BUCKET_US))
        .unwrap_or(0)
        .max(1);
    let mut out: Vec<Bucket> = (0..count)
        .map(|i| Bucket {
            start_s: (i as u64 * BUCKET_US) as f64 / 1e6,
            ..Bucket::default()
        })
        .collect();
    let mut trade_latencies: Vec<Vec<f64>> = vec![Vec::new(); count];
    for op in ops {
        let Ok(i) = usize::try_from(op.completed_us / BUCKET_US) else {
            continue;
        };
        let Some(bucket) = out.get_mut(i) else {
            continue;
        };
        bucket.ops += 1;
        let ms = latency_ms(op);
        bucket.max_ms = Some(bucket.max_ms.map_or(ms, |m: f64| m.max(ms)));
        match (&op.call, &op.outcome) {
            (Call::Trade { .. }, Outcome::Traded { .. }) => {
                bucket.trades_ok += 1;
                trade_latencies[i].push(ms);
            }
            (Call::Lookup { .. }, Outcome::Quantity { .. }) => bucket.lookups_ok += 1,
            (_, outcome) if outcome.is_unknown() => bucket.unknown += 1,
            (_, outcome) if is_error(outcome) => bucket.errors += 1,
            _ => {}
        }
    }
    for (bucket, latencies) in out.iter_mut().zip(&mut trade_latencies) {
        latencies.sort_by(f64::total_cmp);
        bucket.trade_p50_ms = percentile(latencies, 0.5);
        bucket.trade_p99_ms = percentile(latencies, 0.99);
    }
    out
}

/// What clients saw from operations invoked in `from_us..to_us`.
#[must_use]
pub fn client_view(ops: &[Op], from_us: u64, to_us: u64) -> ClientView {
    let mut view = ClientView::default();
    let mut latencies = Vec::new();
    for op in ops
        .iter()
        .filter(|op| (from_us..to_us).contains(&op.invoked_us))
    {
        view.ops += 1;
        latencies.push(latency_ms(op));
        if op.outcome.is_answer() {
            view.answered += 1;
        }
        if matches!(op.outcome, Outcome::Traded { .. }) {
            view.trades_ok += 1;
        }
        if op.outcome.is_unknown() {
            view.unknown += 1;
        } else if is_error(&op.outcome) {
            view.errors += 1;
        }
    }
    latencies.sort_by(f64::total_cmp);
    view.max_ms = latencies.last().copied().unwrap_or(0.0);
    view.p99_ms = percentile(&latencies, 0.99).unwrap_or(0.0);
    view
}

/// Microseconds from `after_us` to the completion of the first trade acknowledged that was
/// invoked at or after it.
#[must_use]
pub fn first_trade_after(ops: &[Op], after_us: u64) -> Option<u64> {
    ops.iter()
        .filter(|op| op.invoked_us >= after_us && matches!(op.outcome, Outcome::Traded { .. }))
        .map(|op| op.completed_us.saturating_sub(after_us))
        .min()
}

/// Writes the buckets as CSV, with a column naming the fault active in each.
///
/// # Errors
/// The file cannot be written.
pub fn write_csv(buckets: &[Bucket], faults: &[FaultSpan], path: &Path) -> Result<()> {
    let mut out = String::from(
        "start_s,ops,trades_ok,lookups_ok,errors,unknown,trade_p50_ms,trade_p99_ms,max_ms,fault\n",
    );
    let cell = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v:.3}"));
    for b in buckets {
        let fault = faults
            .iter()
            .find(|f| f.start_s <= b.start_s + BUCKET_US as f64 / 1e6 && b.start_s < f.end_s)
            .map_or_else(String::new, |f| {
                format!("\"{}\"", f.label.replace('"', "'"))
            });
        out.push_str(&format!(
            "{:.2},{},{},{},{},{},{},{},{},{fault}\n",
            b.start_s,
            b.ops,
            b.trades_ok,
            b.lookups_ok,
            b.errors,
            b.unknown,
            cell(b.trade_p50_ms),
            cell(b.trade_p99_ms),
            cell(b.max_ms)
        ));
    }
    let mut file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    file.write_all(out.as_bytes())
        .map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bazaar_api::TradeType;

    fn op(from_ms: u64, to_ms: u64, outcome: Outcome) -> Op {
        Op {
            client: 0,
            invoked_us: from_ms * 1000,
            completed_us: to_ms * 1000,
            call: Call::Trade {
                stock: "A".into(),
                kind: TradeType::Sell,
                quantity: 1,
                request_id: None,
            },
            outcome,
        }
    }

    #[test]
    fn buckets_count_by_completion_and_views_by_invocation() {
        let ops = vec![
            op(0, 10, Outcome::Traded { number: 0 }),
            op(
                100,
                1100,
                Outcome::Unknown {
                    detail: "timeout".into(),
                },
            ),
            op(1200, 1210, Outcome::Traded { number: 1 }),
        ];
        let b = buckets(&ops, 1_500_000);
        assert_eq!(b.len(), 6);
        assert_eq!((b[0].ops, b[0].trades_ok), (1, 1));
        assert_eq!(b[4].unknown, 1, "the timeout completed at 1.1 s");
        assert_eq!(b[4].trades_ok, 1);
        assert_eq!(b[4].max_ms, Some(1000.0));
        let view = client_view(&ops, 50_000, 1_150_000);
        assert_eq!((view.ops, view.unknown, view.trades_ok), (1, 1, 0));
        assert_eq!(first_trade_after(&ops, 100_000), Some(1_110_000));
    }
}
