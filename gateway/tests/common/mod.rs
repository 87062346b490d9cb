//! Shared helpers for the gateway's integration tests.
#![allow(dead_code)]

pub mod db;
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
        // Many gateways run at once: the admin API on a free port.
        config.admin.listen = "127.0.0.1:0".parse().unwrap();
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
    pub fn admin(&self) -> SocketAddr {
        self.app.admin_addr().expect("admin listener enabled")
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
    let mut headers = Vec::new();
    if let Some(p) = subprotocol {
        headers.push(("Sec-WebSocket-Protocol", p));
    }
    if let Some(o) = origin {
        headers.push(("Origin", o));
    }
    ws_connect_with_headers(addr, tls, &headers).await
}

/// Like [`ws_connect`] with the extra handshake headers given, in order
/// (a name may repeat, e.g. two `Origin` headers).
pub async fn ws_connect_with_headers(
    addr: SocketAddr,
    tls: Option<&Path>,
    headers: &[(&'static str, &str)],
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
    for (name, value) in headers {
        req.headers_mut()
            .append(*name, HeaderValue::from_str(value).unwrap());
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

/// A free UDP port on loopback (bound then released; sipp binds it next).
pub fn pick_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real sipp process (killed on drop) running a scenario from
/// `tests/sipp/`, with its logs in a temp dir that is printed on failure.
pub struct SippRun {
    child: tokio::process::Child,
    work: tempfile::TempDir,
    /// The local UDP port sipp listens on.
    pub port: u16,
}

impl SippRun {
    /// Starts `sipp -sf tests/sipp/<scenario> -i 127.0.0.1 -p <port>` plus
    /// `args`; `None` when sipp is not installed (the caller decides with
    /// [`require`]). Always bounded by `-timeout_error` and a `-timeout`
    /// (25 s unless `args` give their own).
    pub fn spawn(scenario: &str, args: &[&str]) -> Option<Self> {
        let scenario = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/sipp")
            .join(scenario);
        Self::spawn_file(&scenario, args)
    }

    /// Like [`SippRun::spawn`] with a scenario file anywhere (e.g.
    /// [`loadtest_scenario`]).
    pub fn spawn_file(scenario: &Path, args: &[&str]) -> Option<Self> {
        let sipp = which("sipp")?;
        let work = tempfile::tempdir().unwrap();
        let port = pick_udp_port();
        let timeout = if args.contains(&"-timeout") {
            &[][..]
        } else {
            &["-timeout", "25s"][..]
        };
        let child = tokio::process::Command::new(sipp)
            .current_dir(work.path())
            .arg("-sf")
            .arg(scenario)
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .args(timeout)
            .args(["-nostdin", "-timeout_error", "-trace_err", "-trace_msg"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Some(Self { child, work, port })
    }

    /// Waits (bounded) for sipp to exit; true on exit status 0. On failure
    /// (or with `SIPP_DUMP` set) prints sipp's stderr and every log file it
    /// wrote.
    pub async fn finish(mut self, within: Duration) -> bool {
        let status = match tokio::time::timeout(within, self.child.wait()).await {
            Ok(s) => s.unwrap(),
            Err(_) => {
                eprintln!("sipp did not finish within {within:?}; killing it");
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                self.dump().await;
                return false;
            }
        };
        if !status.success() || std::env::var_os("SIPP_DUMP").is_some() {
            eprintln!("sipp exited with {status}");
            self.dump().await;
        }
        status.success()
    }

    async fn dump(&mut self) {
        use tokio::io::AsyncReadExt;
        if let Some(mut err) = self.child.stderr.take() {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s).await;
            eprintln!("--- sipp stderr:\n{s}");
        }
        if let Ok(entries) = std::fs::read_dir(self.work.path()) {
            for e in entries.flatten() {
                eprintln!(
                    "--- {}:\n{}",
                    e.path().display(),
                    std::fs::read_to_string(e.path()).unwrap_or_default()
                );
            }
        }
    }
}

/// A scenario of `loadtest/scenarios/`.
pub fn loadtest_scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../loadtest/scenarios")
        .join(name)
}

/// Header values of a SIP message in text form, by full or compact name,
/// comma-separated lists split (Via, Route, Record-Route...).
pub fn sip_header_values(msg: &str, name: &str) -> Vec<String> {
    let compact = match name.to_ascii_lowercase().as_str() {
        "via" => Some("v"),
        "from" => Some("f"),
        "to" => Some("t"),
        "call-id" => Some("i"),
        "contact" => Some("m"),
        "content-length" => Some("l"),
        "content-type" => Some("c"),
        _ => None,
    };
    let head = msg.split("\r\n\r\n").next().unwrap_or("");
    head.lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| {
            let n = n.trim();
            n.eq_ignore_ascii_case(name) || compact.is_some_and(|c| n.eq_ignore_ascii_case(c))
        })
        .flat_map(|(_, v)| {
            let v = v.trim();
            if matches!(
                name.to_ascii_lowercase().as_str(),
                "via" | "route" | "record-route" | "contact"
            ) {
                rtcgate::proxy::route::split_list(v)
            } else {
                vec![v.to_owned()]
            }
        })
        .collect()
}

/// The first value of a header (panics when absent, naming it).
pub fn sip_header(msg: &str, name: &str) -> String {
    sip_header_values(msg, name)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no {name} header in:\n{msg}"))
}

/// Status code of a response (None for a request).
pub fn sip_status(msg: &str) -> Option<u16> {
    let first = msg.lines().next()?;
    let rest = first.strip_prefix("SIP/2.0 ")?;
    rest.split(' ').next()?.parse().ok()
}

/// Method of a request (None for a response).
pub fn sip_method(msg: &str) -> Option<String> {
    let first = msg.lines().next()?;
    if first.starts_with("SIP/2.0") {
        return None;
    }
    first.split(' ').next().map(str::to_owned)
}

/// The method named by the CSeq header.
pub fn sip_cseq_method(msg: &str) -> String {
    sip_header(msg, "CSeq")
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

/// The body of a SIP message in text form.
pub fn sip_body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// The next datagram on `sock` within `wait`, as text (None on timeout).
pub async fn udp_recv_within(sock: &tokio::net::UdpSocket, wait: Duration) -> Option<String> {
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(wait, sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The next final response on `sock` within 5 s (provisional ones skipped;
/// panics otherwise).
pub async fn udp_final(sock: &tokio::net::UdpSocket) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = udp_recv_within(sock, left)
            .await
            .expect("no final response over UDP within 5 s");
        if sip_status(&m).is_some_and(|c| c >= 200) {
            return m;
        }
    }
}

/// Next WebSocket message within `wait`, None on timeout.
pub async fn ws_recv_within(ws: &mut Ws, wait: Duration) -> Option<String> {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let m = tokio::time::timeout_at(deadline, ws.next()).await.ok()?;
        match m.expect("stream ended").expect("ws error") {
            Message::Text(t) => return Some(t.to_string()),
            Message::Binary(b) => return Some(String::from_utf8_lossy(&b).into_owned()),
            _ => continue,
        }
    }
}

impl SippRun {
    /// Kills sipp now and prints its stderr and logs (for a failing test).
    pub async fn abort_and_dump(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
        self.dump().await;
    }
}

impl SippRun {
    /// Like [`SippRun::finish`], also returning the text of every log file
    /// sipp wrote (e.g. to count its "voluntary lost" messages).
    pub async fn finish_with_logs(mut self, within: Duration) -> (bool, String) {
        let ok = match tokio::time::timeout(within, self.child.wait()).await {
            Ok(s) => s.unwrap().success(),
            Err(_) => {
                eprintln!("sipp did not finish within {within:?}; killing it");
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                false
            }
        };
        let mut text = String::new();
        if let Ok(entries) = std::fs::read_dir(self.work.path()) {
            for e in entries.flatten() {
                text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
        if !ok || std::env::var_os("SIPP_DUMP").is_some() {
            self.dump().await;
        }
        (ok, text)
    }
}

// ------------------------------------------------ browser calls and digest

/// A fixture of `tests/fixtures/media/` with CRLF line ends (SDP as a
/// browser sends it).
pub fn media_fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/media")
            .join(name),
    )
    .unwrap()
    .replace("\r\n", "\n")
    .replace('\n', "\r\n")
}

/// Chrome's WebRTC offer (ICE, DTLS-SRTP, SAVPF).
pub fn webrtc_offer() -> String {
    media_fixture("out-1_offer_browser-to-proxy_webrtc.sdp")
}

/// An initial INVITE from a browser-like WebSocket client to `user@localhost`
/// (From tag `f{call}`, Call-ID `{call}@br.invalid`).
pub fn ws_invite(call: &str, user: &str, sdp: &str) -> String {
    format!(
        "INVITE sip:{user}@localhost SIP/2.0\r\nVia: SIP/2.0/WSS br.invalid;branch=z9hG4bK{call}\r\nMax-Forwards: 70\r\nFrom: <sip:2000@localhost>;tag=f{call}\r\nTo: <sip:{user}@localhost>\r\nCall-ID: {call}@br.invalid\r\nCSeq: 1 INVITE\r\nContact: <sip:u@br.invalid;transport=ws;ob>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

/// Reads responses until a final one (5 s each); returns it and every
/// status seen.
pub async fn ws_final(ws: &mut Ws) -> (String, Vec<u16>) {
    let mut seen = Vec::new();
    loop {
        let r = ws_recv(ws).await;
        let code = sip_status(&r).unwrap_or(0);
        seen.push(code);
        if code >= 200 {
            return (r, seen);
        }
    }
}

/// A request inside the dialog the 2xx `ok` (to [`ws_invite`] `call`)
/// set up: Route from its Record-Route, Request-URI from its Contact.
pub fn ws_in_dialog(method: &str, cseq: u32, call: &str, ok: &str) -> String {
    let route: String = sip_header_values(ok, "Record-Route")
        .iter()
        .rev()
        .map(|r| format!("Route: {r}\r\n"))
        .collect();
    let to = sip_header(ok, "To");
    let target = rtcgate::proxy::route::uri_of(&sip_header(ok, "Contact")).to_owned();
    format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/WSS br.invalid;branch=z9hG4bK{call}{method}{cseq}\r\nMax-Forwards: 70\r\n{route}From: <sip:2000@localhost>;tag=f{call}\r\nTo: {to}\r\nCall-ID: {call}@br.invalid\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A parameter of a `WWW-Authenticate`/`Proxy-Authenticate` value.
pub fn digest_param<'a>(challenge: &'a str, name: &str) -> Option<&'a str> {
    challenge.split(',').find_map(|p| {
        let p = p.trim().trim_start_matches("Digest ").trim();
        let (n, v) = p.split_once('=')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().trim_matches('"'))
    })
}

/// An Authorization value answering the MD5 `challenge` with qop=auth and
/// nonce count `nc`, as SIP.js would.
pub fn digest_authorization(
    challenge: &str,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
) -> String {
    use rtcgate::auth::{Algorithm, ha1, response};
    let realm = digest_param(challenge, "realm").unwrap();
    let nonce = digest_param(challenge, "nonce").unwrap();
    let opaque = digest_param(challenge, "opaque");
    let h1 = ha1(Algorithm::Md5, user, realm, password);
    let nc = format!("{nc:08x}");
    let resp = response(
        Algorithm::Md5,
        &h1,
        nonce,
        method,
        uri,
        Some((&nc, "0a4f113b", "auth")),
    );
    let mut v = format!(
        "Digest algorithm=MD5, username={}, realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", qop=auth, cnonce=\"0a4f113b\", nc={nc}",
        // The user name is a quoted-string: quotes and backslashes escaped.
        rtcgate::auth::quote(user)
    );
    if let Some(o) = opaque {
        v.push_str(&format!(", opaque=\"{o}\""));
    }
    v
}

/// A static route sending every `1xxx` call to a PBX on `127.0.0.1:port`.
pub fn route_to(port: u16) -> Vec<rtcgate::config::StaticRoute> {
    vec![rtcgate::config::StaticRoute {
        prefix: "1".into(),
        destination: format!("127.0.0.1:{port}").parse().unwrap(),
        codec_policy: None,
    }]
}

/// A sipp PBX answering every call (`loadtest/scenarios/pbx_uas.xml`), for
/// up to a minute, killed when dropped.
pub fn answering_pbx() -> SippRun {
    let mp = pick_udp_port().to_string();
    SippRun::spawn_file(
        &loadtest_scenario("pbx_uas.xml"),
        &["-mp", &mp, "-timeout", "60s"],
    )
    .expect("sipp")
}

/// BYE for the [`ws_invite`] call `call` that `ok` answered; asserts its
/// 200 and returns how long it took.
pub async fn ws_hang_up(ws: &mut Ws, call: &str, ok: &str) -> Duration {
    let t0 = std::time::Instant::now();
    ws_send(ws, &ws_in_dialog("BYE", 2, call, ok)).await;
    loop {
        let r = ws_recv(ws).await;
        if sip_cseq_method(&r) == "BYE" && sip_status(&r).is_some_and(|c| c >= 200) {
            assert_eq!(sip_status(&r), Some(200), "BYE of {call}: {r}");
            return t0.elapsed();
        }
    }
}
