/// What can go wrong using the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint is not a valid URL.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// Why it is invalid.
        reason: String,
    },
    /// No tokio runtime is running; the client needs one for its background task.
    #[error("runlens client needs a tokio runtime: create it inside #[tokio::main] or a Runtime")]
    NoRuntime,
    /// The wait ran out before the sidecar acknowledged everything.
    #[error("timed out with {unacknowledged} message(s) not yet acknowledged by the sidecar")]
    Timeout {
        /// Messages still waiting.
        unacknowledged: u64,
    },
    /// The client was shut down.
    #[error("the runlens client is closed")]
    Closed,
}

impl Error {
    /// True when retrying cannot help (bad configuration or a closed client); a
    /// timeout is not fatal: the sidecar may come back and the buffer is kept.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Error::Timeout { .. })
    }
}
