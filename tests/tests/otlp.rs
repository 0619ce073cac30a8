//! OpenTelemetry agents in: OTLP traces over gRPC and HTTP become runs and spans with the
//! machine at each span's own start and end, tokens as metrics, errors with their text;
//! resends double nothing, bad spans are refused alone, traces split over exports and a
//! sidecar kill end in one run.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use runlens_e2e::{Sidecar, http_post};

const MS: u64 = 1_000_000;

fn now_ns() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn text(s: &str) -> any_value::Value {
    any_value::Value::StringValue(s.into())
}

fn int(i: i64) -> any_value::Value {
    any_value::Value::IntValue(i)
}

/// A span of trace `trace` (one byte repeated), id `id`, under `parent`, from `start` for
/// `ms` milliseconds.
fn span(trace: u8, id: u8, parent: Option<u8>, name: &str, start: u64, ms: u64) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        kind: SpanKind::Internal as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + ms * MS,
        ..Default::default()
    }
}

fn export_of(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", text("support-agent")),
                    kv("k8s.pod.name", text("agent-7f9c")),
                    kv("host.name", text("gpu-node-3")),
                ],
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

async fn export_grpc(
    sidecar: &Sidecar,
    request: ExportTraceServiceRequest,
) -> ExportTraceServiceResponse {
    let addr = sidecar.otlp_grpc.as_ref().expect("OTLP gRPC on");
    let mut client = TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    client.export(request).await.unwrap().into_inner()
}

fn trace_hex(trace: u8) -> String {
    format!("{trace:02x}").repeat(16)
}

fn run_id(trace: u8) -> String {
    format!("otlp/{}", trace_hex(trace))
}

fn span_id(trace: u8, id: u8) -> String {
    format!(
        "otlp/{}/{}",
        trace_hex(trace),
        format!("{id:02x}").repeat(8)
    )
}

/// An agent-shaped trace: `invoke_agent` (root) over an LLM call with tokens and a tool
/// call that failed with an exception, all ended `ago_ms` before now.
fn agent_trace(trace: u8, start: u64) -> Vec<Span> {
    let root = span(trace, 1, None, "invoke_agent support", start, 600);
    let mut llm = span(trace, 2, Some(1), "chat llama-3-8b", start + 50 * MS, 300);
    llm.kind = SpanKind::Client as i32;
    llm.attributes = vec![
        kv("gen_ai.operation.name", text("chat")),
        kv("gen_ai.request.model", text("llama-3-8b")),
        kv("gen_ai.usage.input_tokens", int(812)),
        kv("gen_ai.usage.output_tokens", int(256)),
    ];
    llm.events = vec![Event {
        time_unix_nano: start + 200 * MS,
        name: "first_token".into(),
        attributes: vec![kv("ttft_ms", int(150))],
        ..Default::default()
    }];
    let mut tool = span(
        trace,
        3,
        Some(1),
        "execute_tool search",
        start + 400 * MS,
        150,
    );
    tool.status = Some(Status {
        message: String::new(),
        code: StatusCode::Error as i32,
    });
    tool.events = vec![Event {
        time_unix_nano: start + 540 * MS,
        name: "exception".into(),
        attributes: vec![
            kv("exception.type", text("TimeoutError")),
            kv("exception.message", text("search took longer than 100 ms")),
        ],
        ..Default::default()
    }];
    vec![tool, llm, root] // children first, as SDKs send them
}

#[tokio::test]
async fn an_otlp_trace_becomes_a_run_with_the_machine_at_each_spans_own_times() {
    let mut sidecar = Sidecar::start(); // samples every 100 ms
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The spans ended a second ago: their samples are the ones taken then, not now.
    let start = now_ns() - 1600 * MS;
    let answer = export_grpc(&sidecar, export_of(agent_trace(0xa1, start))).await;
    assert_eq!(answer.partial_success, None);

    let db = sidecar.sql();
    let (name, status, ended_by, started, ended): (String, String, String, i64, i64) = db
        .query_row(
            "SELECT name, status, ended_by, started_at_ns, ended_at_ns FROM runs WHERE run_id = ?1",
            [run_id(0xa1)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
        )
        .unwrap();
    assert_eq!(
        (name.as_str(), status.as_str(), ended_by.as_str()),
        ("invoke_agent support", "ok", "client")
    );
    assert_eq!((started, ended), (start as i64, (start + 600 * MS) as i64));

    let tool: (String, String, String, String) = db
        .query_row(
            "SELECT status, error, parent_span_id, kind FROM spans WHERE span_id = ?1",
            [span_id(0xa1, 3)],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(tool.0, "failed");
    assert_eq!(tool.1, "TimeoutError: search took longer than 100 ms");
    assert_eq!(tool.2, span_id(0xa1, 1));
    assert_eq!(tool.3, "internal");

    // Every span's start and end samples are within one interval (100 ms) of its own
    // start and end, though they arrived a second and a half later.
    let mut stmt = db
        .prepare(
            "SELECT sp.name, sp.started_at_ns - a.taken_at_ns, sp.ended_at_ns - b.taken_at_ns
             FROM spans sp JOIN snapshots a ON a.snapshot_id = sp.start_snapshot_id
                           JOIN snapshots b ON b.snapshot_id = sp.end_snapshot_id
             WHERE sp.run_id = ?1",
        )
        .unwrap();
    let gaps: Vec<(String, i64, i64)> = stmt
        .query_map([run_id(0xa1)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(gaps.len(), 3, "every span has both samples: {gaps:?}");
    for (name, at_start, at_end) in &gaps {
        assert!(
            at_start.abs() <= 100_000_000,
            "{name}: start sample {at_start} ns away"
        );
        assert!(
            at_end.abs() <= 100_000_000,
            "{name}: end sample {at_end} ns away"
        );
    }
    // The run's own samples too, and the span_resources view sees the spans.
    assert_eq!(
        sidecar.count(&format!(
            "SELECT count(*) FROM run_resources WHERE run_id = '{}'
             AND start_snapshot_id IS NOT NULL AND end_snapshot_id IS NOT NULL",
            run_id(0xa1)
        )),
        1
    );
    assert_eq!(
        sidecar.count(&format!(
            "SELECT count(*) FROM span_resources WHERE run_id = '{}'",
            run_id(0xa1)
        )),
        3
    );

    // Tokens are metrics that sum in SQL; events are events.
    let tokens: (f64, f64) = db
        .query_row(
            "SELECT sum(value) FILTER (WHERE name = 'gen_ai.usage.input_tokens'),
                    sum(value) FILTER (WHERE name = 'gen_ai.usage.output_tokens')
             FROM events WHERE kind = 'metric' AND run_id = ?1",
            [run_id(0xa1)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(tokens, (812.0, 256.0));
    assert_eq!(
        sidecar.count("SELECT count(*) FROM events WHERE kind = 'event' AND name IN ('first_token', 'exception')"),
        2
    );
    // The sender, with its resource.
    let resource: String = db
        .query_row(
            "SELECT resource FROM clients WHERE client_id = 'otlp/support-agent'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let resource: serde_json::Value = serde_json::from_str(&resource).unwrap();
    assert_eq!(resource["k8s.pod.name"], "agent-7f9c");
    sidecar.stop();
}

#[tokio::test]
async fn a_resent_batch_doubles_nothing_and_one_bad_span_among_100_is_refused_alone() {
    let mut sidecar = Sidecar::start();
    let start = now_ns() - 2000 * MS;
    let mut spans: Vec<Span> = (1..=100u8)
        .map(|i| {
            let mut s = span(0xb2, i, Some(1), "step", start + u64::from(i) * MS, 1);
            s.attributes = vec![kv("gen_ai.usage.output_tokens", int(10))];
            s
        })
        .collect();
    spans[0].parent_span_id.clear(); // span 1 is the root
    spans[41].end_time_unix_nano = spans[41].start_time_unix_nano - 1; // ends before it starts
    let answer = export_grpc(&sidecar, export_of(spans.clone())).await;
    let partial = answer.partial_success.expect("a partial success");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("ends before it starts"),
        "{}",
        partial.error_message
    );
    assert!(
        partial.error_message.contains(&span_id(0xb2, 42)),
        "{}",
        partial.error_message
    );
    let stored = "SELECT count(*) FROM spans WHERE run_id LIKE 'otlp/b2b2%'";
    let tokens = "SELECT count(*) FROM events WHERE kind = 'metric' AND run_id LIKE 'otlp/b2b2%'";
    assert_eq!(sidecar.count(stored), 99);
    assert_eq!(sidecar.count(tokens), 99);

    // The SDK retries the whole batch (as after an UNAVAILABLE): nothing doubles.
    export_grpc(&sidecar, export_of(spans)).await;
    assert_eq!(sidecar.count(stored), 99);
    assert_eq!(sidecar.count(tokens), 99);
    assert_eq!(
        sidecar.count("SELECT count(*) FROM runs WHERE run_id LIKE 'otlp/b2b2%'"),
        1
    );

    // A trace from an hour before the sidecar's first sample: stored, without samples,
    // and counted in the log.
    let old = now_ns() - 3_600_000 * MS;
    let long_ago = span(0xb3, 1, None, "long ago", old, 5);
    export_grpc(&sidecar, export_of(vec![long_ago])).await;
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM spans WHERE name = 'long ago'
             AND start_snapshot_id IS NULL AND end_snapshot_id IS NULL"
        ),
        1
    );
    // Counted in /metrics: its start and end found no sample.
    let metrics = runlens_e2e::http_get(sidecar.metrics.as_deref().unwrap(), "/metrics", &[]);
    let text = String::from_utf8_lossy(&metrics.body);
    let unmatched: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(r#"runlens_sample_matches_total{result="none"} "#))
        .unwrap_or_else(|| panic!("no unmatched count in /metrics:\n{text}"))
        .parse()
        .unwrap();
    assert!(unmatched >= 2.0, "{unmatched}");
    let logs = sidecar.stop();
    assert!(
        logs.contains("boundaries stored without a resource sample"),
        "{logs}"
    );
}

#[tokio::test]
async fn a_trace_split_over_three_exports_and_a_sidecar_kill_ends_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("split.db");
    let grpc = runlens_e2e::free_addr();
    let flags = [
        "--otlp-grpc-listen",
        grpc.as_str(),
        "--sample-interval",
        "100ms",
    ];
    let mut sidecar = Sidecar::start_on(&db, &flags);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = now_ns() - 400 * MS;
    let mut spans = agent_trace(0xc3, start);
    let root = spans.pop().unwrap();
    let llm = spans.pop().unwrap();
    let tool = spans.pop().unwrap();

    export_grpc(&sidecar, export_of(vec![tool])).await;
    let waiting: (String, String) = sidecar
        .sql()
        .query_row(
            "SELECT name, status FROM runs WHERE run_id = ?1",
            [run_id(0xc3)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        waiting,
        ("(root span not received yet)".into(), "running".into())
    );
    export_grpc(&sidecar, export_of(vec![llm])).await;
    // Acknowledged means committed: a SIGKILL now loses nothing.
    sidecar.stop_with("KILL");
    let mut sidecar = Sidecar::start_on(&db, &flags);
    export_grpc(&sidecar, export_of(vec![root])).await;

    assert_eq!(sidecar.count("SELECT count(*) FROM runs"), 1);
    let run: (String, String) = sidecar
        .sql()
        .query_row(
            "SELECT name, status FROM runs WHERE run_id = ?1",
            [run_id(0xc3)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(run, ("invoke_agent support".into(), "ok".into()));
    assert_eq!(sidecar.count("SELECT count(*) FROM spans"), 3);
    sidecar.stop();
}

#[tokio::test]
async fn a_trace_whose_root_never_comes_is_ended_after_the_timeout_and_mended_if_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = Sidecar::start_on(
        &dir.path().join("rootless.db"),
        &["--otlp-root-timeout", "1s", "--sample-interval", "100ms"],
    );
    let start = now_ns() - 300 * MS;
    let mut spans = agent_trace(0xd4, start);
    let root = spans.pop().unwrap();
    export_grpc(&sidecar, export_of(spans)).await;
    let ended = "SELECT count(*) FROM runs WHERE status = 'failed' AND ended_by = 'root_missing'
                 AND error LIKE 'root span never received%'";
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while sidecar.count(ended) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the rootless run was never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It ended when its last span did.
    let last_end = (start + 550 * MS) as i64;
    assert_eq!(
        sidecar.count(&format!(
            "SELECT count(*) FROM runs WHERE ended_at_ns = {last_end}"
        )),
        1
    );
    // The root arrives after all: the run is what the root says.
    export_grpc(&sidecar, export_of(vec![root])).await;
    assert_eq!(
        sidecar.count("SELECT count(*) FROM runs WHERE status = 'ok' AND ended_by = 'client' AND error IS NULL"),
        1
    );
    sidecar.stop();
}

#[test]
fn otlp_http_takes_protobuf_json_with_hex_ids_and_gzip_and_refuses_clearly() {
    let mut sidecar = Sidecar::start();
    let http = sidecar.otlp_http.clone().expect("OTLP HTTP on");
    let start = now_ns() - 500 * MS;

    // Protobuf, gzipped.
    let body = export_of(agent_trace(0xe5, start)).encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&body).unwrap();
    let answer = http_post(
        &http,
        "/v1/traces",
        &[
            ("Content-Type", "application/x-protobuf"),
            ("Content-Encoding", "gzip"),
        ],
        &gz.finish().unwrap(),
    );
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("content-type"),
        Some("application/x-protobuf")
    );
    assert_eq!(
        ExportTraceServiceResponse::decode(answer.body.as_slice())
            .unwrap()
            .partial_success,
        None
    );
    assert_eq!(
        sidecar.count("SELECT count(*) FROM spans WHERE run_id LIKE 'otlp/e5e5%'"),
        3
    );

    // OTLP JSON: hex ids, enums as integers, nanoseconds as strings.
    let json = serde_json::json!({
        "resourceSpans": [{
            "resource": { "attributes": [
                { "key": "service.name", "value": { "stringValue": "json-agent" } } ] },
            "scopeSpans": [{ "spans": [{
                "traceId": "5b8efff798038103d269b633813fc60c",
                "spanId": "eee19b7ec3c1b174",
                "name": "invoke_agent json",
                "kind": 2,
                "startTimeUnixNano": start.to_string(),
                "endTimeUnixNano": (start + 5 * MS).to_string(),
                "attributes": [
                    { "key": "gen_ai.usage.input_tokens", "value": { "intValue": "42" } },
                    { "key": "flag", "value": { "boolValue": true } } ],
                "status": { "code": 2, "message": "model refused" }
            }] }]
        }]
    });
    let answer = http_post(
        &http,
        "/v1/traces",
        &[("Content-Type", "application/json")],
        json.to_string().as_bytes(),
    );
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let row: (String, String, String, String) = sidecar
        .sql()
        .query_row(
            "SELECT status, error, kind, attributes FROM spans
             WHERE span_id = 'otlp/5b8efff798038103d269b633813fc60c/eee19b7ec3c1b174'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(row.0, "failed");
    assert_eq!(row.1, "model refused");
    assert_eq!(row.2, "server");
    assert!(row.3.contains(r#""flag":true"#), "{}", row.3);
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM events WHERE name = 'gen_ai.usage.input_tokens' AND value = 42"
        ),
        1
    );

    // Refusals: a body that is not OTLP, a type we do not speak, a body over the limit.
    let garbage = http_post(
        &http,
        "/v1/traces",
        &[("Content-Type", "application/json")],
        b"{not json",
    );
    assert_eq!(garbage.status, 400);
    assert!(String::from_utf8_lossy(&garbage.body).contains("not an OTLP JSON trace export"));
    let wrong = http_post(
        &http,
        "/v1/traces",
        &[("Content-Type", "text/plain")],
        b"hello",
    );
    assert_eq!(wrong.status, 415);
    let huge = vec![b' '; 17 * 1024 * 1024];
    let too_big = http_post(
        &http,
        "/v1/traces",
        &[("Content-Type", "application/json")],
        &huge,
    );
    assert_eq!(too_big.status, 413);
    sidecar.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_over_an_otlp_only_history_names_the_step_slowed_by_gpu_memory() {
    // One GPU whose free memory falls from about 40 GiB to about 1 GiB while an agent,
    // traced with OpenTelemetry only, makes LLM calls that get slower as it falls.
    const TOTAL: u64 = 80 << 30;
    let gpu = |free_mib: u64| {
        serde_json::json!({ "devices": [{ "name": "H100", "uuid": "GPU-otlp",
            "memory_total_bytes": TOTAL, "memory_used_bytes": TOTAL - (free_mib << 20) }] })
        .to_string()
    };
    let scenario = runlens_e2e::Scenario::new(&gpu(40_000));
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = Sidecar::start_with_fake_nvml(&dir.path().join("report.db"), &scenario);
    for i in 0..30u8 {
        scenario.write(&gpu(40_000 - u64::from(i) * 1_300));
        // Two samples (every 100 ms) of the new figure before the task starts.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let start = now_ns() - 20 * MS;
        let llm_ms = 100 + u64::from(i) * 20;
        let tool_ms = if i % 2 == 0 { 10 } else { 30 };
        let trace = 0x10 + i;
        let root = span(
            trace,
            1,
            None,
            "invoke_agent support",
            start,
            llm_ms + tool_ms + 5,
        );
        let llm = span(trace, 2, Some(1), "chat llama-3-8b", start + MS, llm_ms);
        let tool = span(
            trace,
            3,
            Some(1),
            "execute_tool search",
            start + (llm_ms + 2) * MS,
            tool_ms,
        );
        // Exported once the task has ended, as a span processor does: a span that ends
        // after it arrived would say the agent's clock runs ahead.
        tokio::time::sleep(Duration::from_millis(llm_ms + tool_ms)).await;
        export_grpc(&sidecar, export_of(vec![tool, llm, root])).await;
    }
    sidecar.stop();
    let report = runlens_e2e::report_json(&sidecar.db, &[]);
    assert_eq!(report["spans_analyzed"], 90);
    assert_eq!(report["runs_analyzed"], 30);
    let findings: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f.as_str())
        .collect();
    assert!(
        findings
            .iter()
            .any(|f| f.starts_with("chat llama-3-8b is slower when GPU 0 has less free memory")),
        "{findings:?}"
    );
    assert!(
        !findings
            .iter()
            .any(|f| f.starts_with("execute_tool search")),
        "{findings:?}"
    );
}
