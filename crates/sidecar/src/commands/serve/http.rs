//! The HTTP/1.1 listeners (OTLP/HTTP, /metrics): an accept loop over hyper with a timer, so
//! that a connection idle for `--http-idle-timeout` (no request, or a request's headers not
//! finished) is closed; `axum::serve` keeps idle connections forever.

use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;

/// Serves `router` on every connection `listener` accepts until `shutdown`, then lets the
/// requests in flight finish (the caller bounds how long it waits). Each request carries
/// the connection's [`crate::peer::Peer`] as an extension.
pub fn serve<L>(
    mut listener: L,
    router: axum::Router,
    idle: Duration,
    mut shutdown: watch::Receiver<bool>,
    what: &'static str,
) -> tokio::task::JoinHandle<()>
where
    L: axum::serve::Listener<Addr = std::net::SocketAddr>,
{
    tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        let local = listener.local_addr().ok();
        loop {
            let (io, remote) = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            let peer = crate::peer::Peer {
                unix_pid: None,
                tcp: local.map(|local| (local, remote)),
            };
            let service = TowerToHyperService::new(router.clone().layer(axum::Extension(peer)));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(idle)
                .keep_alive(true)
                .serve_connection(TokioIo::new(io), service);
            let connection = graceful.watch(connection);
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    // Idle timeouts and clients going away end here too.
                    tracing::debug!(%error, server = what, "HTTP connection ended");
                }
            });
        }
        graceful.shutdown().await;
    })
}
