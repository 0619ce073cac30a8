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
pub mod trace;
pub mod validate;

use std::sync::{Arc, Mutex};

pub use command::{Command, EndRun, EndSpan, Record, Recorded, StartRun, StartSpan};
pub use error::IngestError;
pub use registry::Registry;

use crate::domain::EventKind;
use crate::sampler::{Reason, SamplerHandle};
use crate::store::{
    EventRow, RunEnd, RunStart, SampleRef, SpanEnd, SpanStart, StoredSnapshot, WriteOp,
};
use error::Result;

/// A command that passed every check: the row to write, and a sample to answer with.
#[derive(Debug)]
pub struct Accepted {
    /// What to write.
    pub op: WriteOp,
    /// The fresh sample the client asked for (the row refers to it), or else the latest
    /// stored sample when the command was accepted (`None` before the first): what a unary
    /// answer shows. The stored row refers to the sample nearest its own time.
    pub snapshot: Option<Arc<StoredSnapshot>>,
}

/// Shared state for accepting commands; cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    sampler: SamplerHandle,
    registry: Arc<Mutex<Registry>>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("open_runs", &self.open_runs())
            .finish_non_exhaustive()
    }
}

impl Ingest {
    /// Accepts commands against `registry`, attaching snapshots from `sampler`.
    pub fn new(sampler: SamplerHandle, registry: Registry) -> Self {
        Self {
            sampler,
            registry: Arc::new(Mutex::new(registry)),
        }
    }

    /// Runs opened through runlens.v1 and not ended yet.
    pub fn open_runs(&self) -> usize {
        self.with_registry(|r| r.open_runs())
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
        self.sampler.note_activity();
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
        let open = self.with_registry(|r| r.start_run(&m.run_id).map(|()| r.open_runs()))?;
        self.sampler.set_open_runs(open);
        let (snapshot, sample) = self.sample(false, at_ns, now).await?;
        Ok(Accepted {
            op: WriteOp::StartRun(RunStart {
                run_id: m.run_id,
                name: m.name,
                attributes,
                client_id: client_id.map(str::to_owned),
                at_ns,
                snapshot: sample,
            }),
            snapshot,
        })
    }

    async fn end_run(&self, m: EndRun, now: i64) -> Result<Accepted> {
        validate::id("run_id", &m.run_id)?;
        let attributes = validate::attributes(&m.attributes)?;
        let at_ns = validate::time_ns(m.time_ns, now)?;
        let open = self.with_registry(|r| r.end_run(&m.run_id).map(|()| r.open_runs()))?;
        self.sampler.set_open_runs(open);
        let (snapshot, sample) = self.sample(false, at_ns, now).await?;
        Ok(Accepted {
            op: WriteOp::EndRun(RunEnd {
                run_id: m.run_id,
                status: m.outcome.status(),
                error: m.outcome.error().map(validate::error_text),
                ended_by: m.ended_by,
                attributes,
                at_ns,
                snapshot: sample,
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
        let (snapshot, sample) = self.sample(m.fresh_snapshot, at_ns, now).await?;
        Ok(Accepted {
            op: WriteOp::StartSpan(SpanStart {
                span_id: m.span_id,
                run_id: m.run_id,
                parent_span_id: parent,
                name: m.name,
                attributes,
                at_ns,
                snapshot: sample,
            }),
            snapshot,
        })
    }

    async fn end_span(&self, m: EndSpan, now: i64) -> Result<Accepted> {
        validate::id("span_id", &m.span_id)?;
        let attributes = validate::attributes(&m.attributes)?;
        let at_ns = validate::time_ns(m.time_ns, now)?;
        self.with_registry(|r| r.end_span(&m.span_id))?;
        let (snapshot, sample) = self.sample(m.fresh_snapshot, at_ns, now).await?;
        Ok(Accepted {
            op: WriteOp::EndSpan(SpanEnd {
                span_id: m.span_id,
                status: m.outcome.status(),
                error: m.outcome.error().map(validate::error_text),
                attributes,
                at_ns,
                snapshot: sample,
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
        let (snapshot, sample) = self.sample(false, at_ns, now).await?;
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
                snapshot: sample,
            }),
            snapshot,
        })
    }

    /// What a row refers to: a fresh sample taken now when the client asked for one and the
    /// row's time is now (at most half the active interval ago: the nearest periodic sample
    /// could be that far); else the sample nearest the row's own time, which the writer
    /// finds. A fresh request that arrives late (buffered while the sidecar was down) would
    /// otherwise show a later machine than the row's. With the sample to answer.
    async fn sample(
        &self,
        fresh: bool,
        at_ns: i64,
        now: i64,
    ) -> Result<(Option<Arc<StoredSnapshot>>, SampleRef)> {
        let max_age = i64::try_from(self.sampler.active_interval().as_nanos() / 2).unwrap_or(0);
        if fresh && now.saturating_sub(at_ns).abs() <= max_age {
            let taken = self.sampler.fresh(Reason::Fresh).await?;
            let id = taken.id;
            return Ok((Some(taken), SampleRef::Taken(id)));
        }
        Ok((self.sampler.latest(), self.nearest_sample()))
    }

    /// The sample nearest a row's own time, within the sampler's matching window.
    pub fn nearest_sample(&self) -> SampleRef {
        let window_ns = i64::try_from(self.sampler.match_window().as_nanos()).unwrap_or(i64::MAX);
        SampleRef::Nearest { window_ns }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use probe_core::{HostProbe, NoGpu, Sampler};

    use super::*;
    use crate::domain::{EndedBy, Outcome, Status};
    use crate::store::Writer;

    /// A core over a real sampler (no GPU) and a writer on a fresh database.
    fn core(dir: &tempfile::TempDir) -> (Ingest, Writer) {
        let conn = crate::store::open_for_writing(&dir.path().join("t.db"), false, None).unwrap();
        let writer = Writer::start(conn, None, false, None).unwrap();
        let sampler = Sampler::new(HostProbe::new().unwrap(), Box::new(NoGpu::new("test")));
        let sampler = SamplerHandle::new(sampler, writer.handle(), 1, Duration::from_secs(60));
        (Ingest::new(sampler, Registry::new(None)), writer)
    }

    fn start_run(run_id: &str, name: &str) -> Command {
        Command::StartRun(StartRun {
            run_id: run_id.into(),
            name: name.into(),
            ..Default::default()
        })
    }

    fn start_span(run_id: &str, span_id: &str, parent: Option<&str>) -> Command {
        Command::StartSpan(StartSpan {
            run_id: run_id.into(),
            span_id: span_id.into(),
            parent_span_id: parent.map(str::to_owned),
            name: "step".into(),
            ..Default::default()
        })
    }

    fn end_run(run_id: &str, outcome: Outcome) -> Command {
        Command::EndRun(EndRun {
            run_id: run_id.into(),
            outcome,
            attributes: Default::default(),
            time_ns: 0,
            ended_by: EndedBy::Client,
        })
    }

    #[tokio::test]
    async fn a_refused_command_changes_nothing_and_an_accepted_one_carries_its_row_and_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let (ingest, writer) = core(&dir);
        // Invalid: refused before the registry sees it, so the id stays free.
        let refused = ingest.accept(start_run("r1", "  "), None).await;
        assert!(
            matches!(refused, Err(IngestError::Invalid(_))),
            "{refused:?}"
        );
        let accepted = ingest
            .accept(start_run("r1", "task"), Some("c1"))
            .await
            .unwrap();
        let WriteOp::StartRun(row) = &accepted.op else {
            panic!("not a run start: {:?}", accepted.op);
        };
        assert_eq!(row.client_id.as_deref(), Some("c1"));
        assert!(
            matches!(row.snapshot, SampleRef::Nearest { window_ns } if window_ns == 120_000_000_000),
            "matched by its own time within twice the sampling interval, not sampled: {:?}",
            row.snapshot
        );
        assert!(row.at_ns > 0, "time 0 means now");
        writer.close().await;
    }

    #[tokio::test]
    async fn runs_and_spans_follow_their_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let (ingest, writer) = core(&dir);
        let accept = |c| ingest.accept(c, None);
        assert!(matches!(
            accept(start_span("nope", "s", None)).await,
            Err(IngestError::NotFound(_))
        ));
        accept(start_run("r", "task")).await.unwrap();
        assert!(matches!(
            accept(start_run("r", "task")).await,
            Err(IngestError::AlreadyExists(_))
        ));
        accept(start_span("r", "a", None)).await.unwrap();
        assert!(matches!(
            accept(start_span("r", "b", Some("ghost"))).await,
            Err(IngestError::NotFound(_))
        ));
        accept(start_span("r", "b", Some("a"))).await.unwrap();
        let metric = Command::Record(Record {
            recorded: Recorded::Metric {
                value: f64::NAN,
                unit: String::new(),
            },
            run_id: "r".into(),
            span_id: Some("b".into()),
            name: "tokens".into(),
            attributes: Default::default(),
            time_ns: 0,
        });
        assert!(matches!(accept(metric).await, Err(IngestError::Invalid(_))));
        let ended = accept(end_run("r", Outcome::Failed("x".repeat(10_000))))
            .await
            .unwrap();
        let WriteOp::EndRun(row) = &ended.op else {
            panic!("not a run end");
        };
        assert_eq!(row.status, Status::Failed);
        assert_eq!(row.ended_by, EndedBy::Client);
        assert_eq!(
            row.error.as_ref().map(|e| e.chars().count()),
            Some(validate::MAX_ERROR_LEN + 1),
            "long error text is cut, not refused"
        );
        assert!(matches!(
            accept(end_run("r", Outcome::Ok)).await,
            Err(IngestError::FailedPrecondition(_))
        ));
        // Its spans were closed with it.
        assert!(matches!(
            accept(start_span("r", "c", Some("a"))).await,
            Err(IngestError::FailedPrecondition(_))
        ));
        writer.close().await;
    }
}
