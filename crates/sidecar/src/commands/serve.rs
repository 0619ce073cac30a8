//! `runlens serve`: the sidecar.

use std::time::Duration;

use runlens_api::pb::runlens_server::RunlensServer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

use super::build_sampler;
use crate::cli::{Durability, ServeArgs, Switch};
use crate::exit::{FAILURE, Failure, UNAVAILABLE};
use crate::ingest::{Ingest, Registry};
use crate::sampler::SamplerHandle;
use crate::service::RunlensService;
use crate::store::read::{Reader, SharedReader};
use crate::store::{self, Writer, read};

/// How long open streams get to finish after SIGINT/SIGTERM before they are cut.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long idle connections get to close after the streams have finished. Nothing is
/// lost by cutting them: every accepted message is already queued to the writer.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

/// Runs the sidecar until SIGINT or SIGTERM, then drains and exits.
pub fn run(args: ServeArgs) -> Result<(), Failure> {
    // A sidecar needs few threads whatever the machine's size.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("runlens-rt")
        .enable_all()
        .build()
        .map_err(|e| Failure::new(FAILURE, format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> Result<(), Failure> {
    let conn = store::open_for_writing(
        &args.db,
        args.durability == Durability::Full,
        args.max_db_mib.map(|mib| mib.saturating_mul(1 << 20)),
    )?;
    let next_snapshot_id = read::next_snapshot_id(&conn).map_err(Failure::from)?;
    let writer = Writer::start(conn)
        .map_err(|e| Failure::new(FAILURE, format!("cannot start the writer thread: {e}")))?;
    let registry = Registry::new(Some(Reader::open(&args.db)?));
    let reader = SharedReader::new(Reader::open(&args.db)?);
    let (sampler, gpu_problem) = build_sampler(&args.probe)?;
    let sampler = SamplerHandle::new(
        sampler,
        writer.handle(),
        next_snapshot_id,
        args.sample_interval,
    );

    let listener = TcpListener::bind(args.listen).await.map_err(|e| {
        Failure::new(
            UNAVAILABLE,
            format!(
                "cannot listen on {}: {e}; choose another address with --listen",
                args.listen
            ),
        )
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| Failure::new(FAILURE, format!("listening socket has no address: {e}")))?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (drain_tx, mut drained) = mpsc::channel::<()>(1);
    let (health, health_service) = tonic_health::server::health_reporter();
    let ticker = tokio::spawn(sampler.clone().run_interval_sampling(shutdown_rx.clone()));
    let service = RunlensService::new(
        Ingest::new(sampler.clone(), registry),
        sampler.clone(),
        writer.handle(),
        reader,
        args.db.clone(),
        shutdown_rx.clone(),
        drain_tx.downgrade(),
    );
    let closer = service
        .end_runs_of_gone_clients(args.client_timeout)
        .map_err(Failure::from)?;
    // SERVING before the first connection; then the health service follows the writer:
    // NOT_SERVING while storage is failing.
    health.set_serving::<RunlensServer<RunlensService>>().await;
    let mut storage = writer.handle().health();
    let storage_health = health.clone();
    tokio::spawn(async move {
        while storage.changed().await.is_ok() {
            if storage.borrow_and_update().is_some() {
                storage_health
                    .set_not_serving::<RunlensServer<RunlensService>>()
                    .await;
            } else {
                storage_health
                    .set_serving::<RunlensServer<RunlensService>>()
                    .await;
            }
        }
    });
    let mut stop_accepting = shutdown_rx.clone();
    let (reflection_v1, reflection_v1alpha) = match args.reflection {
        Switch::On => {
            let (v1, v1alpha) = reflection()?;
            (Some(v1), Some(v1alpha))
        }
        Switch::Off => (None, None),
    };
    let server = Server::builder()
        .add_service(health_service)
        .add_service(RunlensServer::new(service))
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
            let _ = stop_accepting.changed().await;
        });

    let gpu_line = gpu_problem.map_or_else(
        || "GPUs through NVML".to_owned(),
        |reason| format!("no GPU sampling ({reason})"),
    );
    let mut signals = ShutdownSignals::register()?;
    // The one line on stdout: scripts and tests read the address from it (port 0 case).
    // A closed stdout must not stop the sidecar: the line is for whoever reads it.
    let _ = crate::format::outln!(
        "runlens serve: listening on {addr} (db {}, sampling every {}, {gpu_line})",
        args.db.display(),
        humantime::format_duration(args.sample_interval)
    );
    tracing::info!(listen = %addr, db = %args.db.display(),
        sample_interval = %humantime::format_duration(args.sample_interval),
        reflection = args.reflection == Switch::On, version = crate::build_info::LONG, "serving");

    tokio::pin!(server);
    tokio::select! {
        result = &mut server => {
            result.map_err(|e| Failure::new(FAILURE, format!("gRPC server failed: {e}")))?;
        }
        () = signals.recv() => {
            tracing::info!("shutting down: refusing new connections, committing accepted data");
            health.set_not_serving::<RunlensServer<RunlensService>>().await;
            let _ = shutdown_tx.send(true);
            drop(drain_tx);
            tracing::debug!(open = drained.sender_strong_count(), "waiting for streams");
            // Sessions stop reading, wait for their last acknowledgements, and end.
            if tokio::time::timeout(DRAIN_TIMEOUT, drained.recv()).await.is_err() {
                tracing::warn!("streams still open after {DRAIN_TIMEOUT:?}; closing them");
            }
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, &mut server).await;
        }
    }
    let _ = shutdown_tx.send(true);
    let _ = ticker.await;
    // Stopped, not awaited: it may be waiting on a failing disk, which only the writer's
    // close below gives up on. Runs it had yet to end are found again at the next start.
    closer.abort();
    drop(sampler);
    writer.close().await;
    tracing::info!("stopped; everything accepted is committed");
    Ok(())
}

/// gRPC server reflection, v1 and v1alpha (grpcurl asks v1 first, older tools v1alpha),
/// describing runlens.v1 and the health service with their comments.
fn reflection() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    Failure,
> {
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(runlens_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let fail = |e: tonic_reflection::server::Error| {
        Failure::new(FAILURE, format!("cannot build the reflection service: {e}"))
    };
    Ok((
        builder().build_v1().map_err(fail)?,
        builder().build_v1alpha().map_err(fail)?,
    ))
}

/// SIGINT (Ctrl-C) and SIGTERM, registered when created: a signal that arrives right
/// after the ready line is printed must already be ours, not the default "exit at once".
struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn register() -> Result<Self, Failure> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let fail = |e: std::io::Error| {
                Failure::new(FAILURE, format!("cannot listen for shutdown signals: {e}"))
            };
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).map_err(fail)?,
                terminate: signal(SignalKind::terminate()).map_err(fail)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Resolves on the first of them.
    async fn recv(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
