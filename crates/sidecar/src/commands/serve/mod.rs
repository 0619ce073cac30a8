//! `runlens serve`: the sidecar.

use std::sync::Arc;
use std::time::Duration;

use runlens_api::pb::runlens_server::RunlensServer;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;

mod background;
mod fronts;
mod http;
mod lock;
mod parquet;
mod retention;
mod shared;

use background::Background;
use fronts::{Bound, Fronts, Guard};
use shared::Core;

use super::build_sampler;
use crate::cli::{Listener, ServeArgs, Switch};
use crate::exit::{FAILURE, Failure};
use crate::net::listeners;
use crate::otlp::{self, OtlpIngest};
use crate::service::RunlensService;
use crate::store::{self, Writer};

/// How long open streams get to finish after SIGINT/SIGTERM before they are cut.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long idle connections get to close after the streams have finished. Nothing is
/// lost by cutting them: every accepted message is already queued to the writer.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(500);

/// How long the OTLP servers get to answer exports in flight at shutdown.
const OTLP_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs the sidecar until SIGINT or SIGTERM, then drains and exits.
pub fn run(args: ServeArgs) -> Result<(), Failure> {
    // SIGINT and SIGTERM are caught from the first moment: one that arrives while the
    // database is being opened or migrated is held until the sidecar can stop cleanly,
    // instead of killing it mid-migration or being lost before the runtime listens.
    let early = EarlySignal::register()?;
    // Before any thread allocates: commits stop handing their few hundred KiB back to the
    // system and faulting them in again; bursts are still handed back when they end.
    probe_core::keep_freed_memory();
    // A sidecar needs few threads whatever the machine's size. At agent rates a second
    // worker mostly wakes up to find nothing to steal: one thread on a machine of two
    // CPUs (the writer has its own) costs a third fewer wake-ups per span for the same
    // saturation throughput (BENCHMARKS.md, "At the rates agents run").
    let workers = args.worker_threads.map_or_else(
        || match std::thread::available_parallelism().map_or(2, |n| n.get()) {
            ..=2 => 1,
            _ => 2,
        },
        usize::from,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("runlens-rt")
        .enable_all()
        .build()
        .map_err(|e| Failure::new(FAILURE, format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(serve(args, early))
}

async fn serve(args: ServeArgs, early: EarlySignal) -> Result<(), Failure> {
    let mut signals = ShutdownSignals::register(early)?;
    check_retention(&args)?;
    let token = args
        .token_file
        .as_deref()
        .map(crate::auth::Token::load)
        .transpose()?;
    let tls = load_tls(&args)?;
    refuse_open_listeners(&args, token.is_some() || tls.is_some())?;
    // Probes before anything is bound or created: a wrong --nvml-lib is a usage error.
    let (sampler, gpu_problem) = build_sampler(&args.probe)?;
    let bound = Bound::bind(&args).await?;
    // One sidecar per database; held until the process ends.
    let _db_lock = lock::DbLock::take(&args.db)?;
    let core = Core::open(&args, sampler)?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (drain_tx, drained) = mpsc::channel::<()>(1);
    let service = core.service(&args, &shutdown_rx, drain_tx.downgrade());
    let background = Background::start(&args, &core, &service, tls.as_ref(), &shutdown_rx)?;
    let health = tonic_health::server::HealthReporter::default();
    let health_service = fronts::HealthService::new(
        tonic_health::server::HealthService::from_health_reporter(health.clone()),
    );
    follow_storage_health(&health, &core.writer).await;
    let check = crate::auth::GrpcCheck::new(token, Some(core.metrics.clone()));
    let guard = Guard {
        check: &check,
        tls: tls.as_ref(),
        health: health_service,
    };
    let fronts = Fronts::start(&args, &core, service, bound, guard, &shutdown_rx)?;
    announce(&args, &fronts, &core, gpu_problem, tls.is_some());

    let Fronts {
        grpc,
        others,
        sockets,
        ..
    } = fronts;
    wait_for_stop(grpc, &mut signals, &health, &shutdown_tx, drain_tx, drained).await?;
    let _ = shutdown_tx.send(true);
    // Exports in flight are answered once their spans are committed: the writer is still
    // running while the OTLP servers finish.
    others.finish().await;
    background.stop().await;
    core.close().await;
    for path in sockets {
        // Ours until now: a later sidecar on the same path finds no stale file.
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("stopped; everything accepted is committed");
    Ok(())
}

/// `--retain-full` at most `--retain`: a usage error otherwise.
fn check_retention(args: &ServeArgs) -> Result<(), Failure> {
    if args.retain_full > args.retain {
        return Err(Failure::new(
            crate::exit::USAGE,
            format!(
                "--retain-full {} is longer than --retain {}: make --retain-full at most --retain",
                humantime::format_duration(args.retain_full),
                humantime::format_duration(args.retain)
            ),
        ));
    }
    Ok(())
}

/// Serves until the gRPC server fails or SIGINT/SIGTERM; then refuses new connections and
/// gives open streams [`DRAIN_TIMEOUT`] to end after their last acknowledgements.
async fn wait_for_stop(
    server: fronts::GrpcServer,
    signals: &mut ShutdownSignals,
    health: &tonic_health::server::HealthReporter,
    shutdown_tx: &watch::Sender<bool>,
    drain_tx: mpsc::Sender<()>,
    mut drained: mpsc::Receiver<()>,
) -> Result<(), Failure> {
    let mut server = server;
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
    Ok(())
}

/// The one line on stdout (scripts and tests read the addresses from it, the port 0 case)
/// and the log's "serving" line.
fn announce(
    args: &ServeArgs,
    fronts: &Fronts,
    core: &Core,
    gpu_problem: Option<String>,
    tls: bool,
) {
    let gpu_line = gpu_problem.map_or_else(
        || "GPUs through NVML".to_owned(),
        |reason| format!("no GPU sampling: {reason}"),
    );
    let shown =
        |a: Option<std::net::SocketAddr>| a.map_or_else(|| "off".to_owned(), |a| a.to_string());
    let mut otlp_line = format!(
        "OTLP: gRPC {}, HTTP {}; metrics {}",
        shown(fronts.others.grpc),
        shown(fronts.others.http),
        shown(fronts.metrics_addr)
    );
    if let Some(addr) = fronts.health_addr {
        otlp_line.push_str(&format!("; health {addr}"));
    }
    if tls {
        otlp_line.push_str("; TLS");
    }
    // A closed stdout must not stop the sidecar: the line is for whoever reads it.
    let _ = crate::format::outln!(
        "runlens serve: listening on {} (db {}; sampling every {}, {} while busy; \
         {gpu_line}) {otlp_line}",
        fronts.addr,
        args.db.display(),
        humantime::format_duration(args.sample_interval),
        humantime::format_duration(core.sampler.active_interval())
    );
    tracing::info!(listen = %fronts.addr, otlp_grpc = %shown(fronts.others.grpc),
        otlp_http = %shown(fronts.others.http), metrics = %shown(fronts.metrics_addr),
        db = %args.db.display(),
        sample_interval = %humantime::format_duration(args.sample_interval),
        reflection = args.reflection == Switch::On, version = crate::build_info::LONG, "serving");
}

/// Refuses TCP listeners that accept data on an address other than loopback when no token
/// guards them, unless `--allow-insecure`. /metrics is read-only and exempt.
fn refuse_open_listeners(args: &ServeArgs, has_token: bool) -> Result<(), Failure> {
    if args.metrics_auth == Switch::On && !has_token {
        return Err(Failure::new(
            crate::exit::USAGE,
            "--metrics-auth needs a token: add --token-file FILE",
        ));
    }
    if has_token || args.allow_insecure {
        return Ok(());
    }
    let mut open = Vec::new();
    for addr in &args.listen {
        if let crate::cli::ListenAddr::Tcp(a) = addr
            && !a.ip().is_loopback()
        {
            open.push(format!("{a} (--listen)"));
        }
    }
    for (listener, flag) in [
        (&args.otlp_grpc_listen, "--otlp-grpc-listen"),
        (&args.otlp_http_listen, "--otlp-http-listen"),
    ] {
        if let Listener::On(a) = listener
            && !a.ip().is_loopback()
        {
            open.push(format!("{a} ({flag})"));
        }
    }
    if open.is_empty() {
        return Ok(());
    }
    Err(Failure::new(
        crate::exit::USAGE,
        format!(
            "refusing to accept data on {} with neither a token nor TLS: anyone who can reach \
             it could write runs and read the history. Add --token-file FILE (clients send it \
             as `authorization: Bearer ...`, e.g. RUNLENS_TOKEN) or --tls-cert and --tls-key \
             (with --tls-client-ca for client certificates), or listen on 127.0.0.1 or a \
             unix:// socket (in a pod, --health-listen serves the probes), or pass \
             --allow-insecure if the network is trusted",
            open.join(", ")
        ),
    ))
}

/// Resolves when `shutdown` turns true (or its sender is gone).
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Records this start and the sidecar's resource (pod, namespace, node from
/// `OTEL_RESOURCE_ATTRIBUTES`), so that the database says where it came from. A database
/// that cannot take the row (full) is still served: the writer deals with that.
fn record_start(conn: &store::Connection) {
    let resource: serde_json::Map<String, serde_json::Value> = crate::otel_env::resource()
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    if let Err(e) = store::merge::record_sidecar_start(
        conn,
        probe_core::unix_now_ns(),
        crate::build_info::LONG,
        &serde_json::Value::Object(resource).to_string(),
    ) {
        tracing::warn!(error = %e, "could not record this start in sidecar_starts");
    }
}

/// A bound TCP listener and its address.
type BoundTcp = (TcpListener, std::net::SocketAddr);

/// Binds an optional listener; a failure, which also says how to turn it off, joins
/// `conflicts`.
async fn bind_optional(
    listener: Listener,
    flag: &str,
    conflicts: &mut Vec<Failure>,
) -> Option<BoundTcp> {
    match listener {
        Listener::Off => None,
        Listener::On(address) => listeners::bind_tcp(address, flag)
            .await
            .map_err(|f| {
                conflicts.push(Failure::new(
                    f.code,
                    format!("{} (or `{flag} off`)", f.message),
                ));
            })
            .ok(),
    }
}

/// SERVING now; then the health service follows the writer: NOT_SERVING while storage is
/// failing.
async fn follow_storage_health(health: &tonic_health::server::HealthReporter, writer: &Writer) {
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
}

/// The OTLP listeners' servers, running.
struct OtlpServers {
    grpc: Option<std::net::SocketAddr>,
    http: Option<std::net::SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl OtlpServers {
    /// Waits (at most [`OTLP_CLOSE_TIMEOUT`]) for the servers to answer what is in flight;
    /// then cuts the connections that senders keep open between exports. Nothing is lost
    /// by cutting: an export not yet answered is queued (stored) or not (the sender
    /// retries), and a retry of a stored one is skipped.
    async fn finish(self) {
        let deadline = tokio::time::Instant::now() + OTLP_CLOSE_TIMEOUT;
        for task in self.tasks {
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                tracing::debug!("OTLP connections still open at shutdown; closing them");
            }
        }
    }
}

/// Starts OTLP/gRPC and OTLP/HTTP on their own listeners, until `shutdown`.
fn serve_otlp(
    otlp: &OtlpIngest,
    (grpc, http): (Option<BoundTcp>, Option<BoundTcp>),
    check: &crate::auth::GrpcCheck,
    tls: Option<&Tls>,
    (idle, shutdown): (Duration, &watch::Receiver<bool>),
) -> OtlpServers {
    let mut servers = OtlpServers {
        grpc: grpc.as_ref().map(|(_, a)| *a),
        http: http.as_ref().map(|(_, a)| *a),
        tasks: Vec::new(),
    };
    if let Some((listener, _)) = grpc {
        let server = Server::builder()
            .add_service(InterceptedService::new(
                otlp::grpc::service(otlp.clone()),
                check.clone(),
            ))
            .serve_with_incoming_shutdown(
                listeners::tcp_or_tls(listener, tls.map(|t| t.grpc.clone())),
                stopped(shutdown.clone()),
            );
        servers.tasks.push(tokio::spawn(async move {
            if let Err(error) = server.await {
                tracing::error!(%error, "the OTLP gRPC server failed");
            }
        }));
    }
    if let Some((listener, _)) = http {
        servers.tasks.push(serve_http(
            listener,
            crate::auth::guard(otlp::http::router(otlp.clone()), check.clone()),
            tls.map(|t| t.http.clone()),
            (idle, shutdown),
            "OTLP HTTP",
        ));
    }
    servers
}

/// Serves `router` over HTTP/1.1 on `listener` (Nagle off), through TLS with `tls`, until
/// `shutdown`; connections idle for `idle` are closed.
fn serve_http(
    listener: TcpListener,
    router: axum::Router,
    tls: Option<Arc<crate::net::tls::TlsConfig>>,
    (idle, shutdown): (Duration, &watch::Receiver<bool>),
    what: &'static str,
) -> tokio::task::JoinHandle<()> {
    use axum::serve::ListenerExt as _;
    match tls {
        Some(config) => match crate::net::tls::TlsListener::new(listener, config) {
            Ok(listener) => http::serve(listener, router, idle, shutdown.clone(), what),
            Err(error) => {
                tracing::error!(%error, server = what, "an HTTP server failed");
                tokio::spawn(async {})
            }
        },
        None => {
            let listener = listener.tap_io(|stream| {
                let _ = stream.set_nodelay(true);
            });
            http::serve(listener, router, idle, shutdown.clone(), what)
        }
    }
}

/// The TLS configurations, one per protocol (ALPN): gRPC speaks HTTP/2, the HTTP
/// listeners HTTP/1.1.
struct Tls {
    grpc: Arc<crate::net::tls::TlsConfig>,
    http: Arc<crate::net::tls::TlsConfig>,
}

/// Loads the TLS files when TLS is on; a bad file is a usage error that names it.
fn load_tls(args: &ServeArgs) -> Result<Option<Tls>, Failure> {
    let Some(files) = args.tls_files() else {
        return Ok(None);
    };
    let load = |alpn: &[&[u8]]| {
        crate::net::tls::TlsConfig::load(&files, alpn)
            .map_err(|e| Failure::new(crate::exit::USAGE, e))
    };
    Ok(Some(Tls {
        grpc: load(&[b"h2"])?,
        http: load(&[b"http/1.1"])?,
    }))
}

/// gRPC server reflection, v1 and v1alpha (grpcurl asks v1 first, older tools v1alpha),
/// describing runlens.v1, the health service and the OTLP trace service with their comments.
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
            .register_encoded_file_descriptor_set(runlens_api::OTLP_TRACE_FILE_DESCRIPTOR_SET)
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
/// A stop asked for before the runtime's own signal streams existed.
#[derive(Clone)]
struct EarlySignal(Arc<std::sync::atomic::AtomicBool>);

impl EarlySignal {
    fn register() -> Result<Self, Failure> {
        let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
        #[cfg(unix)]
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let fail = |e: std::io::Error| {
                Failure::new(FAILURE, format!("cannot listen for shutdown signals: {e}"))
            };
            // A second signal while the first is pending ends the process at once (exit 1):
            // a start-up stuck on a failing disk can still be stopped. Registered first, so
            // it sees the flag as the earlier signal left it.
            signal_hook::flag::register_conditional_shutdown(signal, 1, flag.clone())
                .map_err(fail)?;
            signal_hook::flag::register(signal, flag.clone()).map_err(fail)?;
        }
        Ok(Self(flag))
    }

    fn requested(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

struct ShutdownSignals {
    /// Set by a signal from before `interrupt` and `terminate` were listening.
    early: EarlySignal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn register(early: EarlySignal) -> Result<Self, Failure> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let fail = |e: std::io::Error| {
                Failure::new(FAILURE, format!("cannot listen for shutdown signals: {e}"))
            };
            Ok(Self {
                early,
                interrupt: signal(SignalKind::interrupt()).map_err(fail)?,
                terminate: signal(SignalKind::terminate()).map_err(fail)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self { early })
    }

    /// Resolves on the first of them, at once if one came during start-up.
    async fn recv(&mut self) {
        if self.early.requested() {
            return;
        }
        #[cfg(unix)]
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
