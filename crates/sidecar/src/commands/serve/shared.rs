//! The sidecar's core, built once every listener is bound: the database and its writer,
//! the sampler, the ingest path and the metrics, each from the ones before it.

use std::sync::Arc;

use probe_core::Sampler;
use tokio::sync::{mpsc, watch};

use super::record_start;
use crate::budget::Budget;
use crate::cli::{Durability, ServeArgs};
use crate::exit::{FAILURE, Failure};
use crate::export::ExportState;
use crate::ingest::{Ingest, Registry};
use crate::metrics::{Metrics, ParquetExportMetrics, WorkCounters};
use crate::otlp::OtlpIngest;
use crate::sampler::SamplerHandle;
use crate::service::{Backends, RunlensService, SessionLimits};
use crate::store::read::{self, Reader, SharedReader};
use crate::store::{self, Writer};

/// What the front doors and the background tasks share.
pub(super) struct Core {
    /// The one connection that writes.
    pub writer: Writer,
    /// Work done, for `/metrics`.
    pub counters: Arc<WorkCounters>,
    /// The OTLP exporter's progress (shown by `/metrics`, woken by the writer).
    pub export_state: Arc<ExportState>,
    /// Samples in the background and on request.
    pub sampler: SamplerHandle,
    /// The one ingest path of every front door.
    pub ingest: Ingest,
    /// Bytes of requests in flight.
    pub budget: Budget,
    /// What `/metrics` serves.
    pub metrics: Arc<Metrics>,
    /// The Parquet export's series, when it is on.
    pub parquet_metrics: Option<ParquetExportMetrics>,
    /// Reads for the history rpcs and the gone-client check.
    pub reader: SharedReader,
}

impl Core {
    /// Opens the database (creating or migrating it), records this start, and builds the
    /// rest on it.
    pub fn open(args: &ServeArgs, sampler: Sampler) -> Result<Self, Failure> {
        let conn = store::open_for_writing(
            &args.db,
            args.durability == Durability::Full,
            args.max_db_mib.map(|mib| mib.saturating_mul(1 << 20)),
        )?;
        record_start(&conn);
        let next_snapshot_id = read::next_snapshot_id(&conn).map_err(Failure::from)?;
        let counters = Arc::new(WorkCounters::default());
        let export_state = Arc::new(ExportState::default());
        let writer = start_writer(args, conn, &counters, &export_state)?;
        // The registry's lookups get a connection of their own: an exporter's batch read
        // on the shared one would make a session wait behind it.
        let recall = SharedReader::new(Reader::open(&args.db)?);
        let reader = SharedReader::new(Reader::open(&args.db)?);
        let sampler = SamplerHandle::new(
            sampler,
            writer.handle(),
            next_snapshot_id,
            args.sample_interval,
        )
        .with_active_interval(args.active_sample_interval);
        let budget = Budget::new((args.max_inflight_mib as usize) << 20);
        let ingest = Ingest::new(sampler.clone(), Registry::new())
            .with_stored(recall)
            .with_clock_correction(args.clock_skew_correction)
            .with_budget(budget.clone());
        ingest.build_stored_runs();
        let metrics = Metrics::new(
            &counters,
            sampler.clone(),
            writer.handle().health(),
            args.db.clone(),
            args.otlp_export.is_some().then(|| export_state.clone()),
            Some(ingest.clone()),
        );
        let (metrics, parquet_metrics) = match &args.parquet_export {
            Some(_) => {
                let (metrics, handles) = metrics.with_parquet_export();
                (metrics, Some(handles))
            }
            None => (metrics, None),
        };
        Ok(Self {
            writer,
            counters,
            export_state,
            sampler,
            ingest,
            budget,
            metrics: Arc::new(metrics),
            parquet_metrics,
            reader,
        })
    }

    /// The runlens.v1 service on this core.
    pub fn service(
        &self,
        args: &ServeArgs,
        shutdown: &watch::Receiver<bool>,
        drain: mpsc::WeakSender<()>,
    ) -> RunlensService {
        RunlensService::new(
            Backends {
                ingest: self.ingest.clone(),
                metrics: self.metrics.clone(),
                sampler: self.sampler.clone(),
                writer: self.writer.handle(),
                reader: self.reader.clone(),
            },
            args.db.clone(),
            shutdown.clone(),
            drain,
            SessionLimits {
                max_sessions: args.max_sessions as usize,
                hello_timeout: args.hello_timeout,
            },
        )
    }

    /// The OTLP front door's ingest on this core.
    pub fn otlp(&self, max_message: usize) -> OtlpIngest {
        OtlpIngest::new(
            self.ingest.clone(),
            self.sampler.clone(),
            self.writer.handle(),
            self.metrics.clone(),
        )
        .with_max_body(max_message)
    }

    /// Commits everything queued and stops the writer.
    pub async fn close(self) {
        let Self {
            writer, sampler, ..
        } = self;
        drop(sampler);
        writer.close().await;
    }
}

/// The writer thread, with the retention policy and, when an exporter reads it, the
/// outbox; background samples wait for the next commit of data.
fn start_writer(
    args: &ServeArgs,
    conn: store::Connection,
    counters: &Arc<WorkCounters>,
    export_state: &Arc<ExportState>,
) -> Result<Writer, Failure> {
    let observer: Arc<dyn store::CommitObserver> = match &args.otlp_export {
        Some(_) => Arc::new(crate::export::WakeOnRuns {
            counters: counters.clone(),
            state: export_state.clone(),
        }),
        None => counters.clone(),
    };
    let policy = store::retention::RetentionPolicy {
        retain: args.retain,
        retain_full: args.retain_full,
        max_bytes: args.max_db_mib.map(|mib| mib.saturating_mul(1 << 20)),
        keep_unexported: args.otlp_export.is_some(),
        keep_unexported_parquet: args.parquet_export.is_some(),
    };
    let writer = Writer::start(
        conn,
        Some(observer),
        args.otlp_export.is_some() || args.parquet_export.is_some(),
        Some(policy),
    )
    .map_err(|e| Failure::new(FAILURE, format!("cannot start the writer thread: {e}")))?;
    // Background samples wait for the next commit of data instead of one commit each, at
    // most one idle interval (and a second): queries see a sample at most that much later.
    writer.set_sample_linger(args.sample_interval.min(store::SAMPLE_LINGER));
    Ok(writer)
}
