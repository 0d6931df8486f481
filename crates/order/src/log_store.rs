//! One replica's order log in SQLite.
//!
//! A writer thread owns the write connection and group-commits whatever is queued (appends,
//! suffix moves, epoch changes) in one durable transaction before replying. Reads use a separate
//! read-only connection. The log is append-only except for one operation: moving a divergent
//! suffix into the `conflicts` table, where it is kept for `bazaar verify` to report rather than
//! silently dropped (ARCHITECTURE.md, guarantee 4).
//!
//! Invariant, asserted on every append and on every open: numbers are dense from 0.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bazaar_api::replica::{EntryRef, LogTip, OrderEntry, ReplicationMode};
use bazaar_api::{Epoch, ReplicaId, RequestId, TxnNumber};
use bazaar_service::writer::{self, Deferred, defer};
use bazaar_service::{Fatal, db, now_ms};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// Requests queued for the writer at most.
const COMMAND_QUEUE_LEN: usize = 256;

/// Most requests committed by one database transaction.
const BATCH_LEN_MAX: usize = 64;

/// Longest page of the log one read returns.
pub const PAGE_LEN_MAX: u32 = 1000;

/// Version of the schema below.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
    number     INTEGER PRIMARY KEY CHECK (number >= 0),
    request_id TEXT NOT NULL UNIQUE,
    name       TEXT NOT NULL,
    type       TEXT NOT NULL CHECK (type IN ('buy', 'sell')),
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    epoch      INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS conflicts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    number     INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    name       TEXT NOT NULL,
    type       TEXT NOT NULL,
    quantity   INTEGER NOT NULL,
    epoch      INTEGER NOT NULL,
    moved_ms   INTEGER NOT NULL,
    reason     TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
";

/// The last entry of the log, with its request id (for the log matching check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Last {
    /// Number.
    pub number: TxnNumber,
    /// Request id.
    pub request_id: RequestId,
    /// Epoch that created it.
    pub epoch: Epoch,
}

impl Last {
    /// As a tip.
    #[must_use]
    pub fn tip(self) -> LogTip {
        LogTip {
            number: self.number,
            epoch: self.epoch,
        }
    }

    /// As a reference.
    #[must_use]
    pub fn entry_ref(self) -> EntryRef {
        EntryRef {
            number: self.number,
            request_id: self.request_id,
        }
    }
}

/// The newest epoch and leader a replica has seen; persisted so a restarted replica still
/// refuses a deposed leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Term {
    /// Epoch.
    pub epoch: Epoch,
    /// Leader of that epoch, if known.
    pub leader: Option<ReplicaId>,
}

type Reply<T> = oneshot::Sender<Result<T>>;

enum Command {
    Append(Vec<OrderEntry>, Reply<Option<Last>>),
    MoveSuffix {
        from: TxnNumber,
        reason: String,
        reply: Reply<usize>,
    },
    SaveTerm(Term, Reply<()>),
}

/// Handle to the log; cheap to clone.
#[derive(Clone)]
pub struct LogStore {
    commands: mpsc::Sender<Command>,
    /// The committed last entry, updated by the writer after each commit.
    last: Arc<Mutex<Option<Last>>>,
    readers: db::Readers,
    path: PathBuf,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.path)
            .field("last", &self.last())
            .finish()
    }
}

impl LogStore {
    /// Opens (creating) the log at `path` for a replica running `mode`, checks that it is
    /// dense, and starts the writer thread. A failed commit raises `fatal`.
    ///
    /// # Errors
    /// [`Error::Storage`] naming the file; [`Error::Config`] if the file was made by the other
    /// replication mode.
    pub fn open(
        path: &Path,
        mode: ReplicationMode,
        fatal: Fatal,
    ) -> Result<(Self, Term, std::thread::JoinHandle<()>)> {
        let mut conn = db::open_writer(path).map_err(Error::Storage)?;
        init_schema(&mut conn, path, mode)?;
        let storage = |e: rusqlite::Error| Error::Storage(db::describe(path, &e));
        let (count, max): (u64, Option<u64>) = conn
            .query_row("SELECT COUNT(*), MAX(number) FROM orders", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(storage)?;
        // Recovery's double check of the append-time invariant.
        assert!(
            max.map_or(count == 0, |m| m + 1 == count),
            "order log {} has gaps: {count} entries, highest number {max:?}",
            path.display()
        );
        let last = load_last(&conn).map_err(storage)?;
        let term = load_term(&conn).map_err(storage)?;
        let readers = db::Readers::open(path).map_err(Error::Storage)?;
        let last = Arc::new(Mutex::new(last));
        let (commands, queue) = mpsc::channel(COMMAND_QUEUE_LEN);
        let mut writer = Writer {
            conn,
            last: Arc::clone(&last),
            path: path.to_owned(),
        };
        let thread = writer::spawn(
            "order-log-writer",
            queue,
            BATCH_LEN_MAX,
            fatal,
            move |batch| {
                writer.commit_batch(batch).map_err(|e| {
                    format!("order log write failed: {}", db::describe(&writer.path, &e))
                })
            },
        )
        .map_err(|e| Error::Storage(format!("cannot start the writer thread: {e}")))?;
        let store = Self {
            commands,
            last,
            readers,
            path: path.to_owned(),
        };
        Ok((store, term, thread))
    }

    /// The committed last entry.
    #[must_use]
    pub fn last(&self) -> Option<Last> {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The number the next entry must carry.
    #[must_use]
    pub fn next_number(&self) -> TxnNumber {
        self.last().map_or(TxnNumber(0), |l| l.number.next())
    }

    /// Appends consecutive entries that continue the log, durably.
    ///
    /// # Panics
    /// If the entries do not continue the log: callers check before appending.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`] when the writer has stopped (after a storage failure).
    pub async fn append(&self, entries: Vec<OrderEntry>) -> Result<Option<Last>> {
        if entries.is_empty() {
            return Ok(self.last());
        }
        self.call(|reply| Command::Append(entries, reply)).await
    }

    /// Moves every entry numbered `from` or more into the conflicts table, durably.
    /// Returns how many moved.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`] when the writer has stopped.
    pub async fn move_suffix(&self, from: TxnNumber, reason: String) -> Result<usize> {
        self.call(|reply| Command::MoveSuffix {
            from,
            reason,
            reply,
        })
        .await
    }

    /// Persists the newest epoch and its leader.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`] when the writer has stopped.
    pub async fn save_term(&self, term: Term) -> Result<()> {
        self.call(|reply| Command::SaveTerm(term, reply)).await
    }

    /// The entry numbered `number`.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn entry(&self, number: TxnNumber) -> Result<Option<OrderEntry>> {
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM orders WHERE number = ?1"
            ))?
            .query_row([number.0], entry_from_row)
            .optional()
        })
        .await
    }

    /// The entry holding `request_id`.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn by_request_id(&self, request_id: RequestId) -> Result<Option<OrderEntry>> {
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM orders WHERE request_id = ?1"
            ))?
            .query_row([request_id.to_string()], entry_from_row)
            .optional()
        })
        .await
    }

    /// Up to `limit` (at most [`PAGE_LEN_MAX`]) entries from `from` on.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn page(&self, from: TxnNumber, limit: u32) -> Result<Vec<OrderEntry>> {
        let limit = limit.min(PAGE_LEN_MAX);
        self.read(move |conn| read_page(conn, from, limit)).await
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

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T> {
        writer::request(&self.commands, make)
            .await
            .unwrap_or(Err(Error::ShuttingDown))
    }
}

/// Creates the order tables and checks (or records) the schema version and the replication
/// mode that made the file: each mode refuses the other's database. Raft mode shares it, so
/// `read_snapshot` reads both kinds of file.
pub(crate) fn init_schema(conn: &mut Connection, path: &Path, mode: ReplicationMode) -> Result<()> {
    let storage = |e: rusqlite::Error| Error::Storage(db::describe(path, &e));
    let db_tx = conn.transaction().map_err(storage)?;
    db_tx.execute_batch(SCHEMA).map_err(storage)?;
    let meta = |key: &str| -> Result<Option<String>> {
        db_tx
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(storage)
    };
    match meta("schema")? {
        Some(v) if v == SCHEMA_VERSION.to_string() => {}
        Some(v) => {
            return Err(Error::Storage(format!(
                "{} has order log schema {v}; this build reads schema {SCHEMA_VERSION}",
                path.display()
            )));
        }
        None => {
            db_tx
                .execute(
                    "INSERT INTO meta (key, value) VALUES ('schema', ?1)",
                    [SCHEMA_VERSION.to_string()],
                )
                .map_err(storage)?;
        }
    }
    match meta("mode")? {
        Some(m) if m == mode.as_str() => {}
        Some(m) => {
            return Err(Error::Config(format!(
                "{} holds a {m} order log; start with --replication {m} or use a fresh data \
                 directory",
                path.display()
            )));
        }
        None => {
            db_tx
                .execute(
                    "INSERT INTO meta (key, value) VALUES ('mode', ?1)",
                    [mode.as_str()],
                )
                .map_err(storage)?;
        }
    }
    db_tx.commit().map_err(storage)
}

const ENTRY_COLUMNS: &str = "number, request_id, name, type, quantity, epoch";

fn entry_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OrderEntry> {
    let text_err = |i: usize, e: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
    };
    let id: String = r.get(1)?;
    let kind: String = r.get(3)?;
    Ok(OrderEntry {
        number: TxnNumber(r.get(0)?),
        request_id: id.parse().map_err(|e| text_err(1, e))?,
        name: r.get(2)?,
        kind: kind.parse().map_err(|e| text_err(3, e))?,
        quantity: r.get(4)?,
        epoch: Epoch(r.get(5)?),
    })
}

fn read_page(conn: &Connection, from: TxnNumber, limit: u32) -> rusqlite::Result<Vec<OrderEntry>> {
    conn.prepare_cached(&format!(
        "SELECT {ENTRY_COLUMNS} FROM orders WHERE number >= ?1 ORDER BY number LIMIT ?2"
    ))?
    .query_map(params![from.0, limit], entry_from_row)?
    .collect()
}

fn load_last(conn: &Connection) -> rusqlite::Result<Option<Last>> {
    conn.query_row(
        &format!("SELECT {ENTRY_COLUMNS} FROM orders ORDER BY number DESC LIMIT 1"),
        [],
        entry_from_row,
    )
    .optional()
    .map(|e| {
        e.map(|e| Last {
            number: e.number,
            request_id: e.request_id,
            epoch: e.epoch,
        })
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
            .map(ReplicaId),
    })
}

/// A replica's database, read without the service running (for `bazaar verify`).
#[derive(Debug, Clone)]
pub struct LogSnapshot {
    /// The log, in order.
    pub entries: Vec<OrderEntry>,
    /// Entries moved aside because they conflicted with a newer leader's log.
    pub conflicts: Vec<ConflictEntry>,
    /// Replication mode the database was made by.
    pub mode: Option<String>,
}

/// One entry of the conflicts table.
#[derive(Debug, Clone)]
pub struct ConflictEntry {
    /// The entry as it was.
    pub entry: OrderEntry,
    /// Why it was moved.
    pub reason: String,
}

/// Reads a replica's database read-only.
///
/// # Errors
/// A sentence naming the file.
pub fn read_snapshot(path: &Path) -> std::result::Result<LogSnapshot, String> {
    let conn = db::open_reader(path)?;
    let describe = |e: rusqlite::Error| db::describe(path, &e);
    let mut entries = Vec::new();
    let mut from = TxnNumber(0);
    loop {
        let page = read_page(&conn, from, PAGE_LEN_MAX).map_err(describe)?;
        let Some(last) = page.last() else { break };
        from = last.number.next();
        entries.extend(page);
    }
    let conflicts = conn
        .prepare(&format!(
            "SELECT {ENTRY_COLUMNS}, reason FROM conflicts ORDER BY id"
        ))
        .and_then(|mut stmt| {
            stmt.query_map([], |r| {
                Ok(ConflictEntry {
                    entry: entry_from_row(r)?,
                    reason: r.get(6)?,
                })
            })?
            .collect()
        })
        .map_err(describe)?;
    let mode = conn
        .query_row("SELECT value FROM meta WHERE key = 'mode'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(describe)?;
    Ok(LogSnapshot {
        entries,
        conflicts,
        mode,
    })
}

struct Writer {
    conn: Connection,
    last: Arc<Mutex<Option<Last>>>,
    path: PathBuf,
}

impl Writer {
    fn commit_batch(&mut self, batch: Vec<Command>) -> rusqlite::Result<()> {
        let mut last = *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut replies: Vec<Deferred> = Vec::with_capacity(batch.len());
        let db_tx = self.conn.transaction()?;
        for command in batch {
            replies.push(match command {
                Command::Append(entries, reply) => {
                    append(&db_tx, &mut last, &entries)?;
                    defer(reply, Ok(last))
                }
                Command::MoveSuffix {
                    from,
                    reason,
                    reply,
                } => {
                    let moved = move_suffix(&db_tx, from, &reason)?;
                    last = load_last(&db_tx)?;
                    defer(reply, Ok(moved))
                }
                Command::SaveTerm(term, reply) => {
                    save_term(&db_tx, term)?;
                    defer(reply, Ok(()))
                }
            });
        }
        db_tx.commit()?;
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = last;
        for reply in replies {
            reply();
        }
        Ok(())
    }
}

fn append(
    db_tx: &Transaction<'_>,
    last: &mut Option<Last>,
    entries: &[OrderEntry],
) -> rusqlite::Result<()> {
    let now = now_ms();
    let mut stmt = db_tx.prepare_cached(
        "INSERT INTO orders (number, request_id, name, type, quantity, epoch, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for entry in entries {
        let expected = last.map_or(TxnNumber(0), |l| l.number.next());
        assert_eq!(
            entry.number, expected,
            "order log append out of order: got {}, expected {expected}",
            entry.number
        );
        stmt.execute(params![
            entry.number.0,
            entry.request_id.to_string(),
            entry.name,
            entry.kind.as_str(),
            entry.quantity,
            entry.epoch.0,
            now
        ])?;
        *last = Some(Last {
            number: entry.number,
            request_id: entry.request_id,
            epoch: entry.epoch,
        });
    }
    Ok(())
}

fn move_suffix(db_tx: &Transaction<'_>, from: TxnNumber, reason: &str) -> rusqlite::Result<usize> {
    db_tx.execute(
        "INSERT INTO conflicts (number, request_id, name, type, quantity, epoch, moved_ms, reason)
         SELECT number, request_id, name, type, quantity, epoch, ?2, ?3
         FROM orders WHERE number >= ?1 ORDER BY number",
        params![from.0, now_ms(), reason],
    )?;
    db_tx.execute("DELETE FROM orders WHERE number >= ?1", [from.0])
}

fn save_term(db_tx: &Transaction<'_>, term: Term) -> rusqlite::Result<()> {
    let mut stmt = db_tx.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?;
    stmt.execute(params!["epoch", term.epoch.0.to_string()])?;
    match term.leader {
        Some(id) => {
            stmt.execute(params!["leader", id.0.to_string()])?;
        }
        None => {
            db_tx.execute("DELETE FROM meta WHERE key = 'leader'", [])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bazaar_api::TradeType;

    pub(crate) fn entry(number: u64, epoch: u64) -> OrderEntry {
        OrderEntry {
            number: TxnNumber(number),
            request_id: RequestId::new(),
            name: "FishCo".into(),
            kind: TradeType::Buy,
            quantity: 1,
            epoch: Epoch(epoch),
        }
    }

    fn open(path: &Path) -> (LogStore, Term, std::thread::JoinHandle<()>) {
        LogStore::open(path, ReplicationMode::PrimaryBackup, Fatal::new()).expect("open log")
    }

    #[tokio::test]
    async fn appends_are_dense_durable_and_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("order-1.db");
        let first = entry(0, 1);
        {
            let (log, term, thread) = open(&path);
            assert_eq!(term, Term::default());
            assert_eq!(log.next_number(), TxnNumber(0));
            log.append(vec![first.clone(), entry(1, 1)])
                .await
                .expect("append");
            log.save_term(Term {
                epoch: Epoch(4),
                leader: Some(ReplicaId(3)),
            })
            .await
            .expect("term");
            drop(log);
            thread.join().expect("writer ends");
        }
        let (log, term, _thread) = open(&path);
        assert_eq!(term.epoch, Epoch(4));
        assert_eq!(term.leader, Some(ReplicaId(3)));
        assert_eq!(log.next_number(), TxnNumber(2));
        assert_eq!(
            log.by_request_id(first.request_id).await.expect("read"),
            Some(first.clone())
        );
        assert_eq!(log.entry(TxnNumber(0)).await.expect("read"), Some(first));
        assert_eq!(log.page(TxnNumber(1), 10).await.expect("page").len(), 1);
    }

    #[tokio::test]
    async fn a_moved_suffix_is_kept_in_conflicts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("order-1.db");
        let (log, _term, _thread) = open(&path);
        log.append((0..5).map(|n| entry(n, 1)).collect())
            .await
            .expect("append");
        let moved = log
            .move_suffix(TxnNumber(3), "test".into())
            .await
            .expect("move");
        assert_eq!(moved, 2);
        assert_eq!(log.next_number(), TxnNumber(3));
        log.append(vec![entry(3, 2)])
            .await
            .expect("append after move");
        let snapshot = read_snapshot(&path).expect("snapshot");
        assert_eq!(snapshot.entries.len(), 4);
        assert_eq!(snapshot.conflicts.len(), 2);
        assert_eq!(snapshot.conflicts[0].entry.number, TxnNumber(3));
        assert_eq!(snapshot.mode.as_deref(), Some("primary-backup"));
    }

    #[tokio::test]
    async fn the_other_modes_log_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("order-1.db");
        drop(open(&path));
        let err =
            LogStore::open(&path, ReplicationMode::Raft, Fatal::new()).expect_err("mode mismatch");
        assert!(err.to_string().contains("primary-backup"), "{err}");
    }
}
