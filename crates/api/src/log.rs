//! The replicated order log: what its entries say, what applying them changes, and how catalogs
//! follow it.
//!
//! The log is the one durable record of every change to a stock's quantity. Each entry carries a
//! [`Command`]; every replica applies the commands in log order with the same deterministic step
//! (the `bazaar-ledger` crate), so check-and-update of a trade is one atomic step that every
//! replica decides identically. Applying a command yields [`Effect`]s: what actually changed.
//! Catalogs follow the leader's stream of [`AppliedEntry`]s and apply the effects, so they never
//! decide anything themselves.
//!
//! Positions: a state that reflects the entries with indexes below `p` is "at position `p`"
//! ([`Position`]). A front-end that knows a stock changed in entry `i` accepts only states at
//! position `i + 1` or later.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{Epoch, RequestId, TxnNumber, Version};
use crate::order::TradeType;
use crate::price::Price;
use crate::stock::StockState;

/// Largest log index or position accepted on the wire: what SQLite's signed 64-bit integers
/// hold. Anything larger is refused before it reaches a store.
pub const LOG_INDEX_MAX: u64 = crate::ids::WIRE_INTEGER_MAX;

fn bounded<'de, D: serde::Deserializer<'de>>(deserializer: D, what: &str) -> Result<u64, D::Error> {
    let n = u64::deserialize(deserializer)?;
    if n > LOG_INDEX_MAX {
        return Err(serde::de::Error::custom(format!(
            "{what} {n} is larger than {LOG_INDEX_MAX}"
        )));
    }
    Ok(n)
}

/// An entry's place in the log, from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct LogIndex(pub u64);

impl<'de> Deserialize<'de> for LogIndex {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        bounded(deserializer, "log index").map(Self)
    }
}

impl LogIndex {
    /// The position of a state that includes this entry.
    #[must_use]
    pub fn position(self) -> Position {
        Position(self.0.saturating_add(1))
    }

    /// The entry after this one.
    ///
    /// # Panics
    /// Past [`LOG_INDEX_MAX`], which no store reaches.
    #[must_use]
    pub fn next(self) -> Self {
        assert!(self.0 < LOG_INDEX_MAX, "log index {} cannot grow", self.0);
        Self(self.0 + 1)
    }
}

impl fmt::Display for LogIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// How much of the log a state reflects: every entry with an index below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
#[serde(transparent)]
pub struct Position(pub u64);

impl<'de> Deserialize<'de> for Position {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        bounded(deserializer, "log position").map(Self)
    }
}

impl Position {
    /// The index of the next entry a state at this position would apply.
    #[must_use]
    pub fn next_index(self) -> LogIndex {
        LogIndex(self.0)
    }

    /// The last entry a state at this position reflects, if any.
    #[must_use]
    pub fn last_index(self) -> Option<LogIndex> {
        self.0.checked_sub(1).map(LogIndex)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One stock as the log's first entry lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockDef {
    /// Unique name.
    pub name: String,
    /// Price per share.
    pub price: Price,
    /// Initial quantity.
    #[serde(deserialize_with = "crate::ids::bounded::u64")]
    pub quantity: u64,
}

/// A trade as the log records it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TradeCommand {
    /// The trade's identity across retries; applied at most once.
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

/// What one log entry asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Command {
    /// The initial catalog. The first leader writes it from its catalog file; a second one (a
    /// leader that did not know the first was committed) changes nothing.
    Genesis {
        /// Every stock with its price and initial quantity.
        stocks: Vec<StockDef>,
    },
    /// A buy or a sell. A buy larger than what is available is refused by the apply step.
    Trade(TradeCommand),
    /// Every stock whose quantity is 0 is set to `to`.
    Restock {
        /// The quantity sold-out stocks get back.
        #[serde(deserialize_with = "crate::ids::bounded::u64")]
        to: u64,
    },
}

/// Most stocks a genesis may list.
pub const GENESIS_STOCKS_MAX: usize = 10_000;

impl Command {
    /// Checks every value a command carries against what the stores can hold and what a
    /// client could have asked for; a command from the wire that fails is refused (400)
    /// before it reaches any log.
    ///
    /// # Errors
    /// A sentence naming the bad value.
    pub fn validate(&self) -> Result<(), String> {
        let quantity = |q: u64| {
            if (1..=crate::TRADE_QUANTITY_MAX).contains(&q) {
                Ok(())
            } else {
                Err(format!(
                    "quantity {q} must be from 1 to {}",
                    crate::TRADE_QUANTITY_MAX
                ))
            }
        };
        match self {
            Self::Trade(trade) => {
                crate::validate_stock_name(&trade.name)?;
                quantity(trade.quantity)
            }
            Self::Restock { to } => quantity(*to),
            Self::Genesis { stocks } => {
                if stocks.len() > GENESIS_STOCKS_MAX {
                    return Err(format!(
                        "a genesis lists {} stocks; at most {GENESIS_STOCKS_MAX}",
                        stocks.len()
                    ));
                }
                for stock in stocks {
                    crate::validate_stock_name(&stock.name)?;
                    if stock.quantity > crate::TRADE_QUANTITY_MAX {
                        return Err(format!(
                            "initial quantity {} of {} is larger than {}",
                            stock.quantity,
                            stock.name,
                            crate::TRADE_QUANTITY_MAX
                        ));
                    }
                }
                Ok(())
            }
        }
    }

    /// The stock a trade touches; restocks and the genesis name none in advance.
    #[must_use]
    pub fn trade(&self) -> Option<&TradeCommand> {
        match self {
            Self::Trade(trade) => Some(trade),
            Self::Genesis { .. } | Self::Restock { .. } => None,
        }
    }
}

/// What applying a command changed. Followers of the log (catalogs) apply effects and decide
/// nothing themselves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// The catalog came into being.
    Listed {
        /// Every stock, as listed.
        stocks: Vec<StockDef>,
    },
    /// A trade took place and got transaction number `number`.
    Traded {
        /// Its transaction number.
        number: TxnNumber,
        /// Stock traded.
        name: String,
        /// Buy or sell.
        #[serde(rename = "type")]
        kind: TradeType,
        /// Shares.
        #[serde(deserialize_with = "crate::ids::bounded::u64")]
        quantity: u64,
    },
    /// A sold-out stock was restocked.
    Restocked {
        /// The stock.
        name: String,
        /// Its quantity after the restock.
        #[serde(deserialize_with = "crate::ids::bounded::u64")]
        quantity: u64,
    },
}

impl Effect {
    /// The stocks this effect changes.
    pub fn stocks(&self) -> impl Iterator<Item = &str> {
        let names: Vec<&str> = match self {
            Self::Listed { stocks } => stocks.iter().map(|s| s.name.as_str()).collect(),
            Self::Traded { name, .. } | Self::Restocked { name, .. } => vec![name.as_str()],
        };
        names.into_iter()
    }
}

/// One entry of the log as its followers see it: where it is and what it changed (nothing, for
/// a refused buy or a restock that found no stock sold out).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedEntry {
    /// Its index.
    pub index: LogIndex,
    /// What it changed.
    pub effects: Vec<Effect>,
}

/// The stock table at a position: what a catalog starts from when the log it needs is no
/// longer kept (or it has nothing at all).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookSnapshot {
    /// The position the stocks reflect.
    pub position: Position,
    /// Every stock.
    pub stocks: Vec<StockState>,
    /// The number the next trade will get.
    pub next_number: TxnNumber,
}

/// Query of `GET /internal/log` on the leader: what a catalog asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogFollowQuery {
    /// The catalog's position: it wants the entries from this index on.
    pub from: Position,
    /// The epoch of the leader the catalog's state came from; another leader answers with a
    /// snapshot (the catalog's last entries may not be in its log).
    #[serde(default)]
    pub epoch: Option<Epoch>,
    /// How long the leader may hold the request open when nothing new is released yet.
    #[serde(default, deserialize_with = "crate::ids::bounded::option_u64")]
    pub wait_ms: Option<u64>,
}

/// The leader's answer to a catalog following the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogFollow {
    /// The entries after the catalog's position, in order, up to the visible position.
    Entries {
        /// The leader's epoch.
        epoch: Epoch,
        /// Where the first entry starts (the catalog's position).
        from: Position,
        /// Applied entries, consecutive.
        entries: Vec<AppliedEntry>,
    },
    /// The catalog is behind what the leader keeps in memory (or has nothing): start over from
    /// this state.
    Snapshot {
        /// The leader's epoch.
        epoch: Epoch,
        /// The state.
        snapshot: BookSnapshot,
    },
}

/// A change to one stock as a front-end hears of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockChange {
    /// The stock.
    pub name: String,
    /// Its version after the change.
    pub version: Version,
}

/// A reply to `GET /internal/position` on the leader: a position that every acknowledged change
/// is below, for a front-end that cannot vouch for its own knowledge (its feed is down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionReply {
    /// Every change acknowledged to a client is in an entry below this position.
    pub position: Position,
    /// The leader's epoch.
    pub epoch: Epoch,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_entries() {
        assert_eq!(LogIndex(0).position(), Position(1));
        assert_eq!(Position(0).last_index(), None);
        assert_eq!(Position(5).last_index(), Some(LogIndex(4)));
        assert_eq!(Position(5).next_index(), LogIndex(5));
    }

    #[test]
    fn indexes_the_store_cannot_hold_are_refused_on_the_wire() {
        assert!(serde_json::from_str::<LogIndex>("9223372036854775807").is_ok());
        let err = serde_json::from_str::<LogIndex>("9223372036854775808")
            .expect_err("larger than i64::MAX");
        assert!(err.to_string().contains("larger than"), "{err}");
        assert!(serde_json::from_str::<Position>("18446744073709551615").is_err());
        assert!(serde_json::from_str::<Position>("-1").is_err());
    }

    #[test]
    fn commands_and_effects_have_a_readable_shape() {
        let command = Command::Restock { to: 100 };
        assert_eq!(
            serde_json::to_string(&command).expect("serialise"),
            r#"{"op":"restock","to":100}"#
        );
        let effect = Effect::Restocked {
            name: "A".into(),
            quantity: 100,
        };
        assert_eq!(
            serde_json::to_string(&effect).expect("serialise"),
            r#"{"effect":"restocked","name":"A","quantity":100}"#
        );
    }
}
