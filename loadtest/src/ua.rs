//! One simulated browser: a SIP-over-WebSocket user agent shaped like SIP.js
//! (`.invalid` Via host and Contact, WSS transport, digest with qop), that
//! registers, places calls with a WebRTC offer, holds and hangs up, and
//! answers the requests that reach it (OPTIONS, INVITE from a PBX, BYE).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::digest::Challenge;
use crate::sdp;
use crate::sip::{self, Message};
use crate::stats::{Counters, reason_code};

/// A byte stream a WebSocket can run over (TCP or TLS over TCP).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What every simulated browser shares.
pub struct UaConfig {
    /// The WebSocket URL (`wss://host:port/` or `ws://...`).
    pub url: String,
    /// Where to connect.
    pub server: SocketAddr,
    /// TLS client settings and the name to check; `None` for `ws://`.
    pub tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    /// The `Origin` header of the upgrade.
    pub origin: Option<String>,
    /// The SIP domain of the users.
    pub domain: String,
    /// Every user's password.
    pub password: String,
    /// Requested registration lifetime.
    pub expires: u32,
    /// How long to wait for any final response.
    pub timeout: Duration,
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum UaError {
    /// Socket error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// WebSocket error or refused upgrade.
    #[error("websocket: {0}")]
    Ws(String),
    /// No final response in time.
    #[error("timeout waiting for {0}")]
    Timeout(&'static str),
    /// The connection closed.
    #[error("connection closed")]
    Closed,
    /// A final response other than the one expected.
    #[error("status {0}")]
    Status(u16),
    /// A challenge we cannot answer.
    #[error("digest: {0}")]
    Digest(#[from] crate::digest::DigestError),
    /// A response without what it must carry.
    #[error("malformed response: {0}")]
    Malformed(&'static str),
}

impl UaError {
    /// The key failures are counted under in the report.
    pub fn reason(&self) -> String {
        match self {
            UaError::Status(c) => reason_code(Some(*c), ""),
            UaError::Timeout(_) => "timeout".into(),
            UaError::Closed => "closed".into(),
            UaError::Io(_) => "io".into(),
            UaError::Ws(_) => "websocket".into(),
            UaError::Digest(_) => "digest".into(),
            UaError::Malformed(_) => "malformed".into(),
        }
    }
}

/// Orders for a connected browser.
#[derive(Debug)]
pub enum Command {
    /// Call `callee` (a user part), hold for the duration, hang up.
    Call {
        /// The user part to call.
        callee: String,
        /// How long to stay in the call.
        hold: Duration,
    },
}

/// A connected browser.
pub struct Ua {
    ws: WebSocketStream<Box<dyn Io>>,
    cfg: Arc<UaConfig>,
    stats: Arc<Counters>,
    user: String,
    local_ip: IpAddr,
    host: String,
    contact: String,
    reg_call_id: String,
    reg_tag: String,
    cseq: u32,
    nc: u32,
    /// Dialogs we answered (Call-IDs), so their BYE is counted.
    received: Vec<String>,
}

/// Opens the TCP (+TLS) connection from `source` and upgrades it with the
/// `sip` subprotocol.
async fn open(
    cfg: &UaConfig,
    source: Option<IpAddr>,
) -> Result<(WebSocketStream<Box<dyn Io>>, IpAddr), UaError> {
    let socket = if cfg.server.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    // Small kernel buffers: tens of thousands of mostly idle connections.
    let _ = socket.set_recv_buffer_size(16 * 1024);
    let _ = socket.set_send_buffer_size(16 * 1024);
    let tcp = socket.connect(cfg.server).await?;
    let _ = tcp.set_nodelay(true);
    let local_ip = tcp.local_addr()?.ip();
    let stream: Box<dyn Io> = match &cfg.tls {
        Some((tls, name)) => {
            let connector = tokio_rustls::TlsConnector::from(tls.clone());
            Box::new(connector.connect(name.clone(), tcp).await?)
        }
        None => Box::new(tcp),
    };
    let mut req = cfg
        .url
        .as_str()
        .into_client_request()
        .map_err(|e| UaError::Ws(e.to_string()))?;
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
    if let Some(o) = &cfg.origin {
        let v = HeaderValue::from_str(o).map_err(|e| UaError::Ws(e.to_string()))?;
        req.headers_mut().insert("Origin", v);
    }
    let ws_cfg = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(64 * 1024));
    let (ws, resp) = tokio_tungstenite::client_async_with_config(req, stream, Some(ws_cfg))
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(r) => {
                UaError::Ws(format!("upgrade refused: {}", r.status()))
            }
            e => UaError::Ws(e.to_string()),
        })?;
    if resp
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        != Some("sip")
    {
        return Err(UaError::Ws("server did not accept subprotocol sip".into()));
    }
    Ok((ws, local_ip))
}

impl Ua {
    /// Connects user `user` from `source` (any local address when `None`).
    pub async fn connect(
        cfg: Arc<UaConfig>,
        stats: Arc<Counters>,
        user: String,
        source: Option<IpAddr>,
    ) -> Result<Ua, UaError> {
        let (ws, local_ip) = match tokio::time::timeout(cfg.timeout, open(&cfg, source)).await {
            Ok(r) => r?,
            Err(_) => return Err(UaError::Timeout("connection")),
        };
        let host = format!("{}.invalid", sip::token(12));
        let contact = format!("<sip:{}@{host};transport=ws>", sip::token(8));
        Ok(Ua {
            ws,
            cfg,
            stats,
            user,
            local_ip,
            host,
            contact,
            reg_call_id: sip::token(22),
            reg_tag: sip::token(10),
            cseq: 0,
            nc: 0,
            received: Vec::new(),
        })
    }

    /// The SIP user this browser is.
    pub fn user(&self) -> &str {
        &self.user
    }

    fn via(&self) -> String {
        format!("SIP/2.0/WSS {};branch=z9hG4bK{}", self.host, sip::token(16))
    }

    async fn send(&mut self, text: String) -> Result<(), UaError> {
        self.ws
            .send(WsMessage::text(text))
            .await
            .map_err(|_| UaError::Closed)
    }

    /// Reads until a final response to (`call_id`, `cseq`) arrives, answering
    /// requests meanwhile. `Ok(None)` when `until` passes first (only when
    /// no response is expected: `call_id` empty).
    async fn pump(
        &mut self,
        call_id: &str,
        cseq: u32,
        until: Instant,
    ) -> Result<Option<Message>, UaError> {
        loop {
            let frame = match tokio::time::timeout_at(until.into(), self.ws.next()).await {
                Err(_) if call_id.is_empty() => return Ok(None),
                Err(_) => return Err(UaError::Timeout("final response")),
                Ok(None) | Ok(Some(Err(_))) => return Err(UaError::Closed),
                Ok(Some(Ok(f))) => f,
            };
            let text = match frame {
                WsMessage::Text(t) => t.to_string(),
                WsMessage::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
                WsMessage::Close(_) => return Err(UaError::Closed),
                _ => continue,
            };
            let Some(msg) = Message::parse(&text) else {
                continue;
            };
            if msg.method().is_some() {
                self.answer(&msg).await?;
                continue;
            }
            let Some(code) = msg.status() else { continue };
            if code < 200 || msg.get("call-id") != Some(call_id) {
                continue;
            }
            if msg.cseq().map(|c| c.0) == Some(cseq) {
                return Ok(Some(msg));
            }
        }
    }

    /// Reads (and answers requests) for `d`; fails only if the flow closes.
    pub async fn idle(&mut self, d: Duration) -> Result<(), UaError> {
        self.pump("", 0, Instant::now() + d).await.map(|_| ())
    }

    async fn answer(&mut self, req: &Message) -> Result<(), UaError> {
        let tag = sip::token(10);
        let method = req.method().unwrap_or("").to_string();
        let reply = match method.as_str() {
            "ACK" => return Ok(()),
            "INVITE" => {
                let call_id = req.get("call-id").unwrap_or("").to_string();
                let sdp = sdp::webrtc_answer(&req.body, self.local_ip, 9);
                let rr: Vec<String> = req
                    .header_lines("record-route")
                    .map(str::to_string)
                    .collect();
                let mut extra: Vec<(&str, &str)> =
                    rr.iter().map(|r| ("Record-Route", r.as_str())).collect();
                extra.push(("Contact", &self.contact));
                extra.push(("Content-Type", "application/sdp"));
                let reply = sip::response(req, 200, "OK", Some(&tag), &extra, &sdp);
                if req.to_tag().is_none() && !self.received.contains(&call_id) {
                    Counters::inc(&self.stats.calls_received);
                    Counters::inc(&self.stats.calls_active);
                    self.received.push(call_id);
                }
                reply
            }
            "BYE" => {
                let call_id = req.get("call-id").unwrap_or("");
                if let Some(i) = self.received.iter().position(|c| c == call_id) {
                    self.received.swap_remove(i);
                    Counters::dec(&self.stats.calls_active);
                    Counters::inc(&self.stats.calls_completed);
                }
                sip::response(req, 200, "OK", Some(&tag), &[], "")
            }
            "CANCEL" | "OPTIONS" | "NOTIFY" | "INFO" | "UPDATE" => {
                sip::response(req, 200, "OK", Some(&tag), &[], "")
            }
            _ => sip::response(req, 405, "Method Not Allowed", Some(&tag), &[], ""),
        };
        self.send(reply).await
    }

    fn authorization(
        &mut self,
        challenge_of: &Message,
        method: &str,
        uri: &str,
    ) -> Result<(&'static str, String), UaError> {
        let (header, values) = if challenge_of.status() == Some(407) {
            (
                "Proxy-Authorization",
                challenge_of
                    .header_lines("proxy-authenticate")
                    .collect::<Vec<_>>(),
            )
        } else {
            (
                "Authorization",
                challenge_of
                    .header_lines("www-authenticate")
                    .collect::<Vec<_>>(),
            )
        };
        let ch = Challenge::best(values)?;
        self.nc += 1;
        let cnonce = sip::token(16);
        let v = ch.answer(
            &self.user,
            &self.cfg.password,
            method,
            uri,
            self.nc,
            &cnonce,
        )?;
        Ok((header, v))
    }

    /// REGISTERs (answering one digest challenge); records the latency.
    pub async fn register(&mut self) -> Result<(), UaError> {
        let started = Instant::now();
        let uri = format!("sip:{}", self.cfg.domain);
        let aor = format!("<sip:{}@{}>", self.user, self.cfg.domain);
        let from = format!("{aor};tag={}", self.reg_tag);
        let contact = format!("{};expires={}", self.contact, self.cfg.expires);
        let mut auth: Option<(&'static str, String)> = None;
        for _ in 0..2 {
            self.cseq += 1;
            let cseq = format!("{} REGISTER", self.cseq);
            let via = self.via();
            let call_id = self.reg_call_id.clone();
            let mut h: Vec<(&str, &str)> = vec![
                ("Via", &via),
                ("Max-Forwards", "70"),
                ("To", &aor),
                ("From", &from),
                ("Call-ID", &call_id),
                ("CSeq", &cseq),
                ("Contact", &contact),
                ("Expires", ""),
                (
                    "Allow",
                    "ACK,CANCEL,INVITE,MESSAGE,BYE,OPTIONS,INFO,NOTIFY,REFER",
                ),
                ("Supported", "path,gruu,outbound"),
                ("User-Agent", "rtcgate-load"),
            ];
            let expires = self.cfg.expires.to_string();
            h[7].1 = &expires;
            if let Some((n, v)) = &auth {
                h.push((n, v));
            }
            let req = sip::request("REGISTER", &uri, &h, "");
            self.send(req).await?;
            let deadline = Instant::now() + self.cfg.timeout;
            let Some(resp) = self.pump(&call_id, self.cseq, deadline).await? else {
                return Err(UaError::Timeout("REGISTER"));
            };
            match resp.status() {
                Some(200) => {
                    self.stats.record_register(started.elapsed());
                    return Ok(());
                }
                Some(401 | 407) if auth.is_none() => {
                    auth = Some(self.authorization(&resp, "REGISTER", &uri)?);
                }
                Some(c) => return Err(UaError::Status(c)),
                None => return Err(UaError::Malformed("status")),
            }
        }
        Err(UaError::Status(401))
    }

    /// One call: INVITE with a WebRTC offer (answering a 407), ACK, hold,
    /// BYE. Records the setup time (first INVITE sent to 200 received).
    pub async fn call(&mut self, callee: &str, hold: Duration) -> Result<(), UaError> {
        let started = Instant::now();
        let uri = format!("sip:{callee}@{}", self.cfg.domain);
        let to = format!("<{uri}>");
        let from = format!(
            "<sip:{}@{}>;tag={}",
            self.user,
            self.cfg.domain,
            sip::token(10)
        );
        let call_id = sip::token(22);
        let offer = sdp::webrtc_offer(self.local_ip, 9);
        let mut cseq_n = 1u32;
        let mut auth: Option<(&'static str, String)> = None;
        let ok = loop {
            let via = self.via();
            let cseq = format!("{cseq_n} INVITE");
            let mut h: Vec<(&str, &str)> = vec![
                ("Via", &via),
                ("Max-Forwards", "70"),
                ("To", &to),
                ("From", &from),
                ("Call-ID", &call_id),
                ("CSeq", &cseq),
                ("Contact", &self.contact),
                (
                    "Allow",
                    "ACK,CANCEL,INVITE,MESSAGE,BYE,OPTIONS,INFO,NOTIFY,REFER",
                ),
                ("Supported", "outbound"),
                ("User-Agent", "rtcgate-load"),
                ("Content-Type", "application/sdp"),
            ];
            if let Some((n, v)) = &auth {
                h.push((n, v));
            }
            let req = sip::request("INVITE", &uri, &h, &offer);
            self.send(req).await?;
            let deadline = Instant::now() + self.cfg.timeout;
            let Some(resp) = self.pump(&call_id, cseq_n, deadline).await? else {
                return Err(UaError::Timeout("INVITE"));
            };
            let code = resp.status().ok_or(UaError::Malformed("status"))?;
            if code >= 300 {
                // ACK for a negative final response: same branch, To with tag.
                let ack = format!(
                    "ACK {uri} SIP/2.0\r\nVia: {via}\r\nMax-Forwards: 70\r\nTo: {}\r\nFrom: {from}\r\nCall-ID: {call_id}\r\nCSeq: {cseq_n} ACK\r\nContent-Length: 0\r\n\r\n",
                    resp.get("to").unwrap_or(&to)
                );
                self.send(ack).await?;
                if (code == 401 || code == 407) && auth.is_none() {
                    auth = Some(self.authorization(&resp, "INVITE", &uri)?);
                    cseq_n += 1;
                    continue;
                }
                return Err(UaError::Status(code));
            }
            break resp;
        };
        self.stats.record_setup(started.elapsed());
        Counters::inc(&self.stats.calls_answered);
        Counters::inc(&self.stats.calls_active);
        let result = self
            .in_dialog(&ok, &uri, &from, &call_id, cseq_n, hold)
            .await;
        Counters::dec(&self.stats.calls_active);
        result
    }

    async fn in_dialog(
        &mut self,
        ok: &Message,
        uri: &str,
        from: &str,
        call_id: &str,
        invite_cseq: u32,
        hold: Duration,
    ) -> Result<(), UaError> {
        let to = ok.get("to").ok_or(UaError::Malformed("To"))?.to_string();
        let target = ok.contact_uri().unwrap_or_else(|| uri.to_string());
        let routes: Vec<String> = ok.record_routes().into_iter().rev().collect();
        let route_lines: String = routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
        let ack = format!(
            "ACK {target} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\n{route_lines}To: {to}\r\nFrom: {from}\r\nCall-ID: {call_id}\r\nCSeq: {invite_cseq} ACK\r\nContent-Length: 0\r\n\r\n",
            self.via()
        );
        self.send(ack).await?;
        self.idle(hold).await?;
        let bye_cseq = invite_cseq + 1;
        let bye = format!(
            "BYE {target} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\n{route_lines}To: {to}\r\nFrom: {from}\r\nCall-ID: {call_id}\r\nCSeq: {bye_cseq} BYE\r\nUser-Agent: rtcgate-load\r\nContent-Length: 0\r\n\r\n",
            self.via()
        );
        self.send(bye).await?;
        let deadline = Instant::now() + self.cfg.timeout;
        match self
            .pump(call_id, bye_cseq, deadline)
            .await?
            .and_then(|r| r.status())
        {
            Some(200) => {
                Counters::inc(&self.stats.calls_completed);
                Ok(())
            }
            Some(c) => Err(UaError::Status(c)),
            None => Err(UaError::Timeout("BYE")),
        }
    }

    /// Serves the connection: runs the commands it is sent one after the
    /// other and answers what arrives in between, until the command channel
    /// closes or the connection drops. `busy` is true while a call runs.
    pub async fn serve(mut self, mut commands: mpsc::Receiver<Command>, busy: Arc<AtomicBool>) {
        loop {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Call { callee, hold }) => {
                        Counters::inc(&self.stats.calls_attempted);
                        if let Err(e) = self.call(&callee, hold).await {
                            Counters::inc(&self.stats.calls_failed);
                            self.stats.fail_with(e.reason(), e.to_string());
                            if matches!(e, UaError::Closed) {
                                Counters::inc(&self.stats.dropped);
                                busy.store(false, Ordering::Relaxed);
                                return;
                            }
                        }
                        busy.store(false, Ordering::Relaxed);
                    }
                    None => break,
                },
                r = self.idle(Duration::from_secs(3600)) => {
                    if r.is_err() {
                        Counters::inc(&self.stats.dropped);
                        return;
                    }
                }
            }
        }
        self.close().await;
    }

    /// Closes the WebSocket politely.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ws.close(None)).await;
    }
}
