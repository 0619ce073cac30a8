//! `runlens bench sample`: the cost of one full sample, host only and host + GPUs.

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use probe_core::{CgroupProbe, GpuProbe, HostProbe, NoGpu, NvmlProbe, Sampler};

use super::support::summary;
use crate::cli::SampleBenchArgs;
use crate::exit::{FAILURE, Failure};
use crate::format::outln;

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

/// Runs the benchmark.
pub fn run(args: SampleBenchArgs) -> Result<(), Failure> {
    let host = || HostProbe::new().map_err(|e| Failure::new(FAILURE, e.to_string()));
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
