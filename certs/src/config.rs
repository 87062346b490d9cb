//! The rustls server configuration used by every TLS listener.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::ResolvesServerCert;

use crate::error::CertError;

/// A server config with the ring provider, TLS 1.3 and 1.2 only, no client authentication,
/// certificates from `resolver`, and the given ALPN protocols (e.g. `[b"http/1.1"]`, or none).
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    alpn: &[&[u8]],
) -> Result<ServerConfig, CertError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
