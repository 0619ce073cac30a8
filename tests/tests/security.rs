//! Access control and limits of `runlens serve`, across real processes: the bearer token on
//! every front door (health stays open), the refusal of an open listener, and the session
//! limits.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use runlens_api::pb;
use runlens_api::pb::runlens_client::RunlensClient;
use runlens_e2e::{Sidecar, http_get, http_post, run_bin};
use tonic::Code;

const TOKEN: &str = "s3cret-0123456789abcdef";

fn guarded_sidecar(extra: &[&str]) -> (Sidecar, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let mut args = vec![
        "--sample-interval",
        "100ms",
        "--token-file",
        token_file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let sidecar = Sidecar::start_on(&dir.path().join("guarded.db"), &args);
    (sidecar, dir)
}

fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

fn start_run(id: &str) -> pb::StartRunRequest {
    pb::StartRunRequest {
        run_id: id.into(),
        name: "task".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_front_door_asks_for_the_token_and_health_does_not() {
    let (sidecar, _dir) = guarded_sidecar(&[]);
    let mut grpc = RunlensClient::connect(sidecar.endpoint()).await.unwrap();
    // runlens.v1: none, wrong, right.
    for request in [
        tonic::Request::new(start_run("r-none")),
        with_token(start_run("r-wrong"), "s3cret-0123456789abcdeX"),
    ] {
        let status = grpc.start_run(request).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.message().contains("--token-file"), "{status:?}");
        assert!(
            !status.message().contains(TOKEN),
            "the answer never shows the token"
        );
    }
    grpc.start_run(with_token(start_run("r-right"), TOKEN))
        .await
        .unwrap();
    // The health service answers without a token (Kubernetes probes send none).
    let channel = tonic::transport::Endpoint::from_shared(sidecar.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
    assert_eq!(health.into_inner().status, 1, "SERVING");

    // OTLP over HTTP: 401 with a challenge, then accepted with the token.
    let otlp_http = sidecar.otlp_http.clone().unwrap();
    let body = br#"{"resourceSpans":[]}"#;
    let refused = http_post(
        &otlp_http,
        "/v1/traces",
        &[("content-type", "application/json")],
        body,
    );
    assert_eq!(refused.status, 401);
    assert_eq!(refused.header("www-authenticate"), Some("Bearer"));
    let bearer = format!("Bearer {TOKEN}");
    let accepted = http_post(
        &otlp_http,
        "/v1/traces",
        &[
            ("content-type", "application/json"),
            ("authorization", &bearer),
        ],
        body,
    );
    assert_eq!(accepted.status, 200);

    // OTLP over gRPC on its own port.
    let otlp_grpc = sidecar.otlp_grpc.clone().unwrap();
    let mut traces = opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(
        format!("http://{otlp_grpc}"),
    )
    .await
    .unwrap();
    let export =
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::default();
    let status = traces.export(export.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    traces.export(with_token(export, TOKEN)).await.unwrap();

    // /metrics is read-only and open unless --metrics-auth; the refusals are counted.
    let metrics = sidecar.metrics.clone().unwrap();
    let scrape = http_get(&metrics, "/metrics", &[]);
    assert_eq!(scrape.status, 200);
    let text = String::from_utf8(scrape.body).unwrap();
    assert!(
        text.contains("runlens_rejected_total{reason=\"unauthenticated\"} 4"),
        "{text}"
    );
    // Only the run sent with the token was stored.
    assert_eq!(sidecar.count("SELECT count(*) FROM runs"), 1);
    assert_eq!(
        sidecar.count("SELECT count(*) FROM runs WHERE run_id = 'r-right'"),
        1
    );
}

#[test]
fn metrics_auth_guards_the_scrape_too() {
    let (sidecar, _dir) = guarded_sidecar(&["--metrics-auth", "on"]);
    let metrics = sidecar.metrics.clone().unwrap();
    assert_eq!(http_get(&metrics, "/metrics", &[]).status, 401);
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        http_get(&metrics, "/metrics", &[("authorization", &bearer)]).status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_sends_its_token() {
    let (sidecar, _dir) = guarded_sidecar(&[]);
    let good = runlens_client::Client::builder(sidecar.endpoint())
        .name("with-token")
        .token(TOKEN)
        .build()
        .unwrap();
    let run = good.start_run("guarded");
    run.span("step").end_ok();
    run.end_ok();
    good.shutdown(Duration::from_secs(10)).await.unwrap();
    let bad = runlens_client::Client::builder(sidecar.endpoint())
        .name("wrong-token")
        .token("not-the-token-at-all")
        .build()
        .unwrap();
    bad.start_run("refused").end_ok();
    assert!(
        bad.shutdown(Duration::from_secs(2)).await.is_err(),
        "never acknowledged"
    );
    assert_eq!(sidecar.count("SELECT count(*) FROM runs"), 1);
    assert_eq!(sidecar.count("SELECT count(*) FROM spans"), 1);
    assert_eq!(
        sidecar.count("SELECT count(*) FROM clients WHERE client_name = 'wrong-token'"),
        0
    );
}

#[test]
fn an_open_listener_without_a_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("open.db");
    let db = db.to_str().unwrap();
    for (flag, addr) in [
        ("--listen", "0.0.0.0:0"),
        ("--otlp-http-listen", "0.0.0.0:0"),
    ] {
        let mut args = vec!["serve", "--db", db, "--metrics-listen", "off"];
        if flag != "--listen" {
            args.extend(["--listen", "127.0.0.1:0"]);
        }
        args.extend([flag, addr]);
        let (status, stdout, stderr) = run_bin("runlens", &args, Duration::from_secs(20));
        assert_eq!(status.code(), Some(64), "{stdout}{stderr}");
        assert!(stderr.contains(&format!("0.0.0.0:0 ({flag})")), "{stderr}");
        assert!(stderr.contains("--token-file"), "{stderr}");
        assert!(stderr.contains("--allow-insecure"), "{stderr}");
    }
    assert!(!std::path::Path::new(db).exists(), "nothing created");
    // Said out loud, it is allowed.
    let mut open = Sidecar::start_at(
        "0.0.0.0:0",
        &dir.path().join("ok.db"),
        &["--allow-insecure"],
    );
    open.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_beyond_the_limit_and_sessions_without_hello_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start_on(
        &dir.path().join("limits.db"),
        &["--max-sessions", "1", "--hello-timeout", "1s"],
    );
    // A session that never says hello is closed after the timeout.
    let mut raw = RunlensClient::connect(sidecar.endpoint()).await.unwrap();
    let (_tx, rx) = tokio::sync::mpsc::channel::<pb::ClientMessage>(1);
    let started = Instant::now();
    let status = raw
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("--hello-timeout"), "{status:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The slot it held is free again: one client gets in, the next is refused.
    let first = runlens_client::Client::builder(sidecar.endpoint())
        .name("first")
        .build()
        .unwrap();
    first.start_run("holds-the-slot").end_ok();
    first.flush_timeout(Duration::from_secs(10)).await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::ClientMessage>(1);
    tx.send(pb::ClientMessage {
        seq: 0,
        body: Some(pb::client_message::Body::Hello(pb::SessionHello {
            client_id: "second".into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let status = raw
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("--max-sessions"), "{status:?}");
    first.shutdown(Duration::from_secs(5)).await.unwrap();
}

#[test]
fn idle_http_connections_are_closed() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let sidecar = Sidecar::start_on(&dir.path().join("idle.db"), &["--http-idle-timeout", "1s"]);
    for addr in [sidecar.otlp_http.clone(), sidecar.metrics.clone()] {
        let addr = addr.unwrap();
        // Silent from the start.
        let mut silent = std::net::TcpStream::connect(&addr).unwrap();
        silent
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let started = Instant::now();
        let mut buf = [0_u8; 64];
        assert_eq!(
            silent.read(&mut buf).unwrap_or(0),
            0,
            "closed by the server"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{addr}");
        // Idle after a request on a kept-alive connection.
        let mut kept = std::net::TcpStream::connect(&addr).unwrap();
        kept.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        kept.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        let started = Instant::now();
        loop {
            match kept.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        assert!(answer.starts_with(b"HTTP/1.1 "), "{addr}");
        assert!(started.elapsed() < Duration::from_secs(5), "{addr}");
    }
}
