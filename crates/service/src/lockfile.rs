//! One process per database file. Two catalogs (or two copies of one replica) writing the same
//! SQLite file would each believe they own the state; an exclusive lock on `<db>.lock` makes
//! the second one fail at start with a clear message. The kernel drops the lock when the
//! process dies, even by SIGKILL, so a crash never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Holds the lock until dropped.
#[derive(Debug)]
pub struct DbLock {
    _file: File,
    path: PathBuf,
}

impl DbLock {
    /// Creates the database's directory if needed and locks `<db>.lock` beside the database.
    ///
    /// # Errors
    /// A sentence naming the directory or file: it cannot be created, or another process
    /// holds the lock.
    pub fn acquire(db: &Path) -> Result<Self, String> {
        if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
        }
        let mut path = db.as_os_str().to_owned();
        path.push(".lock");
        let path = PathBuf::from(path);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| format!("cannot create lock file {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                return Err(format!(
                    "database {} is in use by another process (pid {})",
                    db.display(),
                    holder.trim()
                ));
            }
            Err(TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", path.display()));
            }
        }
        // The pid is only a hint for the message above; the lock is what counts.
        let _ = file.set_len(0);
        let _ = write!(file, "{}", std::process::id());
        Ok(Self { _file: file, path })
    }

    /// The lock file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_the_first_lets_go() {
        let dir = std::env::temp_dir().join(format!("bazaar-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let db = dir.join("x.db");
        let first = DbLock::acquire(&db).expect("first lock");
        let err = DbLock::acquire(&db).expect_err("second lock must fail");
        assert!(err.contains("in use by another process"), "{err}");
        drop(first);
        DbLock::acquire(&db).expect("lock after release");
        let _ = std::fs::remove_dir_all(dir);
    }
}
