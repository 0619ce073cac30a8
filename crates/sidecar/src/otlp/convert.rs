//! OTLP traces into the ingest core's trace commands: the one place where the OTLP
//! mapping lives (the README's table says the same).
//!
//! | OTLP | runlens |
//! |---|---|
//! | trace | a run, id `otlp/<trace id hex>` (client ids cannot contain `/`) |
//! | root span (no parent) | the run's name, status, error, start, end, attributes |
//! | span | a span, id `otlp/<trace id hex>/<span id hex>`, parent likewise, `kind` |
//! | `status.code` ERROR | `failed`, error = `status.message`, else the `exception` event's `exception.type: exception.message` |
//! | attributes | JSON (strings, booleans, integers, doubles, arrays, nested maps; bytes as hex) |
//! | span events | `events` rows (kind `event`) |
//! | `gen_ai.usage.input_tokens` / `output_tokens` (also `gen_ai.usage.prompt_tokens` / `completion_tokens`, `llm.token_count.prompt` / `completion`) | metrics `gen_ai.usage.input_tokens` / `gen_ai.usage.output_tokens`, unit `{token}` |
//! | resource `service.name`, `process.pid` | the client's name and the agent PID watched for RSS, CPU and GPU memory |
//! | every resource attribute (`k8s.*`, `host.name`, `container.id` ...) | `clients.resource` (JSON) |

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind as OtlpKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use serde_json::{Map, Value};

use crate::domain::{Outcome, SpanKind};
use crate::ingest::trace::{TraceBatch, TraceClient, TraceEvent, TraceMetric, TraceSpan};

/// Token-count attributes and the metric each becomes; the first present of each metric wins.
const TOKEN_ATTRIBUTES: [(&str, &str); 6] = [
    ("gen_ai.usage.input_tokens", INPUT_TOKENS),
    ("gen_ai.usage.prompt_tokens", INPUT_TOKENS),
    ("llm.token_count.prompt", INPUT_TOKENS),
    ("gen_ai.usage.output_tokens", OUTPUT_TOKENS),
    ("gen_ai.usage.completion_tokens", OUTPUT_TOKENS),
    ("llm.token_count.completion", OUTPUT_TOKENS),
];
/// The metric of prompt tokens.
pub const INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
/// The metric of generated tokens.
pub const OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";

/// The request as one batch per resource, and the spans refused for their ids (the
/// remaining rules are the core's).
pub fn batches(request: ExportTraceServiceRequest) -> (Vec<TraceBatch>, Vec<String>) {
    let mut rejected = Vec::new();
    let batches = request
        .resource_spans
        .into_iter()
        .map(|rs| resource_batch(rs, &mut rejected))
        .collect();
    (batches, rejected)
}

fn resource_batch(rs: ResourceSpans, rejected: &mut Vec<String>) -> TraceBatch {
    let resource = rs
        .resource
        .map(|r| attributes(r.attributes))
        .unwrap_or_default();
    let client = client(resource);
    let mut spans = Vec::new();
    for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
        match trace_span(span) {
            Ok(span) => spans.push(span),
            Err(why) => rejected.push(why),
        }
    }
    TraceBatch { client, spans }
}

/// The sender: `service.name` and `process.pid` name it, every attribute is kept.
fn client(resource: Map<String, Value>) -> TraceClient {
    let name = resource
        .get("service.name")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or("unknown_service")
        .to_owned();
    let pid = resource
        .get("process.pid")
        .and_then(Value::as_u64)
        .and_then(|p| u32::try_from(p).ok())
        .unwrap_or(0);
    let client_id = crate::otlp_ids::client_id(&name, pid);
    TraceClient {
        client_id,
        name,
        pid,
        resource,
    }
}

/// One span, or why its ids make it unusable.
fn trace_span(span: Span) -> Result<TraceSpan, String> {
    let problem = |field: &str, bytes: &[u8], len: usize| {
        format!("span {:?}: {field} {}", span.name, id_problem(bytes, len))
    };
    if !id_ok(&span.trace_id, 16) {
        return Err(problem("trace_id", &span.trace_id, 16));
    }
    if !id_ok(&span.span_id, 8) {
        return Err(problem("span_id", &span.span_id, 8));
    }
    let parent_given = !span.parent_span_id.is_empty();
    if parent_given && !id_ok(&span.parent_span_id, 8) {
        return Err(problem("parent_span_id", &span.parent_span_id, 8));
    }
    let run_id = crate::otlp_ids::run_id(&span.trace_id);
    let span_id = crate::otlp_ids::span_id(&run_id, &span.span_id);
    let parent = parent_given.then(|| crate::otlp_ids::span_id(&run_id, &span.parent_span_id));
    let exception = span
        .events
        .iter()
        .find(|e| e.name == "exception")
        .map(|e| exception_text(&e.attributes));
    let outcome = match span.status.as_ref().map(|s| (s.code, s.message.as_str())) {
        Some((code, message)) if code == StatusCode::Error as i32 => {
            let text = if message.is_empty() {
                exception.unwrap_or_else(|| "error (no message)".to_owned())
            } else {
                message.to_owned()
            };
            Outcome::Failed(text)
        }
        _ => Outcome::Ok,
    };
    let span_attributes = attributes(span.attributes);
    let metrics = token_metrics(&span_attributes);
    let events = span
        .events
        .into_iter()
        .map(|e| TraceEvent {
            name: e.name,
            at_ns: nanos(e.time_unix_nano),
            attributes: attributes(e.attributes),
        })
        .collect();
    Ok(TraceSpan {
        run_id,
        span_id,
        parent_span_id: parent,
        name: span.name,
        kind: kind(span.kind),
        outcome,
        attributes: span_attributes,
        start_ns: nanos(span.start_time_unix_nano),
        end_ns: nanos(span.end_time_unix_nano),
        events,
        metrics,
    })
}

fn kind(raw: i32) -> Option<SpanKind> {
    match OtlpKind::try_from(raw).ok()? {
        OtlpKind::Unspecified => None,
        OtlpKind::Internal => Some(SpanKind::Internal),
        OtlpKind::Server => Some(SpanKind::Server),
        OtlpKind::Client => Some(SpanKind::Client),
        OtlpKind::Producer => Some(SpanKind::Producer),
        OtlpKind::Consumer => Some(SpanKind::Consumer),
    }
}

/// Unix ns as SQLite's signed integer (no timestamp before 2262 comes near the limit).
fn nanos(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

/// Whether an id is `len` bytes and not all zero (the OTLP rule).
fn id_ok(bytes: &[u8], len: usize) -> bool {
    bytes.len() == len && bytes.iter().any(|b| *b != 0)
}

fn id_problem(bytes: &[u8], len: usize) -> String {
    if bytes.len() == len {
        "is all zeros (invalid)".to_owned()
    } else {
        format!("is {} bytes; it must be {len}", bytes.len())
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    crate::otlp_ids::push_hex(&mut text, bytes);
    text
}

/// Appends lowercase hex (a table, not the formatter: every span has three ids).
/// "Type: message" from an `exception` event's attributes.
fn exception_text(attributes: &[KeyValue]) -> String {
    let get = |key: &str| {
        attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .map(|v| match json(v) {
                Value::String(s) => s,
                other => other.to_string(),
            })
    };
    match (get("exception.type"), get("exception.message")) {
        (Some(t), Some(m)) => format!("{t}: {m}"),
        (Some(t), None) => t,
        (None, Some(m)) => m,
        (None, None) => "exception (no type or message)".to_owned(),
    }
}

/// Attributes as a JSON object, keeping their types.
fn attributes(list: Vec<KeyValue>) -> Map<String, Value> {
    list.into_iter()
        .map(|kv| (kv.key, kv.value.as_ref().map_or(Value::Null, json)))
        .collect()
}

/// One OTLP value as JSON: every kind of value, nested ones too; bytes as hex; a double
/// that is not finite as null (JSON has no NaN).
fn json(value: &AnyValue) -> Value {
    match &value.value {
        None => Value::Null,
        Some(any_value::Value::StringValue(s)) => Value::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Value::from(*i),
        Some(any_value::Value::DoubleValue(d)) => {
            serde_json::Number::from_f64(*d).map_or(Value::Null, Value::Number)
        }
        Some(any_value::Value::ArrayValue(a)) => Value::Array(a.values.iter().map(json).collect()),
        Some(any_value::Value::KvlistValue(kv)) => Value::Object(
            kv.values
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, json)))
                .collect(),
        ),
        Some(any_value::Value::BytesValue(b)) => Value::String(hex(b)),
        Some(any_value::Value::StringValueStrindex(_)) => Value::Null,
    }
}

/// Token counts among a span's attributes, as metrics.
fn token_metrics(attributes: &Map<String, Value>) -> Vec<TraceMetric> {
    let mut metrics: Vec<TraceMetric> = Vec::new();
    for (key, metric) in TOKEN_ATTRIBUTES {
        if metrics.iter().any(|m| m.name == metric) {
            continue;
        }
        let value = match attributes.get(key) {
            Some(Value::Number(n)) => n.as_f64(),
            Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        if let Some(value) = value {
            // Which convention named it, when it was not the current one.
            let mut from = Map::new();
            if key != metric {
                from.insert("from".into(), Value::String(key.into()));
            }
            metrics.push(TraceMetric {
                name: metric.to_owned(),
                value,
                unit: "{token}".to_owned(),
                attributes: from,
            });
        }
    }
    metrics
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::Event;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Status};

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn s(text: &str) -> any_value::Value {
        any_value::Value::StringValue(text.into())
    }

    fn span(trace: u8, id: u8, parent: Option<u8>) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: "chat llama".into(),
            kind: OtlpKind::Client as i32,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 2_000,
            ..Default::default()
        }
    }

    fn request(resource: Vec<KeyValue>, spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: resource,
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

    #[test]
    fn a_trace_becomes_a_run_and_its_spans_keep_their_parents() {
        let (batches, rejected) = batches(request(
            vec![
                kv("service.name", s("my agent")),
                kv("process.pid", any_value::Value::IntValue(4242)),
                kv("k8s.pod.name", s("agent-0")),
            ],
            vec![span(0xab, 1, None), span(0xab, 2, Some(1))],
        ));
        assert!(rejected.is_empty());
        let b = &batches[0];
        assert_eq!(b.client.client_id, "otlp/my_agent/4242");
        assert_eq!(b.client.name, "my agent");
        assert_eq!(b.client.pid, 4242);
        assert_eq!(b.client.resource["k8s.pod.name"], "agent-0");
        let trace = "ab".repeat(16);
        assert_eq!(b.spans[0].run_id, format!("otlp/{trace}"));
        assert_eq!(b.spans[0].parent_span_id, None);
        assert_eq!(
            b.spans[1].parent_span_id.as_deref(),
            Some(format!("otlp/{trace}/0101010101010101").as_str())
        );
        assert_eq!(b.spans[1].kind, Some(SpanKind::Client));
    }

    #[test]
    fn bad_ids_are_refused_one_by_one() {
        let mut zero = span(0, 1, None);
        zero.name = "zero".into();
        let mut short = span(1, 1, None);
        short.span_id = vec![1; 4];
        let (batches, rejected) = batches(request(vec![], vec![zero, short, span(1, 2, None)]));
        assert_eq!(batches[0].spans.len(), 1);
        assert_eq!(rejected.len(), 2);
        assert!(rejected[0].contains("all zeros"), "{rejected:?}");
        assert!(
            rejected[1].contains("is 4 bytes; it must be 8"),
            "{rejected:?}"
        );
        assert_eq!(batches[0].client.client_id, "otlp/unknown_service");
    }

    #[test]
    fn every_kind_of_value_becomes_json() {
        let mut sp = span(1, 1, None);
        sp.attributes = vec![
            kv("s", s("x")),
            kv("b", any_value::Value::BoolValue(true)),
            kv("i", any_value::Value::IntValue(-3)),
            kv("d", any_value::Value::DoubleValue(0.5)),
            kv("nan", any_value::Value::DoubleValue(f64::NAN)),
            kv("bytes", any_value::Value::BytesValue(vec![0xde, 0xad])),
            kv(
                "a",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(s("y")),
                    }],
                }),
            ),
            kv(
                "m",
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![kv("k", any_value::Value::IntValue(1))],
                }),
            ),
        ];
        let (batches, _) = batches(request(vec![], vec![sp]));
        assert_eq!(
            Value::Object(batches[0].spans[0].attributes.clone()).to_string(),
            r#"{"a":["y"],"b":true,"bytes":"dead","d":0.5,"i":-3,"m":{"k":1},"nan":null,"s":"x"}"#
        );
    }

    #[test]
    fn errors_take_the_status_message_or_else_the_exception() {
        let mut with_message = span(1, 1, None);
        with_message.status = Some(Status {
            message: "rate limited".into(),
            code: StatusCode::Error as i32,
        });
        let mut with_exception = span(1, 2, None);
        with_exception.status = Some(Status {
            message: String::new(),
            code: StatusCode::Error as i32,
        });
        with_exception.events = vec![Event {
            name: "exception".into(),
            time_unix_nano: 1_500,
            attributes: vec![
                kv("exception.type", s("TimeoutError")),
                kv("exception.message", s("tool took too long")),
            ],
            ..Default::default()
        }];
        let mut unset = span(1, 3, None);
        unset.status = Some(Status {
            message: "ignored".into(),
            code: StatusCode::Unset as i32,
        });
        let (batches, _) = batches(request(vec![], vec![with_message, with_exception, unset]));
        let outcomes: Vec<_> = batches[0].spans.iter().map(|s| s.outcome.clone()).collect();
        assert_eq!(
            outcomes,
            [
                Outcome::Failed("rate limited".into()),
                Outcome::Failed("TimeoutError: tool took too long".into()),
                Outcome::Ok
            ]
        );
        assert_eq!(batches[0].spans[1].events[0].at_ns, 1_500);
    }

    #[test]
    fn token_counts_become_metrics_whichever_convention_names_them() {
        let mut current = span(1, 1, None);
        current.attributes = vec![
            kv("gen_ai.usage.input_tokens", any_value::Value::IntValue(12)),
            kv("gen_ai.usage.output_tokens", any_value::Value::IntValue(34)),
            // The older name for the same count is not counted twice.
            kv("gen_ai.usage.prompt_tokens", any_value::Value::IntValue(12)),
        ];
        let mut older = span(1, 2, None);
        older.attributes = vec![
            kv("gen_ai.usage.prompt_tokens", any_value::Value::IntValue(5)),
            kv(
                "gen_ai.usage.completion_tokens",
                any_value::Value::IntValue(6),
            ),
        ];
        let mut openinference = span(1, 3, None);
        openinference.attributes = vec![
            kv("llm.token_count.prompt", s("7")),
            kv(
                "llm.token_count.completion",
                any_value::Value::DoubleValue(8.0),
            ),
        ];
        let (batches, _) = batches(request(vec![], vec![current, older, openinference]));
        let figures: Vec<Vec<(String, f64)>> = batches[0]
            .spans
            .iter()
            .map(|s| {
                s.metrics
                    .iter()
                    .map(|m| (m.name.clone(), m.value))
                    .collect()
            })
            .collect();
        let pair =
            |i: f64, o: f64| vec![(INPUT_TOKENS.to_owned(), i), (OUTPUT_TOKENS.to_owned(), o)];
        assert_eq!(figures, [pair(12.0, 34.0), pair(5.0, 6.0), pair(7.0, 8.0)]);
    }
}
