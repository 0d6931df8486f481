//! The front-end (SPEC.md sections 2, 4, 5 and 6): the public REST API, the lookup cache with
//! server-push invalidation, and leader selection with failover for the order replicas.
//!
//! # Layout
//! - [`config`] — flags.
//! - [`cache`] — LRU cache with versions, generations and the feed lease.
//! - [`feed`] — the invalidation feed subscription.
//! - [`leader`] — leader selection and failover.
//! - [`http`] — routes; [`error`]: errors and their HTTP statuses.

pub mod cache;
pub mod config;
pub mod error;
pub mod feed;
pub mod http;
pub mod leader;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use bazaar_api::client::{CatalogClient, Http};
use bazaar_service::{Access, Metrics};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use config::Config;
pub use error::{Error, Result};

use crate::cache::{Cache, CacheMetrics};
use crate::leader::{LeaderMetrics, LeaderSelector};

/// Timeout of a catalog lookup.
pub const CATALOG_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause between attempts to select a leader at start, while the replicas come up.
const STARTUP_SELECTION_PAUSE: Duration = Duration::from_millis(200);

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
    let http = Http::with_auth(CATALOG_TIMEOUT, network.client());
    let catalog = CatalogClient::new(http.clone(), config.catalog.clone());
    let leader_metrics = LeaderMetrics::default();
    leader_metrics.register(&metrics);
    let leader = LeaderSelector::new(
        &config.replicas.0,
        &http,
        config.failover_deadline,
        leader_metrics,
    );
    let tasks = TaskTracker::new();
    let stop = shutdown.child_token();
    let local = listener
        .local_addr()
        .map_err(|e| Error::Config(format!("listener has no address: {e}")))?;
    let cache = match NonZeroUsize::new(config.cache_size).filter(|_| !config.no_cache) {
        Some(capacity) => {
            let cache_metrics = CacheMetrics::default();
            cache_metrics.register(&metrics);
            let cache = Arc::new(Cache::new(capacity, cache_metrics));
            tasks.spawn(
                feed::run(
                    catalog.feed_url(),
                    network.client().clone(),
                    format!("frontend-{local}"),
                    config.feed_lease,
                    Arc::clone(&cache),
                    stop.clone(),
                )
                .in_current_span(),
            );
            Some(cache)
        }
        None => None,
    };
    tasks.spawn({
        let (leader, stop) = (leader.clone(), stop.clone());
        async move {
            while !stop.is_cancelled() {
                if leader.select(None).await.is_ok() {
                    return;
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(STARTUP_SELECTION_PAUSE) => {}
                }
            }
        }
        .in_current_span()
    });
    let router = bazaar_service::finish_router(
        http::router(http::AppState {
            cache,
            catalog,
            leader,
        }),
        metrics,
        Access::Public,
    );
    tracing::info!(addr = %local, caching = !config.no_cache, cache_size = config.cache_size, "front-end listening");
    let served =
        bazaar_service::serve(listener, router, network.listening.clone(), stop.clone()).await;
    stop.cancel();
    bazaar_service::stop_tasks(&tasks, TASK_STOP_DEADLINE).await;
    served.map_err(|e| Error::Config(format!("listener failed: {e}")))
}
