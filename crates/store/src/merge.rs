//! Where a database came from, and databases of many pods merged into one.
//!
//! Each `runlens serve` start records its resource (pod, namespace, node: what
//! `OTEL_RESOURCE_ATTRIBUTES` says) in `sidecar_starts`. `runlens merge` copies whole
//! databases into one: each source gets a row in `merge_sources` and its rows carry that
//! `source_id`; snapshot ids (a per-database sequence) are shifted past those already
//! there, so every id stays unique and every reference (spans to snapshots, samples to
//! snapshots) still points at the same sample. Text ids (runs, spans, clients) are random or
//! trace ids and are kept; a clash means the same data twice, and the merge of that source
//! is refused whole.

use std::path::Path;

use rusqlite::{Connection, params};

use super::open::SCHEMA_VERSION;

/// Records this sidecar's start and resource (a JSON object).
pub fn record_sidecar_start(
    conn: &Connection,
    started_at_ns: i64,
    version: &str,
    resource_json: &str,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO sidecar_starts (started_at_ns, version, resource) VALUES (?1, ?2, ?3)",
        params![started_at_ns, version, resource_json],
    )?;
    Ok(())
}

/// Tables copied by a merge, parents first; each with the columns that hold snapshot ids.
/// The export outbox and cursor are one sidecar's delivery state, not history: not copied.
const TABLES: &[(&str, &[&str])] = &[
    ("snapshots", &["snapshot_id"]),
    ("gpu_samples", &["snapshot_id"]),
    ("mig_samples", &["snapshot_id"]),
    ("gpu_processes", &["snapshot_id"]),
    ("process_samples", &["snapshot_id"]),
    ("process_gpu_samples", &["snapshot_id"]),
    ("clients", &[]),
    ("runs", &["start_snapshot_id", "end_snapshot_id"]),
    ("spans", &["start_snapshot_id", "end_snapshot_id"]),
    ("events", &["snapshot_id"]),
    ("sidecar_starts", &[]),
];

/// What a merge copied from one source.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Merged {
    /// Its `merge_sources.source_id`.
    pub source_id: i64,
    /// Runs, spans and snapshots copied.
    pub runs: i64,
    /// Spans copied.
    pub spans: i64,
    /// Snapshots copied.
    pub snapshots: i64,
    /// The resource its latest sidecar start recorded (JSON), if any.
    pub resource: Option<String>,
}

/// Why a source was not merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// The source is at another schema version than this build writes.
    #[error(
        "{path} is at schema version {found}, this runlens writes {expected}: every input \
         must be at the same version (open an older one once with `runlens serve --db {path}` \
         from this runlens, which migrates it; a newer one needs a newer runlens)"
    )]
    Version {
        /// The source.
        path: String,
        /// Its version.
        found: i32,
        /// This build's.
        expected: i32,
    },
    /// The source is itself a merged database.
    #[error("{path} is itself a merged database: merge the pods' own databases instead")]
    AlreadyMerged {
        /// The source.
        path: String,
    },
    /// The source's rows clash with rows already in the output.
    #[error(
        "{path} has {what} already in the output ({detail}): the same database twice? \
         nothing of it was merged"
    )]
    Clash {
        /// The source.
        path: String,
        /// Which rows.
        what: &'static str,
        /// SQLite's words.
        detail: String,
    },
    /// SQLite failed.
    #[error("merging {path}: {source}")]
    Sql {
        /// The source.
        path: String,
        /// The error.
        source: rusqlite::Error,
    },
}

/// Merges the database at `source` into `out` (open for writing, at this build's schema)
/// in one transaction: all of it, or nothing.
pub fn merge_into(out: &mut Connection, source: &Path, now_ns: i64) -> Result<Merged, MergeError> {
    let path = source.display().to_string();
    let sql = |source: rusqlite::Error| MergeError::Sql {
        path: path.clone(),
        source,
    };
    out.execute("ATTACH DATABASE ?1 AS src", [&path])
        .map_err(sql)?;
    let result = copy(out, &path, now_ns);
    out.execute("DETACH DATABASE src", []).map_err(sql)?;
    result
}

fn copy(out: &mut Connection, path: &str, now_ns: i64) -> Result<Merged, MergeError> {
    let sql = |source: rusqlite::Error| MergeError::Sql {
        path: path.to_owned(),
        source,
    };
    let found: i32 = out
        .query_row("PRAGMA src.user_version", [], |r| r.get(0))
        .map_err(sql)?;
    if found != SCHEMA_VERSION {
        return Err(MergeError::Version {
            path: path.to_owned(),
            found,
            expected: SCHEMA_VERSION,
        });
    }
    let merged_before: i64 = out
        .query_row("SELECT count(*) FROM src.merge_sources", [], |r| r.get(0))
        .map_err(sql)?;
    if merged_before > 0 {
        return Err(MergeError::AlreadyMerged {
            path: path.to_owned(),
        });
    }
    let tx = out.transaction().map_err(sql)?;
    let resource: Option<String> = tx
        .query_row(
            "SELECT resource FROM src.sidecar_starts ORDER BY started_at_ns DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })
        .map_err(sql)?;
    tx.execute(
        "INSERT INTO merge_sources (path, resource, merged_at_ns) VALUES (?1, ?2, ?3)",
        params![path, resource, now_ns],
    )
    .map_err(sql)?;
    let source_id = tx.last_insert_rowid();
    let shift: i64 = tx
        .query_row(
            "SELECT coalesce(max(snapshot_id), 0) FROM main.snapshots",
            [],
            |r| r.get(0),
        )
        .map_err(sql)?;
    for (table, snapshot_columns) in TABLES {
        let statement =
            copy_statement(&tx, table, snapshot_columns, shift, source_id).map_err(sql)?;
        tx.execute(&statement, []).map_err(|e| match e {
            rusqlite::Error::SqliteFailure(f, detail)
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                MergeError::Clash {
                    path: path.to_owned(),
                    what: table,
                    detail: detail.unwrap_or_default(),
                }
            }
            e => sql(e),
        })?;
    }
    let count = |table: &str| -> rusqlite::Result<i64> {
        tx.query_row(
            &format!("SELECT count(*) FROM main.{table} WHERE source_id = ?1"),
            [source_id],
            |r| r.get(0),
        )
    };
    let merged = Merged {
        source_id,
        runs: count("runs").map_err(sql)?,
        spans: count("spans").map_err(sql)?,
        snapshots: count("snapshots").map_err(sql)?,
        resource,
    };
    tx.commit().map_err(sql)?;
    Ok(merged)
}

/// `INSERT INTO main.t (cols) SELECT … FROM src.t` with snapshot ids shifted by `shift`
/// and `source_id` set; columns named from the output's schema (the same version). The
/// numbers are ours, written into the SQL as literals.
///
/// Client ids are not always random (an OTLP sender is `otlp/<service.name>/<pid>`, and pid
/// 1 is common in containers): one already in the output from another source gets
/// `@<source_id>` appended, in `clients` and in its runs alike.
fn copy_statement(
    conn: &Connection,
    table: &str,
    snapshot_columns: &[&str],
    shift: i64,
    source_id: i64,
) -> rusqlite::Result<String> {
    let mut stmt = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?;
    let columns: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut names = Vec::with_capacity(columns.len());
    let mut values = Vec::with_capacity(columns.len());
    for column in &columns {
        let c = column.as_str();
        let value = match (table, c) {
            // events' own id is a rowid: the output gives new ones.
            ("events", "event_id") => continue,
            (_, "source_id") => source_id.to_string(),
            ("clients" | "runs", "client_id") => format!(
                "CASE WHEN EXISTS (SELECT 1 FROM main.clients m WHERE m.client_id = \
                 src.{table}.client_id AND m.source_id IS NOT {source_id}) \
                 THEN client_id || '@{source_id}' ELSE client_id END"
            ),
            _ if snapshot_columns.contains(&c) => format!("{c} + {shift}"),
            _ => c.to_owned(),
        };
        names.push(c);
        values.push(value);
    }
    Ok(format!(
        "INSERT INTO main.{table} ({}) SELECT {} FROM src.{table}",
        names.join(", "),
        values.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::open_for_writing;

    /// A database with one client and one run of it, as an OTLP sender with pid 1 leaves.
    fn pod(dir: &Path, name: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        let conn = open_for_writing(&path, false, None).unwrap();
        conn.execute_batch(&format!(
            "INSERT INTO clients (client_id, committed_seq, last_seen_ns)
                 VALUES ('otlp/agent/1', 0, 1);
             INSERT INTO runs (run_id, name, status, client_id, started_at_ns)
                 VALUES ('run-{name}', 'task', 'ok', 'otlp/agent/1', 1);"
        ))
        .unwrap();
        path
    }

    #[test]
    fn a_client_id_already_there_from_another_source_is_renamed_with_its_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (pod(dir.path(), "a.db"), pod(dir.path(), "b.db"));
        let mut out = open_for_writing(&dir.path().join("fleet.db"), false, None).unwrap();
        assert_eq!(merge_into(&mut out, &a, 1).unwrap().runs, 1);
        let second = merge_into(&mut out, &b, 2).unwrap();
        let pairs: Vec<(String, String)> = out
            .prepare(
                "SELECT r.run_id, c.client_id FROM runs r JOIN clients c USING (client_id)
                      ORDER BY r.run_id",
            )
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            pairs,
            [
                ("run-a.db".to_owned(), "otlp/agent/1".to_owned()),
                (
                    "run-b.db".to_owned(),
                    format!("otlp/agent/1@{}", second.source_id)
                ),
            ]
        );
    }
}
