//! The order replicas' API: what the front-end sends a leader, and what replicas send each
//! other for leader notices, replication and catch-up.

use serde::{Deserialize, Serialize};

use crate::ids::{Epoch, ReplicaId, RequestId, TxnNumber};
use crate::log::{Command, LogIndex, Position, TradeCommand};
use crate::order::TradeType;

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

/// Where one epoch's entries start in a log. A log's runs, oldest first, give the epoch of every
/// entry in a few words, and two logs' runs give the last entry they agree on (two entries with
/// the same index and epoch were written by the same leader and are the same entry, and so is
/// everything before them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRun {
    /// The run's first entry.
    pub start: LogIndex,
    /// The epoch of the leader that wrote it.
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
    /// Newest epoch (raft: term) it has seen.
    pub epoch: Epoch,
    /// Entries in its log (raft: entries applied).
    pub position: Position,
    /// The number of its last order, if it holds any.
    pub last_number: Option<TxnNumber>,
    /// On a leader: how far its changes are visible (acknowledged, pushed to every front-end and
    /// offered to the catalogs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible: Option<Position>,
    /// On a leader: whether it can commit now (its followers confirmed its epoch recently
    /// enough). A primary-backup leader cut off from the followers it needs says false, and
    /// the front-end appoints another instead of waiting on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commits: Option<bool>,
}

/// `GET /internal/status`: what a primary-backup replica tells its peers, enough to choose whom
/// to copy from and from where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The replica.
    pub id: ReplicaId,
    /// Its role.
    pub role: ReplicaRole,
    /// Newest epoch it has seen.
    pub epoch: Epoch,
    /// The leader of that epoch, if known.
    pub leader: Option<ReplicaId>,
    /// Durable entries in its log.
    pub len: Position,
    /// Epoch runs of those entries.
    pub runs: Vec<EpochRun>,
}

/// Body of `POST /internal/status`: a chosen leader's term the peer must adopt before it
/// answers (so it refuses every older leader from then on); `None` fields ask for the status
/// alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusFence {
    /// The new epoch.
    pub epoch: Epoch,
    /// Its leader.
    pub leader: Option<ReplicaId>,
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
    #[serde(deserialize_with = "crate::ids::bounded::u64")]
    pub quantity: u64,
}

impl OrderTrade {
    /// The trade as the log records it.
    #[must_use]
    pub fn command(&self) -> TradeCommand {
        TradeCommand {
            request_id: self.request_id,
            name: self.name.clone(),
            kind: self.kind,
            quantity: self.quantity,
        }
    }
}

/// The leader's answer to a trade: its number, and the position a state must reach to show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeReceipt {
    /// The order's number.
    pub transaction_number: TxnNumber,
    /// A state at this position (or later) reflects the trade.
    pub position: Position,
}

/// Successful public reply to a trade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeAck {
    /// The order's number.
    pub transaction_number: TxnNumber,
}

/// A restock request from a catalog to the leader (`POST /internal/restock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestockRequest {
    /// The quantity sold-out stocks get back.
    #[serde(deserialize_with = "crate::ids::bounded::u64")]
    pub to: u64,
}

/// One entry of a primary-backup log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Its index.
    pub index: LogIndex,
    /// Epoch of the leader that wrote it.
    pub epoch: Epoch,
    /// What it says.
    pub command: Command,
}

/// A leader announcement from the front-end's leader selection (`POST /internal/leader`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderNotice {
    /// The chosen leader.
    pub leader: ReplicaId,
    /// The new epoch; replicas ignore notices older than the newest epoch they saw.
    pub epoch: Epoch,
    /// The replicas the front-end found answering when it chose: the new leader waits for these
    /// and catches the others up in the background, instead of first timing out on each.
    #[serde(default)]
    pub live: Vec<ReplicaId>,
}

/// The entry just before a batch: a follower appends only on top of a log that holds it (the log
/// matching rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryId {
    /// Its index.
    pub index: LogIndex,
    /// Its epoch.
    pub epoch: Epoch,
}

/// Leader to follower: store these entries (`POST /internal/append`). An empty batch is a
/// heartbeat and a probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendRequest {
    /// Sender's epoch.
    pub epoch: Epoch,
    /// Sender's id.
    pub leader: ReplicaId,
    /// The entry before the first in `entries`; `None` when the batch starts the log.
    pub prev: Option<EntryId>,
    /// Consecutive entries.
    pub entries: Vec<LogEntry>,
}

/// Follower's answer to an append.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AppendReply {
    /// The batch is durable; the follower's log agrees with the leader's up to the batch's
    /// end, `len` entries.
    Appended {
        /// Entries shared with the leader.
        len: Position,
    },
    /// The follower's log does not hold `prev`: here is what it holds, so the leader can find
    /// where the two logs agree and send from there.
    Mismatch {
        /// Durable entries held.
        len: Position,
        /// Their epoch runs.
        runs: Vec<EpochRun>,
    },
}

/// Query of `GET /internal/log/entries`: a page of a primary-backup log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntriesQuery {
    /// First index wanted.
    pub from: LogIndex,
    /// Page length; the replica may return fewer.
    pub limit: Option<u32>,
}

/// Where each order replica listens: `id=url` pairs separated by commas, as given to
/// `--peers` (order replicas) and `--replicas` (front-ends).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaUrls(pub std::collections::BTreeMap<ReplicaId, String>);

impl std::str::FromStr for ReplicaUrls {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let mut urls = std::collections::BTreeMap::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, url) = pair
                .split_once('=')
                .ok_or_else(|| format!("replica {pair:?} is not of the form id=url"))?;
            let id: ReplicaId = id.trim().parse()?;
            let url = url.trim().trim_end_matches('/');
            validate_base_url(url).map_err(|e| format!("replica {id}: {e}"))?;
            if urls.insert(id, url.to_owned()).is_some() {
                return Err(format!("replica {id} is listed twice"));
            }
        }
        Ok(Self(urls))
    }
}

impl std::fmt::Display for ReplicaUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pairs: Vec<String> = self
            .0
            .iter()
            .map(|(id, url)| format!("{id}={url}"))
            .collect();
        f.write_str(&pairs.join(","))
    }
}

/// Checks that `url` is an `http://host:port` (or, with TLS, `https://host:port`) base URL.
///
/// # Errors
/// A sentence naming the URL.
pub fn validate_base_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{url:?} has no port"))?;
    if host.is_empty() || host.contains('/') || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("{url:?} is not of the form http://host:port"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_urls_parse_print_and_refuse_nonsense() {
        let urls: ReplicaUrls = "1=http://127.0.0.1:8091, 2=http://h:2/"
            .parse()
            .expect("valid");
        assert_eq!(urls.0.len(), 2);
        assert_eq!(urls.to_string(), "1=http://127.0.0.1:8091,2=http://h:2");
        assert_eq!("".parse::<ReplicaUrls>(), Ok(ReplicaUrls::default()));
        assert!("1=https://h:1".parse::<ReplicaUrls>().is_ok(), "TLS URLs");
        for bad in [
            "1",
            "x=http://h:1",
            "0=http://h:1",
            "1=h:1",
            "1=ftp://h:1",
            "1=http://h",
            "1=http://h:0",
            "1=http://h:1/x",
            "1=http://h:1,1=http://h:2",
        ] {
            assert!(bad.parse::<ReplicaUrls>().is_err(), "{bad:?} was accepted");
        }
    }
}
