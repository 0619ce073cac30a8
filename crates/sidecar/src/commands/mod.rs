//! One module per subcommand.

pub mod query;
pub mod serve;
pub mod snapshot;

use std::ffi::OsStr;

use probe_core::{HostProbe, NvmlProbe, Sampler};

use crate::cli::NvmlArgs;
use crate::exit::{FAILURE, Failure};

/// Builds the sampler every command uses: the host plus NVML from `--nvml-lib`.
pub fn build_sampler(nvml: &NvmlArgs) -> Result<(Sampler, Option<String>), Failure> {
    let host = HostProbe::new().map_err(|e| Failure::new(FAILURE, e))?;
    let gpu = NvmlProbe::load(nvml.nvml_lib.as_deref().map(OsStr::new));
    let gpu_note = gpu.load_error().map(str::to_owned);
    Ok((Sampler::new(host, Box::new(gpu)), gpu_note))
}
