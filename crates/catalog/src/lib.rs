//! The catalog service (SPEC.md section 3): the stocks, persisted in SQLite; the catalog half
//! of the try-confirm-cancel trade saga; the invalidation feed to front-ends; restocking.
//!
//! # Layout
//! - [`config`] — flags.
//! - [`seed`] — the catalog CSV that seeds a new database.
//! - [`trade`] — the trade rules on one stock, without I/O.
//! - [`store`] — SQLite, one writer thread with group commit, in-memory reads.
//! - [`feed`] — server push of invalidations, with leases.
//! - [`http`] — routes; [`error`]: errors and their HTTP statuses.
//!
//! [`Catalog::open`] checks the configuration and opens the database; [`Catalog::serve`] runs
//! the service on a bound listener until shutdown.

pub mod config;
pub mod error;
pub mod feed;
pub mod http;
pub mod seed;
pub mod store;
pub mod trade;

use std::time::Duration;

use bazaar_service::{DbLock, Fatal, Metrics, Network};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use config::Config;
pub use error::{Error, Result};

use crate::feed::{Feed, FeedMetrics};
use crate::store::Store;

/// How long background tasks may take to stop after shutdown starts.
const TASK_STOP_DEADLINE: Duration = Duration::from_secs(5);

/// An opened catalog, ready to serve.
pub struct Catalog {
    config: Config,
    /// The resolved key, TLS and listener limits.
    network: Network,
    store: Store,
    writer: std::thread::JoinHandle<()>,
    fatal: Fatal,
    _lock: DbLock,
    /// `service=catalog`: every log line of this service, its writer thread's included.
    root: tracing::Span,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Catalog {
    /// Validates `config`, takes the database lock and opens (seeding if new) the database.
    ///
    /// # Errors
    /// [`Error::Config`] or [`Error::Storage`], each naming the flag or file.
    pub fn open(config: Config) -> Result<Self> {
        config.validate().map_err(Error::Config)?;
        let network = config.network.resolve().map_err(Error::Config)?;
        let root = tracing::info_span!("service", service = "catalog");
        let _entered = root.enter();
        let lock = DbLock::acquire(&config.db).map_err(Error::Config)?;
        let fatal = Fatal::new();
        let stocks = config.stocks.clone();
        let (store, writer) =
            Store::open(&config.db, || seed::load(stocks.as_deref()), fatal.clone())?;
        Ok(Self {
            config,
            network,
            store,
            writer,
            fatal,
            _lock: lock,
            root: root.clone(),
        })
    }

    /// The store (for in-process tests).
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves on `listener` until `shutdown` is cancelled or storage fails.
    ///
    /// # Errors
    /// [`Error::Storage`] when a durable write failed; the process should exit non-zero.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> Result<()> {
        let root = self.root.clone();
        self.run(listener, shutdown, root.clone())
            .instrument(root)
            .await
    }

    async fn run(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
        root: tracing::Span,
    ) -> Result<()> {
        let Self {
            config,
            network,
            store,
            writer,
            fatal,
            _lock,
            root: _,
        } = self;
        let metrics = Metrics::with_root(root);
        let feed_metrics = FeedMetrics::default();
        feed_metrics.register(&metrics);
        let trade_steps = Family::<http::StepLabels, Counter>::default();
        metrics.register(
            "catalog_trade_steps",
            "Saga steps handled by the catalog, by step and outcome",
            trade_steps.clone(),
        );
        let feed = Feed::new(config.feed_ack_timeout, feed_metrics);
        // Stops on shutdown and on a fatal storage error alike.
        let stop = shutdown.child_token();
        let tasks = TaskTracker::new();
        tasks.spawn(bazaar_service::fatal::stop_on(fatal.clone(), stop.clone()));
        if let Some(interval) = config.restock_interval {
            tasks.spawn(
                restock_loop(
                    store.clone(),
                    feed.clone(),
                    interval,
                    config.restock_to,
                    stop.clone(),
                )
                .in_current_span(),
            );
        }
        let state = http::AppState {
            store,
            feed,
            shutdown: stop.clone(),
            trade_steps,
        };
        let router =
            bazaar_service::finish_router(http::router(state), metrics, network.backend_access());
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, db = %config.db.display(), "catalog listening");
        }
        let served =
            bazaar_service::serve(listener, router, network.listening.clone(), stop.clone()).await;
        stop.cancel();
        bazaar_service::stop_tasks(&tasks, TASK_STOP_DEADLINE).await;
        // Every store handle is gone with the router and the tasks: the writer drains and ends.
        bazaar_service::writer::join(writer, TASK_STOP_DEADLINE).await;
        if fatal.is_raised() {
            return Err(Error::Storage(fatal.raised().await));
        }
        served.map_err(|e| Error::Storage(format!("listener failed: {e}")))
    }
}

async fn restock_loop(
    store: Store,
    feed: Feed,
    interval: Duration,
    to: u64,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match store.restock(to).await {
            Ok(changed) => {
                for (name, version) in changed {
                    feed.invalidate(&name, version).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "restock failed");
                return;
            }
        }
    }
}
