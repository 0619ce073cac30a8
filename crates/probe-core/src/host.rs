//! Host CPU and memory: /proc files kept open on Linux, one long-lived `sysinfo::System`
//! as the fallback elsewhere.

use std::time::{Duration, Instant};

use sysinfo::{MemoryRefreshKind, System};

use crate::ProbeError;
use crate::procfile::ProcFile;
use crate::slow::Every;
use crate::snapshot::HostSnapshot;

/// Reads host CPU load, CPU utilization, RAM and swap.
///
/// Keeps one `System` for its whole life and refreshes only memory and CPU usage, so a
/// sample costs tens of microseconds, not a process scan.
pub struct HostProbe {
    system: System,
    meminfo: ProcFile,
    loadavg: ProcFile,
    /// The kernel recomputes the load average every 5 s; no sample needs it sooner.
    load: Every<Option<[f64; 3]>>,
    /// CPU time counters from /proc/stat (sysinfo's refresh is the fallback).
    stat: ProcFile,
    /// (busy, total) ticks per line of /proc/stat at the previous reading: all CPUs, then
    /// each CPU.
    cpu_ticks: Vec<(u64, u64)>,
    /// Utilization over the last interval: all CPUs, then each CPU.
    cpu_usage: Option<(f64, Vec<f64>)>,
    /// When CPU counters were last read; utilization is the change since then.
    last_cpu_refresh: Instant,
    /// True once two CPU readings far enough apart exist.
    cpu_baseline_ready: bool,
}

impl HostProbe {
    /// Creates the probe and takes the first CPU reading (the baseline for utilization).
    ///
    /// Fails only where sysinfo cannot read the host at all (an unsupported OS, or Linux
    /// without `/proc`); the error says which.
    pub fn new() -> crate::Result<Self> {
        let system = System::new().map_err(|e| ProbeError::HostUnreadable(e.to_string()))?;
        let mut probe = Self {
            system,
            meminfo: ProcFile::new("/proc/meminfo"),
            loadavg: ProcFile::new("/proc/loadavg"),
            load: Every::new(),
            stat: ProcFile::new("/proc/stat"),
            cpu_ticks: Vec::new(),
            cpu_usage: None,
            last_cpu_refresh: Instant::now(),
            cpu_baseline_ready: false,
        };
        // The first reading: utilization is the change from here. sysinfo only where
        // /proc/stat cannot be read.
        if !probe.read_proc_stat() {
            probe.system.refresh_cpu_usage();
        }
        Ok(probe)
    }

    /// How long a reading of the load average serves later samples (default
    /// [`crate::SLOW_FIGURES_EVERY`]).
    pub fn set_slow_every(&mut self, every: Duration) {
        self.load.set_period(every);
    }

    /// Takes one host sample.
    pub fn sample(&mut self) -> HostSnapshot {
        let memory = self.memory();
        let now = Instant::now();
        // sysinfo ignores refreshes closer than this; utilization over a shorter span would
        // be noise anyway, so keep the previous reading until enough time has passed.
        let from_proc =
            if now.duration_since(self.last_cpu_refresh) >= sysinfo::MINIMUM_CPU_UPDATE_INTERVAL {
                self.last_cpu_refresh = now;
                self.cpu_baseline_ready = true;
                let read = self.read_proc_stat();
                if !read {
                    self.system.refresh_cpu_usage();
                }
                read
            } else {
                !self.cpu_ticks.is_empty()
            };
        let load = {
            let (load, loadavg) = (&mut self.load, &mut self.loadavg);
            load.get(now, || load_average(loadavg))
        };
        let (cpu_count, cpu_utilization_ratio, cpu_core_utilization_ratio) = if from_proc {
            let cores = u32::try_from(self.cpu_ticks.len().saturating_sub(1)).unwrap_or(u32::MAX);
            match &self.cpu_usage {
                Some((all, each)) => (cores, Some(*all), each.clone()),
                None => (cores, None, Vec::new()),
            }
        } else {
            let cpus = self.system.cpus();
            let count = u32::try_from(cpus.len()).unwrap_or(u32::MAX);
            if self.cpu_baseline_ready {
                (
                    count,
                    Some(f64::from(self.system.global_cpu_usage()) / 100.0),
                    cpus.iter().map(|c| f64::from(c.usage()) / 100.0).collect(),
                )
            } else {
                (count, None, Vec::new())
            }
        };
        HostSnapshot {
            cpu_load_1m: load.map(|l| l[0]),
            cpu_load_5m: load.map(|l| l[1]),
            cpu_load_15m: load.map(|l| l[2]),
            cpu_count,
            cpu_utilization_ratio,
            cpu_core_utilization_ratio,
            ram_total_bytes: memory.total,
            ram_used_bytes: memory.total.saturating_sub(memory.available),
            ram_available_bytes: memory.available,
            swap_total_bytes: memory.swap_total,
            swap_used_bytes: memory.swap_total.saturating_sub(memory.swap_free),
        }
    }

    /// Reads /proc/stat and, with a previous reading, computes utilization over the
    /// interval. False when /proc/stat is not readable.
    fn read_proc_stat(&mut self) -> bool {
        let Some(text) = self.stat.read() else {
            return false;
        };
        let ticks = parse_proc_stat(text);
        if ticks.is_empty() {
            return false;
        }
        if ticks.len() == self.cpu_ticks.len() {
            let ratio = |(busy, total): (u64, u64), (busy0, total0): (u64, u64)| {
                let dt = total.saturating_sub(total0);
                if dt == 0 {
                    0.0
                } else {
                    (busy.saturating_sub(busy0) as f64 / dt as f64).clamp(0.0, 1.0)
                }
            };
            let mut all = ticks
                .iter()
                .zip(&self.cpu_ticks)
                .map(|(a, b)| ratio(*a, *b));
            let overall = all.next().unwrap_or(0.0);
            self.cpu_usage = Some((overall, all.collect()));
        }
        self.cpu_ticks = ticks;
        true
    }

    /// RAM and swap. On Linux, /proc/meminfo read directly: sysinfo's memory refresh also
    /// walks the cgroup files (which runlens reads itself) and costs several times more.
    fn memory(&mut self) -> Memory {
        if let Some(m) = self.meminfo.read().and_then(Memory::parse) {
            return m;
        }
        self.system
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram().with_swap());
        Memory {
            total: self.system.total_memory(),
            available: self.system.available_memory(),
            swap_total: self.system.total_swap(),
            swap_free: self.system.free_swap(),
        }
    }

    /// How long to wait after [`HostProbe::new`] before CPU utilization can be measured.
    pub fn cpu_warmup() -> Duration {
        sysinfo::MINIMUM_CPU_UPDATE_INTERVAL
    }
}

/// Load averages over 1, 5 and 15 minutes, from /proc/loadavg kept open (sysinfo's
/// fallback elsewhere).
fn load_average(loadavg: &mut ProcFile) -> Option<[f64; 3]> {
    let parsed = loadavg.read().and_then(|text| {
        let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
        Some([it.next()??, it.next()??, it.next()??])
    });
    parsed.or_else(|| {
        System::load_average()
            .ok()
            .map(|l| [l.one, l.five, l.fifteen])
    })
}

/// (busy, total) ticks of the `cpu` line and each `cpuN` line of /proc/stat. Busy is all
/// time but idle and iowait; guest time is already part of user time.
fn parse_proc_stat(text: &str) -> Vec<(u64, u64)> {
    text.lines()
        .take_while(|l| l.starts_with("cpu"))
        .filter_map(|l| {
            let fields: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .take(8)
                .filter_map(|v| v.parse().ok())
                .collect();
            if fields.len() < 5 {
                return None;
            }
            let total: u64 = fields.iter().sum();
            let idle = fields[3] + fields[4];
            Some((total - idle, total))
        })
        .collect()
}

/// The /proc/meminfo figures runlens uses, in bytes.
#[derive(Debug, PartialEq, Eq)]
struct Memory {
    total: u64,
    available: u64,
    swap_total: u64,
    swap_free: u64,
}

impl Memory {
    /// Parses /proc/meminfo (values in KiB); `None` without MemTotal and MemAvailable.
    fn parse(text: &str) -> Option<Self> {
        let (mut total, mut available, mut swap_total, mut swap_free) = (None, None, 0, 0);
        for line in text.lines() {
            let Some((key, rest)) = line.split_once(':') else {
                continue;
            };
            let kib = || -> Option<u64> { rest.split_whitespace().next()?.parse().ok() };
            match key {
                "MemTotal" => total = kib(),
                "MemAvailable" => available = kib(),
                "SwapTotal" => swap_total = kib().unwrap_or(0),
                "SwapFree" => swap_free = kib().unwrap_or(0),
                _ => {}
            }
        }
        Some(Self {
            total: total? * 1024,
            available: available? * 1024,
            swap_total: swap_total * 1024,
            swap_free: swap_free * 1024,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_gives_busy_and_total_ticks() {
        let text = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 60 0 20 400 20 0 0 0 0 0\n\
                    cpu1 40 0 30 400 30 0 0 0 0 0\nintr 12345\n";
        assert_eq!(
            parse_proc_stat(text),
            vec![(150, 1000), (80, 500), (70, 500)]
        );
    }

    #[test]
    fn meminfo_is_parsed_in_bytes() {
        let text = "MemTotal:       24684092 kB\nMemFree:        1 kB\n\
                    MemAvailable:   24158596 kB\nSwapTotal:      2048 kB\nSwapFree:       1024 kB\n";
        assert_eq!(
            Memory::parse(text),
            Some(Memory {
                total: 24_684_092 * 1024,
                available: 24_158_596 * 1024,
                swap_total: 2048 * 1024,
                swap_free: 1024 * 1024,
            })
        );
        assert_eq!(
            Memory::parse("MemTotal: 5 kB\n"),
            None,
            "no MemAvailable: fall back"
        );
    }
}
