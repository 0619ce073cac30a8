//! The whole path across real processes: example-agent → gRPC → runlens serve → SQLite.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use runlens_e2e::{Sidecar, run_bin};

#[test]
fn example_agent_runs_are_stored_with_status_nesting_and_snapshots() {
    // Periodic samples every 10 minutes: every sample a run or llm_call gets here was taken
    // on demand.
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = Sidecar::start_on(&dir.path().join("e2e.db"), &["--sample-interval", "10m"]);
    // Past the start-up sample, which a run starting within 10 ms of it would share.
    std::thread::sleep(Duration::from_millis(300));
    let endpoint = sidecar.endpoint();
    let (status, stdout, stderr) = run_bin(
        "example-agent",
        &[
            "--endpoint",
            &endpoint,
            "--runs",
            "6",
            "--fail-every",
            "3",
            "--step-ms",
            "2",
        ],
        Duration::from_secs(60),
    );
    assert!(
        status.success(),
        "example-agent failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("6 runs (4 ok, 2 failed)"), "{stdout}");

    // Runs: right statuses, failure text kept.
    assert_eq!(sidecar.count("SELECT count(*) FROM runs"), 6);
    assert_eq!(
        sidecar.count("SELECT count(*) FROM runs WHERE ended_by = 'client'"),
        6,
        "every run was ended by its agent"
    );
    assert_eq!(
        sidecar.count("SELECT count(*) FROM runs WHERE status = 'ok'"),
        4
    );
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM runs WHERE status = 'failed'
             AND error = 'tool_call failed: search timed out after 1 retry'"
        ),
        2
    );
    // Spans: three per run, plan at the top, llm_call and tool_call under plan.
    assert_eq!(sidecar.count("SELECT count(*) FROM spans"), 18);
    assert_eq!(
        sidecar.count("SELECT count(*) FROM spans WHERE name = 'plan' AND parent_span_id IS NULL"),
        6
    );
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM spans c JOIN spans p ON p.span_id = c.parent_span_id
             WHERE c.name IN ('llm_call', 'tool_call') AND p.name = 'plan' AND p.run_id = c.run_id"
        ),
        12
    );
    assert_eq!(
        sidecar.count("SELECT count(*) FROM spans WHERE status = 'failed' AND name = 'tool_call'"),
        2
    );
    assert_eq!(
        sidecar.count("SELECT count(*) FROM spans WHERE status = 'running'"),
        0
    );
    // Every span and run has a stored start and end snapshot.
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM spans s
             JOIN snapshots a ON a.snapshot_id = s.start_snapshot_id
             JOIN snapshots b ON b.snapshot_id = s.end_snapshot_id"
        ),
        18
    );
    // Runs carry a baseline and an end state: the samples nearest their own times (the
    // harness samples every 100 ms), not samples taken because a message arrived.
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM runs r
             JOIN snapshots a ON a.snapshot_id = r.start_snapshot_id
             JOIN snapshots b ON b.snapshot_id = r.end_snapshot_id
             WHERE abs(a.taken_at_ns - r.started_at_ns) <= 100000000
               AND abs(b.taken_at_ns - r.ended_at_ns) <= 100000000"
        ),
        6
    );
    assert_eq!(
        sidecar.count("SELECT count(*) FROM snapshots WHERE reason IN ('run_start', 'run_end')"),
        0,
        "nothing samples on a run's edges any more"
    );
    // llm_call asked for fresh snapshots: at its start and at its end, each taken then or
    // shared with a sample at most 10 ms older (of any reason, a periodic one included).
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM spans s
             JOIN snapshots a ON a.snapshot_id = s.start_snapshot_id
             JOIN snapshots b ON b.snapshot_id = s.end_snapshot_id
             WHERE s.name = 'llm_call'
               AND a.taken_at_ns >= s.started_at_ns - 10000000
               AND b.taken_at_ns >= s.ended_at_ns - 10000000"
        ),
        6
    );
    // RAM figures are plausible in every snapshot.
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM snapshots
             WHERE NOT (ram_used_bytes > 0 AND ram_used_bytes <= ram_total_bytes
                        AND ram_available_bytes <= ram_total_bytes)"
        ),
        0
    );
    // No GPU here (the harness turns NVML off): said so, with the reason.
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM snapshots WHERE gpu_available = 1
             OR gpu_unavailable_reason NOT LIKE '%turned off (--nvml-lib none)%'"
        ),
        0
    );
    // span_resources and run_resources deltas are end minus start.
    for view in ["span_resources", "run_resources"] {
        let (id_col, table) = if view == "span_resources" {
            ("span_id", "spans")
        } else {
            ("run_id", "runs")
        };
        let sql = format!(
            "SELECT count(*) FROM {view} v
             JOIN {table} t USING ({id_col})
             JOIN snapshots a ON a.snapshot_id = t.start_snapshot_id
             JOIN snapshots b ON b.snapshot_id = t.end_snapshot_id
             WHERE v.delta_ram_used_bytes = b.ram_used_bytes - a.ram_used_bytes
               AND v.start_ram_used_bytes = a.ram_used_bytes
               AND v.end_ram_used_bytes = b.ram_used_bytes
               AND v.delta_cpu_load_1m = b.cpu_load_1m - a.cpu_load_1m
               AND v.duration_ns = t.ended_at_ns - t.started_at_ns AND v.duration_ns > 0"
        );
        let expected = if view == "span_resources" { 18 } else { 6 };
        assert_eq!(sidecar.count(&sql), expected, "{view}");
    }
    // Metrics and events, tied to their run and span.
    assert_eq!(
        sidecar.count("SELECT count(*) FROM events WHERE kind = 'metric'"),
        6 * 2 + 6
    );
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM events e JOIN spans s USING (span_id)
             WHERE e.kind = 'event' AND e.name = 'retry' AND s.name = 'tool_call'"
        ),
        2
    );
    // Background interval snapshots were stored too.
    assert!(sidecar.count("SELECT count(*) FROM snapshots WHERE reason = 'interval'") >= 1);

    let logs = sidecar.stop();
    assert!(logs.contains("everything accepted is committed"), "{logs}");
}

#[test]
fn query_command_shows_span_resources_of_a_live_database() {
    let mut sidecar = Sidecar::start();
    sidecar.run_example_agent(2);
    // While the sidecar is still writing: WAL readers do not block it.
    let db = sidecar.db.to_string_lossy().into_owned();
    let (status, stdout, stderr) = run_bin(
        "runlens",
        &["query", "--db", &db, "select * from span_resources limit 5"],
        Duration::from_secs(30),
    );
    assert!(status.success(), "{stderr}");
    assert!(stdout.starts_with("span_id"), "{stdout}");
    assert!(stdout.contains("delta_ram_used_bytes"), "{stdout}");
    assert!(stdout.trim_end().ends_with("(5 rows)"), "{stdout}");

    let (status, stdout, _) = run_bin(
        "runlens",
        &[
            "query",
            "--db",
            &db,
            "--format",
            "json",
            "select name, status from spans order by started_at_ns limit 3",
        ],
        Duration::from_secs(30),
    );
    assert!(status.success());
    let rows: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(rows[0]["name"], "plan");
    assert_eq!(rows.as_array().map(Vec::len), Some(3));

    // Statements that would write are refused, and change nothing.
    for sql in [
        "delete from runs",
        "drop table spans",
        "update runs set status = 'ok'",
    ] {
        let (status, _, stderr) = run_bin(
            "runlens",
            &["query", "--db", &db, sql],
            Duration::from_secs(30),
        );
        assert_eq!(status.code(), Some(65), "{sql}: {stderr}");
        assert!(stderr.contains("only reads"), "{stderr}");
    }
    let (status, _, stderr) = run_bin(
        "runlens",
        &["query", "--db", &db, "select * from nowhere"],
        Duration::from_secs(30),
    );
    // A statement SQLite cannot run is the user's argument to fix (64), not a refused
    // write (65): scripts tell the two apart.
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("no such table: nowhere"), "{stderr}");
    let (status, _, stderr) = run_bin(
        "runlens",
        &["query", "--db", &db, "selec * from runs"],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("syntax error"), "{stderr}");
    assert_eq!(sidecar.count("SELECT count(*) FROM runs"), 2);
    assert_eq!(sidecar.count("SELECT count(*) FROM spans"), 6);
    sidecar.stop();
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let mut sidecar = Sidecar::start();
    sidecar.run_example_agent(1);
    let (status, logs) = sidecar.stop_with("TERM");
    assert!(status.success(), "exit {status}:\n{logs}");
    assert_eq!(
        sidecar.count("SELECT count(*) FROM runs WHERE status = 'ok'"),
        1
    );
}

#[test]
fn the_agent_process_is_recorded_from_its_pid() {
    let mut sidecar = Sidecar::start();
    let endpoint = sidecar.endpoint();
    let child = std::process::Command::new(runlens_e2e::bin("example-agent"))
        .args(["--endpoint", &endpoint, "--runs", "4", "--step-ms", "60"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    sidecar.stop();
    assert!(
        sidecar.count(&format!(
            "SELECT count(*) FROM process_samples WHERE pid = {pid}
             AND rss_bytes > 1048576 AND process_count = 1"
        )) >= 2,
        "samples of the agent's own process while it ran: {:?}",
        sidecar
            .sql()
            .query_row(
                "SELECT count(*), max(rss_bytes), max(process_count) FROM process_samples",
                [],
                |r| Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<i64>>(2)?
                ))
            )
            .unwrap()
    );
    assert_eq!(
        sidecar.count(&format!(
            "SELECT count(*) FROM process_samples WHERE pid = {pid} AND gpu_memory_bytes IS NOT NULL"
        )),
        0,
        "no GPU here, so no GPU figure"
    );
}

#[test]
fn full_durability_syncs_and_stores_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = Sidecar::start_on(&dir.path().join("full.db"), &["--durability", "full"]);
    sidecar.run_example_agent(3);
    sidecar.stop();
    assert_eq!(sidecar.count("SELECT count(*) FROM spans"), 9);
    assert_eq!(
        sidecar.count("SELECT count(*) FROM runs WHERE ended_at_ns IS NOT NULL"),
        3
    );
}
