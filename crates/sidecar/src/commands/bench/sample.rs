//! `runlens bench sample`: the cost of one sample, host only and host + GPUs: a periodic
//! one (every figure due) and a fresh one taken milliseconds after another, as at a run's
//! end under agent load (slow figures carried, see `probe_core::SLOW_FIGURES_EVERY`).

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use probe_core::{CgroupProbe, GpuProbe, HostProbe, NoGpu, NvmlProbe, Sampler};

use super::support::summary;
use crate::cli::SampleBenchArgs;
use crate::exit::{FAILURE, Failure};
use crate::format::outln;

/// How long after a periodic sample the fresh one is timed: a run's end at agent rates.
const FRESH_GAP: Duration = Duration::from_millis(3);

/// Times `iterations` samples spaced like a real sampler, so every sample includes a
/// CPU-usage refresh (sysinfo skips refreshes closer than 200 ms, which would flatter a
/// tight loop) and pays what a real sample pays after its thread slept. With `fresh`, each
/// timed sample comes [`FRESH_GAP`] after an untimed one instead.
fn time_samples(sampler: &mut Sampler, iterations: usize, fresh: bool) -> Vec<Duration> {
    let spacing = HostProbe::cpu_warmup() + Duration::from_millis(5);
    std::thread::sleep(spacing);
    sampler.sample(); // first reading: page faults and lazy initialisation
    (0..iterations)
        .map(|_| {
            std::thread::sleep(spacing);
            if fresh {
                sampler.sample();
                std::thread::sleep(FRESH_GAP);
            }
            let start = Instant::now();
            let snapshot = sampler.sample();
            let elapsed = start.elapsed();
            std::hint::black_box(snapshot);
            elapsed
        })
        .collect()
}

/// Runs the benchmark.
pub fn run(args: SampleBenchArgs) -> Result<(), Failure> {
    let host = || HostProbe::new().map_err(|e| Failure::new(FAILURE, e.to_string()));
    outln!(
        "runlens bench sample: {} samples each, {} ms apart (host = CPU, RAM, swap, load, cgroup, \
         this process as a watched agent); fresh = {} ms after another",
        args.iterations,
        HostProbe::cpu_warmup().as_millis() + 5,
        FRESH_GAP.as_millis()
    )?;
    let mut host_only = Sampler::with_cgroup(
        host()?,
        Box::new(NoGpu::new("bench")),
        CgroupProbe::detect(),
    );
    host_only.watch_process(std::process::id());
    outln!(
        "host only          {}",
        summary(time_samples(&mut host_only, args.iterations, false))
    )?;
    outln!(
        "host only, fresh   {}",
        summary(time_samples(&mut host_only, args.iterations, true))
    )?;
    let nvml = NvmlProbe::load(args.probe.nvml_lib.as_deref().map(OsStr::new));
    if let Some(reason) = nvml.load_error() {
        outln!("host + GPUs: skipped, NVML not loaded ({reason})")?;
        return Ok(());
    }
    let mut nvml: Box<dyn GpuProbe> = Box::new(nvml);
    let gpus = nvml.sample().devices.len();
    let mut with_gpus = Sampler::with_cgroup(host()?, nvml, CgroupProbe::detect());
    with_gpus.watch_process(std::process::id());
    outln!(
        "host + {gpus} GPU(s)  {}",
        summary(time_samples(&mut with_gpus, args.iterations, false))
    )?;
    outln!(
        "  fresh            {}",
        summary(time_samples(&mut with_gpus, args.iterations, true))
    )?;
    Ok(())
}
