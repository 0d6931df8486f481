//! Every row of SPEC.md section 2 against a running system.

use bazaar_cluster::Role;
use serde_json::json;

use crate::phase;
use crate::support::{Api, System, assert_error};

#[tokio::test(flavor = "multi_thread")]
async fn every_public_route_answers_as_specified() {
    let system = System::start().await;
    let api = system.api();

    phase!("lookups: the route, the toy-store alias and the query alias agree");
    let (status, body) = api.get("/stocks/GameStart").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"data": {"name": "GameStart", "price": 15.99, "quantity": 100}})
    );
    assert_eq!(api.get("/products/GameStart").await, (200, body.clone()));
    assert_eq!(api.get("/stocks?stockname=GameStart").await, (200, body));
    let (status, all) = api.get("/stocks").await;
    assert_eq!(status, 200);
    assert!(
        all["data"].as_array().is_some_and(|a| a.len() >= 10),
        "{all}"
    );

    phase!("prices keep two decimals on the wire");
    let raw = bazaar_api::client::reqwest_builder(&system.auth())
        .build()
        .expect("client")
        .get(format!("{}/stocks/FishCo", api.base))
        .send()
        .await
        .expect("lookup")
        .text()
        .await
        .expect("body");
    assert!(raw.contains("\"price\":22.50"), "{raw}");

    phase!("trades: any letter case, numbers from 0, quantities move");
    assert_eq!(api.trade("GameStart", "BUY", 3).await, Ok(0));
    assert_eq!(api.trade("GameStart", "Sell", 1).await, Ok(1));
    assert_eq!(api.quantity("GameStart").await, 98);

    phase!("order queries, direct and by alias, always lower-case types");
    let (status, order) = api.get("/orders/0").await;
    assert_eq!(status, 200);
    assert_eq!(
        order,
        json!({"data": {"number": 0, "name": "GameStart", "type": "buy", "quantity": 3}})
    );
    let (status, order) = api.get("/orders?order-number=1").await;
    assert_eq!(status, 200);
    assert_eq!(order["data"]["type"], "sell");

    phase!("the failures the spec lists");
    let (status, body) = api.get("/stocks/Nope").await;
    assert_error(status, &body, 404, "no stock named");
    let (status, body) = api
        .post(
            "/orders",
            &json!({"name": "Nope", "type": "buy", "quantity": 1}),
        )
        .await;
    assert_error(status, &body, 404, "no stock named");
    let (status, body) = api
        .post(
            "/orders",
            &json!({"name": "FishCo", "type": "buy", "quantity": 101}),
        )
        .await;
    assert_error(status, &body, 409, "100 available");
    let (status, body) = api.get("/orders/99").await;
    assert_error(status, &body, 404, "no order number 99");

    phase!("operations: health and metrics on every service, cache and leader on the front-end");
    let cluster = system.cluster.as_ref().expect("running");
    for record in cluster.records() {
        let service = Api::new(record.url.clone());
        let (status, health) = service.get("/health").await;
        assert_eq!(status, 200, "{} health: {health}", record.url);
        assert!(health["data"].is_object(), "{health}");
        let (status, metrics) = service.get("/metrics").await;
        assert_eq!(status, 200);
        let text = metrics.as_str().unwrap_or_default();
        assert!(
            text.contains("bazaar_http_requests_total{"),
            "{} metrics lack request counts: {text}",
            record.url
        );
        assert!(text.contains("bazaar_http_request_duration_seconds_bucket"));
    }
    let (status, cache) = api.get("/cache").await;
    assert_eq!(status, 200);
    assert_eq!(cache["data"]["capacity"], 8);
    assert!(cache["data"]["hits"].is_u64() && cache["data"]["misses"].is_u64());
    assert!(cache["data"]["entries"].is_array());
    let (status, leader) = api.get("/leader").await;
    assert_eq!(status, 200);
    assert_eq!(leader["data"]["id"], 3, "the highest id leads");
    assert_eq!(leader["data"]["url"], system.url(Role::Order, Some(3)));
}

#[tokio::test(flavor = "multi_thread")]
async fn without_any_order_replica_trades_fail_with_503() {
    let mut system = System::start().await;
    let api = system.api();
    phase!(
        "kill every replica; trades, order queries get 503, and so do lookups once the lease ends"
    );
    for id in 1..=3 {
        system.cluster().kill(Role::Order, Some(id)).expect("kill");
    }
    let (status, body) = api
        .post(
            "/orders",
            &json!({"name": "FishCo", "type": "buy", "quantity": 1}),
        )
        .await;
    assert_error(status, &body, 503, "no order replica");
    let (status, body) = api.get("/orders/0").await;
    assert_error(status, &body, 503, "no order replica");
    // Without a leader to vouch for it, nothing tells the front-end which state is current:
    // it answers no lookup rather than risk an old one.
    let (status, body) = api.get("/stocks/FishCo").await;
    assert_error(status, &body, 503, "no order replica");
    phase!("one replica comes back: it holds no majority of copies, so trades still get 503");
    system
        .cluster()
        .restart(Role::Order, Some(2))
        .await
        .expect("restart");
    let (status, body) = api
        .post(
            "/orders",
            &json!({"name": "FishCo", "type": "buy", "quantity": 1}),
        )
        .await;
    assert_error(status, &body, 503, "");
    phase!("a second comes back: trading resumes without restarting the front-end");
    system
        .cluster()
        .restart(Role::Order, Some(1))
        .await
        .expect("restart");
    assert_eq!(api.trade("FishCo", "buy", 1).await, Ok(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn many_requests_share_one_keep_alive_connection() {
    let system = System::start().await;
    // reqwest keeps one idle connection per host; a server that closed after each response
    // would show up as a new local port per request.
    let client = bazaar_api::client::reqwest_builder(&system.auth())
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    let url = format!("{}/stocks/FishCo", system.api().base);
    for _ in 0..50 {
        let response = client.get(&url).send().await.expect("lookup");
        assert_eq!(response.version(), reqwest::Version::HTTP_11);
        assert_eq!(response.status(), 200);
        assert_ne!(
            response.headers().get("connection").map(|v| v.as_bytes()),
            Some(&b"close"[..]),
            "the server must keep the connection open"
        );
        response.bytes().await.expect("body");
    }
}
