//! The Rust client against a real sidecar process.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use runlens_client::Client;
use runlens_e2e::Sidecar;

#[tokio::test]
async fn flush_returns_once_everything_is_committed() {
    let mut sidecar = Sidecar::start();
    let client = Client::builder(sidecar.endpoint())
        .name("t")
        .build()
        .unwrap();
    for i in 0..50 {
        let run = client.start_run_with("task", [("i", i.to_string())]);
        let span = run.span("step");
        span.metric("tokens", f64::from(i), "{token}");
        span.end_ok();
        run.end_ok();
    }
    client.flush_timeout(Duration::from_secs(20)).await.unwrap();
    // No waiting: flush promised the rows are committed.
    assert_eq!(
        sidecar.count("SELECT count(*) FROM runs WHERE status = 'ok'"),
        50
    );
    assert_eq!(
        sidecar.count("SELECT count(*) FROM spans WHERE status = 'ok'"),
        50
    );
    assert_eq!(
        sidecar.count("SELECT CAST(sum(value) AS INTEGER) FROM events"),
        (0..50).sum::<i64>()
    );
    assert_eq!(client.unacknowledged(), 0);
    assert_eq!((client.dropped(), client.rejected()), (0, 0));
    sidecar.stop();
}

#[tokio::test]
async fn dropping_unended_spans_and_runs_records_them_as_failed() {
    let mut sidecar = Sidecar::start();
    let client = Client::builder(sidecar.endpoint()).build().unwrap();
    {
        let run = client.start_run("abandoned");
        let outer = run.span("outer");
        let _inner = outer.span("inner");
        // Everything goes out of scope unended, as on an early return or a panic.
    }
    client.flush_timeout(Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM spans WHERE status = 'failed' AND error = 'dropped without end'"
        ),
        2
    );
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM runs WHERE status = 'failed' AND error = 'dropped without end'"
        ),
        1
    );
    assert_eq!(
        client.rejected(),
        0,
        "children end before parents, runs last"
    );
    sidecar.stop();
}

#[tokio::test]
async fn span_nests_under_a_span_and_span_fresh_samples_at_both_ends() {
    let mut sidecar = Sidecar::start();
    let client = Client::builder(sidecar.endpoint()).build().unwrap();
    let run = client.start_run("nesting");
    let plan = run.span("plan");
    let plan_id = plan.id().to_owned();
    // Away from the run's start sample, so that only a fresh sample is within 10 ms.
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The empty-attributes case needs no type annotations.
    let tool = plan.span_fresh("tool_call");
    let inner = tool.span("parse");
    inner.end_ok();
    tokio::time::sleep(Duration::from_millis(150)).await;
    tool.end_failed("search timed out");
    plan.end_ok();
    run.end_ok();
    client.flush_timeout(Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        sidecar.count(&format!(
            "SELECT count(*) FROM spans WHERE name = 'tool_call' AND parent_span_id = '{plan_id}'
               AND status = 'failed' AND error = 'search timed out'"
        )),
        1
    );
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM spans c JOIN spans p ON c.parent_span_id = p.span_id
             WHERE c.name = 'parse' AND p.name = 'tool_call'"
        ),
        1
    );
    // Fresh snapshots: taken for this span's start and end, or shared with a sample at
    // most 10 ms older (FRESH_SHARE_WINDOW, whatever its reason), never an older periodic
    // one. Clocks: the client and the sidecar read the same system clock.
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM spans s
             JOIN snapshots a ON a.snapshot_id = s.start_snapshot_id
             JOIN snapshots b ON b.snapshot_id = s.end_snapshot_id
             WHERE s.name = 'tool_call'
               AND a.taken_at_ns >= s.started_at_ns - 10000000
               AND b.taken_at_ns >= s.ended_at_ns - 10000000"
        ),
        1
    );
    sidecar.stop();
}

#[tokio::test]
async fn a_client_pointed_at_the_otlp_port_is_told_where_the_runlens_api_is() {
    let mut sidecar = Sidecar::start();
    let otlp = sidecar.otlp_grpc.clone().expect("OTLP gRPC on a free port");
    let client = Client::builder(format!("http://{otlp}")).build().unwrap();
    client.start_run("lost").end_ok();
    let error = client
        .flush_timeout(Duration::from_secs(3))
        .await
        .unwrap_err();
    let text = format!("{error:?}");
    assert!(
        text.contains("runlens's OTLP port") && text.contains("127.0.0.1:50551"),
        "{text}"
    );
    sidecar.stop();
}

#[tokio::test]
async fn a_bare_host_port_endpoint_connects() {
    let mut sidecar = Sidecar::start();
    let bare = sidecar.endpoint().trim_start_matches("http://").to_owned();
    let client = Client::builder(bare).build().unwrap();
    client.start_run("bare").end_ok();
    client.shutdown(Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        sidecar.count("SELECT count(*) FROM runs WHERE name = 'bare'"),
        1
    );
    sidecar.stop();
}

#[tokio::test]
async fn with_the_sidecar_down_shutdown_says_what_is_pending_and_why() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::builder(format!("http://127.0.0.1:{port}"))
        .build()
        .unwrap();
    let run = client.start_run("nowhere");
    run.span("step").end_ok();
    run.end_ok();
    let err = client
        .shutdown(Duration::from_secs(2))
        .await
        .expect_err("nothing can be acknowledged");
    let text = err.to_string();
    assert!(text.contains("4 message(s) not yet acknowledged"), "{text}");
    // Start, span start, span end, run end: all four still buffered, and the cause named.
    assert!(text.contains("unreachable"), "{text}");
    assert!(text.contains("refused"), "{text}");
    assert!(!err.is_fatal());
}

/// The child half of the drop-warning test: a program that records and exits without
/// `shutdown`, against a sidecar that is not there.
fn drop_without_shutdown(port: &str) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = Client::builder(format!("127.0.0.1:{port}"))
            .build()
            .unwrap();
        client.start_run("forgotten").end_ok();
        tokio::time::sleep(Duration::from_millis(300)).await;
    });
}

#[test]
fn dropping_the_client_with_pending_messages_warns_with_the_count() {
    const CHILD: &str = "RUNLENS_TEST_DROP_CHILD_PORT";
    if let Ok(port) = std::env::var(CHILD) {
        drop_without_shutdown(&port);
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "dropping_the_client_with_pending_messages_warns_with_the_count",
            "--nocapture",
        ])
        .env(CHILD, port.to_string())
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("client dropped with 2 message(s) not yet acknowledged"),
        "{stderr}"
    );
    assert!(
        stderr.contains("client.shutdown(timeout).await"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("client dropped").count(), 1, "{stderr}");
}
