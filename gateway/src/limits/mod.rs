//! Flood protection, in the spirit of Kamailio's `pike`: per-source rate
//! limits with temporary bans, checked on the receive paths before a
//! message is parsed or a connection does its TLS handshake.
//!
//! * UDP: one token bucket per source IP for SIP messages.
//! * WebSocket: one bucket per source IP for handshakes (TCP connections),
//!   and one per flow for SIP messages (many browsers can share one
//!   address behind NAT, so a per-IP message rate would either be useless
//!   or hurt them; a flow is one browser).
//! * A source over its rate is banned for `ban_s`: its messages are shed
//!   (answered 503 with Retry-After, or dropped) and its new connections
//!   closed. Trusted sources (PBXes) are never counted or banned.
//!
//! The cores ([`bucket`], [`table`]) are sans-IO and take `now`; [`Limiter`]
//! is the thin shared shell the transports call. The caps on concurrent
//! server transactions live in the proxy (`proxy::pending`), their
//! settings here.

pub mod auth_failures;
pub mod bucket;
pub mod table;
pub mod throttle;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

pub use bucket::{Guard, Rate, Verdict};
pub use table::{Kind, Outcome, SourceTable, TableConfig};
use throttle::LogThrottle;

/// What happens to a message from a banned source or over a flow's rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BanAction {
    /// Requests get a stateless `503 Service Unavailable` with
    /// `Retry-After` (the rest of the ban); responses and ACKs are dropped.
    #[default]
    Reply,
    /// Everything is dropped without a word (cheapest under a flood).
    Drop,
}

/// `[limits]`: flood protection and load caps.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Rate limits and bans on (the transaction caps apply either way).
    pub enabled: bool,
    /// SIP messages per second from one source IP over UDP (sustained).
    pub udp_rate: u32,
    /// Messages one UDP source may send at once above the sustained rate.
    pub udp_burst: u32,
    /// SIP messages per second on one WebSocket flow (sustained).
    pub ws_flow_rate: u32,
    /// Messages one flow may send at once above the sustained rate.
    pub ws_flow_burst: u32,
    /// WebSocket (TCP) connections per second from one source IP.
    pub ws_handshake_rate: u32,
    /// Connections one source IP may open at once above that rate.
    pub ws_handshake_burst: u32,
    /// How long a source (or flow) over its rate is shed, in seconds.
    pub ban_s: u64,
    /// `"reply"` (503 with Retry-After) or `"drop"`.
    pub action: BanAction,
    /// Source addresses tracked at most; beyond that new sources pass
    /// uncounted (and are counted as such) until idle entries expire.
    pub max_sources: usize,
    /// Sources never rate limited, besides `auth.trusted`, the `[[routes]]`
    /// destinations and the routing sets' destinations and
    /// `trusted_sources`: IP addresses or CIDR blocks.
    pub trusted: Vec<String>,
    /// Server transactions awaiting their final response, in total; a new
    /// request beyond it gets 503 with Retry-After.
    pub max_server_transactions: usize,
    /// The same per source IP (trusted sources are exempt).
    pub max_server_transactions_per_source: usize,
    /// Retry-After of the 503s for the transaction caps, in seconds.
    pub retry_after_s: u32,
    /// Shedding is logged (as a warning) at most once per this many seconds,
    /// with the count of what was shed meanwhile.
    pub log_interval_s: u64,
    /// Failed digest authentications (wrong password, unknown user) one
    /// source IP may have in a row before it is banned.
    pub auth_failures_burst: u32,
    /// Failures per minute it gets back (the sustained rate of guesses
    /// that never bans).
    pub auth_failures_per_min: u32,
    /// How long a source that guessed too often is refused (403 with
    /// Retry-After, credentials not checked), in seconds.
    pub auth_ban_s: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            udp_rate: 2_000,
            udp_burst: 10_000,
            ws_flow_rate: 20,
            ws_flow_burst: 200,
            ws_handshake_rate: 200,
            ws_handshake_burst: 1_000,
            ban_s: 30,
            action: BanAction::Reply,
            max_sources: 100_000,
            trusted: Vec::new(),
            max_server_transactions: 100_000,
            max_server_transactions_per_source: 5_000,
            retry_after_s: 5,
            log_interval_s: 10,
            auth_failures_burst: 20,
            auth_failures_per_min: 6,
            auth_ban_s: 600,
        }
    }
}

impl LimitsConfig {
    /// Checks the values; the error names the key below `limits.`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (key, v) in [
            ("udp_rate", self.udp_rate),
            ("udp_burst", self.udp_burst),
            ("ws_flow_rate", self.ws_flow_rate),
            ("ws_flow_burst", self.ws_flow_burst),
            ("ws_handshake_rate", self.ws_handshake_rate),
            ("ws_handshake_burst", self.ws_handshake_burst),
        ] {
            if v == 0 {
                return Err((key, "must be positive".into()));
            }
        }
        if !(1..=86_400).contains(&self.ban_s) {
            return Err(("ban_s", "must be between 1 and 86400".into()));
        }
        if !(16..=10_000_000).contains(&self.max_sources) {
            return Err(("max_sources", "must be between 16 and 10000000".into()));
        }
        if let Some(t) = self
            .trusted
            .iter()
            .find(|t| t.parse::<crate::routing::Cidr>().is_err())
        {
            return Err((
                "trusted",
                format!("{t:?} is not an IP address or CIDR block"),
            ));
        }
        if self.max_server_transactions == 0 {
            return Err(("max_server_transactions", "must be positive".into()));
        }
        if self.max_server_transactions_per_source == 0
            || self.max_server_transactions_per_source > self.max_server_transactions
        {
            return Err((
                "max_server_transactions_per_source",
                "must be positive and at most limits.max_server_transactions".into(),
            ));
        }
        if !(1..=3_600).contains(&self.retry_after_s) {
            return Err(("retry_after_s", "must be between 1 and 3600".into()));
        }
        if self.log_interval_s == 0 {
            return Err(("log_interval_s", "must be positive".into()));
        }
        if self.auth_failures_burst == 0 {
            return Err(("auth_failures_burst", "must be positive".into()));
        }
        if !(1..=6_000).contains(&self.auth_failures_per_min) {
            return Err(("auth_failures_per_min", "must be between 1 and 6000".into()));
        }
        if !(1..=86_400).contains(&self.auth_ban_s) {
            return Err(("auth_ban_s", "must be between 1 and 86400".into()));
        }
        Ok(())
    }

    /// The parsed extra trusted blocks (validation refused bad ones).
    pub fn trusted_blocks(&self) -> Vec<crate::routing::Cidr> {
        self.trusted.iter().filter_map(|t| t.parse().ok()).collect()
    }

    /// The failed-authentication table's settings.
    pub fn auth_failures(&self) -> auth_failures::AuthFailureConfig {
        auth_failures::AuthFailureConfig {
            rate: Rate {
                per_s: f64::from(self.auth_failures_per_min) / 60.0,
                burst: f64::from(self.auth_failures_burst),
            },
            ban: Duration::from_secs(self.auth_ban_s),
            max_sources: self.max_sources,
        }
    }

    fn table(&self) -> TableConfig {
        TableConfig {
            message: Rate::new(self.udp_rate, self.udp_burst),
            handshake: Rate::new(self.ws_handshake_rate, self.ws_handshake_burst),
            ban: Duration::from_secs(self.ban_s),
            max_sources: self.max_sources,
            trust_recheck: Duration::from_secs(10),
        }
    }
}

/// Says whether a source IP is trusted (asked once per new source and
/// then every few seconds, never per message).
pub type TrustFn = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// What the limiter shed (read by metrics and tests).
#[derive(Debug, Default)]
pub struct Counters {
    /// UDP messages shed (source over its rate or banned).
    pub udp_shed: AtomicU64,
    /// WebSocket messages shed (flow over its rate or banned).
    pub ws_shed: AtomicU64,
    /// WebSocket connections closed at once (source over its handshake
    /// rate or banned).
    pub handshakes_shed: AtomicU64,
    /// Source IPs banned.
    pub source_bans: AtomicU64,
    /// Source IPs banned for failed authentications.
    pub auth_bans: AtomicU64,
    /// Requests refused because their source was banned for failed
    /// authentications.
    pub auth_refused: AtomicU64,
    /// WebSocket flows banned.
    pub flow_bans: AtomicU64,
    /// Messages and connections that passed uncounted (table full).
    pub untracked: AtomicU64,
}

/// The shared limiter the transports consult.
pub struct Limiter {
    cfg: LimitsConfig,
    table: Mutex<SourceTable>,
    auth: Mutex<auth_failures::AuthFailures>,
    trust: TrustFn,
    counters: Counters,
    log: Mutex<LogThrottle>,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("enabled", &self.cfg.enabled)
            .finish_non_exhaustive()
    }
}

impl Default for Limiter {
    fn default() -> Self {
        Self::disabled()
    }
}

impl Limiter {
    /// A limiter with `cfg`; `trust` says which sources are exempt.
    pub fn new(cfg: &LimitsConfig, trust: TrustFn) -> Self {
        let now = Instant::now();
        Self {
            table: Mutex::new(SourceTable::new(cfg.table(), now)),
            auth: Mutex::new(auth_failures::AuthFailures::new(cfg.auth_failures(), now)),
            trust,
            counters: Counters::default(),
            log: Mutex::new(LogThrottle::new(Duration::from_secs(cfg.log_interval_s))),
            cfg: cfg.clone(),
        }
    }

    /// A limiter that lets everything through.
    pub fn disabled() -> Self {
        let cfg = LimitsConfig {
            enabled: false,
            ..LimitsConfig::default()
        };
        Self::new(&cfg, Arc::new(|_| false))
    }

    /// The configuration.
    pub fn config(&self) -> &LimitsConfig {
        &self.cfg
    }

    /// What to do with shed messages.
    pub fn action(&self) -> BanAction {
        self.cfg.action
    }

    /// The counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Source addresses tracked now.
    pub fn sources(&self) -> usize {
        crate::transport::lock(&self.table).len()
    }

    /// Judges one UDP datagram from `ip`.
    pub fn check_udp(&self, ip: IpAddr) -> Outcome {
        self.check(ip, Kind::Message, &self.counters.udp_shed, "UDP messages")
    }

    /// Judges one WebSocket connection attempt from `ip`.
    pub fn check_handshake(&self, ip: IpAddr) -> Outcome {
        self.check(
            ip,
            Kind::Handshake,
            &self.counters.handshakes_shed,
            "WebSocket connections",
        )
    }

    fn check(&self, ip: IpAddr, kind: Kind, shed: &AtomicU64, what: &'static str) -> Outcome {
        if !self.cfg.enabled {
            return Outcome::Pass {
                trusted: false,
                untracked: false,
            };
        }
        let now = Instant::now();
        let outcome =
            crate::transport::lock(&self.table).check(now, ip, kind, |ip| (self.trust)(ip));
        match outcome {
            Outcome::Pass {
                untracked: true, ..
            } => {
                self.counters.untracked.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Pass { .. } => {}
            Outcome::Shed {
                retry_after_s,
                new_ban,
            } => {
                shed.fetch_add(1, Ordering::Relaxed);
                if new_ban {
                    self.counters.source_bans.fetch_add(1, Ordering::Relaxed);
                }
                self.note(now, new_ban, what, &ip.to_string(), retry_after_s);
            }
        }
        outcome
    }

    /// Whether requests from `ip` are refused for failed authentications:
    /// the seconds left of the ban. Trusted sources are never banned.
    pub fn auth_banned(&self, ip: IpAddr) -> Option<u32> {
        if !self.cfg.enabled {
            return None;
        }
        let left = crate::transport::lock(&self.auth).banned(ip, Instant::now());
        if left.is_some() {
            self.counters.auth_refused.fetch_add(1, Ordering::Relaxed);
        }
        left
    }

    /// Counts a failed authentication (wrong password or unknown user)
    /// from `ip`.
    pub fn auth_failed(&self, ip: IpAddr) {
        if !self.cfg.enabled || (self.trust)(ip) {
            return;
        }
        let now = Instant::now();
        let failure = crate::transport::lock(&self.auth).failed(ip, now);
        if let auth_failures::Failure::Banned { ban_s } = failure {
            self.counters.auth_bans.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                source = %ip,
                ban_s,
                "too many failed authentications, source banned"
            );
        }
    }

    /// A per-flow guard for a new WebSocket flow (`None`: limits off).
    pub fn flow_guard(&self) -> Option<FlowGuard> {
        self.cfg.enabled.then(|| {
            let rate = Rate::new(self.cfg.ws_flow_rate, self.cfg.ws_flow_burst);
            FlowGuard {
                guard: Guard::new(rate, Instant::now()),
                rate,
                ban: Duration::from_secs(self.cfg.ban_s),
            }
        })
    }

    /// Counts and (rate-limited) logs a message a flow guard shed.
    pub fn flow_shed(&self, flow: u64, peer: std::net::SocketAddr, verdict: Verdict) {
        if let Verdict::Shed {
            retry_after_s,
            new_ban,
        } = verdict
        {
            self.counters.ws_shed.fetch_add(1, Ordering::Relaxed);
            if new_ban {
                self.counters.flow_bans.fetch_add(1, Ordering::Relaxed);
            }
            self.note(
                Instant::now(),
                new_ban,
                "WebSocket messages",
                &format!("flow {flow} from {peer}"),
                retry_after_s,
            );
        }
    }

    fn note(&self, now: Instant, new_ban: bool, what: &'static str, who: &str, retry: u32) {
        let report = crate::transport::lock(&self.log).event(now);
        if let Some(suppressed) = report {
            if new_ban {
                tracing::warn!(
                    source = who,
                    ban_s = retry,
                    shed_since_last_report = suppressed,
                    "flood limit: {what} over the rate, source banned"
                );
            } else {
                tracing::warn!(
                    source = who,
                    ban_left_s = retry,
                    shed_since_last_report = suppressed,
                    "flood limit: shedding {what}"
                );
            }
        } else if new_ban {
            tracing::debug!(source = who, ban_s = retry, "flood limit: source banned");
        }
    }
}

/// The message rate of one WebSocket flow, owned by the flow's task (no
/// shared state on the per-message path).
#[derive(Debug, Clone, Copy)]
pub struct FlowGuard {
    guard: Guard,
    rate: Rate,
    ban: Duration,
}

impl FlowGuard {
    /// Judges one message on the flow.
    pub fn check(&mut self, now: Instant) -> Verdict {
        self.guard.check(self.rate, self.ban, now)
    }
}

/// The stateless 503 for a shed request: its Via, From, To, Call-ID and
/// CSeq, a To tag, `Retry-After` and our `Server` (`None` for responses,
/// ACKs and what does not parse).
pub fn shed_reply(
    data: &[u8],
    max_size: usize,
    retry_after_s: u32,
    server: &str,
) -> Option<Vec<u8>> {
    let checked = crate::sip::parse(data, max_size).ok()?;
    let crate::rsip::SipMessage::Request(req) = checked.msg else {
        return None;
    };
    if req.method == crate::rsip::Method::Ack {
        return None;
    }
    let mut resp = crate::transaction::make_response(
        &req,
        503,
        Some("Service Unavailable"),
        Some(&crate::sip::new_tag()),
    );
    resp.headers.push(crate::rsip::Header::RetryAfter(
        crate::rsip::headers::RetryAfter::new(retry_after_s.to_string()),
    ));
    if !server.is_empty() {
        resp.headers.push(crate::rsip::Header::Server(
            crate::rsip::headers::Server::new(server.to_owned()),
        ));
    }
    Some(crate::transaction::encode_response(&resp).to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_errors_name_the_key() {
        LimitsConfig::default().validate().unwrap();
        let c = LimitsConfig {
            udp_rate: 0,
            ..LimitsConfig::default()
        };
        assert_eq!(c.validate().unwrap_err().0, "udp_rate");
        let c = LimitsConfig {
            trusted: vec!["10.0.0.0/8".into(), "pbx.example".into()],
            ..LimitsConfig::default()
        };
        let (key, msg) = c.validate().unwrap_err();
        assert_eq!(key, "trusted");
        assert!(msg.contains("pbx.example"), "{msg}");
        let c = LimitsConfig {
            max_server_transactions: 10,
            max_server_transactions_per_source: 11,
            ..LimitsConfig::default()
        };
        assert_eq!(
            c.validate().unwrap_err().0,
            "max_server_transactions_per_source"
        );
    }

    #[test]
    fn limiter_sheds_and_counts_but_spares_the_trusted() {
        let cfg = LimitsConfig {
            udp_rate: 1,
            udp_burst: 3,
            ..LimitsConfig::default()
        };
        let pbx: IpAddr = [127, 0, 0, 9].into();
        let l = Limiter::new(&cfg, Arc::new(move |ip| ip == pbx));
        let attacker: IpAddr = [127, 0, 0, 2].into();
        let passed = (0..10).filter(|_| l.check_udp(attacker).passed()).count();
        assert_eq!(passed, 3);
        assert_eq!(l.counters().udp_shed.load(Ordering::Relaxed), 7);
        assert_eq!(l.counters().source_bans.load(Ordering::Relaxed), 1);
        // The ban covers the source's connections too.
        assert!(!l.check_handshake(attacker).passed());
        assert!((0..1000).all(|_| l.check_udp(pbx).passed()));
        assert_eq!(l.sources(), 2);
        // Disabled: everything passes, nothing is tracked.
        let off = Limiter::disabled();
        assert!((0..100).all(|_| off.check_udp(attacker).passed()));
        assert_eq!(off.sources(), 0);
        assert!(off.flow_guard().is_none());
    }

    #[test]
    fn shed_reply_is_a_503_with_retry_after_for_requests_only() {
        let options = "OPTIONS sip:gw SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKx1\r\nMax-Forwards: 70\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:gw>\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let reply = shed_reply(options.as_bytes(), 65_535, 7, "rtcgate").unwrap();
        let text = String::from_utf8(reply).unwrap();
        assert!(
            text.starts_with("SIP/2.0 503 Service Unavailable\r\n"),
            "{text}"
        );
        assert!(text.contains("Retry-After: 7\r\n"), "{text}");
        assert!(text.contains("Call-ID: c1\r\n"), "{text}");
        assert!(text.contains("branch=z9hG4bKx1"), "{text}");
        let ack = options
            .replace("OPTIONS sip", "ACK sip")
            .replace("1 OPTIONS", "1 ACK");
        assert!(shed_reply(ack.as_bytes(), 65_535, 7, "").is_none());
        let resp = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bKx1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:gw>;tag=2\r\nCall-ID: c1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        assert!(shed_reply(resp.as_bytes(), 65_535, 7, "").is_none());
        assert!(shed_reply(b"garbage", 65_535, 7, "").is_none());
    }
}
