//! Which runs and spans are open, so that every message can be checked against them
//! before it is accepted (unknown → NOT_FOUND, ended twice → FAILED_PRECONDITION).
//!
//! Open runs and spans live in memory. Ended ones are remembered in a bounded, two-
//! generation set (recent ones answer precisely; old ones fall back to the database).
//! After a sidecar restart, an id missing from memory is looked up in the database, so
//! an agent can keep going with runs it opened before the restart. The registry itself never
//! reads the database: [`Registry::unseen`] says which ids a message names that it does not
//! know, the caller reads them ([`Stored::read`], on a blocking thread, off the async
//! runtime) and hands the answer to [`Registry::learn`] before the message is checked.

use std::collections::{HashMap, HashSet};
use std::mem;

use super::error::{IngestError, Result};
use super::stored_runs::{Build, RunIdFilter, StoredRuns};
use crate::domain::Status;
use crate::store::Result as StoreResult;
use crate::store::read::Reader;

/// Ended ids remembered per generation before the older generation is forgotten (older
/// ones are looked up in the database, only on error paths).
const ENDED_GENERATION: usize = 16 * 1024;

#[derive(Default)]
struct OpenRun {
    open_spans: HashSet<String>,
}

struct OpenSpan {
    run_id: String,
}

/// Ended ids (run ids, or span id → run id), bounded.
struct Recent<V> {
    current: HashMap<String, V>,
    previous: HashMap<String, V>,
}

impl<V> Default for Recent<V> {
    fn default() -> Self {
        Self {
            current: HashMap::new(),
            previous: HashMap::new(),
        }
    }
}

impl<V> Recent<V> {
    fn insert(&mut self, key: String, value: V) {
        if self.current.len() >= ENDED_GENERATION {
            self.previous = mem::take(&mut self.current);
        }
        self.current.insert(key, value);
    }

    fn get(&self, key: &str) -> Option<&V> {
        self.current.get(key).or_else(|| self.previous.get(key))
    }
}

/// What a registry lookup found for an id.
enum Found<'a, T> {
    Open(&'a mut T),
    Ended,
    Unknown,
}

/// Open runs and spans, checked and updated as messages are accepted.
pub struct Registry {
    runs: HashMap<String, OpenRun>,
    spans: HashMap<String, OpenSpan>,
    ended_runs: Recent<()>,
    ended_spans: Recent<String>,
    /// Ids the database was asked about and does not have: asked once, not per message
    /// (nothing but this process writes runs, and what it accepts is in memory first).
    absent: HashSet<String>,
    /// Which run ids the database may hold: a new run id outside it is not asked about.
    stored_runs: StoredRuns,
}

/// Absent ids remembered before the set starts over (ids that never start: typos, probes).
const ABSENT_REMEMBERED: usize = 64 * 1024;

/// The ids one message names: its run (and whether it starts it) and the spans it ends,
/// targets or starts under.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Mentions<'a> {
    run: Option<&'a str>,
    spans: [Option<&'a str>; 2],
    starts_run: bool,
}

impl<'a> Mentions<'a> {
    /// A message about run `run_id`.
    pub fn run(run_id: &'a str) -> Self {
        Self {
            run: Some(run_id).filter(|id| !id.is_empty()),
            ..Self::default()
        }
    }

    /// It names this span too (the one it ends or targets, or a parent), if any.
    #[must_use]
    pub fn span(mut self, span_id: Option<&'a str>) -> Self {
        let span_id = span_id.filter(|id| !id.is_empty());
        if self.spans[0].is_none() {
            self.spans[0] = span_id;
        } else {
            self.spans[1] = span_id;
        }
        self
    }

    /// Whether it starts its run.
    pub fn starts_run(&self) -> bool {
        self.starts_run && self.run.is_some()
    }

    /// It starts its run.
    #[must_use]
    pub fn starting(mut self) -> Self {
        self.starts_run = true;
        self
    }
}

/// Ids a message (or a frame) names that a registry has not seen: the database must be
/// asked first.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Unseen {
    runs: Vec<String>,
    spans: Vec<String>,
    /// Runs an earlier message of the frame starts: asked about once, for the start.
    started: HashSet<String>,
}

impl Unseen {
    /// Whether there is nothing to ask.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty() && self.spans.is_empty()
    }

    /// Whether the database will be asked about run `run_id`.
    #[cfg(test)]
    pub fn asks_about_run(&self, run_id: &str) -> bool {
        self.runs.iter().any(|r| r == run_id)
    }
}

/// What the database says of unseen ids (a run's status and open spans; a span's run and
/// status, and that run's), for [`Registry::learn`].
#[derive(Debug, Default)]
pub struct Stored {
    runs: Vec<(String, Option<Status>, Vec<String>)>,
    spans: Vec<(String, Option<(String, Status)>)>,
}

impl Stored {
    /// Reads what the database knows of `unseen` (a few primary-key lookups; call it on a
    /// blocking thread).
    pub fn read(db: &Reader, unseen: &Unseen) -> StoreResult<Self> {
        let mut stored = Self::default();
        let mut run_ids: Vec<String> = unseen.runs.clone();
        for span_id in &unseen.spans {
            let status = db.span_status(span_id)?;
            if let Some((run_id, _)) = &status
                && !run_ids.contains(run_id)
            {
                run_ids.push(run_id.clone());
            }
            stored.spans.push((span_id.clone(), status));
        }
        for run_id in run_ids {
            let status = db.run_status(&run_id)?;
            let open_spans = match status {
                Some(Status::Running) => db.open_spans_of_run(&run_id)?,
                _ => Vec::new(),
            };
            stored.runs.push((run_id, status, open_spans));
        }
        Ok(stored)
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self {
            runs: HashMap::new(),
            spans: HashMap::new(),
            ended_runs: Recent::default(),
            ended_spans: Recent::default(),
            absent: HashSet::new(),
            stored_runs: StoredRuns::new(),
        }
    }

    /// The ids a message names that this registry has not seen, open or recently ended, nor
    /// asked the database about already.
    pub fn unseen(&self, mentions: Mentions<'_>) -> Unseen {
        let mut unseen = Unseen::default();
        self.add_unseen(&mut unseen, mentions);
        unseen
    }

    /// Adds to `unseen` what [`Registry::unseen`] would name for the next message of a frame
    /// (each id once; not a run an earlier message of the frame starts).
    pub fn add_unseen(&self, unseen: &mut Unseen, mentions: Mentions<'_>) {
        if let Some(run_id) = mentions.run
            && !self.runs.contains_key(run_id)
            && self.ended_runs.get(run_id).is_none()
            && !self.absent.contains(run_id)
            && self.stored_runs.may_hold(run_id)
            && !unseen.started.contains(run_id)
            && !unseen.runs.iter().any(|r| r == run_id)
        {
            unseen.runs.push(run_id.to_owned());
        }
        for span_id in mentions.spans.into_iter().flatten() {
            if !self.spans.contains_key(span_id)
                && self.ended_spans.get(span_id).is_none()
                && !self.absent.contains(span_id)
                && !unseen.spans.iter().any(|s| s == span_id)
            {
                unseen.spans.push(span_id.to_owned());
            }
        }
        if let Some(run_id) = mentions.run.filter(|_| mentions.starts_run) {
            unseen.started.insert(run_id.to_owned());
        }
    }

    /// Takes in what the database said of unseen ids. An id this registry came to know
    /// meanwhile (another message about it was accepted while the database was read) keeps
    /// what memory says: memory is newer than anything committed.
    pub fn learn(&mut self, stored: Stored) {
        for (run_id, status, open_spans) in stored.runs {
            if self.runs.contains_key(&run_id) || self.ended_runs.get(&run_id).is_some() {
                continue;
            }
            match status {
                None => self.note_absent(run_id),
                Some(Status::Running) => {
                    for span_id in &open_spans {
                        self.spans.insert(
                            span_id.clone(),
                            OpenSpan {
                                run_id: run_id.clone(),
                            },
                        );
                    }
                    let open_spans = open_spans.into_iter().collect();
                    self.runs.insert(run_id, OpenRun { open_spans });
                }
                Some(_) => self.ended_runs.insert(run_id, ()),
            }
        }
        for (span_id, status) in stored.spans {
            if self.spans.contains_key(&span_id) || self.ended_spans.get(&span_id).is_some() {
                continue;
            }
            // An open span of an open run came in with its run; any other is over.
            match status {
                None => self.note_absent(span_id),
                Some((run_id, status))
                    if status != Status::Running || !self.runs.contains_key(&run_id) =>
                {
                    self.ended_spans.insert(span_id, run_id);
                }
                Some(_) => {}
            }
        }
    }

    fn note_absent(&mut self, id: String) {
        if self.absent.len() >= ABSENT_REMEMBERED {
            self.absent.clear();
        }
        self.absent.insert(id);
    }

    /// Whether the filter of stored run ids wants building (at the start, and each time it
    /// outgrows its size).
    pub fn stored_runs_build_wanted(&self) -> bool {
        self.stored_runs.build_wanted()
    }

    /// Takes the wanted build of the stored-run filter, sized for `stored` runs.
    pub fn take_stored_runs_build(&mut self, stored: usize) -> Option<Build> {
        let build = self.stored_runs.take_build(Some(stored))?;
        // The filter may have started over at the size of the database.
        self.add_runs_in_memory_to_filter();
        Some(build)
    }

    /// Adds the runs memory holds to a filter that started over: those accepted shortly
    /// before may not be committed when its build reads the database.
    fn add_runs_in_memory_to_filter(&mut self) {
        let open = self.runs.keys();
        let ended = self.ended_runs.current.keys();
        for id in open.chain(ended).chain(self.ended_runs.previous.keys()) {
            self.stored_runs.add(id);
        }
    }

    /// Takes in a build's scan of the database (`None`: it could not be read).
    pub fn finish_stored_runs_build(&mut self, build: Build, scanned: Option<&RunIdFilter>) {
        match scanned {
            Some(scanned) => {
                self.stored_runs.finish_build(build, scanned);
            }
            None => self.stored_runs.build_failed(build),
        }
    }

    /// Runs open now (those this process has seen).
    pub fn open_runs(&self) -> usize {
        self.runs.len()
    }

    fn find_run(&mut self, run_id: &str) -> Found<'_, OpenRun> {
        if self.ended_runs.get(run_id).is_some() && !self.runs.contains_key(run_id) {
            return Found::Ended;
        }
        self.runs
            .get_mut(run_id)
            .map_or(Found::Unknown, Found::Open)
    }

    fn find_span(&mut self, span_id: &str) -> Found<'_, OpenSpan> {
        if self.ended_spans.get(span_id).is_some() && !self.spans.contains_key(span_id) {
            return Found::Ended;
        }
        self.spans
            .get_mut(span_id)
            .map_or(Found::Unknown, Found::Open)
    }

    /// Accepts a new run.
    pub fn start_run(&mut self, run_id: &str) -> Result<()> {
        match self.find_run(run_id) {
            Found::Unknown => {
                self.absent.remove(run_id);
                self.runs.insert(run_id.to_owned(), OpenRun::default());
                if self.stored_runs.accepted(run_id) {
                    self.add_runs_in_memory_to_filter();
                }
                Ok(())
            }
            _ => Err(IngestError::AlreadyExists(format!(
                "run {run_id:?} already exists; run ids must be unique"
            ))),
        }
    }

    /// Accepts the end of a run; its open spans are closed with it.
    pub fn end_run(&mut self, run_id: &str) -> Result<()> {
        match self.find_run(run_id) {
            Found::Open(_) => {
                if let Some(run) = self.runs.remove(run_id) {
                    for span_id in run.open_spans {
                        self.spans.remove(&span_id);
                        self.ended_spans.insert(span_id, run_id.to_owned());
                    }
                }
                self.ended_runs.insert(run_id.to_owned(), ());
                Ok(())
            }
            Found::Ended => Err(IngestError::FailedPrecondition(format!(
                "run {run_id:?} has already ended"
            ))),
            Found::Unknown => Err(unknown_run(run_id)),
        }
    }

    /// Accepts a new span in an open run, under an open parent of the same run.
    pub fn start_span(
        &mut self,
        run_id: &str,
        span_id: &str,
        parent_span_id: Option<&str>,
    ) -> Result<()> {
        match self.find_run(run_id) {
            Found::Open(_) => {}
            Found::Ended => {
                return Err(IngestError::FailedPrecondition(format!(
                    "run {run_id:?} has already ended; no new spans can start in it"
                )));
            }
            Found::Unknown => return Err(unknown_run(run_id)),
        }
        // Memory only: a database lookup for every new span would cost more than the rest
        // of the ingest path. An id reused from before a restart is ignored by the store
        // (INSERT OR IGNORE); resends are recognised by sequence number before this.
        if self.spans.contains_key(span_id) || self.ended_spans.get(span_id).is_some() {
            return Err(IngestError::AlreadyExists(format!(
                "span {span_id:?} already exists; span ids must be unique"
            )));
        }
        if let Some(parent) = parent_span_id {
            match self.find_span(parent) {
                Found::Open(p) if p.run_id == run_id => {}
                Found::Open(p) => {
                    return Err(IngestError::Invalid(format!(
                        "parent span {parent:?} belongs to run {:?}, not {run_id:?}",
                        p.run_id
                    )));
                }
                Found::Ended => {
                    return Err(IngestError::FailedPrecondition(format!(
                        "parent span {parent:?} has already ended"
                    )));
                }
                Found::Unknown => {
                    return Err(IngestError::NotFound(format!(
                        "parent span {parent:?} not found; start the parent before its children"
                    )));
                }
            }
        }
        self.absent.remove(span_id);
        self.spans.insert(
            span_id.to_owned(),
            OpenSpan {
                run_id: run_id.to_owned(),
            },
        );
        if let Some(run) = self.runs.get_mut(run_id) {
            run.open_spans.insert(span_id.to_owned());
        }
        Ok(())
    }

    /// Accepts the end of an open span.
    pub fn end_span(&mut self, span_id: &str) -> Result<()> {
        match self.find_span(span_id) {
            Found::Open(_) => {
                if let Some(span) = self.spans.remove(span_id) {
                    if let Some(run) = self.runs.get_mut(&span.run_id) {
                        run.open_spans.remove(span_id);
                    }
                    self.ended_spans.insert(span_id.to_owned(), span.run_id);
                }
                Ok(())
            }
            Found::Ended => Err(IngestError::FailedPrecondition(format!(
                "span {span_id:?} has already ended"
            ))),
            Found::Unknown => Err(IngestError::NotFound(format!(
                "span {span_id:?} not found; start it before ending it"
            ))),
        }
    }

    /// Checks the target of a metric or event: an open run, and a span of that run
    /// (open or recently ended: a measurement may arrive just after its span closed).
    pub fn check_target(&mut self, run_id: &str, span_id: Option<&str>) -> Result<()> {
        match self.find_run(run_id) {
            Found::Open(_) => {}
            Found::Ended => {
                return Err(IngestError::FailedPrecondition(format!(
                    "run {run_id:?} has already ended"
                )));
            }
            Found::Unknown => return Err(unknown_run(run_id)),
        }
        let Some(span_id) = span_id else {
            return Ok(());
        };
        let owner = match self.find_span(span_id) {
            Found::Open(span) => Some(span.run_id.clone()),
            Found::Ended => self.ended_spans.get(span_id).cloned(),
            Found::Unknown => {
                return Err(IngestError::NotFound(format!("span {span_id:?} not found")));
            }
        };
        match owner {
            Some(owner) if owner != run_id => Err(IngestError::Invalid(format!(
                "span {span_id:?} belongs to run {owner:?}, not {run_id:?}"
            ))),
            _ => Ok(()),
        }
    }
}

fn unknown_run(run_id: &str) -> IngestError {
    IngestError::NotFound(format!(
        "run {run_id:?} not found; start it before using it"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kind of refusal, without its message.
    #[derive(Debug, PartialEq)]
    enum Code {
        Invalid,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
    }

    fn code<T: std::fmt::Debug>(r: Result<T>) -> Code {
        match r.unwrap_err() {
            IngestError::Invalid(_) => Code::Invalid,
            IngestError::NotFound(_) => Code::NotFound,
            IngestError::AlreadyExists(_) => Code::AlreadyExists,
            IngestError::FailedPrecondition(_) => Code::FailedPrecondition,
            e @ IngestError::Unavailable(_) => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn runs_in_memory_stay_in_a_filter_sized_again_for_a_large_database() {
        let mut r = Registry::new();
        // Accepted before the build had counted the database, and not yet committed when
        // the build reads it.
        r.start_run("early").unwrap();
        let build = r.take_stored_runs_build(1_000_000).unwrap();
        assert!(build.capacity >= 1_500_000);
        r.finish_stored_runs_build(build, Some(&RunIdFilter::for_ids(build.capacity)));
        assert!(r.stored_runs.is_complete());
        assert!(r.stored_runs.may_hold("early"));
        assert!(!r.stored_runs.may_hold("never-started"));
        // A build that could not read the database leaves every id to be looked up.
        let mut r = Registry::new();
        let build = r.take_stored_runs_build(0).unwrap();
        r.finish_stored_runs_build(build, None);
        assert!(r.stored_runs.may_hold("never-started"));
        assert!(r.stored_runs_build_wanted(), "tried again on the next run");
    }

    #[test]
    fn lifecycle_errors_have_precise_codes() {
        let mut r = Registry::new();
        r.start_run("r1").unwrap();
        assert_eq!(code(r.start_run("r1")), Code::AlreadyExists);
        assert_eq!(code(r.end_run("nope")), Code::NotFound);
        assert_eq!(code(r.start_span("nope", "s", None)), Code::NotFound);
        r.start_span("r1", "s1", None).unwrap();
        assert_eq!(code(r.start_span("r1", "s1", None)), Code::AlreadyExists);
        assert_eq!(
            code(r.start_span("r1", "s2", Some("ghost"))),
            Code::NotFound
        );
        r.start_span("r1", "s2", Some("s1")).unwrap();
        r.end_span("s2").unwrap();
        assert_eq!(code(r.end_span("s2")), Code::FailedPrecondition);
        assert_eq!(
            code(r.start_span("r1", "s3", Some("s2"))),
            Code::FailedPrecondition
        );
        assert_eq!(code(r.end_span("never")), Code::NotFound);
        r.end_run("r1").unwrap();
        assert_eq!(code(r.end_run("r1")), Code::FailedPrecondition);
        assert_eq!(
            code(r.start_span("r1", "s4", None)),
            Code::FailedPrecondition
        );
        // s1 was still open when the run ended: it is closed with the run.
        assert_eq!(code(r.end_span("s1")), Code::FailedPrecondition);
    }

    #[test]
    fn targets_of_metrics_are_checked() {
        let mut r = Registry::new();
        r.start_run("a").unwrap();
        r.start_run("b").unwrap();
        r.start_span("a", "sa", None).unwrap();
        r.check_target("a", Some("sa")).unwrap();
        r.check_target("a", None).unwrap();
        assert_eq!(code(r.check_target("b", Some("sa"))), Code::Invalid);
        assert_eq!(code(r.check_target("a", Some("zz"))), Code::NotFound);
        r.end_span("sa").unwrap();
        r.check_target("a", Some("sa")).unwrap();
        r.end_run("a").unwrap();
        assert_eq!(code(r.check_target("a", None)), Code::FailedPrecondition);
    }

    #[test]
    fn parent_from_another_run_is_invalid() {
        let mut r = Registry::new();
        r.start_run("a").unwrap();
        r.start_run("b").unwrap();
        r.start_span("a", "pa", None).unwrap();
        assert_eq!(code(r.start_span("b", "c", Some("pa"))), Code::Invalid);
    }

    #[test]
    fn what_memory_knows_wins_over_an_older_database_answer() {
        let mut r = Registry::new();
        r.start_run("a").unwrap();
        assert!(r.unseen(Mentions::run("a")).is_empty());
        let unseen = r.unseen(Mentions::run("old").span(Some("s")).span(Some("gone")));
        assert_eq!(unseen.runs, ["old"]);
        assert_eq!(unseen.spans, ["s", "gone"]);
        // The database read raced a message that opened "a" here: memory keeps it open.
        r.learn(Stored {
            runs: vec![
                ("a".into(), Some(Status::Ok), vec![]),
                ("old".into(), Some(Status::Running), vec!["s".into()]),
            ],
            spans: vec![
                ("s".into(), Some(("old".into(), Status::Running))),
                ("gone".into(), Some(("old".into(), Status::Ok))),
            ],
        });
        r.start_span("a", "x", None).unwrap();
        // "old" came back open with its open span; the ended span is remembered as ended.
        r.start_span("old", "child", Some("s")).unwrap();
        assert_eq!(code(r.end_span("gone")), Code::FailedPrecondition);
        r.end_run("old").unwrap();
        assert_eq!(code(r.end_span("s")), Code::FailedPrecondition);
    }
}
