//! OTLP over HTTP: `POST /v1/traces` with `application/x-protobuf` or `application/json`
//! (the OTLP JSON encoding: hex ids, enums as integers), plain or gzip. The answer is in
//! the request's encoding; a refusal carries a `google.rpc.Status` (code and message).

use std::io::Read;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::{ExportError, OtlpIngest};

/// Seconds a sender is asked to wait before retrying after a 503.
const RETRY_AFTER_SECONDS: &str = "1";

/// The routes, ready to serve.
pub fn router(ingest: OtlpIngest) -> Router {
    Router::new()
        .route("/v1/traces", post(traces))
        .layer(axum::middleware::from_fn_with_state(
            ingest.clone(),
            within_budget,
        ))
        .layer(DefaultBodyLimit::max(ingest.max_body()))
        .with_state(ingest)
}

/// Charges an export against the byte budget before its body is read (by its
/// `Content-Length`; a body sent in chunks is charged as the largest allowed), and holds
/// the charge until it is answered; over the budget the answer is 503 with `Retry-After`.
async fn within_budget(
    State(ingest): State<OtlpIngest>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let wire = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(usize::MAX)
        .min(ingest.max_body());
    let Some(held) = ingest.budget().try_hold(wire) else {
        let encoding = content_type(request.headers()).unwrap_or(Encoding::Json);
        return error_response(encoding, &ingest.over_budget());
    };
    let response = next.run(request).await;
    drop(held);
    response
}

/// How the body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

/// `google.rpc.Status`, the body of an OTLP refusal.
#[derive(Clone, PartialEq, Message)]
struct RpcStatus {
    /// gRPC status code.
    #[prost(int32, tag = "1")]
    code: i32,
    /// What went wrong and what to do.
    #[prost(string, tag = "2")]
    message: String,
}

async fn traces(
    State(ingest): State<OtlpIngest>,
    axum::Extension(peer): axum::Extension<crate::peer::Peer>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(encoding) = content_type(&headers) else {
        return refuse(
            Encoding::Json,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send Content-Type application/x-protobuf or application/json",
        );
    };
    let request =
        match decoded(&headers, body, ingest.max_body()).and_then(|body| parse(encoding, &body)) {
            Ok(request) => request,
            Err(e) => return error_response(encoding, &e),
        };
    match ingest.export_from(request, Some(&peer)).await {
        Ok(answer) => {
            let body = match encoding {
                Encoding::Protobuf => answer.encode_to_vec(),
                Encoding::Json => serde_json::to_vec(&answer).unwrap_or_else(|_| b"{}".to_vec()),
            };
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, encoding.content_type())],
                body,
            )
                .into_response()
        }
        Err(e) => error_response(encoding, &e),
    }
}

fn content_type(headers: &HeaderMap) -> Option<Encoding> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next()?.trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
        "application/json" => Some(Encoding::Json),
        _ => None,
    }
}

/// The body with its `Content-Encoding` undone, at most `max` bytes.
fn decoded(headers: &HeaderMap, body: Bytes, max: usize) -> Result<Bytes, ExportError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("" | "identity") => Ok(body),
        Some("gzip") => {
            let mut out = Vec::new();
            let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
            flate2::read::GzDecoder::new(&body[..])
                .take(limit)
                .read_to_end(&mut out)
                .map_err(|e| ExportError::Malformed(format!("the gzip body is damaged: {e}")))?;
            if out.len() > max {
                return Err(ExportError::TooLarge(format!(
                    "the body is over {max} bytes once unzipped (--max-message-mib): send \
                     smaller batches"
                )));
            }
            Ok(Bytes::from(out))
        }
        Some(other) => Err(ExportError::Malformed(format!(
            "Content-Encoding {other} is not supported; send gzip or none"
        ))),
    }
}

fn parse(encoding: Encoding, body: &[u8]) -> Result<ExportTraceServiceRequest, ExportError> {
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body).map_err(|e| {
            ExportError::Malformed(format!(
                "the body is not an OTLP protobuf trace export: {e}"
            ))
        }),
        Encoding::Json => serde_json::from_slice(body).map_err(|e| {
            ExportError::Malformed(format!("the body is not an OTLP JSON trace export: {e}"))
        }),
    }
}

fn error_response(encoding: Encoding, e: &ExportError) -> Response {
    let status = match e {
        ExportError::Malformed(_) => StatusCode::BAD_REQUEST,
        ExportError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ExportError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut response = refuse(encoding, status, &e.to_string());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
    }
    response
}

fn refuse(encoding: Encoding, status: StatusCode, message: &str) -> Response {
    let code = match status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            tonic::Code::InvalidArgument
        }
        StatusCode::PAYLOAD_TOO_LARGE => tonic::Code::ResourceExhausted,
        _ => tonic::Code::Unavailable,
    } as i32;
    let body = match encoding {
        Encoding::Protobuf => RpcStatus {
            code,
            message: message.to_owned(),
        }
        .encode_to_vec(),
        Encoding::Json => serde_json::json!({ "code": code, "message": message })
            .to_string()
            .into_bytes(),
    };
    (
        status,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}
