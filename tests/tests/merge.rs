//! Databases of many pods merged into one (`runlens merge`): each keeps its origin (the
//! pod identity its sidecar recorded), ids stay unique and references intact, and what
//! cannot be merged is refused whole with a reason.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use runlens_e2e::{Sidecar, run_bin};

/// A pod's database: a sidecar that says it runs in `pod`, and the example agent's runs.
fn pod_db(dir: &Path, pod: &str, runs: u32) -> std::path::PathBuf {
    let db = dir.join(format!("{pod}.db"));
    let attrs = format!("k8s.pod.name={pod},k8s.namespace.name=ml,k8s.node.name=gpu-1");
    let mut sidecar = Sidecar::start_with_env(
        &db,
        &["--sample-interval", "100ms"],
        &[("OTEL_RESOURCE_ATTRIBUTES", OsStr::new(&attrs))],
    );
    sidecar.run_example_agent(runs);
    sidecar.stop();
    db
}

fn merge(out: &Path, inputs: &[&Path]) -> (Option<i32>, String, String) {
    let mut args = vec!["merge", "--out", out.to_str().unwrap()];
    args.extend(inputs.iter().map(|p| p.to_str().unwrap()));
    let (status, stdout, stderr) = run_bin("runlens", &args, Duration::from_secs(60));
    (status.code(), stdout, stderr)
}

fn one<T: rusqlite::types::FromSql>(db: &Path, sql: &str) -> T {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[test]
fn pods_merge_into_one_database_that_says_where_each_row_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let a = pod_db(dir.path(), "agent-a", 6);
    let b = pod_db(dir.path(), "agent-b", 3);
    // Each database says where it came from.
    let resource: String = one(&a, "SELECT resource FROM sidecar_starts");
    assert!(
        resource.contains(r#""k8s.pod.name":"agent-a""#),
        "{resource}"
    );

    let fleet = dir.path().join("fleet.db");
    let (code, stdout, stderr) = merge(&fleet, &[&a, &b]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("as source 1: 6 runs, 18 spans"), "{stdout}");
    assert!(stdout.contains("k8s.pod.name=agent-b"), "{stdout}");
    assert!(stdout.contains("2 of 2 database(s) merged"), "{stdout}");

    // Every row, with its origin.
    let count = |sql: &str| one::<i64>(&fleet, sql);
    assert_eq!(count("SELECT count(*) FROM runs"), 9);
    assert_eq!(count("SELECT count(*) FROM spans"), 27);
    let snapshots = one::<i64>(&a, "SELECT count(*) FROM snapshots")
        + one::<i64>(&b, "SELECT count(*) FROM snapshots");
    assert_eq!(count("SELECT count(*) FROM snapshots"), snapshots);
    assert_eq!(
        count(
            "SELECT count(*) FROM runs r JOIN merge_sources m USING (source_id)
             WHERE json_extract(m.resource, '$.\"k8s.pod.name\"') = 'agent-b'"
        ),
        3
    );
    for table in ["snapshots", "runs", "spans", "events", "clients"] {
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM {table} WHERE source_id IS NULL"
            )),
            0,
            "{table}: every row has its source"
        );
    }
    // References still point at the same samples: a span's snapshots are of its own pod,
    // and each span's start sample shows what the pod's own database showed.
    assert_eq!(
        count(
            "SELECT count(*) FROM spans s JOIN snapshots a ON a.snapshot_id = s.start_snapshot_id
             JOIN snapshots b ON b.snapshot_id = s.end_snapshot_id
             WHERE a.source_id = s.source_id AND b.source_id = s.source_id"
        ),
        27
    );
    let ram_b: i64 = one(&b, "SELECT sum(start_ram_used_bytes) FROM span_resources");
    assert_eq!(
        count(
            "SELECT sum(start_ram_used_bytes) FROM span_resources sr
             JOIN spans s USING (span_id) WHERE s.source_id = 2"
        ),
        ram_b
    );
    // The report runs over the fleet.
    let (status, stdout, stderr) = run_bin(
        "runlens",
        &["report", "--db", fleet.to_str().unwrap()],
        Duration::from_secs(60),
    );
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("27 spans, 9 runs"), "{stdout}");
    // Per pod: each judged on its own runs and its own machine's samples.
    let grouped = runlens_e2e::report_json(&fleet, &["--by", "source"]);
    assert_eq!(grouped["by"], "source");
    let groups = grouped["groups"].as_array().unwrap();
    let summary: Vec<(String, u64, u64, bool)> = groups
        .iter()
        .map(|g| {
            (
                g["label"].as_str().unwrap().to_owned(),
                g["report"]["runs_analyzed"].as_u64().unwrap(),
                g["report"]["spans_analyzed"].as_u64().unwrap(),
                g["report"]["snapshots_analyzed"].as_u64().unwrap() > 0,
            )
        })
        .collect();
    assert_eq!(summary.len(), 2, "{summary:?}");
    assert!(summary[0].0.starts_with("pod agent-a ("), "{summary:?}");
    assert_eq!((summary[0].1, summary[0].2, summary[0].3), (6, 18, true));
    assert!(summary[1].0.starts_with("pod agent-b ("), "{summary:?}");
    assert_eq!((summary[1].1, summary[1].2, summary[1].3), (3, 9, true));
    let snapshots = |i: usize| groups[i]["report"]["snapshots_analyzed"].as_u64().unwrap();
    assert_eq!(
        snapshots(0) + snapshots(1),
        count("SELECT count(*) FROM snapshots") as u64,
        "every sample belongs to exactly one pod"
    );
    let (status, stdout, stderr) = run_bin(
        "runlens",
        &["report", "--db", fleet.to_str().unwrap(), "--by", "source"],
        Duration::from_secs(60),
    );
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("══ pod agent-a ("), "{stdout}");

    // The same database again is refused whole; the fleet is unchanged.
    let (code, _, stderr) = merge(&fleet, &[&a]);
    assert_eq!(code, Some(65), "{stderr}");
    assert!(stderr.contains("the same database twice?"), "{stderr}");
    assert_eq!(count("SELECT count(*) FROM runs"), 9);
    assert_eq!(count("SELECT count(*) FROM merge_sources"), 2);
}

#[test]
fn inputs_of_another_schema_version_or_already_merged_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let a = pod_db(dir.path(), "agent-a", 1);
    let old = pod_db(dir.path(), "agent-old", 1);
    // As if written by an older runlens.
    rusqlite::Connection::open(&old)
        .unwrap()
        .pragma_update(None, "user_version", 6)
        .unwrap();
    let fleet = dir.path().join("fleet.db");
    let (code, stdout, stderr) = merge(&fleet, &[&old, &a]);
    assert_eq!(code, Some(65), "{stderr}");
    assert!(stderr.contains("is at schema version 6"), "{stderr}");
    assert!(stderr.contains("runlens serve --db"), "{stderr}");
    assert!(stdout.contains("1 of 2 database(s) merged"), "{stdout}");
    assert_eq!(one::<i64>(&fleet, "SELECT count(*) FROM runs"), 1);

    let (code, _, stderr) = merge(&dir.path().join("fleet2.db"), &[&fleet]);
    assert_eq!(code, Some(65), "{stderr}");
    assert!(stderr.contains("itself a merged database"), "{stderr}");

    let (code, _, stderr) = merge(&fleet, &[&dir.path().join("missing.db")]);
    assert_eq!(code, Some(66), "{stderr}");
    let (code, _, stderr) = merge(&a, &[&a]);
    assert_eq!(code, Some(64), "{stderr}");
}
