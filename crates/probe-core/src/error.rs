//! What can fail in probe-core. Sampling itself never fails (a figure the machine cannot
//! give is `None`, a GPU that cannot be read is marked in its state); only setting a probe
//! up can. (NVML failing to load is not an error either: [`crate::NvmlProbe`] then reports
//! no GPUs with the reason, see [`crate::NvmlLoadError`].)

/// A probe could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The host's CPU and memory figures cannot be read at all (an unsupported OS, or
    /// Linux without `/proc`).
    #[error("cannot read host resources: {0}")]
    HostUnreadable(String),
}

/// Result alias for probe-core.
pub type Result<T, E = ProbeError> = std::result::Result<T, E>;
