//! The load generator against small fake front-ends served in-process on 127.0.0.1:0: one that
//! keeps its orders honestly, one that lies about them, one that fails lookups, and a raw one
//! that closes every connection after one reply.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode as AxumStatus;
use axum::routing::{get, post};
use bazaar_api::{Data, Order, Price, Stock, TxnNumber};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

const STOCK_NAMES: [&str; 3] = ["GameStart", "FishCo", "Fish & Chips"];

/// How the fake front-end misbehaves.
#[derive(Debug, Clone, Copy, Default)]
struct Faults {
    /// Read orders back with one share more than was traded.
    wrong_quantity: bool,
    /// Refuse every third trade with 409, as a sold-out stock would.
    reject_every_third: bool,
    /// Answer lookups of "FishCo" with 500.
    fail_fishco_lookups: bool,
}

#[derive(Clone, Default)]
struct Fake {
    faults: Faults,
    /// Every trade received, acknowledged or not.
    trades: Arc<Mutex<Vec<TradeRequest>>>,
    /// Acknowledged orders, indexed by transaction number.
    orders: Arc<Mutex<Vec<Order>>>,
}

fn stock(name: &str) -> Stock {
    Stock {
        name: name.into(),
        price: Price::from_cents(1599),
        quantity: 100,
    }
}

async fn stocks_list() -> axum::Json<Data<Vec<Stock>>> {
    axum::Json(Data::new(STOCK_NAMES.iter().map(|n| stock(n)).collect()))
}

async fn stock_get(
    State(fake): State<Fake>,
    Path(name): Path<String>,
) -> Result<axum::Json<Data<Stock>>, AxumStatus> {
    if fake.faults.fail_fishco_lookups && name == "FishCo" {
        return Err(AxumStatus::INTERNAL_SERVER_ERROR);
    }
    Ok(axum::Json(Data::new(stock(&name))))
}

async fn order_create(
    State(fake): State<Fake>,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> Result<axum::Json<Data<TradeAck>>, AxumStatus> {
    let request = TradeRequest::from_json(&body).map_err(|_| AxumStatus::BAD_REQUEST)?;
    let seen = {
        let mut trades = fake.trades.lock().expect("not poisoned");
        trades.push(request.clone());
        trades.len()
    };
    if fake.faults.reject_every_third && seen % 3 == 0 {
        return Err(AxumStatus::CONFLICT);
    }
    let mut orders = fake.orders.lock().expect("not poisoned");
    let number = TxnNumber(orders.len() as u64);
    orders.push(Order {
        number,
        name: request.name,
        kind: request.kind,
        quantity: request.quantity,
    });
    Ok(axum::Json(Data::new(TradeAck {
        transaction_number: number,
    })))
}

async fn order_get(
    State(fake): State<Fake>,
    Path(number): Path<usize>,
) -> Result<axum::Json<Data<Order>>, AxumStatus> {
    let mut order = fake
        .orders
        .lock()
        .expect("not poisoned")
        .get(number)
        .cloned()
        .ok_or(AxumStatus::NOT_FOUND)?;
    if fake.faults.wrong_quantity {
        order.quantity += 1;
    }
    Ok(axum::Json(Data::new(order)))
}

/// Serves a fake front-end on 127.0.0.1:0 until the returned task is aborted.
async fn serve_fake(faults: Faults) -> (Fake, Endpoint, tokio::task::JoinHandle<()>) {
    let fake = Fake {
        faults,
        ..Fake::default()
    };
    let app = Router::new()
        .route("/stocks", get(stocks_list))
        .route("/stocks/{name}", get(stock_get))
        .route("/orders", post(order_create))
        .route("/orders/{number}", get(order_get))
        .with_state(fake.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let endpoint = Endpoint::parse(&format!("http://{addr}")).expect("valid URL");
    (fake, endpoint, server)
}

fn config(frontend: Endpoint, clients: usize, iterations: u64, p: f64) -> LoadConfig {
    LoadConfig {
        clients,
        stop: Stop::Iterations(iterations),
        trade_probability: p,
        seed: 7,
        request_timeout: Duration::from_secs(5),
        ..LoadConfig::new(frontend)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_quantity_read_back_is_a_mismatch_and_fails_the_run() {
    let (fake, endpoint, server) = serve_fake(Faults {
        wrong_quantity: true,
        ..Faults::default()
    })
    .await;
    let report = run(config(endpoint, 2, 10, 1.0)).await.expect("run");
    server.abort();

    let acknowledged = fake.orders.lock().expect("not poisoned").len() as u64;
    assert_eq!(acknowledged, 20, "p = 1 trades after every lookup");
    assert_eq!(report.orders_recorded, acknowledged);
    assert_eq!(
        report.mismatches, acknowledged,
        "every order reads back wrong"
    );
    assert_eq!(report.orders_verified, 0);
    assert_eq!(
        report.errors(),
        0,
        "a wrong reply is a mismatch, not an error"
    );
    assert!(!report.ok());
    let sample = report
        .mismatch_samples
        .first()
        .expect("a mismatch described");
    assert!(sample.contains("read back"), "{sample}");
    assert!(report.to_string().contains("result: FAILED"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_front_end_passes_and_rejections_are_not_errors() {
    let (fake, endpoint, server) = serve_fake(Faults {
        reject_every_third: true,
        ..Faults::default()
    })
    .await;
    let report = run(config(endpoint, 3, 20, 0.5)).await.expect("run");
    server.abort();

    let trades = fake.trades.lock().expect("not poisoned").len() as u64;
    assert!(trades > 0);
    assert_eq!(report.lookup.count, 60);
    assert_eq!(report.trade.count, trades, "409s are replies as expected");
    assert_eq!(report.trade.rejected, trades / 3);
    assert_eq!(report.orders_recorded, trades - trades / 3);
    assert_eq!(report.orders_verified, report.orders_recorded);
    assert_eq!(report.order_query.count, report.orders_recorded);
    assert!(report.ok(), "{report}");
    assert!(report.lookup.p50_us > 0 && report.lookup.p50_us <= report.lookup.p99_us);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_repeats_the_same_requests() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let (fake, endpoint, server) = serve_fake(Faults::default()).await;
        run(config(endpoint, 2, 30, 0.5)).await.expect("run");
        server.abort();
        // Clients interleave differently each time; what each sends does not change.
        let mut trades: Vec<String> = fake
            .trades
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|t| format!("{} {} {}", t.kind, t.quantity, t.name))
            .collect();
        trades.sort();
        runs.push(trades);
    }
    assert!(!runs[0].is_empty());
    assert_eq!(runs[0], runs[1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unexpected_status_is_an_error() {
    let (_fake, endpoint, server) = serve_fake(Faults {
        fail_fishco_lookups: true,
        ..Faults::default()
    })
    .await;
    let report = run(config(endpoint, 1, 30, 0.0)).await.expect("run");
    server.abort();
    assert!(report.lookup.errors > 0);
    assert_eq!(report.lookup.errors + report.lookup.count, 30);
    assert!(!report.ok());
    assert!(
        report.error_samples.iter().any(|e| e.contains("HTTP 500")),
        "{:?}",
        report.error_samples
    );
}

/// A server that answers each connection's first request and then closes it, as a front-end
/// restarting under the client would.
async fn serve_one_reply_per_connection() -> (Endpoint, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let server = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&head);
                let body = if text.starts_with("GET /stocks ") {
                    serde_json::to_string(&Data::new(vec![stock("GameStart")]))
                } else {
                    serde_json::to_string(&Data::new(stock("GameStart")))
                }
                .expect("serialise");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
                // Dropping the stream closes the connection without a `Connection: close`.
            });
        }
    });
    let endpoint = Endpoint::parse(&format!("http://{addr}")).expect("valid URL");
    (endpoint, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_connection_is_reopened_and_counted() {
    let (endpoint, server) = serve_one_reply_per_connection().await;
    let started = std::time::Instant::now();
    let timeout = Duration::from_secs(30);
    let report = run(LoadConfig {
        request_timeout: timeout,
        ..config(endpoint, 1, 5, 0.0)
    })
    .await
    .expect("run");
    server.abort();
    // A request left queued on a connection that had ended used to wait out its whole
    // timeout; a healthy run takes milliseconds, so a third of one timeout is a wide margin.
    assert!(
        started.elapsed() < timeout / 3,
        "a request waited for its timeout: {:?}",
        started.elapsed()
    );
    // The close races the next request: each lookup either finds the connection closed and
    // reopens it, or is sent into the closing socket and fails. Either way it is counted.
    assert_eq!(report.lookup.count + report.lookup.errors, 5);
    assert!(report.lookup.count >= 1, "{report}");
    // A lookup sent into the closing socket fails without reopening; the next one reopens.
    // So every lookup after the first either reopened the connection or failed.
    assert!(report.reconnects + report.lookup.errors >= 4, "{report}");
    assert!(report.reconnects >= 2, "{report}");
}

#[test]
fn bad_settings_name_the_flag() {
    let endpoint = Endpoint::parse("http://127.0.0.1:1").expect("valid URL");
    let cases = [
        (config(endpoint.clone(), 0, 1, 0.5), "--clients 0"),
        (config(endpoint.clone(), 1, 0, 0.5), "--iterations 0"),
        (config(endpoint.clone(), 1, 1, 1.5), "--p 1.5"),
        (config(endpoint.clone(), 1, 1, -0.1), "--p -0.1"),
        (config(endpoint.clone(), 1, 1, f64::NAN), "--p NaN"),
        (
            LoadConfig {
                stop: Stop::Duration(Duration::ZERO),
                ..config(endpoint.clone(), 1, 1, 0.5)
            },
            "--duration",
        ),
    ];
    for (config, needle) in cases {
        let err = config.validate().expect_err(needle).to_string();
        assert!(err.contains(needle), "{needle}: {err}");
    }
    assert!(config(endpoint, 1, 1, 1.0).validate().is_ok());
}

#[tokio::test]
async fn an_unreachable_front_end_fails_before_the_run() {
    // Bind and drop a listener to find a port nobody listens on.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr").port()
    };
    let endpoint = Endpoint::parse(&format!("http://127.0.0.1:{port}")).expect("valid URL");
    let err = run(config(endpoint, 1, 1, 0.0))
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, Error::Unreachable { .. }), "{err}");
}
