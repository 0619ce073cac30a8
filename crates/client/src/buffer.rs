//! The bounded buffer between the recording calls and the background stream.
//!
//! Every message gets the next sequence number when it is recorded. It waits in
//! `pending` until the stream takes it, then in `inflight` (sent, not yet acknowledged)
//! until the sidecar's acknowledgement covers its number. On reconnect, `inflight` goes
//! back to the front of `pending` and is sent again; the sidecar skips what it already
//! committed.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use prost::Message as _;
use runlens_api::pb;
use tokio::sync::{Notify, watch};

/// What recording does when the buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullPolicy {
    /// Drop the new message and count it (the default: the agent never waits).
    DropNewest,
    /// Block the recording call until there is room, for at most this long; then drop and
    /// count. Use only where blocking the calling thread is acceptable.
    Block(Duration),
}

/// Most messages in one frame: a full frame is sent without waiting for the linger.
///
/// Each frame is one transaction in the sidecar, and a commit's cost (WAL pages, the
/// writer's wake-up) barely grows with its rows: at 400 spans/s an agent records about
/// 530 messages a 500 ms linger, and 512 cut every linger's messages into two frames and
/// two commits (`runlens bench agent`: sidecar 27.5 → 21.8 µs CPU per span with 2,048).
pub const FRAME_MESSAGES: usize = 2048;

/// Most encoded bytes in one frame (a frame holds at least one message, whatever its size):
/// a quarter of the sidecar's default largest message (`--max-message-mib 16`), so that
/// 2,048 messages with large attributes are not refused whole.
pub const FRAME_BYTES: usize = 4 << 20;

/// Limits of the buffer, and how long messages linger before they are sent.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most messages kept while unacknowledged.
    pub messages: usize,
    /// Most encoded bytes kept while unacknowledged.
    pub bytes: usize,
    /// What happens when either limit is reached.
    pub policy: FullPolicy,
    /// How long the first of a group of messages waits for others before they are sent
    /// together, unless a frame fills, a message asks for a fresh sample, or the client
    /// flushes or closes (zero: each is sent as soon as the stream can take it).
    pub linger: Duration,
}

/// Buffer contents, under one lock.
struct Queues {
    next_seq: u64,
    pending: VecDeque<pb::ClientMessage>,
    inflight: VecDeque<pb::ClientMessage>,
    /// Encoded size of everything in `pending` and `inflight`.
    bytes: usize,
    /// Since when `pending` has held messages (`None` while it is empty): it is due to be
    /// sent a linger after that.
    pending_since: Option<Instant>,
    /// Messages up to this number are due at once (a flush, a fresh-sample request).
    urgent_seq: u64,
    /// Whether the background task will look at `pending` within a linger on its own (it
    /// ticks while messages keep coming): a first message then needs no wake-up.
    ticking: bool,
}

/// State shared by the recording handles and the background task.
pub struct Shared {
    queues: Mutex<Queues>,
    /// Signalled when acknowledgements free room (for `FullPolicy::Block`).
    room: Condvar,
    limits: Limits,
    /// Wakes the background task when a message is recorded or the client closes.
    pub wake: Notify,
    /// Highest sequence number the sidecar acknowledged.
    pub acked: watch::Sender<u64>,
    dropped: AtomicU64,
    /// The dropped count last reported to the sidecar.
    dropped_reported: AtomicU64,
    rejected: AtomicU64,
    closed: AtomicBool,
    /// Why the last connection attempt or session failed; `None` while connected.
    last_error: Mutex<Option<String>>,
}

impl Shared {
    /// An empty buffer within `limits`.
    pub fn new(limits: Limits) -> Self {
        Self {
            queues: Mutex::new(Queues {
                next_seq: 1,
                pending: VecDeque::new(),
                inflight: VecDeque::new(),
                bytes: 0,
                pending_since: None,
                urgent_seq: 0,
                ticking: false,
            }),
            room: Condvar::new(),
            limits: Limits {
                messages: limits.messages.max(1),
                bytes: limits.bytes.max(1),
                policy: limits.policy,
                linger: limits.linger,
            },
            wake: Notify::new(),
            acked: watch::channel(0).0,
            dropped: AtomicU64::new(0),
            dropped_reported: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            last_error: Mutex::new(None),
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

    fn full(&self, q: &Queues, size: usize) -> bool {
        q.pending.len() + q.inflight.len() >= self.limits.messages
            || q.bytes + size > self.limits.bytes
    }

    /// Records one message; when the buffer is full the policy decides: drop it (counted),
    /// or wait for room up to a timeout (then drop it, counted). It is sent after the
    /// linger, with whatever else is recorded meanwhile; a message that asks for a fresh
    /// sample goes at once (a sample means something only if taken then), with everything
    /// recorded before it.
    pub fn push(&self, body: pb::client_message::Body) {
        use pb::client_message::Body;
        let urgent = match &body {
            Body::StartSpan(s) => s.fresh_snapshot,
            Body::EndSpan(e) => e.fresh_snapshot,
            _ => false,
        };
        let mut msg = pb::ClientMessage {
            seq: 0,
            body: Some(body),
        };
        let size = msg.encoded_len();
        {
            let mut q = self.lock();
            if self.full(&q, size) {
                let FullPolicy::Block(timeout) = self.limits.policy else {
                    drop(q);
                    self.note_dropped();
                    return;
                };
                let deadline = Instant::now() + timeout;
                while self.full(&q, size) {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        drop(q);
                        self.note_dropped();
                        return;
                    }
                    q = self
                        .room
                        .wait_timeout(q, left)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
            }
            msg.seq = q.next_seq;
            q.next_seq += 1;
            q.bytes += size;
            if urgent {
                q.urgent_seq = msg.seq;
            }
            q.pending.push_back(msg);
            // The background task sleeps through a linger: wake it only when there is
            // something new to decide (a first message starts the linger unless the task
            // ticks already; a full frame or an urgent one ends it). Each wake-up costs
            // both threads a context switch.
            let first = q.pending_since.is_none();
            q.pending_since.get_or_insert_with(Instant::now);
            let wake = self.limits.linger.is_zero()
                || (first && !q.ticking)
                || urgent
                || q.pending.len() >= FRAME_MESSAGES;
            if !wake {
                return;
            }
        }
        self.wake.notify_one();
    }

    /// Makes everything recorded so far due at once (a flush).
    pub fn hurry(&self) {
        {
            let mut q = self.lock();
            q.urgent_seq = q.next_seq - 1;
        }
        self.wake.notify_one();
    }

    /// When the pending messages are due to be sent: `None` when there are none, a time
    /// not after now when they are due already (a frame is full, one is urgent, the client
    /// is closing, or the linger is over).
    pub fn send_due(&self) -> Option<Instant> {
        let q = self.lock();
        let since = q.pending_since?;
        let first_seq = q.pending.front().map_or(0, |m| m.seq);
        if self.is_closed() || q.pending.len() >= FRAME_MESSAGES || first_seq <= q.urgent_seq {
            return Some(since);
        }
        Some(since + self.limits.linger)
    }

    /// Counts a dropped message and wakes the stream so the count reaches the sidecar.
    fn note_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Queues a control message (client stats) outside the limits: it is tiny and says
    /// how much else was lost.
    pub fn push_control(&self, body: pb::client_message::Body) {
        {
            let mut q = self.lock();
            let seq = q.next_seq;
            q.next_seq += 1;
            q.pending.push_back(pb::ClientMessage {
                seq,
                body: Some(body),
            });
            q.pending_since.get_or_insert_with(Instant::now);
            q.urgent_seq = seq;
        }
        self.wake.notify_one();
    }

    /// The dropped count, if it changed since it was last reported to the sidecar.
    pub fn dropped_to_report(&self) -> Option<u64> {
        let dropped = self.dropped.load(Ordering::Relaxed);
        let reported = self.dropped_reported.swap(dropped, Ordering::Relaxed);
        (dropped > reported).then_some(dropped)
    }

    /// The sequence number of the last message recorded (0 if none).
    pub fn last_seq(&self) -> u64 {
        self.lock().next_seq - 1
    }

    /// How long messages linger before they are sent.
    pub fn linger(&self) -> Duration {
        self.limits.linger
    }

    /// The background task will look at the buffer within a linger without being woken.
    pub fn start_ticking(&self) {
        self.lock().ticking = true;
    }

    /// At a tick that found nothing to send: stops ticking, so that the next message
    /// wakes the background task, and returns true; false (ticking on) if something is
    /// pending after all. Decided under the buffer's lock, so no message is left unseen.
    pub fn stop_ticking_if_idle(&self) -> bool {
        let mut q = self.lock();
        let idle = q.pending.is_empty();
        if idle {
            q.ticking = false;
        }
        idle
    }

    /// Stops ticking (a new session starts idle).
    pub fn stop_ticking(&self) {
        self.lock().ticking = false;
    }

    /// How many messages wait to be sent.
    pub fn pending_len(&self) -> usize {
        self.lock().pending.len()
    }

    /// Takes up to `max` messages to send, and no more than [`FRAME_BYTES`] of them unless
    /// the first alone is larger, encoded as one frame (one message as itself, several as
    /// a `MessageBatch`). The messages move to the in-flight queue until they are
    /// acknowledged: encoded here, nothing is copied.
    pub fn take_frame(&self, max: usize) -> Option<bytes::Bytes> {
        let mut q = self.lock();
        // Everything buffered (sent or not) fits in a frame, the common case: no need to
        // size the messages one by one.
        let mut n = q.pending.len().min(max);
        if q.bytes > FRAME_BYTES {
            n = 0;
            let mut bytes = 0;
            for m in q.pending.iter().take(max) {
                bytes += m.encoded_len();
                if n > 0 && bytes > FRAME_BYTES {
                    break;
                }
                n += 1;
            }
        }
        let frame = match n {
            0 => return None,
            1 => {
                let msg = q.pending.pop_front()?;
                let bytes = msg.encode_to_vec();
                q.inflight.push_back(msg);
                bytes
            }
            _ => {
                let batch = pb::ClientMessage {
                    seq: 0,
                    body: Some(pb::client_message::Body::Batch(pb::MessageBatch {
                        messages: q.pending.drain(..n).collect(),
                    })),
                };
                let bytes = batch.encode_to_vec();
                if let Some(pb::client_message::Body::Batch(b)) = batch.body {
                    q.inflight.extend(b.messages);
                }
                bytes
            }
        };
        if q.pending.is_empty() {
            q.pending_since = None;
        }
        Some(frame.into())
    }

    /// Takes the next message to send, keeping a copy until it is acknowledged.
    #[cfg(test)]
    pub fn take_next(&self) -> Option<pb::ClientMessage> {
        let mut q = self.lock();
        let msg = q.pending.pop_front()?;
        q.inflight.push_back(msg.clone());
        if q.pending.is_empty() {
            q.pending_since = None;
        }
        Some(msg)
    }

    /// Forgets everything up to `seq`, which the sidecar has committed.
    pub fn acknowledge(&self, seq: u64) {
        {
            let mut q = self.lock();
            let mut freed = 0;
            while q.inflight.front().is_some_and(|m| m.seq <= seq) {
                freed += q.inflight.pop_front().map_or(0, |m| m.encoded_len());
            }
            // A welcome after reconnect can cover messages not yet re-sent.
            while q.inflight.is_empty() && q.pending.front().is_some_and(|m| m.seq <= seq) {
                freed += q.pending.pop_front().map_or(0, |m| m.encoded_len());
            }
            if q.pending.is_empty() {
                q.pending_since = None;
            }
            // Control messages were never counted: never go below zero.
            q.bytes = q.bytes.saturating_sub(freed);
        }
        self.room.notify_all();
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
        // A resend after a reconnect goes at once: it waited long enough.
        if let Some(last) = q.pending.back().map(|m| m.seq) {
            q.urgent_seq = q.urgent_seq.max(last);
            q.pending_since.get_or_insert_with(Instant::now);
        }
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

    /// Records why the connection is down (`None` once a session is up again).
    pub fn set_last_error(&self, error: Option<String>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = error;
    }

    /// Why the last connection attempt failed; `None` while a session is up.
    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
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

    /// Takes a frame as the stream would, checks that its bytes decode to the messages it
    /// says it carries (in sequence), and says how many.
    fn taken(s: &Shared) -> usize {
        let Some(frame) = s.take_frame(FRAME_MESSAGES) else {
            return 0;
        };
        let decoded = pb::ClientMessage::decode(frame).expect("a frame decodes");
        let seqs: Vec<u64> = match decoded.body {
            Some(Body::Batch(b)) => b.messages.iter().map(|m| m.seq).collect(),
            Some(_) => vec![decoded.seq],
            None => vec![],
        };
        assert!(!seqs.is_empty(), "a frame carries messages");
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
        seqs.len()
    }

    fn limits(messages: usize) -> Limits {
        Limits {
            messages,
            bytes: usize::MAX,
            policy: FullPolicy::DropNewest,
            linger: Duration::ZERO,
        }
    }

    fn lingering(linger: Duration) -> Shared {
        Shared::new(Limits {
            linger,
            ..limits(10_000)
        })
    }

    #[test]
    fn messages_linger_until_the_first_has_waited_the_linger() {
        let s = lingering(Duration::from_millis(50));
        assert_eq!(s.send_due(), None, "nothing pending");
        let before = Instant::now();
        s.push(event());
        s.push(event());
        let due = s.send_due().unwrap();
        assert!(due >= before + Duration::from_millis(50), "{due:?}");
        assert!(due <= Instant::now() + Duration::from_millis(50));
        assert_eq!(taken(&s), 2);
        assert_eq!(
            s.send_due(),
            None,
            "taken: the next message starts a new linger"
        );
    }

    #[tokio::test]
    async fn a_ticking_stream_is_woken_by_the_first_message_only_after_an_idle_tick() {
        // Whether the background task would wake: a stored permit is taken at once.
        async fn woken(s: &Shared) -> bool {
            tokio::time::timeout(Duration::from_millis(1), s.wake.notified())
                .await
                .is_ok()
        }
        let s = lingering(Duration::from_millis(500));
        s.push(event());
        assert!(woken(&s).await, "a first message starts the linger");
        taken(&s);
        s.start_ticking();
        s.push(event());
        assert!(
            !woken(&s).await,
            "the task looks within a linger on its own: no wake-up"
        );
        assert!(
            !s.stop_ticking_if_idle(),
            "a tick that finds messages ticks on"
        );
        taken(&s);
        assert!(s.stop_ticking_if_idle(), "a tick that finds nothing stops");
        s.push(event());
        assert!(woken(&s).await, "so the next message wakes the task");
    }

    #[test]
    fn a_fresh_request_a_flush_a_full_frame_and_closing_end_the_linger() {
        let due_now = |s: &Shared| s.send_due().is_some_and(|at| at <= Instant::now());
        let s = lingering(Duration::from_secs(3600));
        s.push(event());
        assert!(!due_now(&s));
        s.push(Body::StartSpan(pb::StartSpanRequest {
            fresh_snapshot: true,
            ..Default::default()
        }));
        assert!(
            due_now(&s),
            "a fresh sample means something only if taken now"
        );
        assert_eq!(taken(&s), 2, "with what came before");

        s.push(event());
        assert!(!due_now(&s));
        s.hurry();
        assert!(due_now(&s), "flush");
        taken(&s);

        for _ in 0..FRAME_MESSAGES {
            s.push(event());
        }
        assert!(due_now(&s), "a full frame");
        taken(&s);

        s.push(event());
        s.close();
        assert!(due_now(&s), "closing");
    }

    #[test]
    fn a_frame_of_large_messages_stops_at_its_byte_bound() {
        let s = lingering(Duration::from_secs(3600));
        let large = |kib: usize| {
            Body::Event(pb::Event {
                name: "x".repeat(kib << 10),
                ..Default::default()
            })
        };
        // 1 MiB each: four fit under the bound with their framing, the fifth does not.
        for _ in 0..6 {
            s.push(large(1000));
        }
        assert_eq!(taken(&s), 4);
        assert_eq!(taken(&s), 2);
        // A message larger than the bound still travels, alone.
        s.push(large(5000));
        s.push(event());
        assert_eq!(taken(&s), 1);
        assert_eq!(taken(&s), 1);
        assert_eq!(
            s.unacknowledged(),
            8,
            "every message kept until acknowledged"
        );
    }

    #[test]
    fn a_resend_after_a_reconnect_is_due_at_once() {
        let s = lingering(Duration::from_secs(3600));
        s.push(event());
        s.hurry();
        taken(&s);
        s.requeue_inflight();
        assert!(s.send_due().is_some_and(|at| at <= Instant::now()));
    }

    #[test]
    fn full_buffer_drops_and_counts() {
        let s = Shared::new(limits(2));
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
        let s = Shared::new(limits(10));
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
        let s = Shared::new(limits(10));
        for _ in 0..3 {
            s.push(event());
        }
        s.acknowledge(2);
        assert_eq!(s.take_next().unwrap().seq, 3);
    }

    #[test]
    fn the_byte_limit_counts_encoded_sizes() {
        let s = Shared::new(Limits {
            messages: 1000,
            bytes: 100,
            policy: FullPolicy::DropNewest,
            linger: Duration::ZERO,
        });
        let big = || {
            Body::Event(pb::Event {
                name: "x".repeat(60),
                ..Default::default()
            })
        };
        s.push(big());
        s.push(big());
        assert_eq!((s.last_seq(), s.dropped()), (1, 1));
        s.take_next();
        s.acknowledge(1);
        s.push(big());
        assert_eq!(s.last_seq(), 2, "acknowledged bytes are freed");
    }

    #[test]
    fn the_block_policy_waits_for_room_then_gives_up() {
        let s = std::sync::Arc::new(Shared::new(Limits {
            messages: 1,
            bytes: usize::MAX,
            policy: FullPolicy::Block(Duration::from_millis(300)),
            linger: Duration::ZERO,
        }));
        s.push(event());
        let started = Instant::now();
        s.push(event()); // nobody acknowledges: waits 300 ms, then drops
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert_eq!((s.last_seq(), s.dropped()), (1, 1));
        let acker = {
            let s = s.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                s.take_next();
                s.acknowledge(1);
            })
        };
        s.push(event()); // room appears after ~50 ms
        acker.join().unwrap();
        assert_eq!((s.last_seq(), s.dropped()), (2, 1));
    }

    #[test]
    fn drops_are_reported_once_per_change() {
        let s = Shared::new(limits(1));
        assert_eq!(s.dropped_to_report(), None);
        s.push(event());
        s.push(event());
        s.push(event());
        assert_eq!(s.dropped_to_report(), Some(2));
        assert_eq!(s.dropped_to_report(), None);
    }
}
