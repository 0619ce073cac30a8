//! Every GPU, every limit, every fault: `runlens serve` as a separate process, with the
//! fake NVML library loaded through the real nvml-wrapper path, and cgroup fixtures.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsStr;
use std::time::Duration;

use runlens_api::pb;
use runlens_api::pb::runlens_client::RunlensClient;
use runlens_e2e::{Scenario, Sidecar, fake_nvml_lib, fixture, report_json, run_bin};
use serde_json::{Value, json};

const GIB: i64 = 1 << 30;

fn demo() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crates/fake-nvml/scenarios/demo-4gpu.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A sidecar sampling every 100 ms with the fake library playing `scenario`.
fn sidecar_with(scenario: &Scenario, dir: &tempfile::TempDir) -> Sidecar {
    Sidecar::start_with_fake_nvml(&dir.path().join("gpu.db"), scenario)
}

fn sleep_samples(n: u64) {
    std::thread::sleep(Duration::from_millis(100 * n + 50));
}

#[test]
fn four_gpus_are_stored_with_their_values_and_unsupported_metrics_are_null() {
    let scenario = Scenario::new(&demo().to_string());
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = sidecar_with(&scenario, &dir);
    sleep_samples(4);
    let logs = sidecar.stop();

    assert_eq!(
        sidecar.count("SELECT count(DISTINCT gpu_index) FROM gpu_samples"),
        4
    );
    assert_eq!(
        sidecar.count("SELECT count(*) FROM snapshots WHERE gpu_available = 0"),
        0
    );
    assert_eq!(
        sidecar.count("SELECT count(*) FROM snapshots WHERE gpu_count = 4"),
        sidecar.count("SELECT count(*) FROM snapshots")
    );
    let row: (
        String,
        String,
        i64,
        i64,
        i64,
        f64,
        f64,
        f64,
        i64,
        f64,
        String,
        i64,
    ) = sidecar
        .sql()
        .query_row(
            "SELECT name, uuid, memory_total_bytes, memory_used_bytes, memory_free_bytes,
                    utilization_ratio, power_watts, power_limit_watts, clock_sm_mhz,
                    temperature_celsius, clock_event_reason_names, memory_reserved_bytes
             FROM gpu_samples WHERE gpu_index = 1 LIMIT 1",
            [],
            |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                    r.get(7)?,
                    r.get(8)?,
                    r.get(9)?,
                    r.get(10)?,
                    r.get(11)?,
                ))
            },
        )
        .unwrap();
    assert_eq!(row.0, "NVIDIA H100 80GB HBM3");
    assert_eq!(row.1, "GPU-11111111-fake-4000-8000-000000000001");
    assert_eq!((row.2, row.3), (85_520_809_984, 83_751_862_272));
    assert_eq!(
        row.4,
        85_520_809_984 - 83_751_862_272 - 566_231_040,
        "free = total - used - reserved"
    );
    assert_eq!((row.5, row.6, row.7), (0.99, 689.0, 700.0));
    assert_eq!((row.8, row.9), (1755, 79.0));
    assert_eq!(row.10, "sw_power_cap");
    assert_eq!(row.11, 566_231_040);
    // Per-process GPU memory.
    assert!(
        sidecar.count(
            "SELECT count(*) FROM gpu_processes WHERE gpu_index = 0 AND pid = 4242
             AND used_memory_bytes = 60129542144"
        ) >= 1
    );
    // GPU 3 does not support ECC or the process list: NULL and nothing else, no error.
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM gpu_samples WHERE gpu_index = 3
             AND (ecc_corrected_errors IS NOT NULL OR ecc_uncorrected_errors IS NOT NULL)"
        ),
        0
    );
    assert_eq!(
        sidecar.count("SELECT count(*) FROM gpu_processes WHERE gpu_index = 3"),
        0
    );
    assert_eq!(
        sidecar.count("SELECT count(*) FROM gpu_samples WHERE gpu_index = 3 AND state = 'ok' AND power_watts = 21.0"),
        sidecar.count("SELECT count(*) FROM snapshots")
    );
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM gpu_samples WHERE gpu_index = 2 AND ecc_corrected_errors = 2"
        ),
        sidecar.count("SELECT count(*) FROM snapshots")
    );
    // GPU 2 is in MIG mode: its instances are stored with their own memory.
    let snapshots = sidecar.count("SELECT count(*) FROM snapshots");
    assert_eq!(
        sidecar.count("SELECT count(*) FROM gpu_samples WHERE gpu_index = 2 AND mig_enabled = 1"),
        snapshots
    );
    assert_eq!(
        sidecar.count("SELECT count(*) FROM gpu_samples WHERE gpu_index != 2 AND mig_enabled = 0"),
        3 * snapshots
    );
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM mig_samples WHERE gpu_index = 2 AND mig_index = 0
             AND uuid = 'MIG-aaaaaaaa-fake-4000-8000-000000000020'
             AND memory_total_bytes = 20937965568 AND memory_used_bytes = 3221225472
             AND memory_free_bytes = 20937965568 - 3221225472"
        ),
        snapshots
    );
    assert_eq!(
        sidecar.count("SELECT count(DISTINCT mig_index) FROM mig_samples"),
        2
    );
    assert!(!logs.contains("WARN") && !logs.contains("ERROR"), "{logs}");
}

#[tokio::test]
async fn a_gpu_lost_mid_run_is_marked_and_recorded_while_the_others_go_on() {
    let mut world = demo();
    let scenario = Scenario::new(&world.to_string());
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = sidecar_with(&scenario, &dir);
    let mut c = RunlensClient::connect(sidecar.endpoint()).await.unwrap();
    c.start_run(pb::StartRunRequest {
        run_id: "r".into(),
        name: "train".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    sleep_samples(2);
    world["devices"][2]["errors"] = json!({ "*": 15 }); // GPU_IS_LOST
    scenario.write(&world.to_string());
    sleep_samples(3);
    let end = c
        .end_run(pb::EndRunRequest {
            run_id: "r".into(),
            status: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let states: Vec<&str> = end.gpus.iter().map(|g| g.state.as_str()).collect();
    assert_eq!(states, vec!["ok", "ok", "lost", "ok"]);
    sidecar.stop();

    assert_eq!(
        sidecar.count("SELECT count(*) FROM runs WHERE status = 'ok'"),
        1
    );
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM events WHERE kind = 'system' AND name = 'gpu.lost'
             AND json_extract(attributes, '$.gpu_index') = 2
             AND json_extract(attributes, '$.uuid') = 'GPU-22222222-fake-4000-8000-000000000002'"
        ),
        1,
        "recorded once"
    );
    let lost_at: i64 = sidecar.count(
        "SELECT min(s.taken_at_ns) FROM gpu_samples g JOIN snapshots s USING (snapshot_id)
         WHERE g.gpu_index = 2 AND g.state = 'lost'",
    );
    // Before: ok with values. After: lost, metrics NULL, and the other three still report.
    assert!(
        sidecar.count("SELECT count(*) FROM gpu_samples WHERE gpu_index = 2 AND state = 'ok'") >= 1
    );
    assert_eq!(
        sidecar.count(&format!(
            "SELECT count(*) FROM gpu_samples g JOIN snapshots s USING (snapshot_id)
             WHERE s.taken_at_ns >= {lost_at} AND g.gpu_index = 2
             AND (g.state != 'lost' OR g.memory_used_bytes IS NOT NULL)"
        )),
        0
    );
    let after = sidecar.count(&format!(
        "SELECT count(*) FROM snapshots WHERE taken_at_ns >= {lost_at}"
    ));
    assert!(after >= 2);
    assert_eq!(
        sidecar.count(&format!(
            "SELECT count(*) FROM gpu_samples g JOIN snapshots s USING (snapshot_id)
             WHERE s.taken_at_ns >= {lost_at} AND g.gpu_index != 2 AND g.state = 'ok'
             AND g.memory_used_bytes IS NOT NULL"
        )),
        3 * after
    );
}

#[tokio::test]
async fn the_driver_vanishing_turns_into_gpu_unavailable_and_serving_goes_on() {
    let mut world = demo();
    let scenario = Scenario::new(&world.to_string());
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = sidecar_with(&scenario, &dir);
    sleep_samples(2);
    world["errors"] = json!({ "*": 9 }); // DRIVER_NOT_LOADED, for every call
    scenario.write(&world.to_string());
    sleep_samples(3);
    let mut c = RunlensClient::connect(sidecar.endpoint()).await.unwrap();
    let snap = c
        .start_run(pb::StartRunRequest {
            run_id: "after".into(),
            name: "t".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert!(!snap.gpu_available);
    assert!(
        snap.gpu_unavailable_reason.contains("stopped answering"),
        "{}",
        snap.gpu_unavailable_reason
    );
    sidecar.stop();
    assert_eq!(sidecar.count("SELECT count(*) FROM runs"), 1);
    assert_eq!(
        sidecar.count("SELECT count(*) FROM events WHERE name = 'gpu.unavailable'"),
        1
    );
    assert!(sidecar.count("SELECT count(*) FROM snapshots WHERE gpu_available = 1") >= 1);
    assert!(sidecar.count("SELECT count(*) FROM snapshots WHERE gpu_available = 0") >= 2);
}

#[tokio::test]
async fn an_8_gib_allocation_during_a_span_shows_in_span_resources() {
    let mut world = demo();
    let scenario = Scenario::new(&world.to_string());
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = sidecar_with(&scenario, &dir);
    let mut c = RunlensClient::connect(sidecar.endpoint()).await.unwrap();
    c.start_run(pb::StartRunRequest {
        run_id: "r".into(),
        name: "t".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.start_span(pb::StartSpanRequest {
        run_id: "r".into(),
        span_id: "alloc".into(),
        name: "llm_call".into(),
        fresh_snapshot: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let used = world["devices"][2]["memory_used_bytes"].as_i64().unwrap();
    world["devices"][2]["memory_used_bytes"] = json!(used + 8 * GIB);
    scenario.write(&world.to_string());
    sleep_samples(2);
    c.end_span(pb::EndSpanRequest {
        span_id: "alloc".into(),
        status: 1,
        fresh_snapshot: true,
        ..Default::default()
    })
    .await
    .unwrap();
    sidecar.stop();
    assert_eq!(
        sidecar.count(
            "SELECT delta_gpu_memory_used_bytes FROM span_resources WHERE span_id = 'alloc'"
        ),
        8 * GIB
    );
    // The tightest GPU (index 1) did not change, so the minimum free memory did not either.
    assert_eq!(
        sidecar.count(
            "SELECT delta_gpu_memory_free_min_bytes FROM span_resources WHERE span_id = 'alloc'"
        ),
        0
    );
}

#[test]
fn a_library_that_cannot_be_loaded_means_gpu_available_0_and_doctor_explains_it() {
    // A file that exists but is no NVML (as a broken driver install leaves it): serve goes
    // on without GPUs and says why in every sample.
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("libnvidia-ml.so.1");
    std::fs::write(&broken, b"not a shared library").unwrap();
    let mut sidecar = Sidecar::start_on(
        &dir.path().join("nogpu.db"),
        &[
            "--sample-interval",
            "100ms",
            "--nvml-lib",
            broken.to_str().unwrap(),
        ],
    );
    sleep_samples(2);
    sidecar.stop();
    assert_eq!(
        sidecar.count("SELECT count(*) FROM snapshots WHERE gpu_available = 1"),
        0
    );
    assert_eq!(
        sidecar.count(&format!(
            "SELECT count(*) FROM snapshots WHERE gpu_unavailable_reason LIKE '%{} could not be loaded%'",
            broken.display()
        )),
        sidecar.count("SELECT count(*) FROM snapshots")
    );
    let (status, stdout, stderr) = run_bin(
        "runlens",
        &["doctor", "--nvml-lib", "/nonexistent/libnvidia-ml.so.1"],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("FAIL    nvml    not_found"), "{stdout}");
    assert!(
        stdout.contains("fix: install the NVIDIA driver"),
        "{stdout}"
    );
    assert!(stderr.contains("1 problem found"), "{stderr}");
    let (status, stdout, _) = run_bin(
        "runlens",
        &[
            "doctor",
            "--no-gpu",
            "--nvml-lib",
            "/nonexistent/libnvidia-ml.so.1",
            "--format",
            "json",
        ],
        Duration::from_secs(30),
    );
    assert!(
        status.success(),
        "--no-gpu: a missing NVML is only a warning"
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["ok"], true);
    let nvml = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "nvml")
        .unwrap();
    assert_eq!(nvml["status"], "warn");
    let fix = nvml["fix"].as_str().unwrap_or_default();
    assert!(
        !fix.contains("pass --no-gpu"),
        "--no-gpu was given, so doctor must not advise it: {fix}"
    );
}

/// Doctor's table with each wrapped finding joined back onto its first line.
fn unwrapped(table: &str) -> String {
    let mut out = String::new();
    for line in table.lines() {
        // A continuation has empty STATUS and CHECK cells: it starts with spaces.
        if line.starts_with("                  ") {
            out.push(' ');
            out.push_str(line.trim_start());
        } else {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(line);
        }
    }
    out
}

fn with_scenario(args: &[&str], scenario: &Scenario) -> (std::process::ExitStatus, String, String) {
    let lib = fake_nvml_lib();
    let out = std::process::Command::new(runlens_e2e::bin("runlens"))
        .args(args)
        .arg("--nvml-lib")
        .arg(&lib)
        .env(scenario.env().0, scenario.env().1)
        .output()
        .unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn snapshot_and_doctor_show_every_gpu_as_a_user_reads_them() {
    let mut world = demo();
    // GPU process ids that no process here can have (above Linux's largest pid_max, 2^22),
    // so that doctor's visibility check reads the same on every machine.
    world["devices"][0]["processes"][0]["pid"] = json!(4_194_305);
    world["devices"][1]["processes"][0]["pid"] = json!(4_194_306);
    let scenario = Scenario::new(&world.to_string());
    let (status, stdout, stderr) = with_scenario(&["snapshot"], &scenario);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("GPU   4 device(s)"), "{stdout}");
    let row = stdout.lines().find(|l| l.starts_with("1 ")).unwrap();
    for cell in [
        "NVIDIA H100 80GB HBM3",
        "ok",
        "78.0 GiB",
        "79.6 GiB",
        "99%",
        "79C",
        "689 W",
    ] {
        assert!(row.contains(cell), "{cell:?} not in {row:?}");
    }
    assert!(
        stdout.contains("  GPU 1: clocks held by sw_power_cap; processes 4194306 (78.0 GiB)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("  GPU 3: not supported: ecc_corrected, ecc_uncorrected, processes"),
        "{stdout}"
    );
    assert!(stdout.lines().all(|l| l.chars().count() <= 100), "{stdout}");

    let (status, stdout, _) = with_scenario(&["snapshot", "--format", "json"], &scenario);
    assert!(status.success());
    let json: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(json["gpu"]["devices"].as_array().unwrap().len(), 4);
    assert_eq!(json["gpu"]["devices"][0]["processes"][0]["pid"], 4_194_305);
    assert_eq!(
        json["gpu"]["devices"][3]["ecc_corrected_errors"],
        Value::Null
    );
    assert_eq!(json["gpu"]["devices"][2]["mig_enabled"], true);
    assert_eq!(
        json["gpu"]["devices"][2]["mig_devices"][1]["memory_used_bytes"],
        1u64 << 30
    );

    let (status, stdout, _) = with_scenario(&["doctor"], &scenario);
    assert!(status.success(), "{stdout}");
    assert!(stdout.lines().all(|l| l.chars().count() <= 100), "{stdout}");
    // Findings wrap at the column width, and where depends on the paths of this machine
    // (the library's path is in the nvml line): read them with the wrapping undone.
    let stdout = unwrapped(&stdout);
    assert!(
        stdout.contains("driver 550.54.15, CUDA 12.4; loaded /"),
        "{stdout}"
    );
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.starts_with("ok      gpu "))
            .count(),
        4,
        "{stdout}"
    );
    // Those GPU processes are not visible here, as host PIDs are not from inside a container.
    assert!(
        stdout.contains("warn    gpu pids  none of the 2 GPU process ids"),
        "{stdout}"
    );
    assert!(stdout.contains("hostPID: true"), "{stdout}");

    // A lost GPU makes doctor fail and say what to do.
    world["devices"][1]["errors"] = json!({ "*": 15 });
    scenario.write(&world.to_string());
    let (status, stdout, _) = with_scenario(&["doctor"], &scenario);
    assert_eq!(status.code(), Some(1));
    let stdout = unwrapped(&stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with("FAIL")
            && l.contains("gpu 1")
            && l.contains("lost (fallen off the bus)")),
        "{stdout}"
    );
    assert!(stdout.contains("Xid"), "{stdout}");
    // The driver not loaded at all.
    world["errors"] = json!({ "nvmlInit_v2": 9 });
    scenario.write(&world.to_string());
    let (status, stdout, _) = with_scenario(&["doctor", "--format", "json"], &scenario);
    assert_eq!(status.code(), Some(1));
    assert!(stdout.contains("driver_not_loaded"), "{stdout}");
}

/// (version, memory limit, memory used, CPU quota in cores, throttled ns)
type CgroupRow = (i64, Option<i64>, Option<i64>, Option<f64>, Option<i64>);

#[test]
fn cgroup_fixtures_give_the_right_limits_in_snapshots() {
    let cases: [(&str, CgroupRow); 3] = [
        (
            "v2",
            (
                2,
                Some(4 * GIB),
                Some(4_080_218_931 - 268_435_456),
                Some(2.0),
                Some(4_500_000_000),
            ),
        ),
        (
            "v1",
            (
                1,
                Some(2 * GIB),
                Some(1_932_735_283 - 134_217_728),
                Some(0.5),
                Some(987_654_321),
            ),
        ),
        ("unlimited", (2, None, Some(1_048_576_000), None, Some(0))),
    ];
    for (name, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let root = fixture(&format!("cgroup/{name}"));
        let mut sidecar = Sidecar::start_with_env(
            &dir.path().join("c.db"),
            &[
                "--sample-interval",
                "100ms",
                "--cgroup-root",
                root.to_str().unwrap(),
            ],
            &[] as &[(&str, &OsStr)],
        );
        sleep_samples(2);
        sidecar.stop();
        let row: CgroupRow = sidecar
            .sql()
            .query_row(
                "SELECT cgroup_version, cgroup_memory_limit_bytes, cgroup_memory_used_bytes,
                        cgroup_cpu_quota_cores, cgroup_cpu_throttled_ns
                 FROM snapshots ORDER BY snapshot_id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap();
        assert_eq!(row, expected, "fixture {name}");
    }
}

#[test]
fn the_report_judges_the_gpu_the_agent_uses_not_the_tightest_on_the_machine() {
    let r = report_on_two_gpus(AgentShows::Process, &[]);
    assert_eq!(r["agent_gpus"], json!([1]));
    assert_eq!(r["agent_gpus_from"], "processes");
    assert_agents_gpu_judged(&r);
    // The neighbour is still reported in the OOM section, where every GPU counts.
    assert_eq!(r["oom"]["gpus"][0]["share_below"], 1.0);
}

#[test]
fn without_visible_agent_processes_the_report_takes_cuda_visible_devices() {
    // NVML lists no agent process (host PIDs in a container): the agent's own setting,
    // sent in its hello, names its GPU, by UUID or by index.
    for setting in ["GPU-a", "1"] {
        let r = report_on_two_gpus(AgentShows::Nothing, &[("CUDA_VISIBLE_DEVICES", setting)]);
        assert_eq!(r["agent_gpus"], json!([1]), "{setting}");
        assert_eq!(r["agent_gpus_from"], "cuda_visible_devices", "{setting}");
        assert_agents_gpu_judged(&r);
    }
    // Nothing to go on: every GPU counts, and the report says it does not know.
    let r = report_on_two_gpus(AgentShows::Nothing, &[]);
    assert_eq!(r["agent_gpus"], json!([]));
    assert_eq!(r["agent_gpus_from"], Value::Null);
}

/// What NVML's process list shows of the agent.
#[derive(Clone, Copy)]
enum AgentShows {
    /// The agent's PID holds 10 GiB on GPU 1.
    Process,
    /// No processes at all.
    Nothing,
}

/// The example agent on a machine of two GPUs, a neighbour's nearly full (GPU 0) and the
/// agent's (GPU 1); the report of it, as JSON.
fn report_on_two_gpus(shows: AgentShows, env: &[(&str, &str)]) -> Value {
    const TOTAL: i64 = 80 * GIB;
    let world = |agent: Option<u32>| {
        let processes = agent.map_or_else(Vec::new, |pid| {
            vec![json!({ "pid": pid, "used_memory_bytes": 10 * GIB })]
        });
        json!({ "devices": [
            { "name": "busy neighbour", "uuid": "GPU-n", "memory_total_bytes": TOTAL,
              "memory_used_bytes": TOTAL - GIB / 4 },
            { "name": "the agent's", "uuid": "GPU-a", "memory_total_bytes": TOTAL,
              "memory_used_bytes": 10 * GIB, "processes": processes }
        ]})
        .to_string()
    };
    let scenario = Scenario::new(&world(None));
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = sidecar_with(&scenario, &dir);
    let child = std::process::Command::new(runlens_e2e::bin("example-agent"))
        .args([
            "--endpoint",
            &sidecar.endpoint(),
            "--runs",
            "12",
            "--step-ms",
            "20",
        ])
        .env_remove("CUDA_VISIBLE_DEVICES")
        .env_remove("NVIDIA_VISIBLE_DEVICES")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    if let AgentShows::Process = shows {
        scenario.write(&world(Some(child.id())));
    }
    assert!(child.wait_with_output().unwrap().status.success());
    sidecar.stop();
    report_json(&sidecar.db, &[])
}

/// The report's GPU figures are those of the agent's GPU, not of the tightest on the
/// machine; the OOM section still covers every GPU.
fn assert_agents_gpu_judged(r: &Value) {
    let llm = r["context"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "llm_call")
        .unwrap();
    let free = llm["gpu_free_min_mib_p50"].as_f64().unwrap();
    assert!(
        free > 60_000.0,
        "the agent's GPU has ~70 GiB free, not the neighbour's 256 MiB: {free}"
    );
}

#[tokio::test]
async fn gpu_memory_a_child_of_the_agent_holds_counts_for_the_agent_on_that_gpu() {
    // The agent is this test process; the GPU memory is held by a process it started
    // (as a model server or worker would), on GPU 1 only.
    let mut worker = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let world = |holder: Option<u32>| {
        let processes = holder.map_or_else(Vec::new, |pid| {
            vec![json!({ "pid": pid, "used_memory_bytes": 6 * GIB })]
        });
        json!({ "devices": [
            { "name": "other", "uuid": "GPU-o", "memory_total_bytes": 80 * GIB,
              "memory_used_bytes": GIB },
            { "name": "the worker's", "uuid": "GPU-w", "memory_total_bytes": 80 * GIB,
              "memory_used_bytes": 6 * GIB, "processes": processes }
        ]})
        .to_string()
    };
    let scenario = Scenario::new(&world(None));
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = sidecar_with(&scenario, &dir);
    let client = runlens_client::Client::builder(sidecar.endpoint())
        .build()
        .unwrap();
    let run = client.start_run("serve-model");
    client.flush_timeout(Duration::from_secs(10)).await.unwrap();
    scenario.write(&world(Some(worker.id())));
    let agent = std::process::id();
    let held = format!(
        "SELECT count(*) FROM process_gpu_samples
         WHERE pid = {agent} AND gpu_index = 1 AND used_memory_bytes = {}",
        6 * GIB
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while sidecar.count(&held) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker's GPU memory never counted for the agent"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The live snapshot says the same over the wire.
    let mut raw = RunlensClient::connect(sidecar.endpoint()).await.unwrap();
    let now = raw
        .get_snapshot(pb::GetSnapshotRequest::default())
        .await
        .unwrap()
        .into_inner();
    let me = now.agent_processes.iter().find(|p| p.pid == agent).unwrap();
    assert_eq!(me.gpu_memory_bytes, Some(6 << 30));
    assert_eq!(
        me.gpus,
        vec![pb::AgentGpuMemory {
            gpu_index: 1,
            used_memory_bytes: 6 << 30
        }]
    );
    run.end_ok();
    client.flush_timeout(Duration::from_secs(10)).await.unwrap();
    worker.kill().unwrap();
    worker.wait().unwrap();
    sidecar.stop();
    // Never on the other GPU, and the per-GPU rows add up to the tree's total.
    assert_eq!(
        sidecar.count("SELECT count(*) FROM process_gpu_samples WHERE gpu_index = 0"),
        0
    );
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM process_samples p
             WHERE p.gpu_memory_bytes != coalesce((SELECT sum(used_memory_bytes)
                 FROM process_gpu_samples g
                 WHERE g.snapshot_id = p.snapshot_id AND g.pid = p.pid), 0)"
        ),
        0
    );
    // The report takes GPU 1 as the agent's.
    let r = report_json(&sidecar.db, &[]);
    assert_eq!(r["agent_gpus"], json!([1]));
    assert_eq!(r["agent_gpus_from"], "processes");
}

#[test]
fn gpus_limits_sampling_and_storage_to_the_pods_own_gpus() {
    // A pod given GPUs 1 and 3 of a 4-GPU node, one named by index and one by UUID (as
    // NVIDIA_VISIBLE_DEVICES may list them).
    let scenario = Scenario::new(&demo().to_string());
    let dir = tempfile::tempdir().unwrap();
    let lib = fake_nvml_lib();
    let (key, value) = scenario.env();
    let mut sidecar = Sidecar::start_with_env(
        &dir.path().join("gpu.db"),
        &[
            "--sample-interval",
            "100ms",
            "--nvml-lib",
            lib.to_str().unwrap(),
            "--gpus",
            "1,GPU-33333333-fake-4000-8000-000000000003",
        ],
        &[(key, value)],
    );
    sleep_samples(3);
    sidecar.stop();
    let stored: Vec<(i64, String)> = {
        let conn = sidecar.sql();
        let mut stmt = conn
            .prepare("SELECT DISTINCT gpu_index, uuid FROM gpu_samples ORDER BY gpu_index")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(
        stored,
        [
            (1, "GPU-11111111-fake-4000-8000-000000000001".to_owned()),
            (3, "GPU-33333333-fake-4000-8000-000000000003".to_owned())
        ]
    );
    assert_eq!(
        sidecar.count("SELECT count(*) FROM snapshots WHERE gpu_count != 2"),
        0
    );

    // The same selection for snapshot and doctor, from RUNLENS_GPUS; a bad item is refused.
    let lib_arg = lib.to_str().unwrap();
    let out = std::process::Command::new(runlens_e2e::bin("runlens"))
        .args(["snapshot", "--format", "json", "--nvml-lib", lib_arg])
        .env(key, value)
        .env("RUNLENS_GPUS", "GPU-22222222-fake-4000-8000-000000000002")
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let indexes: Vec<i64> = json["gpu"]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["index"].as_i64().unwrap())
        .collect();
    assert_eq!(indexes, [2]);
    let (status, _, stderr) = with_scenario(&["snapshot", "--gpus", "MIG-1"], &scenario);
    assert!(!status.success());
    assert!(
        stderr.contains("neither a GPU index nor a GPU UUID"),
        "{stderr}"
    );
}

#[test]
fn in_a_pod_the_agents_nvidia_visible_devices_names_its_gpu() {
    // The device plugin's UUID list, which counts in the node's numbering (what the
    // sidecar sees), wins over CUDA_VISIBLE_DEVICES (whose "0" is the container's first GPU,
    // here the node's GPU 1); "all" names no particular GPU.
    let r = report_on_two_gpus(
        AgentShows::Nothing,
        &[
            ("NVIDIA_VISIBLE_DEVICES", "GPU-a"),
            ("CUDA_VISIBLE_DEVICES", "0"),
        ],
    );
    assert_eq!(r["agent_gpus"], json!([1]));
    assert_eq!(r["agent_gpus_from"], "nvidia_visible_devices");
    assert_agents_gpu_judged(&r);
    let r = report_on_two_gpus(
        AgentShows::Nothing,
        &[
            ("NVIDIA_VISIBLE_DEVICES", "all"),
            ("CUDA_VISIBLE_DEVICES", "GPU-a"),
        ],
    );
    assert_eq!(r["agent_gpus"], json!([1]));
    assert_eq!(r["agent_gpus_from"], "cuda_visible_devices");
}

/// A run's end takes a fresh sample of its own, often milliseconds after the last one: it
/// asks NVML again for what changes that fast (memory, utilization, processes), and carries
/// temperature, power, clocks and error counts read within the last 200 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_samples_read_gpu_memory_every_time_and_slow_figures_at_most_every_200_ms() {
    let mut world = json!({ "devices": [{
        "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-h", "memory_total_bytes": 80 * GIB,
        "memory_used_bytes": 10 * GIB, "temperature_celsius": 40
    }]});
    let scenario = Scenario::new(&world.to_string());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let lib = fake_nvml_lib();
    let began = std::time::Instant::now();
    let mut sidecar = Sidecar::start_with_env(
        &dir.path().join("fresh.db"),
        &[
            "--sample-interval",
            "60s",
            "--nvml-lib",
            lib.to_str().unwrap(),
        ],
        &[
            scenario.env(),
            ("RUNLENS_FAKE_NVML_CALL_LOG", log.as_os_str()),
        ],
    );
    let c = RunlensClient::connect(sidecar.endpoint()).await.unwrap();
    c.clone()
        .start_run(pb::StartRunRequest {
            run_id: "r".into(),
            name: "task".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Each step asks for fresh samples at its start and end (the explicit request: nothing
    // else samples on arrival).
    let step = |id: String| {
        let mut c = c.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(15)).await;
            c.start_span(pb::StartSpanRequest {
                run_id: "r".into(),
                span_id: id.clone(),
                name: "llm_call".into(),
                fresh_snapshot: true,
                ..Default::default()
            })
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(15)).await;
            c.end_span(pb::EndSpanRequest {
                span_id: id,
                status: 1,
                fresh_snapshot: true,
                ..Default::default()
            })
            .await
            .unwrap();
        }
    };
    for i in 0..15 {
        step(format!("quick-{i}")).await;
    }
    // Memory changes right before a step ends: its fresh end sample sees it.
    world["devices"][0]["memory_used_bytes"] = json!(18 * GIB);
    scenario.write(&world.to_string());
    step("after".into()).await;
    let elapsed = began.elapsed();
    sidecar.stop();

    assert_eq!(
        sidecar.count(
            "SELECT g.memory_used_bytes FROM spans s JOIN gpu_samples g
             ON g.snapshot_id = s.end_snapshot_id WHERE s.span_id = 'after'"
        ),
        18 * GIB
    );
    let calls = |entry: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == entry)
            .count() as u128
    };
    let samples = sidecar.count("SELECT count(*) FROM gpu_samples") as u128;
    let memory = calls("nvmlDeviceGetMemoryInfo_v2@0");
    let temperature = calls("nvmlDeviceGetTemperature@0");
    assert!(
        samples >= 32,
        "every fresh request 15 ms after another has its own sample: {samples}"
    );
    assert!(
        memory >= samples,
        "memory asked every sample: {memory} for {samples}"
    );
    // One reading per 200 ms at most (plus the first), whatever the number of samples.
    let bound = elapsed.as_millis() / 200 + 2;
    assert!(
        temperature >= 1 && temperature <= bound,
        "temperature asked {temperature} times in {elapsed:?} for {samples} samples"
    );
}
