//! What the front doors hand the ingest core: runlens's own requests, whichever wire they
//! came from (runlens.v1 session or unary calls, the sidecar itself for gone clients).
//! Fields are as received; the core validates them.

use std::collections::HashMap;

use crate::domain::{EndedBy, Outcome};

/// Attributes as received: string keys to string values.
pub type Attributes = HashMap<String, String>;

/// One request to the ingest core.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Open a run.
    StartRun(StartRun),
    /// End a run.
    EndRun(EndRun),
    /// Open a span.
    StartSpan(StartSpan),
    /// End a span.
    EndSpan(EndSpan),
    /// Record a metric or an event.
    Record(Record),
}

impl Command {
    /// The time the client gave, Unix ns (0: none, meaning now).
    pub fn time_ns(&self) -> i64 {
        match self {
            Self::StartRun(m) => m.time_ns,
            Self::EndRun(m) => m.time_ns,
            Self::StartSpan(m) => m.time_ns,
            Self::EndSpan(m) => m.time_ns,
            Self::Record(m) => m.time_ns,
        }
    }
}

/// Open a run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StartRun {
    /// Client-chosen id, unique.
    pub run_id: String,
    /// What the run is.
    pub name: String,
    /// Attributes.
    pub attributes: Attributes,
    /// When it started, Unix ns; 0 means now.
    pub time_ns: i64,
}

/// End a run.
#[derive(Debug, Clone, PartialEq)]
pub struct EndRun {
    /// The run.
    pub run_id: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Attributes laid over the start's.
    pub attributes: Attributes,
    /// When it ended, Unix ns; 0 means now.
    pub time_ns: i64,
    /// Who ended it.
    pub ended_by: EndedBy,
}

/// Open a span.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StartSpan {
    /// The run it belongs to.
    pub run_id: String,
    /// Client-chosen id, unique.
    pub span_id: String,
    /// The enclosing span, if any.
    pub parent_span_id: Option<String>,
    /// What the step is.
    pub name: String,
    /// Attributes.
    pub attributes: Attributes,
    /// When it started, Unix ns; 0 means now.
    pub time_ns: i64,
    /// Take a fresh sample instead of the latest periodic one.
    pub fresh_snapshot: bool,
}

/// End a span.
#[derive(Debug, Clone, PartialEq)]
pub struct EndSpan {
    /// The span.
    pub span_id: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Attributes laid over the start's.
    pub attributes: Attributes,
    /// When it ended, Unix ns; 0 means now.
    pub time_ns: i64,
    /// Take a fresh sample instead of the latest periodic one.
    pub fresh_snapshot: bool,
}

/// What a [`Record`] holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// A measurement.
    Metric {
        /// Its value (must be finite).
        value: f64,
        /// Its unit; empty means none.
        unit: String,
    },
    /// Something that happened.
    Event,
}

/// Record a metric or an event in a run (and optionally one of its spans).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// Metric or event.
    pub recorded: Recorded,
    /// The run.
    pub run_id: String,
    /// The span, if any.
    pub span_id: Option<String>,
    /// Its name.
    pub name: String,
    /// Attributes.
    pub attributes: Attributes,
    /// When, Unix ns; 0 means now.
    pub time_ns: i64,
}
