//! The bearer token every front door checks when `serve --token-file` is given.
//!
//! Callers send `authorization: Bearer <token>`: gRPC metadata for runlens.v1 and OTLP/gRPC,
//! an HTTP header for OTLP/HTTP and (with `--metrics-auth`) `/metrics`. The standard
//! `OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer <token>` of OpenTelemetry SDKs sends
//! exactly that. Health checks stay open: Kubernetes probes carry no token.
//!
//! The comparison takes the same time wherever the first differing byte is, and no answer
//! repeats what was sent or says how close it was.

use std::path::Path;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::exit::{Failure, NO_INPUT, USAGE};

/// What a refused caller is told: how to authenticate, never the token.
pub const REFUSED: &str = "missing or wrong bearer token: send the header `authorization: Bearer \
                           <token>` with the token in the sidecar's --token-file";

/// The shared secret.
#[derive(Clone)]
pub struct Token(Arc<[u8]>);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Shortest token accepted: a guessable secret protects nothing.
pub const MIN_TOKEN_LEN: usize = 16;

impl Token {
    /// Reads the token from `path` (surrounding white space, such as the final newline of
    /// `echo ... > file` or a Kubernetes Secret, is ignored).
    pub fn load(path: &Path) -> Result<Self, Failure> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Failure::new(
                NO_INPUT,
                format!(
                    "cannot read the token file {}: {e}; create it, e.g. `head -c 32 /dev/urandom \
                     | base64 > {}`",
                    path.display(),
                    path.display()
                ),
            )
        })?;
        Self::new(text.trim())
            .map_err(|why| Failure::new(USAGE, format!("the token in {}: {why}", path.display())))
    }

    /// A token from its text: at least [`MIN_TOKEN_LEN`] printable ASCII characters (it
    /// travels in an HTTP header).
    pub fn new(text: &str) -> Result<Self, String> {
        if text.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "it has {} characters, fewer than the minimum of {MIN_TOKEN_LEN}",
                text.len()
            ));
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(
                "only printable ASCII characters without spaces can be sent in a \
                        header"
                    .into(),
            );
        }
        Ok(Self(text.as_bytes().into()))
    }

    /// Whether an `authorization` value carries this token (`Bearer`, any case).
    pub fn accepts(&self, authorization: Option<&[u8]>) -> bool {
        let Some(value) = authorization else {
            return false;
        };
        let Some((scheme, rest)) = value.split_at_checked(7) else {
            return false;
        };
        scheme.eq_ignore_ascii_case(b"bearer ") && constant_time_eq(trim(rest), &self.0)
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != b' ').unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| *b != b' ')
        .map_or(start, |i| i + 1);
    &bytes[start..end.max(start)]
}

/// Compares every byte whatever the first difference (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0_u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    diff == 0
}

/// A tonic interceptor: lets a request through when no token is configured or when it
/// carries the token; else `UNAUTHENTICATED`.
#[derive(Clone)]
pub struct GrpcCheck {
    token: Option<Token>,
    refused: Option<Arc<crate::metrics::Metrics>>,
}

impl GrpcCheck {
    /// Checks against `token` (none: everything passes); counts refusals in `metrics`.
    pub fn new(token: Option<Token>, metrics: Option<Arc<crate::metrics::Metrics>>) -> Self {
        Self {
            token,
            refused: metrics,
        }
    }
}

impl tonic::service::Interceptor for GrpcCheck {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let Some(token) = &self.token else {
            return Ok(request);
        };
        let value = request
            .metadata()
            .get("authorization")
            .map(tonic::metadata::MetadataValue::as_bytes);
        if token.accepts(value) {
            return Ok(request);
        }
        if let Some(metrics) = &self.refused {
            metrics.rejected("unauthenticated", 1);
        }
        Err(tonic::Status::unauthenticated(REFUSED))
    }
}

/// An axum middleware: `401 Unauthorized` with `WWW-Authenticate: Bearer` unless the
/// request carries the token (or none is configured).
pub async fn http_check(
    axum::extract::State(check): axum::extract::State<GrpcCheck>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = &check.token else {
        return next.run(request).await;
    };
    let value = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if token.accepts(value) {
        return next.run(request).await;
    }
    if let Some(metrics) = &check.refused {
        metrics.rejected("unauthenticated", 1);
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        REFUSED,
    )
        .into_response()
}

/// `router` behind the token check.
pub fn guard(router: axum::Router, check: GrpcCheck) -> axum::Router {
    router.layer(axum::middleware::from_fn_with_state(check, http_check))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_after_bearer_passes() {
        let token = Token::new("s3cret-token-0123456789").unwrap();
        assert!(token.accepts(Some(b"Bearer s3cret-token-0123456789")));
        assert!(token.accepts(Some(b"bearer s3cret-token-0123456789")));
        assert!(token.accepts(Some(b"Bearer  s3cret-token-0123456789 ")));
        for wrong in [
            &b"Bearer s3cret-token-012345678"[..],
            b"Bearer s3cret-token-01234567890",
            b"Bearer S3cret-token-0123456789",
            b"Basic s3cret-token-0123456789",
            b"s3cret-token-0123456789",
            b"Bearer ",
            b"",
        ] {
            assert!(
                !token.accepts(Some(wrong)),
                "{}",
                String::from_utf8_lossy(wrong)
            );
        }
        assert!(!token.accepts(None));
    }

    #[test]
    fn short_or_unprintable_tokens_are_refused_and_files_are_trimmed() {
        assert!(Token::new("short").unwrap_err().contains("minimum of 16"));
        assert!(Token::new("has a space in it, long").is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abcdefghijklmnopqrstuvwxyz\n").unwrap();
        let token = Token::load(&path).unwrap();
        assert!(token.accepts(Some(b"Bearer abcdefghijklmnopqrstuvwxyz")));
        assert_eq!(format!("{token:?}"), "Token(<redacted>)");
        let missing = Token::load(&dir.path().join("nope")).unwrap_err();
        assert_eq!(missing.code, NO_INPUT);
        assert!(missing.message.contains("cannot read the token file"));
    }
}
