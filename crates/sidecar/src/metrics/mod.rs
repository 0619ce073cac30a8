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
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::watch;

use crate::sampler::SamplerHandle;
use collector::{MachineCollector, SamplerHandleDebug};
pub use counters::WorkCounters;

/// The OpenMetrics content type.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format's content type.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything a scrape reports.
pub struct Metrics {
    registry: Registry,
    clients: Arc<Mutex<HashMap<u32, String>>>,
}

impl Metrics {
    /// The registry: `counters` (already fed by the writer) and the machine from `sampler`.
    pub fn new(
        counters: &WorkCounters,
        sampler: SamplerHandle,
        storage: watch::Receiver<Option<String>>,
        db: PathBuf,
        export: Option<Arc<crate::export::ExportState>>,
    ) -> Self {
        let clients = Arc::new(Mutex::new(HashMap::new()));
        let mut registry = Registry::default();
        registry.register(
            "runlens_spans",
            "Spans stored, by name (the first 200 names; later ones as `other`) and status",
            counters.spans.clone(),
        );
        registry.register(
            "runlens_runs",
            "Runs ended and stored, by name (bounded like spans) and status",
            counters.runs.clone(),
        );
        registry.register_with_unit(
            "runlens_span_duration",
            "Span durations, by name (bounded like runlens_spans)",
            Unit::Seconds,
            counters.durations.clone(),
        );
        registry.register_collector(Box::new(MachineCollector {
            sampler: SamplerHandleDebug(sampler),
            storage,
            db,
            clients: clients.clone(),
            identity: collector::identity_from_env(),
            export,
        }));
        Self { registry, clients }
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

    /// The exposition in OpenMetrics text.
    pub fn openmetrics(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
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
