//! Shared helpers for the gateway's integration tests.
#![allow(dead_code)]

pub mod rtpengine;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rtcgate::app::App;
use rtcgate::config::Config;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;

/// A gateway on free loopback ports with a dev certificate in a temp dir.
pub struct TestGateway {
    pub app: App,
    pub dir: tempfile::TempDir,
}

impl TestGateway {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        // TEST_LOG=rtcgate=debug shows the gateway's logs in failing tests.
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_test_writer()
                .try_init();
        }
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.sip.udp_listen = vec!["127.0.0.1:0".parse().unwrap()];
        config.websocket.wss_listen = vec!["127.0.0.1:0".parse().unwrap()];
        config.websocket.ws_listen = vec!["127.0.0.1:0".parse().unwrap()];
        config.tls.cert = dir.path().join("certs/cert.pem");
        config.tls.key = dir.path().join("certs/key.pem");
        config.tls.reload_check_ms = 100;
        config.database.url = format!("sqlite://{}/rtcgate.db?mode=rwc", dir.path().display());
        // Most tests are about routing; the auth tests switch it back on.
        config.auth.required = false;
        // Signalling tests run without rtpengine; media tests point it at theirs.
        config.rtpengine.enabled = false;
        tweak(&mut config);
        let app = App::start(config, None).await.unwrap();
        Self { app, dir }
    }

    pub fn udp(&self) -> SocketAddr {
        self.app.server.udp_addrs[0]
    }
    pub fn wss(&self) -> SocketAddr {
        self.app.server.wss_addrs[0]
    }
    pub fn ws(&self) -> SocketAddr {
        self.app.server.ws_addrs[0]
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("certs/ca.pem")
    }
}

/// A TLS client config trusting the given CA file.
pub fn client_tls(ca: &Path) -> Arc<rustls::ClientConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

pub type Ws = WebSocketStream<Box<dyn AsyncStream>>;
pub trait AsyncStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> AsyncStream for T {}

/// Opens a SIP WebSocket; `tls` = Some(ca) for WSS. Returns the HTTP status
/// on refusal.
pub async fn ws_connect(
    addr: SocketAddr,
    tls: Option<&Path>,
    subprotocol: Option<&str>,
    origin: Option<&str>,
) -> Result<Ws, u16> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let stream: Box<dyn AsyncStream> = match tls {
        Some(ca) => {
            let connector = tokio_rustls::TlsConnector::from(client_tls(ca));
            let s = connector
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap();
            Box::new(s)
        }
        None => Box::new(tcp),
    };
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    let mut req = format!("{scheme}://localhost:{}/", addr.port())
        .into_client_request()
        .unwrap();
    if let Some(p) = subprotocol {
        req.headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
    }
    if let Some(o) = origin {
        req.headers_mut()
            .insert("Origin", HeaderValue::from_str(o).unwrap());
    }
    match tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::client_async(req, stream),
    )
    .await
    .expect("handshake timed out")
    {
        Ok((ws, resp)) => {
            assert_eq!(
                resp.headers()
                    .get("sec-websocket-protocol")
                    .map(|v| v.to_str().unwrap()),
                Some("sip")
            );
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("unexpected handshake error: {e}"),
    }
}

/// Next text/binary message as a string, within 5 s.
pub async fn ws_recv(ws: &mut Ws) -> String {
    use futures_util::StreamExt;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("no message within 5 s")
            .expect("stream ended")
            .expect("ws error");
        match m {
            Message::Text(t) => return t.to_string(),
            Message::Binary(b) => return String::from_utf8_lossy(&b).into_owned(),
            _ => continue,
        }
    }
}

pub async fn ws_send(ws: &mut Ws, text: &str) {
    use futures_util::SinkExt;
    ws.send(Message::text(text.to_owned())).await.unwrap();
}

/// An OPTIONS request addressed to the gateway itself.
pub fn options(transport: &str, branch: &str, host: &str) -> String {
    format!(
        "OPTIONS sip:{host} SIP/2.0\r\nVia: SIP/2.0/{transport} client.invalid;branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\nFrom: <sip:probe@client.invalid>;tag=t{branch}\r\nTo: <sip:{host}>\r\nCall-ID: {branch}@client.invalid\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

/// Whether a required external service/binary may be skipped (only outside CI).
pub fn require(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} is required in CI but missing");
    }
    eprintln!("SKIPPED: {what} not available");
    false
}

pub fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(bin))
        .find(|p| p.is_file())
}
