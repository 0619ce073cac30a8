//! What the writer stores: one row type per request, each ready for its SQL.

use std::sync::Arc;
use std::time::Instant;

use probe_core::Snapshot;

use crate::domain::{EndedBy, EventKind, Status};

/// A sample that has been given a row id and is (or will be) stored.
#[derive(Debug)]
pub struct StoredSnapshot {
    /// Row id in `snapshots`.
    pub id: i64,
    /// Why it was taken (`interval`, `run_start`, `run_end`, `fresh`, `stale`).
    pub reason: &'static str,
    /// The sample.
    pub snapshot: Snapshot,
    /// Monotonic time of the sample, to judge its age.
    pub taken: Instant,
}

/// A run being opened.
#[derive(Debug)]
pub struct RunStart {
    /// Client-chosen id.
    pub run_id: String,
    /// Name.
    pub name: String,
    /// JSON object of attributes, or `None` when there are none.
    pub attributes: Option<String>,
    /// Session client that opened it, if any.
    pub client_id: Option<String>,
    /// Start, Unix ns.
    pub at_ns: i64,
    /// Baseline snapshot.
    pub snapshot_id: i64,
}

/// A run being closed.
#[derive(Debug)]
pub struct RunEnd {
    /// Client-chosen id.
    pub run_id: String,
    /// How it ended (`Ok` or `Failed`).
    pub status: Status,
    /// Error text for failed runs.
    pub error: Option<String>,
    /// Who ended it.
    pub ended_by: EndedBy,
    /// Attributes to merge, as a JSON object.
    pub attributes: Option<String>,
    /// End, Unix ns.
    pub at_ns: i64,
    /// End-state snapshot.
    pub snapshot_id: i64,
}

/// A span being opened.
#[derive(Debug)]
pub struct SpanStart {
    /// Client-chosen id.
    pub span_id: String,
    /// Run it belongs to.
    pub run_id: String,
    /// Enclosing span.
    pub parent_span_id: Option<String>,
    /// Name.
    pub name: String,
    /// JSON object of attributes.
    pub attributes: Option<String>,
    /// Start, Unix ns.
    pub at_ns: i64,
    /// Snapshot attached at start.
    pub snapshot_id: i64,
}

/// A span being closed.
#[derive(Debug)]
pub struct SpanEnd {
    /// Client-chosen id.
    pub span_id: String,
    /// How it ended (`Ok` or `Failed`).
    pub status: Status,
    /// Error text for failed spans.
    pub error: Option<String>,
    /// Attributes to merge, as a JSON object.
    pub attributes: Option<String>,
    /// End, Unix ns.
    pub at_ns: i64,
    /// Snapshot attached at end.
    pub snapshot_id: i64,
}

/// A metric (with a value), a custom event (without), or a system event.
#[derive(Debug)]
pub struct EventRow {
    /// Metric, event or system event.
    pub kind: EventKind,
    /// Run it belongs to; `None` for system events.
    pub run_id: Option<String>,
    /// Span it belongs to, if any.
    pub span_id: Option<String>,
    /// Name.
    pub name: String,
    /// Value of a metric.
    pub value: Option<f64>,
    /// Unit of a metric.
    pub unit: Option<String>,
    /// JSON object of attributes.
    pub attributes: Option<String>,
    /// When, Unix ns.
    pub at_ns: i64,
    /// Snapshot attached.
    pub snapshot_id: i64,
}

/// One thing to write.
#[derive(Debug)]
pub enum WriteOp {
    /// Store a snapshot and its GPU rows.
    Snapshot(Arc<StoredSnapshot>),
    /// Insert a run.
    StartRun(RunStart),
    /// Close a run (and any of its spans still open).
    EndRun(RunEnd),
    /// Insert a span.
    StartSpan(SpanStart),
    /// Close a span.
    EndSpan(SpanEnd),
    /// Insert a metric or event.
    Record(EventRow),
    /// Write nothing; only move the session's committed sequence number past a message
    /// that was rejected, in order with the messages before it.
    Nothing,
    /// A session client's count of messages it dropped (buffer full), so SQL shows that
    /// data is missing and how much.
    ClientStats {
        /// The client.
        client_id: String,
        /// Its name from hello.
        client_name: String,
        /// Its process id from hello.
        pid: u32,
        /// Its CUDA_VISIBLE_DEVICES from hello (`None` keeps what is stored).
        cuda_visible_devices: Option<String>,
        /// Messages it dropped since it started.
        dropped_total: u64,
    },
}
