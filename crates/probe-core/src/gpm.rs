//! GPU performance monitoring: NVML's GPM functions (Hopper and newer), which say what kind
//! of busy a GPU was — tensor cores, memory bandwidth, SM occupancy, PCIe and NVLink
//! traffic — where plain utilization only says that some kernel ran.
//!
//! GPM works on pairs of samples: each sample records the GPU's counters, and the metrics
//! are computed over the interval between two of them. The probe keeps one sample per GPU
//! (the previous one); each periodic sample takes a new one, computes the metrics since
//! the previous and keeps the new one for next time. A sample asked for sooner than
//! [`GPM_MIN_INTERVAL`] after the last (a fresh sample at a span's start right after a
//! periodic one) reports the last interval's figures instead of a noisy short one.
//!
//! Whether a GPU supports GPM is asked once; a GPU that says no, or stops saying yes (a
//! sample answers "not supported"), is not asked again, like every other unsupported
//! metric.
//!
//! The one module of this crate with `unsafe`: a sample handle must outlive the call that
//! took it, but nvml-wrapper's `GpmSample` borrows the `Nvml` that the probe itself owns,
//! so the probe keeps the raw handle and re-wraps it (to compute with it, or to free it)
//! while it holds the `Nvml`.
#![allow(unsafe_code)]

use std::time::{Duration, Instant};

use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::gpm::gpm_metrics_get;
use nvml_wrapper::struct_wrappers::gpm::GpmMetricResult;
use nvml_wrapper::{Device, GpmSample, Nvml};
use nvml_wrapper_sys::bindings::nvmlGpmSample_t;

use crate::snapshot::GpuPerf;

/// The shortest interval GPM figures are computed over; a sample asked for sooner reports
/// the previous interval's figures.
pub const GPM_MIN_INTERVAL: Duration = Duration::from_millis(90);

/// The metrics asked for, in the order [`perf_from`] reads them.
const METRICS: [GpmMetricId; 11] = [
    GpmMetricId::SmUtil,
    GpmMetricId::SmOccupancy,
    GpmMetricId::AnyTensorUtil,
    GpmMetricId::HmmaTensorUtil,
    GpmMetricId::DramBwUtil,
    GpmMetricId::Fp16Util,
    GpmMetricId::Fp32Util,
    GpmMetricId::PcieTxPerSec,
    GpmMetricId::PcieRxPerSec,
    GpmMetricId::NvlinkTotalTxPerSec,
    GpmMetricId::NvlinkTotalRxPerSec,
];

/// NVML reports traffic in MiB per second.
const MIB: f64 = 1_048_576.0;

/// A GPM sample handle owned by the probe (allocated by NVML, freed by [`Gpm::release`]).
struct Handle(nvmlGpmSample_t);

// SAFETY: a GPM sample is memory NVML allocated for this probe alone; NVML only asks that
// one thread use it at a time, which the probe's `&mut self` access guarantees.
unsafe impl Send for Handle {}

/// Where one GPU stands with GPM.
// One per GPU, a handful per machine: the size difference costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
enum DeviceGpm {
    /// Not asked yet.
    Unasked,
    /// No GPM here: not asked again.
    Unsupported,
    /// GPM works: the last sample taken, and the figures of the last interval.
    Supported {
        last: Option<(Handle, Instant)>,
        perf: Option<GpuPerf>,
    },
}

/// The GPM state of every GPU of one NVML probe.
#[derive(Default)]
pub(crate) struct Gpm {
    devices: Vec<DeviceGpm>,
}

impl Gpm {
    /// The GPU's figures since its previous GPM sample, taking a new one; `None` without
    /// GPM, on the first sample, or when NVML failed this time.
    pub(crate) fn read(
        &mut self,
        nvml: &Nvml,
        device: &Device<'_>,
        slot: usize,
    ) -> Option<GpuPerf> {
        if self.devices.len() <= slot {
            self.devices.resize_with(slot + 1, || DeviceGpm::Unasked);
        }
        let state = &mut self.devices[slot];
        if matches!(state, DeviceGpm::Unasked) {
            *state = match device.gpm_support() {
                Ok(true) => DeviceGpm::Supported {
                    last: None,
                    perf: None,
                },
                Ok(false) | Err(NvmlError::NotSupported | NvmlError::FailedToLoadSymbol(_)) => {
                    DeviceGpm::Unsupported
                }
                Err(e) => {
                    tracing::debug!(slot, error = %e, "GPM support query failed; asking again later");
                    return None;
                }
            };
        }
        let DeviceGpm::Supported { last, perf } = state else {
            return None;
        };
        if let Some((_, at)) = last
            && at.elapsed() < GPM_MIN_INTERVAL
        {
            return *perf;
        }
        let sample = match device.gpm_sample() {
            Ok(sample) => sample,
            Err(e) => {
                free(nvml, last.take());
                *perf = None;
                if matches!(
                    e,
                    NvmlError::NotSupported | NvmlError::FailedToLoadSymbol(_)
                ) {
                    tracing::info!(slot, "GPU stopped supporting performance monitoring");
                    *state = DeviceGpm::Unsupported;
                } else {
                    tracing::debug!(slot, error = %e, "GPM sample failed");
                }
                return None;
            }
        };
        let now = Instant::now();
        if let Some((previous, at)) = last.take() {
            // SAFETY: the handle came from `GpmSample::into_handle` of this NVML instance
            // and is owned by this probe alone; the wrapper frees it when dropped here.
            let previous = unsafe { GpmSample::from_handle(nvml, previous.0) };
            *perf = match gpm_metrics_get(nvml, &previous, &sample, &METRICS) {
                Ok(results) => Some(perf_from(&results, now.duration_since(at))),
                Err(e) => {
                    tracing::debug!(slot, error = %e, "GPM metrics failed");
                    None
                }
            };
        }
        *last = Some((Handle(sample.into_handle()), now));
        *perf
    }

    /// Frees every sample held, before `nvml` shuts down.
    pub(crate) fn release(&mut self, nvml: &Nvml) {
        for state in self.devices.drain(..) {
            if let DeviceGpm::Supported { last, .. } = state {
                free(nvml, last);
            }
        }
    }
}

/// Frees a held sample.
fn free(nvml: &Nvml, held: Option<(Handle, Instant)>) {
    if let Some((handle, _)) = held {
        // SAFETY: as in `Gpm::read`: ours alone, from this NVML instance; dropping frees it.
        drop(unsafe { GpmSample::from_handle(nvml, handle.0) });
    }
}

/// The figures from the answers to [`METRICS`], in its order: percentages become
/// ratios, MiB/s become bytes/s; a metric that failed on its own is `None`.
fn perf_from(results: &[Result<GpmMetricResult, NvmlError>], interval: Duration) -> GpuPerf {
    let value = |i: usize| {
        results
            .get(i)
            .and_then(|r| r.as_ref().ok())
            .map(|r| r.value)
            .filter(|v| v.is_finite())
    };
    let ratio = |i: usize| value(i).map(|percent| (percent / 100.0).clamp(0.0, 1.0));
    let bytes = |i: usize| value(i).map(|mib| mib.max(0.0) * MIB);
    GpuPerf {
        interval_seconds: interval.as_secs_f64(),
        sm_active_ratio: ratio(0),
        sm_occupancy_ratio: ratio(1),
        tensor_active_ratio: ratio(2),
        tensor_hmma_active_ratio: ratio(3),
        dram_bandwidth_ratio: ratio(4),
        fp16_active_ratio: ratio(5),
        fp32_active_ratio: ratio(6),
        pcie_tx_bytes_per_second: bytes(7),
        pcie_rx_bytes_per_second: bytes(8),
        nvlink_tx_bytes_per_second: bytes(9),
        nvlink_rx_bytes_per_second: bytes(10),
    }
}
