//! What the writer stores: one row type per request, each ready for its SQL.

use std::sync::Arc;
use std::time::Instant;

use probe_core::Snapshot;

use crate::domain::{EndedBy, EventKind, SpanKind, Status};

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

/// Which stored sample a row refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleRef {
    /// The stored sample nearest the row's own time, before or after it, if one is at most
    /// `window_ns` away; none (NULL) otherwise. A sample stored later that lies nearer
    /// takes the row over (see `writer::attach`), so a boundary recorded between two
    /// samples ends up with the nearer one whichever was stored first.
    Nearest {
        /// The farthest a sample may be from the row's time, ns.
        window_ns: i64,
    },
    /// The stored sample nearest the row's time minus `offset_ns`, within `window_ns`: the
    /// sender's clock runs `offset_ns` ahead of the sidecar's (`--clock-skew-correction`).
    /// Such rows are never taken over by later samples (their own time lies elsewhere).
    Corrected {
        /// The farthest a sample may be from the corrected time, ns.
        window_ns: i64,
        /// How far the sender's clock runs ahead, ns (negative: behind).
        offset_ns: i64,
    },
    /// None: the sender's clock is known to be off by more than the matching window, so
    /// its own time would point at another moment's machine (counted as skewed).
    Skewed,
    /// This sample: one taken for the row (a fresh sample a client asked for, the sample
    /// that noticed a lost GPU).
    Taken(i64),
    /// None, and not counted: a row about runlens itself (its export held or resumed).
    Unrelated,
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
    /// Baseline sample.
    pub snapshot: SampleRef,
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
    /// End-state sample.
    pub snapshot: SampleRef,
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
    /// Sample attached at start.
    pub snapshot: SampleRef,
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
    /// Sample attached at end.
    pub snapshot: SampleRef,
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
    /// Sample attached.
    pub snapshot: SampleRef,
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
    /// Finished spans from a tracing front door (OTLP), with their senders: one request,
    /// so that the answer to an export means all of it is committed.
    Trace(Box<TraceRows>),
    /// An exporter's receiver acknowledged everything up to `seq`.
    ExportCursor {
        /// Which exporter (`otlp`, `otlp-metrics`).
        exporter: &'static str,
        /// The last position sent (outbox entry, snapshot id).
        seq: i64,
    },
    /// End, as failed, the traced runs whose root span has not arrived and whose last span
    /// ended before `quiet_since_ns`.
    CloseRootless {
        /// Runs quiet since before this, Unix ns, are closed.
        quiet_since_ns: i64,
        /// The end sample is the one nearest the last span's end within this, ns.
        window_ns: i64,
        /// The error text they get.
        reason: String,
    },
    /// Give the page cache back after a burst (`PRAGMA shrink_memory`): it refills from
    /// disk as it is used.
    ReleaseMemory,
    /// A client's clock offset as estimated from its messages (`clients.clock_offset_ns`).
    ClientClock {
        /// The client.
        client_id: String,
        /// How far its clock runs ahead of the sidecar's, ns (negative: behind).
        offset_ns: i64,
        /// Whether that is beyond the matching window.
        skewed: bool,
    },
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
        /// Its NVIDIA_VISIBLE_DEVICES from hello (`None` keeps what is stored).
        nvidia_visible_devices: Option<String>,
        /// Messages it dropped since it started.
        dropped_total: u64,
    },
}

/// Spans of one export from a tracing front door, with their senders.
#[derive(Debug, Default)]
pub struct TraceRows {
    /// The senders.
    pub clients: Vec<TraceClientRow>,
    /// The spans.
    pub spans: Vec<TraceSpanRow>,
}

/// A sender of traced spans.
#[derive(Debug)]
pub struct TraceClientRow {
    /// `otlp/<service.name>[/<pid>]`.
    pub client_id: String,
    /// `service.name`.
    pub name: String,
    /// `process.pid`, 0 when not given.
    pub pid: u32,
    /// Resource attributes as a JSON object.
    pub resource: Option<String>,
}

/// A finished traced span.
#[derive(Debug)]
pub struct TraceSpanRow {
    /// Its trace's run.
    pub run_id: String,
    /// Its id.
    pub span_id: String,
    /// Its parent; `None` for the root, which names and ends the run.
    pub parent_span_id: Option<String>,
    /// Name.
    pub name: String,
    /// OpenTelemetry span kind.
    pub kind: Option<SpanKind>,
    /// `Ok` or `Failed`.
    pub status: Status,
    /// Error text for failed spans.
    pub error: Option<String>,
    /// JSON object of attributes.
    pub attributes: Option<String>,
    /// Start, Unix ns.
    pub start_ns: i64,
    /// End, Unix ns.
    pub end_ns: i64,
    /// The sender.
    pub client_id: String,
    /// Which samples its start, end and events get (matched at each one's own time).
    pub snapshot: SampleRef,
    /// Its events and metrics, written only with the span's first arrival.
    pub events: Vec<TraceEventRow>,
}

/// An event or metric of a traced span.
#[derive(Debug)]
pub struct TraceEventRow {
    /// `Event` or `Metric`.
    pub kind: EventKind,
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
}

/// What a committed transaction finished, each span and run once (a resend or an end that
/// found nothing open adds nothing): what counters of spans and runs are made of.
#[derive(Debug, Default)]
pub struct Finished {
    /// Spans that ended.
    pub spans: Vec<FinishedSpan>,
    /// Runs that ended.
    pub runs: Vec<FinishedRun>,
    /// Boundaries, metrics and events matched to the sample nearest their time.
    pub matched: u64,
    /// Boundaries, metrics and events with no sample within the window of their time:
    /// stored without one (the sidecar was not sampling then, or the sender's clock is off).
    pub unmatched: u64,
    /// Boundaries, metrics and events stored without a sample because their sender's
    /// clock is known to be off by more than the matching window.
    pub skewed: u64,
}

/// A span that ended.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedSpan {
    /// Its name.
    pub name: String,
    /// `Ok` or `Failed`.
    pub status: Status,
    /// End minus start, ns.
    pub duration_ns: i64,
}

/// A run that ended.
#[derive(Debug, Clone, PartialEq)]
pub struct FinishedRun {
    /// Its id.
    pub run_id: String,
    /// Its name.
    pub name: String,
    /// `Ok` or `Failed`.
    pub status: Status,
}

/// Told, after each commit, what it finished (the metrics' counters).
pub trait CommitObserver: Send + Sync {
    /// `finished` is committed.
    fn committed(&self, finished: &Finished);
}
