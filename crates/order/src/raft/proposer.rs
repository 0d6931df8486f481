//! The proposer: orders queued by concurrent trades share one log entry, and barriers queue
//! behind them.

use std::sync::Arc;

use bazaar_api::TxnNumber;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::types::{Command, OrderCommand};
use super::{COMMIT_TIMEOUT, RaftReplica};
use crate::error::{Error, Result};
use crate::replica::CommitFailure;

/// Orders waiting for the proposer at most.
pub(super) const PROPOSAL_QUEUE_LEN: usize = 4096;

/// Most orders in one log entry.
const PROPOSAL_BATCH_LEN_MAX: usize = 256;

/// Entries proposed and not yet applied at most. openraft appends (and syncs) each proposal on
/// its own; while these are under way new orders gather into the next entry, so under load an
/// entry carries many orders, and one proposal overlaps the previous one's replication.
const PROPOSALS_IN_FLIGHT_MAX: usize = 2;

/// What waits in the proposer's queue.
pub(super) enum Proposal {
    /// A trade's order.
    Order {
        order: OrderCommand,
        reply: oneshot::Sender<Result<TxnNumber, CommitFailure>>,
    },
    /// Answered once an entry proposed after every earlier proposal has been applied.
    Barrier { reply: oneshot::Sender<Result<()>> },
}

impl Proposal {
    fn is_abandoned(&self) -> bool {
        match self {
            Self::Order { reply, .. } => reply.is_closed(),
            Self::Barrier { reply } => reply.is_closed(),
        }
    }

    pub(super) fn refuse(self, error: Error) {
        match self {
            Self::Order { reply, .. } => {
                let _ = reply.send(Err(CommitFailure::refused(error)));
            }
            Self::Barrier { reply } => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// A proposal's reply, while its entry is under way.
enum Waiting {
    Order(oneshot::Sender<Result<TxnNumber, CommitFailure>>),
    Barrier(oneshot::Sender<Result<()>>),
}

impl RaftReplica {
    /// Proposes queued orders, all that wait in one entry, with at most
    /// [`PROPOSALS_IN_FLIGHT_MAX`] entries under way. Barriers go through the same queue, so a
    /// barrier's entry follows every order queued before it.
    pub(super) async fn propose(
        &self,
        mut queue: mpsc::Receiver<Proposal>,
        tasks: &TaskTracker,
        stop: &CancellationToken,
    ) {
        let in_flight = Arc::new(Semaphore::new(PROPOSALS_IN_FLIGHT_MAX));
        loop {
            let permit = tokio::select! {
                () = stop.cancelled() => return,
                permit = Arc::clone(&in_flight).acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
            };
            let mut batch = tokio::select! {
                () = stop.cancelled() => return,
                next = bazaar_service::batch::recv(&mut queue, PROPOSAL_BATCH_LEN_MAX) => match next {
                    Some(batch) => batch,
                    None => return,
                },
            };
            // An order whose saga stopped waiting was answered "uncertain"; proposing it now
            // would only let it commit behind the back of a reconciliation that may already
            // have cancelled its reservation.
            batch.retain(|p| !p.is_abandoned());
            if batch.is_empty() {
                continue;
            }
            // Checked again where it decides: if it fails nothing of this batch is proposed, so
            // the sagas may cancel their reservations.
            if let Err(e) = self.leader_epoch() {
                for p in batch {
                    p.refuse(e.clone());
                }
                continue;
            }
            let this = self.clone();
            tasks.spawn(
                async move {
                    this.write(batch).await;
                    drop(permit);
                }
                .in_current_span(),
            );
        }
    }

    /// Proposes one entry for `batch` and answers every proposal in it.
    async fn write(&self, batch: Vec<Proposal>) {
        let mut orders = Vec::new();
        let mut waiting = Vec::new();
        for proposal in batch {
            match proposal {
                Proposal::Order { order, reply } => {
                    orders.push(order);
                    waiting.push(Waiting::Order(reply));
                }
                Proposal::Barrier { reply } => waiting.push(Waiting::Barrier(reply)),
            }
        }
        let count = orders.len();
        let command = if orders.is_empty() {
            Command::Barrier
        } else {
            Command::Orders(orders)
        };
        // Bounded so a write stuck without a majority frees its place; it may still commit.
        let written =
            tokio::time::timeout(COMMIT_TIMEOUT * 2, self.inner.raft.client_write(command)).await;
        let numbers = match written {
            Ok(Ok(response)) if response.data.numbers.len() == count => Ok(response.data.numbers),
            Ok(Ok(response)) => Err(Error::Storage(format!(
                "an entry of {count} orders was applied as {} numbers",
                response.data.numbers.len()
            ))),
            Ok(Err(e)) => Err(self.write_error(e)),
            Err(_) => Err(Error::NotReady(format!(
                "an entry of {count} orders was not committed within {:?}",
                COMMIT_TIMEOUT * 2
            ))),
        };
        let mut numbers = numbers.map(Vec::into_iter);
        for w in waiting {
            match (w, &mut numbers) {
                (Waiting::Order(reply), Ok(numbers)) => {
                    let answer = numbers.next().ok_or_else(|| {
                        CommitFailure::uncertain(Error::Storage("an order lost its number".into()))
                    });
                    let _ = reply.send(answer);
                }
                (Waiting::Order(reply), Err(e)) => {
                    let _ = reply.send(Err(CommitFailure::uncertain(e.clone())));
                }
                (Waiting::Barrier(reply), Ok(_)) => {
                    let _ = reply.send(Ok(()));
                }
                (Waiting::Barrier(reply), Err(e)) => {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
