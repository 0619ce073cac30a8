//! Agents that vanish without ending their runs (killed by the OOM killer, crashed, or
//! never back): the sidecar ends those runs as failed, with the reason and an end
//! snapshot, so that they count as failures instead of staying `running` forever.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runlens_api::pb;
use runlens_api::pb::client_message::Body;
use runlens_api::pb::runlens_client::RunlensClient;
use runlens_e2e::{Scenario, Sidecar, TempDir, report_json, run_bin};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn wait_for(sidecar: &Sidecar, sql: &str, what: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while sidecar.count(sql) == 0 {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs example-agent (300 ms steps, no planned failures) against `sidecar`, SIGKILLs it
/// inside a step — no chance to end anything — calls `after_kill` (what the machine does
/// once the agent is gone), and waits until the sidecar has ended the run it left open.
/// Returns the reason the run was ended with.
fn kill_agent_inside_a_step(sidecar: &Sidecar, after_kill: impl FnOnce()) -> String {
    let mut agent = Command::new(runlens_e2e::bin("example-agent"))
        .args([
            "--endpoint",
            &sidecar.endpoint(),
            "--runs",
            "1000",
            "--fail-every",
            "0",
            "--step-ms",
            "300",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(
        sidecar,
        "SELECT count(*) FROM spans WHERE status = 'running'",
        "the agent is inside a step",
        Duration::from_secs(30),
    );
    // A few samples of the machine as the agent saw it.
    std::thread::sleep(Duration::from_millis(300));
    agent.kill().unwrap();
    after_kill();
    agent.wait().unwrap();
    let reason = format!(
        "the agent process (pid {}) exited without ending this run",
        agent.id()
    );
    wait_for(
        sidecar,
        &format!(
            "SELECT count(*) FROM runs WHERE status = 'failed' AND error = '{reason}'
             AND ended_by = 'process_exit'"
        ),
        "the open run ended as failed",
        Duration::from_secs(10),
    );
    reason
}

#[test]
fn an_agent_killed_mid_run_has_its_open_run_failed_at_once() {
    let mut sidecar = Sidecar::start();
    let reason = kill_agent_inside_a_step(&sidecar, || {});
    sidecar.stop();
    assert_eq!(
        sidecar.count("SELECT count(*) FROM runs WHERE status = 'running'"),
        0
    );
    assert_eq!(
        sidecar.count(&format!(
            "SELECT count(*) FROM runs WHERE error = '{reason}'
             AND ended_at_ns IS NOT NULL AND end_snapshot_id IS NOT NULL"
        )),
        1
    );
    // Its open spans end with it.
    assert_eq!(
        sidecar.count("SELECT count(*) FROM spans WHERE status = 'running'"),
        0
    );
    assert!(
        sidecar.count(&format!(
            "SELECT count(*) FROM spans s JOIN runs r USING (run_id)
             WHERE r.error = '{reason}' AND s.status = 'failed'
             AND s.error = 'run ended while span was open'"
        )) >= 1
    );
    assert_eq!(
        sidecar.count(&format!(
            "SELECT count(*) FROM events WHERE kind = 'system' AND name = 'client.gone'
             AND json_extract(attributes, '$.reason') = '{reason}'
             AND json_extract(attributes, '$.runs_ended') = 1"
        )),
        1
    );
}

/// A session that says hello without a PID (a client in another container) and opens a
/// run and a span; the session closes when the returned sender is dropped.
async fn open_run_without_pid(
    sidecar: &Sidecar,
    client_id: &str,
    run_id: &str,
) -> (
    mpsc::Sender<pb::ClientMessage>,
    tonic::Streaming<pb::ServerMessage>,
) {
    let (tx, rx) = mpsc::channel(8);
    let bodies = [
        Body::Hello(pb::SessionHello {
            client_id: client_id.into(),
            client_name: "elsewhere".into(),
            ..Default::default()
        }),
        Body::StartRun(pb::StartRunRequest {
            run_id: run_id.into(),
            name: "task".into(),
            ..Default::default()
        }),
        Body::StartSpan(pb::StartSpanRequest {
            run_id: run_id.into(),
            span_id: format!("{run_id}-step"),
            name: "step".into(),
            ..Default::default()
        }),
    ];
    for (seq, body) in (0..).zip(bodies) {
        tx.send(pb::ClientMessage {
            seq,
            body: Some(body),
        })
        .await
        .unwrap();
    }
    let mut c = RunlensClient::connect(sidecar.endpoint()).await.unwrap();
    let mut inbound = c
        .session(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // Wait until both messages are committed.
    while let Some(m) = inbound.message().await.unwrap() {
        if let Some(pb::server_message::Body::Ack(ack)) = m.body
            && ack.committed_seq >= 2
        {
            break;
        }
    }
    (tx, inbound)
}

#[tokio::test]
async fn a_client_that_never_comes_back_has_its_runs_failed_after_the_timeout() {
    let dir = TempDir::new().unwrap();
    let db = dir.path().join("gone.db");
    let mut sidecar = Sidecar::start_on(&db, &["--client-timeout", "2s"]);
    let (tx, inbound) = open_run_without_pid(&sidecar, "away", "r-away").await;
    // Still connected past the timeout: nothing happens to its run.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        sidecar.count("SELECT count(*) FROM runs WHERE run_id = 'r-away' AND status = 'running'"),
        1
    );
    let closed = Instant::now();
    drop((tx, inbound));
    let reason =
        "the agent''s session closed and did not come back within 2s; the run was never ended";
    let sql = format!(
        "SELECT count(*) FROM runs WHERE run_id = 'r-away' AND status = 'failed' AND error = '{reason}'
         AND ended_by = 'session_timeout'"
    );
    while sidecar.count(&sql) == 0 {
        assert!(closed.elapsed() < Duration::from_secs(15), "never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        closed.elapsed() >= Duration::from_secs(2),
        "not before the timeout"
    );
    assert_eq!(
        sidecar.count(
            "SELECT count(*) FROM spans WHERE span_id = 'r-away-step' AND status = 'failed'"
        ),
        1
    );
    sidecar.stop();

    // A run left open when the sidecar stopped: after the restart its client has the
    // timeout to come back, then the run ends the same way.
    let mut sidecar = Sidecar::start_on(&db, &[]);
    let (tx, inbound) = open_run_without_pid(&sidecar, "before-restart", "r-old").await;
    drop((tx, inbound));
    sidecar.stop();
    let restarted = Instant::now();
    let mut sidecar = Sidecar::start_on(&db, &["--client-timeout", "2s"]);
    let sql = "SELECT count(*) FROM runs WHERE run_id = 'r-old' AND status = 'failed'
               AND error LIKE '%did not come back within 2s%' AND ended_by = 'session_timeout'";
    while sidecar.count(sql) == 0 {
        assert!(restarted.elapsed() < Duration::from_secs(20), "never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = sidecar.stop();
    assert!(
        logs.contains("clients with open runs from before this start"),
        "{logs}"
    );
}

#[test]
fn an_agent_killed_under_gpu_pressure_is_flagged_likely_oom() {
    // One GPU with 100 MiB free while the agent works; its memory comes back once the
    // agent is killed, so the run's end snapshot alone would look calm.
    const TOTAL: i64 = 80 << 30;
    let gpu = |used: i64| {
        serde_json::json!({ "devices": [{ "name": "tight", "uuid": "GPU-t",
            "memory_total_bytes": TOTAL, "memory_used_bytes": used }] })
        .to_string()
    };
    let scenario = Scenario::new(&gpu(TOTAL - (100 << 20)));
    let dir = TempDir::new().unwrap();
    let mut sidecar = Sidecar::start_with_fake_nvml(&dir.path().join("oom.db"), &scenario);
    let reason = kill_agent_inside_a_step(&sidecar, || scenario.write(&gpu(1 << 30)));
    sidecar.stop();
    let killed: String = sidecar
        .sql()
        .query_row("SELECT run_id FROM runs WHERE error = ?1", [&reason], |r| {
            r.get(0)
        })
        .unwrap();
    let r = report_json(&sidecar.db, &[]);
    let flagged = r["oom"]["likely_oom_runs"].as_array().unwrap();
    assert_eq!(flagged.len(), 1, "only the killed run failed: {flagged:?}");
    assert_eq!(flagged[0]["run_id"], killed.as_str());
    let free = flagged[0]["gpu_free_min_mib"].as_f64().unwrap();
    assert!((free - 100.0).abs() < 1.0, "what the agent saw: {free} MiB");
}

#[test]
fn an_agent_killed_with_its_container_nearly_out_of_memory_is_flagged_likely_oom_kill() {
    // A cgroup v2 directory at 4 GiB of its 4 GiB limit but 100 MiB while the agent works;
    // the kernel's OOM killer takes the agent, and the memory comes back.
    let cgroup = TempDir::new().unwrap();
    for file in ["cgroup.controllers", "cpu.max", "cpu.stat", "memory.max"] {
        std::fs::copy(
            runlens_e2e::fixture(&format!("cgroup/v2/{file}")),
            cgroup.path().join(file),
        )
        .unwrap();
    }
    std::fs::write(cgroup.path().join("memory.max"), "4294967296\n").unwrap();
    std::fs::write(
        cgroup.path().join("memory.stat"),
        "anon 4000000000\ninactive_file 0\n",
    )
    .unwrap();
    let used = |bytes: u64| {
        let tmp = cgroup.path().join("memory.current.tmp");
        std::fs::write(&tmp, format!("{bytes}\n")).unwrap();
        std::fs::rename(&tmp, cgroup.path().join("memory.current")).unwrap();
    };
    used((4 << 30) - (100 << 20));
    let dir = TempDir::new().unwrap();
    let mut sidecar = Sidecar::start_on(
        &dir.path().join("killed.db"),
        &[
            "--sample-interval",
            "100ms",
            "--cgroup-root",
            cgroup.path().to_str().unwrap(),
        ],
    );
    let reason = kill_agent_inside_a_step(&sidecar, || used(1 << 30));
    sidecar.stop();
    let r = report_json(&sidecar.db, &[]);
    let killed = r["oom"]["likely_oom_killed_runs"].as_array().unwrap();
    assert_eq!(killed.len(), 1, "{killed:?}");
    let headroom = killed[0]["cgroup_headroom_min_ratio"].as_f64().unwrap();
    assert!(
        (headroom - 100.0 / 4096.0).abs() < 0.001,
        "what the agent saw: {headroom}"
    );
    assert_eq!(killed[0]["error"], reason.as_str());
    assert_eq!(
        r["oom"]["likely_oom_runs"],
        serde_json::json!([]),
        "no GPU here"
    );
    let (status, table, _) = run_bin(
        "runlens",
        &["report", "--db", sidecar.db.to_str().unwrap()],
        Duration::from_secs(30),
    );
    assert!(status.success());
    assert!(
        table.contains("likely OOM kill: run") && table.contains("cgroup memory headroom 2 %"),
        "{table}"
    );
}
