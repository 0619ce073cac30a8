//! The network under every front door: listen addresses, the listeners `serve` binds (TCP
//! and Unix sockets, merged into one stream of connections) and TLS on them. `cli` parses
//! into these types and `serve` binds with them; nothing here reaches back into either.

pub mod listeners;
pub mod tls;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::net::{TcpListener, TcpStream};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::{Stream, StreamExt};

/// An address `serve` accepts runlens.v1 on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// TCP.
    Tcp(SocketAddr),
    /// A Unix socket at this path.
    Unix(PathBuf),
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix://{}", path.display()),
        }
    }
}

/// Parses a `--listen` address: `host:port`, `unix:///absolute/path` or `unix:relative/path`.
pub fn parse_listen_addr(text: &str) -> Result<ListenAddr, String> {
    // gRPC's spellings: unix:///absolute/path, unix:relative/path.
    if let Some(rest) = text.strip_prefix("unix:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() {
            return Err("a Unix socket needs a path, e.g. unix:///run/runlens/runlens.sock".into());
        }
        return Ok(ListenAddr::Unix(PathBuf::from(path)));
    }
    text.parse().map(ListenAddr::Tcp).map_err(|e| {
        format!("{e}; write host:port such as 127.0.0.1:50551, or unix:///path/to.sock")
    })
}

/// Accepted TCP connections with Nagle's algorithm off: an export's answer is one small
/// frame that must not wait for the client's delayed ACK (40 ms on Linux).
pub fn tcp_incoming(
    listener: TcpListener,
) -> impl Stream<Item = io::Result<TcpStream>> + Send + 'static {
    TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted {
            // Best effort: a socket that refuses is only slower.
            let _ = stream.set_nodelay(true);
        }
        accepted
    })
}
