use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Channel;

use crate::buffer::{FullPolicy, Limits, Shared};
use crate::connection::{Target, TlsFiles, with_token};
use crate::error::Error;
use crate::ids::IdGen;
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
    /// Where and how to connect, checked.
    fn target(&self) -> Result<Target, Error> {
        Target::resolve(
            &self.endpoint,
            self.token.as_deref(),
            TlsFiles {
                ca_file: self.ca_file.as_ref(),
                identity: self.identity.as_ref(),
            },
        )
    }

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

    /// Sequence number of the last message the sidecar has committed (every message up to
    /// it is stored).
    pub fn committed_seq(&self) -> u64 {
        *self.inner.shared.acked.borrow()
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
