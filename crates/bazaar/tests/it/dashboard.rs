//! The dashboard without a browser: the page and its routes, the live event stream, the sampler
//! that runs only while a page is connected, the cap on pages, the access switch, the
//! demonstration controls through `bazaar up --demo`, and `bazaar status`. The browser tests
//! are in `browser.rs`.

use std::time::{Duration, Instant};

use bazaar_cluster::Role;
use serde_json::{Value, json};

use crate::phase;
use crate::support::up::{Up, is_private};
use crate::support::{Api, System, assert_error, run_bazaar, wait_until};

/// A plain client without the cluster key (the dashboard and the public API need none).
fn http() -> reqwest::Client {
    bazaar_api::client::reqwest_builder(&bazaar_api::auth::ClientAuth::none())
        .build()
        .expect("client")
}

/// One server-sent event stream, read with a plain HTTP client.
struct Events {
    response: reqwest::Response,
    buffer: String,
}

impl Events {
    async fn open(base: &str) -> Result<Self, (u16, Value)> {
        let response = bazaar_api::client::reqwest_builder(&bazaar_api::auth::ClientAuth::none())
            .build()
            .expect("client")
            .get(format!("{base}/dashboard/events"))
            .send()
            .await
            .expect("GET /dashboard/events");
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.json().await.unwrap_or(Value::Null);
            return Err((status, body));
        }
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        Ok(Self {
            response,
            buffer: String::new(),
        })
    }

    /// The next event (type, JSON data), waiting at most `deadline`.
    async fn next(&mut self, deadline: Duration) -> (String, Value) {
        let start = Instant::now();
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut kind = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(k) = line.strip_prefix("event:") {
                        kind = k.trim().to_owned();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                return (
                    kind,
                    serde_json::from_str(&data).expect("event data is JSON"),
                );
            }
            let left = deadline.saturating_sub(start.elapsed());
            let chunk = tokio::time::timeout(left, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {deadline:?}"))
                .expect("the stream stays readable")
                .expect("the stream does not end");
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Reads events until `check` accepts one of type `kind`.
    async fn until(
        &mut self,
        kind: &str,
        deadline: Duration,
        mut check: impl FnMut(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let left = deadline.saturating_sub(start.elapsed());
            assert!(
                !left.is_zero(),
                "no matching {kind} event within {deadline:?}"
            );
            let (k, data) = self.next(left).await;
            if k == kind && check(&data) {
                return data;
            }
        }
    }
}

fn quantity_in(market: &Value, name: &str) -> Option<u64> {
    market["stocks"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)?["quantity"]
        .as_u64()
}

/// A metric's value from the front-end's `/metrics`.
async fn metric(base: &str, name: &str) -> f64 {
    let text = http()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_files_are_served_on_loopback_with_a_strict_policy() {
    let system = System::start().await;
    let base = system.url(Role::Frontend, None);
    phase!("GET / serves the page with its own policy; the script and style sheet are there");
    let page = http().get(format!("{base}/")).send().await.expect("GET /");
    assert_eq!(page.status(), 200);
    let policy = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    let html = page.text().await.expect("html");
    assert!(html.contains("<title>Stock Bazaar dashboard</title>"));
    for (path, kind) in [
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let response = http()
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect(path);
        assert_eq!(response.status(), 200, "{path}");
        let content_type = response.headers()["content-type"].to_str().expect("ascii");
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
    }
    phase!("without --demo the demonstration route does not exist");
    let (status, body) = system
        .api()
        .post("/dashboard/demo/order-1/kill", &json!({}))
        .await;
    assert_error(status, &body, 404, "no route");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_shows_a_trade_and_the_sampler_stops_when_the_last_page_leaves() {
    let system = System::start().await;
    let base = system.url(Role::Frontend, None);
    let api = system.api();
    phase!("no page: the sampler does not run");
    assert_eq!(metric(&base, "bazaar_dashboard_sampling").await, 0.0);
    assert_eq!(metric(&base, "bazaar_dashboard_samples_total").await, 0.0);

    phase!("a page connects: hello, then every section");
    let mut events = Events::open(&base).await.expect("stream");
    let (kind, hello) = events.next(Duration::from_secs(10)).await;
    assert_eq!(kind, "hello");
    assert_eq!(hello["demo"], false);
    let market = events
        .until("market", Duration::from_secs(10), |m| {
            quantity_in(m, "FishCo").is_some()
        })
        .await;
    let before = quantity_in(&market, "FishCo").expect("FishCo");
    assert_eq!(market["stocks"].as_array().map(Vec::len), Some(12));
    let cluster = events
        .until("cluster", Duration::from_secs(10), |c| {
            c["view"]["leader"].is_u64()
        })
        .await;
    assert_eq!(
        cluster["view"]["replicas"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(cluster["view"]["leader"], 3);
    assert_eq!(
        cluster["leader_changes"][0]["to"], 3,
        "the first leader seen is listed"
    );
    events
        .until("cache", Duration::from_secs(10), |c| c["view"].is_object())
        .await;
    events
        .until("traffic", Duration::from_secs(10), |t| t["window_s"] == 300)
        .await;
    assert_eq!(metric(&base, "bazaar_dashboard_pages").await, 1.0);
    assert_eq!(metric(&base, "bazaar_dashboard_sampling").await, 1.0);

    phase!("a trade through the API reaches the page in the next sample");
    let traded_at = Instant::now();
    api.trade("FishCo", "buy", 2).await.expect("trade");
    events
        .until("market", Duration::from_secs(5), |m| {
            quantity_in(m, "FishCo") == Some(before - 2)
        })
        .await;
    eprintln!(
        "trade visible on the stream after {:?}",
        traded_at.elapsed()
    );
    events
        .until("traffic", Duration::from_secs(5), |t| {
            t["per_second"]["trade"]
                .as_array()
                .is_some_and(|s| s.iter().filter_map(Value::as_u64).sum::<u64>() == 1)
        })
        .await;

    phase!("the page leaves: the sampler stops and takes no more samples");
    drop(events);
    wait_until(
        "the sampler stops after the last page",
        Duration::from_secs(5),
        || {
            let base = base.clone();
            async move {
                metric(&base, "bazaar_dashboard_pages").await == 0.0
                    && metric(&base, "bazaar_dashboard_sampling").await == 0.0
            }
        },
    )
    .await;
    let samples = metric(&base, "bazaar_dashboard_samples_total").await;
    // Proving that nothing happens needs an observation window: four sample periods.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        metric(&base, "bazaar_dashboard_samples_total").await,
        samples,
        "no page, no samples"
    );

    phase!("a new page starts it again and gets the whole state at once");
    let mut events = Events::open(&base).await.expect("stream");
    events
        .until("market", Duration::from_secs(10), |m| {
            quantity_in(m, "FishCo") == Some(before - 2)
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_beyond_the_cap_get_503_until_one_leaves() {
    let system = System::start().await;
    let base = system.url(Role::Frontend, None);
    phase!("open {} pages", bazaar_frontend::dashboard::PAGES_MAX);
    let mut pages = Vec::new();
    for _ in 0..bazaar_frontend::dashboard::PAGES_MAX {
        let mut page = Events::open(&base).await.expect("under the cap");
        page.next(Duration::from_secs(10)).await;
        pages.push(page);
    }
    phase!("one more is refused with the envelope");
    let (status, body) = Events::open(&base).await.err().expect("over the cap");
    assert_error(status, &body, 503, "dashboard pages");
    phase!("one leaves; a new one is let in");
    pages.pop();
    wait_until("a page slot frees up", Duration::from_secs(5), || {
        let base = base.clone();
        async move { Events::open(&base).await.is_ok() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_dashboard_off_its_routes_do_not_exist_and_the_api_works() {
    let system = System::start_with(|spec| {
        spec.extra_args
            .push((Role::Frontend, vec!["--dashboard".into(), "off".into()]));
    })
    .await;
    let api = system.api();
    for path in ["/", "/dashboard/app.js", "/dashboard/events"] {
        let (status, body) = api.get(path).await;
        assert_error(status, &body, 404, "no route");
    }
    assert_eq!(api.get("/stocks/FishCo").await.0, 200);
    let metrics = http()
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(!metrics.contains("dashboard"), "no dashboard, no metrics");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_demo_kills_and_restarts_a_replica_through_the_front_end_only() {
    let up = Up::start(&["--demo"]).await;
    let api = Api::new(up.url(Role::Frontend, None));
    let replica = Api::new(up.url(Role::Order, Some(2)));

    phase!("the control file is private and the endpoint wants its token");
    let control_file = up.path("demo-control.json");
    assert!(is_private(&control_file), "mode 0600");
    let control: Value =
        serde_json::from_str(&std::fs::read_to_string(&control_file).expect("read")).expect("json");
    let endpoint = Api::new(control["url"].as_str().expect("url"));
    let token = control["token"].as_str().expect("token");
    assert_eq!(endpoint.get("/services").await.0, 404, "no token, no route");
    let wrong = "0".repeat(32);
    assert_eq!(endpoint.get(&format!("/{wrong}/services")).await.0, 404);
    let (status, services) = endpoint.get(&format!("/{token}/services")).await;
    assert_eq!(status, 200, "{services}");
    assert_eq!(
        services["data"].as_array().map(Vec::len),
        Some(6),
        "a front-end, three replicas, two catalogs"
    );

    phase!("kill order-2 from the front-end's demo route");
    let (status, body) = api.post("/dashboard/demo/order-2/kill", &json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["running"], false);
    assert!(
        replica.try_get("/health").await.is_none(),
        "order-2 is dead"
    );
    let (status, body) = api.post("/dashboard/demo/order-2/kill", &json!({})).await;
    assert_error(status, &body, 409, "not running");

    phase!("trading goes on; then start order-2 again and it catches up");
    api.trade("GameStart", "buy", 1).await.expect("trade");
    let (status, body) = api
        .post("/dashboard/demo/order-2/restart", &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["running"], true);
    let (status, health) = replica.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(
        health["data"]["ready"], true,
        "restart answers once it serves"
    );
    let (status, body) = api
        .post("/dashboard/demo/order-2/restart", &json!({}))
        .await;
    assert_error(status, &body, 409, "kill it first");
    let pid_now = up
        .cluster_file()
        .find(Role::Order, Some(2))
        .map(|s| s.pid)
        .expect("order-2");
    assert!(
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid_now).expect("pid")),
            None
        )
        .is_ok(),
        "cluster.json holds the new pid"
    );

    phase!("what may not be done is refused with the envelope");
    let (status, body) = api.post("/dashboard/demo/frontend/kill", &json!({})).await;
    assert_error(status, &body, 400, "front-end");
    let (status, body) = api.post("/dashboard/demo/order-9/kill", &json!({})).await;
    assert_error(status, &body, 404, "order-9");
    let (status, body) = api
        .post("/dashboard/demo/order-1/explode", &json!({}))
        .await;
    assert_error(status, &body, 400, "kill or restart");
    let (status, body) = api.post("/dashboard/demo/..%2Fx/kill", &json!({})).await;
    assert_error(status, &body, 400, "service name");

    phase!("up stops cleanly and removes the control file");
    let file = control_file.clone();
    assert!(up.stop().await, "up exits 0 on SIGTERM");
    assert!(!file.exists(), "the control file goes with up");
}

#[test]
fn demo_controls_need_the_dashboard() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let output = run_bazaar(
        &[
            "up",
            "--demo",
            "--dashboard",
            "off",
            "--base-port",
            "0",
            "--data-dir",
            data.to_str().expect("utf-8"),
        ],
        Duration::from_secs(30),
    );
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("--demo needs the dashboard"), "{err}");
    assert!(!data.join("cluster.json").exists(), "nothing started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bazaar_status_prints_the_cluster_and_fails_while_a_replica_is_down() {
    let mut system = System::start().await;
    let data = system.data_dir();
    let data = data.to_str().expect("utf-8").to_owned();
    let status = |data: String| async move {
        tokio::task::spawn_blocking(move || {
            run_bazaar(&["status", "--data-dir", &data], Duration::from_secs(30))
        })
        .await
        .expect("status runs")
    };

    phase!("every service up: exit 0, one row each, the leader named");
    let output = status(data.clone()).await;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(0), "{text}");
    for name in [
        "frontend",
        "order-1",
        "order-2",
        "order-3",
        "catalog-1",
        "catalog-2",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && l.contains(" up ")),
            "{name} up: {text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("order-3") && l.contains(" leader ")),
        "{text}"
    );
    assert!(
        text.contains("leader: order-3 (epoch 1), as the front-end chose it"),
        "{text}"
    );

    phase!("order-1 killed: its row says down and why, exit 1");
    system.cluster().kill(Role::Order, Some(1)).expect("kill");
    let output = status(data.clone()).await;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(output.status.code(), Some(1), "{text}");
    let row = text
        .lines()
        .find(|l| l.starts_with("order-1"))
        .expect("order-1 row");
    assert!(
        row.contains(" down ") && row.ends_with("connection refused"),
        "{row}"
    );

    phase!("no cluster.json: a clear error, exit 1");
    let missing = system.dir.path().join("nowhere");
    let output = status(missing.to_str().expect("utf-8").to_owned()).await;
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("cannot read") && err.contains("bazaar up"),
        "{err}"
    );
}
