//! Section 5: per GPU, time below the threshold and the runs it touched; failed runs that
//! were short of GPU memory at their end (likely OOM); runs whose agent died while RAM or
//! the container's memory was nearly gone (likely OOM kill).
//!
//! The runs pass once, by start time, from the database ([`Runs`]): a million runs are
//! never held, only the ones listed.

use super::columns::TimeOrder;
use super::load::{Data, RunFigures, Runs, SnapFigures};
use super::*;
use runlens_store::domain::{EndedBy, Status};

/// Runs shown on the timeline chart, at most.
const CHART_RUNS: usize = 400;

/// The first `keep` of some items, each made when listed, and how many there are: only
/// the entries listed are built (a million runs below the threshold would be a million
/// ids).
struct Capped<T> {
    list: Vec<T>,
    count: usize,
    keep: usize,
}

impl<T> Capped<T> {
    fn new(keep: usize) -> Self {
        Self {
            list: Vec::new(),
            count: 0,
            keep,
        }
    }

    fn push(&mut self, make: impl FnOnce() -> T) {
        if self.list.len() < self.keep {
            self.list.push(make());
        }
        self.count += 1;
    }
}

/// One GPU's samples below the threshold, and the runs they touched.
struct GpuBelow<'a> {
    risk: GpuRisk,
    /// When it was below, in time order.
    below_times: &'a [i64],
    runs: Capped<String>,
}

/// What the pass over the runs gives beside the OOM section.
pub(super) struct RunsSeen {
    /// Runs in the window.
    pub count: usize,
    /// Every n/400th run for the timeline: (start, end, failed, name, id).
    pub chart: Vec<(i64, i64, bool, String, String)>,
}

pub(super) fn oom(
    data: &Data,
    runs: &dyn Runs,
    threshold: u64,
    cap_ids: bool,
) -> runlens_store::Result<(Oom, RunsSeen)> {
    let keep = if cap_ids { MAX_IDS } else { usize::MAX };
    let mut gpus = gpus_below(data, keep);
    // The snapshots by time, to find those just before a run's end.
    let by_time = TimeOrder::of(&data.snapshots);
    let total = runs.count()?;
    let chart_every = total.div_ceil(CHART_RUNS).max(1);
    let mut seen = RunsSeen {
        count: 0,
        chart: Vec::new(),
    };
    let mut likely_oom = Capped::new(keep);
    let mut likely_killed = Capped::new(keep);
    runs.each(&mut |r| {
        if seen.count.is_multiple_of(chart_every) {
            seen.chart.push((
                r.started_at_ns,
                r.ended_at_ns.unwrap_or(r.started_at_ns),
                r.status == Status::Failed,
                r.name.to_string(),
                r.run_id.to_string(),
            ));
        }
        seen.count += 1;
        for gpu in &mut gpus {
            let end = r.ended_at_ns.unwrap_or(i64::MAX);
            let from = gpu.below_times.partition_point(|&t| t < r.started_at_ns);
            if gpu.below_times.get(from).is_some_and(|&t| t <= end) {
                gpu.runs.push(|| r.run_id.to_string());
            }
        }
        if r.status != Status::Failed {
            return;
        }
        // The least GPU free memory, RAM and cgroup headroom at the run's end: one pass.
        let least = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let (free, ram, cgroup) = end_window(data, &by_time, r).fold(
            (None::<u64>, None, None),
            |(free, ram, cgroup), s| {
                (
                    free.into_iter().chain(s.gpu_free_min_bytes).min(),
                    least(ram, s.ram_available_ratio),
                    least(cgroup, s.cgroup_headroom_ratio),
                )
            },
        );
        if let Some(free) = free.filter(|&f| f < threshold) {
            likely_oom.push(|| LikelyOom {
                run_id: r.run_id.to_string(),
                name: r.name.to_string(),
                error: r.error.as_deref().map(str::to_owned),
                ended_at_ns: r.ended_at_ns,
                gpu_free_min_mib: free as f64 / MIB,
            });
        }
        if r.ended_by == Some(EndedBy::ProcessExit) {
            let pressed = |v: Option<f64>| v.is_some_and(|v| v < MEMORY_PRESSURE);
            if pressed(ram) || pressed(cgroup) {
                likely_killed.push(|| LikelyOomKilled {
                    run_id: r.run_id.to_string(),
                    name: r.name.to_string(),
                    error: r.error.as_deref().map(str::to_owned),
                    ended_at_ns: r.ended_at_ns,
                    ram_available_min_ratio: ram,
                    cgroup_headroom_min_ratio: cgroup,
                });
            }
        }
    })?;
    let gpus = gpus
        .into_iter()
        .map(|g| GpuRisk {
            runs_below: g.runs.list,
            runs_below_count: g.runs.count,
            ..g.risk
        })
        .collect();
    let oom = Oom {
        gpus,
        likely_oom_runs: likely_oom.list,
        likely_oom_runs_count: likely_oom.count,
        likely_oom_killed_runs: likely_killed.list,
        likely_oom_killed_runs_count: likely_killed.count,
    };
    Ok((oom, seen))
}

/// Per GPU: how often and how long it was below the threshold (the runs it touched are
/// left to the pass over the runs).
fn gpus_below(data: &Data, keep: usize) -> Vec<GpuBelow<'_>> {
    data.gpus
        .iter()
        .map(|t| {
            let names = data.gpu_names.iter().find(|n| n.gpu_index == t.gpu_index);
            let share_below = t.below_times.len() as f64 / t.samples.max(1) as f64;
            GpuBelow {
                risk: GpuRisk {
                    gpu_index: t.gpu_index,
                    uuid: names.and_then(|n| n.uuid.clone()),
                    name: names.and_then(|n| n.name.clone()),
                    samples: t.samples,
                    samples_below: t.below_times.len(),
                    share_below,
                    min_free_mib: t.min_free_bytes.map(|b| b as f64 / MIB),
                    first_below_ns: t.below_times.first().copied(),
                    last_below_ns: t.below_times.last().copied(),
                    seconds_below: t.seconds_below,
                    runs_below_count: 0,
                    runs_below: Vec::new(),
                    hardware_limit: share_below > HARDWARE_LIMIT_SHARE,
                },
                below_times: &t.below_times,
                runs: Capped::new(keep),
            }
        })
        .collect()
}

/// The snapshots a failed run's end is judged by: its end snapshot, and those taken in the
/// [`OOM_LOOKBACK_NS`] before its end while it ran.
fn end_window<'a>(
    data: &'a Data,
    by_time: &'a TimeOrder,
    r: &RunFigures,
) -> impl Iterator<Item = SnapFigures> + 'a {
    let at_end = r
        .end_snapshot_id
        .and_then(|id| data.snapshot_index.get(id))
        .map(|i| data.snapshots.get(i as usize));
    // Only while the run ran: pressure before it started is not its story.
    let window = r.ended_at_ns.map(|ended| {
        let since = (ended - OOM_LOOKBACK_NS).max(r.started_at_ns);
        by_time.between(&data.snapshots, since, ended)
    });
    at_end
        .into_iter()
        .chain(window.into_iter().flatten().map(|p| data.snapshots.get(p)))
}

#[cfg(test)]
mod tests {
    use super::super::load::fixture::{self, empty};
    use super::*;

    const THRESHOLD: u64 = 500 << 20;

    fn gpu_free(mib: u64) -> SnapFigures {
        SnapFigures {
            gpu_free_min_bytes: Some(mib << 20),
            gpu_free_min_index: Some(0),
            ..Default::default()
        }
    }

    fn ram_available(ratio: f64) -> SnapFigures {
        SnapFigures {
            ram_available_ratio: Some(ratio),
            ..Default::default()
        }
    }

    #[test]
    fn a_failed_run_short_of_gpu_memory_in_its_last_seconds_is_likely_oom() {
        let mut data = empty();
        let mut runs = Vec::new();
        for t in 0..8 {
            fixture::snapshot(&mut data, f64::from(t), gpu_free(8000));
        }
        fixture::snapshot(&mut data, 8.0, gpu_free(100)); // the squeeze, 2 s before the end
        let end = fixture::snapshot(&mut data, 10.0, gpu_free(8000)); // memory freed by then
        let failed = (Status::Failed, EndedBy::Client, "CUDA out of memory");
        fixture::run(&mut runs, "squeezed", (0.0, 10.0), failed, Some(end));
        // Started after the squeeze: the low sample is not its story.
        fixture::run(&mut runs, "late", (9.0, 10.0), failed, Some(end));
        // Squeezed but ended well.
        let ok = (Status::Ok, EndedBy::Client, "");
        fixture::run(&mut runs, "fine", (0.0, 10.0), ok, Some(end));
        // Failed long after the squeeze (more than OOM_LOOKBACK_NS later).
        let much_later = fixture::snapshot(&mut data, 30.0, gpu_free(8000));
        fixture::run(&mut runs, "other", (0.0, 30.0), failed, Some(much_later));

        let oom = oom(&data, &runs, THRESHOLD, true).unwrap().0;
        let flagged: Vec<&str> = oom
            .likely_oom_runs
            .iter()
            .map(|r| r.run_id.as_str())
            .collect();
        assert_eq!(flagged, ["squeezed"]);
        assert_eq!(oom.likely_oom_runs[0].gpu_free_min_mib, 100.0);
    }

    #[test]
    fn only_runs_the_sidecar_ended_for_a_dead_process_are_likely_oom_kills() {
        let mut data = empty();
        let mut runs = Vec::new();
        fixture::snapshot(&mut data, 0.0, ram_available(0.5));
        fixture::snapshot(&mut data, 9.0, ram_available(0.02));
        let end = fixture::snapshot(&mut data, 10.0, ram_available(0.6));
        let words = "the agent process (pid 7) exited without ending this run";
        let by_sidecar = (Status::Failed, EndedBy::ProcessExit, words);
        fixture::run(&mut runs, "killed", (0.0, 10.0), by_sidecar, Some(end));
        // The same words from the agent itself: the report no longer reads error text.
        let by_agent = (Status::Failed, EndedBy::Client, words);
        fixture::run(&mut runs, "own-words", (0.0, 10.0), by_agent, Some(end));
        // The sidecar ended it after a timeout: the process did not die under pressure.
        let timed_out = (Status::Failed, EndedBy::SessionTimeout, "session closed");
        fixture::run(&mut runs, "away", (0.0, 10.0), timed_out, Some(end));

        let oom = oom(&data, &runs, THRESHOLD, true).unwrap().0;
        let killed: Vec<&str> = oom
            .likely_oom_killed_runs
            .iter()
            .map(|r| r.run_id.as_str())
            .collect();
        assert_eq!(killed, ["killed"]);
        assert_eq!(
            oom.likely_oom_killed_runs[0].ram_available_min_ratio,
            Some(0.02)
        );
    }

    #[test]
    fn a_gpu_below_the_threshold_in_most_samples_is_a_hardware_limit() {
        let mut data = empty();
        let mut runs = Vec::new();
        let mut tracks = runlens_store::scan::gpu_tracks::GpuTracks::new(THRESHOLD);
        for (t, free_mib) in [(0, 100), (1, 100), (2, 9000), (3, 100), (200, 100)] {
            tracks.add(runlens_store::scan::gpu_tracks::GpuSample {
                gpu_index: 0,
                taken_at_ns: t * 1_000_000_000,
                free_bytes: Some(free_mib << 20),
                used_bytes: None,
                total_bytes: None,
            });
        }
        data.gpus = tracks.finish();
        data.gpu_names.push(super::super::load::GpuNames {
            gpu_index: 0,
            uuid: Some("GPU-0".into()),
            name: Some("H200".into()),
        });
        let ok = (Status::Ok, EndedBy::Client, "");
        fixture::run(&mut runs, "during", (0.5, 1.5), ok, None);
        fixture::run(&mut runs, "between", (1.5, 2.5), ok, None);
        let oom = oom(&data, &runs, THRESHOLD, true).unwrap().0;
        let gpu = &oom.gpus[0];
        assert_eq!((gpu.samples, gpu.samples_below), (5, 4));
        assert!(gpu.hardware_limit);
        // 1 s + 1 s (to the next sample), the 197 s gap counted as at most 60 s, the last
        // sample has no next.
        assert_eq!(gpu.seconds_below, 62.0);
        assert_eq!(gpu.runs_below, ["during"]);
        assert_eq!(
            (gpu.uuid.as_deref(), gpu.name.as_deref()),
            (Some("GPU-0"), Some("H200"))
        );
    }
}
