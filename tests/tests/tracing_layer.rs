//! `#[instrument]` code recorded through `runlens_client::tracing::RunlensLayer`, beside a
//! fmt layer, against a real sidecar process.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use runlens_client::Client;
use runlens_client::tracing::RunlensLayer;
use runlens_e2e::Sidecar;
use tracing::{Instrument, debug_span, info_span, instrument};
use tracing_subscriber::{filter::LevelFilter, fmt, prelude::*};

#[instrument(err, fields(agent = "demo"))]
async fn answer(task: u32) -> Result<(), String> {
    plan(task).await?;
    sub_agent();
    Ok(())
}

#[instrument(err)]
async fn plan(task: u32) -> Result<(), String> {
    llm_call().await;
    // A debug span is below the layer's level: not recorded, and its INFO child nests
    // under `plan`, the nearest recorded span.
    async { tool_call(task).instrument(info_span!("guarded")).await }
        .instrument(debug_span!("retry_loop"))
        .await
}

#[instrument(fields(runlens.fresh = true, tokens = tracing::field::Empty))]
async fn llm_call() {
    tokio::time::sleep(Duration::from_millis(2)).await;
    tracing::Span::current().record("tokens", 512);
}

#[instrument(err)]
async fn tool_call(task: u32) -> Result<(), String> {
    tokio::task::yield_now().await; // entered and exited more than once: still one span
    if task.is_multiple_of(2) {
        Err("search timed out".to_owned())
    } else {
        Ok(())
    }
}

#[instrument(fields(runlens.run = true))]
fn sub_agent() {
    let _step = info_span!("sub_step").entered();
}

fn rows(sidecar: &Sidecar, sql: &str) -> Vec<String> {
    let conn = sidecar.sql();
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn instrumented_code_is_recorded_as_runs_and_nested_spans() {
    let mut sidecar = Sidecar::start();
    let client = Client::builder(sidecar.endpoint())
        .name("traced")
        .build()
        .unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(RunlensLayer::new(client.clone()))
        // Everything, h2 and tonic included, reaches the registry: the layer must skip
        // the transport's own spans rather than record its own recording.
        .with(
            fmt::layer()
                .with_test_writer()
                .with_filter(LevelFilter::TRACE),
        );
    let _default = tracing::subscriber::set_default(subscriber);

    assert_eq!(answer(1).await, Ok(()));
    assert!(answer(2).await.is_err());
    client.flush_timeout(Duration::from_secs(20)).await.unwrap();
    assert_eq!((client.dropped(), client.rejected()), (0, 0));

    // Two runs of `answer`, the second failed with the tool's error; `sub_agent` asked
    // for a run of its own (only the first answer reached it).
    assert_eq!(
        rows(
            &sidecar,
            "SELECT name || ':' || status || ':' || coalesce(error, '') || ':' ||
                    coalesce(json_extract(attributes, '$.task'), '') || ':' ||
                    coalesce(json_extract(attributes, '$.agent'), '')
             FROM runs ORDER BY started_at_ns"
        ),
        [
            "answer:ok::1:demo",
            "sub_agent:ok:::",
            "answer:failed:search timed out:2:demo"
        ]
    );
    // Each span under its parent, named after its function; the debug span is skipped.
    assert_eq!(
        rows(
            &sidecar,
            "SELECT r.name || '/' || coalesce(p.name, '-') || '/' || s.name || ':' || s.status
             FROM spans s JOIN runs r USING (run_id)
             LEFT JOIN spans p ON p.span_id = s.parent_span_id
             ORDER BY s.started_at_ns"
        ),
        [
            "answer/-/plan:ok",
            "answer/plan/llm_call:ok",
            "answer/plan/guarded:ok",
            "answer/guarded/tool_call:ok",
            "sub_agent/-/sub_step:ok",
            "answer/-/plan:failed",
            "answer/plan/llm_call:ok",
            "answer/plan/guarded:ok",
            "answer/guarded/tool_call:failed",
        ]
    );
    // A field recorded later arrives with the end; the special fields are not attributes.
    assert_eq!(
        rows(
            &sidecar,
            "SELECT DISTINCT attributes FROM spans WHERE name = 'llm_call'"
        ),
        [r#"{"tokens":"512"}"#]
    );
    assert_eq!(
        rows(
            &sidecar,
            "SELECT DISTINCT error FROM spans WHERE status = 'failed'"
        ),
        ["search timed out"]
    );
    // Nothing from the transport (h2, hyper, tonic, tower) was recorded.
    assert_eq!(sidecar.count("SELECT count(*) FROM spans"), 9);
    sidecar.stop();
}

#[tokio::test]
async fn at_trace_level_the_transports_own_spans_are_still_skipped() {
    // With every level recorded, h2/hyper/tonic/tower spans (created while the client's
    // sender runs on this same thread) would be recorded too, and each recorded span
    // would make more of them: only the target rule keeps them out.
    let mut sidecar = Sidecar::start();
    let client = Client::builder(sidecar.endpoint()).build().unwrap();
    let subscriber = tracing_subscriber::registry()
        .with(RunlensLayer::new(client.clone()).with_max_level(tracing::Level::TRACE));
    let _default = tracing::subscriber::set_default(subscriber);
    for _ in 0..3 {
        assert_eq!(answer(1).await, Ok(()));
        client.flush_timeout(Duration::from_secs(20)).await.unwrap();
    }
    // Per answer: the run, plan, llm_call, the debug span now recorded, guarded, tool_call,
    // and the sub_agent run with its sub_step.
    assert_eq!(
        rows(
            &sidecar,
            "SELECT DISTINCT name FROM spans UNION SELECT DISTINCT name FROM runs ORDER BY 1"
        ),
        [
            "answer",
            "guarded",
            "llm_call",
            "plan",
            "retry_loop",
            "sub_agent",
            "sub_step",
            "tool_call"
        ]
    );
    assert_eq!(sidecar.count("SELECT count(*) FROM spans"), 3 * 6);
    sidecar.stop();
}
