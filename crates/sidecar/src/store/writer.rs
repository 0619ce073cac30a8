//! The single writer: one thread owns the write connection and commits batches.
//!
//! Requests arrive on a bounded channel (a full channel makes senders wait: backpressure
//! reaches the session stream's HTTP/2 flow control). The thread takes whatever is queued,
//! up to [`MAX_BATCH`] requests, writes them in one transaction with cached prepared
//! statements, commits, and only then acknowledges: unary callers get their reply, session
//! clients see their committed sequence number advance.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use probe_core::Snapshot;
use rusqlite::{Connection, params};
use tokio::sync::{mpsc, oneshot, watch};

use super::Result;

/// Most requests written in one transaction.
pub const MAX_BATCH: usize = 4096;

/// Requests the writer's channel holds before senders wait.
pub const QUEUE_CAPACITY: usize = 16 * 1024;

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
    /// `ok` or `failed`.
    pub status: &'static str,
    /// Error text for failed runs.
    pub error: Option<String>,
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
    /// `ok` or `failed`.
    pub status: &'static str,
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
    /// `metric`, `event` or `system`.
    pub kind: &'static str,
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

/// Progress of one session client, published by the writer after each commit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionProgress {
    /// Highest sequence number whose effects are committed.
    pub committed_seq: u64,
    /// Set when a commit failed: the session must end so the client resends.
    pub write_failed: Option<String>,
}

/// Who to tell once the request is committed.
#[derive(Debug)]
pub enum Ack {
    /// Nobody (background snapshots).
    None,
    /// A unary caller waiting for the commit.
    Reply(oneshot::Sender<Result<(), String>>),
    /// A session client: after commit, its `committed_seq` becomes at least `seq`.
    Session {
        /// Client id, for the `clients` table.
        client_id: Arc<str>,
        /// Where the client's progress is published.
        progress: Arc<watch::Sender<SessionProgress>>,
        /// Sequence number of the message.
        seq: u64,
    },
}

struct Request {
    op: WriteOp,
    ack: Ack,
}

// `Close` is sent once per process; boxing every write to shrink it would cost more.
#[allow(clippy::large_enum_variant)]
enum Message {
    Write(Request),
    /// Commit what is queued before this message, then stop.
    Close,
}

/// The sending side of the writer, cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Message>,
    health: watch::Receiver<Option<String>>,
}

/// Why a request could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue is full: the sidecar is saturated.
    #[error("the sidecar's write queue is full; retry with backoff")]
    Full,
    /// The writer has stopped.
    #[error("the storage writer has stopped")]
    Closed,
}

/// Room for one request in the writer's queue, reserved in advance.
pub struct WritePermit(mpsc::OwnedPermit<Message>);

impl WritePermit {
    /// Queues the request in the reserved room.
    pub fn send(self, op: WriteOp, ack: Ack) {
        self.0.send(Message::Write(Request { op, ack }));
    }
}

/// The writer thread.
pub struct Writer {
    handle: WriterHandle,
    thread: Option<JoinHandle<()>>,
    /// Set by `close`: a writer retrying a failing disk gives up instead of waiting forever.
    stop: Arc<AtomicBool>,
}

/// The writer is gone (shut down, or its thread died).
#[derive(Debug, thiserror::Error)]
#[error("the storage writer has stopped")]
pub struct WriterClosed;

impl WriterHandle {
    /// Queues a request, waiting while the queue is full.
    pub async fn send(&self, op: WriteOp, ack: Ack) -> Result<(), WriterClosed> {
        self.tx
            .send(Message::Write(Request { op, ack }))
            .await
            .map_err(|_| WriterClosed)
    }

    /// Reserves room for one request without waiting, so a caller can refuse work before
    /// changing any state.
    pub fn try_reserve(&self) -> Result<WritePermit, QueueError> {
        self.tx
            .clone()
            .try_reserve_owned()
            .map(WritePermit)
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => QueueError::Full,
                mpsc::error::TrySendError::Closed(_) => QueueError::Closed,
            })
    }

    /// Why storage is failing right now (disk full, read-only file ...), or `None` while
    /// writes succeed. Watch it to follow changes.
    pub fn health(&self) -> watch::Receiver<Option<String>> {
        self.health.clone()
    }
}

impl Writer {
    /// Starts the writer thread on an open, migrated connection.
    pub fn start(conn: Connection) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (health_tx, health) = watch::channel(None);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let thread = std::thread::Builder::new()
            .name("runlens-writer".into())
            .spawn(move || {
                run(Thread {
                    conn,
                    rx,
                    health: health_tx,
                    stop: thread_stop,
                })
            })?;
        Ok(Self {
            handle: WriterHandle { tx, health },
            thread: Some(thread),
            stop,
        })
    }

    /// A handle for sending requests.
    pub fn handle(&self) -> WriterHandle {
        self.handle.clone()
    }

    /// Commits everything queued so far and stops the thread.
    pub async fn close(mut self) {
        self.stop.store(true, Ordering::Release);
        // Ignored error: the thread is already gone, which is what we want.
        let _ = self.handle.tx.send(Message::Close).await;
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

struct Thread {
    conn: Connection,
    rx: mpsc::Receiver<Message>,
    health: watch::Sender<Option<String>>,
    stop: Arc<AtomicBool>,
}

fn run(mut t: Thread) {
    let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
    let mut closing = false;
    while !closing {
        match t.rx.blocking_recv() {
            Some(Message::Write(req)) => batch.push(req),
            Some(Message::Close) | None => closing = true,
        }
        while !closing && batch.len() < MAX_BATCH {
            match t.rx.try_recv() {
                Ok(Message::Write(req)) => batch.push(req),
                Ok(Message::Close) => closing = true,
                Err(_) => break,
            }
        }
        if batch.is_empty() {
            continue;
        }
        let outcome = commit(&mut t, &batch);
        acknowledge(batch.drain(..), &outcome);
    }
    tracing::debug!("storage writer stopped");
}

/// Errors that say the disk, not the data, is the problem: retrying the same batch will
/// work once space is freed or the file is writable again.
fn is_transient(e: &rusqlite::Error) -> bool {
    use rusqlite::ErrorCode::*;
    matches!(
        e.sqlite_error_code(),
        Some(
            DiskFull
                | ReadOnly
                | SystemIoFailure
                | CannotOpen
                | DatabaseBusy
                | DatabaseLocked
                | OutOfMemory
        )
    )
}

/// Commits a batch. While storage fails for a transient reason the batch is retried with
/// backoff (holding the queue, so backpressure reaches the clients) and the failure is
/// published as the writer's health; nothing queued is dropped. Only at shutdown does a
/// failing batch give up: it is then unacknowledged, and the clients still hold it.
fn commit(t: &mut Thread, batch: &[Request]) -> Result<(), String> {
    let mut delay = Duration::from_millis(50);
    let mut last_log: Option<Instant> = None;
    loop {
        match write_batch(&mut t.conn, batch) {
            Ok(()) => {
                if t.health.borrow().is_some() {
                    tracing::info!("storage is writable again; ingest resumed");
                    t.health.send_replace(None);
                }
                return Ok(());
            }
            Err(e) if is_transient(&e) => {
                let error = e.to_string();
                if last_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(10)) {
                    tracing::error!(%error, requests = batch.len(),
                        "storage write failed; holding new data and retrying (free disk space \
                         or fix the file's permissions)");
                    last_log = Some(Instant::now());
                }
                t.health.send_replace(Some(error.clone()));
                if t.stop.load(Ordering::Acquire) {
                    return Err(error);
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                // Not the disk: a row the database refuses. Write the others, one
                // savepoint each, so a single bad row cannot block everything.
                tracing::error!(error = %e, "batch refused; writing its requests one by one");
                return write_one_by_one(&mut t.conn, batch).map_err(|e| e.to_string());
            }
        }
    }
}

fn write_one_by_one(conn: &mut Connection, batch: &[Request]) -> rusqlite::Result<()> {
    let mut tx = conn.transaction()?;
    for req in batch {
        let sp = tx.savepoint()?;
        match write_op(&sp, &req.op) {
            Ok(()) => sp.commit()?,
            Err(e) => tracing::error!(error = %e, op = ?req.op, "request not stored"),
        }
    }
    record_client_progress(&tx, batch)?;
    tx.commit()
}

fn write_batch(conn: &mut Connection, batch: &[Request]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    // A span that starts and ends within one batch (most spans, at high volume) is
    // inserted once, complete, instead of inserted and then updated.
    let ends: HashMap<&str, &SpanEnd> = batch
        .iter()
        .filter_map(|r| match &r.op {
            WriteOp::EndSpan(e) => Some((e.span_id.as_str(), e)),
            _ => None,
        })
        .collect();
    let mut completed: Vec<(&SpanStart, &SpanEnd)> = Vec::new();
    let mut completed_ids: HashSet<&str> = HashSet::new();
    // Snapshots first: rows of this batch may refer to any of them, and a completed span
    // refers to its end snapshot at its start's place.
    for req in batch {
        if let WriteOp::Snapshot(snapshot) = &req.op {
            write_snapshot(&tx, snapshot)?;
        }
    }
    for req in batch {
        match &req.op {
            WriteOp::Snapshot(_) => continue,
            WriteOp::StartSpan(start) => {
                if let Some(end) = ends.get(start.span_id.as_str()) {
                    completed.push((start, end));
                    completed_ids.insert(start.span_id.as_str());
                    continue;
                }
            }
            WriteOp::EndSpan(end) if completed_ids.contains(end.span_id.as_str()) => continue,
            _ => {}
        }
        write_op(&tx, &req.op)?;
    }
    // Completed spans go in last, many rows per statement. Nothing else in the batch
    // depends on them: later rows of the batch only ever update spans still running.
    write_complete_spans(&tx, &completed)?;
    record_client_progress(&tx, batch)?;
    tx.commit()
}

/// The multi-row and the one-row INSERT of completed spans, built once.
static COMPLETE_SPAN_INSERTS: std::sync::LazyLock<(String, String)> =
    std::sync::LazyLock::new(|| {
        let columns = "INSERT OR IGNORE INTO spans (span_id, run_id, parent_span_id, name, \
            status, error, attributes, started_at_ns, ended_at_ns, start_snapshot_id, \
            end_snapshot_id) VALUES ";
        let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
        (
            format!("{columns}{}", vec![row; SPANS_PER_INSERT].join(", ")),
            format!("{columns}{row}"),
        )
    });

/// Rows per multi-row INSERT of completed spans (11 parameters each).
const SPANS_PER_INSERT: usize = 32;

/// Inserts spans whose start and end are both at hand, `SPANS_PER_INSERT` per statement:
/// one statement step instead of 32 is most of the writer's per-span cost.
fn write_complete_spans(
    tx: &rusqlite::Connection,
    spans: &[(&SpanStart, &SpanEnd)],
) -> rusqlite::Result<()> {
    let (full, single) = &*COMPLETE_SPAN_INSERTS;
    for chunk in spans.chunks(SPANS_PER_INSERT) {
        let attributes: Vec<Option<String>> = chunk
            .iter()
            .map(|(s, e)| merge_attributes(s.attributes.as_deref(), e.attributes.as_deref()))
            .collect();
        let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * 11);
        for ((start, end), attrs) in chunk.iter().zip(&attributes) {
            values.extend([
                &start.span_id as &dyn rusqlite::ToSql,
                &start.run_id,
                &start.parent_span_id,
                &start.name,
                &end.status,
                &end.error,
                attrs,
                &start.at_ns,
                &end.at_ns,
                &start.snapshot_id,
                &end.snapshot_id,
            ]);
        }
        if chunk.len() == SPANS_PER_INSERT {
            tx.prepare_cached(full)?
                .execute(rusqlite::params_from_iter(values))?;
        } else {
            let mut one = tx.prepare_cached(single)?;
            for row in values.chunks(11) {
                one.execute(rusqlite::params_from_iter(row))?;
            }
        }
    }
    Ok(())
}

/// Start attributes with end attributes laid over them (the same as SQL `json_patch` for
/// flat string maps).
fn merge_attributes(start: Option<&str>, end: Option<&str>) -> Option<String> {
    let Some(end) = end else {
        return start.map(str::to_owned);
    };
    let parse = |t: &str| {
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(t).unwrap_or_default()
    };
    let mut merged = start.map(parse).unwrap_or_default();
    merged.extend(parse(end));
    serde_json::to_string(&merged).ok()
}

/// Each session client's highest sequence number in the batch, stored in the same
/// transaction as the rows: a restarted sidecar knows exactly what it has.
fn record_client_progress(
    tx: &rusqlite::Transaction<'_>,
    batch: &[Request],
) -> rusqlite::Result<()> {
    let mut client_seq: HashMap<&str, u64> = HashMap::new();
    for req in batch {
        if let Ack::Session { client_id, seq, .. } = &req.ack {
            let entry = client_seq.entry(client_id).or_default();
            *entry = (*entry).max(*seq);
        }
    }
    if !client_seq.is_empty() {
        let now = probe_core::unix_now_ns();
        let mut stmt = tx.prepare_cached(
            "INSERT INTO clients (client_id, committed_seq, last_seen_ns) VALUES (?1, ?2, ?3)
             ON CONFLICT (client_id) DO UPDATE SET
                committed_seq = max(committed_seq, excluded.committed_seq),
                last_seen_ns = excluded.last_seen_ns",
        )?;
        for (client, seq) in client_seq {
            stmt.execute(params![client, seq_to_sql(seq), now])?;
        }
    }
    Ok(())
}

fn seq_to_sql(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn write_op(tx: &rusqlite::Connection, op: &WriteOp) -> rusqlite::Result<()> {
    match op {
        WriteOp::Snapshot(s) => write_snapshot(tx, s),
        WriteOp::StartRun(r) => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO runs (run_id, name, status, attributes, client_id,
                    started_at_ns, start_snapshot_id)
                 VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                r.run_id,
                r.name,
                r.attributes,
                r.client_id,
                r.at_ns,
                r.snapshot_id
            ])?;
            Ok(())
        }
        WriteOp::EndRun(r) => {
            tx.prepare_cached(
                "UPDATE runs SET status = ?2, error = ?3, ended_at_ns = ?4, end_snapshot_id = ?5,
                    attributes = CASE WHEN ?6 IS NULL THEN attributes
                                      ELSE json_patch(coalesce(attributes, '{}'), ?6) END
                 WHERE run_id = ?1 AND status = 'running'",
            )?
            .execute(params![
                r.run_id,
                r.status,
                r.error,
                r.at_ns,
                r.snapshot_id,
                r.attributes
            ])?;
            tx.prepare_cached(
                "UPDATE spans SET status = 'failed', error = 'run ended while span was open',
                    ended_at_ns = ?2, end_snapshot_id = ?3
                 WHERE run_id = ?1 AND status = 'running'",
            )?
            .execute(params![r.run_id, r.at_ns, r.snapshot_id])?;
            Ok(())
        }
        WriteOp::StartSpan(s) => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO spans (span_id, run_id, parent_span_id, name, status,
                    attributes, started_at_ns, start_snapshot_id)
                 VALUES (?1, ?2, ?3, ?4, 'running', ?5, ?6, ?7)",
            )?
            .execute(params![
                s.span_id,
                s.run_id,
                s.parent_span_id,
                s.name,
                s.attributes,
                s.at_ns,
                s.snapshot_id
            ])?;
            Ok(())
        }
        WriteOp::EndSpan(s) => {
            tx.prepare_cached(
                "UPDATE spans SET status = ?2, error = ?3, ended_at_ns = ?4, end_snapshot_id = ?5,
                    attributes = CASE WHEN ?6 IS NULL THEN attributes
                                      ELSE json_patch(coalesce(attributes, '{}'), ?6) END
                 WHERE span_id = ?1 AND status = 'running'",
            )?
            .execute(params![
                s.span_id,
                s.status,
                s.error,
                s.at_ns,
                s.snapshot_id,
                s.attributes
            ])?;
            Ok(())
        }
        WriteOp::Record(e) => {
            tx.prepare_cached(
                "INSERT INTO events (kind, run_id, span_id, name, value, unit, attributes,
                    at_ns, snapshot_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            )?
            .execute(params![
                e.kind,
                e.run_id,
                e.span_id,
                e.name,
                e.value,
                e.unit,
                e.attributes,
                e.at_ns,
                e.snapshot_id
            ])?;
            Ok(())
        }
        WriteOp::Nothing => Ok(()),
        WriteOp::ClientStats {
            client_id,
            client_name,
            pid,
            cuda_visible_devices,
            dropped_total,
        } => {
            tx.prepare_cached(
                "INSERT INTO clients (client_id, client_name, pid, committed_seq, last_seen_ns,
                    dropped_messages, cuda_visible_devices)
                 VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6)
                 ON CONFLICT (client_id) DO UPDATE SET
                    client_name = excluded.client_name, pid = excluded.pid,
                    dropped_messages = max(dropped_messages, excluded.dropped_messages),
                    cuda_visible_devices =
                        coalesce(excluded.cuda_visible_devices, cuda_visible_devices)",
            )?
            .execute(params![
                client_id,
                client_name,
                pid,
                probe_core::unix_now_ns(),
                seq_to_sql(*dropped_total),
                cuda_visible_devices
            ])?;
            Ok(())
        }
    }
}

fn write_snapshot(tx: &rusqlite::Connection, s: &StoredSnapshot) -> rusqlite::Result<()> {
    let h = &s.snapshot.host;
    let g = &s.snapshot.gpu;
    let c = s.snapshot.cgroup.as_ref();
    let cores = if h.cpu_core_utilization_ratio.is_empty() {
        None
    } else {
        serde_json::to_string(&h.cpu_core_utilization_ratio).ok()
    };
    tx.prepare_cached(
        "INSERT OR IGNORE INTO snapshots (snapshot_id, taken_at_ns, reason, gpu_available,
            gpu_unavailable_reason, gpu_count, cpu_count, cpu_load_1m, cpu_load_5m, cpu_load_15m,
            cpu_utilization_ratio, cpu_core_utilization, ram_total_bytes, ram_used_bytes,
            ram_available_bytes, swap_total_bytes, swap_used_bytes, cgroup_version,
            cgroup_memory_limit_bytes, cgroup_memory_used_bytes, cgroup_cpu_quota_cores,
            cgroup_cpu_throttled_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19, ?20, ?21, ?22)",
    )?
    .execute(params![
        s.id,
        s.snapshot.taken_at_ns,
        s.reason,
        g.available,
        g.unavailable_reason,
        g.devices.len() as i64,
        h.cpu_count,
        h.cpu_load_1m,
        h.cpu_load_5m,
        h.cpu_load_15m,
        h.cpu_utilization_ratio,
        cores,
        bytes(h.ram_total_bytes),
        bytes(h.ram_used_bytes),
        bytes(h.ram_available_bytes),
        bytes(h.swap_total_bytes),
        bytes(h.swap_used_bytes),
        c.map(|c| c.version),
        c.and_then(|c| c.memory_limit_bytes).map(bytes),
        c.and_then(|c| c.memory_used_bytes).map(bytes),
        c.and_then(|c| c.cpu_quota_cores),
        c.and_then(|c| c.cpu_throttled_ns).map(bytes),
    ])?;
    let mut gpu = tx.prepare_cached(
        "INSERT OR IGNORE INTO gpu_samples (snapshot_id, gpu_index, uuid, name, state,
            memory_total_bytes, memory_used_bytes, memory_free_bytes, utilization_ratio,
            memory_utilization_ratio, temperature_celsius, power_watts, memory_reserved_bytes,
            power_limit_watts, clock_sm_mhz, clock_memory_mhz, performance_state,
            clock_event_reasons, clock_event_reason_names, ecc_corrected_errors,
            ecc_uncorrected_errors, mig_enabled)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                 ?18, ?19, ?20, ?21, ?22)",
    )?;
    let mut mig = tx.prepare_cached(
        "INSERT OR IGNORE INTO mig_samples (snapshot_id, gpu_index, mig_index, uuid,
            memory_total_bytes, memory_used_bytes, memory_free_bytes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut process = tx.prepare_cached(
        "INSERT OR IGNORE INTO gpu_processes (snapshot_id, gpu_index, pid, used_memory_bytes)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for d in &g.devices {
        gpu.execute(params![
            s.id,
            d.index,
            d.uuid,
            d.name,
            d.state.as_str(),
            d.memory_total_bytes.map(bytes),
            d.memory_used_bytes.map(bytes),
            d.memory_free_bytes.map(bytes),
            d.utilization_ratio,
            d.memory_utilization_ratio,
            d.temperature_celsius,
            d.power_watts,
            d.memory_reserved_bytes.map(bytes),
            d.power_limit_watts,
            d.clock_sm_mhz,
            d.clock_memory_mhz,
            d.performance_state,
            d.clock_event_reasons.map(bytes),
            d.clock_event_reasons
                .map(|m| probe_core::clock_event_reason_names(m).join(",")),
            d.ecc_corrected_errors.map(bytes),
            d.ecc_uncorrected_errors.map(bytes),
            d.mig_enabled,
        ])?;
        for m in &d.mig_devices {
            mig.execute(params![
                s.id,
                d.index,
                m.index,
                m.uuid,
                m.memory_total_bytes.map(bytes),
                m.memory_used_bytes.map(bytes),
                m.memory_free_bytes.map(bytes)
            ])?;
        }
        for p in &d.processes {
            process.execute(params![
                s.id,
                d.index,
                p.pid,
                p.used_memory_bytes.map(bytes)
            ])?;
        }
    }
    if !s.snapshot.processes.is_empty() {
        let mut agent = tx.prepare_cached(
            "INSERT OR IGNORE INTO process_samples (snapshot_id, pid, process_count, rss_bytes,
                cpu_ratio, gpu_memory_bytes)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut per_gpu = tx.prepare_cached(
            "INSERT OR IGNORE INTO process_gpu_samples (snapshot_id, pid, gpu_index,
                used_memory_bytes)
             VALUES (?1, ?2, ?3, ?4)",
        )?;
        for p in &s.snapshot.processes {
            agent.execute(params![
                s.id,
                p.pid,
                p.process_count,
                bytes(p.rss_bytes),
                p.cpu_ratio,
                p.gpu_memory_bytes.map(bytes)
            ])?;
            for g in &p.gpus {
                per_gpu.execute(params![
                    s.id,
                    p.pid,
                    g.gpu_index,
                    bytes(g.used_memory_bytes)
                ])?;
            }
        }
    }
    Ok(())
}

/// SQLite integers are signed 64-bit; no memory size comes near the limit.
fn bytes(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn acknowledge(batch: impl Iterator<Item = Request>, outcome: &Result<(), String>) {
    let mut sessions: HashMap<
        *const watch::Sender<SessionProgress>,
        (Arc<watch::Sender<SessionProgress>>, u64),
    > = HashMap::new();
    for req in batch {
        match req.ack {
            Ack::None => {}
            Ack::Reply(tx) => {
                // The caller may have gone away (cancelled rpc); nothing to tell then.
                let _ = tx.send(outcome.clone());
            }
            Ack::Session { progress, seq, .. } => {
                let entry = sessions
                    .entry(Arc::as_ptr(&progress))
                    .or_insert_with(|| (progress.clone(), 0));
                entry.1 = entry.1.max(seq);
            }
        }
    }
    for (progress, seq) in sessions.into_values() {
        progress.send_if_modified(|p| match outcome {
            Ok(()) if seq > p.committed_seq => {
                p.committed_seq = seq;
                true
            }
            Ok(()) => false,
            Err(error) => {
                p.write_failed = Some(error.clone());
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_attributes_are_laid_over_start_attributes() {
        assert_eq!(merge_attributes(None, None), None);
        assert_eq!(
            merge_attributes(Some(r#"{"a":"1"}"#), None).as_deref(),
            Some(r#"{"a":"1"}"#)
        );
        assert_eq!(
            merge_attributes(Some(r#"{"a":"1","b":"2"}"#), Some(r#"{"b":"3","c":"4"}"#)).as_deref(),
            Some(r#"{"a":"1","b":"3","c":"4"}"#)
        );
        assert_eq!(
            merge_attributes(None, Some(r#"{"c":"4"}"#)).as_deref(),
            Some(r#"{"c":"4"}"#)
        );
    }
}
