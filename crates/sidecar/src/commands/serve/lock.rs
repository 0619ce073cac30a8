//! One sidecar per database: `serve` holds an exclusive lock on a file beside the database
//! (`<db>.lock`, holding its PID) for its whole life. A second `serve` on the same file is
//! refused (exit 69) with the first one's PID, instead of both writing into it (retention,
//! the export outbox and client progress twice). Readers (`query`, `report`, `backup`,
//! `top`) take no lock. The kernel releases the lock when the process ends, however it ends,
//! so a sidecar killed with SIGKILL leaves nothing to clean up; the file itself stays (it
//! is not removed at exit: a sidecar starting meanwhile could be holding it).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::exit::{FAILURE, Failure, UNAVAILABLE};

/// The lock, held until dropped.
#[derive(Debug)]
pub struct DbLock {
    _file: File,
}

/// The lock file of a database.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl DbLock {
    /// Takes the lock for `db`, or says who holds it.
    pub fn take(db: &Path) -> Result<Self, Failure> {
        let path = lock_path(db);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                Failure::new(
                    FAILURE,
                    format!(
                        "cannot open {} (the lock that keeps a second sidecar off {}): {e}; \
                         make the database's directory writable",
                        path.display(),
                        db.display()
                    ),
                )
            })?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = text
                    .trim()
                    .parse::<u32>()
                    .map_or_else(|_| "another process".to_owned(), |pid| format!("pid {pid}"));
                return Err(Failure::new(
                    UNAVAILABLE,
                    format!(
                        "another runlens serve ({holder}) is writing {}; stop it first, or give \
                         this one its own --db (query, report, backup and top can read it \
                         meanwhile)",
                        db.display()
                    ),
                ));
            }
            Err(TryLockError::Error(e)) => {
                return Err(Failure::new(
                    FAILURE,
                    format!("cannot lock {}: {e}", path.display()),
                ));
            }
        }
        // Ours now: say who holds it, for the next one's message. Best effort: the lock is
        // what counts.
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = writeln!(file, "{}", std::process::id());
        let _ = file.flush();
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_database_names_the_first_holder_and_a_released_one_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("runlens.db");
        let first = DbLock::take(&db).unwrap();
        let refused = DbLock::take(&db).unwrap_err();
        assert_eq!(refused.code, UNAVAILABLE);
        assert!(
            refused
                .message
                .contains(&format!("(pid {})", std::process::id())),
            "{}",
            refused.message
        );
        let other = DbLock::take(&dir.path().join("other.db"));
        assert!(other.is_ok(), "another database is another lock");
        drop(first);
        assert!(DbLock::take(&db).is_ok(), "released with its holder");
    }
}
