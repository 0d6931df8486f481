//! Issue 9: no request from outside the cluster can harm it. Internal routes refuse callers
//! without the cluster key (401, nothing read or changed); with the key, values the store
//! cannot hold are refused (400) and the cluster keeps trading; a rogue feed subscriber is
//! refused; and a whole cluster runs on TLS.

use std::time::Duration;

use bazaar_api::auth::{ClientAuth, ClusterKey};
use bazaar_cluster::Role;
use serde_json::{Value, json};

use crate::phase;
use crate::support::{Api, System, wait_until};

const REQUEST_ID: &str = "5f0c3a4e-6a1b-4c55-9e1a-2b9d7c8e1f00";

/// Every route of the back-end services but `/health` and `/metrics`, with a body that would
/// change state if it were accepted (adapt this list when the routes change).
fn internal_calls() -> Vec<(Role, reqwest::Method, String, Option<Value>)> {
    use reqwest::Method;
    let trade = json!({"request_id": REQUEST_ID, "name": "FishCo", "type": "buy", "quantity": 5});
    let mut command = trade.clone();
    command["op"] = json!("trade");
    let entry = json!({"index": 1, "epoch": 50, "command": command});
    vec![
        (
            Role::Order,
            Method::POST,
            "/internal/append".into(),
            Some(
                json!({"epoch": 50, "leader": 1, "prev": {"index": 0, "epoch": 1}, "entries": [entry]}),
            ),
        ),
        (
            Role::Order,
            Method::POST,
            "/internal/leader".into(),
            Some(json!({"leader": 1, "epoch": 50})),
        ),
        (
            Role::Order,
            Method::POST,
            "/internal/status".into(),
            Some(json!({"epoch": 50, "leader": 1})),
        ),
        (Role::Order, Method::POST, "/trades".into(), Some(trade)),
        (Role::Order, Method::GET, "/orders/0".into(), None),
        (
            Role::Order,
            Method::GET,
            "/internal/log/entries?from=0".into(),
            None,
        ),
        (
            Role::Order,
            Method::GET,
            "/internal/log?from=0".into(),
            None,
        ),
        (Role::Order, Method::GET, "/internal/position".into(), None),
        (
            Role::Order,
            Method::POST,
            "/internal/restock".into(),
            Some(json!({"to": 100})),
        ),
        (
            Role::Order,
            Method::GET,
            "/internal/feed?subscriber=rogue".into(),
            None,
        ),
        (
            Role::Order,
            Method::POST,
            "/internal/raft/vote".into(),
            Some(json!({})),
        ),
        (Role::Catalog, Method::GET, "/stocks/FishCo".into(), None),
        (Role::Catalog, Method::GET, "/stocks".into(), None),
        (Role::Catalog, Method::GET, "/no/such/route".into(), None),
    ]
}

async fn call(
    api: &Api,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    api.send(
        |http, url| {
            let request = http.request(method, url);
            match body {
                Some(body) => request.json(body),
                None => request,
            }
        },
        path,
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn internal_routes_refuse_callers_without_the_key_and_nothing_changes() {
    let system = System::start().await;
    let api = system.api();
    let leader = system.leader().await;
    let mut before = Vec::new();
    for id in [1, 2, 3] {
        before.push(system.replica(id).get("/health").await.1["data"].clone());
    }
    let wrong_key = ClientAuth::none().with_key(Some(
        ClusterKey::parse(&"0".repeat(64)).expect("well-formed"),
    ));

    for (who, caller) in [("no key", ClientAuth::none()), ("a wrong key", wrong_key)] {
        phase!("every internal route refuses a caller with {who}: 401 in the envelope");
        for (role, method, path, body) in internal_calls() {
            for id in match role {
                Role::Order => vec![Some(1), Some(2), Some(3)],
                _ => vec![Some(1), Some(2)],
            } {
                let service = Api::with_auth(system.url(role, id), &caller);
                let (status, reply) = call(&service, method.clone(), &path, body.as_ref()).await;
                assert_eq!(status, 401, "{method} {path} on {role:?} {id:?}: {reply}");
                assert_eq!(reply["error"]["code"], 401, "{reply}");
            }
        }
    }

    phase!("liveness and metrics stay open");
    for (role, id) in [(Role::Catalog, Some(1)), (Role::Order, Some(1))] {
        let anonymous = Api::new(system.url(role, id));
        assert_eq!(anonymous.get("/health").await.0, 200);
        assert_eq!(anonymous.get("/metrics").await.0, 200);
    }

    phase!("nothing changed: same leader, epochs and positions, stock intact");
    assert_eq!(system.leader().await, leader);
    for (id, was) in [1, 2, 3].iter().zip(&before) {
        let (_, now) = system.replica(*id).get("/health").await;
        assert_eq!(&now["data"], was, "replica {id}");
        assert!(now["data"]["last_number"].is_null(), "replica {id}: {now}");
    }
    let (status, stock) = system.catalog(1).get("/stocks/FishCo").await;
    assert_eq!(status, 200, "the key opens the route: {stock}");
    assert_eq!(api.quantity("FishCo").await, 100);

    phase!("the cluster trades as before");
    assert_eq!(api.trade("FishCo", "buy", 1).await, Ok(0));
    assert_eq!(api.quantity("FishCo").await, 99);
}

#[tokio::test(flavor = "multi_thread")]
async fn values_the_store_cannot_hold_get_400_and_the_cluster_keeps_trading() {
    let system = System::start().await;
    let api = system.api();
    assert_eq!(api.trade("BoarCo", "buy", 1).await, Ok(0));
    let over = 9_223_372_036_854_775_808_u64; // 2^63
    let max = u64::MAX;
    let entry = |index: u64, quantity: u64, epoch: u64| {
        json!({"index": index, "epoch": epoch, "command": {"op": "trade",
               "request_id": REQUEST_ID, "name": "FishCo", "type": "buy", "quantity": quantity}})
    };
    for id in [1, 2, 3] {
        let replica = system.replica(id);
        for (path, body) in [
            ("/internal/leader", json!({"leader": 1, "epoch": max})),
            ("/internal/leader", json!({"leader": 1, "epoch": over})),
            ("/internal/status", json!({"leader": 1, "epoch": over})),
            (
                "/internal/append",
                json!({"epoch": over, "leader": 1, "prev": null, "entries": []}),
            ),
            (
                "/internal/append",
                json!({"epoch": 1, "leader": 3, "prev": null, "entries": [entry(over, 1, 1)]}),
            ),
            (
                "/internal/append",
                json!({"epoch": 1, "leader": 3, "prev": null, "entries": [entry(0, max, 1)]}),
            ),
            (
                "/internal/append",
                json!({"epoch": 1, "leader": 3, "prev": null, "entries": [entry(0, 1, over)]}),
            ),
            (
                "/internal/append",
                json!({"epoch": 1, "leader": 3, "prev": {"index": over, "epoch": 1}, "entries": []}),
            ),
            (
                "/trades",
                json!({"request_id": REQUEST_ID, "name": "FishCo", "type": "buy", "quantity": over}),
            ),
            ("/internal/restock", json!({"to": over})),
        ] {
            phase!("replica {id}: POST {path} {body} -> 400");
            let (status, reply) = replica.post(path, &body).await;
            assert_eq!(status, 400, "{path} {body}: {reply}");
            assert_eq!(reply["error"]["code"], 400);
        }
        for path in [
            format!("/internal/log/entries?from={over}"),
            format!("/internal/log?from={over}"),
            format!("/internal/log?from=0&wait_ms={over}"),
            format!("/orders/{over}"),
        ] {
            let (status, reply) = replica.get(&path).await;
            assert_eq!(status, 400, "{path}: {reply}");
        }
    }
    for id in [1, 2] {
        let (status, reply) = system
            .catalog(id)
            .get(&format!("/stocks/FishCo?min_position={over}"))
            .await;
        assert_eq!(status, 400, "catalog {id}: {reply}");
    }

    phase!("every service still runs and the cluster trades on");
    for id in [1, 2, 3] {
        let (status, health) = system.replica(id).get("/health").await;
        assert_eq!(status, 200, "{health}");
        assert_eq!(
            health["data"]["epoch"], 1,
            "the epoch did not move: {health}"
        );
    }
    assert_eq!(api.trade("BoarCo", "buy", 1).await, Ok(1));
    assert_eq!(api.get("/orders/1").await.0, 200);
    assert_eq!(api.quantity("BoarCo").await, 98);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rogue_feed_subscriber_is_refused_without_the_key() {
    let system = System::start().await;
    system.wait_caching().await;
    let leader = system.url(Role::Order, Some(system.leader().await));
    let feed = bazaar_api::client::websocket_url(&leader, "/internal/feed?subscriber=rogue");

    phase!("without the key the upgrade is refused with 401");
    let refused = bazaar_api::websocket::connect_websocket(&feed, &ClientAuth::none()).await;
    let err = refused
        .err()
        .expect("a rogue subscriber must be refused")
        .to_string();
    assert!(err.contains("401"), "{err}");

    phase!("only the front-end is subscribed, so trades are not held up");
    let subscribers = || async {
        let (_, metrics) = Api::new(leader.clone()).get("/metrics").await;
        metrics
            .as_str()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("bazaar_feed_subscribers "))
                    .and_then(|l| l.rsplit(' ').next())
                    .map(str::to_owned)
            })
            .unwrap_or_default()
    };
    assert_eq!(subscribers().await, "1");
    let api = system.api();
    for i in 0..10 {
        assert_eq!(api.trade("MenhirCo", "buy", 1).await, Ok(i));
    }

    phase!("with the key, a subscriber is accepted (the front-end's own path)");
    let member = bazaar_api::websocket::connect_websocket(&feed, &system.auth()).await;
    assert!(member.is_ok(), "{:?}", member.err());
    wait_until(
        "the second subscriber is counted",
        Duration::from_secs(10),
        || async { subscribers().await == "2" },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_cluster_runs_on_tls_and_trades() {
    let system = System::start_with(|spec| spec.tls = true).await;
    let api = system.api();
    assert!(api.base.starts_with("https://"), "{}", api.base);

    phase!("trades and lookups over https, the feed over wss");
    system.wait_caching().await;
    assert_eq!(api.trade("GameStart", "buy", 2).await, Ok(0));
    assert_eq!(api.trade("GameStart", "sell", 1).await, Ok(1));
    assert_eq!(api.quantity("GameStart").await, 99);
    assert_eq!(api.quantity("GameStart").await, 99, "a cached lookup");
    let (_, order) = api.get("/orders/1").await;
    assert_eq!(order["data"]["type"], "sell");
    let (_, cache) = api.get("/cache").await;
    assert!(
        cache["data"]["hits"].as_u64().is_some_and(|h| h >= 1),
        "{cache}"
    );

    phase!("plain http and clients that do not trust the CA get nowhere");
    let plain = api.base.replacen("https://", "http://", 1);
    let http = bazaar_api::client::Http::new(Duration::from_secs(2));
    assert!(http.get_raw(&format!("{plain}/health")).await.is_err());
    assert!(http.get_raw(&format!("{}/health", api.base)).await.is_err());

    phase!("a replica killed and restarted on TLS catches up and the front-end fails over");
    let mut system = system;
    let leader = system.leader().await;
    system
        .cluster()
        .kill(Role::Order, Some(leader))
        .expect("kill the leader");
    assert_eq!(api.trade("GameStart", "buy", 1).await, Ok(2));
    system
        .cluster()
        .restart(Role::Order, Some(leader))
        .await
        .expect("restart");
    system.wait_replicas_equal(&[1, 2, 3]).await;

    phase!("the load generator trades over https when told which CA to trust");
    let ca = system.data_dir().join("tls/ca.pem");
    let load = std::process::Command::new(crate::support::exe())
        .args(["client", "--frontend", &api.base, "--tls-ca"])
        .arg(&ca)
        .args([
            "--clients",
            "2",
            "--iterations",
            "20",
            "--p",
            "0.5",
            "--seed",
            "1",
        ])
        .output()
        .expect("bazaar client runs");
    assert!(
        load.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&load.stdout),
        String::from_utf8_lossy(&load.stderr)
    );
    let untrusting = std::process::Command::new(crate::support::exe())
        .args([
            "client",
            "--frontend",
            &api.base,
            "--clients",
            "1",
            "--iterations",
            "1",
        ])
        .output()
        .expect("bazaar client runs");
    assert!(
        !untrusting.status.success(),
        "a client without the CA must fail"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_raft_cluster_runs_on_tls_with_the_key() {
    let system = System::start_with(|spec| {
        spec.tls = true;
        spec.replication = "raft".into();
    })
    .await;
    let api = system.api();
    phase!("raft elects and replicates over https with the key; trades go through");
    assert_eq!(api.trade("BoarCo", "buy", 3).await, Ok(0));
    assert_eq!(api.trade("BoarCo", "sell", 1).await, Ok(1));
    assert_eq!(api.quantity("BoarCo").await, 98);
    system.wait_replicas_equal(&[1, 2, 3]).await;
    phase!("the raft routes refuse a caller without the key");
    let anonymous = Api::with_auth(
        system.url(Role::Order, Some(1)),
        &ClientAuth::none()
            .trusting_ca_pem(
                &std::fs::read(system.data_dir().join("tls/ca.pem")).expect("the cluster's CA"),
            )
            .expect("a CA"),
    );
    for path in ["/internal/raft/vote", "/internal/raft/append"] {
        let (status, reply) = anonymous.post(path, &json!({})).await;
        assert_eq!(status, 401, "{path}: {reply}");
    }
}
