//! The proposer: commands queued by concurrent writes share one log entry.

use std::sync::Arc;

use bazaar_api::log::{Command, LogIndex, Position};
use bazaar_ledger::Outcome;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{COMMIT_TIMEOUT, RaftReplica};
use crate::error::{Error, Result};

/// Commands waiting for the proposer at most.
pub(super) const PROPOSAL_QUEUE_LEN: usize = 4096;

/// Most commands in one log entry.
const PROPOSAL_BATCH_LEN_MAX: usize = 256;

/// Entries proposed and not yet applied at most. openraft appends (and syncs) each proposal on
/// its own; while these are under way new commands gather into the next entry, so under load an
/// entry carries many, and one proposal overlaps the previous one's replication.
const PROPOSALS_IN_FLIGHT_MAX: usize = 2;

/// A command waiting to be proposed, and where its outcome goes.
pub(super) struct Proposal {
    pub(super) command: Command,
    pub(super) reply: oneshot::Sender<Result<(Outcome, Position)>>,
}

impl RaftReplica {
    /// Proposes queued commands, all that wait in one entry, with at most
    /// [`PROPOSALS_IN_FLIGHT_MAX`] entries under way.
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
            // A write whose caller stopped waiting was answered "uncertain" and may be retried
            // with the same request id: proposing it anyway is harmless (the ledger applies a
            // request id once), but pointless.
            batch.retain(|p| !p.reply.is_closed());
            if batch.is_empty() {
                continue;
            }
            // Checked again where it decides: if it fails nothing of this batch is proposed.
            if let Err(e) = self.leader_epoch() {
                for p in batch {
                    let _ = p.reply.send(Err(e.clone()));
                }
                continue;
            }
            let this = self.clone();
            tasks.spawn(
                async move {
                    this.write_entry(batch).await;
                    drop(permit);
                }
                .in_current_span(),
            );
        }
    }

    /// Proposes one entry for `batch` and answers every proposal in it.
    async fn write_entry(&self, batch: Vec<Proposal>) {
        let (commands, replies): (Vec<Command>, Vec<_>) =
            batch.into_iter().map(|p| (p.command, p.reply)).unzip();
        let count = commands.len();
        // Bounded so a write stuck without a majority frees its place; it may still commit.
        let written = tokio::time::timeout(
            COMMIT_TIMEOUT * 2,
            self.inner
                .raft
                .client_write(super::types::Command(commands)),
        )
        .await;
        let outcomes = match written {
            Ok(Ok(response)) if response.data.outcomes.len() == count => Ok((
                response.data.outcomes,
                LogIndex(response.log_id.index).position(),
            )),
            Ok(Ok(response)) => Err(Error::Storage(format!(
                "an entry of {count} commands was applied as {} outcomes",
                response.data.outcomes.len()
            ))),
            Ok(Err(e)) => Err(match self.write_error(e) {
                // Proposed, then not committed here: it may still commit under another leader.
                Error::NotLeader { .. } | Error::NotReady(_) | Error::NoQuorum(_) => {
                    Error::Uncertain("leadership changed after proposing".into())
                }
                other => other,
            }),
            Err(_) => Err(Error::Uncertain(format!(
                "an entry of {count} commands was not committed within {:?}",
                COMMIT_TIMEOUT * 2
            ))),
        };
        match outcomes {
            Ok((outcomes, position)) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok((outcome, position)));
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}
