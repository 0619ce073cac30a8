//! `runlens report` finds planted effects, raises no false alarms, flags likely OOM,
//! and renders table, JSON and HTML as promised.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use runlens_e2e::{Sidecar, run_bin};
use serde_json::Value;

fn history(effect: &str, spans: u32) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir
        .path()
        .join(format!("{effect}.db"))
        .to_string_lossy()
        .into_owned();
    let (status, _, stderr) = run_bin(
        "runlens",
        &[
            "bench",
            "report",
            "--spans",
            &spans.to_string(),
            "--db",
            &db,
            "--effect",
            effect,
            "--build-only",
        ],
        Duration::from_secs(60),
    );
    assert!(status.success(), "{stderr}");
    (dir, db)
}

fn report_json(db: &str, extra: &[&str]) -> Value {
    runlens_e2e::report_json(std::path::Path::new(db), extra)
}

fn correlation<'a>(r: &'a Value, name: &str, resource: &str) -> &'a Value {
    r["correlations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name && c["resource"] == resource)
        .unwrap_or_else(|| panic!("no correlation for {name}/{resource}"))
}

#[test]
fn a_planted_effect_is_found_with_the_right_sign_and_strength() {
    let (_dir, db) = history("planted", 6_000);
    let r = report_json(&db, &[]);
    assert_eq!(r["spans_analyzed"], 6_000);
    assert_eq!(r["runs_analyzed"], 600);
    assert_eq!(r["oom_threshold_bytes"], 500u64 << 20);
    let llm = correlation(&r, "llm_call", "gpu_free_memory");
    let rho = llm["rho"].as_f64().unwrap();
    assert!(rho <= -0.4, "llm_call vs GPU free memory: rho {rho}");
    assert_eq!(llm["n"], 1_800);
    assert_eq!(llm["strong"], true);
    for name in ["plan", "tool_call"] {
        for resource in [
            "gpu_free_memory",
            "gpu_utilization",
            "cpu_load_per_core",
            "ram_headroom",
        ] {
            let c = correlation(&r, name, resource);
            assert_eq!(c["strong"], false, "{name}/{resource}: {c}");
        }
    }
    let findings: Vec<&str> = r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(
        findings[0].starts_with("llm_call is slower when GPU 0 has less free memory: ρ = -0."),
        "{findings:?}"
    );
    assert!(findings[0].ends_with("n = 1800"), "{findings:?}");

    // Latency by step, field by field.
    let latency = r["latency"].as_array().unwrap();
    assert_eq!(latency.len(), 3);
    let llm = latency.iter().find(|l| l["name"] == "llm_call").unwrap();
    assert_eq!(llm["count"], 1_800);
    let (p50, p95, p99) = (
        llm["p50_ms"].as_f64().unwrap(),
        llm["p95_ms"].as_f64().unwrap(),
        llm["p99_ms"].as_f64().unwrap(),
    );
    assert!(
        200.0 < p50 && p50 <= p95 && p95 <= p99 && p99 < 900.0,
        "{llm}"
    );
    assert!(llm["failure_rate"].as_f64().unwrap() < 0.1);
    // Context at span start: every figure present except the cgroup (none generated).
    let ctx = r["context"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "llm_call")
        .unwrap();
    assert!(ctx["gpu_free_min_mib_p50"].as_f64().unwrap() > 100.0);
    assert!(ctx["cpu_load_per_core_p50"].is_number() && ctx["ram_headroom_ratio_p50"].is_number());
    assert!(ctx["cgroup_headroom_ratio_p50"].is_null());
    // Pressure makes llm_call slower, and says by how much.
    let p = r["pressure"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "llm_call")
        .unwrap();
    assert!(p["under_pressure"]["n"].as_u64().unwrap() > 0);
    assert!(p["p50_ratio"].as_f64().unwrap() > 1.05, "{p}");

    // Failed runs that ended under the threshold are flagged likely OOM.
    let ooms = r["oom"]["likely_oom_runs"].as_array().unwrap();
    assert!(!ooms.is_empty());
    for run in ooms {
        assert!(run["gpu_free_min_mib"].as_f64().unwrap() < 500.0, "{run}");
        assert!(
            run["error"]
                .as_str()
                .unwrap()
                .contains("CUDA out of memory"),
            "{run}"
        );
    }
    let gpu = &r["oom"]["gpus"][0];
    assert_eq!(gpu["gpu_index"], 0);
    assert_eq!(gpu["samples"], 600);
    assert!(gpu["samples_below"].as_u64().unwrap() > 0);
    assert!(gpu["seconds_below"].as_f64().unwrap() > 0.0);
    assert!(!gpu["runs_below"].as_array().unwrap().is_empty());
    assert_eq!(
        gpu["hardware_limit"], false,
        "below in a minority of samples"
    );
}

#[test]
fn a_history_without_an_effect_raises_no_false_alarm() {
    let (_dir, db) = history("none", 6_000);
    let r = report_json(&db, &[]);
    assert_eq!(
        r["findings"].as_array().unwrap().len(),
        0,
        "{}",
        r["findings"]
    );
    assert!(
        r["correlations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["strong"] == false)
    );
    assert_eq!(r["oom"]["likely_oom_runs"].as_array().unwrap().len(), 0);
    assert_eq!(r["oom"]["gpus"][0]["samples_below"], 0);
    // With the threshold above every sample, the GPU is a hardware limit.
    let r = report_json(&db, &["--oom-threshold-mib", "100000"]);
    assert_eq!(r["oom"]["gpus"][0]["hardware_limit"], true);
}

#[test]
fn filters_narrow_the_report() {
    let (_dir, db) = history("planted", 3_000);
    let r = report_json(&db, &["--run", "run-5"]);
    assert_eq!(r["spans_analyzed"], 10);
    assert_eq!(r["runs_analyzed"], 1);
    let r = report_json(&db, &["--name", "tool_call"]);
    assert_eq!(r["latency"].as_array().unwrap().len(), 1);
    assert_eq!(r["latency"][0]["name"], "tool_call");
    // The generated history is from 2023: a recent window holds nothing.
    let r = report_json(&db, &["--since", "1h"]);
    assert_eq!(r["spans_analyzed"], 0);
    let (status, _, stderr) = run_bin(
        "runlens",
        &["report", "--db", &db, "--since", "soon"],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(64));
    assert!(stderr.contains("such as 1h"), "{stderr}");
    let (status, _, _) = run_bin(
        "runlens",
        &["report", "--db", "/nonexistent/x.db"],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(66));
}

#[test]
fn until_ends_the_window_and_id_lists_are_capped_unless_asked() {
    let (_dir, db) = history("planted", 3_000);
    // The history runs 30 s from 2023-11-14T22:13:20Z, a sample every 100 ms.
    let all = report_json(&db, &[]);
    assert_eq!(all["spans_analyzed"], 3_000);
    let first_half = report_json(&db, &["--until", "2023-11-14T22:13:35Z"]);
    let n = first_half["spans_analyzed"].as_u64().unwrap();
    assert!((1_200..=1_800).contains(&n), "{n}");
    assert!(first_half["window"]["until_ns"].as_i64().is_some());
    assert!(all["window"]["until_ns"].is_null());
    let (status, _, stderr) = run_bin(
        "runlens",
        &["report", "--db", &db, "--since", "1h", "--until", "2h"],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("window is empty"), "{stderr}");

    // GPU 0 is squeezed during many runs: the JSON lists 100 ids and counts them all.
    let (_dir, db) = history("planted", 30_000);
    let all = report_json(&db, &[]);
    let gpu = &all["oom"]["gpus"][0];
    let count = gpu["runs_below_count"].as_u64().unwrap();
    assert!(count > 100, "{count}");
    assert_eq!(gpu["runs_below"].as_array().unwrap().len(), 100);
    let every = report_json(&db, &["--all-ids"]);
    assert_eq!(
        every["oom"]["gpus"][0]["runs_below"]
            .as_array()
            .unwrap()
            .len() as u64,
        count
    );
    // So is the list of likely OOM runs (each with its error text).
    let oom_count = all["oom"]["likely_oom_runs_count"].as_u64().unwrap();
    assert!(oom_count > 100, "{oom_count}");
    assert_eq!(all["oom"]["likely_oom_runs"].as_array().unwrap().len(), 100);
    assert_eq!(
        every["oom"]["likely_oom_runs"].as_array().unwrap().len() as u64,
        oom_count
    );
}

#[test]
fn by_client_splits_every_section_per_agent() {
    let mut sidecar = Sidecar::start();
    sidecar.run_example_agent(4);
    sidecar.run_example_agent(2);
    sidecar.stop();
    let grouped = runlens_e2e::report_json(&sidecar.db, &["--by", "client"]);
    assert_eq!(grouped["by"], "client");
    let groups = grouped["groups"].as_array().unwrap();
    let runs: Vec<u64> = groups
        .iter()
        .map(|g| g["report"]["runs_analyzed"].as_u64().unwrap())
        .collect();
    assert_eq!(runs, [4, 2], "busiest first");
    for g in groups {
        let label = g["label"].as_str().unwrap();
        assert!(label.starts_with("agent example-agent (client-"), "{label}");
        let latency = g["report"]["latency"].as_array().unwrap();
        assert_eq!(latency.len(), 3, "plan, llm_call, tool_call for each agent");
    }
    assert_ne!(groups[0]["key"], groups[1]["key"]);
    let db = sidecar.db.to_string_lossy().into_owned();
    let (status, html, stderr) = run_bin(
        "runlens",
        &["report", "--db", &db, "--by", "client", "--format", "html"],
        Duration::from_secs(30),
    );
    assert!(status.success(), "{stderr}");
    assert_eq!(
        html.matches("<h1>runlens report: agent example-agent")
            .count(),
        2
    );
    assert_eq!(html.matches("<html").count(), 1, "one page");
}

#[test]
fn the_table_fits_100_columns_and_the_html_is_self_contained_with_charts() {
    let (dir, db) = history("planted", 3_000);
    let (status, table, _) = run_bin("runlens", &["report", "--db", &db], Duration::from_secs(60));
    assert!(status.success());
    for heading in [
        "1. Latency by step",
        "2. The machine at span start",
        "3. Correlation",
        "4. Under pressure vs not",
        "5. OOM risk",
        "* llm_call is slower when GPU 0 has less free memory",
        "likely OOM",
    ] {
        assert!(table.contains(heading), "missing {heading:?}:\n{table}");
    }
    let wide: Vec<&str> = table
        .lines()
        .filter(|l| l.chars().count() > 100 && !l.starts_with("* "))
        .collect();
    assert!(wide.is_empty(), "lines over 100 columns: {wide:#?}");

    let out = dir.path().join("report.html");
    let (status, _, stderr) = run_bin(
        "runlens",
        &[
            "report",
            "--db",
            &db,
            "--format",
            "html",
            "--out",
            out.to_str().unwrap(),
        ],
        Duration::from_secs(60),
    );
    assert!(status.success(), "{stderr}");
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    assert_eq!(html.matches("<svg").count(), html.matches("</svg>").count());
    assert!(
        html.matches("<svg").count() >= 6,
        "timeline (3) and a scatter per step (3)"
    );
    assert!(html.contains("<polyline"), "GPU memory and CPU load lines");
    assert!(html.contains("<circle"), "scatter points");
    assert!(html.contains("<rect"), "runs as bars");
    assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"));
    assert!(html.contains("llm_call is slower when GPU 0 has less free memory"));
}

#[test]
fn a_real_history_without_gpus_reports_cleanly() {
    let mut sidecar = Sidecar::start();
    sidecar.run_example_agent(6);
    sidecar.stop();
    let db = sidecar.db.to_string_lossy().into_owned();
    let r = report_json(&db, &[]);
    assert_eq!(r["spans_analyzed"], 18);
    assert_eq!(r["oom"]["gpus"].as_array().unwrap().len(), 0);
    let tool = r["latency"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "tool_call")
        .unwrap();
    assert_eq!(tool["failures"], 2);
    let (status, table, _) = run_bin("runlens", &["report", "--db", &db], Duration::from_secs(30));
    assert!(status.success());
    assert!(table.contains("no GPU samples in this window"), "{table}");

    // The sidecar down for 2 s, then back on the same database: a gap in the history.
    std::thread::sleep(Duration::from_secs(2));
    let mut again = Sidecar::start_on(&sidecar.db, &["--sample-interval", "100ms"]);
    again.run_example_agent(3);
    again.stop();
    let (status, html, stderr) = run_bin(
        "runlens",
        &["report", "--db", &db, "--format", "html"],
        Duration::from_secs(30),
    );
    assert!(status.success(), "{stderr}");
    assert!(
        !html.contains("GPU memory used over time"),
        "no empty GPU chart without a GPU"
    );
    assert!(
        html.contains("No GPU samples in this window (no GPU"),
        "{html}"
    );
    assert!(
        html.contains("no OOM risk per GPU; no failed run looks like an out-of-memory failure"),
        "the OOM section says why it is empty"
    );
    assert!(
        !html.contains("<th>min free MiB</th>"),
        "no bare table headers"
    );
    let cpu = html
        .split("aria-label=\"CPU load per core over time\"")
        .nth(1)
        .and_then(|rest| rest.split("</svg>").next())
        .unwrap();
    assert_eq!(
        cpu.matches("<polyline").count(),
        2,
        "the CPU line breaks where the sidecar was down"
    );
    assert_eq!(
        html.matches("<table").count(),
        html.matches("</table>").count()
    );
}

#[test]
fn bench_report_without_db_leaves_nothing_in_the_temp_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let (stdout, _) = runlens_with_tmpdir(tmp.path(), &["bench", "report", "--spans", "2000"]);
    let stdout = String::from_utf8_lossy(&stdout);
    assert!(
        stdout.contains("runlens report --format json over 2000 spans")
            && stdout.contains("peak RSS median"),
        "{stdout}"
    );
    assert_left_nothing(tmp.path(), "bench report");
}

/// Runs `runlens args` with `TMPDIR` set to `tmpdir`; its stdout and stderr (it must
/// succeed).
fn runlens_with_tmpdir(tmpdir: &std::path::Path, args: &[&str]) -> (Vec<u8>, String) {
    let out = std::process::Command::new(runlens_e2e::bin("runlens"))
        .args(args)
        .env("TMPDIR", tmpdir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (out.stdout, stderr)
}

fn assert_left_nothing(dir: &std::path::Path, who: &str) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{who} left {left:?} behind");
}

#[test]
fn the_report_is_the_same_with_or_without_room_for_temporary_files() {
    // More spans than one sorting chunk (131,072), so they are sorted through the
    // temporary file; without a writable TMPDIR everything stays in memory instead.
    let (_dir, db) = history("planted", 140_000);
    let tmp = tempfile::tempdir().unwrap();
    let run = |tmpdir: &std::path::Path| {
        let (stdout, stderr) =
            runlens_with_tmpdir(tmpdir, &["report", "--db", &db, "--format", "json"]);
        let mut json: Value = serde_json::from_slice(&stdout).unwrap();
        json["generated_at_ns"] = Value::Null;
        (json, stderr)
    };
    let (spilled, quiet) = run(tmp.path());
    let (in_memory, said) = run(&tmp.path().join("no such directory"));
    assert_eq!(spilled["spans_analyzed"], 140_000);
    assert_eq!(spilled, in_memory);
    // The second run did keep everything in memory, and said so once.
    let notice = "cannot write a temporary file in TMPDIR";
    assert!(!quiet.contains(notice), "{quiet}");
    assert_eq!(said.matches(notice).count(), 1, "{said}");
    assert_left_nothing(tmp.path(), "the report");
}
