//! Bad input from the wire gets a precise status and message, and nothing already
//! accepted is lost: through the unary calls and through the session stream.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use runlens_api::pb;
use runlens_api::pb::client_message::Body;
use runlens_api::pb::runlens_client::RunlensClient;
use runlens_e2e::Sidecar;
use tonic::Code;
use tonic::transport::Channel;

async fn connect(sidecar: &Sidecar) -> RunlensClient<Channel> {
    RunlensClient::connect(sidecar.endpoint()).await.unwrap()
}

fn start_run(id: &str) -> pb::StartRunRequest {
    pb::StartRunRequest {
        run_id: id.into(),
        name: "task".into(),
        ..Default::default()
    }
}

fn start_span(run: &str, id: &str, parent: &str) -> pb::StartSpanRequest {
    pb::StartSpanRequest {
        run_id: run.into(),
        span_id: id.into(),
        parent_span_id: parent.into(),
        name: "step".into(),
        ..Default::default()
    }
}

fn end_span(id: &str) -> pb::EndSpanRequest {
    pb::EndSpanRequest {
        span_id: id.into(),
        status: pb::EndStatus::Ok as i32,
        ..Default::default()
    }
}

fn metric(run: &str, value: f64) -> pb::Metric {
    pb::Metric {
        run_id: run.into(),
        name: "m".into(),
        value,
        ..Default::default()
    }
}

#[track_caller]
fn expect_status<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    words: &str,
) {
    let status = result.expect_err("must be rejected");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(words),
        "{:?} lacks {words:?}",
        status.message()
    );
}

#[tokio::test]
async fn unary_calls_reject_bad_input_precisely_and_keep_what_was_accepted() {
    let mut sidecar = Sidecar::start();
    let mut c = connect(&sidecar).await;

    let started = c.start_run(start_run("run-1")).await.unwrap().into_inner();
    let snap = started.snapshot.unwrap();
    assert!(snap.snapshot_id > 0);
    assert!(snap.host.unwrap().ram_total_bytes > 0);
    c.start_span(start_span("run-1", "span-1", ""))
        .await
        .unwrap();

    // Unknown ids.
    expect_status(
        c.start_span(start_span("ghost", "s", "")).await,
        Code::NotFound,
        "run \"ghost\" not found",
    );
    expect_status(
        c.start_span(start_span("run-1", "s2", "ghost")).await,
        Code::NotFound,
        "parent span \"ghost\"",
    );
    expect_status(
        c.end_span(end_span("ghost")).await,
        Code::NotFound,
        "span \"ghost\" not found",
    );
    expect_status(
        c.end_run(pb::EndRunRequest {
            run_id: "ghost".into(),
            status: 1,
            ..Default::default()
        })
        .await,
        Code::NotFound,
        "not found",
    );
    // Duplicates and double ends.
    expect_status(
        c.start_run(start_run("run-1")).await,
        Code::AlreadyExists,
        "already exists",
    );
    c.end_span(end_span("span-1")).await.unwrap();
    expect_status(
        c.end_span(end_span("span-1")).await,
        Code::FailedPrecondition,
        "already ended",
    );
    // Empty and over-long names and ids.
    let mut blank = start_run("run-2");
    blank.name = "  ".into();
    expect_status(
        c.start_run(blank).await,
        Code::InvalidArgument,
        "name is empty",
    );
    let mut long = start_run("run-2");
    long.name = "x".repeat(257);
    expect_status(
        c.start_run(long).await,
        Code::InvalidArgument,
        "limit is 256",
    );
    expect_status(
        c.start_run(start_run(&"r".repeat(129))).await,
        Code::InvalidArgument,
        "limit is 128",
    );
    expect_status(
        c.start_run(start_run("")).await,
        Code::InvalidArgument,
        "run_id is empty",
    );
    expect_status(
        c.start_run(start_run("has space")).await,
        Code::InvalidArgument,
        "ids may use only",
    );
    // Non-finite metric values.
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        expect_status(
            c.record_metric(metric("run-1", bad)).await,
            Code::InvalidArgument,
            "finite",
        );
    }
    // Oversized attribute maps.
    let mut attrs = start_run("run-3");
    attrs.attributes = (0..65)
        .map(|i| (format!("k{i}"), "v".to_owned()))
        .collect::<HashMap<_, _>>();
    expect_status(
        c.start_run(attrs).await,
        Code::InvalidArgument,
        "limit is 64",
    );
    // Unspecified end status.
    expect_status(
        c.end_run(pb::EndRunRequest {
            run_id: "run-1".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "unspecified",
    );

    // The server carried on, and everything accepted is there.
    c.record_metric(metric("run-1", 1.5)).await.unwrap();
    c.end_run(pb::EndRunRequest {
        run_id: "run-1".into(),
        status: 2,
        error: "boom".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    expect_status(
        c.end_run(pb::EndRunRequest {
            run_id: "run-1".into(),
            status: 1,
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        "already ended",
    );
    expect_status(
        c.record_metric(metric("run-1", 2.0)).await,
        Code::FailedPrecondition,
        "already ended",
    );
    assert_eq!(sidecar.count("SELECT count(*) FROM runs"), 1);
    assert_eq!(
        sidecar.count("SELECT count(*) FROM runs WHERE status = 'failed' AND error = 'boom'"),
        1
    );
    assert_eq!(
        sidecar.count("SELECT count(*) FROM spans WHERE status = 'ok'"),
        1
    );
    assert_eq!(
        sidecar.count("SELECT count(*) FROM events WHERE value = 1.5"),
        1
    );
    sidecar.stop();
}

fn msg(seq: u64, body: Body) -> pb::ClientMessage {
    pb::ClientMessage {
        seq,
        body: Some(body),
    }
}

fn hello(client_id: &str) -> pb::ClientMessage {
    msg(
        0,
        Body::Hello(pb::SessionHello {
            client_id: client_id.into(),
            cuda_visible_devices: "GPU-1234,1".into(),
            ..Default::default()
        }),
    )
}

/// Sends `messages` on one session, closes the sending side, and collects every reply.
async fn session(
    sidecar: &Sidecar,
    messages: Vec<pb::ClientMessage>,
) -> Vec<pb::server_message::Body> {
    let mut c = connect(sidecar).await;
    let mut inbound = c
        .session(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    let mut replies = Vec::new();
    while let Some(m) = inbound.message().await.unwrap() {
        replies.extend(m.body);
    }
    replies
}

#[tokio::test]
async fn session_reports_bad_messages_and_carries_on() {
    let mut sidecar = Sidecar::start();
    let replies = session(
        &sidecar,
        vec![
            hello("agent-a"),
            msg(1, Body::StartRun(start_run("r"))),
            msg(2, Body::StartSpan(start_span("r", "s1", ""))),
            msg(3, Body::StartSpan(start_span("r", "s2", "nope"))), // unknown parent
            msg(4, Body::Metric(metric("r", f64::NAN))),            // not finite
            msg(5, Body::EndSpan(end_span("s1"))),
            msg(6, Body::EndSpan(end_span("s1"))), // ended twice
            msg(7, Body::Metric(metric("r", 7.0))),
            // A batch: each inner message handled as if sent alone.
            msg(
                0,
                Body::Batch(pb::MessageBatch {
                    messages: vec![
                        msg(8, Body::Metric(metric("r", 8.0))),
                        msg(9, Body::Metric(metric("nope", 9.0))), // unknown run
                        msg(10, Body::Batch(pb::MessageBatch::default())), // nested
                        msg(11, Body::Metric(metric("r", 11.0))),
                    ],
                }),
            ),
        ],
    )
    .await;
    let errors: Vec<(u64, i32)> = replies
        .iter()
        .filter_map(|r| match r {
            pb::server_message::Body::Error(e) => Some((e.seq, e.code)),
            _ => None,
        })
        .collect();
    assert_eq!(
        errors,
        vec![
            (3, Code::NotFound as i32),
            (4, Code::InvalidArgument as i32),
            (6, Code::FailedPrecondition as i32),
            (9, Code::NotFound as i32),
            (10, Code::InvalidArgument as i32)
        ]
    );
    let last_ack = replies
        .iter()
        .filter_map(|r| match r {
            pb::server_message::Body::Ack(a) => Some(a.committed_seq),
            _ => None,
        })
        .max();
    assert_eq!(
        last_ack,
        Some(11),
        "every message handled and acknowledged: {replies:?}"
    );
    assert!(matches!(replies[0], pb::server_message::Body::Welcome(_)));
    assert_eq!(sidecar.count("SELECT count(*) FROM spans"), 1);
    assert_eq!(
        sidecar.count("SELECT count(*) FROM spans WHERE status = 'ok'"),
        1
    );
    assert_eq!(
        sidecar.count("SELECT count(*) FROM events WHERE value IN (7.0, 8.0, 11.0)"),
        3
    );
    assert_eq!(
        sidecar.count("SELECT committed_seq FROM clients WHERE client_id = 'agent-a'"),
        11
    );
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM clients WHERE client_id = 'agent-a'
             AND cuda_visible_devices = 'GPU-1234,1'"
        ),
        1,
        "the agent's CUDA_VISIBLE_DEVICES is kept"
    );
    // Its hello gave no PID: the process behind the loopback connection (this test) is
    // recorded and watched instead.
    assert_eq!(
        sidecar.count("SELECT pid FROM clients WHERE client_id = 'agent-a'"),
        i64::from(std::process::id())
    );
    sidecar.stop();
}

#[tokio::test]
async fn session_must_start_with_a_valid_hello() {
    let sidecar = Sidecar::start();
    let mut c = connect(&sidecar).await;
    let status = c
        .session(tokio_stream::iter(vec![msg(
            1,
            Body::StartRun(start_run("r")),
        )]))
        .await
        .expect_err("no hello");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("must be hello"), "{status:?}");
    let status = c
        .session(tokio_stream::iter(vec![hello("bad id!")]))
        .await
        .expect_err("bad client id");
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn resent_messages_are_skipped_across_a_sidecar_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("restart.db");
    let mut first = Sidecar::start_on(&db, &[]);
    session(
        &first,
        vec![
            hello("agent-b"),
            msg(1, Body::StartRun(start_run("r"))),
            msg(2, Body::StartSpan(start_span("r", "s1", ""))),
            msg(3, Body::Metric(metric("r", 3.0))),
        ],
    )
    .await;
    first.stop();

    let mut second = Sidecar::start_on(&db, &[]);
    // The client did not see the acks: it resends 2 and 3, then goes on with 4 and 5.
    let replies = session(
        &second,
        vec![
            hello("agent-b"),
            msg(2, Body::StartSpan(start_span("r", "s1", ""))),
            msg(3, Body::Metric(metric("r", 3.0))),
            msg(4, Body::EndSpan(end_span("s1"))),
            msg(
                5,
                Body::EndRun(pb::EndRunRequest {
                    run_id: "r".into(),
                    status: 1,
                    ..Default::default()
                }),
            ),
        ],
    )
    .await;
    match &replies[0] {
        pb::server_message::Body::Welcome(w) => assert_eq!(w.committed_seq, 3),
        other => panic!("expected welcome, got {other:?}"),
    }
    assert!(
        !replies
            .iter()
            .any(|r| matches!(r, pb::server_message::Body::Error(_))),
        "{replies:?}"
    );
    assert_eq!(
        second.count("SELECT count(*) FROM events"),
        1,
        "metric stored once"
    );
    assert_eq!(
        second.count("SELECT count(*) FROM spans WHERE status = 'ok'"),
        1
    );
    assert_eq!(
        second.count("SELECT count(*) FROM runs WHERE status = 'ok'"),
        1
    );
    second.stop();
}

#[tokio::test]
async fn a_run_id_stored_before_a_restart_stays_taken() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ids.db");
    let mut first = Sidecar::start_on(&db, &[]);
    let mut c = connect(&first).await;
    for id in ["done", "open"] {
        c.start_run(start_run(id)).await.unwrap();
    }
    c.end_run(pb::EndRunRequest {
        run_id: "done".into(),
        status: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    first.stop();

    // The new process reads the stored ids into its filter at the start; whether a call
    // comes before that is done or after, a stored id is refused and a new one accepted.
    let mut second = Sidecar::start_on(&db, &[]);
    let mut c = connect(&second).await;
    for round in 0..2 {
        for id in ["done", "open"] {
            expect_status(
                c.start_run(start_run(id)).await,
                Code::AlreadyExists,
                "already exists",
            );
        }
        c.start_run(start_run(&format!("new-{round}")))
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert_eq!(second.count("SELECT count(*) FROM runs"), 4);
    second.stop();
}

#[tokio::test]
async fn history_rpcs_return_what_was_recorded() {
    let mut sidecar = Sidecar::start();
    let mut c = connect(&sidecar).await;
    c.start_run(start_run("h1")).await.unwrap();
    c.start_span(start_span("h1", "h1-a", "")).await.unwrap();
    c.start_span(start_span("h1", "h1-b", "h1-a"))
        .await
        .unwrap();
    c.end_run(pb::EndRunRequest {
        run_id: "h1".into(),
        status: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    c.start_run(start_run("h2")).await.unwrap();

    let runs = c
        .list_runs(pb::ListRunsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .runs;
    let ids: Vec<&str> = runs.iter().map(|r| r.run_id.as_str()).collect();
    assert_eq!(ids, vec!["h2", "h1"], "newest first");
    let ok = c
        .list_runs(pb::ListRunsRequest {
            status: "ok".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .runs;
    assert_eq!(ok.len(), 1);
    expect_status(
        c.list_runs(pb::ListRunsRequest {
            status: "weird".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "not one of",
    );

    let run = c
        .get_run(pb::GetRunRequest {
            run_id: "h1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(run.run.unwrap().status, "ok");
    // Spans still open when the run ended are closed as failed with it.
    assert_eq!(run.spans.len(), 2);
    assert!(
        run.spans
            .iter()
            .all(|s| s.status == "failed" && s.error == "run ended while span was open")
    );
    assert_eq!(run.spans[1].parent_span_id, "h1-a");
    assert!(run.start_snapshot.unwrap().host.unwrap().ram_total_bytes > 0);
    assert!(run.end_snapshot.is_some());
    expect_status(
        c.get_run(pb::GetRunRequest {
            run_id: "zz".into(),
        })
        .await,
        Code::NotFound,
        "not found",
    );

    let snap = c
        .get_snapshot(pb::GetSnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(snap.snapshot_id, 0, "not stored");
    assert!(!snap.gpu_available);
    let mut watch = c
        .watch_snapshots(pb::WatchSnapshotsRequest { interval_ms: 100 })
        .await
        .unwrap()
        .into_inner();
    let a = watch.message().await.unwrap().unwrap();
    let b = watch.message().await.unwrap().unwrap();
    assert!(b.taken_at_ns > a.taken_at_ns);
    expect_status(
        c.watch_snapshots(pb::WatchSnapshotsRequest { interval_ms: 10 })
            .await,
        Code::InvalidArgument,
        "at least 100",
    );
    drop(watch);
    sidecar.stop();
}

#[tokio::test]
async fn an_invisible_agent_pid_is_reported_once() {
    let mut sidecar = Sidecar::start();
    let hidden = |id: &str| {
        msg(
            0,
            Body::Hello(pb::SessionHello {
                client_id: id.into(),
                pid: 4_294_000_000, // above any possible pid_max
                ..Default::default()
            }),
        )
    };
    session(&sidecar, vec![hidden("h1")]).await;
    session(&sidecar, vec![hidden("h2")]).await;
    let logs = sidecar.stop();
    assert_eq!(
        logs.matches("agent process is not visible").count(),
        1,
        "{logs}"
    );
    assert!(logs.contains("shareProcessNamespace"), "{logs}");
}
