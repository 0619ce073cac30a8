//! The JSON scenario a fake NVML library plays back.

use std::collections::HashMap;

use serde::Deserialize;

/// Environment variable naming the scenario file.
pub const SCENARIO_ENV: &str = "RUNLENS_FAKE_NVML_SCENARIO";

/// Environment variable naming a file the library appends a line to for every
/// device-level call (`nvmlGpmSampleGet@0`) and every GPM sample allocated or freed: tests
/// count them to prove a metric is asked once and no sample leaks.
pub const CALL_LOG_ENV: &str = "RUNLENS_FAKE_NVML_CALL_LOG";

/// A whole machine as NVML would describe it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Driver version string.
    #[serde(default = "default_driver")]
    pub driver_version: String,
    /// CUDA driver version as NVML encodes it (12040 = 12.4).
    #[serde(default = "default_cuda")]
    pub cuda_driver_version: i32,
    /// NVML function name (or `"*"` for all) → error code it returns. `nvmlInit_v2: 9`
    /// plays "driver not loaded"; `"*": 9` after start plays the driver disappearing.
    #[serde(default)]
    pub errors: HashMap<String, u32>,
    /// The GPUs, in index order.
    #[serde(default)]
    pub devices: Vec<Device>,
}

fn default_driver() -> String {
    "550.54.15".to_owned()
}

fn default_cuda() -> i32 {
    12040
}

/// One GPU.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Product name.
    pub name: String,
    /// UUID (`GPU-...`).
    pub uuid: String,
    /// Framebuffer memory installed.
    pub memory_total_bytes: u64,
    /// Framebuffer memory allocated.
    #[serde(default)]
    pub memory_used_bytes: u64,
    /// Memory the driver reserves (free = total - used - reserved).
    #[serde(default)]
    pub memory_reserved_bytes: u64,
    /// GPU utilization, percent.
    #[serde(default)]
    pub utilization_gpu_percent: u32,
    /// Memory-bandwidth utilization, percent.
    #[serde(default)]
    pub utilization_memory_percent: u32,
    /// Core temperature.
    #[serde(default)]
    pub temperature_celsius: u32,
    /// Power draw, milliwatts.
    #[serde(default)]
    pub power_milliwatts: u32,
    /// Enforced power limit, milliwatts.
    #[serde(default)]
    pub power_limit_milliwatts: u32,
    /// SM clock, MHz.
    #[serde(default)]
    pub clock_sm_mhz: u32,
    /// Memory clock, MHz.
    #[serde(default)]
    pub clock_memory_mhz: u32,
    /// Performance state (0 = P0, fastest).
    #[serde(default)]
    pub pstate: u32,
    /// Clock event (throttle) reason bits, as NVML reports them.
    #[serde(default)]
    pub throttle_reasons: u64,
    /// Corrected ECC errors (volatile).
    #[serde(default)]
    pub ecc_corrected: u64,
    /// Uncorrected ECC errors (volatile).
    #[serde(default)]
    pub ecc_uncorrected: u64,
    /// Compute processes holding memory on this GPU.
    #[serde(default)]
    pub processes: Vec<Process>,
    /// NVML function name (or `"*"`) → error code, for this device only.
    /// 3 = not supported, 15 = GPU lost.
    #[serde(default)]
    pub errors: HashMap<String, u32>,
    /// MIG instances: when present, the GPU reports MIG mode enabled.
    #[serde(default)]
    pub mig_devices: Vec<MigDevice>,
    /// GPU performance monitoring (GPM, Hopper and newer): absent on older GPUs, which
    /// then answer "not a GPM device".
    #[serde(default)]
    pub gpm: Option<Gpm>,
}

/// What the GPM functions report for one GPU: each metric's value over the interval
/// between two samples (the value in the scenario when the later sample was taken). A
/// metric left out answers "not supported" on its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gpm {
    /// `false` plays a GPU (or driver) that stops supporting GPM: sampling then answers
    /// "not supported".
    #[serde(default = "supported")]
    pub supported: bool,
    /// `NVML_GPM_METRIC_SM_UTIL`, percent.
    pub sm_util: Option<f64>,
    /// `NVML_GPM_METRIC_SM_OCCUPANCY`, percent.
    pub sm_occupancy: Option<f64>,
    /// `NVML_GPM_METRIC_ANY_TENSOR_UTIL`, percent.
    pub any_tensor_util: Option<f64>,
    /// `NVML_GPM_METRIC_HMMA_TENSOR_UTIL`, percent.
    pub hmma_tensor_util: Option<f64>,
    /// `NVML_GPM_METRIC_DRAM_BW_UTIL`, percent.
    pub dram_bw_util: Option<f64>,
    /// `NVML_GPM_METRIC_FP16_UTIL`, percent.
    pub fp16_util: Option<f64>,
    /// `NVML_GPM_METRIC_FP32_UTIL`, percent.
    pub fp32_util: Option<f64>,
    /// `NVML_GPM_METRIC_PCIE_TX_PER_SEC`, MiB/s.
    pub pcie_tx_per_sec: Option<f64>,
    /// `NVML_GPM_METRIC_PCIE_RX_PER_SEC`, MiB/s.
    pub pcie_rx_per_sec: Option<f64>,
    /// `NVML_GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC`, MiB/s.
    pub nvlink_total_tx_per_sec: Option<f64>,
    /// `NVML_GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC`, MiB/s.
    pub nvlink_total_rx_per_sec: Option<f64>,
}

fn supported() -> bool {
    true
}

impl Gpm {
    /// The value for an NVML GPM metric id, `None` when the scenario leaves it out.
    pub fn value(&self, metric_id: u32) -> Option<f64> {
        use nvml_wrapper_sys::bindings as b;
        match metric_id {
            b::nvmlGpmMetricId_t_NVML_GPM_METRIC_SM_UTIL => self.sm_util,
            b::nvmlGpmMetricId_t_NVML_GPM_METRIC_SM_OCCUPANCY => self.sm_occupancy,
            b::nvmlGpmMetricId_t_NVML_GPM_METRIC_ANY_TENSOR_UTIL => self.any_tensor_util,
            b::nvmlGpmMetricId_t_NVML_GPM_METRIC_HMMA_TENSOR_UTIL => self.hmma_tensor_util,
            b::nvmlGpmMetricId_t_NVML_GPM_METRIC_DRAM_BW_UTIL => self.dram_bw_util,
            b::nvmlGpmMetricId_t_NVML_GPM_METRIC_FP32_UTIL => self.fp32_util,
            b::nvmlGpmMetricId_t_NVML_GPM_METRIC_FP16_UTIL => self.fp16_util,
            b::nvmlGpmMetricId_t_NVML_GPM_METRIC_PCIE_TX_PER_SEC => self.pcie_tx_per_sec,
            b::nvmlGpmMetricId_t_NVML_GPM_METRIC_PCIE_RX_PER_SEC => self.pcie_rx_per_sec,
            b::nvmlGpmMetricId_t_NVML_GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC => {
                self.nvlink_total_rx_per_sec
            }
            b::nvmlGpmMetricId_t_NVML_GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC => {
                self.nvlink_total_tx_per_sec
            }
            _ => None,
        }
    }
}

/// One MIG instance of a GPU.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigDevice {
    /// UUID (`MIG-...`).
    pub uuid: String,
    /// Memory of the instance.
    pub memory_total_bytes: u64,
    /// Memory allocated in the instance.
    #[serde(default)]
    pub memory_used_bytes: u64,
}

/// A process using a GPU.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Process {
    /// Process id (host namespace, as real NVML reports).
    pub pid: u32,
    /// GPU memory it holds.
    pub used_memory_bytes: u64,
}
