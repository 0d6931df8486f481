//! The order service's half of the try-confirm-cancel trade saga (ARCHITECTURE.md, guarantee 1),
//! run by the leader.
//!
//! ```text
//! trade(request id r)
//!   r already in the log?  -> confirm r at the catalog, answer with its number
//!   catalog try r          -> 404 / 409 pass straight to the client
//!   commit the order       -> refused (nothing written): cancel r, fail
//!                             uncertain: fail without cancelling (retry or reconciliation settles)
//!   catalog confirm r      -> caches invalidated; answer with the number
//! ```
//!
//! Each request id runs at most once at a time on a replica (single flight): a retry that
//! arrives while the first attempt is still running waits for its outcome. The saga runs in its
//! own task, so a caller that disconnects cannot stop it between two steps.
//!
//! Reconciliation: the leader periodically lists reservations older than
//! [`RESERVATION_TIMEOUT`] and settles each one not in flight here: confirm if the order is in
//! the log, cancel if not. The log consulted is the leader's, which is authoritative once the
//! leader has synced.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bazaar_api::catalog::{TradeState, TradeTry, TradesQuery};
use bazaar_api::client::{CatalogClient, ClientError};
use bazaar_api::replica::OrderTrade;
use bazaar_api::{Epoch, RequestId, TxnNumber};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::replica::Replica;

/// A reservation this old, not in flight on the leader, is settled by reconciliation.
pub const RESERVATION_TIMEOUT: Duration = Duration::from_secs(5);

/// How often the leader looks for reservations to settle.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);

/// How long a confirm is retried while the catalog is unreachable before the trade is reported
/// as failed (the order stands; reconciliation confirms it once the catalog is back).
pub const CONFIRM_DEADLINE: Duration = Duration::from_secs(4);

/// How long a trade request waits for its saga before answering "still in progress" (503). The
/// saga goes on; a retry with the same request id joins it.
pub const TRADE_REPLY_DEADLINE: Duration = Duration::from_secs(3);

type Outcome = Option<Result<TxnNumber>>;

/// Labels of the trade outcome counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Labels of the saga step histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    step: &'static str,
}

fn step_histogram() -> Histogram {
    // 50 us doubling to about 0.4 s: a step is a round trip plus (mostly) one fsync.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 14))
}

/// Runs trades and reconciliation; cheap to clone.
#[derive(Clone)]
pub struct Trader {
    inner: Arc<Inner>,
}

struct Inner {
    replica: Replica,
    catalog: CatalogClient,
    /// Request ids whose saga is running here, with a channel carrying its outcome.
    in_flight: Mutex<HashMap<RequestId, watch::Receiver<Outcome>>>,
    tasks: TaskTracker,
    outcomes: Family<OutcomeLabels, Counter>,
    /// Time spent in each saga step, to see where a trade's latency goes.
    steps: Family<StepLabels, Histogram, fn() -> Histogram>,
}

impl std::fmt::Debug for Trader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trader").finish_non_exhaustive()
    }
}

/// What a saga or a settlement does.
enum Job {
    Trade(OrderTrade),
    Settle(RequestId, Epoch),
}

impl Trader {
    /// A trader for `replica`, calling the catalog through `catalog`.
    #[must_use]
    pub fn new(
        replica: Replica,
        catalog: CatalogClient,
        tasks: TaskTracker,
        metrics: &bazaar_service::Metrics,
    ) -> Self {
        let outcomes = Family::<OutcomeLabels, Counter>::default();
        metrics.register(
            "order_trades",
            "Trade sagas finished on this replica, by outcome",
            outcomes.clone(),
        );
        let steps: Family<StepLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(step_histogram);
        metrics.register(
            "order_saga_step_seconds",
            "Time of each trade saga step on the leader (lookup, try, commit, confirm)",
            steps.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                replica,
                catalog,
                in_flight: Mutex::new(HashMap::new()),
                tasks,
                outcomes,
                steps,
            }),
        }
    }

    /// Executes a trade (leader only) and returns its transaction number.
    ///
    /// # Errors
    /// [`Error::NotLeader`] and [`Error::NotReady`] (retry elsewhere or later), 404/409 from the
    /// catalog, [`Error::CatalogUnavailable`], [`Error::Abandoned`].
    pub async fn trade(&self, trade: OrderTrade) -> Result<TxnNumber> {
        self.inner.replica.leader_epoch()?;
        let id = trade.request_id;
        let mut outcome = self.join(id, Job::Trade(trade.clone()));
        let mut result = tokio::time::timeout(TRADE_REPLY_DEADLINE, wait(&mut outcome)).await;
        // A reconciliation that cancelled this id just before we asked: the trade left no trace,
        // so start it afresh once.
        if let Ok(Err(Error::Abandoned(_))) = result {
            outcome = self.join(id, Job::Trade(trade));
            result = tokio::time::timeout(TRADE_REPLY_DEADLINE, wait(&mut outcome)).await;
        }
        result.unwrap_or_else(|_| {
            Err(Error::NotReady(format!(
                "trade {id} is still in progress; retry with the same request id"
            )))
        })
    }

    /// Subscribes to the saga for `id`, starting `job` if none is running.
    fn join(&self, id: RequestId, job: Job) -> watch::Receiver<Outcome> {
        let mut in_flight = self
            .inner
            .in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(running) = in_flight.get(&id) {
            return running.clone();
        }
        let (done, outcome) = watch::channel(None);
        in_flight.insert(id, outcome.clone());
        drop(in_flight);
        let this = self.clone();
        self.inner.tasks.spawn(
            async move {
                let result = match job {
                    Job::Trade(trade) => this.run(trade).await,
                    Job::Settle(id, epoch) => this.settle(id, epoch).await,
                };
                this.count(&result);
                this.inner
                    .in_flight
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&id);
                let _ = done.send(Some(result));
            }
            .in_current_span(),
        );
        outcome
    }

    fn count(&self, result: &Result<TxnNumber>) {
        let outcome = match result {
            Ok(_) => "committed",
            Err(Error::UnknownStock(_)) => "unknown_stock",
            Err(Error::InsufficientStock(_)) => "insufficient",
            Err(Error::NotLeader { .. }) => "not_leader",
            Err(Error::Abandoned(_)) => "abandoned",
            Err(_) => "failed",
        };
        self.inner
            .outcomes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Records how long a step took.
    fn timed(&self, step: &'static str, started: Instant) {
        self.inner
            .steps
            .get_or_create(&StepLabels { step })
            .observe(started.elapsed().as_secs_f64());
    }

    async fn run(&self, trade: OrderTrade) -> Result<TxnNumber> {
        let replica = &self.inner.replica;
        let epoch = replica.leader_epoch()?;
        let id = trade.request_id;
        // Only a retry can find its request id in a log: a first attempt's id was just made.
        let found = if trade.attempt == 0 {
            None
        } else {
            let started = Instant::now();
            let found = replica.find_request(id).await?;
            self.timed("lookup", started);
            found
        };
        if let Some(number) = found {
            // A retry of a trade whose order is committed (perhaps by an earlier leader): make
            // sure the catalog has it final, then answer with the first number.
            self.confirm(&trade, epoch).await?;
            return Ok(number);
        }
        let started = Instant::now();
        let tried = self
            .inner
            .catalog
            .trade_try(&TradeTry {
                request_id: id,
                name: trade.name.clone(),
                kind: trade.kind,
                quantity: trade.quantity,
                epoch,
            })
            .await
            .map_err(|e| self.catalog_error(e))?;
        self.timed("try", started);
        let started = Instant::now();
        let committed = replica.commit(trade.clone()).await;
        self.timed("commit", started);
        let number = match committed {
            Ok(number) => number,
            Err(failure) => {
                if !failure.maybe_committed && tried.state == TradeState::Reserved {
                    self.cancel(id, epoch).await;
                }
                return Err(failure.error);
            }
        };
        tracing::info!(txn = %number, request_id = %id, stock = %trade.name, kind = %trade.kind, quantity = trade.quantity, "order committed");
        let started = Instant::now();
        self.confirm(&trade, epoch).await?;
        self.timed("confirm", started);
        Ok(number)
    }

    /// Confirms at the catalog, retrying while it is unreachable, up to [`CONFIRM_DEADLINE`].
    async fn confirm(&self, trade: &OrderTrade, epoch: Epoch) -> Result<()> {
        let deadline = tokio::time::Instant::now() + CONFIRM_DEADLINE;
        let mut pause = Duration::from_millis(20);
        let mut retried_cancelled = false;
        loop {
            match self
                .inner
                .catalog
                .trade_confirm(trade.request_id, epoch)
                .await
            {
                Ok(_) => return Ok(()),
                Err(ClientError::Rejected { status: 409, .. }) if !retried_cancelled => {
                    // The reservation was cancelled while the order was committed: reserve it
                    // again. This needs a reconciliation that raced a commit; it is logged
                    // because `bazaar verify` would otherwise be the first to notice.
                    tracing::error!(request_id = %trade.request_id, "committed order found cancelled at the catalog; reserving it again");
                    retried_cancelled = true;
                    self.inner
                        .catalog
                        .trade_try(&TradeTry {
                            request_id: trade.request_id,
                            name: trade.name.clone(),
                            kind: trade.kind,
                            quantity: trade.quantity,
                            epoch,
                        })
                        .await
                        .map_err(|e| self.catalog_error(e))?;
                }
                Err(e) if e.is_unreachable() || e.status() == Some(503) => {
                    if tokio::time::Instant::now() + pause > deadline {
                        return Err(Error::CatalogUnavailable(e.to_string()));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(self.catalog_error(e)),
            }
        }
    }

    /// Cancels a reservation; failures are left to reconciliation.
    async fn cancel(&self, id: RequestId, epoch: Epoch) {
        match self.inner.catalog.trade_cancel(id, epoch).await {
            Ok(_) | Err(ClientError::Rejected { status: 404, .. }) => {
                tracing::info!(request_id = %id, "reservation cancelled");
            }
            Err(e) => {
                tracing::warn!(request_id = %id, error = %e, "cancel failed; reconciliation will settle the reservation");
            }
        }
    }

    /// A stale epoch at the catalog means another replica leads now.
    fn catalog_error(&self, e: ClientError) -> Error {
        if e.status() == Some(412) {
            self.inner.replica.not_leader()
        } else {
            Error::from_catalog(e)
        }
    }

    /// Settles one orphaned reservation: confirm if its order is in the log, cancel if not.
    async fn settle(&self, id: RequestId, epoch: Epoch) -> Result<TxnNumber> {
        match self.inner.replica.find_request(id).await? {
            Some(number) => {
                self.inner
                    .catalog
                    .trade_confirm(id, epoch)
                    .await
                    .map_err(|e| self.catalog_error(e))?;
                tracing::info!(request_id = %id, txn = %number, "reconciled: confirmed an orphaned reservation");
                Ok(number)
            }
            None => {
                self.inner
                    .catalog
                    .trade_cancel(id, epoch)
                    .await
                    .map_err(|e| self.catalog_error(e))?;
                tracing::info!(request_id = %id, "reconciled: cancelled an orphaned reservation");
                Err(Error::Abandoned(id))
            }
        }
    }

    /// Runs reconciliation every [`RECONCILE_INTERVAL`] while this replica leads.
    pub async fn reconcile_loop(self, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(RECONCILE_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let Ok(epoch) = self.inner.replica.leader_epoch() else {
                continue;
            };
            if let Err(e) = self.reconcile_once(epoch).await {
                tracing::debug!(error = %e, "reconciliation round failed");
            }
        }
    }

    /// One reconciliation round.
    ///
    /// # Errors
    /// The catalog could not be listed.
    pub async fn reconcile_once(&self, epoch: Epoch) -> Result<usize> {
        let stale = self
            .inner
            .catalog
            .trades(&TradesQuery {
                state: Some(TradeState::Reserved),
                older_than_ms: Some(
                    u64::try_from(RESERVATION_TIMEOUT.as_millis()).unwrap_or(u64::MAX),
                ),
            })
            .await
            .map_err(Error::from_catalog)?;
        let mut settled = 0;
        for record in stale {
            let busy = self
                .inner
                .in_flight
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains_key(&record.request_id);
            if busy {
                continue;
            }
            let mut outcome = self.join(record.request_id, Job::Settle(record.request_id, epoch));
            let _ = wait(&mut outcome).await;
            settled += 1;
        }
        Ok(settled)
    }
}

async fn wait(outcome: &mut watch::Receiver<Outcome>) -> Result<TxnNumber> {
    match outcome.wait_for(Option::is_some).await {
        Ok(value) => value.clone().unwrap_or(Err(Error::ShuttingDown)),
        Err(_) => Err(Error::ShuttingDown),
    }
}
