//! The meter provider and every instrument. All instruments are
//! observable: their callbacks read the gateway's own counters at scrape
//! (or export) time, so the message path pays nothing for them.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use ngclient::{Health, InstanceStatus, MetricsSnapshot};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};

use super::counters::METHODS;
use super::setup::EXPORT_TIMEOUT;
use super::{SipCounters, TelemetryConfig};
use crate::media::Media;
use crate::proxy::ops::ProxySnapshot;
use crate::proxy::shell::ProxyHandle;
use crate::routing::{HealthState, RoutingHandle};
use crate::store::LocationService;
use crate::transport::Transports;

/// Why metrics could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The Prometheus exporter refused to build.
    #[error("Prometheus exporter: {0}")]
    Prometheus(String),
    /// The OTLP exporter refused to build.
    #[error("OTLP metric exporter: {0}")]
    Otlp(String),
}

/// Where the numbers come from.
pub struct MetricSources {
    /// Flows and transport counters.
    pub transports: Transports,
    /// Registrations.
    pub location: Arc<LocationService>,
    /// The proxy core (snapshots are taken through its shell).
    pub proxy: Arc<ProxyHandle>,
    /// rtpengine, when media is bridged.
    pub media: Option<Media>,
    routing: std::sync::RwLock<Option<RoutingHandle>>,
    cache: Mutex<Cache>,
}

/// What must be fetched asynchronously before a scrape.
#[derive(Debug, Default, Clone)]
pub(super) struct Cache {
    pub(super) proxy: ProxySnapshot,
    pub(super) ng: MetricsSnapshot,
    pub(super) instances: Vec<InstanceStatus>,
}

impl std::fmt::Debug for MetricSources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricSources").finish_non_exhaustive()
    }
}

impl MetricSources {
    /// Sources for one gateway.
    pub fn new(
        transports: Transports,
        location: Arc<LocationService>,
        proxy: Arc<ProxyHandle>,
        media: Option<Media>,
        routing: Option<RoutingHandle>,
    ) -> Self {
        Self {
            transports,
            location,
            proxy,
            media,
            routing: std::sync::RwLock::new(routing),
            cache: Mutex::new(Cache::default()),
        }
    }

    pub(super) fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn counters(&self) -> &SipCounters {
        self.proxy.counters()
    }

    /// Fetches what lives behind a task (the proxy core, the ng client).
    pub async fn refresh(&self) {
        let proxy = self.proxy.snapshot().await;
        let (ng, instances) = match &self.media {
            Some(m) => (
                m.client().metrics().await.ok(),
                m.client().instances().await.ok(),
            ),
            None => (None, None),
        };
        let mut c = self.cache();
        if let Some(p) = proxy {
            c.proxy = p;
        }
        if let Some(n) = ng {
            c.ng = n;
        }
        if let Some(i) = instances {
            c.instances = i;
        }
    }

    /// The PBX routing table, when routing runs.
    pub fn routing(&self) -> Option<RoutingHandle> {
        self.routing
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Sets (or replaces) the routing table the metrics and `/api/sets`
    /// read, for a routing service started after the gateway.
    pub fn set_routing(&self, routing: Option<RoutingHandle>) {
        *self
            .routing
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = routing;
    }

    /// PBX destinations as (set, address, up).
    pub fn destinations(&self) -> Vec<(String, String, bool)> {
        let Some(r) = self.routing() else {
            return Vec::new();
        };
        let states = r.states();
        let sets = r.with_table(|t| t.sets());
        let mut out = Vec::new();
        for (set, addrs) in sets {
            for a in addrs {
                let up = states
                    .iter()
                    .find(|s| s.address == a)
                    .is_none_or(|s| s.state != HealthState::Down);
                out.push((set.clone(), a.to_string(), up));
            }
        }
        out
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The meter provider, its Prometheus registry and the sources it reads.
pub struct Metrics {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
    sources: Arc<MetricSources>,
    refresher: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every instrument; with an OTLP endpoint, also pushes them
    /// there every `export_interval_s`.
    pub fn new(cfg: &TelemetryConfig, sources: MetricSources) -> Result<Self, MetricsError> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .map_err(|e| MetricsError::Prometheus(e.to_string()))?;
        let mut builder = SdkMeterProvider::builder()
            .with_reader(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name(cfg.service_name.clone())
                    .build(),
            );
        let interval = Duration::from_secs(cfg.export_interval_s);
        if let Some(endpoint) = &cfg.otlp_endpoint {
            let otlp = opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|e| MetricsError::Otlp(e.to_string()))?;
            builder = builder.with_reader(
                PeriodicReader::builder(otlp)
                    .with_interval(interval)
                    .build(),
            );
        }
        let provider = builder.build();
        let sources = Arc::new(sources);
        register(&provider.meter("rtcgate"), &sources);
        super::ng::NgLatency::new(sources.clone())
            .and_then(|c| registry.register(Box::new(c)))
            .map_err(|e| MetricsError::Prometheus(e.to_string()))?;
        // OTLP reads the callbacks on its own schedule: keep the cached
        // parts fresh for it.
        let refresher = cfg.otlp_endpoint.as_ref().map(|_| {
            let weak = Arc::downgrade(&sources);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval.min(Duration::from_secs(5)));
                loop {
                    tick.tick().await;
                    let Some(s) = weak.upgrade() else { return };
                    s.refresh().await;
                }
            })
        });
        Ok(Self {
            registry,
            provider,
            sources,
            refresher,
        })
    }

    /// The sources.
    pub fn sources(&self) -> &Arc<MetricSources> {
        &self.sources
    }

    /// The Prometheus text exposition of every series, fresh.
    pub async fn render(&self) -> String {
        use prometheus::Encoder;
        self.sources.refresh().await;
        let families = self.registry.gather();
        let mut out = Vec::new();
        if let Err(e) = prometheus::TextEncoder::new().encode(&families, &mut out) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Stops the exporters (a last OTLP push, bounded).
    pub fn shutdown(&self) {
        if let Some(t) = &self.refresher {
            t.abort();
        }
        if let Err(e) = self.provider.shutdown_with_timeout(EXPORT_TIMEOUT) {
            tracing::debug!(error = %e, "meter provider shutdown");
        }
    }
}

impl Drop for Metrics {
    fn drop(&mut self) {
        if let Some(t) = &self.refresher {
            t.abort();
        }
    }
}

fn kv(k: &'static str, v: impl Into<opentelemetry::Value>) -> KeyValue {
    KeyValue::new(k, v)
}

fn class_of(code: u16) -> &'static str {
    match code / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        5 => "5xx",
        _ => "6xx",
    }
}

fn health(h: Health) -> u64 {
    u64::from(h == Health::Up)
}

/// Registers the instruments. Names are Prometheus names without the
/// `_total` the exporter appends to counters.
fn register(meter: &Meter, src: &Arc<MetricSources>) {
    macro_rules! gauge {
        ($name:expr, $help:expr, |$s:ident, $o:ident| $body:expr) => {{
            let $s = src.clone();
            meter
                .u64_observable_gauge($name)
                .with_description($help)
                .with_callback(move |$o| $body)
                .build();
        }};
    }
    macro_rules! counter {
        ($name:expr, $help:expr, |$s:ident, $o:ident| $body:expr) => {{
            let $s = src.clone();
            meter
                .u64_observable_counter($name)
                .with_description($help)
                .with_callback(move |$o| $body)
                .build();
        }};
    }

    // WebSocket transport.
    gauge!(
        "rtcgate_ws_flows_open",
        "Open SIP WebSocket connections",
        |s, o| { o.observe(s.transports.flow_count() as u64, &[]) }
    );
    counter!(
        "rtcgate_ws_flows_accepted",
        "SIP WebSocket connections accepted",
        |s, o| {
            o.observe(
                s.transports.counters().flows_opened.load(Ordering::Relaxed),
                &[],
            )
        }
    );
    counter!(
        "rtcgate_ws_connections_refused",
        "TCP connections refused by the per-IP or total limits",
        |s, o| o.observe(
            s.transports
                .counters()
                .connections_refused
                .load(Ordering::Relaxed),
            &[]
        )
    );
    counter!(
        "rtcgate_ws_upgrades_refused",
        "WebSocket upgrades refused (Origin, subprotocol, malformed)",
        |s, o| o.observe(
            s.transports
                .counters()
                .upgrades_refused
                .load(Ordering::Relaxed),
            &[]
        )
    );
    counter!(
        "rtcgate_sip_malformed",
        "SIP messages refused by the parser",
        |s, o| o.observe(
            s.transports.counters().malformed.load(Ordering::Relaxed),
            &[]
        )
    );

    // Flood limits and load caps: what was shed, by reason.
    counter!(
        "rtcgate_shed",
        "Messages and connections shed by the flood limits and caps, by reason",
        |s, o| {
            let l = s.transports.limiter().counters();
            let t = s.transports.counters();
            let r = Ordering::Relaxed;
            for (reason, n) in [
                ("udp_rate", l.udp_shed.load(r)),
                ("ws_flow_rate", l.ws_shed.load(r)),
                ("ws_handshake_rate", l.handshakes_shed.load(r)),
                ("handshake_timeout", t.handshake_timeouts.load(r)),
                ("oversize", t.oversize.load(r)),
                ("transactions", s.cache().proxy.overloaded),
            ] {
                o.observe(n, &[kv("reason", reason)]);
            }
        }
    );
    counter!(
        "rtcgate_limits_bans",
        "Temporary bans started, by kind (source IP, WebSocket flow)",
        |s, o| {
            let l = s.transports.limiter().counters();
            o.observe(
                l.source_bans.load(Ordering::Relaxed),
                &[kv("kind", "source")],
            );
            o.observe(l.flow_bans.load(Ordering::Relaxed), &[kv("kind", "flow")]);
        }
    );
    counter!(
        "rtcgate_limits_untracked",
        "Messages and connections passed uncounted because the source table was full",
        |s, o| o.observe(
            s.transports
                .limiter()
                .counters()
                .untracked
                .load(Ordering::Relaxed),
            &[]
        )
    );
    gauge!(
        "rtcgate_limits_sources",
        "Source addresses tracked by the flood limiter",
        |s, o| o.observe(s.transports.limiter().sources() as u64, &[])
    );

    // SIP messages.
    counter!(
        "rtcgate_sip_requests_received",
        "SIP requests received, by method (retransmissions included)",
        |s, o| {
            for (m, n) in METHODS.iter().zip(s.counters().requests()) {
                if n > 0 {
                    o.observe(n, &[kv("method", *m)]);
                }
            }
        }
    );
    counter!(
        "rtcgate_sip_responses_sent",
        "SIP responses sent, by code (forwarded and local, retransmissions included)",
        |s, o| {
            for (code, n) in s.counters().responses.nonzero() {
                o.observe(
                    n,
                    &[kv("code", i64::from(code)), kv("class", class_of(code))],
                );
            }
        }
    );
    gauge!(
        "rtcgate_sip_transactions",
        "Live SIP transactions",
        |s, o| { o.observe(s.cache().proxy.transactions as u64, &[]) }
    );
    gauge!(
        "rtcgate_sip_pending_requests",
        "Requests waiting for a final response",
        |s, o| o.observe(s.cache().proxy.pending_requests as u64, &[])
    );
    counter!(
        "rtcgate_sip_forwarded",
        "Requests forwarded (per branch)",
        |s, o| { o.observe(s.cache().proxy.forwarded, &[]) }
    );
    counter!(
        "rtcgate_sip_local_responses",
        "Final responses rtcgate generated itself, by class",
        |s, o| {
            let c = s.cache().proxy.local_responses;
            for (i, n) in c.iter().enumerate().skip(1) {
                if *n > 0 {
                    o.observe(*n, &[kv("class", format!("{i}xx"))]);
                }
            }
        }
    );
    counter!("rtcgate_sip_loops", "Loops detected (482)", |s, o| {
        o.observe(s.cache().proxy.loops, &[])
    });

    // Registrations.
    gauge!(
        "rtcgate_registrations_active",
        "Live registered contacts",
        |s, o| o.observe(s.location.live_count(unix_now()) as u64, &[])
    );
    counter!(
        "rtcgate_register_responses",
        "Final answers to REGISTER, by code (200, 401 challenge, 403, 423...)",
        |s, o| {
            for (code, n) in s.counters().register.nonzero() {
                o.observe(n, &[kv("code", i64::from(code))]);
            }
        }
    );

    // Calls.
    gauge!("rtcgate_dialogs", "Calls by dialog state", |s, o| {
        let p = s.cache().proxy.clone();
        o.observe(p.dialogs_early as u64, &[kv("state", "early")]);
        o.observe(p.dialogs_confirmed as u64, &[kv("state", "confirmed")]);
    });
    counter!(
        "rtcgate_call_attempts",
        "Initial INVITEs forwarded (rate() of this is calls per second)",
        |s, o| o.observe(s.cache().proxy.call_attempts, &[])
    );
    counter!("rtcgate_calls", "Initial INVITEs by outcome", |s, o| {
        let calls = s.cache().proxy.calls;
        for (outcome, n) in calls.labelled() {
            o.observe(n, &[kv("outcome", outcome)]);
        }
    });
    gauge!(
        "rtcgate_draining",
        "1 while shutting down (new requests get 503)",
        |s, o| o.observe(u64::from(s.cache().proxy.draining), &[])
    );

    // rtpengine.
    gauge!("rtcgate_media_calls", "Calls held in rtpengine", |s, o| {
        if let Some(m) = &s.media {
            o.observe(m.active_calls() as u64, &[]);
        }
    });
    gauge!(
        "rtcgate_rtpengine_up",
        "rtpengine instance health (1 up, 0 down)",
        |s, o| {
            for i in &s.cache().instances {
                o.observe(health(i.health), &[kv("rtpengine", i.addr.to_string())]);
            }
        }
    );
    gauge!(
        "rtcgate_rtpengine_calls",
        "Calls mapped to each rtpengine instance",
        |s, o| {
            for i in &s.cache().instances {
                o.observe(i.calls as u64, &[kv("rtpengine", i.addr.to_string())]);
            }
        }
    );
    counter!(
        "rtcgate_ng_requests",
        "ng requests sent, by rtpengine instance and command",
        |s, o| {
            for r in &s.cache().ng.commands {
                o.observe(
                    r.stats.requests,
                    &[
                        kv("rtpengine", r.addr.to_string()),
                        kv("command", r.command.clone()),
                    ],
                );
            }
        }
    );
    counter!(
        "rtcgate_ng_errors",
        "ng requests that failed, by rtpengine instance, command and kind (error, load_limit, timeout, decode)",
        |s, o| {
            for r in &s.cache().ng.commands {
                for (kind, n) in [
                    ("error", r.stats.errors),
                    ("load_limit", r.stats.load_limits),
                    ("timeout", r.stats.timeouts),
                    ("decode", r.stats.decode_errors),
                ] {
                    o.observe(
                        n,
                        &[
                            kv("rtpengine", r.addr.to_string()),
                            kv("command", r.command.clone()),
                            kv("kind", kind),
                        ],
                    );
                }
            }
        }
    );
    counter!(
        "rtcgate_ng_retransmits",
        "ng retransmissions, by rtpengine instance and command",
        |s, o| {
            for r in &s.cache().ng.commands {
                o.observe(
                    r.stats.retransmits,
                    &[
                        kv("rtpengine", r.addr.to_string()),
                        kv("command", r.command.clone()),
                    ],
                );
            }
        }
    );
    counter!(
        "rtcgate_ng_failovers",
        "New calls moved to another rtpengine instance",
        |s, o| {
            if s.media.is_some() {
                o.observe(s.cache().ng.failovers, &[]);
            }
        }
    );

    // PBX destinations.
    gauge!(
        "rtcgate_pbx_destination_up",
        "PBX destination health from the OPTIONS probes (1 routable, 0 down)",
        |s, o| {
            for (set, dest, up) in s.destinations() {
                o.observe(u64::from(up), &[kv("set", set), kv("destination", dest)]);
            }
        }
    );
}
