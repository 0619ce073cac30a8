//! The front doors: every listener bound before anything else is created, then the
//! runlens.v1 gRPC server, OTLP/gRPC and OTLP/HTTP, `/metrics` and the health listener
//! served on them.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;

use runlens_api::pb::runlens_server::RunlensServer;
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;

use super::shared::Core;
use super::{
    BoundTcp, OtlpServers, Tls, bind_optional, reflection, serve_http, serve_otlp, stopped,
};
use crate::auth::GrpcCheck;
use crate::cli::{ServeArgs, Switch};
use crate::exit::Failure;
use crate::net::listeners::{self, Listeners};
use crate::otlp::OtlpIngest;
use crate::service::RunlensService;

/// Every listener, bound.
pub(super) struct Bound {
    listeners: Listeners,
    otlp_grpc: Option<BoundTcp>,
    otlp_http: Option<BoundTcp>,
    metrics: Option<BoundTcp>,
    health: Option<BoundTcp>,
}

impl Bound {
    /// Binds every listener before the database is created or migrated: a port already in
    /// use must fail first, so a mistyped second `serve` leaves no file and no schema change
    /// behind (connections that arrive meanwhile wait in the listen backlog). Every
    /// listener is tried before any conflict is reported, so a user sees every taken port
    /// in one message rather than one per attempt.
    pub async fn bind(args: &ServeArgs) -> Result<Self, Failure> {
        let mut conflicts = Vec::new();
        let listeners = Listeners::bind(&args.listen, args.socket_mode)
            .await
            .map_err(|f| conflicts.push(f))
            .ok();
        let otlp_grpc =
            bind_optional(args.otlp_grpc_listen, "--otlp-grpc-listen", &mut conflicts).await;
        let otlp_http =
            bind_optional(args.otlp_http_listen, "--otlp-http-listen", &mut conflicts).await;
        let metrics = bind_optional(args.metrics_listen, "--metrics-listen", &mut conflicts).await;
        let health = bind_optional(args.health_listen, "--health-listen", &mut conflicts).await;
        match (listeners, conflicts.len()) {
            (Some(listeners), 0) => Ok(Self {
                listeners,
                otlp_grpc,
                otlp_http,
                metrics,
                health,
            }),
            _ => Err(listeners::one_failure(conflicts)),
        }
    }
}

/// The runlens.v1 server's future: it ends when the shutdown signal turns true.
pub(super) type GrpcServer =
    Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>>;

/// The front doors, serving.
pub(super) struct Fronts {
    /// The runlens.v1 server (with health, OTLP/gRPC and reflection on the same port).
    pub grpc: GrpcServer,
    /// The other servers (OTLP listeners, `/metrics`, health), finished at shutdown.
    pub others: OtlpServers,
    /// Where runlens.v1 listens, as the user wrote it ("A and B" for several).
    pub addr: String,
    /// Unix socket files to remove at the end.
    pub sockets: Vec<PathBuf>,
    /// Where `/metrics` listens.
    pub metrics_addr: Option<SocketAddr>,
    /// Where the health listener listens.
    pub health_addr: Option<SocketAddr>,
}

/// What every front door is guarded and served with.
pub(super) struct Guard<'a> {
    /// The token check, for gRPC and HTTP alike.
    pub check: &'a GrpcCheck,
    /// TLS, when on.
    pub tls: Option<&'a Tls>,
    /// The health service (on the main port and the health listener).
    pub health: HealthService,
}

/// The gRPC health service, fed by a `HealthReporter`.
pub(super) type HealthService =
    tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>;

impl Fronts {
    /// Serves every front door on its listener until `shutdown`.
    pub fn start(
        args: &ServeArgs,
        core: &Core,
        service: RunlensService,
        bound: Bound,
        guard: Guard<'_>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<Self, Failure> {
        let max_message = (args.max_message_mib as usize) << 20;
        let otlp = core.otlp(max_message);
        let Bound {
            listeners,
            otlp_grpc,
            otlp_http,
            metrics,
            health,
        } = bound;
        let addr = listeners
            .addresses()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" and ");
        let sockets = listeners.socket_paths();
        let grpc = grpc_server(args, service, &otlp, listeners, &guard, shutdown)?;
        let mut others = serve_otlp(
            &otlp,
            (otlp_grpc, otlp_http),
            guard.check,
            guard.tls,
            (args.http_idle_timeout, shutdown),
        );
        let metrics_addr = metrics.as_ref().map(|(_, a)| *a);
        if let Some((listener, _)) = metrics {
            let router = crate::metrics::router(core.metrics.clone());
            let router = match args.metrics_auth {
                Switch::On => crate::auth::guard(router, guard.check.clone()),
                Switch::Off => router,
            };
            others.tasks.push(serve_http(
                listener,
                router,
                guard.tls.map(|t| t.http.clone()),
                (args.http_idle_timeout, shutdown),
                "metrics",
            ));
        }
        let health_addr = health.as_ref().map(|(_, a)| *a);
        if let Some((listener, _)) = health {
            others
                .tasks
                .push(health_server(listener, guard.health, shutdown));
        }
        Ok(Self {
            grpc,
            others,
            addr,
            sockets,
            metrics_addr,
            health_addr,
        })
    }
}

/// runlens.v1, health, OTLP/gRPC and reflection on the main listeners, behind the token.
fn grpc_server(
    args: &ServeArgs,
    service: RunlensService,
    otlp: &OtlpIngest,
    listeners: Listeners,
    guard: &Guard<'_>,
    shutdown: &watch::Receiver<bool>,
) -> Result<GrpcServer, Failure> {
    let max_message = (args.max_message_mib as usize) << 20;
    let (reflection_v1, reflection_v1alpha) = match args.reflection {
        Switch::On => {
            let (v1, v1alpha) = reflection()?;
            (Some(v1), Some(v1alpha))
        }
        Switch::Off => (None, None),
    };
    let check = guard.check;
    let server = Server::builder()
        .add_service(guard.health.clone())
        .add_service(InterceptedService::new(
            RunlensServer::new(service).max_decoding_message_size(max_message),
            check.clone(),
        ))
        .add_service(InterceptedService::new(
            crate::otlp::grpc::service(otlp.clone()),
            check.clone(),
        ))
        .add_optional_service(reflection_v1.map(|r| InterceptedService::new(r, check.clone())))
        .add_optional_service(reflection_v1alpha.map(|r| InterceptedService::new(r, check.clone())))
        .serve_with_incoming_shutdown(
            listeners.incoming(guard.tls.map(|t| t.grpc.clone())),
            stopped(shutdown.clone()),
        );
    Ok(Box::pin(server))
}

/// Only the health service on the health listener: what probes need, and nothing behind
/// the token.
fn health_server(
    listener: tokio::net::TcpListener,
    health: HealthService,
    shutdown: &watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let server = Server::builder()
        .add_service(health)
        .serve_with_incoming_shutdown(
            crate::net::tcp_incoming(listener),
            stopped(shutdown.clone()),
        );
    tokio::spawn(async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "the health server failed");
        }
    })
}
