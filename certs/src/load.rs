//! Loading a PEM certificate chain and private key into a rustls [`CertifiedKey`].

use std::path::Path;
use std::time::{Duration, SystemTime};

use rustls::crypto::ring;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::error::CertError;

/// What a log line or a health page wants to know about a leaf certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafInfo {
    /// Subject distinguished name, RFC 4514 style (`CN=rtcgate dev leaf`).
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
    /// DNS names and IP addresses from the subjectAltName extension.
    pub names: Vec<String>,
}

impl LeafInfo {
    /// Parses the interesting parts of a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
        let names = match cert.subject_alternative_name() {
            Ok(Some(san)) => san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    GeneralName::IPAddress(ip) => ip_to_string(ip),
                    _ => None,
                })
                .collect(),
            Ok(None) => Vec::new(),
            Err(e) => return Err(format!("bad subjectAltName: {e}")),
        };
        let validity = cert.validity();
        Ok(Self {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            not_before: unix_to_system(validity.not_before.timestamp()),
            not_after: unix_to_system(validity.not_after.timestamp()),
            names,
        })
    }

    /// True when the certificate is valid at `at` and still will be `margin` later.
    pub fn valid_for(&self, at: SystemTime, margin: Duration) -> bool {
        self.not_before <= at && at.checked_add(margin).is_some_and(|t| t < self.not_after)
    }

    /// Seconds since the Unix epoch of `not_after` (0 if before the epoch), for logs.
    pub fn not_after_unix(&self) -> u64 {
        self.not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

fn unix_to_system(secs: i64) -> SystemTime {
    // Certificates dated before 1970 are clamped to the epoch: they are expired anyway.
    u64::try_from(secs)
        .ok()
        .and_then(|s| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(s)))
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn ip_to_string(raw: &[u8]) -> Option<String> {
    match raw.len() {
        4 => <[u8; 4]>::try_from(raw)
            .ok()
            .map(|b| std::net::Ipv4Addr::from(b).to_string()),
        16 => <[u8; 16]>::try_from(raw)
            .ok()
            .map(|b| std::net::Ipv6Addr::from(b).to_string()),
        _ => None,
    }
}

/// Reads `path` whole, naming it in the error.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        action: "read",
        source,
    })
}

/// Loads a PEM chain (leaf first) and its private key (PKCS#8, PKCS#1 RSA or SEC1 EC)
/// from two files, with the ring provider, and checks that the key matches the leaf.
pub fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, CertError> {
    let cert_pem = read_file(cert_path)?;
    let key_pem = read_file(key_path)?;
    certified_key_from_pem(&cert_pem, &key_pem, cert_path, key_path)
}

/// Parses the certificate chain of a PEM file's contents; `path` only names it in errors.
pub fn parse_cert_chain(
    cert_pem: &[u8],
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate {
            path: path.to_owned(),
        });
    }
    for (index, der) in chain.iter().enumerate() {
        X509Certificate::from_der(der).map_err(|e| CertError::BadCertificate {
            path: path.to_owned(),
            index,
            reason: e.to_string(),
        })?;
    }
    Ok(chain)
}

/// Parses the first private key of a PEM file's contents; `path` only names it in errors.
pub fn parse_private_key(key_pem: &[u8], path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => CertError::NoPrivateKey {
            path: path.to_owned(),
        },
        other => CertError::Pem {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })
}

/// Same as [`load_certified_key`] on contents already read; the paths only name the
/// files in errors.
pub fn certified_key_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, CertError> {
    let chain = parse_cert_chain(cert_pem, cert_path)?;
    let key = parse_private_key(key_pem, key_path)?;
    let signing_key = ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::BadPrivateKey {
            path: key_path.to_owned(),
            reason: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(CertError::KeyMismatch {
                cert: cert_path.to_owned(),
                key: key_path.to_owned(),
            })
        }
        // ring can always give the public key; "unknown" would mean a custom key type.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => Ok(certified),
        Err(e) => Err(CertError::BadCertificate {
            path: cert_path.to_owned(),
            index: 0,
            reason: e.to_string(),
        }),
    }
}

/// Describes the leaf (first certificate) of a loaded key.
pub fn leaf_info_of(key: &CertifiedKey) -> Option<LeafInfo> {
    key.cert.first().and_then(|c| LeafInfo::from_der(c).ok())
}
