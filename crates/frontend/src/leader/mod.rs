//! Finding the order leader, and sending it trades and queries with failover.
//!
//! One selection task does all the choosing (decisions in [`choice`], pure). Primary-backup:
//! ask every replica for its health, appoint the highest ready id under an epoch above every
//! epoch reported, telling the others first (once they know the new epoch they refuse the old
//! leader). Raft: the replicas elect their leader; the task finds it (or follows a "not leader"
//! hint). Requests never choose: they wait for a newer choice than the one that failed them,
//! each within its own deadline, and no lock is held across a network call.
//!
//! Failover: a request that finds the leader unreachable, "not leader", or silent for longer
//! than [`ATTEMPT_TIMEOUT`] (a paused leader) reports that choice failed and is retried with
//! the same request id on the next one (exactly once holds: the log keeps request ids). In
//! primary-backup mode a leader that only timed out, and still answers as the ready leader of
//! the chosen epoch, is kept ([`choice::still_leads`]): appointing it again would restart its
//! handover wait and fail what it was releasing. A leader that is busy (recovering, a new
//! leader's first entry, the handover wait, an outcome not yet known) is retried after a
//! backoff. Answers that retrying cannot change come back at once: a raft leader without a
//! majority (`no_quorum`), or no leader found for [`ELECTION_WAIT`] (a partition without a
//! majority, every replica down): 503 within about a second, not after the whole failover
//! deadline.
//!
//! # Layout
//! - [`choice`] — what to do with the replicas' health, free of I/O.

pub mod choice;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bazaar_api::client::{ClientError, ClientResult, Http, LeaderView, ReplicaClient};
use bazaar_api::log::Position;
use bazaar_api::replica::{LeaderNotice, OrderTrade, ReplicaStatus, TradeReceipt};
use bazaar_api::{Epoch, ErrorKind, LeaderHint, Order, ReplicaId, TxnNumber};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::choice::Choice;
use crate::error::{Error, Result};

/// Health checks during selection: a live replica on loopback answers in well under a
/// millisecond, and a killed one refuses at once; the timeout only matters for a hung one.
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(300);

/// How long a chosen replica may take to copy missed entries before it answers the notice.
pub const NOTICE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one attempt of a request may wait for the leader before the front-end suspects it
/// (a paused process) and looks for another. A retry on the same leader is harmless: the
/// request id makes it the same trade.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1500);

/// How long requests wait for a leader to be found before they get 503 at once (the search
/// goes on in the background).
pub const ELECTION_WAIT: Duration = Duration::from_millis(1000);

/// How long a request keeps retrying through failovers before the client gets 503, unless
/// `--failover-deadline` says otherwise.
pub const FAILOVER_DEADLINE_DEFAULT: Duration = Duration::from_secs(10);

/// First and longest pause between retries of a busy leader, and between selection rounds
/// that found nobody.
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(10);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(250);

/// Leader counters exported at `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct LeaderMetrics {
    selections: Counter,
    failovers: Counter,
    leader: Gauge,
}

impl LeaderMetrics {
    /// Registers the counters.
    pub fn register(&self, metrics: &bazaar_service::Metrics) {
        metrics.register(
            "leader_selections",
            "Leader choices made (primary-backup appointments, raft leaders found)",
            self.selections.clone(),
        );
        metrics.register(
            "leader_failovers",
            "Requests that found the leader failed and triggered a new choice",
            self.failovers.clone(),
        );
        metrics.register(
            "leader_id",
            "Id of the current order leader (0: none)",
            self.leader.clone(),
        );
    }
}

/// The current leader.
#[derive(Debug, Clone)]
pub struct Current {
    /// Its client.
    pub client: ReplicaClient,
    /// Its epoch.
    pub epoch: Epoch,
    /// Grows with every choice; identifies this one in failure reports.
    pub generation: u64,
}

/// What the selection task knows.
#[derive(Debug, Clone)]
pub enum Leadership {
    /// This replica leads.
    Known(Current),
    /// Looking; requests wait (within their deadline).
    Searching,
    /// Looked for [`ELECTION_WAIT`] without success, or raft reports no majority: requests fail
    /// at once with this reason while the search goes on.
    Absent(String),
}

/// Why a selection round found no leader, and whether waiting can help soon.
#[derive(Debug)]
struct NoLeader {
    why: String,
    /// True when retrying soon cannot help (raft without a majority).
    lasting: bool,
}

/// A failed choice, as a request reports it.
#[derive(Debug)]
struct Failure {
    generation: u64,
    hint: Option<LeaderHint>,
}

/// Finds the leader and talks to it; cheap to clone.
#[derive(Clone)]
pub struct LeaderSelector {
    inner: Arc<Inner>,
}

struct Inner {
    /// Highest id first.
    replicas: Vec<ReplicaClient>,
    leadership: watch::Sender<Leadership>,
    /// Wakes the selection task early (a request met no leader).
    nudge: tokio::sync::Notify,
    failures: mpsc::UnboundedSender<Failure>,
    failover_deadline: Duration,
    metrics: LeaderMetrics,
}

impl std::fmt::Debug for LeaderSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderSelector")
            .field("current", &self.current().map(|c| c.client.id()))
            .finish_non_exhaustive()
    }
}

impl LeaderSelector {
    /// A selector over `replicas`; its task starts choosing at once and runs in `tasks` until
    /// `stop`.
    #[must_use]
    pub fn start(
        replicas: &BTreeMap<ReplicaId, String>,
        http: &Http,
        failover_deadline: Duration,
        metrics: LeaderMetrics,
        tasks: &tokio_util::task::TaskTracker,
        stop: &CancellationToken,
    ) -> Self {
        let replicas: Vec<ReplicaClient> = replicas
            .iter()
            .rev()
            .map(|(id, url)| ReplicaClient::new(http.clone(), *id, url.clone()))
            .collect();
        let (failures, reports) = mpsc::unbounded_channel();
        let selector = Self {
            inner: Arc::new(Inner {
                replicas,
                leadership: watch::Sender::new(Leadership::Searching),
                nudge: tokio::sync::Notify::new(),
                failures,
                failover_deadline,
                metrics,
            }),
        };
        let task = selector.clone();
        let stop = stop.clone();
        tasks.spawn(async move { task.run(reports, stop).await }.in_current_span());
        selector
    }

    /// The current leader, if known.
    #[must_use]
    pub fn current(&self) -> Option<Current> {
        match &*self.inner.leadership.borrow() {
            Leadership::Known(current) => Some(current.clone()),
            _ => None,
        }
    }

    /// Follows every change of leadership (the feed subscribes to whoever leads).
    #[must_use]
    pub fn watch(&self) -> watch::Receiver<Leadership> {
        self.inner.leadership.subscribe()
    }

    /// Says that `current` failed (the feed or a request found it so).
    pub fn report_failed(&self, current: &Current, hint: Option<LeaderHint>) {
        let _ = self.inner.failures.send(Failure {
            generation: current.generation,
            hint,
        });
    }

    fn publish(&self, leadership: Leadership) {
        if let Leadership::Known(current) = &leadership {
            self.inner
                .metrics
                .leader
                .set(i64::from(current.client.id().0));
        } else {
            self.inner.metrics.leader.set(0);
        }
        self.inner.leadership.send_replace(leadership);
    }

    /// `GET /leader`.
    ///
    /// # Errors
    /// [`Error::NoReplica`] when no leader is known within [`ELECTION_WAIT`].
    pub async fn view(&self) -> Result<LeaderView> {
        let current = self.leader(Instant::now() + ELECTION_WAIT).await?;
        Ok(LeaderView {
            id: current.client.id(),
            url: current.client.base().to_owned(),
        })
    }

    /// The leader, waiting for one to be known until `deadline`.
    async fn leader(&self, deadline: Instant) -> Result<Current> {
        let mut watching = self.inner.leadership.subscribe();
        let absent = matches!(&*watching.borrow_and_update(), Leadership::Absent(_));
        // While none has been found for a while, the search is nudged and the request waits
        // one more round (at most ELECTION_WAIT) before it gets the reason there is none.
        let deadline = if absent {
            self.inner.nudge.notify_one();
            deadline.min(Instant::now() + ELECTION_WAIT)
        } else {
            deadline
        };
        let settled = watching.wait_for(|l| match l {
            Leadership::Known(_) => true,
            Leadership::Searching => false,
            Leadership::Absent(_) => !absent,
        });
        match tokio::time::timeout_at(deadline, settled).await {
            Ok(Ok(leadership)) => match &*leadership {
                Leadership::Known(current) => Ok(current.clone()),
                Leadership::Absent(why) => Err(Error::NoReplica(why.clone())),
                Leadership::Searching => Err(Error::NoReplica("still looking".into())),
            },
            Ok(Err(_)) => Err(Error::NoReplica("the front-end is shutting down".into())),
            Err(_) => Err(Error::NoReplica(match &*self.inner.leadership.borrow() {
                Leadership::Absent(why) => why.clone(),
                _ => "no order leader was found in time".into(),
            })),
        }
    }

    /// Sends a trade to the leader, failing over as needed, with the same request id throughout.
    ///
    /// # Errors
    /// `unknown_stock`, `insufficient_stock`, `bad_request` pass through; [`Error::NoReplica`]
    /// when no leader took it before the failover deadline.
    pub async fn trade(&self, trade: &OrderTrade) -> Result<TradeReceipt> {
        self.with_failover(|leader| async move { leader.trade(trade).await })
            .await
    }

    /// Asks the leader for an order, failing over as needed.
    ///
    /// # Errors
    /// `unknown_order` passes through; [`Error::NoReplica`].
    pub async fn order_get(&self, number: TxnNumber) -> Result<Order> {
        self.with_failover(|leader| async move { leader.order_get(number).await })
            .await
    }

    /// A position every acknowledged change is below, from the leader (for a lookup the
    /// front-end cannot bound on its own).
    ///
    /// # Errors
    /// [`Error::NoReplica`].
    pub async fn position(&self) -> Result<Position> {
        self.with_failover(|leader| async move { leader.position().await.map(|p| p.position) })
            .await
    }

    async fn with_failover<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(ReplicaClient) -> Fut,
        Fut: Future<Output = ClientResult<T>>,
    {
        let deadline = Instant::now() + self.inner.failover_deadline;
        let mut pause = RETRY_PAUSE_MIN;
        loop {
            let current = self.leader(deadline).await?;
            let attempt = tokio::time::timeout_at(
                deadline.min(Instant::now() + ATTEMPT_TIMEOUT),
                call(current.client.clone()),
            )
            .await;
            let busy = match attempt {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if e.is_unreachable() || e.kind() == Some(ErrorKind::NotLeader) => {
                    self.inner.metrics.failovers.inc();
                    tracing::warn!(leader = %current.client.id(), error = %e, "order leader failed; choosing again");
                    let hint = match e {
                        ClientError::Rejected { leader, .. } => leader,
                        _ => None,
                    };
                    self.report_failed(&current, hint);
                    self.wait_for_change(&current, deadline).await;
                    continue;
                }
                Ok(Err(e)) if e.kind() == Some(ErrorKind::NoQuorum) => {
                    return Err(Error::from_leader(e));
                }
                Ok(Err(
                    e @ ClientError::Rejected {
                        kind: ErrorKind::NotReady | ErrorKind::Uncertain | ErrorKind::Overloaded,
                        ..
                    },
                )) => Error::from_leader(e),
                Ok(Err(e)) => return Err(Error::from_leader(e)),
                Err(_) if Instant::now() >= deadline => {
                    return Err(Error::NoReplica(format!(
                        "the order leader did not answer within the failover deadline ({:?})",
                        self.inner.failover_deadline
                    )));
                }
                Err(_) => {
                    // A leader silent this long is suspect (a paused process): look again; if
                    // it is still the leader the retry joins the first attempt.
                    self.inner.metrics.failovers.inc();
                    tracing::warn!(leader = %current.client.id(), "order leader did not answer in time; checking who leads");
                    self.report_failed(&current, None);
                    self.wait_for_change(&current, deadline.min(Instant::now() + ELECTION_WAIT))
                        .await;
                    continue;
                }
            };
            if Instant::now() + pause >= deadline {
                return Err(busy);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
        }
    }

    /// Waits until the selection moved past `failed` (or `deadline`).
    async fn wait_for_change(&self, failed: &Current, deadline: Instant) {
        let mut watching = self.inner.leadership.subscribe();
        let moved = watching.wait_for(|l| match l {
            Leadership::Known(c) => c.generation != failed.generation,
            Leadership::Searching => false,
            Leadership::Absent(_) => true,
        });
        let _ = tokio::time::timeout_at(deadline, moved).await;
    }

    async fn statuses(&self) -> Vec<(ReplicaId, Option<ReplicaStatus>)> {
        futures::future::join_all(
            self.inner.replicas.iter().map(|r| async move {
                (r.id(), r.with_timeout(STATUS_TIMEOUT).status().await.ok())
            }),
        )
        .await
    }

    /// The selection task: chooses whenever there is no leader or the current one failed.
    async fn run(self, mut failures: mpsc::UnboundedReceiver<Failure>, stop: CancellationToken) {
        let mut generation = 0_u64;
        loop {
            // Find (or appoint) a leader.
            let mut refused = Vec::new();
            let mut pause = RETRY_PAUSE_MIN;
            let searching_since = Instant::now();
            let found = loop {
                if stop.is_cancelled() {
                    return;
                }
                match self.round(&mut refused).await {
                    Ok(found) => break found,
                    Err(NoLeader { why, lasting }) => {
                        if lasting || searching_since.elapsed() >= ELECTION_WAIT {
                            if !matches!(&*self.inner.leadership.borrow(), Leadership::Absent(w) if *w == why)
                            {
                                tracing::warn!(reason = %why, "no order leader; requests get 503 until one is found");
                            }
                            self.publish(Leadership::Absent(why));
                        }
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                    () = self.inner.nudge.notified() => pause = RETRY_PAUSE_MIN,
                }
                pause = (pause * 2).min(RETRY_PAUSE_MAX);
            };
            generation += 1;
            let (client, epoch) = found;
            tracing::info!(leader = %client.id(), %epoch, url = %client.base(), "order leader chosen");
            self.inner.metrics.selections.inc();
            self.publish(Leadership::Known(Current {
                client,
                epoch,
                generation,
            }));
            // Wait for a report that this choice failed (older reports are stale), unless the
            // leader turns out to be slow rather than failed.
            let hint = loop {
                let hint = tokio::select! {
                    () = stop.cancelled() => return,
                    report = failures.recv() => match report {
                        Some(f) if f.generation == generation => f.hint,
                        Some(_) => continue,
                        None => return,
                    },
                };
                if hint.is_none() && self.still_leads(generation).await {
                    continue;
                }
                break hint;
            };
            // Raft: a "not leader" reply naming another replica is followed at once.
            if let Some(hint) = hint
                && let Some(client) = self.inner.replicas.iter().find(|r| r.id() == hint.id)
                && self.is_raft_leader(client).await
            {
                generation += 1;
                let epoch = self.current().map_or(Epoch(0), |c| c.epoch);
                tracing::info!(leader = %client.id(), "following the leader hint");
                self.publish(Leadership::Known(Current {
                    client: client.clone(),
                    epoch,
                    generation,
                }));
                continue;
            }
            self.publish(Leadership::Searching);
        }
    }

    /// Primary-backup: whether choice `generation` still stands (see [`choice::still_leads`]).
    async fn still_leads(&self, generation: u64) -> bool {
        let Some(current) = self.current().filter(|c| c.generation == generation) else {
            return false;
        };
        let leads = choice::still_leads(&self.statuses().await, current.client.id(), current.epoch);
        if leads {
            tracing::info!(leader = %current.client.id(), epoch = %current.epoch, "the order leader is slow, not failed: it still leads its epoch; keeping it");
        }
        leads
    }

    async fn is_raft_leader(&self, client: &ReplicaClient) -> bool {
        client
            .with_timeout(STATUS_TIMEOUT)
            .status()
            .await
            .is_ok_and(|s| {
                s.mode == bazaar_api::replica::ReplicationMode::Raft
                    && s.role == bazaar_api::replica::ReplicaRole::Leader
            })
    }

    /// One selection round: a leader and its epoch, or why there is none yet.
    async fn round(
        &self,
        refused: &mut Vec<ReplicaId>,
    ) -> std::result::Result<(ReplicaClient, Epoch), NoLeader> {
        let statuses = self.statuses().await;
        let passing = |why: String| NoLeader {
            why,
            lasting: false,
        };
        match choice::choose(&statuses, refused) {
            Choice::Found { leader, epoch } => self
                .client(leader)
                .map(|c| (c, epoch))
                .ok_or_else(|| passing(format!("replica {leader} is not configured here"))),
            Choice::NoMajority { answered, needed } => Err(NoLeader {
                why: format!(
                    "only {answered} of the {} order replicas answer; raft needs a majority \
                     ({needed}) to elect a leader and commit a trade",
                    statuses.len()
                ),
                lasting: true,
            }),
            Choice::Wait(why) => Err(passing(why)),
            Choice::Appoint {
                candidate,
                epoch,
                live,
            } => {
                let notice = LeaderNotice {
                    leader: candidate,
                    epoch,
                    live: live.clone(),
                };
                // Followers first: once they know the new epoch they refuse the old leader, so
                // the new one copies a log nobody can still extend behind its back.
                let others = live
                    .iter()
                    .filter(|id| **id != candidate)
                    .filter_map(|id| self.client(*id));
                futures::future::join_all(others.map(|r| {
                    let notice = &notice;
                    async move {
                        if let Err(e) = r.with_timeout(STATUS_TIMEOUT * 3).leader_notice(notice).await {
                            tracing::debug!(replica = %r.id(), error = %e, "leader notice not delivered");
                        }
                    }
                }))
                .await;
                let Some(client) = self.client(candidate) else {
                    refused.push(candidate);
                    return Err(passing(format!(
                        "replica {candidate} is not configured here"
                    )));
                };
                match client
                    .with_timeout(NOTICE_TIMEOUT)
                    .leader_notice(&notice)
                    .await
                {
                    Ok(_) => Ok((client, epoch)),
                    Err(e) => {
                        tracing::warn!(replica = %candidate, error = %e, "replica did not take leadership; trying the next");
                        refused.push(candidate);
                        Err(passing(e.to_string()))
                    }
                }
            }
        }
    }

    fn client(&self, id: ReplicaId) -> Option<ReplicaClient> {
        self.inner.replicas.iter().find(|r| r.id() == id).cloned()
    }
}
