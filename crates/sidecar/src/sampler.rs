//! The sidecar's view of resources: the latest stored snapshot, fresh samples on demand,
//! and the background thread that samples every `--active-sample-interval` while work is in
//! flight and every `--sample-interval` otherwise.
//!
//! The periodic sampler is a thread of its own, not a task on the async runtime: sampling
//! is blocking work (procfs reads, NVML calls), and as a task each sample cost a timer
//! wake-up on the runtime, a hand-off to a blocking thread and one back before the writer
//! saw it. On small machines those wake-ups, not the reads, were most of a sample's cost.
//!
//! Runs, spans, metrics and events are not sampled for: the writer matches each to the
//! stored sample nearest its own time (`store::SampleRef::Nearest`), within
//! [`SamplerHandle::match_window`]. Sampling faster while agents work keeps that sample
//! close; sampling slowly when nothing happens keeps an idle sidecar cheap.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use probe_core::{GpuState, Sampler, Snapshot};

use crate::domain::EventKind;
use crate::store::{Ack, EventRow, SampleRef, StoredSnapshot, WriteOp, WriterHandle};

/// A sample this young serves a request for a fresh one (a span's fresh start right after
/// another's): at agent rates a sample per request would be most of the sidecar's work, and
/// the machine does not change between them in a way the figures could show.
pub const FRESH_SHARE_WINDOW: Duration = Duration::from_millis(10);

/// The matching window in idle sampling intervals (see [`SamplerHandle::match_window`]).
pub const MATCH_WINDOW_INTERVALS: u32 = 2;

/// How long after the latest message the sidecar keeps sampling at the active interval
/// (besides while runs are open): longer than an OpenTelemetry SDK's default export delay
/// (5 s), so an agent that exports every few seconds is sampled fast throughout.
pub const ACTIVE_HOLD: Duration = Duration::from_secs(10);

/// Why a snapshot was taken; stored in `snapshots.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The periodic background sample (idle or active interval).
    Interval,
    /// A client asked for a fresh sample.
    Fresh,
    /// The latest sample was older than the interval when an event needed one.
    Stale,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Interval => "interval",
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

/// What the last sample said about the GPUs, to notice when one is lost or comes back.
#[derive(Default)]
struct GpuHealth {
    /// `None` before the first sample.
    available: Option<bool>,
    /// Per device index: the state last seen.
    states: Vec<GpuState>,
}

impl GpuHealth {
    /// Compares a new sample with the last one; returns the system events to record.
    fn update(&mut self, snapshot: &Snapshot) -> Vec<EventRow> {
        let gpu = &snapshot.gpu;
        let at_ns = snapshot.taken_at_ns;
        let mut events = Vec::new();
        let mut event = |name: &str, attributes: serde_json::Value| {
            tracing::warn!(event = name, %attributes, "GPU state changed");
            events.push(EventRow {
                kind: EventKind::System,
                run_id: None,
                span_id: None,
                name: name.to_owned(),
                value: None,
                unit: None,
                attributes: Some(attributes.to_string()),
                at_ns,
                snapshot: SampleRef::Taken(0),
            });
        };
        match (self.available, gpu.available) {
            (Some(true), false) => event(
                "gpu.unavailable",
                serde_json::json!({ "reason": gpu.unavailable_reason }),
            ),
            (Some(false), true) => event("gpu.available", serde_json::json!({})),
            _ => {}
        }
        self.available = Some(gpu.available);
        if !gpu.available {
            return events;
        }
        for d in &gpu.devices {
            let before = self.states.get(d.index as usize).copied();
            let attributes = serde_json::json!({ "gpu_index": d.index, "uuid": d.uuid });
            match (before, d.state) {
                (Some(GpuState::Lost), GpuState::Ok) => event("gpu.recovered", attributes),
                (prev, GpuState::Lost) if prev != Some(GpuState::Lost) => {
                    event("gpu.lost", attributes)
                }
                _ => {}
            }
        }
        self.states = gpu.devices.iter().map(|d| d.state).collect();
        events
    }
}

struct Inner {
    gpu_health: Mutex<GpuHealth>,
    sampler: Mutex<Sampler>,
    latest: Mutex<Option<Arc<StoredSnapshot>>>,
    next_id: AtomicI64,
    /// How long the latest sample took, ns.
    last_sample_ns: AtomicU64,
    writer: WriterHandle,
    interval: Duration,
    /// The interval while work is in flight (at most `interval`).
    active_interval: Duration,
    /// When anything last arrived, ms after `epoch`.
    last_activity_ms: AtomicU64,
    /// Runs open now (runlens.v1).
    open_runs: AtomicUsize,
    /// Whether the background task samples at the active interval now.
    active: AtomicBool,
    /// Wakes the background thread when work starts while it samples at the idle interval,
    /// or when it must stop.
    wake: Wake,
    /// Set to have the background task sample at once (a new agent process to watch).
    sample_now: AtomicBool,
    epoch: Instant,
}

/// What the background thread is woken for.
#[derive(Default)]
struct Wake {
    state: Mutex<WakeState>,
    signal: Condvar,
}

#[derive(Default)]
struct WakeState {
    /// Work started (or a process is to be watched): decide the next sample again.
    woken: bool,
    /// The sidecar is shutting down.
    stop: bool,
}

impl Wake {
    fn notify(&self, stop: bool) {
        let mut state = lock(&self.state);
        state.woken = true;
        state.stop |= stop;
        self.signal.notify_one();
    }

    /// Waits until `due`, or until woken. True when `due` was reached; false when woken
    /// (decide again) or told to stop (see [`Wake::stopping`]).
    fn wait_until(&self, due: Instant) -> bool {
        let mut state = lock(&self.state);
        loop {
            if state.stop {
                return false;
            }
            if state.woken {
                state.woken = false;
                return false;
            }
            let now = Instant::now();
            if now >= due {
                return true;
            }
            state = match self.signal.wait_timeout(state, due - now) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    fn stopping(&self) -> bool {
        lock(&self.state).stop
    }
}

/// The background sampling thread; [`IntervalSampling::stop`] ends it.
pub struct IntervalSampling {
    handle: SamplerHandle,
    thread: Option<JoinHandle<()>>,
}

impl IntervalSampling {
    /// Stops the thread and waits for it (at most one sample's time).
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for IntervalSampling {
    fn drop(&mut self) {
        self.handle.inner.wake.notify(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Shared access to sampling; cheap to clone.
#[derive(Clone)]
pub struct SamplerHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SamplerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SamplerHandle")
            .field("interval", &self.inner.interval)
            .finish_non_exhaustive()
    }
}

impl SamplerHandle {
    /// Wraps a sampler; stored snapshots get ids from `next_id` upwards.
    pub fn new(sampler: Sampler, writer: WriterHandle, next_id: i64, interval: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                gpu_health: Mutex::new(GpuHealth::default()),
                sampler: Mutex::new(sampler),
                latest: Mutex::new(None),
                next_id: AtomicI64::new(next_id),
                last_sample_ns: AtomicU64::new(0),
                writer,
                interval,
                active_interval: interval,
                last_activity_ms: AtomicU64::new(0),
                open_runs: AtomicUsize::new(0),
                active: AtomicBool::new(false),
                wake: Wake::default(),
                sample_now: AtomicBool::new(false),
                epoch: Instant::now(),
            }),
        }
    }

    /// Samples every `active` (capped at the idle interval) while runs are open or data
    /// arrived within [`ACTIVE_HOLD`]. Call before the handle is cloned.
    ///
    /// Only what changes fast is read at the active interval: the slow figures (load, GPU
    /// temperature, power and clocks, the cgroup's page cache, process CPU time) keep the
    /// idle cadence. They serve for half an active interval less than the idle interval,
    /// so an idle sample, however late its timer, always reads them again.
    #[must_use]
    pub fn with_active_interval(mut self, active: Duration) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.active_interval = active.min(inner.interval).max(Duration::from_millis(1));
            let slow_every = inner.interval.saturating_sub(inner.active_interval / 2);
            lock(&inner.sampler).set_slow_every(slow_every);
        }
        self
    }

    /// The interval while work is in flight.
    pub fn active_interval(&self) -> Duration {
        self.inner.active_interval
    }

    /// How far from a row's own time its sample may be: twice the idle interval. While the
    /// sidecar runs, no instant is more than one interval (and the sampler's lateness) past
    /// the previous sample, so a boundary recorded just before the next sample still gets
    /// the previous one and then moves to the next when that is stored (a row left without
    /// a sample is never matched later).
    pub fn match_window(&self) -> Duration {
        self.inner.interval * MATCH_WINDOW_INTERVALS
    }

    /// Something arrived: sample at the active interval for a while.
    pub fn note_activity(&self) {
        let ms = u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.inner.last_activity_ms.store(ms, Ordering::Relaxed);
        self.wake_if_idle();
    }

    /// The number of runs open now: while any is, sampling stays at the active interval.
    pub fn set_open_runs(&self, open: usize) {
        self.inner.open_runs.store(open, Ordering::Relaxed);
        if open > 0 {
            self.wake_if_idle();
        }
    }

    fn wake_if_idle(&self) {
        if !self.inner.active.load(Ordering::Relaxed)
            && self.inner.active_interval < self.inner.interval
        {
            self.inner.wake.notify(false);
        }
    }

    /// Whether work is in flight: runs open, or data arrived within [`ACTIVE_HOLD`].
    fn work_in_flight(&self) -> bool {
        if self.inner.open_runs.load(Ordering::Relaxed) > 0 {
            return true;
        }
        let last = self.inner.last_activity_ms.load(Ordering::Relaxed);
        let now = u64::try_from(self.inner.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        last > 0 && now.saturating_sub(last) < ACTIVE_HOLD.as_millis() as u64
    }

    /// Records this agent process (and its descendants) in every later sample, from a
    /// periodic sample taken at once: its figures are known from its first message on.
    pub async fn watch_process(&self, pid: u32) {
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || lock(&inner.sampler).watch_process(pid)).await;
        self.inner.sample_now.store(true, Ordering::Relaxed);
        self.inner.wake.notify(false);
    }

    /// The latest stored sample, if any (what a metrics scrape reads: it never samples).
    pub fn latest(&self) -> Option<Arc<StoredSnapshot>> {
        lock(&self.inner.latest).clone()
    }

    /// The background sampling interval.
    pub fn interval(&self) -> Duration {
        self.inner.interval
    }

    /// Samples now without storing (for `GetSnapshot` / `WatchSnapshots`).
    pub async fn sample_unstored(&self) -> Result<Snapshot, SampleError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || sample_now(&inner))
            .await
            .map_err(|e| SampleError::Sampler(e.to_string()))
    }

    /// How long the latest sample took (`runlens_sample_duration_seconds`).
    pub fn last_sample_duration(&self) -> Duration {
        Duration::from_nanos(self.inner.last_sample_ns.load(Ordering::Relaxed))
    }

    /// Samples now, queues the snapshot for storage and makes it the latest.
    ///
    /// The snapshot is queued to the writer before this returns, so any row that refers
    /// to it is written in the same or a later transaction.
    pub async fn fresh(&self, reason: Reason) -> Result<Arc<StoredSnapshot>, SampleError> {
        // The periodic sample is never skipped; requests share one taken in the last few
        // milliseconds.
        if reason != Reason::Interval {
            let latest = lock(&self.inner.latest).clone();
            if let Some(shared) = latest.filter(|l| l.taken.elapsed() <= FRESH_SHARE_WINDOW) {
                return Ok(shared);
            }
        }
        let snapshot = self.sample_unstored().await?;
        let (stored, ops) = self.stamp(snapshot, reason);
        for op in ops {
            self.inner
                .writer
                .send(op, Ack::None)
                .await
                .map_err(|_| SampleError::WriterClosed)?;
        }
        self.publish(&stored);
        Ok(stored)
    }

    /// The background thread's sample: taken, published, and held for the writer's next
    /// batch (`WriterHandle::hold_background`): while agents send frames, samples ride in
    /// their transactions without a wake-up of the writer of their own.
    fn store_periodic(&self) -> Result<(), SampleError> {
        let snapshot = sample_now(&self.inner);
        let (stored, ops) = self.stamp(snapshot, Reason::Interval);
        self.inner
            .writer
            .hold_background(ops)
            .map_err(|_| SampleError::WriterClosed)?;
        self.publish(&stored);
        Ok(())
    }

    /// Gives a sample its id and reason, and the write operations that store it: the
    /// snapshot, then any GPU health events it raised (which refer to it).
    fn stamp(&self, snapshot: Snapshot, reason: Reason) -> (Arc<StoredSnapshot>, Vec<WriteOp>) {
        let stored = Arc::new(StoredSnapshot {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            reason: reason.as_str(),
            snapshot,
            taken: Instant::now(),
        });
        let events = lock(&self.inner.gpu_health).update(&stored.snapshot);
        let mut ops = Vec::with_capacity(1 + events.len());
        ops.push(WriteOp::Snapshot(stored.clone()));
        ops.extend(events.into_iter().map(|mut event| {
            event.snapshot = SampleRef::Taken(stored.id);
            WriteOp::Record(event)
        }));
        (stored, ops)
    }

    /// Makes a queued sample the latest, unless a newer one already is.
    fn publish(&self, stored: &Arc<StoredSnapshot>) {
        let mut latest = lock(&self.inner.latest);
        if latest.as_ref().is_none_or(|l| l.taken <= stored.taken) {
            *latest = Some(stored.clone());
        }
    }

    /// The latest snapshot if it is younger than the interval, else a fresh one.
    pub async fn current(&self) -> Result<Arc<StoredSnapshot>, SampleError> {
        let latest = lock(&self.inner.latest).clone();
        match latest {
            Some(s) if s.taken.elapsed() <= self.inner.interval => Ok(s),
            _ => self.fresh(Reason::Stale).await,
        }
    }

    /// Starts the background thread: it samples at once, then every active interval while
    /// work is in flight and every idle interval otherwise, until stopped. Work that starts
    /// during an idle wait wakes it: if the last sample is older than the active interval,
    /// one is taken then.
    pub fn start_interval_sampling(&self) -> std::io::Result<IntervalSampling> {
        let handle = self.clone();
        let thread = std::thread::Builder::new()
            .name("runlens-sampler".into())
            .spawn(move || handle.run_interval_sampling())?;
        Ok(IntervalSampling {
            handle: self.clone(),
            thread: Some(thread),
        })
    }

    fn run_interval_sampling(&self) {
        let mut last: Option<Instant> = None;
        while !self.inner.wake.stopping() {
            let active = self.work_in_flight();
            self.inner.active.store(active, Ordering::Relaxed);
            let every = if active {
                self.inner.active_interval
            } else {
                self.inner.interval
            };
            let due = match last {
                Some(at) if !self.inner.sample_now.swap(false, Ordering::Relaxed) => at + every,
                _ => Instant::now(),
            };
            // Samples held for the writer must not wait past their linger for the next one.
            if self.inner.writer.release_held(due).is_err() {
                return;
            }
            if self.inner.wake.wait_until(due) {
                last = Some(Instant::now());
                if let Err(error) = self.store_periodic() {
                    tracing::warn!(%error, "interval sample not stored");
                }
            }
        }
    }
}

/// Takes a sample now, timing it (`runlens_sample_duration_seconds`). Blocking.
fn sample_now(inner: &Inner) -> Snapshot {
    let mut sampler = lock(&inner.sampler);
    let start = Instant::now();
    let snapshot = sampler.sample();
    let took = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    inner.last_sample_ns.store(took, Ordering::Relaxed);
    snapshot
}

/// Locks a mutex, recovering from poisoning: the guarded data (a sampler, an `Arc`) stays
/// valid even if a holder panicked.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use probe_core::{GpuDevice, GpuSnapshot, HostSnapshot};

    fn snapshot(available: bool, states: &[GpuState]) -> Snapshot {
        Snapshot {
            taken_at_ns: 1,
            host: HostSnapshot {
                cpu_load_1m: None,
                cpu_load_5m: None,
                cpu_load_15m: None,
                cpu_count: 1,
                cpu_utilization_ratio: None,
                cpu_core_utilization_ratio: vec![],
                ram_total_bytes: 1,
                ram_used_bytes: 1,
                ram_available_bytes: 0,
                swap_total_bytes: 0,
                swap_used_bytes: 0,
            },
            gpu: if available {
                GpuSnapshot {
                    available: true,
                    unavailable_reason: None,
                    devices: states
                        .iter()
                        .enumerate()
                        .map(|(i, s)| GpuDevice::bare(i as u32, *s))
                        .collect(),
                }
            } else {
                GpuSnapshot::unavailable("driver gone")
            },
            cgroup: None,
            processes: vec![],
        }
    }

    fn names(events: Vec<EventRow>) -> Vec<String> {
        events.into_iter().map(|e| e.name).collect()
    }

    #[test]
    fn lost_and_recovered_gpus_and_a_vanishing_driver_become_events() {
        use GpuState::{Lost, Ok};
        let mut h = GpuHealth::default();
        assert!(
            h.update(&snapshot(true, &[Ok, Ok])).is_empty(),
            "first sample: baseline"
        );
        assert!(h.update(&snapshot(true, &[Ok, Ok])).is_empty());
        let lost = h.update(&snapshot(true, &[Ok, Lost]));
        assert_eq!(
            lost[0].attributes.as_deref(),
            Some(r#"{"gpu_index":1,"uuid":null}"#)
        );
        assert_eq!(names(lost), vec!["gpu.lost"]);
        assert!(
            h.update(&snapshot(true, &[Ok, Lost])).is_empty(),
            "said once"
        );
        assert_eq!(
            names(h.update(&snapshot(true, &[Ok, Ok]))),
            vec!["gpu.recovered"]
        );
        assert_eq!(
            names(h.update(&snapshot(false, &[]))),
            vec!["gpu.unavailable"]
        );
        assert!(h.update(&snapshot(false, &[])).is_empty());
        assert_eq!(
            names(h.update(&snapshot(true, &[Ok, Ok]))),
            vec!["gpu.available"]
        );
        let mut fresh = GpuHealth::default();
        assert_eq!(
            names(fresh.update(&snapshot(true, &[Lost]))),
            vec!["gpu.lost"]
        );
    }

    #[tokio::test]
    async fn a_fresh_sample_serves_requests_of_the_next_milliseconds_but_not_the_periodic_one() {
        let dir = tempfile::tempdir().unwrap();
        let conn = crate::store::open_for_writing(&dir.path().join("s.db"), false, None).unwrap();
        let writer = crate::store::Writer::start(conn, None, false, None).unwrap();
        let sampler = probe_core::Sampler::new(
            probe_core::HostProbe::new().unwrap(),
            Box::new(probe_core::NoGpu::new("test")),
        );
        let handle = SamplerHandle::new(sampler, writer.handle(), 1, Duration::from_secs(60));
        let start = handle.fresh(Reason::Fresh).await.unwrap();
        let llm = handle.fresh(Reason::Fresh).await.unwrap();
        assert_eq!(llm.id, start.id, "shared within {FRESH_SHARE_WINDOW:?}");
        let end = handle.fresh(Reason::Interval).await.unwrap();
        assert_ne!(end.id, start.id, "the periodic sample is never skipped");
        tokio::time::sleep(FRESH_SHARE_WINDOW * 2).await;
        let later = handle.fresh(Reason::Fresh).await.unwrap();
        assert_ne!(later.id, end.id, "older than the window: a new sample");
        writer.close().await;
    }
}
