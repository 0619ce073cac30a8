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

use crate::otel_env::Signal;

/// Why an export failed, and whether trying again can help.
#[derive(Debug)]
pub struct Failure {
    /// A retry will not change it (`INVALID_ARGUMENT`, HTTP 400 ...): skip the batch.
    pub permanent: bool,
    /// The receiver answered as if the URL or the credentials were wrong (HTTP 401, 403,
    /// 404, 405; gRPC `UNIMPLEMENTED`): the runs are held until the configuration is fixed.
    pub misdirected: bool,
    /// What the receiver or the network said.
    pub message: String,
}

impl Failure {
    fn retryable(message: impl std::fmt::Display) -> Self {
        Self {
            permanent: false,
            misdirected: false,
            message: message.to_string(),
        }
    }
}

/// How a receiver is spoken to (`--otlp-export-protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    HttpProtobuf,
}

/// A receiver, cheap to clone.
#[derive(Clone)]
pub enum Transport {
    /// OTLP/gRPC.
    Grpc {
        /// The channel (connected when first used).
        channel: Channel,
        /// Metadata for every call, per signal.
        headers: Headers,
    },
    /// OTLP/HTTP, protobuf bodies.
    Http {
        /// `host:port`.
        authority: String,
        /// Where traces go: the endpoint's path and `/v1/traces`, or the endpoint's own
        /// path when it already ends so.
        traces_path: String,
        /// Where metrics go, likewise with `/v1/metrics`.
        metrics_path: String,
        /// Headers for every request, per signal.
        headers: Headers,
    },
}

impl Transport {
    /// The receiver at `endpoint` (`http://host:port[/path]`) by `protocol`; each signal's
    /// headers from `OTEL_EXPORTER_OTLP_{TRACES,METRICS}_HEADERS`, else
    /// `OTEL_EXPORTER_OTLP_HEADERS` (`crate::otel_env`).
    pub fn new(endpoint: &str, protocol: Protocol) -> Result<Self, String> {
        let headers = Headers::from_env();
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
            Protocol::Grpc => Ok(Transport::Grpc {
                channel: Endpoint::from_shared(endpoint.to_owned())
                    .map_err(|e| format!("--otlp-export {endpoint}: {e}"))?
                    .connect_lazy(),
                headers,
            }),
            Protocol::HttpProtobuf => {
                let (traces_path, metrics_path) = http_paths(uri.path());
                Ok(Transport::Http {
                    authority: uri
                        .authority()
                        .map(ToString::to_string)
                        .ok_or_else(|| format!("--otlp-export {endpoint} has no host"))?,
                    traces_path,
                    metrics_path,
                    headers,
                })
            }
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
                    .export(with_metadata(request, headers.of(Signal::Traces)))
                    .await
                    .map(tonic::Response::into_inner)
                    .map_err(grpc_failure)
            }
            Transport::Http { .. } => {
                let body = self.post(Signal::Traces, request.encode_to_vec()).await?;
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
                    .export(with_metadata(request, headers.of(Signal::Metrics)))
                    .await
                    .map(|_| ())
                    .map_err(grpc_failure)
            }
            Transport::Http { .. } => self
                .post(Signal::Metrics, request.encode_to_vec())
                .await
                .map(|_| ()),
        }
    }

    /// One POST on a fresh connection (batches are large and seconds apart).
    async fn post(&self, signal: Signal, body: Vec<u8>) -> Result<Bytes, Failure> {
        let Transport::Http {
            authority,
            traces_path,
            metrics_path,
            headers,
        } = self
        else {
            return Err(Failure::retryable("not an HTTP receiver"));
        };
        let path = match signal {
            Signal::Traces => traces_path,
            Signal::Metrics => metrics_path,
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
        let mut request = hyper::Request::post(path.as_str())
            .header(hyper::header::HOST, authority.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/x-protobuf");
        for (k, v) in headers.of(signal) {
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
            // Not a refused payload but a wrong endpoint or missing credentials: nothing the
            // receiver judged. The runs are held until the configuration is fixed, and it
            // is said loudly each time.
            401 | 403 | 404 | 405 => {
                let message = misdirected(status, &format!("http://{authority}{path}"));
                tracing::error!(%message, "OTLP export held");
                Err(Failure {
                    misdirected: true,
                    ..Failure::retryable(message)
                })
            }
            400..=499 => Err(Failure {
                permanent: true,
                misdirected: false,
                message: format!("HTTP {status}: {}", String::from_utf8_lossy(&body)),
            }),
            _ => Err(Failure::retryable(format!("HTTP {status}"))),
        }
    }
}

/// The headers of each signal's requests (`crate::otel_env::headers`).
#[derive(Clone, Debug, Default)]
pub struct Headers {
    traces: Vec<(String, String)>,
    metrics: Vec<(String, String)>,
}

impl Headers {
    /// From the process environment.
    pub fn from_env() -> Self {
        Self {
            traces: crate::otel_env::headers(Signal::Traces),
            metrics: crate::otel_env::headers(Signal::Metrics),
        }
    }

    fn of(&self, signal: Signal) -> &[(String, String)] {
        match signal {
            Signal::Traces => &self.traces,
            Signal::Metrics => &self.metrics,
        }
    }
}

/// The paths of traces and metrics under an endpoint's path: `<path>/v1/traces` and
/// `<path>/v1/metrics`, or, when the path already names one of them (as many receivers
/// document their URL), that one as given and its sibling beside it.
fn http_paths(path: &str) -> (String, String) {
    let path = path.trim_end_matches('/');
    let base = path
        .strip_suffix("/v1/traces")
        .or_else(|| path.strip_suffix("/v1/metrics"))
        .unwrap_or(path);
    (format!("{base}/v1/traces"), format!("{base}/v1/metrics"))
}

/// What to say when the receiver answers as if the URL or the credentials were wrong.
fn misdirected(status: u16, url: &str) -> String {
    let what = match status {
        401 | 403 => "refused the credentials (set OTEL_EXPORTER_OTLP_HEADERS)",
        _ => {
            "has no OTLP endpoint there (check --otlp-export: the receiver's base URL, e.g. \
             http://host:4318, or its full .../v1/traces URL)"
        }
    };
    format!(
        "HTTP {status} from {url}: the receiver {what}; the runs are held, not skipped, and \
         sent once it answers"
    )
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
        // UNIMPLEMENTED means no trace service at that address (a wrong port), not a refused
        // payload: held like HTTP 404.
        permanent: matches!(
            status.code(),
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange
        ),
        misdirected: status.code() == Code::Unimplemented,
        message: format!("{:?}: {}", status.code(), status.message()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_that_already_names_the_signal_is_used_as_given() {
        let both = |p: &str| http_paths(p);
        assert_eq!(
            both(""),
            ("/v1/traces".to_owned(), "/v1/metrics".to_owned())
        );
        assert_eq!(
            both("/otlp/"),
            ("/otlp/v1/traces".to_owned(), "/otlp/v1/metrics".to_owned())
        );
        assert_eq!(
            both("/v1/traces"),
            ("/v1/traces".to_owned(), "/v1/metrics".to_owned()),
            "not /v1/traces/v1/traces"
        );
        assert_eq!(
            both("/api/v1/metrics"),
            ("/api/v1/traces".to_owned(), "/api/v1/metrics".to_owned())
        );
    }

    #[test]
    fn a_wrong_endpoint_or_credentials_are_held_and_say_what_to_fix() {
        for status in [401, 403, 404, 405] {
            let text = misdirected(status, "http://h:6006/x");
            assert!(text.contains("held, not skipped"), "{text}");
        }
        assert!(misdirected(405, "u").contains("--otlp-export"));
        assert!(misdirected(401, "u").contains("OTEL_EXPORTER_OTLP_HEADERS"));
        let unimplemented = grpc_failure(tonic::Status::unimplemented("no service"));
        assert!(!unimplemented.permanent && unimplemented.misdirected);
        assert!(grpc_failure(tonic::Status::invalid_argument("bad span")).permanent);
    }
}
