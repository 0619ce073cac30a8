//! The background task: keeps a session stream open and moves the buffer through it.

use std::sync::Arc;
use std::time::Duration;

use crate::connection::Target;
use runlens_api::pb;
use runlens_api::pb::server_message::Body as In;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::backoff::Backoff;
use crate::buffer::{FRAME_MESSAGES, Shared};
use crate::codec::{FrameCodec, SESSION_PATH};
use crate::ids::random_u64;
use crate::timer::{Timer, sleep_until_some};
use prost::Message as _;

/// Frames in flight between this task and the gRPC transport.
const OUTBOUND_WINDOW: usize = 64;

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

/// Why the session was refused, in words a user can act on: `UNIMPLEMENTED` means the
/// address answers gRPC without the runlens API, most often runlens's own OTLP port.
fn session_refused(status: &tonic::Status, target: &Target) -> String {
    if status.code() == tonic::Code::Unimplemented {
        return format!(
            "{target} answers gRPC but has no runlens API (UNIMPLEMENTED): is it runlens's \
             OTLP port (4317)? The runlens API listens on {} by default (`runlens serve \
             --listen`)",
            crate::DEFAULT_ENDPOINT
        );
    }
    status.to_string()
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
    // The generated client's `session`, with frames encoded by the buffer (`codec`).
    let mut client = tonic::client::Grpc::new(channel);
    let (tx, rx) = mpsc::channel::<bytes::Bytes>(OUTBOUND_WINDOW);
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
    tx.send(hello.encode_to_vec().into())
        .await
        .map_err(|e| e.to_string())?;
    let request = crate::connection::with_token(ReceiverStream::new(rx), target.token.as_ref());
    client
        .ready()
        .await
        .map_err(|e| format!("the connection is not ready: {}", with_sources(&e)))?;
    let mut inbound = client
        .streaming(
            request,
            tonic::codegen::http::uri::PathAndQuery::from_static(SESSION_PATH),
            FrameCodec,
        )
        .await
        .map_err(|s| session_refused(&s, target))?
        .into_inner();
    match inbound.message().await.map_err(|s| s.to_string())? {
        Some(pb::ServerMessage {
            body: Some(In::Welcome(w)),
        }) => shared.acknowledge(w.committed_seq),
        other => return Err(format!("expected welcome, got {other:?}")),
    }
    backoff.reset();
    shared.set_last_error(None);
    // While messages keep coming, this task ticks every linger and sends what has gathered
    // since the last tick, without being woken for each first message (two wake-ups per
    // frame, the tick and the acknowledgement, instead of three); a tick that finds
    // nothing stops it until the next message.
    let linger = shared.linger();
    let mut tick: Option<std::time::Instant> = None;
    let mut timer = Timer::new();
    shared.stop_ticking();
    loop {
        if let Some(dropped_total) = shared.dropped_to_report() {
            shared.push_control(pb::client_message::Body::Stats(pb::ClientStats {
                dropped_total,
            }));
        }
        // Messages linger (`Limits::linger`) so that a step's start, its metrics and its end
        // travel in one frame and one transaction: per-frame costs (framing, wake-ups on
        // both sides, a commit) are most of what a message costs. Without a linger, one
        // yield lets the agent's thread finish what it records together.
        let now = std::time::Instant::now();
        let ticked = tick.is_some_and(|at| at <= now);
        if ticked {
            tick = if shared.stop_ticking_if_idle() {
                None
            } else {
                Some(now + linger)
            };
        }
        let due = shared.send_due();
        if tick.is_none() && !linger.is_zero() {
            // The first message after a quiet time: tick from its linger on.
            if let Some(at) = due {
                tick = Some(at);
                shared.start_ticking();
            }
        }
        let ready = due.is_some_and(|at| at <= now) || (ticked && tick.is_some());
        if ready && linger.is_zero() && shared.pending_len() < FRAME_MESSAGES {
            tokio::task::yield_now().await;
        }
        // Hand the transport as much as it will take without waiting, many messages per
        // frame.
        if ready {
            while let Ok(permit) = tx.try_reserve() {
                match shared.take_frame(FRAME_MESSAGES) {
                    Some(frame) => permit.send(frame),
                    None => break,
                }
            }
        }
        if shared.is_closed() && shared.unacknowledged() == 0 {
            return Ok(());
        }
        let due = shared.send_due();
        let ready = due.is_some_and(|at| at <= std::time::Instant::now());
        let next = match (due.filter(|_| !ready), tick) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
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
            permit = tx.reserve(), if ready => {
                let permit = permit.map_err(|e| e.to_string())?;
                if let Some(frame) = shared.take_frame(FRAME_MESSAGES) {
                    permit.send(frame);
                }
            }
            () = sleep_until_some(&mut timer, next), if next.is_some() => {}
            () = shared.wake.notified(), if !ready => {}
        }
    }
}
