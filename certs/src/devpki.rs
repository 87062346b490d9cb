//! A development PKI: a local CA and a leaf for `localhost`, `127.0.0.1`, `::1`, made with
//! rcgen (no openssl), written once and reused while still good.
//!
//! Browsers refuse self-signed WSS silently, so the CA is a separate file (`ca.pem`) that a
//! developer imports once; the leaf can then be re-issued by the same CA without a new import.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::CertError;
use crate::load::{LeafInfo, load_certified_key, read_file};

/// Names every dev leaf covers.
pub const DEFAULT_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];
/// Leaf lifetime: under the 397-day limit that browsers enforce for TLS server certificates.
pub const LEAF_VALIDITY_DAYS: i64 = 395;
/// CA lifetime (not subject to the browser limit; only leaves are).
pub const CA_VALIDITY_DAYS: i64 = 3650;
/// Files expiring sooner than this are replaced.
pub const RENEW_MARGIN: Duration = Duration::from_secs(30 * 24 * 3600);

/// Whether [`generate_dev_pki`] wrote anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevPkiStatus {
    /// All four files were valid and were kept untouched.
    Reused,
    /// The CA was kept, the leaf (`cert.pem`, `key.pem`) was re-issued.
    LeafReissued,
    /// A new CA and a new leaf were written.
    Generated,
}

/// Paths of a dev PKI and what [`generate_dev_pki`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPki {
    /// The CA certificate: clients and browsers trust this.
    pub ca_cert: PathBuf,
    /// The CA private key (mode 0600).
    pub ca_key: PathBuf,
    /// The leaf certificate followed by the CA certificate.
    pub cert: PathBuf,
    /// The leaf private key (mode 0600).
    pub key: PathBuf,
    /// What was done.
    pub status: DevPkiStatus,
}

impl DevPki {
    fn paths(dir: &Path) -> Self {
        Self {
            ca_cert: dir.join("ca.pem"),
            ca_key: dir.join("ca-key.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            status: DevPkiStatus::Reused,
        }
    }
}

/// Makes sure `dir` holds a usable dev CA and leaf covering [`DEFAULT_NAMES`] plus
/// `extra_names` (DNS names or IP literals), generating or re-issuing only what is missing,
/// broken or expiring within 30 days.
pub fn generate_dev_pki(dir: &Path, extra_names: &[String]) -> Result<DevPki, CertError> {
    let mut pki = DevPki::paths(dir);
    let mut names: Vec<String> = DEFAULT_NAMES.iter().map(|s| (*s).to_owned()).collect();
    for n in extra_names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let now = SystemTime::now();

    let ca = match usable_ca(&pki, now) {
        Some(ca) => {
            if leaf_is_usable(&pki, &names, now) {
                tracing::debug!(dir = %dir.display(), "dev PKI reused");
                return Ok(pki);
            }
            pki.status = DevPkiStatus::LeafReissued;
            ca
        }
        None => {
            pki.status = DevPkiStatus::Generated;
            std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
                path: dir.to_owned(),
                action: "create directory",
                source,
            })?;
            new_ca(&pki)?
        }
    };
    issue_leaf(&pki, &ca, &names)?;
    tracing::info!(dir = %dir.display(), status = ?pki.status, names = ?names, "dev PKI written");
    Ok(pki)
}

/// A CA that can sign: its certificate PEM and key.
struct Ca {
    cert_pem: String,
    key: KeyPair,
}

fn gen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> CertError {
    move |e| CertError::Generate {
        what,
        reason: e.to_string(),
    }
}

fn validity(days: i64) -> (OffsetDateTime, OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    // Backdate a little so a client with a slightly slow clock accepts the cert at once.
    (
        now - time::Duration::hours(1),
        now + time::Duration::days(days),
    )
}

fn new_ca(pki: &DevPki) -> Result<Ca, CertError> {
    let key = KeyPair::generate().map_err(gen_err("CA key"))?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err("CA"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "rtcgate development CA");
    dn.push(DnType::OrganizationName, "rtcgate dev");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params.not_before, params.not_after) = validity(CA_VALIDITY_DAYS);
    let cert = params.self_signed(&key).map_err(gen_err("CA"))?;
    let cert_pem = cert.pem();
    write_file(&pki.ca_key, key.serialize_pem().as_bytes(), true)?;
    write_file(&pki.ca_cert, cert_pem.as_bytes(), false)?;
    Ok(Ca { cert_pem, key })
}

fn issue_leaf(pki: &DevPki, ca: &Ca, names: &[String]) -> Result<(), CertError> {
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, &ca.key).map_err(gen_err("issuer"))?;
    let key = KeyPair::generate().map_err(gen_err("leaf key"))?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(gen_err("leaf"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "rtcgate dev leaf");
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    (params.not_before, params.not_after) = validity(LEAF_VALIDITY_DAYS);
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(gen_err("leaf certificate"))?;
    // Key first: a watcher that sees the new cert with the old key just retries later.
    write_file(&pki.key, key.serialize_pem().as_bytes(), true)?;
    let chain = format!("{}{}", cert.pem(), ca.cert_pem);
    write_file(&pki.cert, chain.as_bytes(), false)
}

/// The existing CA, if its files parse, match, and stay valid for the renewal margin.
fn usable_ca(pki: &DevPki, now: SystemTime) -> Option<Ca> {
    let cert_pem = String::from_utf8(read_file(&pki.ca_cert).ok()?).ok()?;
    let key_pem = String::from_utf8(read_file(&pki.ca_key).ok()?).ok()?;
    let key = KeyPair::from_pem(&key_pem).ok()?;
    let chain = crate::load::parse_cert_chain(cert_pem.as_bytes(), &pki.ca_cert).ok()?;
    let der = chain.first()?;
    let (_, x509) = X509Certificate::from_der(der).ok()?;
    let info = LeafInfo::from_der(der).ok()?;
    let key_matches = x509.public_key().raw == key.subject_public_key_info().as_slice();
    (key_matches && x509.is_ca() && info.valid_for(now, RENEW_MARGIN))
        .then_some(Ca { cert_pem, key })
}

/// True if the leaf loads with its key, covers `names`, is signed by the CA and does not
/// expire within the renewal margin.
fn leaf_is_usable(pki: &DevPki, names: &[String], now: SystemTime) -> bool {
    let Ok(certified) = load_certified_key(&pki.cert, &pki.key) else {
        return false;
    };
    let Some(leaf_der) = certified.cert.first() else {
        return false;
    };
    let Ok(info) = LeafInfo::from_der(leaf_der) else {
        return false;
    };
    let covers = names
        .iter()
        .all(|n| info.names.iter().any(|have| same_name(have, n)));
    covers && info.valid_for(now, RENEW_MARGIN) && signed_by_ca(leaf_der, &pki.ca_cert)
}

fn same_name(have: &str, want: &str) -> bool {
    match (
        have.parse::<std::net::IpAddr>(),
        want.parse::<std::net::IpAddr>(),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => have.eq_ignore_ascii_case(want),
    }
}

fn signed_by_ca(leaf_der: &[u8], ca_path: &Path) -> bool {
    let Ok(ca_pem) = read_file(ca_path) else {
        return false;
    };
    let Ok(ca_chain) = crate::load::parse_cert_chain(&ca_pem, ca_path) else {
        return false;
    };
    let (Some(ca_der), Ok((_, leaf))) = (ca_chain.first(), X509Certificate::from_der(leaf_der))
    else {
        return false;
    };
    let Ok((_, ca)) = X509Certificate::from_der(ca_der) else {
        return false;
    };
    leaf.verify_signature(Some(ca.public_key())).is_ok()
}

/// Writes through a temporary file and a rename, so readers never see half a file.
fn write_file(path: &Path, contents: &[u8], private: bool) -> Result<(), CertError> {
    let io_err = |action: &'static str, p: &Path| {
        let p = p.to_owned();
        move |source| CertError::Io {
            path: p,
            action,
            source,
        }
    };
    let tmp = path.with_extension("pem.tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = opts.open(&tmp).map_err(io_err("create", &tmp))?;
    #[cfg(unix)]
    {
        // `mode` only applies on creation; a stale temp file keeps its old mode otherwise.
        use std::os::unix::fs::PermissionsExt;
        let mode = if private { 0o600 } else { 0o644 };
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io_err("chmod", &tmp))?;
    }
    file.write_all(contents).map_err(io_err("write", &tmp))?;
    file.sync_all().map_err(io_err("sync", &tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io_err("rename into place", path))
}
