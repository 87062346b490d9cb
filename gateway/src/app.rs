//! The whole gateway assembled from the configuration: what `rtcgate run`
//! starts, and what integration tests start in-process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::admin::api::ReloadReport;
use crate::admin::{AdminContext, AdminServer};
use crate::config::Config;
use crate::proxy::location::StoreLocation;
use crate::proxy::route::Local;
use crate::proxy::{Proxy, ProxyConfig, shell};
use crate::server::{Server, StartError};
use crate::telemetry::{MetricSources, Metrics, MetricsError, SipCounters, TracedRouter};
use crate::tls::{self, TlsError, TlsSetup};
use crate::transaction::{TimerConfig, TransactionConfig};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// TLS material.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Listeners.
    #[error(transparent)]
    Start(#[from] StartError),
    /// rtpengine client.
    #[error("rtpengine: {0}")]
    Media(crate::media::MediaError),
    /// PBX routing.
    #[error("routing: {0}")]
    Routing(#[from] crate::routing::RoutingError),
    /// Metrics could not be set up.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The admin listener could not be bound.
    #[error("cannot listen on {addr} (admin): {source}")]
    Admin {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The database.
    #[error("database ({url}): {source}")]
    Store {
        /// The configured URL, password removed.
        url: String,
        /// What went wrong.
        source: crate::store::StoreError,
    },
}

/// The URL with any password replaced, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Creates the directory of a SQLite database file.
pub fn ensure_sqlite_dir(url: &str) {
    if let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    {
        let file = path.split('?').next().unwrap_or("");
        if let Some(dir) = std::path::Path::new(file).parent()
            && !dir.as_os_str().is_empty()
        {
            let _ = std::fs::create_dir_all(dir);
        }
    }
}

/// Accounting settings from the configuration: the media wait only when
/// rtpengine is used, and calls never seen to end given up an hour after the
/// maximum call duration.
fn accounting_config(config: &Config) -> crate::accounting::AccountingConfig {
    let a = &config.accounting;
    let max_age = match config.sip.max_call_duration_s {
        0 => std::time::Duration::from_secs(24 * 3600),
        s => std::time::Duration::from_secs(s.saturating_add(3600)),
    };
    crate::accounting::AccountingConfig {
        queue: a.queue_size,
        batch: a.batch_size,
        media_wait: if config.rtpengine.enabled {
            std::time::Duration::from_millis(a.media_wait_ms)
        } else {
            std::time::Duration::ZERO
        },
        max_age,
    }
}

/// Who the flood limits never count: the proxy's trusted sources (by IP,
/// whatever the port), every PBX destination, `limits.trusted`, and the
/// routing sets' `trusted_sources` as they are now (reloads included).
fn limiter_trust(
    config: &Config,
    trusted: &[crate::config::TrustedSource],
    routing: crate::routing::RoutingHandle,
) -> crate::limits::TrustFn {
    use crate::config::TrustedSource;
    let mut ips: std::collections::HashSet<std::net::IpAddr> = trusted
        .iter()
        .map(|t| match t {
            TrustedSource::Ip(ip) => *ip,
            TrustedSource::Addr(a) => a.ip(),
        })
        .collect();
    ips.extend(
        config
            .effective_routing()
            .sets
            .iter()
            .flat_map(|s| s.destinations.iter().map(|d| d.address.ip())),
    );
    let blocks = config.limits.trusted_blocks();
    Arc::new(move |ip| {
        ips.contains(&ip)
            || blocks.iter().any(|b| b.contains(ip))
            || routing.is_trusted(ip).is_some()
    })
}

/// A running gateway.
pub struct App {
    /// The listeners.
    pub server: Server,
    /// TLS, when a WSS listener is configured.
    pub tls: Option<TlsSetup>,
    /// The configuration it runs with.
    pub config: Arc<Config>,
    /// Registrations (and, through it, the store).
    pub location: Arc<crate::store::LocationService>,
    /// Call records, when `[accounting]` is enabled.
    pub accounting: Option<crate::accounting::Accounting>,
    /// PBX sets, rules and their health.
    pub routing: crate::routing::RoutingService,
    /// The proxy core's handle (admin requests, drain).
    pub proxy: Arc<shell::ProxyHandle>,
    /// Metrics (Prometheus registry, OTLP export).
    pub metrics: Arc<Metrics>,
    /// The admin listener, when enabled.
    pub admin: Option<AdminServer>,
    /// rtpengine, when media is bridged.
    pub media: Option<crate::media::Media>,
    /// Cluster membership, when `[cluster]` is on.
    pub cluster: Option<crate::cluster::Cluster>,
    reloader: Reloader,
}

/// What a reload re-reads. SIGHUP and `POST /api/reload` run this same
/// code ([`App::reload`] and the admin API hold clones).
#[derive(Clone, Default)]
pub struct Reloader {
    tls: Option<Arc<rtcgate_certs::ReloadingCertResolver>>,
    routing: Option<crate::routing::RoutingHandle>,
    /// The file the configuration came from (set by `rtcgate run`).
    config_path: Arc<std::sync::Mutex<Option<PathBuf>>>,
}

impl Reloader {
    /// Reloads everything that can change at run time: routing (sets,
    /// rules) from the configuration file, and the certificate. Each part
    /// reports on its own; a failed part keeps its old state.
    pub fn reload(&self) -> ReloadReport {
        let mut report = ReloadReport::default();
        let path = self
            .config_path
            .lock()
            .map(|p| p.clone())
            .unwrap_or_else(|p| p.into_inner().clone());
        if let (Some(path), Some(routing)) = (path, &self.routing) {
            let result = crate::config::Config::load(&path)
                .map_err(|e| e.to_string())
                .and_then(|fresh| {
                    routing
                        .reload(&fresh.effective_routing())
                        .map_err(|e| e.to_string())
                        .map(|()| {
                            format!(
                                "{} sets, {} rules from {}",
                                fresh.routing.sets.len(),
                                fresh.routing.rules.len(),
                                path.display()
                            )
                        })
                });
            if let Err(e) = &result {
                tracing::error!(error = %e, "routing reload refused; the running routing stays");
            }
            report.push("routing", result);
        }
        if let Some(r) = &self.tls {
            report.push(
                "certificate",
                match r.reload_now() {
                    Ok(outcome) => {
                        tracing::info!(?outcome, "certificate reloaded");
                        Ok(format!("{outcome:?}"))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "certificate reload failed; keeping the old one");
                        Err(e.to_string())
                    }
                },
            );
        }
        report
    }
}

/// How a graceful shutdown went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Calls still up at the deadline, hung up by rtcgate.
    pub calls_hung_up: usize,
    /// WebSocket connections closed with 1001 Going Away.
    pub flows_closed: usize,
}

impl App {
    /// Starts everything the configuration asks for.
    pub async fn start(config: Config, web_root: Option<PathBuf>) -> Result<Self, AppError> {
        // Exactly one provider is compiled in; installing it anyway keeps
        // rustls from guessing should a dependency ever add another.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = Arc::new(config);
        let tls = if config.websocket.wss_listen.is_empty() {
            None
        } else {
            Some(tls::setup(&config.tls)?)
        };
        ensure_sqlite_dir(&config.database.url);
        let store_err = |source| AppError::Store {
            url: redact(&config.database.url),
            source,
        };
        let mut opts = crate::store::StoreOptions::new(&config.database.url);
        opts.max_connections = config.database.max_connections;
        let store = crate::store::Store::connect_with(&opts)
            .await
            .map_err(store_err)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let accounting = config.accounting.enabled.then(|| {
            crate::accounting::Accounting::start(store.clone(), accounting_config(&config))
        });
        let location: Arc<crate::store::LocationService> = Arc::new(
            crate::store::LocationService::load(store, config.general.node_id.clone(), now)
                .await
                .map_err(store_err)?,
        );
        let cluster = if config.cluster.enabled() {
            Some(
                crate::cluster::Cluster::start(
                    location.store().clone(),
                    location.clone(),
                    &config.general.node_id,
                    &config.cluster,
                )
                .await
                .map_err(store_err)?,
            )
        } else {
            None
        };
        let peers: Arc<dyn crate::proxy::routing::Peers> = match &cluster {
            Some(c) => c.peers(),
            None => Arc::new(crate::proxy::routing::NoPeers),
        };
        let peer_timeout = Duration::from_millis(config.cluster.peer_timeout_ms);
        let realm = config
            .general
            .domains
            .first()
            .cloned()
            .unwrap_or_else(|| "localhost".into());
        let mut auth_cfg = crate::auth::AuthConfig::new(realm);
        auth_cfg.nonce_lifetime_secs = config.auth.nonce_ttl_s;
        let secret = config.auth.secret_bytes().unwrap_or_else(|| {
            use rand::Rng;
            rand::rng().random()
        });
        let (ws_algorithms, udp_algorithms) = config.auth.algorithm_orders();
        let media_enabled = config.rtpengine.enabled;
        let counters = Arc::new(SipCounters::default());
        let ops = shell::Ops {
            counters: counters.clone(),
            trace_ids: config.telemetry.otlp_endpoint.is_some(),
        };
        let media = if media_enabled {
            let (media, events) = crate::media::Media::start(config.rtpengine.clone())
                .await
                .map_err(AppError::Media)?;
            Some((media, events))
        } else {
            None
        };
        let (media, media_events) = match media {
            Some((m, e)) => (Some(m), Some(e)),
            None => (None, None),
        };
        if let (Some(m), Some(a)) = (&media, &accounting) {
            m.report_deleted_calls(a.media_sink());
        }
        let media_handle = media.clone();
        let probe_ip = config
            .sip
            .udp_listen
            .first()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified())
            .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
        let routing = crate::routing::RoutingService::start(
            &config.effective_routing(),
            crate::routing::ProbeOptions {
                bind: std::net::SocketAddr::new(probe_ip, 0),
                from_host: config.sip.advertised_host.clone(),
            },
        )
        .await?;
        let routing_handle = routing.handle();
        let mut trusted = config.auth.trusted_sources();
        trusted.extend(
            config
                .routes
                .iter()
                .map(|r| crate::config::TrustedSource::Addr(r.destination)),
        );
        let limiter = Arc::new(crate::limits::Limiter::new(
            &config.limits,
            limiter_trust(&config, &trusted, routing.handle()),
        ));
        let services = Arc::new(shell::Services {
            ws_algorithms,
            udp_algorithms,
            media,
            accounting: accounting.clone(),
            auth: std::sync::Mutex::new(crate::auth::DigestAuth::new(auth_cfg, secret)),
            location: location.clone(),
            limiter: limiter.clone(),
            registrar: crate::registrar::RegistrarConfig {
                min_expires: config.registrar.min_expires,
                max_expires: config.registrar.max_expires,
                default_expires: config.registrar.default_expires,
                max_contacts: config.registrar.max_contacts,
                domains: config.general.domains.clone(),
            },
        });
        let cfg = config.clone();
        let router_location = location.clone();
        let router_peers = peers.clone();
        let mut proxy_handle = None;
        let handle_slot = &mut proxy_handle;
        let server = Server::start(
            &config,
            tls.as_ref().map(|t| t.server_config.clone()),
            web_root,
            limiter,
            move |transports, bound| {
                let local = Local {
                    udp: bound.udp.clone(),
                    wss: bound.wss.clone(),
                    ws: bound.ws.clone(),
                    advertised_host: cfg.sip.advertised_host.clone(),
                    domains: cfg.general.domains.clone(),
                };
                let timers = TimerConfig {
                    t1: std::time::Duration::from_millis(cfg.sip.t1_ms),
                    t2: std::time::Duration::from_millis(cfg.sip.t2_ms),
                    t4: std::time::Duration::from_millis(cfg.sip.t4_ms),
                    ..TimerConfig::default()
                };
                let proxy = Proxy::new(
                    ProxyConfig {
                        server_header: cfg.general.server_header.clone(),
                        transactions: TransactionConfig {
                            timers,
                            ..TransactionConfig::default()
                        },
                        auth_required: cfg.auth.required,
                        trusted,
                        media: media_enabled,
                        max_call_duration: (cfg.sip.max_call_duration_s > 0)
                            .then(|| std::time::Duration::from_secs(cfg.sip.max_call_duration_s)),
                        pending: crate::proxy::pending::PendingCaps {
                            total: cfg.limits.max_server_transactions,
                            per_source: cfg.limits.max_server_transactions_per_source,
                            retry_after_s: cfg.limits.retry_after_s,
                        },
                    },
                    local,
                    Arc::new(TracedRouter(Arc::new(crate::routing::RoutingRouter::new(
                        routing_handle,
                        Some(Arc::new(
                            StoreLocation::new(router_location, cfg.general.domains.clone())
                                .with_peers(router_peers.clone(), peer_timeout),
                        )),
                    )))),
                    true,
                    Arc::new(transports.clone()),
                )
                .with_peers(router_peers);
                let handle =
                    shell::spawn_with(proxy, transports, Some(services), media_events, ops);
                *handle_slot = Some(handle.clone());
                handle
            },
        )
        .await?;
        let Some(proxy) = proxy_handle else {
            unreachable!("Server::start always builds the handler");
        };
        let metrics = Arc::new(Metrics::new(
            &config.telemetry,
            MetricSources::new(
                server.transports.clone(),
                location.clone(),
                proxy.clone(),
                media_handle.clone(),
                Some(routing.handle()),
            ),
        )?);
        let reloader = Reloader {
            tls: tls.as_ref().map(|t| t.resolver.clone()),
            routing: Some(routing.handle()),
            config_path: Arc::default(),
        };
        let admin = if config.admin.enabled {
            let r = reloader.clone();
            let ctx = Arc::new(AdminContext {
                metrics: metrics.clone(),
                reload: Arc::new(move || r.reload()),
                token: config.admin.token.clone(),
                node_id: config.general.node_id.clone(),
                started: std::time::Instant::now(),
            });
            let addr = config.admin.listen;
            Some(
                AdminServer::start(addr, ctx)
                    .await
                    .map_err(|source| AppError::Admin { addr, source })?,
            )
        } else {
            None
        };
        Ok(Self {
            server,
            tls,
            config,
            location,
            accounting,
            routing,
            proxy,
            metrics,
            admin,
            media: media_handle,
            cluster,
            reloader,
        })
    }

    /// The admin listener's address, when it runs.
    pub fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        self.admin.as_ref().map(|a| a.addr)
    }

    /// Which file a reload re-reads (`rtcgate run --config`).
    pub fn set_config_path(&self, path: Option<PathBuf>) {
        if let Ok(mut p) = self.reloader.config_path.lock() {
            *p = path;
        }
    }

    /// Re-reads what can change at run time (SIGHUP, `POST /api/reload`).
    pub fn reload(&self) -> ReloadReport {
        self.reloader.reload()
    }

    /// Graceful shutdown, step by step: no new WebSocket connections, new
    /// requests answered 503 (Retry-After), idle WebSocket flows closed
    /// with 1001 Going Away as soon as nothing is pending on them, calls
    /// left to end by themselves until `timeout`; then the remaining calls
    /// are hung up and their media deleted.
    pub async fn drain(&mut self, timeout: Duration) -> DrainReport {
        let deadline = tokio::time::Instant::now() + timeout;
        let retry_after = u32::try_from(timeout.as_secs().max(5)).unwrap_or(u32::MAX);
        self.server.stop_accepting();
        self.proxy.set_draining(Some(retry_after));
        if let Some(c) = &self.cluster {
            // Peers stop sending new calls here; in-dialog requests still come.
            c.leave().await;
        }
        tracing::info!(
            timeout_s = timeout.as_secs(),
            "draining: no new calls, waiting for active ones"
        );
        let mut report = DrainReport::default();
        let transports = self.server.transports.clone();
        let close_idle = |report: &mut DrainReport, busy: &std::collections::HashSet<u64>| {
            for flow in transports.flow_ids() {
                if !busy.contains(&flow) && transports.close_flow(flow) {
                    report.flows_closed += 1;
                }
            }
        };
        loop {
            let busy = self.proxy.busy_flows().await.unwrap_or_default();
            close_idle(&mut report, &busy);
            let Some(s) = self.proxy.snapshot().await else {
                break;
            };
            if s.dialogs_confirmed + s.dialogs_early == 0 && s.pending_requests == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                let calls = self.proxy.calls().await.unwrap_or_default();
                tracing::warn!(
                    calls = calls.len(),
                    "drain timeout: hanging up the remaining calls"
                );
                for c in &calls {
                    if self.proxy.hangup(&c.call_id).await.is_some() {
                        report.calls_hung_up += 1;
                    }
                }
                // Give the BYEs and CANCELs a moment to be answered.
                for _ in 0..20 {
                    match self.proxy.snapshot().await {
                        Some(s) if s.pending_requests > 0 => {
                            tokio::time::sleep(Duration::from_millis(100)).await
                        }
                        _ => break,
                    }
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        close_idle(&mut report, &Default::default());
        if let Some(m) = &self.media {
            let deleted = m.shutdown().await;
            if deleted > 0 {
                tracing::info!(deleted, "media deleted in rtpengine at shutdown");
            }
        }
        // Let the flow tasks send their close frames.
        tokio::time::sleep(Duration::from_millis(200)).await;
        tracing::info!(?report, "drained");
        report
    }

    /// Stops the listeners and the exporters.
    pub fn shutdown(self) {
        if let Some(a) = self.admin {
            a.shutdown();
        }
        self.metrics.shutdown();
        self.server.shutdown();
    }
}
