//! The configuration file: one TOML document, typed with serde.
//!
//! Every key has a default that runs the quick start, so an empty file (or no
//! file) is a valid configuration. Unknown keys are refused, because a typo
//! that silently falls back to a default is the worst kind of config error.
//! Errors name the dotted key and, where the file has it, the line.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod origin;
pub use origin::{Origin, OriginError};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed, a key is unknown or a value has the wrong type.
    #[error("{origin}{location}: {message}")]
    Syntax {
        /// `file: ` prefix, or empty.
        origin: String,
        /// ` line N, column M`, or empty.
        location: String,
        /// What is wrong, as the TOML parser words it.
        message: String,
    },
    /// A value is well-typed but not acceptable.
    #[error("{origin}{location}: invalid value for `{key}`: {message}")]
    Invalid {
        /// `file: ` prefix, or empty.
        origin: String,
        /// ` line N`, or empty when the key is not in the file (a default).
        location: String,
        /// The dotted key, e.g. `websocket.max_message_size`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Identity of this node and its SIP domains.
    pub general: General,
    /// SIP over UDP and SIP timers.
    pub sip: Sip,
    /// The HTTP(S) listeners that upgrade to SIP over WebSocket.
    pub websocket: WebSocket,
    /// TLS certificate for WSS and HTTPS.
    pub tls: Tls,
    /// Static routes for initial requests to users that are not registered
    /// here, first match wins (`[[routes]]`): a shorthand for a one-PBX set
    /// and a prefix rule, tried after `[[routing.rules]]`.
    pub routes: Vec<StaticRoute>,
    /// PBX destination sets, routing rules, failover and health checks.
    pub routing: crate::routing::RoutingConfig,
    /// Where subscribers, registrations and call records live.
    pub database: Database,
    /// Digest authentication.
    pub auth: Auth,
    /// Registration lifetimes.
    pub registrar: Registrar,
    /// rtpengine and the media policy (`[rtpengine]`).
    pub rtpengine: crate::media::MediaConfig,
    /// Call records (`[accounting]`).
    pub accounting: Accounting,
    /// The admin listener: metrics and the JSON API (`[admin]`).
    pub admin: crate::admin::AdminConfig,
    /// Traces and metrics export (`[telemetry]`).
    pub telemetry: crate::telemetry::TelemetryConfig,
    /// Flood protection and load caps (`[limits]`).
    pub limits: crate::limits::LimitsConfig,
    /// Scale-out: nodes sharing the database (`[cluster]`).
    pub cluster: crate::cluster::ClusterConfig,
}

/// Call records: one row per call in `call_records` (`rtcgate cdr list`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Accounting {
    /// Write a record for every call.
    pub enabled: bool,
    /// Events and records queued toward the database, and records held
    /// while it is unavailable; beyond that records are dropped and
    /// counted, never waited for.
    pub queue_size: usize,
    /// Records written per database transaction, at most.
    pub batch_size: usize,
    /// How long an ended call waits for rtpengine's delete statistics before
    /// its record is written without them, in milliseconds.
    pub media_wait_ms: u64,
}

impl Default for Accounting {
    fn default() -> Self {
        Self {
            enabled: true,
            queue_size: 10_000,
            batch_size: 100,
            media_wait_ms: 2_000,
        }
    }
}

/// The SQL database (SQLite embedded by default; MariaDB or PostgreSQL by URL).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Database {
    /// `sqlite://FILE?mode=rwc`, `mysql://user:pass@host:3306/db` or
    /// `postgres://user:pass@host:5432/db`.
    pub url: String,
    /// Connection pool size.
    pub max_connections: u32,
}

impl Default for Database {
    fn default() -> Self {
        Self {
            url: "sqlite://run/rtcgate.db?mode=rwc".into(),
            max_connections: 8,
        }
    }
}

/// Digest authentication (RFC 3261 §22, RFC 8760).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Challenge REGISTERs and initial requests from untrusted sources.
    pub required: bool,
    /// Sources accepted without authentication (PBXes): IP addresses or
    /// `ip:port`. Static route destinations are trusted as well.
    pub trusted: Vec<String>,
    /// Seconds a nonce stays valid before it is re-challenged with `stale=true`.
    pub nonce_ttl_s: i64,
    /// 64 hex digits keying the nonces; nodes sharing it accept each other's
    /// nonces. Default: random at every start.
    pub secret: Option<String>,
    /// Challenge algorithms for WebSocket clients, most preferred first
    /// (SIP.js answers the last one and supports MD5 only).
    pub ws_algorithms: Vec<String>,
    /// Challenge algorithms for UDP clients, in order: legacy phones and
    /// sipp answer the first one and often support MD5 only.
    pub udp_algorithms: Vec<String>,
}

impl Default for Auth {
    fn default() -> Self {
        Self {
            required: true,
            trusted: Vec::new(),
            nonce_ttl_s: 300,
            secret: None,
            ws_algorithms: vec!["SHA-256".into(), "MD5".into()],
            udp_algorithms: vec!["MD5".into(), "SHA-256".into()],
        }
    }
}

/// Registration lifetimes (RFC 3261 §10.3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Registrar {
    /// Shorter non-zero expirations get 423 with Min-Expires.
    pub min_expires: u32,
    /// Longer expirations are shortened to this.
    pub max_expires: u32,
    /// Used when the REGISTER gives none.
    pub default_expires: u32,
    /// Live contacts allowed per user.
    pub max_contacts: usize,
}

impl Default for Registrar {
    fn default() -> Self {
        Self {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 600,
            max_contacts: 10,
        }
    }
}

/// A trusted source: an IP address (any port) or an exact `ip:port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustedSource {
    /// Any port of this address.
    Ip(IpAddr),
    /// Exactly this address and port.
    Addr(SocketAddr),
}

impl TrustedSource {
    /// Parses `1.2.3.4`, `::1`, `1.2.3.4:5060` or `[::1]:5060`.
    pub fn parse(s: &str) -> Option<Self> {
        s.parse::<SocketAddr>()
            .map(TrustedSource::Addr)
            .ok()
            .or_else(|| {
                s.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .ok()
                    .map(TrustedSource::Ip)
            })
    }

    /// Whether `peer` matches.
    pub fn matches(&self, peer: SocketAddr) -> bool {
        match self {
            TrustedSource::Ip(ip) => *ip == peer.ip(),
            TrustedSource::Addr(a) => *a == peer,
        }
    }
}

impl Auth {
    /// The trusted sources (invalid entries are refused by validation).
    pub fn trusted_sources(&self) -> Vec<TrustedSource> {
        self.trusted
            .iter()
            .filter_map(|t| TrustedSource::parse(t))
            .collect()
    }

    /// Parsed algorithm lists (WebSocket, UDP); validation refused unknown names.
    pub fn algorithm_orders(&self) -> (Vec<crate::auth::Algorithm>, Vec<crate::auth::Algorithm>) {
        let parse = |l: &[String]| {
            l.iter()
                .filter_map(|a| crate::auth::Algorithm::from_param(Some(a)))
                .collect()
        };
        (parse(&self.ws_algorithms), parse(&self.udp_algorithms))
    }

    /// The nonce secret, if configured.
    pub fn secret_bytes(&self) -> Option<[u8; 32]> {
        let hex = self.secret.as_deref()?;
        let mut out = [0u8; 32];
        if hex.len() != 64 {
            return None;
        }
        for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
            let s = std::str::from_utf8(chunk).ok()?;
            *out.get_mut(i)? = u8::from_str_radix(s, 16).ok()?;
        }
        Some(out)
    }
}

/// A static route: calls whose user part starts with `prefix` go to
/// `destination` over UDP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticRoute {
    /// User-part prefix ("1" matches 1000, 1999...).
    pub prefix: String,
    /// The PBX's UDP address.
    pub destination: SocketAddr,
    /// Codec policy for calls to it (a name under `[rtpengine.codec_policies]`).
    #[serde(default)]
    pub codec_policy: Option<String>,
}

/// Identity of this node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct General {
    /// Name of this node (written into registrations; must be unique in a cluster).
    pub node_id: String,
    /// SIP domains served by this gateway (also the digest realm, first entry).
    pub domains: Vec<String>,
    /// Default log filter (`RUST_LOG` overrides it), e.g. `info` or `rtcgate=debug`.
    pub log: String,
    /// Value of the `Server` / `User-Agent` header on messages rtcgate creates.
    pub server_header: String,
    /// On SIGTERM, how long active calls may go on before rtcgate hangs them
    /// up and exits, in seconds.
    pub drain_timeout_s: u64,
}

impl Default for General {
    fn default() -> Self {
        Self {
            node_id: "node1".into(),
            domains: vec!["localhost".into(), "127.0.0.1".into()],
            log: "info".into(),
            server_header: format!("rtcgate/{}", env!("CARGO_PKG_VERSION")),
            drain_timeout_s: 30,
        }
    }
}

/// SIP over UDP and transaction timers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sip {
    /// UDP listen addresses (IPv4 and/or IPv6). Empty disables UDP.
    pub udp_listen: Vec<SocketAddr>,
    /// Host (name or address) written into Via and Record-Route for UDP.
    /// Default: the listen address.
    pub advertised_host: Option<String>,
    /// Largest SIP message accepted over UDP, in bytes.
    pub max_udp_message_size: usize,
    /// RFC 3261 T1 in milliseconds.
    pub t1_ms: u64,
    /// RFC 3261 T2 in milliseconds.
    pub t2_ms: u64,
    /// RFC 3261 T4 in milliseconds.
    pub t4_ms: u64,
    /// A confirmed call is hung up (BYE to both sides, media deleted) after
    /// this many seconds, so calls whose BYE was lost cannot hold media
    /// forever. 0 disables the limit.
    pub max_call_duration_s: u64,
}

impl Default for Sip {
    fn default() -> Self {
        Self {
            udp_listen: vec![SocketAddr::from(([127, 0, 0, 1], 5060))],
            advertised_host: None,
            max_udp_message_size: 65_507,
            t1_ms: 500,
            t2_ms: 4_000,
            t4_ms: 5_000,
            max_call_duration_s: 4 * 3600,
        }
    }
}

/// The HTTP(S) listeners: WebSocket upgrades for SIP plus plain HTTP routes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocket {
    /// WSS (TLS) listen addresses. Empty disables WSS.
    pub wss_listen: Vec<SocketAddr>,
    /// Plain WS listen addresses, for use behind a TLS-terminating proxy.
    pub ws_listen: Vec<SocketAddr>,
    /// Origins allowed to open a SIP WebSocket. `*` allows any; a request
    /// without `Origin` (not a browser) is allowed unless `require_origin`.
    pub allowed_origins: Vec<String>,
    /// Refuse upgrades that carry no `Origin` header.
    pub require_origin: bool,
    /// Largest WebSocket message (one SIP message), in bytes.
    pub max_message_size: usize,
    /// Largest single WebSocket frame, in bytes.
    pub max_frame_size: usize,
    /// Time allowed for the TLS and HTTP handshakes, in milliseconds.
    pub handshake_timeout_ms: u64,
    /// Largest HTTP request head accepted, in bytes.
    pub max_http_head: usize,
    /// Open connections allowed per source IP address.
    pub max_connections_per_ip: usize,
    /// Open connections allowed in total.
    pub max_connections: usize,
    /// Interval between WebSocket pings, in seconds (0 disables pings).
    pub ping_interval_s: u64,
    /// A connection with no traffic (not even a pong) for this long is closed, in seconds.
    pub idle_timeout_s: u64,
    /// Messages queued toward one connection before it is considered stuck and closed.
    pub send_queue: usize,
}

impl Default for WebSocket {
    fn default() -> Self {
        Self {
            wss_listen: vec![SocketAddr::from(([127, 0, 0, 1], 8443))],
            ws_listen: vec![],
            allowed_origins: vec![
                "https://localhost:8443".into(),
                "https://127.0.0.1:8443".into(),
            ],
            require_origin: false,
            max_message_size: 64 * 1024,
            max_frame_size: 64 * 1024,
            handshake_timeout_ms: 5_000,
            max_http_head: 8 * 1024,
            max_connections_per_ip: 200,
            max_connections: 60_000,
            ping_interval_s: 30,
            idle_timeout_s: 120,
            send_queue: 256,
        }
    }
}

/// TLS material.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// PEM certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Generate a self-signed development CA and certificate into the
    /// directory of `cert`/`key` when they do not exist.
    pub generate_dev_cert: bool,
    /// How often the files are checked for changes, in milliseconds.
    pub reload_check_ms: u64,
}

impl Default for Tls {
    fn default() -> Self {
        Self {
            cert: PathBuf::from("run/certs/cert.pem"),
            key: PathBuf::from("run/certs/key.pem"),
            generate_dev_cert: true,
            reload_check_ms: 2_000,
        }
    }
}

impl Sip {
    /// T1 as a duration.
    pub fn t1(&self) -> Duration {
        Duration::from_millis(self.t1_ms)
    }
}

impl WebSocket {
    /// Whether `origin` (the value of the one `Origin` header, `None` when
    /// there is none) may open a SIP WebSocket. Origins are compared as RFC
    /// 6454 tuples (see [`Origin`]); `null` and anything that is not an
    /// origin match only `*`.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return !self.require_origin;
        };
        if self.allowed_origins.iter().any(|a| a == "*") {
            return true;
        }
        // A sandboxed or privacy-sensitive context sends `null`: it names no site.
        let Ok(origin) = Origin::parse(origin) else {
            return false;
        };
        // Entries were validated at load; one that does not parse matches nothing.
        self.allowed_origins
            .iter()
            .any(|a| Origin::parse(a).is_ok_and(|a| a == origin))
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &format!("{}", path.display()))
    }

    /// Parses and validates configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let prefix = if origin.is_empty() {
            String::new()
        } else {
            origin.to_owned()
        };
        let config: Config = toml::from_str(text).map_err(|e| {
            let location = e
                .span()
                .map(|s| {
                    let (line, col) = line_col(text, s.start);
                    format!(":{line}:{col}")
                })
                .unwrap_or_default();
            ConfigError::Syntax {
                origin: prefix.clone(),
                location,
                message: e.message().trim().to_owned(),
            }
        })?;
        config.validate().map_err(|(key, message)| {
            let location = key_line(text, &key)
                .map(|l| format!(":{l}"))
                .unwrap_or_else(|| " (default value)".into());
            ConfigError::Invalid {
                origin: prefix.clone(),
                location,
                key,
                message,
            }
        })?;
        Ok(config)
    }

    /// Checks values serde cannot: returns the dotted key and the reason.
    fn validate(&self) -> Result<(), (String, String)> {
        fn bad(key: &str, msg: impl Into<String>) -> Result<(), (String, String)> {
            Err((key.to_owned(), msg.into()))
        }
        if self.general.node_id.trim().is_empty()
            || !self
                .general
                .node_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return bad(
                "general.node_id",
                "must be non-empty and use only letters, digits, '-', '_' and '.'",
            );
        }
        if self.general.domains.is_empty() {
            return bad("general.domains", "at least one SIP domain is needed");
        }
        if let Some(d) = self.general.domains.iter().find(|d| !valid_host(d)) {
            return bad(
                "general.domains",
                format!("{d:?} is not a host name or IP address"),
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.general.log).is_err() {
            return bad("general.log", "not a valid log filter (e.g. \"info\")");
        }
        if let Some(h) = &self.sip.advertised_host
            && !valid_host(h)
        {
            return bad(
                "sip.advertised_host",
                format!("{h:?} is not a host name or IP address"),
            );
        }
        if !(512..=65_535).contains(&self.sip.max_udp_message_size) {
            return bad("sip.max_udp_message_size", "must be between 512 and 65535");
        }
        if self.sip.t1_ms == 0 || self.sip.t1_ms > 60_000 {
            return bad("sip.t1_ms", "must be between 1 and 60000");
        }
        if self.sip.t2_ms < self.sip.t1_ms {
            return bad("sip.t2_ms", "must not be smaller than sip.t1_ms");
        }
        if self.sip.t4_ms == 0 {
            return bad("sip.t4_ms", "must be positive");
        }
        let ws = &self.websocket;
        if !(1024..=16 * 1024 * 1024).contains(&ws.max_message_size) {
            return bad(
                "websocket.max_message_size",
                "must be between 1024 and 16777216",
            );
        }
        if ws.max_frame_size < 1024 || ws.max_frame_size > ws.max_message_size {
            return bad(
                "websocket.max_frame_size",
                "must be at least 1024 and at most websocket.max_message_size",
            );
        }
        if ws.handshake_timeout_ms == 0 {
            return bad("websocket.handshake_timeout_ms", "must be positive");
        }
        if !(1024..=65_536).contains(&ws.max_http_head) {
            return bad("websocket.max_http_head", "must be between 1024 and 65536");
        }
        if ws.max_connections_per_ip == 0 {
            return bad("websocket.max_connections_per_ip", "must be positive");
        }
        if ws.max_connections == 0 {
            return bad("websocket.max_connections", "must be positive");
        }
        if ws.idle_timeout_s == 0 {
            return bad("websocket.idle_timeout_s", "must be positive");
        }
        if ws.ping_interval_s >= ws.idle_timeout_s {
            return bad(
                "websocket.ping_interval_s",
                "must be smaller than websocket.idle_timeout_s",
            );
        }
        if ws.send_queue == 0 {
            return bad("websocket.send_queue", "must be positive");
        }
        for o in ws.allowed_origins.iter().filter(|o| *o != "*") {
            if let Err(e) = Origin::parse(o) {
                return bad(
                    "websocket.allowed_origins",
                    format!("{o:?} is not an origin like \"https://host:port\" or \"*\": {e}"),
                );
            }
        }
        if self.sip.udp_listen.is_empty() && ws.wss_listen.is_empty() && ws.ws_listen.is_empty() {
            return bad("sip.udp_listen", "no listener configured at all");
        }
        if !["sqlite:", "mysql:", "mariadb:", "postgres:", "postgresql:"]
            .iter()
            .any(|p| self.database.url.starts_with(p))
        {
            return bad(
                "database.url",
                "must start with sqlite:, mysql:, mariadb:, postgres: or postgresql:",
            );
        }
        if self.database.max_connections == 0 {
            return bad("database.max_connections", "must be positive");
        }
        self.cluster.validate(&self.sip.udp_listen)?;
        if let Some(t) = self
            .auth
            .trusted
            .iter()
            .find(|t| TrustedSource::parse(t).is_none())
        {
            return bad(
                "auth.trusted",
                format!("{t:?} is not an IP address or ip:port"),
            );
        }
        for (key, list) in [
            ("auth.ws_algorithms", &self.auth.ws_algorithms),
            ("auth.udp_algorithms", &self.auth.udp_algorithms),
        ] {
            if list.is_empty() {
                return bad(key, "at least one algorithm is needed");
            }
            if let Some(a) = list
                .iter()
                .find(|a| crate::auth::Algorithm::from_param(Some(a)).is_none())
            {
                return bad(key, format!("{a:?} is not one of \"SHA-256\", \"MD5\""));
            }
        }
        if self.auth.nonce_ttl_s < 10 {
            return bad("auth.nonce_ttl_s", "must be at least 10");
        }
        if self.auth.secret.is_some() && self.auth.secret_bytes().is_none() {
            return bad("auth.secret", "must be 64 hexadecimal digits");
        }
        let r = &self.registrar;
        if r.min_expires == 0 || r.min_expires > r.max_expires {
            return bad(
                "registrar.min_expires",
                "must be positive and not above registrar.max_expires",
            );
        }
        if r.default_expires < r.min_expires || r.default_expires > r.max_expires {
            return bad(
                "registrar.default_expires",
                "must lie between registrar.min_expires and registrar.max_expires",
            );
        }
        if r.max_contacts == 0 {
            return bad("registrar.max_contacts", "must be positive");
        }
        for (i, r) in self.routes.iter().enumerate() {
            if let Some(p) = &r.codec_policy
                && !self.rtpengine.has_codec_policy(p)
            {
                return bad(
                    &format!("routes[{i}].codec_policy"),
                    format!("no codec policy {p:?} under [rtpengine.codec_policies]"),
                );
            }
        }
        if let Err(e) = self.routing.validate() {
            return Err((e.key, e.message));
        }
        let timer_b_ms = self.sip.t1_ms.saturating_mul(64);
        for (i, set) in self.routing.sets.iter().enumerate() {
            if set.failover_timeout_ms >= timer_b_ms {
                return bad(
                    &format!("routing.sets[{i}].failover_timeout_ms"),
                    format!("must be shorter than timer B (64 × sip.t1_ms = {timer_b_ms} ms)"),
                );
            }
            for (j, d) in set.destinations.iter().enumerate() {
                if let Some(p) = &d.codec_policy
                    && !self.rtpengine.has_codec_policy(p)
                {
                    return bad(
                        &format!("routing.sets[{i}].destinations[{j}].codec_policy"),
                        format!("no codec policy {p:?} under [rtpengine.codec_policies]"),
                    );
                }
            }
        }
        if let Err(e) = self.effective_routing().validate() {
            // Errors in the generated part name the `[[routes]]` entry.
            let generated = |prefix: &str, configured: usize| {
                let rest = e.key.strip_prefix(prefix)?;
                let (n, tail) = rest.split_once(']')?;
                let i = n.parse::<usize>().ok()?.checked_sub(configured)?;
                let tail = tail.trim_start_matches('.');
                let field = match tail {
                    t if t.starts_with("destinations[0].address") => "destination",
                    t if t.starts_with("prefix") || t.is_empty() => "prefix",
                    t => t,
                };
                Some(format!("routes[{i}].{field}"))
            };
            let key = generated("routing.sets[", self.routing.sets.len())
                .or_else(|| generated("routing.rules[", self.routing.rules.len()))
                .unwrap_or(e.key);
            return Err((key, e.message));
        }
        if let Err(e) = self.rtpengine.validate() {
            return Err((format!("rtpengine.{}", e.key), e.message));
        }
        if self.tls.reload_check_ms == 0 {
            return bad("tls.reload_check_ms", "must be positive");
        }
        let a = &self.accounting;
        if !(1..=1_000_000).contains(&a.queue_size) {
            return bad("accounting.queue_size", "must be between 1 and 1000000");
        }
        if !(1..=10_000).contains(&a.batch_size) {
            return bad("accounting.batch_size", "must be between 1 and 10000");
        }
        if a.media_wait_ms > 60_000 {
            return bad("accounting.media_wait_ms", "must be at most 60000");
        }
        if let Err((key, message)) = self.admin.validate() {
            return bad(&format!("admin.{key}"), message);
        }
        if let Err((key, message)) = self.telemetry.validate() {
            return bad(&format!("telemetry.{key}"), message);
        }
        if let Err((key, message)) = self.limits.validate() {
            return bad(&format!("limits.{key}"), message);
        }
        Ok(())
    }
}

impl Config {
    /// `[routing]` with the `[[routes]]` shorthand appended: each static
    /// route becomes a one-destination set (no probing: always tried) and a
    /// prefix rule after the configured rules.
    pub fn effective_routing(&self) -> crate::routing::RoutingConfig {
        use crate::routing::{DestinationConfig, ProbeConfig, RuleConfig, SetConfig};
        let mut routing = self.routing.clone();
        for (i, r) in self.routes.iter().enumerate() {
            let name = format!("routes.{i}");
            routing.sets.push(SetConfig {
                name: name.clone(),
                algorithm: Default::default(),
                destinations: vec![DestinationConfig {
                    address: r.destination,
                    weight: 1,
                    priority: 0,
                    transport: Default::default(),
                    codec_policy: r.codec_policy.clone(),
                }],
                trusted_sources: Vec::new(),
                failover_timeout_ms: self
                    .sip
                    .t1_ms
                    .saturating_mul(64)
                    .saturating_sub(1)
                    .min(8_000),
                failover_codes: Vec::new(),
                probe: ProbeConfig {
                    interval_ms: 0,
                    ..ProbeConfig::default()
                },
            });
            let (prefix, default) = if r.prefix.is_empty() {
                (None, true)
            } else {
                (Some(r.prefix.clone()), false)
            };
            routing.rules.push(RuleConfig {
                name: Some(name.clone()),
                prefix,
                default,
                set: Some(name),
                ..RuleConfig::default()
            });
        }
        routing
    }
}

/// A host name (letters, digits, `-`, `.`) or an IP address.
fn valid_host(h: &str) -> bool {
    let bare = h.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().is_ok()
        || (!h.is_empty()
            && h.len() <= 253
            && h.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }))
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// The line on which a dotted key is written, if it is in the file.
fn key_line(text: &str, dotted: &str) -> Option<usize> {
    let root = toml::de::DeTable::parse(text).ok()?;
    let mut table = root.get_ref();
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        // `sets[1]` (an array of tables) or `destinations[0]` (an inline array).
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let (key, mut value) = table.get_key_value(name)?;
        let mut at = key.span().start;
        if let Some(i) = index
            && let toml::de::DeValue::Array(items) = value.get_ref()
        {
            let Some(item) = items.get(i) else {
                return Some(line_col(text, at).0);
            };
            value = item;
            at = item.span().start;
        }
        if parts.peek().is_none() {
            return Some(line_col(text, at).0);
        }
        match value.get_ref() {
            toml::de::DeValue::Table(t) => table = t,
            _ => return Some(line_col(text, at).0),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_default() {
        let c = Config::parse("", "").unwrap();
        assert_eq!(c.general.node_id, "node1");
        assert_eq!(c.websocket.wss_listen.len(), 1);
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let err = Config::parse("[websocket]\nmax_mesage_size = 10\n", "x.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("x.toml:2"), "{msg}");
        assert!(msg.contains("max_mesage_size"), "{msg}");
    }

    #[test]
    fn wrong_type_is_named_with_its_line() {
        let err = Config::parse("[sip]\n\nt1_ms = \"fast\"\n", "c.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("c.toml:3"), "{msg}");
    }

    #[test]
    fn invalid_value_names_key_and_line() {
        let err =
            Config::parse("[websocket]\n# comment\nmax_frame_size = 10\n", "c.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`websocket.max_frame_size`"), "{msg}");
        assert!(msg.contains("c.toml:3"), "{msg}");
    }

    #[test]
    fn invalid_default_combination_says_default() {
        let err = Config::parse("[websocket]\nidle_timeout_s = 10\n", "c.toml").unwrap_err();
        assert!(err.to_string().contains("websocket.ping_interval_s"));
        assert!(err.to_string().contains("default value"), "{err}");
    }

    #[test]
    fn origins() {
        let ws = WebSocket::default();
        assert!(ws.origin_allowed(Some("https://localhost:8443")));
        assert!(ws.origin_allowed(Some("https://LOCALHOST:8443/")));
        assert!(!ws.origin_allowed(Some("https://evil.example")));
        assert!(ws.origin_allowed(None));
    }

    #[test]
    fn origins_compare_as_tuples() {
        let ws = WebSocket {
            allowed_origins: vec![
                "https://Example.com/".into(),
                "http://localhost:8080".into(),
            ],
            ..WebSocket::default()
        };
        for ok in [
            "https://example.com",
            "HTTPS://EXAMPLE.COM:443",
            "https://example.com/",
            "http://LocalHost:8080/",
        ] {
            assert!(ws.origin_allowed(Some(ok)), "{ok}");
        }
        for refused in [
            "null",
            "",
            "https://example.com/app",
            "https://example.com?x",
            "https://me@example.com",
            "https://example.com.evil.test",
            "https://evil-example.com",
            "https://example.com:8443",
            "http://example.com",
            "http://localhost",
            "https://example.com, https://evil.test",
        ] {
            assert!(!ws.origin_allowed(Some(refused)), "{refused}");
        }
        assert!(ws.origin_allowed(None));
        let strict = WebSocket {
            require_origin: true,
            ..ws.clone()
        };
        assert!(!strict.origin_allowed(None));
        assert!(strict.origin_allowed(Some("https://example.com")));
        let any = WebSocket {
            allowed_origins: vec!["*".into()],
            ..ws
        };
        assert!(any.origin_allowed(Some("null")));
        assert!(any.origin_allowed(Some("https://evil.test")));
    }

    #[test]
    fn invalid_allowed_origins_name_the_key() {
        for (entry, why) in [
            ("https://example.com/app", "path"),
            ("example.com", "scheme"),
            ("https://example.com:99999", "port"),
            ("https://user@example.com", "userinfo"),
            ("null", "scheme"),
        ] {
            let text = format!("[websocket]\nallowed_origins = [\"*\", {entry:?}]\n");
            let msg = Config::parse(&text, "o.toml").unwrap_err().to_string();
            assert!(msg.contains("`websocket.allowed_origins`"), "{msg}");
            assert!(msg.contains("o.toml:2"), "{msg}");
            assert!(msg.contains(why), "{entry}: {msg}");
        }
        let ok = "[websocket]\nallowed_origins = [\"https://EXAMPLE.com:443/\", \"http://[::1]:8080\"]\n";
        assert!(Config::parse(ok, "").is_ok());
    }

    #[test]
    fn accounting_section() {
        let c = Config::parse("", "").unwrap();
        assert!(c.accounting.enabled, "on by default");
        let c = Config::parse("[accounting]\nenabled = false\n", "").unwrap();
        assert!(!c.accounting.enabled);
        let err = Config::parse("[accounting]\nbatch_size = 0\n", "a.toml").unwrap_err();
        assert!(err.to_string().contains("a.toml:2"), "{err}");
        assert!(Config::parse("[accounting]\nenable = true\n", "").is_err());
    }

    #[test]
    fn routing_errors_name_the_key_and_line() {
        let text = "[sip]\nt1_ms = 100\n\n[[routing.sets]]\nname = \"pbx\"\ndestinations = [\n  { address = \"127.0.0.1:5080\" },\n  { address = \"127.0.0.1:5082\", weight = 0 },\n]\n";
        let msg = Config::parse(text, "r.toml").unwrap_err().to_string();
        assert!(
            msg.contains("`routing.sets[0].destinations[1].weight`"),
            "{msg}"
        );
        assert!(msg.contains("r.toml:8"), "{msg}");

        // The failover timeout must stay below timer B (64 × 100 ms here).
        let text = "[sip]\nt1_ms = 100\n\n[[routing.sets]]\nname = \"pbx\"\nfailover_timeout_ms = 7000\ndestinations = [{ address = \"127.0.0.1:5080\" }]\n";
        let msg = Config::parse(text, "r.toml").unwrap_err().to_string();
        assert!(msg.contains("routing.sets[0].failover_timeout_ms"), "{msg}");
        assert!(msg.contains("r.toml:6"), "{msg}");

        // A rule naming a set that does not exist.
        let text = "[[routing.sets]]\nname = \"pbx\"\ndestinations = [{ address = \"127.0.0.1:5080\" }]\n[[routing.rules]]\nrange = \"1000-1999\"\nset = \"nope\"\n";
        let msg = Config::parse(text, "r.toml").unwrap_err().to_string();
        assert!(msg.contains("routing.rules[0]"), "{msg}");
        assert!(
            msg.contains("r.toml:4") || msg.contains("r.toml:6"),
            "{msg}"
        );
    }

    #[test]
    fn static_routes_become_sets_and_rules_after_the_configured_ones() {
        let text = "[[routes]]\nprefix = \"2\"\ndestination = \"127.0.0.1:5080\"\n[[routes]]\nprefix = \"\"\ndestination = \"127.0.0.1:5090\"\n[[routing.sets]]\nname = \"pbx\"\ndestinations = [{ address = \"127.0.0.1:5082\" }]\n[[routing.rules]]\nrange = \"1000-1999\"\nset = \"pbx\"\n";
        let c = Config::parse(text, "r.toml").unwrap();
        let r = c.effective_routing();
        assert_eq!(r.sets.len(), 3);
        assert_eq!(r.rules.len(), 3);
        assert_eq!(r.rules[0].set.as_deref(), Some("pbx"));
        assert_eq!(r.rules[1].prefix.as_deref(), Some("2"));
        assert!(r.rules[2].default, "an empty prefix matches everything");
        assert_eq!(
            r.sets[1].probe.interval_ms, 0,
            "static routes are not probed"
        );

        let bad = "[[routes]]\nprefix = \"2 x\"\ndestination = \"127.0.0.1:5080\"\n";
        let msg = Config::parse(bad, "r.toml").unwrap_err().to_string();
        assert!(msg.contains("`routes[0].prefix`"), "{msg}");
        assert!(msg.contains("r.toml:2"), "{msg}");
    }

    #[test]
    fn limits_section() {
        let c = Config::parse("", "").unwrap();
        assert!(c.limits.enabled);
        let c = Config::parse(
            "[limits]\naction = \"drop\"\nban_s = 2\ntrusted = [\"10.0.0.0/8\"]\n",
            "",
        )
        .unwrap();
        assert_eq!(c.limits.action, crate::limits::BanAction::Drop);
        let msg = Config::parse("[limits]\n\nudp_rate = 0\n", "l.toml")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("`limits.udp_rate`"), "{msg}");
        assert!(msg.contains("l.toml:3"), "{msg}");
        let msg = Config::parse("[limits]\naction = \"ignore\"\n", "l.toml")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("l.toml:2"), "{msg}");
        let msg = Config::parse("[limits]\ntrusted = [\"pbx\"]\n", "l.toml")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("`limits.trusted`"), "{msg}");
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../../rtcgate.example.toml");
        Config::parse(text, "rtcgate.example.toml").unwrap();
    }
}
