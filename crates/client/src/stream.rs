//! The background task: keeps a session stream open and moves the buffer through it.

use std::sync::Arc;
use std::time::Duration;

use crate::client::Target;
use runlens_api::pb;
use runlens_api::pb::runlens_client::RunlensClient;
use runlens_api::pb::server_message::Body as In;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::backoff::Backoff;
use crate::buffer::Shared;
use crate::ids::random_u64;

/// Frames in flight between this task and the gRPC transport.
const OUTBOUND_WINDOW: usize = 64;

/// Most messages in one frame.
const FRAME_MESSAGES: usize = 512;

/// One message as itself, several as a `MessageBatch` frame, none as nothing.
fn frame(mut batch: Vec<pb::ClientMessage>) -> Option<pb::ClientMessage> {
    match batch.len() {
        0 => None,
        1 => batch.pop(),
        _ => Some(pb::ClientMessage {
            seq: 0,
            body: Some(pb::client_message::Body::Batch(pb::MessageBatch {
                messages: batch,
            })),
        }),
    }
}

/// What identifies this client to the sidecar.
pub struct Hello {
    pub client_id: String,
    pub client_name: String,
}

/// Runs until the client is closed and everything is acknowledged.
pub async fn drive(shared: Arc<Shared>, target: Target, hello: Hello) {
    let mut backoff = Backoff::new(
        Duration::from_millis(50),
        Duration::from_secs(5),
        random_u64(),
    );
    // Since when the sidecar has been unreachable, and whether that was said already.
    let mut down_since: Option<std::time::Instant> = None;
    let mut warned = false;
    loop {
        if shared.is_closed() && shared.unacknowledged() == 0 {
            return;
        }
        match session(&shared, &target, &hello, &mut backoff).await {
            Ok(()) => return,
            Err(reason) => {
                shared.requeue_inflight();
                let delay = backoff.next_delay();
                tracing::debug!(%reason, ?delay, "runlens session down; reconnecting");
                // No error recorded: a session was up (its welcome cleared the last one), so
                // this failure starts a new outage.
                if shared.last_error().is_none() {
                    down_since = None;
                    warned = false;
                }
                // One warning per outage, not one per retry: the agent keeps recording
                // into the buffer meanwhile, and should know that it is only buffered.
                let since = *down_since.get_or_insert_with(std::time::Instant::now);
                if !warned && since.elapsed() >= UNREACHABLE_WARNING_AFTER {
                    warned = true;
                    crate::warn::warn(&format!(
                        "runlens sidecar at {} unreachable for {}s ({reason}); {} message(s) \
                         buffered, still retrying",
                        target,
                        since.elapsed().as_secs(),
                        shared.unacknowledged()
                    ));
                }
                shared.set_last_error(Some(reason));
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// An error with its causes, e.g. "transport error: tcp connect error: Connection refused
/// (os error 111)": the outer message alone ("transport error") says nothing a user can act on.
fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// How long the sidecar may be unreachable before the client says so once.
pub const UNREACHABLE_WARNING_AFTER: Duration = Duration::from_secs(10);

/// One connection's life. `Ok` only when the client is closed and fully acknowledged.
async fn session(
    shared: &Shared,
    target: &Target,
    hello: &Hello,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let channel = target.connect().await.map_err(|e| with_sources(&e))?;
    let mut client = RunlensClient::new(channel);
    let (tx, rx) = mpsc::channel(OUTBOUND_WINDOW);
    let hello = pb::ClientMessage {
        seq: 0,
        body: Some(pb::client_message::Body::Hello(pb::SessionHello {
            client_id: hello.client_id.clone(),
            client_name: hello.client_name.clone(),
            pid: std::process::id(),
            cuda_visible_devices: std::env::var("CUDA_VISIBLE_DEVICES").unwrap_or_default(),
            nvidia_visible_devices: std::env::var("NVIDIA_VISIBLE_DEVICES").unwrap_or_default(),
        })),
    };
    tx.send(hello).await.map_err(|e| e.to_string())?;
    let request = crate::client::with_token(ReceiverStream::new(rx), target.token.as_ref());
    let mut inbound = client
        .session(request)
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    match inbound.message().await.map_err(|s| s.to_string())? {
        Some(pb::ServerMessage {
            body: Some(In::Welcome(w)),
        }) => shared.acknowledge(w.committed_seq),
        other => return Err(format!("expected welcome, got {other:?}")),
    }
    backoff.reset();
    shared.set_last_error(None);
    loop {
        if let Some(dropped_total) = shared.dropped_to_report() {
            shared.push_control(pb::client_message::Body::Stats(pb::ClientStats {
                dropped_total,
            }));
        }
        // A few messages waiting: let the agent's thread finish what it records together
        // (a step's end, its metrics, the next step's start) so it goes in one frame. One
        // yield, not a timer: a 1 ms wait here (a timer wheel's tick, often 2 ms) was most
        // of an acknowledgement's latency, and the sidecar's group commit (3 ms from the
        // oldest message) already gathers what arrives in separate frames.
        let waiting = shared.pending_len();
        if waiting > 0 && waiting < FRAME_MESSAGES {
            tokio::task::yield_now().await;
        }
        // Hand the transport as much as it will take without waiting, many messages per
        // frame: per-frame costs (framing, polling, wakeups) then hardly count.
        while let Ok(permit) = tx.try_reserve() {
            match frame(shared.take_batch(FRAME_MESSAGES)) {
                Some(msg) => permit.send(msg),
                None => break,
            }
        }
        if shared.is_closed() && shared.unacknowledged() == 0 {
            return Ok(());
        }
        let has_pending = shared.has_pending();
        tokio::select! {
            next = inbound.message() => match next.map_err(|s| s.to_string())? {
                Some(pb::ServerMessage { body: Some(In::Ack(ack)) }) => {
                    shared.acknowledge(ack.committed_seq);
                }
                Some(pb::ServerMessage { body: Some(In::Error(e)) }) => {
                    shared.note_rejected();
                    tracing::warn!(seq = e.seq, code = e.code, message = %e.message,
                        "runlens rejected a message");
                }
                Some(_) => {}
                None => return Err("the sidecar closed the session".into()),
            },
            permit = tx.reserve(), if has_pending => {
                let permit = permit.map_err(|e| e.to_string())?;
                if let Some(msg) = frame(shared.take_batch(FRAME_MESSAGES)) {
                    permit.send(msg);
                }
            }
            () = shared.wake.notified(), if !has_pending => {}
        }
    }
}
