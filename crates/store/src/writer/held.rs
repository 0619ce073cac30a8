//! Background samples held for the writer's next wake-up.
//!
//! Nobody waits on a periodic sample, and while agents work the writer wakes for their
//! frames anyway: a sample handed over through the channel woke the writer thread only to
//! hold it until the next frame (four wake-ups a second at the active interval, a quarter
//! of the writer's at 10 spans/s). Held here, samples join whatever batch the writer takes
//! next; the sampler wakes the writer itself only when it is about to sleep past the
//! oldest held sample's linger ([`Held::due_before`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Request;

/// Requests nobody waits on, with when each was held, and how long they may wait.
pub(super) struct Held {
    requests: Mutex<Vec<(Request, Instant)>>,
    /// How long held samples may wait for company, ns (`Writer::set_sample_linger`).
    pub(super) linger_ns: AtomicU64,
}

impl Held {
    pub(super) fn new(linger: Duration) -> Held {
        Held {
            requests: Mutex::new(Vec::new()),
            linger_ns: AtomicU64::new(u64::try_from(linger.as_nanos()).unwrap_or(u64::MAX)),
        }
    }

    pub(super) fn linger(&self) -> Duration {
        Duration::from_nanos(self.linger_ns.load(Ordering::Relaxed))
    }

    /// Holds `requests` for the writer's next batch.
    pub(super) fn hold(&self, requests: impl IntoIterator<Item = Request>) {
        let now = Instant::now();
        self.lock().extend(requests.into_iter().map(|r| (r, now)));
    }

    /// Whether the oldest held request's linger ends before `next_at`: if nothing else
    /// wakes the writer until then, it must be woken now.
    pub(super) fn due_before(&self, next_at: Instant) -> bool {
        self.lock()
            .first()
            .is_some_and(|(_, at)| *at + self.linger() < next_at)
    }

    /// Everything held, oldest first.
    pub(super) fn take(&self) -> Vec<(Request, Instant)> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Request, Instant)>> {
        // A holder that panicked left a valid vector behind.
        self.requests
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
