//! Where `serve` accepts runlens.v1: TCP addresses and Unix sockets, merged into one
//! stream of connections for the gRPC server.
//!
//! A Unix socket lets an agent in the same pod reach the sidecar through a shared
//! `emptyDir` without a network port. Its file outlives a killed sidecar, so at start a
//! socket nobody answers on is replaced, while one a live process answers on is refused
//! (two sidecars must not share a path), and a path that is not a socket is never touched.

use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::{Stream, StreamExt, StreamMap};

use std::sync::Arc;

use tokio_rustls::server::TlsStream;

use super::tls::TlsConfig;
use super::{ListenAddr, tcp_incoming};
use crate::exit::{FAILURE, Failure, UNAVAILABLE};

/// The bound listeners, in the order given, with what each is called.
pub struct Listeners {
    bound: Vec<Bound>,
}

enum Bound {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listeners {
    /// Binds every address; a Unix socket gets `mode` as its permissions. A failure names
    /// the address and what to do (exit code 69).
    pub async fn bind(addrs: &[ListenAddr], mode: u32) -> Result<Self, Failure> {
        let mut bound = Vec::with_capacity(addrs.len());
        let mut failures = Vec::new();
        for addr in addrs {
            let one = match addr {
                ListenAddr::Tcp(a) => bind_tcp(*a, "--listen").await.map(|b| Bound::Tcp(b.0)),
                ListenAddr::Unix(path) => {
                    bind_unix(path, mode).map(|l| Bound::Unix(l, path.clone()))
                }
            };
            match one {
                Ok(b) => bound.push(b),
                Err(f) => failures.push(f),
            }
        }
        if failures.is_empty() {
            Ok(Self { bound })
        } else {
            Err(one_failure(failures))
        }
    }

    /// The addresses as bound (the real port where 0 was asked), e.g. for the start line.
    pub fn addresses(&self) -> Vec<ListenAddr> {
        self.bound
            .iter()
            .filter_map(|b| match b {
                Bound::Tcp(l) => l.local_addr().ok().map(ListenAddr::Tcp),
                Bound::Unix(_, path) => Some(ListenAddr::Unix(path.clone())),
            })
            .collect()
    }

    /// The socket files to remove at shutdown.
    pub fn socket_paths(&self) -> Vec<PathBuf> {
        self.bound
            .iter()
            .filter_map(|b| match b {
                Bound::Unix(_, path) => Some(path.clone()),
                Bound::Tcp(_) => None,
            })
            .collect()
    }

    /// Every accepted connection of every listener, as one stream; with `tls`, TCP
    /// connections are TLS (Unix sockets rely on file permissions).
    pub fn incoming(
        self,
        tls: Option<Arc<TlsConfig>>,
    ) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
        let mut all: StreamMap<usize, Accepted> = StreamMap::new();
        for (i, bound) in self.bound.into_iter().enumerate() {
            let stream: Accepted = match bound {
                Bound::Tcp(l) => tcp_or_tls(l, tls.clone()),
                Bound::Unix(l, _) => {
                    Box::pin(UnixListenerStream::new(l).map(|r| r.map(Conn::Unix)))
                }
            };
            all.insert(i, stream);
        }
        all.map(|(_, accepted)| accepted)
    }
}

type Accepted = Pin<Box<dyn Stream<Item = io::Result<Conn>> + Send>>;

/// A TCP listener's connections, through TLS handshakes when `tls` is given.
pub fn tcp_or_tls(listener: TcpListener, tls: Option<Arc<TlsConfig>>) -> Accepted {
    match tls {
        None => Box::pin(tcp_incoming(listener).map(|r| r.map(Conn::Tcp))),
        Some(config) => Box::pin(
            super::tls::handshakes(Box::pin(tcp_incoming(listener)), config)
                .map(|tls| Ok(Conn::Tls(Box::new(tls)))),
        ),
    }
}

/// Several failures as one: the first's exit code, every message on a line of its own.
pub fn one_failure(mut failures: Vec<Failure>) -> Failure {
    if failures.len() == 1 {
        return failures.remove(0);
    }
    let code = failures.first().map_or(FAILURE, |f| f.code);
    let lines: Vec<String> = failures
        .iter()
        .map(|f| format!("  {}", f.message))
        .collect();
    Failure::new(
        code,
        format!(
            "{} listeners cannot start:\n{}",
            failures.len(),
            lines.join("\n")
        ),
    )
}

/// Binds `address`; a failure names the flag that chose it (exit code 69).
pub async fn bind_tcp(
    address: std::net::SocketAddr,
    flag: &str,
) -> Result<(TcpListener, std::net::SocketAddr), Failure> {
    let listener = TcpListener::bind(address).await.map_err(|e| {
        Failure::new(
            UNAVAILABLE,
            format!("cannot listen on {address}: {e}; choose another address with {flag}"),
        )
    })?;
    let bound = listener
        .local_addr()
        .map_err(|e| Failure::new(FAILURE, format!("listening socket has no address: {e}")))?;
    Ok((listener, bound))
}

fn bind_unix(path: &Path, mode: u32) -> Result<UnixListener, Failure> {
    let shown = ListenAddr::Unix(path.to_owned());
    let refuse =
        |why: String| Failure::new(UNAVAILABLE, format!("cannot listen on {shown}: {why}"));
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(refuse(
                "the path exists and is not a socket; remove it or choose another path with \
                 --listen"
                    .into(),
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(refuse(
                "another process (a running runlens serve?) accepts connections there; stop it \
                 or choose another path with --listen"
                    .into(),
            ));
        }
        // Left by a sidecar that was killed: nobody answers on it.
        std::fs::remove_file(path).map_err(|e| {
            refuse(format!(
                "a stale socket is there and cannot be removed: {e}"
            ))
        })?;
        tracing::info!(path = %path.display(), "replaced a stale socket");
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        refuse(format!(
            "{e}; the directory must exist and be writable (in a pod: an emptyDir mounted there)"
        ))
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Failure::new(FAILURE, format!("cannot set the mode of {shown}: {e}")))?;
    Ok(listener)
}

/// One accepted connection, TCP or Unix, for the gRPC server.
pub enum Conn {
    /// Over TCP.
    Tcp(TcpStream),
    /// Over a Unix socket.
    Unix(UnixStream),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>),
}

impl tonic::transport::server::Connected for Conn {
    // The agent's PID, for clients that do not send it.
    type ConnectInfo = crate::peer::Peer;

    fn connect_info(&self) -> Self::ConnectInfo {
        let tcp = |s: &TcpStream| s.local_addr().ok().zip(s.peer_addr().ok());
        match self {
            Conn::Tcp(s) => crate::peer::Peer {
                unix_pid: None,
                tcp: tcp(s),
            },
            Conn::Tls(s) => crate::peer::Peer {
                unix_pid: None,
                tcp: tcp(s.get_ref().0),
            },
            Conn::Unix(s) => crate::peer::Peer {
                unix_pid: s
                    .peer_cred()
                    .ok()
                    .and_then(|c| c.pid())
                    .and_then(|p| u32::try_from(p).ok()),
                tcp: None,
            },
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Tcp(s) => s.is_write_vectored(),
            Conn::Unix(s) => s.is_write_vectored(),
            Conn::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Unix(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(r: Result<UnixListener, Failure>) -> String {
        match r {
            Ok(_) => "bound".into(),
            Err(f) => f.message,
        }
    }

    #[test]
    fn a_stale_socket_is_replaced_a_live_one_and_a_plain_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = rt.enter();
        let path = dir.path().join("r.sock");
        // Stale: bound then dropped, the file stays and nobody answers.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let live = bind_unix(&path, 0o660).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        // Live: this very listener answers.
        assert!(message(bind_unix(&path, 0o660)).contains("another process"));
        drop(live);
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "keep me").unwrap();
        assert!(message(bind_unix(&plain, 0o660)).contains("not a socket"));
        assert_eq!(std::fs::read_to_string(&plain).unwrap(), "keep me");
        let nowhere = dir.path().join("missing/r.sock");
        assert!(message(bind_unix(&nowhere, 0o660)).contains("directory must exist"));
    }
}
