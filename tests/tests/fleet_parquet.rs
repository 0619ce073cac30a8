//! The fleet's history as Parquet: `serve --parquet-export` killed between an interval's
//! files and its cursors loses and doubles nothing; `runlens report --from` gives the
//! database's report; several pods' files are one report's sources.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow_array::cast::AsArray;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use runlens_e2e::{Sidecar, report_json, run_bin};

/// Every Parquet file under `dir`, by table (the first folder).
fn files(dir: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension() == Some(OsStr::new("parquet")) {
                let table = path
                    .strip_prefix(dir)
                    .unwrap()
                    .components()
                    .next()
                    .unwrap()
                    .as_os_str()
                    .to_string_lossy()
                    .into_owned();
                out.entry(table).or_default().push(path);
            }
        }
    }
    out
}

/// The values of one text column over a table's files.
fn text_column(paths: &[PathBuf], column: &str) -> Vec<String> {
    let mut out = Vec::new();
    for path in paths {
        let file = std::fs::File::open(path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let array = batch.column_by_name(column).unwrap();
            out.extend(
                array
                    .as_string::<i32>()
                    .iter()
                    .map(|v| v.unwrap_or("").to_owned()),
            );
        }
    }
    out
}

/// Rows over a table's files.
fn rows(paths: &[PathBuf]) -> i64 {
    paths
        .iter()
        .map(|p| {
            let file = std::fs::File::open(p).unwrap();
            ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .metadata()
                .file_metadata()
                .num_rows()
        })
        .sum()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cursor(sidecar: &Sidecar, name: &str) -> i64 {
    sidecar.count(&format!(
        "SELECT coalesce((SELECT seq FROM export_cursor WHERE exporter = '{name}'), 0)"
    ))
}

#[test]
fn a_kill_between_an_intervals_files_and_its_cursors_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runlens.db");
    let out = dir.path().join("fleet");
    let out_arg = out.to_str().unwrap();
    let flags = [
        "--sample-interval",
        "100ms",
        "--parquet-export",
        out_arg,
        "--parquet-export-interval",
        "1s",
    ];
    // First life: the files of the first interval are written, then the sidecar dies
    // before its cursors move.
    let pause = OsStr::new("5000");
    let mut first = Sidecar::start_with_env(
        &db,
        &flags,
        &[("RUNLENS_TEST_PARQUET_PAUSE_BEFORE_CURSORS", pause)],
    );
    first.run_example_agent(6);
    wait_until(
        "the first interval's span files",
        Duration::from_secs(20),
        || files(&out).contains_key("spans"),
    );
    // Within the 5 s pause: the files are complete (spans come after runs), events next.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        cursor(&first, "parquet-runs"),
        0,
        "the cursor moved too early"
    );
    let (status, _) = first.stop_with("KILL");
    assert!(!status.success());
    let before = rows(&files(&out)["runs"]);
    assert_eq!(before, 6, "the first interval wrote the six runs");

    // Second life: more runs; the interval starts again from the unmoved cursors.
    let mut second = Sidecar::start_on(&db, &flags);
    second.run_example_agent(4);
    wait_until(
        "the export of every ended run",
        Duration::from_secs(30),
        || {
            let head = second.count("SELECT coalesce(max(seq), 0) FROM export_outbox");
            head >= 10 && cursor(&second, "parquet-runs") == head
        },
    );
    // What /metrics says of it: the counters move just after the cursors (the thread counts
    // an interval once its cursors are committed), so wait for them.
    let scrape = || {
        let scrape = runlens_e2e::http_get(second.metrics.as_deref().unwrap(), "/metrics", &[]);
        String::from_utf8_lossy(&scrape.body).into_owned()
    };
    wait_until(
        "the export's counters on /metrics",
        Duration::from_secs(10),
        || {
            scrape()
                .lines()
                .any(|l| l.starts_with("runlens_parquet_export_files_total") && !l.ends_with(" 0"))
        },
    );
    let text = scrape();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
    };
    assert!(value("runlens_parquet_export_rows_total") > 0.0, "{text}");
    assert!(value("runlens_parquet_export_files_total") >= 4.0, "{text}");
    assert_eq!(value("runlens_parquet_export_failures_total"), 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let last = value("runlens_parquet_export_last_success_timestamp_seconds");
    assert!((now - last).abs() < 30.0, "{last} vs {now}");
    let snapshot_cursor = cursor(&second, "parquet-snapshots");
    let expected_snapshots = second.count(&format!(
        "SELECT count(*) FROM snapshots WHERE snapshot_id <= {snapshot_cursor}"
    ));
    let expected_spans = second.count("SELECT count(*) FROM spans");
    second.stop();

    let found = files(&out);
    let run_ids = text_column(&found["runs"], "run_id");
    assert_eq!(run_ids.len(), 10, "every run once: {run_ids:?}");
    assert_eq!(
        run_ids.iter().collect::<HashSet<_>>().len(),
        10,
        "no run twice"
    );
    let span_ids = text_column(&found["spans"], "span_id");
    assert_eq!(span_ids.len() as i64, expected_spans);
    assert_eq!(
        span_ids.iter().collect::<HashSet<_>>().len(),
        span_ids.len()
    );
    // Samples up to the cursor, each once (the retried interval replaced its file).
    assert_eq!(rows(&found["snapshots"]), expected_snapshots);
}

fn report_from(url: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["report", "--from", url, "--format", "json"];
    args.extend_from_slice(extra);
    let (status, stdout, stderr) = run_bin("runlens", &args, Duration::from_secs(60));
    assert!(status.success(), "runlens report --from failed: {stderr}");
    serde_json::from_str(&stdout).expect("report JSON")
}

/// The report without its `generated_at_ns` (every group's too).
fn without_generated_at(mut report: serde_json::Value) -> serde_json::Value {
    fn strip(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Object(map) => {
                map.remove("generated_at_ns");
                map.values_mut().for_each(strip);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut report);
    report
}

fn synthetic(db: &Path, spans: &str) {
    let (status, _, stderr) = run_bin(
        "runlens",
        &[
            "bench",
            "report",
            "--spans",
            spans,
            "--db",
            db.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    assert!(status.success(), "{stderr}");
}

fn export(db: &Path, out: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "export",
        "parquet",
        "--db",
        db.to_str().unwrap(),
        "--out",
        out,
    ];
    args.extend_from_slice(extra);
    let (status, stdout, stderr) = run_bin("runlens", &args, Duration::from_secs(120));
    assert!(status.success(), "export failed: {stderr}");
    stdout
}

#[test]
fn the_report_from_the_files_is_the_report_from_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    synthetic(&db, "30000");
    let out = dir.path().join("files");
    let out = out.to_str().unwrap();
    let summary = export(&db, out, &[]);
    assert!(summary.contains("exported"), "{summary}");
    let from_db = without_generated_at(report_json(&db, &[]));
    let from_files = without_generated_at(report_from(out, &[]));
    assert_eq!(from_db, from_files);
    // Exported again: the same files, replaced (the report does not double).
    export(&db, out, &[]);
    assert_eq!(from_db, without_generated_at(report_from(out, &[])));
    let spans = files(Path::new(out))["spans"].clone();
    assert_eq!(rows(&spans), 30000);
    // Narrowed to one step, and per agent (read through a scratch database).
    for extra in [&["--name", "llm_call"][..], &["--by", "client"][..]] {
        let same = without_generated_at(report_json(&db, extra))
            == without_generated_at(report_from(out, extra));
        assert!(same, "{extra:?}: the reports differ");
    }
}

#[test]
fn files_out_of_id_order_and_repeated_rows_still_give_the_databases_report() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("history.db");
    synthetic(&db, "5000");
    let out = dir.path().join("files");
    let out = out.to_str().unwrap();
    export(&db, out, &[]);
    // A copy of each snapshot file named to be read first: its ids come again after it.
    for file in &files(Path::new(out))["snapshots"] {
        std::fs::copy(file, file.with_file_name("part-0.parquet")).unwrap();
    }
    let args = ["report", "--from", out, "--format", "json"];
    let (status, stdout, stderr) = run_bin("runlens", &args, Duration::from_secs(60));
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("not in the order"), "{stderr}");
    assert!(stderr.contains("repeat rows already read"), "{stderr}");
    let from_files: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        without_generated_at(report_json(&db, &[])),
        without_generated_at(from_files)
    );
}

#[test]
fn several_pods_files_are_one_report_by_source() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bucket");
    let out = out.to_str().unwrap();
    // One pod's synthetic history, and one pod's live agent.
    let a = dir.path().join("a.db");
    synthetic(&a, "3000");
    export(&a, out, &["--source", "agent-pod-a"]);
    let b = dir.path().join("b.db");
    let mut live = Sidecar::start_on(&b, &["--sample-interval", "100ms"]);
    live.run_example_agent(5);
    let b_spans = live.count("SELECT count(*) FROM spans WHERE ended_at_ns IS NOT NULL");
    live.stop();
    export(&b, out, &["--source", "agent-pod-b"]);
    let layout = files(Path::new(out));
    assert!(
        layout["spans"]
            .iter()
            .any(|p| p.to_string_lossy().contains("/source=agent-pod-b/")),
        "{layout:?}"
    );
    let grouped = report_from(out, &["--by", "source"]);
    let text = grouped.to_string();
    for pod in ["agent-pod-a", "agent-pod-b"] {
        assert!(text.contains(pod), "{pod} not named: {text:.400}");
    }
    let single = report_from(out, &[]);
    assert_eq!(single["spans_analyzed"], 3000 + b_spans, "both pods' spans");
}

#[test]
fn unusable_urls_and_empty_places_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("h.db");
    synthetic(&db, "100");
    let (status, _, stderr) = run_bin(
        "runlens",
        &[
            "export",
            "parquet",
            "--db",
            db.to_str().unwrap(),
            "--out",
            "ftp://host/x",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("s3://"), "{stderr}");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let (status, _, stderr) = run_bin(
        "runlens",
        &["report", "--from", empty.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(66), "{stderr}");
    assert!(stderr.contains("runlens export parquet"), "{stderr}");
}
