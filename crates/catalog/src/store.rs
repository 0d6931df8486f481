//! The catalog's SQLite store.
//!
//! One writer thread owns the write connection. Requests arrive on a bounded channel with a
//! oneshot for the reply; whatever is queued when the writer wakes is executed in one database
//! transaction and made durable by one commit (group commit), and only then are the replies
//! sent. Each trade's check and update run back to back on that thread against the committed
//! state, so check-and-update is one atomic step.
//!
//! Lookups never touch SQLite: the writer publishes every committed stock to an in-memory map
//! that readers copy from. Trade listings use read-only connections (WAL lets them read
//! while the writer commits).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bazaar_api::catalog::{TradeRecord, TradeState, TradeTry, TradesQuery};
use bazaar_api::{Epoch, Price, RequestId, StockState, Version};
use bazaar_service::writer::{self, Deferred, defer};
use bazaar_service::{Fatal, db, now_ms};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};
use crate::seed::SeedStock;
use crate::trade::StockRow;

/// Requests queued for the writer at most; callers wait for room beyond that.
const COMMAND_QUEUE_LEN: usize = 1024;

/// Most requests committed by one database transaction.
const BATCH_LEN_MAX: usize = 256;

/// Most trades one listing returns.
const TRADES_PAGE_LEN_MAX: u32 = 10_000;

/// Version of the schema below; a database with another is refused rather than misread.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stocks (
    name             TEXT PRIMARY KEY,
    price_cents      INTEGER NOT NULL CHECK (price_cents >= 0),
    quantity         INTEGER NOT NULL CHECK (quantity >= 0),
    reserved         INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= quantity),
    volume           INTEGER NOT NULL DEFAULT 0 CHECK (volume >= 0),
    version          INTEGER NOT NULL DEFAULT 0,
    initial_quantity INTEGER NOT NULL,
    restocked        INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE TABLE IF NOT EXISTS trades (
    request_id  TEXT PRIMARY KEY,
    name        TEXT NOT NULL REFERENCES stocks(name),
    type        TEXT NOT NULL CHECK (type IN ('buy', 'sell')),
    quantity    INTEGER NOT NULL CHECK (quantity > 0),
    state       TEXT NOT NULL CHECK (state IN ('reserved', 'confirmed', 'cancelled')),
    epoch       INTEGER NOT NULL,
    created_ms  INTEGER NOT NULL,
    updated_ms  INTEGER NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS trades_by_state ON trades (state, updated_ms);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;
";

/// The outcome of a confirm: the trade and the stock's version after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The trade, now confirmed.
    pub record: TradeRecord,
    /// The stock's current version, to invalidate caches with.
    pub version: Version,
}

type Reply<T> = oneshot::Sender<Result<T>>;

enum Command {
    Try(TradeTry, Reply<TradeRecord>),
    Confirm(RequestId, Epoch, Reply<Settled>),
    Cancel(RequestId, Epoch, Reply<TradeRecord>),
    Restock(u64, Reply<Vec<(String, Version)>>),
}

/// Handle to the store; cheap to clone. The writer thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct Store {
    commands: mpsc::Sender<Command>,
    /// Committed stocks, published by the writer after each commit.
    stocks: Arc<RwLock<BTreeMap<String, StockState>>>,
    readers: db::Readers,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens the database at `path`, seeding it from `seed` if it holds no stocks yet, and
    /// starts the writer thread. A failed commit raises `fatal`.
    ///
    /// # Errors
    /// [`Error::Storage`] or [`Error::Config`] naming the file.
    pub fn open(
        path: &Path,
        seed: impl FnOnce() -> Result<Vec<SeedStock>>,
        fatal: Fatal,
    ) -> Result<(Self, std::thread::JoinHandle<()>)> {
        let mut conn = db::open_writer(path).map_err(Error::Storage)?;
        init_schema(&mut conn, path, seed)?;
        let rows = load_stocks(&conn).map_err(|e| Error::Storage(db::describe(path, &e)))?;
        let fence = load_fence(&conn).map_err(|e| Error::Storage(db::describe(path, &e)))?;
        let readers = db::Readers::open(path).map_err(Error::Storage)?;
        let published: BTreeMap<String, StockState> = rows
            .iter()
            .map(|(name, row)| (name.clone(), row.state()))
            .collect();
        let stocks = Arc::new(RwLock::new(published));
        let (commands, queue) = mpsc::channel(COMMAND_QUEUE_LEN);
        let mut writer = Writer {
            conn,
            rows,
            fence,
            stocks: Arc::clone(&stocks),
            path: path.to_owned(),
        };
        let thread = writer::spawn(
            "catalog-writer",
            queue,
            BATCH_LEN_MAX,
            fatal,
            move |batch| {
                writer.commit_batch(batch).map_err(|e| {
                    format!("catalog write failed: {}", db::describe(&writer.path, &e))
                })
            },
        )
        .map_err(|e| Error::Storage(format!("cannot start the writer thread: {e}")))?;
        let store = Self {
            commands,
            stocks,
            readers,
            path: path.to_owned(),
        };
        Ok((store, thread))
    }

    /// The committed state of one stock.
    #[must_use]
    pub fn stock(&self, name: &str) -> Option<StockState> {
        self.stocks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Every stock, by name.
    #[must_use]
    pub fn stocks(&self) -> Vec<StockState> {
        self.stocks
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Reserves a trade (idempotent under its request id).
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn trade_try(&self, trade: TradeTry) -> Result<TradeRecord> {
        self.call(|reply| Command::Try(trade, reply)).await
    }

    /// Confirms a reservation (idempotent).
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn trade_confirm(&self, id: RequestId, epoch: Epoch) -> Result<Settled> {
        self.call(|reply| Command::Confirm(id, epoch, reply)).await
    }

    /// Cancels a reservation (idempotent).
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn trade_cancel(&self, id: RequestId, epoch: Epoch) -> Result<TradeRecord> {
        self.call(|reply| Command::Cancel(id, epoch, reply)).await
    }

    /// Sets every sold-out stock to `to`; returns the changed stocks and their new versions.
    ///
    /// # Errors
    /// See [`Error`].
    pub async fn restock(&self, to: u64) -> Result<Vec<(String, Version)>> {
        self.call(|reply| Command::Restock(to, reply)).await
    }

    /// Trades matching `query`, oldest change first.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn trades(&self, query: TradesQuery) -> Result<Vec<TradeRecord>> {
        let cutoff = query
            .older_than_ms
            .map_or(u64::MAX, |age| now_ms().saturating_sub(age));
        self.readers
            .read(move |conn| query_trades(conn, query.state, cutoff))
            .await
            .map_err(Error::Storage)
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T> {
        writer::request(&self.commands, make)
            .await
            .unwrap_or(Err(Error::ShuttingDown))
    }
}

fn init_schema(
    conn: &mut Connection,
    path: &Path,
    seed: impl FnOnce() -> Result<Vec<SeedStock>>,
) -> Result<()> {
    let storage = |e: rusqlite::Error| Error::Storage(db::describe(path, &e));
    let db_tx = conn.transaction().map_err(storage)?;
    db_tx.execute_batch(SCHEMA).map_err(storage)?;
    let schema: Option<i64> = db_tx
        .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(storage)?;
    match schema {
        Some(SCHEMA_VERSION) => {}
        Some(other) => {
            return Err(Error::Storage(format!(
                "{} has catalog schema {other}; this build reads schema {SCHEMA_VERSION}",
                path.display()
            )));
        }
        None => {
            db_tx
                .execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION],
                )
                .map_err(storage)?;
        }
    }
    let count: i64 = db_tx
        .query_row("SELECT COUNT(*) FROM stocks", [], |r| r.get(0))
        .map_err(storage)?;
    if count == 0 {
        let stocks = seed()?;
        for s in &stocks {
            db_tx
                .execute(
                    "INSERT INTO stocks (name, price_cents, quantity, initial_quantity)
                     VALUES (?1, ?2, ?3, ?3)",
                    params![s.name, s.price.cents(), s.quantity],
                )
                .map_err(storage)?;
        }
        tracing::info!(stocks = stocks.len(), db = %path.display(), "seeded a new catalog");
    }
    db_tx.commit().map_err(storage)
}

fn load_stocks(conn: &Connection) -> rusqlite::Result<BTreeMap<String, StockRow>> {
    let mut stmt = conn.prepare(
        "SELECT name, price_cents, quantity, reserved, volume, version, initial_quantity, restocked
         FROM stocks ORDER BY name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(StockRow {
            name: r.get(0)?,
            price: Price::from_cents(r.get(1)?),
            quantity: r.get(2)?,
            reserved: r.get(3)?,
            volume: r.get(4)?,
            version: Version(r.get(5)?),
            initial: r.get(6)?,
            restocked: r.get(7)?,
        })
    })?;
    rows.map(|row| row.map(|row| (row.name.clone(), row)))
        .collect()
}

fn load_fence(conn: &Connection) -> rusqlite::Result<Epoch> {
    conn.query_row(
        "SELECT value FROM meta WHERE key = 'fence_epoch'",
        [],
        |r| r.get(0),
    )
    .optional()
    .map(|v| Epoch(v.unwrap_or(0)))
}

const TRADE_COLUMNS: &str = "request_id, name, type, quantity, state, created_ms, updated_ms";

fn trade_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TradeRecord> {
    let text_err = |i: usize, e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    };
    let id: String = r.get(0)?;
    let kind: String = r.get(2)?;
    let state: String = r.get(4)?;
    Ok(TradeRecord {
        request_id: id.parse().map_err(|e| text_err(0, e))?,
        name: r.get(1)?,
        kind: kind.parse().map_err(|e| text_err(2, e))?,
        quantity: r.get(3)?,
        state: state.parse().map_err(|e| text_err(4, e))?,
        created_ms: r.get(5)?,
        updated_ms: r.get(6)?,
    })
}

fn query_trades(
    conn: &Connection,
    state: Option<TradeState>,
    updated_before_ms: u64,
) -> rusqlite::Result<Vec<TradeRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TRADE_COLUMNS} FROM trades
         WHERE (?1 IS NULL OR state = ?1) AND updated_ms <= ?2
         ORDER BY updated_ms LIMIT ?3"
    ))?;
    let updated_before = i64::try_from(updated_before_ms).unwrap_or(i64::MAX);
    let rows = stmt.query_map(
        params![
            state.map(TradeState::as_str),
            updated_before,
            TRADES_PAGE_LEN_MAX
        ],
        trade_from_row,
    )?;
    rows.collect()
}

/// Everything in a catalog database, read without the service running (for `bazaar verify`).
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Every stock, with reservation, seed and restock totals.
    pub stocks: Vec<StockRow>,
    /// Every trade ever tried.
    pub trades: Vec<TradeRecord>,
}

/// Reads a catalog database read-only.
///
/// # Errors
/// A sentence naming the file.
pub fn read_snapshot(path: &Path) -> std::result::Result<Snapshot, String> {
    let conn = db::open_reader(path)?;
    let describe = |e: rusqlite::Error| db::describe(path, &e);
    let stocks = load_stocks(&conn)
        .map_err(describe)?
        .into_values()
        .collect();
    let mut stmt = conn
        .prepare(&format!(
            "SELECT {TRADE_COLUMNS} FROM trades ORDER BY created_ms"
        ))
        .map_err(describe)?;
    let trades = stmt
        .query_map([], trade_from_row)
        .and_then(Iterator::collect)
        .map_err(describe)?;
    Ok(Snapshot { stocks, trades })
}

/// The writer thread's state: the connection and the committed stocks it mirrors.
struct Writer {
    conn: Connection,
    rows: BTreeMap<String, StockRow>,
    /// Newest leader epoch seen; requests from older epochs are refused.
    fence: Epoch,
    stocks: Arc<RwLock<BTreeMap<String, StockState>>>,
    path: PathBuf,
}

impl Writer {
    /// Executes `batch` in one transaction and replies after the commit. On a storage error
    /// the replies are dropped (callers see `ShuttingDown`) and the error is returned.
    fn commit_batch(&mut self, batch: Vec<Command>) -> rusqlite::Result<()> {
        let now = now_ms();
        let mut touched = BTreeSet::new();
        let mut replies: Vec<Deferred> = Vec::with_capacity(batch.len());
        let db_tx = self.conn.transaction()?;
        for command in batch {
            let reply = match command {
                Command::Try(trade, reply) => defer(
                    reply,
                    try_trade(&db_tx, &mut self.rows, &mut self.fence, &trade, now)?,
                ),
                Command::Confirm(id, epoch, reply) => defer(
                    reply,
                    confirm(
                        &db_tx,
                        &mut self.rows,
                        &mut self.fence,
                        (id, epoch),
                        now,
                        &mut touched,
                    )?,
                ),
                Command::Cancel(id, epoch, reply) => defer(
                    reply,
                    cancel(&db_tx, &mut self.rows, &mut self.fence, id, epoch, now)?,
                ),
                Command::Restock(to, reply) => defer(
                    reply,
                    Ok(restock(&db_tx, &mut self.rows, to, &mut touched)?),
                ),
            };
            replies.push(reply);
        }
        db_tx.commit()?;
        if !touched.is_empty() {
            let mut published = self
                .stocks
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for name in &touched {
                if let Some(row) = self.rows.get(name) {
                    published.insert(name.clone(), row.state());
                }
            }
        }
        for reply in replies {
            reply();
        }
        Ok(())
    }
}

/// Refuses epochs older than the newest seen and records a newer one.
fn fence(
    db_tx: &Transaction<'_>,
    newest: &mut Epoch,
    epoch: Epoch,
) -> rusqlite::Result<Result<()>> {
    if epoch < *newest {
        return Ok(Err(Error::StaleEpoch {
            got: epoch,
            newest: *newest,
        }));
    }
    if epoch > *newest {
        db_tx.execute(
            "INSERT INTO meta (key, value) VALUES ('fence_epoch', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [epoch.0],
        )?;
        *newest = epoch;
    }
    Ok(Ok(()))
}

fn load_trade(db_tx: &Transaction<'_>, id: RequestId) -> rusqlite::Result<Option<TradeRecord>> {
    db_tx
        .prepare_cached(&format!(
            "SELECT {TRADE_COLUMNS} FROM trades WHERE request_id = ?1"
        ))?
        .query_row([id.to_string()], trade_from_row)
        .optional()
}

fn save_stock(db_tx: &Transaction<'_>, row: &StockRow) -> rusqlite::Result<()> {
    db_tx
        .prepare_cached(
            "UPDATE stocks SET quantity = ?2, reserved = ?3, volume = ?4, version = ?5,
             restocked = ?6 WHERE name = ?1",
        )?
        .execute(params![
            row.name,
            row.quantity,
            row.reserved,
            row.volume,
            row.version.0,
            row.restocked
        ])?;
    Ok(())
}

fn save_trade_state(
    db_tx: &Transaction<'_>,
    record: &TradeRecord,
    epoch: Epoch,
) -> rusqlite::Result<()> {
    db_tx
        .prepare_cached(
            "UPDATE trades SET state = ?2, epoch = ?3, updated_ms = ?4 WHERE request_id = ?1",
        )?
        .execute(params![
            record.request_id.to_string(),
            record.state.as_str(),
            epoch.0,
            record.updated_ms
        ])?;
    Ok(())
}

fn try_trade(
    db_tx: &Transaction<'_>,
    rows: &mut BTreeMap<String, StockRow>,
    newest: &mut Epoch,
    trade: &TradeTry,
    now: u64,
) -> rusqlite::Result<Result<TradeRecord>> {
    if let Err(e) = fence(db_tx, newest, trade.epoch)? {
        return Ok(Err(e));
    }
    let existing = load_trade(db_tx, trade.request_id)?;
    if let Some(record) = &existing {
        if record.name != trade.name
            || record.kind != trade.kind
            || record.quantity != trade.quantity
        {
            return Ok(Err(Error::RequestIdReused(trade.request_id)));
        }
        // A retry: the first outcome stands. A cancelled reservation is tried afresh, because
        // a cancel means the trade left no trace and its client was never told it succeeded.
        if record.state != TradeState::Cancelled {
            tracing::info!(request_id = %trade.request_id, state = record.state.as_str(), "trade tried again; the first outcome stands");
            return Ok(Ok(record.clone()));
        }
    }
    let Some(row) = rows.get_mut(&trade.name) else {
        return Ok(Err(Error::UnknownStock(trade.name.clone())));
    };
    if let Err(e) = row.reserve(trade.kind, trade.quantity) {
        return Ok(Err(e));
    }
    save_stock(db_tx, row)?;
    let record = TradeRecord {
        request_id: trade.request_id,
        name: trade.name.clone(),
        kind: trade.kind,
        quantity: trade.quantity,
        state: TradeState::Reserved,
        created_ms: existing.as_ref().map_or(now, |r| r.created_ms),
        updated_ms: now,
    };
    if existing.is_some() {
        save_trade_state(db_tx, &record, trade.epoch)?;
    } else {
        db_tx
            .prepare_cached(
                "INSERT INTO trades (request_id, name, type, quantity, state, epoch, created_ms,
                 updated_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
            )?
            .execute(params![
                record.request_id.to_string(),
                record.name,
                record.kind.as_str(),
                record.quantity,
                record.state.as_str(),
                trade.epoch.0,
                now
            ])?;
    }
    Ok(Ok(record))
}

fn confirm(
    db_tx: &Transaction<'_>,
    rows: &mut BTreeMap<String, StockRow>,
    newest: &mut Epoch,
    (id, epoch): (RequestId, Epoch),
    now: u64,
    touched: &mut BTreeSet<String>,
) -> rusqlite::Result<Result<Settled>> {
    if let Err(e) = fence(db_tx, newest, epoch)? {
        return Ok(Err(e));
    }
    let Some(mut record) = load_trade(db_tx, id)? else {
        return Ok(Err(Error::UnknownTrade(id)));
    };
    let row = rows
        .get_mut(&record.name)
        .expect("a trade's stock exists: the foreign key guarantees it");
    match record.state {
        TradeState::Cancelled => Ok(Err(Error::AlreadyCancelled(id))),
        TradeState::Confirmed => Ok(Ok(Settled {
            record,
            version: row.version,
        })),
        TradeState::Reserved => {
            row.apply(record.kind, record.quantity);
            save_stock(db_tx, row)?;
            record.state = TradeState::Confirmed;
            record.updated_ms = now;
            save_trade_state(db_tx, &record, epoch)?;
            touched.insert(record.name.clone());
            tracing::info!(
                request_id = %id,
                stock = %record.name,
                kind = %record.kind,
                quantity = record.quantity,
                left = row.quantity,
                "trade confirmed"
            );
            Ok(Ok(Settled {
                record,
                version: row.version,
            }))
        }
    }
}

fn cancel(
    db_tx: &Transaction<'_>,
    rows: &mut BTreeMap<String, StockRow>,
    newest: &mut Epoch,
    id: RequestId,
    epoch: Epoch,
    now: u64,
) -> rusqlite::Result<Result<TradeRecord>> {
    if let Err(e) = fence(db_tx, newest, epoch)? {
        return Ok(Err(e));
    }
    let Some(mut record) = load_trade(db_tx, id)? else {
        return Ok(Err(Error::UnknownTrade(id)));
    };
    match record.state {
        TradeState::Confirmed => Ok(Err(Error::AlreadyConfirmed(id))),
        TradeState::Cancelled => Ok(Ok(record)),
        TradeState::Reserved => {
            let row = rows
                .get_mut(&record.name)
                .expect("a trade's stock exists: the foreign key guarantees it");
            row.release(record.kind, record.quantity);
            save_stock(db_tx, row)?;
            record.state = TradeState::Cancelled;
            record.updated_ms = now;
            save_trade_state(db_tx, &record, epoch)?;
            tracing::info!(request_id = %id, stock = %record.name, "reservation cancelled");
            Ok(Ok(record))
        }
    }
}

fn restock(
    db_tx: &Transaction<'_>,
    rows: &mut BTreeMap<String, StockRow>,
    to: u64,
    touched: &mut BTreeSet<String>,
) -> rusqlite::Result<Vec<(String, Version)>> {
    let mut changed = Vec::new();
    for row in rows.values_mut() {
        if row.restock(to) {
            save_stock(db_tx, row)?;
            touched.insert(row.name.clone());
            tracing::info!(stock = %row.name, quantity = to, "restocked");
            changed.push((row.name.clone(), row.version));
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bazaar_api::TradeType;

    fn try_of(name: &str, kind: TradeType, quantity: u64, epoch: u64) -> TradeTry {
        TradeTry {
            request_id: RequestId::new(),
            name: name.into(),
            kind,
            quantity,
            epoch: Epoch(epoch),
        }
    }

    fn open(dir: &Path) -> (Store, std::thread::JoinHandle<()>) {
        Store::open(
            &dir.join("catalog.db"),
            || crate::seed::parse("name,price,quantity\nA,1.00,10\nB,2.50,0\n", "test"),
            Fatal::new(),
        )
        .expect("open store")
    }

    #[tokio::test]
    async fn try_confirm_changes_the_stock_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _thread) = open(dir.path());
        let trade = try_of("A", TradeType::Buy, 4, 1);
        let reserved = store.trade_try(trade.clone()).await.expect("try");
        assert_eq!(reserved.state, TradeState::Reserved);
        assert_eq!(
            store.stock("A").map(|s| s.quantity),
            Some(10),
            "try is invisible"
        );
        let again = store.trade_try(trade.clone()).await.expect("retry");
        assert_eq!(again, reserved, "a retried try returns the first outcome");
        let settled = store
            .trade_confirm(trade.request_id, Epoch(1))
            .await
            .expect("confirm");
        assert_eq!(settled.version, Version(1));
        let again = store
            .trade_confirm(trade.request_id, Epoch(1))
            .await
            .expect("confirm again");
        assert_eq!(
            again.version,
            Version(1),
            "a retried confirm changes nothing"
        );
        let a = store.stock("A").expect("A");
        assert_eq!((a.quantity, a.volume), (6, 4));
        assert!(matches!(
            store.trade_cancel(trade.request_id, Epoch(1)).await,
            Err(Error::AlreadyConfirmed(_))
        ));
    }

    #[tokio::test]
    async fn reservations_limit_buys_and_cancel_frees_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _thread) = open(dir.path());
        let first = try_of("A", TradeType::Buy, 8, 1);
        store.trade_try(first.clone()).await.expect("8 of 10");
        let second = try_of("A", TradeType::Buy, 3, 1);
        assert!(matches!(
            store.trade_try(second.clone()).await,
            Err(Error::InsufficientStock { available: 2, .. })
        ));
        store
            .trade_cancel(first.request_id, Epoch(1))
            .await
            .expect("cancel");
        store.trade_try(second).await.expect("room again");
        assert!(matches!(
            store.trade_confirm(first.request_id, Epoch(1)).await,
            Err(Error::AlreadyCancelled(_))
        ));
    }

    #[tokio::test]
    async fn stale_epochs_are_fenced_off() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _thread) = open(dir.path());
        let old = try_of("A", TradeType::Sell, 1, 1);
        store.trade_try(old.clone()).await.expect("epoch 1");
        store
            .trade_try(try_of("A", TradeType::Sell, 1, 2))
            .await
            .expect("epoch 2");
        assert!(matches!(
            store.trade_confirm(old.request_id, Epoch(1)).await,
            Err(Error::StaleEpoch { .. })
        ));
    }

    #[tokio::test]
    async fn state_survives_reopening_and_restock_refills() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (store, thread) = open(dir.path());
            let sell = try_of("A", TradeType::Sell, 5, 1);
            store.trade_try(sell.clone()).await.expect("try");
            store
                .trade_confirm(sell.request_id, Epoch(1))
                .await
                .expect("confirm");
            let changed = store.restock(100).await.expect("restock");
            assert_eq!(changed, vec![("B".to_owned(), Version(1))]);
            drop(store);
            thread.join().expect("writer ends");
        }
        let (store, _thread) = open(dir.path());
        assert_eq!(store.stock("A").map(|s| s.quantity), Some(15));
        assert_eq!(store.stock("B").map(|s| s.quantity), Some(100));
        let snapshot = read_snapshot(&dir.path().join("catalog.db")).expect("snapshot");
        assert_eq!(snapshot.trades.len(), 1);
        assert_eq!(snapshot.stocks[1].restocked, 100);
    }

    #[tokio::test]
    async fn listing_filters_by_state_and_age() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _thread) = open(dir.path());
        let t = try_of("A", TradeType::Buy, 1, 0);
        store.trade_try(t).await.expect("try");
        let reserved = store
            .trades(TradesQuery {
                state: Some(TradeState::Reserved),
                older_than_ms: None,
            })
            .await
            .expect("list");
        assert_eq!(reserved.len(), 1);
        let old = store
            .trades(TradesQuery {
                state: Some(TradeState::Reserved),
                older_than_ms: Some(60_000),
            })
            .await
            .expect("list");
        assert!(old.is_empty());
    }
}
