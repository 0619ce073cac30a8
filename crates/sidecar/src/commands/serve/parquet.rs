//! `serve --parquet-export`: every interval, what is new since the last export is written
//! as Parquet files (`runlens-fleet`), then the cursors move, through the writer, in one
//! transaction. Killed between the files and the cursors, the next interval starts from the
//! same cursors and writes the same file names (`part-<cursor>`), now with what arrived
//! meanwhile too: replaced, not doubled. Runs on a thread of its own: its reads and
//! Parquet encoding never hold the async runtime.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use runlens_fleet::{Location, SourceNames, TableExport};
use tokio::sync::{oneshot, watch};

use crate::exit::{Failure, USAGE};
use crate::metrics::ParquetExportMetrics;
use crate::store::columnar::{self, Selection, Table};
use crate::store::read::{PARQUET_EVENTS_CURSOR, PARQUET_RUNS_CURSOR, PARQUET_SNAPSHOTS_CURSOR};
use crate::store::{Ack, WriteOp, WriterHandle};

/// The cursors' names, in the order of `columnar::export_heads`.
const CURSORS: [&str; 3] = [
    PARQUET_RUNS_CURSOR,
    PARQUET_SNAPSHOTS_CURSOR,
    PARQUET_EVENTS_CURSOR,
];

/// A test hook: milliseconds to wait between an interval's files and its cursors.
const PAUSE_BEFORE_CURSORS: &str = "RUNLENS_TEST_PARQUET_PAUSE_BEFORE_CURSORS";

/// The continuous export, ready to start.
pub struct ParquetExport {
    db: PathBuf,
    location: Location,
    interval: Duration,
    writer: WriterHandle,
    metrics: ParquetExportMetrics,
}

impl ParquetExport {
    /// Checks the destination URL (a usage error when it cannot be used).
    pub fn new(
        db: PathBuf,
        url: &str,
        interval: Duration,
        writer: WriterHandle,
    ) -> Result<Self, Failure> {
        let location = Location::open(url)
            .map_err(|e| Failure::new(USAGE, format!("--parquet-export: {e}")))?;
        Ok(Self {
            db,
            location,
            interval,
            writer,
            metrics: ParquetExportMetrics::default(),
        })
    }

    /// Reports to these `/metrics` series.
    pub fn with_metrics(mut self, metrics: ParquetExportMetrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Exports every interval until `shutdown`, on a thread of its own.
    pub fn start(
        self,
        shutdown: watch::Receiver<bool>,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        let runtime = tokio::runtime::Handle::current();
        std::thread::Builder::new()
            .name("parquet-export".into())
            .spawn(move || {
                let mut next = Instant::now() + self.interval;
                loop {
                    // Wakes every 100 ms to notice a shutdown.
                    while Instant::now() < next {
                        if *shutdown.borrow() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(100).min(self.interval));
                    }
                    next = Instant::now() + self.interval;
                    let started = Instant::now();
                    let result = self.once(&runtime);
                    if result.is_ok() {
                        let now = probe_core::unix_now_ns() as f64 / 1e9;
                        self.metrics.last_success.set(now);
                    }
                    match result {
                        Ok(Some(written)) => {
                            self.metrics.rows.inc_by(written.rows());
                            self.metrics.files.inc_by(written.files());
                            tracing::info!(
                                url = %self.location.url,
                                rows = written.rows(),
                                files = written.files(),
                                bytes = written.bytes(),
                                elapsed_ms = started.elapsed().as_millis() as u64,
                                "exported to Parquet"
                            )
                        }
                        Ok(None) => {}
                        Err(error) => {
                            self.metrics.failures.inc();
                            tracing::warn!(
                                url = %self.location.url,
                                %error,
                                "the Parquet export failed; the next interval tries again \
                                 from the same cursor"
                            )
                        }
                    }
                }
            })
    }

    /// One interval: the files, then the cursors. `None` when nothing was new.
    fn once(
        &self,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Option<runlens_fleet::Written>, String> {
        let conn = crate::store::open_read_only(&self.db).map_err(|e| e.to_string())?;
        let cursors = columnar::export_cursors(&conn).map_err(|e| e.to_string())?;
        let heads = columnar::export_heads(&conn).map_err(|e| e.to_string())?;
        if cursors == heads {
            return Ok(None);
        }
        let sources = SourceNames::read(&conn, None).map_err(|e| e.to_string())?;
        let jobs: Vec<TableExport> = Table::ALL
            .into_iter()
            .filter_map(|table| {
                let k = columnar::head_of(table);
                let (after, upto) = (cursors[k], heads[k]);
                if table == Table::Clients {
                    return Some(TableExport {
                        table,
                        selection: Selection::Range { after, upto },
                        part: "clients".to_owned(),
                    });
                }
                (upto > after).then(|| TableExport {
                    table,
                    selection: Selection::Range { after, upto },
                    part: format!("{after:020}"),
                })
            })
            .collect();
        let written = runlens_fleet::export(&conn, &self.location, &jobs, &sources)
            .map_err(|e| e.to_string())?;
        drop(conn);
        // Tests kill the sidecar here, between an interval's files and its cursors.
        if let Some(ms) = std::env::var(PAUSE_BEFORE_CURSORS)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            tracing::info!(
                rows = written.rows(),
                "Parquet files written; cursors not moved yet"
            );
            std::thread::sleep(Duration::from_millis(ms));
        }
        // The files are in place: now, and only now, the cursors move.
        for (name, head) in CURSORS.into_iter().zip(heads) {
            let (tx, rx) = oneshot::channel();
            let writer = self.writer.clone();
            runtime.block_on(async move {
                writer
                    .send(
                        WriteOp::ExportCursor {
                            exporter: name,
                            seq: head,
                        },
                        Ack::Reply(tx),
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                rx.await.map_err(|_| "the writer stopped".to_owned())?
            })?;
        }
        Ok(Some(written))
    }
}
