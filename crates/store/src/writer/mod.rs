//! The single writer: one thread owns the write connection and commits batches.
//!
//! Requests arrive on a bounded channel (a full channel makes senders wait: backpressure
//! reaches the session stream's HTTP/2 flow control). The thread takes whatever is queued,
//! up to [`MAX_BATCH`] requests, writes them in one transaction with cached prepared
//! statements, commits, and only then acknowledges: unary callers get their reply, session
//! clients see their committed sequence number advance.
//!
//! `rows` holds what can be written, `batch` how a batch becomes one transaction, `ops`
//! and `snapshot` the SQL of each row; this file the channel, the thread, retrying and
//! acknowledging.

mod attach;
mod batch;
mod checkpoint;
mod finished;
mod held;
mod ops;
mod rows;
mod snapshot;
mod times;
mod trace;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use super::Result;
use super::retention::{PruneReport, Pruner, RetentionPolicy};

pub use rows::{
    CommitObserver, EventRow, Finished, FinishedRun, FinishedSpan, RunEnd, RunStart, SampleRef,
    SpanEnd, SpanStart, StoredSnapshot, TraceClientRow, TraceEventRow, TraceRows, TraceSpanRow,
    WriteOp,
};

/// Most requests written in one transaction.
pub const MAX_BATCH: usize = 4096;

/// A batch smaller than this waits [`GROUP_COMMIT_WAIT`] for more before it is committed,
/// unless everything in it that somebody waits on came in whole frames
/// ([`WriterHandle::send_frame`]): a client that lingered has gathered them already.
pub const GROUP_COMMIT_BELOW: usize = 64;

/// How long the oldest request of a small batch may wait for more, counted from when it was
/// queued: the longest an acknowledgement is delayed by group commit. At agent rates a
/// task's messages arrive in several frames milliseconds apart; 3 ms gathers most of a
/// task into one transaction (about a third fewer commits, WAL pages and wake-ups than
/// 0.5 ms) and keeps acknowledgements at p99 ≈ 8 ms, within the 10 ms bound
/// (`runlens bench agent`, BENCHMARKS.md).
pub const GROUP_COMMIT_WAIT: Duration = Duration::from_millis(3);

/// How long a batch of background samples (and the GPU health events they raise) waits
/// for company before it is committed alone, unless [`Writer::set_sample_linger`] says
/// otherwise (the sidecar: its idle sample interval, at most this). Nobody waits on a
/// sample, and while work is in flight the sidecar samples every 250 ms while clients send
/// a frame every 500 ms: held samples ride in the next frame's transaction instead of one
/// commit (WAL frames, locks, a wake-up) each. A sample is in the database at most this
/// long after it was taken.
pub const SAMPLE_LINGER: Duration = Duration::from_secs(1);

/// Prepared statements the writer keeps (more than it has).
const WRITER_STATEMENTS: usize = 128;

/// Requests the writer's channel holds before senders wait.
pub const QUEUE_CAPACITY: usize = 16 * 1024;

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
    /// A request, and when it was queued: group commit waits from then.
    Write(Request, Instant),
    /// A client's frame, whole, and when it was queued; the permit is its share of
    /// [`QUEUE_CAPACITY`], given back when the writer takes it.
    Frame(Vec<Request>, Instant, OwnedSemaphorePermit),
    /// Take what is held ([`WriterHandle::hold_background`]).
    Wake,
    /// One retention step, run after the batch queued before it.
    Prune(oneshot::Sender<Result<PruneReport, String>>),
    /// Commit what is queued before this message, then stop.
    Close,
}

/// The sending side of the writer, cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Message>,
    health: watch::Receiver<Option<String>>,
    /// Room for the requests of queued frames (a frame takes one place in the channel).
    frame_room: Arc<Semaphore>,
    /// Background samples waiting for the writer's next wake-up.
    held: Arc<held::Held>,
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
        self.0
            .send(Message::Write(Request { op, ack }, Instant::now()));
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
            .send(Message::Write(Request { op, ack }, Instant::now()))
            .await
            .map_err(|_| WriterClosed)
    }

    /// Queues the requests of one client frame, in order, as one: the writer takes them
    /// together (one wake-up, one transaction) and commits them without the group-commit
    /// wait. Waits while the queue is full: queued frames hold at most the queue's capacity
    /// in requests, as queued single requests do.
    pub async fn send_frame(&self, requests: Vec<(WriteOp, Ack)>) -> Result<(), WriterClosed> {
        if requests.is_empty() {
            return Ok(());
        }
        let room = u32::try_from(requests.len().min(QUEUE_CAPACITY)).unwrap_or(u32::MAX);
        let permit = self
            .frame_room
            .clone()
            .acquire_many_owned(room)
            .await
            .map_err(|_| WriterClosed)?;
        let requests = requests
            .into_iter()
            .map(|(op, ack)| Request { op, ack })
            .collect();
        self.tx
            .send(Message::Frame(requests, Instant::now(), permit))
            .await
            .map_err(|_| WriterClosed)
    }

    /// Queues a request from a thread outside the async runtime (the sampler's), blocking
    /// while the queue is full. Must not be called from async code.
    pub fn blocking_send(&self, op: WriteOp, ack: Ack) -> Result<(), WriterClosed> {
        self.tx
            .blocking_send(Message::Write(Request { op, ack }, Instant::now()))
            .map_err(|_| WriterClosed)
    }

    /// Hands over background work nobody waits on (a periodic sample and the events it
    /// raised) without waking the writer: it joins the next batch the writer takes. The
    /// holder calls [`WriterHandle::release_held`] before it sleeps.
    pub fn hold_background(
        &self,
        ops: impl IntoIterator<Item = WriteOp>,
    ) -> Result<(), WriterClosed> {
        if self.tx.is_closed() {
            return Err(WriterClosed);
        }
        self.held
            .hold(ops.into_iter().map(|op| Request { op, ack: Ack::None }));
        Ok(())
    }

    /// Wakes the writer (blocking: not from async code) if what is held would otherwise
    /// wait past its linger ([`Writer::set_sample_linger`]) because the holder hands over
    /// nothing more until `next_at`.
    pub fn release_held(&self, next_at: Instant) -> Result<(), WriterClosed> {
        if self.held.due_before(next_at) {
            self.tx
                .blocking_send(Message::Wake)
                .map_err(|_| WriterClosed)?;
        }
        Ok(())
    }

    /// Reserves room for one request without waiting, so a caller can refuse work before
    /// changing any state. The queue is full when its channel is, or when frames hold all
    /// the room they may and another waits for more.
    pub fn try_reserve(&self) -> Result<WritePermit, QueueError> {
        if self.frame_room.available_permits() == 0 {
            return Err(QueueError::Full);
        }
        self.tx
            .clone()
            .try_reserve_owned()
            .map(WritePermit)
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => QueueError::Full,
                mpsc::error::TrySendError::Closed(_) => QueueError::Closed,
            })
    }

    /// Runs one retention step in the writer thread, between batches; `None` when the
    /// writer has stopped or has no retention policy.
    pub async fn prune_step(&self) -> Option<Result<PruneReport, String>> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Message::Prune(tx)).await.ok()?;
        rx.await.ok()
    }

    /// Why storage is failing right now (disk full, read-only file ...), or `None` while
    /// writes succeed. Watch it to follow changes.
    pub fn health(&self) -> watch::Receiver<Option<String>> {
        self.health.clone()
    }
}

impl Writer {
    /// Starts the writer thread on an open, migrated connection (reading the recent
    /// samples' times first; failing to is an I/O error like failing to spawn). `observer`
    /// is told what each commit finished; with `outbox`, ended runs join the export outbox.
    /// With `retention`, [`WriterHandle::prune_step`] prunes, and a database at its size
    /// cap is pruned before a write gives up.
    pub fn start(
        mut conn: Connection,
        observer: Option<Arc<dyn CommitObserver>>,
        outbox: bool,
        retention: Option<RetentionPolicy>,
    ) -> std::io::Result<Self> {
        let times = times::SnapshotTimes::load(&conn).map_err(std::io::Error::other)?;
        // Every statement the writer runs stays prepared: rusqlite keeps 16 by default, the
        // writer has about 40 (rows, samples, retention, matching), and an evicted one is
        // parsed again on its next use (9 % of the sidecar's CPU at 100 spans/s).
        conn.set_prepared_statement_cache_capacity(WRITER_STATEMENTS);
        let checkpointer = checkpoint::Checkpointer::start(&mut conn);
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (health_tx, health) = watch::channel(None);
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let held = Arc::new(held::Held::new(SAMPLE_LINGER));
        let thread_held = held.clone();
        let thread = std::thread::Builder::new()
            .name("runlens-writer".into())
            .spawn(move || {
                run(Thread {
                    conn,
                    checkpointer,
                    times,
                    observer,
                    outbox,
                    pruner: retention.map(Pruner::new),
                    rx,
                    health: health_tx,
                    stop: thread_stop,
                    held: thread_held,
                    unmatched: UnmatchedLog::default(),
                })
            })?;
        Ok(Self {
            handle: WriterHandle {
                tx,
                health,
                frame_room: Arc::new(Semaphore::new(QUEUE_CAPACITY)),
                held,
            },
            thread: Some(thread),
            stop,
        })
    }

    /// How long background samples wait for a request somebody waits on before they are
    /// committed alone (default [`SAMPLE_LINGER`]; zero commits each at once).
    pub fn set_sample_linger(&self, linger: Duration) {
        let ns = u64::try_from(linger.as_nanos()).unwrap_or(u64::MAX);
        self.handle.held.linger_ns.store(ns, Ordering::Relaxed);
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
    /// Runs the WAL's checkpoints so that commits do not (`None`: SQLite's own, in commits).
    checkpointer: Option<checkpoint::Checkpointer>,
    /// When each stored sample was taken, for spans that arrive after they ended.
    times: times::SnapshotTimes,
    /// Told what each commit finished.
    observer: Option<Arc<dyn CommitObserver>>,
    /// Whether ended runs join the export outbox (only while an exporter reads it).
    outbox: bool,
    /// Applies the retention policy, if any.
    pruner: Option<Pruner>,
    rx: mpsc::Receiver<Message>,
    health: watch::Sender<Option<String>>,
    stop: Arc<AtomicBool>,
    /// Background samples handed over without a wake-up, and how long they may wait.
    held: Arc<held::Held>,
    /// Rows stored without a sample, for the log.
    unmatched: UnmatchedLog,
}

/// Says in the log that rows were stored without a resource sample: at once the first
/// time, then at most once a minute, with the running count (`/metrics` has the counter).
#[derive(Default)]
struct UnmatchedLog {
    total: u64,
    said: u64,
    last: Option<Instant>,
}

impl UnmatchedLog {
    fn note(&mut self, unmatched: u64) {
        self.total += unmatched;
        let due = self
            .last
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(60));
        if self.total > self.said && due {
            tracing::warn!(
                new = self.total - self.said,
                total = self.total,
                "boundaries stored without a resource sample: none was taken within the \
                 matching window of their own time (recorded while the sidecar was not \
                 running, or the sender's clock is off)"
            );
            self.said = self.total;
            self.last = Some(Instant::now());
        }
    }
}

/// What the writer has taken from its queue and not yet handled.
struct Pending {
    batch: Vec<Request>,
    prunes: Vec<oneshot::Sender<Result<PruneReport, String>>>,
    closing: bool,
    /// When the batch's oldest request was queued: held samples wait from then.
    oldest: Option<Instant>,
    /// When the oldest request somebody waits on was queued: group commit waits from then.
    oldest_waited: Option<Instant>,
    /// Whether a request somebody waits on came alone (not in a frame): only those are
    /// worth a group-commit wait.
    single_waited: bool,
}

impl Pending {
    fn new() -> Pending {
        Pending {
            batch: Vec::with_capacity(MAX_BATCH),
            prunes: Vec::new(),
            closing: false,
            oldest: None,
            oldest_waited: None,
            single_waited: false,
        }
    }

    fn take(&mut self, message: Option<Message>) {
        match message {
            Some(Message::Write(req, queued)) => {
                if !matches!(req.ack, Ack::None) {
                    self.oldest_waited.get_or_insert(queued);
                    self.single_waited = true;
                }
                self.batch.push(req);
                self.oldest.get_or_insert(queued);
            }
            Some(Message::Frame(requests, queued, _room)) => {
                if requests.iter().any(|r| !matches!(r.ack, Ack::None)) {
                    self.oldest_waited.get_or_insert(queued);
                }
                self.batch.extend(requests);
                self.oldest.get_or_insert(queued);
            }
            Some(Message::Wake) => {}
            Some(Message::Prune(reply)) => self.prunes.push(reply),
            Some(Message::Close) | None => self.closing = true,
        }
    }

    /// Takes the background samples held since the last batch, ahead of what the channel
    /// brings (samples first: rows that follow are matched to them without a takeover).
    fn take_held(&mut self, held: &held::Held) {
        for (req, queued) in held.take() {
            self.batch.push(req);
            self.oldest = Some(self.oldest.map_or(queued, |o| o.min(queued)));
        }
    }

    /// Whether anybody waits on the batch's commit (background samples alone: nobody).
    fn someone_waits(&self) -> bool {
        self.batch.iter().any(|r| !matches!(r.ack, Ack::None))
    }

    /// Holds a batch nobody waits on (background samples) for up to `linger` from its
    /// oldest request, so it is committed with the next request somebody does wait on.
    /// Returns as soon as one arrives, or a prune or close.
    fn linger(
        &mut self,
        rx: &mut mpsc::Receiver<Message>,
        held: &held::Held,
        clock: &tokio::runtime::Runtime,
    ) {
        let linger = held.linger();
        let Some(due) = self.oldest.map(|queued| queued + linger) else {
            return;
        };
        while !self.closing && self.prunes.is_empty() && !self.someone_waits() {
            if self.batch.len() >= MAX_BATCH {
                return;
            }
            let wait = due.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return;
            }
            match clock.block_on(async { tokio::time::timeout(wait, rx.recv()).await }) {
                Ok(message) => {
                    self.take(message);
                    self.drain(rx, held);
                }
                Err(_elapsed) => return,
            }
        }
    }

    /// Takes what is held and what is queued, up to [`MAX_BATCH`], without waiting.
    fn drain(&mut self, rx: &mut mpsc::Receiver<Message>, held: &held::Held) {
        self.take_held(held);
        while !self.closing && self.batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(message) => self.take(Some(message)),
                Err(_) => break,
            }
        }
    }
}

fn run(mut t: Thread) {
    let mut p = Pending::new();
    // A timer for waiting on the channel with a deadline (samples lingering); nothing else
    // runs on it. Without one (it cannot fail short of the process being out of threads'
    // resources) samples are committed at once, as they were before lingering.
    let clock = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .inspect_err(|e| tracing::warn!(error = %e, "samples are committed one by one"))
        .ok();
    while !p.closing {
        p.oldest = None;
        p.oldest_waited = None;
        p.single_waited = false;
        let first = t.rx.blocking_recv();
        p.take_held(&t.held);
        p.take(first);
        p.drain(&mut t.rx, &t.held);
        if let Some(clock) = &clock {
            p.linger(&mut t.rx, &t.held, clock);
        }
        if !p.closing
            && p.prunes.is_empty()
            && p.single_waited
            && p.batch.len() < GROUP_COMMIT_BELOW
        {
            // Group commit: a short queue means messages trickle in; waiting until the
            // oldest has waited GROUP_COMMIT_WAIT commits the next ones with it instead of
            // one transaction each. Measured from when it was queued, so one that arrived
            // during the last commit does not wait that long again.
            if let Some(due) = p.oldest_waited.map(|queued| queued + GROUP_COMMIT_WAIT) {
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
            }
            p.drain(&mut t.rx, &t.held);
        }
        if !p.batch.is_empty() {
            let outcome = commit(&mut t, &p.batch);
            acknowledge(p.batch.drain(..), &outcome);
        }
        for reply in p.prunes.drain(..) {
            let outcome = prune_step(&mut t);
            let _ = reply.send(outcome);
        }
    }
    if let Some(checkpointer) = t.checkpointer.take() {
        checkpointer.stop(&mut t.conn);
    }
    tracing::debug!("storage writer stopped");
}

/// One retention step; the writer forgets the times of the samples it deleted.
fn prune_step(t: &mut Thread) -> Result<PruneReport, String> {
    let Some(pruner) = t.pruner.as_mut() else {
        return Ok(PruneReport::default());
    };
    let report = pruner
        .step(&mut t.conn, probe_core::unix_now_ns())
        .map_err(|e| e.to_string())?;
    t.times.forget(&report.deleted_samples);
    Ok(report)
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
        let mut finished = Finished::default();
        match batch::write_batch(&mut t.conn, &mut t.times, batch, &mut finished, t.outbox) {
            Ok(()) => {
                t.unmatched.note(finished.unmatched);
                if let Some(observer) = &t.observer {
                    observer.committed(&finished);
                }
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
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) && make_room(t) {
                    // Room was made: retry now.
                    continue;
                }
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(2));
            }
            Err(e) => {
                // Not the disk: a row the database refuses. Write the others, one
                // savepoint each, so a single bad row cannot block everything.
                tracing::error!(error = %e, "batch refused; writing its requests one by one");
                let mut finished = Finished::default();
                let outcome = batch::write_one_by_one(
                    &mut t.conn,
                    &mut t.times,
                    batch,
                    &mut finished,
                    t.outbox,
                );
                if outcome.is_ok() {
                    t.unmatched.note(finished.unmatched);
                }
                if let (Ok(()), Some(observer)) = (&outcome, &t.observer) {
                    observer.committed(&finished);
                }
                return outcome.map_err(|e| e.to_string());
            }
        }
    }
}

/// At the size cap (or a full disk), prunes what the retention policy allows, oldest
/// first; whether anything went.
fn make_room(t: &mut Thread) -> bool {
    let mut freed = false;
    // A few steps: enough for a batch, short enough to come back to the retry loop.
    for _ in 0..8 {
        match prune_step(t) {
            Ok(report) => {
                let progress = report.for_size || report.samples_expired > 0 || report.runs > 0;
                freed |= progress;
                if !report.more || !progress {
                    break;
                }
            }
            Err(error) => {
                tracing::debug!(%error, "pruning to make room failed");
                break;
            }
        }
    }
    freed
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

/// SQLite integers are signed 64-bit; no byte count or sequence number comes near the
/// limit, and one that did is stored as the largest value rather than wrapped.
fn sql_int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: i64) -> WriteOp {
        WriteOp::Snapshot(Arc::new(StoredSnapshot {
            id,
            reason: "interval",
            snapshot: probe_core::Snapshot {
                taken_at_ns: id,
                host: crate::test_fixtures::host_snapshot(),
                gpu: probe_core::GpuSnapshot::unavailable("none in this test"),
                cgroup: None,
                processes: vec![],
            },
            taken: Instant::now(),
        }))
    }

    fn committed_samples(path: &std::path::Path) -> i64 {
        let conn = crate::open_read_only(path).unwrap();
        conn.query_row("SELECT count(*) FROM snapshots", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn background_samples_wait_for_company_and_are_committed_alone_within_the_linger() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = crate::open_for_writing(&path, false, None).unwrap();
        let writer = Writer::start(conn, None, false, None).unwrap();
        let handle = writer.handle();

        // A sample nobody waits on is held: not committed at once ...
        let queued = Instant::now();
        handle.blocking_send(sample(1), Ack::None).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(committed_samples(&path), 0, "a lone sample is held");
        // ... and is committed with the next request somebody waits on, in its transaction.
        let (tx, rx) = oneshot::channel();
        handle.blocking_send(sample(2), Ack::Reply(tx)).unwrap();
        rx.blocking_recv().unwrap().unwrap();
        assert!(
            queued.elapsed() < SAMPLE_LINGER,
            "committed before the linger ended"
        );
        assert_eq!(committed_samples(&path), 2);

        // Alone, a sample is committed once the linger ends.
        let queued = Instant::now();
        handle.blocking_send(sample(3), Ack::None).unwrap();
        while committed_samples(&path) < 3 {
            assert!(
                queued.elapsed() < SAMPLE_LINGER + Duration::from_secs(5),
                "a lone sample must be committed within the linger"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(queued.elapsed() >= SAMPLE_LINGER - Duration::from_millis(50));

        // Closing commits what is held.
        handle.blocking_send(sample(4), Ack::None).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(writer.close());
        assert_eq!(committed_samples(&path), 4);
    }

    #[test]
    fn held_samples_join_the_next_batch_and_are_released_before_their_linger_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = crate::open_for_writing(&path, false, None).unwrap();
        let writer = Writer::start(conn, None, false, None).unwrap();
        writer.set_sample_linger(Duration::from_millis(300));
        let handle = writer.handle();

        // Held, a sample does not wake the writer; a holder that is back within the linger
        // releases nothing.
        handle.hold_background([sample(1)]).unwrap();
        handle
            .release_held(Instant::now() + Duration::from_millis(100))
            .unwrap();
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(committed_samples(&path), 0, "held until the writer wakes");
        // The next request somebody waits on takes it along, in its transaction.
        let (tx, rx) = oneshot::channel();
        handle.blocking_send(sample(2), Ack::Reply(tx)).unwrap();
        rx.blocking_recv().unwrap().unwrap();
        assert_eq!(committed_samples(&path), 2);

        // A holder about to sleep past the linger wakes the writer: the sample is
        // committed once its linger ends, not when the holder is back.
        let held_at = Instant::now();
        handle.hold_background([sample(3)]).unwrap();
        handle
            .release_held(Instant::now() + Duration::from_secs(60))
            .unwrap();
        while committed_samples(&path) < 3 {
            assert!(
                held_at.elapsed() < Duration::from_secs(10),
                "a released sample must be committed within its linger"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            held_at.elapsed() >= Duration::from_millis(250),
            "it waited for company"
        );

        // Closing commits what is held.
        handle.hold_background([sample(4)]).unwrap();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(writer.close());
        assert_eq!(committed_samples(&path), 4);
        assert!(
            handle.hold_background([sample(5)]).is_err(),
            "a closed writer refuses"
        );
    }

    #[test]
    fn a_frame_is_committed_whole_and_gives_its_room_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = crate::open_for_writing(&path, false, None).unwrap();
        let writer = Writer::start(conn, None, false, None).unwrap();
        let handle = writer.handle();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (replies, writes): (Vec<_>, Vec<_>) = (1..=3)
            .map(|id| {
                let (tx, rx) = oneshot::channel();
                (rx, (sample(id), Ack::Reply(tx)))
            })
            .unzip();
        runtime.block_on(handle.send_frame(writes)).unwrap();
        for reply in replies {
            runtime.block_on(reply).unwrap().unwrap();
        }
        assert_eq!(committed_samples(&path), 3);
        assert_eq!(
            handle.frame_room.available_permits(),
            QUEUE_CAPACITY,
            "the writer gives a frame's room back when it takes it"
        );
        runtime.block_on(writer.close());
    }

    #[test]
    fn only_requests_that_came_alone_are_worth_a_group_commit_wait() {
        let room = Arc::new(Semaphore::new(4));
        let waited = |id| {
            let (tx, _rx) = oneshot::channel();
            Request {
                op: sample(id),
                ack: Ack::Reply(tx),
            }
        };
        let mut p = Pending::new();
        let frame_room = room.clone().try_acquire_many_owned(2).unwrap();
        p.take(Some(Message::Frame(
            vec![waited(1), waited(2)],
            Instant::now(),
            frame_room,
        )));
        assert!(p.someone_waits());
        assert!(!p.single_waited, "a client's frame was gathered already");
        assert_eq!(room.available_permits(), 4, "taken: its room is free");
        p.take(Some(Message::Write(waited(3), Instant::now())));
        assert!(p.single_waited, "a lone request may have company coming");
        assert_eq!(p.batch.len(), 3);
    }
}
