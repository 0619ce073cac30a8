//! The one path every run, span, metric and event takes, from the unary calls and from
//! the session stream alike: validate the fields, check them against the open runs and
//! spans, attach a snapshot, and turn them into a row for the writer.

use std::sync::{Arc, Mutex};

use runlens_api::pb;
use runlens_api::pb::client_message::Body;
use tonic::Status;

use super::registry::Registry;
use super::validate;
use crate::sampler::{Reason, SampleError, SamplerHandle};
use crate::store::{EventRow, RunEnd, RunStart, SpanEnd, SpanStart, StoredSnapshot, WriteOp};

/// A message that passed every check: the row to write and the snapshot attached to it.
pub struct Accepted {
    /// What to write.
    pub op: WriteOp,
    /// The snapshot the row refers to (already queued for storage).
    pub snapshot: Arc<StoredSnapshot>,
}

/// Shared state for accepting messages.
#[derive(Clone)]
pub struct Ingest {
    sampler: SamplerHandle,
    registry: Arc<Mutex<Registry>>,
}

impl Ingest {
    /// Accepts messages against `registry`, attaching snapshots from `sampler`.
    pub fn new(sampler: SamplerHandle, registry: Registry) -> Self {
        Self {
            sampler,
            registry: Arc::new(Mutex::new(registry)),
        }
    }

    /// Runs `f` with the registry locked (never across an await).
    pub fn with_registry<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        let mut guard = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Validates and accepts one message; `client_id` is the session client, if any.
    pub async fn accept(&self, body: Body, client_id: Option<&str>) -> Result<Accepted, Status> {
        let now = probe_core::unix_now_ns();
        match body {
            Body::Hello(_) => Err(Status::invalid_argument(
                "hello may only be the first message of a session",
            )),
            Body::Batch(_) | Body::Stats(_) => Err(Status::invalid_argument(
                "batches and client stats are only accepted on the session stream",
            )),
            Body::StartRun(m) => self.start_run(m, client_id, now).await,
            Body::EndRun(m) => self.end_run(m, now).await,
            Body::StartSpan(m) => self.start_span(m, now).await,
            Body::EndSpan(m) => self.end_span(m, now).await,
            Body::Metric(m) => self.metric(m, now).await,
            Body::Event(m) => self.event(m, now).await,
        }
    }

    async fn start_run(
        &self,
        m: pb::StartRunRequest,
        client_id: Option<&str>,
        now: i64,
    ) -> Result<Accepted, Status> {
        validate::id("run_id", &m.run_id)?;
        validate::name("name", &m.name)?;
        let attributes = validate::attributes(&m.attributes)?;
        let at_ns = validate::time_ns(m.time_ns, now)?;
        self.with_registry(|r| r.start_run(&m.run_id))?;
        let snapshot = self.snapshot(Reason::RunStart).await?;
        Ok(Accepted {
            op: WriteOp::StartRun(RunStart {
                run_id: m.run_id,
                name: m.name,
                attributes,
                client_id: client_id.map(str::to_owned),
                at_ns,
                snapshot_id: snapshot.id,
            }),
            snapshot,
        })
    }

    async fn end_run(&self, m: pb::EndRunRequest, now: i64) -> Result<Accepted, Status> {
        validate::id("run_id", &m.run_id)?;
        let (status, error) = validate::end_status(m.status, &m.error)?;
        let attributes = validate::attributes(&m.attributes)?;
        let at_ns = validate::time_ns(m.time_ns, now)?;
        self.with_registry(|r| r.end_run(&m.run_id))?;
        let snapshot = self.snapshot(Reason::RunEnd).await?;
        Ok(Accepted {
            op: WriteOp::EndRun(RunEnd {
                run_id: m.run_id,
                status,
                error,
                attributes,
                at_ns,
                snapshot_id: snapshot.id,
            }),
            snapshot,
        })
    }

    async fn start_span(&self, m: pb::StartSpanRequest, now: i64) -> Result<Accepted, Status> {
        validate::id("run_id", &m.run_id)?;
        validate::id("span_id", &m.span_id)?;
        let parent = validate::optional_id("parent_span_id", &m.parent_span_id)?;
        validate::name("name", &m.name)?;
        let attributes = validate::attributes(&m.attributes)?;
        let at_ns = validate::time_ns(m.time_ns, now)?;
        self.with_registry(|r| r.start_span(&m.run_id, &m.span_id, parent.as_deref()))?;
        let snapshot = self.span_snapshot(m.fresh_snapshot).await?;
        Ok(Accepted {
            op: WriteOp::StartSpan(SpanStart {
                span_id: m.span_id,
                run_id: m.run_id,
                parent_span_id: parent,
                name: m.name,
                attributes,
                at_ns,
                snapshot_id: snapshot.id,
            }),
            snapshot,
        })
    }

    async fn end_span(&self, m: pb::EndSpanRequest, now: i64) -> Result<Accepted, Status> {
        validate::id("span_id", &m.span_id)?;
        let (status, error) = validate::end_status(m.status, &m.error)?;
        let attributes = validate::attributes(&m.attributes)?;
        let at_ns = validate::time_ns(m.time_ns, now)?;
        self.with_registry(|r| r.end_span(&m.span_id))?;
        let snapshot = self.span_snapshot(m.fresh_snapshot).await?;
        Ok(Accepted {
            op: WriteOp::EndSpan(SpanEnd {
                span_id: m.span_id,
                status,
                error,
                attributes,
                at_ns,
                snapshot_id: snapshot.id,
            }),
            snapshot,
        })
    }

    async fn metric(&self, m: pb::Metric, now: i64) -> Result<Accepted, Status> {
        validate::id("run_id", &m.run_id)?;
        let span_id = validate::optional_id("span_id", &m.span_id)?;
        validate::name("name", &m.name)?;
        validate::metric_value(&m.name, m.value)?;
        let unit = validate::unit(&m.unit)?;
        let attributes = validate::attributes(&m.attributes)?;
        let at_ns = validate::time_ns(m.time_ns, now)?;
        self.with_registry(|r| r.check_target(&m.run_id, span_id.as_deref()))?;
        let snapshot = self.span_snapshot(false).await?;
        Ok(Accepted {
            op: WriteOp::Record(EventRow {
                kind: "metric",
                run_id: Some(m.run_id),
                span_id,
                name: m.name,
                value: Some(m.value),
                unit,
                attributes,
                at_ns,
                snapshot_id: snapshot.id,
            }),
            snapshot,
        })
    }

    async fn event(&self, m: pb::Event, now: i64) -> Result<Accepted, Status> {
        validate::id("run_id", &m.run_id)?;
        let span_id = validate::optional_id("span_id", &m.span_id)?;
        validate::name("name", &m.name)?;
        let attributes = validate::attributes(&m.attributes)?;
        let at_ns = validate::time_ns(m.time_ns, now)?;
        self.with_registry(|r| r.check_target(&m.run_id, span_id.as_deref()))?;
        let snapshot = self.span_snapshot(false).await?;
        Ok(Accepted {
            op: WriteOp::Record(EventRow {
                kind: "event",
                run_id: Some(m.run_id),
                span_id,
                name: m.name,
                value: None,
                unit: None,
                attributes,
                at_ns,
                snapshot_id: snapshot.id,
            }),
            snapshot,
        })
    }

    async fn span_snapshot(&self, fresh: bool) -> Result<Arc<StoredSnapshot>, Status> {
        if fresh {
            self.snapshot(Reason::Fresh).await
        } else {
            self.sampler.current().await.map_err(sample_status)
        }
    }

    async fn snapshot(&self, reason: Reason) -> Result<Arc<StoredSnapshot>, Status> {
        self.sampler.fresh(reason).await.map_err(sample_status)
    }
}

fn sample_status(e: SampleError) -> Status {
    Status::unavailable(e.to_string())
}
