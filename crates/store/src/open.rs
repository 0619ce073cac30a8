//! Opening a database: validation, pragmas, migrations.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::{Result, StoreError};

/// `PRAGMA application_id` of a runlens database: "RLNS".
pub const APPLICATION_ID: i32 = 0x524C_4E53;

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i32 = 11;

/// Forward-only migrations: `MIGRATIONS[v]` takes a database from version `v` to `v + 1`.
/// A new database runs them all; an older one the ones it lacks.
const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("migrate_002.sql"),
    include_str!("migrate_003.sql"),
    include_str!("migrate_004.sql"),
    include_str!("migrate_005.sql"),
    include_str!("migrate_006.sql"),
    include_str!("migrate_007.sql"),
    include_str!("migrate_008.sql"),
    include_str!("migrate_009.sql"),
    include_str!("migrate_010.sql"),
    include_str!("migrate_011.sql"),
];

/// Opens (creating if needed) the database the sidecar writes to, and brings its schema
/// up to date. Fails with a clear error on a file that is not a runlens database.
/// `max_bytes` caps the database's size (SQLite `max_page_count`): once it is reached,
/// writes fail as "database or disk is full", which the writer treats like a full disk.
pub fn open_for_writing(
    path: &Path,
    sync_every_commit: bool,
    max_bytes: Option<u64>,
) -> Result<Connection> {
    refuse_directory(path)?;
    let conn = Connection::open(path).map_err(|source| StoreError::Corrupt {
        path: path.to_owned(),
        source,
    })?;
    let version = check_identity(&conn, path)?;
    if version == 0 {
        // Only possible before the first table exists: retention's deletes then give
        // pages back to the file system (`PRAGMA incremental_vacuum`), not only to
        // SQLite's free list. Older databases reuse their freed pages instead.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
            .map_err(|source| StoreError::Corrupt {
                path: path.to_owned(),
                source,
            })?;
    }
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(|source| StoreError::Corrupt {
            path: path.to_owned(),
            source,
        })?;
    // NORMAL in WAL mode: a commit survives a process crash; only an OS crash or power
    // loss can take the last commits. FULL syncs every commit (--durability full).
    conn.pragma_update(
        None,
        "synchronous",
        if sync_every_commit { "FULL" } else { "NORMAL" },
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // References hold by construction (a snapshot is queued before any row that names it,
    // and the registry checks runs and spans before a row is queued), so checking them
    // again costs three index lookups per span for nothing. Off, whatever the build's
    // default; the schema still declares them for readers and tools.
    conn.pragma_update(None, "foreign_keys", false)?;
    // 16 MiB of page cache for the one writer: index pages of large tables stay in memory.
    conn.pragma_update(None, "cache_size", -16 * 1024)?;
    // A large transaction (a 16 MiB export) grows the WAL past its usual ~8 MiB; once a
    // checkpoint has copied it, the file is cut back to this rather than kept at its peak.
    conn.pragma_update(None, "journal_size_limit", 32 * 1024 * 1024)?;
    migrate(&conn, version)?;
    if let Some(max) = max_bytes {
        let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
        let pages = max.div_ceil(u64::try_from(page_size).unwrap_or(4096).max(1));
        conn.pragma_update(
            None,
            "max_page_count",
            i64::try_from(pages).unwrap_or(i64::MAX),
        )?;
    }
    Ok(conn)
}

/// Opens an existing runlens database for reading only; `PRAGMA query_only` guards
/// against any statement that would write.
pub fn open_read_only(path: &Path) -> Result<Connection> {
    refuse_directory(path)?;
    if !path.exists() {
        return Err(StoreError::Missing {
            path: path.to_owned(),
        });
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Corrupt {
        path: path.to_owned(),
        source,
    })?;
    let version = check_identity(&conn, path)?;
    if version == 0 {
        return Err(StoreError::Missing {
            path: path.to_owned(),
        });
    }
    conn.pragma_update(None, "query_only", true)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(conn)
}

/// SQLite reports a directory as a "disk I/O error", which sends people looking for
/// damage that is not there; say what it is instead.
fn refuse_directory(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(StoreError::Directory {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Checks that the file is empty or a runlens database; returns its schema version.
fn check_identity(conn: &Connection, path: &Path) -> Result<i32> {
    let corrupt = |source| StoreError::Corrupt {
        path: path.to_owned(),
        source,
    };
    // The first real read is where SQLite notices a file that is not a database.
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(corrupt)?;
    let version: i32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(corrupt)?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(corrupt)?;
    if app_id == APPLICATION_ID {
        if version > SCHEMA_VERSION {
            return Err(StoreError::TooNew {
                path: path.to_owned(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        return Ok(version);
    }
    if app_id == 0 && version == 0 && objects == 0 {
        return Ok(0); // a new, empty file: ours to initialise
    }
    Err(StoreError::NotRunlens {
        path: path.to_owned(),
        found: app_id,
    })
}

fn migrate(conn: &Connection, from: i32) -> Result<()> {
    for version in from..SCHEMA_VERSION {
        let Some(sql) = usize::try_from(version)
            .ok()
            .and_then(|v| MIGRATIONS.get(v))
        else {
            break;
        };
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
        tracing::debug!(
            from = version,
            to = version + 1,
            "database schema migrated a step"
        );
    }
    if from == 0 {
        tracing::info!(schema = SCHEMA_VERSION, "database created");
    } else if from < SCHEMA_VERSION {
        tracing::info!(from, to = SCHEMA_VERSION, "database schema migrated");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_file_gets_schema_and_identity() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.db");
        let conn = open_for_writing(&path, false, None).unwrap();
        let v: i32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        for table in ["runs", "spans", "events", "snapshots", "gpu_samples"] {
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |_| Ok(()))
                .unwrap();
        }
        drop(conn);
        // Reopening an up-to-date database is a no-op.
        open_for_writing(&path, false, None).unwrap();
        open_read_only(&path).unwrap();
    }

    #[test]
    fn a_directory_is_named_as_one() {
        let dir = tempfile::tempdir().unwrap();
        for err in [
            open_read_only(dir.path()).err(),
            open_for_writing(dir.path(), false, None).err(),
        ] {
            let text = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(
                text.contains("is a directory, not a database file"),
                "{text}"
            );
            assert!(text.contains("runlens.db"), "{text}");
        }
    }

    #[test]
    fn the_resource_views_carry_the_span_and_run_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_for_writing(&dir.path().join("v.db"), false, None).unwrap();
        conn.execute_batch(
            "INSERT INTO runs (run_id, name, status, attributes, started_at_ns)
                 VALUES ('r', 'n', 'ok', '{\"model\":\"m\"}', 1);
             INSERT INTO spans (span_id, run_id, name, status, attributes, started_at_ns)
                 VALUES ('s', 'r', 'tool', 'ok', '{\"tool\":\"grep\"}', 2);",
        )
        .unwrap();
        let span: String = conn
            .query_row("SELECT attributes FROM span_resources", [], |r| r.get(0))
            .unwrap();
        assert_eq!(span, r#"{"tool":"grep"}"#);
        let run: String = conn
            .query_row("SELECT attributes FROM run_resources", [], |r| r.get(0))
            .unwrap();
        assert_eq!(run, r#"{"model":"m"}"#);
    }

    #[test]
    fn an_older_database_is_migrated_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        {
            // A database as the first schema left it, with a run in it.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "application_id", APPLICATION_ID)
                .unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO runs (run_id, name, status, started_at_ns) VALUES ('r', 'n', 'ok', 1)",
                [],
            )
            .unwrap();
        }
        let conn = open_for_writing(&path, false, None).unwrap();
        let v: i32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let runs: i64 = conn
            .query_row("SELECT count(*) FROM runs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(runs, 1);
        conn.query_row("SELECT count(*) FROM process_gpu_samples", [], |_| Ok(()))
            .unwrap();
    }

    #[test]
    fn a_version_2_database_learns_how_its_runs_ended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.pragma_update(None, "application_id", APPLICATION_ID)
                .unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute_batch(
                "INSERT INTO runs (run_id, name, status, error, started_at_ns) VALUES
                 ('open', 'n', 'running', NULL, 1),
                 ('fine', 'n', 'ok', NULL, 1),
                 ('own', 'n', 'failed', 'the agent process (pid 7) had a bad day', 1),
                 ('exit', 'n', 'failed', 'the agent process (pid 7) exited without ending this run', 1),
                 ('away', 'n', 'failed', 'the agent''s session closed and did not come back within 10m; the run was never ended', 1);",
            )
            .unwrap();
        }
        let conn = open_for_writing(&path, false, None).unwrap();
        let ended_by = |run: &str| -> Option<String> {
            conn.query_row("SELECT ended_by FROM runs WHERE run_id = ?1", [run], |r| {
                r.get(0)
            })
            .unwrap()
        };
        assert_eq!(ended_by("open"), None);
        assert_eq!(ended_by("fine").as_deref(), Some("client"));
        assert_eq!(ended_by("own").as_deref(), Some("client"));
        assert_eq!(ended_by("exit").as_deref(), Some("process_exit"));
        assert_eq!(ended_by("away").as_deref(), Some("session_timeout"));
    }

    #[test]
    fn foreign_sqlite_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("other.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let err = open_for_writing(&path, false, None).unwrap_err();
        assert!(matches!(err, StoreError::NotRunlens { .. }), "{err}");
        assert!(err.to_string().contains("not a runlens one"));
    }

    #[test]
    fn garbage_file_is_reported_as_unusable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.db");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let err = open_for_writing(&path, false, None).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("not a usable SQLite database"));
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("future.db");
        open_for_writing(&path, false, None)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = open_for_writing(&path, false, None).unwrap_err();
        assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
    }

    #[test]
    fn read_only_open_of_missing_file_says_how_to_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = open_read_only(&dir.path().join("nope.db")).unwrap_err();
        assert!(err.to_string().contains("runlens serve --db"), "{err}");
    }
}
