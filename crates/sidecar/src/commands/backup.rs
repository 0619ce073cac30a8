//! `runlens backup`: a consistent copy of a database, taken while `serve` writes to it.
//!
//! SQLite's online backup API, copying every page in one step: in WAL mode that step reads
//! one snapshot of the database (a read transaction never blocks the writer), so the copy
//! is consistent and the backup never restarts however fast the sidecar writes. The copy
//! goes to `OUT.partial` and is renamed to `OUT` only once it passes `integrity_check`.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use rusqlite::backup::{Backup, StepResult};

use crate::cli::BackupArgs;
use crate::exit::{FAILURE, Failure, USAGE};
use crate::format::outln;
use crate::store;

/// Copies `--db` to `--out` and checks the copy.
pub fn run(args: BackupArgs) -> Result<(), Failure> {
    if args.out.exists() {
        return Err(Failure::new(
            USAGE,
            format!(
                "{} exists; choose a new --out (a backup never overwrites a file)",
                args.out.display()
            ),
        ));
    }
    let started = std::time::Instant::now();
    let source = store::open_read_only(&args.db)?;
    let partial = partial_path(&args.out);
    let _ = std::fs::remove_file(&partial); // left by an interrupted backup
    let copied = copy(&source, &partial).and_then(|()| check(&partial));
    let counts = match copied {
        Ok(counts) => counts,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, &args.out).map_err(|e| {
        Failure::new(
            FAILURE,
            format!(
                "cannot rename {} to {}: {e}",
                partial.display(),
                args.out.display()
            ),
        )
    })?;
    let bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    outln!(
        "backed up {} to {} in {:.2} s: {:.1} MiB, {} runs, {} spans, {} snapshots; \
         integrity_check ok",
        args.db.display(),
        args.out.display(),
        started.elapsed().as_secs_f64(),
        bytes as f64 / (1 << 20) as f64,
        counts.runs,
        counts.spans,
        counts.snapshots
    )?;
    Ok(())
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

fn copy(source: &Connection, to: &Path) -> Result<(), Failure> {
    let fail = |e: rusqlite::Error| Failure::new(FAILURE, format!("backup failed: {e}"));
    let mut destination = Connection::open(to)
        .map_err(|e| Failure::new(FAILURE, format!("cannot create {}: {e}", to.display())))?;
    let backup = Backup::new(source, &mut destination).map_err(fail)?;
    // Every page in one step: one consistent snapshot, no restart when the source changes.
    loop {
        match backup.step(-1).map_err(fail)? {
            StepResult::Done => break,
            // Busy or locked: another connection holds a lock for a moment; try again.
            StepResult::More | StepResult::Busy | StepResult::Locked => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            _ => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
    Ok(())
}

/// What the copy holds.
struct Counts {
    runs: i64,
    spans: i64,
    snapshots: i64,
}

/// The copy is a sound runlens database: `integrity_check` passes, and every span's run
/// is in it.
fn check(path: &Path) -> Result<Counts, Failure> {
    let conn = store::open_read_only(path)?;
    let fail = |e: rusqlite::Error| Failure::new(FAILURE, format!("cannot check the copy: {e}"));
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(fail)?;
    if integrity != "ok" {
        return Err(Failure::new(
            FAILURE,
            format!("the copy fails integrity_check: {integrity}"),
        ));
    }
    let count =
        |sql: &str| -> Result<i64, Failure> { conn.query_row(sql, [], |r| r.get(0)).map_err(fail) };
    let orphans =
        count("SELECT count(*) FROM spans WHERE run_id NOT IN (SELECT run_id FROM runs)")?;
    if orphans > 0 {
        return Err(Failure::new(
            FAILURE,
            format!("the copy has {orphans} span(s) without their run"),
        ));
    }
    Ok(Counts {
        runs: count("SELECT count(*) FROM runs")?,
        spans: count("SELECT count(*) FROM spans")?,
        snapshots: count("SELECT count(*) FROM snapshots")?,
    })
}
