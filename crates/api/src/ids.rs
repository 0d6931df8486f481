//! Identifier newtypes. Bare integers never cross a module boundary: a transaction number, a
//! per-stock version and a leader epoch are all `u64` underneath, and mixing them up is exactly
//! the bug these types exist to prevent.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An order's number in the replicated log. Numbers start at 0 and grow by one per successful
/// trade, with no gaps, across leader changes.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct TxnNumber(pub u64);

impl TxnNumber {
    /// The number after this one.
    #[must_use]
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for TxnNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An order replica's id (1..=255). Leader selection prefers the highest live id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct ReplicaId(pub u8);

impl TryFrom<u8> for ReplicaId {
    type Error = String;

    fn try_from(id: u8) -> Result<Self, Self::Error> {
        if id == 0 {
            Err("replica ids start at 1".into())
        } else {
            Ok(Self(id))
        }
    }
}

impl From<ReplicaId> for u8 {
    fn from(id: ReplicaId) -> Self {
        id.0
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ReplicaId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<u8>() {
            Ok(0) | Err(_) => Err(format!("replica id {s:?} is not an integer in 1..=255")),
            Ok(id) => Ok(Self(id)),
        }
    }
}

/// The identity of one trade as the front-end first saw it. Every retry of that trade, on any
/// leader, carries the same id, and every store applies an id at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub uuid::Uuid);

impl RequestId {
    /// A fresh random id.
    #[must_use]
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RequestId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s)
            .map(Self)
            .map_err(|e| format!("request id {s:?} is not a UUID: {e}"))
    }
}

/// A stock's version in the catalog: it grows by one on every visible change (a confirmed
/// trade, a restock). Cache entries carry it so a late fill can be told from a fresh one.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Version(pub u64);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A leadership epoch: a fencing token that grows with every leader change. In primary-backup
/// mode the front-end's leader selection makes it; in raft mode it is the Raft term. Replicas
/// and the catalog refuse requests from an epoch older than the newest they have seen.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_ids_are_one_to_255() {
        assert_eq!("3".parse::<ReplicaId>(), Ok(ReplicaId(3)));
        assert!("0".parse::<ReplicaId>().is_err());
        assert!("256".parse::<ReplicaId>().is_err());
        assert!("x".parse::<ReplicaId>().is_err());
    }

    #[test]
    fn replica_id_zero_is_refused_on_the_wire() {
        assert!(serde_json::from_str::<ReplicaId>("0").is_err());
        assert_eq!(
            serde_json::from_str::<ReplicaId>("2").ok(),
            Some(ReplicaId(2))
        );
        assert_eq!(
            serde_json::to_string(&ReplicaId(2)).ok().as_deref(),
            Some("2")
        );
    }

    #[test]
    fn request_ids_round_trip_through_text() {
        let id = RequestId::new();
        assert_eq!(id.to_string().parse::<RequestId>(), Ok(id));
        assert!("not-a-uuid".parse::<RequestId>().is_err());
    }
}
