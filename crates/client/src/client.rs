use std::sync::Arc;
use std::time::Duration;

use tonic::transport::Endpoint;

use crate::buffer::{FullPolicy, Limits, Shared};
use crate::error::Error;
use crate::ids::IdGen;
use crate::recording::Run;
use crate::stream::{self, Hello};

/// Where the sidecar listens by default.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:50551";

/// Default buffer size, in messages (sent or not) awaiting acknowledgement.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// Default buffer size, in encoded bytes awaiting acknowledgement.
pub const DEFAULT_CAPACITY_BYTES: usize = 64 << 20;

/// Configures a [`Client`].
pub struct ClientBuilder {
    endpoint: String,
    name: String,
    limits: Limits,
}

impl ClientBuilder {
    /// A name for this client, stored with its session (e.g. the agent's name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
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
        let endpoint = Endpoint::from_shared(self.endpoint.clone())
            .map_err(|e| Error::InvalidEndpoint {
                endpoint: self.endpoint.clone(),
                reason: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true);
        let ids = Arc::new(IdGen::new());
        let shared = Arc::new(Shared::new(self.limits));
        let hello = Hello {
            client_id: format!("client-{}", ids.prefix()),
            client_name: self.name,
        };
        runtime.spawn(stream::drive(shared.clone(), endpoint, hello));
        Ok(Client {
            inner: Arc::new(Inner { shared, ids }),
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
        self.shared.close();
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
            limits: Limits {
                messages: DEFAULT_CAPACITY,
                bytes: DEFAULT_CAPACITY_BYTES,
                policy: FullPolicy::DropNewest,
            },
        }
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
            }),
        }
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
