//! A consistent copy of a database, taken while the sidecar writes to it, and its check.
//!
//! SQLite's online backup API, copying every page in one step: in WAL mode that step reads
//! one snapshot of the database (a read transaction never blocks the writer), so the copy
//! is consistent and the backup never restarts however fast the sidecar writes.

use std::path::Path;

use rusqlite::Connection;
use rusqlite::backup::{Backup, StepResult};

use crate::{StoreError, open_read_only};

/// What a checked copy holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Runs.
    pub runs: i64,
    /// Spans.
    pub spans: i64,
    /// Resource samples.
    pub snapshots: i64,
}

/// Why a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The source could not be opened, or the copy could not be read back.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The copy could not be created.
    #[error("cannot create {path}: {source}")]
    Create {
        /// The copy's path.
        path: String,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// Copying failed.
    #[error("backup failed: {0}")]
    Copy(rusqlite::Error),
    /// The copy could not be checked.
    #[error("cannot check the copy: {0}")]
    Check(rusqlite::Error),
    /// The copy is not sound.
    #[error("the copy {0}")]
    Unsound(String),
}

/// Copies the database at `source` to a new file `to`, then checks the copy ([`check`]).
pub fn copy(source: &Path, to: &Path) -> Result<Counts, BackupError> {
    let source = open_read_only(source)?;
    let mut destination = Connection::open(to).map_err(|source| BackupError::Create {
        path: to.display().to_string(),
        source,
    })?;
    {
        let backup = Backup::new(&source, &mut destination).map_err(BackupError::Copy)?;
        // Every page in one step: one consistent snapshot, no restart when the source changes.
        loop {
            match backup.step(-1).map_err(BackupError::Copy)? {
                StepResult::Done => break,
                // Busy or locked: another connection holds a lock for a moment; try again.
                _ => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }
    drop(destination);
    check(to)
}

/// The copy is a sound runlens database: `integrity_check` passes, and every span's run
/// is in it; what it holds.
pub fn check(path: &Path) -> Result<Counts, BackupError> {
    let conn = open_read_only(path)?;
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(BackupError::Check)?;
    if integrity != "ok" {
        return Err(BackupError::Unsound(format!(
            "fails integrity_check: {integrity}"
        )));
    }
    let count = |sql: &str| -> Result<i64, BackupError> {
        conn.query_row(sql, [], |r| r.get(0))
            .map_err(BackupError::Check)
    };
    let orphans =
        count("SELECT count(*) FROM spans WHERE run_id NOT IN (SELECT run_id FROM runs)")?;
    if orphans > 0 {
        return Err(BackupError::Unsound(format!(
            "has {orphans} span(s) without their run"
        )));
    }
    Ok(Counts {
        runs: count("SELECT count(*) FROM runs")?,
        spans: count("SELECT count(*) FROM spans")?,
        snapshots: count("SELECT count(*) FROM snapshots")?,
    })
}
