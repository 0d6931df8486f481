//! The front-end cache: LRU replacement, server-push invalidation at every front-end, no stale
//! read after an acknowledged trade, feed loss, restocking.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bazaar_cluster::Role;
use serde_json::Value;

use crate::phase;
use crate::support::{Api, System, wait_until};

fn cached_names(cache: &Value) -> Vec<String> {
    cache["data"]["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["name"].as_str().expect("name").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn replacement_is_lru_and_visible_in_get_cache() {
    let system = System::start_with(|spec| spec.cache_size = Some(3)).await;
    system.wait_caching().await;
    let api = system.api();
    phase!("look up A B C A D with capacity 3: B is least recently used and goes");
    for name in ["GameStart", "FishCo", "BoarCo", "GameStart", "MenhirCo"] {
        api.quantity(name).await;
    }
    let (_, cache) = api.get("/cache").await;
    assert_eq!(
        cached_names(&cache),
        ["MenhirCo", "GameStart", "BoarCo"],
        "{cache}"
    );
    assert_eq!(cache["data"]["hits"], 1);
    assert_eq!(cache["data"]["misses"], 4);
    assert_eq!(cache["data"]["evictions"], 1);
    phase!("a hit moves an entry to the front");
    api.quantity("BoarCo").await;
    let (_, cache) = api.get("/cache").await;
    assert_eq!(cached_names(&cache), ["BoarCo", "MenhirCo", "GameStart"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trade_invalidates_the_stock_at_every_front_end() {
    let system = System::start().await;
    system.wait_caching().await;
    let first = system.api();
    let second_process = system.spawn_frontend().await;
    let second = Api::new(second_process.url.clone());
    phase!("both front-ends cache FishCo");
    for api in [&first, &second] {
        assert_eq!(api.quantity("FishCo").await, 100);
        assert_eq!(api.quantity("FishCo").await, 100);
        let (_, cache) = api.get("/cache").await;
        assert!(
            cached_names(&cache).contains(&"FishCo".to_owned()),
            "{cache}"
        );
    }
    phase!("a trade through the first is pushed to the second before it is acknowledged");
    assert!(first.trade("FishCo", "buy", 7).await.is_ok());
    let (_, cache) = second.get("/cache").await;
    assert!(
        !cached_names(&cache).contains(&"FishCo".to_owned()),
        "{cache}"
    );
    assert!(cache["data"]["invalidations"].as_u64() >= Some(1));
    assert_eq!(second.quantity("FishCo").await, 93);
    assert_eq!(first.quantity("FishCo").await, 93);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_lookup_after_an_acknowledged_trade_sees_an_older_quantity() {
    const INITIAL: u64 = 1_000_000;
    const RUN: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("deep.csv");
    std::fs::write(
        &csv,
        format!("name,price,quantity\nDeep,1.00,{INITIAL}\nOther,2.00,100\n"),
    )
    .expect("csv");
    let system = System::start_with(|spec| spec.stocks = Some(csv.clone())).await;
    system.wait_caching().await;
    let second_process = system.spawn_frontend().await;
    let apis = [system.api(), Api::new(second_process.url.clone())];
    // Buys acknowledged so far. Only buys, so the quantity can only fall: a lookup that
    // starts after `acked` buys were acknowledged must see at most INITIAL - acked.
    let acked = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + RUN;

    phase!("4 traders buy one share at a time while 6 readers look up at both front-ends");
    let traders = (0..4).map(|_| {
        let (api, acked, stop) = (apis[0].clone(), Arc::clone(&acked), Arc::clone(&stop));
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
                api.trade("Deep", "buy", 1).await.expect("buy");
                acked.fetch_add(1, Ordering::SeqCst);
            }
        })
    });
    let readers = (0..6).map(|r| {
        let (api, acked) = (apis[r % 2].clone(), Arc::clone(&acked));
        tokio::spawn(async move {
            let mut checked = 0_u64;
            while Instant::now() < deadline {
                let floor = acked.load(Ordering::SeqCst);
                let seen = api.quantity("Deep").await;
                assert!(
                    seen <= INITIAL - floor,
                    "stale read at {}: quantity {seen} after {floor} acknowledged buys",
                    api.base
                );
                checked += 1;
            }
            checked
        })
    });
    let readers: Vec<_> = readers.collect();
    let traders: Vec<_> = traders.collect();
    let mut checked = 0;
    for reader in readers {
        checked += reader.await.expect("reader");
    }
    stop.store(true, Ordering::SeqCst);
    for trader in traders {
        trader.await.expect("trader");
    }
    phase!(
        "{checked} lookups checked against {} acknowledged buys",
        acked.load(Ordering::SeqCst)
    );
    assert!(checked > 100, "too few lookups to mean anything");
    assert!(
        acked.load(Ordering::SeqCst) > 10,
        "too few trades to mean anything"
    );
    let mut hits = 0;
    for api in &apis {
        hits += api.get("/cache").await.1["data"]["hits"]
            .as_u64()
            .unwrap_or(0);
    }
    assert!(hits > 0, "the cache must have served some of the lookups");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_feed_without_pongs_turns_caching_off_until_the_leader_answers_again() {
    let system = System::start().await;
    system.wait_caching().await;
    let api = system.api();
    api.quantity("FishCo").await;
    api.quantity("FishCo").await;
    assert!(!cached_names(&api.get("/cache").await.1).is_empty());

    let leader = system.leader().await;
    phase!("pause leader {leader}: no pong renews the lease, the front-end empties its cache");
    let paused = system.pause(Role::Order, Some(leader));
    wait_until("caching is off", Duration::from_secs(10), || {
        let api = api.clone();
        async move {
            let (_, cache) = api.get("/cache").await;
            cache["data"]["enabled"] == false && cached_names(&cache).is_empty()
        }
    })
    .await;

    phase!("resume it: pongs renew the lease and caching resumes");
    drop(paused);
    system.wait_caching().await;
    let hits = api.get("/cache").await.1["data"]["hits"]
        .as_u64()
        .expect("hits");
    assert_eq!(api.quantity("FishCo").await, 100);
    assert_eq!(api.quantity("FishCo").await, 100);
    let after = api.get("/cache").await.1["data"]["hits"]
        .as_u64()
        .expect("hits");
    assert_eq!(after, hits + 1, "the second lookup is a hit again");
}

#[tokio::test(flavor = "multi_thread")]
async fn sold_out_stocks_are_restocked_and_caches_told() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = dir.path().join("tiny.csv");
    std::fs::write(&csv, "name,price,quantity\nTiny,1.00,5\n").expect("csv");
    let system = System::start_with(|spec| {
        spec.stocks = Some(csv.clone());
        spec.restock_interval = Some("300ms".into());
        spec.restock_to = Some(100);
    })
    .await;
    system.wait_caching().await;
    let api = system.api();
    phase!("buy Tiny down to 0 and cache the 0");
    assert!(api.trade("Tiny", "buy", 5).await.is_ok());
    assert_eq!(api.quantity("Tiny").await, 0);
    phase!("within an interval or two the lookup shows the restock level");
    wait_until("Tiny is restocked to 100", Duration::from_secs(10), || {
        let api = api.clone();
        async move { api.quantity("Tiny").await == 100 }
    })
    .await;
    crate::support::checks::assert_verified(&system.data_dir());
}
