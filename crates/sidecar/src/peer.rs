//! Who is at the other end of a connection: the agent's PID for clients that do not send
//! it (an OpenTelemetry SDK without a resource detector, a stub client without `hello.pid`),
//! so its process is watched from its first message without configuration. A Unix socket
//! gives it through the kernel's peer credentials; loopback TCP through the socket tables
//! (`probe_core::pid_of_tcp_peer`). A PID the client sends always wins.

use std::net::SocketAddr;

/// The connection's peer, as accepted; put in every request's extensions by tonic.
#[derive(Debug, Clone, Default)]
pub struct Peer {
    /// The PID from a Unix socket's peer credentials (`SO_PEERCRED`).
    pub unix_pid: Option<u32>,
    /// This side's address and the peer's, for TCP.
    pub tcp: Option<(SocketAddr, SocketAddr)>,
}

impl Peer {
    /// The peer's PID, when this process's namespaces can see it. For TCP this reads
    /// `/proc` (every process's descriptors once): call it off the async runtime, once per
    /// connection or sender.
    pub fn pid(&self) -> Option<u32> {
        if let Some(pid) = self.unix_pid.filter(|p| *p != 0) {
            return Some(pid);
        }
        let (local, peer) = self.tcp?;
        if !peer.ip().is_loopback() {
            return None;
        }
        probe_core::pid_of_tcp_peer(std::path::Path::new("/proc"), local, peer)
    }

    /// [`Peer::pid`] on a blocking thread.
    pub async fn pid_off_runtime(&self) -> Option<u32> {
        let peer = self.clone();
        tokio::task::spawn_blocking(move || peer.pid())
            .await
            .ok()
            .flatten()
    }
}
