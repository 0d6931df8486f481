//! The order replicas' API: what the front-end sends a leader, and what replicas send each
//! other for leader notices, replication and catch-up.

use serde::{Deserialize, Serialize};

use crate::ids::{Epoch, ReplicaId, RequestId, TxnNumber};
use crate::order::{Order, TradeType};

/// How the replicas agree on the order log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicationMode {
    /// The front-end picks a leader; the leader copies each order to every live follower.
    PrimaryBackup,
    /// Raft: a majority must store each order before it is acknowledged.
    Raft,
}

impl ReplicationMode {
    /// The flag spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PrimaryBackup => "primary-backup",
            Self::Raft => "raft",
        }
    }
}

/// What a replica is doing now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicaRole {
    /// Reading its log and pulling missed orders from peers; serves nothing else yet.
    Recovering,
    /// Receives orders from the leader.
    Follower,
    /// Chosen but still making sure it holds every order any replica holds.
    Candidate,
    /// Assigns transaction numbers and serves trades and order queries.
    Leader,
}

/// The last entry of a log: enough to compare two logs' progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogTip {
    /// Number of the last entry.
    pub number: TxnNumber,
    /// Epoch of the leader that created it.
    pub epoch: Epoch,
}

/// `GET /health` of an order replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// This replica.
    pub id: ReplicaId,
    /// Replication mode it runs.
    pub mode: ReplicationMode,
    /// What it is doing.
    pub role: ReplicaRole,
    /// True once recovery finished: only then may it be chosen leader.
    pub ready: bool,
    /// The leader it follows (itself when leading), if known.
    pub leader: Option<ReplicaId>,
    /// Newest epoch it has seen.
    pub epoch: Epoch,
    /// Its log's last entry, `None` when empty.
    pub last: Option<LogTip>,
}

/// A trade sent by a front-end to the leader (`POST /trades`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderTrade {
    /// Same on every retry of this trade.
    pub request_id: RequestId,
    /// Stock traded.
    pub name: String,
    /// Buy or sell.
    #[serde(rename = "type")]
    pub kind: TradeType,
    /// Shares.
    pub quantity: u64,
}

/// Successful reply to a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeAck {
    /// The order's number.
    pub transaction_number: TxnNumber,
}

/// One entry of the replicated order log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEntry {
    /// Position in the log.
    pub number: TxnNumber,
    /// The trade's identity; unique in a log.
    pub request_id: RequestId,
    /// Stock traded.
    pub name: String,
    /// Buy or sell.
    #[serde(rename = "type")]
    pub kind: TradeType,
    /// Shares.
    pub quantity: u64,
    /// Epoch of the leader that created the entry; on conflict the newer epoch wins.
    pub epoch: Epoch,
}

impl OrderEntry {
    /// The entry as the public API shows it.
    #[must_use]
    pub fn to_order(&self) -> Order {
        Order {
            number: self.number,
            name: self.name.clone(),
            kind: self.kind,
            quantity: self.quantity,
        }
    }

    /// The tip a log ending in this entry has.
    #[must_use]
    pub fn tip(&self) -> LogTip {
        LogTip {
            number: self.number,
            epoch: self.epoch,
        }
    }
}

/// A leader announcement from the front-end's leader selection (`POST /internal/leader`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderNotice {
    /// The chosen leader.
    pub leader: ReplicaId,
    /// The new epoch; replicas ignore notices older than the newest epoch they saw.
    pub epoch: Epoch,
}

/// Identifies the entry just before a batch, so a follower can check that its log agrees with
/// the leader's up to there before appending (the log matching rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRef {
    /// Its number.
    pub number: TxnNumber,
    /// Its request id.
    pub request_id: RequestId,
}

/// Leader to follower: store these entries (`POST /internal/append`). An empty batch is a
/// probe that makes a lagging follower catch up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendRequest {
    /// Sender's epoch.
    pub epoch: Epoch,
    /// Sender's id.
    pub leader: ReplicaId,
    /// The entry before the first in `entries` (or the leader's last entry when `entries` is
    /// empty); `None` when the batch starts the log.
    pub prev: Option<EntryRef>,
    /// Consecutive entries.
    pub entries: Vec<OrderEntry>,
}

/// Follower's answer to an append: its log's tip after durably storing the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendReply {
    /// Last entry now held.
    pub last: Option<LogTip>,
}

/// Query of `GET /internal/orders`: a page of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrdersPageQuery {
    /// First number wanted.
    pub from: u64,
    /// Page length; the replica may return fewer.
    pub limit: Option<u32>,
}
