//! `runlens report`.

use crate::cli::{ReportArgs, ReportBy, ReportFormat};
use crate::exit::{FAILURE, Failure, USAGE};
use crate::report::{self, Options};
use crate::store;

/// What was built: one report, or one per group.
enum Built {
    One(Box<report::Report>),
    Grouped(report::Grouped),
}

/// Builds the report and writes it in the chosen format.
pub fn run(args: ReportArgs) -> Result<(), Failure> {
    let (since_ns, until_ns) = super::time_window(args.since, args.until)?;
    let options = Options {
        since_ns,
        until_ns,
        all_ids: args.all_ids,
        run_id: args.run.clone(),
        name: args.name.clone(),
        oom_threshold_bytes: args.oom_threshold_mib.saturating_mul(1 << 20),
        group: None,
    };
    let by = args.by.map(|by| match by {
        ReportBy::Client => report::GroupBy::Client,
        ReportBy::Source => report::GroupBy::Source,
    });
    let built = match &args.from {
        Some(url) => from_files(url, by, &options)?,
        None => from_database(&args.db, by, &options)?,
    };
    let encode = |json: Result<String, serde_json::Error>| {
        json.map_err(|e| Failure::new(FAILURE, format!("cannot encode JSON: {e}")))
    };
    let text = match (built, args.format) {
        (Built::One(r), ReportFormat::Table) => report::table::render(&r),
        (Built::One(r), ReportFormat::Json) => encode(serde_json::to_string_pretty(&r))?,
        (Built::One(r), ReportFormat::Html) => report::html::render(&r),
        (Built::Grouped(g), ReportFormat::Table) => report::table::render_grouped(&g),
        (Built::Grouped(g), ReportFormat::Json) => encode(serde_json::to_string_pretty(&g))?,
        (Built::Grouped(g), ReportFormat::Html) => report::html::render_grouped(&g),
    };
    write_out(&args, &text)
}

fn read_failed(e: report::Error) -> Failure {
    Failure::new(FAILURE, e.to_string())
}

/// The report over a database file.
fn from_database(
    db: &std::path::Path,
    by: Option<report::GroupBy>,
    options: &Options,
) -> Result<Built, Failure> {
    let conn = store::open_read_only(db)?;
    Ok(match by {
        Some(by) => Built::Grouped(report::build_grouped(&conn, options, by).map_err(read_failed)?),
        None => Built::One(Box::new(
            report::build(&conn, options).map_err(read_failed)?,
        )),
    })
}

/// The report over Parquet files: read straight from them, or, per agent (which needs
/// every run's client first) and for files whose snapshots are out of order, through a
/// scratch database.
fn from_files(url: &str, by: Option<report::GroupBy>, options: &Options) -> Result<Built, Failure> {
    let window = (options.since_ns, options.until_ns);
    if by == Some(report::GroupBy::Client) {
        let (_scratch, db) = read_files(url, window)?;
        return from_database(&db, by, options);
    }
    let location =
        runlens_fleet::Location::open(url).map_err(|e| Failure::new(USAGE, e.to_string()))?;
    let files = runlens_fleet::history::FleetFiles::list(location, days(window))
        .map_err(|e| Failure::new(FAILURE, e.to_string()))?;
    if files.files() == 0 {
        return Err(no_files(url));
    }
    let started = std::time::Instant::now();
    match from_files_directly(&files, by, options) {
        Ok(built) => {
            eprintln!(
                "read {} files ({:.1} MiB) of {} pods from {url} in {:.1} s",
                files.files(),
                files.bytes() as f64 / 1048576.0,
                files.sources().len(),
                started.elapsed().as_secs_f64()
            );
            Ok(built)
        }
        Err(ReadError::Files(runlens_fleet::FleetError::Order(why))) => {
            eprintln!("runlens: {why}; reading them through a scratch database instead");
            let (_scratch, db) = read_files(url, window)?;
            from_database(&db, by, options)
        }
        Err(ReadError::Files(e)) => Err(Failure::new(FAILURE, e.to_string())),
        Err(ReadError::Report(e)) => Err(read_failed(e)),
    }
}

/// Why reading files straight failed.
enum ReadError {
    Files(runlens_fleet::FleetError),
    Report(report::Error),
}

fn from_files_directly(
    files: &runlens_fleet::history::FleetFiles,
    by: Option<report::GroupBy>,
    options: &Options,
) -> Result<Built, ReadError> {
    let one = |source: Option<&str>| -> Result<report::Report, ReadError> {
        let scope = runlens_fleet::history::Scope {
            window: (options.since_ns, options.until_ns),
            run_id: options.run_id.as_deref(),
            name: options.name.as_deref(),
            source,
            threshold: options.oom_threshold_bytes,
        };
        let (data, runs) = files.load(&scope).map_err(ReadError::Files)?;
        report::build_from(data, &runs, options).map_err(ReadError::Report)
    };
    if by.is_none() {
        return Ok(Built::One(Box::new(one(None)?)));
    }
    // Per pod, named as a merged database names its sources.
    let mut groups = Vec::new();
    for (k, source) in files.sources().iter().enumerate() {
        let report = one(Some(source))?;
        if report.runs_analyzed == 0 && report.spans_analyzed == 0 {
            continue;
        }
        groups.push(report::GroupReport {
            key: Some((k + 1).to_string()),
            label: format!("source {source}"),
            report,
        });
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g.report.spans_analyzed));
    Ok(Built::Grouped(report::Grouped {
        by: report::GroupBy::Source,
        groups,
    }))
}

/// The UTC days a window meets (`None`: every day).
fn days((since_ns, until_ns): (i64, i64)) -> Option<(i64, i64)> {
    (since_ns > 0 || until_ns < i64::MAX).then(|| {
        (
            since_ns.div_euclid(DAY_NS),
            (until_ns - 1).div_euclid(DAY_NS),
        )
    })
}

fn no_files(url: &str) -> Failure {
    Failure::new(
        crate::exit::NO_INPUT,
        format!(
            "no runlens Parquet files under {url}: write them with `runlens export parquet \
             --out {url}` or `runlens serve --parquet-export {url}`"
        ),
    )
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
    let dir = tempfile::tempdir()
        .map_err(|e| Failure::new(FAILURE, format!("cannot make a scratch directory: {e}")))?;
    let path = dir.path().join("fleet.db");
    let started = std::time::Instant::now();
    let read = runlens_fleet::read_into(&location, days((since_ns, until_ns)), &path)
        .map_err(|e| Failure::new(FAILURE, e.to_string()))?;
    if read.files == 0 {
        return Err(no_files(url));
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
