//! The container's own limits, read directly from the cgroup filesystem (v1 and v2).
//!
//! Inside a container, /proc/meminfo and sysinfo describe the host. What kills a pod is
//! its cgroup limit: memory used (minus reclaimable page cache) against `memory.max`.

use std::path::{Path, PathBuf};

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
    pub fn sample(&self) -> Option<CgroupSnapshot> {
        match self {
            CgroupProbe::V2 { dir } => Some(sample_v2(dir)),
            CgroupProbe::V1 { memory, cpu } => Some(sample_v1(memory, cpu)),
            CgroupProbe::None => None,
        }
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

fn read_u64(path: &Path) -> Option<u64> {
    read(path)?.trim().parse().ok()
}

/// A `key value` line from a stat file such as `memory.stat` or `cpu.stat`.
fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn sample_v2(dir: &Path) -> CgroupSnapshot {
    let memory_limit_bytes = read(&dir.join("memory.max"))
        .and_then(|t| (t.trim() != "max").then(|| t.trim().parse().ok()).flatten());
    let stat = read(&dir.join("memory.stat")).unwrap_or_default();
    let memory_used_bytes = read_u64(&dir.join("memory.current"))
        .map(|usage| usage.saturating_sub(stat_field(&stat, "inactive_file").unwrap_or(0)));
    let cpu_quota_cores = read(&dir.join("cpu.max")).and_then(|t| {
        let mut parts = t.split_whitespace();
        let quota: f64 = parts.next()?.parse().ok()?; // "max" fails to parse: no quota
        let period: f64 = parts.next()?.parse().ok()?;
        (period > 0.0).then(|| quota / period)
    });
    let cpu_throttled_ns = read(&dir.join("cpu.stat"))
        .and_then(|t| stat_field(&t, "throttled_usec"))
        .map(|us| us.saturating_mul(1000));
    CgroupSnapshot {
        version: 2,
        memory_limit_bytes,
        memory_used_bytes,
        cpu_quota_cores,
        cpu_throttled_ns,
    }
}

fn sample_v1(memory: &Path, cpu: &Path) -> CgroupSnapshot {
    let memory_limit_bytes =
        read_u64(&memory.join("memory.limit_in_bytes")).filter(|&l| l < V1_UNLIMITED);
    let stat = read(&memory.join("memory.stat")).unwrap_or_default();
    let inactive = stat_field(&stat, "total_inactive_file")
        .or_else(|| stat_field(&stat, "inactive_file"))
        .unwrap_or(0);
    let memory_used_bytes =
        read_u64(&memory.join("memory.usage_in_bytes")).map(|u| u.saturating_sub(inactive));
    let quota = read(&cpu.join("cpu.cfs_quota_us")).and_then(|t| t.trim().parse::<i64>().ok());
    let period = read_u64(&cpu.join("cpu.cfs_period_us"));
    let cpu_quota_cores = match (quota, period) {
        (Some(q), Some(p)) if q > 0 && p > 0 => Some(q as f64 / p as f64),
        _ => None,
    };
    let cpu_throttled_ns =
        read(&cpu.join("cpu.stat")).and_then(|t| stat_field(&t, "throttled_time"));
    CgroupSnapshot {
        version: 1,
        memory_limit_bytes,
        memory_used_bytes,
        cpu_quota_cores,
        cpu_throttled_ns,
    }
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
