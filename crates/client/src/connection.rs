//! Where and how the client connects: the endpoint as written (`http://`, `https://` with
//! TLS, a bare `HOST:PORT`, or `unix:///path`), checked once; the bearer token; and the
//! connection itself. The recording stream and [`crate::RpcConnection`] both connect
//! through a [`Target`]; neither reaches into the other for it.

use std::path::PathBuf;
use std::time::Duration;

use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use crate::error::Error;

/// The TLS files a builder was given (`https://` endpoints only).
pub(crate) struct TlsFiles<'a> {
    /// The CA to trust instead of the system's roots.
    pub(crate) ca_file: Option<&'a PathBuf>,
    /// A client certificate and key, for mutual TLS.
    pub(crate) identity: Option<&'a (PathBuf, PathBuf)>,
}

/// Where the background task connects: a gRPC endpoint, reached over TCP or, for a
/// `unix:///path` endpoint, through that socket.
pub(crate) struct Target {
    pub(crate) endpoint: Endpoint,
    pub(crate) socket: Option<PathBuf>,
    /// `Bearer <token>`, sent as `authorization` with every call.
    pub(crate) token: Option<tonic::metadata::AsciiMetadataValue>,
}

impl std::fmt::Display for Target {
    /// As the user would write it: the URL, or `unix://` and the path.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.socket {
            Some(path) => write!(f, "unix://{}", path.display()),
            None => write!(f, "{}", self.endpoint.uri()),
        }
    }
}

/// `message` as a request with `authorization: Bearer …` when there is a token.
pub(crate) fn with_token<T>(
    message: T,
    token: Option<&tonic::metadata::AsciiMetadataValue>,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", token.clone());
    }
    request
}

impl Target {
    /// Opens a connection (each reconnect calls it again).
    pub(crate) async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        let Some(path) = &self.socket else {
            return self.endpoint.connect().await;
        };
        let path = path.clone();
        self.endpoint
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(path).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
    }

    /// Where and how to connect to `written` (as the user wrote it), checked: the
    /// endpoint's form, the TLS files (for `https://`) and the token's characters.
    pub(crate) fn resolve(
        written: &str,
        token: Option<&str>,
        tls: TlsFiles<'_>,
    ) -> Result<Self, Error> {
        let (url, socket) = normalize_endpoint(written)?;
        let endpoint = Endpoint::from_shared(url)
            .map_err(|e| Error::InvalidEndpoint {
                endpoint: written.to_owned(),
                reason: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let endpoint = if url_is_https(written) {
            endpoint
                .tls_config(tls_config(&tls)?)
                .map_err(|e| Error::InvalidTls {
                    reason: e.to_string(),
                })?
        } else {
            endpoint
        };
        let token = token
            .map(|t| {
                format!("Bearer {}", t.trim())
                    .parse::<tonic::metadata::AsciiMetadataValue>()
                    .map_err(|e| Error::InvalidToken {
                        reason: e.to_string(),
                    })
            })
            .transpose()?;
        Ok(Self {
            endpoint,
            socket,
            token,
        })
    }
}

/// The TLS settings from the files given (the system's roots without a CA file).
fn tls_config(tls: &TlsFiles<'_>) -> Result<tonic::transport::ClientTlsConfig, Error> {
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path).map_err(|e| Error::InvalidTls {
            reason: format!("cannot read the {what} {}: {e}", path.display()),
        })
    };
    let mut config = tonic::transport::ClientTlsConfig::new();
    config = match tls.ca_file {
        Some(path) => config.ca_certificate(tonic::transport::Certificate::from_pem(read(
            path, "CA file",
        )?)),
        None => config.with_native_roots(),
    };
    if let Some((cert, key)) = tls.identity {
        config = config.identity(tonic::transport::Identity::from_pem(
            read(cert, "client certificate")?,
            read(key, "client key")?,
        ));
    }
    Ok(config)
}

/// Whether the endpoint asks for TLS.
fn url_is_https(endpoint: &str) -> bool {
    endpoint.trim().to_ascii_lowercase().starts_with("https://")
}

/// Accepts `http://HOST:PORT`, `https://HOST:PORT` and a bare `HOST:PORT` (taken as
/// `http://`): both spellings are common, and a wrong one must fail here, not connect
/// never. `unix:///path` (or `unix:path`) is a Unix socket: the URL is then a placeholder
/// for the HTTP/2 authority, and the path is returned beside it. Anything else is an error
/// naming the expected forms.
fn normalize_endpoint(endpoint: &str) -> Result<(String, Option<PathBuf>), Error> {
    let invalid = |reason: &str| Error::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let trimmed = endpoint.trim();
    if let Some(rest) = trimmed.strip_prefix("unix:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() {
            return Err(invalid("a Unix socket needs a path"));
        }
        return Ok(("http://localhost".to_owned(), Some(PathBuf::from(path))));
    }
    let url = match trimmed.split_once("://") {
        Some(("http" | "https", _)) => trimmed.to_owned(),
        Some((scheme, _)) => return Err(invalid(&format!("unsupported scheme {scheme:?}"))),
        None => format!("http://{trimmed}"),
    };
    let uri: Uri = url
        .parse()
        .map_err(|e: tonic::codegen::http::uri::InvalidUri| invalid(&e.to_string()))?;
    let host = uri.host().unwrap_or_default();
    if host.is_empty() {
        return Err(invalid("no host"));
    }
    if uri.port_u16().is_none() {
        return Err(invalid("no port (the sidecar listens on 50551 by default)"));
    }
    if !matches!(uri.path(), "" | "/") {
        return Err(invalid("a path is not allowed"));
    }
    Ok((url, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_spellings_are_accepted_and_wrong_ones_say_the_expected_form() {
        let url = |e: &str| normalize_endpoint(e).map(|(url, _)| url).unwrap();
        assert_eq!(url("127.0.0.1:50551"), "http://127.0.0.1:50551");
        assert_eq!(url("http://localhost:50551"), "http://localhost:50551");
        assert_eq!(url("https://sidecar:443"), "https://sidecar:443");
        assert_eq!(
            normalize_endpoint("unix:///run/runlens/r.sock").unwrap().1,
            Some(PathBuf::from("/run/runlens/r.sock"))
        );
        assert_eq!(
            normalize_endpoint("unix:r.sock").unwrap().1,
            Some(PathBuf::from("r.sock"))
        );
        for bad in [
            "unix://",
            "ftp://127.0.0.1:50551",
            "http://127.0.0.1",
            "",
            "http://:50551",
            "http://h:1/v1",
            "not a url",
        ] {
            let text = normalize_endpoint(bad).unwrap_err().to_string();
            assert!(text.contains("http://HOST:PORT"), "{bad}: {text}");
        }
    }
}
