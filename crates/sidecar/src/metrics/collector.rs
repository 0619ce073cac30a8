//! The machine as Prometheus gauges, read from the latest stored sample at each scrape (a
//! scrape never calls NVML or reads /proc): every GPU, MIG instance and watched agent, the
//! host and the container, and runlens's own state.
//!
//! Names, units and help come from the one table of exported figures (`crate::figures`), which
//! the OTLP metrics export reads too: the OpenTelemetry semantic conventions in Prometheus
//! form (base units, `_total` on counters, ratios 0–1), `hw.gpu.memory.usage` is
//! `hw_gpu_memory_usage_bytes`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use tokio::sync::watch;

use crate::figures::{self, Figure, Kind, own};
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

/// One family: the figure's descriptor, then a series per `(labels, value)`; a lone series
/// without labels is written bare (`name 1`, not `name{} 1`). Nothing at all when there is no
/// series.
fn family(
    encoder: &mut DescriptorEncoder<'_>,
    figure: &Figure,
    series: impl IntoIterator<Item = (Labels, f64)>,
) -> Result<(), std::fmt::Error> {
    let series: Vec<(Labels, f64)> = series.into_iter().collect();
    if series.is_empty() {
        return Ok(());
    }
    let metric_type = match figure.kind {
        Kind::Counter => MetricType::Counter,
        Kind::Gauge | Kind::Histogram | Kind::Info => MetricType::Gauge,
    };
    let write = |value: f64, to: MetricEncoder<'_>| match metric_type {
        MetricType::Counter => ConstCounter::new(value).encode(to),
        _ => ConstGauge::new(value).encode(to),
    };
    let unit = figure.unit.prometheus();
    let mut family =
        encoder.encode_descriptor(figure.prometheus, figure.help, unit.as_ref(), metric_type)?;
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

/// A figure with one series and no labels.
fn single(
    encoder: &mut DescriptorEncoder<'_>,
    figure: &Figure,
    value: f64,
) -> Result<(), std::fmt::Error> {
    family(encoder, figure, [(Vec::new(), value)])
}

impl Collector for MachineCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        self.encode_self(&mut encoder)?;
        let Some(latest) = self.sampler.latest() else {
            return Ok(());
        };
        let clients = self
            .clients
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        for figure in figures::from_samples() {
            let points = figure.points(&latest.snapshot, &clients);
            family(
                &mut encoder,
                figure,
                points.iter().map(|p| (p.labels(), p.value)),
            )?;
        }
        Ok(())
    }
}

impl MachineCollector {
    /// runlens's own state: build, identity, storage, database size.
    fn encode_self(&self, e: &mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        family(
            e,
            &own::BUILD_INFO,
            [(vec![("version", crate::build_info::LONG.to_owned())], 1.0)],
        )?;
        if !self.identity.is_empty() {
            let target = &own::TARGET;
            let mut info =
                e.encode_descriptor(target.prometheus, target.help, None, MetricType::Info)?;
            info.encode_info(&self.identity)?;
        }
        let ok = self.storage.borrow().is_none();
        single(e, &own::STORAGE_OK, f64::from(u8::from(ok)))?;
        let size = |suffix: &str| {
            let mut path = self.db.clone().into_os_string();
            path.push(suffix);
            std::fs::metadata(path).map_or(0, |m| m.len())
        };
        if let Some(ingest) = &self.ingest {
            single(e, &own::OPEN_RUNS, ingest.open_runs() as f64)?;
            single(e, &own::INFLIGHT, ingest.budget().in_flight() as f64)?;
            single(e, &own::INFLIGHT_LIMIT, ingest.budget().total() as f64)?;
            let heard_since = probe_core::unix_now_ns() - CLOCK_HEARD_WITHIN_NS;
            let offsets = ingest.with_clock(|c| c.offsets(heard_since));
            family(
                e,
                &own::CLIENT_CLOCK_OFFSET,
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
        family(
            e,
            &own::CLIENT_DROPPED,
            by_name
                .into_iter()
                .map(|(name, n)| (vec![("client", name)], n as f64)),
        )?;
        single(
            e,
            &own::SAMPLE_DURATION,
            self.sampler.last_sample_duration().as_secs_f64(),
        )?;
        if let Some(export) = &self.export {
            use std::sync::atomic::Ordering;
            single(
                e,
                &own::EXPORT_LAG_RUNS,
                export.lag_runs.load(Ordering::Relaxed) as f64,
            )?;
            single(e, &own::EXPORT_LAG, export.lag().as_secs_f64())?;
            single(
                e,
                &own::EXPORT_HELD,
                f64::from(u8::from(export.held.load(Ordering::Relaxed))),
            )?;
            single(
                e,
                &own::EXPORT_SKIPPED,
                export.skipped_runs.load(Ordering::Relaxed) as f64,
            )?;
        }
        single(e, &own::DATABASE_SIZE, (size("") + size("-wal")) as f64)?;
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
