//! The leader's moving parts: the sequencer that numbers and replicates batches of trades, and
//! the per-follower catch-up tasks that bring a follower marked behind back to live.

use std::time::Duration;

use bazaar_api::client::{ClientError, ReplicaClient};
use bazaar_api::replica::{AppendRequest, OrderEntry, ReplicaRole};
use bazaar_api::{ReplicaId, TxnNumber};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::{
    CATCH_UP_TIMEOUT, PROPOSAL_BATCH_LEN_MAX, Progress, Proposal, REPLICATION_TIMEOUT, Replicator,
};
use crate::log_store::Last;
use crate::replica::CommitFailure;

/// First and longest pause between catch-up probes of an unreachable follower.
const CATCH_UP_RETRY_MIN: Duration = Duration::from_millis(50);
const CATCH_UP_RETRY_MAX: Duration = Duration::from_secs(1);

impl Replicator {
    pub(super) async fn run_sequencer(&self, mut queue: mpsc::Receiver<Proposal>) {
        loop {
            let batch = tokio::select! {
                () = self.inner.stop.cancelled() => return,
                next = bazaar_service::batch::recv(&mut queue, PROPOSAL_BATCH_LEN_MAX) => match next {
                    Some(batch) => batch,
                    None => return,
                },
            };
            match self.replicate_batch(&batch).await {
                Ok(first_number) => {
                    for (i, proposal) in batch.into_iter().enumerate() {
                        let _ = proposal
                            .reply
                            .send(Ok(TxnNumber(first_number.0 + i as u64)));
                    }
                }
                Err(failure) => {
                    for proposal in batch {
                        let _ = proposal.reply.send(Err(failure.clone()));
                    }
                }
            }
        }
    }

    /// Numbers the batch after the log's last entry, appends it locally and on every live
    /// follower at once, and waits for all of them. Returns the first number.
    async fn replicate_batch(&self, batch: &[Proposal]) -> Result<TxnNumber, CommitFailure> {
        let _log = self.inner.log_lock.lock().await;
        let epoch = self.leader_epoch().map_err(CommitFailure::refused)?;
        let prev = self.inner.log.last();
        let first = prev.map_or(TxnNumber(0), |p| p.number.next());
        let entries: Vec<OrderEntry> = batch
            .iter()
            .enumerate()
            .map(|(i, p)| OrderEntry {
                number: TxnNumber(first.0 + i as u64),
                request_id: p.trade.request_id,
                name: p.trade.name.clone(),
                kind: p.trade.kind,
                quantity: p.trade.quantity,
                epoch,
            })
            .collect();
        let request = AppendRequest {
            epoch,
            leader: self.inner.id,
            prev: prev.map(Last::entry_ref),
            entries: entries.clone(),
        };
        let live = self.live_followers();
        let remote = futures::future::join_all(live.iter().map(|peer| {
            let request = &request;
            async move { peer.with_timeout(REPLICATION_TIMEOUT).append(request).await }
        }));
        let (local, remote) = tokio::join!(self.inner.log.append(entries), remote);
        let last = local.map_err(CommitFailure::uncertain)?.map(Last::tip);
        self.inner.metrics.batches.inc();
        self.inner.metrics.batch_len.observe(batch.len() as f64);
        let mut deposed = false;
        for (peer, outcome) in live.iter().zip(remote) {
            match outcome {
                Ok(reply) if reply.last == last => {}
                Ok(reply) => self.mark_behind(
                    peer,
                    &format!("answered with tip {:?}, expected {last:?}", reply.last),
                ),
                Err(ClientError::Rejected { status: 412, .. }) => deposed = true,
                Err(e) => self.mark_behind(peer, &e.to_string()),
            }
        }
        if deposed {
            // A follower knows a newer epoch: another replica leads now. The batch is in our
            // log but was not acknowledged; the new leader's log will replace it.
            self.set_state(|s| {
                if s.role == ReplicaRole::Leader {
                    s.role = ReplicaRole::Follower;
                    s.term.leader = None;
                }
            });
            tracing::warn!(%epoch, "a follower knows a newer epoch; stepped down");
            return Err(CommitFailure::uncertain(self.not_leader()));
        }
        tracing::debug!(first = %first, len = batch.len(), "batch replicated");
        Ok(first)
    }

    fn live_followers(&self) -> Vec<ReplicaClient> {
        let followers = self
            .inner
            .followers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        followers
            .iter()
            .filter(|(_, p)| **p == Progress::Live)
            .filter_map(|(id, _)| self.inner.peers.get(id).cloned())
            .collect()
    }

    /// Stops waiting for `peer` and starts a task that catches it up.
    fn mark_behind(&self, peer: &ReplicaClient, why: &str) {
        let mut followers = self
            .inner
            .followers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if followers.insert(peer.id(), Progress::Behind) == Some(Progress::Behind) {
            return;
        }
        drop(followers);
        self.inner.metrics.followers_behind.inc();
        tracing::warn!(follower = %peer.id(), reason = why, "follower marked behind; catching it up in the background");
        let this = self.clone();
        let peer = peer.with_timeout(CATCH_UP_TIMEOUT);
        self.inner
            .tasks
            .spawn(async move { this.catch_up_follower(peer).await }.in_current_span());
    }

    fn set_progress(&self, id: ReplicaId, progress: Progress) {
        let mut followers = self
            .inner
            .followers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if followers.insert(id, progress) == Some(Progress::Behind) {
            self.inner.metrics.followers_behind.dec();
        }
    }

    /// Probes `peer` with an empty append carrying our last entry until its log equals ours.
    /// The follower does the work: a probe it cannot place makes it sync from us.
    async fn catch_up_follower(&self, peer: ReplicaClient) {
        let mut pause = CATCH_UP_RETRY_MIN;
        loop {
            let Ok(epoch) = self.leader_epoch() else {
                // No longer leading: the next leader tracks its own followers.
                self.set_progress(peer.id(), Progress::Live);
                return;
            };
            let last = self.inner.log.last();
            let probe = AppendRequest {
                epoch,
                leader: self.inner.id,
                prev: last.map(Last::entry_ref),
                entries: Vec::new(),
            };
            match peer.append(&probe).await {
                Ok(reply)
                    if reply.last.is_some()
                        && reply.last == self.inner.log.last().map(Last::tip) =>
                {
                    self.set_progress(peer.id(), Progress::Live);
                    tracing::info!(follower = %peer.id(), last = ?reply.last.map(|t| t.number.0), "follower caught up; live again");
                    return;
                }
                Ok(reply) if reply.last.is_none() && last.is_none() => {
                    self.set_progress(peer.id(), Progress::Live);
                    return;
                }
                // It caught up to what we had when we asked; more arrived since. Ask again.
                Ok(_) => pause = CATCH_UP_RETRY_MIN,
                Err(ClientError::Rejected { status: 412, .. }) => {
                    tracing::warn!(follower = %peer.id(), "follower knows a newer epoch; stopping catch-up");
                    self.set_progress(peer.id(), Progress::Live);
                    return;
                }
                Err(e) => {
                    tracing::debug!(follower = %peer.id(), error = %e, "catch-up probe failed");
                    pause = (pause * 2).min(CATCH_UP_RETRY_MAX);
                }
            }
            tokio::select! {
                () = self.inner.stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
        }
    }
}
