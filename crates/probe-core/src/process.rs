//! The agent's own processes: RSS and CPU of each watched PID summed over its descendants,
//! read from /proc without ever scanning every process on the machine.
//!
//! Descendants are found through `/proc/<pid>/task/<tid>/children` (a walk down the tree
//! from the watched PID) and refreshed every [`TREE_REFRESH`]; each sample then reads only
//! `statm` (resident memory) of the processes in the tree, and `stat` (CPU time) when the
//! last reading is at least [`SLOW_FIGURES_EVERY`] old.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::SLOW_FIGURES_EVERY;

use crate::procfile::ProcFile;
use crate::snapshot::ProcessSample;

/// How often the process tree below a watched PID is walked again.
const TREE_REFRESH: Duration = Duration::from_secs(5);

/// Linux reports CPU time in USER_HZ ticks, 100 per second on the architectures runlens
/// targets.
const TICKS_PER_SECOND: f64 = 100.0;

/// Bytes per page for `statm` (4 KiB on x86-64 and most arm64 kernels).
const PAGE_SIZE: u64 = 4096;

/// The tree walk stops here: a runaway fork bomb must not make sampling slow.
const MAX_TREE: usize = 4096;

/// Processes of one tree whose `stat` and `statm` are kept open, at most this many: each
/// costs two file descriptors.
const MAX_OPEN_PER_TREE: usize = 64;

struct Watched {
    tree: Vec<u32>,
    /// `stat` and `statm` of the first processes of the tree, kept open: a fresh sample
    /// per run made opening them (a path walk each) most of the process probe's cost.
    files: HashMap<u32, ProcessFiles>,
    tree_read: Option<Instant>,
    /// CPU ticks of the tree at the last reading of `stat`, and when.
    last_ticks: Option<(u64, Instant)>,
    /// The rate measured at that reading: samples closer together than
    /// [`crate::SLOW_FIGURES_EVERY`] carry it (ticks are 10 ms apart, so a rate over a few
    /// milliseconds would be 0 or several cores, noise either way) and skip `stat`.
    last_ratio: Option<f64>,
}

/// One process's `stat` and `statm`, re-read in place.
struct ProcessFiles {
    stat: ProcFile,
    statm: ProcFile,
}

impl ProcessFiles {
    fn new(dir: &Path) -> Self {
        Self {
            stat: ProcFile::new(dir.join("stat")),
            statm: ProcFile::new(dir.join("statm")),
        }
    }

    /// (resident bytes, CPU ticks when `ticks`), or `None` once the process is gone.
    fn read(&mut self, ticks: bool) -> Option<(u64, Option<u64>)> {
        let rss = parse_rss(self.statm.read()?)?;
        if !ticks {
            return Some((rss, None));
        }
        Some((rss, Some(parse_ticks(self.stat.read()?)?)))
    }
}

/// Watches agent processes by PID.
pub struct ProcessProbe {
    proc_root: PathBuf,
    watched: BTreeMap<u32, Watched>,
    /// PIDs already reported as not visible, so it is said once, not every second.
    reported_invisible: HashSet<u32>,
    /// How long a CPU-time reading (and the rate from it) serves later samples.
    slow_every: Duration,
}

/// What happened when a PID was asked to be watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchOutcome {
    /// The PID is visible and now watched.
    Watching,
    /// Already watched.
    AlreadyWatched,
    /// The PID is not visible from here (no shared process namespace).
    NotVisible,
}

impl ProcessProbe {
    /// Watches processes under `/proc`.
    pub fn new() -> Self {
        Self::with_root("/proc")
    }

    /// Watches processes under another proc root (tests).
    pub fn with_root(root: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: root.into(),
            watched: BTreeMap::new(),
            reported_invisible: HashSet::new(),
            slow_every: SLOW_FIGURES_EVERY,
        }
    }

    /// Starts watching `pid` and its descendants. A PID that is not visible is logged
    /// once with what to do, and not watched.
    pub fn watch(&mut self, pid: u32) -> WatchOutcome {
        if self.watched.contains_key(&pid) {
            return WatchOutcome::AlreadyWatched;
        }
        if pid == 0 || !self.proc_root.join(pid.to_string()).exists() {
            if self.reported_invisible.insert(pid) {
                tracing::warn!(
                    pid,
                    "agent process is not visible from the sidecar, so its memory and CPU are \
                     not recorded: share the process namespace (Kubernetes: \
                     shareProcessNamespace: true) or run runlens in the agent's container"
                );
            }
            return WatchOutcome::NotVisible;
        }
        self.watched.insert(
            pid,
            Watched {
                tree: vec![pid],
                files: HashMap::new(),
                tree_read: None,
                last_ticks: None,
                last_ratio: None,
            },
        );
        WatchOutcome::Watching
    }

    /// How long a CPU-time reading serves later samples (default [`SLOW_FIGURES_EVERY`];
    /// never shorter).
    pub fn set_slow_every(&mut self, every: Duration) {
        self.slow_every = every.max(SLOW_FIGURES_EVERY);
    }

    /// PIDs being watched.
    pub fn watched(&self) -> Vec<u32> {
        self.watched.keys().copied().collect()
    }

    /// Reads every watched tree now. A watched process that has exited is dropped.
    pub fn sample(&mut self) -> Vec<ProcessSample> {
        let now = Instant::now();
        let mut out = Vec::with_capacity(self.watched.len());
        let mut gone = Vec::new();
        for (&pid, w) in &mut self.watched {
            if w.tree_read
                .is_none_or(|t| now.duration_since(t) >= TREE_REFRESH)
            {
                w.tree = descendants(&self.proc_root, pid);
                w.tree_read = Some(now);
                let tree = &w.tree;
                w.files.retain(|p, _| tree.binary_search(p).is_ok());
            }
            let read_ticks_now = w
                .last_ticks
                .is_none_or(|(_, at)| now.duration_since(at) >= self.slow_every);
            let mut rss_bytes = 0;
            let mut ticks = 0;
            let mut alive = 0u32;
            let mut root_read = false;
            for &p in &w.tree {
                let dir = self.proc_root.join(p.to_string());
                let figures = if w.files.contains_key(&p) || w.files.len() < MAX_OPEN_PER_TREE {
                    let files = w.files.entry(p).or_insert_with(|| ProcessFiles::new(&dir));
                    files.read(read_ticks_now)
                } else if read_ticks_now {
                    read_rss(&dir).zip(read_ticks(&dir).map(Some))
                } else {
                    read_rss(&dir).map(|rss| (rss, None))
                };
                if let Some((rss, t)) = figures {
                    rss_bytes += rss;
                    ticks += t.unwrap_or(0);
                    alive += 1;
                    root_read |= p == pid;
                }
            }
            // On /proc the watched process's own files stop reading when it exits. A fixture
            // directory's open files still read once it is removed: the directory itself is
            // checked too, at the slow figures' cadence (a path walk under /proc each sample
            // cost a fiftieth of the sidecar's CPU at 10 spans/s).
            if alive == 0
                || !root_read
                || (read_ticks_now && !self.proc_root.join(pid.to_string()).exists())
            {
                tracing::info!(pid, "watched agent process has exited");
                gone.push(pid);
                continue;
            }
            if read_ticks_now {
                // Ticks of processes that exited since the last reading drop out of the
                // sum; a negative difference is reported as no figure rather than a wrong one.
                w.last_ratio = w.last_ticks.and_then(|(before, at)| {
                    let seconds = now.duration_since(at).as_secs_f64();
                    (ticks >= before && seconds > 0.0)
                        .then(|| (ticks - before) as f64 / TICKS_PER_SECOND / seconds)
                });
                w.last_ticks = Some((ticks, now));
            }
            let cpu_ratio = w.last_ratio;
            out.push(ProcessSample {
                pid,
                process_count: alive,
                rss_bytes,
                cpu_ratio,
                gpu_memory_bytes: None,
                gpus: Vec::new(),
                tree: w.tree.clone(),
            });
        }
        for pid in gone {
            self.watched.remove(&pid);
        }
        out
    }
}

impl Default for ProcessProbe {
    fn default() -> Self {
        Self::new()
    }
}

/// `pid` and all its descendants, walking `task/*/children`.
fn descendants(root: &Path, pid: u32) -> Vec<u32> {
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() && tree.len() < MAX_TREE {
        let tasks = root.join(tree[i].to_string()).join("task");
        if let Ok(entries) = std::fs::read_dir(&tasks) {
            for entry in entries.flatten() {
                if let Ok(text) = std::fs::read_to_string(entry.path().join("children")) {
                    tree.extend(
                        text.split_whitespace()
                            .filter_map(|c| c.parse::<u32>().ok()),
                    );
                }
            }
        }
        i += 1;
    }
    tree.sort_unstable();
    tree.dedup();
    tree
}

/// Resident memory from `statm` (second field, in pages).
fn read_rss(dir: &Path) -> Option<u64> {
    parse_rss(&std::fs::read_to_string(dir.join("statm")).ok()?)
}

fn parse_rss(statm: &str) -> Option<u64> {
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * PAGE_SIZE)
}

/// CPU time (user + system) a process has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    read_ticks(&Path::new("/proc").join(pid.to_string())).map(|t| t as f64 / TICKS_PER_SECOND)
}

/// When a live process started (`starttime` from `/proc/<pid>/stat`, in ticks since boot);
/// `None` when no such process runs here, or it has exited and awaits its parent (zombie).
/// Two readings that differ mean the PID was reused by another process.
pub fn process_start_ticks(pid: u32) -> Option<u64> {
    start_ticks(&Path::new("/proc").join(pid.to_string()))
}

fn start_ticks(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("stat")).ok()?;
    let rest = text.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    if matches!(fields.next()?, "Z" | "X" | "x") {
        return None;
    }
    // After the state (field 3) comes field 4; starttime is field 22.
    fields.nth(18)?.parse().ok()
}

/// utime + stime from `stat`, in ticks. The command name may contain spaces and
/// parentheses; the fields after its last `)` are fixed.
fn read_ticks(dir: &Path) -> Option<u64> {
    parse_ticks(&std::fs::read_to_string(dir.join("stat")).ok()?)
}

/// utime + stime from a `stat` line (after the command, which may hold spaces and ')').
fn parse_ticks(stat: &str) -> Option<u64> {
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_proc(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("runlens-proc-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn process(root: &Path, pid: u32, children: &[u32], rss_pages: u64, ticks: (u64, u64)) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(dir.join("task").join(pid.to_string())).unwrap();
        let kids: Vec<String> = children.iter().map(u32::to_string).collect();
        std::fs::write(
            dir.join("task").join(pid.to_string()).join("children"),
            kids.join(" "),
        )
        .unwrap();
        std::fs::write(dir.join("statm"), format!("100 {rss_pages} 5 1 0 50 0\n")).unwrap();
        std::fs::write(
            dir.join("stat"),
            format!(
                "{pid} (agent (py)) S 1 1 1 0 -1 0 0 0 0 0 {} {} 0 0 20 0 1 0\n",
                ticks.0, ticks.1
            ),
        )
        .unwrap();
    }

    #[test]
    fn children_are_summed_and_the_tree_is_walked() {
        let root = fake_proc("tree");
        process(&root, 10, &[11, 12], 100, (50, 10));
        process(&root, 11, &[13], 200, (5, 5));
        process(&root, 12, &[], 300, (0, 0));
        process(&root, 13, &[], 400, (1, 1));
        let mut p = ProcessProbe::with_root(&root);
        assert_eq!(p.watch(10), WatchOutcome::Watching);
        assert_eq!(p.watch(10), WatchOutcome::AlreadyWatched);
        let s = p.sample();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].tree, vec![10, 11, 12, 13]);
        assert_eq!(s[0].process_count, 4);
        assert_eq!(s[0].rss_bytes, (100 + 200 + 300 + 400) * PAGE_SIZE);
        assert_eq!(s[0].cpu_ratio, None, "needs two readings");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn memory_is_read_every_sample_and_cpu_time_over_spans_long_enough_for_a_rate() {
        let root = fake_proc("rate");
        process(&root, 20, &[], 100, (10, 10));
        let mut p = ProcessProbe::with_root(&root);
        p.watch(20);
        assert_eq!(p.sample()[0].cpu_ratio, None);
        // Milliseconds later (a fresh sample at a run's end): new memory, but no rate
        // over a span too short for 10 ms ticks, and `stat` is not read.
        process(&root, 20, &[], 300, (500, 500));
        let quick = p.sample();
        assert_eq!(quick[0].rss_bytes, 300 * PAGE_SIZE);
        assert_eq!(
            quick[0].cpu_ratio, None,
            "carried, not measured over milliseconds"
        );
        std::thread::sleep(SLOW_FIGURES_EVERY);
        let later = p.sample();
        let ratio = later[0]
            .cpu_ratio
            .expect("a rate once the span is long enough");
        // 980 ticks (9.8 s of CPU) over a little more than 0.2 s.
        assert!(ratio > 10.0 && ratio <= 49.0, "{ratio}");
        process(&root, 20, &[], 300, (600, 600));
        assert_eq!(
            p.sample()[0].cpu_ratio,
            Some(ratio),
            "carried until due again"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn invisible_and_exited_processes() {
        let root = fake_proc("gone");
        let mut p = ProcessProbe::with_root(&root);
        assert_eq!(p.watch(77), WatchOutcome::NotVisible);
        process(&root, 78, &[], 1, (0, 0));
        assert_eq!(p.watch(78), WatchOutcome::Watching);
        assert_eq!(p.sample().len(), 1);
        std::fs::remove_dir_all(root.join("78")).unwrap();
        // Noticed by the directory check, which runs with the slow figures.
        std::thread::sleep(SLOW_FIGURES_EVERY);
        assert!(p.sample().is_empty());
        assert!(p.watched().is_empty(), "an exited process is dropped");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn start_ticks_tell_a_live_process_from_an_exited_or_reused_one() {
        let root = fake_proc("start");
        process(&root, 90, &[], 1, (0, 0));
        // The fake stat line ends at field 22, starttime "0"; write a real-looking one.
        let dir = root.join("90");
        let line = |state: &str, start: u64| {
            format!("90 (a) b) {state} 1 1 1 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 {start} 100 10\n")
        };
        std::fs::write(dir.join("stat"), line("S", 4242)).unwrap();
        assert_eq!(start_ticks(&dir), Some(4242));
        std::fs::write(dir.join("stat"), line("Z", 4242)).unwrap();
        assert_eq!(start_ticks(&dir), None, "a zombie has exited");
        assert_eq!(start_ticks(&root.join("91")), None, "no such process");
        let _ = std::fs::remove_dir_all(&root);
        // This process is alive, and its start does not move.
        let me = process_start_ticks(std::process::id()).unwrap();
        assert_eq!(process_start_ticks(std::process::id()), Some(me));
    }

    #[test]
    fn this_process_is_measured_for_real() {
        let mut p = ProcessProbe::new();
        assert_eq!(p.watch(std::process::id()), WatchOutcome::Watching);
        let first = p.sample();
        assert!(first[0].rss_bytes > 1 << 20);
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(300) {
            std::hint::black_box(spin.elapsed());
        }
        let second = p.sample();
        let cpu = second[0].cpu_ratio.expect("second reading has a rate");
        assert!(cpu > 0.1, "a spinning thread shows up: {cpu}");
    }
}
