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
    #[serde(deserialize_with = "crate::ids::bounded::u64")]
    pub quantity: u64,
    /// 0 on the front-end's first attempt, counted up on each retry. A first attempt's request
    /// id is brand new, so the leader skips looking for it in the log.
    #[serde(default)]
    pub attempt: u32,
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
    #[serde(deserialize_with = "crate::ids::bounded::u64")]
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
    #[serde(deserialize_with = "crate::ids::bounded::u64")]
    pub from: u64,
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
