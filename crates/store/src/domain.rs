//! The states of runlens's own model, typed once. Each has one spelling, used in SQL, in
//! JSON and on the wire (`as_str`), and one parser (`parse`); the store maps them to and
//! from SQLite text through these and nowhere else.

/// Where a run or a span is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// Started, not yet ended.
    Running,
    /// Ended well.
    Ok,
    /// Ended with an error.
    Failed,
}

impl Status {
    /// Every status, in the order a reader lists them.
    pub const ALL: [Status; 3] = [Status::Running, Status::Ok, Status::Failed];

    /// The stored spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Ok => "ok",
            Status::Failed => "failed",
        }
    }

    /// The status spelled `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// How a run or a span ended: well, or with an error text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Ended well.
    Ok,
    /// Ended with this error text.
    Failed(String),
}

impl Outcome {
    /// The status this outcome stores.
    pub const fn status(&self) -> Status {
        match self {
            Outcome::Ok => Status::Ok,
            Outcome::Failed(_) => Status::Failed,
        }
    }

    /// The error text, for a failure.
    pub fn error(&self) -> Option<&str> {
        match self {
            Outcome::Ok => None,
            Outcome::Failed(e) => Some(e),
        }
    }
}

/// Who or what ended a run (`runs.ended_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndedBy {
    /// The agent ended it.
    Client,
    /// The sidecar ended it: the agent's process exited with the run open.
    ProcessExit,
    /// The sidecar ended it: the agent's session stayed closed past `--client-timeout`.
    SessionTimeout,
    /// The sidecar ended it: an OTLP trace whose root span never arrived within
    /// `--otlp-root-timeout` of its last span.
    RootMissing,
}

impl EndedBy {
    /// Every way a run ends.
    pub const ALL: [EndedBy; 4] = [
        EndedBy::Client,
        EndedBy::ProcessExit,
        EndedBy::SessionTimeout,
        EndedBy::RootMissing,
    ];

    /// The stored spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndedBy::Client => "client",
            EndedBy::ProcessExit => "process_exit",
            EndedBy::SessionTimeout => "session_timeout",
            EndedBy::RootMissing => "root_missing",
        }
    }

    /// The value spelled `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// What a span was doing in its request (OpenTelemetry's span kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanKind {
    /// Work inside the process.
    Internal,
    /// Handling a request from a remote caller.
    Server,
    /// Calling a remote service (an LLM API, a tool server).
    Client,
    /// Sending a message for later processing.
    Producer,
    /// Processing a message sent earlier.
    Consumer,
}

impl SpanKind {
    /// Every kind.
    pub const ALL: [SpanKind; 5] = [
        SpanKind::Internal,
        SpanKind::Server,
        SpanKind::Client,
        SpanKind::Producer,
        SpanKind::Consumer,
    ];

    /// The stored spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }

    /// The kind spelled `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// What an `events` row records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A measurement with a value (and usually a unit).
    Metric,
    /// Something that happened, sent by an agent.
    Event,
    /// Something the sidecar itself saw (`gpu.lost`, `client.gone` ...).
    System,
}

impl EventKind {
    /// Every kind.
    pub const ALL: [EventKind; 3] = [EventKind::Metric, EventKind::Event, EventKind::System];

    /// The stored spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Metric => "metric",
            EventKind::Event => "event",
            EventKind::System => "system",
        }
    }

    /// The kind spelled `text`, if any.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_from_its_own_spelling() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        for e in EndedBy::ALL {
            assert_eq!(EndedBy::parse(e.as_str()), Some(e));
        }
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        for k in SpanKind::ALL {
            assert_eq!(SpanKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Status::parse("RUNNING"), None);
        assert_eq!(Outcome::Failed("x".into()).status(), Status::Failed);
        assert_eq!(Outcome::Ok.error(), None);
    }
}
