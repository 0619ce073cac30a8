//! Agents reach runlens over a Unix socket (`--listen unix:///path`) beside TCP: the Rust
//! client records through it, a live socket is never taken over, and a sidecar SIGKILLed
//! and restarted on the same path (its stale socket replaced) loses nothing.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use runlens_client::Client;
use runlens_e2e::{Sidecar, run_bin};

fn socket_args(socket: &std::path::Path) -> Vec<String> {
    vec![
        "--listen".to_owned(),
        format!("unix://{}", socket.display()),
        "--sample-interval".to_owned(),
        "100ms".to_owned(),
    ]
}

fn start(db: &std::path::Path, socket: &std::path::Path) -> Sidecar {
    let args = socket_args(socket);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // `--listen 127.0.0.1:0` from the helper, then the socket: both are served.
    Sidecar::start_on(db, &args)
}

#[tokio::test]
async fn the_client_records_over_a_unix_socket_and_survives_a_restart_on_the_same_path() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runlens.db");
    let socket = dir.path().join("runlens.sock");
    let mut first = start(&db, &socket);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "the default --socket-mode");

    let client = Client::builder(format!("unix://{}", socket.display()))
        .name("over-the-socket")
        .build()
        .unwrap();
    let run = client.start_run("long-run");
    for i in 0..100 {
        run.span_with("before", [("i", i.to_string())], false)
            .end_ok();
    }
    client.flush_timeout(Duration::from_secs(20)).await.unwrap();
    assert_eq!(first.count("SELECT count(*) FROM spans"), 100);

    // Killed: no goodbye, the socket file stays behind.
    first.stop_with("KILL");
    assert!(socket.exists(), "a killed sidecar leaves its socket file");
    for i in 0..100 {
        run.span_with("during", [("i", i.to_string())], false)
            .end_ok();
    }
    let mut second = start(&db, &socket);
    for i in 0..100 {
        run.span_with("after", [("i", i.to_string())], false)
            .end_ok();
    }
    run.end_ok();
    client.flush_timeout(Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        second.count("SELECT count(*) FROM spans WHERE status = 'ok'"),
        300
    );
    assert_eq!(
        second.count("SELECT count(DISTINCT span_id) FROM spans"),
        300
    );
    assert_eq!(
        second.count("SELECT count(*) FROM runs WHERE status = 'ok'"),
        1
    );
    assert_eq!(
        second.count("SELECT count(*) FROM clients WHERE client_name = 'over-the-socket'"),
        1
    );
    assert_eq!((client.dropped(), client.rejected()), (0, 0));

    // A second sidecar on the live path is refused, and the first keeps its socket.
    let other_db = dir.path().join("other.db");
    let (status, _, stderr) = run_bin(
        "runlens",
        &[
            "serve",
            "--listen",
            &format!("unix://{}", socket.display()),
            "--db",
            other_db.to_str().unwrap(),
            "--otlp-grpc-listen",
            "off",
            "--otlp-http-listen",
            "off",
            "--metrics-listen",
            "off",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(69), "{stderr}");
    assert!(stderr.contains("another process"), "{stderr}");
    assert!(!other_db.exists(), "refused before creating a database");
    let quick = client.start_run("still-served");
    quick.end_ok();
    client.flush_timeout(Duration::from_secs(20)).await.unwrap();
    assert_eq!(
        second.count("SELECT count(*) FROM runs WHERE name = 'still-served'"),
        1
    );

    // A clean stop removes the socket file.
    client.shutdown(Duration::from_secs(5)).await.unwrap();
    second.stop();
    assert!(!socket.exists(), "a clean stop removes its socket");
}

/// `runlens bench agent --transport unix` measures the pod's path: the agent's shape over a
/// Unix socket, every span stored with both samples (the benchmark exits non-zero otherwise).
#[test]
fn bench_agent_drives_the_sidecar_over_a_unix_socket() {
    let (status, stdout, stderr) = run_bin(
        "runlens",
        &[
            "bench",
            "agent",
            "--rate",
            "90",
            "--seconds",
            "1",
            "--transport",
            "unix",
        ],
        Duration::from_secs(60),
    );
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains(" at unix:///"), "{stdout}");
    assert!(
        stdout.contains("verified 90/90 spans stored, each with both samples"),
        "{stdout}"
    );
    assert!(
        stdout.contains("sidecar: ") && stdout.contains("µs CPU per span"),
        "{stdout}"
    );
}
