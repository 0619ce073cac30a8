//! Stored runs as OTLP traces. One trace per run: the run is the root span and its spans
//! are the children (a run that came in over OTLP keeps its own trace and span ids and its
//! own root). Each span carries the machine at its start and end as attributes; metrics and
//! events become span events.
//!
//! Ids are derived from runlens's ids with a fixed hash (FNV-1a), so a batch sent again
//! after a crash carries the same ids, which receivers that deduplicate store once.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::Value;

use crate::domain::Status as RunStatus;
use crate::store::read::{ExportEvent, ExportRun, ExportSpan, ResourceContext};

/// The request for some runs, from a sender with these resource attributes.
pub fn request(runs: &[ExportRun], resource: &[(String, String)]) -> ExportTraceServiceRequest {
    let mut spans = Vec::new();
    for run in runs {
        spans.extend(run_spans(run));
    }
    let mut attributes = vec![kv("service.name", text("runlens"))];
    for (k, v) in resource {
        if k != "service.name" {
            attributes.push(kv(k, text(v)));
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The spans of one run's trace.
fn run_spans(run: &ExportRun) -> Vec<Span> {
    let trace_id = trace_id(&run.run_id);
    // A run that came in over OTLP has its root among its spans; a runlens.v1 run is the
    // root itself.
    let from_otlp = crate::otlp_ids::is_from_otlp(&run.run_id);
    let root_id = (!from_otlp).then(|| hash64(&format!("run/{}", run.run_id)));
    let mut spans = Vec::with_capacity(run.spans.len() + 1);
    if let Some(root_id) = root_id {
        let mut attributes = json_attributes(run.attributes.as_deref());
        attributes.push(kv("runlens.run_id", text(&run.run_id)));
        if let Some(client) = &run.client_name {
            attributes.push(kv("runlens.client", text(client)));
        }
        context_attributes(&mut attributes, "start", run.start.as_ref());
        context_attributes(&mut attributes, "end", run.end.as_ref());
        spans.push(Span {
            trace_id: trace_id.to_vec(),
            span_id: root_id.to_vec(),
            name: run.name.clone(),
            kind: SpanKind::Internal as i32,
            start_time_unix_nano: nanos(run.started_at_ns),
            end_time_unix_nano: nanos(run.ended_at_ns.unwrap_or(run.started_at_ns)),
            attributes,
            events: events(run, None),
            status: Some(status(run.status, run.error.as_deref())),
            ..Default::default()
        });
    }
    for s in &run.spans {
        spans.push(span(run, s, trace_id, root_id));
    }
    spans
}

fn span(run: &ExportRun, s: &ExportSpan, trace_id: [u8; 16], root: Option<[u8; 8]>) -> Span {
    let parent = match (&s.parent_span_id, root) {
        (Some(p), _) => span_id(p).to_vec(),
        (None, Some(root)) => root.to_vec(),
        (None, None) => Vec::new(),
    };
    let mut attributes = json_attributes(s.attributes.as_deref());
    attributes.push(kv("runlens.span_id", text(&s.span_id)));
    context_attributes(&mut attributes, "start", s.start.as_ref());
    context_attributes(&mut attributes, "end", s.end.as_ref());
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id(&s.span_id).to_vec(),
        parent_span_id: parent,
        name: s.name.clone(),
        kind: kind(s.kind.as_deref()) as i32,
        start_time_unix_nano: nanos(s.started_at_ns),
        end_time_unix_nano: nanos(s.ended_at_ns.unwrap_or(s.started_at_ns)),
        attributes,
        events: events(run, Some(&s.span_id)),
        status: Some(status(s.status, s.error.as_deref())),
        ..Default::default()
    }
}

/// The run's metrics and events on `span` (or on the run itself).
fn events(run: &ExportRun, span: Option<&str>) -> Vec<Event> {
    run.events
        .iter()
        .filter(|e| e.span_id.as_deref() == span)
        .map(event)
        .collect()
}

fn event(e: &ExportEvent) -> Event {
    let mut attributes = json_attributes(e.attributes.as_deref());
    if let Some(v) = e.value {
        attributes.push(kv("value", any_value::Value::DoubleValue(v)));
    }
    if let Some(unit) = &e.unit {
        attributes.push(kv("unit", text(unit)));
    }
    attributes.push(kv("runlens.kind", text(&e.kind)));
    Event {
        time_unix_nano: nanos(e.at_ns),
        name: e.name.clone(),
        attributes,
        ..Default::default()
    }
}

/// The machine in one sample, as `runlens.<when>.*` attributes (bytes, ratios, per core).
fn context_attributes(attributes: &mut Vec<KeyValue>, when: &str, c: Option<&ResourceContext>) {
    let Some(c) = c else { return };
    let mut add = |name: &str, value: Option<any_value::Value>| {
        if let Some(value) = value {
            attributes.push(kv(&format!("runlens.{when}.{name}"), value));
        }
    };
    add(
        "gpu.memory.free_min",
        c.gpu_free_min_bytes.map(any_value::Value::IntValue),
    );
    add(
        "gpu.utilization.max",
        c.gpu_utilization_max.map(any_value::Value::DoubleValue),
    );
    add(
        "cpu.load_per_core",
        c.cpu_load_per_core.map(any_value::Value::DoubleValue),
    );
    add(
        "ram.available",
        c.ram_available_bytes.map(any_value::Value::IntValue),
    );
    add(
        "container.memory.headroom",
        c.cgroup_headroom_ratio.map(any_value::Value::DoubleValue),
    );
}

fn status(s: RunStatus, error: Option<&str>) -> Status {
    match s {
        RunStatus::Failed => Status {
            message: error.unwrap_or_default().to_owned(),
            code: StatusCode::Error as i32,
        },
        _ => Status {
            message: String::new(),
            code: StatusCode::Ok as i32,
        },
    }
}

fn kind(stored: Option<&str>) -> SpanKind {
    match stored {
        Some("server") => SpanKind::Server,
        Some("client") => SpanKind::Client,
        Some("producer") => SpanKind::Producer,
        Some("consumer") => SpanKind::Consumer,
        _ => SpanKind::Internal,
    }
}

fn nanos(ns: i64) -> u64 {
    u64::try_from(ns).unwrap_or(0)
}

fn text(s: &str) -> any_value::Value {
    any_value::Value::StringValue(s.to_owned())
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// Stored attributes (a JSON object) as OTLP key-values, keeping their types.
fn json_attributes(text: Option<&str>) -> Vec<KeyValue> {
    let Some(Value::Object(map)) = text.and_then(|t| serde_json::from_str(t).ok()) else {
        return Vec::new();
    };
    map.iter()
        .filter_map(|(k, v)| Some(kv(k, any(v)?)))
        .collect()
}

fn any(v: &Value) -> Option<any_value::Value> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => any_value::Value::BoolValue(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64()?),
        },
        Value::String(s) => any_value::Value::StringValue(s.clone()),
        Value::Array(a) => any_value::Value::ArrayValue(ArrayValue {
            values: a
                .iter()
                .filter_map(|v| {
                    Some(AnyValue {
                        value: Some(any(v)?),
                    })
                })
                .collect(),
        }),
        Value::Object(m) => any_value::Value::KvlistValue(KeyValueList {
            values: m.iter().filter_map(|(k, v)| Some(kv(k, any(v)?))).collect(),
        }),
    })
}

/// A run's trace id: its own for a run that came in over OTLP, else derived from its id.
fn trace_id(run_id: &str) -> [u8; 16] {
    if let Some(bytes) = crate::otlp_ids::trace_id_of(run_id) {
        return bytes;
    }
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&hash64(run_id));
    id[8..].copy_from_slice(&hash64(&format!("{run_id}/trace")));
    id
}

/// A span's id: its own for a span that came in over OTLP, else derived from its id.
fn span_id(span_id: &str) -> [u8; 8] {
    if let Some(bytes) = crate::otlp_ids::span_id_of(span_id) {
        return bytes;
    }
    hash64(span_id)
}

/// FNV-1a, 64 bits: stable across builds and versions (the standard hasher is not); never
/// all zeros (OTLP's "no id").
fn hash64(text: &str) -> [u8; 8] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    if h == 0 {
        h = 1;
    }
    h.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(run_id: &str, spans: Vec<ExportSpan>) -> ExportRun {
        ExportRun {
            run_id: run_id.into(),
            name: "task".into(),
            status: RunStatus::Failed,
            error: Some("tool failed".into()),
            attributes: Some(r#"{"model":"m","n":3}"#.into()),
            started_at_ns: 10,
            ended_at_ns: Some(20),
            client_name: Some("agent".into()),
            start: Some(ResourceContext {
                gpu_free_min_bytes: Some(100 << 20),
                ..Default::default()
            }),
            end: None,
            spans,
            events: vec![],
        }
    }

    fn span(id: &str, parent: Option<&str>) -> ExportSpan {
        ExportSpan {
            span_id: id.into(),
            parent_span_id: parent.map(str::to_owned),
            name: "step".into(),
            kind: Some("client".into()),
            status: RunStatus::Ok,
            error: None,
            attributes: None,
            started_at_ns: 11,
            ended_at_ns: Some(12),
            start: None,
            end: None,
        }
    }

    #[test]
    fn a_runlens_run_is_the_root_of_its_trace_with_stable_ids_and_its_context() {
        let r = run("r1", vec![span("s1", None), span("s2", Some("s1"))]);
        let spans = run_spans(&r);
        assert_eq!(spans.len(), 3);
        let root = &spans[0];
        assert_eq!(root.name, "task");
        assert!(root.parent_span_id.is_empty());
        assert_eq!(root.status.as_ref().unwrap().message, "tool failed");
        assert!(
            root.attributes
                .iter()
                .any(|kv| kv.key == "runlens.start.gpu.memory.free_min")
        );
        assert_eq!(
            spans[1].parent_span_id, root.span_id,
            "top spans hang under the run"
        );
        assert_eq!(spans[2].parent_span_id, spans[1].span_id);
        assert_eq!(spans[1].kind, SpanKind::Client as i32);
        // Sent again, the same ids.
        assert_eq!(run_spans(&r), spans);
    }

    #[test]
    fn an_otlp_run_keeps_its_own_trace_span_ids_and_root() {
        let trace = "5b8efff798038103d269b633813fc60c";
        let root = format!("otlp/{trace}/eee19b7ec3c1b174");
        let child = format!("otlp/{trace}/0102030405060708");
        let r = run(
            &format!("otlp/{trace}"),
            vec![span(&root, None), span(&child, Some(&root))],
        );
        let spans = run_spans(&r);
        assert_eq!(spans.len(), 2, "no extra root");
        assert_eq!(
            spans[0].trace_id,
            crate::otlp_ids::trace_id_of(&format!("otlp/{trace}")).unwrap()
        );
        assert_eq!(
            spans[0].span_id,
            [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]
        );
        assert!(spans[0].parent_span_id.is_empty());
        assert_eq!(spans[1].parent_span_id, spans[0].span_id);
    }
}
