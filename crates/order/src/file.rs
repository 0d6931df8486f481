//! A replica's database file as a whole: its schema version, the replication mode that made it
//! (each mode refuses the other's file), and reading it without the service running (for
//! `bazaar verify` and `bazaar log`).

use std::path::Path;

use bazaar_api::Epoch;
use bazaar_api::log::{Command, LogIndex};
use bazaar_api::replica::{LogEntry, ReplicationMode};
use bazaar_ledger::StockRecord;
use bazaar_service::db;
use rusqlite::{Connection, OptionalExtension};

use crate::error::{Error, Result};
use crate::orders::{self, OrderRow};

/// Version of the schema this build writes and reads.
pub const SCHEMA_VERSION: i64 = 2;

const META: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;
";

/// Creates the shared tables and checks (or records) the schema version and the mode.
///
/// # Errors
/// [`Error::Config`] for a file of the other mode; [`Error::Storage`] for an older schema or a
/// file SQLite cannot read.
pub fn init(conn: &mut Connection, path: &Path, mode: ReplicationMode) -> Result<()> {
    let storage = |e: rusqlite::Error| Error::Storage(db::describe(path, &e));
    let db_tx = conn.transaction().map_err(storage)?;
    db_tx.execute_batch(META).map_err(storage)?;
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
                "{} has order database schema {v}; this build reads schema {SCHEMA_VERSION} \
                 (start from a fresh data directory)",
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
    db_tx.execute_batch(orders::SCHEMA).map_err(storage)?;
    db_tx.commit().map_err(storage)
}

/// One log entry as stored, in either mode: primary-backup entries carry one command each, a
/// raft entry carries the commands proposed together (none for a blank or membership entry).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RawEntry {
    /// Its index.
    pub index: LogIndex,
    /// The epoch (raft: term) of the leader that wrote it.
    pub epoch: Epoch,
    /// What it says.
    pub commands: Vec<Command>,
}

impl From<LogEntry> for RawEntry {
    fn from(entry: LogEntry) -> Self {
        Self {
            index: entry.index,
            epoch: entry.epoch,
            commands: vec![entry.command],
        }
    }
}

/// A replica's database as `bazaar verify` and `bazaar log` see it.
#[derive(Debug, Clone)]
pub struct Contents {
    /// The mode that made it.
    pub mode: ReplicationMode,
    /// Its orders, by number.
    pub orders: Vec<OrderRow>,
    /// Primary-backup: the whole log, in order. Raft: the entries still in the log (after the
    /// last compaction), each with its term, in order.
    pub log: Vec<RawEntry>,
    /// Primary-backup: entries moved aside because they conflicted with a newer leader's log.
    pub conflicts: Vec<RawEntry>,
    /// Raft: the index of the last entry applied, if any.
    pub applied: Option<u64>,
    /// Raft: the state machine's stocks as of `applied` (primary-backup saves none: it replays
    /// its log at open).
    pub stocks: Vec<StockRecord>,
}

/// Reads a replica's database without the service running.
///
/// # Errors
/// A sentence naming the file: it is missing, unreadable, not a replica's database, or of a
/// schema this build does not read.
pub fn read(path: &Path) -> std::result::Result<Contents, String> {
    let conn = db::open_reader(path)?;
    let describe = |e: rusqlite::Error| db::describe(path, &e);
    let meta = |key: &str| -> std::result::Result<Option<String>, String> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| db::describe(path, &e))
    };
    match meta("schema")? {
        Some(v) if v == SCHEMA_VERSION.to_string() => {}
        other => {
            return Err(format!(
                "{} is not an order database of schema {SCHEMA_VERSION} (found {other:?})",
                path.display()
            ));
        }
    }
    let mode = match meta("mode")?.as_deref() {
        Some("primary-backup") => ReplicationMode::PrimaryBackup,
        Some("raft") => ReplicationMode::Raft,
        other => {
            return Err(format!(
                "{} names no replication mode ({other:?})",
                path.display()
            ));
        }
    };
    orders::check_dense(&conn).map_err(|e| format!("{}: {e}", path.display()))?;
    let orders = orders::page_all(&conn).map_err(describe)?;
    let (log, conflicts, applied, stocks) = match mode {
        ReplicationMode::PrimaryBackup => (
            crate::primary_backup::storage::read_log(&conn, "log")
                .map_err(describe)?
                .into_iter()
                .map(RawEntry::from)
                .collect(),
            crate::primary_backup::storage::read_log(&conn, "conflicts")
                .map_err(describe)?
                .into_iter()
                .map(RawEntry::from)
                .collect(),
            None,
            Vec::new(),
        ),
        ReplicationMode::Raft => {
            let (log, applied) = crate::raft::store::read_offline(&conn).map_err(describe)?;
            let stocks = orders::read_stocks(&conn).map_err(describe)?;
            (log, Vec::new(), applied, stocks)
        }
    };
    Ok(Contents {
        mode,
        orders,
        log,
        conflicts,
        applied,
        stocks,
    })
}
