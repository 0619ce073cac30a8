//! The bounded buffer between the recording calls and the background stream.
//!
//! Every message gets the next sequence number when it is recorded. It waits in
//! `pending` until the stream takes it, then in `inflight` (sent, not yet acknowledged)
//! until the sidecar's acknowledgement covers its number. On reconnect, `inflight` goes
//! back to the front of `pending` and is sent again; the sidecar skips what it already
//! committed.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use runlens_api::pb;
use tokio::sync::{Notify, watch};

/// Buffer contents, under one lock.
struct Queues {
    next_seq: u64,
    pending: VecDeque<pb::ClientMessage>,
    inflight: VecDeque<pb::ClientMessage>,
}

/// State shared by the recording handles and the background task.
pub struct Shared {
    queues: Mutex<Queues>,
    capacity: usize,
    /// Wakes the background task when a message is recorded or the client closes.
    pub wake: Notify,
    /// Highest sequence number the sidecar acknowledged.
    pub acked: watch::Sender<u64>,
    dropped: AtomicU64,
    rejected: AtomicU64,
    closed: AtomicBool,
}

impl Shared {
    /// An empty buffer holding at most `capacity` unacknowledged messages.
    pub fn new(capacity: usize) -> Self {
        Self {
            queues: Mutex::new(Queues {
                next_seq: 1,
                pending: VecDeque::new(),
                inflight: VecDeque::new(),
            }),
            capacity: capacity.max(1),
            wake: Notify::new(),
            acked: watch::channel(0).0,
            dropped: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        // A panic while holding the lock leaves the queues consistent (each operation
        // is a single push or pop), so a poisoned lock is safe to keep using.
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records one message; when the buffer is full the message is dropped and counted.
    pub fn push(&self, body: pb::client_message::Body) {
        {
            let mut q = self.lock();
            if q.pending.len() + q.inflight.len() >= self.capacity {
                drop(q);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let seq = q.next_seq;
            q.next_seq += 1;
            q.pending.push_back(pb::ClientMessage {
                seq,
                body: Some(body),
            });
        }
        self.wake.notify_one();
    }

    /// The sequence number of the last message recorded (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.lock().next_seq - 1
    }

    /// True when some message waits to be sent.
    pub fn has_pending(&self) -> bool {
        !self.lock().pending.is_empty()
    }

    /// Takes the next message to send, keeping a copy until it is acknowledged.
    pub fn take_next(&self) -> Option<pb::ClientMessage> {
        let mut q = self.lock();
        let msg = q.pending.pop_front()?;
        q.inflight.push_back(msg.clone());
        Some(msg)
    }

    /// Forgets everything up to `seq`, which the sidecar has committed.
    pub fn acknowledge(&self, seq: u64) {
        {
            let mut q = self.lock();
            while q.inflight.front().is_some_and(|m| m.seq <= seq) {
                q.inflight.pop_front();
            }
            // A welcome after reconnect can cover messages not yet re-sent.
            while q.inflight.is_empty() && q.pending.front().is_some_and(|m| m.seq <= seq) {
                q.pending.pop_front();
            }
        }
        self.acked.send_if_modified(|a| {
            let advanced = seq > *a;
            if advanced {
                *a = seq;
            }
            advanced
        });
    }

    /// After a broken stream: everything sent but unacknowledged is sent again.
    pub fn requeue_inflight(&self) {
        let mut q = self.lock();
        let mut inflight = std::mem::take(&mut q.inflight);
        inflight.append(&mut q.pending);
        q.pending = inflight;
    }

    /// Messages not yet acknowledged.
    pub fn unacknowledged(&self) -> u64 {
        self.last_seq().saturating_sub(*self.acked.borrow())
    }

    /// Messages dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Counts a message the sidecar rejected.
    pub fn note_rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages the sidecar rejected as invalid.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    /// Asks the background task to finish once everything is acknowledged.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// True once [`Shared::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runlens_api::pb::client_message::Body;

    fn event() -> Body {
        Body::Event(pb::Event::default())
    }

    #[test]
    fn full_buffer_drops_and_counts() {
        let s = Shared::new(2);
        for _ in 0..5 {
            s.push(event());
        }
        assert_eq!(s.last_seq(), 2);
        assert_eq!(s.dropped(), 3);
        // Acknowledged messages free room again.
        s.take_next();
        s.acknowledge(1);
        s.push(event());
        assert_eq!(s.last_seq(), 3);
    }

    #[test]
    fn unacknowledged_messages_are_resent_in_order() {
        let s = Shared::new(10);
        for _ in 0..4 {
            s.push(event());
        }
        assert_eq!(s.take_next().unwrap().seq, 1);
        assert_eq!(s.take_next().unwrap().seq, 2);
        s.acknowledge(1);
        s.requeue_inflight();
        let order: Vec<u64> = std::iter::from_fn(|| s.take_next())
            .map(|m| m.seq)
            .collect();
        assert_eq!(order, vec![2, 3, 4]);
        assert_eq!(s.unacknowledged(), 3);
        s.acknowledge(4);
        assert_eq!(s.unacknowledged(), 0);
    }

    #[test]
    fn welcome_covering_unsent_messages_discards_them() {
        let s = Shared::new(10);
        for _ in 0..3 {
            s.push(event());
        }
        s.acknowledge(2);
        assert_eq!(s.take_next().unwrap().seq, 3);
    }
}
