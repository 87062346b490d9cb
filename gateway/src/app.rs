//! The whole gateway assembled from the configuration: what `rtcgate run`
//! starts, and what integration tests start in-process.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::responder::Responder;
use crate::server::{Server, StartError};
use crate::tls::{self, TlsError, TlsSetup};

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
            move |transports| Arc::new(Responder::new(transports, cfg)),
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
