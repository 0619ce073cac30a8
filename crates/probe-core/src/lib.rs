//! Resource sampling for runlens.
//!
//! A [`Sampler`] produces a [`Snapshot`]: host CPU and memory from one long-lived
//! `sysinfo::System` (refreshed selectively, never a process scan) and every NVIDIA GPU
//! through NVML. This crate knows nothing of gRPC or SQL.
//!
//! GPUs sit behind the [`GpuProbe`] trait so that tests can substitute a fixed set of
//! devices; the real [`NvmlProbe`] is also exercised through a fake NVML library.

mod cgroup;
mod error;
mod gpm;
mod gpu;
mod host;
mod memory;
mod peer;
mod pods;
mod process;
mod procfile;
mod sampler;
mod slow;
mod snapshot;
mod time;

pub use cgroup::{CgroupProbe, CgroupReader};
pub use error::{ProbeError, Result};
pub use gpm::GPM_MIN_INTERVAL;
pub use gpu::{
    GpuProbe, GpuSelection, NoGpu, NvmlLoadError, NvmlLoadErrorKind, NvmlProbe, StaticGpus,
};
pub use host::HostProbe;
pub use memory::{KEPT_FREE_BYTES, hand_back_free_memory, keep_freed_memory};
pub use peer::pid_of_tcp_peer;
pub use pods::{PodRef, pod_of_cgroup, pod_of_pid};
pub use process::{ProcessProbe, WatchOutcome, cpu_seconds, process_start_ticks};
pub use sampler::Sampler;
pub use slow::SLOW_FIGURES_EVERY;
pub use snapshot::{
    CgroupSnapshot, GpuDevice, GpuPerf, GpuProcess, GpuSnapshot, GpuState, HostSnapshot, MigDevice,
    ProcessGpuMemory, ProcessSample, Snapshot, clock_event_reason_names,
};
pub use time::unix_now_ns;
