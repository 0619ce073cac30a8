use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic::codegen::http::Uri;
use tonic::transport::{Channel, Endpoint};

use crate::buffer::{FullPolicy, Limits, Shared};
use crate::error::Error;
use crate::ids::IdGen;
use crate::recording::Run;
use crate::stream::{self, Hello};

/// Where the sidecar listens by default.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:50551";

/// The environment variable [`Client::from_env`] reads the endpoint from.
pub const ENDPOINT_ENV: &str = "RUNLENS_ENDPOINT";

/// The environment variable [`Client::from_env`] reads the sidecar's bearer token from.
pub const TOKEN_ENV: &str = "RUNLENS_TOKEN";

/// The environment variable [`Client::from_env`] reads the CA file of an `https://`
/// endpoint from.
pub const CA_FILE_ENV: &str = "RUNLENS_CA_FILE";

/// The environment variable [`Client::from_env`] reads the client's name from.
pub const NAME_ENV: &str = "RUNLENS_CLIENT_NAME";

/// The environment variable the linger is read from, in milliseconds, when
/// [`ClientBuilder::linger`] is not called.
pub const LINGER_ENV: &str = "RUNLENS_LINGER_MS";

/// How long a message waits for others before they are sent together, by default: what a
/// message costs is mostly per frame (framing, wake-ups on both sides, a commit), and at
/// 500 ms an agent's steps of a second share a few frames. CPU per span of sidecar and
/// client at 10/100/400 spans/s: 50 ms 1,827/371/152 µs, 200 ms 1,089/217/104 µs, 500 ms
/// 766/163/107 µs (`runlens bench agent`, BENCHMARKS.md). Boundaries are matched by their own
/// time, so lingering changes no figure; it only delays the acknowledgement.
pub const DEFAULT_LINGER: Duration = Duration::from_millis(500);

/// Default buffer size, in messages (sent or not) awaiting acknowledgement.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Default buffer size, in encoded bytes awaiting acknowledgement.
pub const DEFAULT_CAPACITY_BYTES: usize = 64 << 20;

/// Configures a [`Client`].
pub struct ClientBuilder {
    endpoint: String,
    name: String,
    token: Option<String>,
    ca_file: Option<PathBuf>,
    identity: Option<(PathBuf, PathBuf)>,
    limits: Limits,
}

impl ClientBuilder {
    /// The bearer token the sidecar asks for (the contents of its `--token-file`), sent
    /// as `authorization: Bearer <token>` with every call.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// A name for this client, stored with its session (e.g. the agent's name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The PEM CA certificate(s) an `https://` endpoint's certificate is checked against
    /// (default: the system's roots), e.g. the CA that signed the sidecar's --tls-cert.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// A client certificate and its key (PEM files), for a sidecar that asks for one
    /// (--tls-client-ca).
    pub fn client_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.identity = Some((cert.into(), key.into()));
        self
    }

    /// Most messages kept while unacknowledged (default 100,000).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.limits.messages = capacity;
        self
    }

    /// Most encoded bytes kept while unacknowledged (default 64 MiB).
    pub fn capacity_bytes(mut self, bytes: usize) -> Self {
        self.limits.bytes = bytes;
        self
    }

    /// How long a recorded message waits for others before they are sent together, in one
    /// frame (like OpenTelemetry's batch span processor's schedule delay). A full frame, a
    /// span that asks for a fresh snapshot, [`Client::flush`] and [`Client::shutdown`] send
    /// at once. Zero sends each message as soon as the stream can take it. Precedence: this
    /// call, then `RUNLENS_LINGER_MS`, then [`DEFAULT_LINGER`]. Acknowledgements still come
    /// only after the sidecar committed.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.limits.linger = linger;
        self
    }

    /// What recording does when the buffer is full: drop the new message (default) or
    /// block the caller up to a timeout. Every dropped message is counted
    /// ([`Client::dropped`]) and the count is stored by the sidecar in
    /// `clients.dropped_messages`.
    pub fn when_full(mut self, policy: FullPolicy) -> Self {
        self.limits.policy = policy;
        self
    }

    /// Creates the client and starts its background task on the current tokio runtime.
    /// Does not wait for the sidecar: recording works at once, and messages are sent
    /// when the connection is up.
    pub fn build(self) -> Result<Client, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let target = self.target()?;
        let ids = Arc::new(IdGen::new());
        let shared = Arc::new(Shared::new(self.limits));
        let hello = Hello {
            client_id: format!("client-{}", ids.prefix()),
            client_name: self.name,
        };
        runtime.spawn(stream::drive(shared.clone(), target, hello));
        Ok(Client {
            inner: Arc::new(Inner { shared, ids }),
        })
    }
}

impl ClientBuilder {
    /// Connects for the rpcs other than recording (`WatchActivity`, `GetSnapshot`, the
    /// history): a channel to the same endpoint, with the same TLS and token, for
    /// `runlens_api::pb::runlens_client::RunlensClient`. Waits for the connection.
    pub async fn connect_rpc(self) -> Result<RpcConnection, Error> {
        let target = self.target()?;
        let channel = target.connect().await.map_err(|e| Error::Unreachable {
            endpoint: target.to_string(),
            reason: match std::error::Error::source(&e) {
                Some(source) => format!("{e}: {source}"),
                None => e.to_string(),
            },
        })?;
        Ok(RpcConnection {
            channel,
            token: target.token,
        })
    }

    /// Where and how to connect, checked.
    fn target(&self) -> Result<Target, Error> {
        let (url, socket) = normalize_endpoint(&self.endpoint)?;
        let endpoint = Endpoint::from_shared(url)
            .map_err(|e| Error::InvalidEndpoint {
                endpoint: self.endpoint.clone(),
                reason: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let endpoint = if url_is_https(&self.endpoint) {
            endpoint
                .tls_config(self.tls_config()?)
                .map_err(|e| Error::InvalidTls {
                    reason: e.to_string(),
                })?
        } else {
            endpoint
        };
        let token = self
            .token
            .as_deref()
            .map(|t| {
                format!("Bearer {}", t.trim())
                    .parse::<tonic::metadata::AsciiMetadataValue>()
                    .map_err(|e| Error::InvalidToken {
                        reason: e.to_string(),
                    })
            })
            .transpose()?;
        Ok(Target {
            endpoint,
            socket,
            token,
        })
    }

    fn tls_config(&self) -> Result<tonic::transport::ClientTlsConfig, Error> {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path).map_err(|e| Error::InvalidTls {
                reason: format!("cannot read the {what} {}: {e}", path.display()),
            })
        };
        let mut config = tonic::transport::ClientTlsConfig::new();
        config = match &self.ca_file {
            Some(path) => config.ca_certificate(tonic::transport::Certificate::from_pem(read(
                path, "CA file",
            )?)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(tonic::transport::Identity::from_pem(
                read(cert, "client certificate")?,
                read(key, "client key")?,
            ));
        }
        Ok(config)
    }
}

fn url_is_https(endpoint: &str) -> bool {
    endpoint.trim().to_ascii_lowercase().starts_with("https://")
}

pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) ids: Arc<IdGen>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: let the background task finish sending and stop.
        let already_closed = self.shared.is_closed();
        self.shared.close();
        let pending = self.shared.unacknowledged();
        // Usually the program is about to exit and take the runtime, and the buffer, with
        // it: say so once, with the count, rather than lose the data silently.
        if pending > 0 && !already_closed {
            crate::warn::warn(&format!(
                "client dropped with {pending} message(s) not yet acknowledged by the sidecar; \
                 they are lost if the program exits now: call `client.shutdown(timeout).await` \
                 before exiting{}",
                match self.shared.last_error() {
                    Some(e) => format!(" (the sidecar is unreachable: {e})"),
                    None => String::new(),
                }
            ));
        }
    }
}

/// A connection for the rpcs other than recording (see [`ClientBuilder::connect_rpc`]).
#[derive(Clone)]
pub struct RpcConnection {
    /// The channel, for `runlens_api::pb::runlens_client::RunlensClient::new`.
    pub channel: Channel,
    token: Option<tonic::metadata::AsciiMetadataValue>,
}

impl RpcConnection {
    /// `message` as a request carrying the token, when one was given.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        with_token(message, self.token.as_ref())
    }
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

/// The linger from `RUNLENS_LINGER_MS`, or [`DEFAULT_LINGER`] when it is unset or not a
/// number of milliseconds (said once on stderr).
fn linger_from_env() -> Duration {
    match std::env::var(LINGER_ENV) {
        Ok(text) if !text.trim().is_empty() => match text.trim().parse::<u64>() {
            Ok(ms) => Duration::from_millis(ms),
            Err(_) => {
                crate::warn::warn(&format!(
                    "{LINGER_ENV}={text:?} is not a whole number of milliseconds; using {} ms",
                    DEFAULT_LINGER.as_millis()
                ));
                DEFAULT_LINGER
            }
        },
        _ => DEFAULT_LINGER,
    }
}

/// A connection to the runlens sidecar; cheap to clone, safe to share between tasks.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl Client {
    /// Starts configuring a client for the sidecar at `endpoint`
    /// (e.g. `http://127.0.0.1:50551`).
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            endpoint: endpoint.into(),
            name: String::new(),
            token: None,
            ca_file: None,
            identity: None,
            limits: Limits {
                messages: DEFAULT_CAPACITY,
                bytes: DEFAULT_CAPACITY_BYTES,
                policy: FullPolicy::DropNewest,
                linger: linger_from_env(),
            },
        }
    }

    /// A client configured from the environment, as the Python package's default client
    /// is: the endpoint from `RUNLENS_ENDPOINT` (default [`DEFAULT_ENDPOINT`]) and the name
    /// from `RUNLENS_CLIENT_NAME` (default: the executable's file name), the token, if
    /// any, from `RUNLENS_TOKEN`, and an `https://` endpoint's CA from `RUNLENS_CA_FILE`. Needs a tokio runtime, like [`ClientBuilder::build`].
    pub fn from_env() -> Result<Client, Error> {
        let endpoint = std::env::var(ENDPOINT_ENV)
            .ok()
            .filter(|e| !e.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let name = std::env::var(NAME_ENV)
            .ok()
            .filter(|n| !n.is_empty())
            .or_else(|| {
                let exe = std::env::current_exe().ok()?;
                Some(exe.file_name()?.to_string_lossy().into_owned())
            })
            .unwrap_or_default();
        let mut builder = Self::builder(endpoint).name(name);
        if let Some(token) = std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty())
        {
            builder = builder.token(token);
        }
        builder.build()
    }

    /// Opens a run; the sidecar takes a fresh baseline snapshot for it.
    pub fn start_run(&self, name: impl Into<String>) -> Run {
        Run::start(self, name.into(), std::collections::HashMap::new())
    }

    /// Opens a run with attributes (model, prompt id, ...).
    pub fn start_run_with<K: Into<String>, V: Into<String>>(
        &self,
        name: impl Into<String>,
        attributes: impl IntoIterator<Item = (K, V)>,
    ) -> Run {
        Run::start(self, name.into(), crate::recording::attrs(attributes))
    }

    /// Waits until the sidecar has durably committed everything recorded so far.
    /// Waits as long as it takes (the sidecar may be restarting); see
    /// [`Client::flush_timeout`] to bound the wait.
    pub async fn flush(&self) -> Result<(), Error> {
        let target = self.inner.shared.last_seq();
        self.inner.shared.hurry();
        let mut acked = self.inner.shared.acked.subscribe();
        acked
            .wait_for(|&a| a >= target)
            .await
            .map(|_| ())
            .map_err(|_| Error::Closed)
    }

    /// Like [`Client::flush`], giving up after `timeout` (nothing is lost: the buffer
    /// keeps sending).
    pub async fn flush_timeout(&self, timeout: Duration) -> Result<(), Error> {
        match tokio::time::timeout(timeout, self.flush()).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                unacknowledged: self.inner.shared.unacknowledged(),
                last_error: self.inner.shared.last_error(),
            }),
        }
    }

    /// Waits up to `timeout` for the sidecar to commit everything recorded so far, then
    /// stops the background task: call it before the program exits, as with
    /// OpenTelemetry's `shutdown()`. Without it, messages still in the buffer when the
    /// runtime stops are lost (the client warns on drop with their count). On a timeout
    /// the error says how many messages were left and why.
    pub async fn shutdown(&self, timeout: Duration) -> Result<(), Error> {
        let result = self.flush_timeout(timeout).await;
        self.inner.shared.close();
        result
    }

    /// Sequence number of the last message recorded (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.inner.shared.last_seq()
    }

    /// Waits until the sidecar has committed every message up to `seq` (for measuring
    /// acknowledgement latency).
    pub async fn committed(&self, seq: u64) -> Result<(), Error> {
        let mut acked = self.inner.shared.acked.subscribe();
        acked
            .wait_for(|&a| a >= seq)
            .await
            .map(|_| ())
            .map_err(|_| Error::Closed)
    }

    /// Messages dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.inner.shared.dropped()
    }

    /// Messages the sidecar rejected as invalid (each is logged with the reason).
    pub fn rejected(&self) -> u64 {
        self.inner.shared.rejected()
    }

    /// Messages recorded but not yet acknowledged by the sidecar.
    pub fn unacknowledged(&self) -> u64 {
        self.inner.shared.unacknowledged()
    }
}
