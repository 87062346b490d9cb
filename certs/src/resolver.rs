//! A rustls certificate resolver whose certificate can be swapped while the server runs:
//! on demand (`reload_now`, e.g. on SIGHUP) or when a polling watcher sees the files change.
//!
//! Polling is deliberate: inotify-style watchers miss editors' rename tricks, Kubernetes'
//! symlink swaps and bind mounts; reading two small files every few seconds costs nothing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use sha2::{Digest, Sha256};

use crate::error::CertError;
use crate::load::{LeafInfo, certified_key_from_pem, read_file};

/// Content fingerprint of the certificate and key files.
type Fingerprint = [u8; 32];

/// Serves the current certificate to rustls and replaces it when the files change.
pub struct ReloadingCertResolver {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// Fingerprint of the files last tried (loaded or rejected), so a broken file is
    /// reported once, not on every poll.
    last_seen: Mutex<Fingerprint>,
}

impl fmt::Debug for ReloadingCertResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCertResolver")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

/// Result of a reload attempt that did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReloadOutcome {
    /// The files were unchanged since the last attempt; nothing was done.
    Unchanged,
    /// A new certificate is now served.
    Reloaded(Option<LeafInfo>),
}

impl ReloadingCertResolver {
    /// Loads the files once; fails if they are not usable (a server must not start without).
    pub fn new(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, CertError> {
        let (cert_pem, key_pem) = read_pair(cert_path, key_path)?;
        let key = certified_key_from_pem(&cert_pem, &key_pem, cert_path, key_path)?;
        let resolver = Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(key)),
            last_seen: Mutex::new(fingerprint(&cert_pem, &key_pem)),
        };
        log_loaded(&resolver.current(), cert_path, "TLS certificate loaded");
        Ok(Arc::new(resolver))
    }

    /// The certificate served right now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        // A poisoned lock still holds a valid Arc (writers only swap it).
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Re-reads the files and swaps the certificate in, whether or not they changed
    /// (for SIGHUP). On error the old certificate stays and the error is logged and returned.
    pub fn reload_now(&self) -> Result<ReloadOutcome, CertError> {
        self.reload(true)
    }

    /// Re-reads the files and swaps the certificate in only if their contents changed since
    /// the last attempt. On error the old certificate stays and the error is logged.
    pub fn reload_if_changed(&self) -> Result<ReloadOutcome, CertError> {
        self.reload(false)
    }

    fn reload(&self, force: bool) -> Result<ReloadOutcome, CertError> {
        let (cert_pem, key_pem) = read_pair(&self.cert_path, &self.key_path).inspect_err(|e| {
            tracing::warn!(error = %e, "TLS certificate files unreadable; keeping the current certificate");
        })?;
        let print = fingerprint(&cert_pem, &key_pem);
        {
            let mut last = self
                .last_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if !force && *last == print {
                return Ok(ReloadOutcome::Unchanged);
            }
            *last = print;
        }
        match certified_key_from_pem(&cert_pem, &key_pem, &self.cert_path, &self.key_path) {
            Ok(key) => {
                let key = Arc::new(key);
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = key.clone();
                let info = log_loaded(&key, &self.cert_path, "TLS certificate reloaded");
                Ok(ReloadOutcome::Reloaded(info))
            }
            Err(e) => {
                tracing::error!(error = %e, "new TLS certificate rejected; keeping the current certificate");
                Err(e)
            }
        }
    }

    /// Spawns a tokio task that calls [`Self::reload_if_changed`] every `interval`.
    /// Abort the returned handle to stop it; it also stops when the resolver is dropped.
    pub fn spawn_watcher(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await; // the first tick is immediate; files were just loaded
            loop {
                ticker.tick().await;
                let Some(resolver) = weak.upgrade() else {
                    return;
                };
                // Errors are logged inside; the watcher keeps going.
                let _ = resolver.reload_if_changed();
            }
        })
    }
}

impl ResolvesServerCert for ReloadingCertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn read_pair(cert_path: &Path, key_path: &Path) -> Result<(Vec<u8>, Vec<u8>), CertError> {
    Ok((read_file(cert_path)?, read_file(key_path)?))
}

fn fingerprint(cert_pem: &[u8], key_pem: &[u8]) -> Fingerprint {
    let mut h = Sha256::new();
    // Length prefix so that moving bytes between the files changes the print.
    h.update((cert_pem.len() as u64).to_be_bytes());
    h.update(cert_pem);
    h.update(key_pem);
    h.finalize().into()
}

fn log_loaded(key: &CertifiedKey, path: &Path, what: &'static str) -> Option<LeafInfo> {
    let info = crate::load::leaf_info_of(key);
    match &info {
        Some(i) => tracing::info!(
            file = %path.display(),
            subject = %i.subject,
            issuer = %i.issuer,
            names = ?i.names,
            not_after_unix = i.not_after_unix(),
            "{what}"
        ),
        None => tracing::info!(file = %path.display(), "{what}"),
    }
    info
}
