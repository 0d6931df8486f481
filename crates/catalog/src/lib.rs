//! The catalog service: a view of the order log. It follows the leader's released log (every
//! trade and restock, with what the leader's ledger decided), answers lookups from it (waiting
//! for a position a lookup asks for), writes it lazily to its own SQLite file, and asks the
//! leader to restock sold-out stocks. It never holds state the log does not: after a crash, or
//! with its file gone, it rebuilds from its file plus the log, or from the log alone. Several
//! catalogs can run; none is a single point of failure.
//!
//! # Layout
//! - [`config`] — flags.
//! - [`view`] — the view, shared by the follower, the routes and the saver.
//! - [`follow`] — following the leader's log.
//! - [`file`] — the lazily written SQLite file.
//! - [`http`] — routes; [`error`]: errors and the one place they become responses.
//!
//! [`Catalog::open`] checks the configuration and opens the file; [`Catalog::serve`] runs the
//! service on a bound listener until shutdown.

pub mod config;
pub mod error;
pub mod file;
pub mod follow;
pub mod http;
pub mod view;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bazaar_api::client::{Http, ReplicaClient};
use bazaar_api::replica::RestockRequest;
use bazaar_ledger::View;
use bazaar_service::{DbLock, Metrics, Network};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use config::Config;
pub use error::{Error, Result};

use crate::file::CatalogFile;
use crate::follow::Leader;
use crate::view::{Current, Shared};

/// How long background tasks may take to stop after shutdown starts.
const TASK_STOP_DEADLINE: Duration = Duration::from_secs(5);

/// How often the view is written to the file when it changed.
pub const SAVE_INTERVAL: Duration = Duration::from_millis(200);

/// Timeout of the health checks that find the leader, and of a restock request.
const REPLICA_TIMEOUT: Duration = Duration::from_millis(500);

/// An opened catalog, ready to serve.
pub struct Catalog {
    config: Config,
    /// The resolved key, TLS and listener limits.
    network: Network,
    file: CatalogFile,
    shared: Shared,
    /// One process per file: a second catalog on the same file is refused at start.
    _lock: DbLock,
    /// `service=catalog`: every log line of this service.
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
    /// Validates `config` and opens (creating) the file; the view starts from what it holds.
    ///
    /// # Errors
    /// [`Error::Config`] or [`Error::Storage`], each naming the flag or file.
    pub fn open(config: Config) -> Result<Self> {
        config.validate().map_err(Error::Config)?;
        let network = config.network.resolve().map_err(Error::Config)?;
        let root = tracing::info_span!("service", service = "catalog");
        let _entered = root.enter();
        let lock = DbLock::acquire(&config.db).map_err(Error::Config)?;
        let existed = config.db.exists();
        let (file, saved) = CatalogFile::open(&config.db)?;
        let current = match saved {
            Some(saved) => {
                tracing::info!(position = %saved.snapshot.position, "catalog view read from its file; following the log from there");
                Current {
                    view: View::from_snapshot(saved.snapshot),
                    epoch: saved.epoch,
                    following: false,
                }
            }
            None => {
                if existed {
                    tracing::info!(file = %config.db.display(), "the catalog file holds no view yet; rebuilding from the order log");
                } else {
                    tracing::warn!(file = %config.db.display(), "no catalog file; rebuilding the view from the order log");
                }
                Current::default()
            }
        };
        Ok(Self {
            config,
            file,
            shared: Shared::new(current),
            network,
            _lock: lock,
            root: root.clone(),
        })
    }

    /// Serves on `listener` until `shutdown` is cancelled or the file cannot be written.
    ///
    /// # Errors
    /// [`Error::Storage`] when the file cannot be written; the process should exit non-zero.
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
            file,
            shared,
            _lock,
            root: _,
        } = self;
        let metrics = Metrics::with_root(root);
        let stop = shutdown.child_token();
        let tasks = TaskTracker::new();
        let http = Http::with_auth(REPLICA_TIMEOUT, network.client());
        let replicas: Vec<ReplicaClient> = config
            .replicas
            .0
            .iter()
            .map(|(id, url)| ReplicaClient::new(http.clone(), *id, url.clone()))
            .collect();
        let leader = Leader::default();
        tasks.spawn(
            follow::run(replicas, shared.clone(), leader.clone(), stop.clone()).in_current_span(),
        );
        let saved = Arc::new(AtomicU64::new(shared.now().view.position().0));
        let (failed_tx, mut failed) = tokio::sync::oneshot::channel();
        tasks.spawn(
            save_loop(
                file,
                shared.clone(),
                Arc::clone(&saved),
                stop.clone(),
                failed_tx,
            )
            .in_current_span(),
        );
        if let Some(interval) = config.restock_interval {
            tasks.spawn(
                restock_loop(
                    shared.clone(),
                    leader,
                    interval,
                    config.restock_to,
                    stop.clone(),
                )
                .in_current_span(),
            );
        }
        let router = bazaar_service::finish_router(
            http::router(http::AppState { shared, saved }),
            metrics,
            network.backend_access(),
        );
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, db = %config.db.display(), "catalog listening");
        }
        let serving =
            bazaar_service::serve(listener, router, network.listening.clone(), stop.clone());
        let outcome = tokio::select! {
            served = serving => served.map_err(|e| Error::Storage(format!("listener failed: {e}"))),
            Ok(e) = &mut failed => {
                stop.cancel();
                Err(e)
            }
        };
        stop.cancel();
        bazaar_service::stop_tasks(&tasks, TASK_STOP_DEADLINE).await;
        outcome
    }
}

/// Writes the view to the file whenever it changed, at most every [`SAVE_INTERVAL`], and once
/// more on the way out. A file deleted while running is noticed and written again whole.
async fn save_loop(
    file: CatalogFile,
    shared: Shared,
    saved: Arc<AtomicU64>,
    stop: CancellationToken,
    failed: tokio::sync::oneshot::Sender<Error>,
) {
    let file = Arc::new(std::sync::Mutex::new(file));
    let mut last = None;
    loop {
        let stopping = tokio::select! {
            () = stop.cancelled() => true,
            () = tokio::time::sleep(SAVE_INTERVAL) => false,
        };
        let current = shared.now();
        let key = (current.view.position(), current.epoch);
        let file_gone = file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_gone();
        if Some(key) != last || file_gone {
            let file = Arc::clone(&file);
            let snapshot = current.view.snapshot();
            let epoch = current.epoch;
            let written = tokio::task::spawn_blocking(move || {
                let mut file = file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if file.is_gone() {
                    tracing::warn!(file = %file.path().display(), "the catalog file was deleted while running; writing it again from the view");
                    file.reopen()?;
                }
                file.save(&snapshot, epoch)
            })
            .await;
            match written {
                Ok(Ok(())) => {
                    last = Some(key);
                    saved.store(key.0.0, Ordering::Relaxed);
                }
                Ok(Err(e)) => {
                    let _ = failed.send(e);
                    return;
                }
                Err(e) => {
                    let _ = failed.send(Error::Storage(format!("the saver failed: {e}")));
                    return;
                }
            }
        }
        if stopping {
            return;
        }
    }
}

/// Asks the leader to restock whenever the view shows a sold-out stock. Several catalogs may
/// ask at once: the leader's ledger restocks only what is sold out when the request is
/// applied, so a second request changes nothing.
async fn restock_loop(
    shared: Shared,
    leader: Leader,
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
        let sold_out = shared.now().view.stocks().any(|s| s.quantity == 0);
        if !sold_out {
            continue;
        }
        let Some(leader) = leader.get() else {
            continue;
        };
        match leader.restock(&RestockRequest { to }).await {
            Ok(position) => tracing::info!(%position, to, "asked the leader to restock"),
            Err(e) => tracing::debug!(error = %e, "restock request failed; trying again next time"),
        }
    }
}
