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
        let _inner = outer.child("inner");
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
