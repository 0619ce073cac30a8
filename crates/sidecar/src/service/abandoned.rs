//! Runs left open by agents that are gone.
//!
//! An agent killed by the kernel's OOM killer, crashed, or stopped without ending its runs
//! would leave them `running` forever, and the report could not count them as failures.
//! The sidecar ends them as failed, with a fresh end snapshot (the machine as the agent
//! left it), once it knows that their session client is gone:
//!
//! - its process has exited: the session broke and the client's PID, visible here at
//!   hello, no longer runs (checked by the process's start time, so that a reused PID is
//!   not taken for the agent); seen within a second;
//! - or its session stayed closed for `--client-timeout` (PID not visible from here, or a
//!   client that lives on but never came back to end its runs).
//!
//! Runs opened through unary calls belong to no session and are left as they are. After
//! a sidecar restart, clients with runs still open get `--client-timeout` to come back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use crate::domain::{EndedBy, EventKind, Outcome};
use crate::ingest::{Command, EndRun, Ingest};
use crate::store::read::SharedReader;
use crate::store::{Ack, EventRow, WriteOp, WriterHandle};

/// How often closed sessions are checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What is known of one session client.
struct Client {
    name: String,
    pid: u32,
    /// Start time of its process when it said hello, if the PID was visible then.
    start_ticks: Option<u64>,
    /// Sessions open now (a reconnect can overlap the old stream's end).
    sessions: u32,
    /// Since when no session has been open.
    closed_since: Option<Instant>,
}

/// A client found gone, with why.
struct Gone {
    client_id: String,
    name: String,
    pid: u32,
    /// Why, as the report reads it.
    ended_by: EndedBy,
    /// Why, in words, stored as the runs' error.
    reason: String,
}

/// Session clients and whether they are still there. Cheap to clone.
#[derive(Clone, Default)]
pub struct Presence {
    clients: Arc<Mutex<HashMap<String, Client>>>,
    /// Told when a client has no session left (or one is adopted without any): only then
    /// is there anything to check.
    closed: Arc<tokio::sync::Notify>,
}

/// Held by a session while it runs; dropping it marks the session closed.
pub struct SessionPresence {
    presence: Presence,
    client_id: String,
}

impl Drop for SessionPresence {
    fn drop(&mut self) {
        let mut clients = self.presence.lock();
        if let Some(c) = clients.get_mut(&self.client_id) {
            c.sessions = c.sessions.saturating_sub(1);
            if c.sessions == 0 {
                c.closed_since = Some(Instant::now());
                drop(clients);
                self.presence.closed.notify_one();
            }
        }
    }
}

impl Presence {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Client>> {
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A session of `client_id` opened (hello). `pid` 0 means the client did not say.
    pub fn opened(&self, client_id: &str, name: &str, pid: u32) -> SessionPresence {
        let start_ticks = (pid != 0)
            .then(|| probe_core::process_start_ticks(pid))
            .flatten();
        let mut clients = self.lock();
        let c = clients.entry(client_id.to_owned()).or_insert(Client {
            name: String::new(),
            pid: 0,
            start_ticks: None,
            sessions: 0,
            closed_since: None,
        });
        name.clone_into(&mut c.name);
        c.pid = pid;
        c.start_ticks = start_ticks;
        c.sessions += 1;
        c.closed_since = None;
        SessionPresence {
            presence: self.clone(),
            client_id: client_id.to_owned(),
        }
    }

    /// Clients that have runs open in the database but no session (the sidecar just
    /// started): they get the timeout to come back. Their PIDs are not judged, since
    /// nothing says the old PID namespace is this one.
    pub fn adopt(&self, clients: Vec<(String, String, u32)>) {
        let now = Instant::now();
        let mut known = self.lock();
        for (client_id, name, pid) in clients {
            known.entry(client_id).or_insert(Client {
                name,
                pid,
                start_ticks: None,
                sessions: 0,
                closed_since: Some(now),
            });
        }
        drop(known);
        self.closed.notify_one();
    }

    /// Whether any client has no session open (something to check).
    fn any_closed(&self) -> bool {
        self.lock().values().any(|c| c.closed_since.is_some())
    }

    /// Removes and returns the clients that are gone.
    fn take_gone(&self, timeout: Duration) -> Vec<Gone> {
        let mut clients = self.lock();
        let mut gone = Vec::new();
        // One read of /proc per process, however many closed clients it had (a service
        // that opens a client per request leaves many behind until the timeout).
        let mut started: HashMap<u32, Option<u64>> = HashMap::new();
        clients.retain(|client_id, c| {
            let Some(closed_since) = c.closed_since else {
                return true;
            };
            let exited = c.start_ticks.is_some_and(|start| {
                *started
                    .entry(c.pid)
                    .or_insert_with(|| probe_core::process_start_ticks(c.pid))
                    != Some(start)
            });
            let (ended_by, reason) = if exited {
                (
                    EndedBy::ProcessExit,
                    format!(
                        "the agent process (pid {}) exited without ending this run",
                        c.pid
                    ),
                )
            } else if closed_since.elapsed() >= timeout {
                (
                    EndedBy::SessionTimeout,
                    format!(
                        "the agent's session closed and did not come back within {}; the run \
                         was never ended",
                        humantime::format_duration(timeout)
                    ),
                )
            } else {
                return true;
            };
            gone.push(Gone {
                client_id: client_id.clone(),
                name: std::mem::take(&mut c.name),
                pid: c.pid,
                ended_by,
                reason,
            });
            false
        });
        gone
    }
}

/// Checks closed sessions every second while there are any (no timer runs while every
/// client is connected) and ends the open runs of clients that are gone, until `shutdown`
/// turns true.
pub async fn end_runs_of_gone_clients(
    presence: Presence,
    ingest: Ingest,
    writer: WriterHandle,
    reader: SharedReader,
    timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if !presence.any_closed() {
            tokio::select! {
                _ = shutdown.changed() => return,
                () = presence.closed.notified() => {}
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            () = tokio::time::sleep(CHECK_EVERY) => {}
        }
        if *shutdown.borrow() {
            return;
        }
        let gone = presence.take_gone(timeout);
        if gone.is_empty() {
            continue;
        }
        if let Err(error) = committed(&writer).await {
            tracing::warn!(%error, "could not end the runs of clients that are gone");
            continue;
        }
        for gone in gone {
            if let Err(error) = end_open_runs(&gone, &ingest, &writer, &reader).await {
                tracing::warn!(client_id = %gone.client_id, %error,
                    "could not end the runs of a client that is gone");
            }
        }
    }
}

/// Waits until everything queued so far is committed. The gone clients' sessions have
/// ended, so all they sent is queued before this marker: afterwards the database holds
/// every run they opened.
async fn committed(writer: &WriterHandle) -> Result<(), String> {
    let (done, committed) = oneshot::channel();
    writer
        .send(WriteOp::Nothing, Ack::Reply(done))
        .await
        .map_err(|e| e.to_string())?;
    committed
        .await
        .map_err(|_| "the writer stopped".to_owned())?
}

/// Ends the runs `gone` left open, as failed with its reason, and records `client.gone`.
async fn end_open_runs(
    gone: &Gone,
    ingest: &Ingest,
    writer: &WriterHandle,
    reader: &SharedReader,
) -> Result<(), String> {
    let runs = reader
        .read(|r| r.open_runs_of_client(&gone.client_id))
        .map_err(|e| e.to_string())?;
    if runs.is_empty() {
        return Ok(()); // a clean exit: nothing left open
    }
    let mut ended = 0;
    for run_id in &runs {
        let end = Command::EndRun(EndRun {
            run_id: run_id.clone(),
            outcome: Outcome::Failed(gone.reason.clone()),
            attributes: Default::default(),
            time_ns: 0,
            ended_by: gone.ended_by,
        });
        // A run the client ended meanwhile is refused here, which is right.
        if let Ok(accepted) = ingest.accept(end, Some(&gone.client_id)).await {
            writer
                .send(accepted.op, Ack::None)
                .await
                .map_err(|e| e.to_string())?;
            ended += 1;
        }
    }
    tracing::warn!(client_id = %gone.client_id, name = %gone.name, pid = gone.pid, ended,
        reason = %gone.reason, "ended the open runs of a client that is gone");
    let event = EventRow {
        kind: EventKind::System,
        run_id: None,
        span_id: None,
        name: "client.gone".to_owned(),
        value: None,
        unit: None,
        attributes: Some(
            serde_json::json!({
                "client_id": gone.client_id,
                "client_name": gone.name,
                "pid": gone.pid,
                "reason": gone.reason,
                "runs_ended": ended,
            })
            .to_string(),
        ),
        at_ns: probe_core::unix_now_ns(),
        snapshot: ingest.nearest_sample(),
    };
    writer
        .send(WriteOp::Record(event), Ack::None)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_session_is_never_gone_and_a_closed_one_waits_for_the_timeout() {
        let presence = Presence::default();
        // PID 0: nothing to check, only the timeout judges.
        let session = presence.opened("c1", "agent", 0);
        assert!(presence.take_gone(Duration::ZERO).is_empty(), "open");
        drop(session);
        assert!(presence.take_gone(Duration::from_secs(60)).is_empty());
        let gone = presence.take_gone(Duration::ZERO);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].client_id, "c1");
        assert_eq!(gone[0].ended_by, EndedBy::SessionTimeout);
        assert!(
            gone[0].reason.contains("did not come back"),
            "{}",
            gone[0].reason
        );
        assert!(
            presence.take_gone(Duration::ZERO).is_empty(),
            "reported once"
        );
    }

    #[tokio::test]
    async fn the_checker_is_woken_only_when_a_client_has_no_session_left() {
        let p = Presence::default();
        let woken = |p: &Presence| {
            let closed = p.closed.clone();
            async move {
                tokio::time::timeout(Duration::from_millis(10), closed.notified())
                    .await
                    .is_ok()
            }
        };
        let first = p.opened("c", "agent", 0);
        let second = p.opened("c", "agent", 0);
        drop(first);
        assert!(!p.any_closed(), "a session is still open");
        assert!(!woken(&p).await, "nothing to check");
        drop(second);
        assert!(p.any_closed());
        assert!(woken(&p).await, "the last session closed");
    }

    #[test]
    fn a_reconnect_before_the_old_stream_ends_keeps_the_client() {
        let presence = Presence::default();
        let old = presence.opened("c1", "agent", 0);
        let new = presence.opened("c1", "agent", 0);
        drop(old);
        assert!(presence.take_gone(Duration::ZERO).is_empty());
        drop(new);
        assert_eq!(presence.take_gone(Duration::ZERO).len(), 1);
    }

    #[test]
    fn a_live_process_is_not_gone_before_the_timeout() {
        let presence = Presence::default();
        drop(presence.opened("me", "test", std::process::id()));
        assert!(presence.take_gone(Duration::from_secs(60)).is_empty());
    }

    #[test]
    fn an_exited_process_is_gone_at_once() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let presence = Presence::default();
        drop(presence.opened("c", "killed", child.id()));
        assert!(presence.take_gone(Duration::from_secs(3600)).is_empty());
        child.kill().unwrap();
        child.wait().unwrap();
        let gone = presence.take_gone(Duration::from_secs(3600));
        assert_eq!(gone.len(), 1);
        assert!(gone[0].reason.contains("exited"), "{}", gone[0].reason);
        assert_eq!(gone[0].ended_by, EndedBy::ProcessExit);
    }

    #[test]
    fn many_closed_clients_of_one_process_go_together_when_it_exits() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let presence = Presence::default();
        for i in 0..100 {
            drop(presence.opened(&format!("c{i}"), "per-request", child.id()));
        }
        assert!(presence.take_gone(Duration::from_secs(3600)).is_empty());
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(presence.take_gone(Duration::from_secs(3600)).len(), 100);
    }

    #[test]
    fn clients_adopted_after_a_restart_get_the_timeout() {
        let presence = Presence::default();
        presence.adopt(vec![("old".into(), "agent".into(), 1)]);
        assert!(presence.take_gone(Duration::from_secs(60)).is_empty());
        // It came back: no longer closed.
        let back = presence.opened("old", "agent", 0);
        assert!(presence.take_gone(Duration::ZERO).is_empty());
        drop(back);
        assert_eq!(presence.take_gone(Duration::ZERO).len(), 1);
    }
}
