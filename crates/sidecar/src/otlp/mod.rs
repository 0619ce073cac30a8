//! The OpenTelemetry front door: OTLP traces over gRPC (`TraceService/Export`, on its own
//! port and on the runlens.v1 port) and over HTTP (`POST /v1/traces`, protobuf or JSON,
//! gzip or not). An agent instrumented with any OpenTelemetry SDK needs only
//! `OTEL_EXPORTER_OTLP_ENDPOINT` pointed here.
//!
//! `convert` turns a request into the ingest core's trace batches; the core checks every
//! span; the writer stores them in one request and attaches the samples nearest each span's
//! own start and end. The answer goes back only once that is committed, so a resend
//! (OpenTelemetry SDKs retry on `UNAVAILABLE` / 503) finds the spans stored and skips them:
//! exactly once. `grpc` and `http` are the two transports; `root_timeout` ends the runs
//! of traces whose root span never arrives.

pub mod convert;
pub mod grpc;
pub mod http;
pub mod root_timeout;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::sync::oneshot;

use crate::ingest::Ingest;
use crate::ingest::trace::TraceBatch;
use crate::metrics::Metrics;
use crate::sampler::SamplerHandle;
use crate::store::{Ack, QueueError, WriteOp, WriterHandle};

/// Largest export body accepted by default, bytes (after gzip is undone): 16 MiB, four times
/// tonic's default, room for batches of thousands of spans.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How long an export waits for its commit before answering `UNAVAILABLE` (the spans stay
/// queued and are stored; the sender's retry then finds them and doubles nothing).
const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// Refusals quoted in a partial success's message; the count covers all of them.
const QUOTED_REJECTIONS: usize = 5;

/// Why an export was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// The body is not an OTLP trace request (`INVALID_ARGUMENT`, HTTP 400).
    #[error("{0}")]
    Malformed(String),
    /// The body is over [`MAX_BODY_BYTES`] (`RESOURCE_EXHAUSTED`, HTTP 413).
    #[error("{0}")]
    TooLarge(String),
    /// Storage is failing or the sidecar is saturated or stopping; nothing was stored, a
    /// retry later is safe (`UNAVAILABLE`, HTTP 503 with `Retry-After`).
    #[error("{0}")]
    Unavailable(String),
}

/// Connections whose peer PID is remembered at most.
const MAX_PEERS_REMEMBERED: usize = 1024;

/// What both transports share: the core, the writer, and the agent processes watched.
#[derive(Clone)]
pub struct OtlpIngest {
    ingest: Ingest,
    sampler: SamplerHandle,
    writer: WriterHandle,
    /// Learns the senders' names (for the metrics' `client` label).
    metrics: Arc<Metrics>,
    /// PIDs already handed to the sampler (`process.pid` of senders).
    watched: Arc<Mutex<HashSet<u32>>>,
    /// The PID found behind each sender's connection (`None`: not visible from here), so
    /// that `/proc` is read once per connection, not per export.
    peers: Arc<Mutex<HashMap<std::net::SocketAddr, Option<u32>>>>,
    /// Largest export accepted, bytes after decompression (`--max-message-mib`).
    max_body: usize,
}

impl OtlpIngest {
    /// Exports go through `ingest` and `writer`; senders' PIDs are watched by `sampler`.
    pub fn new(
        ingest: Ingest,
        sampler: SamplerHandle,
        writer: WriterHandle,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            ingest,
            sampler,
            writer,
            metrics,
            watched: Arc::default(),
            peers: Arc::default(),
            max_body: MAX_BODY_BYTES,
        }
    }

    /// Accepts exports up to `bytes` (after decompression) instead of [`MAX_BODY_BYTES`].
    #[must_use]
    pub fn with_max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Largest export accepted, bytes after decompression.
    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// The byte budget every front door shares.
    pub fn budget(&self) -> &crate::budget::Budget {
        self.ingest.budget()
    }

    /// The refusal of an export the byte budget has no room for (counted).
    pub fn over_budget(&self) -> ExportError {
        self.metrics.rejected("over_budget", 1);
        ExportError::Unavailable(format!(
            "the sidecar holds as much as --max-inflight-mib allows ({} MiB); nothing was \
             stored, retry shortly",
            self.budget().total() >> 20
        ))
    }

    /// Stores the valid spans of `request`, answering once they are committed; spans that
    /// break a rule are counted and quoted in the partial success. Senders that give no
    /// `process.pid` are taken to be the process at the other end of `peer`'s connection,
    /// when that is visible here.
    pub async fn export_from(
        &self,
        request: ExportTraceServiceRequest,
        peer: Option<&crate::peer::Peer>,
    ) -> Result<ExportTraceServiceResponse, ExportError> {
        let (mut batches, mut rejected) = convert::batches(request);
        if let Some(peer) = peer
            && batches.iter().any(|b| b.client.pid == 0)
            && let Some(pid) = self.peer_pid(peer).await
        {
            for b in batches.iter_mut().filter(|b| b.client.pid == 0) {
                b.client.pid = pid;
            }
        }
        if batches.iter().all(|b| b.spans.is_empty()) && rejected.is_empty() {
            return Ok(ExportTraceServiceResponse::default());
        }
        for (pid, name) in batches
            .iter()
            .map(|b| (b.client.pid, &b.client.name))
            .filter(|(p, _)| *p != 0)
        {
            let new = self
                .watched
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(pid);
            if new {
                self.metrics.note_client(pid, name);
                self.sampler.watch_process(pid).await;
            }
        }
        self.sample_if_behind(&batches).await?;
        let senders: Vec<String> = batches.iter().map(|b| b.client.client_id.clone()).collect();
        let accepted = self.ingest.accept_trace(batches);
        rejected.extend(accepted.rejected);
        if !accepted.rows.spans.is_empty() {
            self.store(accepted.rows).await?;
        }
        for op in senders.iter().filter_map(|c| self.ingest.clock_to_store(c)) {
            // What the `clients` row says of the sender's clock; nobody waits for it.
            let _ = self.writer.send(op, Ack::None).await;
        }
        if !rejected.is_empty() {
            self.metrics.rejected("invalid_span", rejected.len() as u64);
            tracing::debug!(rejected = rejected.len(), first = %rejected[0], "OTLP spans refused");
        }
        Ok(ExportTraceServiceResponse {
            partial_success: partial_success(&rejected),
        })
    }

    /// The PID behind `peer`, looked up once per connection.
    async fn peer_pid(&self, peer: &crate::peer::Peer) -> Option<u32> {
        let key = peer.tcp.map(|(_, remote)| remote);
        if let Some(key) = key {
            let known = self
                .peers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
                .copied();
            if let Some(known) = known {
                return known;
            }
        }
        let pid = peer.pid_off_runtime().await;
        if let Some(key) = key {
            let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
            // Connections come and go: forget them all now and then rather than grow.
            if peers.len() >= MAX_PEERS_REMEMBERED {
                peers.clear();
            }
            peers.insert(key, pid);
        }
        pid
    }

    /// Spans that ended within the last sampling interval need a sample from about now;
    /// when the periodic sampler is late (a busy machine), one is taken, so that they are
    /// not left without one. It is queued before the spans, so they can take it.
    async fn sample_if_behind(&self, batches: &[TraceBatch]) -> Result<(), ExportError> {
        let interval = i64::try_from(self.sampler.interval().as_nanos()).unwrap_or(i64::MAX);
        let recent = probe_core::unix_now_ns().saturating_sub(interval);
        let live = batches
            .iter()
            .flat_map(|b| &b.spans)
            .any(|s| s.end_ns >= recent);
        if live {
            self.sampler
                .current()
                .await
                .map_err(|e| ExportError::Unavailable(e.to_string()))?;
        }
        Ok(())
    }

    /// Queues the rows as one request and waits for their commit; refuses before queuing
    /// when storage is failing or the queue is full, so a retry is always safe.
    async fn store(&self, rows: crate::store::TraceRows) -> Result<(), ExportError> {
        if let Some(error) = self.writer.health().borrow().clone() {
            return Err(ExportError::Unavailable(format!(
                "storage is failing ({error}); nothing was stored, retry later"
            )));
        }
        let permit = self.writer.try_reserve().map_err(|e| match e {
            QueueError::Full => ExportError::Unavailable(
                "the sidecar's write queue is full; nothing was stored, retry with backoff".into(),
            ),
            QueueError::Closed => ExportError::Unavailable("the sidecar is shutting down".into()),
        })?;
        let (tx, rx) = oneshot::channel();
        permit.send(WriteOp::Trace(Box::new(rows)), Ack::Reply(tx));
        match tokio::time::timeout(COMMIT_WAIT, rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(ExportError::Unavailable(format!(
                "not stored ({e}); the sidecar stopped before storage recovered, retry later"
            ))),
            Ok(Err(_)) => Err(ExportError::Unavailable(
                "the sidecar is shutting down".into(),
            )),
            Err(_) => Err(ExportError::Unavailable(format!(
                "not committed within {}s (storage is slow); it stays queued, and a retry \
                 stores nothing twice",
                COMMIT_WAIT.as_secs()
            ))),
        }
    }
}

/// `rejected_spans` and a message quoting the first refusals; `None` when all were taken.
fn partial_success(rejected: &[String]) -> Option<ExportTracePartialSuccess> {
    if rejected.is_empty() {
        return None;
    }
    let mut message = rejected
        .iter()
        .take(QUOTED_REJECTIONS)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if rejected.len() > QUOTED_REJECTIONS {
        message.push_str(&format!(
            "; and {} more",
            rejected.len() - QUOTED_REJECTIONS
        ));
    }
    Some(ExportTracePartialSuccess {
        rejected_spans: i64::try_from(rejected.len()).unwrap_or(i64::MAX),
        error_message: message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_success_counts_every_refusal_and_quotes_the_first_few() {
        assert_eq!(partial_success(&[]), None);
        let many: Vec<String> = (0..8).map(|i| format!("span {i}: bad")).collect();
        let p = partial_success(&many).unwrap();
        assert_eq!(p.rejected_spans, 8);
        assert!(p.error_message.starts_with("span 0: bad; span 1: bad"));
        assert!(
            p.error_message.ends_with("; and 3 more"),
            "{}",
            p.error_message
        );
    }
}
