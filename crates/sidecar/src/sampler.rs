//! The sidecar's view of resources: the latest stored snapshot, fresh samples on demand,
//! and the background task that samples at `--sample-interval`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use probe_core::{Sampler, Snapshot};
use tokio::sync::watch;

use crate::store::{Ack, StoredSnapshot, WriteOp, WriterHandle};

/// Why a snapshot was taken; stored in `snapshots.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The periodic background sample.
    Interval,
    /// A run's baseline.
    RunStart,
    /// A run's end state.
    RunEnd,
    /// A client asked for a fresh sample.
    Fresh,
    /// The latest sample was older than the interval when an event needed one.
    Stale,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Interval => "interval",
            Reason::RunStart => "run_start",
            Reason::RunEnd => "run_end",
            Reason::Fresh => "fresh",
            Reason::Stale => "stale",
        }
    }
}

/// Failure to produce a stored snapshot.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// The sampling thread panicked or was cancelled.
    #[error("the resource sampler failed: {0}")]
    Sampler(String),
    /// The writer has stopped (shutdown in progress).
    #[error("the storage writer has stopped")]
    WriterClosed,
}

struct Inner {
    sampler: Mutex<Sampler>,
    latest: Mutex<Option<Arc<StoredSnapshot>>>,
    next_id: AtomicI64,
    writer: WriterHandle,
    interval: Duration,
}

/// Shared access to sampling; cheap to clone.
#[derive(Clone)]
pub struct SamplerHandle {
    inner: Arc<Inner>,
}

impl SamplerHandle {
    /// Wraps a sampler; stored snapshots get ids from `next_id` upwards.
    pub fn new(sampler: Sampler, writer: WriterHandle, next_id: i64, interval: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                sampler: Mutex::new(sampler),
                latest: Mutex::new(None),
                next_id: AtomicI64::new(next_id),
                writer,
                interval,
            }),
        }
    }

    /// The background sampling interval.
    pub fn interval(&self) -> Duration {
        self.inner.interval
    }

    /// Samples now without storing (for `GetSnapshot` / `WatchSnapshots`).
    pub async fn sample_unstored(&self) -> Result<Snapshot, SampleError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || lock(&inner.sampler).sample())
            .await
            .map_err(|e| SampleError::Sampler(e.to_string()))
    }

    /// Samples now, queues the snapshot for storage and makes it the latest.
    ///
    /// The snapshot is queued to the writer before this returns, so any row that refers
    /// to it is written in the same or a later transaction.
    pub async fn fresh(&self, reason: Reason) -> Result<Arc<StoredSnapshot>, SampleError> {
        let snapshot = self.sample_unstored().await?;
        let stored = Arc::new(StoredSnapshot {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            reason: reason.as_str(),
            snapshot,
            taken: Instant::now(),
        });
        self.inner
            .writer
            .send(WriteOp::Snapshot(stored.clone()), Ack::None)
            .await
            .map_err(|_| SampleError::WriterClosed)?;
        let mut latest = lock(&self.inner.latest);
        if latest.as_ref().is_none_or(|l| l.taken <= stored.taken) {
            *latest = Some(stored.clone());
        }
        Ok(stored)
    }

    /// The latest snapshot if it is younger than the interval, else a fresh one.
    pub async fn current(&self) -> Result<Arc<StoredSnapshot>, SampleError> {
        let latest = lock(&self.inner.latest).clone();
        match latest {
            Some(s) if s.taken.elapsed() <= self.inner.interval => Ok(s),
            _ => self.fresh(Reason::Stale).await,
        }
    }

    /// Samples every interval until `shutdown` turns true.
    pub async fn run_interval_sampling(self, mut shutdown: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.inner.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    if let Err(error) = self.fresh(Reason::Interval).await {
                        tracing::warn!(%error, "interval sample not stored");
                    }
                }
                _ = shutdown.changed() => break,
            }
        }
    }
}

/// Locks a mutex, recovering from poisoning: the guarded data (a sampler, an `Arc`) stays
/// valid even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
