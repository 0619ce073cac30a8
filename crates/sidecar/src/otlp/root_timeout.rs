//! Traces whose root span never arrives (the agent crashed before its root ended, or the
//! exporter lost it) would leave their runs `running` forever. Once a trace has been quiet
//! for `--otlp-root-timeout` after its last span ended, its run is ended as failed, at its
//! last span's end, with the error "root span never received" and `ended_by =
//! 'root_missing'`. A root that arrives later still names and ends the run.

use std::time::Duration;

use tokio::sync::watch;

use crate::store::{Ack, WriteOp, WriterHandle};

/// The longest wait between two checks.
const CHECK_AT_MOST_EVERY: Duration = Duration::from_secs(30);

/// The error text of such runs.
pub fn reason(timeout: Duration) -> String {
    format!(
        "root span never received: the trace's last span ended more than {} before",
        humantime::format_duration(timeout)
    )
}

/// Checks every quarter of `timeout` (at most every 30 s) until `shutdown` turns true.
/// `window` is the matching window (the end sample must be that close).
pub async fn end_rootless_runs(
    writer: WriterHandle,
    timeout: Duration,
    window: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = (timeout / 4).clamp(Duration::from_millis(100), CHECK_AT_MOST_EVERY);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let timeout_ns = i64::try_from(timeout.as_nanos()).unwrap_or(i64::MAX);
    let window_ns = i64::try_from(window.as_nanos()).unwrap_or(i64::MAX);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let op = WriteOp::CloseRootless {
            quiet_since_ns: probe_core::unix_now_ns().saturating_sub(timeout_ns),
            window_ns,
            reason: reason(timeout),
        };
        if writer.send(op, Ack::None).await.is_err() {
            return;
        }
    }
}
