//! `runlens bench idle`: `runlens serve` with no clients, its CPU and resident memory.

use std::time::{Duration, Instant};

use probe_core::cpu_seconds;

use super::support::{ServeProcess, StoredDb, TempDir, mib, status_bytes};
use crate::cli::IdleArgs;
use crate::exit::{FAILURE, Failure};
use crate::format::outln;

/// Runs the benchmark.
pub fn run(args: IdleArgs) -> Result<(), Failure> {
    let dir = TempDir::new("idle")?;
    let db = dir.0.join("idle.db");
    let mut extra = vec![
        "--sample-interval".to_owned(),
        humantime::format_duration(args.sample_interval).to_string(),
    ];
    if let Some(lib) = &args.probe.nvml_lib {
        extra.push("--nvml-lib".to_owned());
        extra.push(lib.display().to_string());
    }
    let serve = ServeProcess::start(&db, &extra)?;
    let pid = serve.pid;
    // Let start-up costs (schema, NVML init, first samples) pass before measuring.
    std::thread::sleep(Duration::from_secs(2));
    let start_cpu = cpu_seconds(pid);
    let start = Instant::now();
    outln!(
        "runlens bench idle: serve with no clients, sampling every {}, measured for {} s ...",
        humantime::format_duration(args.sample_interval),
        args.seconds
    )?;
    std::thread::sleep(Duration::from_secs(args.seconds));
    let end_cpu = cpu_seconds(pid);
    let wall = start.elapsed().as_secs_f64();
    let rss = status_bytes(pid, "VmRSS:");
    let peak = status_bytes(pid, "VmHWM:");
    serve.stop();
    let snapshots = StoredDb::open(&db)
        .and_then(|d| d.count("SELECT count(*) FROM snapshots"))
        .unwrap_or(0);
    let (Some(a), Some(b)) = (start_cpu, end_cpu) else {
        return Err(Failure::new(
            FAILURE,
            "cannot read /proc/<pid>/stat of the sidecar",
        ));
    };
    let cpu_seconds = b - a;
    outln!(
        "CPU {:.3}% of one core ({:.2} s of CPU in {:.1} s; clock-tick resolution 10 ms)",
        100.0 * cpu_seconds / wall,
        cpu_seconds,
        wall
    )?;
    outln!("resident memory {} now, {} peak", mib(rss), mib(peak))?;
    outln!("{snapshots} snapshots stored")?;
    Ok(())
}
