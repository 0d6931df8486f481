//! Consistency checks over a data directory's databases, read while the system runs or after.

use std::collections::BTreeSet;
use std::path::Path;

use bazaar_order::orders::OrderRow;

/// Every replica's orders, by id.
pub fn logs(dir: &Path) -> Vec<(u8, Vec<OrderRow>)> {
    bazaar_client::verify::replica_files(dir)
        .expect("data dir")
        .into_iter()
        .map(|(id, path)| {
            (
                id,
                bazaar_order::file::read(&path).expect("read log").orders,
            )
        })
        .collect()
}

/// The orders of replicas `ids` only (others may be unreadable on purpose).
pub fn logs_of(dir: &Path, ids: &[u8]) -> Vec<(u8, Vec<OrderRow>)> {
    bazaar_client::verify::replica_files(dir)
        .expect("data dir")
        .into_iter()
        .filter(|(id, _)| ids.contains(id))
        .map(|(id, path)| {
            (
                id,
                bazaar_order::file::read(&path).expect("read log").orders,
            )
        })
        .collect()
}

/// Numbers run 0..N-1 in every log.
pub fn assert_no_gaps(dir: &Path) {
    for (id, log) in logs(dir) {
        for (i, entry) in log.iter().enumerate() {
            assert_eq!(entry.number.0, i as u64, "replica {id} has a gap at {i}");
        }
    }
}

/// All logs hold the same orders.
pub fn assert_logs_identical(dir: &Path) {
    let logs = logs(dir);
    let (first_id, first) = &logs[0];
    for (id, log) in &logs[1..] {
        assert_eq!(
            log.len(),
            first.len(),
            "replica {id} holds {} orders, replica {first_id} holds {}",
            log.len(),
            first.len()
        );
        for (a, b) in first.iter().zip(log) {
            assert_eq!(
                (a.number, a.request_id, &a.name, a.kind, a.quantity),
                (b.number, b.request_id, &b.name, b.kind, b.quantity),
                "replicas {first_id} and {id} differ"
            );
        }
    }
}

/// Every acknowledged transaction number is in every log, and each request id once.
pub fn assert_acked_present(dir: &Path, acked: &BTreeSet<u64>) {
    for (id, log) in logs(dir) {
        let numbers: BTreeSet<u64> = log.iter().map(|e| e.number.0).collect();
        let missing: Vec<_> = acked.difference(&numbers).collect();
        assert!(
            missing.is_empty(),
            "replica {id} lacks acknowledged orders {missing:?}"
        );
        let requests: std::collections::HashSet<_> = log.iter().map(|e| e.request_id).collect();
        assert_eq!(
            requests.len(),
            log.len(),
            "replica {id} holds a request twice"
        );
    }
}

/// `bazaar verify` passes (run in-process on the same databases).
pub fn assert_verified(dir: &Path) {
    let report = bazaar_client::verify::verify(dir).expect("verify reads the databases");
    assert!(report.ok(), "verify failed:\n{report}");
}
