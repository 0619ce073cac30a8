//! Retention over a time-warped history: samples and runs written with timestamps up to
//! 30 days back, then pruned as of now.

use super::*;

const SECOND: i64 = 1_000_000_000;
const HOUR: i64 = 3600 * SECOND;
const DAY: i64 = 24 * HOUR;

struct History {
    conn: Connection,
    now: i64,
    next_id: i64,
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl History {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.db");
        let conn = crate::open_for_writing(&path, false, None).unwrap();
        Self {
            conn,
            now: 1_800_000_000 * SECOND,
            next_id: 1,
            _dir: dir,
            path,
        }
    }

    /// A periodic sample at `at` with two GPUs; GPU 1 has `gpu1_free` bytes free.
    fn sample(
        &mut self,
        at: i64,
        reason: &str,
        cpu: f64,
        ram_available: i64,
        gpu1_free: i64,
    ) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        self.conn
            .prepare_cached(
                "INSERT INTO snapshots (snapshot_id, taken_at_ns, reason, gpu_available, gpu_count,
                     cpu_count, cpu_utilization_ratio, ram_total_bytes, ram_used_bytes,
                     ram_available_bytes, swap_total_bytes, swap_used_bytes)
                 VALUES (?1, ?2, ?3, 1, 2, 8, ?4, 100, 50, ?5, 0, 0)",
            )
            .unwrap()
            .execute(params![id, at, reason, cpu, ram_available])
            .unwrap();
        for (gpu, free) in [(0, 40_i64 << 30), (1, gpu1_free)] {
            self.conn
                .prepare_cached(
                    "INSERT INTO gpu_samples (snapshot_id, gpu_index, state, memory_total_bytes,
                         memory_used_bytes, memory_free_bytes, utilization_ratio)
                     VALUES (?1, ?2, 'ok', 85899345920, 85899345920 - ?3, ?3, 0.5)",
                )
                .unwrap()
                .execute(params![id, gpu, free])
                .unwrap();
        }
        id
    }

    /// A run from `start` to `end` (None: still running) with `spans` spans and a metric.
    fn run(&mut self, id: &str, start: i64, end: Option<i64>, spans: usize) {
        let s = self.sample(start, "run_start", 0.1, 50, 40 << 30);
        let e = end.map(|end| self.sample(end, "run_end", 0.1, 50, 40 << 30));
        self.conn
            .execute(
                "INSERT INTO runs (run_id, name, status, started_at_ns, ended_at_ns,
                     start_snapshot_id, end_snapshot_id)
                 VALUES (?1, 'task', ?2, ?3, ?4, ?5, ?6)",
                params![
                    id,
                    if end.is_some() { "ok" } else { "running" },
                    start,
                    end,
                    s,
                    e
                ],
            )
            .unwrap();
        for i in 0..spans {
            self.conn
                .execute(
                    "INSERT INTO spans (span_id, run_id, name, status, started_at_ns,
                         ended_at_ns, start_snapshot_id, end_snapshot_id)
                     VALUES (?1, ?2, 'step', 'ok', ?3, ?4, ?5, ?6)",
                    params![format!("{id}-{i}"), id, start, end, s, e],
                )
                .unwrap();
        }
        self.conn
            .execute(
                "INSERT INTO events (kind, run_id, name, value, at_ns)
                 VALUES ('metric', ?1, 'tokens', 1, ?2)",
                params![id, start],
            )
            .unwrap();
    }

    fn count(&self, sql: &str) -> i64 {
        self.conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// Pruning for size brought the pages in use under [`SIZE_LOW`] of `max`.
    fn assert_under_the_low_mark(&self, max: u64) {
        let used = used_bytes(&self.conn).unwrap();
        assert!(
            (used as f64) <= max as f64 * SIZE_LOW,
            "{used} bytes used, target {max}"
        );
    }

    /// Pruning-for-size episodes recorded (`storage.pruned` system events).
    fn size_episodes(&self) -> i64 {
        self.count("SELECT count(*) FROM events WHERE kind = 'system' AND name = 'storage.pruned'")
    }

    /// Prunes until there is nothing left to do; the steps taken.
    fn prune(&mut self, policy: RetentionPolicy) -> (PruneReport, usize) {
        self.prune_in_steps_of(policy, STEP_TIME)
    }

    /// As [`History::prune`], each step stopping after `step_time`.
    fn prune_in_steps_of(
        &mut self,
        policy: RetentionPolicy,
        step_time: Duration,
    ) -> (PruneReport, usize) {
        let mut pruner = Pruner::new(policy).with_step_time(step_time);
        let mut total = PruneReport::default();
        for steps in 1..100_000 {
            let report = pruner.step(&mut self.conn, self.now).unwrap();
            total.add(&report);
            if !report.more {
                return (total, steps);
            }
        }
        panic!("pruning never finished");
    }
}

fn policy() -> RetentionPolicy {
    RetentionPolicy {
        retain: Duration::from_secs(14 * 24 * 3600),
        retain_full: Duration::from_secs(3600),
        max_bytes: None,
        keep_unexported: false,
        keep_unexported_parquet: false,
    }
}

/// 30 days of a sample a minute, then the last 3 hours at one a second.
fn warped_history() -> History {
    let mut h = History::new();
    let start = h.now - 30 * DAY;
    h.conn.execute_batch("BEGIN").unwrap();
    let mut at = start;
    while at < h.now - 3 * HOUR {
        h.sample(at, "interval", 0.2, 60, 30 << 30);
        at += 60 * SECOND;
    }
    while at < h.now {
        h.sample(at, "interval", 0.2, 60, 30 << 30);
        at += SECOND;
    }
    h.run("old-done", h.now - 30 * DAY, Some(h.now - 29 * DAY), 50);
    h.run("old-running", h.now - 20 * DAY, None, 3);
    h.run("recent", h.now - 2 * DAY, Some(h.now - 2 * DAY + HOUR), 5);
    h.conn
        .execute(
            "INSERT INTO events (kind, name, at_ns) VALUES ('system', 'gpu.lost', ?1),
                 ('system', 'gpu.available', ?2)",
            params![h.now - 25 * DAY, h.now - DAY],
        )
        .unwrap();
    h.conn.execute_batch("COMMIT").unwrap();
    h
}

#[test]
fn old_runs_and_samples_go_and_what_is_still_referred_to_stays() {
    let mut h = warped_history();
    let (report, _) = h.prune(policy());
    assert_eq!(
        h.count("SELECT count(*) FROM runs WHERE run_id = 'old-done'"),
        0
    );
    assert_eq!(
        h.count("SELECT count(*) FROM spans WHERE run_id = 'old-done'"),
        0
    );
    assert_eq!(
        h.count("SELECT count(*) FROM events WHERE run_id = 'old-done'"),
        0
    );
    assert_eq!(report.runs, 1);
    assert_eq!(report.spans, 50);
    // A run still open keeps its rows and its start sample, however old.
    assert_eq!(
        h.count("SELECT count(*) FROM spans WHERE run_id = 'old-running'"),
        3
    );
    assert_eq!(
        h.count(
            "SELECT count(*) FROM runs r JOIN snapshots s ON s.snapshot_id = r.start_snapshot_id
             WHERE r.run_id = 'old-running'"
        ),
        1
    );
    assert_eq!(
        h.count("SELECT count(*) FROM runs WHERE run_id = 'recent'"),
        1
    );
    // Nothing else older than the window is left; no GPU row lost its sample.
    let cutoff = h.now - 14 * DAY;
    assert_eq!(
        h.count(&format!(
            "SELECT count(*) FROM snapshots WHERE taken_at_ns < {cutoff}"
        )),
        1,
        "only the open run's start sample"
    );
    assert_eq!(
        h.count(
            "SELECT count(*) FROM gpu_samples g LEFT JOIN snapshots s USING (snapshot_id)
             WHERE s.snapshot_id IS NULL"
        ),
        0
    );
    assert_eq!(
        h.count("SELECT count(*) FROM events WHERE kind = 'system'"),
        1,
        "the system event of 25 days ago goes, yesterday's stays"
    );
    // Every reference still resolves.
    for column in ["start_snapshot_id", "end_snapshot_id"] {
        for table in ["runs", "spans"] {
            assert_eq!(
                h.count(&format!(
                    "SELECT count(*) FROM {table} t LEFT JOIN snapshots s
                     ON s.snapshot_id = t.{column}
                     WHERE t.{column} IS NOT NULL AND s.snapshot_id IS NULL"
                )),
                0,
                "{table}.{column}"
            );
        }
    }
}

#[test]
fn a_sample_passed_over_while_its_run_lived_goes_once_the_run_has_gone() {
    let mut h = History::new();
    let day_ago = h.now - DAY;
    // The run began before the window and ended inside it: its start sample is kept.
    h.run("straddling", day_ago - HOUR, Some(day_ago + HOUR), 2);
    let mut pruner = Pruner::new(RetentionPolicy {
        retain: Duration::from_secs(24 * 3600),
        ..policy()
    });
    let until_done = |pruner: &mut Pruner, h: &mut History, now: i64| {
        while pruner.step(&mut h.conn, now).unwrap().more {}
    };
    let now = h.now;
    until_done(&mut pruner, &mut h, now);
    assert_eq!(h.count("SELECT count(*) FROM runs"), 1);
    assert_eq!(h.count("SELECT count(*) FROM snapshots"), 2);
    // Two hours later the run is past the window: run and both samples go, with the same
    // pruner (no restart) that passed over the start sample before.
    until_done(&mut pruner, &mut h, now + 2 * HOUR);
    assert_eq!(h.count("SELECT count(*) FROM runs"), 0);
    assert_eq!(h.count("SELECT count(*) FROM snapshots"), 0);
}

#[test]
fn thinning_keeps_each_minutes_worst_samples() {
    let mut h = History::new();
    let base = h.now - 3 * HOUR;
    h.conn.execute_batch("BEGIN").unwrap();
    for s in 0..3 * 3600 {
        let at = base + s * SECOND;
        // Minute 10 has a GPU 1 memory dip, minute 20 a CPU spike, minute 30 a RAM dip,
        // each in one second only.
        let gpu1 = if s == 10 * 60 + 17 { 1 << 30 } else { 30 << 30 };
        let cpu = if s == 20 * 60 + 33 {
            0.99
        } else {
            0.2 + (s % 7) as f64 * 0.01
        };
        let ram = if s == 30 * 60 + 45 { 3 } else { 60 };
        h.sample(at, "interval", cpu, ram, gpu1);
    }
    h.conn.execute_batch("COMMIT").unwrap();
    let extremes = |h: &History| {
        (
            h.count("SELECT min(memory_free_bytes) FROM gpu_samples WHERE gpu_index = 1"),
            h.count("SELECT CAST(max(cpu_utilization_ratio) * 100 AS INTEGER) FROM snapshots"),
            h.count("SELECT min(ram_available_bytes) FROM snapshots"),
        )
    };
    let before = extremes(&h);
    let (report, _) = h.prune(policy());
    assert_eq!(extremes(&h), before, "the worst figures survive thinning");
    assert_eq!(extremes(&h), (1 << 30, 99, 3));
    // The thinned two hours keep at most one sample per dimension per minute (cpu, ram,
    // GPU 0, GPU 1); the last hour is untouched.
    let horizon = h.now - HOUR;
    let per_minute = h.count(&format!(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM snapshots
         WHERE taken_at_ns < {horizon} GROUP BY taken_at_ns / 60000000000)"
    ));
    assert!(per_minute <= 4, "{per_minute} samples kept in one minute");
    let thinned = h.count(&format!(
        "SELECT count(*) FROM snapshots WHERE taken_at_ns < {horizon}"
    ));
    assert!(thinned <= 2 * 60 * 4, "{thinned}");
    assert!(thinned >= 2 * 60, "{thinned}: every minute keeps a sample");
    assert_eq!(
        h.count(&format!(
            "SELECT count(*) FROM snapshots WHERE taken_at_ns >= {horizon}"
        )),
        3600
    );
    assert_eq!(report.samples_thinned, 2 * 3600 - thinned as u64);
}

#[test]
fn a_thinned_minute_keeps_samples_that_spans_refer_to() {
    let mut h = History::new();
    let base = h.now - 2 * HOUR;
    let mut ids = Vec::new();
    for s in 0..60 {
        ids.push(h.sample(base + s * SECOND, "interval", 0.2, 60, 30 << 30));
    }
    // A late OTLP span got the nearest periodic sample, not one of its own.
    h.conn
        .execute(
            "INSERT INTO runs (run_id, name, status, started_at_ns, ended_at_ns,
                 start_snapshot_id, end_snapshot_id) VALUES ('r', 'r', 'ok', ?1, ?2, ?3, ?4)",
            params![base, base + 40 * SECOND, ids[5], ids[40]],
        )
        .unwrap();
    h.prune(policy());
    for id in [ids[5], ids[40]] {
        assert_eq!(
            h.count(&format!(
                "SELECT count(*) FROM snapshots WHERE snapshot_id = {id}"
            )),
            1
        );
    }
}

#[test]
fn the_file_shrinks_after_pruning() {
    let mut h = warped_history();
    h.conn
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let before = std::fs::metadata(&h.path).unwrap().len();
    let (report, _) = h.prune(RetentionPolicy {
        retain: Duration::from_secs(24 * 3600),
        ..policy()
    });
    h.conn
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    let after = std::fs::metadata(&h.path).unwrap().len();
    assert!(report.pages_freed > 0);
    assert!(
        after * 3 < before,
        "a day of a 30-day history: {before} bytes became {after}"
    );
}

/// Ten runs that ended 20 days ago, with two spans, a metric and two samples each.
fn ten_runs_of_20_days_ago() -> History {
    let mut h = History::new();
    for i in 0..10 {
        let start = h.now - 20 * DAY + i * HOUR;
        h.run(&format!("old-{i}"), start, Some(start + 60 * SECOND), 2);
    }
    h
}

#[test]
fn a_step_stops_at_its_time_once_it_has_deleted_something() {
    let mut h = ten_runs_of_20_days_ago();
    // Out of time from the start: each step deletes one run (with its spans and events)
    // and says there is more, so that an acknowledgement waits for one run's work at most.
    let mut pruner = Pruner::new(policy()).with_step_time(Duration::ZERO);
    let first = pruner.step(&mut h.conn, h.now).unwrap();
    assert_eq!((first.runs, first.spans, first.events), (1, 2, 1));
    assert!(first.more);
    assert_eq!(h.count("SELECT count(*) FROM runs"), 9);
    // Step by step, everything still goes.
    let mut steps = 1;
    while pruner.step(&mut h.conn, h.now).unwrap().more {
        steps += 1;
    }
    assert!(steps >= 10, "{steps} steps");
    assert_eq!(h.count("SELECT count(*) FROM runs"), 0);
    assert_eq!(h.count("SELECT count(*) FROM spans"), 0);
    assert_eq!(h.count("SELECT count(*) FROM snapshots"), 0);
    // With time to spare, one step does them all.
    let mut h = ten_runs_of_20_days_ago();
    let mut pruner = Pruner::new(policy()).with_step_time(Duration::from_secs(60));
    assert_eq!(pruner.step(&mut h.conn, h.now).unwrap().runs, 10);
}

#[test]
fn pruning_for_size_in_the_smallest_steps_still_reaches_its_target() {
    let mut h = warped_history();
    let used = used_bytes(&h.conn).unwrap();
    // Expiry (14 days) deletes in every step, so pruning for size waits behind it and then
    // goes on over many steps: still one episode, recorded once, at its end.
    let max = used * 10 / 25;
    let (report, _) = h.prune_in_steps_of(
        RetentionPolicy {
            max_bytes: Some(max),
            ..policy()
        },
        Duration::ZERO,
    );
    assert!(report.for_size);
    h.assert_under_the_low_mark(max);
    assert_eq!(h.size_episodes(), 1);
}

#[test]
fn an_episode_of_pruning_for_size_goes_on_over_a_step_out_of_time_before_it() {
    let mut h = warped_history();
    let max = used_bytes(&h.conn).unwrap() * 10 / 17;
    let mut pruner = Pruner::new(RetentionPolicy {
        retain: Duration::from_secs(60 * 24 * 3600),
        max_bytes: Some(max),
        ..policy()
    })
    .with_step_time(Duration::ZERO);
    let first = pruner.step(&mut h.conn, h.now).unwrap();
    assert!(first.for_size && first.more, "{first:?}");
    // Late data: a run that ended 69 days ago. The next step's expiry deletes it and is
    // then out of time, before pruning for size: the episode must not end there.
    h.run("late", h.now - 70 * DAY, Some(h.now - 69 * DAY), 1);
    let second = pruner.step(&mut h.conn, h.now).unwrap();
    assert_eq!(second.runs, 1);
    assert!(!second.for_size && second.more, "{second:?}");
    while pruner.step(&mut h.conn, h.now).unwrap().more {}
    assert_eq!(h.size_episodes(), 1, "one episode, recorded once");
}

#[test]
fn size_target_prunes_the_oldest_first_and_records_it() {
    let mut h = warped_history();
    let used = used_bytes(&h.conn).unwrap();
    // Nothing is past the window (30 days kept), but the file is over the target.
    let max = used * 10 / 17;
    let (report, _) = h.prune(RetentionPolicy {
        retain: Duration::from_secs(60 * 24 * 3600),
        max_bytes: Some(max),
        ..policy()
    });
    assert!(report.for_size);
    h.assert_under_the_low_mark(max);
    assert_eq!(
        h.count("SELECT count(*) FROM runs WHERE run_id = 'old-done'"),
        0
    );
    assert_eq!(
        h.count("SELECT count(*) FROM runs WHERE run_id = 'recent'"),
        1
    );
    // The newest samples stay; the oldest went.
    assert_eq!(
        h.count(&format!(
            "SELECT count(*) FROM snapshots WHERE taken_at_ns >= {}",
            h.now - 3600 * SECOND
        )),
        3600
    );
    let event: String = h
        .conn
        .query_row(
            "SELECT attributes FROM events WHERE kind = 'system' AND name = 'storage.pruned'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(event.contains("\"reason\":\"max_db_mib\""), "{event}");
    assert!(event.contains("\"runs\":1"), "{event}");
}

#[test]
fn unexported_runs_and_samples_stay_while_export_is_configured() {
    let mut h = warped_history();
    // The receiver acknowledged nothing yet: old-done is in the outbox after the cursor,
    // and the metrics exporter has sent samples up to id 100 only.
    h.conn
        .execute_batch(
            "INSERT INTO export_outbox (seq, run_id) VALUES (1, 'old-done');
             INSERT INTO export_cursor (exporter, seq) VALUES ('otlp', 0), ('otlp-metrics', 100);",
        )
        .unwrap();
    h.prune(RetentionPolicy {
        keep_unexported: true,
        keep_unexported_parquet: false,
        ..policy()
    });
    assert_eq!(
        h.count("SELECT count(*) FROM runs WHERE run_id = 'old-done'"),
        1
    );
    assert_eq!(
        h.count("SELECT count(*) FROM spans WHERE run_id = 'old-done'"),
        50
    );
    assert_eq!(
        h.count("SELECT count(*) FROM snapshots WHERE snapshot_id <= 100"),
        0,
        "exported and old: gone"
    );
    assert!(h.count("SELECT count(*) FROM snapshots WHERE snapshot_id BETWEEN 101 AND 200") > 0);
    // Once acknowledged, it goes.
    h.conn
        .execute_batch("UPDATE export_cursor SET seq = 1 WHERE exporter = 'otlp'")
        .unwrap();
    h.prune(RetentionPolicy {
        keep_unexported: true,
        keep_unexported_parquet: false,
        ..policy()
    });
    assert_eq!(
        h.count("SELECT count(*) FROM runs WHERE run_id = 'old-done'"),
        0
    );
    // Acknowledged entries go, but the last stays so that new entries number after it.
    assert_eq!(h.count("SELECT max(seq) FROM export_outbox"), 1);
    h.conn
        .execute_batch("INSERT INTO export_outbox (run_id) VALUES ('next')")
        .unwrap();
    assert_eq!(
        h.count("SELECT seq FROM export_outbox WHERE run_id = 'next'"),
        2,
        "numbered after the cursor"
    );
}

#[test]
fn a_sample_late_data_comes_to_refer_to_between_thinning_steps_stays() {
    let mut h = History::new();
    let minute = floor_minute(h.now - 3 * HOUR);
    // A minute of equal samples: the first is each dimension's worst and stays, the other
    // 59 are thinned, SAMPLES_PER_STEP a step, from one scan of the minute.
    let ids: Vec<i64> = (0..60)
        .map(|i| h.sample(minute + i * SECOND, "interval", 0.2, 60, 30 << 30))
        .collect();
    let mut pruner = Pruner::new(policy());
    let first = pruner.step(&mut h.conn, h.now).unwrap();
    assert_eq!(first.samples_thinned, SAMPLES_PER_STEP as u64);
    assert!(first.more);
    // Late data: a run whose start is matched to the minute's last sample, which the scan
    // chose to delete and no step has deleted yet.
    let last = *ids.last().unwrap();
    h.conn
        .execute(
            "INSERT INTO runs (run_id, name, status, started_at_ns, start_snapshot_id)
             VALUES ('late', 'task', 'running', ?1, ?2)",
            params![minute + 59 * SECOND, last],
        )
        .unwrap();
    while pruner.step(&mut h.conn, h.now).unwrap().more {}
    assert_eq!(
        h.count(&format!(
            "SELECT count(*) FROM snapshots WHERE snapshot_id = {last}"
        )),
        1,
        "the sample the run refers to stays"
    );
    assert_eq!(h.count("SELECT count(*) FROM snapshots"), 2);
}

#[test]
fn the_slower_of_otlp_and_parquet_export_decides_what_stays() {
    let mut h = warped_history();
    // OTLP has sent everything; the Parquet export has written nothing yet.
    h.conn
        .execute_batch(
            "INSERT INTO export_outbox (seq, run_id) VALUES (1, 'old-done');
             INSERT INTO export_cursor (exporter, seq) VALUES ('otlp', 1),
                 ('otlp-metrics', 1000000), ('parquet-runs', 0), ('parquet-snapshots', 100);",
        )
        .unwrap();
    h.prune(RetentionPolicy {
        keep_unexported: true,
        keep_unexported_parquet: true,
        ..policy()
    });
    assert_eq!(
        h.count("SELECT count(*) FROM runs WHERE run_id = 'old-done'"),
        1
    );
    assert!(h.count("SELECT count(*) FROM snapshots WHERE snapshot_id BETWEEN 101 AND 200") > 0);
    // Parquet alone (no OTLP export) keeps them too; once written, they go.
    h.conn
        .execute_batch("UPDATE export_cursor SET seq = 1 WHERE exporter = 'parquet-runs'")
        .unwrap();
    h.prune(RetentionPolicy {
        keep_unexported: false,
        keep_unexported_parquet: true,
        ..policy()
    });
    assert_eq!(
        h.count("SELECT count(*) FROM runs WHERE run_id = 'old-done'"),
        0
    );
}
