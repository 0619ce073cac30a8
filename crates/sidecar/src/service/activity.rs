//! `WatchActivity`: the live state for `runlens top`.
//!
//! One [`Hub`] reads the state from the database for all watchers, on a blocking thread
//! and its own read-only connection (WAL: never blocks the writer), once per sample
//! interval and only while someone watches; each watcher sends the latest state every
//! interval of its own. A new watcher wakes the reader, and its first state is one read
//! after it arrived: a script's one frame shows the work it has just started. A watcher
//! that does not keep up is dropped, never buffered.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use runlens_api::pb;
use tokio::sync::{Notify, mpsc, watch};
use tonic::Status;

use super::to_wire::snapshot_to_wire;
use crate::ingest::IngestError;
use crate::sampler::SamplerHandle;
use crate::store::activity::ActivityRows;
use crate::store::read::Reader;

/// The latest read, with when it began: nothing yet, the rows, or why the read failed.
type Latest = Option<(Instant, Result<Arc<ActivityRows>, Status>)>;

/// Reads the state for every watcher at once (see the module documentation).
#[derive(Clone)]
pub struct Hub {
    shared: Arc<HubShared>,
}

struct HubShared {
    latest: watch::Sender<Latest>,
    /// Wakes the reader when a watcher arrives after it went quiet.
    wake: Notify,
    started: Mutex<bool>,
}

impl Default for Hub {
    fn default() -> Self {
        Self {
            shared: Arc::new(HubShared {
                latest: watch::channel(None).0,
                wake: Notify::new(),
                started: Mutex::new(false),
            }),
        }
    }
}

impl Hub {
    /// A watcher's view of the latest state; starts the reader on first use and wakes it.
    pub fn subscribe(
        &self,
        db_path: PathBuf,
        sampler: SamplerHandle,
        shutdown: watch::Receiver<bool>,
    ) -> Subscription {
        let subscription = Subscription {
            rows: self.shared.latest.subscribe(),
            since: Instant::now(),
        };
        let mut started = self
            .shared
            .started
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !*started {
            *started = true;
            tokio::spawn(read_loop(self.shared.clone(), db_path, sampler, shutdown));
        }
        drop(started);
        self.shared.wake.notify_one();
        subscription
    }
}

/// A watcher's view of the hub's reads, and when it began watching.
pub struct Subscription {
    rows: watch::Receiver<Latest>,
    /// Reads that began before this are older than the watcher: not its first state.
    since: Instant,
}

/// Reads the state every sample interval while anyone watches; sleeps otherwise.
async fn read_loop(
    shared: Arc<HubShared>,
    db_path: PathBuf,
    sampler: SamplerHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut reader: Option<Reader> = None;
    loop {
        if shared.latest.receiver_count() == 0 {
            // Nobody watches: no reads, no wake-ups, until someone subscribes.
            shared.latest.send_replace(None);
            tokio::select! {
                _ = shared.wake.notified() => continue,
                _ = shutdown.changed() => return,
            }
        }
        let path = db_path.clone();
        let kept = reader.take();
        let began = Instant::now();
        let read = tokio::task::spawn_blocking(move || {
            let reader = match kept {
                Some(r) => r,
                None => Reader::open(&path)?,
            };
            let rows = reader.activity(probe_core::unix_now_ns());
            rows.map(|rows| (reader, rows))
        })
        .await;
        let latest = match read {
            Ok(Ok((r, rows))) => {
                reader = Some(r);
                Ok(Arc::new(rows))
            }
            Ok(Err(e)) => Err(Status::from(IngestError::storage(&e))),
            Err(e) => Err(Status::internal(format!("activity read failed: {e}"))),
        };
        shared.latest.send_replace(Some((began, latest)));
        tokio::select! {
            _ = tokio::time::sleep(sampler.interval()) => {}
            // A new watcher: read now rather than make it wait an interval.
            _ = shared.wake.notified() => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Sends the latest state every `interval` into `tx` until the watcher goes, the sidecar
/// stops or the watcher falls behind.
pub async fn watch(
    subscription: Subscription,
    sampler: SamplerHandle,
    interval: Duration,
    oom_threshold_bytes: u64,
    tx: mpsc::Sender<Result<pb::Activity, Status>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let threshold = match oom_threshold_bytes {
        0 => crate::store::DEFAULT_OOM_THRESHOLD_MIB << 20,
        t => t,
    };
    let Subscription { mut rows, since } = subscription;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = shutdown.changed() => return,
            _ = tx.closed() => return,
        }
        // The first state may still be on its way: one read after this watcher came.
        let latest = loop {
            if let Some((began, latest)) = rows.borrow_and_update().clone()
                && began >= since
            {
                break latest;
            }
            tokio::select! {
                changed = rows.changed() => if changed.is_err() { return },
                _ = shutdown.changed() => return,
                _ = tx.closed() => return,
            }
        };
        let item = latest.map(|rows| to_wire(&rows, sampler.latest().as_deref(), threshold));
        let failed = item.is_err();
        match tx.try_send(item) {
            Ok(()) if !failed => {}
            // Behind by a whole buffer, gone, or told why the read failed: end the stream.
            Ok(()) | Err(_) => return,
        }
    }
}

fn gpu_free(pairs: &[(u32, u64)]) -> Vec<pb::GpuFree> {
    pairs
        .iter()
        .map(|&(gpu_index, memory_free_bytes)| pb::GpuFree {
            gpu_index,
            memory_free_bytes,
        })
        .collect()
}

/// The wire form, with each client's process figures from the latest sample.
fn to_wire(
    rows: &ActivityRows,
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
            .iter()
            .map(|c| pb::ActiveClient {
                process: process_of(c.pid),
                client_id: c.client_id.clone(),
                client_name: c.client_name.clone().unwrap_or_default(),
                pid: c.pid.unwrap_or(0),
                last_seen_ns: c.last_seen_ns,
                dropped_messages: c.dropped_messages,
                clock_offset_ns: c.clock_offset_ns,
                clock_skewed: c.clock_skewed,
            })
            .collect(),
        open_runs: rows
            .open_runs
            .iter()
            .map(|r| pb::OpenRun {
                run_id: r.run_id.clone(),
                name: r.name.clone(),
                client_id: r.client_id.clone().unwrap_or_default(),
                started_at_ns: r.started_at_ns,
                start_gpu_free: gpu_free(&r.start_gpu_free),
                open_spans: r
                    .open_spans
                    .iter()
                    .map(|s| pb::OpenSpan {
                        span_id: s.span_id.clone(),
                        parent_span_id: s.parent_span_id.clone().unwrap_or_default(),
                        name: s.name.clone(),
                        started_at_ns: s.started_at_ns,
                        start_gpu_free: gpu_free(&s.start_gpu_free),
                    })
                    .collect(),
            })
            .collect(),
        more_open_runs: rows.more_open_runs,
        recent_failures: rows
            .failures
            .iter()
            .map(|f| pb::FailedRun {
                likely_oom: f.gpu_free_min_bytes.is_some_and(|b| b < threshold),
                run_id: f.run_id.clone(),
                name: f.name.clone(),
                error: f.error.clone().unwrap_or_default(),
                ended_at_ns: f.ended_at_ns,
                gpu_free_min_bytes: f.gpu_free_min_bytes,
            })
            .collect(),
        snapshot,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use probe_core::{HostProbe, NoGpu, Sampler};

    use super::*;
    use crate::store::Writer;

    fn sampler(dir: &tempfile::TempDir) -> (SamplerHandle, Writer, PathBuf) {
        let path = dir.path().join("a.db");
        let conn = crate::store::open_for_writing(&path, false, None).unwrap();
        let writer = Writer::start(conn, None, false, None).unwrap();
        let sampler = Sampler::new(HostProbe::new().unwrap(), Box::new(NoGpu::new("test")));
        let handle = SamplerHandle::new(sampler, writer.handle(), 1, Duration::from_millis(100));
        (handle, writer, path)
    }

    #[tokio::test]
    async fn a_watcher_that_does_not_read_is_dropped_and_the_hub_then_stops_reading() {
        let dir = tempfile::tempdir().unwrap();
        let (sampler, _writer, path) = sampler(&dir);
        let (_stop, shutdown) = watch::channel(false);
        let hub = Hub::default();
        let rows = hub.subscribe(path, sampler.clone(), shutdown.clone());
        let (tx, mut rx) = mpsc::channel(2);
        let task = tokio::spawn(watch(
            rows,
            sampler,
            Duration::from_millis(100),
            0,
            tx,
            shutdown,
        ));
        // Nobody reads: two states fill the buffer, the third finds it full and the
        // watcher ends instead of queueing more.
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the watcher gives up")
            .unwrap();
        let mut received = 0;
        while let Ok(state) = rx.try_recv() {
            assert!(state.is_ok());
            received += 1;
        }
        assert_eq!(received, 2);
        // With its last watcher gone the hub goes quiet and forgets the state.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(hub.shared.latest.receiver_count(), 0);
        assert!(hub.shared.latest.borrow().is_none());
    }
}
