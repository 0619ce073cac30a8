//! OTLP export from a durable outbox (`--otlp-export URL`): every run that ends joins the
//! outbox in the transaction that ends it; this task sends the runs after the persisted
//! cursor as OTLP traces (see `convert`) and moves the cursor only once the receiver has
//! acknowledged them. A receiver that is down for an hour, or a sidecar SIGKILLed in the
//! middle, loses nothing: at most the last batch is sent again, with the same ids.
//!
//! Retryable failures (the receiver unreachable, `UNAVAILABLE`, `RESOURCE_EXHAUSTED` ...)
//! back off exponentially with jitter, up to 30 s; a permanent refusal (`INVALID_ARGUMENT`)
//! skips that batch, logged and counted: never silent, never stuck.

pub mod convert;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tokio::sync::{oneshot, watch};
use tonic::Code;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::store::read::{ExportRun, SharedReader};
use crate::store::{Ack, WriteOp, WriterHandle};

/// Runs per export.
const RUNS_PER_BATCH: u32 = 64;
/// How long an empty outbox waits before it is looked at again.
const IDLE_POLL: Duration = Duration::from_millis(500);
/// The longest back-off between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the exporter shows (`/metrics`): runs waiting, runs skipped after a permanent refusal.
#[derive(Debug, Default)]
pub struct ExportState {
    /// Outbox entries not yet acknowledged.
    pub lag_runs: AtomicI64,
    /// Runs the receiver refused for good (skipped).
    pub skipped_runs: AtomicU64,
}

/// The exporter's settings.
pub struct Exporter {
    /// `http://host:port` of an OTLP/gRPC receiver.
    pub endpoint: String,
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
    /// Exports until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let channel = match Endpoint::from_shared(self.endpoint.clone()) {
            Ok(e) => e.connect_lazy(),
            Err(e) => {
                tracing::error!(endpoint = %self.endpoint, error = %e, "--otlp-export is not a URL; export is off");
                return;
            }
        };
        let headers = headers_from_env();
        let mut client = TraceServiceClient::new(channel);
        let mut backoff = Duration::from_millis(100);
        let mut failing_since_log = 0u32;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let step = self.step(&mut client, &headers).await;
            let wait = match step {
                Ok(true) => {
                    backoff = Duration::from_millis(100);
                    failing_since_log = 0;
                    continue;
                }
                Ok(false) => IDLE_POLL,
                Err(error) => {
                    if failing_since_log == 0 {
                        tracing::warn!(endpoint = %self.endpoint, %error, "OTLP export failed; retrying with back-off (nothing is lost)");
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

    /// Sends the next batch; `Ok(false)` when there was nothing to send.
    async fn step(
        &self,
        client: &mut TraceServiceClient<Channel>,
        headers: &[(
            MetadataKey<tonic::metadata::Ascii>,
            MetadataValue<tonic::metadata::Ascii>,
        )],
    ) -> Result<bool, String> {
        let (entries, runs) = self
            .reader
            .read(|r| {
                let cursor = r.export_cursor()?;
                self.state
                    .lag_runs
                    .store(r.export_lag(cursor)?, Ordering::Relaxed);
                let entries = r.export_outbox(cursor, RUNS_PER_BATCH)?;
                let mut runs: Vec<ExportRun> = Vec::with_capacity(entries.len());
                for (_, run_id) in &entries {
                    runs.extend(r.export_run(run_id)?);
                }
                Ok((entries, runs))
            })
            .map_err(|e| e.to_string())?;
        let Some(&(last, _)) = entries.last() else {
            return Ok(false);
        };
        let mut request = tonic::Request::new(convert::request(&runs, &self.resource));
        for (k, v) in headers {
            request.metadata_mut().insert(k.clone(), v.clone());
        }
        match client.export(request).await {
            Ok(answer) => {
                if let Some(p) = answer.into_inner().partial_success
                    && p.rejected_spans > 0
                {
                    tracing::warn!(rejected = p.rejected_spans, message = %p.error_message,
                        "the OTLP receiver refused some spans");
                }
            }
            Err(status) if permanent(status.code()) => {
                self.state
                    .skipped_runs
                    .fetch_add(entries.len() as u64, Ordering::Relaxed);
                tracing::error!(runs = entries.len(), code = ?status.code(), message = %status.message(),
                    "the OTLP receiver refused a batch for good; it is skipped");
            }
            Err(status) => return Err(format!("{:?}: {}", status.code(), status.message())),
        }
        self.advance(last).await?;
        Ok(true)
    }

    /// Persists the cursor (through the writer, the one connection that writes).
    async fn advance(&self, seq: i64) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.writer
            .send(WriteOp::ExportCursor { seq }, Ack::Reply(tx))
            .await
            .map_err(|e| e.to_string())?;
        rx.await.map_err(|_| "the writer stopped".to_owned())?
    }
}

/// Refusals a retry will not change.
fn permanent(code: Code) -> bool {
    matches!(
        code,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange | Code::Unimplemented
    )
}

/// `OTEL_EXPORTER_OTLP_TRACES_HEADERS` or `OTEL_EXPORTER_OTLP_HEADERS` (`k=v,k=v`) as gRPC
/// metadata (an API key for a hosted backend, say).
fn headers_from_env() -> Vec<(
    MetadataKey<tonic::metadata::Ascii>,
    MetadataValue<tonic::metadata::Ascii>,
)> {
    let raw = std::env::var("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_HEADERS"))
        .unwrap_or_default();
    raw.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let key = MetadataKey::from_bytes(k.trim().to_ascii_lowercase().as_bytes()).ok()?;
            let value =
                MetadataValue::try_from(crate::metrics::collector::percent_decode(v.trim()))
                    .ok()?;
            Some((key, value))
        })
        .collect()
}

/// Between half of `d` and `d`, spread by the clock's nanoseconds (full jitter without a
/// random-number dependency).
fn jitter(d: Duration) -> Duration {
    let nanos = u64::try_from(probe_core::unix_now_ns()).unwrap_or(0);
    let spread = (nanos % 1000) as f64 / 1000.0;
    d.mul_f64(0.5 + spread / 2.0)
}
