//! A primary-backup replica's SQLite file: the log (every entry, never compacted), the orders
//! its trades made, the entries moved aside (`conflicts`), and the term. One writer thread owns
//! the write connection and group-commits whatever persists are queued in one durable
//! transaction (`synchronous=FULL`) before it reports them done, in order.
//!
//! The core decides everything; this module only stores what a [`Action::Persist`] says and
//! reads back what the core or a peer asks for.
//!
//! The orders table is derived here, from the log this file holds (the writer replays it and
//! numbers each appended trade), never taken from the core: the core has no numbers while it
//! reloads its book after a truncation.
//!
//! Invariants, asserted: entries continue the log; orders are numbered densely (in
//! `orders::insert`); at open, the orders are exactly the log's trades replayed.

use std::path::{Path, PathBuf};

use bazaar_api::log::{Command, LogIndex, Position};
use bazaar_api::replica::{EpochRun, LogEntry, ReplicationMode};
use bazaar_api::{Epoch, ReplicaId, TxnNumber};
use bazaar_ledger::{Book, Outcome};
use bazaar_service::{Fatal, db, now_ms, writer};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::mpsc;

use super::core::{RequestNumber, Term};
use crate::error::{Error, Result};
use crate::orders::{self, OrderRow};

/// Persists queued for the writer at most.
const QUEUE_LEN: usize = 1024;

/// Most persists committed by one database transaction.
const BATCH_LEN_MAX: usize = 256;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    idx     INTEGER PRIMARY KEY CHECK (idx >= 0),
    epoch   INTEGER NOT NULL CHECK (epoch >= 0),
    command TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS conflicts (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    idx      INTEGER NOT NULL,
    epoch    INTEGER NOT NULL,
    command  TEXT NOT NULL,
    moved_ms INTEGER NOT NULL
) STRICT;
";

/// What a writer is asked to do: one [`Action::Persist`], and whom to tell when it is durable.
pub struct Persist {
    /// The persist's number.
    pub request: RequestNumber,
    /// A term to store.
    pub term: Option<Term>,
    /// Move entries from here on aside.
    pub truncate_from: Option<LogIndex>,
    /// Entries to append.
    pub entries: Vec<LogEntry>,
    /// Called once the persist is durable.
    pub done: Box<dyn FnOnce() + Send>,
}

/// What a replica starts from.
#[derive(Debug)]
pub struct Opened {
    /// The durable term.
    pub term: Term,
    /// The log's epoch runs.
    pub runs: Vec<EpochRun>,
    /// Its length.
    pub len: Position,
    /// Its newest entries.
    pub recent: Vec<LogEntry>,
    /// The ledger replayed from it.
    pub book: Book,
}

/// Handle to the file; cheap to clone.
#[derive(Debug, Clone)]
pub struct Storage {
    queue: mpsc::Sender<Persist>,
    readers: db::Readers,
    path: PathBuf,
}

impl std::fmt::Debug for Persist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persist")
            .field("request", &self.request)
            .field("entries", &self.entries.len())
            .finish_non_exhaustive()
    }
}

fn int(n: u64) -> i64 {
    i64::try_from(n).expect("stored values fit a signed 64-bit integer")
}

impl Storage {
    /// Opens (creating) the file, replays the log into a book and checks it against the orders,
    /// and starts the writer thread. A failed commit raises `fatal`.
    ///
    /// # Errors
    /// [`Error::Storage`] naming the file; [`Error::Config`] for a raft file.
    pub fn open(
        path: &Path,
        window_len: usize,
        fatal: Fatal,
    ) -> Result<(Self, Opened, std::thread::JoinHandle<()>)> {
        let mut conn = db::open_writer(path).map_err(Error::Storage)?;
        crate::file::init(&mut conn, path, ReplicationMode::PrimaryBackup)?;
        let storage = |e: rusqlite::Error| Error::Storage(db::describe(path, &e));
        conn.execute_batch(SCHEMA).map_err(storage)?;
        let opened = load(&conn, path, window_len)?;
        let readers = db::Readers::open(path).map_err(Error::Storage)?;
        let (queue, requests) = mpsc::channel(QUEUE_LEN);
        let mut writer = Writer {
            conn,
            path: path.to_owned(),
            book: opened.book.clone(),
        };
        let thread = writer::spawn(
            "order-log-writer",
            requests,
            BATCH_LEN_MAX,
            fatal,
            move |batch| {
                writer.commit(batch).map_err(|e| {
                    format!("order log write failed: {}", db::describe(&writer.path, &e))
                })
            },
        )
        .map_err(|e| Error::Storage(format!("cannot start the writer thread: {e}")))?;
        Ok((
            Self {
                queue,
                readers,
                path: path.to_owned(),
            },
            opened,
            thread,
        ))
    }

    /// Queues a persist. `false` when the writer is gone (the service is stopping, or a commit
    /// failed and the process is about to exit).
    pub async fn persist(&self, persist: Persist) -> bool {
        self.queue.send(persist).await.is_ok()
    }

    /// Up to `limit` durable entries from `from` on.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn entries(&self, from: LogIndex, limit: usize) -> Result<Vec<LogEntry>> {
        let limit = u32::try_from(limit).unwrap_or(u32::MAX);
        self.read(move |conn| read_entries(conn, from, limit)).await
    }

    /// The durable log replayed into a book.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn book(&self) -> Result<Book> {
        let path = self.path.clone();
        self.readers
            .read(move |conn| Ok(replay(conn, &path)))
            .await
            .map_err(Error::Storage)?
    }

    /// The order numbered `number`.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn order(&self, number: TxnNumber) -> Result<Option<OrderRow>> {
        self.read(move |conn| orders::by_number(conn, number)).await
    }

    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        self.readers
            .read(move |conn| query(conn))
            .await
            .map_err(Error::Storage)
    }
}

fn decode(index: i64, epoch: i64, command: &str) -> rusqlite::Result<LogEntry> {
    let command: Command = serde_json::from_str(command).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, Box::new(e))
    })?;
    let as_u64 = |n: i64, col: usize| {
        u64::try_from(n).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(col, n))
    };
    Ok(LogEntry {
        index: LogIndex(as_u64(index, 0)?),
        epoch: Epoch(as_u64(epoch, 1)?),
        command,
    })
}

fn read_entries(conn: &Connection, from: LogIndex, limit: u32) -> rusqlite::Result<Vec<LogEntry>> {
    let Ok(from) = i64::try_from(from.0) else {
        return Ok(Vec::new());
    };
    conn.prepare_cached(
        "SELECT idx, epoch, command FROM log WHERE idx >= ?1 ORDER BY idx LIMIT ?2",
    )?
    .query_map(params![from, limit], |r| {
        let command: String = r.get(2)?;
        decode(r.get(0)?, r.get(1)?, &command)
    })?
    .collect()
}

/// Every entry of `table` (`log` or `conflicts`), in order, for `bazaar verify` and `bazaar
/// log`.
///
/// # Errors
/// SQLite errors.
pub fn read_log(conn: &Connection, table: &str) -> rusqlite::Result<Vec<LogEntry>> {
    let order = if table == "conflicts" { "id" } else { "idx" };
    let exists: bool = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [table],
            |_| Ok(true),
        )
        .optional()?
        .unwrap_or(false);
    if !exists {
        return Ok(Vec::new());
    }
    conn.prepare(&format!(
        "SELECT idx, epoch, command FROM {table} ORDER BY {order}"
    ))?
    .query_map([], |r| {
        let command: String = r.get(2)?;
        decode(r.get(0)?, r.get(1)?, &command)
    })?
    .collect()
}

/// Replays the log into a book, checking that it is dense and that its trades are exactly the
/// orders table.
fn replay(conn: &Connection, path: &Path) -> Result<Book> {
    let storage = |e: rusqlite::Error| Error::Storage(db::describe(path, &e));
    let entries = read_log(conn, "log").map_err(storage)?;
    let book = Book::replay(
        entries
            .iter()
            .map(|e| (e.index, std::slice::from_ref(&e.command))),
    )
    .map_err(|e| Error::Storage(format!("{}: {e}", path.display())))?;
    let count = orders::check_dense(conn)
        .map_err(|e| Error::Storage(format!("{}: {e}", path.display())))?;
    // Recovery's double check: the orders table holds exactly the log's trades.
    assert_eq!(
        book.next_number().0,
        count,
        "{}: the log's trades and the orders table disagree",
        path.display()
    );
    Ok(book)
}

fn load(conn: &Connection, path: &Path, window_len: usize) -> Result<Opened> {
    let storage = |e: rusqlite::Error| Error::Storage(db::describe(path, &e));
    let term = load_term(conn).map_err(storage)?;
    let book = replay(conn, path)?;
    let len = book.position();
    let runs = conn
        .prepare("SELECT MIN(idx), epoch FROM log GROUP BY epoch ORDER BY MIN(idx)")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| {
                Ok(EpochRun {
                    start: LogIndex(r.get(0)?),
                    epoch: Epoch(r.get(1)?),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(storage)?;
    let first = len.0.saturating_sub(window_len as u64);
    let recent = read_entries(
        conn,
        LogIndex(first),
        u32::try_from(window_len).unwrap_or(u32::MAX),
    )
    .map_err(storage)?;
    Ok(Opened {
        term,
        runs,
        len,
        recent,
        book,
    })
}

fn load_term(conn: &Connection) -> rusqlite::Result<Term> {
    let get = |key: &str| -> rusqlite::Result<Option<u64>> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
            r.get::<_, String>(0)
        })
        .optional()
        .map(|v| v.and_then(|v| v.parse().ok()))
    };
    Ok(Term {
        epoch: Epoch(get("epoch")?.unwrap_or(0)),
        leader: get("leader")?
            .and_then(|id| u8::try_from(id).ok())
            .and_then(|id| ReplicaId::try_from(id).ok()),
    })
}

/// The writer thread's state: the connection, and the log it holds replayed, from which it
/// numbers the orders of every entry it appends. Deriving them here, not taking numbers from
/// the core, keeps "the orders table is the log's trades replayed" true by construction: the
/// core may append while its own book is being reloaded (after a truncation) and has no
/// numbers then.
struct Writer {
    conn: Connection,
    path: PathBuf,
    book: Book,
}

impl Writer {
    fn commit(&mut self, batch: Vec<Persist>) -> rusqlite::Result<()> {
        let db_tx = self.conn.transaction()?;
        let now = now_ms();
        let mut done = Vec::with_capacity(batch.len());
        for persist in batch {
            if let Some(term) = persist.term {
                save_term(&db_tx, term)?;
            }
            if let Some(from) = persist.truncate_from {
                move_aside(&db_tx, from, now)?;
                // Rare (a leader change that discards entries): replay what is left. A failed
                // commit stops the process, so this book never outlives a rolled-back change.
                self.book = Book::replay(
                    read_log(&db_tx, "log")?
                        .iter()
                        .map(|e| (e.index, std::slice::from_ref(&e.command))),
                )
                .unwrap_or_else(|e| {
                    panic!("{}: the log does not replay: {e}", self.path.display())
                });
            }
            append(&db_tx, &mut self.book, &persist.entries, now)?;
            done.push(persist.done);
        }
        db_tx.commit()?;
        for done in done {
            done();
        }
        Ok(())
    }
}

fn save_term(db_tx: &Transaction<'_>, term: Term) -> rusqlite::Result<()> {
    let mut stmt =
        db_tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
    stmt.execute(params!["epoch", term.epoch.0.to_string()])?;
    match term.leader {
        Some(leader) => stmt.execute(params!["leader", leader.0.to_string()])?,
        None => db_tx.execute("DELETE FROM meta WHERE key = 'leader'", [])?,
    };
    Ok(())
}

fn move_aside(db_tx: &Transaction<'_>, from: LogIndex, now: u64) -> rusqlite::Result<()> {
    db_tx.execute(
        "INSERT INTO conflicts (idx, epoch, command, moved_ms)
         SELECT idx, epoch, command, ?2 FROM log WHERE idx >= ?1 ORDER BY idx",
        params![int(from.0), int(now)],
    )?;
    db_tx.execute("DELETE FROM log WHERE idx >= ?1", [int(from.0)])?;
    orders::delete_from(db_tx, from)?;
    Ok(())
}

fn append(
    db_tx: &Transaction<'_>,
    book: &mut Book,
    entries: &[LogEntry],
    now: u64,
) -> rusqlite::Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let next: i64 = db_tx
        .prepare_cached("SELECT COALESCE(MAX(idx) + 1, 0) FROM log")?
        .query_row([], |r| r.get(0))?;
    let mut stmt =
        db_tx.prepare_cached("INSERT INTO log (idx, epoch, command) VALUES (?1, ?2, ?3)")?;
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(
            int(entry.index.0),
            next + i64::try_from(i).expect("a batch is small"),
            "log entries continue the log"
        );
        let command = serde_json::to_string(&entry.command).expect("commands always serialise");
        stmt.execute(params![int(entry.index.0), int(entry.epoch.0), command])?;
        let (outcomes, _) = book.apply(entry.index, std::slice::from_ref(&entry.command));
        if let (Some(Outcome::Traded(number)), Command::Trade(trade)) =
            (outcomes.first(), &entry.command)
        {
            orders::insert(
                db_tx,
                &OrderRow::of_trade(*number, trade, entry.index, entry.epoch, now),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bazaar_api::log::{StockDef, TradeCommand};
    use bazaar_api::{Price, RequestId, TradeType};

    use super::*;

    fn entry(index: u64, epoch: u64, command: Command) -> LogEntry {
        LogEntry {
            index: LogIndex(index),
            epoch: Epoch(epoch),
            command,
        }
    }

    fn sell(request_id: RequestId, quantity: u64) -> Command {
        Command::Trade(TradeCommand {
            request_id,
            name: "A".into(),
            kind: TradeType::Sell,
            quantity,
        })
    }

    async fn persist(storage: &Storage, truncate_from: Option<LogIndex>, entries: Vec<LogEntry>) {
        let (done, durable) = tokio::sync::oneshot::channel();
        let queued = storage
            .persist(Persist {
                request: 0,
                term: None,
                truncate_from,
                entries,
                done: Box::new(move || {
                    let _ = done.send(());
                }),
            })
            .await;
        assert!(queued, "the writer runs");
        durable.await.expect("made durable");
    }

    /// The core appends without numbers while it reloads its book after a truncation; the
    /// orders table must still be the log's trades replayed, or the file no longer opens.
    #[tokio::test]
    async fn orders_are_the_logs_trades_across_a_truncation_and_the_file_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("order-1.db");
        let (a, b, c) = (RequestId::new(), RequestId::new(), RequestId::new());
        let genesis = Command::Genesis {
            stocks: vec![StockDef {
                name: "A".into(),
                price: Price::from_cents(100),
                quantity: 10,
            }],
        };
        let (storage, _, writer) = Storage::open(&path, 8, Fatal::new()).expect("open");
        persist(
            &storage,
            None,
            vec![
                entry(0, 1, genesis),
                entry(1, 1, sell(a, 1)),
                entry(2, 1, sell(b, 2)),
            ],
        )
        .await;
        persist(
            &storage,
            Some(LogIndex(2)),
            vec![entry(2, 2, sell(c, 3)), entry(3, 2, sell(b, 2))],
        )
        .await;
        drop(storage);
        writer.join().expect("the writer stops");

        let contents = crate::file::read(&path).expect("read");
        let orders: Vec<(u64, RequestId, u64)> = contents
            .orders
            .iter()
            .map(|o| (o.number.0, o.request_id, o.log_index.0))
            .collect();
        assert_eq!(orders, [(0, a, 1), (1, c, 2), (2, b, 3)]);
        assert_eq!(contents.conflicts.len(), 1, "b's first entry moved aside");
        let (storage, opened, writer) = Storage::open(&path, 8, Fatal::new()).expect("reopens");
        assert_eq!(opened.book.next_number(), TxnNumber(3));
        assert_eq!(opened.len, Position(4));
        drop(storage);
        writer.join().expect("the writer stops");
    }
}
