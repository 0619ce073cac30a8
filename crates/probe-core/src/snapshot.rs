//! The snapshot types. Their JSON form (serde) is what `runlens snapshot --format json`
//! prints; field names carry their units and are part of the public contract.

use serde::{Deserialize, Serialize};

/// What the machine looked like at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// When the sample was taken, Unix nanoseconds.
    pub taken_at_ns: i64,
    /// Host CPU and memory.
    pub host: HostSnapshot,
    /// Every NVIDIA GPU, or why there are none.
    pub gpu: GpuSnapshot,
    /// The limits of the container (cgroup) this process runs in; `None` where no
    /// cgroup filesystem is readable.
    pub cgroup: Option<CgroupSnapshot>,
    /// The agent processes being watched (clients that gave their PID).
    #[serde(default)]
    pub processes: Vec<ProcessSample>,
}

/// One watched agent process with everything it started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessSample {
    /// The agent's PID.
    pub pid: u32,
    /// Processes in its tree that were alive (the agent and its descendants).
    pub process_count: u32,
    /// Resident memory of the whole tree.
    pub rss_bytes: u64,
    /// CPU used by the tree since the previous sample, in cores (1.0 = one core busy).
    pub cpu_ratio: Option<f64>,
    /// GPU memory the tree holds, from NVML's per-process list; `None` with no GPU data.
    pub gpu_memory_bytes: Option<u64>,
    /// The same memory per GPU: only GPUs where a process of the tree (the agent or any
    /// process it started) holds memory, by GPU index.
    #[serde(default)]
    pub gpus: Vec<ProcessGpuMemory>,
    /// PIDs in the tree.
    pub tree: Vec<u32>,
}

/// GPU memory that one watched process tree holds on one GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessGpuMemory {
    /// The GPU's NVML index.
    pub gpu_index: u32,
    /// Memory the tree's processes hold there, summed.
    pub used_memory_bytes: u64,
}

/// The container's own limits and usage, from the cgroup filesystem. Inside a container
/// the host figures describe the whole machine; these describe the pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CgroupSnapshot {
    /// 1 or 2.
    pub version: u8,
    /// Memory limit; `None` means no limit.
    pub memory_limit_bytes: Option<u64>,
    /// Memory charged to the cgroup minus reclaimable page cache (`inactive_file`), the
    /// figure the OOM killer compares with the limit.
    pub memory_used_bytes: Option<u64>,
    /// CPU quota in cores (quota / period); `None` means no quota.
    pub cpu_quota_cores: Option<f64>,
    /// Total time the cgroup was throttled for exceeding its CPU quota.
    pub cpu_throttled_ns: Option<u64>,
}

/// Host CPU and memory, as the operating system reports them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSnapshot {
    /// Load average over 1 minute (runnable tasks); `None` where the OS has none.
    pub cpu_load_1m: Option<f64>,
    /// Load average over 5 minutes.
    pub cpu_load_5m: Option<f64>,
    /// Load average over 15 minutes.
    pub cpu_load_15m: Option<f64>,
    /// Number of logical CPUs.
    pub cpu_count: u32,
    /// Utilization of all CPUs since the previous sample, 0..1; `None` until two readings
    /// at least 200 ms apart exist.
    pub cpu_utilization_ratio: Option<f64>,
    /// Utilization of each logical CPU, 0..1 (empty when `cpu_utilization_ratio` is `None`).
    pub cpu_core_utilization_ratio: Vec<f64>,
    /// Physical memory installed.
    pub ram_total_bytes: u64,
    /// Memory in use: total minus available.
    pub ram_used_bytes: u64,
    /// Memory available without swapping (Linux `MemAvailable`).
    pub ram_available_bytes: u64,
    /// Swap configured.
    pub swap_total_bytes: u64,
    /// Swap in use.
    pub swap_used_bytes: u64,
}

/// The GPU part of a snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuSnapshot {
    /// True when NVML is loaded and answered the device count.
    pub available: bool,
    /// Why `available` is false; `None` when it is true.
    pub unavailable_reason: Option<String>,
    /// One entry per device, in NVML index order.
    pub devices: Vec<GpuDevice>,
}

impl GpuSnapshot {
    /// A snapshot saying there are no GPUs, and why.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self {
            available: false,
            unavailable_reason: Some(reason.into()),
            devices: Vec::new(),
        }
    }
}

/// Whether a device answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuState {
    /// The device answered (some metrics may still be unsupported).
    Ok,
    /// NVML reported the device as lost (fallen off the bus); its metrics are absent.
    Lost,
    /// The device could not be opened for another reason.
    Error,
}

impl GpuState {
    /// Every state.
    pub const ALL: [GpuState; 3] = [GpuState::Ok, GpuState::Lost, GpuState::Error];

    /// The state named `text` (as stored and sent), if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The name stored in SQLite and sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            GpuState::Ok => "ok",
            GpuState::Lost => "lost",
            GpuState::Error => "error",
        }
    }
}

/// One GPU. Every metric is read on its own: one the device does not support is `None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuDevice {
    /// NVML index (nvidia-smi order).
    pub index: u32,
    /// Device UUID (`GPU-...`).
    pub uuid: Option<String>,
    /// Product name.
    pub name: Option<String>,
    /// Whether the device answered.
    pub state: GpuState,
    /// Framebuffer memory installed.
    pub memory_total_bytes: Option<u64>,
    /// Framebuffer memory allocated.
    pub memory_used_bytes: Option<u64>,
    /// Framebuffer memory free.
    pub memory_free_bytes: Option<u64>,
    /// Share of time a kernel ran over the driver's last sample period, 0..1.
    pub utilization_ratio: Option<f64>,
    /// Share of time device memory was read or written, 0..1.
    pub memory_utilization_ratio: Option<f64>,
    /// Core temperature.
    pub temperature_celsius: Option<f64>,
    /// Board power draw.
    pub power_watts: Option<f64>,
    /// Framebuffer memory reserved by the driver (total = used + free + reserved).
    pub memory_reserved_bytes: Option<u64>,
    /// Enforced power limit.
    pub power_limit_watts: Option<f64>,
    /// SM clock, MHz.
    pub clock_sm_mhz: Option<u32>,
    /// Memory clock, MHz.
    pub clock_memory_mhz: Option<u32>,
    /// Performance state: 0 (P0, fastest) to 15; `None` when unknown.
    pub performance_state: Option<u32>,
    /// Why clocks are held down now, as NVML's bit mask (see [`clock_event_reason_names`]).
    pub clock_event_reasons: Option<u64>,
    /// Corrected ECC errors since the driver loaded.
    pub ecc_corrected_errors: Option<u64>,
    /// Uncorrected ECC errors since the driver loaded.
    pub ecc_uncorrected_errors: Option<u64>,
    /// Compute processes holding memory on this GPU (host PIDs, as NVML reports them).
    pub processes: Vec<GpuProcess>,
    /// Metrics this device answered "not supported" for (asked once, then skipped).
    pub unsupported: Vec<String>,
    /// Whether MIG mode is on; `None` where the GPU has no MIG.
    #[serde(default)]
    pub mig_enabled: Option<bool>,
    /// The MIG instances when MIG mode is on, each with its own memory.
    #[serde(default)]
    pub mig_devices: Vec<MigDevice>,
    /// What kind of busy the GPU was since its previous performance sample (NVML's GPM,
    /// Hopper and newer); `None` on GPUs without GPM and on a GPU's first sample.
    #[serde(default)]
    pub perf: Option<GpuPerf>,
}

/// What kind of busy a GPU was over an interval (NVML's GPU performance monitoring, on
/// Hopper and newer GPUs): from two samples of the GPU's counters, at least
/// [`crate::GPM_MIN_INTERVAL`] apart. Each figure is `None` where the GPU does not
/// count it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuPerf {
    /// How long the interval was, in seconds.
    pub interval_seconds: f64,
    /// Share of time each SM had at least one warp assigned, averaged over SMs, 0..1.
    pub sm_active_ratio: Option<f64>,
    /// Warps resident on the SMs against the most they can hold, 0..1.
    pub sm_occupancy_ratio: Option<f64>,
    /// Share of time the tensor cores did any work, 0..1 (prefill-like work is high).
    pub tensor_active_ratio: Option<f64>,
    /// Share of time the tensor cores did half-precision (HMMA) work, 0..1.
    pub tensor_hmma_active_ratio: Option<f64>,
    /// Device memory bandwidth used against its peak, 0..1 (decode-like work is high).
    pub dram_bandwidth_ratio: Option<f64>,
    /// Share of time the SMs did FP16 work, 0..1.
    pub fp16_active_ratio: Option<f64>,
    /// Share of time the SMs did FP32 work, 0..1.
    pub fp32_active_ratio: Option<f64>,
    /// PCIe traffic out of the GPU.
    pub pcie_tx_bytes_per_second: Option<f64>,
    /// PCIe traffic into the GPU.
    pub pcie_rx_bytes_per_second: Option<f64>,
    /// NVLink traffic out of the GPU, all links.
    pub nvlink_tx_bytes_per_second: Option<f64>,
    /// NVLink traffic into the GPU, all links.
    pub nvlink_rx_bytes_per_second: Option<f64>,
}

/// One MIG instance: a slice of a GPU with its own memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigDevice {
    /// Position among the GPU's MIG instances.
    pub index: u32,
    /// UUID (`MIG-...`), what CUDA_VISIBLE_DEVICES names.
    pub uuid: Option<String>,
    /// Memory of the instance.
    pub memory_total_bytes: Option<u64>,
    /// Memory allocated in it.
    pub memory_used_bytes: Option<u64>,
    /// Memory free in it.
    pub memory_free_bytes: Option<u64>,
}

/// A process using a GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuProcess {
    /// Process id in the host's PID namespace.
    pub pid: u32,
    /// GPU memory it holds; `None` where the driver cannot tell.
    pub used_memory_bytes: Option<u64>,
    /// Its Kubernetes pod's UID, when this sampler sees the process (host PID namespace)
    /// and its cgroup names a pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Its container's runtime id, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

/// NVML's clock event (throttle) reason bits and their names.
const CLOCK_EVENT_REASONS: [(u64, &str); 9] = [
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
];

/// The names of the reasons set in an NVML clock event reason mask, e.g. `sw_power_cap`.
pub fn clock_event_reason_names(mask: u64) -> Vec<&'static str> {
    CLOCK_EVENT_REASONS
        .iter()
        .filter(|(bit, _)| mask & bit != 0)
        .map(|(_, name)| *name)
        .collect()
}

impl GpuDevice {
    /// A device with only its index and state known.
    pub fn bare(index: u32, state: GpuState) -> Self {
        Self {
            index,
            uuid: None,
            name: None,
            state,
            memory_total_bytes: None,
            memory_used_bytes: None,
            memory_free_bytes: None,
            utilization_ratio: None,
            memory_utilization_ratio: None,
            temperature_celsius: None,
            power_watts: None,
            memory_reserved_bytes: None,
            power_limit_watts: None,
            clock_sm_mhz: None,
            clock_memory_mhz: None,
            performance_state: None,
            clock_event_reasons: None,
            ecc_corrected_errors: None,
            ecc_uncorrected_errors: None,
            processes: Vec::new(),
            unsupported: Vec::new(),
            mig_enabled: None,
            mig_devices: Vec::new(),
            perf: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::GpuState;

    #[test]
    fn gpu_states_read_back_as_written_and_unknown_names_are_none() {
        for state in GpuState::ALL {
            assert_eq!(GpuState::parse(state.as_str()), Some(state));
        }
        assert_eq!(GpuState::parse("OK"), None);
        assert_eq!(GpuState::parse("gone"), None);
    }
}
