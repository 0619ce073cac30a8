//! Host CPU and memory through one long-lived `sysinfo::System`.

use std::time::{Duration, Instant};

use sysinfo::{MemoryRefreshKind, System};

use crate::procfile::ProcFile;
use crate::snapshot::HostSnapshot;

/// Reads host CPU load, CPU utilization, RAM and swap.
///
/// Keeps one `System` for its whole life and refreshes only memory and CPU usage, so a
/// sample costs tens of microseconds, not a process scan.
pub struct HostProbe {
    system: System,
    meminfo: ProcFile,
    loadavg: ProcFile,
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
    pub fn new() -> Result<Self, String> {
        let mut system = System::new().map_err(|e| format!("cannot read host resources: {e}"))?;
        system.refresh_cpu_usage();
        Ok(Self {
            system,
            meminfo: ProcFile::new("/proc/meminfo"),
            loadavg: ProcFile::new("/proc/loadavg"),
            last_cpu_refresh: Instant::now(),
            cpu_baseline_ready: false,
        })
    }

    /// Takes one host sample.
    pub fn sample(&mut self) -> HostSnapshot {
        let memory = self.memory();
        let now = Instant::now();
        // sysinfo ignores refreshes closer than this; utilization over a shorter span would
        // be noise anyway, so keep the previous reading until enough time has passed.
        if now.duration_since(self.last_cpu_refresh) >= sysinfo::MINIMUM_CPU_UPDATE_INTERVAL {
            self.system.refresh_cpu_usage();
            self.last_cpu_refresh = now;
            self.cpu_baseline_ready = true;
        }
        let load = self.load_average();
        let cpus = self.system.cpus();
        let (cpu_utilization_ratio, cpu_core_utilization_ratio) = if self.cpu_baseline_ready {
            (
                Some(f64::from(self.system.global_cpu_usage()) / 100.0),
                cpus.iter().map(|c| f64::from(c.usage()) / 100.0).collect(),
            )
        } else {
            (None, Vec::new())
        };
        HostSnapshot {
            cpu_load_1m: load.map(|l| l[0]),
            cpu_load_5m: load.map(|l| l[1]),
            cpu_load_15m: load.map(|l| l[2]),
            cpu_count: u32::try_from(cpus.len()).unwrap_or(u32::MAX),
            cpu_utilization_ratio,
            cpu_core_utilization_ratio,
            ram_total_bytes: memory.total,
            ram_used_bytes: memory.total.saturating_sub(memory.available),
            ram_available_bytes: memory.available,
            swap_total_bytes: memory.swap_total,
            swap_used_bytes: memory.swap_total.saturating_sub(memory.swap_free),
        }
    }

    /// Load averages over 1, 5 and 15 minutes, from /proc/loadavg kept open (sysinfo's
    /// fallback elsewhere).
    fn load_average(&mut self) -> Option<[f64; 3]> {
        let parsed = self.loadavg.read().and_then(|text| {
            let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
            Some([it.next()??, it.next()??, it.next()??])
        });
        parsed.or_else(|| {
            System::load_average()
                .ok()
                .map(|l| [l.one, l.five, l.fifteen])
        })
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
