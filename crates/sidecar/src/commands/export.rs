//! `runlens export parquet`: the history as Parquet files (`runlens-fleet`), once.

use std::time::Instant;

use runlens_fleet::{Location, SourceNames, TableExport};

use crate::cli::{ExportCommand, ParquetExportArgs};
use crate::exit::{FAILURE, Failure, USAGE};
use crate::format::outln;
use crate::store::columnar::{Selection, Table};

/// Runs `runlens export …`.
pub fn run(command: ExportCommand) -> Result<(), Failure> {
    match command {
        ExportCommand::Parquet(args) => parquet(args),
    }
}

fn parquet(args: ParquetExportArgs) -> Result<(), Failure> {
    let (since_ns, until_ns) = super::time_window(args.since, args.until)?;
    let conn = crate::store::open_read_only(&args.db)?;
    let location = Location::open(&args.out).map_err(|e| Failure::new(USAGE, e.to_string()))?;
    let sources = SourceNames::read(&conn, args.source.as_deref()).map_err(failed)?;
    // The whole history is `part-all`; a window is named by its bounds, so that the same
    // window exported again replaces its files.
    let part = if args.since.is_none() && args.until.is_none() {
        "all".to_owned()
    } else {
        format!("{since_ns}-{until_ns}")
    };
    let jobs: Vec<TableExport> = Table::ALL
        .into_iter()
        .map(|table| TableExport {
            table,
            selection: Selection::Window { since_ns, until_ns },
            part: if table == Table::Clients {
                "clients".to_owned()
            } else {
                part.clone()
            },
        })
        .collect();
    let started = Instant::now();
    let written = runlens_fleet::export(&conn, &location, &jobs, &sources).map_err(failed)?;
    for (table, (rows, files, bytes)) in &written.tables {
        if *files > 0 {
            outln!(
                "{table:<20} {rows:>10} rows {files:>4} files {:>10}",
                mib(*bytes)
            )?;
        }
    }
    let db_bytes = std::fs::metadata(&args.db).map(|m| m.len()).unwrap_or(0);
    outln!(
        "exported {} rows in {} files, {} (the database: {}) to {} in {:.1} s",
        written.rows(),
        written.files(),
        mib(written.bytes()),
        mib(db_bytes),
        args.out,
        started.elapsed().as_secs_f64()
    )?;
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

fn failed(e: runlens_fleet::FleetError) -> Failure {
    Failure::new(FAILURE, e.to_string())
}
