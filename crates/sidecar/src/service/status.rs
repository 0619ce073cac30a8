//! The one mapping from the core's refusals to gRPC status codes, for every rpc: the same
//! failure (a sampling or storage failure included, through [`IngestError`]'s `From`
//! conversions) has the same code wherever it happens.

use tonic::Status;

use crate::ingest::IngestError;

impl From<IngestError> for Status {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Invalid(m) => Status::invalid_argument(m),
            IngestError::NotFound(m) => Status::not_found(m),
            IngestError::AlreadyExists(m) => Status::already_exists(m),
            IngestError::FailedPrecondition(m) => Status::failed_precondition(m),
            IngestError::Unavailable(m) => Status::unavailable(m),
        }
    }
}
