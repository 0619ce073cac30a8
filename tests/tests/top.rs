//! `WatchActivity` and `runlens top` against a real sidecar with the fake 4-GPU machine:
//! open runs with their current step, the agents, failures marked likely OOM once GPU
//! memory runs out, and the one-frame text output. The interactive screen is driven
//! through tmux by `scripts/check-top.sh`.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use runlens_api::pb;
use runlens_api::pb::runlens_client::RunlensClient;
use runlens_client::Client;
use runlens_e2e::{Scenario, Sidecar, run_bin};
use serde_json::Value;

fn demo() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../crates/fake-nvml/scenarios/demo-4gpu.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The next state of the stream.
async fn next(stream: &mut tonic::Streaming<pb::Activity>) -> pb::Activity {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a state within 10 s")
        .unwrap()
        .expect("the stream goes on")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_activity_shows_open_work_agents_and_failures_marked_likely_oom() {
    let mut world = demo();
    let scenario = Scenario::new(&world.to_string());
    let dir = tempfile::tempdir().unwrap();
    let mut sidecar = Sidecar::start_with_fake_nvml(&dir.path().join("top.db"), &scenario);
    let client = Client::builder(sidecar.endpoint())
        .name("planner")
        .build()
        .unwrap();
    let alpha = client.start_run("alpha");
    let step = alpha.span("plan");
    let inner = step.span("llm_call");
    let beta = client.start_run("beta");
    beta.end_failed("tool timed out");
    client.flush().await.unwrap();

    let mut rpc = RunlensClient::connect(sidecar.endpoint()).await.unwrap();
    let refused = rpc
        .watch_activity(pb::WatchActivityRequest {
            interval_ms: 50,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let mut stream = rpc
        .watch_activity(pb::WatchActivityRequest {
            interval_ms: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let state = next(&mut stream).await;
    assert_eq!(state.snapshot.as_ref().unwrap().gpus.len(), 4);
    let open: Vec<&str> = state.open_runs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(open, ["alpha"]);
    let spans: Vec<(&str, bool)> = state.open_runs[0]
        .open_spans
        .iter()
        .map(|s| (s.name.as_str(), s.parent_span_id.is_empty()))
        .collect();
    assert_eq!(spans, [("plan", true), ("llm_call", false)]);
    assert_eq!(state.open_runs[0].start_gpu_free.len(), 4);
    let planner = state
        .clients
        .iter()
        .find(|c| c.client_name == "planner")
        .unwrap();
    assert_eq!(planner.pid, std::process::id());
    assert!(planner.process.is_some(), "this process is watched");
    let failure = &state.recent_failures[0];
    assert_eq!(
        (failure.name.as_str(), failure.error.as_str()),
        ("beta", "tool timed out")
    );
    assert!(!failure.likely_oom, "GPU 1 has 1.1 GiB free: {failure:?}");

    // GPU 0 nearly full: a run failing now is likely out of memory.
    world["devices"][0]["memory_used_bytes"] =
        serde_json::json!(85_520_809_984u64 - 566_231_040 - (100 << 20));
    scenario.write(&world.to_string());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gamma = client.start_run("gamma");
    gamma.end_failed("CUDA out of memory");
    inner.end_ok();
    step.end_ok();
    client.flush().await.unwrap();
    // The flush may have committed in two transactions, and a state read between them:
    // wait for one that has both gamma's failure and alpha's spans ended.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let state = loop {
        let state = next(&mut stream).await;
        if state.recent_failures.iter().any(|f| f.name == "gamma")
            && state.open_runs[0].open_spans.is_empty()
        {
            break state;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gamma's failure and the end of alpha's spans never both showed: {state:?}"
        );
    };
    let gamma = &state.recent_failures[0];
    assert_eq!(gamma.name, "gamma");
    assert!(gamma.likely_oom, "{gamma:?}");
    assert!(gamma.gpu_free_min_bytes.unwrap() <= 100 << 20);
    alpha.end_ok();
    client.flush().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !next(&mut stream).await.open_runs.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "alpha never left");
    }

    // Not on a terminal, `runlens top` prints one frame and exits 0.
    let keep = client.start_run("delta");
    let working = keep.span("tool_call");
    client.flush().await.unwrap();
    let endpoint = sidecar.endpoint();
    let (status, stdout, stderr) = tokio::task::spawn_blocking(move || {
        run_bin(
            "runlens",
            &["top", "--endpoint", &endpoint],
            Duration::from_secs(30),
        )
    })
    .await
    .unwrap();
    assert!(status.success(), "{stderr}");
    for expected in [
        "0 H100 80GB HBM3",
        "2 A100-SXM4-40GB",
        "3 GeForce RTX 4090",
        "processes pid 4242 56.0 GiB",
        "planner",
        "delta",
        "tool_call",
        "likely OOM",
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing:\n{stdout}");
    }
    working.end_ok();
    keep.end_ok();
    client.shutdown(Duration::from_secs(5)).await.unwrap();
    drop(stream);
    sidecar.stop();
}

#[test]
fn top_without_a_sidecar_says_so_and_exits_69() {
    let (status, _, stderr) = run_bin(
        "runlens",
        &["top", "--endpoint", "http://127.0.0.1:9"],
        Duration::from_secs(30),
    );
    assert_eq!(status.code(), Some(69), "{stderr}");
    assert!(
        stderr.contains("cannot reach the runlens sidecar"),
        "{stderr}"
    );
}

#[test]
fn top_local_shows_this_machine_without_a_sidecar() {
    let scenario = Scenario::new(&demo().to_string());
    let (key, value) = scenario.env();
    let output = std::process::Command::new(runlens_e2e::bin("runlens"))
        .args(["top", "--local", "--nvml-lib"])
        .arg(runlens_e2e::fake_nvml_lib())
        .env(key, value)
        .env("COLUMNS", "90")
        .output()
        .unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("this machine (--local)"), "{text}");
    assert!(text.contains("3 GeForce RTX 4090"), "{text}");
    assert!(
        text.contains("agents, runs and failures come from a sidecar"),
        "{text}"
    );
    assert!(
        text.lines().all(|l| l.chars().count() <= 90),
        "fits $COLUMNS:\n{text}"
    );
}
