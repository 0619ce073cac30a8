//! `runlens report`.

use crate::cli::{ReportArgs, ReportBy, ReportFormat};
use crate::exit::{FAILURE, Failure, USAGE};
use crate::report::{self, Options};
use crate::store;

/// Builds the report and writes it in the chosen format.
pub fn run(args: ReportArgs) -> Result<(), Failure> {
    let (since_ns, until_ns) = super::time_window(args.since, args.until)?;
    // From Parquet files: read into a scratch database first, then the same report.
    let scratch = match &args.from {
        Some(url) => Some(read_files(url, (since_ns, until_ns))?),
        None => None,
    };
    let db = match &scratch {
        Some((_, path)) => path.as_path(),
        None => args.db.as_path(),
    };
    let conn = store::open_read_only(db)?;
    let options = Options {
        since_ns,
        until_ns,
        all_ids: args.all_ids,
        run_id: args.run.clone(),
        name: args.name.clone(),
        oom_threshold_bytes: args.oom_threshold_mib.saturating_mul(1 << 20),
        group: None,
    };
    let read_failed = |e: report::Error| Failure::new(FAILURE, e.to_string());
    if let Some(by) = args.by {
        let by = match by {
            ReportBy::Client => report::GroupBy::Client,
            ReportBy::Source => report::GroupBy::Source,
        };
        let grouped = report::build_grouped(&conn, &options, by).map_err(read_failed)?;
        let text = match args.format {
            ReportFormat::Table => report::table::render_grouped(&grouped),
            ReportFormat::Json => serde_json::to_string_pretty(&grouped)
                .map_err(|e| Failure::new(FAILURE, format!("cannot encode JSON: {e}")))?,
            ReportFormat::Html => report::html::render_grouped(&grouped),
        };
        return write_out(&args, &text);
    }
    let report = report::build(&conn, &options).map_err(read_failed)?;
    let text = match args.format {
        ReportFormat::Table => report::table::render(&report),
        ReportFormat::Json => serde_json::to_string_pretty(&report)
            .map_err(|e| Failure::new(FAILURE, format!("cannot encode JSON: {e}")))?,
        ReportFormat::Html => report::html::render(&report),
    };
    write_out(&args, &text)
}

/// One UTC day, ns.
const DAY_NS: i64 = 86_400_000_000_000;

/// Reads the Parquet files at `url` whose date partitions meet the window into a scratch
/// database; returns it (deleted when dropped) and its path.
fn read_files(
    url: &str,
    (since_ns, until_ns): (i64, i64),
) -> Result<(tempfile::TempDir, std::path::PathBuf), Failure> {
    let location =
        runlens_fleet::Location::open(url).map_err(|e| Failure::new(USAGE, e.to_string()))?;
    let days = (since_ns > 0 || until_ns < i64::MAX).then(|| {
        (
            since_ns.div_euclid(DAY_NS),
            (until_ns - 1).div_euclid(DAY_NS),
        )
    });
    let dir = tempfile::tempdir()
        .map_err(|e| Failure::new(FAILURE, format!("cannot make a scratch directory: {e}")))?;
    let path = dir.path().join("fleet.db");
    let started = std::time::Instant::now();
    let read = runlens_fleet::read_into(&location, days, &path)
        .map_err(|e| Failure::new(FAILURE, e.to_string()))?;
    if read.files == 0 {
        return Err(Failure::new(
            crate::exit::NO_INPUT,
            format!(
                "no runlens Parquet files under {url}: write them with `runlens export parquet \
                 --out {url}` or `runlens serve --parquet-export {url}`"
            ),
        ));
    }
    if read.repeated > 0 {
        eprintln!(
            "runlens: {} rows under {url} repeat rows already read (the same runs, spans or \
             samples in two files: one database exported twice, under two sources or \
             overlapping windows); each is counted once",
            read.repeated
        );
    }
    eprintln!(
        "read {} files ({:.1} MiB, {} rows) of {} pods from {url} in {:.1} s",
        read.files,
        read.bytes as f64 / 1048576.0,
        read.rows,
        read.sources.len(),
        started.elapsed().as_secs_f64()
    );
    Ok((dir, path))
}

/// To `--out`, or standard output.
fn write_out(args: &ReportArgs, text: &str) -> Result<(), Failure> {
    match &args.out {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| Failure::new(FAILURE, format!("cannot write {}: {e}", path.display())))?,
        None => crate::format::emit(text.trim_end())?,
    }
    Ok(())
}
