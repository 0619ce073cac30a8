//! `runlens bench report`: a synthetic history written straight into a runlens database
//! (with or without a planted effect), then `runlens report` timed on it.
//!
//! The history: one GPU (80 GiB) whose free memory wanders between ~100 MiB and ~40 GiB,
//! a snapshot every 100 ms, runs of `plan`, `llm_call` and `tool_call` spans. With the
//! planted effect, llm_call takes longer the less GPU memory is free, and a run that ends
//! with less than 500 MiB free fails with "CUDA out of memory". Without it, durations
//! and failures ignore resources and the GPU never drops below 2 GiB free.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::support::{sorted_in, status_bytes};
use crate::cli::{Effect, ReportBenchArgs};
use crate::exit::{FAILURE, Failure, USAGE};
use crate::format::outln;
use crate::report::stats::sorted_percentile;

use crate::store::synthetic;

const MIB: f64 = 1048576.0;

impl From<Effect> for synthetic::Effect {
    fn from(effect: Effect) -> Self {
        match effect {
            Effect::Planted => Self::Planted,
            Effect::None => Self::None,
        }
    }
}

/// Writes the synthetic history (`runlens_store::synthetic`) into a new database at `db`.
pub fn build_history(db: &std::path::Path, spans: u64, effect: Effect) -> Result<(), String> {
    synthetic::build_history(db, spans, effect.into())
}

/// Removes a database file and its WAL companions when dropped.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Builds the history and times the report on it.
pub fn run(args: ReportBenchArgs) -> Result<(), Failure> {
    let keep = args.db.is_some() || args.build_only;
    let db: PathBuf = match args.db {
        Some(db) if db.exists() => {
            return Err(Failure::new(
                USAGE,
                format!("{} exists; pass a new path", db.display()),
            ));
        }
        Some(db) => db,
        None => {
            std::env::temp_dir().join(format!("runlens-bench-report-{}.db", std::process::id()))
        }
    };
    // A history the user did not ask to keep is removed on every exit path: at ten million
    // spans it is gigabytes of temp space. `--db` and `--build-only` keep it for reuse.
    let _cleanup = (!keep).then(|| RemoveOnDrop(db.clone()));
    let started = Instant::now();
    build_history(&db, args.spans, args.effect)
        .map_err(|e| Failure::new(FAILURE, format!("cannot build the history: {e}")))?;
    outln!(
        "built {} with {} spans ({:?} effect) in {:.1} s",
        db.display(),
        args.spans,
        args.effect,
        started.elapsed().as_secs_f64()
    )?;
    if args.build_only {
        return Ok(());
    }
    if args.parquet {
        return against_parquet(&db, args.spans);
    }
    let (mut times, mut peaks, mut findings) = (Vec::new(), Vec::<f64>::new(), Vec::new());
    for _ in 0..3 {
        let run = report_in_child(&["--db".as_ref(), db.as_os_str()])?;
        times.push(run.wall);
        peaks.push(run.peak_bytes as f64 / MIB);
        findings = run.findings;
    }
    outln!(
        "runlens report --format json over {} spans (the whole command, in a process of its own): {}",
        args.spans,
        summary(&times, &peaks)
    )?;
    for f in findings {
        outln!("finding: {f}")?;
    }
    Ok(())
}

/// The median time and peak RSS of some runs, and each run's.
fn summary(times: &[Duration], peaks: &[f64]) -> String {
    let mut sorted = peaks.to_vec();
    sorted.sort_by(f64::total_cmp);
    format!(
        "{}; peak RSS median {:.1} MiB (VmHWM read every 5 ms; runs: {})",
        summary_ms(times),
        sorted_percentile(&sorted, 0.5).unwrap_or(0.0),
        peaks
            .iter()
            .map(|p| format!("{p:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Exports the history as Parquet and times `report --from` on it against `report --db`,
/// five runs each, alternating.
fn against_parquet(db: &std::path::Path, spans: u64) -> Result<(), Failure> {
    let failed =
        |what: &str, e: &dyn std::fmt::Display| Failure::new(FAILURE, format!("{what}: {e}"));
    let dir = tempfile::tempdir().map_err(|e| failed("cannot make a temporary directory", &e))?;
    let out = dir.path().join("fleet");
    let exe = std::env::current_exe().map_err(|e| failed("cannot find runlens", &e))?;
    let started = Instant::now();
    let status = std::process::Command::new(exe)
        .args(["export", "parquet", "--db"])
        .arg(db)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| failed("cannot start runlens export parquet", &e))?;
    if !status.success() {
        return Err(Failure::new(
            FAILURE,
            format!("runlens export parquet failed: {status}"),
        ));
    }
    let bytes = dir_bytes(&out);
    let db_bytes = std::fs::metadata(db).map(|m| m.len()).unwrap_or(0);
    outln!(
        "runlens export parquet: {:.1} s, {:.1} MiB of files from a {:.1} MiB database ({:.1}x smaller)",
        started.elapsed().as_secs_f64(),
        bytes as f64 / MIB,
        db_bytes as f64 / MIB,
        db_bytes as f64 / bytes.max(1) as f64
    )?;
    let mut from_db = (Vec::new(), Vec::new());
    let mut from_files = (Vec::new(), Vec::new());
    let mut same = true;
    for _ in 0..5 {
        let a = report_in_child(&["--db".as_ref(), db.as_os_str()])?;
        let b = report_in_child(&["--from".as_ref(), out.as_os_str()])?;
        same &= a.json == b.json;
        from_db.0.push(a.wall);
        from_db.1.push(a.peak_bytes as f64 / MIB);
        from_files.0.push(b.wall);
        from_files.1.push(b.peak_bytes as f64 / MIB);
    }
    let median = |times: &[Duration]| sorted_percentile(&sorted_in(times, 1e3), 0.5).unwrap_or(0.0);
    let ratio = median(&from_files.0) / median(&from_db.0).max(1e-9);
    outln!("over {spans} spans, alternating, five runs each:")?;
    outln!("  report --db:   {}", summary(&from_db.0, &from_db.1))?;
    outln!("  report --from: {}", summary(&from_files.0, &from_files.1))?;
    outln!(
        "  --from / --db: {ratio:.2}x the time; JSON {}",
        if same { "equal" } else { "DIFFERENT" }
    )?;
    if !same {
        return Err(Failure::new(
            FAILURE,
            "the report from the files differs from the database's",
        ));
    }
    Ok(())
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// One `runlens report` run: its wall time, peak RSS, findings and JSON (but for
/// `generated_at_ns`).
struct ChildRun {
    wall: Duration,
    peak_bytes: u64,
    findings: Vec<String>,
    json: serde_json::Value,
}

/// Runs `runlens report <source> --format json` as a child, as a user would, watching its
/// peak resident memory (`VmHWM`, read until it exits: growth in its last 5 ms can be
/// missed).
fn report_in_child(source: &[&std::ffi::OsStr]) -> Result<ChildRun, Failure> {
    let failed =
        |what: &str, e: &dyn std::fmt::Display| Failure::new(FAILURE, format!("{what}: {e}"));
    let exe = std::env::current_exe().map_err(|e| failed("cannot find runlens", &e))?;
    let out =
        std::env::temp_dir().join(format!("runlens-bench-report-{}.json", std::process::id()));
    let _cleanup = RemoveOnDrop(out.clone());
    let started = Instant::now();
    let mut child = std::process::Command::new(exe)
        .arg("report")
        .args(source)
        .args(["--format", "json", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| failed("cannot start runlens report", &e))?;
    let mut peak_bytes = 0;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| failed("cannot wait for runlens report", &e))?
        {
            break status;
        }
        if let Some(hwm) = status_bytes(child.id(), "VmHWM:") {
            peak_bytes = peak_bytes.max(hwm);
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let wall = started.elapsed();
    if !status.success() {
        return Err(Failure::new(
            FAILURE,
            format!("runlens report failed: {status}"),
        ));
    }
    let mut json: serde_json::Value = std::fs::read(&out)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
        .map_err(|e| failed("cannot read the report", &e))?;
    let findings = json["findings"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    if let Some(map) = json.as_object_mut() {
        map.remove("generated_at_ns");
    }
    Ok(ChildRun {
        wall,
        peak_bytes,
        findings,
        json,
    })
}

fn summary_ms(times: &[Duration]) -> String {
    let ms = sorted_in(times, 1e3);
    format!(
        "median {:.0} ms (runs: {})",
        sorted_percentile(&ms, 0.5).unwrap_or(0.0),
        times
            .iter()
            .map(|t| format!("{:.0} ms", t.as_secs_f64() * 1e3))
            .collect::<Vec<_>>()
            .join(", ")
    )
}
