//! Raft replication of the order log (`--replication raft`): a majority of the replicas stores
//! each entry before it is committed, so any single replica may crash at any moment without
//! losing an acknowledged trade, and 2 of 3 keep trading.
//!
//! ```text
//!  front-end          leader (term t)                             followers
//!  ---------          ---------------                             ---------
//!  POST /trades ----> leader_epoch() = t: leader, its first entry of term t applied,
//!                           a majority heard from within the grace (else 503 at once)
//!                     queue the command; the proposer puts every command queued
//!                     meanwhile into one entry
//!                       |-- append to own log (fsync) ----------.
//!                       |-- POST /internal/raft/append ----------+--> append (fsync), reply
//!                       |   committed once a majority holds it <-'
//!                       '-- apply: the ledger decides (a number, a refusal, the first
//!                           number of a request id applied before), identically everywhere
//!                     release (crate::release): invalidations pushed, then released
//!  <---- number ------
//! ```
//!
//! Rules:
//! - Transaction numbers and refusals are decided when entries are applied, so they follow the
//!   log order and are the same on every replica; a request id proposed twice keeps its first
//!   number, and a refused buy takes none.
//! - A write is *refused* (nothing proposed) only when this replica is not a leader that can
//!   vouch for a majority; once proposed, any failure is *uncertain*: the entry may still
//!   commit, and a retry with the same request id finds it.
//! - The leader's lease authority is its last quorum acknowledgement, aged by the wall clock
//!   since openraft reported it (openraft computes the age when it reports, so a replica that
//!   was paused would otherwise read a stale, young age).
//!
//! # Layout
//! - [`types`] — the Raft type configuration and the log's commands.
//! - [`store`] — the SQLite file: log, vote, state machine, durability per write.
//! - [`log_store`], [`state_machine`] — openraft's storage traits over it.
//! - [`network`] — Raft messages over HTTP (their routes are in `crate::http::raft`).
//! - `proposer` — batches concurrent commands into entries; `lifecycle` — cluster formation,
//!   the fatal-stop watcher, gauges, leadership changes for the release gate.
//!
//! [`RaftReplica::start`] runs a node over HTTP and this store; `crate::start_raft_in_process`
//! runs the same replica, behind the same release gate, over whatever network and storage it is
//! given ([`InProcess`]): the simulator (`bazaar-sim --mode raft`) runs three in one process
//! that way.

mod lifecycle;
pub mod log_store;
pub mod network;
mod proposer;
pub mod state_machine;
pub mod store;
pub mod types;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazaar_api::client::Http;
use bazaar_api::log::{Command, Position};
use bazaar_api::replica::{ReplicaRole, ReplicaStatus, ReplicationMode};
use bazaar_api::{Epoch, LeaderHint, ReplicaId, TxnNumber};
use bazaar_ledger::Outcome;
use bazaar_service::Fatal;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::network::RaftNetworkFactory;
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::{BasicNode, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use self::lifecycle::RaftGauges;
use self::log_store::LogStore;
use self::network::Network;
use self::proposer::{PROPOSAL_QUEUE_LEN, Proposal};
use self::state_machine::StateMachine;
use self::store::Db;
use self::types::{NodeId, Raft, TypeConfig, node_id, replica_id};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::release::{Release, Vouch};

/// Bytes of snapshot data per install request.
pub const SNAPSHOT_CHUNK_LEN: usize = 256 * 1024;

/// How long one snapshot chunk may take to arrive and, for the last one, to be installed.
pub const SNAPSHOT_RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a write waits for its entry to be applied. It gives up sooner when this replica
/// stops leading or loses its majority; either way the entry may still commit later.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a waiting write checks that this replica still leads a majority.
const COMMIT_CHECK_INTERVAL: Duration = Duration::from_millis(20);

/// How long a linearizable read may wait for a majority.
pub const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// The leader's lease authority may be at most this old, or twice the longest election timeout
/// if that is longer: healthy heartbeats are acknowledged every 1.5 heartbeat intervals
/// (openraft's tick), so this leaves room for a slow round or two. A leader past it refuses
/// trades at once and stops renewing front-ends' leases.
pub const QUORUM_GRACE_MIN: Duration = Duration::from_millis(250);

/// Raft timing and log compaction, from the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftSettings {
    /// Leader heartbeat interval.
    pub heartbeat: Duration,
    /// Shortest election timeout.
    pub election_min: Duration,
    /// Longest election timeout.
    pub election_max: Duration,
    /// Log entries between snapshots.
    pub snapshot_every: u64,
    /// Log entries kept after a snapshot covers them.
    pub keep_logs: u64,
}

impl From<&Config> for RaftSettings {
    fn from(config: &Config) -> Self {
        Self {
            heartbeat: config.raft_heartbeat,
            election_min: config.raft_election_min,
            election_max: config.raft_election_max,
            snapshot_every: config.raft_snapshot_every,
            keep_logs: config.raft_keep_logs,
        }
    }
}

impl RaftSettings {
    /// How old a leader's last majority acknowledgement may be before it stops vouching for
    /// its term: twice the longest election timeout, at least [`QUORUM_GRACE_MIN`].
    #[must_use]
    pub(crate) fn grace(&self) -> Duration {
        self.election_max.saturating_mul(2).max(QUORUM_GRACE_MIN)
    }

    fn openraft_config(&self) -> Result<openraft::Config> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        openraft::Config {
            cluster_name: "bazaar-order".into(),
            heartbeat_interval: millis(self.heartbeat),
            election_timeout_min: millis(self.election_min),
            election_timeout_max: millis(self.election_max),
            install_snapshot_timeout: millis(SNAPSHOT_RPC_TIMEOUT),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_logs,
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_LEN as u64,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| Error::Config(format!("raft timing: {e}")))
    }
}

/// What a Raft node runs on: everything [`RaftReplica::start`] builds from the flags and HTTP,
/// given instead to `crate::start_raft_in_process`, which runs one without HTTP (the
/// simulator in `crates/sim` runs three in one process, over a faulty in-memory network and
/// storage it observes).
pub struct InProcess<N, LS, SM> {
    /// This replica.
    pub id: ReplicaId,
    /// Every replica of the group, this one included, with the URL its leader hints carry.
    pub urls: BTreeMap<ReplicaId, String>,
    /// Timing and log compaction.
    pub settings: RaftSettings,
    /// The catalog a new cluster's first leader writes into the log.
    pub genesis: Vec<bazaar_api::log::StockDef>,
    /// The database, as [`RaftReplica::open`] returned it.
    pub db: Db,
    /// Its applied entries, as [`RaftReplica::open`] returned them.
    pub applied: mpsc::UnboundedReceiver<bazaar_api::log::AppliedEntry>,
    /// openraft's network.
    pub network: N,
    /// openraft's log storage over `db`.
    pub log_store: LS,
    /// openraft's state machine over `db`.
    pub state_machine: SM,
}

/// A replica in raft mode; cheap to clone.
#[derive(Clone)]
pub struct RaftReplica {
    inner: Arc<Inner>,
}

struct Inner {
    id: ReplicaId,
    raft: Raft,
    /// Commands for the proposer.
    proposals: mpsc::Sender<Proposal>,
    /// openraft's view of the node, refreshed by its core on every event.
    metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    /// When openraft last reported a quorum acknowledgement's age, and that age: the age now is
    /// that plus the time since (kept by the lifecycle watcher).
    quorum_ack: Mutex<Option<(Instant, Duration)>>,
    db: Db,
    /// Every replica's URL, this one included (`--peers`).
    urls: BTreeMap<ReplicaId, String>,
    /// How old the last majority acknowledgement may be before this leader stops vouching.
    grace: Duration,
    /// The catalog a new cluster's first leader writes into the log (`--stocks`).
    genesis: Vec<bazaar_api::log::StockDef>,
}

impl std::fmt::Debug for RaftReplica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftReplica")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

/// The parts of openraft's metrics the replica decides on.
struct View {
    running: Result<(), String>,
    state: ServerState,
    term: u64,
    leader: Option<NodeId>,
    applied_term: Option<u64>,
}

impl RaftReplica {
    /// Opens the database in raft mode: the applied entries it releases go to the returned
    /// receiver (the leader's release gate drains it).
    ///
    /// # Errors
    /// [`Error::Storage`] naming the file; [`Error::Config`] for a primary-backup file.
    pub fn open(
        path: &std::path::Path,
        fatal: &Fatal,
    ) -> Result<(
        Db,
        mpsc::UnboundedReceiver<bazaar_api::log::AppliedEntry>,
        std::thread::JoinHandle<()>,
    )> {
        let (sender, receiver) = mpsc::unbounded_channel();
        let (db, writer) = Db::open(path, fatal.clone(), sender)?;
        Ok((db, receiver, writer))
    }

    /// Starts the Raft node over `db` and its background tasks (in `tasks`, until `stop`): the
    /// watcher that stops the service on a Raft fatal error and tells `release` when this
    /// replica starts and stops leading, the proposer, and on a database that was never part of
    /// a cluster, the bootstrap that forms one.
    ///
    /// # Errors
    /// [`Error::Config`] for timing openraft refuses; [`Error::Storage`] when the node cannot
    /// read its state.
    #[allow(clippy::too_many_arguments)]
    pub async fn start(
        config: &Config,
        genesis: Vec<bazaar_api::log::StockDef>,
        http: &Http,
        db: Db,
        applied: mpsc::UnboundedReceiver<bazaar_api::log::AppliedEntry>,
        release: Release,
        tasks: &TaskTracker,
        stop: &CancellationToken,
        fatal: &Fatal,
        metrics: &bazaar_service::Metrics,
    ) -> Result<Self> {
        let (id, urls) = (config.id, config.urls());
        let gauges = RaftGauges::default();
        gauges.register(metrics);
        let network = Network::new(
            node_id(id),
            http.clone(),
            urls.iter()
                .map(|(id, url)| (node_id(*id), url.clone()))
                .collect(),
        );
        let node = InProcess {
            id,
            urls,
            settings: RaftSettings::from(config),
            genesis,
            log_store: LogStore::new(db.clone()),
            state_machine: StateMachine::new(db.clone(), gauges.snapshots.clone()),
            db,
            applied,
            network,
        };
        let replica = Self::launch(node, release, tasks, stop, fatal, gauges).await?;
        let initialized = replica
            .inner
            .raft
            .is_initialized()
            .await
            .map_err(|e| Error::Storage(format!("raft node stopped at start: {e}")))?;
        if initialized {
            replica.check_membership();
        } else {
            let (this, http, stop) = (replica.clone(), http.clone(), stop.clone());
            tasks.spawn(async move { this.bootstrap(&http, &stop).await }.in_current_span());
        }
        Ok(replica)
    }

    /// Starts a Raft node inside this process over the network and storage `node` gives (the
    /// simulator's in-memory network and its observing storage), with the same background
    /// tasks as [`Self::start`] but no bootstrap: whoever runs the group forms it, through
    /// [`Self::raft`].
    ///
    /// # Errors
    /// As [`Self::start`].
    pub(crate) async fn start_in_process<N, LS, SM>(
        node: InProcess<N, LS, SM>,
        release: Release,
        tasks: &TaskTracker,
        stop: &CancellationToken,
        fatal: &Fatal,
    ) -> Result<Self>
    where
        N: RaftNetworkFactory<TypeConfig>,
        LS: RaftLogStorage<TypeConfig>,
        SM: RaftStateMachine<TypeConfig>,
    {
        Self::launch(node, release, tasks, stop, fatal, RaftGauges::default()).await
    }

    async fn launch<N, LS, SM>(
        node: InProcess<N, LS, SM>,
        release: Release,
        tasks: &TaskTracker,
        stop: &CancellationToken,
        fatal: &Fatal,
        gauges: RaftGauges,
    ) -> Result<Self>
    where
        N: RaftNetworkFactory<TypeConfig>,
        LS: RaftLogStorage<TypeConfig>,
        SM: RaftStateMachine<TypeConfig>,
    {
        let InProcess {
            id,
            urls,
            settings,
            genesis,
            db,
            applied,
            network,
            log_store,
            state_machine,
        } = node;
        let raft = Raft::new(
            node_id(id),
            Arc::new(settings.openraft_config()?),
            network,
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| Error::Storage(format!("cannot start the raft node: {e}")))?;
        let (proposals, queue) = mpsc::channel(PROPOSAL_QUEUE_LEN);
        let replica = Self {
            inner: Arc::new(Inner {
                id,
                proposals,
                metrics: raft.metrics(),
                quorum_ack: Mutex::new(None),
                raft,
                db,
                urls,
                grace: settings.grace(),
                genesis,
            }),
        };
        let (this, fatal, watch_stop) = (replica.clone(), fatal.clone(), stop.clone());
        tasks
            .spawn(async move { this.watch(&fatal, &watch_stop, &gauges).await }.in_current_span());
        let (this, lead_release, lead_stop) = (replica.clone(), release.clone(), stop.clone());
        tasks.spawn(
            async move {
                this.follow_leadership(lead_release, applied, &lead_stop)
                    .await
            }
            .in_current_span(),
        );
        let (this, proposal_tasks, stop) = (replica.clone(), tasks.clone(), stop.clone());
        tasks.spawn(
            async move { this.propose(queue, &proposal_tasks, &stop).await }.in_current_span(),
        );
        Ok(replica)
    }

    /// Stops the Raft node (its tasks and its hold on the database).
    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft node did not stop cleanly");
        }
    }

    /// This replica's id.
    #[must_use]
    pub fn id(&self) -> ReplicaId {
        self.inner.id
    }

    /// The Raft handle, for the `/internal/raft/...` routes.
    #[must_use]
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// The newest term this replica knows.
    #[must_use]
    pub fn term(&self) -> u64 {
        self.inner.metrics.borrow().current_term
    }

    fn view(&self) -> View {
        let m = self.inner.metrics.borrow();
        View {
            running: m
                .running_state
                .as_ref()
                .map_err(ToString::to_string)
                .copied(),
            state: m.state,
            term: m.current_term,
            leader: m.current_leader,
            applied_term: m.last_applied.map(|l| l.leader_id.term),
        }
    }

    fn hint(&self, leader: Option<NodeId>) -> Option<LeaderHint> {
        let id = leader.and_then(replica_id)?;
        Some(LeaderHint {
            id,
            url: self.inner.urls.get(&id).cloned(),
        })
    }

    /// `GET /health`.
    #[must_use]
    pub fn status(&self) -> ReplicaStatus {
        let view = self.view();
        let book = self.inner.db.with_state(|s| s.book.clone());
        ReplicaStatus {
            id: self.inner.id,
            mode: ReplicationMode::Raft,
            role: match view.state {
                ServerState::Leader => ReplicaRole::Leader,
                ServerState::Candidate => ReplicaRole::Candidate,
                ServerState::Follower | ServerState::Learner | ServerState::Shutdown => {
                    ReplicaRole::Follower
                }
            },
            ready: view.running.is_ok(),
            leader: view.leader.and_then(replica_id),
            epoch: Epoch(view.term),
            position: book.position,
            last_number: book.next_number.0.checked_sub(1).map(TxnNumber),
            visible: None,
            commits: None,
        }
    }

    /// The error a non-leader answers writes and queries with, naming the leader it knows.
    #[must_use]
    pub fn not_leader(&self) -> Error {
        let leader = self.view().leader.filter(|l| *l != node_id(self.inner.id));
        Error::NotLeader {
            me: self.inner.id,
            leader: self.hint(leader),
        }
    }

    /// How old this leader's last majority acknowledgement is now.
    fn quorum_age(&self) -> Option<Duration> {
        let (reported_at, age) = (*self
            .inner
            .quorum_ack
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))?;
        Some(age + reported_at.elapsed())
    }

    /// The term this replica leads: only once its first entry of that term is applied (so
    /// every earlier entry is settled) and while a majority acknowledged it within the grace
    /// (so a leader cut off from the majority refuses at once instead of proposing entries that
    /// cannot commit).
    ///
    /// # Errors
    /// [`Error::NotLeader`] with a hint on a follower or candidate; [`Error::NotReady`] for a
    /// new leader or one cut off from the majority; [`Error::ShuttingDown`] once Raft stopped.
    pub fn leader_epoch(&self) -> Result<Epoch> {
        let view = self.view();
        if view.running.is_err() {
            return Err(Error::ShuttingDown);
        }
        if view.state != ServerState::Leader {
            return Err(self.not_leader());
        }
        if view.applied_term != Some(view.term) {
            return Err(Error::NotReady(format!(
                "replica {} was just elected leader of term {}; it is committing its first entry",
                self.inner.id, view.term
            )));
        }
        match self.quorum_age() {
            Some(age) if age <= self.inner.grace => Ok(Epoch(view.term)),
            age => Err(Error::NoQuorum(format!(
                "replica {} cannot reach a majority of the {} order replicas (it last heard \
                 from a majority {}); a trade needs {} of them",
                self.inner.id,
                self.inner.urls.len(),
                age.map_or_else(
                    || "never".to_owned(),
                    |a| format!("{} ms ago", a.as_millis())
                ),
                self.inner.urls.len() / 2 + 1
            ))),
        }
    }

    /// Proposes `command` and waits until it is applied; returns its outcome and the position
    /// of the entry that carries it.
    ///
    /// # Errors
    /// [`Error::NotLeader`], [`Error::NotReady`] when nothing was proposed;
    /// [`Error::Uncertain`] after proposing, when leadership or the majority was lost, or
    /// [`COMMIT_TIMEOUT`] passed: it may still commit.
    pub async fn write(&self, command: Command) -> Result<(Outcome, Position)> {
        self.leader_epoch()?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .proposals
            .send(Proposal { command, reply })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        tokio::pin!(answer);
        let give_up = tokio::time::sleep(COMMIT_TIMEOUT);
        tokio::pin!(give_up);
        let mut checks = tokio::time::interval(COMMIT_CHECK_INTERVAL);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                answered = &mut answer => {
                    return answered.unwrap_or(Err(Error::ShuttingDown));
                }
                () = &mut give_up => {
                    return Err(Error::Uncertain(format!(
                        "not committed within {COMMIT_TIMEOUT:?}; it may still commit: retry \
                         with the same request id"
                    )));
                }
                _ = checks.tick() => {
                    if let Err(e) = self.leader_epoch() {
                        return Err(Error::Uncertain(format!("leadership lost after proposing: {e}")));
                    }
                }
            }
        }
    }

    fn write_error(&self, e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Error {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => Error::NotLeader {
                me: self.inner.id,
                leader: self.hint(f.leader_id),
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                Error::Storage(format!("unexpected membership error: {e}"))
            }
            RaftError::Fatal(_) => Error::ShuttingDown,
        }
    }

    fn read_error(&self, e: RaftError<NodeId, CheckIsLeaderError<NodeId, BasicNode>>) -> Error {
        match e {
            RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => Error::NotLeader {
                me: self.inner.id,
                leader: self.hint(f.leader_id),
            },
            // One round of heartbeats without a majority (a late reply on a loaded machine):
            // worth retrying. A leader that has really lost its majority is refused with
            // `NoQuorum` by `leader_epoch` once that has lasted the grace.
            RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)) => {
                Error::NotReady(format!("no majority confirmed this leader yet: {e}"))
            }
            RaftError::Fatal(_) => Error::ShuttingDown,
        }
    }

    /// An order by number, read linearizably: a majority confirms this replica still leads,
    /// and every entry committed before the query arrived is applied first.
    ///
    /// # Errors
    /// [`Error::NotLeader`], [`Error::NotReady`] without a majority, [`Error::UnknownOrder`].
    pub async fn order(&self, number: TxnNumber) -> Result<Option<crate::orders::OrderRow>> {
        self.leader_epoch()?;
        tokio::time::timeout(READ_TIMEOUT, self.inner.raft.ensure_linearizable())
            .await
            .map_err(|_| {
                Error::NotReady(format!(
                    "no majority confirmed replica {} leads within {READ_TIMEOUT:?}",
                    self.inner.id
                ))
            })?
            .map_err(|e| self.read_error(e))?;
        self.inner.db.order(number).await
    }

    /// Follows this replica's leadership for the release gate: when it leads a term (its first
    /// entry of the term applied), the gate starts from the stock table as applied; when it
    /// stops, the gate resigns. Applied entries go to the gate as they come (it ignores them
    /// while not leading). A new leader of an empty log also proposes the genesis.
    async fn follow_leadership(
        &self,
        release: Release,
        mut applied: mpsc::UnboundedReceiver<bazaar_api::log::AppliedEntry>,
        stop: &CancellationToken,
    ) {
        let mut metrics = self.inner.metrics.clone();
        let mut leading: Option<u64> = None;
        loop {
            let view = self.view();
            {
                let m = metrics.borrow_and_update();
                let mut ack = self
                    .inner
                    .quorum_ack
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *ack = m
                    .millis_since_quorum_ack
                    .map(|ms| (Instant::now(), Duration::from_millis(ms)));
            }
            let leads_now = (view.state == ServerState::Leader
                && view.applied_term == Some(view.term))
            .then_some(view.term);
            if leads_now != leading {
                if leading.is_some() {
                    release.resign();
                }
                if let Some(term) = leads_now {
                    // Everything applied is committed and below every later entry.
                    let base = self.inner.db.with_state(|s| s.book.clone());
                    let applied = base.position;
                    release.lead(Epoch(term), base);
                    release.committed(applied);
                    let listed = self.inner.db.with_state(|s| !s.book.stocks.is_empty());
                    if !listed {
                        self.propose_genesis();
                    }
                }
                leading = leads_now;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                changed = metrics.changed() => if changed.is_err() { return },
                entry = applied.recv() => match entry {
                    Some(entry) => {
                        let position = entry.index.position();
                        release.sequenced(vec![entry]);
                        release.committed(position);
                    }
                    None => return,
                },
            }
        }
    }

    fn propose_genesis(&self) {
        let this = self.clone();
        tokio::spawn(
            async move {
                let stocks = this.inner.genesis.clone();
                match this.write(Command::Genesis { stocks }).await {
                    Ok((outcome, position)) => {
                        tracing::info!(?outcome, %position, "wrote the catalog into the log");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not write the catalog into the log yet")
                    }
                }
            }
            .in_current_span(),
        );
    }
}

impl Vouch for RaftReplica {
    fn vouches(&self, grace: Duration) -> bool {
        self.leader_epoch().is_ok() && self.quorum_age().is_some_and(|age| age <= grace)
    }
}

#[cfg(test)]
mod tests;
