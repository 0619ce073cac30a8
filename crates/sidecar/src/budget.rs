//! A byte budget for what the front doors hold in flight, so that a burst of large, valid
//! requests cannot take the sidecar past its pod's memory limit (and the agent's pod with
//! it when the kernel kills it).
//!
//! A request is charged before its body is read (OTLP/HTTP: `Content-Length`; OTLP/gRPC: the
//! length prefix of its message) and holds its charge until its rows are committed. The
//! charge is the bytes on the wire times [`AMPLIFICATION`]: a request lives in memory
//! several times on its way (the body, the decoded message, the converted rows, the
//! statement's copies). Over the budget, OTLP answers 503 with `Retry-After` or
//! `UNAVAILABLE` (both retryable by the OTLP specification: the sender keeps the data and
//! tries again), and a runlens.v1 session waits before it reads its next frame
//! (backpressure through HTTP/2 flow control). A request bigger than the whole budget is
//! charged the whole budget, so that it passes alone.
//!
//! After a burst, freed memory is handed back to the system ([`trim_after_bursts`]):
//! glibc's allocator keeps what it freed for reuse, which left the sidecar's RSS where the
//! burst took it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Memory a request takes for each byte it has on the wire (measured: a 14.4 MiB OTLP
/// export of 10 kB attributes peaked at about this many times its size).
pub const AMPLIFICATION: usize = 4;

/// The byte budget shared by every front door; cheap to clone.
#[derive(Clone, Debug)]
pub struct Budget {
    permits: Arc<Semaphore>,
    total: usize,
    /// Bytes charged since memory was last handed back.
    charged_since_trim: Arc<AtomicUsize>,
    /// Told when the bytes charged since the last hand-back reach [`TRIM_AFTER`].
    burst: Arc<Notify>,
}

/// A charge held against the budget; given back when dropped.
#[derive(Debug)]
pub struct Held {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Budget {
    /// A budget of `bytes` (at least 1 MiB, at most 4 GiB).
    pub fn new(bytes: usize) -> Self {
        let total = bytes.clamp(1 << 20, u32::MAX as usize);
        Self {
            permits: Arc::new(Semaphore::new(total)),
            total,
            charged_since_trim: Arc::default(),
            burst: Arc::default(),
        }
    }

    /// The whole budget, bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes charged now.
    pub fn in_flight(&self) -> usize {
        self.total - self.permits.available_permits().min(self.total)
    }

    /// What a request of `wire_bytes` is charged.
    pub fn charge_for(&self, wire_bytes: usize) -> usize {
        wire_bytes
            .saturating_mul(AMPLIFICATION)
            .clamp(1, self.total)
    }

    /// Charges a request of `wire_bytes` now, or `None` when the budget has no room.
    pub fn try_hold(&self, wire_bytes: usize) -> Option<Held> {
        let charge = self.charge_for(wire_bytes);
        let permit = Arc::clone(&self.permits)
            .try_acquire_many_owned(u32::try_from(charge).unwrap_or(u32::MAX))
            .ok()?;
        self.note_charged(charge);
        Some(Held {
            _permit: Some(permit),
        })
    }

    /// Charges a request of `wire_bytes`, waiting until the budget has room.
    pub async fn hold(&self, wire_bytes: usize) -> Held {
        let charge = self.charge_for(wire_bytes);
        let permit = Arc::clone(&self.permits)
            .acquire_many_owned(u32::try_from(charge).unwrap_or(u32::MAX))
            .await
            .ok(); // never closed
        self.note_charged(charge);
        Held { _permit: permit }
    }

    /// Counts a charge towards the next hand-back; the one that makes a burst of it wakes
    /// [`trim_after_bursts`].
    fn note_charged(&self, charge: usize) {
        let before = self.charged_since_trim.fetch_add(charge, Ordering::Relaxed);
        if before < TRIM_AFTER && before.saturating_add(charge) >= TRIM_AFTER {
            self.burst.notify_one();
        }
    }
}

/// Bytes charged between two hand-backs before one is worth its cost.
const TRIM_AFTER: usize = 16 << 20;

/// Hands freed memory back to the system once a burst is over: on the first second with
/// nothing in flight after at least [`TRIM_AFTER`] bytes were charged, and once more
/// [`SETTLE`] later (the writer frees a batch's rows after it has answered for them). The
/// writer's page cache goes first (it fills during a burst of large rows and refills from
/// disk as it is used). Runs until `shutdown` says so.
pub async fn trim_after_bursts(
    budget: Budget,
    writer: crate::store::WriterHandle,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut settle_at: Option<tokio::time::Instant> = None;
    loop {
        // Until a burst's worth is charged there is nothing to hand back: no timer runs (a
        // one-second tick was two of the sidecar's wake-ups a second, idle or not).
        let burst = budget.charged_since_trim.load(Ordering::Relaxed) >= TRIM_AFTER;
        if !burst && settle_at.is_none() {
            tokio::select! {
                () = budget.burst.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => return,
        }
        if budget.in_flight() != 0 {
            continue;
        }
        let burst = budget.charged_since_trim.load(Ordering::Relaxed) >= TRIM_AFTER;
        let settling = settle_at.is_some_and(|at| tokio::time::Instant::now() >= at);
        if burst || settling {
            budget.charged_since_trim.store(0, Ordering::Relaxed);
            settle_at = burst.then(|| tokio::time::Instant::now() + SETTLE);
            if burst {
                let release = crate::store::WriteOp::ReleaseMemory;
                let _ = writer.send(release, crate::store::Ack::None).await;
            }
            let _ = tokio::task::spawn_blocking(probe_core::hand_back_free_memory).await;
        }
    }
}

/// How long after a hand-back the next one follows, once what was in flight is freed.
const SETTLE: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_held_until_dropped_and_capped_at_the_whole_budget() {
        let budget = Budget::new(64 << 20);
        assert_eq!(budget.charge_for(1 << 20), 4 << 20);
        assert_eq!(
            budget.charge_for(100 << 20),
            64 << 20,
            "alone, a huge one passes"
        );
        let first = budget.try_hold(10 << 20).expect("room");
        assert_eq!(budget.in_flight(), 40 << 20);
        assert!(budget.try_hold(10 << 20).is_none(), "40 + 40 > 64");
        let small = budget.try_hold(1 << 20).expect("40 + 4 fits");
        drop(first);
        assert_eq!(budget.in_flight(), 4 << 20);
        drop(small);
        assert_eq!(budget.in_flight(), 0);
    }

    #[tokio::test]
    async fn only_the_charge_that_completes_a_burst_wakes_the_hand_back() {
        let budget = Budget::new(64 << 20);
        let woken = |b: &Budget| {
            let burst = b.burst.clone();
            async move {
                tokio::time::timeout(Duration::from_millis(10), burst.notified())
                    .await
                    .is_ok()
            }
        };
        drop(budget.try_hold(1 << 20));
        assert!(!woken(&budget).await, "4 MiB is no burst: nothing to wake");
        drop(budget.try_hold(3 << 20));
        assert!(
            woken(&budget).await,
            "16 MiB charged since the last hand-back"
        );
        drop(budget.try_hold(1 << 20));
        assert!(!woken(&budget).await, "said once");
    }

    #[tokio::test]
    async fn a_waiting_hold_goes_on_once_room_is_given_back() {
        let budget = Budget::new(8 << 20);
        let first = budget.try_hold(2 << 20).unwrap();
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.hold(1 << 20).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "no room while the first is held");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("went on")
            .unwrap();
        assert_eq!(budget.in_flight(), 4 << 20);
        drop(second);
    }
}
