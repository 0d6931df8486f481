//! The catalog as a recoverable view of the order log, and the cache's freshness when a
//! front-end's link to the leader stalls (issue 10's process tests):
//!
//! - a catalog killed with SIGKILL under 5 verifying clients, and restarted: no client sees an
//!   error, nothing is lost, and the restarted catalog serves the log's state (both modes);
//! - a catalog whose database (with its -wal and -shm) is deleted while it is stopped rebuilds
//!   from the log (both modes); one whose database is deleted while it runs writes it again;
//! - the two-front-end stale-read race: front-end B reaches the order replicas through relays
//!   that stall, a trade is acknowledged through front-end A, and B never answers the old
//!   quantity, for the shortest, the default and the longest lease `--feed-lease` accepts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bazaar_client::history::{Call, Op, Outcome, Recorder};
use bazaar_client::load::{LiveCounters, LoadConfig, Stop};
use bazaar_cluster::{ClusterSpec, Role};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::phase;
use crate::support::relay::{Link, Relay};
use crate::support::{Api, System, assert_error, checks, wait_until};

const PRIMARY_BACKUP: &str = "primary-backup";
const RAFT: &str = "raft";

/// How long a restarted or rebuilt catalog may take to reach the leader's position.
const CATCH_UP_DEADLINE: Duration = Duration::from_secs(30);

/// A catalog's count of lookups it answered.
const LOOKUPS_SERVED: &str =
    r#"bazaar_http_requests_total{method="GET",route="/stocks/{name}",status="200"}"#;

/// A counter or gauge from a service's `/metrics` (0 when absent).
async fn metric(api: &Api, name: &str) -> u64 {
    let (status, body) = api.get("/metrics").await;
    assert_eq!(status, 200, "{body}");
    body.as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.split_once(' ')?;
            (key == name || key == format!("{name}_total"))
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .map_or(0, |v| v as u64)
}

/// The leader's released position: what every catalog must come to show.
async fn leader_visible(system: &System) -> u64 {
    let leader = system.leader().await;
    let (status, body) = system.replica(leader).get("/health").await;
    assert_eq!(status, 200, "{body}");
    body["data"]["visible"]
        .as_u64()
        .unwrap_or_else(|| panic!("the leader reports no visible position: {body}"))
}

/// A catalog's `/health` data, if it answers.
async fn catalog_health(catalog: &Api) -> Option<Value> {
    match catalog.try_get("/health").await {
        Some((200, body)) => Some(body["data"].clone()),
        _ => None,
    }
}

/// Waits until catalog `id` shows at least the position the leader had released when the
/// wait started.
async fn wait_catalog_caught_up(system: &System, id: u8) {
    let target = leader_visible(system).await;
    let catalog = system.catalog(id);
    wait_until(
        &format!("catalog-{id} reaches the leader's position {target}"),
        CATCH_UP_DEADLINE,
        || {
            let catalog = catalog.clone();
            async move {
                catalog_health(&catalog)
                    .await
                    .and_then(|h| h["position"].as_u64())
                    .is_some_and(|p| p >= target)
            }
        },
    )
    .await;
    phase!("catalog-{id} reached position {target}");
}

/// Once quiet: both catalogs answer `GET /stocks` from the same position with the same stocks
/// (quantities, volumes, versions, prices); returns that list.
async fn assert_catalogs_agree(system: &System) -> Value {
    let position = leader_visible(system).await;
    let path = format!("/stocks?min_position={position}");
    let (status_1, one) = system.catalog(1).get(&path).await;
    let (status_2, two) = system.catalog(2).get(&path).await;
    assert_eq!(status_1, 200, "catalog-1: {one}");
    assert_eq!(status_2, 200, "catalog-2: {two}");
    assert_eq!(
        one["data"]["position"], two["data"]["position"],
        "both catalogs answer from the same position"
    );
    assert_eq!(
        one["data"]["stocks"], two["data"]["stocks"],
        "catalog-1 and catalog-2 show different stocks at the same position"
    );
    assert!(
        one["data"]["stocks"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "no stocks listed: {one}"
    );
    one["data"]["stocks"].clone()
}

/// The quantity of `name` in a `GET /stocks` list.
fn quantity_in(stocks: &Value, name: &str) -> u64 {
    stocks
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == name))
        .and_then(|s| s["quantity"].as_u64())
        .unwrap_or_else(|| panic!("{name} is not listed: {stocks}"))
}

/// A catalog's database and the SQLite files beside it.
fn catalog_files(dir: &Path, id: u8) -> [PathBuf; 3] {
    let db = dir.join(format!("catalog-{id}.db"));
    let beside = |suffix: &str| {
        let mut name = db.clone().into_os_string();
        name.push(suffix);
        PathBuf::from(name)
    };
    [beside(""), beside("-wal"), beside("-shm")]
}

/// The lines of a service's log file.
fn log_of(system: &System, name: &str) -> String {
    std::fs::read_to_string(system.dir.path().join("logs").join(format!("{name}.log")))
        .unwrap_or_default()
}

/// A seed for the load: `BAZAAR_TEST_SEED` if set, else the clock (printed, so a failing run
/// can be repeated).
fn seed() -> u64 {
    std::env::var("BAZAAR_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
}

/// Polls until the load has completed `more` operations beyond `from` and `at_least` has
/// passed since `since`.
async fn wait_ops(
    recorder: &Recorder,
    from: usize,
    more: usize,
    since: Instant,
    at_least: Duration,
) {
    wait_until(
        &format!("clients complete {more} more operations"),
        Duration::from_secs(60),
        || {
            let done = recorder.len() >= from + more && since.elapsed() >= at_least;
            async move { done }
        },
    )
    .await;
}

/// The slowest operation that was running at some moment of `[from_us, to_us]`.
fn slowest_during(ops: &[Op], from_us: u64, to_us: u64) -> Option<&Op> {
    ops.iter()
        .filter(|op| op.invoked_us <= to_us && op.completed_us >= from_us)
        .max_by_key(|op| op.completed_us.saturating_sub(op.invoked_us))
}

fn latency_ms(op: &Op) -> f64 {
    op.completed_us.saturating_sub(op.invoked_us) as f64 / 1e3
}

// ---------------------------------------------------------------------------------------------
// 1. Kill -9 a catalog under 5 verifying clients.

async fn a_catalog_killed_under_verifying_clients_costs_nothing(replication: &str) {
    let mut system = System::start_with(|spec| spec.replication = replication.into()).await;
    system.wait_caching().await;
    let api = system.api();
    let seed = seed();
    let recorder = Recorder::new();
    let live = Arc::new(LiveCounters::default());
    let cancel = CancellationToken::new();
    let mut config = LoadConfig::new(
        bazaar_client::Endpoint::parse(&api.base).expect("the front-end's URL parses"),
    );
    config.clients = 5;
    // Ended by `cancel` once the catalog is back; the duration only bounds a test gone wrong.
    config.stop = Stop::Duration(Duration::from_secs(120));
    config.trade_probability = 0.5;
    config.seed = seed;
    config.live = Some(Arc::clone(&live));
    config.cancel = Some(cancel.clone());
    config.history = Some(recorder.clone());
    phase!("{replication}: 5 verifying clients look up and trade (seed {seed})");
    let load = tokio::spawn(bazaar_client::load::run(config));

    wait_until("clients have traded", Duration::from_secs(30), || {
        let traded = live.trades.load(Ordering::Relaxed) >= 30;
        async move { traded }
    })
    .await;
    let (catalog_1, catalog_2) = (system.catalog(1), system.catalog(2));
    assert!(
        metric(&catalog_1, LOOKUPS_SERVED).await > 0,
        "catalog-1 answers the front-end's lookups before the kill"
    );
    let served_by_2 = metric(&catalog_2, LOOKUPS_SERVED).await;
    let killed = Instant::now();
    system.cluster().kill(Role::Catalog, Some(1)).expect("kill");
    let killed_us = recorder.micros(killed);
    phase!("SIGKILL catalog-1 mid-run; the clients go on against catalog-2");
    wait_ops(
        &recorder,
        recorder.len(),
        200,
        killed,
        Duration::from_secs(3),
    )
    .await;
    let served_by_2_while_down = metric(&catalog_2, LOOKUPS_SERVED).await - served_by_2;
    phase!(
        "{replication}: catalog-2 answered {served_by_2_while_down} lookups while catalog-1 was down"
    );

    phase!("restart catalog-1 from its file while the clients go on");
    system
        .cluster()
        .restart(Role::Catalog, Some(1))
        .await
        .expect("restart");
    wait_catalog_caught_up(&system, 1).await;
    let back_us = recorder.micros(Instant::now());
    assert!(
        log_of(&system, "catalog-1").contains("catalog view read from its file"),
        "the restarted catalog-1 starts from its file"
    );
    wait_ops(
        &recorder,
        recorder.len(),
        200,
        Instant::now(),
        Duration::ZERO,
    )
    .await;
    cancel.cancel();
    let report = load
        .await
        .expect("load task")
        .expect("the load ran to the end");

    let ops = recorder.ops();
    phase!(
        "{replication}: {} operations, {} trades acknowledged, {} orders read back",
        ops.len(),
        report.trade.count,
        report.orders_verified
    );
    match slowest_during(&ops, killed_us, back_us) {
        Some(op) => phase!(
            "{replication}: worst client latency from the kill until catalog-1 caught up ({:.1} s): {:.1} ms ({}); worst of the whole run: lookup {:.1} ms, trade {:.1} ms",
            (back_us - killed_us) as f64 / 1e6,
            latency_ms(op),
            op.describe(),
            report.lookup.max_us as f64 / 1e3,
            report.trade.max_us as f64 / 1e3
        ),
        None => panic!("no client operation ran while catalog-1 was down"),
    }

    assert!(
        report.ok(),
        "clients saw errors or mismatches (seed {seed}): errors {:?}, mismatches {:?}",
        report.error_samples,
        report.mismatch_samples
    );
    let failed: Vec<String> = ops
        .iter()
        .filter(|op| !op.outcome.is_answer())
        .take(10)
        .map(Op::describe)
        .collect();
    assert!(failed.is_empty(), "requests without an answer: {failed:#?}");
    assert_eq!(
        report.orders_verified, report.orders_recorded,
        "every acknowledged order reads back as sent"
    );
    assert!(
        served_by_2_while_down > 0,
        "no lookup reached catalog-2 while catalog-1 was down: the kill proved nothing"
    );
    let during: usize = ops
        .iter()
        .filter(|op| matches!(op.call, Call::Lookup { .. }))
        .filter(|op| op.invoked_us >= killed_us && op.invoked_us <= back_us)
        .count();
    assert!(during > 0, "no lookup ran while catalog-1 was down");

    let linearizable =
        bazaar_client::linearizable::check(&ops, None, bazaar_client::linearizable::BUDGET_DEFAULT);
    assert!(
        linearizable.ok(),
        "what the clients saw is not linearizable (seed {seed}):\n{linearizable}"
    );

    phase!("quiet: nothing lost, the restarted catalog shows the log's state");
    system.wait_quiet().await;
    let acked: std::collections::BTreeSet<u64> = ops
        .iter()
        .filter_map(|op| match op.outcome {
            Outcome::Traded { number } => Some(number),
            _ => None,
        })
        .collect();
    assert_eq!(
        acked.len() as u64,
        report.trade.count - report.trade.rejected
    );
    let dir = system.data_dir();
    checks::assert_logs_identical(&dir);
    checks::assert_acked_present(&dir, &acked);
    assert_catalogs_agree(&system).await;
    checks::assert_verified(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_catalog_killed_under_verifying_clients_costs_nothing_primary_backup() {
    a_catalog_killed_under_verifying_clients_costs_nothing(PRIMARY_BACKUP).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_catalog_killed_under_verifying_clients_costs_nothing_raft() {
    a_catalog_killed_under_verifying_clients_costs_nothing(RAFT).await;
}

// ---------------------------------------------------------------------------------------------
// 2. A catalog's database deleted.

async fn a_catalog_whose_database_was_deleted_while_stopped_rebuilds_from_the_log(
    replication: &str,
) {
    let mut system = System::start_with(|spec| spec.replication = replication.into()).await;
    let api = system.api();
    phase!("{replication}: trade, and let both catalogs save");
    assert!(api.trade("BoarCo", "buy", 10).await.is_ok());
    assert!(api.trade("BoarCo", "sell", 4).await.is_ok());
    assert!(api.trade("LionCo", "buy", 7).await.is_ok());
    system.wait_quiet().await;

    phase!("SIGKILL catalog-1 and delete its database, -wal and -shm");
    system.cluster().kill(Role::Catalog, Some(1)).expect("kill");
    let dir = system.data_dir();
    for path in catalog_files(&dir, 1) {
        assert!(
            path.exists(),
            "{} should exist after a kill",
            path.display()
        );
        std::fs::remove_file(&path).expect("delete");
    }

    phase!("trade while it is down: the rebuilt view must hold these too");
    assert!(api.trade("LionCo", "sell", 2).await.is_ok());
    assert!(api.trade("FishCo", "buy", 5).await.is_ok());

    phase!("restart it: it rebuilds from the log alone");
    system
        .cluster()
        .restart(Role::Catalog, Some(1))
        .await
        .expect("restart");
    wait_catalog_caught_up(&system, 1).await;
    assert!(
        log_of(&system, "catalog-1")
            .contains("no catalog file; rebuilding the view from the order log"),
        "catalog-1 should say it rebuilds from the log"
    );
    let stocks = assert_catalogs_agree(&system).await;
    assert_eq!(quantity_in(&stocks, "BoarCo"), 94);
    assert_eq!(quantity_in(&stocks, "LionCo"), 95);
    assert_eq!(quantity_in(&stocks, "FishCo"), 95);
    let (status, body) = system.catalog(1).get("/stocks/LionCo").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["stock"]["quantity"], 95, "{body}");
    system.wait_quiet().await;
    for path in &catalog_files(&dir, 1)[..1] {
        assert!(path.exists(), "{} was written again", path.display());
    }
    checks::assert_verified(&dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_catalog_whose_database_was_deleted_while_stopped_rebuilds_from_the_log_primary_backup() {
    a_catalog_whose_database_was_deleted_while_stopped_rebuilds_from_the_log(PRIMARY_BACKUP).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_catalog_whose_database_was_deleted_while_stopped_rebuilds_from_the_log_raft() {
    a_catalog_whose_database_was_deleted_while_stopped_rebuilds_from_the_log(RAFT).await;
}

/// Waits until catalog `id`'s file, read as `bazaar verify` reads it, holds the position the
/// leader released and the stocks the catalog serves.
async fn wait_file_holds_the_view(system: &System, id: u8) {
    let target = leader_visible(system).await;
    let path = catalog_files(&system.data_dir(), id)[0].clone();
    let catalog = system.catalog(id);
    wait_until(
        &format!("{} holds position {target}", path.display()),
        Duration::from_secs(10),
        || {
            let (path, catalog) = (path.clone(), catalog.clone());
            async move {
                let Ok(saved) = bazaar_catalog::file::read(&path) else {
                    return false;
                };
                if saved.snapshot.position.0 < target {
                    return false;
                }
                let Some(health) = catalog_health(&catalog).await else {
                    return false;
                };
                health["saved"].as_u64() == Some(saved.snapshot.position.0)
            }
        },
    )
    .await;
    let saved = bazaar_catalog::file::read(&path).expect("read the file");
    let (status, listed) = system
        .catalog(id)
        .get(&format!(
            "/stocks?min_position={}",
            saved.snapshot.position.0
        ))
        .await;
    assert_eq!(status, 200, "{listed}");
    // Nothing trades meanwhile, so the view is still where the file is.
    assert_eq!(
        listed["data"]["position"].as_u64(),
        Some(saved.snapshot.position.0),
        "{listed}"
    );
    for stock in &saved.snapshot.stocks {
        assert_eq!(
            quantity_in(&listed["data"]["stocks"], &stock.name),
            stock.quantity,
            "the file and the catalog disagree on {}",
            stock.name
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_catalog_whose_database_is_deleted_while_it_runs_writes_it_again() {
    let mut system = System::start().await;
    let api = system.api();
    assert!(api.trade("BoarCo", "buy", 10).await.is_ok());
    system.wait_quiet().await;
    let pid = system
        .cluster()
        .records()
        .into_iter()
        .find(|r| r.role == Role::Catalog && r.id == Some(1))
        .expect("catalog-1")
        .pid;

    phase!("delete catalog-1's database, -wal and -shm while it runs");
    let dir = system.data_dir();
    for path in catalog_files(&dir, 1) {
        assert!(path.exists(), "{} exists while it runs", path.display());
        std::fs::remove_file(&path).expect("delete");
    }
    assert!(api.trade("BoarCo", "sell", 3).await.is_ok());
    assert!(api.trade("LionCo", "buy", 2).await.is_ok());

    phase!("it notices and writes the whole view to a new file, without limping");
    wait_file_holds_the_view(&system, 1).await;
    assert!(
        log_of(&system, "catalog-1").contains("the catalog file was deleted while running"),
        "catalog-1 should say it noticed"
    );

    phase!("later saves land in the new file too");
    assert!(api.trade("FishCo", "buy", 4).await.is_ok());
    wait_file_holds_the_view(&system, 1).await;
    assert!(
        system.cluster().exited().is_empty(),
        "no service exited: {:?}",
        system.cluster().exited()
    );
    let same = system
        .cluster()
        .records()
        .into_iter()
        .any(|r| r.role == Role::Catalog && r.id == Some(1) && r.pid == pid);
    assert!(same, "catalog-1 is still the same process");
    assert_catalogs_agree(&system).await;

    phase!("SIGKILL it and restart: it starts from the new file");
    system.cluster().kill(Role::Catalog, Some(1)).expect("kill");
    system
        .cluster()
        .restart(Role::Catalog, Some(1))
        .await
        .expect("restart");
    wait_catalog_caught_up(&system, 1).await;
    let stocks = assert_catalogs_agree(&system).await;
    assert_eq!(quantity_in(&stocks, "BoarCo"), 93);
    assert_eq!(quantity_in(&stocks, "LionCo"), 98);
    assert_eq!(quantity_in(&stocks, "FishCo"), 96);
    system.wait_quiet().await;
    checks::assert_verified(&dir);
}

// ---------------------------------------------------------------------------------------------
// 3. The two-front-end stale-read race over a stalled link.

/// Sets the (first) front-end's `--failover-deadline`, which `System::spec` sets to 4 s.
fn set_failover_deadline(spec: &mut ClusterSpec, deadline: Duration) {
    let flag = format!("{}ms", deadline.as_millis());
    let args = spec
        .extra_args
        .iter_mut()
        .filter(|(role, _)| *role == Role::Frontend)
        .flat_map(|(_, args)| args.iter_mut())
        .skip_while(|arg| *arg != "--failover-deadline")
        .nth(1)
        .expect("System::spec sets --failover-deadline");
    *args = flag;
}

/// What a lookup at B answered.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Quantity(u64),
    Refused(u16),
}

async fn look_up(api: &Api, name: &str) -> Seen {
    let (status, body) = api.get(&format!("/stocks/{name}")).await;
    if status == 200 {
        Seen::Quantity(body["data"]["quantity"].as_u64().expect("quantity"))
    } else {
        assert_error(status, &body, status, "");
        assert!(
            status >= 500,
            "a lookup of a known stock got {status}: {body}"
        );
        Seen::Refused(status)
    }
}

async fn cache_of(api: &Api) -> Value {
    let (status, body) = api.get("/cache").await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

fn cached(cache: &Value, name: &str) -> bool {
    cache["entries"]
        .as_array()
        .is_some_and(|e| e.iter().any(|e| e["name"] == name))
}

async fn a_stalled_front_end_never_answers_an_older_quantity(replication: &str, lease: Duration) {
    // A trade waits out B's lease, and after a new appointment the leader's handover wait (a
    // lease and a grace): the front-ends' failover deadline (4 s in these tests) must not end
    // it first.
    let trade_deadline = lease + Duration::from_secs(10);
    let lease_flag = format!("{}ms", lease.as_millis());
    let system = System::start_with(|spec| {
        spec.replication = replication.into();
        spec.extra_args
            .push((Role::Order, vec!["--feed-lease".into(), lease_flag.clone()]));
        set_failover_deadline(spec, trade_deadline);
    })
    .await;
    system.wait_caching().await;
    let a = system.api();

    let link = Link::new();
    let mut relays = Vec::new();
    for id in 1..=3 {
        relays.push(Relay::start(&system.url(Role::Order, Some(id)), &link).await);
    }
    let urls: Vec<String> = relays.iter().map(|r| r.url.clone()).collect();
    phase!(
        "{replication}, lease {lease:?}: front-end B reaches the order replicas only through relays"
    );
    let b_deadline = format!("{}ms", trade_deadline.as_millis());
    let b_process = system
        .spawn_frontend_via(&urls, &["--failover-deadline", &b_deadline])
        .await;
    let b = Api::new(b_process.url.clone());
    assert!(
        link.forwarded() > 0,
        "B talks to the replicas through the relays"
    );

    // Primary-backup: B appointed the leader again as it started, so trades wait for the
    // leader's handover; one trade here makes the timing below about B's lease alone.
    phase!("a first trade through A: the leader's handover wait is over");
    let traded = a.trade("BoarCo", "sell", 1).await;
    assert!(traded.is_ok(), "{traded:?}");

    phase!("warm B's cache on FishCo");
    assert_eq!(look_up(&b, "FishCo").await, Seen::Quantity(100));
    let hits = cache_of(&b).await["hits"].as_u64().expect("hits");
    assert_eq!(look_up(&b, "FishCo").await, Seen::Quantity(100));
    let cache = cache_of(&b).await;
    assert!(cached(&cache, "FishCo"), "B caches FishCo: {cache}");
    assert_eq!(
        cache["hits"].as_u64(),
        Some(hits + 1),
        "the second lookup was a hit"
    );

    let leader = system.replica(system.leader().await);
    let drops = metric(&leader, "bazaar_feed_drops").await;
    phase!("stall B's link (connections stay open), then buy 7 FishCo through A");
    link.pause();
    let stalled = link.forwarded();
    let started = Instant::now();
    let traded = a.trade("FishCo", "buy", 7).await;
    let took = started.elapsed();
    phase!(
        "{replication}: with B's link stalled the trade took {:.0} ms; lease {:.0} ms",
        took.as_secs_f64() * 1e3,
        lease.as_secs_f64() * 1e3
    );
    assert!(
        traded.is_ok(),
        "with B stalled the leader must wait out B's lease and acknowledge: {traded:?}"
    );
    assert!(
        metric(&leader, "bazaar_feed_drops").await > drops,
        "the leader dropped B from its feed rather than hearing from it"
    );

    phase!("B may fail a lookup of FishCo but must never answer 100");
    for _ in 0..2 {
        let started = Instant::now();
        let seen = look_up(&b, "FishCo").await;
        phase!(
            "B answered {seen:?} in {:.0} ms with its link stalled",
            started.elapsed().as_secs_f64() * 1e3
        );
        assert_ne!(
            seen,
            Seen::Quantity(100),
            "B answered the quantity before the trade"
        );
        if let Seen::Quantity(q) = seen {
            assert_eq!(q, 93);
        }
    }
    let cache = cache_of(&b).await;
    assert_eq!(
        cache["enabled"], false,
        "B's lease ran out before the trade was acknowledged: {cache}"
    );
    assert_eq!(a.quantity("FishCo").await, 93);
    assert_eq!(
        link.forwarded(),
        stalled,
        "the relays carried bytes while paused"
    );

    phase!("resume the link: B answers correctly again, and caches again");
    link.resume();
    wait_until("B caches again", lease + Duration::from_secs(30), || {
        let b = b.clone();
        async move { cache_of(&b).await["enabled"] == true }
    })
    .await;
    wait_until(
        "B answers a lookup again",
        lease + Duration::from_secs(30),
        || {
            let b = b.clone();
            async move {
                match look_up(&b, "FishCo").await {
                    Seen::Quantity(q) => {
                        assert_eq!(q, 93, "B answered a quantity other than the new one");
                        true
                    }
                    Seen::Refused(_) => false,
                }
            }
        },
    )
    .await;
    let hits = cache_of(&b).await["hits"].as_u64().expect("hits");
    assert_eq!(look_up(&b, "FishCo").await, Seen::Quantity(93));
    let cache = cache_of(&b).await;
    assert!(
        cache["hits"].as_u64() > Some(hits) && cached(&cache, "FishCo"),
        "B serves FishCo from its cache again: {cache}"
    );
    phase!("a trade through B reaches A, and B drops its entry");
    let traded = b.trade("FishCo", "sell", 2).await;
    assert!(traded.is_ok(), "{traded:?}");
    assert_eq!(a.quantity("FishCo").await, 95);
    assert_eq!(b.quantity("FishCo").await, 95);
    drop(b_process);
    drop(relays);
}

/// Each case ends within its deadline whatever happens (a stuck step fails it).
async fn bounded(replication: &str, lease: Duration) {
    let deadline = lease * 6 + Duration::from_secs(120);
    tokio::time::timeout(
        deadline,
        a_stalled_front_end_never_answers_an_older_quantity(replication, lease),
    )
    .await
    .unwrap_or_else(|_| {
        panic!("the {replication} case with lease {lease:?} ran longer than {deadline:?}")
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_front_end_never_answers_an_older_quantity_with_the_shortest_lease() {
    bounded(PRIMARY_BACKUP, bazaar_order::config::FEED_LEASE_MIN).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_front_end_never_answers_an_older_quantity_with_the_default_lease() {
    bounded(PRIMARY_BACKUP, bazaar_order::release::feed::LEASE_DEFAULT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_front_end_never_answers_an_older_quantity_with_the_longest_lease() {
    bounded(PRIMARY_BACKUP, bazaar_order::release::feed::LEASE_MAX).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_front_end_never_answers_an_older_quantity_with_the_shortest_lease_raft() {
    bounded(RAFT, bazaar_order::config::FEED_LEASE_MIN).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_front_end_never_answers_an_older_quantity_with_the_default_lease_raft() {
    bounded(RAFT, bazaar_order::release::feed::LEASE_DEFAULT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_front_end_never_answers_an_older_quantity_with_the_longest_lease_raft() {
    bounded(RAFT, bazaar_order::release::feed::LEASE_MAX).await;
}
