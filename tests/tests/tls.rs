//! TLS across real processes: a CA-signed certificate served on runlens.v1, OTLP gRPC and
//! /metrics; the Rust client with a CA file and with a client certificate (mutual TLS); a
//! plain-text client refused; and a certificate rotated on disk picked up without a restart.

// Test helpers report failures by panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use runlens_e2e::Sidecar;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pki {
    dir: tempfile::TempDir,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Pki {
    fn new() -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "runlens test CA");
        let ca = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        Self {
            dir,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues a certificate for `names` into `<stem>.pem` and `<stem>-key.pem`; its DER.
    fn issue(&self, stem: &str, names: &[&str]) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        // Written beside and renamed, as a Secret update is: never half a file.
        for (name, text) in [
            (format!("{stem}.pem"), cert.pem()),
            (format!("{stem}-key.pem"), key.serialize_pem()),
        ] {
            let tmp = self.path(&format!("{name}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, self.path(&name)).unwrap();
        }
        cert.der().to_vec()
    }
}

fn tls_sidecar(pki: &Pki, db: &Path, extra: &[&str]) -> Sidecar {
    let cert = pki.path("server.pem");
    let key = pki.path("server-key.pem");
    let mut args = vec![
        "--sample-interval",
        "100ms",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    Sidecar::start_on(db, &args)
}

fn port(addr: &str) -> u16 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

/// GET over TLS with a client that trusts the test CA: the status line and the server's
/// certificate.
async fn https_get(addr: &str, path: &str, ca: &Path) -> (String, Vec<u8>) {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let text = String::from_utf8_lossy(&answer).into_owned();
    (text.lines().next().unwrap_or_default().to_owned(), cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tcp_listener_speaks_tls_and_a_rotated_certificate_is_picked_up() {
    let pki = Pki::new();
    let first = pki.issue("server", &["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let sidecar = tls_sidecar(&pki, &dir.path().join("tls.db"), &[]);
    let endpoint = format!("https://localhost:{}", port(&sidecar.addr));

    // The Rust client, trusting the CA, stores a run.
    let client = runlens_client::Client::builder(&endpoint)
        .name("over-tls")
        .ca_file(pki.path("ca.pem"))
        .build()
        .unwrap();
    let run = client.start_run("encrypted");
    run.span("step").end_ok();
    run.end_ok();
    client.shutdown(Duration::from_secs(10)).await.unwrap();
    assert_eq!(sidecar.count("SELECT count(*) FROM spans"), 1);

    // Plain text to a TLS port gets nowhere.
    let plain = tokio::time::timeout(
        Duration::from_secs(5),
        runlens_api::pb::runlens_client::RunlensClient::connect(sidecar.endpoint()),
    )
    .await;
    if let Ok(Ok(mut plain)) = plain {
        let refused = plain
            .start_run(runlens_api::pb::StartRunRequest {
                run_id: "plain".into(),
                name: "plain".into(),
                ..Default::default()
            })
            .await;
        assert!(refused.is_err(), "a plain-text call was answered");
    }

    // OTLP over gRPC with TLS.
    let otlp = sidecar.otlp_grpc.clone().unwrap();
    let channel =
        tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", port(&otlp)))
            .unwrap()
            .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(
                tonic::transport::Certificate::from_pem(std::fs::read(pki.path("ca.pem")).unwrap()),
            ))
            .unwrap()
            .connect()
            .await
            .unwrap();
    opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::new(channel)
        .export(opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::default())
        .await
        .unwrap();

    // /metrics over HTTPS, with the first certificate.
    let metrics = format!("localhost:{}", port(&sidecar.metrics.clone().unwrap()));
    let (status, served) = https_get(&metrics, "/metrics", &pki.path("ca.pem")).await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert_eq!(served, first);

    // The certificate is rotated on disk: new connections get the new one, no restart.
    let second = pki.issue("server", &["localhost"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, served) = https_get(&metrics, "/metrics", &pki.path("ca.pem")).await;
        assert_eq!(status, "HTTP/1.1 200 OK");
        if served == second {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rotated certificate was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_takes_clients_with_a_certificate_from_the_ca_only() {
    let pki = Pki::new();
    pki.issue("server", &["localhost"]);
    pki.issue("agent", &["agent"]);
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.path("ca.pem");
    // A non-loopback listener is fine with TLS (no token needed).
    let sidecar = tls_sidecar(
        &pki,
        &dir.path().join("mtls.db"),
        &["--tls-client-ca", ca.to_str().unwrap()],
    );
    let endpoint = format!("https://localhost:{}", port(&sidecar.addr));
    let with_cert = runlens_client::Client::builder(&endpoint)
        .name("with-cert")
        .ca_file(&ca)
        .client_identity(pki.path("agent.pem"), pki.path("agent-key.pem"))
        .build()
        .unwrap();
    with_cert.start_run("mutual").end_ok();
    with_cert.shutdown(Duration::from_secs(10)).await.unwrap();
    let without = runlens_client::Client::builder(&endpoint)
        .name("without-cert")
        .ca_file(&ca)
        .build()
        .unwrap();
    without.start_run("refused").end_ok();
    assert!(without.shutdown(Duration::from_secs(2)).await.is_err());
    assert_eq!(sidecar.count("SELECT count(*) FROM runs"), 1);
    assert_eq!(
        sidecar.count("SELECT count(*) FROM runs WHERE name = 'mutual'"),
        1
    );
}

#[test]
fn tls_alone_allows_a_listener_beyond_loopback() {
    let pki = Pki::new();
    pki.issue("server", &["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    let cert = pki.path("server.pem");
    let key = pki.path("server-key.pem");
    let mut open = Sidecar::start_at(
        "0.0.0.0:0",
        &dir.path().join("open.db"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    open.stop();
}
