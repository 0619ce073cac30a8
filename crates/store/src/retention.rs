//! Retention: what keeps a database that runs for months bounded.
//!
//! Three rules, applied by the writer thread in small steps between ingest batches (one
//! step is one short transaction of about [`STEP_TIME`], so acknowledgements wait for at
//! most one step):
//!
//! - **Expiry.** Runs that ended more than `--retain` ago go, with their spans and events;
//!   then samples older than that which nothing refers to any more, old system events and
//!   clients not seen since.
//! - **Thinning.** Periodic samples older than `--retain-full` are cut to a few per minute:
//!   each minute keeps, per GPU, the sample with the least free memory, and the samples with
//!   the busiest CPU, the least available RAM and the least cgroup memory headroom (often the
//!   same one). The report's pressure and OOM-risk figures read minima and maxima, so they stay
//!   true over thinned data. Samples a run, span or event refers to are never thinned.
//! - **Size.** With `--max-db-mib`, above [`SIZE_HIGH`] of the cap the oldest runs and samples
//!   are pruned whatever their age, until below [`SIZE_LOW`]; a system event
//!   `storage.pruned` records each such episode. Only when nothing can be pruned does the cap
//!   stop ingest, as before.
//!
//! While `--otlp-export` is configured, runs not yet acknowledged by the receiver and samples
//! after the metrics exporter's cursor are never pruned. Freed pages go back to the file
//! system through `PRAGMA incremental_vacuum` on databases created with it (every database
//! since schema 8); older files reuse their freed pages instead of growing.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::read::{METRICS_CURSOR, PARQUET_RUNS_CURSOR, PARQUET_SNAPSHOTS_CURSOR, TRACES_CURSOR};

/// The work one step stops after, once it has deleted something: an acknowledgement queued
/// behind a step waits about this long. Counts alone did not bound it: 64 runs with their
/// spans and events took 5-6 ms and a step 8-25 ms on a 2-core machine in
/// `runlens bench soak` (ack p99 12 ms in one interval); checked between runs and between
/// phases, so a step is this plus one run's or one phase's work.
pub const STEP_TIME: Duration = Duration::from_millis(2);

/// Spans and events deleted in one step at most.
const ROWS_PER_STEP: usize = 500;

/// Samples deleted in one step at most (each has a row per GPU and per GPU process
/// besides: 20 samples of an 8-GPU machine are about 350 rows). 50 took 1.3-9 ms in
/// `runlens bench soak`.
const SAMPLES_PER_STEP: usize = 20;

/// Free pages handed back to the file system per step (1 MiB at the default page size).
const VACUUM_PAGES_PER_STEP: i64 = 256;

/// Thinning works minute by minute.
const MINUTE_NS: i64 = 60_000_000_000;

/// Samples this recent are never pruned for size: the sampler hands the latest one to
/// spans that start now.
const NEWEST_KEPT_NS: i64 = MINUTE_NS;

/// Share of `--max-db-mib` above which pruning for size starts.
pub const SIZE_HIGH: f64 = 0.9;
/// Share of `--max-db-mib` pruning for size brings the database below.
pub const SIZE_LOW: f64 = 0.8;

/// What to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct RetentionPolicy {
    /// Runs, samples and events older than this go.
    pub retain: Duration,
    /// Periodic samples older than this are thinned.
    pub retain_full: Duration,
    /// The size pruning aims to stay under (`--max-db-mib`).
    pub max_bytes: Option<u64>,
    /// Keep what the OTLP exporters have not sent yet.
    pub keep_unexported: bool,
    /// Keep what the Parquet export (`serve --parquet-export`) has not written yet.
    pub keep_unexported_parquet: bool,
}

/// What one step did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct PruneReport {
    /// Runs deleted.
    pub runs: u64,
    /// Spans deleted.
    pub spans: u64,
    /// Events (metrics, custom and system events) deleted.
    pub events: u64,
    /// Periodic samples deleted by thinning.
    pub samples_thinned: u64,
    /// Samples deleted by expiry or for size.
    pub samples_expired: u64,
    /// Whether this step pruned data inside the window to meet `--max-db-mib`.
    pub for_size: bool,
    /// Pages handed back to the file system.
    pub pages_freed: u64,
    /// Whether more work is waiting: call again soon.
    pub more: bool,
    /// Ids of the deleted samples (the writer forgets their times).
    pub deleted_samples: Vec<i64>,
}

impl PruneReport {
    /// Whether anything was deleted.
    fn deleted_anything(&self) -> bool {
        self.runs + self.spans + self.events + self.samples_thinned + self.samples_expired > 0
    }

    /// Whether the step is out of time: past `deadline` and, so that every step makes
    /// progress however slow the machine, having deleted something already. Says `more`.
    fn out_of_time(&mut self, deadline: Instant) -> bool {
        let out = self.deleted_anything() && Instant::now() >= deadline;
        self.more |= out;
        out
    }

    /// Adds another step's counts to these.
    pub fn add(&mut self, other: &PruneReport) {
        self.runs += other.runs;
        self.spans += other.spans;
        self.events += other.events;
        self.samples_thinned += other.samples_thinned;
        self.samples_expired += other.samples_expired;
        self.for_size |= other.for_size;
        self.pages_freed += other.pages_freed;
    }
}

/// Applies a [`RetentionPolicy`] step by step; holds where thinning and expiry got to.
#[derive(Debug)]
pub struct Pruner {
    policy: RetentionPolicy,
    /// Minutes before this are thinned (None: start at the oldest sample).
    thinned_until_ns: Option<i64>,
    /// Samples up to this (time, id) were looked at by expiry and kept (still referred to).
    expired_until: (i64, i64),
    /// Inside a pruning-for-size episode, with its totals so far.
    size_episode: Option<PruneReport>,
    /// Where pruning for size got to in the samples, (time, id).
    size_until: (i64, i64),
    /// The work a step stops after ([`STEP_TIME`]).
    step_time: Duration,
    /// Samples a thinning scan chose to delete and later steps have not deleted yet, and
    /// where the scanned minutes end: a scan reads every sample of its minutes (and their
    /// GPUs' rows), so it is done once for them, not once per step.
    thin_pending: (Vec<i64>, i64),
}

impl Pruner {
    /// A pruner that starts from the oldest data.
    pub fn new(policy: RetentionPolicy) -> Self {
        Self {
            policy,
            thinned_until_ns: None,
            expired_until: (i64::MIN, i64::MIN),
            size_episode: None,
            size_until: (i64::MIN, i64::MIN),
            step_time: STEP_TIME,
            thin_pending: (Vec::new(), 0),
        }
    }

    /// The same pruner with another step time (tests: zero makes every step as small as
    /// it can be).
    #[cfg(test)]
    pub fn with_step_time(mut self, step_time: Duration) -> Self {
        self.step_time = step_time;
        self
    }

    /// Does one small step of pruning as of `now_ns`, in one transaction, then hands some
    /// free pages back. `report.more` says whether to call again. A step stops taking on
    /// work after [`STEP_TIME`] (between runs and between phases), once it has deleted
    /// something.
    pub fn step(&mut self, conn: &mut Connection, now_ns: i64) -> rusqlite::Result<PruneReport> {
        let mut report = PruneReport::default();
        let over = self.over_target(conn)?;
        let tx = conn.transaction()?;
        let limits = Limits::read(
            &tx,
            self.policy.keep_unexported,
            self.policy.keep_unexported_parquet,
        )?;
        let cutoff = now_ns.saturating_sub(nanos(self.policy.retain));
        let mut budget = Budget {
            rows: ROWS_PER_STEP,
            deadline: Instant::now() + self.step_time,
        };
        delete_runs(&tx, cutoff, &limits, &mut budget, &mut report)?;
        if budget.rows > 0 && !report.out_of_time(budget.deadline) {
            self.expire_samples(&tx, cutoff, &limits, &mut report)?;
        }
        delete_old_bookkeeping(&tx, cutoff, &limits, &mut report)?;
        // Over the cap but out of time: the episode goes on in the next step.
        let size_deferred = over && report.out_of_time(budget.deadline);
        if over && !size_deferred {
            self.prune_for_size(&tx, now_ns, &limits, &mut budget, &mut report)?;
        }
        if !report.more
            && report.deleted_samples.len() < SAMPLES_PER_STEP
            && !report.out_of_time(budget.deadline)
        {
            self.thin(&tx, now_ns, cutoff, &limits, &mut report)?;
        }
        if !size_deferred {
            self.close_size_episode(&tx, now_ns, over, &report)?;
        }
        tx.commit()?;
        report.pages_freed = vacuum_some(conn)?;
        report.more |= report.pages_freed > 0 && free_pages(conn)? > 0;
        Ok(report)
    }

    /// Whether the database is above the size target (or still above its low mark while
    /// an episode is under way).
    fn over_target(&self, conn: &Connection) -> rusqlite::Result<bool> {
        let Some(max) = self.policy.max_bytes else {
            return Ok(false);
        };
        let used = used_bytes(conn)? as f64;
        let mark = if self.size_episode.is_some() {
            SIZE_LOW
        } else {
            SIZE_HIGH
        };
        Ok(used > max as f64 * mark)
    }

    /// Prunes the oldest data whatever its age: the next samples in time order, and the
    /// runs that ended before the newest of them, so that runs and samples go together.
    fn prune_for_size(
        &mut self,
        tx: &Transaction<'_>,
        now_ns: i64,
        limits: &Limits,
        budget: &mut Budget,
        report: &mut PruneReport,
    ) -> rusqlite::Result<()> {
        let before = (report.runs, report.samples_expired, report.spans);
        let newest = now_ns.saturating_sub(NEWEST_KEPT_NS);
        let scanned = scan_samples(tx, self.size_until, newest, limits)?;
        let up_to = scanned.last().map_or(newest, |&(time, _)| time);
        delete_runs(tx, up_to, limits, budget, report)?;
        // As for expiry: when caught up, start again from the oldest.
        self.size_until = scanned.last().copied().unwrap_or((i64::MIN, i64::MIN));
        let ids = unreferenced(tx, scanned.into_iter().map(|(_, id)| id).collect())?;
        report.samples_expired += delete_samples(tx, &ids)?;
        report.deleted_samples.extend(ids);
        let pruned = (report.runs, report.samples_expired, report.spans) != before;
        report.for_size = pruned;
        // Keep going while this makes progress; when nothing more can go, the cap stops
        // ingest as a full disk would.
        report.more |= pruned;
        Ok(())
    }

    /// Records the end of a pruning-for-size episode as a system event.
    fn close_size_episode(
        &mut self,
        tx: &Transaction<'_>,
        now_ns: i64,
        over: bool,
        report: &PruneReport,
    ) -> rusqlite::Result<()> {
        if over && report.for_size {
            self.size_episode
                .get_or_insert_with(PruneReport::default)
                .add(report);
            return Ok(());
        }
        // Below the low mark again, or nothing more can go: the episode ends here.
        let Some(episode) = self.size_episode.take() else {
            return Ok(());
        };
        self.size_until = (i64::MIN, i64::MIN);
        let max_mib = self.policy.max_bytes.unwrap_or(0) >> 20;
        let attributes = serde_json::json!({
            "reason": "max_db_mib",
            "max_db_mib": max_mib,
            "runs": episode.runs,
            "spans": episode.spans,
            "events": episode.events,
            "samples": episode.samples_expired,
        });
        tx.prepare_cached(
            "INSERT INTO events (kind, name, value, unit, attributes, at_ns)
             VALUES ('system', 'storage.pruned', ?1, '{run}', ?2, ?3)",
        )?
        .execute(params![episode.runs as f64, attributes.to_string(), now_ns])?;
        tracing::warn!(
            max_db_mib = max_mib,
            runs = episode.runs,
            spans = episode.spans,
            samples = episode.samples_expired,
            "the database reached --max-db-mib; pruned the oldest data to make room"
        );
        Ok(())
    }

    /// Deletes samples older than `cutoff` that nothing refers to, a chunk at a time, in
    /// time order from where the last step stopped.
    fn expire_samples(
        &mut self,
        tx: &Transaction<'_>,
        cutoff: i64,
        limits: &Limits,
        report: &mut PruneReport,
    ) -> rusqlite::Result<()> {
        let scanned = scan_samples(tx, self.expired_until, cutoff, limits)?;
        match scanned.last() {
            Some(&last) => {
                self.expired_until = last;
                report.more = true;
            }
            // Caught up: the samples passed over were still referred to (a run that
            // began before the cutoff and had not ended). Their runs may have gone since,
            // so the next round starts again from the oldest.
            None => self.expired_until = (i64::MIN, i64::MIN),
        }
        let ids = unreferenced(tx, scanned.into_iter().map(|(_, id)| id).collect())?;
        report.samples_expired += delete_samples(tx, &ids)?;
        report.deleted_samples.extend(ids);
        Ok(())
    }

    /// Thins the next minutes of periodic samples older than `--retain-full`: scans them
    /// once, then deletes what the scan chose [`SAMPLES_PER_STEP`] at a time.
    fn thin(
        &mut self,
        tx: &Transaction<'_>,
        now_ns: i64,
        cutoff: i64,
        limits: &Limits,
        report: &mut PruneReport,
    ) -> rusqlite::Result<()> {
        let mut horizon = floor_minute(now_ns.saturating_sub(nanos(self.policy.retain_full)));
        if limits.samples_up_to < i64::MAX {
            // Samples not yet exported are not thinned yet either.
            let exported: Option<i64> = tx
                .prepare_cached(
                    "SELECT taken_at_ns FROM snapshots WHERE snapshot_id <= ?1
                                 ORDER BY snapshot_id DESC LIMIT 1",
                )?
                .query_row([limits.samples_up_to], |r| r.get(0))
                .optional()?;
            horizon = horizon.min(exported.map_or(i64::MIN, floor_minute));
        }
        // Older than the window is expiry's: not worth thinning first.
        let start = match self.thinned_until_ns {
            Some(t) => t.max(floor_minute(cutoff)),
            None => {
                let oldest: Option<i64> =
                    tx.query_row("SELECT min(taken_at_ns) FROM snapshots", [], |r| r.get(0))?;
                match oldest {
                    Some(t) => floor_minute(t),
                    None => return Ok(()),
                }
            }
        };
        if start >= horizon {
            self.thinned_until_ns = Some(start);
            return Ok(());
        }
        if self.thin_pending.0.is_empty() {
            self.thin_pending = thinning_candidates(tx, start, horizon, limits)?;
        }
        let (pending, end) = &mut self.thin_pending;
        let chunk: Vec<i64> = pending
            .drain(..pending.len().min(SAMPLES_PER_STEP))
            .collect();
        // A span may have come to refer to one since the scan (late data is matched to
        // the sample nearest its time). Should this step's transaction fail, the chunk is
        // not deleted and not tried again: kept, not lost.
        let doomed = unreferenced(tx, chunk)?;
        report.samples_thinned += delete_samples(tx, &doomed)?;
        report.deleted_samples.extend(doomed);
        if pending.is_empty() {
            self.thinned_until_ns = Some(*end);
        }
        report.more |= !pending.is_empty() || self.thinned_until_ns.unwrap_or(start) < horizon;
        Ok(())
    }
}

/// Limits from the exporters' cursors: what must stay until it has been sent.
struct Limits {
    /// Outbox entries after this are runs not yet exported (None: export not configured).
    traces_after: Option<i64>,
    /// Samples after this id are not yet exported as metrics.
    samples_up_to: i64,
}

impl Limits {
    fn read(tx: &Transaction<'_>, otlp: bool, parquet: bool) -> rusqlite::Result<Self> {
        if !otlp && !parquet {
            return Ok(Self {
                traces_after: None,
                samples_up_to: i64::MAX,
            });
        }
        let cursor = |name: &str| -> rusqlite::Result<i64> {
            Ok(tx
                .prepare_cached("SELECT seq FROM export_cursor WHERE exporter = ?1")?
                .query_row([name], |r| r.get(0))
                .optional()?
                .unwrap_or(0))
        };
        // The slowest of the configured exporters decides what may go.
        let mut traces_after = i64::MAX;
        let mut samples_up_to = i64::MAX;
        if otlp {
            traces_after = traces_after.min(cursor(TRACES_CURSOR)?);
            samples_up_to = samples_up_to.min(cursor(METRICS_CURSOR)?);
        }
        if parquet {
            traces_after = traces_after.min(cursor(PARQUET_RUNS_CURSOR)?);
            samples_up_to = samples_up_to.min(cursor(PARQUET_SNAPSHOTS_CURSOR)?);
        }
        Ok(Self {
            traces_after: Some(traces_after),
            samples_up_to,
        })
    }
}

/// What one step may still do.
struct Budget {
    /// Spans and events it may still delete.
    rows: usize,
    /// When it stops taking on more work (more runs, the next phase).
    deadline: Instant,
}

/// Deletes ended runs with their spans and events, oldest first, within the budget's rows
/// and time. A run with more rows than the budget loses its spans over several steps and
/// goes last.
fn delete_runs(
    tx: &Transaction<'_>,
    ended_before: i64,
    limits: &Limits,
    budget: &mut Budget,
    report: &mut PruneReport,
) -> rusqlite::Result<()> {
    let unexported = if limits.traces_after.is_some() {
        "AND run_id NOT IN (SELECT run_id FROM export_outbox WHERE seq > ?2)"
    } else {
        "AND ?2 IS NOT NULL"
    };
    let sql = format!(
        "SELECT run_id FROM runs WHERE ended_at_ns < ?1 AND status != 'running' {unexported}
         ORDER BY ended_at_ns LIMIT ?3"
    );
    let runs: Vec<String> = tx
        .prepare_cached(&sql)?
        .query_map(
            params![ended_before, limits.traces_after.unwrap_or(0), 64_i64],
            |r| r.get(0),
        )?
        .collect::<rusqlite::Result<_>>()?;
    for run_id in runs {
        if budget.rows == 0 || report.out_of_time(budget.deadline) {
            report.more = true;
            return Ok(());
        }
        let spans = tx
            .prepare_cached(
                "DELETE FROM spans WHERE rowid IN
                     (SELECT rowid FROM spans WHERE run_id = ?1 LIMIT ?2)",
            )?
            .execute(params![run_id, budget.rows as i64])?;
        budget.rows = budget.rows.saturating_sub(spans);
        report.spans += spans as u64;
        let events = tx
            .prepare_cached(
                "DELETE FROM events WHERE event_id IN
                     (SELECT event_id FROM events WHERE run_id = ?1 LIMIT ?2)",
            )?
            .execute(params![run_id, budget.rows.max(1) as i64])?;
        budget.rows = budget.rows.saturating_sub(events);
        report.events += events as u64;
        let rest: bool = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM spans WHERE run_id = ?1)
                     OR EXISTS (SELECT 1 FROM events WHERE run_id = ?1)",
            )?
            .query_row([&run_id], |r| r.get(0))?;
        if rest {
            report.more = true;
            return Ok(());
        }
        tx.prepare_cached("DELETE FROM runs WHERE run_id = ?1")?
            .execute([&run_id])?;
        budget.rows = budget.rows.saturating_sub(1);
        report.runs += 1;
        report.more = true;
    }
    Ok(())
}

/// Up to [`SAMPLES_PER_STEP`] samples after `after` and taken before `before`, as
/// (time, id) in time order.
fn scan_samples(
    tx: &Transaction<'_>,
    after: (i64, i64),
    before: i64,
    limits: &Limits,
) -> rusqlite::Result<Vec<(i64, i64)>> {
    tx.prepare_cached(
        "SELECT taken_at_ns, snapshot_id FROM snapshots
         WHERE taken_at_ns >= ?1 AND (taken_at_ns > ?1 OR snapshot_id > ?2)
           AND taken_at_ns < ?3 AND snapshot_id <= ?4
         ORDER BY taken_at_ns, snapshot_id LIMIT ?5",
    )?
    .query_map(
        params![
            after.0,
            after.1,
            before,
            limits.samples_up_to,
            SAMPLES_PER_STEP as i64
        ],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?
    .collect()
}

/// `ids` less those a run, span or event refers to.
fn unreferenced(tx: &Transaction<'_>, ids: Vec<i64>) -> rusqlite::Result<Vec<i64>> {
    let referenced = referenced_among(tx, &ids)?;
    Ok(ids
        .into_iter()
        .filter(|id| !referenced.contains(id))
        .collect())
}

/// Which of `ids` a run, span or event refers to: one indexed lookup per column and id
/// (cheaper than reading every reference in the ids' range, which at high run rates holds
/// thousands of spans).
fn referenced_among(tx: &Transaction<'_>, ids: &[i64]) -> rusqlite::Result<HashSet<i64>> {
    let mut stmt = tx.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM spans WHERE start_snapshot_id = ?1)
             OR EXISTS (SELECT 1 FROM spans WHERE end_snapshot_id = ?1)
             OR EXISTS (SELECT 1 FROM runs WHERE start_snapshot_id = ?1)
             OR EXISTS (SELECT 1 FROM runs WHERE end_snapshot_id = ?1)
             OR EXISTS (SELECT 1 FROM events WHERE snapshot_id = ?1)",
    )?;
    let mut found = HashSet::new();
    for &id in ids {
        if stmt.query_row([id], |r| r.get::<_, bool>(0))? {
            found.insert(id);
        }
    }
    Ok(found)
}

/// Periodic samples thinning looks at in one step, in whole minutes (one minute at the
/// shortest sampling interval, 50 ms, is 1,200).
const THIN_SCAN: i64 = 1_200;

/// The periodic samples thinning deletes from the whole minutes after `start` (at most
/// [`THIN_SCAN`] samples' worth, and before `horizon`), and where those minutes end: in
/// each minute all but each dimension's worst, and never one something refers to. Only
/// periodic samples are read: the others (taken for a run or span) are kept anyway.
fn thinning_candidates(
    tx: &Transaction<'_>,
    start: i64,
    horizon: i64,
    limits: &Limits,
) -> rusqlite::Result<(Vec<i64>, i64)> {
    struct Sample {
        id: i64,
        minute: i64,
        periodic: bool,
        cpu: Option<f64>,
        ram_available: i64,
        cgroup_headroom: Option<i64>,
    }
    let load = |end: i64, limit: i64| -> rusqlite::Result<Vec<Sample>> {
        tx.prepare_cached(
            "SELECT snapshot_id, taken_at_ns, reason = 'interval',
                    coalesce(cpu_utilization_ratio, cpu_load_1m), ram_available_bytes,
                    cgroup_memory_limit_bytes - cgroup_memory_used_bytes
             FROM snapshots WHERE taken_at_ns >= ?1 AND taken_at_ns < ?2 AND snapshot_id <= ?3
               AND reason = 'interval'
             ORDER BY taken_at_ns LIMIT ?4",
        )?
        .query_map(params![start, end, limits.samples_up_to, limit], |r| {
            Ok(Sample {
                id: r.get(0)?,
                minute: floor_minute(r.get(1)?),
                periodic: r.get(2)?,
                cpu: r.get(3)?,
                ram_available: r.get(4)?,
                cgroup_headroom: r.get(5)?,
            })
        })?
        .collect()
    };
    let mut samples = load(horizon, THIN_SCAN)?;
    let mut end = horizon;
    if samples.len() as i64 == THIN_SCAN {
        // The last minute may be cut short: leave it to the next step, unless it is the
        // only one (then load all of it).
        let last = samples.last().map_or(start, |s| s.minute);
        if last > start {
            samples.retain(|s| s.minute < last);
            end = last;
        } else {
            end = start + MINUTE_NS;
            samples = load(end, i64::MAX)?;
        }
    }
    if samples.is_empty() {
        return Ok((Vec::new(), end));
    }
    let mut keep: HashSet<i64> = samples
        .iter()
        .filter(|s| !s.periodic)
        .map(|s| s.id)
        .collect();
    // Per minute, each dimension's worst: (minute, dimension) -> (id, value), lower worse.
    let mut worst: BTreeMap<(i64, i64), (i64, f64)> = BTreeMap::new();
    let mut note = |minute: i64, dimension: i64, id: i64, badness: f64| {
        let entry = worst.entry((minute, dimension)).or_insert((id, badness));
        if badness < entry.1 {
            *entry = (id, badness);
        }
    };
    for s in &samples {
        if let Some(cpu) = s.cpu {
            note(s.minute, -1, s.id, -cpu);
        }
        note(s.minute, -2, s.id, s.ram_available as f64);
        if let Some(headroom) = s.cgroup_headroom {
            note(s.minute, -3, s.id, headroom as f64);
        }
    }
    // Per GPU, the sample with the least free memory.
    let mut stmt = tx.prepare_cached(
        "SELECT gpu_index, memory_free_bytes FROM gpu_samples
         WHERE snapshot_id = ?1 AND memory_free_bytes IS NOT NULL",
    )?;
    for s in &samples {
        let rows = stmt.query_map([s.id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?;
        for row in rows {
            let (gpu, free) = row?;
            note(s.minute, gpu, s.id, free as f64);
        }
    }
    keep.extend(worst.into_values().map(|(id, _)| id));
    let ids: Vec<i64> = samples
        .iter()
        .filter(|s| s.periodic && !keep.contains(&s.id))
        .map(|s| s.id)
        .collect();
    Ok((unreferenced(tx, ids)?, end))
}

/// Deletes samples with every row that hangs off them; returns how many samples went.
fn delete_samples(tx: &Transaction<'_>, ids: &[i64]) -> rusqlite::Result<u64> {
    let mut deleted = 0;
    for &id in ids {
        for table in [
            "gpu_samples",
            "mig_samples",
            "gpu_processes",
            "process_samples",
            "process_gpu_samples",
        ] {
            tx.prepare_cached(&format!("DELETE FROM {table} WHERE snapshot_id = ?1"))?
                .execute([id])?;
        }
        deleted += tx
            .prepare_cached("DELETE FROM snapshots WHERE snapshot_id = ?1")?
            .execute([id])? as u64;
    }
    Ok(deleted)
}

/// Old system events, clients not seen within the window and with no run open, and outbox
/// entries the receiver has acknowledged.
fn delete_old_bookkeeping(
    tx: &Transaction<'_>,
    cutoff: i64,
    limits: &Limits,
    report: &mut PruneReport,
) -> rusqlite::Result<()> {
    let events = tx
        .prepare_cached(
            "DELETE FROM events WHERE event_id IN (SELECT event_id FROM events
                 WHERE run_id IS NULL AND at_ns < ?1 LIMIT 500)",
        )?
        .execute([cutoff])?;
    report.events += events as u64;
    report.more |= events == 500;
    tx.prepare_cached(
        "DELETE FROM clients WHERE client_id IN (SELECT client_id FROM clients
             WHERE last_seen_ns < ?1 AND client_id NOT IN
                 (SELECT client_id FROM runs WHERE status = 'running' AND client_id IS NOT NULL)
             LIMIT 500)",
    )?
    .execute([cutoff])?;
    if let Some(acknowledged) = limits.traces_after {
        // The last acknowledged entry stays: `seq` is a rowid, and SQLite numbers a new row
        // after the highest one left, so an emptied outbox would start again at 1, behind
        // the cursor, and its runs would never be sent.
        tx.prepare_cached(
            "DELETE FROM export_outbox WHERE seq IN
                 (SELECT seq FROM export_outbox WHERE seq < ?1 ORDER BY seq LIMIT 1000)",
        )?
        .execute([acknowledged])?;
    }
    Ok(())
}

/// Hands up to [`VACUUM_PAGES_PER_STEP`] free pages back to the file system, on databases
/// created with incremental auto-vacuum; returns how many.
fn vacuum_some(conn: &Connection) -> rusqlite::Result<u64> {
    let mode: i64 = conn.pragma_query_value(None, "auto_vacuum", |r| r.get(0))?;
    if mode != 2 {
        return Ok(0);
    }
    let before = free_pages(conn)?;
    if before == 0 {
        return Ok(0);
    }
    conn.execute_batch(&format!(
        "PRAGMA incremental_vacuum({VACUUM_PAGES_PER_STEP})"
    ))?;
    Ok(before.saturating_sub(free_pages(conn)?))
}

fn free_pages(conn: &Connection) -> rusqlite::Result<u64> {
    let n: i64 = conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
    Ok(n.max(0).unsigned_abs())
}

/// Bytes in pages that hold data (the file less its free pages).
pub fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let pages: i64 = conn.pragma_query_value(None, "page_count", |r| r.get(0))?;
    let size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
    let free = i64::try_from(free_pages(conn)?).unwrap_or(0);
    Ok(u64::try_from((pages - free).max(0) * size).unwrap_or(0))
}

fn floor_minute(ns: i64) -> i64 {
    ns.div_euclid(MINUTE_NS) * MINUTE_NS
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
