//! Real TLS handshakes (tokio-rustls client and server over loopback) against the
//! generated dev PKI and the reloading resolver.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rtcgate_certs::{
    CertError, DevPkiStatus, ReloadOutcome, ReloadingCertResolver, generate_dev_pki,
    load_certified_key, parse_cert_chain, server_config,
};
use rustls::RootCertStore;
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Starts a TLS server on a free loopback port that completes handshakes and hangs up.
async fn start_server(resolver: Arc<ReloadingCertResolver>) -> SocketAddr {
    let config = server_config(resolver, &[b"http/1.1"]).unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    addr
}

fn roots(ca_files: &[&Path]) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for f in ca_files {
        let pem = std::fs::read(f).unwrap();
        for der in parse_cert_chain(&pem, f).unwrap() {
            roots.add(der).unwrap();
        }
    }
    roots
}

/// Handshakes as `name` and returns the leaf DER the server presented.
async fn handshake(addr: SocketAddr, roots: RootCertStore, name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let tls = tokio::time::timeout(Duration::from_secs(5), connector.connect(server_name, tcp))
        .await
        .expect("handshake timed out")
        .expect("handshake failed");
    let (_, conn) = tls.get_ref();
    assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    conn.peer_certificates().unwrap()[0].to_vec()
}

fn leaf_der(cert_file: &Path) -> Vec<u8> {
    let pem = std::fs::read(cert_file).unwrap();
    parse_cert_chain(&pem, cert_file).unwrap()[0].to_vec()
}

/// Copies a PKI's leaf files over the served ones the way deploy tools do: write aside, rename.
fn install(from_cert: &Path, from_key: &Path, to_cert: &Path, to_key: &Path) {
    for (from, to) in [(from_key, to_key), (from_cert, to_cert)] {
        let tmp = to.with_extension("new");
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, to).unwrap();
    }
}

#[tokio::test]
async fn generated_pki_serves_a_trusted_handshake_for_every_default_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = generate_dev_pki(dir.path(), &[]).unwrap();
    assert_eq!(pki.status, DevPkiStatus::Generated);
    let resolver = ReloadingCertResolver::new(&pki.cert, &pki.key).unwrap();
    let addr = start_server(resolver).await;
    for name in ["localhost", "127.0.0.1", "::1"] {
        let leaf = handshake(addr, roots(&[&pki.ca_cert]), name).await;
        assert_eq!(leaf, leaf_der(&pki.cert), "leaf presented for {name}");
    }
}

#[tokio::test]
async fn untrusted_ca_fails_the_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let other = tempfile::tempdir().unwrap();
    let pki = generate_dev_pki(dir.path(), &[]).unwrap();
    let other_pki = generate_dev_pki(other.path(), &[]).unwrap();
    let resolver = ReloadingCertResolver::new(&pki.cert, &pki.key).unwrap();
    let addr = start_server(resolver).await;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(&[&other_pki.ca_cert]))
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let res = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await;
    assert!(
        res.is_err(),
        "a client that does not trust the CA must fail"
    );
}

#[tokio::test]
async fn replaced_files_are_served_on_the_next_handshake_without_restart() {
    let dir = tempfile::tempdir().unwrap();
    let second = tempfile::tempdir().unwrap();
    let pki = generate_dev_pki(dir.path(), &[]).unwrap();
    let new_pki = generate_dev_pki(second.path(), &[]).unwrap();
    let resolver = ReloadingCertResolver::new(&pki.cert, &pki.key).unwrap();
    let watcher = resolver.spawn_watcher(Duration::from_millis(50));
    let addr = start_server(resolver.clone()).await;
    let trust = || roots(&[&pki.ca_cert, &new_pki.ca_cert]);

    let old_leaf = leaf_der(&pki.cert);
    assert_eq!(handshake(addr, trust(), "localhost").await, old_leaf);

    install(&new_pki.cert, &new_pki.key, &pki.cert, &pki.key);
    let new_leaf = leaf_der(&new_pki.cert);
    assert_ne!(old_leaf, new_leaf);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = handshake(addr, trust(), "localhost").await;
        if seen == new_leaf {
            break;
        }
        assert_eq!(seen, old_leaf, "only the old or the new leaf may be served");
        assert!(Instant::now() < deadline, "new leaf not served within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watcher.abort();
}

#[tokio::test]
async fn broken_replacement_keeps_the_old_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = generate_dev_pki(dir.path(), &[]).unwrap();
    let resolver = ReloadingCertResolver::new(&pki.cert, &pki.key).unwrap();
    let watcher = resolver.spawn_watcher(Duration::from_millis(20));
    let addr = start_server(resolver.clone()).await;
    let old_leaf = leaf_der(&pki.cert);

    std::fs::write(&pki.cert, b"-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
    let err = resolver.reload_now().unwrap_err();
    assert!(matches!(err, CertError::Pem { .. }), "{err}");
    assert!(err.to_string().contains("cert.pem"), "{err}");
    // Give the watcher several polls over the broken file too.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        handshake(addr, roots(&[&pki.ca_cert]), "localhost").await,
        old_leaf
    );

    std::fs::write(&pki.cert, b"just text, no PEM at all\n").unwrap();
    let err = resolver.reload_now().unwrap_err();
    assert!(matches!(err, CertError::NoCertificate { .. }), "{err}");
    assert!(err.to_string().contains("no certificate found"), "{err}");
    assert_eq!(
        handshake(addr, roots(&[&pki.ca_cert]), "localhost").await,
        old_leaf
    );
    watcher.abort();
}

#[tokio::test]
async fn reload_now_reports_unchanged_only_for_polls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = generate_dev_pki(dir.path(), &[]).unwrap();
    let resolver = ReloadingCertResolver::new(&pki.cert, &pki.key).unwrap();
    assert_eq!(
        resolver.reload_if_changed().unwrap(),
        ReloadOutcome::Unchanged
    );
    match resolver.reload_now().unwrap() {
        ReloadOutcome::Reloaded(Some(info)) => {
            assert_eq!(info.subject, "CN=rtcgate dev leaf");
            assert!(info.names.contains(&"::1".to_owned()), "{:?}", info.names);
        }
        other => panic!("expected a reload, got {other:?}"),
    }
}

#[test]
fn mismatched_key_is_refused_with_a_clear_error() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let pa = generate_dev_pki(a.path(), &[]).unwrap();
    let pb = generate_dev_pki(b.path(), &[]).unwrap();
    let err = load_certified_key(&pa.cert, &pb.key).unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("does not match"), "{msg}");
    assert!(msg.contains(&pa.cert.display().to_string()), "{msg}");
    assert!(msg.contains(&pb.key.display().to_string()), "{msg}");
    let err = ReloadingCertResolver::new(&pa.cert, &pb.key).unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
}

#[test]
fn missing_or_keyless_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = generate_dev_pki(dir.path(), &[]).unwrap();
    // A certificate file given as the key: no private key in it.
    let err = load_certified_key(&pki.cert, &pki.cert).unwrap_err();
    assert!(matches!(err, CertError::NoPrivateKey { .. }), "{err}");
    let missing = dir.path().join("nope.pem");
    let err = load_certified_key(&missing, &pki.key).unwrap_err();
    assert!(matches!(err, CertError::Io { .. }), "{err}");
    assert!(err.to_string().contains("nope.pem"), "{err}");
}
