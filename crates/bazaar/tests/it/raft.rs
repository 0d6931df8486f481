//! Raft mode (`--replication raft`) with real processes and real SIGKILLs: a majority commits
//! every order, so one replica may die at any moment without losing an acknowledged order or a
//! client noticing; with only one replica left trades fail fast with 503 and resume by
//! themselves when a second returns; a replica that was down for long catches up by snapshot.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bazaar_cluster::{Cluster, ClusterSpec, Role};

use crate::phase;
use crate::support::{Api, System, Traded, Traders, checks, wait_until};

/// A raft system; `flags` go to every order replica.
async fn start(flags: &[&str]) -> System {
    let flags: Vec<String> = flags.iter().map(|f| (*f).to_owned()).collect();
    System::start_with(|spec| raft_spec(spec, flags)).await
}

fn raft_spec(spec: &mut ClusterSpec, flags: Vec<String>) {
    spec.replication = "raft".into();
    if !flags.is_empty() {
        spec.extra_args.push((Role::Order, flags));
    }
}

/// Statuses of the replicas that answer, by id.
async fn statuses(system: &System, ids: &[u8]) -> Vec<(u8, serde_json::Value)> {
    let mut answered = Vec::new();
    for id in ids {
        if let Some((200, body)) = system.replica(*id).try_get("/health").await {
            answered.push((*id, body["data"].clone()));
        }
    }
    answered
}

/// The replica that leads among `ids`, once one does (the newest term wins while a deposed
/// leader has not noticed yet).
async fn raft_leader(system: &System, ids: &[u8]) -> u8 {
    let start = Instant::now();
    loop {
        let leader = statuses(system, ids)
            .await
            .into_iter()
            .filter(|(_, s)| s["role"] == "leader")
            .max_by_key(|(_, s)| s["epoch"].as_u64())
            .map(|(id, _)| id);
        if let Some(id) = leader {
            return id;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no replica among {ids:?} became leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A counter or gauge from a service's `/metrics` (0 when absent).
async fn metric(api: &Api, name: &str) -> f64 {
    let (status, body) = api.get("/metrics").await;
    assert_eq!(status, 200);
    body.as_str()
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (key, value) = l.split_once(' ')?;
            (key == name || key == format!("{name}_total"))
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0.0)
}

/// Trades until one succeeds; returns how long it took and the order's number.
async fn first_success(api: &Api, deadline: Duration) -> (Duration, u64) {
    let start = Instant::now();
    loop {
        match api.trade("FishCo", "sell", 1).await {
            Ok(number) => return (start.elapsed(), number),
            Err((status, body)) => assert!(
                start.elapsed() < deadline,
                "no trade succeeded within {deadline:?}; last reply {status} {body}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// After the system is quiet: every replica holds the same dense log, every acknowledged order
/// is in each exactly once, and `verify` passes.
async fn assert_converged(system: &System, acked: &BTreeSet<u64>) {
    system.wait_replicas_equal(&[1, 2, 3]).await;
    system.wait_quiet().await;
    let dir = system.data_dir();
    checks::assert_no_gaps(&dir);
    checks::assert_logs_identical(&dir);
    checks::assert_acked_present(&dir, acked);
    checks::assert_verified(&dir);
}

fn assert_no_client_error(traded: &Traded) {
    assert!(
        traded.errors.is_empty(),
        "clients saw errors: {:?}",
        traded.errors
    );
    assert!(!traded.acked.is_empty(), "nothing was traded");
}

#[tokio::test(flavor = "multi_thread")]
async fn raft_leader_killed_under_load_loses_nothing_and_clients_see_no_error() {
    let mut system = start(&[]).await;
    let api = system.api();
    let traders = Traders::start(&api, 5);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let leader = raft_leader(&system, &[1, 2, 3]).await;
    phase!("SIGKILL the raft leader (replica {leader}) while 5 clients trade");
    system
        .cluster()
        .kill(Role::Order, Some(leader))
        .expect("kill");
    let (took, number) = first_success(&api, Duration::from_secs(5)).await;
    phase!("first trade after the kill succeeded after {took:?}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut traded = traders.stop().await;
    assert_no_client_error(&traded);
    assert!(
        traded.acked.insert(number),
        "number {number} acknowledged twice"
    );
    let others: Vec<u8> = (1..=3).filter(|id| *id != leader).collect();
    assert_ne!(raft_leader(&system, &others).await, leader);

    phase!("restart the old leader: it rejoins as a follower and catches up");
    system
        .cluster()
        .restart(Role::Order, Some(leader))
        .await
        .expect("restart");
    let numbers: Vec<u64> = traded.acked.iter().copied().collect();
    assert_eq!(
        numbers,
        (0..numbers.len() as u64).collect::<Vec<_>>(),
        "acknowledged numbers are dense"
    );
    assert_converged(&system, &traded.acked).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn raft_with_one_replica_down_trading_goes_on() {
    let mut system = start(&[]).await;
    let api = system.api();
    let leader = raft_leader(&system, &[1, 2, 3]).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");

    phase!("a raft replica refuses the primary-backup routes, naming its mode");
    let (status, body) = system
        .replica(leader)
        .post(
            "/internal/leader",
            &serde_json::json!({"leader": 1, "epoch": 9}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("raft")),
        "{body}"
    );

    phase!("kill follower {follower}; the other two keep committing");
    let traders = Traders::start(&api, 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    system
        .cluster()
        .kill(Role::Order, Some(follower))
        .expect("kill");
    let before = system.replica(leader).get("/health").await.1["data"]["last_number"]
        .as_u64()
        .unwrap_or(0);
    wait_until(
        "orders keep committing with one replica down",
        Duration::from_secs(10),
        || {
            let leader = system.replica(leader);
            async move {
                leader.get("/health").await.1["data"]["last_number"]
                    .as_u64()
                    .is_some_and(|n| n >= before + 50)
            }
        },
    )
    .await;
    let (status, order) = api.get(&format!("/orders/{before}")).await;
    assert_eq!(
        status, 200,
        "a linearizable read with one replica down: {order}"
    );

    phase!("restart follower {follower} while the traders go on");
    system
        .cluster()
        .restart(Role::Order, Some(follower))
        .await
        .expect("restart");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let traded = traders.stop().await;
    assert_no_client_error(&traded);
    assert_eq!(
        raft_leader(&system, &[1, 2, 3]).await,
        leader,
        "losing a follower does not change the leader"
    );
    assert_converged(&system, &traded.acked).await;
}

/// Kills `ids`, then checks a trade fails with 503 quickly and says why.
async fn assert_fails_fast(system: &mut System, ids: &[u8]) {
    for id in ids {
        system.cluster().kill(Role::Order, Some(*id)).expect("kill");
    }
    let api = system.api();
    let start = Instant::now();
    let (status, body) = api
        .trade("FishCo", "buy", 1)
        .await
        .expect_err("a trade without a majority");
    let took = start.elapsed();
    phase!("with replicas {ids:?} down a trade failed with {status} after {took:?}: {body}");
    crate::support::assert_error(status, &body, 503, "majority");
    assert!(took < Duration::from_secs(3), "503 took {took:?}");
    let (status, body) = api.get("/orders/0").await;
    assert_eq!(status, 503, "an order query without a majority: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn raft_without_a_majority_trades_fail_fast_and_resume_by_themselves() {
    let mut system = start(&[]).await;
    let api = system.api();
    let mut acked = BTreeSet::new();
    for _ in 0..5 {
        acked.insert(api.trade("FishCo", "sell", 1).await.expect("trade"));
    }
    let leader = raft_leader(&system, &[1, 2, 3]).await;
    let followers: Vec<u8> = (1..=3).filter(|id| *id != leader).collect();

    phase!("kill both followers: leader {leader} is alone and must refuse at once");
    assert_fails_fast(&mut system, &followers).await;

    phase!(
        "restart follower {}: trading resumes by itself",
        followers[0]
    );
    system
        .cluster()
        .restart(Role::Order, Some(followers[0]))
        .await
        .expect("restart");
    let (took, number) = first_success(&api, Duration::from_secs(10)).await;
    phase!("first trade succeeded {took:?} after the follower was ready");
    acked.insert(number);
    system
        .cluster()
        .restart(Role::Order, Some(followers[1]))
        .await
        .expect("restart");
    let traders = Traders::start(&api, 3);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let traded = traders.stop().await;
    assert_no_client_error(&traded);
    acked.extend(&traded.acked);

    let leader = raft_leader(&system, &[1, 2, 3]).await;
    let dead = [
        leader,
        (1..=3).find(|id| *id != leader).expect("a follower"),
    ];
    phase!("kill leader {leader} and a follower: the last replica cannot be elected alone");
    assert_fails_fast(&mut system, &dead).await;

    phase!("bring both back; nothing acknowledged is lost");
    for id in dead {
        system
            .cluster()
            .restart(Role::Order, Some(id))
            .await
            .expect("restart");
    }
    let (_, number) = first_success(&api, Duration::from_secs(10)).await;
    acked.insert(number);
    assert_converged(&system, &acked).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn raft_replica_down_for_long_catches_up_by_snapshot() {
    let mut system = start(&["--raft-snapshot-every", "40", "--raft-keep-logs", "0"]).await;
    let api = system.api();
    let leader = raft_leader(&system, &[1, 2, 3]).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");

    phase!("kill follower {follower}, then trade past several snapshots without it");
    system
        .cluster()
        .kill(Role::Order, Some(follower))
        .expect("kill");
    let traders = Traders::start(&api, 4);
    let leader_api = system.replica(leader);
    wait_until(
        "the leader built three snapshots",
        Duration::from_secs(20),
        || {
            let leader_api = leader_api.clone();
            async move { metric(&leader_api, "bazaar_raft_snapshots_built").await >= 3.0 }
        },
    )
    .await;
    let traded = traders.stop().await;
    assert_no_client_error(&traded);

    phase!("restart follower {follower}: the log it misses is gone, so it installs a snapshot");
    system
        .cluster()
        .restart(Role::Order, Some(follower))
        .await
        .expect("restart");
    system.wait_replicas_equal(&[1, 2, 3]).await;
    let installed = metric(&system.replica(follower), "bazaar_raft_snapshots_installed").await;
    assert!(installed >= 1.0, "replica {follower} installed no snapshot");
    assert_converged(&system, &traded.acked).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn raft_state_survives_a_whole_cluster_restart() {
    let mut system = start(&[]).await;
    let api = system.api();
    for n in 0..3 {
        assert_eq!(api.trade("BoarCo", "buy", 1).await, Ok(n));
    }
    phase!("stop everything cleanly, start again on the same data (new ports)");
    system.stop().await;
    let spec = System::spec(system.dir.path(), |spec| raft_spec(spec, Vec::new()));
    let cluster = Cluster::start(spec).await.expect("start again");
    system.cluster = Some(cluster);
    let api = system.api();
    assert_eq!(
        api.trade("FishCo", "sell", 1).await,
        Ok(3),
        "numbering continues"
    );
    let (status, order) = api.get("/orders/1").await;
    assert_eq!(
        (status, order["data"]["name"].as_str()),
        (200, Some("BoarCo"))
    );

    phase!("SIGKILL all three replicas at once and restart them");
    for id in 1..=3 {
        system.cluster().kill(Role::Order, Some(id)).expect("kill");
    }
    for id in 1..=3 {
        system
            .cluster()
            .restart(Role::Order, Some(id))
            .await
            .expect("restart");
    }
    let (_, number) = first_success(&api, Duration::from_secs(10)).await;
    assert_eq!(number, 4);
    assert_converged(&system, &(0..5).collect()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn raft_replica_whose_storage_fails_exits_non_zero_and_the_others_go_on() {
    let mut system = start(&[]).await;
    let api = system.api();
    let leader = raft_leader(&system, &[1, 2, 3]).await;
    let follower = (1..=3).find(|id| *id != leader).expect("a follower");

    phase!("break follower {follower}'s database under it: its next log write fails");
    let path = system.data_dir().join(format!("order-{follower}.db"));
    let conn = rusqlite::Connection::open(&path).expect("open the replica's database");
    conn.busy_timeout(Duration::from_secs(5))
        .expect("busy timeout");
    conn.execute_batch("DROP TABLE raft_log")
        .expect("drop the raft log");
    drop(conn);

    phase!("trade: the follower stops with a non-zero exit, the other two keep committing");
    let mut acked = BTreeSet::new();
    let start = Instant::now();
    let status = loop {
        acked.insert(api.trade("FishCo", "sell", 1).await.expect("trade"));
        let exited = system.cluster().exited();
        if let Some((_, status)) = exited
            .into_iter()
            .find(|(record, _)| record.role == Role::Order && record.id == Some(follower))
        {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "replica {follower} kept running with a broken database"
        );
    };
    assert!(
        !status.success(),
        "a storage failure must exit non-zero: {status}"
    );
    for _ in 0..20 {
        acked.insert(api.trade("FishCo", "sell", 1).await.expect("trade"));
    }
    let others: Vec<u8> = (1..=3).filter(|id| *id != follower).collect();
    system.wait_replicas_equal(&others).await;
    let dir = system.data_dir();
    let logs = checks::logs_of(&dir, &others);
    for (id, log) in &logs {
        let numbers: BTreeSet<u64> = log.iter().map(|e| e.number.0).collect();
        assert!(
            acked.is_subset(&numbers),
            "replica {id} lacks acknowledged orders"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_primary_backup_replica_refuses_raft_messages_naming_its_mode() {
    let system = System::start().await;
    for route in ["append", "vote", "snapshot"] {
        let (status, body) = system
            .replica(1)
            .post(&format!("/internal/raft/{route}"), &serde_json::json!({}))
            .await;
        crate::support::assert_error(status, &body, 409, "runs primary-backup replication");
        assert_eq!(body["error"]["kind"], "wrong_mode", "{body}");
    }
}
