//! `bazaar verify --data-dir DIR`: checks a data directory's databases against each other.
//!
//! - Every replica's order log is dense (0..N-1) and all logs are identical.
//! - The catalog's confirmed trades and the orders in the log match one to one (same request
//!   id, stock, type and quantity), and no reservation is left unsettled.
//! - Per stock: quantity = initial + restocked + sells - buys over confirmed trades, reserved
//!   shares equal the pending buys, volume equals all confirmed shares, and nothing is negative.
//!
//! Entries a replica moved to its conflicts table (a divergent suffix it dropped to follow a
//! newer leader) are reported as notes: they were never acknowledged unless the catalog says
//! so, and then the one-to-one check fails.
//!
//! The databases are opened read-only, so verify runs beside a live system as well as after it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use bazaar_api::catalog::{TradeRecord, TradeState};
use bazaar_api::replica::OrderEntry;
use bazaar_api::{RequestId, TradeType};
use bazaar_catalog::store::{Snapshot, read_snapshot as read_catalog};
use bazaar_order::log_store::{LogSnapshot, read_snapshot as read_log};

/// Most differences listed per kind; the rest are counted.
const LISTED_PER_KIND_MAX: usize = 20;

/// What verify found.
#[derive(Debug, Default)]
pub struct Report {
    /// Replicas read, by id.
    pub replicas: Vec<u8>,
    /// Entries in the longest log.
    pub orders: usize,
    /// Stocks in the catalog.
    pub stocks: usize,
    /// Confirmed trades in the catalog.
    pub confirmed: usize,
    /// Problems: any of these makes verify fail (at most [`LISTED_PER_KIND_MAX`] per kind).
    pub differences: Vec<String>,
    /// Every problem found, listed or not.
    pub differences_total: usize,
    /// Observations that are not failures.
    pub notes: Vec<String>,
}

impl Report {
    /// True when nothing is wrong.
    #[must_use]
    pub fn ok(&self) -> bool {
        self.differences.is_empty()
    }

    fn differ(&mut self, kind_count: &mut usize, text: String) {
        *kind_count += 1;
        self.differences_total += 1;
        if *kind_count <= LISTED_PER_KIND_MAX {
            self.differences.push(text);
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        for difference in &self.differences {
            writeln!(f, "difference: {difference}")?;
        }
        if self.ok() {
            write!(
                f,
                "verify: OK: {} replica logs identical and gap-free ({} orders); {} confirmed trades match the log one to one; {} stocks conserve quantity",
                self.replicas.len(),
                self.orders,
                self.confirmed,
                self.stocks
            )
        } else {
            write!(
                f,
                "verify: FAILED with {} difference(s)",
                self.differences_total
            )?;
            if self.differences_total > self.differences.len() {
                write!(
                    f,
                    " ({} listed, at most {LISTED_PER_KIND_MAX} of each kind)",
                    self.differences.len()
                )?;
            }
            Ok(())
        }
    }
}

/// The order replica databases in `dir`, by id (`order-<id>.db`).
///
/// # Errors
/// The directory cannot be read.
pub fn replica_files(dir: &Path) -> Result<BTreeMap<u8, PathBuf>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut files = BTreeMap::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name
            .strip_prefix("order-")
            .and_then(|rest| rest.strip_suffix(".db"))
            .and_then(|id| id.parse::<u8>().ok())
        {
            files.insert(id, entry.path());
        }
    }
    Ok(files)
}

/// Verifies the databases in `dir`.
///
/// # Errors
/// A database is missing or unreadable (that is not a difference: nothing could be compared).
pub fn verify(dir: &Path) -> Result<Report, String> {
    let files = replica_files(dir)?;
    if files.is_empty() {
        return Err(format!(
            "no order replica databases (order-<id>.db) in {}",
            dir.display()
        ));
    }
    let mut logs = BTreeMap::new();
    for (id, path) in &files {
        logs.insert(*id, read_log(path)?);
    }
    let catalog = read_catalog(&dir.join("catalog.db"))?;
    Ok(check(&logs, &catalog))
}

/// The checks, on snapshots already read.
#[must_use]
pub fn check(logs: &BTreeMap<u8, LogSnapshot>, catalog: &Snapshot) -> Report {
    let mut report = Report {
        replicas: logs.keys().copied().collect(),
        stocks: catalog.stocks.len(),
        ..Report::default()
    };
    check_logs(logs, &mut report);
    let reference = logs
        .values()
        .max_by_key(|l| l.entries.len())
        .map(|l| l.entries.as_slice())
        .unwrap_or_default();
    report.orders = reference.len();
    check_trades(reference, &catalog.trades, &mut report);
    check_conservation(catalog, &mut report);
    check_conflicts(logs, reference, &catalog.trades, &mut report);
    report
}

fn same_order(a: &OrderEntry, b: &OrderEntry) -> bool {
    a.number == b.number
        && a.request_id == b.request_id
        && a.name == b.name
        && a.kind == b.kind
        && a.quantity == b.quantity
}

fn check_logs(logs: &BTreeMap<u8, LogSnapshot>, report: &mut Report) {
    let mut gaps = 0;
    for (id, log) in logs {
        if let Some((i, entry)) = log
            .entries
            .iter()
            .enumerate()
            .find(|(i, e)| e.number.0 != *i as u64)
        {
            report.differ(
                &mut gaps,
                format!(
                    "replica {id}: entry {i} has number {}, the log has a gap",
                    entry.number
                ),
            );
        }
    }
    let mut mismatches = 0;
    let mut ids = logs.keys();
    let Some(first_id) = ids.next() else { return };
    let first = &logs[first_id].entries;
    for id in ids {
        let other = &logs[id].entries;
        if other.len() != first.len() {
            report.differ(
                &mut mismatches,
                format!(
                    "replica {id} holds {} orders, replica {first_id} holds {}",
                    other.len(),
                    first.len()
                ),
            );
        }
        if let Some((a, b)) = first.iter().zip(other).find(|(a, b)| !same_order(a, b)) {
            report.differ(
                &mut mismatches,
                format!(
                    "replicas {first_id} and {id} differ at order {}: {} {} {} (request {}) vs {} {} {} (request {})",
                    a.number, a.kind, a.quantity, a.name, a.request_id, b.kind, b.quantity, b.name, b.request_id
                ),
            );
        }
    }
}

fn check_trades(log: &[OrderEntry], trades: &[TradeRecord], report: &mut Report) {
    let by_request: HashMap<RequestId, &TradeRecord> =
        trades.iter().map(|t| (t.request_id, t)).collect();
    let mut in_log: HashMap<RequestId, &OrderEntry> = HashMap::with_capacity(log.len());
    let mut problems = 0;
    for entry in log {
        if let Some(earlier) = in_log.insert(entry.request_id, entry) {
            report.differ(
                &mut problems,
                format!(
                    "request {} is in the log twice: orders {} and {}",
                    entry.request_id, earlier.number, entry.number
                ),
            );
        }
        match by_request.get(&entry.request_id) {
            Some(t) if t.state == TradeState::Confirmed => {
                if t.name != entry.name || t.kind != entry.kind || t.quantity != entry.quantity {
                    report.differ(
                        &mut problems,
                        format!(
                            "order {} is {} {} {} but the catalog confirmed {} {} {}",
                            entry.number,
                            entry.kind,
                            entry.quantity,
                            entry.name,
                            t.kind,
                            t.quantity,
                            t.name
                        ),
                    );
                }
            }
            Some(t) => report.differ(
                &mut problems,
                format!(
                    "order {} (request {}) is in the log but its catalog trade is {}",
                    entry.number,
                    entry.request_id,
                    t.state.as_str()
                ),
            ),
            None => report.differ(
                &mut problems,
                format!(
                    "order {} (request {}) is in the log but the catalog never saw the trade",
                    entry.number, entry.request_id
                ),
            ),
        }
    }
    for trade in trades {
        match trade.state {
            TradeState::Confirmed => {
                report.confirmed += 1;
                if !in_log.contains_key(&trade.request_id) {
                    report.differ(
                        &mut problems,
                        format!(
                            "the catalog confirmed {} {} {} (request {}) but no replica log holds the order",
                            trade.kind, trade.quantity, trade.name, trade.request_id
                        ),
                    );
                }
            }
            TradeState::Reserved => report.differ(
                &mut problems,
                format!(
                    "reservation {} {} {} (request {}) is not settled yet; run verify again once the system is quiet",
                    trade.kind, trade.quantity, trade.name, trade.request_id
                ),
            ),
            TradeState::Cancelled => {}
        }
    }
}

fn check_conservation(catalog: &Snapshot, report: &mut Report) {
    let mut problems = 0;
    for stock in &catalog.stocks {
        let (mut bought, mut sold, mut pending_buys) = (0_u64, 0_u64, 0_u64);
        for t in catalog.trades.iter().filter(|t| t.name == stock.name) {
            match (t.state, t.kind) {
                (TradeState::Confirmed, TradeType::Buy) => bought += t.quantity,
                (TradeState::Confirmed, TradeType::Sell) => sold += t.quantity,
                (TradeState::Reserved, TradeType::Buy) => pending_buys += t.quantity,
                _ => {}
            }
        }
        let expected = (stock.initial + stock.restocked + sold).checked_sub(bought);
        if expected != Some(stock.quantity) {
            report.differ(
                &mut problems,
                format!(
                    "{}: quantity {} but initial {} + restocked {} + sold {} - bought {} = {}",
                    stock.name,
                    stock.quantity,
                    stock.initial,
                    stock.restocked,
                    sold,
                    bought,
                    expected.map_or_else(|| "below zero".to_owned(), |q| q.to_string())
                ),
            );
        }
        if stock.reserved != pending_buys {
            report.differ(
                &mut problems,
                format!(
                    "{}: {} shares reserved but pending buys hold {}",
                    stock.name, stock.reserved, pending_buys
                ),
            );
        }
        if stock.volume != bought + sold {
            report.differ(
                &mut problems,
                format!(
                    "{}: volume {} but confirmed trades moved {}",
                    stock.name,
                    stock.volume,
                    bought + sold
                ),
            );
        }
    }
}

fn check_conflicts(
    logs: &BTreeMap<u8, LogSnapshot>,
    reference: &[OrderEntry],
    trades: &[TradeRecord],
    report: &mut Report,
) {
    let in_log: HashMap<RequestId, &OrderEntry> =
        reference.iter().map(|e| (e.request_id, e)).collect();
    let by_request: HashMap<RequestId, &TradeRecord> =
        trades.iter().map(|t| (t.request_id, t)).collect();
    for (id, log) in logs {
        for conflict in &log.conflicts {
            let entry = &conflict.entry;
            let fate = match (
                in_log.get(&entry.request_id),
                by_request.get(&entry.request_id),
            ) {
                (Some(kept), _) => format!("the trade is in the log as order {}", kept.number),
                (None, Some(t)) => format!("the trade is {} at the catalog", t.state.as_str()),
                (None, None) => "the catalog never saw the trade".to_owned(),
            };
            report.notes.push(format!(
                "replica {id} moved order {} (request {}, epoch {}) aside: {}; {fate}",
                entry.number, entry.request_id, entry.epoch, conflict.reason
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bazaar_api::{Epoch, Price, TxnNumber, Version};
    use bazaar_catalog::trade::StockRow;

    fn entry(number: u64, request_id: RequestId, kind: TradeType, quantity: u64) -> OrderEntry {
        OrderEntry {
            number: TxnNumber(number),
            request_id,
            name: "A".into(),
            kind,
            quantity,
            epoch: Epoch(1),
        }
    }

    fn trade(
        request_id: RequestId,
        kind: TradeType,
        quantity: u64,
        state: TradeState,
    ) -> TradeRecord {
        TradeRecord {
            request_id,
            name: "A".into(),
            kind,
            quantity,
            state,
            created_ms: 0,
            updated_ms: 0,
        }
    }

    fn stock(quantity: u64, volume: u64) -> StockRow {
        StockRow {
            name: "A".into(),
            price: Price::from_cents(100),
            quantity,
            reserved: 0,
            volume,
            version: Version(0),
            initial: 100,
            restocked: 0,
        }
    }

    fn logs(entries: &[Vec<OrderEntry>]) -> BTreeMap<u8, LogSnapshot> {
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                (
                    u8::try_from(i + 1).expect("few replicas"),
                    LogSnapshot {
                        entries: e.clone(),
                        conflicts: Vec::new(),
                        mode: None,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_consistent_system_passes() {
        let (a, b) = (RequestId::new(), RequestId::new());
        let log = vec![
            entry(0, a, TradeType::Buy, 5),
            entry(1, b, TradeType::Sell, 2),
        ];
        let catalog = Snapshot {
            stocks: vec![stock(97, 7)],
            trades: vec![
                trade(a, TradeType::Buy, 5, TradeState::Confirmed),
                trade(b, TradeType::Sell, 2, TradeState::Confirmed),
                trade(RequestId::new(), TradeType::Buy, 9, TradeState::Cancelled),
            ],
        };
        let report = check(&logs(&[log.clone(), log.clone(), log]), &catalog);
        assert!(report.ok(), "{report}");
        assert_eq!((report.orders, report.confirmed), (2, 2));
    }

    #[test]
    fn divergent_logs_lost_orders_and_bad_totals_are_reported() {
        let (a, b, c) = (RequestId::new(), RequestId::new(), RequestId::new());
        let full = vec![
            entry(0, a, TradeType::Buy, 5),
            entry(1, b, TradeType::Sell, 2),
        ];
        let other = vec![
            entry(0, a, TradeType::Buy, 5),
            entry(1, c, TradeType::Sell, 2),
        ];
        let catalog = Snapshot {
            stocks: vec![stock(90, 7)],
            trades: vec![
                trade(a, TradeType::Buy, 5, TradeState::Confirmed),
                trade(b, TradeType::Sell, 2, TradeState::Confirmed),
                trade(RequestId::new(), TradeType::Sell, 1, TradeState::Confirmed),
            ],
        };
        let report = check(&logs(&[full.clone(), other, full[..1].to_vec()]), &catalog);
        let text = report.to_string();
        assert!(!report.ok());
        assert!(text.contains("differ at order 1"), "{text}");
        assert!(text.contains("holds 1 orders"), "{text}");
        assert!(text.contains("no replica log holds the order"), "{text}");
        assert!(text.contains("A: quantity 90"), "{text}");
    }

    #[test]
    fn the_failure_line_counts_every_difference_not_only_the_listed_ones() {
        let log: Vec<OrderEntry> = Vec::new();
        let trades: Vec<TradeRecord> = (0..30)
            .map(|_| trade(RequestId::new(), TradeType::Sell, 1, TradeState::Confirmed))
            .collect();
        let catalog = Snapshot {
            stocks: vec![stock(130, 30)],
            trades,
        };
        let report = check(&logs(&[log]), &catalog);
        assert_eq!(report.differences_total, 30);
        let text = report.to_string();
        assert!(
            text.contains("FAILED with 30 difference(s) (20 listed"),
            "{text}"
        );
    }
}
