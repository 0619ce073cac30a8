//! The gRPC service `runlens.v1.Runlens`: a thin front door onto the ingest core.
//!
//! `from_wire` turns messages into the core's commands, `status` maps the core's refusals
//! to gRPC codes, `to_wire` turns samples into messages; `session` is the streaming
//! adapter, the unary rpcs share [`RunlensService::unary`], `abandoned` ends the runs of
//! clients that are gone, `history` serves stored runs.

mod abandoned;
mod activity;
mod from_wire;
mod history;
mod session;
mod status;
pub mod to_wire;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use runlens_api::pb;
use runlens_api::pb::client_message::Body;
use runlens_api::pb::runlens_server::Runlens;
use to_wire::snapshot_to_wire;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

pub use abandoned::Presence;

use crate::ingest::{Command, Ingest, IngestError};
use crate::metrics::Metrics;
use crate::sampler::SamplerHandle;
use crate::store::read::SharedReader;
use crate::store::{Ack, QueueError, SessionProgress, WriteOp, WriterHandle};

/// How long a unary call waits for its commit.
const UNARY_COMMIT_WAIT: Duration = Duration::from_secs(10);

/// Shortest interval `WatchSnapshots` accepts.
const MIN_WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// What the service works through.
pub struct Backends {
    /// The ingest core.
    pub ingest: Ingest,
    /// Learns the agents' names.
    pub metrics: Arc<Metrics>,
    /// Samples on demand.
    pub sampler: SamplerHandle,
    /// Stores.
    pub writer: WriterHandle,
    /// Session bookkeeping reads.
    pub reader: SharedReader,
}

/// Limits on what clients may hold open.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Most sessions open at once; the next gets `RESOURCE_EXHAUSTED`.
    pub max_sessions: usize,
    /// How long a new session may take to send hello before it is closed.
    pub hello_timeout: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_sessions: 256,
            hello_timeout: Duration::from_secs(10),
        }
    }
}

/// The service behind every rpc.
pub struct RunlensService {
    /// One permit per open session.
    sessions: Arc<tokio::sync::Semaphore>,
    limits: SessionLimits,
    ingest: Ingest,
    /// Learns the agents' names (for the metrics' `client` label).
    metrics: Arc<Metrics>,
    sampler: SamplerHandle,
    writer: WriterHandle,
    /// Session bookkeeping reads (committed sequence numbers, clients with open runs).
    reader: SharedReader,
    db_path: PathBuf,
    shutdown: watch::Receiver<bool>,
    /// Upgraded into every streaming task; shutdown waits until all are dropped.
    drain: mpsc::WeakSender<()>,
    /// Reads the live state once for every `WatchActivity` watcher.
    activity: activity::Hub,
    /// Which session clients are still there.
    presence: Presence,
}

impl RunlensService {
    /// A service accepting through `backends.ingest`, storing through its writer, reading
    /// session state through its reader and history from `db_path`. Streams end when
    /// `shutdown` turns true; each streaming task holds an upgraded `drain`, so once the owner
    /// drops its sender, the receiver's `recv()` returns `None` when they have all finished.
    pub fn new(
        backends: Backends,
        db_path: PathBuf,
        shutdown: watch::Receiver<bool>,
        drain: mpsc::WeakSender<()>,
        limits: SessionLimits,
    ) -> Self {
        Self {
            sessions: Arc::new(tokio::sync::Semaphore::new(limits.max_sessions)),
            limits,
            presence: Presence::default(),
            ingest: backends.ingest,
            metrics: backends.metrics,
            sampler: backends.sampler,
            writer: backends.writer,
            reader: backends.reader,
            db_path,
            shutdown,
            drain,
            activity: activity::Hub::default(),
        }
    }

    /// A watch rpc's `interval_ms`: 0 is the sampling interval; under
    /// [`MIN_WATCH_INTERVAL`] is refused.
    fn watch_interval(&self, interval_ms: u32) -> Result<Duration, Status> {
        let interval = match interval_ms {
            0 => self.sampler.interval(),
            ms => Duration::from_millis(u64::from(ms)),
        };
        if interval < MIN_WATCH_INTERVAL {
            return Err(Status::invalid_argument(format!(
                "interval_ms must be at least {} (or 0 for the sidecar's interval)",
                MIN_WATCH_INTERVAL.as_millis()
            )));
        }
        Ok(interval)
    }

    /// Starts ending the open runs of session clients that are gone (process exited, or
    /// no session for `client_timeout`), first adopting the clients that the database
    /// shows with runs open from before this start. Runs until shutdown.
    pub fn end_runs_of_gone_clients(
        &self,
        client_timeout: Duration,
    ) -> Result<tokio::task::JoinHandle<()>, crate::store::StoreError> {
        let waiting = self.reader.read(|r| r.clients_with_open_runs())?;
        if !waiting.is_empty() {
            tracing::info!(clients = waiting.len(), timeout = %humantime::format_duration(client_timeout),
                "clients with open runs from before this start: waiting for them to come back");
        }
        self.presence.adopt(waiting);
        Ok(tokio::spawn(abandoned::end_runs_of_gone_clients(
            self.presence.clone(),
            self.ingest.clone(),
            self.writer.clone(),
            self.reader.clone(),
            client_timeout,
            self.shutdown.clone(),
        )))
    }

    /// Accepts one command, waits for its commit, and answers with `respond` applied to
    /// the snapshot it attached: the shape of every unary recording rpc.
    ///
    /// Refuses before changing any state when storage is failing (`UNAVAILABLE`) or the
    /// write queue is full (`RESOURCE_EXHAUSTED`), so a retry is always safe then.
    async fn unary<R>(
        &self,
        command: Result<Command, IngestError>,
        respond: impl FnOnce(Option<pb::Snapshot>) -> R,
    ) -> Result<Response<R>, Status> {
        let command = command.inspect_err(|refused| {
            let status = Status::from(refused.clone());
            self.metrics
                .rejected(&crate::metrics::code_label(status.code()), 1);
        })?;
        if let Some(error) = self.writer.health().borrow().clone() {
            return Err(Status::unavailable(format!(
                "storage is failing ({error}); nothing was recorded, retry later"
            )));
        }
        let permit = self.writer.try_reserve().map_err(|e| match e {
            QueueError::Full => Status::resource_exhausted(
                "the sidecar's write queue is full; nothing was recorded, retry with backoff",
            ),
            QueueError::Closed => Status::unavailable("the sidecar is shutting down"),
        })?;
        let accepted = match self.ingest.accept(command, None).await {
            Ok(accepted) => accepted,
            Err(refused) => {
                let status = Status::from(refused);
                self.metrics
                    .rejected(&crate::metrics::code_label(status.code()), 1);
                return Err(status);
            }
        };
        let (tx, rx) = oneshot::channel();
        permit.send(accepted.op, Ack::Reply(tx));
        match tokio::time::timeout(UNARY_COMMIT_WAIT, rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => {
                return Err(Status::unavailable(format!(
                    "accepted but not stored ({e}); the sidecar stopped before storage recovered"
                )));
            }
            Ok(Err(_)) => return Err(Status::unavailable("the sidecar is shutting down")),
            Err(_) => {
                return Err(Status::deadline_exceeded(format!(
                    "accepted but not committed within {}s (storage is slow or failing); it \
                     stays queued and is stored when storage recovers: do not resend",
                    UNARY_COMMIT_WAIT.as_secs()
                )));
            }
        }
        let snapshot = accepted
            .snapshot
            .map(|s| snapshot_to_wire(&s.snapshot, s.id));
        Ok(Response::new(respond(snapshot)))
    }
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Runlens for RunlensService {
    type SessionStream = ResponseStream<pb::ServerMessage>;
    type WatchSnapshotsStream = ResponseStream<pb::Snapshot>;
    type WatchActivityStream = ResponseStream<pb::Activity>;

    async fn session(
        &self,
        request: Request<Streaming<pb::ClientMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let Ok(slot) = self.sessions.clone().try_acquire_owned() else {
            self.metrics.rejected("resource_exhausted", 1);
            return Err(Status::resource_exhausted(format!(
                "runlens serve already has {} sessions open (--max-sessions); close clients \
                 that are done or raise --max-sessions",
                self.limits.max_sessions
            )));
        };
        let peer = request
            .extensions()
            .get::<crate::peer::Peer>()
            .cloned()
            .unwrap_or_default();
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(self.limits.hello_timeout, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no hello within {} of opening the session (--hello-timeout)",
                    humantime::format_duration(self.limits.hello_timeout)
                ))
            })?;
        let hello = match first? {
            Some(pb::ClientMessage {
                body: Some(Body::Hello(hello)),
                ..
            }) => hello,
            Some(_) => {
                return Err(Status::invalid_argument(
                    "the first message of a session must be hello",
                ));
            }
            None => return Err(Status::invalid_argument("session closed before hello")),
        };
        crate::ingest::validate::id("client_id", &hello.client_id)?;
        let committed = self
            .reader
            .read(|r| r.committed_seq(&hello.client_id))
            .map_err(|e| IngestError::storage(&e))?;
        // The PID the client sends wins; without one, the connection's peer (a stub client
        // on the pod's socket or on loopback).
        let mut hello = hello;
        if hello.pid == 0 {
            hello.pid = peer.pid_off_runtime().await.unwrap_or(0);
        }
        tracing::info!(client_id = %hello.client_id, name = %hello.client_name, pid = hello.pid,
            committed, "session opened");
        if hello.pid != 0 {
            self.metrics.note_client(hello.pid, &hello.client_name);
            self.sampler.watch_process(hello.pid).await;
        }
        let (out, out_rx) = mpsc::channel(256);
        let welcome = pb::ServerMessage {
            body: Some(pb::server_message::Body::Welcome(pb::SessionWelcome {
                committed_seq: committed,
                server_version: crate::build_info::LONG.to_owned(),
            })),
        };
        out.send(Ok(welcome))
            .await
            .map_err(|_| Status::cancelled("client went away"))?;
        let progress = watch::channel(SessionProgress {
            committed_seq: committed,
            write_failed: None,
        })
        .0;
        // Register the client (name, pid) in `clients` at once.
        let register = WriteOp::ClientStats {
            client_id: hello.client_id.clone(),
            client_name: hello.client_name.clone(),
            pid: hello.pid,
            cuda_visible_devices: Some(hello.cuda_visible_devices.clone())
                .filter(|v| !v.is_empty()),
            nvidia_visible_devices: Some(hello.nvidia_visible_devices.clone())
                .filter(|v| !v.is_empty()),
            dropped_total: 0,
        };
        self.writer
            .send(register, Ack::None)
            .await
            .map_err(|_| Status::unavailable("the sidecar is shutting down"))?;
        let session = session::Session {
            _slot: slot,
            _presence: self
                .presence
                .opened(&hello.client_id, &hello.client_name, hello.pid),
            client_name: hello.client_name.clone(),
            pid: hello.pid,
            client_id: Arc::from(hello.client_id.as_str()),
            last_seq: committed,
            ingest: self.ingest.clone(),
            writer: self.writer.clone(),
            progress: Arc::new(progress),
            out,
            shutdown: self.shutdown.clone(),
            _drain: self.drain.upgrade(),
            metrics: self.metrics.clone(),
            frame: None,
        };
        tokio::spawn(session.run(inbound));
        Ok(Response::new(Box::pin(ReceiverStream::new(out_rx))))
    }

    async fn start_run(
        &self,
        request: Request<pb::StartRunRequest>,
    ) -> Result<Response<pb::StartRunResponse>, Status> {
        let command = Ok(from_wire::start_run(request.into_inner()));
        self.unary(command, |snapshot| pb::StartRunResponse { snapshot })
            .await
    }

    async fn end_run(
        &self,
        request: Request<pb::EndRunRequest>,
    ) -> Result<Response<pb::EndRunResponse>, Status> {
        let command = from_wire::end_run(request.into_inner());
        self.unary(command, |snapshot| pb::EndRunResponse { snapshot })
            .await
    }

    async fn start_span(
        &self,
        request: Request<pb::StartSpanRequest>,
    ) -> Result<Response<pb::StartSpanResponse>, Status> {
        let command = Ok(from_wire::start_span(request.into_inner()));
        self.unary(command, |snapshot| pb::StartSpanResponse { snapshot })
            .await
    }

    async fn end_span(
        &self,
        request: Request<pb::EndSpanRequest>,
    ) -> Result<Response<pb::EndSpanResponse>, Status> {
        let command = from_wire::end_span(request.into_inner());
        self.unary(command, |snapshot| pb::EndSpanResponse { snapshot })
            .await
    }

    async fn record_metric(
        &self,
        request: Request<pb::Metric>,
    ) -> Result<Response<pb::RecordMetricResponse>, Status> {
        let command = Ok(from_wire::metric(request.into_inner()));
        self.unary(command, |snapshot| pb::RecordMetricResponse { snapshot })
            .await
    }

    async fn record_event(
        &self,
        request: Request<pb::Event>,
    ) -> Result<Response<pb::RecordEventResponse>, Status> {
        let command = Ok(from_wire::event(request.into_inner()));
        self.unary(command, |snapshot| pb::RecordEventResponse { snapshot })
            .await
    }

    async fn get_snapshot(
        &self,
        _request: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<pb::Snapshot>, Status> {
        let snapshot = self
            .sampler
            .sample_unstored()
            .await
            .map_err(IngestError::from)?;
        Ok(Response::new(snapshot_to_wire(&snapshot, 0)))
    }

    async fn watch_snapshots(
        &self,
        request: Request<pb::WatchSnapshotsRequest>,
    ) -> Result<Response<Self::WatchSnapshotsStream>, Status> {
        let interval = self.watch_interval(request.into_inner().interval_ms)?;
        // A small buffer per subscriber; a slow subscriber misses samples rather than
        // holding up the sampler or other subscribers.
        let (tx, rx) = mpsc::channel(4);
        let sampler = self.sampler.clone();
        let mut shutdown = self.shutdown.clone();
        let drain = self.drain.upgrade();
        tokio::spawn(async move {
            let _drain = drain;
            let mut ticker = tokio::time::interval(interval);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = shutdown.changed() => return,
                    _ = tx.closed() => return,
                }
                let item = sampler
                    .sample_unstored()
                    .await
                    .map(|s| snapshot_to_wire(&s, 0))
                    .map_err(|e| Status::from(IngestError::from(e)));
                match tx.try_send(item) {
                    Ok(()) | Err(mpsc::error::TrySendError::Full(_)) => {}
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn watch_activity(
        &self,
        request: Request<pb::WatchActivityRequest>,
    ) -> Result<Response<Self::WatchActivityStream>, Status> {
        let request = request.into_inner();
        let interval = self.watch_interval(request.interval_ms)?;
        // Two states of room: a watcher further behind is dropped (the stream ends).
        let (tx, rx) = mpsc::channel(2);
        let drain = self.drain.upgrade();
        let rows = self.activity.subscribe(
            self.db_path.clone(),
            self.sampler.clone(),
            self.shutdown.clone(),
        );
        let task = activity::watch(
            rows,
            self.sampler.clone(),
            interval,
            request.oom_threshold_bytes,
            tx,
            self.shutdown.clone(),
        );
        tokio::spawn(async move {
            let _drain = drain;
            task.await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        let runs = history::list_runs(self.db_path.clone(), request.into_inner()).await?;
        Ok(Response::new(pb::ListRunsResponse { runs }))
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::GetRunResponse>, Status> {
        let run = history::get_run(self.db_path.clone(), request.into_inner().run_id).await?;
        Ok(Response::new(run))
    }
}
