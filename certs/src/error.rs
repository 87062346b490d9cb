//! Errors of this crate: each one names the file involved and what is wrong with it.

use std::path::PathBuf;

/// Everything that can go wrong while loading, generating or reloading TLS material.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file could not be read or written.
    #[error("{path}: {action} failed: {source}")]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What was attempted ("read", "write", "create directory", ...).
        action: &'static str,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The PEM text itself is malformed (bad base64, missing END line, ...).
    #[error("{path}: malformed PEM: {reason}")]
    Pem {
        /// The file concerned.
        path: PathBuf,
        /// What the PEM parser reported.
        reason: String,
    },
    /// The certificate file holds no `CERTIFICATE` section.
    #[error("{path}: no certificate found (expected a PEM 'BEGIN CERTIFICATE' section)")]
    NoCertificate {
        /// The file concerned.
        path: PathBuf,
    },
    /// The key file holds no PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key.
    #[error(
        "{path}: no private key found (expected PEM 'PRIVATE KEY', 'RSA PRIVATE KEY' or 'EC PRIVATE KEY')"
    )]
    NoPrivateKey {
        /// The file concerned.
        path: PathBuf,
    },
    /// The private key is present but unusable (unsupported algorithm, corrupt encoding).
    #[error("{path}: unusable private key: {reason}")]
    BadPrivateKey {
        /// The file concerned.
        path: PathBuf,
        /// What rustls reported.
        reason: String,
    },
    /// A certificate could not be decoded as X.509.
    #[error("{path}: certificate #{index} is not valid X.509: {reason}")]
    BadCertificate {
        /// The file concerned.
        path: PathBuf,
        /// Position of the certificate in the file, 0 = first (the leaf).
        index: usize,
        /// What the X.509 parser reported.
        reason: String,
    },
    /// The private key does not belong to the leaf certificate.
    #[error("{key}: private key does not match the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// Certificate generation with rcgen failed.
    #[error("generating {what} failed: {reason}")]
    Generate {
        /// Which item was being generated.
        what: &'static str,
        /// What rcgen reported.
        reason: String,
    },
    /// rustls refused the configuration (should not happen with the ring provider).
    #[error("TLS configuration rejected: {0}")]
    Tls(#[from] rustls::Error),
}
