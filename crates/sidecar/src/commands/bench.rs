//! `runlens bench`: measured figures for the cost of sampling and of an idle sidecar.
//!
//! Figures are printed, never asserted: timings belong in a benchmark, not in a test
//! that flakes on a busy machine.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use probe_core::{CgroupProbe, GpuProbe, HostProbe, NoGpu, NvmlProbe, Sampler, cpu_seconds};

use crate::cli::{BenchArgs, BenchCommand, IdleArgs, SampleBenchArgs};
use crate::exit::{FAILURE, Failure};
use crate::format::outln;
use crate::report::stats::sorted_percentile;

/// Runs the chosen benchmark.
pub fn run(args: BenchArgs) -> Result<(), Failure> {
    match args.command {
        BenchCommand::Sample(a) => sample(a),
        BenchCommand::Idle(a) => idle(a),
        BenchCommand::Ingest(a) => super::bench_ingest::run(a),
        BenchCommand::Report(a) => super::bench_report::run(a),
    }
}

/// Median, p90, p99 and max of a set of durations, in microseconds.
pub fn summary(samples: Vec<Duration>) -> String {
    let us = sorted_in(&samples, 1e6);
    let pick = |q: f64| sorted_percentile(&us, q).unwrap_or(0.0);
    format!(
        "median {:>7.1} µs   p90 {:>7.1} µs   p99 {:>7.1} µs   max {:>7.1} µs   (n = {})",
        pick(0.5),
        pick(0.9),
        pick(0.99),
        pick(1.0),
        us.len()
    )
}

/// Durations in units of `1 / per_second` seconds (1e6: microseconds), sorted, ready for
/// the report's nearest-rank [`sorted_percentile`].
pub fn sorted_in(samples: &[Duration], per_second: f64) -> Vec<f64> {
    let mut v: Vec<f64> = samples
        .iter()
        .map(|d| d.as_secs_f64() * per_second)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Times `iterations` samples spaced like a real sampler, so every sample includes a
/// CPU-usage refresh (sysinfo skips refreshes closer than 200 ms, which would flatter a
/// tight loop) and pays what a real sample pays after its thread slept.
fn time_samples(sampler: &mut Sampler, iterations: usize) -> Vec<Duration> {
    let spacing = HostProbe::cpu_warmup() + Duration::from_millis(5);
    std::thread::sleep(spacing);
    sampler.sample(); // first reading: page faults and lazy initialisation
    (0..iterations)
        .map(|_| {
            std::thread::sleep(spacing);
            let start = Instant::now();
            let snapshot = sampler.sample();
            let elapsed = start.elapsed();
            std::hint::black_box(snapshot);
            elapsed
        })
        .collect()
}

fn sample(args: SampleBenchArgs) -> Result<(), Failure> {
    let host = || HostProbe::new().map_err(|e| Failure::new(FAILURE, e));
    outln!(
        "runlens bench sample: {} samples each, {} ms apart (host = CPU, RAM, swap, load, cgroup)",
        args.iterations,
        HostProbe::cpu_warmup().as_millis() + 5
    )?;
    let mut host_only = Sampler::with_cgroup(
        host()?,
        Box::new(NoGpu::new("bench")),
        CgroupProbe::detect(),
    );
    outln!(
        "host only          {}",
        summary(time_samples(&mut host_only, args.iterations))
    )?;
    let nvml = NvmlProbe::load(args.probe.nvml_lib.as_deref().map(OsStr::new));
    if let Some(reason) = nvml.load_error() {
        outln!("host + GPUs: skipped, NVML not loaded ({reason})")?;
        return Ok(());
    }
    let mut nvml: Box<dyn GpuProbe> = Box::new(nvml);
    let gpus = nvml.sample().devices.len();
    let mut with_gpus = Sampler::with_cgroup(host()?, nvml, CgroupProbe::detect());
    outln!(
        "host + {gpus} GPU(s)  {}",
        summary(time_samples(&mut with_gpus, args.iterations))
    )?;
    Ok(())
}

/// A `VmRSS:`-style line of `/proc/<pid>/status`, in bytes.
pub fn status_bytes(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// A `runlens serve` started by a benchmark, on loopback with its own database.
pub struct ServeProcess {
    child: std::process::Child,
    /// Its process id.
    pub pid: u32,
    /// The address it listens on.
    pub addr: String,
}

impl ServeProcess {
    /// Starts `runlens serve` (this same binary) with `db` and extra arguments, and waits
    /// for its address.
    pub fn start(db: &std::path::Path, extra: &[String]) -> Result<Self, Failure> {
        let fail =
            |what: &str, e: &dyn std::fmt::Display| Failure::new(FAILURE, format!("{what}: {e}"));
        let exe =
            std::env::current_exe().map_err(|e| fail("cannot find the runlens binary", &e))?;
        let mut child = Command::new(exe)
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(db)
            .args(extra)
            .env("RUNLENS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| fail("cannot start runlens serve", &e))?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or_else(|| Failure::new(FAILURE, format!("runlens serve did not start: {line}")))?
            .to_owned();
        Ok(Self {
            pid: child.id(),
            child,
            addr,
        })
    }

    /// SIGINT, then waits for the exit.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.pid.to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn idle(args: IdleArgs) -> Result<(), Failure> {
    let dir = std::env::temp_dir().join(format!("runlens-bench-idle-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .map_err(|e| Failure::new(FAILURE, format!("cannot create a temporary directory: {e}")))?;
    let db = dir.join("idle.db");
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
    let snapshots = rusqlite::Connection::open(&db)
        .and_then(|c| c.query_row("SELECT count(*) FROM snapshots", [], |r| r.get::<_, i64>(0)))
        .unwrap_or(0);
    let _ = std::fs::remove_dir_all(&dir);
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

/// Bytes as MiB with one decimal, or `?`.
pub fn mib(v: Option<u64>) -> String {
    v.map_or_else(
        || "?".to_owned(),
        |b| format!("{:.1} MiB", b as f64 / 1048576.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_picks_the_right_quantiles() {
        let samples = (1..=100).map(Duration::from_micros).collect();
        let text = summary(samples);
        assert!(
            text.starts_with("median    50.0 µs   p90    90.0 µs   p99    99.0 µs"),
            "{text}"
        );
        assert!(text.ends_with("(n = 100)"), "{text}");
    }

    #[test]
    fn memory_of_this_process_is_readable() {
        assert!(status_bytes(std::process::id(), "VmRSS:").is_some_and(|b| b > 0));
        assert!(status_bytes(std::process::id(), "VmHWM:").is_some_and(|b| b > 0));
    }
}
