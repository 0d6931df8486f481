//! The gate on its own: what is released when, with a fake authority and no subscribers.

use std::sync::atomic::{AtomicBool, Ordering};

use bazaar_api::log::{Effect, LogIndex};
use bazaar_api::{Price, StockState, TradeType, TxnNumber, Version};

use super::feed::FeedMetrics;
use super::*;

struct Fixed(AtomicBool);

impl Vouch for Fixed {
    fn vouches(&self, _grace: Duration) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

fn gate(lease_ms: u64) -> Release {
    let feed = Feed::new(
        Duration::from_millis(lease_ms),
        Duration::from_millis(50),
        FeedMetrics::default(),
    );
    Release::new(
        feed,
        Arc::new(Fixed(AtomicBool::new(true))),
        Duration::from_millis(10),
        TaskTracker::new(),
    )
}

fn base(position: u64) -> BookSnapshot {
    BookSnapshot {
        position: Position(position),
        stocks: vec![StockState {
            name: "A".into(),
            price: Price::from_cents(1),
            quantity: 10,
            volume: 0,
            version: Version(0),
        }],
        next_number: TxnNumber(0),
    }
}

fn buy(index: u64, number: u64) -> AppliedEntry {
    AppliedEntry {
        index: LogIndex(index),
        effects: vec![Effect::Traded {
            number: TxnNumber(number),
            name: "A".into(),
            kind: TradeType::Buy,
            quantity: 1,
        }],
    }
}

#[tokio::test(start_paused = true)]
async fn nothing_is_released_before_the_handover_wait_and_the_commit() {
    let release = gate(100);
    release.lead(Epoch(3), base(5));
    release.committed(Position(5));
    assert_eq!(release.released().position, None, "handover still running");
    tokio::time::sleep(Duration::from_millis(120)).await;
    tokio::task::yield_now().await;
    assert_eq!(release.released().position, Some(Position(5)));
    assert_eq!(release.position(), Some((Epoch(3), Position(5))));
}

#[tokio::test(start_paused = true)]
async fn entries_are_released_in_order_once_committed() {
    let release = gate(100);
    release.lead(Epoch(1), base(0));
    release.committed(Position(0));
    tokio::time::sleep(Duration::from_millis(120)).await;
    release.sequenced(vec![buy(0, 0), buy(1, 1)]);
    // No subscriber: pushes finish at once, but nothing is committed yet.
    tokio::task::yield_now().await;
    assert_eq!(release.released().position, Some(Position(0)));
    release.committed(Position(1));
    tokio::task::yield_now().await;
    assert_eq!(release.released().position, Some(Position(1)));
    release.committed(Position(2));
    tokio::task::yield_now().await;
    assert_eq!(release.released().position, Some(Position(2)));
    match release
        .follow(Position(0), Some(Epoch(1)), Duration::ZERO)
        .await
    {
        Some(LogFollow::Entries { entries, .. }) => assert_eq!(entries.len(), 2),
        other => panic!("{other:?}"),
    }
    match release
        .follow(Position(1), Some(Epoch(9)), Duration::ZERO)
        .await
    {
        Some(LogFollow::Snapshot { snapshot, .. }) => {
            assert_eq!(snapshot.position, Position(2));
            assert_eq!(snapshot.stocks[0].quantity, 8);
        }
        other => panic!("another leader's follower gets a snapshot: {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_wait_ends_when_the_replica_resigns() {
    let release = gate(100);
    release.lead(Epoch(1), base(0));
    let waiting = {
        let release = release.clone();
        tokio::spawn(async move {
            release
                .wait(
                    Epoch(1),
                    Position(1),
                    Instant::now() + Duration::from_secs(5),
                )
                .await
        })
    };
    tokio::task::yield_now().await;
    release.resign();
    assert_eq!(waiting.await.ok(), Some(Err(NotReleased::Resigned)));
    assert_eq!(release.hello(), None, "no subscriptions after resigning");
}
