//! GPU performance monitoring (NVML's GPM, Hopper and newer): `runlens serve` as a separate
//! process with the fake NVML library playing GPM through the real nvml-wrapper path.
//! Figures are sampled, stored, shown in the views and used by the report; a GPU without
//! GPM gives NULLs and is asked once; a GPU that loses GPM goes NULL and is not asked again;
//! every GPM sample NVML allocated is freed.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::time::Duration;

use runlens_client::Client;
use runlens_e2e::{Scenario, Sidecar, fake_nvml_lib, report_json};
use serde_json::{Value, json};

const GIB: i64 = 1 << 30;

/// An H100 with GPM playing `gpm` (or none), and an A100 without GPM.
fn machine(gpm: Value) -> String {
    let mut hopper = json!({
        "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-h", "memory_total_bytes": 80 * GIB,
        "memory_used_bytes": 20 * GIB, "utilization_gpu_percent": 90
    });
    if !gpm.is_null() {
        hopper["gpm"] = gpm;
    }
    json!({ "devices": [
        hopper,
        { "name": "NVIDIA A100-SXM4-40GB", "uuid": "GPU-a", "memory_total_bytes": 40 * GIB,
          "memory_used_bytes": GIB, "utilization_gpu_percent": 10 }
    ]})
    .to_string()
}

/// GPM figures of a GPU whose memory bandwidth is `bandwidth_percent` busy.
fn busy(bandwidth_percent: f64) -> Value {
    json!({ "sm_util": 90.0, "sm_occupancy": 40.0, "any_tensor_util": 35.0,
            "hmma_tensor_util": 30.0, "dram_bw_util": bandwidth_percent, "fp16_util": 25.0,
            "fp32_util": 5.0, "pcie_tx_per_sec": 100.0, "pcie_rx_per_sec": 200.0,
            "nvlink_total_tx_per_sec": 0.0, "nvlink_total_rx_per_sec": 0.0 })
}

/// A sidecar sampling every 100 ms with the fake library, logging NVML calls to `log`.
fn sidecar(dir: &tempfile::TempDir, scenario: &Scenario, log: &std::path::Path) -> Sidecar {
    let lib = fake_nvml_lib();
    let (key, value) = scenario.env();
    Sidecar::start_with_env(
        &dir.path().join("gpm.db"),
        &[
            "--sample-interval",
            "100ms",
            "--nvml-lib",
            lib.to_str().unwrap(),
        ],
        &[
            (key, value),
            ("RUNLENS_FAKE_NVML_CALL_LOG", log.as_os_str()),
        ],
    )
}

/// How many calls the log holds of exactly `entry` (`nvmlGpmSampleGet@0`).
fn calls(log: &std::path::Path, entry: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == entry)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_calls_slowed_by_memory_bandwidth_are_stored_and_found_by_the_report() {
    let scenario = Scenario::new(&machine(busy(10.0)));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let mut sidecar = sidecar(&dir, &scenario, &log);
    let client = Client::builder(sidecar.endpoint())
        .name("bandwidth")
        .build()
        .unwrap();
    let run = client.start_run("decode");
    // The busier the memory bandwidth when an llm_call starts, the longer it takes; a
    // tool_call takes the same time whatever the GPU does.
    for i in 0..24u32 {
        let bandwidth = f64::from(10 + (i * 7) % 85);
        scenario.write(&machine(busy(bandwidth)));
        // Two sampling periods: the GPM interval ending after the write covers the new
        // figures.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let span = run.span_fresh("llm_call");
        tokio::time::sleep(Duration::from_millis(5 + (bandwidth / 4.0) as u64)).await;
        span.end_ok();
        let span = run.span_fresh("tool_call");
        tokio::time::sleep(Duration::from_millis(5)).await;
        span.end_ok();
    }
    run.end_ok();
    client.flush().await.unwrap();
    sidecar.stop();

    // Stored per GPU sample: the Hopper's figures, NULL for the A100.
    let hopper = sidecar.count(
        "SELECT count(*) FROM gpu_samples WHERE gpu_index = 0 AND sm_active_ratio = 0.9
         AND sm_occupancy_ratio = 0.4 AND tensor_active_ratio = 0.35
         AND tensor_hmma_active_ratio = 0.3 AND fp16_active_ratio = 0.25
         AND fp32_active_ratio = 0.05 AND pcie_tx_bytes_per_second = 100 * 1048576
         AND pcie_rx_bytes_per_second = 200 * 1048576 AND nvlink_tx_bytes_per_second = 0
         AND dram_bandwidth_ratio BETWEEN 0.1 AND 0.95 AND gpm_interval_seconds > 0.08",
    );
    let samples = sidecar.count("SELECT count(*) FROM gpu_samples WHERE gpu_index = 0");
    // Only samples before the first GPM interval closed (the first periodic one, and a
    // fresh one right after it) have none.
    let early = sidecar.count(
        "SELECT count(*) FROM gpu_samples JOIN snapshots USING (snapshot_id)
         WHERE gpu_index = 0
           AND taken_at_ns < (SELECT min(taken_at_ns) FROM snapshots) + 150000000",
    );
    assert!(
        hopper >= samples - early && hopper > 100,
        "{hopper} of {samples} ({early} early)"
    );
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM gpu_samples WHERE gpu_index = 1
             AND (sm_active_ratio IS NOT NULL OR dram_bandwidth_ratio IS NOT NULL
                  OR gpm_interval_seconds IS NOT NULL)"
        ),
        0
    );
    // In the views SQL users read.
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM span_resources WHERE name = 'llm_call'
             AND start_gpu_dram_bw_max_ratio BETWEEN 0.1 AND 0.95
             AND start_gpu_tensor_max_ratio = 0.35
             AND start_gpu_sm_active_max_ratio = 0.9"
        ),
        24
    );

    // The report states the relation in plain words and shows the figures at span start.
    let report = report_json(&sidecar.db, &[]);
    let findings: Vec<&str> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(
        findings
            .iter()
            .any(|f| f.starts_with("llm_call is slower when GPU 0's memory bandwidth is busier")),
        "{findings:?}"
    );
    // (tool_call is not checked for the absence of findings: with 24 spans, host noise —
    // load, RAM — reaches |ρ| ≥ 0.3 by chance now and then.)
    let llm = report["context"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "llm_call")
        .unwrap();
    let bandwidth = llm["gpu_dram_bandwidth_p50"].as_f64().unwrap();
    assert!((0.1..=0.95).contains(&bandwidth), "{bandwidth}");
    assert_eq!(llm["gpu_tensor_active_p50"].as_f64(), Some(0.35));
    let correlation = report["correlations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "llm_call" && c["resource"] == "gpu_dram_bandwidth")
        .unwrap();
    assert!(correlation["rho"].as_f64().unwrap() > 0.9, "{correlation}");
}

#[test]
fn gpus_without_gpm_are_asked_once_and_a_gpu_that_loses_it_goes_null() {
    let scenario = Scenario::new(&machine(busy(50.0)));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let mut sidecar = sidecar(&dir, &scenario, &log);
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        sidecar.count(
            "SELECT count(*) FROM gpu_samples WHERE gpu_index = 0 AND dram_bandwidth_ratio = 0.5"
        ) >= 3
    );
    // The A100 said no once and was never sampled.
    assert_eq!(calls(&log, "nvmlGpmQueryDeviceSupport@1"), 1);
    assert_eq!(calls(&log, "nvmlGpmSampleGet@1"), 0);
    assert_eq!(calls(&log, "nvmlGpmQueryDeviceSupport@0"), 1);
    assert!(calls(&log, "nvmlGpmSampleGet@0") >= 4);

    // The Hopper stops supporting GPM (a driver change, a MIG reconfiguration).
    let mut lost = busy(50.0);
    lost["supported"] = json!(false);
    scenario.write(&machine(lost));
    std::thread::sleep(Duration::from_millis(500));
    let asked = calls(&log, "nvmlGpmSampleGet@0");
    let before = sidecar.count("SELECT max(snapshot_id) FROM snapshots");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        calls(&log, "nvmlGpmSampleGet@0"),
        asked,
        "not asked again after answering not supported"
    );
    let after = sidecar.count(&format!(
        "SELECT count(*) FROM gpu_samples WHERE gpu_index = 0 AND snapshot_id > {before}"
    ));
    assert!(after >= 3, "{after}");
    assert_eq!(
        sidecar.count(&format!(
            "SELECT count(*) FROM gpu_samples WHERE gpu_index = 0 AND snapshot_id > {before}
             AND (dram_bandwidth_ratio IS NOT NULL OR gpm_interval_seconds IS NOT NULL)"
        )),
        0
    );
    // Its other figures go on.
    assert_eq!(
        sidecar.count(&format!(
            "SELECT count(*) FROM gpu_samples WHERE gpu_index = 0 AND snapshot_id > {before}
             AND memory_used_bytes = 20 * 1073741824"
        )),
        after
    );
    let logs = sidecar.stop();
    assert!(!logs.contains("WARN") && !logs.contains("ERROR"), "{logs}");
    // Every sample NVML allocated was freed, the last ones when the sidecar stopped.
    let allocated = calls(&log, "nvmlGpmSampleAlloc");
    assert!(allocated >= 4);
    assert_eq!(calls(&log, "nvmlGpmSampleFree"), allocated);
}

#[test]
fn snapshot_shows_what_kind_of_busy_each_gpu_is() {
    let scenario = Scenario::new(&machine(busy(72.0)));
    let (key, value): (&str, &OsStr) = scenario.env();
    let lib = fake_nvml_lib();
    let output = std::process::Command::new(runlens_e2e::bin("runlens"))
        .args(["snapshot", "--format", "json", "--nvml-lib"])
        .arg(&lib)
        .env(key, value)
        .output()
        .unwrap();
    assert!(output.status.success());
    let snapshot: Value = serde_json::from_slice(&output.stdout).unwrap();
    let devices = snapshot["gpu"]["devices"].as_array().unwrap();
    let perf = &devices[0]["perf"];
    assert_eq!(perf["dram_bandwidth_ratio"].as_f64(), Some(0.72));
    assert_eq!(perf["tensor_active_ratio"].as_f64(), Some(0.35));
    assert!(perf["interval_seconds"].as_f64().unwrap() >= 0.09);
    assert!(devices[1]["perf"].is_null());

    let output = std::process::Command::new(runlens_e2e::bin("runlens"))
        .args(["snapshot", "--nvml-lib"])
        .arg(&lib)
        .env(key, value)
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("mem bandwidth 72%"), "{text}");
    assert!(text.contains("tensor 35%"), "{text}");
}
