//! Shared by the process tests: a real system of `bazaar` processes on free loopback ports in a
//! temporary directory, an HTTP helper, polling with deadlines, and the consistency checkers.
//!
//! Every test starts its own system, so tests run in parallel without sharing state. When a
//! test panics, the tail of every service's log is printed before the processes are killed.

#![allow(dead_code)]

pub mod checks;
pub mod relay;
pub mod up;
pub mod webdriver;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bazaar_api::auth::ClientAuth;
use bazaar_cluster::{Cluster, ClusterSpec, LogTarget, Role};
use serde_json::Value;

/// The binary under test.
pub fn exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bazaar"))
}

/// Prints what a test is doing and why, so a failure's output reads as a story.
#[macro_export]
macro_rules! phase {
    ($($arg:tt)*) => {
        eprintln!("[phase] {}", format!($($arg)*))
    };
}

/// Polls `check` every 20 ms until it returns true; panics naming `what` after `deadline`.
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A small JSON-over-HTTP client for one base URL.
#[derive(Debug, Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

impl Api {
    /// A client that presents no cluster key (and trusts no CA).
    pub fn new(base: impl Into<String>) -> Self {
        Self::with_auth(base, &ClientAuth::none())
    }

    /// A client that presents `auth`'s cluster key and trusts its CA.
    pub fn with_auth(base: impl Into<String>, auth: &ClientAuth) -> Self {
        Self {
            base: base.into(),
            http: bazaar_api::client::reqwest_builder(auth)
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    /// Sends a request built by `build` on this client (for headers the helpers do not set).
    pub async fn send(
        &self,
        build: impl FnOnce(&reqwest::Client, String) -> reqwest::RequestBuilder,
        path: &str,
    ) -> (u16, Value) {
        let response = build(&self.http, format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        Self::finish(response).await
    }

    async fn finish(response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    /// GET, returning the status and the JSON body (or the text as a JSON string).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        Self::finish(response).await
    }

    /// GET that may fail to connect.
    pub async fn try_get(&self, path: &str) -> Option<(u16, Value)> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .ok()?;
        Some(Self::finish(response).await)
    }

    /// POST a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        Self::finish(response).await
    }

    /// POST raw bytes with an optional content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).body(body);
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        Self::finish(response).await
    }

    /// Any method, no body.
    pub async fn call(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let response = self
            .http
            .request(method, format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        Self::finish(response).await
    }

    /// `POST /orders`; returns the transaction number on success, the status otherwise.
    pub async fn trade(&self, name: &str, kind: &str, quantity: u64) -> Result<u64, (u16, Value)> {
        let (status, body) = self
            .post(
                "/orders",
                &serde_json::json!({"name": name, "type": kind, "quantity": quantity}),
            )
            .await;
        match (status, body["data"]["transaction_number"].as_u64()) {
            (200, Some(n)) => Ok(n),
            _ => Err((status, body)),
        }
    }

    /// The quantity of a stock via `GET /stocks/{name}`.
    pub async fn quantity(&self, name: &str) -> u64 {
        let (status, body) = self.get(&format!("/stocks/{name}")).await;
        assert_eq!(status, 200, "lookup of {name}: {body}");
        body["data"]["quantity"].as_u64().expect("quantity")
    }
}

/// Asserts the error envelope: `{"error": {"code": status, "message": non-empty}}`.
pub fn assert_error(status: u16, body: &Value, expected: u16, fragment: &str) {
    assert_eq!(status, expected, "wrong status; body {body}");
    assert_eq!(
        body["error"]["code"], expected,
        "code must equal the status: {body}"
    );
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.to_lowercase().contains(&fragment.to_lowercase()),
        "message {message:?} should mention {fragment:?}"
    );
    assert!(body.get("data").is_none(), "an error has no data: {body}");
}

/// A complete system for one test.
pub struct System {
    pub dir: tempfile::TempDir,
    pub cluster: Option<Cluster>,
}

impl System {
    /// The default system: 3 primary-backup replicas, caching on.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A system with `adjust` applied to the spec first.
    pub async fn start_with(adjust: impl FnOnce(&mut ClusterSpec)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = Self::spec(dir.path(), adjust);
        let cluster = Cluster::start(spec)
            .await
            .unwrap_or_else(|e| panic!("start: {e}"));
        Self {
            dir,
            cluster: Some(cluster),
        }
    }

    /// The spec `start_with` would use for `dir`.
    pub fn spec(dir: &Path, adjust: impl FnOnce(&mut ClusterSpec)) -> ClusterSpec {
        let mut spec = ClusterSpec::new(exe(), dir.join("data"), 0);
        spec.logs = LogTarget::Dir(dir.join("logs"));
        spec.rust_log = Some("info,bazaar_frontend=debug".into());
        // Tests that make every replica unreachable should not wait the default 10 s.
        spec.extra_args.push((
            Role::Frontend,
            vec!["--failover-deadline".into(), "4s".into()],
        ));
        adjust(&mut spec);
        spec
    }

    pub fn cluster(&mut self) -> &mut Cluster {
        self.cluster.as_mut().expect("running")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn url(&self, role: Role, id: Option<u8>) -> String {
        self.cluster
            .as_ref()
            .and_then(|c| c.url(role, id))
            .expect("service exists")
    }

    /// What a member of the cluster presents: its key, and its CA with TLS.
    pub fn auth(&self) -> ClientAuth {
        self.cluster
            .as_ref()
            .map(|c| c.client_auth().clone())
            .expect("running")
    }

    /// The front-end's API (the client presents the cluster key, which public routes ignore).
    pub fn api(&self) -> Api {
        Api::with_auth(self.url(Role::Frontend, None), &self.auth())
    }

    /// An order replica's API, with the cluster key.
    pub fn replica(&self, id: u8) -> Api {
        Api::with_auth(self.url(Role::Order, Some(id)), &self.auth())
    }

    /// A catalog's API, with the cluster key.
    pub fn catalog(&self, id: u8) -> Api {
        Api::with_auth(self.url(Role::Catalog, Some(id)), &self.auth())
    }

    /// The current leader's id according to the front-end.
    pub async fn leader(&self) -> u8 {
        let (status, body) = self.api().get("/leader").await;
        assert_eq!(status, 200, "{body}");
        u8::try_from(body["data"]["id"].as_u64().expect("leader id")).expect("small id")
    }

    /// Waits until every running replica in `ids` holds the same log.
    pub async fn wait_replicas_equal(&self, ids: &[u8]) {
        let replicas: Vec<Api> = ids.iter().map(|id| self.replica(*id)).collect();
        wait_until(
            "every replica holds the same log",
            Duration::from_secs(20),
            || {
                let replicas = replicas.clone();
                async move {
                    let mut positions = Vec::new();
                    for r in &replicas {
                        match r.try_get("/health").await {
                            Some((200, body)) => positions.push(body["data"]["position"].clone()),
                            _ => return false,
                        }
                    }
                    positions.windows(2).all(|w| w[0] == w[1])
                }
            },
        )
        .await;
    }

    /// Waits until every replica holds the same log and every catalog has applied and saved
    /// it: the state `bazaar verify` compares.
    pub async fn wait_quiet(&self) {
        let cluster = self.cluster.as_ref().expect("running");
        let replicas: Vec<Api> = cluster
            .replica_ids()
            .into_iter()
            .map(|id| self.replica(id))
            .collect();
        let catalogs: Vec<Api> = cluster
            .catalog_ids()
            .into_iter()
            .map(|id| self.catalog(id))
            .collect();
        wait_until(
            "replicas equal, catalogs caught up and saved",
            Duration::from_secs(30),
            || {
                let (replicas, catalogs) = (replicas.clone(), catalogs.clone());
                async move {
                    let mut positions = Vec::new();
                    for r in &replicas {
                        match r.try_get("/health").await {
                            Some((200, body)) => positions.push(body["data"]["position"].clone()),
                            _ => return false,
                        }
                    }
                    if !positions.windows(2).all(|w| w[0] == w[1]) {
                        return false;
                    }
                    for c in &catalogs {
                        match c.try_get("/health").await {
                            Some((200, body))
                                if body["data"]["position"] == positions[0]
                                    && body["data"]["saved"] == positions[0] => {}
                            _ => return false,
                        }
                    }
                    true
                }
            },
        )
        .await;
    }

    /// Stops everything cleanly and keeps the data directory.
    pub async fn stop(&mut self) {
        if let Some(cluster) = self.cluster.take() {
            cluster.shutdown().await;
        }
    }
}

impl Drop for System {
    fn drop(&mut self) {
        // BAZAAR_KEEP_TEST_DIRS=1 keeps databases and logs for a look after the test.
        if std::env::var_os("BAZAAR_KEEP_TEST_DIRS").is_some() {
            eprintln!("keeping {}", self.dir.path().display());
            let _ = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir")).keep();
        }
        if std::thread::panicking()
            && let Some(cluster) = &self.cluster
        {
            for record in cluster.records() {
                if let Some(tail) = cluster.log_tail(record.role, record.id, 40) {
                    eprintln!(
                        "----- last lines of {} -----\n{tail}",
                        bazaar_cluster::ServiceSpec::name_of(record.role, record.id)
                    );
                }
            }
        }
    }
}

/// Runs `bazaar args...` to completion (killed after `timeout`) and returns its output.
pub fn run_bazaar(args: &[&str], timeout: Duration) -> Output {
    let mut child = Command::new(exe())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bazaar");
    let start = Instant::now();
    loop {
        match child.try_wait().expect("wait") {
            Some(_) => return child.wait_with_output().expect("output"),
            None if start.elapsed() > timeout => {
                let _ = child.kill();
                let output = child.wait_with_output().expect("output");
                panic!(
                    "bazaar {args:?} still ran after {timeout:?}; stderr: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A service stopped with SIGSTOP; continued (SIGCONT) on drop, however the test ends.
pub struct Paused {
    pid: i32,
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

impl System {
    /// Pauses a service (SIGSTOP) until the returned guard is dropped.
    pub fn pause(&self, role: Role, id: Option<u8>) -> Paused {
        let pid = self
            .cluster
            .as_ref()
            .expect("running")
            .records()
            .into_iter()
            .find(|r| r.role == role && r.id == id)
            .map(|r| i32::try_from(r.pid).expect("pid"))
            .expect("service exists");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGSTOP,
        )
        .expect("SIGSTOP");
        Paused { pid }
    }
}

/// A process started by a test outside the cluster (a second front-end); killed on drop.
pub struct Extra {
    child: std::process::Child,
    pub url: String,
}

impl Extra {
    /// Takes charge of a child reachable at `url`.
    pub fn new(child: std::process::Child, url: String) -> Self {
        Self { child, url }
    }
}

impl Drop for Extra {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl System {
    /// Starts a second front-end against the same catalogs and replicas, and waits until it
    /// serves with its cache on.
    pub async fn spawn_frontend(&self) -> Extra {
        self.spawn_frontend_with(&[]).await
    }

    /// [`Self::spawn_frontend`] with extra flags.
    pub async fn spawn_frontend_with(&self, extra: &[&str]) -> Extra {
        let replicas: Vec<String> = (1..=3).map(|id| self.url(Role::Order, Some(id))).collect();
        self.spawn_frontend_via(&replicas, extra).await
    }

    /// [`Self::spawn_frontend_with`], reaching order replica `i + 1` at `replicas[i]` (a
    /// relay, say) instead of where it listens.
    pub async fn spawn_frontend_via(&self, replicas: &[String], extra: &[&str]) -> Extra {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let replicas: Vec<String> = replicas
            .iter()
            .enumerate()
            .map(|(i, url)| format!("{}={url}", i + 1))
            .collect();
        let catalogs: Vec<String> = self
            .cluster
            .as_ref()
            .expect("running")
            .catalog_ids()
            .into_iter()
            .map(|id| self.url(Role::Catalog, Some(id)))
            .collect();
        let log = std::fs::File::create(self.dir.path().join("logs/frontend-2.log")).expect("log");
        let key_file = self.data_dir().join(bazaar_cluster::security::KEY_FILE);
        let child = Command::new(exe())
            .args([
                "frontend",
                "--cluster-key-file",
                key_file.to_str().expect("UTF-8 path"),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--catalogs",
                &catalogs.join(","),
                "--replicas",
                &replicas.join(","),
            ])
            .args(extra)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn front-end");
        let extra = Extra {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let api = Api::with_auth(extra.url.clone(), &self.auth());
        wait_until("the second front-end caches", Duration::from_secs(30), || {
            let api = api.clone();
            async move {
                matches!(api.try_get("/cache").await, Some((200, body)) if body["data"]["enabled"] == true)
            }
        })
        .await;
        extra
    }

    /// Waits until the front-end's cache is on (its invalidation feed is up).
    pub async fn wait_caching(&self) {
        let api = self.api();
        wait_until("the front-end caches", Duration::from_secs(30), || {
            let api = api.clone();
            async move { api.get("/cache").await.1["data"]["enabled"] == true }
        })
        .await;
    }
}

/// Traders running in the background until stopped: each loops trading small quantities of
/// a few stocks, recording acknowledged numbers and any error other than 409.
pub struct Traders {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<(Vec<u64>, Vec<String>)>>,
}

/// What the traders saw.
#[derive(Debug, Default)]
pub struct Traded {
    pub acked: std::collections::BTreeSet<u64>,
    pub errors: Vec<String>,
}

impl Traders {
    /// Starts `count` traders against `api`.
    pub fn start(api: &Api, count: usize) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stocks = ["GameStart", "FishCo", "BoarCo", "MenhirCo"];
        let handles = (0..count)
            .map(|client| {
                let (api, stop) = (api.clone(), std::sync::Arc::clone(&stop));
                tokio::spawn(async move {
                    let (mut acked, mut errors) = (Vec::new(), Vec::new());
                    let mut i = client;
                    // Bounded: a test that forgets to stop its traders still ends.
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) && i < client + 100_000 {
                        let stock = stocks[i % stocks.len()];
                        let kind = if i % 2 == 0 { "buy" } else { "sell" };
                        match api.trade(stock, kind, 1 + (i % 3) as u64).await {
                            Ok(n) => acked.push(n),
                            Err((409, _)) => {}
                            Err((status, body)) => errors.push(format!("{status} {body}")),
                        }
                        i += 1;
                    }
                    (acked, errors)
                })
            })
            .collect();
        Self { stop, handles }
    }

    /// Stops them and collects what they saw; panics on a duplicate transaction number.
    pub async fn stop(self) -> Traded {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut traded = Traded::default();
        for handle in self.handles {
            let (acked, errors) = handle.await.expect("trader task");
            for n in acked {
                assert!(
                    traded.acked.insert(n),
                    "transaction number {n} acknowledged twice"
                );
            }
            traded.errors.extend(errors);
        }
        traded
    }
}
