//! GPUs behind a small trait: NVML for real hardware, fixed devices for tests.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::time::{Duration, Instant};

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, PerformanceState, TemperatureSensor,
};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::error::NvmlError;

use crate::gpm::Gpm;
use crate::slow::{Every, RARE_FIGURES_EVERY};
use crate::snapshot::{GpuDevice, GpuProcess, GpuSnapshot, GpuState, MigDevice};

/// Something that can report the machine's GPUs.
///
/// Implementations never fail a sample: a device or metric that cannot be read is
/// reported as such inside the [`GpuSnapshot`].
pub trait GpuProbe: Send {
    /// Reads every device now.
    fn sample(&mut self) -> GpuSnapshot;

    /// How long a reading of the slow figures (temperature, power, clocks, error counts)
    /// serves later samples; probes without such figures ignore it.
    fn set_slow_every(&mut self, _every: Duration) {}
}

/// The probe for machines without GPUs, or when GPU sampling is turned off.
pub struct NoGpu {
    reason: String,
}

impl NoGpu {
    /// A probe that always answers "no GPU" with this reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

impl GpuProbe for NoGpu {
    fn sample(&mut self) -> GpuSnapshot {
        GpuSnapshot::unavailable(self.reason.clone())
    }
}

/// A probe that reports a fixed list of devices: for tests of everything above the probe.
pub struct StaticGpus {
    devices: Vec<GpuDevice>,
}

impl StaticGpus {
    /// A probe that always reports these devices.
    pub fn new(devices: Vec<GpuDevice>) -> Self {
        Self { devices }
    }
}

impl GpuProbe for StaticGpus {
    fn sample(&mut self) -> GpuSnapshot {
        GpuSnapshot {
            available: true,
            unavailable_reason: None,
            devices: self.devices.clone(),
        }
    }
}

/// Metrics that can be unsupported on a device; remembered so they are asked once only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Metric {
    Uuid,
    Name,
    Memory,
    Utilization,
    Temperature,
    Power,
    PowerLimit,
    ClockSm,
    ClockMemory,
    PerformanceState,
    ClockEventReasons,
    EccCorrected,
    EccUncorrected,
    Processes,
    Mig,
}

impl Metric {
    fn name(self) -> &'static str {
        match self {
            Metric::Uuid => "uuid",
            Metric::Name => "name",
            Metric::Memory => "memory",
            Metric::Utilization => "utilization",
            Metric::Temperature => "temperature",
            Metric::Power => "power",
            Metric::PowerLimit => "power_limit",
            Metric::ClockSm => "clock_sm",
            Metric::ClockMemory => "clock_memory",
            Metric::PerformanceState => "performance_state",
            Metric::ClockEventReasons => "clock_event_reasons",
            Metric::EccCorrected => "ecc_corrected",
            Metric::EccUncorrected => "ecc_uncorrected",
            Metric::Processes => "processes",
            Metric::Mig => "mig",
        }
    }
}

/// Why NVML could not be used, sorted into the cases that need different fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvmlLoadErrorKind {
    /// The library file is not there (no driver installed, or not mounted).
    NotFound,
    /// The library loaded but the kernel driver is not running.
    DriverNotLoaded,
    /// The library is too old or too new for the calls runlens makes.
    VersionMismatch,
    /// The GPU device files are not accessible to this user.
    PermissionDenied,
    /// Anything else NVML reported.
    Other,
}

impl NvmlLoadErrorKind {
    /// A short stable name: `not_found`, `driver_not_loaded`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            NvmlLoadErrorKind::NotFound => "not_found",
            NvmlLoadErrorKind::DriverNotLoaded => "driver_not_loaded",
            NvmlLoadErrorKind::VersionMismatch => "version_mismatch",
            NvmlLoadErrorKind::PermissionDenied => "permission_denied",
            NvmlLoadErrorKind::Other => "other",
        }
    }
}

/// NVML could not be loaded: the kind of failure and a sentence that says what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvmlLoadError {
    /// Which case it is.
    pub kind: NvmlLoadErrorKind,
    /// What happened and what to do, for a person.
    pub message: String,
}

/// Which GPUs to sample: all of them, or those named by index or UUID (as
/// `NVIDIA_VISIBLE_DEVICES` names them). A sidecar in a pod given every GPU of the node
/// limits itself to the pod's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuSelection {
    /// Indexes as NVML numbers the devices.
    pub indexes: HashSet<u32>,
    /// UUIDs (`GPU-…`).
    pub uuids: HashSet<String>,
}

impl GpuSelection {
    /// Every GPU.
    pub fn all() -> Self {
        Self::default()
    }

    /// From a list such as `0,2` or `GPU-1234…,GPU-abcd…` (`all` or an empty list: every GPU).
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        let mut selection = Self::default();
        for item in items
            .iter()
            .map(|i| i.as_ref().trim())
            .filter(|i| !i.is_empty())
        {
            if item.eq_ignore_ascii_case("all") {
                return Ok(Self::all());
            }
            if let Ok(index) = item.parse::<u32>() {
                selection.indexes.insert(index);
            } else if item.starts_with("GPU-") {
                selection.uuids.insert(item.to_owned());
            } else {
                return Err(format!(
                    "{item:?} is neither a GPU index nor a GPU UUID (GPU-…); write e.g. 0,1 or GPU-8f3c…, or all"
                ));
            }
        }
        Ok(selection)
    }

    /// Whether every GPU is selected.
    pub fn is_all(&self) -> bool {
        self.indexes.is_empty() && self.uuids.is_empty()
    }
}

/// Every NVIDIA GPU through NVML (or those a [`GpuSelection`] names), which is loaded and
/// initialised once for the life of the probe (re-initialising costs ~22 ms per device).
pub struct NvmlProbe {
    nvml: Result<Nvml, NvmlLoadError>,
    selection: GpuSelection,
    /// Per device index, its UUID once known (to match a selection by UUID without asking
    /// NVML again, and to keep a lost device selected).
    uuids: Vec<Option<String>>,
    /// Per device index, the metrics the device answered `NotSupported` for.
    unsupported: Vec<HashSet<Metric>>,
    /// Per device index, what rarely changes, read at most every 30 s
    /// (`RARE_FIGURES_EVERY`). It also names a lost device, which can no longer say which
    /// it is.
    fixed: Vec<Option<Fixed>>,
    /// Per device index, what changes over seconds, read at most every `slow_every`
    /// ([`crate::SLOW_FIGURES_EVERY`] unless set).
    slow: Vec<Every<Slow>>,
    slow_every: Duration,
    /// Performance monitoring (GPM) samples and support, per device.
    gpm: Gpm,
}

impl Drop for NvmlProbe {
    fn drop(&mut self) {
        // GPM samples are NVML's memory: freed while the library is still initialised.
        if let Ok(nvml) = &self.nvml {
            self.gpm.release(nvml);
        }
    }
}

/// Figures that change only on reconfiguration (a reset, a new power cap): each NVML call
/// costs tens of microseconds on real drivers, so they are not asked every sample.
#[derive(Debug, Clone)]
struct Fixed {
    uuid: Option<String>,
    name: Option<String>,
    power_limit_mw: Option<u32>,
    mig_enabled: Option<bool>,
    /// When they were read.
    read_at: Instant,
}

/// Figures that change over seconds rather than milliseconds: a fresh sample at a run's end
/// (often milliseconds after the last) carries them and asks NVML only for memory,
/// utilization and processes, half the calls.
#[derive(Debug, Clone, Default)]
struct Slow {
    temperature: Option<u32>,
    power_mw: Option<u32>,
    clock_sm_mhz: Option<u32>,
    clock_memory_mhz: Option<u32>,
    performance_state: Option<u32>,
    clock_event_reasons: Option<u64>,
    ecc_corrected_errors: Option<u64>,
    ecc_uncorrected_errors: Option<u64>,
}

impl NvmlProbe {
    /// Loads NVML from `lib_path`, or from the system's `libnvidia-ml.so.1` when `None`.
    ///
    /// Never fails: when NVML cannot be loaded, every sample says so with the reason.
    pub fn load(lib_path: Option<&OsStr>) -> Self {
        let nvml = match lib_path {
            Some(path) => Nvml::builder().lib_path(path).init(),
            None => Nvml::init(),
        }
        .map_err(|e| describe_load_error(&e, lib_path));
        if let Err(e) = &nvml {
            tracing::info!(reason = %e.message, "GPU sampling unavailable");
        }
        Self {
            nvml,
            selection: GpuSelection::all(),
            uuids: Vec::new(),
            unsupported: Vec::new(),
            fixed: Vec::new(),
            slow: Vec::new(),
            slow_every: crate::SLOW_FIGURES_EVERY,
            gpm: Gpm::default(),
        }
    }

    /// Samples only the GPUs `selection` names; the others are not read at all.
    pub fn with_selection(mut self, selection: GpuSelection) -> Self {
        self.selection = selection;
        self
    }

    /// Whether device `index` is selected. A selection by UUID asks NVML for the UUID the
    /// first time only.
    fn selected(&mut self, nvml: &Nvml, index: u32) -> bool {
        if self.selection.is_all() || self.selection.indexes.contains(&index) {
            return true;
        }
        if self.selection.uuids.is_empty() {
            return false;
        }
        let slot = index as usize;
        if self.uuids.len() <= slot {
            self.uuids.resize_with(slot + 1, || None);
        }
        if self.uuids[slot].is_none() {
            self.uuids[slot] = nvml.device_by_index(index).and_then(|d| d.uuid()).ok();
        }
        self.uuids[slot]
            .as_ref()
            .is_some_and(|uuid| self.selection.uuids.contains(uuid))
    }

    /// Why NVML is not usable, or `None` when it loaded.
    pub fn load_error(&self) -> Option<&str> {
        self.nvml.as_ref().err().map(|e| e.message.as_str())
    }

    /// The structured load failure, or `None` when NVML loaded.
    pub fn load_failure(&self) -> Option<&NvmlLoadError> {
        self.nvml.as_ref().err()
    }

    /// The driver version NVML reports, when loaded.
    pub fn driver_version(&self) -> Option<String> {
        self.nvml.as_ref().ok()?.sys_driver_version().ok()
    }

    /// The CUDA driver version as "major.minor", when loaded.
    pub fn cuda_driver_version(&self) -> Option<String> {
        let v = self.nvml.as_ref().ok()?.sys_cuda_driver_version().ok()?;
        Some(format!("{}.{}", v / 1000, (v % 1000) / 10))
    }

    /// A device that could not be read, named by what it last said it was.
    fn unreadable(&self, index: u32, state: GpuState) -> GpuDevice {
        let mut device = GpuDevice::bare(index, state);
        if let Some(Some(fixed)) = self.fixed.get(index as usize) {
            device.uuid = fixed.uuid.clone();
            device.name = fixed.name.clone();
        }
        device
    }

    fn read_device(&mut self, nvml: &Nvml, index: u32) -> GpuDevice {
        let device = match nvml.device_by_index(index) {
            Ok(device) => device,
            Err(NvmlError::GpuLost) => return self.unreadable(index, GpuState::Lost),
            Err(_) => return self.unreadable(index, GpuState::Error),
        };
        let slot = index as usize;
        if self.unsupported.len() <= slot {
            self.unsupported.resize_with(slot + 1, HashSet::new);
        }
        if self.fixed.len() <= slot {
            self.fixed.resize_with(slot + 1, || None);
        }
        let mut r = MetricReader {
            unsupported: &mut self.unsupported[slot],
            lost: false,
        };
        let now = Instant::now();
        let fixed = match self.fixed[slot].take() {
            Some(f) if now.saturating_duration_since(f.read_at) < RARE_FIGURES_EVERY => f,
            previous => {
                let uuid = r.read(Metric::Uuid, || device.uuid());
                let name = r.read(Metric::Name, || device.name());
                Fixed {
                    // A device that cannot name itself now keeps the name it had.
                    uuid: uuid.or_else(|| previous.as_ref().and_then(|p| p.uuid.clone())),
                    name: name.or_else(|| previous.as_ref().and_then(|p| p.name.clone())),
                    power_limit_mw: r.read(Metric::PowerLimit, || device.enforced_power_limit()),
                    mig_enabled: r
                        .read(Metric::Mig, || device.mig_mode())
                        .map(|m| m.current == 1),
                    read_at: now,
                }
            }
        };
        let (uuid, name) = (fixed.uuid.clone(), fixed.name.clone());
        let (power_limit_mw, mig_enabled) = (fixed.power_limit_mw, fixed.mig_enabled);
        let memory = r.read(Metric::Memory, || device.memory_info());
        let utilization = r.read(Metric::Utilization, || device.utilization_rates());
        if self.slow.len() <= slot {
            let every = self.slow_every;
            self.slow
                .resize_with(slot + 1, || Every::with_period(every));
        }
        let slow = self.slow[slot].get(now, || Slow {
            temperature: r.read(Metric::Temperature, || {
                device.temperature(TemperatureSensor::Gpu)
            }),
            power_mw: r.read(Metric::Power, || device.power_usage()),
            clock_sm_mhz: r.read(Metric::ClockSm, || device.clock_info(Clock::SM)),
            clock_memory_mhz: r.read(Metric::ClockMemory, || device.clock_info(Clock::Memory)),
            performance_state: r
                .read(Metric::PerformanceState, || device.performance_state())
                .filter(|p| *p != PerformanceState::Unknown)
                .map(|p| p.as_c()),
            clock_event_reasons: r.read(Metric::ClockEventReasons, || {
                device.current_throttle_reasons().map(|r| r.bits())
            }),
            ecc_corrected_errors: r.read(Metric::EccCorrected, || {
                device.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile)
            }),
            ecc_uncorrected_errors: r.read(Metric::EccUncorrected, || {
                device.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)
            }),
        });
        let processes = r
            .read(Metric::Processes, || device.running_compute_processes())
            .unwrap_or_default()
            .into_iter()
            .map(|p| GpuProcess {
                pid: p.pid,
                used_memory_bytes: match p.used_gpu_memory {
                    UsedGpuMemory::Used(bytes) => Some(bytes),
                    UsedGpuMemory::Unavailable => None,
                },
                pod_uid: None,
                container_id: None,
            })
            .collect();
        let mig_devices = if mig_enabled == Some(true) {
            read_mig_devices(&device)
        } else {
            Vec::new()
        };
        let lost = r.lost;
        let perf = if lost || mig_enabled == Some(true) {
            // NVML samples a MIG-mode GPU per instance only.
            None
        } else {
            self.gpm.read(nvml, &device, slot)
        };
        let mut unsupported: Vec<String> =
            r.unsupported.iter().map(|m| m.name().to_owned()).collect();
        unsupported.sort();
        self.fixed[slot] = Some(fixed);
        if lost {
            return self.unreadable(index, GpuState::Lost);
        }
        GpuDevice {
            index,
            uuid,
            name,
            state: GpuState::Ok,
            memory_total_bytes: memory.as_ref().map(|m| m.total),
            memory_used_bytes: memory.as_ref().map(|m| m.used),
            memory_free_bytes: memory.as_ref().map(|m| m.free),
            utilization_ratio: utilization.as_ref().map(|u| f64::from(u.gpu) / 100.0),
            memory_utilization_ratio: utilization.as_ref().map(|u| f64::from(u.memory) / 100.0),
            temperature_celsius: slow.temperature.map(f64::from),
            power_watts: slow.power_mw.map(|mw| f64::from(mw) / 1000.0),
            memory_reserved_bytes: memory.as_ref().map(|m| m.reserved),
            power_limit_watts: power_limit_mw.map(|mw| f64::from(mw) / 1000.0),
            clock_sm_mhz: slow.clock_sm_mhz,
            clock_memory_mhz: slow.clock_memory_mhz,
            performance_state: slow.performance_state,
            clock_event_reasons: slow.clock_event_reasons,
            ecc_corrected_errors: slow.ecc_corrected_errors,
            ecc_uncorrected_errors: slow.ecc_uncorrected_errors,
            processes,
            unsupported,
            mig_enabled,
            mig_devices,
            perf,
        }
    }
}

/// A GPU has at most 7 MIG instances today; NVML answers NotFound for empty slots.
const MAX_MIG_DEVICES: u32 = 8;

/// The MIG instances of a GPU in MIG mode, each with its own memory.
fn read_mig_devices(device: &nvml_wrapper::Device<'_>) -> Vec<MigDevice> {
    (0..MAX_MIG_DEVICES)
        .filter_map(|index| {
            let mig = device.mig_device_by_index(index).ok()?;
            let memory = mig.memory_info().ok();
            Some(MigDevice {
                index,
                uuid: mig.uuid().ok(),
                memory_total_bytes: memory.as_ref().map(|m| m.total),
                memory_used_bytes: memory.as_ref().map(|m| m.used),
                memory_free_bytes: memory.as_ref().map(|m| m.free),
            })
        })
        .collect()
}

/// Reads one metric at a time, remembering unsupported ones and noticing a lost device.
struct MetricReader<'a> {
    unsupported: &'a mut HashSet<Metric>,
    lost: bool,
}

impl MetricReader<'_> {
    fn read<T>(&mut self, metric: Metric, f: impl FnOnce() -> Result<T, NvmlError>) -> Option<T> {
        if self.lost || self.unsupported.contains(&metric) {
            return None;
        }
        match f() {
            Ok(value) => Some(value),
            Err(NvmlError::NotSupported) | Err(NvmlError::FailedToLoadSymbol(_)) => {
                self.unsupported.insert(metric);
                None
            }
            Err(NvmlError::GpuLost) => {
                self.lost = true;
                None
            }
            Err(e) => {
                tracing::debug!(?metric, error = %e, "GPU metric read failed");
                None
            }
        }
    }
}

impl GpuProbe for NvmlProbe {
    fn set_slow_every(&mut self, every: Duration) {
        self.slow_every = every;
        for slow in &mut self.slow {
            slow.set_period(every);
        }
    }

    fn sample(&mut self) -> GpuSnapshot {
        // Take the handle out so `read_device` can borrow `self` mutably; put it back after.
        let placeholder = NvmlLoadError {
            kind: NvmlLoadErrorKind::Other,
            message: String::new(),
        };
        let nvml = match std::mem::replace(&mut self.nvml, Err(placeholder)) {
            Ok(nvml) => nvml,
            Err(e) => {
                let snapshot = GpuSnapshot::unavailable(e.message.clone());
                self.nvml = Err(e);
                return snapshot;
            }
        };
        let snapshot = match nvml.device_count() {
            Ok(count) => {
                let mut devices = Vec::with_capacity(count as usize);
                for index in 0..count {
                    if self.selected(&nvml, index) {
                        devices.push(self.read_device(&nvml, index));
                    }
                }
                GpuSnapshot {
                    available: true,
                    unavailable_reason: None,
                    devices,
                }
            }
            Err(e) => GpuSnapshot::unavailable(format!("NVML stopped answering: {e}")),
        };
        self.nvml = Ok(nvml);
        snapshot
    }
}

/// Turns an NVML load failure into its kind and a sentence that says what to do.
fn describe_load_error(error: &NvmlError, lib_path: Option<&OsStr>) -> NvmlLoadError {
    let lib = lib_path
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "libnvidia-ml.so.1".to_owned());
    let (kind, message) = match error {
        NvmlError::LibloadingError(e) => (
            NvmlLoadErrorKind::NotFound,
            format!(
                "NVML library {lib} could not be loaded ({e}): no NVIDIA driver is installed, \
                 or it is not mounted into this container; set --nvml-lib to its path if it is \
                 elsewhere"
            ),
        ),
        NvmlError::LibraryNotFound => (
            NvmlLoadErrorKind::NotFound,
            format!("NVML library {lib} not found"),
        ),
        NvmlError::DriverNotLoaded => (
            NvmlLoadErrorKind::DriverNotLoaded,
            format!(
                "NVML ({lib}) loaded but the NVIDIA kernel driver is not running: check \
                 `lsmod | grep nvidia` and the driver installation"
            ),
        ),
        NvmlError::NoPermission => (
            NvmlLoadErrorKind::PermissionDenied,
            format!(
                "NVML ({lib}) refused access: permission denied to the GPU device files \
                 (/dev/nvidia*); run as a user with access, or expose the devices to the container"
            ),
        ),
        NvmlError::FailedToLoadSymbol(_) | NvmlError::FunctionNotFound => (
            NvmlLoadErrorKind::VersionMismatch,
            format!(
                "NVML ({lib}) lacks a function runlens needs ({error}): the library does not \
                 match the driver or is too old; install a driver from the last few years"
            ),
        ),
        other => (
            NvmlLoadErrorKind::Other,
            format!("NVML ({lib}) failed to initialise: {other}"),
        ),
    };
    NvmlLoadError { kind, message }
}

#[cfg(test)]
mod tests {
    use super::GpuSelection;

    #[test]
    fn a_selection_is_indexes_and_uuids_or_all() {
        let s = GpuSelection::parse(&["0", " GPU-abc ", "2"]).unwrap();
        assert_eq!(s.indexes, [0, 2].into_iter().collect());
        assert_eq!(s.uuids, ["GPU-abc".to_owned()].into_iter().collect());
        assert!(!s.is_all());
        assert!(GpuSelection::parse(&["all"]).unwrap().is_all());
        assert!(GpuSelection::parse::<&str>(&[]).unwrap().is_all());
        let err = GpuSelection::parse(&["MIG-1"]).unwrap_err();
        assert!(err.contains("GPU index nor a GPU UUID"), "{err}");
    }
}
