//! Runs and spans: handles that record their own start, end, metrics and events.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::Arc;

use runlens_api::pb;
use runlens_api::pb::client_message::Body;

use crate::client::Client;

/// The error recorded for a run or span dropped without being ended.
pub const DROPPED_ERROR: &str = "dropped without end";

/// The time of the call (not of sending), so that queueing delays do not move events.
fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Recording is the client's job, written here beside what it records (so `client` need not
/// know `recording`).
impl Client {
    /// Opens a run. The sidecar matches its start to the resource sample nearest its own time
    /// ([`Run::span_fresh`] asks for samples taken at a span's own start and end instead).
    pub fn start_run(&self, name: impl Into<String>) -> Run {
        Run::start(self, name.into(), HashMap::new())
    }

    /// Opens a run with attributes (model, prompt id, ...).
    pub fn start_run_with<K: Into<String>, V: Into<String>>(
        &self,
        name: impl Into<String>,
        attributes: impl IntoIterator<Item = (K, V)>,
    ) -> Run {
        Run::start(self, name.into(), attrs(attributes))
    }
}

/// Attributes from any pairs of strings.
pub(crate) fn attrs<K: Into<String>, V: Into<String>>(
    it: impl IntoIterator<Item = (K, V)>,
) -> HashMap<String, String> {
    it.into_iter().map(|(k, v)| (k.into(), v.into())).collect()
}

fn end_status(result: Result<(), String>) -> (i32, String) {
    match result {
        Ok(()) => (pb::EndStatus::Ok as i32, String::new()),
        Err(e) => (pb::EndStatus::Failed as i32, e),
    }
}

/// What a run and a span share: the client their records go to and what they attach to
/// (the run, and the span when there is one).
struct Scope {
    client: Client,
    run_id: Arc<str>,
    /// Empty for a run's own records.
    span_id: String,
}

impl Scope {
    fn push(&self, body: Body) {
        self.client.inner.shared.push(body);
    }

    /// Opens a span in this scope: top-level in a run, nested in a span.
    fn span(
        &self,
        name: String,
        attributes: HashMap<String, String>,
        fresh_snapshot: bool,
    ) -> Span {
        let span_id = self.client.inner.ids.next();
        self.push(Body::StartSpan(pb::StartSpanRequest {
            run_id: self.run_id.to_string(),
            span_id: span_id.clone(),
            parent_span_id: self.span_id.clone(),
            name,
            attributes,
            time_ns: now_ns(),
            fresh_snapshot,
        }));
        Span {
            scope: Scope {
                client: self.client.clone(),
                run_id: self.run_id.clone(),
                span_id,
            },
            fresh_snapshot,
            ended: false,
        }
    }

    fn metric(&self, name: String, value: f64, unit: String) {
        self.push(Body::Metric(pb::Metric {
            run_id: self.run_id.to_string(),
            span_id: self.span_id.clone(),
            name,
            value,
            unit,
            attributes: HashMap::new(),
            time_ns: now_ns(),
        }));
    }

    fn event(&self, name: String, attributes: HashMap<String, String>) {
        self.push(Body::Event(pb::Event {
            run_id: self.run_id.to_string(),
            span_id: self.span_id.clone(),
            name,
            attributes,
            time_ns: now_ns(),
        }));
    }
}

/// One task of an agent. End it with [`Run::end_ok`] or [`Run::end_failed`]; dropping
/// it unended records it as failed ("dropped without end").
pub struct Run {
    scope: Scope,
    ended: bool,
}

impl Run {
    pub(crate) fn start(
        client: &Client,
        name: String,
        attributes: HashMap<String, String>,
    ) -> Self {
        let run_id: Arc<str> = Arc::from(client.inner.ids.next());
        client
            .inner
            .shared
            .push(Body::StartRun(pb::StartRunRequest {
                run_id: run_id.to_string(),
                name,
                attributes,
                time_ns: now_ns(),
            }));
        Self {
            scope: Scope {
                client: client.clone(),
                run_id,
                span_id: String::new(),
            },
            ended: false,
        }
    }

    /// The run's id, as stored in `runs.run_id`.
    pub fn id(&self) -> &str {
        &self.scope.run_id
    }

    /// Opens a top-level span in this run.
    pub fn span(&self, name: impl Into<String>) -> Span {
        self.scope.span(name.into(), HashMap::new(), false)
    }

    /// Opens a top-level span with fresh snapshots at its start and end and no
    /// attributes (use around a heavy step).
    pub fn span_fresh(&self, name: impl Into<String>) -> Span {
        self.scope.span(name.into(), HashMap::new(), true)
    }

    /// Opens a top-level span with attributes; `fresh_snapshot` asks the sidecar to
    /// sample at its start and end rather than attach its latest periodic sample (use
    /// around heavy steps).
    pub fn span_with<K: Into<String>, V: Into<String>>(
        &self,
        name: impl Into<String>,
        attributes: impl IntoIterator<Item = (K, V)>,
        fresh_snapshot: bool,
    ) -> Span {
        self.scope
            .span(name.into(), attrs(attributes), fresh_snapshot)
    }

    /// Records a run-level metric.
    pub fn metric(&self, name: impl Into<String>, value: f64, unit: impl Into<String>) {
        self.scope.metric(name.into(), value, unit.into());
    }

    /// Records a run-level event.
    pub fn event<K: Into<String>, V: Into<String>>(
        &self,
        name: impl Into<String>,
        attributes: impl IntoIterator<Item = (K, V)>,
    ) {
        self.scope.event(name.into(), attrs(attributes));
    }

    /// Ends the run as ok.
    pub fn end_ok(mut self) {
        self.end_with(Ok(()), HashMap::new());
    }

    /// Ends the run as failed with this error.
    pub fn end_failed(mut self, error: impl Display) {
        self.end_with(Err(error.to_string()), HashMap::new());
    }

    /// Ends the run, with attributes learnt while it ran (merged into its attributes).
    pub(crate) fn end_with(
        &mut self,
        result: Result<(), String>,
        attributes: HashMap<String, String>,
    ) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let (status, error) = end_status(result);
        self.scope.push(Body::EndRun(pb::EndRunRequest {
            run_id: self.scope.run_id.to_string(),
            status,
            error,
            attributes,
            time_ns: now_ns(),
        }));
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.end_with(Err(DROPPED_ERROR.to_owned()), HashMap::new());
    }
}

/// One step of a run, possibly nested. End it with [`Span::end_ok`] or
/// [`Span::end_failed`]; dropping it unended records it as failed.
pub struct Span {
    scope: Scope,
    /// Asked for fresh snapshots: at the start, and again at the end.
    fresh_snapshot: bool,
    ended: bool,
}

impl Span {
    /// The span's id, as stored in `spans.span_id`.
    pub fn id(&self) -> &str {
        &self.scope.span_id
    }

    /// Opens a span nested in this one. The same word as [`Run::span`] and as the Python
    /// helper's `.span()`: nesting follows from what it is called on.
    pub fn span(&self, name: impl Into<String>) -> Span {
        self.scope.span(name.into(), HashMap::new(), false)
    }

    /// Opens a nested span with fresh snapshots at its start and end and no attributes
    /// (use around a heavy step).
    pub fn span_fresh(&self, name: impl Into<String>) -> Span {
        self.scope.span(name.into(), HashMap::new(), true)
    }

    /// Opens a nested span with attributes and, optionally, fresh snapshots at its start
    /// and end. With no attributes, use [`Span::span`] or [`Span::span_fresh`].
    pub fn span_with<K: Into<String>, V: Into<String>>(
        &self,
        name: impl Into<String>,
        attributes: impl IntoIterator<Item = (K, V)>,
        fresh_snapshot: bool,
    ) -> Span {
        self.scope
            .span(name.into(), attrs(attributes), fresh_snapshot)
    }

    /// Opens a span nested in this one.
    #[deprecated(
        since = "0.1.0",
        note = "use `Span::span`: one word for nesting everywhere"
    )]
    pub fn child(&self, name: impl Into<String>) -> Span {
        self.span(name)
    }

    /// Opens a nested span with attributes and, optionally, fresh snapshots.
    #[deprecated(
        since = "0.1.0",
        note = "use `Span::span_with` (or `Span::span_fresh` without attributes)"
    )]
    pub fn child_with<K: Into<String>, V: Into<String>>(
        &self,
        name: impl Into<String>,
        attributes: impl IntoIterator<Item = (K, V)>,
        fresh_snapshot: bool,
    ) -> Span {
        self.span_with(name, attributes, fresh_snapshot)
    }

    /// Records a metric on this span.
    pub fn metric(&self, name: impl Into<String>, value: f64, unit: impl Into<String>) {
        self.scope.metric(name.into(), value, unit.into());
    }

    /// Records an event on this span.
    pub fn event<K: Into<String>, V: Into<String>>(
        &self,
        name: impl Into<String>,
        attributes: impl IntoIterator<Item = (K, V)>,
    ) {
        self.scope.event(name.into(), attrs(attributes));
    }

    /// Ends the span as ok.
    pub fn end_ok(mut self) {
        self.end_with(Ok(()), HashMap::new());
    }

    /// Ends the span as failed with this error.
    pub fn end_failed(mut self, error: impl Display) {
        self.end_with(Err(error.to_string()), HashMap::new());
    }

    /// Ends the span, with attributes learnt while it ran (merged into its attributes).
    pub(crate) fn end_with(
        &mut self,
        result: Result<(), String>,
        attributes: HashMap<String, String>,
    ) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        let (status, error) = end_status(result);
        self.scope.push(Body::EndSpan(pb::EndSpanRequest {
            span_id: self.scope.span_id.clone(),
            status,
            error,
            attributes,
            time_ns: now_ns(),
            fresh_snapshot: self.fresh_snapshot,
        }));
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        self.end_with(Err(DROPPED_ERROR.to_owned()), HashMap::new());
    }
}
