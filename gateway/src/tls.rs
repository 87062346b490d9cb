//! TLS for the WSS/HTTPS listeners: the configured certificate (or a
//! generated development one), reloaded when its files change.

use std::sync::Arc;
use std::time::Duration;

use rtcgate_certs::{ReloadingCertResolver, generate_dev_pki};

use crate::config::Tls;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Loading, generating or configuring failed.
    #[error("tls: {0}")]
    Cert(#[from] rtcgate_certs::CertError),
    /// A dev certificate was asked for in a place it cannot be generated.
    #[error(
        "tls.generate_dev_cert needs tls.cert and tls.key to be cert.pem and key.pem in one directory (got {0})"
    )]
    DevCertPaths(String),
}

/// The rustls config for the listeners and the resolver behind it.
pub struct TlsSetup {
    /// The server configuration (ALPN http/1.1).
    pub server_config: Arc<rustls::ServerConfig>,
    /// Reloads the certificate; call `reload_now` on SIGHUP.
    pub resolver: Arc<ReloadingCertResolver>,
}

/// Loads (or first generates) the certificate and starts watching its files.
pub fn setup(cfg: &Tls) -> Result<TlsSetup, TlsError> {
    if cfg.generate_dev_cert && !(cfg.cert.exists() && cfg.key.exists()) {
        let dir = cfg.cert.parent().unwrap_or(std::path::Path::new("."));
        let ok = cfg.cert.file_name().is_some_and(|n| n == "cert.pem")
            && cfg.key.file_name().is_some_and(|n| n == "key.pem")
            && cfg.key.parent() == cfg.cert.parent();
        if !ok {
            return Err(TlsError::DevCertPaths(format!(
                "{} and {}",
                cfg.cert.display(),
                cfg.key.display()
            )));
        }
        let pki = generate_dev_pki(dir, &[])?;
        tracing::info!(
            ca = %pki.ca_cert.display(),
            status = ?pki.status,
            "development certificate ready; trust the CA file in your browser or client"
        );
    }
    let resolver = ReloadingCertResolver::new(&cfg.cert, &cfg.key)?;
    resolver.spawn_watcher(Duration::from_millis(cfg.reload_check_ms));
    let server_config = rtcgate_certs::server_config(resolver.clone(), &[b"http/1.1"])?;
    Ok(TlsSetup {
        server_config: Arc::new(server_config),
        resolver,
    })
}
