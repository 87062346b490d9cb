//! The whole gateway assembled from the configuration: what `rtcgate run`
//! starts, and what integration tests start in-process.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::proxy::route::Local;
use crate::proxy::routing::StaticRouter;
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
}

/// A running gateway.
pub struct App {
    /// The listeners.
    pub server: Server,
    /// TLS, when a WSS listener is configured.
    pub tls: Option<TlsSetup>,
    /// The configuration it runs with.
    pub config: Arc<Config>,
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
        let cfg = config.clone();
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
                    },
                    local,
                    Arc::new(StaticRouter::new(cfg.routes.clone(), None)),
                    None,
                    Arc::new(transports.clone()),
                );
                shell::spawn(proxy, transports)
            },
        )
        .await?;
        Ok(Self {
            server,
            tls,
            config,
        })
    }

    /// Re-reads what can change at run time (today: the certificate).
    pub fn reload(&self) {
        if let Some(t) = &self.tls {
            match t.resolver.reload_now() {
                Ok(outcome) => tracing::info!(?outcome, "certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "certificate reload failed; keeping the old one")
                }
            }
        }
    }

    /// Stops the listeners.
    pub fn shutdown(self) {
        self.server.shutdown();
    }
}
