//! Opening SQLite files the way every service wants them: WAL journal, a durable commit before
//! anything is acknowledged (`synchronous=FULL`), foreign keys on, and a clear one-line error
//! when the path is not writable or the file is not a database.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

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

    fn tempdir() -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("bazaar-db-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}
