//! Host CPU and memory through one long-lived `sysinfo::System`.

use std::time::{Duration, Instant};

use sysinfo::{MemoryRefreshKind, System};

use crate::snapshot::HostSnapshot;

/// Reads host CPU load, CPU utilization, RAM and swap.
///
/// Keeps one `System` for its whole life and refreshes only memory and CPU usage, so a
/// sample costs tens of microseconds, not a process scan.
pub struct HostProbe {
    system: System,
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
            last_cpu_refresh: Instant::now(),
            cpu_baseline_ready: false,
        })
    }

    /// Takes one host sample.
    pub fn sample(&mut self) -> HostSnapshot {
        self.system
            .refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram().with_swap());
        let now = Instant::now();
        // sysinfo ignores refreshes closer than this; utilization over a shorter span would
        // be noise anyway, so keep the previous reading until enough time has passed.
        if now.duration_since(self.last_cpu_refresh) >= sysinfo::MINIMUM_CPU_UPDATE_INTERVAL {
            self.system.refresh_cpu_usage();
            self.last_cpu_refresh = now;
            self.cpu_baseline_ready = true;
        }
        let load = System::load_average().ok();
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
            cpu_load_1m: load.as_ref().map(|l| l.one),
            cpu_load_5m: load.as_ref().map(|l| l.five),
            cpu_load_15m: load.as_ref().map(|l| l.fifteen),
            cpu_count: u32::try_from(cpus.len()).unwrap_or(u32::MAX),
            cpu_utilization_ratio,
            cpu_core_utilization_ratio,
            ram_total_bytes: self.system.total_memory(),
            ram_used_bytes: self.system.used_memory(),
            ram_available_bytes: self.system.available_memory(),
            swap_total_bytes: self.system.total_swap(),
            swap_used_bytes: self.system.used_swap(),
        }
    }

    /// How long to wait after [`HostProbe::new`] before CPU utilization can be measured.
    pub fn cpu_warmup() -> Duration {
        sysinfo::MINIMUM_CPU_UPDATE_INTERVAL
    }
}
