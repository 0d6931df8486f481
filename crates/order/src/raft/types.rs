//! The Raft type configuration, what the log carries, and what applying an entry answers.

// `declare_raft_types!` names `Cursor` unqualified.
use std::io::Cursor;

use bazaar_api::ReplicaId;
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// Types of the order log's Raft group.
    pub TypeConfig:
        D = Command,
        R = Applied,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
);

/// A Raft node id: the replica id, widened.
pub type NodeId = u64;
/// A log entry's position and the leader that proposed it.
pub type LogId = openraft::LogId<NodeId>;
/// One entry of the Raft log.
pub type Entry = openraft::Entry<TypeConfig>;
/// A term and the candidate voted for.
pub type Vote = openraft::Vote<NodeId>;
/// The membership in force and the entry that set it.
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
/// What a snapshot covers.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
/// A snapshot with its data.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// A storage failure as openraft sees it: it stops the node.
pub type StorageError = openraft::StorageError<NodeId>;
/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;

/// What one Raft entry carries: the commands proposed together. Concurrent writes share an
/// entry: openraft (0.9) appends and syncs each entry on its own, so one entry per trade would
/// cap trades per second at syncs per second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command(pub Vec<bazaar_api::log::Command>);

/// What applying one entry answers its proposer: each command's outcome, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// One outcome per command.
    pub outcomes: Vec<bazaar_ledger::Outcome>,
}

/// The Raft node id of a replica.
#[must_use]
pub fn node_id(id: ReplicaId) -> NodeId {
    NodeId::from(id.0)
}

/// The replica a Raft node id names, if it fits a replica id.
#[must_use]
pub fn replica_id(node: NodeId) -> Option<ReplicaId> {
    u8::try_from(node).ok().map(ReplicaId)
}
