//! The invalidation feed: the order leader pushes every change to every subscribed front-end
//! before it acknowledges it (`GET /internal/feed` on the leader, a WebSocket of JSON text
//! frames).

use serde::{Deserialize, Serialize};

use crate::ids::Epoch;
use crate::log::Position;

/// A message from the leader to a front-end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FeedEvent {
    /// The first message of a subscription: every change acknowledged so far is below `floor`,
    /// and the front-end may cache for `lease_ms` after sending a ping the leader answered.
    Hello {
        /// The leader's epoch.
        epoch: Epoch,
        /// States below this position may be stale.
        floor: Position,
        /// The lease, in milliseconds.
        #[serde(deserialize_with = "crate::ids::bounded::u64")]
        lease_ms: u64,
    },
    /// These stocks changed in the entry just below `position`: drop them from the cache and
    /// accept no state of them older than `position`. The front-end must answer with
    /// [`FeedReply::Ack`] carrying the same `seq`.
    Invalidate {
        /// Per-subscription sequence number.
        #[serde(deserialize_with = "crate::ids::bounded::u64")]
        seq: u64,
        /// A state at this position (or later) shows the change.
        position: Position,
        /// The stocks that changed.
        names: Vec<String>,
    },
    /// Answer to [`FeedReply::Ping`], echoing its nonce.
    Pong {
        /// The ping's nonce.
        #[serde(deserialize_with = "crate::ids::bounded::u64")]
        nonce: u64,
    },
}

/// A message from a front-end to the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FeedReply {
    /// The invalidation with this `seq` has been applied.
    Ack {
        /// Sequence number being acknowledged.
        #[serde(deserialize_with = "crate::ids::bounded::u64")]
        seq: u64,
    },
    /// Lease renewal request.
    Ping {
        /// Echoed in the pong.
        #[serde(deserialize_with = "crate::ids::bounded::u64")]
        nonce: u64,
    },
}

/// Query of `GET /internal/feed`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedQuery {
    /// Who is subscribing, for logs (at most 64 printable bytes).
    #[serde(default)]
    pub subscriber: Option<String>,
}
