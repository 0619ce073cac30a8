//! Finished spans from a tracing front door (OTLP): complete when they arrive (start and
//! end known), in any order (children before their parents, the root last), possibly
//! resent. They need no registry of open spans; the core checks each against the same
//! rules as every other span and turns it into a row. The store attaches, to each span,
//! the stored samples nearest its own start and end (see `store::writer::trace`).

use serde_json::{Map, Value};

use super::error::{IngestError, Result};
use super::{Ingest, validate};
use crate::domain::{EventKind, Outcome, SpanKind};
use crate::store::{SampleRef, TraceClientRow, TraceEventRow, TraceRows, TraceSpanRow};

/// Most attributes on one traced span or span event (OpenTelemetry SDKs' default limit).
pub const MAX_TRACE_ATTRIBUTES: usize = 128;
/// Most bytes of one span's attributes, encoded as JSON.
pub const MAX_TRACE_ATTRIBUTE_BYTES: usize = 64 * 1024;
/// Most events on one span (OpenTelemetry SDKs' default limit).
pub const MAX_TRACE_EVENTS: usize = 128;

/// The sender of a batch of traced spans (an OTLP resource).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TraceClient {
    /// A stable id for the sender (`otlp/<service.name>[/<pid>]`).
    pub client_id: String,
    /// Its name (`service.name`).
    pub name: String,
    /// Its process id (`process.pid`), 0 when not given.
    pub pid: u32,
    /// Every resource attribute.
    pub resource: Map<String, Value>,
}

/// A metric carried by a span (token counts), recorded at the span's end.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceMetric {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: f64,
    /// Its unit.
    pub unit: String,
    /// Where it came from (the attribute it was read from).
    pub attributes: Map<String, Value>,
}

/// Something that happened during a span.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceEvent {
    /// Its name.
    pub name: String,
    /// When, Unix ns.
    pub at_ns: i64,
    /// Its attributes.
    pub attributes: Map<String, Value>,
}

/// A finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSpan {
    /// The run of its trace (one run per trace).
    pub run_id: String,
    /// Its id, unique across traces.
    pub span_id: String,
    /// Its parent; `None` for the root of the trace.
    pub parent_span_id: Option<String>,
    /// What it did.
    pub name: String,
    /// Its kind, when the sender said.
    pub kind: Option<SpanKind>,
    /// How it ended.
    pub outcome: Outcome,
    /// Its attributes, typed (strings, numbers, booleans, arrays, objects).
    pub attributes: Map<String, Value>,
    /// Start, Unix ns.
    pub start_ns: i64,
    /// End, Unix ns.
    pub end_ns: i64,
    /// Its events.
    pub events: Vec<TraceEvent>,
    /// Metrics read from its attributes.
    pub metrics: Vec<TraceMetric>,
}

/// One sender's spans.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TraceBatch {
    /// Who sent them.
    pub client: TraceClient,
    /// The spans.
    pub spans: Vec<TraceSpan>,
}

/// What the core made of some batches: the rows to write and the spans it refused.
#[derive(Debug)]
pub struct AcceptedTrace {
    /// What to write, in one request to the writer.
    pub rows: TraceRows,
    /// Spans refused, each with why (`span <id>: <rule>`).
    pub rejected: Vec<String>,
}

impl Ingest {
    /// Checks every span of `batches`; the valid ones become rows, the others are listed
    /// with the reason. Never fails as a whole: one bad span does not cost the others.
    pub fn accept_trace(&self, batches: Vec<TraceBatch>) -> AcceptedTrace {
        let mut rows = TraceRows {
            clients: Vec::with_capacity(batches.len()),
            spans: Vec::new(),
        };
        let mut rejected = Vec::new();
        let arrival_ns = probe_core::unix_now_ns();
        for batch in batches {
            let client_id = batch.client.client_id.clone();
            // The latest end in the export is the boundary nearest its sending.
            let latest_end = batch
                .spans
                .iter()
                .map(|s| s.end_ns)
                .filter(|&t| t > 0)
                .max();
            let clock = self.observe_clock(&client_id, &batch.client.name, arrival_ns, latest_end);
            let snapshot = self.sample_ref(clock);
            rows.clients.push(client_row(batch.client));
            for span in batch.spans {
                let span_id = span.span_id.clone();
                match span_row(span, &client_id, snapshot) {
                    Ok(row) => rows.spans.push(row),
                    Err(e) => rejected.push(format!("span {span_id}: {e}")),
                }
            }
        }
        AcceptedTrace { rows, rejected }
    }
}

fn client_row(c: TraceClient) -> TraceClientRow {
    TraceClientRow {
        client_id: c.client_id,
        name: c.name,
        pid: c.pid,
        resource: (!c.resource.is_empty()).then(|| Value::Object(c.resource).to_string()),
    }
}

/// The rules every span obeys, applied to a traced one.
fn span_row(s: TraceSpan, client_id: &str, snapshot: SampleRef) -> Result<TraceSpanRow> {
    validate::generated_id("trace run id", &s.run_id)?;
    validate::generated_id("span id", &s.span_id)?;
    if let Some(parent) = &s.parent_span_id {
        validate::generated_id("parent span id", parent)?;
    }
    let parent_span_id = s.parent_span_id;
    validate::name("name", &s.name)?;
    if s.start_ns <= 0 {
        return Err(IngestError::Invalid(
            "start time is missing (0); spans need Unix-nanosecond start and end times".into(),
        ));
    }
    if s.end_ns < s.start_ns {
        return Err(IngestError::Invalid(format!(
            "ends before it starts ({} < {})",
            s.end_ns, s.start_ns
        )));
    }
    let attributes = json_attributes("attributes", s.attributes)?;
    if s.events.len() > MAX_TRACE_EVENTS {
        return Err(IngestError::Invalid(format!(
            "{} events; the limit is {MAX_TRACE_EVENTS}",
            s.events.len()
        )));
    }
    let mut events = Vec::with_capacity(s.events.len() + s.metrics.len());
    for e in s.events {
        validate::name("event name", &e.name)?;
        events.push(TraceEventRow {
            kind: EventKind::Event,
            name: e.name,
            value: None,
            unit: None,
            attributes: json_attributes("event attributes", e.attributes)?,
            at_ns: if e.at_ns > 0 { e.at_ns } else { s.end_ns },
        });
    }
    for m in s.metrics {
        validate::metric_value(&m.name, m.value)?;
        events.push(TraceEventRow {
            kind: EventKind::Metric,
            name: m.name,
            value: Some(m.value),
            unit: validate::unit(&m.unit)?,
            attributes: json_attributes("metric attributes", m.attributes)?,
            at_ns: s.end_ns,
        });
    }
    Ok(TraceSpanRow {
        run_id: s.run_id,
        span_id: s.span_id,
        parent_span_id,
        name: s.name,
        kind: s.kind,
        status: s.outcome.status(),
        error: s.outcome.error().map(validate::error_text),
        attributes,
        start_ns: s.start_ns,
        end_ns: s.end_ns,
        client_id: client_id.to_owned(),
        snapshot,
        events,
    })
}

/// Typed attributes as a JSON object (`None` when empty), within the limits.
fn json_attributes(what: &str, map: Map<String, Value>) -> Result<Option<String>> {
    if map.is_empty() {
        return Ok(None);
    }
    if map.len() > MAX_TRACE_ATTRIBUTES {
        return Err(IngestError::Invalid(format!(
            "{} {what}; the limit is {MAX_TRACE_ATTRIBUTES}",
            map.len()
        )));
    }
    let text = Value::Object(map).to_string();
    if text.len() > MAX_TRACE_ATTRIBUTE_BYTES {
        return Err(IngestError::Invalid(format!(
            "{what} take {} bytes as JSON; the limit is {MAX_TRACE_ATTRIBUTE_BYTES}",
            text.len()
        )));
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span() -> TraceSpan {
        TraceSpan {
            run_id: "otlp/0123".into(),
            span_id: "otlp/0123/ab".into(),
            parent_span_id: None,
            name: "chat llama".into(),
            kind: Some(SpanKind::Client),
            outcome: Outcome::Ok,
            attributes: Map::new(),
            start_ns: 10,
            end_ns: 20,
            events: vec![],
            metrics: vec![],
        }
    }

    #[test]
    fn a_valid_span_becomes_a_row_with_its_events_and_metrics() {
        let mut s = span();
        s.attributes
            .insert("gen_ai.request.model".into(), "llama".into());
        s.attributes.insert("n".into(), 3.into());
        s.events.push(TraceEvent {
            name: "retry".into(),
            at_ns: 15,
            attributes: Map::new(),
        });
        s.metrics.push(TraceMetric {
            name: "gen_ai.usage.input_tokens".into(),
            value: 12.0,
            unit: "{token}".into(),
            attributes: Map::new(),
        });
        let row = span_row(s, "otlp/agent", SampleRef::Skewed).unwrap();
        assert_eq!(
            row.attributes.as_deref(),
            Some(r#"{"gen_ai.request.model":"llama","n":3}"#)
        );
        assert_eq!(row.events.len(), 2);
        assert_eq!(row.events[0].at_ns, 15);
        assert_eq!(row.events[1].kind, EventKind::Metric);
        assert_eq!(
            row.events[1].at_ns, 20,
            "metrics are recorded at the span's end"
        );
    }

    #[test]
    fn spans_that_break_a_rule_are_refused_with_the_rule() {
        let mut backwards = span();
        backwards.end_ns = 5;
        assert!(
            span_row(backwards, "c", SampleRef::Skewed)
                .unwrap_err()
                .to_string()
                .contains("ends before it starts")
        );
        let mut unnamed = span();
        unnamed.name = " ".into();
        assert!(span_row(unnamed, "c", SampleRef::Skewed).is_err());
        let mut crowded = span();
        for i in 0..=MAX_TRACE_ATTRIBUTES {
            crowded.attributes.insert(format!("k{i}"), i.into());
        }
        assert!(
            span_row(crowded, "c", SampleRef::Skewed)
                .unwrap_err()
                .to_string()
                .contains("limit is 128")
        );
        let mut nan = span();
        nan.metrics.push(TraceMetric {
            name: "tokens".into(),
            value: f64::NAN,
            unit: String::new(),
            attributes: Map::new(),
        });
        assert!(span_row(nan, "c", SampleRef::Skewed).is_err());
    }
}
