//! Hand-made histories: ones that must pass, and planted anomalies that must fail with a
//! small stretch.

use bazaar_api::{Order, TradeType, TxnNumber};

use super::*;
use crate::history::{Call, Op, Outcome};

const BUDGET: Duration = Duration::from_secs(60);

fn op(client: usize, from_ms: u64, to_ms: u64, call: Call, outcome: Outcome) -> Op {
    Op {
        client,
        invoked_us: from_ms * 1000,
        completed_us: to_ms * 1000,
        call,
        outcome,
    }
}

fn lookup(client: usize, from: u64, to: u64, quantity: u64) -> Op {
    op(
        client,
        from,
        to,
        Call::Lookup {
            stock: "FishCo".into(),
        },
        Outcome::Quantity { quantity },
    )
}

fn trade(
    client: usize,
    from: u64,
    to: u64,
    kind: TradeType,
    quantity: u64,
    outcome: Outcome,
) -> Op {
    op(
        client,
        from,
        to,
        Call::Trade {
            stock: "FishCo".into(),
            kind,
            quantity,
            request_id: None,
        },
        outcome,
    )
}

fn traded(number: u64) -> Outcome {
    Outcome::Traded { number }
}

fn unknown() -> Outcome {
    Outcome::Unknown {
        detail: "no reply within 15s".into(),
    }
}

fn query(client: usize, from: u64, to: u64, number: u64, found: Option<(TradeType, u64)>) -> Op {
    op(
        client,
        from,
        to,
        Call::OrderQuery { number },
        match found {
            Some((kind, quantity)) => Outcome::Found {
                order: Order {
                    number: TxnNumber(number),
                    name: "FishCo".into(),
                    kind,
                    quantity,
                },
            },
            None => Outcome::NotFound,
        },
    )
}

fn assert_passes(ops: &[Op]) -> Report {
    let report = check(ops, None, BUDGET);
    assert!(report.ok(), "{report}");
    report
}

fn assert_fails(ops: &[Op], object: &str) -> Anomaly {
    let report = check(ops, None, BUDGET);
    assert!(!report.ok(), "must fail: {report}");
    report
        .anomalies
        .iter()
        .find(|a| a.object == object)
        .unwrap_or_else(|| panic!("no anomaly on {object}: {report}"))
        .clone()
}

#[test]
fn quantities_follow_buys_sells_and_refusals() {
    let start = Quantities::exactly(7);
    assert_eq!(start.bought(3), Quantities::exactly(4));
    assert!(start.bought(8).is_empty());
    assert!(start.short_of(7).is_empty());
    assert_eq!(start.short_of(8), Quantities::exactly(7));
    assert_eq!(start.sold(2), Quantities::exactly(9));
    let either = start.union(&start.bought(3));
    assert!(either.contains(7) && either.contains(4) && !either.contains(5));
    let any = Quantities::any();
    assert_eq!(any.short_of(3), Quantities(vec![(0, 2)]));
    assert_eq!(any.sold(3), Quantities(vec![(3, u64::MAX)]));
    assert_eq!(any.bought(3), any);
}

#[test]
fn a_sequential_history_that_adds_up_passes() {
    let report = assert_passes(&[
        lookup(0, 0, 1, 100),
        trade(0, 2, 3, TradeType::Buy, 3, traded(0)),
        lookup(1, 4, 5, 97),
        trade(1, 6, 7, TradeType::Sell, 5, traded(1)),
        trade(0, 8, 9, TradeType::Buy, 200, Outcome::Refused),
        lookup(0, 10, 11, 102),
        query(1, 12, 13, 0, Some((TradeType::Buy, 3))),
        query(1, 14, 15, 1, Some((TradeType::Sell, 5))),
        query(1, 16, 17, 2, None),
    ]);
    assert_eq!(report.stocks, 1);
    assert_eq!(report.order_numbers, 3);
    assert_eq!((report.trades_acknowledged, report.trades_refused), (2, 1));
}

#[test]
fn a_lookup_concurrent_with_a_trade_may_see_either_side() {
    assert_passes(&[
        lookup(0, 0, 1, 100),
        trade(0, 2, 10, TradeType::Buy, 3, traded(0)),
        lookup(1, 3, 4, 100),
        lookup(2, 5, 6, 97),
        lookup(1, 11, 12, 97),
        // A query while the trade runs may or may not find its order.
        query(3, 3, 4, 0, None),
        query(3, 5, 6, 0, Some((TradeType::Buy, 3))),
    ]);
}

#[test]
fn a_trade_without_a_reply_may_take_effect_late_or_never() {
    // Applied long after its client gave up.
    assert_passes(&[
        lookup(0, 0, 1, 100),
        trade(0, 2, 3, TradeType::Buy, 5, unknown()),
        lookup(1, 50, 51, 100),
        lookup(1, 90, 91, 95),
        lookup(1, 95, 96, 95),
    ]);
    // Never applied.
    assert_passes(&[
        lookup(0, 0, 1, 100),
        trade(0, 2, 3, TradeType::Sell, 5, unknown()),
        lookup(1, 50, 51, 100),
    ]);
}

/// A trade without a reply, named by `id`.
fn named_unknown(client: usize, from: u64, kind: TradeType, quantity: u64, id: RequestId) -> Op {
    let mut op = trade(client, from, from + 1, kind, quantity, unknown());
    if let Call::Trade { request_id, .. } = &mut op.call {
        *request_id = Some(id);
    }
    op
}

#[test]
fn the_logs_settle_a_trade_without_a_reply() {
    let id = RequestId::new();
    let late = [
        lookup(0, 0, 1, 100),
        named_unknown(0, 2, TradeType::Buy, 5, id),
        lookup(1, 50, 51, 100),
        lookup(1, 90, 91, 95),
    ];
    let applied = Settled(HashMap::from([(id, 7)]));
    let never = Settled::default();
    phase("applied (the logs hold it as order 7): late is fine, never showing it is not");
    let report = check(&late, Some(&applied), BUDGET);
    assert!(report.ok(), "{report}");
    assert_eq!((report.trades_settled, report.trades_unknown), (1, 0));
    let unseen = [
        lookup(0, 0, 1, 100),
        named_unknown(0, 2, TradeType::Buy, 5, id),
        lookup(1, 50, 51, 100),
    ];
    // Never seen is still linearizable: its effect may come after the last lookup.
    assert!(check(&unseen, Some(&applied), BUDGET).ok());
    phase("never applied (no log holds it): a lookup that shows it is an anomaly");
    let report = check(&late, Some(&never), BUDGET);
    assert!(!report.ok(), "the logs say it never happened: {report}");
    assert!(
        check(&late, None, BUDGET).ok(),
        "without the logs it is a maybe"
    );
    phase("order 7 was made by it, so a query that finds it is explained");
    let mut with_query = late.to_vec();
    with_query.push(query(1, 100, 101, 7, Some((TradeType::Buy, 5))));
    assert!(check(&with_query, Some(&applied), BUDGET).ok());
}

fn phase(text: &str) {
    eprintln!("phase: {text}");
}

#[test]
fn a_trade_without_a_reply_cannot_be_undone() {
    let anomaly = assert_fails(
        &[
            lookup(0, 0, 1, 100),
            trade(0, 2, 3, TradeType::Buy, 5, unknown()),
            lookup(1, 10, 11, 95),
            lookup(1, 20, 21, 100),
        ],
        "stock FishCo",
    );
    assert!(anomaly.stretch.len() <= 3, "{anomaly}");
}

#[test]
fn a_planted_stale_read_fails_with_a_small_stretch() {
    // A long, healthy history, with one lookup that returns the quantity from before an
    // acknowledged buy.
    let mut ops = vec![lookup(0, 0, 1, 1000)];
    let mut quantity = 1000;
    let mut t = 2;
    for i in 0..600_u64 {
        let kind = if i % 2 == 0 {
            TradeType::Buy
        } else {
            TradeType::Sell
        };
        let before = quantity;
        quantity = if kind == TradeType::Buy {
            quantity - 2
        } else {
            quantity + 1
        };
        ops.push(trade(
            usize::try_from(i % 3).expect("small"),
            t,
            t + 2,
            kind,
            if kind == TradeType::Buy { 2 } else { 1 },
            traded(i),
        ));
        ops.push(lookup(
            3,
            t + 1,
            t + 2,
            if i == 400 { before } else { quantity },
        ));
        ops.push(lookup(
            4,
            t + 3,
            t + 4,
            if i == 400 { before } else { quantity },
        ));
        t += 5;
    }
    let anomaly = assert_fails(&ops, "stock FishCo");
    assert!(
        anomaly.stretch.len() <= 6,
        "the stretch is the stale read and its neighbours: {anomaly}"
    );
    assert!(
        anomaly
            .stretch
            .iter()
            .any(|op| op.client == 4 && op.invoked_us == (2 + 400 * 5 + 3) * 1000),
        "{anomaly}"
    );
}

#[test]
fn a_lost_order_fails() {
    let anomaly = assert_fails(
        &[
            trade(0, 0, 2, TradeType::Buy, 3, traded(5)),
            query(1, 1, 2, 5, None),
            query(1, 3, 4, 5, Some((TradeType::Buy, 3))),
            query(1, 10, 11, 5, None),
        ],
        "order 5",
    );
    assert!(anomaly.summary.contains("found no such order"), "{anomaly}");
}

#[test]
fn a_double_applied_trade_fails() {
    assert_fails(
        &[
            lookup(0, 0, 1, 100),
            trade(0, 2, 3, TradeType::Buy, 3, traded(0)),
            lookup(1, 4, 5, 94),
        ],
        "stock FishCo",
    );
}

#[test]
fn a_number_given_to_two_orders_fails() {
    let anomaly = assert_fails(
        &[
            trade(0, 0, 2, TradeType::Buy, 3, traded(7)),
            trade(1, 0, 2, TradeType::Sell, 1, traded(7)),
            query(2, 3, 4, 7, Some((TradeType::Sell, 1))),
        ],
        "order 7",
    );
    assert!(anomaly.summary.contains("2 different trades"), "{anomaly}");
}

#[test]
fn an_order_read_back_as_another_fails() {
    let anomaly = assert_fails(
        &[
            trade(0, 0, 2, TradeType::Buy, 3, traded(4)),
            query(0, 3, 4, 4, Some((TradeType::Sell, 2))),
        ],
        "order 4",
    );
    assert!(anomaly.summary.contains("read back as sell 2"), "{anomaly}");
}

#[test]
fn an_order_nobody_traded_fails_but_one_from_a_lost_reply_passes() {
    assert_fails(&[query(0, 3, 4, 9, Some((TradeType::Sell, 2)))], "order 9");
    assert_passes(&[
        trade(1, 0, 1, TradeType::Sell, 2, unknown()),
        query(0, 3, 4, 9, Some((TradeType::Sell, 2))),
        query(0, 5, 6, 9, Some((TradeType::Sell, 2))),
    ]);
}

#[test]
fn a_refusal_with_plenty_of_stock_fails() {
    assert_fails(
        &[
            lookup(0, 0, 1, 100),
            trade(0, 2, 3, TradeType::Buy, 5, Outcome::Refused),
        ],
        "stock FishCo",
    );
}

#[test]
fn requests_that_changed_nothing_are_left_out() {
    assert_passes(&[
        lookup(0, 0, 1, 100),
        trade(
            0,
            2,
            3,
            TradeType::Buy,
            5,
            Outcome::NotSent {
                detail: "refused".into(),
            },
        ),
        trade(
            0,
            4,
            5,
            TradeType::Buy,
            5,
            Outcome::Rejected {
                status: 400,
                detail: "bad".into(),
            },
        ),
        op(
            1,
            4,
            5,
            Call::Lookup {
                stock: "FishCo".into(),
            },
            unknown(),
        ),
        lookup(0, 6, 7, 100),
    ]);
}

#[test]
fn thousands_of_concurrent_operations_are_decided_quickly() {
    // Five clients against a simulated linearizable stock: each operation takes effect at a
    // point inside its interval, in the order of those points.
    let mut quantity: u64 = 500;
    let mut ops = vec![lookup(9, 0, 1, quantity)];
    let mut events = Vec::new();
    for i in 0..4000_u64 {
        let client = usize::try_from(i % 5).expect("small");
        let start = 10 + i * 2;
        events.push((start + 3, client, start, start + 6, i));
    }
    events.sort_unstable();
    for (_, client, from, to, i) in events {
        let op = match i % 3 {
            0 => lookup(client, from, to, quantity),
            1 => {
                let ok = quantity >= 4;
                if ok {
                    quantity -= 4;
                }
                trade(
                    client,
                    from,
                    to,
                    TradeType::Buy,
                    4,
                    if ok { traded(i) } else { Outcome::Refused },
                )
            }
            _ => {
                quantity += 3;
                trade(client, from, to, TradeType::Sell, 3, traded(i))
            }
        };
        ops.push(op);
    }
    let report = assert_passes(&ops);
    assert!(report.elapsed_s < 30.0, "{report}");
}
