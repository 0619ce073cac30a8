//! The sidecar's background work: the periodic sampler, ending the runs of gone clients,
//! retention, trimming memory after bursts, ending OTLP runs without a root, following TLS
//! rotations, and the OTLP and Parquet exports. Started after the core, stopped before the
//! writer closes.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::shared::Core;
use super::{CLOSE_TIMEOUT, Tls, parquet, retention};
use crate::cli::{ExportProtocol, ServeArgs};
use crate::exit::{FAILURE, Failure, USAGE};
use crate::export::transport::{Protocol, Transport};
use crate::sampler::IntervalSampling;
use crate::service::RunlensService;
use crate::store::read::{Reader, SharedReader};

/// The background work, running.
pub(super) struct Background {
    ticker: IntervalSampling,
    /// Stopped, not awaited: each may be waiting on a failing disk, which only the
    /// writer's close gives up on; what they had yet to do is found again at the next
    /// start (runs to end, cursors to send from).
    tasks: Vec<JoinHandle<()>>,
    parquet_export: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    /// Starts everything; a bad `--otlp-export` URL is a usage error.
    pub fn start(
        args: &ServeArgs,
        core: &Core,
        service: &RunlensService,
        tls: Option<&Tls>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Self, Failure> {
        let ticker = core
            .sampler
            .start_interval_sampling()
            .map_err(|e| Failure::new(FAILURE, format!("cannot start the sampler thread: {e}")))?;
        let closer = service
            .end_runs_of_gone_clients(args.client_timeout)
            .map_err(Failure::from)?;
        let mut tasks = vec![
            closer,
            tokio::spawn(retention::prune_continuously(
                core.writer.handle(),
                core.counters.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(crate::budget::trim_after_bursts(
                core.budget.clone(),
                core.writer.handle(),
                shutdown.clone(),
            )),
            tokio::spawn(crate::otlp::root_timeout::end_rootless_runs(
                core.writer.handle(),
                args.otlp_root_timeout,
                core.sampler.match_window(),
                shutdown.clone(),
            )),
            tokio::spawn(crate::net::tls::follow_rotations(
                tls.iter()
                    .flat_map(|t| [t.grpc.clone(), t.http.clone()])
                    .collect(),
                shutdown.clone(),
            )),
        ];
        tasks.extend(otlp_exporters(args, core, shutdown)?);
        Ok(Self {
            ticker,
            tasks,
            parquet_export: parquet_export(args, core, shutdown)?,
        })
    }

    /// Stops the sampler and the tasks; gives the Parquet export its interval's end.
    pub async fn stop(self) {
        let Self {
            ticker,
            tasks,
            parquet_export,
        } = self;
        let _ = tokio::task::spawn_blocking(move || ticker.stop()).await;
        for task in tasks {
            task.abort();
        }
        // It notices the shutdown within 100 ms, or after the interval it is writing (whose
        // cursors then still reach the writer); a store that does not answer is not waited
        // for past CLOSE_TIMEOUT: its interval is written again at the next start.
        if let Some(thread) = parquet_export {
            let joined = tokio::task::spawn_blocking(move || thread.join());
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, joined).await;
        }
    }
}

/// The OTLP trace and metrics exporters, when `--otlp-export` is set.
fn otlp_exporters(
    args: &ServeArgs,
    core: &Core,
    shutdown: &watch::Receiver<bool>,
) -> Result<Vec<JoinHandle<()>>, Failure> {
    let Some(endpoint) = args.otlp_export.as_deref() else {
        return Ok(Vec::new());
    };
    let protocol = match args.otlp_export_protocol {
        ExportProtocol::Grpc => Protocol::Grpc,
        ExportProtocol::HttpProtobuf => Protocol::HttpProtobuf,
    };
    let transport = Transport::new(endpoint, protocol).map_err(|e| Failure::new(USAGE, e))?;
    let traces = crate::export::Exporter {
        transport: transport.clone(),
        reader: SharedReader::new(Reader::open(&args.db)?),
        writer: core.writer.handle(),
        state: core.export_state.clone(),
        resource: crate::otel_env::resource(),
    };
    let metrics = crate::export::metrics::MetricsExporter {
        transport,
        reader: SharedReader::new(Reader::open(&args.db)?),
        writer: core.writer.handle(),
        resource: crate::otel_env::resource(),
    };
    Ok(vec![
        tokio::spawn(traces.run(shutdown.clone())),
        tokio::spawn(metrics.run(shutdown.clone())),
    ])
}

/// The Parquet export's thread, when `--parquet-export` is set.
fn parquet_export(
    args: &ServeArgs,
    core: &Core,
    shutdown: &watch::Receiver<bool>,
) -> Result<Option<std::thread::JoinHandle<()>>, Failure> {
    let Some(url) = &args.parquet_export else {
        return Ok(None);
    };
    let interval: Duration = args.parquet_export_interval;
    let thread = parquet::ParquetExport::new(args.db.clone(), url, interval, core.writer.handle())?
        .with_metrics(core.parquet_metrics.clone().unwrap_or_default())
        .start(shutdown.clone())
        .map_err(|e| {
            Failure::new(
                FAILURE,
                format!("cannot start the Parquet export thread: {e}"),
            )
        })?;
    Ok(Some(thread))
}
