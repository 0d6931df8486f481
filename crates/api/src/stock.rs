//! Stocks: what the public API shows, and the catalog's fuller record of one.

use serde::{Deserialize, Serialize};

use crate::ids::Version;
use crate::price::Price;

/// A stock as the public API shows it (`GET /stocks/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stock {
    /// Unique name.
    pub name: String,
    /// Price per share.
    pub price: Price,
    /// Shares available to buy.
    #[serde(deserialize_with = "crate::ids::bounded::u64")]
    pub quantity: u64,
}

/// A stock as the catalog keeps it: the public fields plus the traded volume and the version
/// that caches use to tell fresh entries from stale ones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockState {
    /// Unique name.
    pub name: String,
    /// Price per share.
    pub price: Price,
    /// Shares available to buy (confirmed trades only; reservations are not subtracted).
    #[serde(deserialize_with = "crate::ids::bounded::u64")]
    pub quantity: u64,
    /// Total shares traded, buys and sells.
    #[serde(deserialize_with = "crate::ids::bounded::u64")]
    pub volume: u64,
    /// Grows by one on every visible change.
    pub version: Version,
}

impl From<StockState> for Stock {
    fn from(s: StockState) -> Self {
        Self {
            name: s.name,
            price: s.price,
            quantity: s.quantity,
        }
    }
}
