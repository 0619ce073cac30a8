//! OTLP over gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`, gzip
//! accepted.

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use prost::Message;
use tonic::body::Body;
use tonic::codec::CompressionEncoding;
use tonic::codegen::{Service, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use super::{ExportError, OtlpIngest};

/// The gRPC trace service.
pub struct OtlpGrpc(OtlpIngest);

/// The service, ready to add to a tonic server. Messages up to four times
/// [`super::MAX_BODY_BYTES`] are read (a longer one is refused by tonic before it is buffered,
/// with `OUT_OF_RANGE`); above [`super::MAX_BODY_BYTES`] the answer is `RESOURCE_EXHAUSTED`.
///
/// Each export is charged against the byte budget before its message is read (see
/// [`Budgeted`]).
pub fn service(ingest: OtlpIngest) -> Budgeted<TraceServiceServer<OtlpGrpc>> {
    let max = ingest.max_body();
    let server = TraceServiceServer::new(OtlpGrpc(ingest.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max.saturating_mul(4));
    Budgeted {
        inner: server,
        ingest,
    }
}

/// A unary gRPC service whose requests are charged against the byte budget before tonic
/// reads their message: the first frames are read up to the message's 5-byte length
/// prefix, the charge is taken for that length (a compressed message as if it unzips to
/// the largest allowed), and held until the answer. Over the budget the answer is
/// `UNAVAILABLE`, which OTLP senders retry; the message is never buffered.
#[derive(Clone)]
pub struct Budgeted<S> {
    inner: S,
    ingest: OtlpIngest,
}

impl<S: NamedService> NamedService for Budgeted<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Budgeted<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The clone that was made ready serves this call (tower's convention).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let ingest = self.ingest.clone();
        Box::pin(async move {
            let (parts, mut body) = request.into_parts();
            let mut head: Vec<Frame<Bytes>> = Vec::new();
            let mut prefix = Vec::with_capacity(5);
            while prefix.len() < 5 {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            let take = (5 - prefix.len()).min(data.len());
                            prefix.extend_from_slice(&data[..take]);
                        }
                        head.push(frame);
                    }
                    // Tonic reports what is wrong with the body.
                    Some(Err(_)) | None => break,
                }
            }
            let wire = match prefix.as_slice() {
                [0, a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]) as usize,
                [_, ..] if prefix.len() == 5 => ingest.max_body(), // compressed
                _ => 0,
            };
            let Some(held) = ingest.budget().try_hold(wire.min(ingest.max_body())) else {
                return Ok(Status::from(ingest.over_budget()).into_http());
            };
            let body = Body::new(Replayed { head, rest: body });
            let response = inner.call(http::Request::from_parts(parts, body)).await;
            drop(held);
            response
        })
    }
}

/// A body whose first frames were read already: those, then the rest.
struct Replayed {
    head: Vec<Frame<Bytes>>,
    rest: Body,
}

impl hyper::body::Body for Replayed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if !self.head.is_empty() {
            return Poll::Ready(Some(Ok(self.head.remove(0))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.rest.is_end_stream()
    }
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
