//! One module per subcommand.

pub mod backup;
pub mod bench;
pub mod doctor;
pub mod merge;
pub mod query;
pub mod report;
pub mod serve;
pub mod snapshot;
pub mod stress;
pub mod top;

use std::ffi::OsStr;

use probe_core::{CgroupProbe, HostProbe, NvmlProbe, Sampler};

use crate::cli::ProbeArgs;
use crate::exit::{FAILURE, Failure};

/// Builds the sampler every command uses: the host, NVML from `--nvml-lib`, and the
/// cgroup from `--cgroup-root` or this process's own.
pub fn build_sampler(probe: &ProbeArgs) -> Result<(Sampler, Option<String>), Failure> {
    let host = HostProbe::new().map_err(|e| Failure::new(FAILURE, e.to_string()))?;
    let gpu = NvmlProbe::load(probe.nvml_lib.as_deref().map(OsStr::new))
        .with_selection(probe.gpu_selection());
    let gpu_note = gpu.load_error().map(str::to_owned);
    let cgroup = match &probe.cgroup_root {
        Some(root) => CgroupProbe::at(root),
        None => CgroupProbe::detect(),
    };
    Ok((Sampler::with_cgroup(host, Box::new(gpu), cgroup), gpu_note))
}
