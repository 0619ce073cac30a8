//! `runlens report`.

use crate::cli::{ReportArgs, ReportBy, ReportFormat, Until};
use crate::exit::{FAILURE, Failure, USAGE};
use crate::report::{self, Options};
use crate::store;

/// Builds the report and writes it in the chosen format.
pub fn run(args: ReportArgs) -> Result<(), Failure> {
    let conn = store::open_read_only(&args.db)?;
    let now = probe_core::unix_now_ns();
    let ago = |d: std::time::Duration| now - i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let since_ns = args.since.map_or(0, ago);
    let until_ns = match args.until {
        None => i64::MAX,
        Some(Until::Ago(d)) => ago(d),
        Some(Until::At(ns)) => ns,
    };
    if until_ns <= since_ns {
        return Err(Failure::new(
            USAGE,
            "--until is not after --since: the window is empty; widen --since or move --until",
        ));
    }
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

/// To `--out`, or standard output.
fn write_out(args: &ReportArgs, text: &str) -> Result<(), Failure> {
    match &args.out {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| Failure::new(FAILURE, format!("cannot write {}: {e}", path.display())))?,
        None => crate::format::emit(text.trim_end())?,
    }
    Ok(())
}
