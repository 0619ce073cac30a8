//! `runlens bench otlp`: `runlens serve` as a separate process with a fresh database, fed
//! OpenTelemetry traces over OTLP/gRPC in batches as an SDK's batch exporter sends them,
//! with every figure printed and the database checked at the end.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use probe_core::cpu_seconds;

use super::support::{
    ServeProcess, StoredDb, TempDir, mib, require_all_stored, status_bytes, summary,
};
use crate::cli::OtlpBenchArgs;
use crate::exit::{FAILURE, Failure, USAGE};
use crate::format::outln;

/// Runs the benchmark.
pub fn run(args: OtlpBenchArgs) -> Result<(), Failure> {
    if args.spans == 0 || args.batch == 0 || args.trace_spans == 0 || args.concurrency == 0 {
        return Err(Failure::new(
            USAGE,
            "--spans, --batch, --trace-spans and --concurrency must be positive",
        ));
    }
    if !args.batch.is_multiple_of(args.trace_spans) {
        return Err(Failure::new(
            USAGE,
            "--batch must be a multiple of --trace-spans (whole traces per export)",
        ));
    }
    let dir = TempDir::new("otlp")?;
    let db = dir.0.join("otlp.db");
    let serve = ServeProcess::start(&db, &[])?;
    let addr = serve
        .otlp_grpc
        .clone()
        .ok_or_else(|| Failure::new(FAILURE, "runlens serve did not say its OTLP address"))?;
    let batches = args.spans.div_ceil(args.batch);
    let sent = batches * args.batch;
    outln!(
        "runlens bench otlp: {sent} spans in {batches} exports of {} ({} spans a trace, every \
         fourth an LLM call with token counts), {} in flight, to runlens serve (pid {}) at {addr}",
        args.batch,
        args.trace_spans,
        args.concurrency,
        serve.pid
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| Failure::new(FAILURE, format!("cannot start a runtime: {e}")))?;
    let cpu_before = cpu_seconds(serve.pid);
    let result = runtime.block_on(drive(&args, &addr, batches));
    let cpu_after = cpu_seconds(serve.pid);
    let peak = status_bytes(serve.pid, "VmHWM:");
    serve.stop();
    let (elapsed, latencies) = result?;
    outln!(
        "{:.0} spans/s stored with both samples ({sent} spans acknowledged in {:.2} s)",
        sent as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    )?;
    outln!(
        "export latency (send to committed answer): {}",
        summary(latencies)
    )?;
    if let (Some(a), Some(b)) = (cpu_before, cpu_after) {
        outln!(
            "sidecar CPU {:.2} s, {:.1} µs per span",
            b - a,
            (b - a) * 1e6 / sent as f64
        )?;
    }
    outln!("sidecar peak resident memory: {}", mib(peak))?;
    let stored_db = StoredDb::open(&db)?;
    let count = |sql: &str| stored_db.count(sql);
    let stored = count(
        "SELECT count(*) FROM spans WHERE start_snapshot_id IS NOT NULL
         AND end_snapshot_id IS NOT NULL",
    )?;
    let runs = count("SELECT count(*) FROM runs WHERE status = 'ok'")?;
    outln!(
        "verified {stored}/{sent} spans stored, each with both samples; {runs}/{} runs named and \
         ended by their root",
        sent / args.trace_spans
    )?;
    require_all_stored(stored, sent, "the database")
}

/// Sends every batch, `concurrency` at a time; returns the time until the last answer and
/// each export's latency.
async fn drive(
    args: &OtlpBenchArgs,
    addr: &str,
    batches: u64,
) -> Result<(Duration, Vec<Duration>), Failure> {
    let fail = |e: &dyn std::fmt::Display| Failure::new(FAILURE, format!("OTLP export: {e}"));
    let client = TraceServiceClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| fail(&e))?;
    let start = Instant::now();
    let mut in_flight: tokio::task::JoinSet<Result<Duration, tonic::Status>> =
        tokio::task::JoinSet::new();
    let mut latencies = Vec::with_capacity(usize::try_from(batches).unwrap_or(0));
    for b in 0..batches {
        if in_flight.len() >= args.concurrency
            && let Some(done) = in_flight.join_next().await
        {
            latencies.push(done.map_err(|e| fail(&e))?.map_err(|e| fail(&e))?);
        }
        let request = export(b, args.batch, args.trace_spans);
        let mut client = client.clone();
        in_flight.spawn(async move {
            let sent = Instant::now();
            let answer = client.export(request).await?.into_inner();
            match answer.partial_success {
                Some(p) if p.rejected_spans > 0 => Err(tonic::Status::internal(p.error_message)),
                _ => Ok(sent.elapsed()),
            }
        });
    }
    while let Some(done) = in_flight.join_next().await {
        latencies.push(done.map_err(|e| fail(&e))?.map_err(|e| fail(&e))?);
    }
    Ok((start.elapsed(), latencies))
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// Export number `b`: whole traces of `trace_spans` spans that ended just now (each trace
/// id made of the export and trace number, so every id is new).
pub(super) fn export(b: u64, batch: u64, trace_spans: u64) -> ExportTraceServiceRequest {
    let now = u64::try_from(probe_core::unix_now_ns()).unwrap_or(0);
    let mut spans = Vec::with_capacity(usize::try_from(batch).unwrap_or(0));
    for t in 0..batch / trace_spans {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&(b + 1).to_be_bytes());
        trace_id[8..].copy_from_slice(&(t + 1).to_be_bytes());
        for s in 0..trace_spans {
            let llm = s % 4 == 1;
            let mut attributes = vec![kv(
                "gen_ai.operation.name",
                any_value::Value::StringValue(if llm { "chat" } else { "execute_tool" }.into()),
            )];
            if llm {
                attributes.push(kv(
                    "gen_ai.usage.input_tokens",
                    any_value::Value::IntValue(812),
                ));
                attributes.push(kv(
                    "gen_ai.usage.output_tokens",
                    any_value::Value::IntValue(256),
                ));
            }
            spans.push(Span {
                trace_id: trace_id.to_vec(),
                span_id: (s + 1).to_be_bytes().to_vec(),
                parent_span_id: if s == 0 {
                    Vec::new()
                } else {
                    1u64.to_be_bytes().to_vec()
                },
                name: match (s, llm) {
                    (0, _) => "invoke_agent bench".into(),
                    (_, true) => "chat llama-3-8b".into(),
                    _ => "execute_tool search".into(),
                },
                kind: if llm {
                    SpanKind::Client
                } else {
                    SpanKind::Internal
                } as i32,
                start_time_unix_nano: now - 2_000_000 + s,
                end_time_unix_nano: now - s,
                attributes,
                ..Default::default()
            });
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue("bench-otlp".into()),
                )],
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
