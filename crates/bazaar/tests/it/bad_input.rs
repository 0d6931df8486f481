//! Bad input gets a clear error in the envelope, and changes nothing.

use reqwest::Method;
use serde_json::{Value, json};

use crate::phase;
use crate::support::{System, assert_error};

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_request_gets_a_clear_enveloped_error_and_loses_nothing() {
    let system = System::start().await;
    let api = system.api();
    let long_name = "x".repeat(65);
    let json = Some("application/json");

    phase!("bad trade bodies");
    let bodies: Vec<(Option<&str>, Vec<u8>, u16, &str)> = vec![
        (json, b"{".to_vec(), 400, "parse"),
        (json, b"not json".to_vec(), 400, "parse"),
        (
            Some("application/x-www-form-urlencoded"),
            br#"{"name":"FishCo","type":"buy","quantity":1}"#.to_vec(),
            415,
            "Content-Type",
        ),
        (None, b"name=FishCo&type=buy".to_vec(), 400, "parse"),
        (
            json,
            br#"{"name":"FishCo","name":"BoarCo","type":"buy","quantity":1}"#.to_vec(),
            400,
            "\"name\" appears twice",
        ),
        (
            None,
            br#"{"name":"FishCo","type":"buy","quantity":1,"quantity":99}"#.to_vec(),
            400,
            "appears twice",
        ),
        (
            Some("text/plain"),
            br#"{"name":"FishCo","type":"buy","quantity":1}"#.to_vec(),
            415,
            "Content-Type",
        ),
        (json, b"[1,2]".to_vec(), 400, "JSON object"),
        (
            json,
            br#"{"type":"buy","quantity":1}"#.to_vec(),
            400,
            "missing field \"name\"",
        ),
        (
            json,
            br#"{"name":"FishCo","quantity":1}"#.to_vec(),
            400,
            "missing field \"type\"",
        ),
        (
            json,
            br#"{"name":"FishCo","type":"buy"}"#.to_vec(),
            400,
            "missing field \"quantity\"",
        ),
        (
            json,
            br#"{"name":"FishCo","type":"hold","quantity":1}"#.to_vec(),
            400,
            "\"buy\" or \"sell\"",
        ),
        (
            json,
            br#"{"name":"FishCo","type":7,"quantity":1}"#.to_vec(),
            400,
            "type",
        ),
        (
            json,
            br#"{"name":"FishCo","type":"buy","quantity":0}"#.to_vec(),
            400,
            "quantity",
        ),
        (
            json,
            br#"{"name":"FishCo","type":"buy","quantity":-3}"#.to_vec(),
            400,
            "quantity",
        ),
        (
            json,
            br#"{"name":"FishCo","type":"buy","quantity":1.5}"#.to_vec(),
            400,
            "quantity",
        ),
        (
            json,
            br#"{"name":"FishCo","type":"buy","quantity":"2"}"#.to_vec(),
            400,
            "quantity",
        ),
        (
            json,
            br#"{"name":"FishCo","type":"buy","quantity":2147483648}"#.to_vec(),
            400,
            "quantity",
        ),
        (
            json,
            br#"{"name":"FishCo","type":"buy","quantity":99999999999999999999999}"#.to_vec(),
            400,
            "quantity",
        ),
        (
            json,
            format!(r#"{{"name":"{long_name}","type":"buy","quantity":1}}"#).into_bytes(),
            400,
            "65 characters",
        ),
        (
            json,
            br#"{"name":"","type":"buy","quantity":1}"#.to_vec(),
            400,
            "empty",
        ),
        (
            json,
            br#"{"name":"NoSuchCo","type":"buy","quantity":1}"#.to_vec(),
            404,
            "no stock named",
        ),
        (
            json,
            vec![b' '; 64 * 1024 + 1],
            413,
            "larger than the limit",
        ),
    ];
    for (content_type, body, status, fragment) in bodies {
        let shown = String::from_utf8_lossy(&body[..body.len().min(60)]).into_owned();
        phase!("POST /orders {shown:?} ({content_type:?}) -> {status}");
        let (got, reply) = api.post_raw("/orders", content_type, body).await;
        assert_error(got, &reply, status, fragment);
    }

    phase!("bad lookups, order numbers and routes");
    let paths: Vec<(Method, String, u16, &str)> = vec![
        (
            Method::GET,
            format!("/stocks/{long_name}"),
            400,
            "65 characters",
        ),
        (
            Method::GET,
            "/stocks/NoSuchCo".into(),
            404,
            "no stock named",
        ),
        (
            Method::GET,
            "/stocks?stockname=NoSuchCo".into(),
            404,
            "no stock named",
        ),
        (
            Method::GET,
            "/orders/abc".into(),
            400,
            "not a non-negative integer",
        ),
        (
            Method::GET,
            "/orders/-1".into(),
            400,
            "not a non-negative integer",
        ),
        (
            Method::GET,
            "/orders/1.5".into(),
            400,
            "not a non-negative integer",
        ),
        (
            Method::GET,
            "/orders/18446744073709551616".into(),
            400,
            "larger than",
        ),
        (
            Method::GET,
            "/orders/9223372036854775808".into(),
            400,
            "larger than 9223372036854775807",
        ),
        (Method::GET, "/orders/+0".into(), 400, "digits only"),
        (Method::GET, "/orders/%200".into(), 400, "digits only"),
        (
            Method::GET,
            "/orders?order-number=+1".into(),
            400,
            "digits only",
        ),
        (
            Method::GET,
            "/orders/12345".into(),
            404,
            "no order number 12345",
        ),
        (
            Method::GET,
            "/orders?order-number=x".into(),
            400,
            "not a non-negative integer",
        ),
        (Method::GET, "/orders".into(), 400, "order-number"),
        (
            Method::GET,
            "/no/such/route".into(),
            404,
            "no route for GET /no/such/route",
        ),
        (
            Method::DELETE,
            "/stocks/FishCo".into(),
            405,
            "does not accept DELETE",
        ),
        (Method::PUT, "/orders".into(), 405, "does not accept PUT"),
    ];
    for (method, path, status, fragment) in paths {
        phase!("{method} {path} -> {status}");
        let (got, reply) = api.call(method, &path).await;
        assert_error(got, &reply, status, fragment);
    }

    phase!("nothing changed: every stock at 100, no order exists");
    let (_, stocks) = api.get("/stocks").await;
    for stock in stocks["data"].as_array().expect("list") {
        assert_eq!(stock["quantity"], 100, "{stock}");
    }
    let (status, _) = api.get("/orders/0").await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn internal_routes_refuse_bad_input_in_the_envelope_too() {
    let system = System::start().await;
    let catalog = system.catalog(1);
    let replica = system.replica(3);
    let posts: Vec<(&crate::support::Api, &str, Value)> = vec![
        (&replica, "/trades", json!({"request_id": "x"})),
        (
            &replica,
            "/trades",
            json!({"request_id": "5f0c3a4e-6a1b-4c55-9e1a-2b9d7c8e1f00", "name": "FishCo",
                   "type": "buy", "quantity": 0}),
        ),
        (&replica, "/internal/append", json!({"epoch": 0})),
        (
            &replica,
            "/internal/append",
            json!({"epoch": 9_223_372_036_854_775_808_u64, "leader": 2, "prev": null, "entries": []}),
        ),
        (
            &replica,
            "/internal/leader",
            json!({"leader": 0, "epoch": 1}),
        ),
        (&replica, "/internal/restock", json!({"to": 0})),
        (
            &replica,
            "/internal/restock",
            json!({"to": 9_223_372_036_854_775_808_u64}),
        ),
    ];
    for (service, path, body) in posts {
        let (got, reply) = service.post(path, &body).await;
        assert_eq!(got, 400, "{path} {body}: {reply}");
        assert_eq!(reply["error"]["code"], 400, "{path}: {reply}");
        assert_eq!(reply["error"]["kind"], "bad_request", "{path}: {reply}");
    }
    for (service, path) in [
        (&replica, "/internal/log?from=-1"),
        (&replica, "/internal/log?from=9223372036854775808"),
        (&replica, "/internal/log/entries?from=x"),
        (&catalog, "/stocks/FishCo?min_position=-1"),
        (&catalog, "/stocks/FishCo?min_position=9223372036854775808"),
    ] {
        let (got, reply) = service.get(path).await;
        assert_eq!(got, 400, "{path}: {reply}");
    }
    let (got, reply) = replica
        .post_raw(
            "/internal/leader",
            Some("application/json"),
            br#"{"leader": 1, "epoch": 1, "epoch": 2}"#.to_vec(),
        )
        .await;
    assert_eq!(
        got, 400,
        "duplicate keys are refused on internal routes too: {reply}"
    );
    phase!("nothing changed: the system still trades from where it was");
    assert_eq!(system.api().trade("FishCo", "sell", 1).await, Ok(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn friendlier_input_is_accepted_where_it_is_unambiguous() {
    let system = System::start().await;
    let api = system.api();

    phase!("issue 9: a JSON trade without a Content-Type (as Python's http.client sends it)");
    let (status, reply) = api
        .post_raw(
            "/orders",
            None,
            br#"{"name":"FishCo","type":"buy","quantity":2}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["transaction_number"], 0);
    let (status, reply) = api
        .post_raw(
            "/orders",
            Some("application/json; charset=utf-8"),
            br#"{"name":"FishCo","type":"sell","quantity":1}"#.to_vec(),
        )
        .await;
    assert_eq!(status, 200, "{reply}");

    phase!("a trailing slash finds the same route");
    let (status, stock) = api.get("/stocks/FishCo/").await;
    assert_eq!(status, 200, "{stock}");
    assert_eq!(stock["data"]["quantity"], 99);
    assert_eq!(api.get("/orders/0/").await.1["data"]["quantity"], 2);
    assert_eq!(api.get("/stocks/").await.0, 200);
    assert_eq!(api.get("/health/").await.0, 200);
    let (status, reply) = api
        .post_raw(
            "/orders/",
            None,
            br#"{"name":"FishCo","type":"buy","quantity":1}"#.to_vec(),
        )
        .await;
    assert_eq!(
        (status, &reply["data"]["transaction_number"]),
        (200, &json!(2)),
        "{reply}"
    );
}
