//! Verify on hand-made databases: a consistent system passes; each broken rule is reported,
//! counted in full.

use bazaar_api::log::{BookSnapshot, StockDef, TradeCommand};
use bazaar_api::{Epoch, Price, TxnNumber};

use super::*;

fn genesis() -> Vec<StockDef> {
    vec![StockDef {
        name: "A".into(),
        price: Price::from_cents(100),
        quantity: 10,
    }]
}

/// A primary-backup replica whose log is the genesis and `trades`, with its orders table.
fn replica(trades: &[(RequestId, TradeType, u64)]) -> Contents {
    let mut log = vec![RawEntry {
        index: LogIndex(0),
        epoch: Epoch(1),
        commands: vec![Command::Genesis { stocks: genesis() }],
    }];
    let mut orders = Vec::new();
    for (i, (id, kind, quantity)) in trades.iter().enumerate() {
        let index = LogIndex(i as u64 + 1);
        log.push(RawEntry {
            index,
            epoch: Epoch(1),
            commands: vec![Command::Trade(TradeCommand {
                request_id: *id,
                name: "A".into(),
                kind: *kind,
                quantity: *quantity,
            })],
        });
        orders.push(OrderRow {
            number: TxnNumber(i as u64),
            request_id: *id,
            name: "A".into(),
            kind: *kind,
            quantity: *quantity,
            log_index: index,
            epoch: Epoch(1),
            created_ms: 0,
        });
    }
    Contents {
        mode: ReplicationMode::PrimaryBackup,
        orders,
        log,
        conflicts: Vec::new(),
        applied: None,
        stocks: Vec::new(),
    }
}

/// A raft replica whose log was compacted: it keeps only its last entry, its orders, and its
/// state machine's stocks at that entry (as the log replayed would give them).
fn compacted(trades: &[(RequestId, TradeType, u64)]) -> Contents {
    let whole = replica(trades);
    let mut book = Book::new();
    for entry in &whole.log {
        book.apply_at(entry.index, &entry.commands);
    }
    let last = whole.log.last().expect("an entry").clone();
    Contents {
        mode: ReplicationMode::Raft,
        applied: Some(last.index.0),
        log: vec![last],
        stocks: book.records().cloned().collect(),
        ..whole
    }
}

fn catalog(position: u64, quantity: u64, volume: u64, version: u64) -> Saved {
    Saved {
        snapshot: BookSnapshot {
            position: Position(position),
            stocks: vec![bazaar_api::StockState {
                name: "A".into(),
                price: Price::from_cents(100),
                quantity,
                volume,
                version: bazaar_api::Version(version),
            }],
            next_number: TxnNumber(0),
        },
        epoch: Some(Epoch(1)),
    }
}

fn run(replicas: Vec<Contents>, catalogs: Vec<Saved>) -> Report {
    let replicas = replicas
        .into_iter()
        .enumerate()
        .map(|(i, c)| (u8::try_from(i + 1).expect("few"), c))
        .collect();
    let catalogs = catalogs
        .into_iter()
        .enumerate()
        .map(|(i, c)| (u8::try_from(i + 1).expect("few"), c))
        .collect();
    let mut report = Report::default();
    check(&replicas, &catalogs, Some(&genesis()), &mut report);
    report
}

#[test]
fn a_consistent_system_passes_and_a_lagging_catalog_is_compared_where_it_is() {
    let trades = [
        (RequestId::new(), TradeType::Buy, 3),
        (RequestId::new(), TradeType::Sell, 1),
    ];
    let report = run(
        vec![replica(&trades), replica(&trades), replica(&trades)],
        vec![catalog(3, 8, 4, 2), catalog(2, 7, 3, 1)],
    );
    assert!(report.ok(), "{report}");
    assert_eq!(report.orders, 2);
    assert!(
        report.notes.iter().any(|n| n.contains("catalog 2")),
        "{report}"
    );
}

#[test]
fn forks_lost_orders_wrong_catalogs_and_short_logs_are_differences() {
    let a = (RequestId::new(), TradeType::Buy, 3);
    let b = (RequestId::new(), TradeType::Buy, 2);
    let c = (RequestId::new(), TradeType::Sell, 5);
    let lost = (RequestId::new(), TradeType::Sell, 1);
    let mut moved = replica(&[a, lost]);
    moved.conflicts.push(moved.log.pop().expect("entry"));
    moved.orders.pop();
    // Replicas 1 and 2 fork; the reference for catalogs is the longest log of the lowest id,
    // replica 1's: 10 - 3 - 2 = 5 shares, volume 5, version 2.
    let report = run(
        vec![replica(&[a, b]), replica(&[a, c]), replica(&[a]), moved],
        vec![catalog(3, 5, 5, 2), catalog(3, 99, 5, 2)],
    );
    let text = report.to_string();
    assert!(text.contains("order 1 differs"), "{text}");
    assert!(text.contains("holds 1 of 2 orders"), "{text}");
    assert!(text.contains("catalog 2: A has quantity 99"), "{text}");
    assert!(text.contains("in no replica's log"), "{text}");
    assert!(
        !text.contains("catalog 1:"),
        "catalog 1 matches replica 1's log: {text}"
    );
    assert_eq!(
        text.lines().last(),
        Some(
            format!(
                "verify: FAILED with {} difference(s)",
                report.difference_count
            )
            .as_str()
        )
    );
}

#[test]
fn the_true_count_survives_the_listing_limit() {
    let orders: Vec<(RequestId, TradeType, u64)> = (0..30)
        .map(|_| (RequestId::new(), TradeType::Sell, 1))
        .collect();
    let other: Vec<(RequestId, TradeType, u64)> = (0..30)
        .map(|_| (RequestId::new(), TradeType::Sell, 1))
        .collect();
    let report = run(vec![replica(&orders), replica(&other)], vec![]);
    assert!(report.difference_count >= 30, "{}", report.difference_count);
    assert!(report.differences.len() <= LISTED_PER_KIND_MAX + 1 + 5);
}

#[test]
fn compacted_raft_logs_are_checked_through_their_saved_stocks() {
    let trades = [
        (RequestId::new(), TradeType::Buy, 3),
        (RequestId::new(), TradeType::Sell, 1),
    ];
    phase("a consistent compacted system passes; the catalog is compared with the state");
    let report = run(
        vec![compacted(&trades), compacted(&trades), compacted(&trades)],
        vec![catalog(3, 8, 4, 2)],
    );
    assert!(report.ok(), "{report}");
    assert_eq!(report.stocks, 1, "{report}");
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("state machine at position 3")),
        "{report}"
    );

    phase("a wrong catalog, saved counts that disagree with the orders, a broken sum");
    let mut miscounted = compacted(&trades);
    miscounted.stocks[0].bought += 1;
    let mut unconserved = compacted(&trades);
    unconserved.stocks[0].state.quantity += 1;
    let report = run(
        vec![compacted(&trades), miscounted, unconserved],
        vec![catalog(3, 9, 4, 2)],
    );
    let text = report.to_string();
    assert!(text.contains("catalog 1: A has quantity 9"), "{text}");
    assert!(
        text.contains("replica 2: A counts 4 bought and 1 sold; its orders add up to 3 and 1"),
        "{text}"
    );
    assert!(text.contains("replica 3: A has quantity 9"), "{text}");

    phase("a catalog at a position no replica can show is noted, not failed");
    let report = run(
        vec![compacted(&trades), compacted(&trades)],
        vec![catalog(2, 7, 3, 1)],
    );
    assert!(report.ok(), "{report}");
    assert!(
        report.notes.iter().any(|n| n.contains("not compared")),
        "{report}"
    );
}

fn phase(text: &str) {
    eprintln!("phase: {text}");
}
