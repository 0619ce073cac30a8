//! The 30-second version of `runlens bench soak` that CI runs: a sidecar with eight fake
//! GPUs sampled every 100 ms, runlens.v1 and OTLP senders and retention small enough that
//! pruning runs throughout; every span sent is stored or was pruned, none lost. The
//! benchmark prints its figures (memory, size, latency) and fails on lost data; timings are
//! not asserted here (a debug build on a shared CI machine), only what it verified.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use runlens_e2e::{fake_nvml_lib, run_bin};

#[test]
fn thirty_seconds_of_soak_lose_nothing_while_pruning() {
    let lib = fake_nvml_lib();
    let (status, stdout, stderr) = run_bin(
        "runlens",
        &[
            "bench",
            "soak",
            "--minutes",
            "0.5",
            "--clients",
            "4",
            "--rate",
            "100",
            "--retain",
            "10s",
            "--retain-full",
            "10s",
            "--nvml-lib",
            lib.to_str().unwrap(),
        ],
        Duration::from_secs(120),
    );
    println!("{stdout}");
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("verified"), "{stdout}");
    // The agents share the sidecar's clock, under load too: no clock warning (the
    // sidecar's log is this process's stderr).
    assert!(!stderr.contains("clock runs"), "{stderr}");
    // Retention worked while the agents sent: runs were pruned, not only stored.
    let pruned: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("pruned while running: "))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("a pruned line");
    assert!(pruned > 0, "{stdout}");
}
