//! The node's life around Raft: forming a new cluster, watching for a Raft that stopped, and
//! the gauges.

use std::collections::BTreeMap;
use std::time::Duration;

use bazaar_api::client::{Http, ReplicaClient};
use bazaar_api::replica::{ReplicaStatus, ReplicationMode};
use bazaar_service::Fatal;
use openraft::{BasicNode, ServerState};
use prometheus_client::metrics::gauge::Gauge;
use tokio_util::sync::CancellationToken;

use super::RaftReplica;
use super::state_machine::SnapshotCounters;
use super::types::{NodeId, node_id};

/// How often the node's health is checked (and its gauges refreshed).
const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Pause between looks at the peers while deciding whether to form the cluster.
const BOOTSTRAP_PAUSE: Duration = Duration::from_millis(100);

/// Timeout of a peer's health check during bootstrap.
const BOOTSTRAP_STATUS_TIMEOUT: Duration = Duration::from_millis(300);

/// Raft gauges and counters exported at `/metrics`.
#[derive(Debug, Clone, Default)]
pub(super) struct RaftGauges {
    term: Gauge,
    leader: Gauge,
    last_log: Gauge,
    applied: Gauge,
    pub(super) snapshots: SnapshotCounters,
}

impl RaftGauges {
    pub(super) fn register(&self, metrics: &bazaar_service::Metrics) {
        metrics.register("raft_term", "Current Raft term", self.term.clone());
        metrics.register(
            "raft_leader",
            "Id of the replica this one believes leads (0: none)",
            self.leader.clone(),
        );
        metrics.register(
            "raft_last_log_index",
            "Index of the last entry in this replica's Raft log",
            self.last_log.clone(),
        );
        metrics.register(
            "raft_applied_index",
            "Index of the last Raft entry applied to the order table",
            self.applied.clone(),
        );
        metrics.register(
            "raft_snapshots_built",
            "Snapshots this replica built to compact its log",
            self.snapshots.built.clone(),
        );
        metrics.register(
            "raft_snapshots_installed",
            "Snapshots this replica installed from a leader because it was too far behind",
            self.snapshots.installed.clone(),
        );
    }
}

impl RaftReplica {
    fn members(&self) -> BTreeMap<NodeId, BasicNode> {
        self.inner
            .urls
            .iter()
            .map(|(id, url)| (node_id(*id), BasicNode::new(url)))
            .collect()
    }

    /// Warns when `--peers` names other replicas than the membership stored in the log, which
    /// is the one Raft uses (membership changes are not supported).
    pub(super) fn check_membership(&self) {
        let stored: Vec<NodeId> = self
            .inner
            .metrics
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        let flags: Vec<NodeId> = self.members().into_keys().collect();
        if stored != flags {
            tracing::warn!(
                ?stored,
                peers = ?flags,
                "--peers lists other replicas than the raft membership stored in the database; \
                 the stored membership is used"
            );
        }
    }

    /// Forms the cluster from a database that was never part of one. Every replica of a new
    /// cluster may do so with the same membership (openraft's rule: the vote protocol keeps
    /// that consistent), but only when enough peers answer to elect a leader, and never when a
    /// peer already has a term: then a cluster exists and its leader will replicate to this
    /// replica, while initializing would only start a needless election.
    pub(super) async fn bootstrap(&self, http: &Http, stop: &CancellationToken) {
        let majority = self.inner.urls.len() / 2 + 1;
        let peers: Vec<ReplicaClient> = self
            .inner
            .urls
            .iter()
            .filter(|(id, _)| **id != self.inner.id)
            .map(|(id, url)| {
                ReplicaClient::new(
                    http.with_timeout(BOOTSTRAP_STATUS_TIMEOUT),
                    *id,
                    url.clone(),
                )
            })
            .collect();
        loop {
            match self.inner.raft.is_initialized().await {
                Ok(false) => {}
                Ok(true) | Err(_) => return,
            }
            let statuses: Vec<ReplicaStatus> =
                futures::future::join_all(peers.iter().map(ReplicaClient::status))
                    .await
                    .into_iter()
                    .flatten()
                    .collect();
            if let Some(other) = statuses.iter().find(|s| s.mode != ReplicationMode::Raft) {
                tracing::error!(replica = %other.id, mode = other.mode.as_str(), "a peer runs another replication mode; not forming a raft cluster");
                return;
            }
            if let Some(formed) = statuses.iter().find(|s| s.epoch.0 > 0) {
                tracing::info!(peer = %formed.id, term = %formed.epoch, "the raft cluster exists; waiting for its leader to replicate to this replica");
                return;
            }
            if statuses.len() + 1 >= majority {
                match self.inner.raft.initialize(self.members()).await {
                    Ok(()) => {
                        tracing::info!(members = ?self.members().into_keys().collect::<Vec<_>>(), "formed the raft cluster");
                    }
                    Err(e) => tracing::info!(error = %e, "not forming the raft cluster"),
                }
                return;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(BOOTSTRAP_PAUSE) => {}
            }
        }
    }

    /// Stops the service when Raft stops on its own (a storage failure), logs role changes,
    /// and refreshes the gauges.
    pub(super) async fn watch(&self, fatal: &Fatal, stop: &CancellationToken, gauges: &RaftGauges) {
        let mut ticks = tokio::time::interval(WATCH_INTERVAL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen: Option<(ServerState, u64, Option<NodeId>)> = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            // A core that panicked reports nothing (its metrics keep saying "running"), but
            // its metrics sender is gone with it; without this the replica would go on
            // answering with a dead Raft. Looked at before the metrics: a core that stops on
            // its own sends its error and then drops the sender, so a closed channel read
            // first is never mistaken for a panic.
            let core_gone = self.inner.metrics.has_changed().is_err();
            let view = self.view();
            if let Err(e) = view.running {
                if !stop.is_cancelled() {
                    fatal.raise(format!("the raft node stopped: {e}"));
                }
                return;
            }
            if core_gone {
                if !stop.is_cancelled() {
                    fatal.raise(
                        "the raft node stopped: its core task ended without a report (it panicked)",
                    );
                }
                return;
            }
            let now = (view.state, view.term, view.leader);
            if seen != Some(now) {
                tracing::info!(state = ?view.state, term = view.term, leader = ?view.leader, "raft role");
                seen = Some(now);
            }
            let (last_log, applied) = {
                let m = self.inner.metrics.borrow();
                (m.last_log_index, m.last_applied.map(|l| l.index))
            };
            let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            gauges.term.set(gauge(view.term));
            gauges.leader.set(gauge(view.leader.unwrap_or(0)));
            gauges.last_log.set(last_log.map_or(-1, gauge));
            gauges.applied.set(applied.map_or(-1, gauge));
        }
    }
}
