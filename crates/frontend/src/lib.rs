//! The front-end: the public REST API, the lookup cache kept fresh by the order leader's
//! invalidation feed, lookups that fail over between catalogs, and leader selection with
//! failover for the order replicas.
//!
//! # Layout
//! - [`config`] — flags.
//! - [`cache`] — what the front-end knows of the log (floor, invalidations, lease) and the LRU
//!   cache that rests on it.
//! - [`feed`] — the subscription to the leader's invalidation feed.
//! - [`catalogs`] — lookups from any catalog at a minimum log position.
//! - [`leader`] — leader selection and failover.
//! - [`http`] — routes; [`error`]: errors and the one place they become responses.
//! - [`dashboard`] — the operator's live page at `/`.

pub mod cache;
pub mod catalogs;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod feed;
pub mod http;
pub mod leader;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use bazaar_api::client::Http;
use bazaar_service::{Access, Metrics};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use config::Config;
pub use error::{Error, Result};

use crate::cache::{Cache, CacheMetrics};
use crate::catalogs::Catalogs;
use crate::leader::{LeaderMetrics, LeaderSelector};

/// Timeout of one catalog lookup: a catalog waits up to a second for its view to reach the
/// position asked for, then answers; a silent one is skipped after this.
pub const CATALOG_TIMEOUT: Duration = Duration::from_millis(1300);

/// Timeout of calls to the order replicas (each request's attempt timeout is shorter).
const REPLICA_TIMEOUT: Duration = Duration::from_secs(5);

/// How long background tasks may take to stop after shutdown starts.
const TASK_STOP_DEADLINE: Duration = Duration::from_secs(5);

/// Serves the front-end on `listener` until `shutdown` is cancelled.
///
/// # Errors
/// [`Error::Config`] for a bad configuration; the listener failing.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<()> {
    let root = tracing::info_span!("service", service = "frontend");
    run(config, listener, shutdown, root.clone())
        .instrument(root)
        .await
}

async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    root: tracing::Span,
) -> Result<()> {
    config.validate().map_err(Error::Config)?;
    let network = config.network.resolve().map_err(Error::Config)?;
    let metrics = Metrics::with_root(root);
    let http = Http::with_auth(REPLICA_TIMEOUT, network.client());
    let catalogs = Catalogs::new(&http.with_timeout(CATALOG_TIMEOUT), &config.catalogs.0);
    let tasks = TaskTracker::new();
    let stop = shutdown.child_token();
    let leader_metrics = LeaderMetrics::default();
    leader_metrics.register(&metrics);
    let leader = LeaderSelector::start(
        &config.replicas.0,
        &http,
        config.failover_deadline,
        leader_metrics,
        &tasks,
        &stop,
    );
    let local = listener
        .local_addr()
        .map_err(|e| Error::Config(format!("listener has no address: {e}")))?;
    let capacity = NonZeroUsize::new(config.cache_size).filter(|_| !config.no_cache);
    let cache_metrics = CacheMetrics::default();
    cache_metrics.register(&metrics);
    let cache = Arc::new(Cache::new(capacity, cache_metrics));
    // The feed runs with the cache off too: it is what bounds every lookup's position.
    tasks.spawn(
        feed::run(
            leader.clone(),
            network.client().clone(),
            format!("frontend-{local}"),
            Arc::clone(&cache),
            stop.clone(),
        )
        .in_current_span(),
    );
    let public = http::router(http::AppState {
        cache,
        catalogs,
        leader,
    });
    let sources = dashboard::Sources {
        http: http.clone(),
        replicas: config
            .replicas
            .0
            .iter()
            .map(|(id, url)| (id.0, url.clone()))
            .collect(),
        catalogs: config.catalogs.0.clone(),
    };
    let app = dashboard::mount(
        public,
        &config.dashboard,
        local,
        sources,
        &metrics,
        &tasks,
        &stop,
    )?;
    let router = bazaar_service::finish_router(app, metrics, Access::Public);
    tracing::info!(addr = %local, caching = !config.no_cache, cache_size = config.cache_size, "front-end listening");
    let served =
        bazaar_service::serve(listener, router, network.listening.clone(), stop.clone()).await;
    stop.cancel();
    bazaar_service::stop_tasks(&tasks, TASK_STOP_DEADLINE).await;
    served.map_err(|e| Error::Config(format!("listener failed: {e}")))
}
