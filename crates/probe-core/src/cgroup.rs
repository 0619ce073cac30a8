//! The container's own limits, read directly from the cgroup filesystem (v1 and v2).
//!
//! Inside a container, /proc/meminfo and sysinfo describe the host. What kills a pod is
//! its cgroup limit: memory used (minus reclaimable page cache) against `memory.max`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::procfile::ProcFile;
use crate::slow::{Every, RARE_FIGURES_EVERY};
use crate::snapshot::CgroupSnapshot;

/// v1 reports "no limit" as a huge number near `i64::MAX` rounded to the page size.
const V1_UNLIMITED: u64 = 1 << 62;

/// Where this process's cgroup files are, and which version they follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupProbe {
    /// Unified hierarchy: one directory with `memory.max`, `cpu.max`, ...
    V2 {
        /// The cgroup directory.
        dir: PathBuf,
    },
    /// Legacy hierarchy: one directory per controller.
    V1 {
        /// The memory controller's directory.
        memory: PathBuf,
        /// The cpu controller's directory.
        cpu: PathBuf,
    },
    /// No cgroup filesystem readable (not Linux, or not mounted).
    None,
}

impl CgroupProbe {
    /// Finds this process's cgroup from `/proc/self/cgroup` under `/sys/fs/cgroup`.
    pub fn detect() -> Self {
        let Ok(text) = std::fs::read_to_string("/proc/self/cgroup") else {
            return CgroupProbe::None;
        };
        Self::from_proc(&text, Path::new("/sys/fs/cgroup"))
    }

    /// Resolves the cgroup paths listed in a `/proc/<pid>/cgroup` text under `mount`.
    pub fn from_proc(proc_cgroup: &str, mount: &Path) -> Self {
        let join = |base: PathBuf, path: &str| {
            let nested = base.join(path.trim_start_matches('/'));
            // Without a cgroup namespace the listed path may not exist inside a container
            // whose own cgroup is mounted at the root: fall back to the root.
            if nested.exists() { nested } else { base }
        };
        if mount.join("cgroup.controllers").exists() {
            let path = proc_cgroup
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap_or("/");
            return CgroupProbe::V2 {
                dir: join(mount.to_owned(), path),
            };
        }
        let mut memory = None;
        let mut cpu = None;
        for line in proc_cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            for controller in controllers.split(',') {
                match controller {
                    "memory" => memory = Some(join(mount.join(controllers), path)),
                    "cpu" => cpu = Some(join(mount.join(controllers), path)),
                    _ => {}
                }
            }
        }
        match (memory, cpu) {
            (None, None) => CgroupProbe::None,
            (memory, cpu) => CgroupProbe::V1 {
                memory: memory.unwrap_or_else(|| mount.join("memory")),
                cpu: cpu.unwrap_or_else(|| mount.join("cpu")),
            },
        }
    }

    /// Reads a cgroup directory directly (tests, or `--cgroup-root`): a v2 directory, or
    /// a v1 mount with `memory/` and `cpu/` below it.
    pub fn at(root: &Path) -> Self {
        if root.join("memory.max").exists() || root.join("cgroup.controllers").exists() {
            CgroupProbe::V2 {
                dir: root.to_owned(),
            }
        } else if root.join("memory").join("memory.limit_in_bytes").exists() {
            CgroupProbe::V1 {
                memory: root.join("memory"),
                cpu: root.join("cpu"),
            }
        } else {
            CgroupProbe::None
        }
    }

    /// Reads the limits and usage now; `None` when there is no cgroup to read.
    /// Convenient for one-off reads; a sampler keeps a [`CgroupReader`] instead.
    pub fn sample(&self) -> Option<CgroupSnapshot> {
        CgroupReader::new(self.clone()).sample()
    }
}

/// Reads one cgroup's memory use every sample, its page cache and throttling at most every
/// [`crate::SLOW_FIGURES_EVERY`], and its limits (which change only when the pod is resized)
/// at most every 30 s, keeping the files open between samples.
#[derive(Debug)]
pub struct CgroupReader {
    version: u8,
    memory_limit: Option<ProcFile>,
    cpu_limit: Vec<ProcFile>,
    memory_usage: Option<ProcFile>,
    memory_stat: Option<ProcFile>,
    cpu_stat: Option<ProcFile>,
    /// Memory limit and CPU quota.
    limits: Every<(Option<u64>, Option<f64>)>,
    /// Reclaimable page cache (`inactive_file`): read at most every
    /// [`crate::SLOW_FIGURES_EVERY`], the large `memory.stat` being most of a sample's cost.
    inactive: Every<Option<u64>>,
    /// Time throttled so far: a counter whose change matters over seconds.
    throttled: Every<Option<u64>>,
}

impl CgroupReader {
    /// A reader for the cgroup `probe` located.
    pub fn new(probe: CgroupProbe) -> Self {
        let file = |dir: &Path, name: &str| Some(ProcFile::new(dir.join(name)));
        let (version, memory_limit, cpu_limit, memory_usage, memory_stat, cpu_stat) = match &probe {
            CgroupProbe::V2 { dir } => (
                2,
                file(dir, "memory.max"),
                vec![ProcFile::new(dir.join("cpu.max"))],
                file(dir, "memory.current"),
                file(dir, "memory.stat"),
                file(dir, "cpu.stat"),
            ),
            CgroupProbe::V1 { memory, cpu } => (
                1,
                file(memory, "memory.limit_in_bytes"),
                vec![
                    ProcFile::new(cpu.join("cpu.cfs_quota_us")),
                    ProcFile::new(cpu.join("cpu.cfs_period_us")),
                ],
                file(memory, "memory.usage_in_bytes"),
                file(memory, "memory.stat"),
                file(cpu, "cpu.stat"),
            ),
            CgroupProbe::None => (0, None, Vec::new(), None, None, None),
        };
        Self {
            version,
            memory_limit,
            cpu_limit,
            memory_usage,
            memory_stat,
            cpu_stat,
            limits: Every::with_period(RARE_FIGURES_EVERY),
            inactive: Every::new(),
            throttled: Every::new(),
        }
    }

    /// How long a reading of the slow figures (`inactive_file`, time throttled) serves
    /// later samples (default [`crate::SLOW_FIGURES_EVERY`]).
    pub fn set_slow_every(&mut self, every: Duration) {
        self.inactive.set_period(every);
        self.throttled.set_period(every);
    }

    /// Reads usage now (and the limits when due); `None` when there is no cgroup.
    pub fn sample(&mut self) -> Option<CgroupSnapshot> {
        if self.version == 0 {
            return None;
        }
        let now = Instant::now();
        let (version, memory_limit, cpu_limit) =
            (self.version, &mut self.memory_limit, &mut self.cpu_limit);
        let (memory_limit_bytes, cpu_quota_cores) = self
            .limits
            .get(now, || read_limits(version, memory_limit, cpu_limit));
        let memory_stat = &mut self.memory_stat;
        let inactive = self.inactive.get(now, || {
            let text = memory_stat.as_mut()?.read()?;
            // v1 reports the hierarchy's total; v2 has only inactive_file.
            stat_field(text, "total_inactive_file").or_else(|| stat_field(text, "inactive_file"))
        });
        let memory_used_bytes = self
            .memory_usage
            .as_mut()
            .and_then(ProcFile::read_u64)
            .map(|usage| usage.saturating_sub(inactive.unwrap_or(0)));
        let (cpu_stat, version) = (&mut self.cpu_stat, self.version);
        let cpu_throttled_ns = self.throttled.get(now, || {
            let text = cpu_stat.as_mut()?.read()?;
            match version {
                2 => stat_field(text, "throttled_usec").map(|us| us.saturating_mul(1000)),
                _ => stat_field(text, "throttled_time"),
            }
        });
        Some(CgroupSnapshot {
            version: self.version,
            memory_limit_bytes,
            memory_used_bytes,
            cpu_quota_cores,
            cpu_throttled_ns,
        })
    }
}

/// The memory limit (bytes) and CPU quota (cores); `None` where there is none.
fn read_limits(
    version: u8,
    memory_limit: &mut Option<ProcFile>,
    cpu_limit: &mut [ProcFile],
) -> (Option<u64>, Option<f64>) {
    let memory = memory_limit.as_mut().and_then(|f| {
        let text = f.read()?.trim();
        match version {
            // v2 says "max" for no limit; v1 a huge number near i64::MAX.
            2 => text.parse().ok(),
            _ => text.parse().ok().filter(|&l: &u64| l < V1_UNLIMITED),
        }
    });
    let cpu = match (version, cpu_limit) {
        (2, [max]) => max.read().and_then(|t| {
            let mut parts = t.split_whitespace();
            let quota: f64 = parts.next()?.parse().ok()?; // "max" fails: no quota
            let period: f64 = parts.next()?.parse().ok()?;
            (period > 0.0).then(|| quota / period)
        }),
        (1, [quota, period]) => {
            let q = quota.read().and_then(|t| t.trim().parse::<i64>().ok());
            match (q, period.read_u64()) {
                (Some(q), Some(p)) if q > 0 && p > 0 => Some(q as f64 / p as f64),
                _ => None,
            }
        }
        _ => None,
    };
    (memory, cpu)
}

/// A `key value` line from a stat file such as `memory.stat` or `cpu.stat`.
fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    fn tempdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "runlens-cgroup-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn v2_limits_and_usage_minus_inactive_file() {
        let dir = tempdir("v2");
        write(&dir, "cgroup.controllers", "cpu memory\n");
        write(&dir, "memory.max", "2147483648\n");
        write(&dir, "memory.current", "1610612736\n");
        write(
            &dir,
            "memory.stat",
            "anon 1000\ninactive_file 536870912\nactive_file 5\n",
        );
        write(&dir, "cpu.max", "150000 100000\n");
        write(
            &dir,
            "cpu.stat",
            "usage_usec 10\nnr_throttled 3\nthrottled_usec 2500\n",
        );
        let s = CgroupProbe::at(&dir).sample().unwrap();
        assert_eq!(s.version, 2);
        assert_eq!(s.memory_limit_bytes, Some(2 << 30));
        assert_eq!(s.memory_used_bytes, Some((3 << 29) - (1 << 29)));
        assert_eq!(s.cpu_quota_cores, Some(1.5));
        assert_eq!(s.cpu_throttled_ns, Some(2_500_000));
    }

    #[test]
    fn a_sample_soon_after_another_rereads_usage_and_carries_limits_cache_and_throttling() {
        let dir = tempdir("carry");
        write(&dir, "memory.max", "2147483648\n");
        write(&dir, "memory.current", "1073741824\n");
        write(&dir, "memory.stat", "inactive_file 1024\n");
        write(&dir, "cpu.max", "150000 100000\n");
        write(&dir, "cpu.stat", "throttled_usec 1\n");
        let mut reader = CgroupReader::new(CgroupProbe::at(&dir));
        let first = reader.sample().unwrap();
        // Milliseconds later (a run's end): memory use has grown, and everything else
        // changed too, but only memory use is due.
        write(&dir, "memory.current", "2000000000\n");
        write(&dir, "memory.max", "4294967296\n");
        write(&dir, "memory.stat", "inactive_file 2048\n");
        write(&dir, "cpu.max", "max 100000\n");
        write(&dir, "cpu.stat", "throttled_usec 9\n");
        let soon = reader.sample().unwrap();
        assert_eq!(soon.memory_used_bytes, Some(2_000_000_000 - 1024));
        assert_eq!(soon.memory_limit_bytes, first.memory_limit_bytes);
        assert_eq!(soon.cpu_quota_cores, Some(1.5));
        assert_eq!(soon.cpu_throttled_ns, Some(1000));
        // A reader starting now sees them all.
        let fresh = CgroupProbe::at(&dir).sample().unwrap();
        assert_eq!(fresh.memory_limit_bytes, Some(4 << 30));
        assert_eq!(fresh.memory_used_bytes, Some(2_000_000_000 - 2048));
        assert_eq!(fresh.cpu_throttled_ns, Some(9000));
    }

    #[test]
    fn a_longer_slow_cadence_carries_the_page_cache_and_throttling_past_the_default() {
        let dir = tempdir("cadence");
        write(&dir, "memory.max", "2147483648\n");
        write(&dir, "memory.current", "1073741824\n");
        write(&dir, "memory.stat", "inactive_file 1024\n");
        write(&dir, "cpu.max", "150000 100000\n");
        write(&dir, "cpu.stat", "throttled_usec 1\n");
        let mut reader = CgroupReader::new(CgroupProbe::at(&dir));
        reader.set_slow_every(Duration::from_secs(3600));
        reader.sample().unwrap();
        write(&dir, "memory.current", "2000000000\n");
        write(&dir, "memory.stat", "inactive_file 2048\n");
        write(&dir, "cpu.stat", "throttled_usec 9\n");
        // Past the default cadence (an active sample 250 ms later): memory use is read,
        // the slow figures are carried.
        std::thread::sleep(crate::SLOW_FIGURES_EVERY + Duration::from_millis(20));
        let later = reader.sample().unwrap();
        assert_eq!(later.memory_used_bytes, Some(2_000_000_000 - 1024));
        assert_eq!(later.cpu_throttled_ns, Some(1000));
        // The same wait at the default cadence reads them again.
        let mut default = CgroupReader::new(CgroupProbe::at(&dir));
        default.sample().unwrap();
        write(&dir, "memory.stat", "inactive_file 4096\n");
        std::thread::sleep(crate::SLOW_FIGURES_EVERY + Duration::from_millis(20));
        let again = default.sample().unwrap();
        assert_eq!(again.memory_used_bytes, Some(2_000_000_000 - 4096));
        assert_eq!(again.cpu_throttled_ns, Some(9000));
    }

    #[test]
    fn v2_without_limits_says_so() {
        let dir = tempdir("v2max");
        write(&dir, "memory.max", "max\n");
        write(&dir, "memory.current", "4096\n");
        write(&dir, "cpu.max", "max 100000\n");
        let s = CgroupProbe::at(&dir).sample().unwrap();
        assert_eq!(s.memory_limit_bytes, None);
        assert_eq!(s.cpu_quota_cores, None);
        assert_eq!(s.memory_used_bytes, Some(4096));
    }

    #[test]
    fn v1_limits_and_unlimited_sentinels() {
        let dir = tempdir("v1");
        write(&dir, "memory/memory.limit_in_bytes", "1073741824\n");
        write(&dir, "memory/memory.usage_in_bytes", "900000000\n");
        write(
            &dir,
            "memory/memory.stat",
            "cache 5\ntotal_inactive_file 100000000\n",
        );
        write(&dir, "cpu/cpu.cfs_quota_us", "50000\n");
        write(&dir, "cpu/cpu.cfs_period_us", "100000\n");
        write(
            &dir,
            "cpu/cpu.stat",
            "nr_periods 9\nnr_throttled 2\nthrottled_time 777\n",
        );
        let s = CgroupProbe::at(&dir).sample().unwrap();
        assert_eq!(s.version, 1);
        assert_eq!(s.memory_limit_bytes, Some(1 << 30));
        assert_eq!(s.memory_used_bytes, Some(800_000_000));
        assert_eq!(s.cpu_quota_cores, Some(0.5));
        assert_eq!(s.cpu_throttled_ns, Some(777));

        write(
            &dir,
            "memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        write(&dir, "cpu/cpu.cfs_quota_us", "-1\n");
        let s = CgroupProbe::at(&dir).sample().unwrap();
        assert_eq!(s.memory_limit_bytes, None);
        assert_eq!(s.cpu_quota_cores, None);
    }

    #[test]
    fn proc_cgroup_paths_resolve_for_both_versions() {
        let v2 = tempdir("mount2");
        write(&v2, "cgroup.controllers", "memory\n");
        write(&v2, "kubepods/pod1/memory.max", "max\n");
        assert_eq!(
            CgroupProbe::from_proc("0::/kubepods/pod1\n", &v2),
            CgroupProbe::V2 {
                dir: v2.join("kubepods/pod1")
            }
        );
        // A path that is not visible (no cgroup namespace): the mount root.
        assert_eq!(
            CgroupProbe::from_proc("0::/elsewhere\n", &v2),
            CgroupProbe::V2 { dir: v2.clone() }
        );
        let v1 = tempdir("mount1");
        write(&v1, "memory/docker/abc/memory.limit_in_bytes", "1\n");
        let text = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n";
        assert_eq!(
            CgroupProbe::from_proc(text, &v1),
            CgroupProbe::V1 {
                memory: v1.join("memory/docker/abc"),
                cpu: v1.join("cpu,cpuacct"),
            }
        );
        assert_eq!(CgroupProbe::at(&tempdir("empty")), CgroupProbe::None);
    }
}
