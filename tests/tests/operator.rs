//! What operators reach for first: gRPC reflection (what grpcurl uses), JSON logs for log
//! pipelines, and a version that names its commit.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use prost::Message;
use runlens_e2e::{Sidecar, run_bin};
use tokio_stream::StreamExt;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

/// Sends one reflection request and returns the answer.
async fn ask(sidecar: &Sidecar, request: MessageRequest) -> Result<MessageResponse, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(sidecar.endpoint())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await?
        .into_inner();
    let answer: ServerReflectionResponse = answers.next().await.unwrap()?;
    Ok(answer.message_response.unwrap())
}

#[tokio::test]
async fn reflection_lists_and_describes_every_service_with_its_comments() {
    let mut sidecar = Sidecar::start();
    let MessageResponse::ListServicesResponse(list) =
        ask(&sidecar, MessageRequest::ListServices(String::new()))
            .await
            .unwrap()
    else {
        panic!("not a service list");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "runlens.v1.Runlens",
        "grpc.health.v1.Health",
        "opentelemetry.proto.collector.trace.v1.TraceService",
    ] {
        assert!(names.contains(&expected), "{names:?}");
    }

    let MessageResponse::FileDescriptorResponse(files) = ask(
        &sidecar,
        MessageRequest::FileContainingSymbol("runlens.v1.Runlens".into()),
    )
    .await
    .unwrap() else {
        panic!("not a file descriptor");
    };
    let files: Vec<prost_types::FileDescriptorProto> = files
        .file_descriptor_proto
        .iter()
        .map(|bytes| prost_types::FileDescriptorProto::decode(bytes.as_slice()).unwrap())
        .collect();
    let runlens = files
        .iter()
        .find(|f| f.name() == "runlens/v1/runlens.proto")
        .expect("runlens.proto");
    let service = &runlens.service[0];
    let rpcs: Vec<&str> = service.method.iter().map(|m| m.name()).collect();
    for rpc in [
        "Session",
        "StartRun",
        "EndRun",
        "GetSnapshot",
        "ListRuns",
        "GetRun",
    ] {
        assert!(rpcs.contains(&rpc), "{rpcs:?}");
    }
    // The comments travel too, so `grpcurl describe` shows them.
    let comments: Vec<&str> = runlens
        .source_code_info
        .as_ref()
        .expect("source info")
        .location
        .iter()
        .filter_map(|l| l.leading_comments.as_deref())
        .collect();
    assert!(comments.len() > 20, "only {} comments", comments.len());
    // What it imports is served too, so every message type resolves.
    assert!(
        runlens
            .dependency
            .contains(&"runlens/v1/resources.proto".to_owned())
    );
    let MessageResponse::FileDescriptorResponse(imported) = ask(
        &sidecar,
        MessageRequest::FileByFilename("runlens/v1/resources.proto".into()),
    )
    .await
    .unwrap() else {
        panic!("not a file descriptor");
    };
    let resources =
        prost_types::FileDescriptorProto::decode(imported.file_descriptor_proto[0].as_slice())
            .unwrap();
    assert!(
        resources
            .message_type
            .iter()
            .any(|m| m.name() == "Snapshot")
    );
    sidecar.stop();
}

#[tokio::test]
async fn reflection_off_answers_unimplemented() {
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = Sidecar::start_on(&dir.path().join("r.db"), &["--reflection", "off"]);
    let refused = ask(&sidecar, MessageRequest::ListServices(String::new()))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unimplemented);
    sidecar.stop();
}

#[test]
fn json_logs_are_one_object_a_line_and_the_start_line_names_listen_and_db() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("logs.db");
    let mut sidecar = Sidecar::start_on(&db, &["--log-format", "json"]);
    std::thread::sleep(Duration::from_millis(300));
    let logs = sidecar.stop();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
        .collect();
    assert!(lines.len() >= 3, "{logs}");
    for line in &lines {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(line.get(key).is_some(), "no {key} in {line}");
        }
    }
    let serving = lines
        .iter()
        .find(|l| l["message"] == "serving")
        .unwrap_or_else(|| panic!("no start-up line in {logs}"));
    assert_eq!(serving["listen"], sidecar.addr.as_str());
    assert_eq!(serving["db"], db.display().to_string().as_str());
    assert_eq!(serving["level"], "INFO");
    assert!(
        serving["version"]
            .as_str()
            .is_some_and(|v| v.contains("commit"))
    );
}

#[test]
fn the_version_names_the_commit_it_was_built_from() {
    let (status, stdout, _) = run_bin("runlens", &["--version"], Duration::from_secs(10));
    assert!(status.success());
    let version = stdout.trim();
    assert!(
        version.starts_with(&format!("runlens {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match head {
        // The binary under test was built from this checkout.
        Some(head) => assert!(
            version.contains(&format!("commit {head}, built ")),
            "{version}"
        ),
        None => assert!(version.contains("commit unknown"), "{version}"),
    }
    // The build date is a date.
    let date = version
        .rsplit("built ")
        .next()
        .unwrap()
        .trim_end_matches(')');
    assert_eq!(date.len(), 10, "{version}");
    assert_eq!(date.as_bytes()[4], b'-', "{version}");
}

#[test]
fn serve_on_a_port_in_use_fails_before_creating_the_database() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("never.db");
    let (status, _, stderr) = run_bin(
        "runlens",
        &[
            "serve",
            "--listen",
            &port,
            "--db",
            db.to_str().unwrap(),
            "--otlp-grpc-listen",
            "off",
            "--otlp-http-listen",
            "off",
            "--metrics-listen",
            "off",
        ],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {port}")),
        "{stderr}"
    );
    assert!(!db.exists(), "a failed bind must leave no database behind");
}

#[test]
fn a_new_database_is_one_log_line_not_one_per_migration() {
    let mut sidecar = Sidecar::start();
    let logs = sidecar.stop();
    assert_eq!(logs.matches("database created").count(), 1, "{logs}");
    assert!(!logs.contains("schema migrated"), "{logs}");
}
