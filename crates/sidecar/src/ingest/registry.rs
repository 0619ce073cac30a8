//! Which runs and spans are open, so that every message can be checked against them
//! before it is accepted (unknown → NOT_FOUND, ended twice → FAILED_PRECONDITION).
//!
//! Open runs and spans live in memory. Ended ones are remembered in a bounded, two-
//! generation set (recent ones answer precisely; old ones fall back to the database).
//! After a sidecar restart, an id missing from memory is looked up in the database, so
//! an agent can keep going with runs it opened before the restart.

use std::collections::{HashMap, HashSet};
use std::mem;

use super::error::{IngestError, Result};
use crate::domain::Status;
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
    /// Where ids not in memory are looked up (after a restart); `None` in unit tests.
    db: Option<Reader>,
}

impl Registry {
    /// A registry that falls back to `db` for ids it has not seen.
    pub fn new(db: Option<Reader>) -> Self {
        Self {
            runs: HashMap::new(),
            spans: HashMap::new(),
            ended_runs: Recent::default(),
            ended_spans: Recent::default(),
            db,
        }
    }

    /// Runs open now (those this process has seen).
    pub fn open_runs(&self) -> usize {
        self.runs.len()
    }

    fn find_run(&mut self, run_id: &str) -> Result<Found<'_, OpenRun>> {
        if !self.runs.contains_key(run_id) {
            if self.ended_runs.get(run_id).is_some() {
                return Ok(Found::Ended);
            }
            // Not seen by this process: the database knows if it was opened before a restart.
            // A primary-key lookup on a path taken only for unknown ids.
            match self.db_run_status(run_id)? {
                None => return Ok(Found::Unknown),
                Some(status) if status != Status::Running => {
                    self.ended_runs.insert(run_id.to_owned(), ());
                    return Ok(Found::Ended);
                }
                Some(_) => {
                    let open_spans = self.db_open_spans(run_id)?;
                    for span_id in &open_spans {
                        self.spans.insert(
                            span_id.clone(),
                            OpenSpan {
                                run_id: run_id.to_owned(),
                            },
                        );
                    }
                    self.runs.insert(
                        run_id.to_owned(),
                        OpenRun {
                            open_spans: open_spans.into_iter().collect(),
                        },
                    );
                }
            }
        }
        Ok(self
            .runs
            .get_mut(run_id)
            .map_or(Found::Unknown, Found::Open))
    }

    fn find_span(&mut self, span_id: &str) -> Result<Found<'_, OpenSpan>> {
        if !self.spans.contains_key(span_id) {
            if self.ended_spans.get(span_id).is_some() {
                return Ok(Found::Ended);
            }
            match self.db_span_status(span_id)? {
                None => return Ok(Found::Unknown),
                Some((run_id, status)) => {
                    // Loading the run also loads its open spans.
                    let run_open = matches!(self.find_run(&run_id)?, Found::Open(_));
                    if status != Status::Running || !run_open {
                        self.ended_spans.insert(span_id.to_owned(), run_id);
                        return Ok(Found::Ended);
                    }
                }
            }
        }
        Ok(self
            .spans
            .get_mut(span_id)
            .map_or(Found::Unknown, Found::Open))
    }

    /// Accepts a new run.
    pub fn start_run(&mut self, run_id: &str) -> Result<()> {
        match self.find_run(run_id)? {
            Found::Unknown => {
                self.runs.insert(run_id.to_owned(), OpenRun::default());
                Ok(())
            }
            _ => Err(IngestError::AlreadyExists(format!(
                "run {run_id:?} already exists; run ids must be unique"
            ))),
        }
    }

    /// Accepts the end of a run; its open spans are closed with it.
    pub fn end_run(&mut self, run_id: &str) -> Result<()> {
        match self.find_run(run_id)? {
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
        match self.find_run(run_id)? {
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
            match self.find_span(parent)? {
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
        match self.find_span(span_id)? {
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
        match self.find_run(run_id)? {
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
        let owner = match self.find_span(span_id)? {
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

    fn db_run_status(&self, run_id: &str) -> Result<Option<Status>> {
        match &self.db {
            Some(db) => db.run_status(run_id).map_err(|e| IngestError::storage(&e)),
            None => Ok(None),
        }
    }

    fn db_span_status(&self, span_id: &str) -> Result<Option<(String, Status)>> {
        match &self.db {
            Some(db) => db
                .span_status(span_id)
                .map_err(|e| IngestError::storage(&e)),
            None => Ok(None),
        }
    }

    fn db_open_spans(&self, run_id: &str) -> Result<Vec<String>> {
        match &self.db {
            Some(db) => db
                .open_spans_of_run(run_id)
                .map_err(|e| IngestError::storage(&e)),
            None => Ok(Vec::new()),
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
    fn lifecycle_errors_have_precise_codes() {
        let mut r = Registry::new(None);
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
        let mut r = Registry::new(None);
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
        let mut r = Registry::new(None);
        r.start_run("a").unwrap();
        r.start_run("b").unwrap();
        r.start_span("a", "pa", None).unwrap();
        assert_eq!(code(r.start_span("b", "c", Some("pa"))), Code::Invalid);
    }
}
