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
        }
    }
}
