//! The order service (SPEC.md sections 5 and 6): one replica of the order log. The leader runs
//! the trade saga with the catalog, numbers orders and replicates them; followers store what
//! the leader sends; a restarted replica catches up before it serves.
//!
//! # Layout
//! - [`config`] — flags.
//! - [`log_store`] — the order log in SQLite, with the conflicts table.
//! - [`replication`] — primary-backup replication (`core` decisions, `runtime` leader tasks,
//!   `catch_up` log sync).
//! - [`raft`] — Raft replication (`--replication raft`): openraft over the same SQLite file.
//! - [`replica`] — the mode-independent view of a replica the routes and the saga use.
//! - [`saga`] — try-confirm-cancel with the catalog, single flight per request id,
//!   reconciliation.
//! - [`http`] — routes (`public` for front-ends, `internal` between replicas); [`error`]: errors
//!   and their HTTP statuses.

pub mod config;
pub mod error;
pub mod http;
pub mod log_store;
pub mod raft;
pub mod replica;
pub mod replication;
pub mod saga;

use std::time::Duration;

use bazaar_api::client::{CatalogClient, Http};
use bazaar_api::replica::ReplicationMode;
use bazaar_service::{DbLock, Fatal, Metrics, Network};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use config::Config;
pub use error::{Error, Result};

use crate::log_store::{LogStore, Term};
use crate::raft::RaftReplica;
use crate::raft::store::Db;
use crate::replica::Replica;
use crate::replication::{Membership, ReplicationMetrics, Replicator};
use crate::saga::Trader;

/// Timeout of each call to the catalog.
pub const CATALOG_TIMEOUT: Duration = Duration::from_secs(2);

/// Default timeout of calls to other replicas (most calls set their own).
const PEER_TIMEOUT: Duration = Duration::from_secs(1);

/// How long background tasks may take to stop after shutdown starts.
const TASK_STOP_DEADLINE: Duration = Duration::from_secs(5);

/// An opened order replica, ready to serve.
pub struct OrderService {
    config: Config,
    /// The resolved key, TLS and listener limits.
    network: Network,
    storage: Storage,
    writer: std::thread::JoinHandle<()>,
    fatal: Fatal,
    _lock: DbLock,
    /// `service=order, replica_id`: every log line of this replica, its writer thread's
    /// included.
    root: tracing::Span,
}

/// The opened database, in the shape its replication mode needs.
enum Storage {
    PrimaryBackup { log: LogStore, term: Term },
    Raft(Db),
}

impl std::fmt::Debug for OrderService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrderService")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OrderService {
    /// Validates `config`, locks and opens the replica's database.
    ///
    /// # Errors
    /// [`Error::Config`] or [`Error::Storage`] naming the flag or file.
    pub fn open(config: Config) -> Result<Self> {
        config.validate().map_err(Error::Config)?;
        let network = config.network.resolve().map_err(Error::Config)?;
        let path = config.db_path();
        let root = tracing::info_span!("service", service = "order", replica_id = config.id.0);
        let _entered = root.enter();
        let lock = DbLock::acquire(&path).map_err(Error::Config)?;
        let fatal = Fatal::new();
        let (storage, writer) = match ReplicationMode::from(config.replication) {
            mode @ ReplicationMode::PrimaryBackup => {
                let (log, term, writer) = LogStore::open(&path, mode, fatal.clone())?;
                (Storage::PrimaryBackup { log, term }, writer)
            }
            ReplicationMode::Raft => {
                let (db, writer) = Db::open(&path, fatal.clone())?;
                (Storage::Raft(db), writer)
            }
        };
        Ok(Self {
            config,
            network,
            storage,
            writer,
            fatal,
            _lock: lock,
            root: root.clone(),
        })
    }

    /// Serves on `listener` until `shutdown` is cancelled or storage fails. Recovery (pulling
    /// missed orders from peers) runs while the listener already answers `/health`, so peers and
    /// the front-end can see the replica recovering.
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
            storage,
            writer,
            fatal,
            _lock,
            root: _,
        } = self;
        let metrics = Metrics::with_root(root);
        let stop = shutdown.child_token();
        let tasks = TaskTracker::new();
        tasks.spawn(bazaar_service::fatal::stop_on(fatal.clone(), stop.clone()));
        let http = Http::with_auth(PEER_TIMEOUT, network.client());
        let replica = match storage {
            Storage::PrimaryBackup { log, term } => {
                let replication_metrics = ReplicationMetrics::default();
                replication_metrics.register(&metrics);
                let replicator = Replicator::new(
                    Membership {
                        id: config.id,
                        own_url: config.own_url(),
                        peers: config.others(),
                    },
                    &http,
                    log,
                    term,
                    tasks.clone(),
                    stop.clone(),
                    replication_metrics,
                );
                let recovering = replicator.clone();
                tasks.spawn(async move { recovering.recover().await }.in_current_span());
                Replica::PrimaryBackup(replicator)
            }
            Storage::Raft(db) => Replica::Raft(
                RaftReplica::start(&config, &http, db, &tasks, &stop, &fatal, &metrics).await?,
            ),
        };
        let catalog =
            CatalogClient::new(http.with_timeout(CATALOG_TIMEOUT), config.catalog.clone());
        let trader = Trader::new(replica.clone(), catalog, tasks.clone(), &metrics);
        tasks.spawn(
            trader
                .clone()
                .reconcile_loop(stop.clone())
                .in_current_span(),
        );
        let router = bazaar_service::finish_router(
            http::router(http::AppState {
                replica: replica.clone(),
                trader,
            }),
            metrics,
            network.backend_access(),
        );
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, db = %config.db_path().display(), mode = ReplicationMode::from(config.replication).as_str(), "order replica listening");
        }
        let served =
            bazaar_service::serve(listener, router, network.listening.clone(), stop.clone()).await;
        stop.cancel();
        bazaar_service::stop_tasks(&tasks, TASK_STOP_DEADLINE).await;
        // The Raft node holds the database through its storage; stop it before waiting for
        // the writer.
        if let Replica::Raft(raft) = &replica
            && tokio::time::timeout(TASK_STOP_DEADLINE, raft.shutdown())
                .await
                .is_err()
        {
            tracing::warn!("raft node did not stop in time");
        }
        drop(replica);
        // Every store handle is gone with the router and the tasks: the writer drains and ends.
        bazaar_service::writer::join(writer, TASK_STOP_DEADLINE).await;
        if fatal.is_raised() {
            return Err(Error::Storage(fatal.raised().await));
        }
        served.map_err(|e| Error::Storage(format!("listener failed: {e}")))
    }
}
