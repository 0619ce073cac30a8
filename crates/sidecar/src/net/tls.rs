//! TLS on the TCP listeners (`serve --tls-cert --tls-key`, optionally `--tls-client-ca` for
//! mutual TLS), with rustls.
//!
//! Certificates are reloaded when their files change: cert-manager and Kubernetes Secrets
//! rotate them in place (an atomic symlink swap), and a sidecar must not need a restart
//! for that. Every [`RELOAD_CHECK`] the files' modification times and sizes are compared;
//! on a change the configuration is rebuilt and used for new connections, while a broken
//! new file is logged and the previous certificate kept. Handshakes run in tasks of their
//! own, so a slow or silent client never holds up the others.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};

/// How often the certificate files are checked for changes.
pub const RELOAD_CHECK: Duration = Duration::from_secs(5);

/// Longest a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the certificate, its key and (for mutual TLS) the clients' CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM CA certificates clients must present a certificate from; none: no client
    /// certificates asked for.
    pub client_ca: Option<PathBuf>,
}

/// Modification time and size of each file, to notice a rotation.
type Stamp = Vec<Option<(SystemTime, u64)>>;

/// A server configuration that follows its files.
pub struct TlsConfig {
    files: TlsFiles,
    alpn: Vec<Vec<u8>>,
    current: RwLock<Arc<ServerConfig>>,
    stamp: Mutex<Stamp>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl TlsConfig {
    /// Loads the files; `alpn` is what the listener speaks (`h2` for gRPC, `http/1.1`).
    pub fn load(files: &TlsFiles, alpn: &[&[u8]]) -> Result<Arc<Self>, String> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let stamp = stamp(files);
        let config = build(files, &alpn)?;
        Ok(Arc::new(Self {
            files: files.clone(),
            alpn,
            current: RwLock::new(Arc::new(config)),
            stamp: Mutex::new(stamp),
        }))
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }

    /// Rebuilds the configuration if a file changed; whether it was replaced.
    pub fn reload_if_changed(&self) -> bool {
        let now = stamp(&self.files);
        {
            let mut seen = self.stamp.lock().unwrap_or_else(PoisonError::into_inner);
            if *seen == now {
                return false;
            }
            *seen = now;
        }
        match build(&self.files, &self.alpn) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(error) => {
                tracing::error!(%error,
                    "the changed TLS files cannot be used; keeping the previous certificate");
                false
            }
        }
    }
}

/// Checks every configuration's files every [`RELOAD_CHECK`] until `shutdown`.
pub async fn follow_rotations(configs: Vec<Arc<TlsConfig>>, mut shutdown: watch::Receiver<bool>) {
    if configs.is_empty() {
        return;
    }
    let mut every = tokio::time::interval(RELOAD_CHECK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        for config in &configs {
            config.reload_if_changed();
        }
    }
}

fn stamp(files: &TlsFiles) -> Stamp {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| {
        // Follows symlinks: a Secret volume swaps a `..data` link.
        let meta = std::fs::metadata(path).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    })
    .collect()
}

fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "the {what} {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(certs)
}

fn build(files: &TlsFiles, alpn: &[Vec<u8>]) -> Result<ServerConfig, String> {
    let certs = certificates(&files.cert, "certificate file (--tls-cert)")?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        format!(
            "cannot read a PEM private key from {} (--tls-key): {e}",
            files.key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(ca, "client CA file (--tls-client-ca)")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("a certificate in {} is unusable: {e}", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("cannot verify clients with {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(certs, key).map_err(|e| {
        format!(
            "the key {} does not fit the certificate {}: {e}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

/// TLS connections from accepted TCP connections: each handshake in a task of its own,
/// failures logged and dropped.
pub fn handshakes(
    mut tcp: impl Stream<Item = io::Result<TcpStream>> + Send + Unpin + 'static,
    config: Arc<TlsConfig>,
) -> ReceiverStream<TlsStream<TcpStream>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(accepted) = tcp.next().await {
            if tx.is_closed() {
                break;
            }
            let stream = match accepted {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::debug!(%error, "accept failed");
                    continue;
                }
            };
            let acceptor = config.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(tls).await;
                    }
                    Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// An axum listener serving TLS connections.
pub struct TlsListener {
    connections: ReceiverStream<TlsStream<TcpStream>>,
    local: SocketAddr,
}

impl TlsListener {
    /// TLS over `listener`'s connections (Nagle off, as for plain HTTP).
    pub fn new(listener: tokio::net::TcpListener, config: Arc<TlsConfig>) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let tcp = Box::pin(super::tcp_incoming(listener));
        Ok(Self {
            connections: handshakes(tcp, config),
            local,
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.connections.next().await {
                Some(tls) => {
                    let peer = tls
                        .get_ref()
                        .0
                        .peer_addr()
                        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
                    return (tls, peer);
                }
                // The accept loop ended (its listener failed): accept nothing more.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests;
