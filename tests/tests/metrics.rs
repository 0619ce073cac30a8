//! Prometheus `/metrics`: every GPU of the fake 4-GPU machine with the scenario's figures,
//! span and run counters equal to what is stored, both exposition formats.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use runlens_e2e::{Scenario, Sidecar, http_get};

/// The value of the series whose line starts with `series` (name and labels, as written).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The sum of every series of `name`.
fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The fake NVML library's demo scenario: four GPUs.
fn demo_scenario() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/fake-nvml/scenarios/demo-4gpu.json")
}

#[test]
fn a_scrape_shows_every_gpu_and_counts_what_is_stored() {
    let scenario = Scenario::new(&std::fs::read_to_string(demo_scenario()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = Sidecar::start_with_fake_nvml(&dir.path().join("m.db"), &scenario);
    sidecar.run_example_agent(6);
    std::thread::sleep(Duration::from_millis(300));
    let addr = sidecar.metrics.clone().expect("metrics on");
    let answer = http_get(&addr, "/metrics", &[]);
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = String::from_utf8(answer.body).unwrap();

    let scenario: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo_scenario()).unwrap()).unwrap();
    for (i, device) in scenario["devices"].as_array().unwrap().iter().enumerate() {
        let labels = format!(
            "{{hw_id=\"{}\",gpu=\"{i}\",hw_model=\"{}\"}}",
            device["uuid"].as_str().unwrap(),
            device["name"].as_str().unwrap()
        );
        let used = value(&text, &format!("hw_gpu_memory_usage_bytes{labels}"));
        assert_eq!(
            used,
            device["memory_used_bytes"].as_f64(),
            "GPU {i} in\n{text}"
        );
        let total = value(&text, &format!("hw_gpu_memory_limit_bytes{labels}"));
        assert_eq!(total, device["memory_total_bytes"].as_f64(), "GPU {i}");
        let util = value(&text, &format!("hw_gpu_utilization_ratio{labels}")).unwrap();
        let expected = device["utilization_gpu_percent"].as_f64().unwrap() / 100.0;
        assert!((util - expected).abs() < 1e-9, "GPU {i}: {util}");
        // GPU performance figures where the GPU has them (GPM: the two H100s), none elsewhere.
        let bandwidth = value(&text, &format!("runlens_gpu_dram_bandwidth_ratio{labels}"));
        let nvlink = value(
            &text,
            &format!("runlens_gpu_nvlink_transmit_bytes_per_second{labels}"),
        );
        match device.get("gpm") {
            Some(gpm) => {
                let expected = gpm["dram_bw_util"].as_f64().unwrap() / 100.0;
                assert!((bandwidth.unwrap() - expected).abs() < 1e-9, "GPU {i}");
                let mib = gpm["nvlink_total_tx_per_sec"].as_f64().unwrap();
                assert_eq!(nvlink, Some(mib * 1_048_576.0), "GPU {i}");
            }
            None => assert_eq!((bandwidth, nvlink), (None, None), "GPU {i}"),
        }
    }
    // Counters equal what SQL sees.
    let stored_spans = sidecar.count("SELECT count(*) FROM spans WHERE status <> 'running'");
    assert_eq!(sum(&text, "runlens_spans_total") as i64, stored_spans);
    assert_eq!(
        value(
            &text,
            "runlens_spans_total{name=\"llm_call\",status=\"ok\"}"
        ),
        Some(6.0)
    );
    assert_eq!(sum(&text, "runlens_runs_total"), 6.0);
    assert_eq!(
        value(
            &text,
            "runlens_span_duration_seconds_count{name=\"llm_call\"}"
        ),
        Some(6.0)
    );
    assert!(
        text.contains("# TYPE runlens_spans_total counter"),
        "{text}"
    );
    assert!(!text.contains("# EOF"));
    assert_eq!(value(&text, "runlens_storage_ok"), Some(1.0));
    assert!(value(&text, "runlens_build_info{version=").is_some());

    // OpenMetrics for scrapers that ask for it.
    let om = http_get(
        &addr,
        "/metrics",
        &[("Accept", "application/openmetrics-text;version=1.0.0")],
    );
    assert!(
        om.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(String::from_utf8(om.body).unwrap().ends_with("# EOF\n"));
    sidecar.stop();
}

#[test]
fn metrics_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = Sidecar::start_on(&dir.path().join("off.db"), &["--metrics-listen", "off"]);
    assert_eq!(sidecar.metrics, None);
    sidecar.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_open_runs_and_the_sample_cost_are_shown() {
    use runlens_api::pb;
    use runlens_api::pb::runlens_client::RunlensClient;

    let mut sidecar = Sidecar::start();
    let mut client = RunlensClient::connect(sidecar.endpoint()).await.unwrap();
    client
        .start_run(pb::StartRunRequest {
            run_id: "open-1".into(),
            name: "task".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = client
        .start_run(pb::StartRunRequest {
            run_id: "bad".into(),
            name: "  ".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let twice = client
        .start_run(pb::StartRunRequest {
            run_id: "open-1".into(),
            name: "task".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(twice.code(), tonic::Code::AlreadyExists);
    let addr = sidecar.metrics.clone().unwrap();
    let text = String::from_utf8(http_get(&addr, "/metrics", &[]).body).unwrap();
    assert_eq!(
        value(&text, "runlens_rejected_total{reason=\"invalid_argument\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, "runlens_rejected_total{reason=\"already_exists\"}"),
        Some(1.0)
    );
    assert_eq!(value(&text, "runlens_open_runs"), Some(1.0));
    let sample = value(&text, "runlens_sample_duration_seconds").unwrap();
    assert!(sample > 0.0 && sample < 1.0, "{sample}");
    sidecar.stop();
}
