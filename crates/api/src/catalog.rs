//! The catalog's internal API: the try-confirm-cancel trade saga that order leaders drive, and
//! the invalidation feed that front-ends subscribe to (ARCHITECTURE.md, guarantee 1).

use serde::{Deserialize, Serialize};

use crate::ids::{Epoch, RequestId, Version};
use crate::order::TradeType;

/// Try: reserve a trade under its request id (`POST /internal/trades`). A buy takes the
/// quantity out of what others can buy (or is refused with 409); a sell is recorded as pending.
/// Trying an id again returns the first outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeTry {
    /// The trade's identity across retries.
    pub request_id: RequestId,
    /// Stock traded.
    pub name: String,
    /// Buy or sell.
    #[serde(rename = "type")]
    pub kind: TradeType,
    /// Shares.
    #[serde(deserialize_with = "crate::ids::bounded::u64")]
    pub quantity: u64,
    /// The calling leader's epoch; the catalog refuses epochs older than the newest it saw.
    pub epoch: Epoch,
}

/// Confirm or cancel a reservation (`POST /internal/trades/{id}/confirm|cancel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeSettle {
    /// The calling leader's epoch.
    pub epoch: Epoch,
}

/// Where a trade is in the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TradeState {
    /// Tried, not yet final: a buy's shares are held back, a sell's are not yet available.
    Reserved,
    /// Final: quantity and volume changed, caches invalidated.
    Confirmed,
    /// Abandoned: no visible effect remains.
    Cancelled,
}

impl TradeState {
    /// The database and wire spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Confirmed => "confirmed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::str::FromStr for TradeState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reserved" => Ok(Self::Reserved),
            "confirmed" => Ok(Self::Confirmed),
            "cancelled" => Ok(Self::Cancelled),
            other => Err(format!("unknown trade state {other:?}")),
        }
    }
}

/// The catalog's record of one trade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradeRecord {
    /// The trade's identity.
    pub request_id: RequestId,
    /// Stock traded.
    pub name: String,
    /// Buy or sell.
    #[serde(rename = "type")]
    pub kind: TradeType,
    /// Shares.
    #[serde(deserialize_with = "crate::ids::bounded::u64")]
    pub quantity: u64,
    /// Saga state.
    pub state: TradeState,
    /// Milliseconds since the Unix epoch when the trade was first tried.
    #[serde(deserialize_with = "crate::ids::bounded::u64")]
    pub created_ms: u64,
    /// Milliseconds since the Unix epoch of the last state change.
    #[serde(deserialize_with = "crate::ids::bounded::u64")]
    pub updated_ms: u64,
}

/// Query of `GET /internal/trades`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TradesQuery {
    /// Only trades in this state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<TradeState>,
    /// Only trades whose last change is at least this many milliseconds old.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::ids::bounded::option_u64"
    )]
    pub older_than_ms: Option<u64>,
}

/// A message from the catalog to a front-end on the invalidation feed (`GET /internal/feed`,
/// a WebSocket of JSON text frames).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FeedEvent {
    /// Drop `name` from the cache; any fill older than `version` is stale. The front-end must
    /// answer with [`FeedReply::Ack`] carrying the same `seq`.
    Invalidate {
        /// Per-subscription sequence number.
        seq: u64,
        /// Stock that changed.
        name: String,
        /// Its version after the change.
        version: Version,
    },
    /// Answer to [`FeedReply::Ping`], echoing its nonce. A front-end may cache only while a
    /// pong for a ping sent less than the lease ago has arrived.
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
}

/// A message from a front-end to the catalog on the invalidation feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum FeedReply {
    /// The invalidation with this `seq` has been applied.
    Ack {
        /// Sequence number being acknowledged.
        seq: u64,
    },
    /// Lease renewal request.
    Ping {
        /// Echoed in the pong.
        nonce: u64,
    },
}
