//! Opening SQLite files the way every service wants them: WAL journal, a durable commit before
//! anything is acknowledged (`synchronous=FULL`), foreign keys on, and a clear one-line error
//! when the path is not writable or the file is not a database.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// Idle read connections a [`Readers`] keeps for reuse; more are opened while reads overlap.
const READERS_KEPT_MAX: usize = 4;

/// How long a reader waits for a lock held by the writer before giving up. Readers rarely
/// wait at all under WAL; this only bounds the worst case of a checkpoint.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Opens (creating if needed) the database at `path` for writing, creating its directory.
///
/// # Errors
/// A sentence naming the path: the directory cannot be created, the file cannot be opened,
/// or it is not a SQLite database.
pub fn open_writer(path: &Path) -> Result<Connection, String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
    }
    let conn = Connection::open(path)
        .map_err(|e| format!("cannot open database {}: {e}", path.display()))?;
    configure(&conn, path)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(|e| describe(path, &e))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(|e| describe(path, &e))?;
    Ok(conn)
}

/// Opens an existing database read-only (for lookups beside the writer, and for `verify`).
///
/// # Errors
/// A sentence naming the path.
pub fn open_reader(path: &Path) -> Result<Connection, String> {
    if !path.exists() {
        return Err(format!("database {} does not exist", path.display()));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open database {}: {e}", path.display()))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| describe(path, &e))?;
    // Reading the schema is the first statement that touches the file's contents, so a file
    // that is not a database fails here rather than at some later query.
    conn.query_row("PRAGMA schema_version", [], |_| Ok(()))
        .map_err(|e| describe(path, &e))?;
    Ok(conn)
}

/// Read-only connections to one database, beside its writer thread (WAL lets them read while
/// it commits). Reads run on tokio's blocking pool; concurrent reads each get a connection of
/// their own instead of queueing behind one. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Readers {
    inner: Arc<ReadersInner>,
}

#[derive(Debug)]
struct ReadersInner {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    /// Readers of the database at `path`, which must exist; one is opened now so a bad file is
    /// reported at start rather than at the first read.
    ///
    /// # Errors
    /// A sentence naming the path.
    pub fn open(path: &Path) -> Result<Self, String> {
        let first = open_reader(path)?;
        Ok(Self {
            inner: Arc::new(ReadersInner {
                path: path.to_owned(),
                idle: Mutex::new(vec![first]),
            }),
        })
    }

    /// Runs `query` on a read connection.
    ///
    /// # Errors
    /// A sentence naming the database: the query failed or the connection could not be
    /// opened.
    pub async fn read<T: Send + 'static>(
        &self,
        query: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || {
            let idle = inner
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop();
            let mut conn = match idle {
                Some(conn) => conn,
                None => open_reader(&inner.path)?,
            };
            let result = query(&mut conn).map_err(|e| describe(&inner.path, &e));
            let mut idle = inner
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if idle.len() < READERS_KEPT_MAX {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| format!("read task on {} failed: {e}", self.inner.path.display()))?
    }
}

fn configure(conn: &Connection, path: &Path) -> Result<(), String> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| describe(path, &e))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
        .map_err(|e| describe(path, &e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!(
            "database {} refused write-ahead logging (journal mode is {mode})",
            path.display()
        ));
    }
    Ok(())
}

/// A one-line description of a SQLite error on `path`.
#[must_use]
pub fn describe(path: &Path, e: &rusqlite::Error) -> String {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => {
            format!("{} is not a SQLite database", path.display())
        }
        Some(rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen) => {
            format!("database {} is not writable: {e}", path.display())
        }
        _ => format!("database {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_database_is_named() {
        let dir = tempdir();
        let path = dir.join("junk.db");
        std::fs::write(&path, vec![b'x'; 4096]).expect("write junk");
        let err = open_writer(&path).expect_err("junk must be refused");
        assert!(err.contains("is not a SQLite database"), "{err}");
        let err = open_reader(&path).expect_err("junk must be refused");
        assert!(err.contains("is not a SQLite database"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn writer_creates_the_directory_and_uses_wal() {
        let dir = tempdir();
        let path = dir.join("a/b/c.db");
        let conn = open_writer(&path).expect("open");
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("pragma");
        assert_eq!(mode, "wal");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn readers_see_committed_writes_and_report_bad_queries() {
        let dir = tempdir();
        let path = dir.join("r.db");
        let writer = open_writer(&path).expect("open");
        writer
            .execute_batch("CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (7);")
            .expect("write");
        let readers = Readers::open(&path).expect("readers");
        // Overlapping reads each take a connection of their own.
        let reads: Vec<_> = (0..8)
            .map(|_| {
                let readers = readers.clone();
                tokio::spawn(async move {
                    readers
                        .read(|conn| conn.query_row("SELECT n FROM t", [], |r| r.get::<_, i64>(0)))
                        .await
                })
            })
            .collect();
        for read in reads {
            assert_eq!(read.await.expect("task"), Ok(7));
        }
        let err = readers
            .read(|conn| conn.query_row("SELECT nope FROM t", [], |r| r.get::<_, i64>(0)))
            .await
            .expect_err("bad column");
        assert!(err.contains("r.db"), "{err}");
        assert!(Readers::open(&dir.join("missing.db")).is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempdir() -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("bazaar-db-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}
