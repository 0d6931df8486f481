//! Primary-backup replication of the order log (SPEC.md sections 5 and 6).
//!
//! ```text
//!  front-end          leader (epoch e)                          followers
//!  ---------          ----------------                          ---------
//!  POST /trades ----> saga: catalog try
//!                     sequencer: batch proposals, number them
//!                     last+1, last+2, ... (epoch e)
//!                       |-- append locally (fsync) ------------.
//!                       |-- POST /internal/append {e, prev, entries} --> check e, check prev,
//!                       |                                               append (fsync), reply tip
//!                       '-- wait for local + every LIVE follower <-----'
//!                     saga: catalog confirm (caches invalidated)
//!  <---- number ------
//! ```
//!
//! Ordering rules:
//! - The leader acknowledges an order only after it is durable locally and on every follower it
//!   considers live. A follower that fails or times out is marked behind (logged, counted) and a
//!   catch-up task probes it until its log equals the leader's; it is never skipped silently.
//! - Appends carry the entry before the batch (`prev`). A follower appends only on top of a log
//!   that holds `prev` (the log matching rule); otherwise it first syncs from the leader, moving
//!   any divergent suffix to the `conflicts` table.
//! - Every entry records the epoch that created it; on conflict the newer epoch wins.
//! - A chosen leader first syncs from the most up-to-date reachable replica, and only then
//!   assigns numbers, so numbers never fork or skip.
//! - Epochs only grow. A replica refuses appends and notices from an older epoch, and a leader
//!   that hears of a newer one steps down.
//! - One lock serialises every change to the local log (batches, appends, syncs, notices).

pub mod catch_up;
pub mod core;
mod runtime;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazaar_api::client::{Http, ReplicaClient};
use bazaar_api::replica::{
    AppendReply, AppendRequest, LeaderNotice, LogTip, OrderEntry, OrderTrade, ReplicaRole,
    ReplicaStatus, ReplicationMode,
};
use bazaar_api::{Epoch, LeaderHint, Order, ReplicaId, RequestId, TxnNumber};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use self::core::{AppendPlan, EpochVerdict};
use crate::error::{Error, Result};
use crate::log_store::{LogStore, Term};
use crate::replica::CommitFailure;

/// How long the leader waits for a live follower to store a batch before marking it behind.
pub const REPLICATION_TIMEOUT: Duration = Duration::from_millis(1000);

/// How long a catch-up probe may take: the follower may pull many pages before answering.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long to wait for a peer's status during leader sync and recovery.
pub const PEER_STATUS_TIMEOUT: Duration = Duration::from_millis(500);

/// Timeout of one page request while syncing.
pub const PAGE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most proposals numbered and replicated as one batch.
pub const PROPOSAL_BATCH_LEN_MAX: usize = 256;

/// Proposals waiting for the sequencer at most.
const PROPOSAL_QUEUE_LEN: usize = 4096;

/// Attempts to sync from peers while recovering before serving with what the log holds (the
/// leader's catch-up then finishes the job).
const RECOVERY_ATTEMPTS: u32 = 5;

/// Replication counters exported at `/metrics`.
#[derive(Debug, Clone)]
pub struct ReplicationMetrics {
    /// Batches replicated by this replica as leader.
    pub batches: Counter,
    /// Entries per batch.
    pub batch_len: Histogram,
    /// Followers currently marked behind.
    pub followers_behind: Gauge,
    /// Times this replica became leader.
    pub leaderships: Counter,
    /// Local entries moved to the conflicts table.
    pub conflicts_moved: Counter,
}

impl Default for ReplicationMetrics {
    fn default() -> Self {
        Self {
            batches: Counter::default(),
            batch_len: Histogram::new(exponential_buckets(1.0, 2.0, 10)),
            followers_behind: Gauge::default(),
            leaderships: Counter::default(),
            conflicts_moved: Counter::default(),
        }
    }
}

impl ReplicationMetrics {
    /// Registers the counters.
    pub fn register(&self, metrics: &bazaar_service::Metrics) {
        metrics.register(
            "replication_batches",
            "Batches replicated as leader",
            self.batches.clone(),
        );
        metrics.register(
            "replication_batch_entries",
            "Orders per replicated batch",
            self.batch_len.clone(),
        );
        metrics.register(
            "replication_followers_behind",
            "Followers marked behind and being caught up",
            self.followers_behind.clone(),
        );
        metrics.register(
            "replication_leaderships",
            "Times this replica became leader",
            self.leaderships.clone(),
        );
        metrics.register(
            "replication_conflicts_moved",
            "Local entries moved to the conflicts table",
            self.conflicts_moved.clone(),
        );
    }
}

/// Who this replica is and who the others are.
#[derive(Debug, Clone)]
pub struct Membership {
    /// This replica.
    pub id: ReplicaId,
    /// Its URL as the others know it, for leader hints.
    pub own_url: Option<String>,
    /// The other replicas.
    pub peers: BTreeMap<ReplicaId, String>,
}

/// Role and term, changed together under one lock.
#[derive(Debug, Clone, Copy)]
struct State {
    role: ReplicaRole,
    term: Term,
}

/// A trade waiting for a transaction number.
struct Proposal {
    trade: OrderTrade,
    reply: oneshot::Sender<Result<TxnNumber, CommitFailure>>,
}

/// The leader's view of one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Progress {
    /// Receives every batch; the leader waits for it.
    Live,
    /// Missed something; a catch-up task is probing it.
    Behind,
}

/// A primary-backup replica; cheap to clone.
#[derive(Clone)]
pub struct Replicator {
    inner: Arc<Inner>,
}

struct Inner {
    id: ReplicaId,
    own_url: Option<String>,
    /// The other replicas.
    peers: BTreeMap<ReplicaId, ReplicaClient>,
    log: LogStore,
    state: Mutex<State>,
    /// Serialises every change to the local log.
    log_lock: tokio::sync::Mutex<()>,
    proposals: mpsc::Sender<Proposal>,
    followers: Mutex<BTreeMap<ReplicaId, Progress>>,
    tasks: TaskTracker,
    stop: CancellationToken,
    metrics: ReplicationMetrics,
}

impl std::fmt::Debug for Replicator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replicator")
            .field("id", &self.inner.id)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Replicator {
    /// A replica in the `Recovering` role; call [`Replicator::recover`] to start serving.
    /// Background tasks run in `tasks` until `stop` is cancelled.
    #[must_use]
    pub fn new(
        membership: Membership,
        http: &Http,
        log: LogStore,
        term: Term,
        tasks: TaskTracker,
        stop: CancellationToken,
        metrics: ReplicationMetrics,
    ) -> Self {
        let Membership { id, own_url, peers } = membership;
        let (proposals, queue) = mpsc::channel(PROPOSAL_QUEUE_LEN);
        let peers = peers
            .iter()
            .map(|(id, url)| (*id, ReplicaClient::new(http.clone(), *id, url.clone())))
            .collect();
        let replicator = Self {
            inner: Arc::new(Inner {
                id,
                own_url,
                peers,
                log,
                state: Mutex::new(State {
                    role: ReplicaRole::Recovering,
                    term,
                }),
                log_lock: tokio::sync::Mutex::new(()),
                proposals,
                followers: Mutex::new(BTreeMap::new()),
                tasks,
                stop,
                metrics,
            }),
        };
        let sequencer = replicator.clone();
        replicator
            .inner
            .tasks
            .spawn(async move { sequencer.run_sequencer(queue).await }.in_current_span());
        replicator
    }

    fn state(&self) -> State {
        *self
            .inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_state(&self, change: impl FnOnce(&mut State)) -> State {
        let mut state = self
            .inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut state);
        *state
    }

    /// This replica's id.
    #[must_use]
    pub fn id(&self) -> ReplicaId {
        self.inner.id
    }

    /// `GET /health`.
    #[must_use]
    pub fn status(&self) -> ReplicaStatus {
        let state = self.state();
        ReplicaStatus {
            id: self.inner.id,
            mode: ReplicationMode::PrimaryBackup,
            role: state.role,
            ready: state.role != ReplicaRole::Recovering,
            leader: state.term.leader,
            epoch: state.term.epoch,
            last: self.inner.log.last().map(crate::log_store::Last::tip),
        }
    }

    fn hint(&self, leader: Option<ReplicaId>) -> Option<LeaderHint> {
        leader.map(|id| LeaderHint {
            id,
            url: if id == self.inner.id {
                self.inner.own_url.clone()
            } else {
                self.inner.peers.get(&id).map(|p| p.base().to_owned())
            },
        })
    }

    /// The error a non-leader answers trades with.
    #[must_use]
    pub fn not_leader(&self) -> Error {
        Error::NotLeader {
            me: self.inner.id,
            leader: self.hint(self.state().term.leader),
        }
    }

    /// The epoch this replica leads.
    ///
    /// # Errors
    /// [`Error::NotLeader`] on a follower; [`Error::NotReady`] while recovering or syncing as a
    /// newly chosen leader.
    pub fn leader_epoch(&self) -> Result<Epoch> {
        let state = self.state();
        match state.role {
            ReplicaRole::Leader => Ok(state.term.epoch),
            ReplicaRole::Candidate => Err(Error::NotReady(
                "chosen leader, still collecting orders from the other replicas".into(),
            )),
            ReplicaRole::Recovering => Err(Error::NotReady(
                "recovering: pulling missed orders from the other replicas".into(),
            )),
            ReplicaRole::Follower => Err(self.not_leader()),
        }
    }

    /// Numbers `trade`, stores it durably here and on every live follower, and returns its
    /// number.
    ///
    /// # Errors
    /// [`CommitFailure`]: refused when this replica is not the leader at the time of the batch
    /// (nothing was written anywhere); uncertain when it was deposed mid-batch or storage failed.
    pub async fn commit(&self, trade: OrderTrade) -> Result<TxnNumber, CommitFailure> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .proposals
            .send(Proposal { trade, reply })
            .await
            .map_err(|_| CommitFailure::refused(Error::ShuttingDown))?;
        answer
            .await
            .map_err(|_| CommitFailure::uncertain(Error::ShuttingDown))?
    }

    /// An order by number, answered by the leader only.
    ///
    /// # Errors
    /// [`Error::NotLeader`], [`Error::UnknownOrder`].
    pub async fn order_get(&self, number: TxnNumber) -> Result<Order> {
        self.leader_epoch()?;
        self.inner
            .log
            .entry(number)
            .await?
            .map(|e| e.to_order())
            .ok_or(Error::UnknownOrder(number))
    }

    /// The number of the order holding `request_id`, if this replica's log has it.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn find_request(&self, request_id: RequestId) -> Result<Option<TxnNumber>> {
        Ok(self
            .inner
            .log
            .by_request_id(request_id)
            .await?
            .map(|e| e.number))
    }

    /// A page of the local log (`GET /internal/orders`), served in every role.
    ///
    /// # Errors
    /// Storage errors.
    pub async fn page(&self, from: TxnNumber, limit: u32) -> Result<Vec<OrderEntry>> {
        self.inner.log.page(from, limit).await
    }

    fn peer_clients(&self) -> Vec<ReplicaClient> {
        self.inner.peers.values().cloned().collect()
    }

    /// Peers' statuses, unreachable ones left out.
    async fn peer_statuses(&self) -> Vec<ReplicaStatus> {
        let asks = self
            .peer_clients()
            .into_iter()
            .map(|peer| async move { peer.with_timeout(PEER_STATUS_TIMEOUT).status().await.ok() });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    /// Persists `term` if it is newer, so a restart still refuses the deposed leader.
    async fn adopt_term(&self, term: Term) -> Result<()> {
        let known = self.state().term;
        if term == known {
            return Ok(());
        }
        self.inner.log.save_term(term).await?;
        self.set_state(|s| s.term = term);
        Ok(())
    }

    /// Syncs from the most up-to-date reachable peer if its log is more up to date than ours.
    /// Caller holds the log lock.
    async fn sync_from_best_peer(&self) -> Result<()> {
        let statuses = self.peer_statuses().await;
        let tips: Vec<(ReplicaId, Option<LogTip>)> =
            statuses.iter().map(|s| (s.id, s.last)).collect();
        let mine = self.inner.log.last().map(crate::log_store::Last::tip);
        if let Some(best) = core::best_source(mine, &tips)
            && let Some(peer) = self.inner.peers.get(&best)
        {
            let report =
                catch_up::sync_from(&self.inner.log, &peer.with_timeout(PAGE_TIMEOUT)).await?;
            self.inner
                .metrics
                .conflicts_moved
                .inc_by(report.moved as u64);
        }
        Ok(())
    }

    /// Rejoin after a start: learn the newest term from the peers, pull every order this log
    /// misses from the leader (or the most up-to-date peer), and only then serve.
    pub async fn recover(&self) {
        let _log = self.inner.log_lock.lock().await;
        for attempt in 1..=RECOVERY_ATTEMPTS {
            match self.recover_once().await {
                Ok(()) => break,
                Err(e) if attempt < RECOVERY_ATTEMPTS => {
                    tracing::warn!(attempt, error = %e, "recovery sync failed; retrying");
                    tokio::select! {
                        () = self.inner.stop.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "recovery sync failed; serving as a follower, the leader will catch this replica up");
                }
            }
        }
        let state = self.set_state(|s| s.role = ReplicaRole::Follower);
        tracing::info!(
            epoch = %state.term.epoch,
            leader = ?state.term.leader.map(|l| l.0),
            last = ?self.inner.log.last().map(|l| l.number.0),
            "recovered; following"
        );
    }

    async fn recover_once(&self) -> Result<()> {
        let statuses = self.peer_statuses().await;
        let newest = statuses
            .iter()
            .filter(|s| s.epoch > self.state().term.epoch)
            .max_by_key(|s| s.epoch);
        if let Some(s) = newest {
            self.adopt_term(Term {
                epoch: s.epoch,
                leader: s.leader,
            })
            .await?;
        }
        let term = self.state().term;
        // The leader's log is the one to copy; without a reachable leader, the most up to date.
        let leader = statuses.iter().find(|s| {
            s.role == ReplicaRole::Leader && s.epoch == term.epoch && Some(s.id) == term.leader
        });
        let source = match leader {
            Some(l) => Some(l.id),
            None => {
                let tips: Vec<_> = statuses.iter().map(|s| (s.id, s.last)).collect();
                core::best_source(
                    self.inner.log.last().map(crate::log_store::Last::tip),
                    &tips,
                )
            }
        };
        if let Some(peer) = source.and_then(|id| self.inner.peers.get(&id)) {
            let report =
                catch_up::sync_from(&self.inner.log, &peer.with_timeout(PAGE_TIMEOUT)).await?;
            self.inner
                .metrics
                .conflicts_moved
                .inc_by(report.moved as u64);
        }
        Ok(())
    }

    /// `POST /internal/leader`: the front-end's leader selection announces `notice.leader`.
    /// The chosen replica syncs from the most up-to-date peer before it answers (and before it
    /// numbers anything).
    ///
    /// # Errors
    /// [`Error::StaleEpoch`], [`Error::EpochClaimed`], [`Error::NotReady`] while recovering;
    /// sync failures.
    pub async fn on_leader_notice(&self, notice: LeaderNotice) -> Result<ReplicaStatus> {
        self.check_member(notice.leader)?;
        let _log = self.inner.log_lock.lock().await;
        let state = self.state();
        if state.role == ReplicaRole::Recovering {
            return Err(Error::NotReady("recovering".into()));
        }
        let news = self.judge(notice.epoch, notice.leader)?;
        if !news && (state.role == ReplicaRole::Leader || notice.leader != self.inner.id) {
            return Ok(self.status());
        }
        self.adopt_term(Term {
            epoch: notice.epoch,
            leader: Some(notice.leader),
        })
        .await?;
        if notice.leader != self.inner.id {
            let was = self.set_state(|s| s.role = ReplicaRole::Follower);
            tracing::info!(leader = %notice.leader, epoch = %notice.epoch, role = ?was.role, "following");
            return Ok(self.status());
        }
        self.set_state(|s| s.role = ReplicaRole::Candidate);
        // On failure stay a candidate: leading with a log that may miss acknowledged orders
        // could fork the numbering. The front-end tries the next replica or tries again.
        self.sync_from_best_peer().await?;
        {
            let mut followers = self
                .inner
                .followers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            followers.clear();
            for id in self.inner.peers.keys() {
                followers.insert(*id, Progress::Live);
            }
        }
        self.inner.metrics.followers_behind.set(0);
        self.set_state(|s| s.role = ReplicaRole::Leader);
        self.inner.metrics.leaderships.inc();
        tracing::info!(
            epoch = %notice.epoch,
            next = %self.inner.log.next_number(),
            "leading"
        );
        Ok(self.status())
    }

    /// `POST /internal/append`: a follower stores a batch from the leader.
    ///
    /// # Errors
    /// [`Error::StaleEpoch`] (the sender was deposed), [`Error::NotReady`] while recovering,
    /// [`Error::BadRequest`] for a malformed batch; sync and storage failures.
    pub async fn on_append(&self, request: AppendRequest) -> Result<AppendReply> {
        if request.leader == self.inner.id {
            return Err(Error::BadRequest(
                "a replica cannot append to itself".into(),
            ));
        }
        self.check_member(request.leader)?;
        let _log = self.inner.log_lock.lock().await;
        let state = self.state();
        if state.role == ReplicaRole::Recovering {
            return Err(Error::NotReady("recovering".into()));
        }
        if request.leader == self.inner.id {
            return Err(Error::BadRequest(
                "a replica cannot append to itself".into(),
            ));
        }
        if self.judge(request.epoch, request.leader)? {
            self.adopt_term(Term {
                epoch: request.epoch,
                leader: Some(request.leader),
            })
            .await?;
        }
        if state.role != ReplicaRole::Follower {
            tracing::warn!(leader = %request.leader, epoch = %request.epoch, "a newer leader exists; stepping down");
        }
        self.set_state(|s| s.role = ReplicaRole::Follower);
        let leader = self
            .inner
            .peers
            .get(&request.leader)
            .expect("check_member vetted the leader")
            .with_timeout(PAGE_TIMEOUT);
        let mut plan = self.plan(&request).await?;
        if plan == AppendPlan::Resync {
            let report = catch_up::sync_from(&self.inner.log, &leader).await?;
            self.inner
                .metrics
                .conflicts_moved
                .inc_by(report.moved as u64);
            plan = self.plan(&request).await?;
        }
        match plan {
            AppendPlan::Append { skip } => {
                self.inner
                    .log
                    .append(request.entries[skip..].to_vec())
                    .await?;
            }
            AppendPlan::Conflict { from, skip } => {
                let moved = self
                    .inner
                    .log
                    .move_suffix(
                        from,
                        format!("replaced by leader {}'s entries", request.leader),
                    )
                    .await?;
                self.inner.metrics.conflicts_moved.inc_by(moved as u64);
                tracing::warn!(%from, moved, leader = %request.leader, "moved conflicting entries aside");
                self.inner
                    .log
                    .append(request.entries[skip..].to_vec())
                    .await?;
            }
            AppendPlan::Invalid(why) => return Err(Error::BadRequest(why)),
            // Still not placeable after a sync (the leader's log moved on meanwhile): report
            // our tip, the leader marks us behind and its catch-up probe finishes the job.
            AppendPlan::Resync => {}
        }
        Ok(AppendReply {
            last: self.inner.log.last().map(crate::log_store::Last::tip),
        })
    }

    /// Judges a claim that `leader` leads `epoch`: refuses a stale epoch and a second leader of
    /// one epoch, and tells whether the claim is news (to be persisted before acting on it).
    fn judge(&self, epoch: Epoch, leader: ReplicaId) -> Result<bool> {
        match core::judge_epoch(self.state().term, epoch, leader) {
            EpochVerdict::Stale { newest } => Err(Error::StaleEpoch { got: epoch, newest }),
            EpochVerdict::Claimed { known } => Err(Error::EpochClaimed {
                epoch,
                known,
                claimed: leader,
            }),
            EpochVerdict::Current => Ok(false),
            EpochVerdict::Adopt => Ok(true),
        }
    }

    /// Refuses ids that are neither this replica nor one of its peers: adopting such a leader
    /// would leave the replica following nobody.
    fn check_member(&self, id: ReplicaId) -> Result<()> {
        if id == self.inner.id || self.inner.peers.contains_key(&id) {
            Ok(())
        } else {
            Err(Error::BadRequest(format!(
                "replica {id} is not a member of this cluster (see --peers)"
            )))
        }
    }

    async fn plan(&self, request: &AppendRequest) -> Result<AppendPlan> {
        let log = &self.inner.log;
        let last_entry = log.last();
        let last = last_entry.map(|l| l.number);
        // The usual case, a batch continuing our log, needs no read: the last entry is in
        // memory.
        let mine_at_prev = match (request.prev, last_entry) {
            (Some(prev), Some(l)) if prev.number == l.number => Some(l.entry_ref()),
            (Some(prev), Some(l)) if prev.number < l.number => {
                log.entry(prev.number)
                    .await?
                    .map(|e| bazaar_api::replica::EntryRef {
                        number: e.number,
                        request_id: e.request_id,
                    })
            }
            _ => None,
        };
        let first = request.prev.map_or(TxnNumber(0), |p| p.number.next());
        let overlap = match last {
            Some(last) if first <= last && !request.entries.is_empty() => {
                let len = u32::try_from(request.entries.len()).unwrap_or(u32::MAX);
                log.page(first, len)
                    .await?
                    .into_iter()
                    .map(|e| bazaar_api::replica::EntryRef {
                        number: e.number,
                        request_id: e.request_id,
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        Ok(core::plan_append(
            last,
            mine_at_prev,
            &overlap,
            request.prev,
            &request.entries,
        ))
    }
}
