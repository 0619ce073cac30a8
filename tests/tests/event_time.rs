//! What a snapshot means: every run and span boundary, metric and event refers to the
//! stored sample nearest its own time (within the matching window, twice
//! `--sample-interval`),
//! never to a sample taken because its message arrived; across real processes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runlens_e2e::{Sidecar, bin, free_addr};

/// The matching window these sidecars run with (twice `--sample-interval 1s`), ns.
const WINDOW_NS: i64 = 2_000_000_000;

/// Every boundary as (what, its time, its sample's time or `None`).
fn boundaries(sidecar: &Sidecar) -> Vec<(String, i64, Option<i64>)> {
    let conn = sidecar.sql();
    let mut stmt = conn
        .prepare(
            "SELECT 'run start ' || r.name, r.started_at_ns, s.taken_at_ns FROM runs r
                 LEFT JOIN snapshots s ON s.snapshot_id = r.start_snapshot_id
             UNION ALL SELECT 'run end ' || r.name, r.ended_at_ns, s.taken_at_ns FROM runs r
                 LEFT JOIN snapshots s ON s.snapshot_id = r.end_snapshot_id
             UNION ALL SELECT 'span start ' || p.name, p.started_at_ns, s.taken_at_ns
                 FROM spans p LEFT JOIN snapshots s ON s.snapshot_id = p.start_snapshot_id
             UNION ALL SELECT 'span end ' || p.name, p.ended_at_ns, s.taken_at_ns
                 FROM spans p LEFT JOIN snapshots s ON s.snapshot_id = p.end_snapshot_id
             UNION ALL SELECT 'event ' || e.name, e.at_ns, s.taken_at_ns FROM events e
                 LEFT JOIN snapshots s ON s.snapshot_id = e.snapshot_id WHERE e.run_id IS NOT NULL",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Sample times, sorted.
fn sample_times(sidecar: &Sidecar) -> Vec<i64> {
    let conn = sidecar.sql();
    let mut stmt = conn
        .prepare("SELECT taken_at_ns FROM snapshots ORDER BY taken_at_ns")
        .unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The distance from `t` to the nearest sample.
fn nearest_distance(samples: &[i64], t: i64) -> i64 {
    samples
        .iter()
        .map(|s| (s - t).abs())
        .min()
        .unwrap_or(i64::MAX)
}

#[test]
fn an_agent_started_before_the_sidecar_gets_no_later_sample_for_what_it_recorded_before() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("late.db");
    let addr = free_addr();
    // 50 runs of 4 steps of 25 ms: about 5 s of recording, the first 4 s with no sidecar.
    let mut agent = Command::new(bin("example-agent"))
        .args([
            "--endpoint",
            &format!("http://{addr}"),
            "--runs",
            "50",
            "--step-ms",
            "25",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let mut sidecar = Sidecar::start_at(
        &addr,
        &db,
        &[
            "--sample-interval",
            "1s",
            "--active-sample-interval",
            "250ms",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = agent.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "example-agent did not finish");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "example-agent failed");
    sidecar.stop();

    let samples = sample_times(&sidecar);
    let first_sample = samples[0];
    let all = boundaries(&sidecar);
    // 50 runs: 2 run boundaries, 3 spans of 2, 3 metrics each; a retry event every third.
    assert_eq!(all.len(), 50 * (2 + 6 + 3) + 16, "every boundary stored");
    let mut before_sidecar = 0;
    for (what, t, sample) in &all {
        if *t < first_sample - WINDOW_NS {
            before_sidecar += 1;
            assert_eq!(
                *sample,
                None,
                "{what} at {t} was recorded {} ms before the sidecar's first sample: it has none",
                (first_sample - t) / 1_000_000
            );
        }
        if let Some(taken) = sample {
            assert!(
                (taken - t).abs() <= WINDOW_NS,
                "{what} at {t} refers to a sample {} ms away",
                (taken - t) / 1_000_000
            );
        }
        // Recorded while the sidecar sampled: matched.
        if *t > first_sample + WINDOW_NS / 2 {
            assert!(sample.is_some(), "{what} at {t} has no sample");
        }
    }
    assert!(
        before_sidecar >= 100,
        "the agent recorded {before_sidecar} boundaries before the sidecar ran"
    );
}

#[test]
fn boundaries_get_the_sample_nearest_their_own_time_under_linger_and_an_active_interval() {
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = Sidecar::start_on(
        &dir.path().join("near.db"),
        &[
            "--sample-interval",
            "1s",
            "--active-sample-interval",
            "250ms",
        ],
    );
    // 20 runs of 4 steps of 10 ms, sent with a 50 ms linger.
    let out = Command::new(bin("example-agent"))
        .args([
            "--endpoint",
            &sidecar.endpoint(),
            "--runs",
            "20",
            "--step-ms",
            "10",
        ])
        .env("RUNLENS_LINGER_MS", "50")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    sidecar.stop();

    let samples = sample_times(&sidecar);
    let all = boundaries(&sidecar);
    let mut offsets = Vec::new();
    for (what, t, sample) in &all {
        let taken = sample.unwrap_or_else(|| panic!("{what} at {t} has no sample"));
        let offset = (taken - t).abs();
        // llm_call asks for fresh samples: taken when its message arrived, right after.
        if !what.contains("llm_call") {
            assert_eq!(
                offset,
                nearest_distance(&samples, *t),
                "{what} at {t}: a nearer sample exists"
            );
        }
        offsets.push(offset);
    }
    offsets.sort_unstable();
    let p99 = offsets[offsets.len() * 99 / 100];
    // Half the active interval, plus what a sample may be late on a busy machine.
    assert!(
        p99 <= 125_000_000 + 50_000_000,
        "offset p99 {} ms",
        p99 / 1_000_000
    );
}
