//! The machine as Prometheus gauges, read from the latest stored sample at each scrape (a
//! scrape never calls NVML or reads /proc): every GPU, MIG instance and watched agent, the
//! host and the container, and runlens's own state.
//!
//! Names follow the OpenTelemetry semantic conventions in Prometheus form (base units,
//! `_total` on counters, ratios 0–1): `hw.gpu.memory.usage` is `hw_gpu_memory_usage_bytes`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;
use tokio::sync::watch;

use crate::sampler::SamplerHandle;

/// Labels of one series.
type Labels = Vec<(&'static str, String)>;

/// Clients in `runlens_client_clock_offset`: those heard from within this, ns.
const CLOCK_HEARD_WITHIN_NS: i64 = 600 * 1_000_000_000;

/// What a scrape reads besides the counters.
#[derive(Debug)]
pub struct MachineCollector {
    /// The latest sample comes from here.
    pub sampler: SamplerHandle,
    /// Why storage is failing, if it is.
    pub storage: watch::Receiver<Option<String>>,
    /// The database file (its size, with its WAL).
    pub db: PathBuf,
    /// Agent PIDs and the names their clients gave.
    pub clients: Arc<Mutex<HashMap<u32, String>>>,
    /// `target_info` labels: who this sidecar is (OpenTelemetry resource attributes).
    pub identity: Vec<(String, String)>,
    /// The OTLP exporter's progress, when export is on.
    pub export: Option<Arc<crate::export::ExportState>>,
    /// Per session client id: its name and the messages it dropped.
    pub dropped: Arc<Mutex<HashMap<String, (String, u64)>>>,
    /// The open runs (of runlens.v1 clients).
    pub ingest: Option<crate::ingest::Ingest>,
}

/// Prometheus's unit for shares 0..1 (`_ratio`; the crate's `Ratios` would say `_ratios`).
fn ratio() -> Unit {
    Unit::Other("ratio".into())
}

/// One family: the descriptor, then a series per `(labels, value)`; a lone series without
/// labels is written bare (`name 1`, not `name{} 1`). Nothing at all when there is no series.
fn family(
    encoder: &mut DescriptorEncoder<'_>,
    (name, help, unit): (&str, &str, Option<Unit>),
    metric_type: MetricType,
    series: impl IntoIterator<Item = (Labels, f64)>,
) -> Result<(), std::fmt::Error> {
    let series: Vec<(Labels, f64)> = series.into_iter().collect();
    if series.is_empty() {
        return Ok(());
    }
    let write = |value: f64, to: MetricEncoder<'_>| match metric_type {
        MetricType::Counter => ConstCounter::new(value).encode(to),
        _ => ConstGauge::new(value).encode(to),
    };
    let mut family = encoder.encode_descriptor(name, help, unit.as_ref(), metric_type)?;
    if let [(labels, value)] = series.as_slice()
        && labels.is_empty()
    {
        return write(*value, family);
    }
    for (labels, value) in &series {
        write(*value, family.encode_family(labels)?)?;
    }
    Ok(())
}

/// A gauge family (see [`family`]).
fn gauges(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    series: impl IntoIterator<Item = (Labels, f64)>,
) -> Result<(), std::fmt::Error> {
    family(encoder, (name, help, unit), MetricType::Gauge, series)
}

/// A counter family (see [`family`]).
fn counters(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    series: impl IntoIterator<Item = (Labels, f64)>,
) -> Result<(), std::fmt::Error> {
    family(encoder, (name, help, unit), MetricType::Counter, series)
}

impl Collector for MachineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.encode_self(&mut encoder)?;
        let Some(latest) = self.sampler.latest() else {
            return Ok(());
        };
        let s = &latest.snapshot;
        let gpu = |d: &probe_core::GpuDevice| -> Labels {
            vec![
                ("hw_id", d.uuid.clone().unwrap_or_default()),
                ("gpu", d.index.to_string()),
                ("hw_model", d.name.clone().unwrap_or_default()),
            ]
        };
        let devices = &s.gpu.devices;
        let per_gpu = |f: &dyn Fn(&probe_core::GpuDevice) -> Option<f64>| {
            devices
                .iter()
                .filter_map(|d| Some((gpu(d), f(d)?)))
                .collect::<Vec<_>>()
        };
        let e = &mut encoder;
        gauges(
            e,
            "hw_gpu_up",
            "1 while the GPU answers NVML, 0 when it is lost or in error",
            None,
            devices.iter().map(|d| {
                (
                    gpu(d),
                    f64::from(u8::from(d.state == probe_core::GpuState::Ok)),
                )
            }),
        )?;
        gauges(
            e,
            "hw_gpu_memory_usage",
            "GPU memory in use (hw.gpu.memory.usage)",
            Some(Unit::Bytes),
            per_gpu(&|d| Some(d.memory_used_bytes? as f64)),
        )?;
        gauges(
            e,
            "hw_gpu_memory_limit",
            "GPU memory in all (hw.gpu.memory.limit)",
            Some(Unit::Bytes),
            per_gpu(&|d| Some(d.memory_total_bytes? as f64)),
        )?;
        gauges(
            e,
            "hw_gpu_memory_free",
            "GPU memory free",
            Some(Unit::Bytes),
            per_gpu(&|d| Some(d.memory_free_bytes? as f64)),
        )?;
        gauges(
            e,
            "hw_gpu_utilization",
            "Share of time a kernel ran (hw.gpu.utilization)",
            Some(ratio()),
            per_gpu(&|d| d.utilization_ratio),
        )?;
        gauges(
            e,
            "hw_gpu_memory_utilization",
            "Share of time memory was read or written (hw.gpu.memory.utilization)",
            Some(ratio()),
            per_gpu(&|d| d.memory_utilization_ratio),
        )?;
        gauges(
            e,
            "hw_gpu_temperature",
            "GPU temperature",
            Some(Unit::Celsius),
            per_gpu(&|d| d.temperature_celsius),
        )?;
        gauges(
            e,
            "hw_gpu_power",
            "GPU power draw",
            Some(Unit::Other("watts".into())),
            per_gpu(&|d| d.power_watts),
        )?;
        gauges(
            e,
            "hw_gpu_power_limit",
            "GPU power limit",
            Some(Unit::Other("watts".into())),
            per_gpu(&|d| d.power_limit_watts),
        )?;
        gauges(
            e,
            "hw_gpu_clock_sm",
            "SM clock",
            Some(Unit::Other("hertz".into())),
            per_gpu(&|d| Some(f64::from(d.clock_sm_mhz?) * 1e6)),
        )?;
        gauges(
            e,
            "hw_gpu_throttled",
            "1 for each reason the GPU's clocks are held down now",
            None,
            devices.iter().flat_map(|d| {
                d.clock_event_reasons
                    .map(probe_core::clock_event_reason_names)
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |reason| {
                        let mut labels = gpu(d);
                        labels.push(("reason", reason.to_owned()));
                        (labels, 1.0)
                    })
            }),
        )?;
        counters(
            e,
            "hw_errors",
            "GPU memory ECC errors since the driver loaded (hw.errors)",
            None,
            devices.iter().flat_map(|d| {
                [
                    ("corrected", d.ecc_corrected_errors),
                    ("uncorrected", d.ecc_uncorrected_errors),
                ]
                .into_iter()
                .filter_map(move |(kind, n)| {
                    let mut labels = gpu(d);
                    labels.push(("error_type", kind.to_owned()));
                    Some((labels, n? as f64))
                })
            }),
        )?;
        for figure in &crate::gpu_perf::FIGURES {
            gauges(
                e,
                figure.prometheus,
                figure.help,
                Some(match figure.unit {
                    crate::gpu_perf::PerfUnit::Ratio => ratio(),
                    crate::gpu_perf::PerfUnit::BytesPerSecond => {
                        Unit::Other("bytes_per_second".into())
                    }
                }),
                per_gpu(&|d| d.perf.as_ref().and_then(figure.get)),
            )?;
        }
        let mig = |d: &probe_core::GpuDevice, m: &probe_core::MigDevice| -> Labels {
            vec![
                ("hw_id", m.uuid.clone().unwrap_or_default()),
                ("gpu", d.index.to_string()),
                ("mig", m.index.to_string()),
            ]
        };
        gauges(
            e,
            "hw_gpu_mig_memory_usage",
            "Memory in use on a MIG instance",
            Some(Unit::Bytes),
            devices.iter().flat_map(|d| {
                d.mig_devices
                    .iter()
                    .filter_map(move |m| Some((mig(d, m), m.memory_used_bytes? as f64)))
            }),
        )?;
        gauges(
            e,
            "hw_gpu_mig_memory_limit",
            "Memory of a MIG instance",
            Some(Unit::Bytes),
            devices.iter().flat_map(|d| {
                d.mig_devices
                    .iter()
                    .filter_map(move |m| Some((mig(d, m), m.memory_total_bytes? as f64)))
            }),
        )?;

        let names = self
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let agent = |pid: u32| -> Labels {
            vec![
                ("client", names.get(&pid).cloned().unwrap_or_default()),
                ("pid", pid.to_string()),
            ]
        };
        gauges(
            e,
            "process_memory_usage",
            "Resident memory of a watched agent and its children (process.memory.usage)",
            Some(Unit::Bytes),
            s.processes
                .iter()
                .map(|p| (agent(p.pid), p.rss_bytes as f64)),
        )?;
        gauges(
            e,
            "process_gpu_memory_usage",
            "GPU memory a watched agent and its children hold, per GPU",
            Some(Unit::Bytes),
            s.processes.iter().flat_map(|p| {
                p.gpus.iter().map(|g| {
                    let mut labels = agent(p.pid);
                    labels.push(("gpu", g.gpu_index.to_string()));
                    (labels, g.used_memory_bytes as f64)
                })
            }),
        )?;

        let h = &s.host;
        gauges(
            e,
            "system_cpu_utilization",
            "Share of CPU time busy, all cores (system.cpu.utilization)",
            Some(ratio()),
            h.cpu_utilization_ratio.map(|v| (Vec::new(), v)),
        )?;
        gauges(
            e,
            "system_cpu_load_average_1m",
            "1-minute load average (system.cpu.load_average.1m)",
            None,
            h.cpu_load_1m.map(|v| (Vec::new(), v)),
        )?;
        gauges(
            e,
            "system_cpu_logical_cpus",
            "Logical CPUs (system.cpu.logical.count)",
            None,
            [(Vec::new(), f64::from(h.cpu_count))],
        )?;
        gauges(
            e,
            "system_memory_usage",
            "Host memory by state (system.memory.usage)",
            Some(Unit::Bytes),
            [
                (vec![("state", "used".to_owned())], h.ram_used_bytes as f64),
                (
                    vec![("state", "free".to_owned())],
                    h.ram_available_bytes as f64,
                ),
            ],
        )?;
        gauges(
            e,
            "system_memory_limit",
            "Host memory in all (system.memory.limit)",
            Some(Unit::Bytes),
            [(Vec::new(), h.ram_total_bytes as f64)],
        )?;
        if let Some(c) = &s.cgroup {
            gauges(
                e,
                "container_memory_usage",
                "The container's memory use, without reclaimable page cache",
                Some(Unit::Bytes),
                c.memory_used_bytes.map(|v| (Vec::new(), v as f64)),
            )?;
            gauges(
                e,
                "container_memory_limit",
                "The container's memory limit (absent when there is none)",
                Some(Unit::Bytes),
                c.memory_limit_bytes.map(|v| (Vec::new(), v as f64)),
            )?;
            counters(
                e,
                "container_cpu_throttled",
                "Time the container's CPU quota held it back",
                Some(Unit::Seconds),
                c.cpu_throttled_ns.map(|v| (Vec::new(), v as f64 / 1e9)),
            )?;
        }
        gauges(
            e,
            "runlens_sample_timestamp",
            "When the latest sample was taken, Unix time",
            Some(Unit::Seconds),
            [(Vec::new(), s.taken_at_ns as f64 / 1e9)],
        )?;
        Ok(())
    }
}

impl MachineCollector {
    /// runlens's own state: build, identity, storage, database size.
    fn encode_self(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let build = crate::build_info::LONG;
        gauges(
            e,
            "runlens_build_info",
            "This runlens: version, commit and build date in `version`",
            None,
            [(vec![("version", build.to_owned())], 1.0)],
        )?;
        if !self.identity.is_empty() {
            let mut info = e.encode_descriptor("target", "Who this sidecar is: its OpenTelemetry resource (OTEL_RESOURCE_ATTRIBUTES, OTEL_SERVICE_NAME)", None, MetricType::Info)?;
            info.encode_info(&self.identity)?;
        }
        let ok = self.storage.borrow().is_none();
        gauges(
            e,
            "runlens_storage_ok",
            "1 while writes succeed, 0 while storage is failing (disk full, read-only)",
            None,
            [(Vec::new(), f64::from(u8::from(ok)))],
        )?;
        let size = |suffix: &str| {
            let mut path = self.db.clone().into_os_string();
            path.push(suffix);
            std::fs::metadata(path).map_or(0, |m| m.len())
        };
        if let Some(ingest) = &self.ingest {
            gauges(
                e,
                "runlens_open_runs",
                "Runs started by runlens.v1 clients and not ended yet",
                None,
                [(Vec::new(), ingest.open_runs() as f64)],
            )?;
            gauges(
                e,
                "runlens_inflight",
                "Bytes the front doors hold in flight, as charged against --max-inflight-mib \
                 (about four times each request's size, until its rows are committed)",
                Some(Unit::Bytes),
                [(Vec::new(), ingest.budget().in_flight() as f64)],
            )?;
            gauges(
                e,
                "runlens_inflight_limit",
                "The byte budget of --max-inflight-mib",
                Some(Unit::Bytes),
                [(Vec::new(), ingest.budget().total() as f64)],
            )?;
            let heard_since = probe_core::unix_now_ns() - CLOCK_HEARD_WITHIN_NS;
            let offsets = ingest.with_clock(|c| c.offsets(heard_since));
            gauges(
                e,
                "runlens_client_clock_offset",
                "How far each client's clock runs ahead of the sidecar's (negative: behind), \
                 estimated from its messages' times against their arrival (a lower bound, off \
                 by at most its quickest delivery); clients heard from in the last 10 minutes \
                 once enough messages back the estimate",
                Some(Unit::Seconds),
                offsets.into_iter().map(|(id, name, ns)| {
                    (vec![("client_id", id), ("client", name)], ns as f64 / 1e9)
                }),
            )?;
        }
        let mut by_name: HashMap<String, u64> = HashMap::new();
        for (name, n) in self
            .dropped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            *by_name.entry(name.clone()).or_default() += n;
        }
        counters(
            e,
            "runlens_client_dropped_messages",
            "Messages clients dropped because their buffer was full (data known to be missing)",
            None,
            by_name
                .into_iter()
                .map(|(name, n)| (vec![("client", name)], n as f64)),
        )?;
        gauges(
            e,
            "runlens_sample_duration",
            "How long the latest resource sample took",
            Some(Unit::Seconds),
            [(
                Vec::new(),
                self.sampler.last_sample_duration().as_secs_f64(),
            )],
        )?;
        if let Some(export) = &self.export {
            use std::sync::atomic::Ordering;
            gauges(
                e,
                "runlens_export_lag_runs",
                "Ended runs not yet acknowledged by the OTLP receiver",
                None,
                [(Vec::new(), export.lag_runs.load(Ordering::Relaxed) as f64)],
            )?;
            gauges(
                e,
                "runlens_export_lag",
                "How long the oldest ended run not yet acknowledged by the OTLP receiver has waited",
                Some(Unit::Seconds),
                [(Vec::new(), export.lag().as_secs_f64())],
            )?;
            gauges(
                e,
                "runlens_export_held",
                "1 while the OTLP receiver answers as if the URL or the credentials were wrong \
                 (HTTP 401/403/404/405, gRPC UNIMPLEMENTED): ended runs are held, not skipped, \
                 until it is fixed",
                None,
                [(
                    Vec::new(),
                    f64::from(u8::from(export.held.load(Ordering::Relaxed))),
                )],
            )?;
            counters(
                e,
                "runlens_export_skipped_runs",
                "Runs the OTLP receiver refused for good (skipped)",
                None,
                [(
                    Vec::new(),
                    export.skipped_runs.load(Ordering::Relaxed) as f64,
                )],
            )?;
        }
        gauges(
            e,
            "runlens_database_size",
            "The database file with its write-ahead log",
            Some(Unit::Bytes),
            [(Vec::new(), (size("") + size("-wal")) as f64)],
        )?;
        Ok(())
    }
}

/// `target_info` labels from the OpenTelemetry environment (`crate::otel_env::resource`),
/// keys made Prometheus label names: characters other than letters and digits become
/// underscores (`k8s.pod.name` → `k8s_pod_name`); a key that starts with a digit or is
/// empty is left out; two keys that become one label keep the later value.
pub fn identity_from_env() -> Vec<(String, String)> {
    let mut labels: Vec<(String, String)> = Vec::new();
    for (key, value) in crate::otel_env::resource() {
        let key: String = key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        if key.is_empty() || key.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        labels.retain(|(k, _)| *k != key);
        labels.push((key, value));
    }
    labels
}
