//! The ingest core: the one path every run, span, metric and event takes, whichever front
//! door it came through (runlens.v1 session or unary calls, the sidecar ending the runs of
//! gone clients). It validates a [`Command`], checks it against the open runs and spans,
//! attaches a snapshot, and turns it into a row for the writer.
//!
//! The core speaks runlens's own types ([`Command`] in, [`Accepted`] or [`IngestError`]
//! out); each front door converts its wire form into a `Command` and maps `IngestError`
//! to its own status codes, once.

pub mod command;
pub mod error;
mod registry;
pub mod validate;

use std::sync::{Arc, Mutex};

pub use command::{Command, EndRun, EndSpan, Record, Recorded, StartRun, StartSpan};
pub use error::IngestError;
pub use registry::Registry;

use crate::domain::EventKind;
use crate::sampler::{Reason, SamplerHandle};
use crate::store::{EventRow, RunEnd, RunStart, SpanEnd, SpanStart, StoredSnapshot, WriteOp};
use error::Result;

/// A command that passed every check: the row to write and the snapshot attached to it.
#[derive(Debug)]
pub struct Accepted {
    /// What to write.
    pub op: WriteOp,
    /// The snapshot the row refers to (already queued for storage).
    pub snapshot: Arc<StoredSnapshot>,
}

/// Shared state for accepting commands; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    sampler: SamplerHandle,
    registry: Arc<Mutex<Registry>>,
}

impl Ingest {
    /// Accepts commands against `registry`, attaching snapshots from `sampler`.
    pub fn new(sampler: SamplerHandle, registry: Registry) -> Self {
        Self {
            sampler,
            registry: Arc::new(Mutex::new(registry)),
        }
    }

    /// Runs `f` with the registry locked (never across an await).
    fn with_registry<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        let mut guard = self
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Validates and accepts one command; `client_id` is the session client that sent
    /// it, if any (a run remembers it, so the sidecar can end it if the client is gone).
    pub async fn accept(&self, command: Command, client_id: Option<&str>) -> Result<Accepted> {
        let now = probe_core::unix_now_ns();
        match command {
            Command::StartRun(m) => self.start_run(m, client_id, now).await,
            Command::EndRun(m) => self.end_run(m, now).await,
            Command::StartSpan(m) => self.start_span(m, now).await,
            Command::EndSpan(m) => self.end_span(m, now).await,
            Command::Record(m) => self.record(m, now).await,
        }
    }

    async fn start_run(&self, m: StartRun, client_id: Option<&str>, now: i64) -> Result<Accepted> {
        validate::id("run_id", &m.run_id)?;
        validate::name("name", &m.name)?;
        let attributes = validate::attributes(&m.attributes)?;
        let at_ns = validate::time_ns(m.time_ns, now)?;
        self.with_registry(|r| r.start_run(&m.run_id))?;
        let snapshot = self.sampler.fresh(Reason::RunStart).await?;
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

    async fn end_run(&self, m: EndRun, now: i64) -> Result<Accepted> {
        validate::id("run_id", &m.run_id)?;
        let attributes = validate::attributes(&m.attributes)?;
        let at_ns = validate::time_ns(m.time_ns, now)?;
        self.with_registry(|r| r.end_run(&m.run_id))?;
        let snapshot = self.sampler.fresh(Reason::RunEnd).await?;
        Ok(Accepted {
            op: WriteOp::EndRun(RunEnd {
                run_id: m.run_id,
                status: m.outcome.status(),
                error: m.outcome.error().map(validate::error_text),
                ended_by: m.ended_by,
                attributes,
                at_ns,
                snapshot_id: snapshot.id,
            }),
            snapshot,
        })
    }

    async fn start_span(&self, m: StartSpan, now: i64) -> Result<Accepted> {
        validate::id("run_id", &m.run_id)?;
        validate::id("span_id", &m.span_id)?;
        let parent = validate::optional_id("parent_span_id", m.parent_span_id)?;
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

    async fn end_span(&self, m: EndSpan, now: i64) -> Result<Accepted> {
        validate::id("span_id", &m.span_id)?;
        let attributes = validate::attributes(&m.attributes)?;
        let at_ns = validate::time_ns(m.time_ns, now)?;
        self.with_registry(|r| r.end_span(&m.span_id))?;
        let snapshot = self.span_snapshot(m.fresh_snapshot).await?;
        Ok(Accepted {
            op: WriteOp::EndSpan(SpanEnd {
                span_id: m.span_id,
                status: m.outcome.status(),
                error: m.outcome.error().map(validate::error_text),
                attributes,
                at_ns,
                snapshot_id: snapshot.id,
            }),
            snapshot,
        })
    }

    async fn record(&self, m: Record, now: i64) -> Result<Accepted> {
        validate::id("run_id", &m.run_id)?;
        let span_id = validate::optional_id("span_id", m.span_id)?;
        validate::name("name", &m.name)?;
        let (kind, value, unit) = match &m.recorded {
            Recorded::Metric { value, unit } => {
                validate::metric_value(&m.name, *value)?;
                (EventKind::Metric, Some(*value), validate::unit(unit)?)
            }
            Recorded::Event => (EventKind::Event, None, None),
        };
        let attributes = validate::attributes(&m.attributes)?;
        let at_ns = validate::time_ns(m.time_ns, now)?;
        self.with_registry(|r| r.check_target(&m.run_id, span_id.as_deref()))?;
        let snapshot = self.span_snapshot(false).await?;
        Ok(Accepted {
            op: WriteOp::Record(EventRow {
                kind,
                run_id: Some(m.run_id),
                span_id,
                name: m.name,
                value,
                unit,
                attributes,
                at_ns,
                snapshot_id: snapshot.id,
            }),
            snapshot,
        })
    }

    async fn span_snapshot(&self, fresh: bool) -> Result<Arc<StoredSnapshot>> {
        let snapshot = if fresh {
            self.sampler.fresh(Reason::Fresh).await?
        } else {
            self.sampler.current().await?
        };
        Ok(snapshot)
    }
}
