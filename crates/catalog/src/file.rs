//! The catalog's own SQLite file: its view of the log (every stock) and the log position that
//! view reflects, written lazily, behind the view. Nothing waits for it: the log is the durable
//! record, and a catalog that lost its file (or some of its last writes) rebuilds from the log.
//!
//! A save replaces the stocks and the position in one transaction, so the file always holds a
//! state the log passed through.

use std::path::{Path, PathBuf};

use bazaar_api::log::{BookSnapshot, Position};
use bazaar_api::{Epoch, Price, StockState, TxnNumber, Version};
use bazaar_service::db;
use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};

/// Version of the schema below; a file with another is refused rather than misread.
const SCHEMA_VERSION: i64 = 2;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stocks (
    name        TEXT PRIMARY KEY,
    price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
    quantity    INTEGER NOT NULL CHECK (quantity >= 0),
    volume      INTEGER NOT NULL CHECK (volume >= 0),
    version     INTEGER NOT NULL CHECK (version >= 0)
) STRICT;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;
";

/// What a saved file holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Saved {
    /// The view.
    pub snapshot: BookSnapshot,
    /// The epoch of the leader the view came from.
    pub epoch: Option<Epoch>,
}

/// The file, with its one write connection. Used from a blocking thread only.
pub struct CatalogFile {
    conn: Connection,
    path: PathBuf,
    /// The file's identity when opened, to notice it was deleted or replaced while running.
    inode: Option<u64>,
}

impl std::fmt::Debug for CatalogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn int(n: u64) -> i64 {
    i64::try_from(n).expect("stored values fit a signed 64-bit integer")
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

impl CatalogFile {
    /// Opens (creating) the file; returns it and what it holds (`None` for a new file).
    ///
    /// # Errors
    /// [`Error::Storage`] naming the file: not writable, not a database, another schema.
    pub fn open(path: &Path) -> Result<(Self, Option<Saved>)> {
        let existed = path.exists();
        let mut conn = db::open_writer(path).map_err(Error::Storage)?;
        // The log is the durable record: the file only saves a rebuild.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| Error::Storage(db::describe(path, &e)))?;
        init(&mut conn, path)?;
        let saved = if existed { load(&conn, path)? } else { None };
        Ok((
            Self {
                conn,
                path: path.to_owned(),
                inode: inode(path),
            },
            saved,
        ))
    }

    /// Whether the file was deleted or replaced since it was opened.
    #[must_use]
    pub fn is_gone(&self) -> bool {
        inode(&self.path) != self.inode
    }

    /// Opens the file again at its path (after it was deleted while running).
    ///
    /// # Errors
    /// As [`Self::open`].
    pub fn reopen(&mut self) -> Result<()> {
        let (file, _) = Self::open(&self.path)?;
        *self = file;
        Ok(())
    }

    /// The path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces what the file holds with `snapshot`.
    ///
    /// # Errors
    /// [`Error::Storage`].
    pub fn save(&mut self, snapshot: &BookSnapshot, epoch: Option<Epoch>) -> Result<()> {
        let storage = |e: rusqlite::Error| Error::Storage(db::describe(&self.path, &e));
        let db_tx = self.conn.transaction().map_err(storage)?;
        db_tx.execute("DELETE FROM stocks", []).map_err(storage)?;
        {
            let mut stmt = db_tx
                .prepare_cached(
                    "INSERT INTO stocks (name, price_cents, quantity, volume, version)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(storage)?;
            for s in &snapshot.stocks {
                stmt.execute(params![
                    s.name,
                    int(s.price.cents()),
                    int(s.quantity),
                    int(s.volume),
                    int(s.version.0)
                ])
                .map_err(storage)?;
            }
            let mut meta = db_tx
                .prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")
                .map_err(storage)?;
            meta.execute(params!["position", int(snapshot.position.0)])
                .map_err(storage)?;
            meta.execute(params!["next_number", int(snapshot.next_number.0)])
                .map_err(storage)?;
            match epoch {
                Some(epoch) => {
                    meta.execute(params!["epoch", int(epoch.0)])
                        .map_err(storage)?;
                }
                None => {
                    db_tx
                        .execute("DELETE FROM meta WHERE key = 'epoch'", [])
                        .map_err(storage)?;
                }
            }
        }
        db_tx.commit().map_err(storage)
    }
}

fn init(conn: &mut Connection, path: &Path) -> Result<()> {
    let storage = |e: rusqlite::Error| Error::Storage(db::describe(path, &e));
    let db_tx = conn.transaction().map_err(storage)?;
    db_tx.execute_batch(SCHEMA).map_err(storage)?;
    let version: Option<i64> = db_tx
        .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get(0)
        })
        .optional()
        .map_err(storage)?;
    match version {
        Some(v) if v == SCHEMA_VERSION => {}
        Some(v) => {
            return Err(Error::Storage(format!(
                "{} has catalog schema {v}; this build reads schema {SCHEMA_VERSION} (delete \
                 it: the catalog rebuilds from the order log)",
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
    db_tx.commit().map_err(storage)
}

fn load(conn: &Connection, path: &Path) -> Result<Option<Saved>> {
    let storage = |e: rusqlite::Error| Error::Storage(db::describe(path, &e));
    let meta = |key: &str| -> Result<Option<u64>> {
        conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(storage)
    };
    let Some(position) = meta("position")? else {
        return Ok(None);
    };
    let stocks = conn
        .prepare("SELECT name, price_cents, quantity, volume, version FROM stocks ORDER BY name")
        .and_then(|mut stmt| {
            stmt.query_map([], |r| {
                let cents: u64 = r.get(1)?;
                if cents > bazaar_api::price::PRICE_CENTS_MAX {
                    return Err(rusqlite::Error::IntegralValueOutOfRange(1, int(cents)));
                }
                Ok(StockState {
                    name: r.get(0)?,
                    price: Price::from_cents(cents),
                    quantity: r.get(2)?,
                    volume: r.get(3)?,
                    version: Version(r.get(4)?),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(storage)?;
    Ok(Some(Saved {
        snapshot: BookSnapshot {
            position: Position(position),
            stocks,
            next_number: TxnNumber(meta("next_number")?.unwrap_or(0)),
        },
        epoch: meta("epoch")?.map(Epoch),
    }))
}

/// Reads a catalog's file without the service running (for `bazaar verify`).
///
/// # Errors
/// A sentence naming the file: missing, unreadable, not a catalog file, or never saved.
pub fn read(path: &Path) -> std::result::Result<Saved, String> {
    let conn = db::open_reader(path)?;
    load(&conn, path)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("{} holds no saved view yet", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(position: u64, quantity: u64) -> BookSnapshot {
        BookSnapshot {
            position: Position(position),
            stocks: vec![StockState {
                name: "A".into(),
                price: Price::from_cents(199),
                quantity,
                volume: 3,
                version: Version(2),
            }],
            next_number: TxnNumber(7),
        }
    }

    #[test]
    fn a_save_reads_back_whole_and_a_deleted_file_is_noticed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("catalog.db");
        let (mut file, saved) = CatalogFile::open(&path).expect("open");
        assert_eq!(saved, None, "a new file holds nothing");
        file.save(&snapshot(5, 9), Some(Epoch(2))).expect("save");
        file.save(&snapshot(6, 8), Some(Epoch(3))).expect("save");
        let saved = read(&path).expect("read");
        assert_eq!(saved.snapshot, snapshot(6, 8));
        assert_eq!(saved.epoch, Some(Epoch(3)));
        assert!(!file.is_gone());
        let (_, saved) = CatalogFile::open(&path).expect("a second handle");
        assert_eq!(saved.map(|s| s.snapshot.position), Some(Position(6)));
        std::fs::remove_file(&path).expect("delete");
        assert!(file.is_gone(), "deleted while open");
        assert!(read(&path).is_err());
        file.reopen().expect("reopen at the path");
        assert!(!file.is_gone());
    }
}
