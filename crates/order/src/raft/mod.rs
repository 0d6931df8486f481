//! Raft replication of the order log (`--replication raft`, SPEC.md section 6): a majority of
//! the replicas stores each order before it is acknowledged, so any single replica may crash at
//! any moment without losing an acknowledged order, and 2 of 3 keep trading.
//!
//! ```text
//!  front-end          leader (term t)                             followers
//!  ---------          ---------------                             ---------
//!  POST /trades ----> saga: leader_epoch() = t: leader, its first entry of term t applied,
//!                           a majority heard from recently (else 503 at once)
//!                     saga: catalog try (epoch t)
//!                     commit: queue the order; the proposer puts every order
//!                       queued meanwhile into one entry Orders[...]
//!                       |-- append to own log (fsync) ----------.
//!                       |-- POST /internal/raft/append ----------+--> append (fsync), reply
//!                       |   committed once a majority holds it <-'
//!                       '-- apply: number = next, or the first number of a request id
//!                           already applied (identically on every replica)
//!                     saga: catalog confirm (epoch t)
//!  <---- number ------
//! ```
//!
//! Rules:
//! - Transaction numbers are assigned when entries are applied, so they follow the log order
//!   and are the same on every replica; a request id proposed twice keeps its first number.
//! - A commit is *refused* (nothing proposed, the saga may cancel) only when this replica is not
//!   a leader that can reach a majority; once proposed, any failure is *uncertain*: the entry
//!   may still commit, and a retry with the same request id or the leader's reconciliation
//!   settles the trade against the log.
//! - The catalog's fencing epoch is the Raft term: a deposed leader's calls are refused once
//!   its successor has spoken to the catalog.
//! - Reconciliation cancels a reservation only after a barrier entry proposed on this leader
//!   has been applied: every entry proposed here earlier has been applied by then, and an entry
//!   of an earlier term that this leader lacks can never be committed.
//!
//! # Layout
//! - [`types`] — the Raft type configuration and the log's commands.
//! - [`store`] — the SQLite file: log, vote, state machine, durability per write.
//! - [`log_store`], [`state_machine`] — openraft's storage traits over it.
//! - [`network`] — Raft messages over HTTP; [`http`] — their routes.
//! - `proposer` — batches concurrent orders into entries; `lifecycle` — cluster formation,
//!   the fatal-stop watcher, gauges.

pub mod http;
mod lifecycle;
pub mod log_store;
pub mod network;
mod proposer;
pub mod state_machine;
pub mod store;
pub mod types;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bazaar_api::client::Http;
use bazaar_api::replica::{OrderEntry, OrderTrade, ReplicaRole, ReplicaStatus, ReplicationMode};
use bazaar_api::{Epoch, LeaderHint, Order, ReplicaId, RequestId, TxnNumber};
use bazaar_service::Fatal;
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use self::lifecycle::RaftGauges;
use self::log_store::LogStore;
use self::network::Network;
use self::proposer::{PROPOSAL_QUEUE_LEN, Proposal};
use self::state_machine::StateMachine;
use self::store::{Db, OrderRow};
use self::types::{NodeId, OrderCommand, Raft, node_id, replica_id};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::replica::CommitFailure;

/// Bytes of snapshot data per install request.
pub const SNAPSHOT_CHUNK_LEN: usize = 256 * 1024;

/// How long one snapshot chunk may take to arrive and, for the last one, to be installed.
pub const SNAPSHOT_RPC_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a commit waits for its entry to be applied. It gives up sooner when this replica
/// stops leading or loses its majority; either way the entry may still commit later.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a waiting commit checks that this replica still leads a majority.
const COMMIT_CHECK_INTERVAL: Duration = Duration::from_millis(20);

/// How long a linearizable read or a barrier may wait for a majority.
pub const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// A leader that has heard from no majority for this long, or twice the longest election
/// timeout if that is longer, refuses trades at once instead of proposing them. Healthy
/// heartbeats are acknowledged every 1.5 heartbeat intervals (openraft's tick), so this leaves
/// room for a slow round or two.
const QUORUM_STALE_MIN: Duration = Duration::from_millis(250);

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

/// A replica in raft mode; cheap to clone.
#[derive(Clone)]
pub struct RaftReplica {
    inner: Arc<Inner>,
}

struct Inner {
    id: ReplicaId,
    raft: Raft,
    /// Orders for the proposer.
    proposals: mpsc::Sender<Proposal>,
    /// openraft's view of the node, refreshed by its core on every event.
    metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
    db: Db,
    /// Every replica's URL, this one included (`--peers`).
    urls: BTreeMap<ReplicaId, String>,
    /// Milliseconds without a majority's acknowledgement after which the leader refuses trades.
    quorum_stale_ms: u64,
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
    quorum_ack_ms: Option<u64>,
}

impl RaftReplica {
    /// Starts the Raft node over `db` and its background tasks (in `tasks`, until `stop`): the
    /// watcher that stops the service on a Raft fatal error, and on a database that was never
    /// part of a cluster, the bootstrap that forms one.
    ///
    /// # Errors
    /// [`Error::Config`] for timing openraft refuses; [`Error::Storage`] when the node cannot
    /// read its state.
    pub async fn start(
        config: &Config,
        http: &Http,
        db: Db,
        tasks: &TaskTracker,
        stop: &CancellationToken,
        fatal: &Fatal,
        metrics: &bazaar_service::Metrics,
    ) -> Result<Self> {
        let (id, urls, settings) = (
            config.id,
            config.peers.0.clone(),
            RaftSettings::from(config),
        );
        let gauges = RaftGauges::default();
        gauges.register(metrics);
        let network = Network::new(
            node_id(id),
            http.clone(),
            urls.iter()
                .map(|(id, url)| (node_id(*id), url.clone()))
                .collect(),
        );
        let raft = Raft::new(
            node_id(id),
            Arc::new(settings.openraft_config()?),
            network,
            LogStore::new(db.clone()),
            StateMachine::new(db.clone(), gauges.snapshots.clone()),
        )
        .await
        .map_err(|e| Error::Storage(format!("cannot start the raft node: {e}")))?;
        let quorum_stale = settings
            .election_max
            .saturating_mul(2)
            .max(QUORUM_STALE_MIN);
        let (proposals, queue) = mpsc::channel(PROPOSAL_QUEUE_LEN);
        let replica = Self {
            inner: Arc::new(Inner {
                id,
                proposals,
                metrics: raft.metrics(),
                raft,
                db,
                urls,
                quorum_stale_ms: u64::try_from(quorum_stale.as_millis()).unwrap_or(u64::MAX),
            }),
        };
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
        let (this, fatal, watch_stop) = (replica.clone(), fatal.clone(), stop.clone());
        tasks
            .spawn(async move { this.watch(&fatal, &watch_stop, &gauges).await }.in_current_span());
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
            quorum_ack_ms: m.millis_since_quorum_ack,
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
            last: self.inner.db.with_state(|s| s.last_order),
        }
    }

    /// The error a non-leader answers trades and queries with, naming the leader it knows.
    #[must_use]
    pub fn not_leader(&self) -> Error {
        let leader = self.view().leader.filter(|l| *l != node_id(self.inner.id));
        Error::NotLeader {
            me: self.inner.id,
            leader: self.hint(leader),
        }
    }

    /// The term this replica leads, which fences its catalog calls: only once its first entry
    /// of that term is applied (so every earlier entry is settled and in the order table) and
    /// while a majority has answered it recently (so a lone leader refuses at once instead of
    /// proposing orders that cannot commit).
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
        match view.quorum_ack_ms {
            Some(ms) if ms <= self.inner.quorum_stale_ms => Ok(Epoch(view.term)),
            ms => Err(Error::NotReady(format!(
                "replica {} cannot reach a majority of the {} order replicas (it last heard \
                 from a majority {}); a trade needs {} of them",
                self.inner.id,
                self.inner.urls.len(),
                ms.map_or_else(|| "never".to_owned(), |ms| format!("{ms} ms ago")),
                self.inner.urls.len() / 2 + 1
            ))),
        }
    }

    /// Proposes `trade`'s order and waits until it is applied; returns its number.
    ///
    /// # Errors
    /// [`CommitFailure`]: refused when this replica cannot lead (nothing was proposed);
    /// uncertain after proposing, when leadership or the majority was lost, the entry was
    /// dropped, or [`COMMIT_TIMEOUT`] passed: it may still commit.
    pub async fn commit(&self, trade: OrderTrade) -> Result<TxnNumber, CommitFailure> {
        self.leader_epoch().map_err(CommitFailure::refused)?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .proposals
            .send(Proposal::Order {
                order: OrderCommand::from(&trade),
                reply,
            })
            .await
            .map_err(|_| CommitFailure::refused(Error::ShuttingDown))?;
        tokio::pin!(answer);
        let give_up = tokio::time::sleep(COMMIT_TIMEOUT);
        tokio::pin!(give_up);
        let mut checks = tokio::time::interval(COMMIT_CHECK_INTERVAL);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                answered = &mut answer => {
                    return answered
                        .unwrap_or_else(|_| Err(CommitFailure::uncertain(Error::ShuttingDown)));
                }
                () = &mut give_up => {
                    return Err(CommitFailure::uncertain(Error::NotReady(format!(
                        "order {} was not committed within {COMMIT_TIMEOUT:?}; it may still \
                         commit: retry with the same request id",
                        trade.request_id
                    ))));
                }
                _ = checks.tick() => {
                    if let Err(e) = self.leader_epoch() {
                        return Err(CommitFailure::uncertain(e));
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
            RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e)) => {
                Error::NotReady(format!("no majority confirmed this leader: {e}"))
            }
            RaftError::Fatal(_) => Error::ShuttingDown,
        }
    }

    /// An order by number, read linearizably: a majority confirms this replica still leads,
    /// and every entry committed before the query arrived is applied first.
    ///
    /// # Errors
    /// [`Error::NotLeader`], [`Error::NotReady`] without a majority, [`Error::UnknownOrder`].
    pub async fn order_get(&self, number: TxnNumber) -> Result<Order> {
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
        self.inner
            .db
            .order(number)
            .await?
            .map(|row| row.to_order())
            .ok_or(Error::UnknownOrder(number))
    }

    /// The number of the committed order holding `request_id`. A barrier entry, queued behind
    /// every order waiting to be proposed here, is committed and applied first, so the answer
    /// covers every order proposed on this leader before the call (an uncertain commit's
    /// included; one whose saga stopped waiting is never proposed): "not found" then means it
    /// never will be committed, which is what reconciliation needs before it cancels.
    ///
    /// # Errors
    /// [`Error::NotLeader`], [`Error::NotReady`] when the barrier cannot commit; storage errors.
    pub async fn find_request(&self, request_id: RequestId) -> Result<Option<TxnNumber>> {
        self.leader_epoch()?;
        let (reply, answer) = oneshot::channel();
        self.inner
            .proposals
            .send(Proposal::Barrier { reply })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        tokio::time::timeout(READ_TIMEOUT, answer)
            .await
            .map_err(|_| {
                Error::NotReady(format!(
                    "replica {} could not commit a barrier within {READ_TIMEOUT:?}",
                    self.inner.id
                ))
            })?
            .map_err(|_| Error::ShuttingDown)??;
        Ok(self
            .inner
            .db
            .order_by_request(request_id)
            .await?
            .map(|row| TxnNumber(row.number)))
    }

    /// Up to `limit` (at most [`crate::log_store::PAGE_LEN_MAX`]) applied orders from `from`
    /// on (`GET /internal/orders`), served in every role.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn page(&self, from: TxnNumber, limit: u32) -> Result<Vec<OrderEntry>> {
        let limit = limit.min(crate::log_store::PAGE_LEN_MAX);
        let rows = self.inner.db.orders_page(from, limit).await?;
        Ok(rows.into_iter().map(entry_of).collect())
    }
}

fn entry_of(row: OrderRow) -> OrderEntry {
    OrderEntry {
        number: TxnNumber(row.number),
        request_id: row.request_id,
        name: row.name,
        kind: row.kind,
        quantity: row.quantity,
        epoch: Epoch(row.epoch),
    }
}

#[cfg(test)]
mod tests;
