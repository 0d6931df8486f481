//! The replica's SQLite file in raft mode: the Raft log, the vote, and the state machine: the
//! ledger (`bazaar_ledger::Book`, applied in memory by the writer thread and checkpointed in the
//! `stocks` table) and the `orders` it numbers (the table the primary-backup log uses too, so
//! `bazaar verify` reads either kind of file).
//!
//! One writer thread owns the write connection and group-commits whatever is queued (log
//! appends, applies, votes) in one database transaction before replying. Its durability is
//! per batch:
//!
//! - `synchronous=FULL` (an fsync at commit) when the batch appends, truncates or purges log
//!   entries, saves a vote, or installs or records a snapshot. Raft counts a replica's vote and
//!   log as promises: they must survive power loss before the replica answers.
//! - `synchronous=NORMAL` (no fsync) when it only applies entries. The state machine writes
//!   its rows and its applied log id in one transaction, so a lost tail only rolls it back to
//!   an earlier consistent point, from which Raft re-applies the (durable) log, and numbering is
//!   deterministic. WAL frames are ordered: the next FULL commit makes every earlier NORMAL
//!   frame durable too, which is why a snapshot record (FULL) never refers to rows that could be
//!   lost. A kill -9 loses nothing either way: the frames are in the page cache.
//! - The commit index gets no write of its own: it rides along with the next batch, whatever
//!   that batch's durability. A lost or old commit index is only learned again from the leader.
//!
//! The newest log entries are also kept in memory (the tail): replication and applying read the
//! entries just appended, and serving them without a query and a decode keeps both off the
//! commit path. Other reads use pooled read-only connections. A snapshot is a read
//! transaction: it sees the applied log id, the membership and the rows that one commit left,
//! a consistent cut by construction, while the writer goes on.
//!
//! Snapshots copy only the stocks: orders are append-only and numbered densely, so the snapshot
//! taken at applied log id L holds exactly the orders numbered below the count at L. The file
//! records the snapshot's meta, that count and the stocks at L, and the orders are read from
//! `orders` when needed. Only installing a snapshot replaces rows.
//!
//! Every applied entry, with what it changed, goes to the release gate after its commit
//! (`crate::release`), which on the leader pushes invalidations and feeds the catalogs.
//!
//! Invariants, asserted: applied log ids only grow, and the ledger's position follows them;
//! order numbers are dense from 0 (on every apply, on every install and on every open); appends
//! continue the log.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bazaar_api::log::{AppliedEntry, BookSnapshot, LogIndex, Position};
use bazaar_api::replica::ReplicationMode;
use bazaar_api::{Epoch, TxnNumber};
use bazaar_ledger::{Book, Outcome, StockRecord};
use bazaar_service::writer::{self, Deferred, defer};
use bazaar_service::{Fatal, db, now_ms};
use openraft::EntryPayload;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::types::{Applied, Entry, LogId, SnapshotMeta, StoredMembership, Vote};
use crate::error::{Error, Result};
use crate::file::RawEntry;
use crate::orders::{self, OrderRow};

/// Requests queued for the writer at most.
const COMMAND_QUEUE_LEN: usize = 256;

/// Most requests committed by one database transaction.
const BATCH_LEN_MAX: usize = 64;

/// Newest log entries kept in memory.
const TAIL_LEN_MAX: usize = 4096;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS raft_log (
    idx   INTEGER PRIMARY KEY CHECK (idx >= 0),
    term  INTEGER NOT NULL,
    entry TEXT NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS raft_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
";

/// Keys of `raft_meta`, each holding a JSON value.
mod key {
    pub const VOTE: &str = "vote";
    pub const COMMITTED: &str = "committed";
    pub const LAST_PURGED: &str = "last_purged";
    pub const APPLIED: &str = "applied";
    pub const MEMBERSHIP: &str = "membership";
    pub const SNAPSHOT: &str = "snapshot";
}

/// The last snapshot built or installed: its meta, how many orders it holds, and the stocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// What it covers.
    pub meta: SnapshotMeta,
    /// Orders numbered below this are the snapshot's orders.
    pub orders: u64,
    /// The ledger's stocks at the snapshot.
    pub stocks: Vec<StockRecord>,
}

/// What the writer publishes after each commit, for readers that must not wait for it.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// Last log id purged (the first one the log no longer holds).
    pub last_purged: Option<LogId>,
    /// Last entry in the log table; `None` when it is empty.
    pub last_log: Option<LogId>,
    /// Last entry applied to the state machine.
    pub applied: Option<LogId>,
    /// Membership as of `applied`.
    pub membership: StoredMembership,
    /// Last snapshot built or installed.
    pub snapshot: Option<SnapshotRecord>,
    /// The ledger's stocks at `applied`, for a leader's first release.
    pub book: BookSnapshot,
}

type Reply<T> = oneshot::Sender<Result<T>>;

enum Request {
    Append(Vec<(LogId, String)>, Reply<()>),
    Truncate(LogId, Reply<()>),
    Purge(LogId, Reply<()>),
    SaveVote(Vote, Reply<()>),
    Apply(Vec<Entry>, Reply<Vec<Applied>>),
    Install(SnapshotRecord, Vec<OrderRow>, Reply<()>),
    SaveSnapshot(SnapshotRecord, Reply<()>),
}

impl Request {
    /// Whether the batch holding it must be on disk before anyone hears of it (see the module
    /// docs for why applies need not be).
    fn is_durable(&self) -> bool {
        !matches!(self, Self::Apply(..))
    }
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    requests: mpsc::Sender<Request>,
    state: Arc<Mutex<State>>,
    /// A commit index not yet written; the writer's next batch writes it.
    committed: Arc<Mutex<Option<Option<LogId>>>>,
    /// The newest durable log entries, consecutive; changed only after the database.
    tail: Mutex<VecDeque<Entry>>,
    readers: db::Readers,
    path: PathBuf,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Db {
    /// Opens (creating) the raft database at `path`, checks it, and starts the writer thread.
    /// A failed commit raises `fatal`.
    ///
    /// # Errors
    /// [`Error::Storage`] naming the file; [`Error::Config`] if the primary-backup mode made it.
    pub fn open(
        path: &Path,
        fatal: Fatal,
        released: mpsc::UnboundedSender<AppliedEntry>,
    ) -> Result<(Self, std::thread::JoinHandle<()>)> {
        let mut conn = db::open_writer(path).map_err(Error::Storage)?;
        crate::file::init(&mut conn, path, ReplicationMode::Raft)?;
        let storage = |e: rusqlite::Error| Error::Storage(db::describe(path, &e));
        conn.execute_batch(SCHEMA).map_err(storage)?;
        let (state, book) = load_state(&conn, path)?;
        tracing::info!(
            last_log = ?state.last_log.map(|l| l.index),
            applied = ?state.applied.map(|l| l.index),
            orders = book.next_number().0,
            "raft database opened"
        );
        let state = Arc::new(Mutex::new(state));
        let committed = Arc::new(Mutex::new(None));
        let (requests, queue) = mpsc::channel(COMMAND_QUEUE_LEN);
        let mut writer = Writer {
            conn,
            state: Arc::clone(&state),
            committed: Arc::clone(&committed),
            path: path.to_owned(),
            synchronous_full: true,
            book,
            released,
        };
        let thread = writer::spawn(
            "raft-db-writer",
            queue,
            BATCH_LEN_MAX,
            fatal,
            move |batch| {
                writer.commit_batch(batch).map_err(|e| {
                    format!(
                        "raft database write failed: {}",
                        db::describe(&writer.path, &e)
                    )
                })
            },
        )
        .map_err(|e| Error::Storage(format!("cannot start the writer thread: {e}")))?;
        let db = Self {
            inner: Arc::new(Inner {
                requests,
                state,
                committed,
                tail: Mutex::new(VecDeque::new()),
                readers: db::Readers::open(path).map_err(Error::Storage)?,
                path: path.to_owned(),
            }),
        };
        Ok((db, thread))
    }

    /// What the last commit left.
    #[must_use]
    pub fn state(&self) -> State {
        self.inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads `f` of the published state without copying all of it.
    pub fn with_state<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self
            .inner
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Appends entries (serialized) durably.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`] once the writer has stopped; [`Error::Storage`] for an entry that
    /// cannot be serialized.
    pub async fn append(&self, entries: Vec<Entry>) -> Result<()> {
        let rows = entries
            .iter()
            .map(|e| Ok((e.log_id, to_json(e)?)))
            .collect::<Result<Vec<_>>>()?;
        if rows.is_empty() {
            return Ok(());
        }
        self.call(|reply| Request::Append(rows, reply)).await?;
        let mut tail = self.tail();
        if tail
            .back()
            .is_some_and(|last| last.log_id.index + 1 != entries[0].log_id.index)
        {
            // Not a continuation (only openraft's test suite appends like that): start over.
            tail.clear();
        }
        tail.extend(entries);
        let excess = tail.len().saturating_sub(TAIL_LEN_MAX);
        tail.drain(..excess);
        Ok(())
    }

    /// Deletes log entries from `since` on, durably.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`].
    pub async fn truncate(&self, since: LogId) -> Result<()> {
        self.call(|reply| Request::Truncate(since, reply)).await?;
        self.tail().retain(|e| e.log_id.index < since.index);
        Ok(())
    }

    /// Deletes log entries up to `upto`, durably.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`].
    pub async fn purge(&self, upto: LogId) -> Result<()> {
        self.call(|reply| Request::Purge(upto, reply)).await?;
        self.tail().retain(|e| e.log_id.index > upto.index);
        Ok(())
    }

    fn tail(&self) -> MutexGuard<'_, VecDeque<Entry>> {
        self.inner
            .tail
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Saves the vote durably.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`].
    pub async fn save_vote(&self, vote: Vote) -> Result<()> {
        self.call(|reply| Request::SaveVote(vote, reply)).await
    }

    /// Notes the commit index; the next write saves it. openraft waits for this before
    /// applying, and a write of its own would put a database transaction on every commit's
    /// path for a value that can be learned again from the leader.
    pub fn save_committed(&self, committed: Option<LogId>) {
        *self
            .inner
            .committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(committed);
    }

    /// Applies committed entries to the state machine.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`].
    pub async fn apply(&self, entries: Vec<Entry>) -> Result<Vec<Applied>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        self.call(|reply| Request::Apply(entries, reply)).await
    }

    /// Replaces the state machine with a snapshot's, durably.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`].
    pub async fn install(&self, record: SnapshotRecord, rows: Vec<OrderRow>) -> Result<()> {
        self.call(|reply| Request::Install(record, rows, reply))
            .await
    }

    /// Records a snapshot built from the state machine, durably.
    ///
    /// # Errors
    /// [`Error::ShuttingDown`].
    pub async fn save_snapshot(&self, record: SnapshotRecord) -> Result<()> {
        self.call(|reply| Request::SaveSnapshot(record, reply))
            .await
    }

    /// Log entries with indexes from `start` up to, not including, `end`.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn entries(&self, start: u64, end: u64) -> Result<Vec<Entry>> {
        if start >= end {
            return Ok(Vec::new());
        }
        let (cached, first_cached) = {
            let tail = self.tail();
            match tail.front().map(|e| e.log_id.index) {
                Some(first) if end > first => {
                    let skip = usize::try_from(start.saturating_sub(first)).unwrap_or(usize::MAX);
                    let take = usize::try_from(end - first.max(start)).unwrap_or(usize::MAX);
                    let cached: Vec<Entry> = tail.iter().skip(skip).take(take).cloned().collect();
                    (cached, first)
                }
                _ => (Vec::new(), end),
            }
        };
        if start >= first_cached {
            return Ok(cached);
        }
        let mut entries = self.stored_entries(start, first_cached).await?;
        entries.extend(cached);
        Ok(entries)
    }

    async fn stored_entries(&self, start: u64, end: u64) -> Result<Vec<Entry>> {
        let (start, end) = (clamp(start), clamp(end));
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT entry FROM raft_log WHERE idx >= ?1 AND idx < ?2 ORDER BY idx",
            )?;
            let rows = stmt.query_map(params![start, end], |r| r.get::<_, String>(0))?;
            rows.map(|text| from_json(&text?)).collect()
        })
        .await
    }

    /// A value of `raft_meta`.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn meta<T: DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
    ) -> Result<Option<T>> {
        self.read(move |conn| read_meta(conn, key)).await
    }

    /// The saved vote.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn vote(&self) -> Result<Option<Vote>> {
        self.meta(key::VOTE).await
    }

    /// The saved commit index.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn committed(&self) -> Result<Option<LogId>> {
        let pending = *self
            .inner
            .committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match pending {
            Some(committed) => Ok(committed),
            None => Ok(self.meta::<Option<LogId>>(key::COMMITTED).await?.flatten()),
        }
    }

    /// The order numbered `number`.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn order(&self, number: TxnNumber) -> Result<Option<OrderRow>> {
        self.read(move |conn| orders::by_number(conn, number)).await
    }

    /// Orders numbered below `count`: the orders of a snapshot that holds `count` orders.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn orders_below(&self, count: u64) -> Result<Vec<OrderRow>> {
        self.read(move |conn| orders::below(conn, TxnNumber(count)))
            .await
    }

    /// A consistent cut of the state machine: applied log id, membership, every order and the
    /// stocks, as one commit left them.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub async fn cut(
        &self,
    ) -> Result<(
        Option<LogId>,
        StoredMembership,
        Vec<OrderRow>,
        Vec<StockRecord>,
    )> {
        self.read(|conn| {
            let db_tx = conn.transaction()?;
            let applied = read_meta::<Option<LogId>>(&db_tx, key::APPLIED)?.flatten();
            let membership = read_meta(&db_tx, key::MEMBERSHIP)?.unwrap_or_default();
            let rows = orders::page_all(&db_tx)?;
            let stocks = orders::read_stocks(&db_tx)?;
            db_tx.commit()?;
            Ok((applied, membership, rows, stocks))
        })
        .await
    }

    async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T> {
        self.inner.readers.read(query).await.map_err(Error::Storage)
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T> {
        writer::request(&self.inner.requests, make)
            .await
            .unwrap_or(Err(Error::ShuttingDown))
    }
}

/// SQLite integers are signed: larger bounds mean "no bound".
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_json<T: Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::Storage(format!("cannot encode: {e}")))
}

fn from_json<T: DeserializeOwned>(text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn json_param<T: Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn read_meta<T: DeserializeOwned>(conn: &Connection, key: &str) -> rusqlite::Result<Option<T>> {
    conn.prepare_cached("SELECT value FROM raft_meta WHERE key = ?1")?
        .query_row([key], |r| r.get::<_, String>(0))
        .optional()?
        .map(|text| from_json(&text))
        .transpose()
}

fn write_meta<T: Serialize>(db_tx: &Transaction<'_>, key: &str, value: &T) -> rusqlite::Result<()> {
    db_tx
        .prepare_cached(
            "INSERT INTO raft_meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )?
        .execute(params![key, json_param(value)?])?;
    Ok(())
}

fn last_log_in_table(conn: &Connection) -> rusqlite::Result<Option<LogId>> {
    conn.prepare_cached("SELECT entry FROM raft_log ORDER BY idx DESC LIMIT 1")?
        .query_row([], |r| r.get::<_, String>(0))
        .optional()?
        .map(|text| from_json::<Entry>(&text).map(|e| e.log_id))
        .transpose()
}

fn load_state(conn: &Connection, path: &Path) -> Result<(State, Book)> {
    let storage = |e: rusqlite::Error| Error::Storage(db::describe(path, &e));
    // Recovery's double check of the apply-time invariant.
    orders::check_dense(conn).map_err(|e| Error::Storage(format!("{}: {e}", path.display())))?;
    let applied = read_meta::<Option<LogId>>(conn, key::APPLIED)
        .map_err(storage)?
        .flatten();
    let position = applied.map_or(Position(0), |l| LogIndex(l.index).position());
    let book = Book::restore(
        position,
        orders::read_stocks(conn).map_err(storage)?,
        orders::requests(conn).map_err(storage)?,
    )
    .map_err(|e| {
        Error::Storage(format!(
            "{}: the state machine does not hold: {e}",
            path.display()
        ))
    })?;
    let state = State {
        last_purged: read_meta::<Option<LogId>>(conn, key::LAST_PURGED)
            .map_err(storage)?
            .flatten(),
        last_log: last_log_in_table(conn).map_err(storage)?,
        applied,
        membership: read_meta(conn, key::MEMBERSHIP)
            .map_err(storage)?
            .unwrap_or_default(),
        snapshot: read_meta(conn, key::SNAPSHOT).map_err(storage)?,
        book: book.snapshot(),
    };
    Ok((state, book))
}

/// The Raft log still in a database (after its last compaction) and the index of the last
/// entry applied, read without the service running.
///
/// # Errors
/// SQLite errors.
pub fn read_offline(conn: &Connection) -> rusqlite::Result<(Vec<RawEntry>, Option<u64>)> {
    let applied = read_meta::<Option<LogId>>(conn, key::APPLIED)?.flatten();
    let entries = conn
        .prepare("SELECT entry FROM raft_log ORDER BY idx")?
        .query_map([], |r| r.get::<_, String>(0))?
        .map(|text| {
            let entry: Entry = from_json(&text?)?;
            Ok(RawEntry {
                index: LogIndex(entry.log_id.index),
                epoch: Epoch(entry.log_id.leader_id.term),
                commands: match entry.payload {
                    EntryPayload::Normal(command) => command.0,
                    EntryPayload::Blank | EntryPayload::Membership(_) => Vec::new(),
                },
            })
        })
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((entries, applied.map(|l| l.index)))
}

struct Writer {
    conn: Connection,
    state: Arc<Mutex<State>>,
    committed: Arc<Mutex<Option<Option<LogId>>>>,
    path: PathBuf,
    /// The connection's current `synchronous` setting, switched per batch.
    synchronous_full: bool,
    /// The ledger at the last applied entry.
    book: Book,
    /// Where applied entries go once committed.
    released: mpsc::UnboundedSender<AppliedEntry>,
}

impl Writer {
    fn commit_batch(&mut self, batch: Vec<Request>) -> rusqlite::Result<()> {
        let durable = batch.iter().any(Request::is_durable);
        if durable != self.synchronous_full {
            self.conn.pragma_update(
                None,
                "synchronous",
                if durable { "FULL" } else { "NORMAL" },
            )?;
            self.synchronous_full = durable;
        }
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut replies: Vec<Deferred> = Vec::with_capacity(batch.len());
        let committed = self
            .committed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let db_tx = self.conn.transaction()?;
        if let Some(committed) = committed {
            write_meta(&db_tx, key::COMMITTED, &committed)?;
        }
        let now = now_ms();
        // The book changes before the commit; a failed commit stops the process, and the next
        // start rebuilds the book from what the file holds.
        let book = &mut self.book;
        let mut released = Vec::new();
        for request in batch {
            replies.push(match request {
                Request::Append(rows, reply) => {
                    append(&db_tx, &mut state, &rows)?;
                    defer(reply, Ok(()))
                }
                Request::Truncate(since, reply) => {
                    db_tx.execute("DELETE FROM raft_log WHERE idx >= ?1", [clamp(since.index)])?;
                    state.last_log = last_log_in_table(&db_tx)?;
                    defer(reply, Ok(()))
                }
                Request::Purge(upto, reply) => {
                    db_tx.execute("DELETE FROM raft_log WHERE idx <= ?1", [clamp(upto.index)])?;
                    write_meta(&db_tx, key::LAST_PURGED, &Some(upto))?;
                    state.last_purged = Some(upto);
                    if state.last_log.is_some_and(|l| l.index <= upto.index) {
                        state.last_log = None;
                    }
                    defer(reply, Ok(()))
                }
                Request::SaveVote(vote, reply) => {
                    write_meta(&db_tx, key::VOTE, &vote)?;
                    defer(reply, Ok(()))
                }
                Request::Apply(entries, reply) => {
                    let applied = apply(&db_tx, &mut state, book, &entries, now, &mut released)?;
                    defer(reply, Ok(applied))
                }
                Request::Install(record, rows, reply) => {
                    install(&db_tx, &mut state, book, record, &rows)?;
                    defer(reply, Ok(()))
                }
                Request::SaveSnapshot(record, reply) => {
                    // Building runs beside applying and installing: never let an older build
                    // replace a newer record.
                    let newer = state
                        .snapshot
                        .as_ref()
                        .is_none_or(|s| s.meta.last_log_id <= record.meta.last_log_id);
                    if newer {
                        write_meta(&db_tx, key::SNAPSHOT, &record)?;
                        state.snapshot = Some(record);
                    }
                    defer(reply, Ok(()))
                }
            });
        }
        db_tx.commit()?;
        state.book = self.book.snapshot();
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = state;
        for entry in released {
            // Nobody listening means the service is stopping.
            let _ = self.released.send(entry);
        }
        for reply in replies {
            reply();
        }
        Ok(())
    }
}

fn append(
    db_tx: &Transaction<'_>,
    state: &mut State,
    rows: &[(LogId, String)],
) -> rusqlite::Result<()> {
    let mut stmt = db_tx
        .prepare_cached("INSERT OR REPLACE INTO raft_log (idx, term, entry) VALUES (?1, ?2, ?3)")?;
    for (log_id, entry) in rows {
        if let Some(last) = state.last_log {
            assert_eq!(
                log_id.index,
                last.index + 1,
                "raft log append out of order: got index {}, the log ends at {}",
                log_id.index,
                last.index
            );
        }
        stmt.execute(params![
            clamp(log_id.index),
            clamp(log_id.leader_id.term),
            entry
        ])?;
        state.last_log = Some(*log_id);
    }
    Ok(())
}

fn apply(
    db_tx: &Transaction<'_>,
    state: &mut State,
    book: &mut Book,
    entries: &[Entry],
    now: u64,
    released: &mut Vec<AppliedEntry>,
) -> rusqlite::Result<Vec<Applied>> {
    let mut answers = Vec::with_capacity(entries.len());
    let mut membership_changed = false;
    let mut changed: Vec<String> = Vec::new();
    for entry in entries {
        assert!(
            state.applied.is_none_or(|a| a.index < entry.log_id.index),
            "raft entry {} applied after {:?}",
            entry.log_id,
            state.applied
        );
        let commands: &[bazaar_api::log::Command] = match &entry.payload {
            EntryPayload::Normal(command) => &command.0,
            EntryPayload::Blank => &[],
            EntryPayload::Membership(membership) => {
                state.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                membership_changed = true;
                &[]
            }
        };
        // Every replica applies the same entries in the same order to the same book, so every
        // replica reaches the same outcomes and numbers.
        let index = LogIndex(entry.log_id.index);
        let (outcomes, effects) = book.apply_at(index, commands);
        for (command, outcome) in commands.iter().zip(&outcomes) {
            if let (Outcome::Traded(number), Some(trade)) = (outcome, command.trade()) {
                orders::insert(
                    db_tx,
                    &OrderRow::of_trade(
                        *number,
                        trade,
                        index,
                        Epoch(entry.log_id.leader_id.term),
                        now,
                    ),
                )?;
            }
        }
        changed.extend(
            effects
                .effects
                .iter()
                .flat_map(|e| e.stocks().map(str::to_owned).collect::<Vec<_>>()),
        );
        released.push(effects);
        state.applied = Some(entry.log_id);
        answers.push(Applied { outcomes });
    }
    changed.sort_unstable();
    changed.dedup();
    orders::write_stocks(
        db_tx,
        book.records()
            .filter(|r| changed.binary_search(&r.state.name).is_ok()),
    )?;
    write_meta(db_tx, key::APPLIED, &state.applied)?;
    if membership_changed {
        write_meta(db_tx, key::MEMBERSHIP, &state.membership)?;
    }
    Ok(answers)
}

fn install(
    db_tx: &Transaction<'_>,
    state: &mut State,
    book: &mut Book,
    record: SnapshotRecord,
    rows: &[OrderRow],
) -> rusqlite::Result<()> {
    let position = record
        .meta
        .last_log_id
        .map_or(Position(0), |l| LogIndex(l.index).position());
    let restored = Book::restore(
        position,
        record.stocks.clone(),
        rows.iter().map(|r| (r.request_id, r.number)).collect(),
    );
    // A snapshot comes from the leader's own state machine: one that does not hold is a bug.
    *book = restored.unwrap_or_else(|e| panic!("an installed snapshot does not hold: {e}"));
    orders::replace_all(db_tx, rows)?;
    orders::replace_stocks(db_tx, &record.stocks)?;
    state.applied = record.meta.last_log_id;
    state.membership = record.meta.last_membership.clone();
    write_meta(db_tx, key::APPLIED, &state.applied)?;
    write_meta(db_tx, key::MEMBERSHIP, &state.membership)?;
    write_meta(db_tx, key::SNAPSHOT, &record)?;
    state.snapshot = Some(record);
    Ok(())
}
