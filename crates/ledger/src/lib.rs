//! The ledger: the stock table derived from the order log by one deterministic apply step.
//!
//! Every order replica applies the log's commands in log order to a [`Book`]; `bazaar verify`
//! replays a log into one to check a catalog against it. The same command applied to the same
//! book gives the same result on every machine, so "is there enough stock for this buy?" is
//! decided identically everywhere, in one atomic step, with no lock and no second service.
//!
//! Rules (the spec's, made exact):
//! - The first [`Command::Genesis`] lists the stocks; a later one changes nothing (two leaders may
//!   both have written one before either knew of the other).
//! - A trade whose request id was applied before changes nothing and answers the first number
//!   (exactly once).
//! - A buy larger than the quantity available is refused and takes no transaction number; so is a
//!   trade of an unknown stock, a trade before the genesis, and a sell that would push a quantity
//!   or volume past what a store can hold.
//! - Every successful trade takes the next transaction number, dense from 0; a buy lowers the
//!   quantity, a sell raises it, both add to the volume and bump the stock's version.
//! - A restock sets every stock at quantity 0 to its `to`.
//!
//! Invariants, asserted where they change: positions grow by one per entry; transaction numbers
//! are dense; for every stock, quantity = initial + restocked + sold - bought.
//!
//! # Layout
//! - [`seed`] — the catalog CSV that the genesis entry is written from.

pub mod seed;

use std::collections::{BTreeMap, HashMap};

use bazaar_api::log::{AppliedEntry, BookSnapshot, Command, Effect, LogIndex, Position, StockDef};
use bazaar_api::{RequestId, StockState, TradeType, TxnNumber, Version};

/// The largest quantity or volume a stock may reach: what the stores' signed 64-bit integers
/// hold. A sell that would pass it is refused rather than wrapped or clamped.
pub const AMOUNT_MAX: u64 = i64::MAX as u64;

/// Why a trade (or restock) takes no effect. Each is decided by the apply step alone, so every
/// replica reaches the same verdict.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(tag = "refusal", rename_all = "snake_case")]
pub enum Refusal {
    /// No stock of that name.
    #[error("no stock named {name:?}")]
    UnknownStock {
        /// The name asked for.
        name: String,
    },
    /// A buy larger than what is available.
    #[error("cannot buy {wanted} of {name}: {available} available")]
    InsufficientStock {
        /// The stock.
        name: String,
        /// Shares asked for.
        wanted: u64,
        /// Shares available.
        available: u64,
    },
    /// The sell would push the stock's quantity or volume past [`AMOUNT_MAX`].
    #[error("cannot sell {quantity} of {name}: its quantity or volume would pass {AMOUNT_MAX}")]
    AmountLimit {
        /// The stock.
        name: String,
        /// Shares offered.
        quantity: u64,
    },
    /// The log holds no catalog yet.
    #[error("the catalog is not listed yet")]
    NotListed,
}

/// What applying one command did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "outcome", content = "value", rename_all = "snake_case")]
pub enum Outcome {
    /// The genesis listed the stocks.
    Listed,
    /// A trade took place with this number.
    Traded(TxnNumber),
    /// The request id was applied before, as this number; nothing changed.
    Duplicate(TxnNumber),
    /// A trade took no effect.
    Refused(Refusal),
    /// A restock set this many stocks back.
    Restocked(usize),
    /// Nothing to do: a second genesis, a restock that found nothing sold out.
    Unchanged,
}

/// One stock with the totals that conservation is checked against, as stores persist it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StockRecord {
    /// The stock as catalogs show it.
    pub state: StockState,
    /// Its quantity in the genesis.
    pub initial: u64,
    /// Shares bought so far.
    pub bought: u64,
    /// Shares sold so far.
    pub sold: u64,
    /// Shares added by restocks so far.
    pub restocked: u64,
}

type Row = StockRecord;

impl StockRecord {
    /// Whether quantity = initial + restocked + sold - bought.
    #[must_use]
    pub fn is_conserved(&self) -> bool {
        let expected =
            i128::from(self.initial) + i128::from(self.restocked) + i128::from(self.sold)
                - i128::from(self.bought);
        i128::from(self.state.quantity) == expected
    }

    /// quantity = initial + restocked + sold - bought, in 128 bits so the check cannot overflow.
    fn assert_conserved(&self) {
        assert!(
            self.is_conserved(),
            "conservation broken for {}: {self:?}",
            self.state.name
        );
    }
}

/// The stock table at a position of the log, with the request ids applied so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Book {
    stocks: BTreeMap<String, Row>,
    /// Every applied trade's request id and number: exactly once across retries and leaders.
    /// About 40 bytes per order.
    requests: HashMap<RequestId, TxnNumber>,
    next_number: TxnNumber,
    position: Position,
    listed: bool,
}

impl Book {
    /// The empty book, before the first entry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// How much of the log it reflects.
    #[must_use]
    pub fn position(&self) -> Position {
        self.position
    }

    /// The number the next trade will get.
    #[must_use]
    pub fn next_number(&self) -> TxnNumber {
        self.next_number
    }

    /// Whether the genesis has been applied.
    #[must_use]
    pub fn is_listed(&self) -> bool {
        self.listed
    }

    /// One stock.
    #[must_use]
    pub fn stock(&self, name: &str) -> Option<&StockState> {
        self.stocks.get(name).map(|r| &r.state)
    }

    /// Every stock, by name.
    pub fn stocks(&self) -> impl Iterator<Item = &StockState> {
        self.stocks.values().map(|r| &r.state)
    }

    /// The number a request id was applied as.
    #[must_use]
    pub fn number_of(&self, request_id: RequestId) -> Option<TxnNumber> {
        self.requests.get(&request_id).copied()
    }

    /// What applying `command` now would do, without doing it: the primary-backup leader asks
    /// this before it appends (it appends only commands that change something).
    #[must_use]
    pub fn decide(&self, command: &Command) -> Outcome {
        match command {
            Command::Genesis { .. } if self.listed => Outcome::Unchanged,
            Command::Genesis { .. } => Outcome::Listed,
            Command::Trade(trade) => {
                if let Some(number) = self.number_of(trade.request_id) {
                    return Outcome::Duplicate(number);
                }
                match self.check_trade(&trade.name, trade.kind, trade.quantity) {
                    Ok(()) => Outcome::Traded(self.next_number),
                    Err(refusal) => Outcome::Refused(refusal),
                }
            }
            Command::Restock { to: 0 } => Outcome::Unchanged,
            Command::Restock { .. } => match self.sold_out().count() {
                0 => Outcome::Unchanged,
                n => Outcome::Restocked(n),
            },
        }
    }

    fn sold_out(&self) -> impl Iterator<Item = &Row> {
        self.stocks.values().filter(|r| r.state.quantity == 0)
    }

    fn check_trade(&self, name: &str, kind: TradeType, quantity: u64) -> Result<(), Refusal> {
        if !self.listed {
            return Err(Refusal::NotListed);
        }
        let row = self.stocks.get(name).ok_or_else(|| Refusal::UnknownStock {
            name: name.to_owned(),
        })?;
        let volume_ok = row
            .state
            .volume
            .checked_add(quantity)
            .is_some_and(|v| v <= AMOUNT_MAX);
        match kind {
            TradeType::Buy if quantity > row.state.quantity => Err(Refusal::InsufficientStock {
                name: name.to_owned(),
                wanted: quantity,
                available: row.state.quantity,
            }),
            TradeType::Sell
                if row
                    .state
                    .quantity
                    .checked_add(quantity)
                    .is_none_or(|q| q > AMOUNT_MAX) =>
            {
                Err(Refusal::AmountLimit {
                    name: name.to_owned(),
                    quantity,
                })
            }
            _ if !volume_ok => Err(Refusal::AmountLimit {
                name: name.to_owned(),
                quantity,
            }),
            _ => Ok(()),
        }
    }

    /// Applies the entry at `index`, which holds `commands` (none for an entry that carries no
    /// command, such as a Raft membership entry). Returns each command's outcome and the entry
    /// as followers of the log see it.
    ///
    /// # Panics
    /// If `index` is not the entry after the book's position: applying out of order is a bug
    /// that would make replicas disagree, so the process stops.
    pub fn apply(&mut self, index: LogIndex, commands: &[Command]) -> (Vec<Outcome>, AppliedEntry) {
        assert_eq!(
            index,
            self.position.next_index(),
            "entry {index} applied to a book at position {}",
            self.position
        );
        let mut effects = Vec::new();
        let outcomes = commands
            .iter()
            .map(|command| self.apply_command(command, &mut effects))
            .collect();
        self.position = index.position();
        (outcomes, AppliedEntry { index, effects })
    }

    /// [`Self::apply`] for a log whose indexes may skip forward: Raft's. openraft applies every
    /// entry in order (so indexes are dense in a running cluster), but its storage conformance
    /// suite applies entries at sparse indexes, and a skipped index can only be one that carried
    /// no command for this book. Indexes still never go back.
    ///
    /// # Panics
    /// If `index` is below the book's position.
    pub fn apply_at(
        &mut self,
        index: LogIndex,
        commands: &[Command],
    ) -> (Vec<Outcome>, AppliedEntry) {
        assert!(
            index >= self.position.next_index(),
            "entry {index} applied to a book at position {}",
            self.position
        );
        self.position = Position(index.0);
        self.apply(index, commands)
    }

    fn apply_command(&mut self, command: &Command, effects: &mut Vec<Effect>) -> Outcome {
        let outcome = self.decide(command);
        match (&outcome, command) {
            (Outcome::Listed, Command::Genesis { stocks }) => {
                self.list(stocks);
                effects.push(Effect::Listed {
                    stocks: stocks.clone(),
                });
            }
            (Outcome::Traded(number), Command::Trade(trade)) => {
                let row = self
                    .stocks
                    .get_mut(&trade.name)
                    .expect("decide found the stock");
                // decide checked every bound, so none of this can overflow.
                match trade.kind {
                    TradeType::Buy => {
                        row.state.quantity -= trade.quantity;
                        row.bought += trade.quantity;
                    }
                    TradeType::Sell => {
                        row.state.quantity += trade.quantity;
                        row.sold += trade.quantity;
                    }
                }
                row.state.volume += trade.quantity;
                row.state.version = Version(row.state.version.0 + 1);
                row.assert_conserved();
                assert_eq!(*number, self.next_number, "numbers are dense");
                self.requests.insert(trade.request_id, *number);
                self.next_number = number.next();
                effects.push(Effect::Traded {
                    number: *number,
                    name: trade.name.clone(),
                    kind: trade.kind,
                    quantity: trade.quantity,
                });
            }
            (Outcome::Restocked(_), Command::Restock { to }) => {
                for row in self.stocks.values_mut() {
                    if row.state.quantity == 0 {
                        row.state.quantity = (*to).min(AMOUNT_MAX);
                        row.restocked += row.state.quantity;
                        row.state.version = Version(row.state.version.0 + 1);
                        row.assert_conserved();
                        effects.push(Effect::Restocked {
                            name: row.state.name.clone(),
                            quantity: row.state.quantity,
                        });
                    }
                }
            }
            _ => {}
        }
        outcome
    }

    fn list(&mut self, stocks: &[StockDef]) {
        for def in stocks {
            let quantity = def.quantity.min(AMOUNT_MAX);
            self.stocks.insert(
                def.name.clone(),
                Row {
                    state: StockState {
                        name: def.name.clone(),
                        price: def.price,
                        quantity,
                        volume: 0,
                        version: Version(0),
                    },
                    initial: quantity,
                    bought: 0,
                    sold: 0,
                    restocked: 0,
                },
            );
        }
        self.listed = true;
    }

    /// The stock table as a catalog starts from it.
    #[must_use]
    pub fn snapshot(&self) -> BookSnapshot {
        BookSnapshot {
            position: self.position,
            stocks: self.stocks().cloned().collect(),
            next_number: self.next_number,
        }
    }

    /// Every stock with its totals, as a store persists them.
    pub fn records(&self) -> impl Iterator<Item = &StockRecord> {
        self.stocks.values()
    }

    /// Every applied trade's request id and number.
    pub fn requests(&self) -> impl Iterator<Item = (RequestId, TxnNumber)> + '_ {
        self.requests.iter().map(|(r, n)| (*r, *n))
    }

    /// A book as a store persisted it: its position, its stocks with their totals, and every
    /// applied request id with its number.
    ///
    /// # Errors
    /// A sentence naming what does not hold: a stock that is not conserved, numbers that are
    /// not dense from 0, a request id applied twice.
    pub fn restore(
        position: Position,
        records: Vec<StockRecord>,
        requests: Vec<(RequestId, TxnNumber)>,
    ) -> Result<Self, String> {
        if let Some(bad) = records.iter().find(|r| !r.is_conserved()) {
            return Err(format!(
                "stock {} is not conserved: {bad:?}",
                bad.state.name
            ));
        }
        let count = requests.len() as u64;
        let mut numbers: Vec<u64> = requests.iter().map(|(_, n)| n.0).collect();
        numbers.sort_unstable();
        if numbers.iter().enumerate().any(|(i, n)| *n != i as u64) {
            return Err(format!(
                "the {count} orders are not numbered densely from 0"
            ));
        }
        let listed = !records.is_empty();
        let stocks: BTreeMap<String, StockRecord> = records
            .into_iter()
            .map(|r| (r.state.name.clone(), r))
            .collect();
        let requests: HashMap<RequestId, TxnNumber> = requests.into_iter().collect();
        if requests.len() as u64 != count {
            return Err("a request id is applied twice".into());
        }
        Ok(Self {
            stocks,
            requests,
            next_number: TxnNumber(count),
            position,
            listed,
        })
    }

    /// Replays a whole log from the start.
    ///
    /// # Errors
    /// A sentence naming the first entry that is out of place.
    pub fn replay<'a>(
        entries: impl IntoIterator<Item = (LogIndex, &'a [Command])>,
    ) -> Result<Self, String> {
        let mut book = Self::new();
        for (index, commands) in entries {
            if index != book.position.next_index() {
                return Err(format!(
                    "the log has entry {index} where entry {} belongs",
                    book.position.next_index()
                ));
            }
            book.apply(index, commands);
        }
        Ok(book)
    }
}

/// A view of the log that applies effects rather than commands: what a catalog keeps. It
/// decides nothing; it only follows what a replica's [`Book`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    stocks: BTreeMap<String, StockState>,
    position: Position,
    next_number: TxnNumber,
}

impl View {
    /// The empty view, before the first entry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A view starting from a snapshot (or from what a catalog's own file held).
    #[must_use]
    pub fn from_snapshot(snapshot: BookSnapshot) -> Self {
        Self {
            stocks: snapshot
                .stocks
                .into_iter()
                .map(|s| (s.name.clone(), s))
                .collect(),
            position: snapshot.position,
            next_number: snapshot.next_number,
        }
    }

    /// How much of the log it reflects.
    #[must_use]
    pub fn position(&self) -> Position {
        self.position
    }

    /// One stock.
    #[must_use]
    pub fn stock(&self, name: &str) -> Option<&StockState> {
        self.stocks.get(name)
    }

    /// Every stock, by name.
    pub fn stocks(&self) -> impl Iterator<Item = &StockState> {
        self.stocks.values()
    }

    /// The view as a snapshot.
    #[must_use]
    pub fn snapshot(&self) -> BookSnapshot {
        BookSnapshot {
            position: self.position,
            stocks: self.stocks.values().cloned().collect(),
            next_number: self.next_number,
        }
    }

    /// Applies the next entry's effects; returns the names of the stocks that changed.
    ///
    /// # Errors
    /// The entry is not the next one, or an effect does not fit the view (a trade of a stock it
    /// does not list, a number out of sequence, an amount out of range): the view and the log
    /// disagree, and the view must be rebuilt rather than patched.
    pub fn apply(&mut self, entry: &AppliedEntry) -> Result<Vec<String>, String> {
        if entry.index != self.position.next_index() {
            return Err(format!(
                "entry {} does not follow position {}",
                entry.index, self.position
            ));
        }
        let mut next = self.clone();
        let mut changed = Vec::new();
        for effect in &entry.effects {
            next.apply_effect(effect)?;
            changed.extend(effect.stocks().map(str::to_owned));
        }
        next.position = entry.index.position();
        *self = next;
        changed.sort_unstable();
        changed.dedup();
        Ok(changed)
    }

    fn apply_effect(&mut self, effect: &Effect) -> Result<(), String> {
        match effect {
            Effect::Listed { stocks } => {
                for def in stocks {
                    self.stocks.entry(def.name.clone()).or_insert(StockState {
                        name: def.name.clone(),
                        price: def.price,
                        quantity: def.quantity,
                        volume: 0,
                        version: Version(0),
                    });
                }
            }
            Effect::Traded {
                number,
                name,
                kind,
                quantity,
            } => {
                if *number != self.next_number {
                    return Err(format!(
                        "trade number {number} where {} comes next",
                        self.next_number
                    ));
                }
                let stock = self
                    .stocks
                    .get_mut(name)
                    .ok_or_else(|| format!("a trade of {name:?}, which is not listed"))?;
                let quantity_after = match kind {
                    TradeType::Buy => stock.quantity.checked_sub(*quantity),
                    TradeType::Sell => stock
                        .quantity
                        .checked_add(*quantity)
                        .filter(|q| *q <= AMOUNT_MAX),
                };
                let volume_after = stock
                    .volume
                    .checked_add(*quantity)
                    .filter(|v| *v <= AMOUNT_MAX);
                let (Some(q), Some(v)) = (quantity_after, volume_after) else {
                    return Err(format!(
                        "trade {number} of {name} does not fit its quantity"
                    ));
                };
                stock.quantity = q;
                stock.volume = v;
                stock.version = Version(stock.version.0.saturating_add(1));
                self.next_number = number.next();
            }
            Effect::Restocked { name, quantity } => {
                let stock = self
                    .stocks
                    .get_mut(name)
                    .ok_or_else(|| format!("a restock of {name:?}, which is not listed"))?;
                if *quantity > AMOUNT_MAX {
                    return Err(format!("a restock of {name} to {quantity}"));
                }
                stock.quantity = *quantity;
                stock.version = Version(stock.version.0.saturating_add(1));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
