//! The shared listener against real sockets: every limit, the envelope on hyper's own errors,
//! the access check, and TLS.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use bazaar_api::auth::{ClientAuth, ClusterKey};
use bazaar_api::client::Http;
use bazaar_service::limits::Limits;
use bazaar_service::{Access, Json, Listening, Metrics, finish_router, serve};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const KEY: &str = "feedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedface";

/// Requests that reached a handler.
#[derive(Clone, Default)]
struct Seen(Arc<AtomicUsize>);

fn app(access: Access, seen: &Seen) -> Router {
    let (a, b, c) = (seen.clone(), seen.clone(), seen.clone());
    let routes = Router::new()
        .route(
            "/echo",
            post(move |Json(v): Json<Value>| async move {
                a.0.fetch_add(1, Ordering::SeqCst);
                Json(v)
            }),
        )
        .route(
            "/stocks/{name}",
            get(
                move |axum::extract::Path(name): axum::extract::Path<String>| async move {
                    b.0.fetch_add(1, Ordering::SeqCst);
                    Json(serde_json::json!({ "name": name }))
                },
            ),
        )
        .route(
            "/slow",
            get(move || async move {
                c.0.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(800)).await;
                "done"
            }),
        )
        .route("/health", get(|| async { "ok" }))
        .merge(
            // A route that raises its own body limit, as the Raft routes do.
            Router::new()
                .route(
                    "/big",
                    post(
                        |Json(v): Json<Value>| async move { Json(v.as_str().map_or(0, str::len)) },
                    ),
                )
                .layer(axum::extract::DefaultBodyLimit::max(200_000)),
        );
    finish_router(routes, Metrics::new(), access)
}

struct Server {
    addr: std::net::SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(router: Router, listening: Listening) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, router, listening, stop.clone()));
        Self { addr, stop, task }
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://127.0.0.1:{}", self.addr.port())
    }

    async fn stop(self) {
        self.stop.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(10), self.task).await;
        assert!(
            matches!(ended, Ok(Ok(Ok(())))),
            "serve stops cleanly: {ended:?}"
        );
    }
}

fn limits() -> Limits {
    Limits {
        header_timeout: Duration::from_millis(600),
        idle_timeout: Duration::from_millis(1500),
        body_timeout: Duration::from_millis(600),
        connections_max: 64,
        in_flight_max: 64,
    }
}

/// Sends raw bytes and reads until the server closes or `within` passes.
async fn exchange(addr: std::net::SocketAddr, bytes: &[u8], within: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(within, stream.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

fn status_and_body(reply: &str) -> (u16, Value) {
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {reply:?}"));
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::String(body.into())),
    )
}

fn assert_envelope(reply: &str, status: u16) {
    let (got, body) = status_and_body(reply);
    assert_eq!(got, status, "{reply}");
    assert_eq!(body["error"]["code"], status, "enveloped: {reply}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{reply}"
    );
}

#[tokio::test]
async fn hypers_own_errors_and_early_refusals_use_the_envelope() {
    let seen = Seen::default();
    let server = Server::start(
        app(Access::Public, &seen),
        Listening {
            tls: None,
            limits: limits(),
        },
    )
    .await;
    let long = Duration::from_secs(3);
    let malformed = exchange(server.addr, b"NOT HTTP AT ALL\r\n\r\n", long).await;
    assert_envelope(&malformed, 400);
    let bad_header = exchange(server.addr, b"GET / HTTP/1.1\r\nbad header\r\n\r\n", long).await;
    assert_envelope(&bad_header, 400);
    let huge_head = format!(
        "GET /health HTTP/1.1\r\nhost: x\r\nx-filler: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    assert_envelope(
        &exchange(server.addr, huge_head.as_bytes(), long).await,
        431,
    );
    let long_target = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(9_000));
    assert_envelope(
        &exchange(server.addr, long_target.as_bytes(), long).await,
        414,
    );

    // A declared length over the limit is refused at once, without waiting for the body.
    let started = Instant::now();
    let huge = exchange(
        server.addr,
        b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000000000\r\n\r\n{",
        long,
    )
    .await;
    assert_envelope(&huge, 413);
    assert!(started.elapsed() < Duration::from_millis(500), "early");
    assert_eq!(seen.0.load(Ordering::SeqCst), 0, "no handler ran");

    // Over the route's own limit (64 KiB) but under what any route accepts: still refused
    // before the body is read (a wait for it would end in 408 after the body timeout).
    let started = Instant::now();
    let over_route = exchange(
        server.addr,
        b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n",
        long,
    )
    .await;
    assert_envelope(&over_route, 413);
    assert!(started.elapsed() < Duration::from_millis(500), "early");
    // The body was never read, so the connection cannot carry another request: the reply
    // says so, or a pooled client would send its next request into a closing connection.
    assert!(
        over_route
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{over_route}"
    );
    // A route that raised its limit takes the same length.
    let text = "x".repeat(99_998);
    let body = format!("\"{text}\"");
    let raised = Http::new(Duration::from_secs(5))
        .post_raw(
            &format!("{}/big", server.url("http")),
            None,
            body.into_bytes(),
        )
        .await
        .expect("answered");
    assert_eq!(raised, (200, "99998".to_owned()));

    // A body that stops half-way gets 408 once the body timeout passes.
    let late = exchange(
        server.addr,
        b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 20\r\n\r\n{\"a\":",
        long,
    )
    .await;
    assert_envelope(&late, 408);

    // A trailing slash finds the route.
    let slash = exchange(
        server.addr,
        b"GET /stocks/GameStart/ HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        long,
    )
    .await;
    let (status, body) = status_and_body(&slash);
    assert_eq!(
        (status, body["name"].as_str()),
        (200, Some("GameStart")),
        "{slash}"
    );
    server.stop().await;
}

#[tokio::test]
async fn stalled_and_idle_connections_are_closed_and_others_still_served() {
    let seen = Seen::default();
    let server = Server::start(
        app(Access::Public, &seen),
        Listening {
            tls: None,
            limits: limits(),
        },
    )
    .await;
    let mut stalled = Vec::new();
    for i in 0..30 {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        let partial: &[u8] = match i % 3 {
            0 => b"GET /health HTTP/1.1\r\nhost: x\r\nx-half",
            1 => b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n{",
            _ => b"",
        };
        stream.write_all(partial).await.expect("write");
        stalled.push((i % 3, stream));
    }
    let http = Http::new(Duration::from_secs(2));
    let (status, _) = http
        .get_raw(&format!("{}/health", server.url("http")))
        .await
        .expect("served beside the stalled connections");
    assert_eq!(status, 200);
    let started = Instant::now();
    for (kind, mut stream) in stalled {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .unwrap_or_else(|_| panic!("stalled connection of kind {kind} was never closed"));
        assert!(read.is_ok());
        if kind == 1 {
            assert_envelope(&String::from_utf8_lossy(&rest), 408);
        }
    }
    // Idle connections live until the idle timeout, half heads only until the head timeout.
    assert!(started.elapsed() < Duration::from_secs(4));
    server.stop().await;
}

#[tokio::test]
async fn requests_over_the_in_flight_cap_are_shed_with_retry_after() {
    let seen = Seen::default();
    let server = Server::start(
        app(Access::Public, &seen),
        Listening {
            tls: None,
            limits: Limits {
                in_flight_max: 2,
                ..limits()
            },
        },
    )
    .await;
    let url = format!("{}/slow", server.url("http"));
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let (http, url) = (Http::new(Duration::from_secs(5)), url.clone());
            tokio::spawn(async move { http.get_raw(&url).await.expect("answered") })
        })
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        let (status, body) = call.await.expect("task");
        if status == 503 {
            let json: Value = serde_json::from_str(&body).expect("envelope");
            assert_eq!(json["error"]["code"], 503);
        }
        statuses.push(status);
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 200, 503, 503, 503],
        "two admitted, the rest shed"
    );
    assert_eq!(seen.0.load(Ordering::SeqCst), 2);

    // The shed reply says when to come back, and closes the connection.
    let busy: Vec<_> = (0..2)
        .map(|_| {
            let (http, url) = (Http::new(Duration::from_secs(5)), url.clone());
            tokio::spawn(async move { http.get_raw(&url).await.expect("answered") })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.0.load(Ordering::SeqCst) < 4 {
        assert!(Instant::now() < deadline, "the slow calls never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let shed = exchange(
        server.addr,
        b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert_envelope(&shed, 503);
    let head = shed.to_ascii_lowercase();
    assert!(head.contains("retry-after: 1\r\n"), "{shed}");
    assert!(head.contains("connection: close\r\n"), "{shed}");
    for call in busy {
        assert_eq!(call.await.expect("task").0, 200);
    }
    server.stop().await;
}

#[tokio::test]
async fn internal_routes_need_the_key_and_nothing_runs_without_it() {
    let seen = Seen::default();
    let key = ClusterKey::parse(KEY).expect("key");
    let server = Server::start(
        app(Access::ClusterKey(key.clone()), &seen),
        Listening {
            tls: None,
            limits: limits(),
        },
    )
    .await;
    let base = server.url("http");
    let anonymous = Http::new(Duration::from_secs(2));
    let wrong = Http::with_auth(
        Duration::from_secs(2),
        &ClientAuth::none().with_key(Some(
            ClusterKey::parse(&KEY.replace('f', "e")).expect("key"),
        )),
    );
    let member = Http::with_auth(
        Duration::from_secs(2),
        &ClientAuth::none().with_key(Some(key)),
    );
    for http in [&anonymous, &wrong] {
        let (status, body) = http
            .post_raw(&format!("{base}/echo"), None, br#"{"a":1}"#.to_vec())
            .await
            .expect("answered");
        assert_eq!(status, 401, "{body}");
        let (status, _) = http
            .get_raw(&format!("{base}/stocks/X"))
            .await
            .expect("answered");
        assert_eq!(status, 401);
        let (status, _) = http
            .get_raw(&format!("{base}/nowhere"))
            .await
            .expect("answered");
        assert_eq!(
            status, 401,
            "even a missing route says nothing without the key"
        );
    }
    assert_eq!(seen.0.load(Ordering::SeqCst), 0, "no handler ran");
    for open in ["/health", "/metrics"] {
        let (status, _) = anonymous
            .get_raw(&format!("{base}{open}"))
            .await
            .expect("answered");
        assert_eq!(status, 200, "{open} is open");
    }
    let (status, body) = member
        .post_raw(&format!("{base}/echo"), None, br#"{"a":1}"#.to_vec())
        .await
        .expect("answered");
    assert_eq!((status, body.as_str()), (200, r#"{"a":1}"#));
    server.stop().await;
}

#[tokio::test]
async fn tls_listeners_serve_clients_that_trust_the_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("ca");
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .expect("params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, leaf.pem()).expect("write");
    std::fs::write(&key, leaf_key.serialize_pem()).expect("write");
    let tls = bazaar_service::tls::server_config(&cert, &key).expect("server config");
    let seen = Seen::default();
    let server = Server::start(
        app(Access::Public, &seen),
        Listening {
            tls: Some(tls),
            limits: limits(),
        },
    )
    .await;
    let trusting = Http::with_auth(
        Duration::from_secs(2),
        &ClientAuth::none()
            .trusting_ca_pem(ca.pem().as_bytes())
            .expect("ca"),
    );
    let (status, body) = trusting
        .get_raw(&format!("{}/stocks/FishCo", server.url("https")))
        .await
        .expect("served over TLS");
    assert_eq!((status, body.as_str()), (200, r#"{"name":"FishCo"}"#));
    let untrusting = Http::new(Duration::from_secs(2));
    assert!(
        untrusting
            .get_raw(&format!("{}/health", server.url("https")))
            .await
            .is_err(),
        "an unknown CA is refused"
    );
    // Plain HTTP on the TLS port gets nowhere, and the stalled handshake is closed in time.
    let plain = exchange(
        server.addr,
        b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(!plain.contains("200"), "{plain}");
    server.stop().await;
}

#[tokio::test]
async fn a_full_listener_closes_its_longest_idle_connection_for_a_new_client() {
    let seen = Seen::default();
    let server = Server::start(
        app(Access::Public, &seen),
        Listening {
            tls: None,
            limits: Limits {
                connections_max: 8,
                // Long: only eviction can free a place within the test.
                idle_timeout: Duration::from_secs(60),
                header_timeout: Duration::from_secs(60),
                ..limits()
            },
        },
    )
    .await;
    let mut idle = Vec::new();
    for _ in 0..8 {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        // One request each, so every connection is open, served, and then idle.
        stream
            .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("write");
        let mut reply = [0_u8; 512];
        let n = stream.read(&mut reply).await.expect("reply");
        assert!(String::from_utf8_lossy(&reply[..n]).starts_with("HTTP/1.1 200"));
        idle.push(stream);
    }
    let started = Instant::now();
    let http = Http::new(Duration::from_secs(10));
    let (status, _) = http
        .get_raw(&format!("{}/stocks/FishCo", server.url("http")))
        .await
        .expect("a ninth client is served");
    assert_eq!(status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "served by eviction, not by a timeout: {:?}",
        started.elapsed()
    );
    // The first connection, idle longest, was the one closed.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), idle[0].read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
    server.stop().await;
}
