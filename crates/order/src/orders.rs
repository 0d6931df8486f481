//! The order row and the stock row, and every SQL statement that touches them. Both replication
//! modes keep their orders in the same `orders` table (so `bazaar verify` and `bazaar log` read
//! either kind of file); raft mode also checkpoints its ledger in `stocks`, because its log is
//! compacted and cannot be replayed from the start.
//!
//! Invariant, asserted on every insert: numbers are dense from 0.

use bazaar_api::log::{LogIndex, TradeCommand};
use bazaar_api::{Epoch, Order, Price, RequestId, StockState, TradeType, TxnNumber, Version};
use bazaar_ledger::StockRecord;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

/// Longest page of orders one read returns.
pub const PAGE_LEN_MAX: u32 = 1000;

/// The tables, created when missing.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
    number     INTEGER PRIMARY KEY CHECK (number >= 0),
    request_id TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    type       TEXT NOT NULL CHECK (type IN ('buy', 'sell')),
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    log_index  INTEGER NOT NULL CHECK (log_index >= 0),
    epoch      INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS orders_by_log_index ON orders (log_index);
CREATE TABLE IF NOT EXISTS stocks (
    name        TEXT PRIMARY KEY,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    quantity    INTEGER NOT NULL CHECK (quantity >= 0),
    volume      INTEGER NOT NULL CHECK (volume >= 0),
    version     INTEGER NOT NULL CHECK (version >= 0),
    initial     INTEGER NOT NULL CHECK (initial >= 0),
    bought      INTEGER NOT NULL CHECK (bought >= 0),
    sold        INTEGER NOT NULL CHECK (sold >= 0),
    restocked   INTEGER NOT NULL CHECK (restocked >= 0)
) STRICT;
";

/// One order as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OrderRow {
    /// Transaction number.
    pub number: TxnNumber,
    /// The trade's request id.
    pub request_id: RequestId,
    /// Stock.
    pub name: String,
    /// Buy or sell.
    #[serde(rename = "type")]
    pub kind: TradeType,
    /// Shares.
    pub quantity: u64,
    /// The log entry that made it.
    pub log_index: LogIndex,
    /// The epoch (raft: term) of that entry.
    pub epoch: Epoch,
    /// When this replica stored it, in milliseconds since the Unix epoch.
    pub created_ms: u64,
}

impl OrderRow {
    /// The order a successful trade made: numbered `number` by the log entry at `log_index` of
    /// `epoch` (raft: term), stored at `created_ms`.
    #[must_use]
    pub fn of_trade(
        number: TxnNumber,
        trade: &TradeCommand,
        log_index: LogIndex,
        epoch: Epoch,
        created_ms: u64,
    ) -> Self {
        Self {
            number,
            request_id: trade.request_id,
            name: trade.name.clone(),
            kind: trade.kind,
            quantity: trade.quantity,
            log_index,
            epoch,
            created_ms,
        }
    }

    /// As the public API shows it.
    #[must_use]
    pub fn to_order(&self) -> Order {
        Order {
            number: self.number,
            name: self.name.clone(),
            kind: self.kind,
            quantity: self.quantity,
        }
    }
}

/// Every value stored fits SQLite's signed integers: the wire types refuse larger ones and the
/// ledger never produces them. A value that does not fit is a bug.
fn int(n: u64) -> i64 {
    i64::try_from(n).expect("stored values fit a signed 64-bit integer")
}

const COLUMNS: &str = "number, request_id, name, type, quantity, log_index, epoch, created_ms";

fn from_row(r: &Row<'_>) -> rusqlite::Result<OrderRow> {
    let bad = |i: usize, what: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.into())
    };
    let request_id: String = r.get(1)?;
    let kind: String = r.get(3)?;
    Ok(OrderRow {
        number: TxnNumber(r.get(0)?),
        request_id: request_id.parse().map_err(|e| bad(1, e))?,
        name: r.get(2)?,
        kind: kind.parse().map_err(|e| bad(3, e))?,
        quantity: r.get(4)?,
        log_index: LogIndex(r.get(5)?),
        epoch: Epoch(r.get(6)?),
        created_ms: r.get(7)?,
    })
}

/// Inserts an order, which must be numbered right after the last one.
///
/// # Panics
/// If the number is not the next one: the ledger numbers densely, so a gap is a bug.
///
/// # Errors
/// SQLite errors.
pub fn insert(db_tx: &Transaction<'_>, row: &OrderRow) -> rusqlite::Result<()> {
    let next: u64 = db_tx
        .prepare_cached("SELECT COALESCE(MAX(number) + 1, 0) FROM orders")?
        .query_row([], |r| r.get(0))?;
    assert_eq!(row.number.0, next, "orders are numbered densely");
    db_tx
        .prepare_cached(&format!(
            "INSERT INTO orders ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
        ))?
        .execute(params![
            int(row.number.0),
            row.request_id.to_string(),
            row.name,
            row.kind.as_str(),
            int(row.quantity),
            int(row.log_index.0),
            int(row.epoch.0),
            int(row.created_ms),
        ])?;
    Ok(())
}

/// Deletes the orders made by entries from `from` on (their entries move aside); returns how
/// many.
///
/// # Errors
/// SQLite errors.
pub fn delete_from(db_tx: &Transaction<'_>, from: LogIndex) -> rusqlite::Result<usize> {
    db_tx.execute("DELETE FROM orders WHERE log_index >= ?1", [int(from.0)])
}

/// Replaces every order (installing a raft snapshot).
///
/// # Panics
/// If the rows are not numbered densely from 0.
///
/// # Errors
/// SQLite errors.
pub fn replace_all(db_tx: &Transaction<'_>, rows: &[OrderRow]) -> rusqlite::Result<()> {
    db_tx.execute("DELETE FROM orders", [])?;
    for row in rows {
        insert(db_tx, row)?;
    }
    Ok(())
}

/// The order numbered `number`.
///
/// # Errors
/// SQLite errors.
pub fn by_number(conn: &Connection, number: TxnNumber) -> rusqlite::Result<Option<OrderRow>> {
    let Ok(number) = i64::try_from(number.0) else {
        return Ok(None);
    };
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM orders WHERE number = ?1"))?
        .query_row([number], from_row)
        .optional()
}

/// Up to `limit` orders from `from` on.
///
/// # Errors
/// SQLite errors.
pub fn page(conn: &Connection, from: TxnNumber, limit: u32) -> rusqlite::Result<Vec<OrderRow>> {
    let Ok(from) = i64::try_from(from.0) else {
        return Ok(Vec::new());
    };
    let limit = limit.min(PAGE_LEN_MAX);
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM orders WHERE number >= ?1 ORDER BY number LIMIT ?2"
    ))?
    .query_map(params![from, limit], from_row)?
    .collect()
}

/// Every order below `count`, for a raft snapshot.
///
/// # Errors
/// SQLite errors.
pub fn below(conn: &Connection, count: TxnNumber) -> rusqlite::Result<Vec<OrderRow>> {
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM orders WHERE number < ?1 ORDER BY number"
    ))?
    .query_map([int(count.0)], from_row)?
    .collect()
}

/// Every request id with its number, for rebuilding a ledger.
///
/// # Errors
/// SQLite errors.
pub fn requests(conn: &Connection) -> rusqlite::Result<Vec<(RequestId, TxnNumber)>> {
    conn.prepare_cached("SELECT request_id, number FROM orders")?
        .query_map([], |r| {
            let id: String = r.get(0)?;
            let id = id.parse().map_err(|e: String| {
                rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
            })?;
            Ok((id, TxnNumber(r.get(1)?)))
        })?
        .collect()
}

/// Checks that the orders are numbered densely from 0 (recovery's double check of the
/// insert-time invariant); returns how many there are.
///
/// # Errors
/// A sentence when they are not; SQLite errors.
pub fn check_dense(conn: &Connection) -> Result<u64, String> {
    let (count, max): (u64, Option<u64>) = conn
        .query_row("SELECT COUNT(*), MAX(number) FROM orders", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .map_err(|e| e.to_string())?;
    if max.map_or(count == 0, |m| m + 1 == count) {
        Ok(count)
    } else {
        Err(format!(
            "the orders have gaps: {count} orders, highest number {max:?}"
        ))
    }
}

/// Writes the ledger's stocks (raft mode's checkpoint).
///
/// # Errors
/// SQLite errors.
pub fn write_stocks<'a>(
    db_tx: &Transaction<'_>,
    records: impl IntoIterator<Item = &'a StockRecord>,
) -> rusqlite::Result<()> {
    let mut stmt = db_tx.prepare_cached(
        "INSERT OR REPLACE INTO stocks
         (name, price_cents, quantity, volume, version, initial, bought, sold, restocked)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for r in records {
        stmt.execute(params![
            r.state.name,
            int(r.state.price.cents()),
            int(r.state.quantity),
            int(r.state.volume),
            int(r.state.version.0),
            int(r.initial),
            int(r.bought),
            int(r.sold),
            int(r.restocked),
        ])?;
    }
    Ok(())
}

/// Replaces every stock (installing a raft snapshot).
///
/// # Errors
/// SQLite errors.
pub fn replace_stocks(db_tx: &Transaction<'_>, records: &[StockRecord]) -> rusqlite::Result<()> {
    db_tx.execute("DELETE FROM stocks", [])?;
    write_stocks(db_tx, records)
}

/// The checkpointed stocks.
///
/// # Errors
/// SQLite errors, and a price out of range.
pub fn read_stocks(conn: &Connection) -> rusqlite::Result<Vec<StockRecord>> {
    conn.prepare_cached(
        "SELECT name, price_cents, quantity, volume, version, initial, bought, sold, restocked
         FROM stocks ORDER BY name",
    )?
    .query_map([], |r| {
        let cents: u64 = r.get(1)?;
        if cents > bazaar_api::price::PRICE_CENTS_MAX {
            return Err(rusqlite::Error::IntegralValueOutOfRange(1, int(cents)));
        }
        Ok(StockRecord {
            state: StockState {
                name: r.get(0)?,
                price: Price::from_cents(cents),
                quantity: r.get(2)?,
                volume: r.get(3)?,
                version: Version(r.get(4)?),
            },
            initial: r.get(5)?,
            bought: r.get(6)?,
            sold: r.get(7)?,
            restocked: r.get(8)?,
        })
    })?
    .collect()
}

/// Every order, by number (for `bazaar verify`).
///
/// # Errors
/// SQLite errors.
pub fn page_all(conn: &Connection) -> rusqlite::Result<Vec<OrderRow>> {
    conn.prepare(&format!("SELECT {COLUMNS} FROM orders ORDER BY number"))?
        .query_map([], from_row)?
        .collect()
}
