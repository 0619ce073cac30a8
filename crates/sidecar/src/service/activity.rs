//! `WatchActivity`: the live state for `runlens top`, read on a blocking thread from the
//! watcher's own read-only connection (WAL: never blocks the writer or other readers) and
//! sent whole every interval. A watcher that does not keep up is dropped, never buffered.

use std::path::PathBuf;
use std::time::Duration;

use runlens_api::pb;
use tokio::sync::{mpsc, watch};
use tonic::Status;

use super::to_wire::snapshot_to_wire;
use crate::ingest::IngestError;
use crate::sampler::SamplerHandle;
use crate::store::activity::ActivityRows;
use crate::store::read::Reader;

/// GPU free memory below this marks a failed run likely OOM unless the watcher says.
const DEFAULT_OOM_THRESHOLD: u64 = 500 << 20;

/// Sends the state every `interval` into `tx` until the watcher goes, the sidecar stops or
/// the watcher falls behind.
pub async fn watch(
    db_path: PathBuf,
    sampler: SamplerHandle,
    interval: Duration,
    oom_threshold_bytes: u64,
    tx: mpsc::Sender<Result<pb::Activity, Status>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let threshold = match oom_threshold_bytes {
        0 => DEFAULT_OOM_THRESHOLD,
        t => t,
    };
    let mut reader: Option<Reader> = None;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
            _ = tx.closed() => return,
        }
        let path = db_path.clone();
        let kept = reader.take();
        let read = tokio::task::spawn_blocking(move || {
            let reader = match kept {
                Some(r) => r,
                None => Reader::open(&path)?,
            };
            let rows = reader.activity(probe_core::unix_now_ns());
            rows.map(|rows| (reader, rows))
        })
        .await;
        let item = match read {
            Ok(Ok((r, rows))) => {
                reader = Some(r);
                Ok(to_wire(rows, sampler.latest().as_deref(), threshold))
            }
            Ok(Err(e)) => Err(Status::from(IngestError::storage(&e))),
            Err(e) => Err(Status::internal(format!("activity read failed: {e}"))),
        };
        let failed = item.is_err();
        match tx.try_send(item) {
            Ok(()) if !failed => {}
            // Behind by a whole buffer, gone, or told why the read failed: end the stream.
            Ok(()) | Err(_) => return,
        }
    }
}

fn gpu_free(pairs: Vec<(u32, u64)>) -> Vec<pb::GpuFree> {
    pairs
        .into_iter()
        .map(|(gpu_index, memory_free_bytes)| pb::GpuFree {
            gpu_index,
            memory_free_bytes,
        })
        .collect()
}

/// The wire form, with each client's process figures from the latest sample.
fn to_wire(
    rows: ActivityRows,
    latest: Option<&crate::store::StoredSnapshot>,
    threshold: u64,
) -> pb::Activity {
    let snapshot = latest.map(|s| snapshot_to_wire(&s.snapshot, s.id));
    let process_of = |pid: Option<u32>| {
        let pid = pid?;
        snapshot
            .as_ref()?
            .agent_processes
            .iter()
            .find(|p| p.pid == pid)
            .cloned()
    };
    pb::Activity {
        at_ns: probe_core::unix_now_ns(),
        clients: rows
            .clients
            .into_iter()
            .map(|c| pb::ActiveClient {
                process: process_of(c.pid),
                client_id: c.client_id,
                client_name: c.client_name.unwrap_or_default(),
                pid: c.pid.unwrap_or(0),
                last_seen_ns: c.last_seen_ns,
                dropped_messages: c.dropped_messages,
            })
            .collect(),
        open_runs: rows
            .open_runs
            .into_iter()
            .map(|r| pb::OpenRun {
                run_id: r.run_id,
                name: r.name,
                client_id: r.client_id.unwrap_or_default(),
                started_at_ns: r.started_at_ns,
                start_gpu_free: gpu_free(r.start_gpu_free),
                open_spans: r
                    .open_spans
                    .into_iter()
                    .map(|s| pb::OpenSpan {
                        span_id: s.span_id,
                        parent_span_id: s.parent_span_id.unwrap_or_default(),
                        name: s.name,
                        started_at_ns: s.started_at_ns,
                        start_gpu_free: gpu_free(s.start_gpu_free),
                    })
                    .collect(),
            })
            .collect(),
        more_open_runs: rows.more_open_runs,
        recent_failures: rows
            .failures
            .into_iter()
            .map(|f| pb::FailedRun {
                likely_oom: f.gpu_free_min_bytes.is_some_and(|b| b < threshold),
                run_id: f.run_id,
                name: f.name,
                error: f.error.unwrap_or_default(),
                ended_at_ns: f.ended_at_ns,
                gpu_free_min_bytes: f.gpu_free_min_bytes,
            })
            .collect(),
        snapshot,
    }
}
