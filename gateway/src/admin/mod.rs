//! The admin listener: plain HTTP/1.1 on loopback by default, one request
//! per connection. `GET /metrics` (Prometheus text) and a small JSON API
//! that the `rtcgate` CLI talks to. With `[admin] token`, every request
//! needs `Authorization: Bearer <token>`.

pub mod api;
pub mod cli;
pub mod client;
mod config;

pub use config::AdminConfig;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::telemetry::{METHODS, Metrics};
use crate::transport::http;
use api::{
    DestinationView, ErrorBody, HangupOutcome, HangupReply, NgCommandView, Registration,
    ReloadReport, RtpengineView, SetView, Stats,
};

/// What `POST /api/reload` runs (the same as SIGHUP).
pub type ReloadFn = Arc<dyn Fn() -> ReloadReport + Send + Sync>;

/// Everything the API reads or acts on.
pub struct AdminContext {
    /// Metrics and, through their sources, the proxy, location, media and routing.
    pub metrics: Arc<Metrics>,
    /// The gateway's reload.
    pub reload: ReloadFn,
    /// Required bearer token, if any.
    pub token: Option<String>,
    /// `general.node_id`.
    pub node_id: String,
    /// When the gateway started.
    pub started: Instant,
}

/// A running admin listener.
pub struct AdminServer {
    /// The bound address (port resolved).
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

/// Connections served at once; more wait.
const MAX_CONNECTIONS: usize = 32;
/// Time allowed to send the request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

impl AdminServer {
    /// Binds `listen` and serves until [`AdminServer::shutdown`].
    pub async fn start(listen: SocketAddr, ctx: Arc<AdminContext>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, token = ctx.token.is_some(), "admin API listening");
        let task = tokio::spawn(accept_loop(listener, ctx));
        Ok(Self { addr, task })
    }

    /// Stops listening.
    pub fn shutdown(self) {
        self.task.abort();
    }
}

async fn accept_loop(listener: TcpListener, ctx: Arc<AdminContext>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve(tcp, peer, &ctx).await;
        });
    }
}

/// A response: status, content type, body.
struct Reply {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
}

fn json<T: serde::Serialize>(status: u16, value: &T) -> Reply {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => Reply {
            status,
            content_type: "application/json",
            body,
        },
        Err(e) => error(500, &format!("encoding: {e}")),
    }
}

fn error(status: u16, message: &str) -> Reply {
    let body = serde_json::to_vec(&ErrorBody {
        error: message.to_owned(),
    })
    .unwrap_or_default();
    Reply {
        status,
        content_type: "application/json",
        body,
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    peer: SocketAddr,
    ctx: &AdminContext,
) {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, http::read_head(&mut stream, 8192)).await {
        Ok(Ok((head, _))) => head,
        Ok(Err(http::HeadError::TooLarge)) => {
            let r = error(431, "request head too large");
            let _ = write(&mut stream, &r, &[]).await;
            return;
        }
        Ok(Err(http::HeadError::Malformed(e))) => {
            let r = error(400, &e);
            let _ = write(&mut stream, &r, &[]).await;
            return;
        }
        _ => return,
    };
    if !authorized(&head, ctx.token.as_deref()) {
        tracing::info!(%peer, path = %head.path, "admin request without a valid token");
        let r = error(401, "a valid bearer token is required");
        let _ = write(&mut stream, &r, &[("WWW-Authenticate", "Bearer")]).await;
        return;
    }
    let reply = route(&head.method, &head.path, ctx).await;
    if head.method == "POST" {
        tracing::info!(%peer, path = %head.path, status = reply.status, "admin action");
    }
    let allow: &[(&str, &str)] = if reply.status == 405 {
        &[("Allow", "GET, POST")]
    } else {
        &[]
    };
    let _ = write(&mut stream, &reply, allow).await;
}

async fn write<S: AsyncWrite + Unpin>(
    stream: &mut S,
    r: &Reply,
    extra: &[(&str, &str)],
) -> std::io::Result<()> {
    http::respond(
        stream,
        r.status,
        reason(r.status),
        r.content_type,
        extra,
        &r.body,
    )
    .await
}

/// Whether the request carries the token (always, when none is set).
fn authorized(head: &http::Head, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let Some(given) = head
        .header("authorization")
        .and_then(|v| v.trim().strip_prefix("Bearer "))
    else {
        return false;
    };
    use subtle::ConstantTimeEq;
    bool::from(given.trim().as_bytes().ct_eq(token.as_bytes()))
}

async fn route(method: &str, target: &str, ctx: &AdminContext) -> Reply {
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let get = method == "GET" || method == "HEAD";
    match (segments.as_slice(), get, method == "POST") {
        (["metrics"], true, _) => Reply {
            status: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: ctx.metrics.render().await.into_bytes(),
        },
        (["healthz"], true, _) => Reply {
            status: 200,
            content_type: "text/plain",
            body: b"ok\n".to_vec(),
        },
        (["api", "stats"], true, _) => json(200, &stats(ctx).await),
        (["api", "registrations"], true, _) => json(200, &registrations(ctx)),
        (["api", "calls"], true, _) => match ctx.metrics.sources().proxy.calls().await {
            Some(calls) => json(200, &calls),
            None => error(503, "the proxy is not running"),
        },
        (["api", "sets"], true, _) => json(200, &sets(ctx)),
        (["api", "rtpengine"], true, _) => json(200, &rtpengine(ctx).await),
        (["api", "reload"], _, true) => {
            let reload = ctx.reload.clone();
            match tokio::task::spawn_blocking(move || reload()).await {
                Ok(report) => json(if report.ok() { 200 } else { 500 }, &report),
                Err(e) => error(500, &format!("reload failed: {e}")),
            }
        }
        (["api", "calls", id, "hangup"], _, true) => {
            let Some(call_id) = percent_decode(id) else {
                return error(400, "the Call-ID is not valid percent-encoding");
            };
            match ctx.metrics.sources().proxy.hangup(&call_id).await {
                Some(HangupOutcome::NotFound) => error(404, &format!("no call {call_id:?}")),
                Some(outcome) => json(200, &HangupReply { call_id, outcome }),
                None => error(503, "the proxy is not running"),
            }
        }
        (
            ["metrics" | "healthz"]
            | [
                "api",
                "stats" | "registrations" | "calls" | "sets" | "rtpengine" | "reload",
            ]
            | ["api", "calls", _, "hangup"],
            _,
            _,
        ) => error(405, "method not allowed"),
        _ => error(404, "not found"),
    }
}

async fn stats(ctx: &AdminContext) -> Stats {
    let src = ctx.metrics.sources();
    let proxy = src.proxy.snapshot().await.unwrap_or_default();
    let counters = src.proxy.counters();
    let codes = |c: &crate::telemetry::CodeCounters| {
        c.nonzero()
            .into_iter()
            .map(|(code, n)| (code.to_string(), n))
            .collect()
    };
    use std::sync::atomic::Ordering;
    Stats {
        version: env!("CARGO_PKG_VERSION").into(),
        node_id: ctx.node_id.clone(),
        uptime_s: ctx.started.elapsed().as_secs(),
        ws_flows_open: src.transports.flow_count() as u64,
        ws_flows_accepted: src
            .transports
            .counters()
            .flows_opened
            .load(Ordering::Relaxed),
        registrations_active: src.location.live_count(unix_now()) as u64,
        media_calls: src.media.as_ref().map(|m| m.active_calls() as u64),
        proxy,
        sip_requests: METHODS
            .iter()
            .zip(counters.requests())
            .filter(|(_, n)| *n > 0)
            .map(|(m, n)| ((*m).to_owned(), n))
            .collect(),
        sip_responses: codes(&counters.responses),
        register_responses: codes(&counters.register),
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn registrations(ctx: &AdminContext) -> Vec<Registration> {
    let now = unix_now();
    ctx.metrics
        .sources()
        .location
        .all(now)
        .into_iter()
        .map(|b| Registration {
            expires_in: b.remaining(now),
            aor: b.aor,
            contact: b.contact,
            received: b.received,
            flow: b.flow_id,
            user_agent: b.user_agent,
            node_id: b.node_id,
        })
        .collect()
}

fn sets(ctx: &AdminContext) -> Vec<SetView> {
    let Some(routing) = ctx.metrics.sources().routing() else {
        return Vec::new();
    };
    let states = routing.states();
    let now = Instant::now();
    routing
        .with_table(|t| t.sets())
        .into_iter()
        .map(|(name, addrs)| SetView {
            name,
            destinations: addrs
                .into_iter()
                .map(|a| {
                    let s = states.iter().find(|s| s.address == a);
                    let state = s.map_or(crate::routing::HealthState::Unknown, |s| s.state);
                    DestinationView {
                        address: a.to_string(),
                        state: state.as_str().to_owned(),
                        routable: state != crate::routing::HealthState::Down,
                        failures: s.map_or(0, |s| s.failures),
                        last_code: s.and_then(|s| s.last_code),
                        since_s: s.map_or(0, |s| now.saturating_duration_since(s.since).as_secs()),
                    }
                })
                .collect(),
        })
        .collect()
}

async fn rtpengine(ctx: &AdminContext) -> Vec<RtpengineView> {
    let Some(media) = &ctx.metrics.sources().media else {
        return Vec::new();
    };
    let instances = media.client().instances().await.unwrap_or_default();
    let metrics = media.client().metrics().await.unwrap_or_default();
    let ms = |us: Option<u64>| us.map(|u| u as f64 / 1000.0);
    instances
        .into_iter()
        .map(|i| RtpengineView {
            instance: i.addr.to_string(),
            up: i.health == ngclient::Health::Up,
            weight: i.weight,
            calls: i.calls,
            consecutive_timeouts: i.consecutive_timeouts,
            last_rtt_ms: i.last_rtt.map(|d| d.as_secs_f64() * 1000.0),
            commands: metrics
                .commands
                .iter()
                .filter(|c| c.instance == i.id)
                .map(|c| NgCommandView {
                    command: c.command.clone(),
                    requests: c.stats.requests,
                    ok: c.stats.ok,
                    errors: c.stats.errors,
                    load_limits: c.stats.load_limits,
                    timeouts: c.stats.timeouts,
                    retransmits: c.stats.retransmits,
                    p50_ms: ms(c.stats.latency.quantile_us(0.5)),
                    p99_ms: ms(c.stats.latency.quantile_us(0.99)),
                })
                .collect(),
        })
        .collect()
}

/// Decodes `%XX` escapes of a path segment.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Encodes everything but unreserved characters, for a path segment.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_round_trip() {
        let id = "a84b4c76e66710@pc33.example.com/x y%";
        let enc = percent_encode(id);
        assert!(!enc.contains('/') && !enc.contains('@'), "{enc}");
        assert_eq!(percent_decode(&enc).as_deref(), Some(id));
        assert_eq!(percent_decode("%G1"), None);
        assert_eq!(percent_decode("%4"), None);
    }

    #[test]
    fn token_check() {
        let head = |auth: Option<&str>| http::Head {
            method: "GET".into(),
            path: "/api/stats".into(),
            headers: auth
                .map(|a| vec![("Authorization".to_string(), a.to_string())])
                .unwrap_or_default(),
        };
        assert!(authorized(&head(None), None));
        assert!(!authorized(&head(None), Some("secret-token-123456")));
        assert!(!authorized(
            &head(Some("Bearer wrong")),
            Some("secret-token-123456")
        ));
        assert!(authorized(
            &head(Some("Bearer secret-token-123456")),
            Some("secret-token-123456")
        ));
    }
}
