//! OTLP export from a durable outbox (`--otlp-export URL`): every run that ends joins the
//! outbox in the transaction that ends it; this task sends the runs after the persisted
//! cursor as OTLP traces (see `convert`) and moves the cursor only once the receiver has
//! acknowledged them. A receiver that is down for an hour, or a sidecar SIGKILLed in the
//! middle, loses nothing: at most the last batch is sent again, with the same ids.
//!
//! Retryable failures (the receiver unreachable, `UNAVAILABLE`, `RESOURCE_EXHAUSTED` ...)
//! back off exponentially with jitter, up to 30 s; a permanent refusal (`INVALID_ARGUMENT`)
//! skips that batch, logged and counted: never silent, never stuck.
//!
//! Reading a batch (up to 256 runs with their spans) and building its protobuf takes
//! milliseconds of SQLite and encoding: it runs on a blocking thread, never on the async
//! runtime, which on a two-CPU machine is one thread that every session's acknowledgements
//! also need (`runlens bench agent --export-backlog`, BENCHMARKS.md).

pub mod convert;
pub mod metrics;
pub mod transport;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::sync::{oneshot, watch};
use transport::{Failure, Transport};

use crate::store::read::SharedReader;
use crate::store::{Ack, WriteOp, WriterHandle};

/// Runs per export.
const RUNS_PER_BATCH: u32 = 256;
/// How long an empty outbox waits before it is looked at again if no commit says that a
/// run ended (a safety net: the writer wakes the exporter when it fills the outbox).
const IDLE_POLL: Duration = Duration::from_secs(60);
/// The longest back-off between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A batch on its way.
struct InFlight {
    /// Its last outbox entry.
    last: i64,
    /// Runs in it.
    runs: usize,
    /// The receiver's answer, when it comes.
    answer: tokio::task::JoinHandle<Result<ExportTraceServiceResponse, Failure>>,
}

/// What the exporter shows (`/metrics`): runs waiting, runs skipped after a permanent
/// refusal; and how the writer wakes it.
#[derive(Debug, Default)]
pub struct ExportState {
    /// Notified after a commit that ended runs (they are in the outbox now).
    pub wake: tokio::sync::Notify,
    /// Outbox entries not yet acknowledged.
    pub lag_runs: AtomicI64,
    /// When the oldest of them ended, Unix ns (0: none waits).
    pub lag_oldest_end_ns: AtomicI64,
    /// Runs the receiver refused for good (skipped).
    pub skipped_runs: AtomicU64,
    /// Whether the receiver's last answer said the URL or the credentials are wrong: the
    /// runs are held until it answers (`runlens_export_held`).
    pub held: std::sync::atomic::AtomicBool,
}

/// The exporter's settings.
pub struct Exporter {
    /// The receiver.
    pub transport: Transport,
    /// Reads the outbox and the runs (never across an await).
    pub reader: SharedReader,
    /// Moves the cursor.
    pub writer: WriterHandle,
    /// Shown by `/metrics`.
    pub state: Arc<ExportState>,
    /// The sender's resource attributes (pod identity).
    pub resource: Vec<(String, String)>,
}

impl Exporter {
    /// Sends everything in the outbox now, failing at the first error (for benchmarks).
    pub async fn drain(&self) -> Result<(), String> {
        self.send_all().await.map(|_| ())
    }

    /// Exports until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        // Held before a restart (the URL being fixed, most likely): held until the first
        // answer says otherwise, which records `export.resumed`.
        if let Ok(Some((true, _, _))) = self.read(|r| r.export_held()).await {
            self.state.held.store(true, Ordering::Relaxed);
        }
        let mut backoff = Duration::from_millis(100);
        let mut failing_since_log = 0u32;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let wait = match self.send_all().await {
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    failing_since_log = 0;
                    tokio::select! {
                        _ = shutdown.changed() => return,
                        () = self.state.wake.notified() => continue,
                        () = tokio::time::sleep(IDLE_POLL) => continue,
                    }
                }
                Err(error) => {
                    if failing_since_log == 0 {
                        tracing::warn!(%error, "OTLP export failed; retrying with back-off (nothing is lost)");
                    }
                    failing_since_log = (failing_since_log + 1) % 20;
                    let wait = jitter(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Sends batches until the outbox is empty; returns how many. While one batch is on
    /// its way, the next is read (one in flight: the cursor moves in order). On an error
    /// the batches not acknowledged stay in the outbox for the next try.
    async fn send_all(&self) -> Result<usize, String> {
        let mut after = self.read(|r| r.export_cursor()).await?;
        let mut in_flight: Option<InFlight> = None;
        let mut sent = 0;
        loop {
            let next = self.read_batch(after).await?;
            if let Some(previous) = in_flight.take() {
                self.finish(previous).await?;
                sent += 1;
            }
            let Some((last, runs, request)) = next else {
                // The lag read with the batch was from before its acknowledgement.
                let lag = self.read(|r| r.export_lag(r.export_cursor()?)).await?;
                self.state.note_lag(lag);
                return Ok(sent);
            };
            let transport = self.transport.clone();
            in_flight = Some(InFlight {
                last,
                runs,
                answer: tokio::spawn(async move { transport.traces(request).await }),
            });
            after = last;
        }
    }

    /// Runs one read on a blocking thread (see the module's notes).
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&crate::store::read::Reader) -> crate::store::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        read_off_runtime(&self.reader, f).await
    }

    /// The batch after `after`: its last outbox entry, its run count and the request, read
    /// and encoded on a blocking thread.
    async fn read_batch(
        &self,
        after: i64,
    ) -> Result<Option<(i64, usize, ExportTraceServiceRequest)>, String> {
        let (reader, state, resource) = (
            self.reader.clone(),
            self.state.clone(),
            self.resource.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let (entries, runs) = reader
                .read(|r| {
                    state.note_lag(r.export_lag(r.export_cursor()?)?);
                    let entries = r.export_outbox(after, RUNS_PER_BATCH)?;
                    let ids: Vec<String> = entries.iter().map(|(_, id)| id.clone()).collect();
                    Ok((entries, r.export_runs(&ids)?))
                })
                .map_err(|e| e.to_string())?;
            Ok(entries
                .last()
                .map(|&(last, _)| (last, entries.len(), convert::request(&runs, &resource))))
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Waits for a batch's answer and moves the cursor past it (also past a batch refused
    /// for good, which is counted); a retryable failure is returned.
    async fn finish(&self, batch: InFlight) -> Result<(), String> {
        match batch.answer.await.map_err(|e| e.to_string())? {
            Ok(answer) => {
                if self.state.held.swap(false, Ordering::Relaxed) {
                    self.note_held(false, "the receiver answers again").await;
                }
                if let Some(p) = answer.partial_success
                    && p.rejected_spans > 0
                {
                    tracing::warn!(rejected = p.rejected_spans, message = %p.error_message,
                        "the OTLP receiver refused some spans");
                }
            }
            Err(failure) if failure.permanent => {
                self.state
                    .skipped_runs
                    .fetch_add(batch.runs as u64, Ordering::Relaxed);
                tracing::error!(runs = batch.runs, message = %failure.message,
                    "the OTLP receiver refused a batch for good; it is skipped");
            }
            Err(failure) => {
                let was = self.state.held.swap(failure.misdirected, Ordering::Relaxed);
                if failure.misdirected && !was {
                    self.note_held(true, &failure.message).await;
                }
                return Err(failure.message);
            }
        }
        self.advance(batch.last).await
    }

    /// Records that the export is held (a wrong URL or credentials) or goes again, as a
    /// system event `export.held` / `export.resumed`: what `runlens doctor --db` reads.
    async fn note_held(&self, held: bool, message: &str) {
        let event = crate::store::EventRow {
            kind: crate::domain::EventKind::System,
            run_id: None,
            span_id: None,
            name: if held {
                "export.held"
            } else {
                "export.resumed"
            }
            .to_owned(),
            value: None,
            unit: None,
            attributes: Some(serde_json::json!({ "message": message }).to_string()),
            at_ns: probe_core::unix_now_ns(),
            snapshot: crate::store::SampleRef::Unrelated,
        };
        let _ = self.writer.send(WriteOp::Record(event), Ack::None).await;
    }

    /// Persists the cursor (through the writer, the one connection that writes).
    async fn advance(&self, seq: i64) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(
                WriteOp::ExportCursor {
                    exporter: crate::store::read::TRACES_CURSOR,
                    seq,
                },
                Ack::Reply(tx),
            )
            .await
            .map_err(|e| e.to_string())?;
        rx.await.map_err(|_| "the writer stopped".to_owned())?
    }
}

impl ExportState {
    fn note_lag(&self, (runs, oldest_end_ns): (i64, Option<i64>)) {
        self.lag_runs.store(runs, Ordering::Relaxed);
        self.lag_oldest_end_ns
            .store(oldest_end_ns.unwrap_or(0), Ordering::Relaxed);
    }

    /// How long the oldest run waiting has waited (zero when none waits).
    pub fn lag(&self) -> Duration {
        match self.lag_oldest_end_ns.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            ended => Duration::from_nanos(
                u64::try_from(probe_core::unix_now_ns().saturating_sub(ended)).unwrap_or(0),
            ),
        }
    }
}

/// Runs `f` with the reader on a blocking thread, not on the async runtime: the exporters'
/// reads take milliseconds, which every task on a one-thread runtime would wait for.
async fn read_off_runtime<T: Send + 'static>(
    reader: &SharedReader,
    f: impl FnOnce(&crate::store::read::Reader) -> crate::store::Result<T> + Send + 'static,
) -> Result<T, String> {
    let reader = reader.clone();
    tokio::task::spawn_blocking(move || reader.read(f).map_err(|e| e.to_string()))
        .await
        .map_err(|e| e.to_string())?
}

/// Between half of `d` and `d`, spread by the clock's nanoseconds (full jitter without a
/// random-number dependency).
fn jitter(d: Duration) -> Duration {
    let nanos = u64::try_from(probe_core::unix_now_ns()).unwrap_or(0);
    let spread = (nanos % 1000) as f64 / 1000.0;
    d.mul_f64(0.5 + spread / 2.0)
}

/// The writer's observer when export is on: another observer (the metrics' counters), and
/// a wake-up for the exporter after each commit that ended runs.
pub struct WakeOnRuns {
    /// Fed first.
    pub counters: std::sync::Arc<dyn crate::store::CommitObserver>,
    /// Woken when runs ended.
    pub state: std::sync::Arc<ExportState>,
}

impl crate::store::CommitObserver for WakeOnRuns {
    fn committed(&self, finished: &crate::store::Finished) {
        self.counters.committed(finished);
        if !finished.runs.is_empty() {
            self.state.wake.notify_one();
        }
    }
}
