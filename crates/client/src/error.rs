/// What can go wrong using the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint is not `http://HOST:PORT` (or `HOST:PORT`, `https://…`, or a Unix
    /// socket `unix:///path`).
    #[error(
        "invalid endpoint {endpoint:?}: {reason}; write it as http://HOST:PORT, e.g. http://127.0.0.1:50551, or unix:///path/to.sock"
    )]
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// Why it is invalid.
        reason: String,
    },
    /// The token cannot be sent in a header.
    #[error("invalid token: {reason}; use the printable text of the sidecar's --token-file")]
    InvalidToken {
        /// Why it is invalid.
        reason: String,
    },
    /// The TLS settings of an `https://` endpoint cannot be used.
    #[error("TLS setup failed: {reason}")]
    InvalidTls {
        /// Why.
        reason: String,
    },
    /// No tokio runtime is running; the client needs one for its background task.
    #[error("runlens client needs a tokio runtime: create it inside #[tokio::main] or a Runtime")]
    NoRuntime,
    /// The wait ran out before the sidecar acknowledged everything.
    #[error(
        "timed out with {unacknowledged} message(s) not yet acknowledged by the sidecar{}",
        match last_error {
            Some(e) => format!(" (it is unreachable: {e})"),
            None => String::new(),
        }
    )]
    Timeout {
        /// Messages still waiting.
        unacknowledged: u64,
        /// Why the sidecar cannot be reached, when it cannot.
        last_error: Option<String>,
    },
    /// The sidecar could not be reached (a direct rpc connection; recording never fails
    /// this way, it buffers and retries).
    #[error(
        "cannot reach the runlens sidecar at {endpoint}: {reason}; is `runlens serve` running there?"
    )]
    Unreachable {
        /// The endpoint, as the user would write it.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// The client was shut down.
    #[error("the runlens client is closed")]
    Closed,
}

impl Error {
    /// True when retrying cannot help (bad configuration or a closed client); a
    /// timeout is not fatal: the sidecar may come back and the buffer is kept.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Error::Timeout { .. } | Error::Unreachable { .. })
    }
}
