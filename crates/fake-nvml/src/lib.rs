//! A fake NVML: the C functions runlens calls, answering from a JSON scenario.
//!
//! Load it wherever `libnvidia-ml.so.1` would be loaded (`runlens --nvml-lib
//! target/debug/librunlens_fake_nvml.so`) and name a scenario file in
//! `RUNLENS_FAKE_NVML_SCENARIO`. It goes through the real `nvml-wrapper` loading and FFI
//! path, so runlens's GPU code is tested as it runs on real hardware: any number of
//! devices, per-device and per-function injected error codes (3 not supported,
//! 15 GPU lost, 9 driver not loaded), and values that change while a program runs — the
//! library re-reads the scenario whenever the file changes (checked once per
//! `nvmlDeviceGetCount_v2`, i.e. once per sample).
//!
//! Safety contract of every exported function: NVML's own — pointer arguments are either
//! null (answered with `NVML_ERROR_INVALID_ARGUMENT`) or valid for writes of the
//! documented size.
#![allow(unsafe_code, clippy::missing_safety_doc, non_snake_case)]

mod gpm;
pub mod scenario;

use std::ffi::{c_char, c_int, c_uint, c_ulonglong};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use nvml_wrapper_sys::bindings::{
    nvmlDevice_t, nvmlMemory_t, nvmlMemory_v2_t, nvmlProcessInfo_t, nvmlReturn_t, nvmlUtilization_t,
};
use scenario::{CALL_LOG_ENV, Device, SCENARIO_ENV, Scenario};

const SUCCESS: nvmlReturn_t = 0;
const UNINITIALIZED: nvmlReturn_t = 1;
const INVALID_ARGUMENT: nvmlReturn_t = 2;
const INSUFFICIENT_SIZE: nvmlReturn_t = 7;
const DRIVER_NOT_LOADED: nvmlReturn_t = 9;
const NOT_FOUND: nvmlReturn_t = 6;
const UNKNOWN: nvmlReturn_t = 999;

/// What identifies one version of the scenario file: replacing it (write to a temporary
/// file, then rename) changes the inode even within one mtime tick.
type Stamp = (SystemTime, u64, u64);

struct State {
    path: PathBuf,
    stamp: Option<Stamp>,
    scenario: Scenario,
    refcount: u32,
    /// Where calls are logged ([`CALL_LOG_ENV`]), if anywhere.
    call_log: Option<PathBuf>,
    /// Numbers GPM samples as they are taken, so the metrics of two samples can check
    /// their order.
    gpm_samples_taken: u64,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn lock() -> MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

fn stamp(path: &PathBuf) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

fn load(path: &PathBuf) -> Result<Scenario, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

impl State {
    /// Re-reads the scenario if the file changed. A file that is mid-write (invalid JSON)
    /// keeps the previous scenario.
    fn refresh(&mut self) {
        let now = stamp(&self.path);
        if now != self.stamp
            && let Ok(s) = load(&self.path)
        {
            self.scenario = s;
            self.stamp = now;
        }
    }

    /// Appends `entry` to the call log, when one is configured.
    fn log_call(&self, entry: std::fmt::Arguments<'_>) {
        use std::io::Write;
        if let Some(path) = &self.call_log
            && let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        {
            let _ = writeln!(file, "{entry}");
        }
    }

    fn global_error(&self, function: &str) -> Option<nvmlReturn_t> {
        let e = &self.scenario.errors;
        e.get(function).or_else(|| e.get("*")).copied()
    }
}

/// Runs `f` on the initialised scenario, after the injected global error for `function`.
fn with_state(
    function: &str,
    f: impl FnOnce(&mut State) -> Result<(), nvmlReturn_t>,
) -> nvmlReturn_t {
    let mut guard = lock();
    let Some(state) = guard.as_mut().filter(|s| s.refcount > 0) else {
        return UNINITIALIZED;
    };
    if let Some(code) = state.global_error(function) {
        return code;
    }
    match f(state) {
        Ok(()) => SUCCESS,
        Err(code) => code,
    }
}

/// MIG device handles are `MIG_HANDLE * (gpu + 1) + mig index + 1`, apart from GPU
/// handles (`gpu + 1`).
const MIG_HANDLE: usize = 0x1000;

/// The GPU and MIG index behind a MIG handle, or `None` for a GPU handle.
fn mig_of(handle: nvmlDevice_t) -> Option<(usize, usize)> {
    let h = handle as usize;
    (h >= MIG_HANDLE).then(|| (h / MIG_HANDLE - 1, h % MIG_HANDLE - 1))
}

/// Runs `f` on the MIG instance behind `handle`.
fn with_mig(
    function: &str,
    handle: nvmlDevice_t,
    f: impl FnOnce(&scenario::MigDevice) -> Result<(), nvmlReturn_t>,
) -> nvmlReturn_t {
    let Some((gpu, mig)) = mig_of(handle) else {
        return INVALID_ARGUMENT;
    };
    with_device(function, (gpu + 1) as nvmlDevice_t, |d| {
        f(d.mig_devices.get(mig).ok_or(INVALID_ARGUMENT)?)
    })
}

/// Runs `f` on the device behind `handle`, after injected global and device errors.
fn with_device(
    function: &str,
    handle: nvmlDevice_t,
    f: impl FnOnce(&Device) -> Result<(), nvmlReturn_t>,
) -> nvmlReturn_t {
    with_state(function, |state| {
        let index = (handle as usize).checked_sub(1).ok_or(INVALID_ARGUMENT)?;
        state.log_call(format_args!("{function}@{index}"));
        let device = state.scenario.devices.get(index).ok_or(INVALID_ARGUMENT)?;
        let e = &device.errors;
        if let Some(code) = e.get(function).or_else(|| e.get("*")) {
            return Err(*code);
        }
        f(device)
    })
}

/// Writes through a pointer that NVML's contract says is valid or null.
unsafe fn put<T>(ptr: *mut T, value: T) -> Result<(), nvmlReturn_t> {
    if ptr.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: non-null, and valid for writes per the NVML contract.
    unsafe { ptr.write(value) };
    Ok(())
}

/// Copies a string into a caller's buffer of `length` bytes, NUL-terminated.
unsafe fn put_str(buf: *mut c_char, length: c_uint, text: &str) -> Result<(), nvmlReturn_t> {
    if buf.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    let bytes = text.as_bytes();
    if bytes.len() + 1 > length as usize {
        return Err(INSUFFICIENT_SIZE);
    }
    // SAFETY: the buffer holds `length` bytes, and we write at most that many.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), buf, bytes.len());
        buf.add(bytes.len()).write(0);
    }
    Ok(())
}

/// NVML's `nvmlInit_v2`, answered from the scenario.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit_v2() -> nvmlReturn_t {
    let mut guard = lock();
    if let Some(state) = guard.as_mut() {
        state.refresh();
        if let Some(code) = state.global_error("nvmlInit_v2") {
            return code;
        }
        state.refcount += 1;
        return SUCCESS;
    }
    let Some(path) = std::env::var_os(SCENARIO_ENV).map(PathBuf::from) else {
        // No scenario: behave like a machine whose driver is not loaded.
        return DRIVER_NOT_LOADED;
    };
    let scenario = match load(&path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("fake NVML: cannot read scenario {e}");
            return UNKNOWN;
        }
    };
    if let Some(code) = scenario
        .errors
        .get("nvmlInit_v2")
        .or_else(|| scenario.errors.get("*"))
    {
        return *code;
    }
    *guard = Some(State {
        stamp: stamp(&path),
        path,
        scenario,
        refcount: 1,
        call_log: std::env::var_os(CALL_LOG_ENV).map(PathBuf::from),
        gpm_samples_taken: 0,
    });
    SUCCESS
}

/// NVML's `nvmlInit`, answered from the scenario.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlInit() -> nvmlReturn_t {
    nvmlInit_v2()
}

/// NVML's `nvmlInitWithFlags`, answered from the scenario.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlInitWithFlags(_flags: c_uint) -> nvmlReturn_t {
    nvmlInit_v2()
}

/// NVML's `nvmlShutdown`, answered from the scenario.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlShutdown() -> nvmlReturn_t {
    let mut guard = lock();
    match guard.as_mut() {
        Some(state) if state.refcount > 0 => {
            state.refcount -= 1;
            SUCCESS
        }
        _ => UNINITIALIZED,
    }
}

/// NVML's `nvmlErrorString`, answered from the scenario.
#[unsafe(no_mangle)]
pub extern "C" fn nvmlErrorString(_result: nvmlReturn_t) -> *const c_char {
    c"fake NVML error".as_ptr()
}

/// NVML's `nvmlSystemGetDriverVersion`, answered from the scenario.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(
    version: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    with_state("nvmlSystemGetDriverVersion", |s| unsafe {
        put_str(version, length, &s.scenario.driver_version)
    })
}

/// NVML's `nvmlSystemGetNVMLVersion`, answered from the scenario.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(
    version: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    with_state("nvmlSystemGetNVMLVersion", |_| unsafe {
        put_str(version, length, "12.550.54.15")
    })
}

/// NVML's `nvmlSystemGetCudaDriverVersion`, answered from the scenario.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion(version: *mut c_int) -> nvmlReturn_t {
    with_state("nvmlSystemGetCudaDriverVersion", |s| unsafe {
        put(version, s.scenario.cuda_driver_version)
    })
}

/// NVML's `nvmlSystemGetCudaDriverVersion_v2`, answered from the scenario.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion_v2(version: *mut c_int) -> nvmlReturn_t {
    with_state("nvmlSystemGetCudaDriverVersion_v2", |s| unsafe {
        put(version, s.scenario.cuda_driver_version)
    })
}

/// NVML's `nvmlDeviceGetCount_v2`, answered from the scenario.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> nvmlReturn_t {
    let mut guard = lock();
    if let Some(state) = guard.as_mut() {
        // Once per sample: pick up scenario changes (allocations, lost GPUs, ...).
        state.refresh();
    }
    drop(guard);
    with_state("nvmlDeviceGetCount_v2", |s| unsafe {
        put(count, s.scenario.devices.len() as c_uint)
    })
}

/// NVML's `nvmlDeviceGetHandleByIndex_v2`, answered from the scenario.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(
    index: c_uint,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    let handle = (index as usize + 1) as nvmlDevice_t;
    with_device("nvmlDeviceGetHandleByIndex_v2", handle, |_| unsafe {
        put(device, handle)
    })
}

/// NVML's `nvmlDeviceGetIndex`, answered from the scenario.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetIndex(
    device: nvmlDevice_t,
    index: *mut c_uint,
) -> nvmlReturn_t {
    with_device("nvmlDeviceGetIndex", device, |_| unsafe {
        put(index, (device as usize - 1) as c_uint)
    })
}

/// NVML's `nvmlDeviceGetName`, answered from the scenario.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetName(
    device: nvmlDevice_t,
    name: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    with_device("nvmlDeviceGetName", device, |d| unsafe {
        put_str(name, length, &d.name)
    })
}

/// NVML's `nvmlDeviceGetUUID`, answered from the scenario.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUUID(
    device: nvmlDevice_t,
    uuid: *mut c_char,
    length: c_uint,
) -> nvmlReturn_t {
    if mig_of(device).is_some() {
        return with_mig("nvmlDeviceGetUUID", device, |m| unsafe {
            put_str(uuid, length, &m.uuid)
        });
    }
    with_device("nvmlDeviceGetUUID", device, |d| unsafe {
        put_str(uuid, length, &d.uuid)
    })
}

fn free_bytes(d: &Device) -> u64 {
    d.memory_total_bytes
        .saturating_sub(d.memory_used_bytes)
        .saturating_sub(d.memory_reserved_bytes)
}

/// Writes a v2 memory record, keeping the `version` the caller set.
///
/// # Safety
/// `memory` is null or valid for reads and writes, as NVML's contract requires.
unsafe fn put_memory_v2(
    memory: *mut nvmlMemory_v2_t,
    total: u64,
    reserved: u64,
    used: u64,
) -> Result<(), nvmlReturn_t> {
    if memory.is_null() {
        return Err(INVALID_ARGUMENT);
    }
    // SAFETY: non-null and valid per the NVML contract; the caller set `version`.
    let version = unsafe { (*memory).version };
    unsafe {
        put(
            memory,
            nvmlMemory_v2_t {
                version,
                total,
                reserved,
                free: total.saturating_sub(used).saturating_sub(reserved),
                used,
            },
        )
    }
}

/// NVML's `nvmlDeviceGetMemoryInfo_v2`, answered from the scenario (a MIG handle answers
/// with its instance's memory).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_v2_t,
) -> nvmlReturn_t {
    if mig_of(device).is_some() {
        return with_mig("nvmlDeviceGetMemoryInfo_v2", device, |m| {
            // SAFETY: the caller's pointer, per the NVML contract.
            unsafe { put_memory_v2(memory, m.memory_total_bytes, 0, m.memory_used_bytes) }
        });
    }
    with_device("nvmlDeviceGetMemoryInfo_v2", device, |d| {
        // SAFETY: the caller's pointer, per the NVML contract.
        unsafe {
            put_memory_v2(
                memory,
                d.memory_total_bytes,
                d.memory_reserved_bytes,
                d.memory_used_bytes,
            )
        }
    })
}

/// NVML's `nvmlDeviceGetMemoryInfo`, answered from the scenario.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_t,
) -> nvmlReturn_t {
    with_device("nvmlDeviceGetMemoryInfo", device, |d| unsafe {
        put(
            memory,
            nvmlMemory_t {
                total: d.memory_total_bytes,
                free: free_bytes(d),
                used: d.memory_used_bytes + d.memory_reserved_bytes,
            },
        )
    })
}

/// NVML's `nvmlDeviceGetUtilizationRates`, answered from the scenario.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(
    device: nvmlDevice_t,
    utilization: *mut nvmlUtilization_t,
) -> nvmlReturn_t {
    with_device("nvmlDeviceGetUtilizationRates", device, |d| unsafe {
        put(
            utilization,
            nvmlUtilization_t {
                gpu: d.utilization_gpu_percent,
                memory: d.utilization_memory_percent,
            },
        )
    })
}

/// Exports NVML getters that write one field of the scenario's device.
macro_rules! device_getters {
    ($($name:ident => $field:ident: $ty:ty;)*) => {$(
        #[doc = concat!("NVML's `", stringify!($name), "`, answered from the scenario.")]
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name(device: nvmlDevice_t, out: *mut $ty) -> nvmlReturn_t {
            with_device(stringify!($name), device, |d| unsafe { put(out, d.$field) })
        }
    )*};
}

device_getters! {
    nvmlDeviceGetPowerUsage => power_milliwatts: c_uint;
    nvmlDeviceGetEnforcedPowerLimit => power_limit_milliwatts: c_uint;
    nvmlDeviceGetPerformanceState => pstate: c_uint;
    nvmlDeviceGetCurrentClocksThrottleReasons => throttle_reasons: c_ulonglong;
    nvmlDeviceGetCurrentClocksEventReasons => throttle_reasons: c_ulonglong;
}

/// NVML's `nvmlDeviceGetTemperature`, answered from the scenario.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTemperature(
    device: nvmlDevice_t,
    _sensor: c_uint,
    temp: *mut c_uint,
) -> nvmlReturn_t {
    with_device("nvmlDeviceGetTemperature", device, |d| unsafe {
        put(temp, d.temperature_celsius)
    })
}

/// NVML's `nvmlDeviceGetClockInfo`, answered from the scenario.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetClockInfo(
    device: nvmlDevice_t,
    clock_type: c_uint,
    clock: *mut c_uint,
) -> nvmlReturn_t {
    with_device("nvmlDeviceGetClockInfo", device, |d| {
        // NVML_CLOCK_GRAPHICS = 0, NVML_CLOCK_SM = 1, NVML_CLOCK_MEM = 2.
        let mhz = match clock_type {
            0 | 1 => d.clock_sm_mhz,
            2 => d.clock_memory_mhz,
            _ => return Err(3),
        };
        unsafe { put(clock, mhz) }
    })
}

/// NVML's `nvmlDeviceGetTotalEccErrors`, answered from the scenario.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetTotalEccErrors(
    device: nvmlDevice_t,
    error_type: c_uint,
    _counter_type: c_uint,
    count: *mut c_ulonglong,
) -> nvmlReturn_t {
    with_device("nvmlDeviceGetTotalEccErrors", device, |d| {
        // NVML_MEMORY_ERROR_TYPE_CORRECTED = 0, UNCORRECTED = 1.
        let n = if error_type == 0 {
            d.ecc_corrected
        } else {
            d.ecc_uncorrected
        };
        unsafe { put(count, n) }
    })
}

/// NVML's `nvmlDeviceGetComputeRunningProcesses_v3`, answered from the scenario.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetComputeRunningProcesses_v3(
    device: nvmlDevice_t,
    count: *mut c_uint,
    infos: *mut nvmlProcessInfo_t,
) -> nvmlReturn_t {
    with_device("nvmlDeviceGetComputeRunningProcesses_v3", device, |d| {
        if count.is_null() {
            return Err(INVALID_ARGUMENT);
        }
        let n = d.processes.len();
        // SAFETY: non-null per the check above; NVML's contract for the rest.
        let room = unsafe { *count } as usize;
        unsafe { count.write(n as c_uint) };
        if n == 0 {
            return Ok(());
        }
        if infos.is_null() || room < n {
            return Err(INSUFFICIENT_SIZE);
        }
        for (i, p) in d.processes.iter().enumerate() {
            // SAFETY: the caller's array holds `room >= n` entries.
            unsafe {
                infos.add(i).write(nvmlProcessInfo_t {
                    pid: p.pid,
                    usedGpuMemory: p.used_memory_bytes,
                    gpuInstanceId: u32::MAX,
                    computeInstanceId: u32::MAX,
                });
            }
        }
        Ok(())
    })
}

/// NVML's `nvmlDeviceGetMigMode`, answered from the scenario.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMigMode(
    device: nvmlDevice_t,
    current: *mut c_uint,
    pending: *mut c_uint,
) -> nvmlReturn_t {
    with_device("nvmlDeviceGetMigMode", device, |d| {
        let mode = c_uint::from(!d.mig_devices.is_empty());
        unsafe {
            put(current, mode)?;
            put(pending, mode)
        }
    })
}

/// NVML's `nvmlDeviceGetMigDeviceHandleByIndex`, answered from the scenario.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn nvmlDeviceGetMigDeviceHandleByIndex(
    device: nvmlDevice_t,
    index: c_uint,
    mig: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    with_device("nvmlDeviceGetMigDeviceHandleByIndex", device, |d| {
        if index as usize >= d.mig_devices.len() {
            return Err(NOT_FOUND);
        }
        let handle = (MIG_HANDLE * (device as usize) + index as usize + 1) as nvmlDevice_t;
        unsafe { put(mig, handle) }
    })
}
