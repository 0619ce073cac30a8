//! NVML's GPU performance monitoring (GPM) functions, answered from the scenario's `gpm`.
//!
//! The structs are nvml-wrapper-sys's, which are NVML's (`nvml.h`): `nvmlGpmSupport_t`
//! version 1 `{version, isSupportedDevice}`; `nvmlGpmMetricsGet_t` version 1 `{version,
//! numMetrics, sample1, sample2, metrics[NVML_GPM_METRIC_MAX]}` with each
//! `nvmlGpmMetric_t` `{metricId, nvmlReturn, value, metricInfo{shortName, longName,
//! unit}}`. A sample handle is an opaque pointer the library allocates; here it points at a
//! [`Sample`].

use nvml_wrapper_sys::bindings::{
    NVML_GPM_METRICS_GET_VERSION, NVML_GPM_SUPPORT_VERSION, nvmlDevice_t, nvmlGpmMetricsGet_t,
    nvmlGpmSample_t, nvmlGpmSupport_t, nvmlReturn_t,
};

use crate::scenario::Gpm;
use crate::{INVALID_ARGUMENT, SUCCESS, lock, put, with_device, with_state};

/// NVML's `NVML_ERROR_NOT_SUPPORTED`.
const NOT_SUPPORTED: nvmlReturn_t = 3;
/// NVML's `NVML_ERROR_ARGUMENT_VERSION_MISMATCH`: a struct of another version.
const ARGUMENT_VERSION_MISMATCH: nvmlReturn_t = 25;

/// What one GPM sample holds: the device it was taken on, when (in sample order) and the
/// scenario's figures at that moment. Empty until `nvmlGpmSampleGet` fills it.
#[derive(Default)]
struct Sample {
    taken: Option<(usize, u64, Gpm)>,
}

/// The scenario's GPM figures of a device that supports GPM now.
fn supported(gpm: Option<&Gpm>) -> Option<&Gpm> {
    gpm.filter(|g| g.supported)
}

/// NVML's `nvmlGpmQueryDeviceSupport`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpmQueryDeviceSupport(
    device: nvmlDevice_t,
    support: *mut nvmlGpmSupport_t,
) -> nvmlReturn_t {
    with_device("nvmlGpmQueryDeviceSupport", device, |d| {
        if support.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        // SAFETY: non-null and valid per NVML's contract.
        let support = unsafe { &mut *support };
        if support.version != NVML_GPM_SUPPORT_VERSION {
            return Err(ARGUMENT_VERSION_MISMATCH);
        }
        support.isSupportedDevice = u32::from(supported(d.gpm.as_ref()).is_some());
        Ok(())
    })
}

/// NVML's `nvmlGpmSampleAlloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpmSampleAlloc(sample: *mut nvmlGpmSample_t) -> nvmlReturn_t {
    with_state("nvmlGpmSampleAlloc", |state| {
        let handle = Box::into_raw(Box::<Sample>::default()).cast();
        // SAFETY: NVML's contract: null or valid for a write.
        if let Err(e) = unsafe { put(sample, handle) } {
            // SAFETY: allocated just above and handed to nobody.
            drop(unsafe { Box::from_raw(handle.cast::<Sample>()) });
            return Err(e);
        }
        state.log_call(format_args!("nvmlGpmSampleAlloc"));
        Ok(())
    })
}

/// NVML's `nvmlGpmSampleFree`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpmSampleFree(sample: nvmlGpmSample_t) -> nvmlReturn_t {
    if sample.is_null() {
        return INVALID_ARGUMENT;
    }
    // SAFETY: allocated by nvmlGpmSampleAlloc and, per NVML's contract, freed once.
    drop(unsafe { Box::from_raw(sample.cast::<Sample>()) });
    if let Some(state) = lock().as_ref() {
        state.log_call(format_args!("nvmlGpmSampleFree"));
    }
    SUCCESS
}

/// NVML's `nvmlGpmSampleGet`: records the device's figures now.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpmSampleGet(
    device: nvmlDevice_t,
    sample: nvmlGpmSample_t,
) -> nvmlReturn_t {
    if sample.is_null() {
        return INVALID_ARGUMENT;
    }
    let mut figures = None;
    let code = with_device("nvmlGpmSampleGet", device, |d| {
        figures = Some(supported(d.gpm.as_ref()).ok_or(NOT_SUPPORTED)?.clone());
        Ok(())
    });
    let Some(figures) = figures else {
        return code;
    };
    let order = with_counter();
    // SAFETY: allocated by nvmlGpmSampleAlloc, not freed (NVML's contract).
    let sample = unsafe { &mut *sample.cast::<Sample>() };
    sample.taken = Some((device as usize, order, figures));
    SUCCESS
}

/// The next number in sample order.
fn with_counter() -> u64 {
    let mut guard = lock();
    guard.as_mut().map_or(0, |state| {
        state.gpm_samples_taken += 1;
        state.gpm_samples_taken
    })
}

/// NVML's `nvmlGpmMetricsGet`: each requested metric over the interval from `sample1`
/// to `sample2`, which must be two samples of one device taken in that order.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlGpmMetricsGet(request: *mut nvmlGpmMetricsGet_t) -> nvmlReturn_t {
    if request.is_null() {
        return INVALID_ARGUMENT;
    }
    // SAFETY: non-null and valid per NVML's contract.
    let request = unsafe { &mut *request };
    if request.version != NVML_GPM_METRICS_GET_VERSION {
        return ARGUMENT_VERSION_MISMATCH;
    }
    if request.sample1.is_null()
        || request.sample2.is_null()
        || request.numMetrics as usize > request.metrics.len()
    {
        return INVALID_ARGUMENT;
    }
    // SAFETY: both allocated by nvmlGpmSampleAlloc and not freed (NVML's contract).
    let (first, second) = unsafe {
        (
            &*request.sample1.cast::<Sample>(),
            &*request.sample2.cast::<Sample>(),
        )
    };
    let (Some((device, before, _)), Some((device2, after, figures))) =
        (&first.taken, &second.taken)
    else {
        return INVALID_ARGUMENT;
    };
    if device != device2 || before >= after {
        return INVALID_ARGUMENT;
    }
    with_device("nvmlGpmMetricsGet", *device as nvmlDevice_t, |_| {
        for metric in &mut request.metrics[..request.numMetrics as usize] {
            let value = figures.value(metric.metricId);
            metric.nvmlReturn = if value.is_some() {
                SUCCESS
            } else {
                NOT_SUPPORTED
            };
            metric.value = value.unwrap_or(0.0);
            metric.metricInfo.shortName = std::ptr::null_mut();
            metric.metricInfo.longName = std::ptr::null_mut();
            metric.metricInfo.unit = std::ptr::null_mut();
        }
        Ok(())
    })
}
