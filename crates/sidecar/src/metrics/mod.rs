//! Prometheus `/metrics` on `--metrics-listen`: the machine from the latest sample
//! (`collector`) and runlens's own work (`counters`, fed by the writer after each commit),
//! through the `prometheus-client` crate. OpenMetrics text for scrapers that ask for it
//! (Prometheus does), Prometheus text 0.0.4 for the others.

pub mod collector;
pub mod counters;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::figures::{Figure, own};
use crate::sampler::SamplerHandle;
use collector::MachineCollector;
pub use counters::WorkCounters;

/// The OpenMetrics content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format's content type.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The Parquet export's series, updated by its thread.
#[derive(Debug, Clone, Default)]
pub struct ParquetExportMetrics {
    /// Rows written.
    pub rows: Counter,
    /// Files written.
    pub files: Counter,
    /// Intervals that failed.
    pub failures: Counter,
    /// When the last interval finished, Unix seconds.
    pub last_success: prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
}

/// Everything a scrape reports.
pub struct Metrics {
    registry: Registry,
    clients: Arc<Mutex<HashMap<u32, String>>>,
    rejected: Family<Vec<(&'static str, String)>, Counter>,
    /// Per session client id: its name and the messages it says it dropped.
    dropped: Arc<Mutex<HashMap<String, (String, u64)>>>,
}

impl Metrics {
    /// The registry: `counters` (already fed by the writer) and the machine from `sampler`.
    pub fn new(
        counters: &WorkCounters,
        sampler: SamplerHandle,
        storage: watch::Receiver<Option<String>>,
        db: PathBuf,
        export: Option<Arc<crate::export::ExportState>>,
        ingest: Option<crate::ingest::Ingest>,
    ) -> Self {
        let clients = Arc::new(Mutex::new(HashMap::new()));
        let dropped = Arc::new(Mutex::new(HashMap::new()));
        let rejected = Family::default();
        let mut registry = Registry::default();
        register(&mut registry, &own::REJECTED, rejected.clone());
        register(&mut registry, &own::SPANS, counters.spans.clone());
        register(&mut registry, &own::RUNS, counters.runs.clone());
        register(
            &mut registry,
            &own::SPAN_DURATION,
            counters.durations.clone(),
        );
        register(&mut registry, &own::PRUNED, counters.pruned.clone());
        register(
            &mut registry,
            &own::SAMPLE_MATCHES,
            counters.sample_matches.clone(),
        );
        registry.register_collector(Box::new(MachineCollector {
            sampler,
            storage,
            db,
            clients: clients.clone(),
            identity: collector::identity_from_env(),
            export,
            dropped: dropped.clone(),
            ingest,
        }));
        Self {
            registry,
            clients,
            rejected,
            dropped,
        }
    }

    /// Registers the Parquet export's series (`serve --parquet-export`) and returns the
    /// handles its thread updates.
    pub fn with_parquet_export(mut self) -> (Self, ParquetExportMetrics) {
        let m = ParquetExportMetrics::default();
        let r = &mut self.registry;
        register(r, &own::PARQUET_ROWS, m.rows.clone());
        register(r, &own::PARQUET_FILES, m.files.clone());
        register(r, &own::PARQUET_FAILURES, m.failures.clone());
        register(r, &own::PARQUET_LAST_SUCCESS, m.last_success.clone());
        (self, m)
    }

    /// Remembers the name of the client whose agent process is `pid` (for the `client`
    /// label of the agents' series).
    pub fn note_client(&self, pid: u32, name: &str) {
        if pid != 0 {
            self.clients
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(pid, name.to_owned());
        }
    }

    /// Counts a refusal (`reason`: a gRPC code's name in snake case, `invalid_span` ...).
    pub fn rejected(&self, reason: &str, count: u64) {
        self.rejected
            .get_or_create(&vec![("reason", reason.to_owned())])
            .inc_by(count);
    }

    /// A session client's running count of messages it dropped (its buffer was full).
    pub fn note_dropped(&self, client_id: &str, name: &str, dropped_total: u64) {
        let mut dropped = self.dropped.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = dropped
            .entry(client_id.to_owned())
            .or_insert_with(|| (name.to_owned(), 0));
        entry.1 = entry.1.max(dropped_total);
    }

    /// The exposition in OpenMetrics text.
    pub fn openmetrics(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Registers one of the sidecar's own figures under its name, help and unit from the table.
fn register(
    registry: &mut Registry,
    figure: &Figure,
    metric: impl prometheus_client::registry::Metric,
) {
    match figure.unit.prometheus() {
        Some(unit) => registry.register_with_unit(figure.prometheus, figure.help, unit, metric),
        None => registry.register(figure.prometheus, figure.help, metric),
    }
}

/// OpenMetrics text as Prometheus text 0.0.4: no `# EOF` or `# UNIT` lines, and a counter's
/// `HELP`/`TYPE` name its `_total` series.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut counters: Vec<String> = Vec::new();
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.push(name.to_owned());
            out.push_str(&format!("# TYPE {name}_total counter\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    // A counter's HELP line comes before its TYPE line: renamed once all are known.
    for name in counters {
        out = out.replace(&format!("# HELP {name} "), &format!("# HELP {name}_total "));
    }
    out
}

/// A gRPC code as a label value: `InvalidArgument` → `invalid_argument`.
pub fn code_label(code: tonic::Code) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The `/metrics` route.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics)
}

async fn scrape(State(metrics): State<Arc<Metrics>>, headers: HeaderMap) -> Response {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    match metrics.openmetrics() {
        Ok(text) if wants_openmetrics => {
            ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response()
        }
        Ok(text) => (
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            to_prometheus_text(&text),
        )
            .into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not encode the metrics",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_becomes_prometheus_text() {
        let om = "# HELP runlens_spans Spans stored.\n# TYPE runlens_spans counter\n\
                  runlens_spans_total{name=\"a\"} 3\n# HELP hw_gpu_memory_usage_bytes Used.\n\
                  # TYPE hw_gpu_memory_usage_bytes gauge\n# UNIT hw_gpu_memory_usage_bytes bytes\n\
                  hw_gpu_memory_usage_bytes{gpu=\"0\"} 5\n# EOF\n";
        let text = to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP runlens_spans_total Spans stored.\n# TYPE runlens_spans_total counter\n\
             runlens_spans_total{name=\"a\"} 3\n# HELP hw_gpu_memory_usage_bytes Used.\n\
             # TYPE hw_gpu_memory_usage_bytes gauge\nhw_gpu_memory_usage_bytes{gpu=\"0\"} 5\n"
        );
    }
}
