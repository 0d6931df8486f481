//! Leader selection and failover for the order replicas (SPEC.md sections 5 and 6).
//!
//! Selection: ask every replica for its status at once, then walk them from the highest id down;
//! the first that answers and has finished recovering is told it leads, under an epoch one
//! above any epoch a replica reported. The others are told first, so a deposed leader is fenced
//! before the new one collects orders from them. The chosen replica answers once it holds every
//! order any reachable replica holds.
//!
//! Failover: a request that finds the leader unreachable, timed out or "not leader" triggers a
//! re-selection and is retried with the same request id. Concurrent failures trigger one
//! re-selection: each caller passes the generation it saw fail, and a caller that finds a newer
//! generation simply uses it.
//!
//! Raft mode (learned from the replicas' `/health`): the replicas elect their leader, so the
//! front-end never sends leader notices; it discovers the leader instead. A "not leader" reply
//! naming the leader is followed at once; otherwise (a connection failure, an election in
//! progress, a leader that answers 503) every replica's health is polled every
//! [`RAFT_POLL_PAUSE`] until one reports itself leader, within the failover deadline. When fewer
//! than a majority of the replicas answer, no leader can commit anything, so the request fails
//! at once with 503 instead of waiting out the deadline.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazaar_api::client::{ClientError, ClientResult, Http, LeaderView, ReplicaClient};
use bazaar_api::replica::{
    LeaderNotice, OrderTrade, ReplicaRole, ReplicaStatus, ReplicationMode, TradeAck,
};
use bazaar_api::{Epoch, LeaderHint, Order, ReplicaId, TxnNumber};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::error::{Error, Result};

/// Health checks during selection: a live replica on loopback answers in well under a
/// millisecond, and a killed one refuses at once; the timeout only matters for a hung one.
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(300);

/// How long a chosen replica may take to collect missed orders before it answers the notice.
pub const NOTICE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a trade or order query may wait for the leader before it counts as failed. Longer
/// than the leader's own reply deadline, so a slow saga answers "in progress" instead.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a request keeps retrying through failovers before the client gets 503, unless
/// `--failover-deadline` says otherwise.
pub const FAILOVER_DEADLINE_DEFAULT: Duration = Duration::from_secs(10);

/// First and longest pause between retries of a busy or absent leader.
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(10);
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(250);

/// Raft mode: pause between polls of the replicas' health while no leader is known. An
/// election on loopback takes a few hundred milliseconds; polling faster only adds load.
pub const RAFT_POLL_PAUSE: Duration = Duration::from_millis(25);

/// Raft mode: "not leader" hints followed in a row by one request before it falls back to
/// polling (a hint can name a leader that just died).
const HINTS_FOLLOWED_MAX: u32 = 3;

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
            "Leader selections that chose a leader",
            self.selections.clone(),
        );
        metrics.register(
            "leader_failovers",
            "Requests that found the leader failed and triggered a re-selection",
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
    /// Grows with every selection; identifies this choice in failure reports.
    pub generation: u64,
}

/// Chooses and remembers the order leader; cheap to clone.
#[derive(Clone)]
pub struct LeaderSelector {
    inner: Arc<Inner>,
}

struct Inner {
    /// Highest id first.
    replicas: Vec<ReplicaClient>,
    current: Mutex<Option<Current>>,
    /// The replicas' mode, as their health reports last said; `None` until one answered.
    mode: Mutex<Option<ReplicationMode>>,
    failover_deadline: Duration,
    /// Held for a whole selection: one at a time.
    selecting: tokio::sync::Mutex<u64>,
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
    /// A selector over `replicas`; nothing is chosen until the first request or [`Self::select`].
    #[must_use]
    pub fn new(
        replicas: &BTreeMap<ReplicaId, String>,
        http: &Http,
        failover_deadline: Duration,
        metrics: LeaderMetrics,
    ) -> Self {
        let replicas = replicas
            .iter()
            .rev()
            .map(|(id, url)| {
                ReplicaClient::new(http.with_timeout(REQUEST_TIMEOUT), *id, url.clone())
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                replicas,
                current: Mutex::new(None),
                mode: Mutex::new(None),
                failover_deadline,
                selecting: tokio::sync::Mutex::new(0),
                metrics,
            }),
        }
    }

    fn current(&self) -> Option<Current> {
        self.inner
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn mode(&self) -> Option<ReplicationMode> {
        *self
            .inner
            .mode
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn is_raft(&self) -> bool {
        self.mode() == Some(ReplicationMode::Raft)
    }

    /// `GET /leader`. In raft mode the remembered leader is checked first: the replicas may
    /// have elected another since the last request.
    ///
    /// # Errors
    /// [`Error::NoReplica`] when no replica can lead.
    pub async fn view(&self) -> Result<LeaderView> {
        let mut current = self.leader().await.map_err(Failed::into_error)?;
        if self.is_raft() {
            let still = current
                .client
                .with_timeout(STATUS_TIMEOUT)
                .status()
                .await
                .is_ok_and(|s| s.role == ReplicaRole::Leader);
            if !still {
                current = self
                    .select_or_why(Some(current.generation))
                    .await
                    .map_err(Failed::into_error)?;
            }
        }
        Ok(LeaderView {
            id: current.client.id(),
            url: current.client.base().to_owned(),
        })
    }

    async fn leader(&self) -> Result<Current, Failed> {
        match self.current() {
            Some(current) => Ok(current),
            None => self.select_or_why(None).await,
        }
    }

    fn set_current(&self, current: Option<Current>) {
        self.inner
            .metrics
            .leader
            .set(current.as_ref().map_or(0, |c| i64::from(c.client.id().0)));
        *self
            .inner
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = current;
    }

    async fn statuses(&self) -> Vec<Option<ReplicaStatus>> {
        futures::future::join_all(
            self.inner
                .replicas
                .iter()
                .map(|r| async move { r.with_timeout(STATUS_TIMEOUT).status().await.ok() }),
        )
        .await
    }

    /// Runs a selection (in raft mode, a discovery), unless one made after `failed` already
    /// did.
    ///
    /// # Errors
    /// [`Error::NoReplica`] when no replica answered and accepted leadership (raft: no leader
    /// was found in time, or too few replicas answer).
    pub async fn select(&self, failed: Option<u64>) -> Result<Current> {
        self.select_or_why(failed).await.map_err(Failed::into_error)
    }

    async fn select_or_why(&self, failed: Option<u64>) -> Result<Current, Failed> {
        let mut generation = self.inner.selecting.lock().await;
        if let Some(current) = self.current()
            && Some(current.generation) != failed
        {
            return Ok(current);
        }
        self.set_current(None);
        let statuses = self.statuses().await;
        if let Some(mode) = statuses.iter().flatten().map(|s| s.mode).next() {
            *self
                .inner
                .mode
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(mode);
        }
        if self.is_raft() {
            return self.discover(&mut generation, statuses).await;
        }
        let mut epoch = Epoch(
            statuses
                .iter()
                .flatten()
                .map(|s| s.epoch.0)
                .max()
                .unwrap_or(0)
                + 1,
        );
        let mut last_error = "no replica answered its health check".to_owned();
        for (candidate, status) in self.inner.replicas.iter().zip(&statuses) {
            match status {
                Some(s) if s.ready => {}
                Some(_) => {
                    tracing::info!(replica = %candidate.id(), "replica is still recovering; skipped");
                    continue;
                }
                None => {
                    tracing::info!(replica = %candidate.id(), "replica did not answer its health check");
                    continue;
                }
            }
            let notice = LeaderNotice {
                leader: candidate.id(),
                epoch,
            };
            // Followers first: once they know the new epoch they refuse the old leader, so
            // the new one collects a log nobody can still extend behind its back.
            let others = self
                .inner
                .replicas
                .iter()
                .zip(&statuses)
                .filter(|(r, s)| r.id() != candidate.id() && s.is_some());
            futures::future::join_all(others.map(|(r, _)| async move {
                if let Err(e) = r
                    .with_timeout(STATUS_TIMEOUT * 3)
                    .leader_notice(&notice)
                    .await
                {
                    tracing::debug!(replica = %r.id(), error = %e, "leader notice not delivered");
                }
            }))
            .await;
            match candidate
                .with_timeout(NOTICE_TIMEOUT)
                .leader_notice(&notice)
                .await
            {
                Ok(_) => {
                    *generation += 1;
                    let current = Current {
                        client: candidate.clone(),
                        epoch,
                        generation: *generation,
                    };
                    self.set_current(Some(current.clone()));
                    self.inner.metrics.selections.inc();
                    tracing::info!(leader = %candidate.id(), %epoch, url = %candidate.base(), "order leader selected");
                    return Ok(current);
                }
                Err(e) => {
                    tracing::warn!(replica = %candidate.id(), error = %e, "replica refused leadership; trying the next");
                    last_error = e.to_string();
                    // Followers now know this epoch with that leader; the next try needs a
                    // fresh one.
                    epoch = Epoch(epoch.0 + 1);
                }
            }
        }
        Err(Failed::Retry(Error::NoReplica(last_error)))
    }

    /// Raft mode: polls the replicas' health until one reports itself leader (the newest term
    /// wins if a deposed leader has not noticed yet), within the failover deadline. Fails at
    /// once, and finally, when fewer than a majority answer: no leader can commit then.
    async fn discover(
        &self,
        generation: &mut u64,
        mut statuses: Vec<Option<ReplicaStatus>>,
    ) -> Result<Current, Failed> {
        let deadline = tokio::time::Instant::now() + self.inner.failover_deadline;
        let total = self.inner.replicas.len();
        let majority = total / 2 + 1;
        loop {
            let answered = statuses.iter().flatten().count();
            if answered < majority {
                return Err(Failed::Final(Error::NoReplica(format!(
                    "only {answered} of the {total} order replicas answer; raft needs a majority \
                     ({majority}) to elect a leader and commit a trade"
                ))));
            }
            let leader = self
                .inner
                .replicas
                .iter()
                .zip(&statuses)
                .filter_map(|(r, s)| s.as_ref().map(|s| (r, s)))
                .filter(|(r, s)| {
                    s.role == ReplicaRole::Leader && s.ready && s.leader == Some(r.id())
                })
                .max_by_key(|(_, s)| s.epoch);
            if let Some((client, status)) = leader {
                *generation += 1;
                let current = Current {
                    client: client.clone(),
                    epoch: status.epoch,
                    generation: *generation,
                };
                self.set_current(Some(current.clone()));
                self.inner.metrics.selections.inc();
                tracing::info!(leader = %client.id(), term = %status.epoch, url = %client.base(), "raft leader found");
                return Ok(current);
            }
            if tokio::time::Instant::now() + RAFT_POLL_PAUSE > deadline {
                return Err(Failed::Retry(Error::NoReplica(format!(
                    "no order replica has won the raft election within {:?}",
                    self.inner.failover_deadline
                ))));
            }
            tokio::time::sleep(RAFT_POLL_PAUSE).await;
            statuses = self.statuses().await;
        }
    }

    /// Raft mode: makes the replica a "not leader" reply named the leader, unless a newer
    /// choice than the failed one exists already. `None` when the hint names no known replica.
    async fn follow_hint(&self, failed: u64, hint: &LeaderHint) -> Option<Current> {
        let mut generation = self.inner.selecting.lock().await;
        if let Some(current) = self.current()
            && current.generation != failed
        {
            return Some(current);
        }
        let client = self.inner.replicas.iter().find(|r| r.id() == hint.id)?;
        *generation += 1;
        let current = Current {
            client: client.clone(),
            epoch: self.current().map_or(Epoch(0), |c| c.epoch),
            generation: *generation,
        };
        self.set_current(Some(current.clone()));
        tracing::info!(leader = %client.id(), "following the raft leader hint");
        Some(current)
    }

    /// Sends a trade to the leader, failing over as needed, with the same request id throughout.
    ///
    /// # Errors
    /// 404/409/400 from the saga pass through; [`Error::NoReplica`] when no leader took it before
    /// the failover deadline.
    pub async fn trade(&self, trade: &OrderTrade) -> Result<TradeAck> {
        let attempt = std::sync::atomic::AtomicU32::new(0);
        self.with_failover(|leader| {
            let trade = OrderTrade {
                attempt: attempt.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                ..trade.clone()
            };
            async move { leader.trade(&trade).await }
        })
        .await
    }

    /// Asks the leader for an order, failing over as needed.
    ///
    /// # Errors
    /// 404 passes through; [`Error::NoReplica`].
    pub async fn order_get(&self, number: TxnNumber) -> Result<Order> {
        self.with_failover(|leader| async move { leader.order_get(number).await })
            .await
    }

    async fn with_failover<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(ReplicaClient) -> Fut,
        Fut: Future<Output = ClientResult<T>>,
    {
        let deadline = tokio::time::Instant::now() + self.inner.failover_deadline;
        let mut pause = RETRY_PAUSE_MIN;
        let mut hints_followed = 0;
        loop {
            let outcome = match self.leader().await {
                Ok(current) => match call(current.client.clone()).await {
                    Ok(value) => return Ok(value),
                    Err(e) if is_leader_failure(&e) => {
                        self.inner.metrics.failovers.inc();
                        tracing::warn!(leader = %current.client.id(), error = %e, "order leader failed; re-selecting");
                        if self.is_raft()
                            && hints_followed < HINTS_FOLLOWED_MAX
                            && let ClientError::Rejected {
                                leader: Some(hint), ..
                            } = &e
                            && hint.id != current.client.id()
                            && self.follow_hint(current.generation, hint).await.is_some()
                        {
                            hints_followed += 1;
                            continue;
                        }
                        match self.select_or_why(Some(current.generation)).await {
                            // A new leader: retry at once.
                            Ok(_) => continue,
                            Err(Failed::Final(e)) => return Err(e),
                            Err(Failed::Retry(e)) => e,
                        }
                    }
                    // Busy: recovering, collecting orders, catalog briefly away, or a trade
                    // still in progress. The same leader, a moment later. In raft mode the
                    // leader may also have lost its majority: look again, and give up at once
                    // if too few replicas answer.
                    Err(ClientError::Rejected {
                        status: 503,
                        message,
                        ..
                    }) => {
                        if self.is_raft()
                            && let Err(Failed::Final(e)) =
                                self.select_or_why(Some(current.generation)).await
                        {
                            return Err(e);
                        }
                        Error::NoReplica(message)
                    }
                    Err(e) => return Err(Error::from_leader(e)),
                },
                Err(Failed::Final(e)) => return Err(e),
                Err(Failed::Retry(e)) => e,
            };
            if tokio::time::Instant::now() + pause > deadline {
                return Err(outcome);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RETRY_PAUSE_MAX);
        }
    }
}

/// Why no leader could be chosen, and whether retrying within the deadline can help.
enum Failed {
    /// Perhaps later: an election may end, a replica may finish recovering.
    Retry(Error),
    /// Not before the request's deadline passes: too few raft replicas answer.
    Final(Error),
}

impl Failed {
    fn into_error(self) -> Error {
        match self {
            Self::Retry(e) | Self::Final(e) => e,
        }
    }
}

/// Failures that mean "this replica cannot be the leader now".
fn is_leader_failure(e: &ClientError) -> bool {
    e.is_unreachable() || e.status() == Some(bazaar_api::client::STATUS_NOT_LEADER)
}
