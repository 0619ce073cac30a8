//! The GPU performance figures (NVML's GPM) as every front door names them: one table, so
//! `/metrics`, the OTLP export and `runlens snapshot` agree.
//!
//! The OpenTelemetry semantic conventions have no names for these (the hardware GPU
//! conventions stop at utilization and memory), so the names are runlens's own.

use probe_core::GpuPerf;

/// How a figure is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerfUnit {
    /// A share, 0..1.
    Ratio,
    /// Bytes per second.
    BytesPerSecond,
}

/// One GPU performance figure.
pub struct PerfFigure {
    /// Prometheus name without its unit suffix (`runlens_gpu_sm_active`).
    pub prometheus: &'static str,
    /// OTLP metric name (`runlens.gpu.sm.active`).
    pub otlp: &'static str,
    /// A short label for a person (`runlens snapshot`).
    pub short: &'static str,
    /// What it means, for a person.
    pub help: &'static str,
    /// Its unit.
    pub unit: PerfUnit,
    /// Its value in a sample.
    pub get: fn(&GpuPerf) -> Option<f64>,
}

/// The figures of a sample that the GPU measured, in words: "SM active 63%, tensor 41%,
/// PCIe out 1.2 GiB/s".
pub fn describe(perf: &GpuPerf) -> String {
    FIGURES
        .iter()
        .filter_map(|f| {
            let value = (f.get)(perf)?;
            Some(match f.unit {
                PerfUnit::Ratio => format!("{} {:.0}%", f.short, value * 100.0),
                PerfUnit::BytesPerSecond => {
                    format!("{} {}/s", f.short, crate::format::bytes(value as u64))
                }
            })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every figure, in the order `runlens snapshot` shows them.
pub const FIGURES: [PerfFigure; 11] = [
    PerfFigure {
        prometheus: "runlens_gpu_sm_active",
        otlp: "runlens.gpu.sm.active",
        short: "SM active",
        help: "Share of time the SMs had work (GPM SM_UTIL)",
        unit: PerfUnit::Ratio,
        get: |p| p.sm_active_ratio,
    },
    PerfFigure {
        prometheus: "runlens_gpu_sm_occupancy",
        otlp: "runlens.gpu.sm.occupancy",
        short: "occupancy",
        help: "Resident warps against the SMs' maximum (GPM SM_OCCUPANCY)",
        unit: PerfUnit::Ratio,
        get: |p| p.sm_occupancy_ratio,
    },
    PerfFigure {
        prometheus: "runlens_gpu_tensor_active",
        otlp: "runlens.gpu.tensor.active",
        short: "tensor",
        help: "Share of time the tensor cores worked (GPM ANY_TENSOR_UTIL)",
        unit: PerfUnit::Ratio,
        get: |p| p.tensor_active_ratio,
    },
    PerfFigure {
        prometheus: "runlens_gpu_tensor_hmma_active",
        otlp: "runlens.gpu.tensor.hmma.active",
        short: "HMMA",
        help: "Share of time the tensor cores did half-precision work (GPM HMMA_TENSOR_UTIL)",
        unit: PerfUnit::Ratio,
        get: |p| p.tensor_hmma_active_ratio,
    },
    PerfFigure {
        prometheus: "runlens_gpu_dram_bandwidth",
        otlp: "runlens.gpu.dram.bandwidth",
        short: "mem bandwidth",
        help: "Device memory bandwidth used against its peak (GPM DRAM_BW_UTIL)",
        unit: PerfUnit::Ratio,
        get: |p| p.dram_bandwidth_ratio,
    },
    PerfFigure {
        prometheus: "runlens_gpu_fp16_active",
        otlp: "runlens.gpu.fp16.active",
        short: "FP16",
        help: "Share of time the SMs did FP16 work (GPM FP16_UTIL)",
        unit: PerfUnit::Ratio,
        get: |p| p.fp16_active_ratio,
    },
    PerfFigure {
        prometheus: "runlens_gpu_fp32_active",
        otlp: "runlens.gpu.fp32.active",
        short: "FP32",
        help: "Share of time the SMs did FP32 work (GPM FP32_UTIL)",
        unit: PerfUnit::Ratio,
        get: |p| p.fp32_active_ratio,
    },
    PerfFigure {
        prometheus: "runlens_gpu_pcie_transmit",
        otlp: "runlens.gpu.pcie.transmit",
        short: "PCIe out",
        help: "PCIe traffic out of the GPU (GPM PCIE_TX_PER_SEC)",
        unit: PerfUnit::BytesPerSecond,
        get: |p| p.pcie_tx_bytes_per_second,
    },
    PerfFigure {
        prometheus: "runlens_gpu_pcie_receive",
        otlp: "runlens.gpu.pcie.receive",
        short: "PCIe in",
        help: "PCIe traffic into the GPU (GPM PCIE_RX_PER_SEC)",
        unit: PerfUnit::BytesPerSecond,
        get: |p| p.pcie_rx_bytes_per_second,
    },
    PerfFigure {
        prometheus: "runlens_gpu_nvlink_transmit",
        otlp: "runlens.gpu.nvlink.transmit",
        short: "NVLink out",
        help: "NVLink traffic out of the GPU, all links (GPM NVLINK_TOTAL_TX_PER_SEC)",
        unit: PerfUnit::BytesPerSecond,
        get: |p| p.nvlink_tx_bytes_per_second,
    },
    PerfFigure {
        prometheus: "runlens_gpu_nvlink_receive",
        otlp: "runlens.gpu.nvlink.receive",
        short: "NVLink in",
        help: "NVLink traffic into the GPU, all links (GPM NVLINK_TOTAL_RX_PER_SEC)",
        unit: PerfUnit::BytesPerSecond,
        get: |p| p.nvlink_rx_bytes_per_second,
    },
];
