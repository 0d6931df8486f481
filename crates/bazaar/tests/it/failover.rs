//! Crash faults of the order replicas, with real SIGKILLs under load: clients notice nothing,
//! no acknowledged order is lost, numbers stay dense, and the logs converge.

use std::time::Duration;

use bazaar_cluster::Role;

use crate::phase;
use crate::support::{System, Traded, Traders, checks};

/// After the system is quiet: all logs identical and dense, every acknowledged order in each,
/// and `verify` (one-to-one with the catalog, conservation) passes.
async fn assert_converged(system: &System, traded: &Traded) {
    assert!(
        traded.errors.is_empty(),
        "clients saw errors: {:?}",
        traded.errors
    );
    assert!(!traded.acked.is_empty(), "nothing was traded");
    let n = traded.acked.len() as u64;
    assert_eq!(
        traded.acked.iter().copied().collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>(),
        "acknowledged numbers must be 0..N-1"
    );
    system.wait_replicas_equal(&[1, 2, 3]).await;
    system.wait_quiet().await;
    let dir = system.data_dir();
    checks::assert_no_gaps(&dir);
    checks::assert_logs_identical(&dir);
    checks::assert_acked_present(&dir, &traded.acked);
    checks::assert_verified(&dir);
}

async fn role_of(system: &System, id: u8) -> String {
    let (_, status) = system.replica(id).get("/health").await;
    status["data"]["role"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_leader_under_load_loses_nothing_and_clients_see_no_error() {
    let mut system = System::start().await;
    let traders = Traders::start(&system.api(), 5);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let leader = system.leader().await;
    phase!("SIGKILL the leader (replica {leader}) while 5 clients trade");
    system
        .cluster()
        .kill(Role::Order, Some(leader))
        .expect("kill");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let traded = traders.stop().await;
    assert_ne!(system.leader().await, leader, "a new leader took over");
    phase!("restart the old leader; it catches up");
    system
        .cluster()
        .restart(Role::Order, Some(leader))
        .await
        .expect("restart");
    assert_converged(&system, &traded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_follower_catches_up_after_restart() {
    let mut system = System::start().await;
    let traders = Traders::start(&system.api(), 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    phase!("kill follower 1 and keep trading without it");
    system.cluster().kill(Role::Order, Some(1)).expect("kill");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    phase!("restart it while the traders go on");
    system
        .cluster()
        .restart(Role::Order, Some(1))
        .await
        .expect("restart");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let traded = traders.stop().await;
    assert_eq!(system.leader().await, 3, "the leader never changed");
    assert_converged(&system, &traded).await;
}

/// The log position a replica reports.
async fn position_of(system: &System, id: u8) -> u64 {
    let (_, status) = system.replica(id).get("/health").await;
    status["data"]["position"].as_u64().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_follower_far_behind_catches_up_in_full_batches() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let mut system = System::start().await;
    let pid = system
        .cluster()
        .records()
        .into_iter()
        .find(|r| r.role == Role::Order && r.id == Some(1))
        .map(|r| Pid::from_raw(i32::try_from(r.pid).expect("a pid")))
        .expect("replica 1 runs");
    let traders = Traders::start(&system.api(), 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = position_of(&system, 3).await;
    phase!("pause follower 1 (SIGSTOP) until the leader is more than two append batches ahead");
    kill(pid, Signal::SIGSTOP).expect("stop");
    crate::support::wait_until(
        "the leader is 1,200 entries ahead of the paused follower",
        Duration::from_secs(120),
        || async { position_of(&system, 3).await >= before + 1200 },
    )
    .await;
    phase!("continue it: it is still a follower, so the leader catches it up batch by batch");
    kill(pid, Signal::SIGCONT).expect("continue");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let traded = traders.stop().await;
    assert_converged(&system, &traded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_leader_rejoins_as_a_follower() {
    let mut system = System::start().await;
    let api = system.api();
    for _ in 0..5 {
        api.trade("FishCo", "sell", 1).await.expect("trade");
    }
    phase!("kill leader 3; replica 2 takes over");
    system.cluster().kill(Role::Order, Some(3)).expect("kill");
    let traders = Traders::start(&api, 3);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(system.leader().await, 2);
    phase!("restart 3: it follows 2, and the front-end keeps 2");
    system
        .cluster()
        .restart(Role::Order, Some(3))
        .await
        .expect("restart");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let mut traded = traders.stop().await;
    traded.acked.extend(0..5);
    assert_eq!(system.leader().await, 2);
    assert_eq!(role_of(&system, 3).await, "follower");
    assert_converged(&system, &traded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_one_copy_enough_two_replicas_down_trading_goes_on_and_all_converge() {
    // The lab's design: a write needs only the copies of the live replicas.
    let mut system = System::start_with(|spec| {
        spec.extra_args
            .push((Role::Order, vec!["--min-copies".into(), "1".into()]));
    })
    .await;
    let traders = Traders::start(&system.api(), 4);
    tokio::time::sleep(Duration::from_millis(400)).await;
    phase!("kill replicas 3 and 2; replica 1 serves alone");
    system.cluster().kill(Role::Order, Some(3)).expect("kill");
    tokio::time::sleep(Duration::from_millis(400)).await;
    system.cluster().kill(Role::Order, Some(2)).expect("kill");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(system.leader().await, 1);
    phase!("restart both");
    system
        .cluster()
        .restart(Role::Order, Some(2))
        .await
        .expect("restart");
    system
        .cluster()
        .restart(Role::Order, Some(3))
        .await
        .expect("restart");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let traded = traders.stop().await;
    assert_converged(&system, &traded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_highest_id_dead_at_start_the_next_leads() {
    let mut system = System::start().await;
    phase!("replica 3 is down when the front-end starts");
    system.cluster().kill(Role::Order, Some(3)).expect("kill");
    system.cluster().kill(Role::Frontend, None).expect("kill");
    system
        .cluster()
        .restart(Role::Frontend, None)
        .await
        .expect("restart");
    assert_eq!(system.leader().await, 2);
    assert!(system.api().trade("FishCo", "buy", 1).await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_leader_kills_leave_the_catalog_and_the_log_matching() {
    let mut system = System::start().await;
    let traders = Traders::start(&system.api(), 5);
    for round in 1..=3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let leader = system.leader().await;
        phase!("round {round}: kill leader {leader} mid-trade, restart it a moment later");
        system
            .cluster()
            .kill(Role::Order, Some(leader))
            .expect("kill");
        tokio::time::sleep(Duration::from_millis(400)).await;
        system
            .cluster()
            .restart(Role::Order, Some(leader))
            .await
            .expect("restart");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let traded = traders.stop().await;
    phase!("once quiet, catalog trades and orders match one to one and quantities conserve");
    assert_converged(&system, &traded).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entry_only_the_followers_hold_survives_the_leader_and_numbers_continue_after_it() {
    use serde_json::json;
    let mut system = System::start().await;
    let api = system.api();
    for _ in 0..3 {
        api.trade("FishCo", "sell", 1).await.expect("trade");
    }
    let (_, status) = system
        .replica(3)
        .post("/internal/status", &serde_json::Value::Null)
        .await;
    let epoch = status["data"]["epoch"].as_u64().expect("epoch");
    let len = status["data"]["len"].as_u64().expect("len");

    phase!("leader 3 replicated a buy of 10 BoarCo to both followers and died before answering");
    let append = json!({
        "epoch": epoch, "leader": 3,
        "prev": {"index": len - 1, "epoch": epoch},
        "entries": [{"index": len, "epoch": epoch, "command": {"op": "trade",
            "request_id": "6b3f1f8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b", "name": "BoarCo",
            "type": "buy", "quantity": 10}}]
    });
    for id in [1, 2] {
        let (code, body) = system.replica(id).post("/internal/append", &append).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["data"]["outcome"], "appended", "{body}");
    }
    system.cluster().kill(Role::Order, Some(3)).expect("kill");

    phase!("the next trade fails over to 2, which numbers after the replicated order");
    assert_eq!(api.trade("FishCo", "sell", 1).await, Ok(4));
    assert_eq!(
        api.quantity("BoarCo").await,
        90,
        "the replicated buy stands"
    );
    system
        .cluster()
        .restart(Role::Order, Some(3))
        .await
        .expect("restart");
    system.wait_quiet().await;
    checks::assert_verified(&system.data_dir());
}
