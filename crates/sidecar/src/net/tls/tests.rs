//! TLS configuration: handshakes with the configured certificate, rotation without a
//! restart, a broken rotation keeping the previous certificate, and client certificates.

use super::*;

struct Files {
    dir: tempfile::TempDir,
    files: TlsFiles,
}

fn write_cert(dir: &Path, name: &str) -> rcgen::CertifiedKey<rcgen::KeyPair> {
    let made = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    std::fs::write(dir.join("cert.pem"), made.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), made.signing_key.serialize_pem()).unwrap();
    made
}

fn files() -> Files {
    let dir = tempfile::tempdir().unwrap();
    write_cert(dir.path(), "localhost");
    let files = TlsFiles {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
        client_ca: None,
    };
    Files { dir, files }
}

/// Connects with a client that accepts any certificate; returns the server's certificate
/// and the negotiated protocol, or the handshake error.
async fn handshake(
    config: &TlsConfig,
    client_identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
    #[derive(Debug)]
    struct AnyServer(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &rustls_pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                m,
                c,
                d,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    let mut client = match client_identity {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    client.alpn_protocols = vec![b"h2".to_vec()];
    let (a, b) = tokio::io::duplex(64 * 1024);
    let acceptor = config.acceptor();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tls = acceptor.accept(b).await.map_err(|e| e.to_string())?;
        let mut byte = [0_u8; 1];
        tls.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
        tls.write_all(b"y").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        Ok::<(), String>(())
    });
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let result = async {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut tls = connector
            .connect(name, a)
            .await
            .map_err(|e| e.to_string())?;
        // TLS 1.3 client certificates are checked after the client's handshake ends:
        // a write and the server's answer show whether it was accepted.
        tls.write_all(b"x").await.map_err(|e| e.to_string())?;
        tls.flush().await.map_err(|e| e.to_string())?;
        let mut answer = [0_u8; 1];
        tls.read_exact(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        let (_, session) = tls.get_ref();
        let cert = session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        Ok((cert, session.alpn_protocol().map(<[u8]>::to_vec)))
    }
    .await;
    let served = server.await.unwrap();
    match (served, result) {
        (Ok(()), result) => result,
        (Err(server), Err(client)) => Err(format!("{server}; client: {client}")),
        (Err(server), Ok(_)) => Err(server),
    }
}

#[tokio::test]
async fn the_certificate_is_served_and_a_rotation_is_picked_up() {
    let f = files();
    let first = std::fs::read(&f.files.cert).unwrap();
    let config = TlsConfig::load(&f.files, &[b"h2"]).unwrap();
    let (served, alpn) = handshake(&config, None).await.unwrap();
    let first_der = CertificateDer::pem_slice_iter(&first)
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(served, first_der.to_vec());
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert!(!config.reload_if_changed(), "nothing changed yet");

    // cert-manager writes a new pair: new connections get it, without a restart.
    std::thread::sleep(Duration::from_millis(20));
    let second = write_cert(f.dir.path(), "localhost");
    assert!(config.reload_if_changed());
    let (served, _) = handshake(&config, None).await.unwrap();
    assert_eq!(served, second.cert.der().to_vec());

    // A broken rotation is logged and the previous certificate kept.
    std::fs::write(&f.files.key, "-----BEGIN PRIVATE KEY-----\nbroken\n").unwrap();
    assert!(!config.reload_if_changed());
    let (served, _) = handshake(&config, None).await.unwrap();
    assert_eq!(served, second.cert.der().to_vec());
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_from_the_ca() {
    let f = files();
    // A CA and a client certificate it signed.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let client_key = rcgen::KeyPair::generate().unwrap();
    let client = rcgen::CertificateParams::new(vec!["agent".to_owned()])
        .unwrap()
        .signed_by(&client_key, &issuer)
        .unwrap();
    let ca_path = f.dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    let files = TlsFiles {
        client_ca: Some(ca_path),
        ..f.files.clone()
    };
    let config = TlsConfig::load(&files, &[b"h2"]).unwrap();
    let identity = || {
        (
            vec![client.der().clone()],
            PrivateKeyDer::try_from(client_key.serialize_der()).unwrap(),
        )
    };
    handshake(&config, Some(identity())).await.unwrap();
    let refused = handshake(&config, None).await.unwrap_err();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");
    // A certificate the CA did not sign is refused too.
    let stranger = rcgen::generate_simple_self_signed(vec!["agent".to_owned()]).unwrap();
    let refused = handshake(
        &config,
        Some((
            vec![stranger.cert.der().clone()],
            PrivateKeyDer::try_from(stranger.signing_key.serialize_der()).unwrap(),
        )),
    )
    .await
    .unwrap_err();
    assert!(!refused.is_empty());
}

#[test]
fn unreadable_files_are_named_with_their_flag() {
    let f = files();
    let missing = TlsFiles {
        key: f.dir.path().join("nope.pem"),
        ..f.files.clone()
    };
    let error = TlsConfig::load(&missing, &[b"h2"]).unwrap_err();
    assert!(
        error.contains("--tls-key") && error.contains("nope.pem"),
        "{error}"
    );
    std::fs::write(f.dir.path().join("empty.pem"), "").unwrap();
    let empty = TlsFiles {
        cert: f.dir.path().join("empty.pem"),
        ..f.files
    };
    let error = TlsConfig::load(&empty, &[b"h2"]).unwrap_err();
    assert!(error.contains("no PEM certificate"), "{error}");
}
