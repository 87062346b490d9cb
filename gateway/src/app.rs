//! The whole gateway assembled from the configuration: what `rtcgate run`
//! starts, and what integration tests start in-process.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::proxy::location::StoreLocation;
use crate::proxy::route::Local;
use crate::proxy::{Proxy, ProxyConfig, shell};
use crate::server::{Server, StartError};
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
    /// The file the configuration came from (what a reload re-reads).
    pub config_path: Option<PathBuf>,
}

/// Why a reload was refused (the running configuration stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The routing part was refused.
    #[error(transparent)]
    Routing(#[from] crate::routing::RoutingConfigError),
}

/// What a reload changed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadReport {
    /// Routing sets now configured (0 when the file was not re-read).
    pub sets: usize,
    /// Routing rules now configured.
    pub rules: usize,
    /// Whether the configuration file was re-read.
    pub config_reread: bool,
    /// The certificate outcome, or the error that kept the old one.
    pub certificate: Option<String>,
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
        let services = Arc::new(shell::Services {
            ws_algorithms,
            udp_algorithms,
            media,
            accounting: accounting.clone(),
            auth: std::sync::Mutex::new(crate::auth::DigestAuth::new(auth_cfg, secret)),
            location: location.clone(),
            registrar: crate::registrar::RegistrarConfig {
                min_expires: config.registrar.min_expires,
                max_expires: config.registrar.max_expires,
                default_expires: config.registrar.default_expires,
                max_contacts: config.registrar.max_contacts,
                domains: config.general.domains.clone(),
            },
        });
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
        let cfg = config.clone();
        let router_location = location.clone();
        let server = Server::start(
            &config,
            tls.as_ref().map(|t| t.server_config.clone()),
            web_root,
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
                    },
                    local,
                    Arc::new(crate::routing::RoutingRouter::new(
                        routing_handle,
                        Some(Arc::new(StoreLocation::new(
                            router_location,
                            cfg.general.domains.clone(),
                        ))),
                    )),
                    true,
                    Arc::new(transports.clone()),
                );
                shell::spawn(proxy, transports, Some(services), media_events)
            },
        )
        .await?;
        Ok(Self {
            server,
            tls,
            config,
            location,
            accounting,
            routing,
            config_path: None,
        })
    }

    /// Re-reads what can change at run time (SIGHUP, the admin API): the
    /// routing from the configuration file (when there is one) and the
    /// certificate. Other changed keys need a restart. On error nothing
    /// changes.
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let mut report = ReloadReport::default();
        if let Some(path) = &self.config_path {
            let fresh = crate::config::Config::load(path)?;
            let routing = fresh.effective_routing();
            self.routing.handle().reload(&routing)?;
            report.config_reread = true;
            report.sets = fresh.routing.sets.len();
            report.rules = fresh.routing.rules.len();
        }
        if let Some(t) = &self.tls {
            report.certificate = Some(match t.resolver.reload_now() {
                Ok(outcome) => {
                    tracing::info!(?outcome, "certificate reloaded");
                    format!("{outcome:?}")
                }
                Err(e) => {
                    tracing::error!(error = %e, "certificate reload failed; keeping the old one");
                    format!("error: {e}")
                }
            });
        }
        Ok(report)
    }

    /// Stops the listeners.
    pub fn shutdown(self) {
        self.server.shutdown();
    }
}
