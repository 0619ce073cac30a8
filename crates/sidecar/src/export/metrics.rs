//! The periodic samples as OTLP gauges, with the semantic-convention names
//! (`hw.gpu.memory.usage` with `hw.id`, `hw.type=gpu` …; `system.memory.usage` …), sent
//! every [`METRICS_EVERY`] from the samples after their own persisted cursor, so a receiver
//! that was down gets the history it missed.

use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use probe_core::Snapshot;

/// How often the samples gathered since the last export are sent.
pub const METRICS_EVERY: Duration = Duration::from_secs(10);

/// Samples per export (a minute and a half at the default interval).
pub const SAMPLES_PER_BATCH: u32 = 90;

/// One gauge's points, by name, in the order first seen.
#[derive(Default)]
struct Gauges {
    metrics: Vec<Metric>,
}

impl Gauges {
    fn point(
        &mut self,
        (name, unit, description): (&str, &str, &str),
        at_ns: i64,
        value: f64,
        attributes: Vec<KeyValue>,
    ) {
        let point = NumberDataPoint {
            attributes,
            time_unix_nano: u64::try_from(at_ns).unwrap_or(0),
            value: Some(number_data_point::Value::AsDouble(value)),
            ..Default::default()
        };
        if let Some(m) = self.metrics.iter_mut().find(|m| m.name == name)
            && let Some(metric::Data::Gauge(g)) = &mut m.data
        {
            g.data_points.push(point);
            return;
        }
        self.metrics.push(Metric {
            name: name.to_owned(),
            description: description.to_owned(),
            unit: unit.to_owned(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: vec![point],
            })),
            ..Default::default()
        });
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// The samples as one request from a sender with these resource attributes.
pub fn request(samples: &[Snapshot], resource: &[(String, String)]) -> ExportMetricsServiceRequest {
    let mut g = Gauges::default();
    for s in samples {
        let at = s.taken_at_ns;
        for d in &s.gpu.devices {
            let attributes = || {
                vec![
                    kv("hw.id", d.uuid.as_deref().unwrap_or_default()),
                    kv("hw.type", "gpu"),
                    kv("hw.vendor", "nvidia"),
                    kv("hw.model", d.name.as_deref().unwrap_or_default()),
                    kv("gpu", &d.index.to_string()),
                ]
            };
            let mut gauge = |meta, value: Option<f64>| {
                if let Some(value) = value {
                    g.point(meta, at, value, attributes());
                }
            };
            gauge(
                ("hw.gpu.memory.usage", "By", "GPU memory in use"),
                d.memory_used_bytes.map(|v| v as f64),
            );
            gauge(
                ("hw.gpu.memory.limit", "By", "GPU memory in all"),
                d.memory_total_bytes.map(|v| v as f64),
            );
            gauge(
                ("hw.gpu.utilization", "1", "Share of time a kernel ran"),
                d.utilization_ratio,
            );
            gauge(
                (
                    "hw.gpu.memory.utilization",
                    "1",
                    "Share of time memory was busy",
                ),
                d.memory_utilization_ratio,
            );
            gauge(
                ("hw.gpu.temperature", "Cel", "GPU temperature"),
                d.temperature_celsius,
            );
            gauge(("hw.gpu.power", "W", "GPU power draw"), d.power_watts);
            if let Some(perf) = &d.perf {
                for figure in &crate::gpu_perf::FIGURES {
                    let unit = match figure.unit {
                        crate::gpu_perf::PerfUnit::Ratio => "1",
                        crate::gpu_perf::PerfUnit::BytesPerSecond => "By/s",
                    };
                    gauge((figure.otlp, unit, figure.help), (figure.get)(perf));
                }
            }
        }
        let h = &s.host;
        g.point(
            ("system.memory.usage", "By", "Host memory by state"),
            at,
            h.ram_used_bytes as f64,
            vec![kv("system.memory.state", "used")],
        );
        g.point(
            ("system.memory.usage", "By", "Host memory by state"),
            at,
            h.ram_available_bytes as f64,
            vec![kv("system.memory.state", "free")],
        );
        g.point(
            ("system.memory.limit", "By", "Host memory in all"),
            at,
            h.ram_total_bytes as f64,
            vec![],
        );
        if let Some(load) = h.cpu_load_1m {
            g.point(
                ("system.cpu.load_average.1m", "1", "1-minute load average"),
                at,
                load,
                vec![],
            );
        }
        if let Some(util) = h.cpu_utilization_ratio {
            g.point(
                ("system.cpu.utilization", "1", "Share of CPU time busy"),
                at,
                util,
                vec![],
            );
        }
        if let Some(used) = s.cgroup.as_ref().and_then(|c| c.memory_used_bytes) {
            g.point(
                ("container.memory.usage", "By", "The container's memory use"),
                at,
                used as f64,
                vec![],
            );
        }
        for p in &s.processes {
            let pid = p.pid.to_string();
            g.point(
                (
                    "process.memory.usage",
                    "By",
                    "A watched agent's resident memory, children included",
                ),
                at,
                p.rss_bytes as f64,
                vec![kv("process.pid", &pid)],
            );
        }
    }
    let mut attributes = vec![kv("service.name", "runlens")];
    for (k, v) in resource {
        if k != "service.name" {
            attributes.push(kv(k, v));
        }
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes,
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: g.metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Sends the samples as OTLP metrics until shutdown.
pub struct MetricsExporter {
    /// The receiver.
    pub transport: super::transport::Transport,
    /// Reads the samples (on a blocking thread, never on the async runtime).
    pub reader: crate::store::read::SharedReader,
    /// Moves the cursor.
    pub writer: crate::store::WriterHandle,
    /// The sender's resource attributes.
    pub resource: Vec<(String, String)>,
}

impl MetricsExporter {
    /// Exports every [`METRICS_EVERY`] until `shutdown` turns true. The first start with a
    /// database begins at its newest sample (history from before export was set stays home).
    pub async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut failing = false;
        loop {
            match self.send_pending().await {
                Ok(()) => failing = false,
                Err(error) => {
                    if !failing {
                        tracing::warn!(%error, "OTLP metrics export failed; retrying (nothing is lost)");
                    }
                    failing = true;
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return,
                () = tokio::time::sleep(METRICS_EVERY) => {}
            }
        }
    }

    async fn send_pending(&self) -> Result<(), String> {
        use crate::store::read::METRICS_CURSOR;
        let mut cursor =
            super::read_off_runtime(&self.reader, |r| r.cursor_of(METRICS_CURSOR)).await?;
        if cursor == 0 {
            // Never exported from this database: from now on, not its whole history.
            cursor = super::read_off_runtime(&self.reader, |r| r.newest_sample_id())
                .await?
                .saturating_sub(1);
        }
        loop {
            // Read and encoded on a blocking thread: a batch is milliseconds of work.
            let resource = self.resource.clone();
            let batch = super::read_off_runtime(&self.reader, move |r| {
                let samples = r.samples_after(cursor, SAMPLES_PER_BATCH)?;
                let last = samples.last().map(|&(last, _)| last);
                let snapshots: Vec<Snapshot> = samples.into_iter().map(|(_, s)| s).collect();
                Ok(last.map(|last| (last, request(&snapshots, &resource))))
            })
            .await?;
            let Some((last, request)) = batch else {
                return Ok(());
            };
            match self.transport.metrics(request).await {
                Ok(()) => {}
                Err(failure) if failure.permanent => {
                    // Said once: a receiver that takes traces but not metrics (another
                    // runlens) would otherwise fill the log every ten seconds.
                    static SAID: std::sync::atomic::AtomicBool =
                        std::sync::atomic::AtomicBool::new(false);
                    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                        tracing::warn!(message = %failure.message,
                            "the OTLP receiver does not take metrics; samples are not exported to it");
                    }
                }
                Err(failure) => return Err(failure.message),
            }
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.writer
                .send(
                    crate::store::WriteOp::ExportCursor {
                        exporter: METRICS_CURSOR,
                        seq: last,
                    },
                    crate::store::Ack::Reply(tx),
                )
                .await
                .map_err(|e| e.to_string())?;
            rx.await.map_err(|_| "the writer stopped".to_owned())??;
            cursor = last;
        }
    }
}
