//! Why the ingest core refused something. Each variant is one kind of refusal, mapped to
//! one gRPC code (and one HTTP status) at the front doors, the same everywhere.

use crate::sampler::SampleError;
use crate::store::StoreError;

/// A refusal, with a message a user can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngestError {
    /// A field breaks a rule (empty, too long, bad characters, not finite ...).
    #[error("{0}")]
    Invalid(String),
    /// A run, span or parent that was never started.
    #[error("{0}")]
    NotFound(String),
    /// An id used twice.
    #[error("{0}")]
    AlreadyExists(String),
    /// Right fields, wrong moment: ending twice, a span in an ended run.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The sidecar cannot take it now (storage or sampling failing, shutting down); a
    /// retry later is safe because nothing was changed.
    #[error("{0}")]
    Unavailable(String),
}

/// Result alias for the ingest core.
pub type Result<T, E = IngestError> = std::result::Result<T, E>;

impl IngestError {
    /// A storage read failed.
    pub fn storage(e: &StoreError) -> Self {
        IngestError::Unavailable(format!("storage read failed: {e}"))
    }
}

impl From<SampleError> for IngestError {
    fn from(e: SampleError) -> Self {
        IngestError::Unavailable(e.to_string())
    }
}
