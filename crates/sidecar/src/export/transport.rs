//! How an export reaches its receiver: OTLP/gRPC (tonic) or OTLP/HTTP with protobuf bodies
//! (`POST <endpoint>/v1/traces` and `/v1/metrics`), the standard headers on both.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::Code;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::cli::ExportProtocol;

/// Why an export failed, and whether trying again can help.
#[derive(Debug)]
pub struct Failure {
    /// A retry will not change it (`INVALID_ARGUMENT`, HTTP 400 ...): skip the batch.
    pub permanent: bool,
    /// What the receiver or the network said.
    pub message: String,
}

impl Failure {
    fn retryable(message: impl std::fmt::Display) -> Self {
        Self {
            permanent: false,
            message: message.to_string(),
        }
    }
}

/// A receiver, cheap to clone.
#[derive(Clone)]
pub enum Transport {
    /// OTLP/gRPC.
    Grpc {
        /// The channel (connected when first used).
        channel: Channel,
        /// Metadata for every call.
        headers: Vec<(String, String)>,
    },
    /// OTLP/HTTP, protobuf bodies.
    Http {
        /// `host:port`.
        authority: String,
        /// The endpoint's path, without a trailing `/`.
        base: String,
        /// Headers for every request.
        headers: Vec<(String, String)>,
    },
}

impl Transport {
    /// The receiver at `endpoint` (`http://host:port[/path]`) by `protocol`; headers from
    /// `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,k=v`).
    pub fn new(endpoint: &str, protocol: ExportProtocol) -> Result<Self, String> {
        let headers = headers_from_env();
        let uri: hyper::Uri = endpoint
            .parse()
            .map_err(|e| format!("--otlp-export {endpoint} is not a URL: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "--otlp-export {endpoint}: only http:// receivers are supported (put TLS in a \
                 Collector beside runlens)"
            ));
        }
        match protocol {
            ExportProtocol::Grpc => Ok(Transport::Grpc {
                channel: Endpoint::from_shared(endpoint.to_owned())
                    .map_err(|e| format!("--otlp-export {endpoint}: {e}"))?
                    .connect_lazy(),
                headers,
            }),
            ExportProtocol::HttpProtobuf => Ok(Transport::Http {
                authority: uri
                    .authority()
                    .map(ToString::to_string)
                    .ok_or_else(|| format!("--otlp-export {endpoint} has no host"))?,
                base: uri.path().trim_end_matches('/').to_owned(),
                headers,
            }),
        }
    }

    /// Sends traces; the receiver's answer.
    pub async fn traces(
        &self,
        request: ExportTraceServiceRequest,
    ) -> Result<ExportTraceServiceResponse, Failure> {
        match self {
            Transport::Grpc { channel, headers } => {
                let mut client = TraceServiceClient::new(channel.clone());
                client
                    .export(with_metadata(request, headers))
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(grpc_failure)
            }
            Transport::Http { .. } => {
                let body = self.post("/v1/traces", request.encode_to_vec()).await?;
                ExportTraceServiceResponse::decode(body.as_ref())
                    .map_err(|e| Failure::retryable(format!("the receiver's answer: {e}")))
            }
        }
    }

    /// Sends metrics.
    pub async fn metrics(&self, request: ExportMetricsServiceRequest) -> Result<(), Failure> {
        match self {
            Transport::Grpc { channel, headers } => {
                let mut client = MetricsServiceClient::new(channel.clone());
                client
                    .export(with_metadata(request, headers))
                    .await
                    .map(|_| ())
                    .map_err(grpc_failure)
            }
            Transport::Http { .. } => self
                .post("/v1/metrics", request.encode_to_vec())
                .await
                .map(|_| ()),
        }
    }

    /// One POST on a fresh connection (batches are large and seconds apart).
    async fn post(&self, path: &str, body: Vec<u8>) -> Result<Bytes, Failure> {
        let Transport::Http {
            authority,
            base,
            headers,
        } = self
        else {
            return Err(Failure::retryable("not an HTTP receiver"));
        };
        let stream = tokio::net::TcpStream::connect(authority.as_str())
            .await
            .map_err(|e| Failure::retryable(format!("cannot reach {authority}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(Failure::retryable)?;
        tokio::spawn(connection);
        let mut request = hyper::Request::post(format!("{base}{path}"))
            .header(hyper::header::HOST, authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/x-protobuf");
        for (k, v) in headers {
            request = request.header(k.as_str(), v.as_str());
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| Failure::retryable(format!("bad request: {e}")))?;
        let answer = sender
            .send_request(request)
            .await
            .map_err(Failure::retryable)?;
        let status = answer.status().as_u16();
        let body = answer
            .into_body()
            .collect()
            .await
            .map_err(Failure::retryable)?
            .to_bytes();
        match status {
            200..=299 => Ok(body),
            // The OTLP/HTTP specification's retryable codes; other 4xx are for good.
            429 | 502 | 503 | 504 => Err(Failure::retryable(format!("HTTP {status}"))),
            400..=499 => Err(Failure {
                permanent: true,
                message: format!("HTTP {status}: {}", String::from_utf8_lossy(&body)),
            }),
            _ => Err(Failure::retryable(format!("HTTP {status}"))),
        }
    }
}

fn with_metadata<T>(message: T, headers: &[(String, String)]) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    for (k, v) in headers {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(k.as_bytes()),
            MetadataValue::try_from(v.as_str()),
        ) {
            request.metadata_mut().insert(key, value);
        }
    }
    request
}

fn grpc_failure(status: tonic::Status) -> Failure {
    Failure {
        permanent: matches!(
            status.code(),
            Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::OutOfRange
                | Code::Unimplemented
        ),
        message: format!("{:?}: {}", status.code(), status.message()),
    }
}

/// `OTEL_EXPORTER_OTLP_TRACES_HEADERS` or `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,k=v`, values
/// percent-decoded), names lowercased.
fn headers_from_env() -> Vec<(String, String)> {
    std::env::var("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_HEADERS"))
        .unwrap_or_default()
        .split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let k = k.trim().to_ascii_lowercase();
            (!k.is_empty()).then(|| (k, crate::metrics::collector::percent_decode(v.trim())))
        })
        .collect()
}
