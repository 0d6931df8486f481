//! The catalog's API beyond the public stock routes: the minimum log position a lookup may ask
//! for, and what a catalog reports about itself.

use serde::{Deserialize, Serialize};

use crate::log::Position;
use crate::stock::StockState;

/// Query of `GET /stocks/{name}` on a catalog: answer only from a state at this position or
/// later (the catalog waits a little for its view to get there, then answers 503).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LookupQuery {
    /// The position the answer must reflect at least.
    #[serde(default)]
    pub min_position: Option<Position>,
}

/// A catalog's answer to a lookup: the stock and the position its view was at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockAt {
    /// The stock.
    pub stock: StockState,
    /// The position of the view it was read from.
    pub position: Position,
}

/// A catalog's answer to `GET /stocks`: every stock at one position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StocksAt {
    /// Every stock.
    pub stocks: Vec<StockState>,
    /// The position of the view they were read from.
    pub position: Position,
}

/// `GET /health` of a catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogStatus {
    /// Always `"ok"` when it answers.
    pub status: String,
    /// Always `"catalog"`.
    pub service: String,
    /// Stocks listed.
    pub stocks: usize,
    /// How much of the log its view reflects.
    pub position: Position,
    /// The position its file holds (written lazily behind the view).
    pub saved: Position,
    /// True while it follows a leader's log.
    pub following: bool,
}
