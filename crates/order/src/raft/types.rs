//! The Raft type configuration, what the log carries, and what applying an entry answers.

// `declare_raft_types!` names `Cursor` unqualified.
use std::io::Cursor;

use bazaar_api::replica::OrderTrade;
use bazaar_api::{ReplicaId, RequestId, TradeType, TxnNumber};
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

/// What a client proposes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Trades' orders, in order: applying numbers each one, unless its request id already has
    /// a number. Concurrent trades share an entry: openraft (0.9) appends and syncs each entry
    /// on its own, so one entry per trade would cap trades per second at syncs per second.
    Orders(Vec<OrderCommand>),
    /// Changes nothing. Once it is applied, every entry proposed on this leader before it has
    /// been applied too, so the state machine can answer "was request r ever committed?".
    Barrier,
}

/// The order a trade adds to the log: the trade without the front-end's attempt counter, which
/// must not make two proposals of one trade differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCommand {
    /// The trade's identity; the state machine numbers each request id once.
    pub request_id: RequestId,
    /// Stock traded.
    pub name: String,
    /// Buy or sell.
    #[serde(rename = "type")]
    pub kind: TradeType,
    /// Shares.
    pub quantity: u64,
}

impl From<&OrderTrade> for OrderCommand {
    fn from(trade: &OrderTrade) -> Self {
        Self {
            request_id: trade.request_id,
            name: trade.name.clone(),
            kind: trade.kind,
            quantity: trade.quantity,
        }
    }
}

/// What applying one entry answers its proposer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Each order's transaction number, in the entry's order (the first number, for a request
    /// id applied before); empty for entries that are not orders.
    pub numbers: Vec<TxnNumber>,
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
