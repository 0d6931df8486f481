//! What the dashboard costs the front-end, measured in-process so a noisy machine matters less:
//! the traffic layer per request (a router with and without it, and the same work done by an
//! `axum::middleware::from_fn` middleware, which the layer replaced), recording alone, and
//! building the traffic view the sampler publishes (per sample, only while a page is open).
//!
//! `cargo bench -p bazaar-frontend --bench dashboard` (numbers in docs/PERFORMANCE.md).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use bazaar_frontend::dashboard::traffic::{Kind, Traffic, TrafficLayer};
use tower::ServiceExt;

const REQUESTS: u32 = 200_000;
const ROUNDS: usize = 5;

fn router() -> Router {
    Router::new().route(
        "/stocks/{name}",
        get(|| async { r#"{"data":{"name":"FishCo","price":22.50,"quantity":100}}"# }),
    )
}

/// The same work as the layer, as a `from_fn` middleware (what the layer replaced).
async fn from_fn_record(
    axum::extract::State(traffic): axum::extract::State<Arc<Traffic>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let Some(kind) = Kind::of(request.method(), route.as_deref(), request.uri().query()) else {
        return next.run(request).await;
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let finished = Instant::now();
    traffic.record(
        kind,
        finished - started,
        response.status().is_server_error(),
        finished,
    );
    response
}

async fn per_request(app: &Router) -> Duration {
    let start = Instant::now();
    for _ in 0..REQUESTS {
        let request = Request::get("/stocks/FishCo")
            .body(Body::empty())
            .expect("request");
        black_box(app.clone().oneshot(request).await.expect("infallible"));
    }
    start.elapsed() / REQUESTS
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let plain = router();
    let traffic = Arc::new(Traffic::new());
    let layered = router().layer(TrafficLayer::new(Arc::clone(&traffic)));
    let from_fn = router().layer(axum::middleware::from_fn_with_state(
        Arc::clone(&traffic),
        from_fn_record,
    ));
    let (mut without, mut with, mut with_from_fn) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        without.push(per_request(&plain).await);
        with.push(per_request(&layered).await);
        with_from_fn.push(per_request(&from_fn).await);
    }
    let (without, with, with_from_fn) = (median(without), median(with), median(with_from_fn));
    println!("lookup through the router, without the traffic layer: {without:?} per request");
    println!("lookup through the router, with the traffic layer:    {with:?} per request");
    println!("the same work as a from_fn middleware:                {with_from_fn:?} per request");
    println!(
        "the layer's cost:                                      {:?} per request",
        with.saturating_sub(without)
    );

    let recorder = Traffic::new();
    let start = Instant::now();
    for i in 0..REQUESTS {
        recorder.record(
            Kind::Lookup,
            Duration::from_micros(u64::from(i % 5_000)),
            false,
            Instant::now(),
        );
    }
    println!(
        "Traffic::record alone:                                 {:?} per request",
        start.elapsed() / REQUESTS
    );

    let views = 200;
    let start = Instant::now();
    for _ in 0..views {
        black_box(serde_json::to_string(&recorder.view(Instant::now())).expect("json"));
    }
    println!(
        "traffic view as JSON (once per sample, 4 per second):  {:?} per sample",
        start.elapsed() / views
    );
}
