//! runlens's SQLite store: schema, opening and validating a database, the single writer,
//! reads for the history rpcs and live views, retention and merge; and runlens's own row
//! types ([`domain`]). The only crate of the workspace that depends on rusqlite: the
//! sidecar's front doors, report and commands go through this crate's API (the layering is
//! checked by Cargo).
//!
//! The database is a plain SQLite file in WAL mode: readers (`runlens query`, `sqlite3`,
//! reports) never block the writer. Schema changes are forward-only migrations keyed on
//! `PRAGMA user_version`; `PRAGMA application_id` marks the file as runlens's own.

pub mod activity;
pub mod backup;
pub mod columnar;
pub mod domain;
pub mod merge;
mod open;
pub mod query;
pub mod read;
pub mod retention;
pub mod scan;
mod sql_types;
pub mod synthetic;
pub use sql_types::unsigned;
mod writer;

pub use open::{open_for_writing, open_read_only};
/// An open database connection: the writer's (from [`open_for_writing`]) or a reader's.
pub use rusqlite::Connection;
pub use writer::FinishedRun;
pub use writer::SAMPLE_LINGER;
pub use writer::{
    Ack, CommitObserver, EventRow, Finished, FinishedSpan, QueueError, RunEnd, RunStart, SampleRef,
    SessionProgress, SpanEnd, SpanStart, StoredSnapshot, TraceClientRow, TraceEventRow, TraceRows,
    TraceSpanRow, WriteOp, Writer, WriterHandle,
};

use std::path::PathBuf;

/// Everything that can go wrong opening or writing the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file exists but is another application's SQLite database.
    #[error(
        "{path} is a SQLite database but not a runlens one (application_id {found:#x}); \
         pass --db with a new file name or an existing runlens database"
    )]
    NotRunlens {
        /// The file.
        path: PathBuf,
        /// Its application id.
        found: i32,
    },
    /// The file is not a SQLite database at all, or is damaged.
    #[error(
        "{path} is not a usable SQLite database ({source}); if it is a damaged runlens \
         database, move it aside and start again, or try `sqlite3 {path} .recover`"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        source: rusqlite::Error,
    },
    /// The database was written by a newer runlens.
    #[error(
        "{path} has schema version {found}, newer than this runlens supports ({supported}); \
         upgrade runlens"
    )]
    TooNew {
        /// The file.
        path: PathBuf,
        /// Its schema version.
        found: i32,
        /// The newest version this build knows.
        supported: i32,
    },
    /// `--db` names a directory, not a database file.
    #[error(
        "{path} is a directory, not a database file: pass --db with a file name, \
         e.g. --db {}", path.join("runlens.db").display()
    )]
    Directory {
        /// The path.
        path: PathBuf,
    },
    /// There is no database at the path (for read-only commands).
    #[error(
        "no runlens database at {path}: start `runlens serve --db {path}` first, or pass \
         --db (or set RUNLENS_DB) to the one `serve` writes"
    )]
    Missing {
        /// The path.
        path: PathBuf,
    },
    /// Any other SQLite failure.
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A temporary file of a read (in TMPDIR) failed.
    #[error("cannot use a temporary file (in TMPDIR): {0}")]
    TempFile(#[from] std::io::Error),
}

/// A failed run counts as likely OOM when GPU memory was short at its end or within this
/// long before it (its end sample may come after the memory was freed), ns. Shared by the
/// live view (`activity`) and the report.
pub const OOM_LOOKBACK_NS: i64 = 5_000_000_000;

/// GPU free memory below this many MiB is pressure ("OOM soon") unless asked otherwise:
/// `runlens report`, `runlens top` and `WatchActivity` share it.
pub const DEFAULT_OOM_THRESHOLD_MIB: u64 = 500;

#[cfg(test)]
mod test_fixtures;

/// Result alias for store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
