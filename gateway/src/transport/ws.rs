//! SIP over WebSocket (RFC 7118) on one HTTP(S) listener that also serves
//! plain HTTP routes (`/healthz`, the demo page).
//!
//! Upgrade rules: the `sip` subprotocol is required and echoed; `Origin` is
//! checked against the allow-list; the TLS and HTTP handshakes must finish
//! within the handshake timeout; connections per source IP are capped, and
//! their rate per source IP is limited (`[limits]`), as is each flow's
//! message rate. Each WebSocket message carries exactly one SIP message,
//! text or binary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

use super::http::{self, Head};
use super::{Handler, Source, Transports, is_keepalive};
use crate::config;
use crate::limits::{BanAction, Verdict, shed_reply};
use crate::sip;

/// Settings one listener needs.
#[derive(Clone)]
pub struct ListenerSettings {
    /// WebSocket limits and origin policy.
    pub ws: config::WebSocket,
    /// Value of our `Server` header.
    pub server_header: String,
    /// Directory served at `/` over HTTP(S), if any.
    pub web_root: Option<PathBuf>,
}

/// Accepts connections until the task is aborted.
pub async fn run(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    settings: Arc<ListenerSettings>,
    transports: Transports,
    handler: Arc<dyn Handler>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Flood limit before anything costs: no TLS, no task, no slot.
        if !transports.limiter().check_handshake(peer.ip()).passed() {
            drop(tcp);
            continue;
        }
        let Some(slot) = transports.admit(
            peer.ip(),
            settings.ws.max_connections_per_ip,
            settings.ws.max_connections,
        ) else {
            tracing::debug!(%peer, "connection refused: limit reached");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let (tls, settings, transports, handler) = (
            tls.clone(),
            settings.clone(),
            transports.clone(),
            handler.clone(),
        );
        tokio::spawn(async move {
            let _slot = slot;
            serve_connection(tcp, peer, tls, settings, transports, handler).await;
        });
    }
}

async fn serve_connection(
    tcp: TcpStream,
    peer: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    settings: Arc<ListenerSettings>,
    transports: Transports,
    handler: Arc<dyn Handler>,
) {
    let deadline = Instant::now() + Duration::from_millis(settings.ws.handshake_timeout_ms);
    match tls {
        Some(acceptor) => {
            let stream = match tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    transports
                        .counters()
                        .handshake_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            // Boxed: the TLS state (~1.2 KiB) then lives once on the heap instead of
            // in every async frame it passes through (an idle connection's task was
            // 7.3 KiB with it inline, see docs/BENCHMARKS.md).
            serve_http(
                Box::new(stream),
                peer,
                true,
                deadline,
                settings,
                transports,
                handler,
            )
            .await;
        }
        None => serve_http(tcp, peer, false, deadline, settings, transports, handler).await,
    }
}

async fn serve_http<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    peer: SocketAddr,
    secure: bool,
    deadline: Instant,
    settings: Arc<ListenerSettings>,
    transports: Transports,
    handler: Arc<dyn Handler>,
) {
    // The request head and the handshake's buffers are gone before the flow runs:
    // only what a flow needs stays allocated for the connection's lifetime.
    if let Some(ws) = upgrade(stream, peer, deadline, &settings, &transports).await {
        run_flow(ws, peer, secure, settings, transports, handler).await;
    }
}

/// Reads the HTTP request: answers plain routes and refused upgrades itself,
/// returns the WebSocket for an accepted upgrade.
async fn upgrade<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    mut stream: S,
    peer: SocketAddr,
    deadline: Instant,
    settings: &ListenerSettings,
    transports: &Transports,
) -> Option<WebSocketStream<S>> {
    let (head, rest) = match tokio::time::timeout_at(
        deadline,
        http::read_head(&mut stream, settings.ws.max_http_head),
    )
    .await
    {
        Ok(Ok(h)) => h,
        Ok(Err(http::HeadError::TooLarge)) => {
            let _ = http::respond(
                &mut stream,
                431,
                "Request Header Fields Too Large",
                "text/plain",
                &[],
                b"request head too large\n",
            )
            .await;
            return None;
        }
        Ok(Err(http::HeadError::Malformed(_))) => {
            let _ = http::respond(
                &mut stream,
                400,
                "Bad Request",
                "text/plain",
                &[],
                b"malformed HTTP request\n",
            )
            .await;
            return None;
        }
        Ok(Err(_)) => return None,
        Err(_) => {
            transports
                .counters()
                .handshake_timeouts
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, "HTTP handshake timed out");
            return None;
        }
    };
    if head.is_websocket_upgrade() {
        let Some(accept_key) = check_upgrade(&head, &settings.ws) else {
            transports
                .counters()
                .upgrades_refused
                .fetch_add(1, Ordering::Relaxed);
            let (status, reason, body) = refusal(&head, &settings.ws);
            tracing::debug!(%peer, status, body, "WebSocket upgrade refused");
            let _ = timeout(
                Duration::from_secs(1),
                http::respond(
                    &mut stream,
                    status,
                    reason,
                    "text/plain",
                    &[],
                    body.as_bytes(),
                ),
            )
            .await;
            return None;
        };
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept_key}\r\nSec-WebSocket-Protocol: sip\r\nServer: {}\r\n\r\n",
            settings.server_header
        );
        use tokio::io::AsyncWriteExt;
        if tokio::time::timeout_at(deadline, stream.write_all(response.as_bytes()))
            .await
            .map_or(true, |r| r.is_err())
        {
            return None;
        }
        let config = WebSocketConfig::default()
            .max_message_size(Some(settings.ws.max_message_size))
            .max_frame_size(Some(settings.ws.max_frame_size))
            // Small buffers: memory per idle connection is what limits how many
            // browsers one box holds. A REGISTER fits in 1 KiB; a larger message
            // grows the buffer to its frame length (tungstenite reserves it).
            .read_buffer_size(1024)
            .write_buffer_size(0);
        Some(WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(config)).await)
    } else {
        serve_route(&mut stream, &head, settings).await;
        None
    }
}

/// `Some(Sec-WebSocket-Accept)` when the upgrade satisfies our rules.
fn check_upgrade(head: &Head, ws: &config::WebSocket) -> Option<String> {
    if head.method != "GET" || head.header("sec-websocket-version") != Some("13") {
        return None;
    }
    if !head
        .tokens("sec-websocket-protocol")
        .any(|p| p.eq_ignore_ascii_case("sip"))
    {
        return None;
    }
    if !origin_ok(head, ws) {
        return None;
    }
    let key = head.header("sec-websocket-key")?;
    Some(tungstenite::handshake::derive_accept_key(
        key.trim().as_bytes(),
    ))
}

/// The Origin rule of an upgrade: at most one `Origin` header, allowed by
/// the configuration. Two headers are refused whatever they say: we would
/// check one while something behind us might trust the other.
fn origin_ok(head: &Head, ws: &config::WebSocket) -> bool {
    let mut origins = head
        .headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("origin"));
    match (origins.next(), origins.next()) {
        (None, _) => ws.origin_allowed(None),
        (Some((_, o)), None) => ws.origin_allowed(Some(o)),
        (Some(_), Some(_)) => false,
    }
}

/// The HTTP answer for a refused upgrade: 403 for an Origin we do not
/// allow, 400 for everything else, each with a body that says why.
fn refusal(head: &Head, ws: &config::WebSocket) -> (u16, &'static str, &'static str) {
    if !origin_ok(head, ws) {
        return (403, "Forbidden", "origin not allowed\n");
    }
    if !head
        .tokens("sec-websocket-protocol")
        .any(|p| p.eq_ignore_ascii_case("sip"))
    {
        return (
            400,
            "Bad Request",
            "the \"sip\" WebSocket subprotocol is required (RFC 7118)\n",
        );
    }
    (400, "Bad Request", "invalid WebSocket upgrade request\n")
}

async fn serve_route<S: AsyncWrite + Unpin>(
    stream: &mut S,
    head: &Head,
    settings: &ListenerSettings,
) {
    if head.method != "GET" && head.method != "HEAD" {
        let _ = http::respond(
            stream,
            405,
            "Method Not Allowed",
            "text/plain",
            &[("Allow", "GET, HEAD")],
            b"method not allowed\n",
        )
        .await;
        return;
    }
    let path = head.path.split(['?', '#']).next().unwrap_or("/");
    if path == "/healthz" {
        let _ = http::respond(stream, 200, "OK", "text/plain", &[], b"ok\n").await;
        return;
    }
    if let Some(root) = &settings.web_root
        && let Some((body, ctype)) = static_file(root, path).await
    {
        let body = if head.method == "HEAD" {
            Vec::new()
        } else {
            body
        };
        let _ = http::respond(stream, 200, "OK", ctype, &[], &body).await;
        return;
    }
    let _ = http::respond(stream, 404, "Not Found", "text/plain", &[], b"not found\n").await;
}

/// Reads a file below `root` for `path`, refusing anything that could
/// escape it.
async fn static_file(root: &std::path::Path, path: &str) -> Option<(Vec<u8>, &'static str)> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "index.html" } else { rel };
    if rel
        .split('/')
        .any(|seg| seg.is_empty() || seg == ".." || seg == "." || seg.contains('\\'))
    {
        return None;
    }
    let file = root.join(rel);
    let body = tokio::fs::read(&file).await.ok()?;
    let ctype = match file.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json") => "application/json",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("pem" | "crt") => "application/x-pem-file",
        _ => "application/octet-stream",
    };
    Some((body, ctype))
}

/// One WebSocket flow: SIP in both directions, CRLF keepalives, pings and
/// the idle timeout, until either side closes.
async fn run_flow<S: AsyncRead + AsyncWrite + Unpin>(
    ws: WebSocketStream<S>,
    peer: SocketAddr,
    secure: bool,
    settings: Arc<ListenerSettings>,
    transports: Transports,
    handler: Arc<dyn Handler>,
) {
    let (flow, mut outgoing) = transports.register_flow(peer, settings.ws.send_queue);
    tracing::debug!(flow, %peer, secure, "WebSocket flow open");
    let source = Source::Ws { flow, peer, secure };
    let (mut sink, mut stream) = ws.split();
    let idle = Duration::from_secs(settings.ws.idle_timeout_s);
    let ping_every = Duration::from_secs(settings.ws.ping_interval_s.max(1));
    let mut last_seen = Instant::now();
    let mut ticker = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    let max = settings.ws.max_message_size;
    // The flow's own message rate: no shared state per message.
    let mut guard = transports.limiter().flow_guard();
    let reply_when_shed = transports.limiter().action() == BanAction::Reply;
    let close: Option<CloseFrame> = loop {
        tokio::select! {
            incoming = stream.next() => {
                last_seen = Instant::now();
                let data: Bytes = match incoming {
                    Some(Ok(Message::Text(t))) => Bytes::from(t),
                    Some(Ok(Message::Binary(b))) => b,
                    Some(Ok(Message::Ping(_))) => {
                        // tungstenite queued the pong; push it out now.
                        if sink.flush().await.is_err() { break None; }
                        continue;
                    }
                    Some(Ok(Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Close(_))) | None => break None,
                    Some(Err(e)) => {
                        if matches!(e, tungstenite::Error::Capacity(_)) {
                            transports.counters().oversize.fetch_add(1, Ordering::Relaxed);
                        }
                        break close_for_error(&e);
                    }
                };
                if let Some(g) = guard.as_mut() {
                    let verdict = g.check(std::time::Instant::now());
                    if let Verdict::Shed { retry_after_s, .. } = verdict {
                        transports.limiter().flow_shed(flow, peer, verdict);
                        if reply_when_shed
                            && !is_keepalive(&data)
                            && let Some(reply) = shed_reply(&data, max, retry_after_s, &settings.server_header)
                            && sink.send(frame_for(reply.into())).await.is_err()
                        {
                            break None;
                        }
                        continue;
                    }
                }
                if is_keepalive(&data) {
                    transports.counters().keepalives.fetch_add(1, Ordering::Relaxed);
                    if data.len() == 4 && sink.send(Message::text("\r\n")).await.is_err() {
                        break None;
                    }
                    continue;
                }
                match sip::parse(&data, max) {
                    Ok(msg) => handler.on_message(source, msg),
                    Err(refused) => {
                        let counters = transports.counters();
                        counters.malformed.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(flow, %peer, reason = %refused.error, "malformed SIP over WebSocket");
                        match refused.reply_headers {
                            Some(lines) => {
                                let reply = sip::error_from_raw(refused.error.status(), &lines, &refused.error.to_string(), &settings.server_header);
                                if sink.send(frame_for(reply.into())).await.is_err() { break None; }
                            }
                            None => { counters.dropped.fetch_add(1, Ordering::Relaxed); }
                        }
                    }
                }
            }
            out = outgoing.recv() => {
                let Some(data) = out else { break Some(close_frame(CloseCode::Away, "shutting down")); };
                if sink.send(frame_for(data)).await.is_err() { break None; }
            }
            _ = ticker.tick() => {
                if last_seen.elapsed() >= idle {
                    break Some(close_frame(CloseCode::Away, "idle timeout"));
                }
                if settings.ws.ping_interval_s > 0 && sink.send(Message::Ping(Bytes::new())).await.is_err() {
                    break None;
                }
            }
        }
    };
    transports.unregister_flow(flow);
    if let Some(frame) = close {
        let _ = timeout(
            Duration::from_secs(1),
            sink.send(Message::Close(Some(frame))),
        )
        .await;
    }
    let _ = timeout(Duration::from_secs(1), sink.close()).await;
    handler.on_flow_closed(flow);
    tracing::debug!(flow, %peer, "WebSocket flow closed");
}

/// SIP is text, but a body may not be UTF-8: such messages go as binary.
fn frame_for(data: Bytes) -> Message {
    match tungstenite::Utf8Bytes::try_from(data.clone()) {
        Ok(text) => Message::Text(text),
        Err(_) => Message::Binary(data),
    }
}

fn close_frame(code: CloseCode, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: reason.into(),
    }
}

/// The close frame that tells the peer why its frames were refused.
fn close_for_error(e: &tungstenite::Error) -> Option<CloseFrame> {
    use tungstenite::error::{CapacityError, ProtocolError};
    match e {
        tungstenite::Error::Capacity(CapacityError::MessageTooLong { .. }) => {
            Some(close_frame(CloseCode::Size, "message too big"))
        }
        tungstenite::Error::Capacity(_) => Some(close_frame(CloseCode::Size, "frame too big")),
        tungstenite::Error::Utf8(_) => Some(close_frame(
            CloseCode::Invalid,
            "invalid UTF-8 in text frame",
        )),
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => None,
        tungstenite::Error::Protocol(_) => Some(close_frame(CloseCode::Protocol, "protocol error")),
        _ => None,
    }
}
