//! The operator's dashboard (issue 13): a live page at `/` showing the market, the cluster, the
//! cache and the traffic, with a trade form and an order lookup that use the public API.
//!
//! ```text
//!  browser ──GET /──────────────► assets (built into the binary)
//!          ──POST /orders, GET /orders/N ─► the public API, as any client
//!          ◄─GET /dashboard/events── server-sent events ◄── watch ◄── sampler task
//!                                                                       │ every 250 ms while a
//!                                                                       │ page is open:
//!                      public API in-process (/stocks, /cache, /leader, /health)
//!                      each back-end's GET /health, a catalog's GET /stocks
//!                      the traffic recorder (a layer on this router)
//! ```
//!
//! Data comes only from narrow, stable places: the public API (called in-process, without a
//! socket), each back-end service's `GET /health` (read loosely, see [`cluster`]) and a
//! catalog's `GET /stocks` (for the traded volume the public API does not show), fetched with
//! the front-end's own HTTP client; and the front-end's request timings, recorded by the
//! [`traffic`] layer. The browser never talks to a back-end and never needs a credential.
//!
//! The sampler runs only while at least one page is connected, publishes each section (market,
//! cluster, cache, traffic, demo) only when its JSON changed, and pages receive the newest
//! version of each section: a slow page skips versions instead of queueing them, so memory
//! stays bounded whatever a client does. At most [`PAGES_MAX`] pages may be connected.
//!
//! Access: see [`config`]. When the dashboard is off its routes do not exist (404).
//!
//! # Layout
//! - [`config`] — flags and the access policy.
//! - [`assets`] — the page, its script and its style sheet.
//! - [`traffic`] — the request-timing layer and its rings.
//! - [`cluster`] — the cluster table from health replies (shared with `bazaar status`).
//! - [`sampler`] — the sampler task and the snapshot it publishes.
//! - [`events`] — the server-sent event stream and the page count.
//! - [`demo`] — the demonstration controls, proxied to `bazaar up --demo`.
//! - [`timeline`] — per-second deltas of growing counters (the cache timeline).

pub mod assets;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod events;
pub mod sampler;
pub mod timeline;
pub mod traffic;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::routing::{get, post};
use bazaar_api::client::Http;
use bazaar_service::Metrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{DashboardConfig, DashboardMode};

use crate::error::{Error, Result};
use demo::DemoClient;
use sampler::{Memory, Snapshot};
use traffic::Traffic;

/// Most dashboard pages connected at once; one more gets 503.
pub const PAGES_MAX: usize = 32;

/// The dashboard's routes, as the OpenAPI document names them (served only when it is on; the
/// demo route only with demonstration controls).
pub const ROUTES: [&str; 5] = [
    "/",
    "/dashboard/app.js",
    "/dashboard/app.css",
    "/dashboard/events",
    "/dashboard/demo/{service}/{action}",
];

/// Where the dashboard's data comes from, besides the public API.
#[derive(Debug, Clone)]
pub struct Sources {
    /// The front-end's HTTP client (it carries whatever the front-end's back-end calls carry).
    pub http: Http,
    /// Order replicas: id and base URL.
    pub replicas: Vec<(u8, String)>,
    /// Catalog base URLs.
    pub catalogs: Vec<String>,
}

/// Dashboard counters exported at `/metrics`.
#[derive(Debug, Clone, Default)]
struct DashboardMetrics {
    pages: Gauge,
    sampling: Gauge,
    samples: Counter,
}

impl DashboardMetrics {
    fn register(&self, metrics: &Metrics) {
        metrics.register(
            "dashboard_pages",
            "Dashboard pages connected to the event stream",
            self.pages.clone(),
        );
        metrics.register(
            "dashboard_sampling",
            "1 while the dashboard's sampler runs (only while a page is connected)",
            self.sampling.clone(),
        );
        metrics.register(
            "dashboard_samples",
            "Samples the dashboard's sampler took",
            self.samples.clone(),
        );
    }
}

/// Pages connected and whether the sampler runs; one lock so the sampler can never stop while
/// a page that has just arrived waits for it.
#[derive(Debug, Default)]
struct Pages {
    open: usize,
    sampling: bool,
}

/// The dashboard's state; cheap to clone.
#[derive(Clone)]
pub struct Dashboard {
    inner: Arc<Inner>,
}

struct Inner {
    sources: Sources,
    /// The public API, called in-process (without the traffic layer, so the sampler's own
    /// calls are not counted as traffic).
    public: Router,
    traffic: Arc<Traffic>,
    demo: Option<DemoClient>,
    /// This front-end's base URL, as shown in the cluster table.
    frontend_url: String,
    /// The page, as served.
    index_html: Arc<str>,
    pages: Mutex<Pages>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    /// What the sampler remembers between samples and across its restarts.
    memory: Mutex<Memory>,
    /// Wakes the sampler at once (after a demonstration action or a leader nudge).
    wake: Notify,
    metrics: DashboardMetrics,
    tasks: TaskTracker,
    stop: CancellationToken,
    /// The front-end's root span, for the sampler's logs.
    span: tracing::Span,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("frontend_url", &self.inner.frontend_url)
            .finish_non_exhaustive()
    }
}

/// Adds the dashboard to the front-end's public router when `config` serves it on `local`;
/// otherwise returns `public` unchanged, so the dashboard's routes do not exist. The sampler
/// runs in `tasks` and stops with `stop`.
///
/// # Errors
/// [`Error::Config`] when the demonstration control file cannot be read.
pub fn mount(
    public: Router,
    config: &DashboardConfig,
    local: SocketAddr,
    sources: Sources,
    metrics: &Metrics,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> Result<Router> {
    if !config.mode.serves_on(local) {
        return Ok(public);
    }
    let demo = config
        .demo_control_file
        .as_deref()
        .map(|path| DemoClient::from_file(path, &sources.http))
        .transpose()
        .map_err(Error::Config)?;
    let dashboard_metrics = DashboardMetrics::default();
    dashboard_metrics.register(metrics);
    let traffic = Arc::new(Traffic::new());
    let index_html = assets::index_html(demo.is_some());
    let dashboard = Dashboard {
        inner: Arc::new(Inner {
            sources,
            public: public.clone(),
            traffic: Arc::clone(&traffic),
            demo,
            frontend_url: format!("http://{local}"),
            index_html,
            pages: Mutex::new(Pages::default()),
            snapshot: watch::Sender::new(Arc::new(Snapshot::default())),
            memory: Mutex::new(Memory::default()),
            wake: Notify::new(),
            metrics: dashboard_metrics,
            tasks: tasks.clone(),
            stop: stop.clone(),
            span: tracing::Span::current(),
        }),
    };
    tracing::info!(
        demo = dashboard.inner.demo.is_some(),
        "dashboard at http://{local}/"
    );
    let mut routes = Router::new()
        .route("/", get(assets::index_get))
        .route("/dashboard/app.js", get(assets::script_get))
        .route("/dashboard/app.css", get(assets::style_get))
        .route("/dashboard/events", get(events::events_get));
    if dashboard.inner.demo.is_some() {
        routes = routes.route("/dashboard/demo/{service}/{action}", post(demo::demo_post));
    }
    Ok(public
        .merge(routes.with_state(dashboard))
        .layer(traffic::TrafficLayer::new(traffic)))
}

impl Dashboard {
    fn pages(&self) -> std::sync::MutexGuard<'_, Pages> {
        self.inner
            .pages
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    use super::*;

    async fn status_of(router: &Router, uri: &str) -> u16 {
        let request = Request::get(uri).body(Body::empty()).expect("request");
        router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible")
            .status()
            .as_u16()
    }

    /// `mount` as the front-end calls it, on a public router with one route.
    async fn mounted(mode: DashboardMode, local: &str) -> Router {
        let public = Router::new().route("/health", get(|| async { "ok" }));
        let config = DashboardConfig {
            mode,
            demo_control_file: None,
        };
        let sources = Sources {
            http: Http::new(Duration::from_secs(1)),
            replicas: vec![(1, "http://127.0.0.1:9".into())],
            catalogs: vec!["http://127.0.0.1:9".into()],
        };
        mount(
            public,
            &config,
            local.parse().expect("address"),
            sources,
            &Metrics::new(),
            &TaskTracker::new(),
            &CancellationToken::new(),
        )
        .expect("mounted")
    }

    #[tokio::test]
    async fn the_routes_exist_only_where_the_policy_serves_the_dashboard() {
        for (mode, local, served) in [
            (DashboardMode::Auto, "127.0.0.1:8080", true),
            (DashboardMode::Auto, "0.0.0.0:8080", false),
            (DashboardMode::Auto, "10.0.0.5:8080", false),
            (DashboardMode::On, "10.0.0.5:8080", true),
            (DashboardMode::Off, "127.0.0.1:8080", false),
        ] {
            let router = mounted(mode, local).await;
            let expected = if served { 200 } else { 404 };
            for uri in ["/", "/dashboard/app.js", "/dashboard/app.css"] {
                assert_eq!(
                    status_of(&router, uri).await,
                    expected,
                    "{mode:?} {local} {uri}"
                );
            }
            assert_eq!(status_of(&router, "/health").await, 200, "the API stays");
            assert_eq!(
                status_of(&router, "/dashboard/demo/order-1/kill").await,
                404,
                "no demo route without the control file"
            );
        }
    }
}
