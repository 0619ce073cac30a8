//! The periodic samples as OTLP metrics, named by the one table of exported figures
//! (`crate::figures`: `hw.gpu.memory.usage` with `hw.id`, `hw.type=gpu` …;
//! `system.memory.usage` …; counters as cumulative sums), sent
//! every [`METRICS_EVERY`] from the samples after their own persisted cursor, so a receiver
//! that was down gets the history it missed.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use probe_core::Snapshot;

use crate::figures::{self, Figure, Kind};

/// How often the samples gathered since the last export are sent.
pub const METRICS_EVERY: Duration = Duration::from_secs(10);

/// Samples per export (a minute and a half at the default interval).
pub const SAMPLES_PER_BATCH: u32 = 90;

/// The request's metrics, one per exported figure in the order first seen.
#[derive(Default)]
struct Metrics {
    metrics: Vec<Metric>,
}

impl Metrics {
    fn point(&mut self, name: &str, figure: &Figure, point: NumberDataPoint) {
        if let Some(m) = self.metrics.iter_mut().find(|m| m.name == name) {
            match &mut m.data {
                Some(metric::Data::Gauge(g)) => g.data_points.push(point),
                Some(metric::Data::Sum(sum)) => sum.data_points.push(point),
                _ => {}
            }
            return;
        }
        let data = match figure.kind {
            // A running total since the driver (or the container) started.
            Kind::Counter => metric::Data::Sum(Sum {
                data_points: vec![point],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
            Kind::Gauge | Kind::Histogram | Kind::Info => metric::Data::Gauge(Gauge {
                data_points: vec![point],
            }),
        };
        self.metrics.push(Metric {
            name: name.to_owned(),
            description: figure.help.to_owned(),
            unit: figure.unit.ucum().to_owned(),
            data: Some(data),
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

/// The samples as one request from a sender with these resource attributes: every figure of
/// the table that has an OTLP name (`crate::figures`), a point per sample.
pub fn request(samples: &[Snapshot], resource: &[(String, String)]) -> ExportMetricsServiceRequest {
    // Stored samples do not keep the names clients gave; the agents' points carry their PIDs.
    let no_client_names = HashMap::new();
    let mut out = Metrics::default();
    for s in samples {
        let at = u64::try_from(s.taken_at_ns).unwrap_or(0);
        for (name, figure) in figures::exported_as_otlp() {
            for p in figure.points(s, &no_client_names) {
                let point = NumberDataPoint {
                    attributes: p.otlp_attributes().map(|(k, v)| kv(k, v)).collect(),
                    time_unix_nano: at,
                    value: Some(number_data_point::Value::AsDouble(p.value)),
                    ..Default::default()
                };
                out.point(name, figure, point);
            }
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
                metrics: out.metrics,
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
