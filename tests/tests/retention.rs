//! Retention across real processes: a history warped 30 days back is pruned by the next
//! `runlens serve --retain 1d` while it serves, and the counters say so.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use runlens_e2e::{Sidecar, http_get};

const DAY_NS: i64 = 24 * 3600 * 1_000_000_000;

#[test]
fn a_restarted_sidecar_prunes_history_older_than_the_window() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("months.db");
    let mut first = Sidecar::start_on(&db, &["--sample-interval", "100ms"]);
    first.run_example_agent(4);
    std::thread::sleep(Duration::from_millis(300));
    first.stop();
    let runs = first.count("SELECT count(*) FROM runs");
    assert!(runs >= 4);
    // Everything so far happened 30 days ago.
    let conn = rusqlite::Connection::open(&db).unwrap();
    let warp = 30 * DAY_NS;
    conn.execute_batch(&format!(
        "UPDATE runs SET started_at_ns = started_at_ns - {warp}, ended_at_ns = ended_at_ns - {warp};
         UPDATE spans SET started_at_ns = started_at_ns - {warp}, ended_at_ns = ended_at_ns - {warp};
         UPDATE events SET at_ns = at_ns - {warp};
         UPDATE snapshots SET taken_at_ns = taken_at_ns - {warp};
         UPDATE clients SET last_seen_ns = last_seen_ns - {warp};"
    ))
    .unwrap();
    let old_samples: i64 = conn
        .query_row("SELECT count(*) FROM snapshots", [], |r| r.get(0))
        .unwrap();
    drop(conn);

    let mut second = Sidecar::start_on(&db, &["--sample-interval", "100ms", "--retain", "1d"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let cutoff = format!("taken_at_ns < strftime('%s','now') * 1000000000 - {DAY_NS}");
    loop {
        let left = second.count("SELECT count(*) FROM runs")
            + second.count("SELECT count(*) FROM spans")
            + second.count("SELECT count(*) FROM events WHERE run_id IS NOT NULL")
            + second.count(&format!("SELECT count(*) FROM snapshots WHERE {cutoff}"));
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} old rows still there after 20 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The sidecar goes on sampling; new data is untouched.
    second.run_example_agent(1);
    assert_eq!(second.count("SELECT count(*) FROM runs"), 1);
    let metrics = second.metrics.clone().expect("metrics on");
    let text = String::from_utf8(http_get(&metrics, "/metrics", &[]).body).unwrap();
    let pruned = |what: &str| -> i64 {
        text.lines()
            .find(|l| l.starts_with(&format!("runlens_pruned_total{{what=\"{what}\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no runlens_pruned_total for {what}:\n{text}"))
    };
    assert_eq!(pruned("runs"), runs);
    assert_eq!(pruned("samples_expired"), old_samples);
    let logs = second.stop();
    assert!(logs.contains("pruned old data"), "{logs}");
}
