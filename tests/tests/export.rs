//! OTLP export from the durable outbox to a second runlens (its OTLP ingest as the
//! receiver): a receiver that was down while the agent worked, and an exporter SIGKILLed and
//! restarted, end with every run and span exactly once at the receiver, names, parents,
//! error texts and the resource context kept.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use runlens_e2e::{Sidecar, free_addr, http_get};

fn wait_for(sidecar: &Sidecar, sql: &str, want: i64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = sidecar.count(sql);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {got} of {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_receiver_down_at_first_and_an_exporter_killed_get_every_span_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let receiver_addr = free_addr();
    let export = format!("http://{receiver_addr}");
    let exporter_flags = [
        "--otlp-export",
        export.as_str(),
        "--sample-interval",
        "100ms",
    ];
    let exporter_db = dir.path().join("exporter.db");
    let mut exporter = Sidecar::start_on(&exporter_db, &exporter_flags);

    // The agent works while the receiver is down.
    exporter.run_example_agent(6);
    std::thread::sleep(Duration::from_millis(500));
    let metrics = exporter.metrics.clone().unwrap();
    let scrape = String::from_utf8(http_get(&metrics, "/metrics", &[]).body).unwrap();
    assert!(scrape.contains("runlens_export_lag_runs 6"), "{scrape}");
    let waited: f64 = scrape
        .lines()
        .find_map(|l| l.strip_prefix("runlens_export_lag_seconds "))
        .and_then(|v| v.parse().ok())
        .expect("the lag in seconds");
    assert!(waited > 0.0 && waited < 60.0, "{waited}");
    // doctor says so too, with what to do.
    let (_, doctor, _) = runlens_e2e::run_bin(
        "runlens",
        &[
            "doctor",
            "--no-gpu",
            "--format",
            "json",
            "--db",
            exporter_db.to_str().unwrap(),
        ],
        Duration::from_secs(30),
    );
    let doctor: serde_json::Value = serde_json::from_str(&doctor).unwrap();
    let export_check = doctor["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "export")
        .expect("an export check");
    assert_eq!(export_check["status"], "warn");
    assert!(
        export_check["detail"]
            .as_str()
            .unwrap()
            .starts_with("6 ended run(s)"),
        "{export_check}"
    );

    // The receiver comes up: everything arrives.
    let mut receiver = Sidecar::start_on(
        &dir.path().join("receiver.db"),
        &["--otlp-grpc-listen", receiver_addr.as_str()],
    );
    // 6 runs: each a root span (the run) and its 3 spans.
    wait_for(
        &receiver,
        "SELECT count(*) FROM spans",
        24,
        "spans at the receiver",
    );

    // The exporter is killed and restarted; the agent goes on.
    exporter.stop_with("KILL");
    let mut exporter = Sidecar::start_on(&exporter_db, &exporter_flags);
    exporter.run_example_agent(3);
    wait_for(
        &receiver,
        "SELECT count(*) FROM spans",
        36,
        "spans after the restart",
    );
    std::thread::sleep(Duration::from_millis(1500)); // anything sent twice would show now
    assert_eq!(receiver.count("SELECT count(*) FROM spans"), 36);
    assert_eq!(receiver.count("SELECT count(*) FROM runs"), 9);
    assert_eq!(
        receiver.count("SELECT count(*) FROM runs WHERE name = 'answer-question'"),
        9,
        "each run is the root of its trace"
    );
    // Parents kept: every span but the roots has its parent at the receiver.
    assert_eq!(
        receiver.count(
            "SELECT count(*) FROM spans c LEFT JOIN spans p ON p.span_id = c.parent_span_id
             WHERE c.parent_span_id IS NOT NULL AND p.span_id IS NULL"
        ),
        0
    );
    assert_eq!(
        receiver.count(
            "SELECT count(*) FROM spans WHERE name = 'llm_call' AND parent_span_id IS NOT NULL"
        ),
        9
    );
    // Error texts kept.
    assert_eq!(
        receiver.count(
            "SELECT count(*) FROM spans WHERE name = 'tool_call' AND status = 'failed'
             AND error = 'search timed out after 1 retry'"
        ),
        3
    );
    // The resource context at each span's start and end rides along.
    assert_eq!(
        receiver.count(
            "SELECT count(*) FROM spans
             WHERE json_extract(attributes, '$.\"runlens.start.ram.available\"') > 0
               AND json_extract(attributes, '$.\"runlens.end.ram.available\"') > 0"
        ),
        36
    );
    // The sender is runlens.
    assert_eq!(
        receiver.count("SELECT count(*) FROM clients WHERE client_name = 'runlens'"),
        1
    );
    let scrape =
        String::from_utf8(http_get(&exporter.metrics.clone().unwrap(), "/metrics", &[]).body)
            .unwrap();
    assert!(scrape.contains("runlens_export_lag_runs 0"), "{scrape}");
    assert!(scrape.contains("runlens_export_lag_seconds 0"), "{scrape}");
    exporter.stop();
    receiver.stop();
}

mod metrics_receiver {
    //! A minimal OTLP metrics receiver that keeps what it is sent.

    use std::sync::{Arc, Mutex};

    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
        MetricsService, MetricsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    };
    use tokio_stream::wrappers::TcpListenerStream;

    #[derive(Clone, Default)]
    pub struct Captured(pub Arc<Mutex<Vec<ExportMetricsServiceRequest>>>);

    #[tonic::async_trait]
    impl MetricsService for Captured {
        async fn export(
            &self,
            request: tonic::Request<ExportMetricsServiceRequest>,
        ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
            self.0.lock().unwrap().push(request.into_inner());
            Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
        }
    }

    /// Serves on a free loopback port; returns the address.
    pub async fn start(captured: Captured) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(MetricsServiceServer::new(captured))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        addr
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_samples_reach_an_otlp_metrics_receiver_as_semantic_convention_gauges() {
    use opentelemetry_proto::tonic::common::v1::any_value;
    use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};

    const USED: u64 = 6 << 30;
    let scenario = runlens_e2e::Scenario::new(
        &serde_json::json!({ "devices": [{ "name": "H100", "uuid": "GPU-export",
            "memory_total_bytes": 80u64 << 30, "memory_used_bytes": USED,
            "gpm": { "dram_bw_util": 64.0 } }] })
        .to_string(),
    );
    let captured = metrics_receiver::Captured::default();
    let addr = metrics_receiver::start(captured.clone()).await;
    let (key, value) = scenario.env();
    let dir = tempfile::tempdir().unwrap();
    let lib = runlens_e2e::fake_nvml_lib();
    let export = format!("http://{addr}");
    let mut sidecar = Sidecar::start_with_env(
        &dir.path().join("m.db"),
        &[
            "--otlp-export",
            &export,
            "--sample-interval",
            "200ms",
            "--nvml-lib",
            lib.to_str().unwrap(),
        ],
        &[(key, value)],
    );
    // The first export begins at the newest sample; the next comes ten seconds later.
    let deadline = Instant::now() + Duration::from_secs(45);
    let gpu_point = loop {
        let found = captured.0.lock().unwrap().iter().find_map(|r| {
            r.resource_metrics
                .iter()
                .flat_map(|rm| &rm.scope_metrics)
                .flat_map(|sm| &sm.metrics)
                .find(|m| m.name == "hw.gpu.memory.usage")
                .and_then(|m| match &m.data {
                    Some(metric::Data::Gauge(g)) => g.data_points.first().cloned(),
                    _ => None,
                })
        });
        if let Some(point) = found {
            break point;
        }
        assert!(Instant::now() < deadline, "no hw.gpu.memory.usage exported");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        gpu_point.value,
        Some(number_data_point::Value::AsDouble(USED as f64))
    );
    let attribute = |key: &str| {
        gpu_point
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.clone())
    };
    assert_eq!(
        attribute("hw.id"),
        Some(any_value::Value::StringValue("GPU-export".into()))
    );
    assert_eq!(
        attribute("hw.type"),
        Some(any_value::Value::StringValue("gpu".into()))
    );
    let metrics = || -> Vec<(String, String, Option<number_data_point::Value>)> {
        captured
            .0
            .lock()
            .unwrap()
            .iter()
            .flat_map(|r| &r.resource_metrics)
            .flat_map(|rm| &rm.scope_metrics)
            .flat_map(|sm| &sm.metrics)
            .map(|m| {
                let value = match &m.data {
                    Some(metric::Data::Gauge(g)) => g.data_points.first().and_then(|p| p.value),
                    _ => None,
                };
                (m.name.clone(), m.unit.clone(), value)
            })
            .collect()
    };
    let names: Vec<String> = metrics().into_iter().map(|(name, ..)| name).collect();
    assert!(
        names.iter().any(|n| n == "system.memory.usage"),
        "{names:?}"
    );
    // GPU performance figures (GPM) under runlens's own names, from the second sample on.
    let bandwidth = loop {
        if let Some(found) = metrics()
            .into_iter()
            .find(|(name, ..)| name == "runlens.gpu.dram.bandwidth")
        {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no runlens.gpu.dram.bandwidth exported"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (bandwidth.1.as_str(), bandwidth.2),
        ("1", Some(number_data_point::Value::AsDouble(0.64)))
    );
    sidecar.stop();
}

#[test]
fn runs_reach_an_otlp_http_receiver_with_protobuf_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Sidecar::start_on(&dir.path().join("receiver.db"), &[]);
    let export = format!("http://{}", receiver.otlp_http.clone().unwrap());
    let mut exporter = Sidecar::start_on(
        &dir.path().join("exporter.db"),
        &[
            "--otlp-export",
            &export,
            "--otlp-export-protocol",
            "http/protobuf",
        ],
    );
    exporter.run_example_agent(3);
    wait_for(
        &receiver,
        "SELECT count(*) FROM spans",
        12,
        "spans over HTTP",
    );
    assert_eq!(
        receiver.count(
            "SELECT count(*) FROM spans WHERE status = 'failed'
             AND error = 'search timed out after 1 retry'"
        ),
        1
    );
    exporter.stop();
    receiver.stop();
}

#[test]
fn an_export_url_that_is_not_http_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (status, _, stderr) = runlens_e2e::run_bin(
        "runlens",
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--otlp-grpc-listen",
            "off",
            "--otlp-http-listen",
            "off",
            "--metrics-listen",
            "off",
            "--db",
            dir.path().join("x.db").to_str().unwrap(),
            "--otlp-export",
            "https://collector:4317",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("only http:// receivers"), "{stderr}");
}

#[test]
fn a_receiver_killed_in_the_middle_of_a_backlog_still_gets_everything_once() {
    let dir = tempfile::tempdir().unwrap();
    let receiver_addr = free_addr();
    let export = format!("http://{receiver_addr}");
    let mut exporter = Sidecar::start_on(
        &dir.path().join("exporter.db"),
        &["--otlp-export", export.as_str()],
    );
    // A backlog of several export batches (256 runs each) while the receiver is down.
    exporter.run_example_agent(700);
    let receiver_db = dir.path().join("receiver.db");
    let receiver_flags = ["--otlp-grpc-listen", receiver_addr.as_str()];
    let mut receiver = Sidecar::start_on(&receiver_db, &receiver_flags);
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.count("SELECT count(*) FROM spans") == 0 {
        assert!(Instant::now() < deadline, "nothing arrived");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Killed as the first batches arrive: what it acknowledged is committed, the rest is
    // sent again when it is back.
    receiver.stop_with("KILL");
    let mut receiver = Sidecar::start_on(&receiver_db, &receiver_flags);
    wait_for(
        &receiver,
        "SELECT count(*) FROM spans",
        700 * 4,
        "spans after the receiver came back",
    );
    assert_eq!(receiver.count("SELECT count(*) FROM runs"), 700);
    exporter.stop();
    receiver.stop();
}

#[test]
fn runs_sent_to_a_wrong_url_are_held_and_arrive_once_it_is_fixed() {
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Sidecar::start_on(&dir.path().join("receiver.db"), &[]);
    let http = receiver.otlp_http.clone().unwrap();
    let db = dir.path().join("exporter.db");
    let export = |url: &str| {
        vec![
            "--otlp-export".to_owned(),
            url.to_owned(),
            "--otlp-export-protocol".to_owned(),
            "http/protobuf".to_owned(),
        ]
    };
    // A path the receiver does not serve: it answers 404. Held, not skipped.
    let wrong = export(&format!("http://{http}/wrong"));
    let wrong: Vec<&str> = wrong.iter().map(String::as_str).collect();
    let mut exporter = Sidecar::start_on(&db, &wrong);
    exporter.run_example_agent(3);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(receiver.count("SELECT count(*) FROM spans"), 0);
    let held = |sidecar: &Sidecar| {
        let answer = runlens_e2e::http_get(sidecar.metrics.as_deref().unwrap(), "/metrics", &[]);
        String::from_utf8_lossy(&answer.body)
            .lines()
            .find_map(|l| l.strip_prefix("runlens_export_held ").map(str::to_owned))
    };
    assert_eq!(
        held(&exporter).as_deref(),
        Some("1.0"),
        "/metrics says it is held"
    );
    let logs = exporter.stop();
    assert!(logs.contains("held, not skipped"), "{logs}");
    assert!(!logs.contains("it is skipped"), "{logs}");
    let doctor = |db: &std::path::Path| {
        let out = std::process::Command::new(runlens_e2e::bin("runlens"))
            .args([
                "doctor",
                "--no-gpu",
                "--nvml-lib",
                "none",
                "--format",
                "json",
                "--db",
            ])
            .arg(db)
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "export")
            .cloned()
            .unwrap_or_else(|| panic!("no export check: {report}"))
    };
    let check = doctor(&db);
    assert_eq!(
        check["status"], "fail",
        "doctor says the export is held: {check}"
    );
    assert!(check["detail"].as_str().unwrap().contains("404"), "{check}");
    // Fixed, and written as many receivers document it: the full /v1/traces URL.
    let fixed = export(&format!("http://{http}/v1/traces"));
    let fixed: Vec<&str> = fixed.iter().map(String::as_str).collect();
    let mut exporter = Sidecar::start_on(&db, &fixed);
    wait_for(&receiver, "SELECT count(*) FROM spans", 12, "held spans");
    assert_eq!(held(&exporter).as_deref(), Some("0.0"));
    exporter.stop();
    assert_ne!(
        doctor(&db)["status"],
        "fail",
        "resumed once the URL was fixed"
    );
    assert_eq!(
        receiver.count("SELECT count(DISTINCT span_id) FROM spans"),
        12
    );
    receiver.stop();
}
