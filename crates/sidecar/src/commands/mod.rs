//! One module per subcommand.

pub mod backup;
pub mod bench;
pub mod doctor;
pub mod export;
pub mod merge;
pub mod query;
pub mod report;
pub mod serve;
pub mod snapshot;
pub mod stress;
pub mod top;

use std::ffi::OsStr;

use probe_core::{CgroupProbe, GpuProbe, HostProbe, NoGpu, NvmlProbe, Sampler};

use crate::cli::{NVML_OFF, ProbeArgs};
use crate::exit::{FAILURE, Failure, USAGE};

/// The window of `--since` and `--until` as Unix ns: `[since, until)`; refused when empty.
pub fn time_window(
    since: Option<std::time::Duration>,
    until: Option<crate::cli::Until>,
) -> Result<(i64, i64), Failure> {
    let now = probe_core::unix_now_ns();
    let ago = |d: std::time::Duration| now - i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    let since_ns = since.map_or(0, ago);
    let until_ns = match until {
        None => i64::MAX,
        Some(crate::cli::Until::Ago(d)) => ago(d),
        Some(crate::cli::Until::At(ns)) => ns,
    };
    if until_ns <= since_ns {
        return Err(Failure::new(
            USAGE,
            "--until is not after --since: the window is empty; widen --since or move --until",
        ));
    }
    Ok((since_ns, until_ns))
}

/// Why there are no GPU figures with `--nvml-lib none`.
const NVML_OFF_REASON: &str = "GPU sampling is turned off (--nvml-lib none)";

/// Builds the sampler every command uses: the host, NVML from `--nvml-lib` (none with
/// `none`), and the cgroup from `--cgroup-root` or this process's own. A library path that
/// does not exist is a usage error: the user named a file, and a typo there would otherwise
/// look like a machine without a driver.
pub fn build_sampler(probe: &ProbeArgs) -> Result<(Sampler, Option<String>), Failure> {
    let host = HostProbe::new().map_err(|e| Failure::new(FAILURE, e.to_string()))?;
    let (gpu, gpu_note): (Box<dyn GpuProbe>, Option<String>) = match probe.nvml_lib.as_deref() {
        Some(path) if path.as_os_str() == NVML_OFF => (
            Box::new(NoGpu::new(NVML_OFF_REASON)),
            Some(NVML_OFF_REASON.to_owned()),
        ),
        Some(path) if path.components().count() > 1 && !path.exists() => {
            return Err(Failure::new(
                USAGE,
                format!(
                    "--nvml-lib {}: no such file; give the path of libnvidia-ml.so.1 (`ldconfig \
                     -p | grep nvidia-ml` lists it), leave it out for the system's, or say \
                     `none` to sample without GPUs",
                    path.display()
                ),
            ));
        }
        lib => {
            let nvml = NvmlProbe::load(lib.map(OsStr::new)).with_selection(probe.gpu_selection());
            let note = nvml.load_error().map(str::to_owned);
            (Box::new(nvml), note)
        }
    };
    let cgroup = match &probe.cgroup_root {
        Some(root) => CgroupProbe::at(root),
        None => CgroupProbe::detect(),
    };
    Ok((Sampler::with_cgroup(host, gpu, cgroup), gpu_note))
}
