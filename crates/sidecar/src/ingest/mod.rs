//! The ingest core: the one path every run, span, metric and event takes, whichever front
//! door it came through (runlens.v1 session or unary calls, the sidecar ending the runs of
//! gone clients). It validates a [`Command`], checks it against the open runs and spans,
//! attaches a snapshot, and turns it into a row for the writer.
//!
//! The core speaks runlens's own types ([`Command`] in, [`Accepted`] or [`IngestError`]
//! out); each front door converts its wire form into a `Command` and maps `IngestError`
//! to its own status codes, once.

pub mod clock;
pub mod command;
pub mod error;
mod registry;
mod stored_runs;
pub mod trace;
pub mod validate;

use std::sync::{Arc, Mutex};

pub use clock::{ClockSkew, Matching};
pub use command::{Command, EndRun, EndSpan, Record, Recorded, StartRun, StartSpan};
pub use error::IngestError;
pub use registry::{Mentions, Registry};

use crate::budget::Budget;
use crate::domain::EventKind;
use crate::sampler::{Reason, SamplerHandle};
use crate::store::read::SharedReader;
use crate::store::{
    EventRow, RunEnd, RunStart, SampleRef, SpanEnd, SpanStart, StoredSnapshot, WriteOp,
};
use error::Result;

/// The in-flight byte budget unless `--max-inflight-mib` sets another.
pub const DEFAULT_BUDGET_BYTES: usize = 64 << 20;

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
    /// Each client's clock, estimated from the times its messages carry.
    clock: Arc<Mutex<ClockSkew>>,
    /// What every front door may hold in flight, bytes.
    budget: Budget,
    /// Where ids the registry has not seen are looked up (runs opened before a restart),
    /// read on a blocking thread; `None` in unit tests without a database.
    stored: Option<SharedReader>,
    /// Trips to the database for unseen ids (counted for the tests).
    lookups: Arc<std::sync::atomic::AtomicU64>,
    /// Whether a thread is building the registry's filter of stored run ids.
    building: Arc<std::sync::atomic::AtomicBool>,
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
            clock: Arc::new(Mutex::new(ClockSkew::new(false))),
            budget: Budget::new(DEFAULT_BUDGET_BYTES),
            stored: None,
            lookups: Arc::default(),
            building: Arc::default(),
        }
    }

    /// Looks ids the registry has not seen up in this database (after a restart, an agent
    /// keeps going with the runs it opened before).
    #[must_use]
    pub fn with_stored(mut self, reader: SharedReader) -> Self {
        self.stored = Some(reader);
        self
    }

    /// Builds the registry's filter of stored run ids, if it wants a build, on a thread of
    /// its own: until it is built, every new run id is looked up in the database. The
    /// sidecar calls it at the start; a run that outgrows the filter calls it again.
    pub fn build_stored_runs(&self) {
        use std::sync::atomic::Ordering;
        let Some(reader) = self.stored.clone() else {
            return;
        };
        if !self.with_registry(|r| r.stored_runs_build_wanted())
            || self.building.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let registry = self.registry.clone();
        let building = self.building.clone();
        let with_registry = move |f: &mut dyn FnMut(&mut Registry)| {
            f(&mut registry
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner));
        };
        let spawned = std::thread::Builder::new()
            .name("runlens-runids".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                let count = reader.read(|db| db.run_count()).unwrap_or(0);
                let mut build = None;
                with_registry(&mut |r| build = r.take_stored_runs_build(count));
                if let Some(build) = build {
                    let mut scanned = stored_runs::RunIdFilter::for_ids(build.capacity);
                    let read = reader.read(|db| db.each_run_id(|id| scanned.insert(id)));
                    if let Err(e) = &read {
                        tracing::warn!(error = %e, "cannot read the stored run ids; new runs \
                            are looked up in the database one frame at a time meanwhile");
                    }
                    let scanned = read.is_ok().then_some(&scanned);
                    with_registry(&mut |r| r.finish_stored_runs_build(build, scanned));
                    tracing::debug!(
                        runs = count,
                        capacity = build.capacity,
                        elapsed_ms = started.elapsed().as_millis(),
                        "stored run ids read"
                    );
                }
                building.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.building.store(false, Ordering::Release);
        }
    }

    /// Runs `f` on the registry once it knows every id `mentions` names. Memory answers
    /// first; only a run start (whose id must be new everywhere) or a message the registry
    /// answers with NOT_FOUND makes it ask the database about ids it has not seen, then try
    /// again: the common case is one lock and no extra lookups. (No registry operation
    /// changes anything before it answers NOT_FOUND, so trying again is safe.)
    async fn with_known<T>(
        &self,
        mentions: Mentions<'_>,
        f: impl Fn(&mut Registry) -> Result<T>,
    ) -> Result<T> {
        if self.stored.is_none() {
            return self.with_registry(f);
        }
        let first = self.with_registry(|r| {
            if mentions.starts_run() {
                let unseen = r.unseen(mentions);
                if !unseen.is_empty() {
                    return Err(unseen);
                }
            }
            match f(r) {
                Err(IngestError::NotFound(why)) => {
                    let unseen = r.unseen(mentions);
                    if unseen.is_empty() {
                        Ok(Err(IngestError::NotFound(why)))
                    } else {
                        Err(unseen)
                    }
                }
                answer => Ok(answer),
            }
        });
        match first {
            Ok(answer) => answer,
            Err(unseen) => {
                self.read_unseen(unseen).await?;
                self.with_registry(f)
            }
        }
    }

    /// Teaches the registry what the database knows of the runs these messages start (a
    /// run id must be new everywhere) that it has not seen, in one read: a session calls it
    /// for a frame, so that a frame with new runs costs one trip to a blocking thread, not
    /// one a run. The read (a few primary-key lookups) runs on a blocking thread: on a one-thread
    /// runtime it would otherwise hold every session's acknowledgement. Ids the database
    /// does not have are remembered as such and not asked about again.
    pub async fn recall_many<'a>(
        &self,
        frame: impl IntoIterator<Item = Mentions<'a>>,
    ) -> Result<()> {
        if self.stored.is_none() {
            return Ok(());
        }
        let unseen = self.with_registry(|r| {
            let mut unseen = registry::Unseen::default();
            for mentions in frame.into_iter().filter(Mentions::starts_run) {
                r.add_unseen(&mut unseen, mentions);
            }
            unseen
        });
        self.read_unseen(unseen).await
    }

    async fn read_unseen(&self, unseen: registry::Unseen) -> Result<()> {
        let Some(reader) = &self.stored else {
            return Ok(());
        };
        if unseen.is_empty() {
            return Ok(());
        }
        self.lookups
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let reader = reader.clone();
        let stored = tokio::task::spawn_blocking(move || {
            reader.read(|db| registry::Stored::read(db, &unseen))
        })
        .await
        .map_err(|e| IngestError::Unavailable(format!("the registry's lookup stopped: {e}")))?
        .map_err(|e| IngestError::storage(&e))?;
        self.with_registry(|r| r.learn(stored));
        Ok(())
    }

    /// Reads of the database for ids the registry had not seen, so far.
    #[cfg(test)]
    pub fn lookups(&self) -> u64 {
        self.lookups.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Holds the front doors to `budget` (`--max-inflight-mib`).
    #[must_use]
    pub fn with_budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }

    /// The byte budget the front doors share.
    pub fn budget(&self) -> &Budget {
        &self.budget
    }

    /// Matches the boundaries of clients whose clock is confidently off by more than the
    /// matching window at their corrected times (`--clock-skew-correction`), instead of
    /// leaving them without a sample.
    #[must_use]
    pub fn with_clock_correction(self, correct: bool) -> Self {
        *self
            .clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = ClockSkew::new(correct);
        self
    }

    /// Runs `f` with the clock estimates locked (never across an await).
    pub fn with_clock<T>(&self, f: impl FnOnce(&mut ClockSkew) -> T) -> T {
        let mut guard = self
            .clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// Notes a message from a client that arrived at `arrival_ns` carrying a boundary at
    /// `event_ns` (its own clock), and says how that client's boundaries are matched.
    pub fn observe_clock(
        &self,
        client_id: &str,
        name: &str,
        arrival_ns: i64,
        event_ns: Option<i64>,
    ) -> Matching {
        let window_ns = self.window_ns();
        self.with_clock(|c| c.observe(client_id, name, arrival_ns, event_ns, window_ns))
    }

    /// What the `clients` row of `client_id` should now say about its clock, when that
    /// changed (a write to queue, without an acknowledgement).
    pub fn clock_to_store(&self, client_id: &str) -> Option<WriteOp> {
        let window_ns = self.window_ns();
        let stored = self.with_clock(|c| c.take_change(client_id, window_ns))?;
        Some(WriteOp::ClientClock {
            client_id: stored.client_id,
            offset_ns: stored.offset_ns,
            skewed: stored.skewed,
        })
    }

    fn window_ns(&self) -> i64 {
        i64::try_from(self.sampler.match_window().as_nanos()).unwrap_or(i64::MAX)
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

    /// Validates and accepts one command; `client_id` is the session client the run
    /// belongs to, if any (a run remembers it, so the sidecar can end it if the client is
    /// gone). Its time says nothing of the client's clock (the sidecar's own commands).
    pub async fn accept(&self, command: Command, client_id: Option<&str>) -> Result<Accepted> {
        let now = probe_core::unix_now_ns();
        self.accept_at(command, client_id, Matching::OwnTime, now)
            .await
    }

    /// Validates and accepts one command that session client `client_id` (named
    /// `client_name`) sent; the time it carries also teaches its clock's offset.
    pub async fn accept_sent(
        &self,
        command: Command,
        client_id: &str,
        client_name: &str,
    ) -> Result<Accepted> {
        let now = probe_core::unix_now_ns();
        let given = Some(command.time_ns()).filter(|&t| t > 0);
        let matching = self.observe_clock(client_id, client_name, now, given);
        self.accept_at(command, Some(client_id), matching, now)
            .await
    }

    async fn accept_at(
        &self,
        command: Command,
        client_id: Option<&str>,
        clock: Matching,
        now: i64,
    ) -> Result<Accepted> {
        self.sampler.note_activity();
        let at = Arrival { now, clock };
        match command {
            Command::StartRun(m) => self.start_run(m, client_id, at).await,
            Command::EndRun(m) => self.end_run(m, at).await,
            Command::StartSpan(m) => self.start_span(m, at).await,
            Command::EndSpan(m) => self.end_span(m, at).await,
            Command::Record(m) => self.record(m, at).await,
        }
    }

    async fn start_run(
        &self,
        m: StartRun,
        client_id: Option<&str>,
        at: Arrival,
    ) -> Result<Accepted> {
        let now = at.now;
        validate::id("run_id", &m.run_id)?;
        validate::name("name", &m.name)?;
        let attributes = validate::attributes(&m.attributes)?;
        let at_ns = validate::time_ns(m.time_ns, now)?;
        let (open, build_wanted) = self
            .with_known(Mentions::run(&m.run_id).starting(), |r| {
                r.start_run(&m.run_id)
                    .map(|()| (r.open_runs(), r.stored_runs_build_wanted()))
            })
            .await?;
        if build_wanted {
            self.build_stored_runs();
        }
        self.sampler.set_open_runs(open);
        let (snapshot, sample) = self.sample(false, at_ns, at).await?;
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

    async fn end_run(&self, m: EndRun, at: Arrival) -> Result<Accepted> {
        let now = at.now;
        validate::id("run_id", &m.run_id)?;
        let attributes = validate::attributes(&m.attributes)?;
        let at_ns = validate::time_ns(m.time_ns, now)?;
        let open = self
            .with_known(Mentions::run(&m.run_id), |r| {
                r.end_run(&m.run_id).map(|()| r.open_runs())
            })
            .await?;
        self.sampler.set_open_runs(open);
        let (snapshot, sample) = self.sample(false, at_ns, at).await?;
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

    async fn start_span(&self, m: StartSpan, at: Arrival) -> Result<Accepted> {
        let now = at.now;
        validate::id("run_id", &m.run_id)?;
        validate::id("span_id", &m.span_id)?;
        let parent = validate::optional_id("parent_span_id", m.parent_span_id)?;
        validate::name("name", &m.name)?;
        let attributes = validate::attributes(&m.attributes)?;
        let at_ns = validate::time_ns(m.time_ns, now)?;
        let mentions = Mentions::run(&m.run_id).span(parent.as_deref());
        self.with_known(mentions, |r| {
            r.start_span(&m.run_id, &m.span_id, parent.as_deref())
        })
        .await?;
        let (snapshot, sample) = self.sample(m.fresh_snapshot, at_ns, at).await?;
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

    async fn end_span(&self, m: EndSpan, at: Arrival) -> Result<Accepted> {
        let now = at.now;
        validate::id("span_id", &m.span_id)?;
        let attributes = validate::attributes(&m.attributes)?;
        let at_ns = validate::time_ns(m.time_ns, now)?;
        let mentions = Mentions::default().span(Some(&m.span_id));
        self.with_known(mentions, |r| r.end_span(&m.span_id))
            .await?;
        let (snapshot, sample) = self.sample(m.fresh_snapshot, at_ns, at).await?;
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

    async fn record(&self, m: Record, at: Arrival) -> Result<Accepted> {
        let now = at.now;
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
        let mentions = Mentions::run(&m.run_id).span(span_id.as_deref());
        self.with_known(mentions, |r| r.check_target(&m.run_id, span_id.as_deref()))
            .await?;
        let (snapshot, sample) = self.sample(false, at_ns, at).await?;
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
    /// A client whose clock is known to be off is judged at its corrected time (or, left
    /// uncorrected, gets no sample at all).
    async fn sample(
        &self,
        fresh: bool,
        at_ns: i64,
        at: Arrival,
    ) -> Result<(Option<Arc<StoredSnapshot>>, SampleRef)> {
        let own_ns = match at.clock {
            Matching::OwnTime => at_ns,
            Matching::Corrected { offset_ns } => at_ns.saturating_sub(offset_ns),
            Matching::Skewed => return Ok((self.sampler.latest(), SampleRef::Skewed)),
        };
        let sample = self.sample_ref(at.clock);
        let max_age = i64::try_from(self.sampler.active_interval().as_nanos() / 2).unwrap_or(0);
        if fresh && at.now.saturating_sub(own_ns).abs() <= max_age {
            let taken = self.sampler.fresh(Reason::Fresh).await?;
            let id = taken.id;
            return Ok((Some(taken), SampleRef::Taken(id)));
        }
        Ok((self.sampler.latest(), sample))
    }

    /// Which sample a boundary gets when its sender's clock is matched as `clock` says.
    pub fn sample_ref(&self, clock: Matching) -> SampleRef {
        let window_ns = self.window_ns();
        match clock {
            Matching::OwnTime => SampleRef::Nearest { window_ns },
            Matching::Corrected { offset_ns } => SampleRef::Corrected {
                window_ns,
                offset_ns,
            },
            Matching::Skewed => SampleRef::Skewed,
        }
    }

    /// The sample nearest a row's own time, within the sampler's matching window.
    pub fn nearest_sample(&self) -> SampleRef {
        SampleRef::Nearest {
            window_ns: self.window_ns(),
        }
    }
}

/// When a command arrived, and how its sender's boundaries are matched.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    now: i64,
    clock: Matching,
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
        (Ingest::new(sampler, Registry::new()), writer)
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

    /// Accepts `command` and commits its row, as a session would.
    async fn commit(ingest: &Ingest, writer: &Writer, command: Command) {
        let accepted = ingest.accept(command, None).await.unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        writer
            .handle()
            .send(accepted.op, crate::store::Ack::Reply(tx))
            .await
            .unwrap();
        rx.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn after_a_restart_the_registry_learns_stored_runs_and_spans_from_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let (before, writer) = core(&dir);
        commit(&before, &writer, start_run("r", "task")).await;
        commit(&before, &writer, start_span("r", "a", None)).await;
        commit(&before, &writer, start_run("done", "task")).await;
        commit(&before, &writer, end_run("done", Outcome::Ok)).await;
        // A new process: an empty registry, the same database.
        let reader = crate::store::read::Reader::open(&dir.path().join("t.db")).unwrap();
        let after = Ingest::new(before.sampler.clone(), Registry::new())
            .with_stored(SharedReader::new(reader));
        let accept = |c| after.accept(c, None);
        assert!(
            matches!(
                accept(start_run("r", "task")).await,
                Err(IngestError::AlreadyExists(_))
            ),
            "a run stored before the restart keeps its id"
        );
        assert!(matches!(
            accept(end_run("done", Outcome::Ok)).await,
            Err(IngestError::FailedPrecondition(_))
        ));
        assert!(matches!(
            accept(start_span("nope", "x", None)).await,
            Err(IngestError::NotFound(_))
        ));
        // The open run came back with its open span: a child of it starts, then both end.
        accept(start_span("r", "b", Some("a"))).await.unwrap();
        let end_span = |id: &str| {
            Command::EndSpan(EndSpan {
                span_id: id.into(),
                outcome: Outcome::Ok,
                attributes: Default::default(),
                time_ns: 0,
                fresh_snapshot: false,
            })
        };
        accept(end_span("b")).await.unwrap();
        accept(end_span("a")).await.unwrap();
        assert_eq!(after.open_runs(), 1);
        accept(end_run("r", Outcome::Ok)).await.unwrap();
        assert_eq!(after.open_runs(), 0);
        writer.close().await;
    }

    /// Waits for the build of the filter of stored run ids to end.
    async fn stored_runs_built(ingest: &Ingest) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while ingest.with_registry(|r| r.stored_runs_build_wanted())
            || ingest.building.load(std::sync::atomic::Ordering::Acquire)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the build never ended"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn once_the_stored_run_ids_are_read_new_runs_cost_no_database_read() {
        let dir = tempfile::tempdir().unwrap();
        let (before, writer) = core(&dir);
        commit(&before, &writer, start_run("old", "task")).await;
        commit(&before, &writer, end_run("old", Outcome::Ok)).await;
        let reader = crate::store::read::Reader::open(&dir.path().join("t.db")).unwrap();
        let after = Ingest::new(before.sampler.clone(), Registry::new())
            .with_stored(SharedReader::new(reader));
        after.build_stored_runs();
        stored_runs_built(&after).await;
        let frame: Vec<String> = (0..50).map(|i| format!("new-{i}")).collect();
        after
            .recall_many(frame.iter().map(|id| Mentions::run(id).starting()))
            .await
            .unwrap();
        for id in &frame {
            after.accept(start_run(id, "task"), None).await.unwrap();
        }
        assert_eq!(after.lookups(), 0, "50 new runs, no read");
        // A stored run is still refused: the filter sends its id to the database.
        assert!(matches!(
            after.accept(start_run("old", "task"), None).await,
            Err(IngestError::AlreadyExists(_))
        ));
        assert_eq!(after.lookups(), 1);
        // And a run accepted here is refused from memory.
        assert!(matches!(
            after.accept(start_run("new-7", "task"), None).await,
            Err(IngestError::AlreadyExists(_))
        ));
        writer.close().await;
    }

    #[tokio::test]
    async fn a_frame_of_new_runs_costs_one_database_read_and_absent_ids_are_not_asked_again() {
        let dir = tempfile::tempdir().unwrap();
        let (core, writer) = core(&dir);
        let reader = crate::store::read::Reader::open(&dir.path().join("t.db")).unwrap();
        let ingest = core.with_stored(SharedReader::new(reader));
        let frame = [
            Mentions::run("r1").starting(),
            Mentions::run("r1").span(Some("p")),
            Mentions::run("r2").starting(),
            Mentions::run("r2").starting(),
        ];
        let unseen = ingest.with_registry(|r| {
            let mut unseen = registry::Unseen::default();
            for mentions in frame {
                r.add_unseen(&mut unseen, mentions);
            }
            unseen
        });
        assert!(unseen.asks_about_run("r1") && unseen.asks_about_run("r2"));
        ingest.recall_many(frame).await.unwrap();
        assert_eq!(ingest.lookups(), 1);
        // Both new runs were asked about: starting them reads nothing more.
        ingest.accept(start_run("r1", "task"), None).await.unwrap();
        ingest.accept(start_run("r2", "task"), None).await.unwrap();
        assert_eq!(ingest.lookups(), 1);
        // Spans of known runs are checked in memory alone.
        ingest
            .accept(start_span("r1", "a", None), None)
            .await
            .unwrap();
        ingest
            .accept(start_span("r1", "b", Some("a")), None)
            .await
            .unwrap();
        assert_eq!(ingest.lookups(), 1);
        // A parent memory does not know is asked about once; its absence is remembered.
        for _ in 0..2 {
            assert!(matches!(
                ingest.accept(start_span("r1", "x", Some("p")), None).await,
                Err(IngestError::NotFound(_))
            ));
        }
        assert_eq!(ingest.lookups(), 2);
        // The first accepted run started the build of the stored run ids: once it is done,
        // a new run outside a frame is not read either.
        stored_runs_built(&ingest).await;
        ingest.accept(start_run("r3", "task"), None).await.unwrap();
        assert_eq!(ingest.lookups(), 2);
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
