//! A plain OpenTelemetry SDK agent, unaware of runlens: the Rust SDK with its OTLP exporter,
//! over gRPC (tonic) and over HTTP (protobuf), pointed at the sidecar.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use opentelemetry::KeyValue;
use opentelemetry::trace::{Status, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use runlens_e2e::Sidecar;

/// What an agent does: a run of an LLM call (with token counts) and a failing tool call.
fn agent_work(tracer: &dyn ObjectTracer) {
    tracer.in_span("invoke_agent support", &|| {
        tracer.in_span("chat llama-3-8b", &|| {
            tracer.current(&|span| {
                span.set_attribute(KeyValue::new("gen_ai.operation.name", "chat"));
                span.set_attribute(KeyValue::new("gen_ai.usage.input_tokens", 812_i64));
                span.set_attribute(KeyValue::new("gen_ai.usage.output_tokens", 256_i64));
            });
            std::thread::sleep(std::time::Duration::from_millis(20));
        });
        tracer.in_span("execute_tool search", &|| {
            tracer.current(&|span| span.set_status(Status::error("search timed out")));
        });
    });
}

/// The two SDK calls the agent uses, without the generics (one agent for both exporters).
trait ObjectTracer {
    fn in_span(&self, name: &'static str, work: &dyn Fn());
    fn current(&self, f: &dyn Fn(&opentelemetry::trace::SpanRef<'_>));
}

impl ObjectTracer for opentelemetry_sdk::trace::Tracer {
    fn in_span(&self, name: &'static str, work: &dyn Fn()) {
        Tracer::in_span(self, name, |_cx| work());
    }

    fn current(&self, f: &dyn Fn(&opentelemetry::trace::SpanRef<'_>)) {
        let cx = opentelemetry::Context::current();
        f(&cx.span());
    }
}

fn provider(exporter: opentelemetry_otlp::SpanExporter, service: &str) -> SdkTracerProvider {
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build()
}

/// The run the agent's trace became, checked as a user would query it.
fn check_stored(sidecar: &Sidecar, service: &str) {
    let client = format!("otlp/{service}");
    let run: (String, String, i64) = sidecar
        .sql()
        .query_row(
            "SELECT r.name, r.status, (SELECT count(*) FROM spans s WHERE s.run_id = r.run_id)
             FROM runs r WHERE r.client_id = ?1",
            [&client],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(run, ("invoke_agent support".into(), "ok".into(), 3));
    assert_eq!(
        sidecar.count(&format!(
            "SELECT count(*) FROM spans s JOIN runs r USING (run_id)
             WHERE r.client_id = '{client}' AND s.name = 'execute_tool search'
             AND s.status = 'failed' AND s.error = 'search timed out'"
        )),
        1
    );
    assert_eq!(
        sidecar.count(&format!(
            "SELECT CAST(sum(value) AS INTEGER) FROM events e JOIN runs r USING (run_id)
             WHERE r.client_id = '{client}' AND e.name = 'gen_ai.usage.output_tokens'"
        )),
        256
    );
    // Every span has the machine at its start and end.
    assert_eq!(
        sidecar.count(&format!(
            "SELECT count(*) FROM spans s JOIN runs r USING (run_id) WHERE r.client_id = '{client}'
             AND s.start_snapshot_id IS NOT NULL AND s.end_snapshot_id IS NOT NULL"
        )),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_sdk_over_grpc_is_the_whole_integration() {
    let mut sidecar = Sidecar::start();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(format!("http://{}", sidecar.otlp_grpc.clone().unwrap()))
        .build()
        .unwrap();
    let provider = provider(exporter, "rust-grpc-agent");
    let tracer = provider.tracer("agent");
    agent_work(&tracer);
    tokio::task::spawn_blocking(move || provider.shutdown().unwrap())
        .await
        .unwrap();
    check_stored(&sidecar, "rust-grpc-agent");
    // The SDK sent no process.pid (no resource detector): the sidecar found this process
    // behind the loopback connection and watches it from the first export.
    let me = i64::from(std::process::id());
    assert_eq!(
        sidecar.count(
            "SELECT pid FROM clients WHERE client_name = 'rust-grpc-agent' AND client_id LIKE 'otlp/%'"
        ),
        me
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while sidecar.count(&format!(
        "SELECT count(*) FROM process_samples WHERE pid = {me}"
    )) == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent's process was never sampled"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    sidecar.stop();
}

#[test]
fn the_rust_sdk_over_http_protobuf_is_the_whole_integration() {
    let mut sidecar = Sidecar::start();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!(
            "http://{}/v1/traces",
            sidecar.otlp_http.clone().unwrap()
        ))
        .build()
        .unwrap();
    let provider = provider(exporter, "rust-http-agent");
    let tracer = provider.tracer("agent");
    agent_work(&tracer);
    provider.shutdown().unwrap();
    check_stored(&sidecar, "rust-http-agent");
    // No process.pid sent: this process, found behind the HTTP connection.
    assert_eq!(
        sidecar.count("SELECT pid FROM clients WHERE client_name = 'rust-http-agent'"),
        i64::from(std::process::id())
    );
    sidecar.stop();
}
