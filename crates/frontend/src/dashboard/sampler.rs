//! The sampler: while at least one page is connected it samples every section every
//! [`SAMPLE_PERIOD`] (and right after a successful trade, at most once per period, or a
//! demonstration action), and publishes a section only when its JSON changed. The traffic
//! section is recomputed once per second, as its series move by the second.
//!
//! Each section is plain JSON for the page:
//! - `market`: `{"source", "stocks": [{"name", "price", "quantity", "volume"?, ..}], "error"?}`
//!   from the first catalog that answers `GET /stocks` (it has the volume), else the public
//!   `GET /stocks`; the last good list is kept when both fail.
//! - `cluster`: `{"view": ClusterView, "leader_changes": [..]}`.
//! - `cache`: `{"view": <GET /cache>, "timeline": {"seconds", "hits", "misses", "evictions",
//!   "invalidations"}}`.
//! - `traffic`: [`TrafficView`](super::traffic::TrafficView).
//! - `demo` (only with demonstration controls): `{"services": [..]}` from `bazaar up`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use serde::Serialize;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::Dashboard;
use super::cluster::{self, ClusterView, LeaderRef, Probe, State};
use super::timeline::{TIMELINE_SECONDS, Timeline};

/// Pause between samples while pages are connected.
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(250);

/// Pause between a trade waking the sampler and the sample, so a burst of trades makes one.
const SAMPLE_GAP_MIN: Duration = Duration::from_millis(50);

/// How long a back-end may take to answer a health or listing request. A healthy service on
/// loopback answers in about a millisecond; a paused one must not stall the page for long.
pub const HEALTH_TIMEOUT: Duration = Duration::from_millis(500);

/// How long an in-process call of the public API may take (a leader selection in progress).
const PUBLIC_CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Largest public API reply the sampler reads.
const PUBLIC_BODY_LEN_MAX: usize = 4 << 20;

/// Leader changes kept for the page.
pub const LEADER_CHANGES_MAX: usize = 20;

/// Shortest pause between two leader nudges (see [`nudge_leader`]).
const NUDGE_PAUSE: Duration = Duration::from_secs(1);

/// How long a nudge may take: the front-end's failover deadline bounds it anyway.
const NUDGE_TIMEOUT: Duration = Duration::from_secs(15);

/// One part of the page, published as one server-sent event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// Stocks.
    Market,
    /// Replicas, catalogs, the front-end, the leader.
    Cluster,
    /// The cache's entries, counters and timeline.
    Cache,
    /// Requests per second and latency.
    Traffic,
    /// Services the demonstration controls can stop and start.
    Demo,
}

impl Section {
    /// Every section, in the order a new page receives them.
    pub const ALL: [Self; 5] = [
        Self::Market,
        Self::Cluster,
        Self::Cache,
        Self::Traffic,
        Self::Demo,
    ];

    /// The event type.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Market => "market",
            Self::Cluster => "cluster",
            Self::Cache => "cache",
            Self::Traffic => "traffic",
            Self::Demo => "demo",
        }
    }

    pub(super) fn index(self) -> usize {
        match self {
            Self::Market => 0,
            Self::Cluster => 1,
            Self::Cache => 2,
            Self::Traffic => 3,
            Self::Demo => 4,
        }
    }
}

/// A section as published: its JSON text and a version that grows whenever the text changes.
#[derive(Debug, Clone)]
pub struct Published {
    /// Grows across all sections and sampler restarts, never reused.
    pub version: u64,
    /// The section's JSON.
    pub json: Arc<str>,
}

/// The newest version of every section sampled so far.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    sections: [Option<Published>; 5],
}

impl Snapshot {
    /// A section, if sampled yet.
    #[must_use]
    pub fn get(&self, section: Section) -> Option<&Published> {
        self.sections[section.index()].as_ref()
    }
}

/// A change of the leader trades go to, as the sampler saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LeaderChange {
    /// When it was seen, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The leader before; `None` for none (or the first one seen).
    pub from: Option<u64>,
    /// The leader after; `None` when there is none.
    pub to: Option<u64>,
    /// The new leader's epoch (term), when it reports one.
    pub epoch: Option<u64>,
}

/// What the sampler remembers between samples, and across its restarts.
#[derive(Debug)]
pub struct Memory {
    /// The leader at the last sample; `None` before the first.
    leader: Option<Option<u64>>,
    leader_changes: VecDeque<LeaderChange>,
    /// The last stock list that could be read.
    stocks: Option<Value>,
    /// Hits, misses, evictions, invalidations.
    cache_timeline: Timeline<4>,
    /// The last version handed out.
    version: u64,
    last_nudge: Option<Instant>,
    nudging: bool,
    /// The second of the last traffic view.
    traffic_second: Option<u64>,
}

impl Default for Memory {
    fn default() -> Self {
        Self {
            leader: None,
            leader_changes: VecDeque::new(),
            stocks: None,
            cache_timeline: Timeline::new(Instant::now()),
            version: 0,
            last_nudge: None,
            nudging: false,
            traffic_second: None,
        }
    }
}

impl Dashboard {
    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.inner
            .memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The sampler task: samples until no page is connected or the front-end stops.
pub(super) async fn run(dashboard: Dashboard) {
    tracing::debug!("dashboard sampler starts");
    dashboard.memory().cache_timeline.reset_baseline();
    dashboard.inner.metrics.sampling.set(1);
    let stop = dashboard.inner.stop.clone();
    // A trade may bring the next sample forward once per period: the page shows a trade at
    // once, and under steady load the sampler still takes at most two samples per period.
    let mut early_allowed = true;
    loop {
        sample(&dashboard).await;
        dashboard.inner.metrics.samples.inc();
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(SAMPLE_PERIOD) => early_allowed = true,
            () = dashboard.inner.traffic.trade_done(), if early_allowed => {
                early_allowed = false;
                tokio::time::sleep(SAMPLE_GAP_MIN).await;
            }
            () = dashboard.inner.wake.notified() => {}
        }
        let mut pages = dashboard.pages();
        if pages.open == 0 {
            // Under the pages lock: a page that arrives now finds `sampling` false and starts
            // a new sampler, which publishes afresh into the emptied snapshot.
            pages.sampling = false;
            dashboard
                .inner
                .snapshot
                .send_replace(Arc::new(Snapshot::default()));
            dashboard.inner.metrics.sampling.set(0);
            tracing::debug!("dashboard sampler stops: no page is connected");
            return;
        }
    }
    dashboard.pages().sampling = false;
    dashboard.inner.metrics.sampling.set(0);
}

/// Samples every section once and publishes those that changed, all in one update so a page
/// wakes once per sample.
async fn sample(dashboard: &Dashboard) {
    let (market, cluster, cache, demo) = tokio::join!(
        market(dashboard),
        cluster(dashboard),
        cache(dashboard),
        demo(dashboard)
    );
    let mut sections = vec![
        (Section::Market, market),
        (Section::Cluster, cluster),
        (Section::Cache, cache),
    ];
    // The traffic view moves by the second; recomputing it more often would only resend
    // the bin being filled.
    let now = Instant::now();
    let second = dashboard.inner.traffic.second_at(now);
    let due = {
        let mut memory = dashboard.memory();
        let due = memory.traffic_second != Some(second)
            || dashboard
                .inner
                .snapshot
                .borrow()
                .get(Section::Traffic)
                .is_none();
        memory.traffic_second = Some(second);
        due
    };
    if due {
        let traffic = serde_json::to_value(dashboard.inner.traffic.view(now))
            .expect("the traffic view serialises");
        sections.push((Section::Traffic, traffic));
    }
    if let Some(demo) = demo {
        sections.push((Section::Demo, demo));
    }
    publish(dashboard, sections);
}

fn publish(dashboard: &Dashboard, sections: Vec<(Section, Value)>) {
    let mut memory = dashboard.memory();
    let mut next = Snapshot::clone(&dashboard.inner.snapshot.borrow());
    let mut changed = false;
    for (section, value) in sections {
        let json = value.to_string();
        if next.get(section).is_some_and(|p| *p.json == *json) {
            continue;
        }
        memory.version += 1;
        next.sections[section.index()] = Some(Published {
            version: memory.version,
            json: json.into(),
        });
        changed = true;
    }
    if changed {
        dashboard.inner.snapshot.send_replace(Arc::new(next));
    }
}

/// `GET uri` on the public API, in-process: the `data` of a success, the message of an error.
async fn call_public(dashboard: &Dashboard, uri: &str, timeout: Duration) -> Result<Value, String> {
    let request = Request::get(uri)
        .body(Body::empty())
        .map_err(|e| format!("bad request {uri}: {e}"))?;
    let response = tokio::time::timeout(timeout, dashboard.inner.public.clone().oneshot(request))
        .await
        .map_err(|_| "no answer in time".to_owned())?
        .unwrap_or_else(|never: Infallible| match never {});
    let status = response.status();
    let bytes = tokio::time::timeout(
        timeout,
        axum::body::to_bytes(response.into_body(), PUBLIC_BODY_LEN_MAX),
    )
    .await
    .map_err(|_| "no answer in time".to_owned())?
    .map_err(|e| format!("unreadable reply: {e}"))?;
    let mut body: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("unreadable reply: {e}"))?;
    if status.is_success() {
        Ok(body.get_mut("data").map(Value::take).unwrap_or(Value::Null))
    } else {
        Err(body["error"]["message"]
            .as_str()
            .map_or_else(|| format!("HTTP {status}"), str::to_owned))
    }
}

async fn market(dashboard: &Dashboard) -> Value {
    let sources = &dashboard.inner.sources;
    let http = sources.http.with_timeout(HEALTH_TIMEOUT);
    let mut errors = Vec::new();
    let mut found = None;
    for catalog in &sources.catalogs {
        match http
            .get::<Value>(&format!("{}/stocks", catalog.trim_end_matches('/')))
            .await
        {
            Ok(stocks @ Value::Array(_)) => {
                found = Some((json!(catalog), stocks));
                break;
            }
            Ok(_) => errors.push(format!("{catalog}: not a list of stocks")),
            Err(e) => errors.push(format!("{catalog}: {}", cluster::describe(&e))),
        }
    }
    if found.is_none() {
        match call_public(dashboard, "/stocks", PUBLIC_CALL_TIMEOUT).await {
            Ok(stocks @ Value::Array(_)) => found = Some((json!("front-end"), stocks)),
            Ok(_) => errors.push("front-end: not a list of stocks".into()),
            Err(e) => errors.push(format!("front-end: {e}")),
        }
    }
    let mut memory = dashboard.memory();
    match found {
        Some((source, stocks)) => {
            memory.stocks = Some(stocks.clone());
            json!({"source": source, "stocks": stocks})
        }
        None => json!({
            "source": null,
            "stocks": memory.stocks.clone().unwrap_or_else(|| json!([])),
            "error": format!("no stock list could be read ({})", errors.join("; ")),
        }),
    }
}

async fn cluster(dashboard: &Dashboard) -> Value {
    let sources = &dashboard.inner.sources;
    let http = sources.http.with_timeout(HEALTH_TIMEOUT);
    let replicas = futures::future::join_all(sources.replicas.iter().map(|(id, url)| {
        let http = &http;
        async move { (*id, cluster::probe(http, url).await) }
    }));
    let catalogs = futures::future::join_all(
        sources
            .catalogs
            .iter()
            .map(|url| cluster::probe(&http, url)),
    );
    let frontend = async {
        let (health, leader) = tokio::join!(
            call_public(dashboard, "/health", PUBLIC_CALL_TIMEOUT),
            call_public(dashboard, "/leader", PUBLIC_CALL_TIMEOUT)
        );
        let leader = leader.ok().and_then(|l| {
            Some(LeaderRef {
                id: l.get("id")?.as_u64()?,
                url: l.get("url")?.as_str()?.to_owned(),
            })
        });
        (
            Probe {
                url: dashboard.inner.frontend_url.clone(),
                health,
            },
            leader,
        )
    };
    let (replicas, catalogs, frontend) = tokio::join!(replicas, catalogs, frontend);
    let view = ClusterView::build(vec![frontend], replicas, catalogs);
    // The front-end's leader is dead, or answers but no longer leads (it restarted).
    let leader_lost = view
        .frontends
        .iter()
        .find_map(|f| f.leader.as_ref())
        .and_then(|l| view.replicas.iter().find(|r| u64::from(r.id) == l.id))
        .is_some_and(|r| {
            r.state == State::Down
                || r.role
                    .as_deref()
                    .is_some_and(|role| role != "leader" && role != "candidate")
        });
    let mut memory = dashboard.memory();
    if memory.leader != Some(view.leader) {
        // The first leader seen is recorded too, unless earlier changes are on the list.
        if memory.leader.is_some() || memory.leader_changes.is_empty() {
            let epoch = view
                .replicas
                .iter()
                .find(|r| Some(u64::from(r.id)) == view.leader)
                .and_then(|r| r.epoch);
            let change = LeaderChange {
                at_ms: bazaar_service::now_ms(),
                from: memory.leader.flatten(),
                to: view.leader,
                epoch,
            };
            memory.leader_changes.push_back(change);
            while memory.leader_changes.len() > LEADER_CHANGES_MAX {
                memory.leader_changes.pop_front();
            }
        }
        memory.leader = Some(view.leader);
    }
    if leader_lost {
        nudge_leader(dashboard, &mut memory);
    }
    json!({"view": view, "leader_changes": memory.leader_changes})
}

/// The front-end learns that its leader died (or restarted and follows now) only when a request
/// to it fails. With a page open and no traffic, the page would show a lost leader until the
/// next trade; so when the sampler finds the front-end's leader down or not leading, it makes one
/// such request itself (an order query through the public API, which fails over like any
/// other), at most once per [`NUDGE_PAUSE`].
fn nudge_leader(dashboard: &Dashboard, memory: &mut Memory) {
    if memory.nudging || memory.last_nudge.is_some_and(|t| t.elapsed() < NUDGE_PAUSE) {
        return;
    }
    memory.nudging = true;
    memory.last_nudge = Some(Instant::now());
    let (task, stop) = (dashboard.clone(), dashboard.inner.stop.clone());
    dashboard.inner.tasks.spawn(async move {
        tokio::select! {
            () = stop.cancelled() => {}
            outcome = call_public(&task, "/orders/0", NUDGE_TIMEOUT) => {
                tracing::debug!(?outcome, "dashboard nudged the front-end to check its leader");
                task.inner.wake.notify_one();
            }
        }
        task.memory().nudging = false;
    });
}

async fn cache(dashboard: &Dashboard) -> Value {
    let view = call_public(dashboard, "/cache", PUBLIC_CALL_TIMEOUT).await;
    let now = Instant::now();
    let mut memory = dashboard.memory();
    if let Ok(view) = &view {
        let counters =
            ["hits", "misses", "evictions", "invalidations"].map(|k| view[k].as_u64().unwrap_or(0));
        memory.cache_timeline.observe(now, counters);
    }
    let [hits, misses, evictions, invalidations] = memory.cache_timeline.series(now);
    let timeline = json!({
        "seconds": TIMELINE_SECONDS,
        "hits": hits,
        "misses": misses,
        "evictions": evictions,
        "invalidations": invalidations,
    });
    match view {
        Ok(view) => json!({"view": view, "timeline": timeline}),
        Err(e) => json!({"view": null, "error": e, "timeline": timeline}),
    }
}

async fn demo(dashboard: &Dashboard) -> Option<Value> {
    let demo = dashboard.inner.demo.as_ref()?;
    Some(match demo.services().await {
        Ok(services) => json!({"services": services}),
        Err(e) => json!({"services": [], "error": cluster::describe(&e)}),
    })
}
