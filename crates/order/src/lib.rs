//! The order service: one replica of the order log, the one durable record of every change to a
//! stock's quantity. The leader decides every trade on its ledger (the log applied in order),
//! replicates it, releases it once every front-end has been told, and streams what it released
//! to the catalogs; followers store what the leader sends; a restarted replica catches up
//! before it serves.
//!
//! # Layout (each layer uses only those below it)
//! - [`http`] — routes (`public` for front-ends, `internal` between services, `raft`).
//! - [`replica`] — the mode-independent view the routes use: status, writes held until
//!   released, order queries.
//! - [`release`] — when a committed change may be shown: invalidations to every front-end, the
//!   log stream to the catalogs, the handover wait of a new leader.
//! - [`primary_backup`] — the lab's replication, as a pure core and its runtime and storage.
//! - [`raft`] — Raft replication (`--replication raft`) on openraft and the same SQLite file.
//! - [`orders`], [`file`] — the order and stock rows, and the database file as a whole.
//! - [`config`], [`error`] — flags; errors and the one place they become responses.

pub mod config;
pub mod error;
pub mod file;
pub mod http;
pub mod orders;
pub mod primary_backup;
pub mod raft;
pub mod release;
pub mod replica;

use std::sync::Arc;
use std::time::Duration;

use bazaar_api::client::Http;
use bazaar_api::log::AppliedEntry;
use bazaar_api::replica::ReplicationMode;
use bazaar_service::{DbLock, Fatal, Metrics, Network};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub use config::Config;
pub use error::{Error, Result};

use crate::primary_backup::PrimaryBackup;
use crate::primary_backup::storage::{Opened, Storage};
use crate::raft::RaftReplica;
use crate::raft::store::Db;
use crate::release::feed::{Feed, FeedMetrics};
use crate::release::{Release, Vouch};
use crate::replica::{Replica, Writer};

/// Default timeout of calls to other replicas (most calls set their own).
const PEER_TIMEOUT: Duration = Duration::from_secs(1);

/// How long background tasks may take to stop after shutdown starts.
const TASK_STOP_DEADLINE: Duration = Duration::from_secs(5);

/// Newest primary-backup entries kept in memory for appends and catch-up.
const WINDOW_LEN: usize = 4096;

/// How stale a primary-backup leader's confirmation by its followers may be before it stops
/// renewing front-ends' leases: a few heartbeats.
const PRIMARY_BACKUP_HEARTBEAT: Duration = Duration::from_millis(50);

/// An opened order replica, ready to serve.
pub struct OrderService {
    config: Config,
    /// The catalog a new log's first leader writes into it (`--stocks`).
    genesis: Vec<bazaar_api::log::StockDef>,
    storage: Opening,
    /// The resolved key, TLS and listener limits.
    network: Network,
    writer: std::thread::JoinHandle<()>,
    fatal: Fatal,
    _lock: DbLock,
    /// `service=order, replica_id`: every log line of this replica, its writer thread's
    /// included.
    root: tracing::Span,
}

/// The opened database, in the shape its replication mode needs.
enum Opening {
    PrimaryBackup(Storage, Opened),
    Raft(Db, mpsc::UnboundedReceiver<AppliedEntry>),
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
        let genesis = bazaar_ledger::seed::load(config.stocks.as_deref()).map_err(Error::Config)?;
        let path = config.db_path();
        let root = tracing::info_span!("service", service = "order", replica_id = config.id.0);
        let _entered = root.enter();
        let lock = DbLock::acquire(&path).map_err(Error::Config)?;
        let fatal = Fatal::new();
        let (storage, writer) = match ReplicationMode::from(config.replication) {
            ReplicationMode::PrimaryBackup => {
                let (storage, opened, writer) = Storage::open(&path, WINDOW_LEN, fatal.clone())?;
                (Opening::PrimaryBackup(storage, opened), writer)
            }
            ReplicationMode::Raft => {
                let (db, applied, writer) = RaftReplica::open(&path, &fatal)?;
                (Opening::Raft(db, applied), writer)
            }
        };
        Ok(Self {
            config,
            genesis,
            network,
            storage,
            writer,
            fatal,
            _lock: lock,
            root: root.clone(),
        })
    }

    /// Serves on `listener` until `shutdown` is cancelled or storage fails. Recovery (copying
    /// missed entries from peers) runs while the listener already answers `/health`, so peers
    /// and the front-end can see the replica recovering.
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
            genesis,
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
        let feed_metrics = FeedMetrics::default();
        feed_metrics.register(&metrics);
        let feed = Feed::new(config.feed_lease, config.feed_ack_timeout, feed_metrics);
        // The release gate needs to ask the replica whether it can vouch for leading, and the
        // replica needs the gate: the gate takes a late-bound handle.
        let vouch = Arc::new(LateVouch::default());
        let grace = match config.replication {
            config::ModeArg::PrimaryBackup => PRIMARY_BACKUP_HEARTBEAT * 5,
            config::ModeArg::Raft => raft::RaftSettings::from(&config).grace(),
        };
        let release = Release::new(feed, vouch.clone(), grace, tasks.clone());
        let replica = match storage {
            Opening::PrimaryBackup(storage, opened) => {
                let settings = primary_backup::core::Settings {
                    id: config.id,
                    peers: config.others().into_keys().collect(),
                    min_copies: config.min_copies(),
                    append_timeout: config.replication_timeout,
                    heartbeat: PRIMARY_BACKUP_HEARTBEAT,
                    sync_timeout: config.replication_timeout.max(Duration::from_millis(500)),
                    commit_timeout: Duration::from_secs(2),
                    genesis,
                    window_len_max: WINDOW_LEN,
                };
                let parts = primary_backup::Parts {
                    settings,
                    storage,
                    opened,
                    urls: config.urls(),
                    http: http.clone(),
                    release: release.clone(),
                };
                let pb = PrimaryBackup::start(parts, &tasks, &stop, &fatal);
                vouch.set(Arc::new(pb.clone()));
                Replica::PrimaryBackup(pb)
            }
            Opening::Raft(db, applied) => {
                let raft = RaftReplica::start(
                    &config,
                    genesis,
                    &http,
                    db,
                    applied,
                    release.clone(),
                    &tasks,
                    &stop,
                    &fatal,
                    &metrics,
                )
                .await?;
                vouch.set(Arc::new(raft.clone()));
                Replica::Raft(raft)
            }
        };
        let release_deadline = release_deadline(config.feed_lease, config.feed_ack_timeout, grace);
        let router = bazaar_service::finish_router(
            http::router(http::AppState {
                writer: Writer {
                    replica: replica.clone(),
                    release: release.clone(),
                    release_deadline,
                },
                shutdown: stop.clone(),
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
        release.resign();
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
        drop(vouch);
        drop(release);
        // Every store handle is gone with the router and the tasks: the writer drains and ends.
        bazaar_service::writer::join(writer, TASK_STOP_DEADLINE).await;
        if fatal.is_raised() {
            return Err(Error::Storage(fatal.raised().await));
        }
        served.map_err(|e| Error::Storage(format!("listener failed: {e}")))
    }
}

/// How long a decided write waits for its release at most: the acknowledgement timeout, a
/// dropped front-end's lease, a new leader's handover, and a second of slack.
fn release_deadline(feed_lease: Duration, feed_ack_timeout: Duration, grace: Duration) -> Duration {
    feed_ack_timeout + feed_lease * 2 + grace + Duration::from_secs(1)
}

/// How the release gate of an in-process replica times its front-ends' leases (`--feed-lease`,
/// `--feed-ack-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedTiming {
    /// Lease granted to front-ends.
    pub lease: Duration,
    /// How long a front-end may take to acknowledge an invalidation.
    pub ack_timeout: Duration,
}

/// Starts a raft replica inside this process, without HTTP, behind the same release gate and
/// with the same deadlines as a served one, and returns what the routes would trade through.
/// The simulator (`crates/sim`) runs three this way; `tasks` and `stop` hold and stop the
/// replica's background tasks, `fatal` is raised when its storage fails.
///
/// # Errors
/// [`Error::Config`] for timing openraft refuses; [`Error::Storage`] when the node cannot read
/// its state.
pub async fn start_raft_in_process<N, LS, SM>(
    node: raft::InProcess<N, LS, SM>,
    feed: FeedTiming,
    tasks: &TaskTracker,
    stop: &CancellationToken,
    fatal: &Fatal,
) -> Result<Writer>
where
    N: openraft::network::RaftNetworkFactory<raft::types::TypeConfig>,
    LS: openraft::storage::RaftLogStorage<raft::types::TypeConfig>,
    SM: openraft::storage::RaftStateMachine<raft::types::TypeConfig>,
{
    let grace = node.settings.grace();
    let feed_gate = Feed::new(feed.lease, feed.ack_timeout, FeedMetrics::default());
    let vouch = Arc::new(LateVouch::default());
    let release = Release::new(feed_gate, vouch.clone(), grace, tasks.clone());
    let replica = RaftReplica::start_in_process(node, release.clone(), tasks, stop, fatal).await?;
    vouch.set(Arc::new(replica.clone()));
    Ok(Writer {
        replica: Replica::Raft(replica),
        release,
        release_deadline: release_deadline(feed.lease, feed.ack_timeout, grace),
    })
}

/// The replica's [`Vouch`], set once the replica exists (the gate is built first).
#[derive(Default)]
struct LateVouch(std::sync::OnceLock<Arc<dyn Vouch>>);

impl LateVouch {
    fn set(&self, vouch: Arc<dyn Vouch>) {
        // Set exactly once, right after the replica starts.
        let _ = self.0.set(vouch);
    }
}

impl Vouch for LateVouch {
    fn vouches(&self, grace: Duration) -> bool {
        self.0.get().is_some_and(|v| v.vouches(grace))
    }
}
