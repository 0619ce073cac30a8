//! OTLP over gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`, gzip
//! accepted.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::{ExportError, OtlpIngest};

/// The gRPC trace service.
pub struct OtlpGrpc(OtlpIngest);

/// The service, ready to add to a tonic server. Messages up to four times
/// [`super::MAX_BODY_BYTES`] are read (a longer one is refused by tonic before it is buffered,
/// with `OUT_OF_RANGE`); above [`super::MAX_BODY_BYTES`] the answer is `RESOURCE_EXHAUSTED`.
pub fn service(ingest: OtlpIngest) -> TraceServiceServer<OtlpGrpc> {
    let max = ingest.max_body();
    TraceServiceServer::new(OtlpGrpc(ingest))
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max.saturating_mul(4))
}

impl From<ExportError> for Status {
    fn from(e: ExportError) -> Self {
        match e {
            ExportError::Malformed(m) => Status::invalid_argument(m),
            ExportError::TooLarge(m) => Status::resource_exhausted(m),
            ExportError::Unavailable(m) => Status::unavailable(m),
        }
    }
}

#[tonic::async_trait]
impl TraceService for OtlpGrpc {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let peer = request.extensions().get::<crate::peer::Peer>().cloned();
        let request = request.into_inner();
        let size = request.encoded_len();
        let max = self.0.max_body();
        if size > max {
            return Err(ExportError::TooLarge(format!(
                "the export is {size} bytes; the limit is {max} (--max-message-mib): send \
                 smaller batches (OTEL_BSP_MAX_EXPORT_BATCH_SIZE)"
            ))
            .into());
        }
        Ok(Response::new(
            self.0.export_from(request, peer.as_ref()).await?,
        ))
    }
}
