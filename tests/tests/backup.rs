//! `runlens backup` while `serve` writes at full speed: every copy is consistent.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use runlens_e2e::{Sidecar, run_bin};

#[test]
fn backups_taken_while_an_agent_writes_are_consistent_copies() {
    let mut sidecar = Sidecar::start();
    // An agent writing as fast as it can for the whole test.
    let mut agent = std::process::Command::new(runlens_e2e::bin("example-agent"))
        .args([
            "--endpoint",
            &sidecar.endpoint(),
            "--runs",
            "100000",
            "--step-ms",
            "0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let dir = tempfile::tempdir().unwrap();
    let db = sidecar.db.to_str().unwrap().to_owned();
    let mut spans_seen = Vec::new();
    for i in 0..3 {
        let out = dir.path().join(format!("copy-{i}.db"));
        let out = out.to_str().unwrap();
        let (status, stdout, stderr) = run_bin(
            "runlens",
            &["backup", "--db", &db, "--out", out],
            Duration::from_secs(60),
        );
        assert!(status.success(), "{stderr}");
        assert!(stdout.contains("integrity_check ok"), "{stdout}");
        let copy = rusqlite::Connection::open(out).unwrap();
        let count = |sql: &str| -> i64 { copy.query_row(sql, [], |r| r.get(0)).unwrap() };
        let integrity: String = copy
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok");
        assert_eq!(
            count("SELECT count(*) FROM spans WHERE run_id NOT IN (SELECT run_id FROM runs)"),
            0
        );
        // Every ended span's samples are in the copy too.
        assert_eq!(
            count(
                "SELECT count(*) FROM spans WHERE end_snapshot_id IS NOT NULL
                 AND end_snapshot_id NOT IN (SELECT snapshot_id FROM snapshots)"
            ),
            0
        );
        spans_seen.push(count("SELECT count(*) FROM spans"));
        std::thread::sleep(Duration::from_millis(300));
    }
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert!(
        spans_seen.windows(2).all(|w| w[0] < w[1]),
        "each copy is a later snapshot of a growing database: {spans_seen:?}"
    );
    assert!(spans_seen[0] > 0);

    // A copy never overwrites, and a missing database says so.
    let existing = dir.path().join("copy-0.db");
    let (status, _, stderr) = run_bin(
        "runlens",
        &["backup", "--db", &db, "--out", existing.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("never overwrites"), "{stderr}");
    let missing = dir.path().join("missing.db");
    let (status, _, stderr) = run_bin(
        "runlens",
        &[
            "backup",
            "--db",
            missing.to_str().unwrap(),
            "--out",
            dir.path().join("x.db").to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(66), "{stderr}");
    sidecar.stop();
}
