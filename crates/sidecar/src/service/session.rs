//! The bidirectional session stream: ordered, acknowledged ingest for high-volume clients.
//!
//! Messages are handled one at a time in sequence order. Each accepted message is queued
//! to the writer with its sequence number; each rejected one is answered with a
//! `SessionError` and a no-op is queued in its place, so acknowledgements stay in order.
//! The client sees `SessionAck { committed_seq }` advance as transactions commit.
//! A full writer queue makes this loop wait, which stops reading the stream: HTTP/2 flow
//! control then slows the client, and nothing is dropped.

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use runlens_api::pb;
use runlens_api::pb::client_message::Body;
use runlens_api::pb::server_message::Body as Out;
use tokio::sync::{mpsc, watch};
use tonic::{Status, Streaming};

use super::from_wire;
use crate::ingest::Ingest;
use crate::store::{Ack, SessionProgress, WriteOp, WriterHandle};

/// How long a closing session waits for its last acknowledgements.
const FINAL_ACK_WAIT: Duration = Duration::from_secs(10);

/// Everything one session needs.
pub struct Session {
    /// The client's id from hello.
    pub client_id: Arc<str>,
    /// The client's name from hello.
    pub client_name: String,
    /// The client's process id from hello.
    pub pid: u32,
    /// Highest sequence number handled so far (starts at what the database has).
    pub last_seq: u64,
    /// Accepts messages.
    pub ingest: Ingest,
    /// Queues rows.
    pub writer: WriterHandle,
    /// Where the writer publishes this client's progress.
    pub progress: Arc<watch::Sender<SessionProgress>>,
    /// Messages to the client.
    pub out: mpsc::Sender<Result<pb::ServerMessage, Status>>,
    /// Turns true when the sidecar is shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Held while the session runs, so shutdown can wait for it.
    pub _drain: Option<mpsc::Sender<()>>,
    /// Held while the session runs: one of `--max-sessions`.
    pub _slot: tokio::sync::OwnedSemaphorePermit,
    /// Held while the session runs: the client is there.
    pub _presence: super::abandoned::SessionPresence,
    /// Counts refusals and the client's drops.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// The writes of the frame being handled, queued together when it is done
    /// (`WriterHandle::send_frame`); `None` between frames.
    pub frame: Option<Vec<(WriteOp, Ack)>>,
}

fn message(body: Out) -> Result<pb::ServerMessage, Status> {
    Ok(pb::ServerMessage { body: Some(body) })
}

impl Session {
    /// Reads the stream until the client closes it, the sidecar shuts down, or a write
    /// fails; then waits for the final acknowledgements.
    pub async fn run(mut self, mut inbound: Streaming<pb::ClientMessage>) {
        let mut progress = self.progress.subscribe();
        let mut acked = progress.borrow().committed_seq;
        loop {
            tokio::select! {
                biased;
                _ = self.shutdown.changed() => break,
                changed = progress.changed() => {
                    if changed.is_err() || !self.forward_progress(&mut progress, &mut acked).await {
                        return;
                    }
                }
                next = inbound.message() => match next {
                    Ok(Some(msg)) => {
                        // The frame's share of the byte budget; while the budget is spent,
                        // the next frame is not read (the client waits on flow control).
                        let held = self.ingest.budget().hold(msg.encoded_len()).await;
                        let handled = self.handle(msg).await;
                        drop(held);
                        if !handled {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(client_id = %self.client_id, %status, "session stream broke");
                        return;
                    }
                },
            }
        }
        // The client stopped sending (or we are shutting down): acknowledge what was
        // accepted before ending the stream, so a clean close loses nothing.
        let deadline = tokio::time::sleep(FINAL_ACK_WAIT);
        tokio::pin!(deadline);
        while acked < self.last_seq {
            tokio::select! {
                changed = progress.changed() => {
                    if changed.is_err() || !self.forward_progress(&mut progress, &mut acked).await {
                        return;
                    }
                }
                _ = &mut deadline => {
                    tracing::warn!(client_id = %self.client_id, "session closed before final commit");
                    return;
                }
            }
        }
    }

    /// Sends the latest committed sequence number; false when the session must end.
    async fn forward_progress(
        &self,
        progress: &mut watch::Receiver<SessionProgress>,
        acked: &mut u64,
    ) -> bool {
        let current = progress.borrow_and_update().clone();
        if let Some(error) = current.write_failed {
            let status = Status::unavailable(format!(
                "storage write failed ({error}); reconnect and resend unacknowledged messages"
            ));
            let _ = self.out.send(Err(status)).await;
            return false;
        }
        if current.committed_seq > *acked {
            *acked = current.committed_seq;
            let ack = pb::SessionAck {
                committed_seq: current.committed_seq,
            };
            return self.out.send(message(Out::Ack(ack))).await.is_ok();
        }
        true
    }

    /// Handles one message, or each message of a batch in order; false when the session
    /// must end.
    async fn handle(&mut self, msg: pb::ClientMessage) -> bool {
        if let Some(Body::Batch(batch)) = msg.body {
            // What the database knows of the frame's new ids, in one read for the frame. A
            // failure here is the first message's to report, when it is checked.
            let ids = batch
                .messages
                .iter()
                .filter(|m| m.seq > self.last_seq)
                .filter_map(|m| m.body.as_ref().map(from_wire::mentions));
            let _ = self.ingest.recall_many(ids).await;
            // The frame's writes go to the writer together, once it is handled: one wake-up
            // and one transaction for what the client gathered.
            self.frame = Some(Vec::with_capacity(batch.messages.len()));
            let mut handled = true;
            for inner in batch.messages {
                if matches!(inner.body, Some(Body::Batch(_))) {
                    let nested = Status::invalid_argument("a batch may not contain a batch");
                    if !self.reject_and_skip(inner.seq, nested).await {
                        handled = false;
                        break;
                    }
                    continue;
                }
                if !self.handle_one(inner).await {
                    handled = false;
                    break;
                }
            }
            let writes = self.frame.take().unwrap_or_default();
            // What was accepted before a failure is still queued: its commit is
            // acknowledged if the session lives long enough, and resent otherwise.
            return self.send_writes(writes).await && handled;
        }
        self.handle_one(msg).await
    }

    /// Handles one message that is not a batch; false when the session must end.
    async fn handle_one(&mut self, msg: pb::ClientMessage) -> bool {
        let seq = msg.seq;
        if seq == 0 {
            return self
                .reject(
                    0,
                    Status::invalid_argument("seq must be 1 or more after hello"),
                )
                .await;
        }
        if seq <= self.last_seq {
            // A resend of something already handled (after a reconnect): skip it.
            return true;
        }
        self.last_seq = seq;
        let Some(body) = msg.body else {
            return self
                .reject_and_skip(seq, Status::invalid_argument("message has no body"))
                .await;
        };
        if let Body::Stats(stats) = body {
            let op = WriteOp::ClientStats {
                client_id: self.client_id.to_string(),
                client_name: self.client_name.clone(),
                pid: self.pid,
                cuda_visible_devices: None,
                nvidia_visible_devices: None,
                dropped_total: stats.dropped_total,
            };
            self.metrics
                .note_dropped(&self.client_id, &self.client_name, stats.dropped_total);
            if stats.dropped_total > 0 {
                tracing::warn!(client_id = %self.client_id, dropped = stats.dropped_total,
                    "client dropped messages: its buffer was full");
            }
            return self.queue(op, seq).await;
        }
        let accepted = match from_wire::command(body) {
            Ok(command) => {
                self.ingest
                    .accept_sent(command, &self.client_id, &self.client_name)
                    .await
            }
            Err(refused) => Err(refused),
        };
        if let Some(clock) = self.ingest.clock_to_store(&self.client_id) {
            // Queued before the message, which acknowledges it with its commit.
            if !self.write(clock, Ack::None).await {
                return false;
            }
        }
        match accepted {
            Ok(accepted) => self.queue(accepted.op, seq).await,
            Err(refused) => self.reject_and_skip(seq, refused.into()).await,
        }
    }

    async fn queue(&mut self, op: WriteOp, seq: u64) -> bool {
        let ack = Ack::Session {
            client_id: self.client_id.clone(),
            progress: self.progress.clone(),
            seq,
        };
        self.write(op, ack).await
    }

    /// Adds a write to the frame being handled, or queues it alone outside a frame; false
    /// when the session must end.
    async fn write(&mut self, op: WriteOp, ack: Ack) -> bool {
        if let Some(frame) = self.frame.as_mut() {
            frame.push((op, ack));
            return true;
        }
        self.send_writes(vec![(op, ack)]).await
    }

    /// Queues writes to the writer: one alone, several as a frame; false when the session
    /// must end.
    async fn send_writes(&self, mut writes: Vec<(WriteOp, Ack)>) -> bool {
        let queued = match writes.len() {
            0 => return true,
            1 => match writes.pop() {
                Some((op, ack)) => self.writer.send(op, ack).await,
                None => Ok(()),
            },
            _ => self.writer.send_frame(writes).await,
        };
        if queued.is_err() {
            let _ = self
                .out
                .send(Err(Status::unavailable("the sidecar is shutting down")))
                .await;
            return false;
        }
        true
    }

    async fn reject(&self, seq: u64, status: Status) -> bool {
        self.metrics
            .rejected(&crate::metrics::code_label(status.code()), 1);
        tracing::debug!(client_id = %self.client_id, seq, %status, "session message rejected");
        let error = pb::SessionError {
            seq,
            code: status.code() as i32,
            message: status.message().to_owned(),
        };
        self.out.send(message(Out::Error(error))).await.is_ok()
    }

    async fn reject_and_skip(&mut self, seq: u64, status: Status) -> bool {
        self.reject(seq, status).await && self.queue(WriteOp::Nothing, seq).await
    }
}
