//! `runlens bench metrics`: what a Prometheus scrape costs the sidecar — the whole
//! exposition encoded from the latest sample of `--gpus` GPUs (every metric filled in) and
//! counters of `--names` span names, timed over many scrapes.

use std::time::{Duration, Instant};

use probe_core::{GpuDevice, GpuState, HostProbe, Sampler, StaticGpus};

use super::support::{TempDir, summary};
use crate::cli::MetricsBenchArgs;
use crate::domain::Status;
use crate::exit::{FAILURE, Failure, USAGE};
use crate::format::outln;
use crate::metrics::{Metrics, WorkCounters};
use crate::sampler::{Reason, SamplerHandle};
use crate::store::{CommitObserver, Finished, FinishedSpan, Writer};

/// Runs the benchmark.
pub fn run(args: MetricsBenchArgs) -> Result<(), Failure> {
    if args.scrapes == 0 {
        return Err(Failure::new(USAGE, "--scrapes must be positive"));
    }
    let fail =
        |what: &str, e: &dyn std::fmt::Display| Failure::new(FAILURE, format!("{what}: {e}"));
    let dir = TempDir::new("metrics")?;
    let db = dir.0.join("metrics.db");
    let conn = crate::store::open_for_writing(&db, false, None)?;
    let counters = WorkCounters::default();
    let writer =
        Writer::start(conn, None, false, None).map_err(|e| fail("cannot start the writer", &e))?;
    let host = HostProbe::new().map_err(|e| fail("cannot read the host", &e))?;
    let sampler = Sampler::new(host, Box::new(StaticGpus::new(gpus(args.gpus))));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| fail("cannot start a runtime", &e))?;
    let handle = SamplerHandle::new(sampler, writer.handle(), 1, Duration::from_secs(60));
    runtime
        .block_on(handle.fresh(Reason::Interval))
        .map_err(|e| fail("cannot sample", &e))?;
    let mut finished = Finished::default();
    for i in 0..args.names {
        for status in [Status::Ok, Status::Failed] {
            finished.spans.push(FinishedSpan {
                name: format!("step-{i}"),
                status,
                duration_ns: 1_000_000 * i64::from(i + 1),
            });
        }
    }
    counters.committed(&finished);
    let metrics = Metrics::new(&counters, handle, writer.handle().health(), db, None, None);
    let size = metrics
        .openmetrics()
        .map_err(|e| fail("cannot encode", &e))?
        .len();
    let mut times = Vec::with_capacity(args.scrapes);
    for _ in 0..args.scrapes {
        let start = Instant::now();
        let text = metrics
            .openmetrics()
            .map_err(|e| fail("cannot encode", &e))?;
        let prometheus = crate::metrics::to_prometheus_text(&text);
        times.push(start.elapsed());
        std::hint::black_box(prometheus);
    }
    outln!(
        "runlens bench metrics: {} GPUs, {} span names ({} bytes of OpenMetrics), {} scrapes",
        args.gpus,
        args.names,
        size,
        args.scrapes
    )?;
    outln!("scrape (encode + text 0.0.4): {}", summary(times))?;
    runtime.block_on(writer.close());
    Ok(())
}

/// `n` GPUs with every figure filled in, as NVML reports an H100.
fn gpus(n: u32) -> Vec<GpuDevice> {
    (0..n)
        .map(|i| {
            let mut d = GpuDevice::bare(i, GpuState::Ok);
            d.uuid = Some(format!("GPU-{i:08}-bench"));
            d.name = Some("NVIDIA H100 80GB HBM3".into());
            d.memory_total_bytes = Some(85_520_809_984);
            d.memory_used_bytes = Some(60_129_542_144);
            d.memory_free_bytes = Some(25_391_267_840);
            d.utilization_ratio = Some(0.87);
            d.memory_utilization_ratio = Some(0.41);
            d.temperature_celsius = Some(64.0);
            d.power_watts = Some(512.0);
            d.power_limit_watts = Some(700.0);
            d.clock_sm_mhz = Some(1980);
            d.clock_event_reasons = Some(0x4);
            d.ecc_corrected_errors = Some(3);
            d.ecc_uncorrected_errors = Some(0);
            d
        })
        .collect()
}
