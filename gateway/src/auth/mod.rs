//! Digest authentication (RFC 3261 §22, RFC 7616, RFC 8760), sans-IO.
//!
//! [`DigestAuth`] builds challenges and verifies credentials. It never reads the clock
//! (callers pass `now` as unix seconds) and never touches the database: the caller
//! supplies the subscriber's HA1 through a closure, typically after an async store
//! lookup keyed by [`Credentials::username`] (see [`parse_credentials`]).
//!
//! Policy decisions:
//! - every challenge carries `qop="auth"` twice, `algorithm=SHA-256` first and
//!   `algorithm=MD5` last, with the same nonce (SIP.js keeps the last header);
//! - with qop, each nonce's `nc` must strictly increase (hex, up to `ffffffff`);
//! - without qop (RFC 2069 clients) a nonce is single use: the second use gets a
//!   fresh challenge with `stale=true`, so an honest client retries transparently;
//! - a replay is answered like a stale nonce (fresh challenge, `stale=true`): it gives
//!   an attacker nothing and lets a client with a counter bug recover;
//! - unknown user and wrong response both map to 403 so that user names cannot be
//!   probed; credentials for another realm are ignored (fresh challenge).

pub mod digest;
pub mod nonce;
pub mod params;

pub use digest::{Algorithm, ha1, response};
pub use nonce::{NonceFactory, NonceStatus, NonceTracker, Reuse};
pub use params::{Credentials, ParseError, parse_credentials, quote};

use subtle::ConstantTimeEq;
use thiserror::Error;

/// The RFC 8760 order of challenges: most preferred first.
pub const DEFAULT_ORDER: [Algorithm; 2] = [Algorithm::Sha256, Algorithm::Md5];

/// Settings for [`DigestAuth`].
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// The realm in challenges and the one credentials must name (also the domain
    /// under which subscribers are stored).
    pub realm: String,
    /// Seconds a nonce stays valid; older nonces are re-challenged with `stale=true`.
    pub nonce_lifetime_secs: i64,
    /// Upper bound on nonces remembered for replay protection.
    pub max_tracked_nonces: usize,
}

impl AuthConfig {
    /// Defaults: 300 s nonces, 100 000 tracked nonces.
    pub fn new(realm: impl Into<String>) -> Self {
        Self {
            realm: realm.into(),
            nonce_lifetime_secs: 300,
            max_tracked_nonces: 100_000,
        }
    }
}

/// Which challenge header a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    /// 401 + `WWW-Authenticate` (REGISTER, the registrar is the authenticator).
    Www,
    /// 407 + `Proxy-Authenticate` (everything the proxy forwards).
    Proxy,
}

impl ChallengeKind {
    /// `Www` for REGISTER, `Proxy` otherwise.
    pub fn for_method(method: &str) -> Self {
        if method.eq_ignore_ascii_case("REGISTER") {
            Self::Www
        } else {
            Self::Proxy
        }
    }

    /// 401 or 407.
    pub fn status(self) -> u16 {
        match self {
            Self::Www => 401,
            Self::Proxy => 407,
        }
    }

    /// Name of the challenge header.
    pub fn challenge_header(self) -> &'static str {
        match self {
            Self::Www => "WWW-Authenticate",
            Self::Proxy => "Proxy-Authenticate",
        }
    }

    /// Name of the header the client answers with.
    pub fn credentials_header(self) -> &'static str {
        match self {
            Self::Www => "Authorization",
            Self::Proxy => "Proxy-Authorization",
        }
    }
}

/// A challenge ready to be put into a 401/407.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// 401 or 407 flavour.
    pub kind: ChallengeKind,
    /// Header values in sending order: SHA-256 first, MD5 last.
    pub values: Vec<String>,
}

impl Challenge {
    /// The values as typed rsip headers of the right kind.
    pub fn headers(&self) -> Vec<rsipstack::rsip::Header> {
        use rsipstack::rsip::Header;
        self.values
            .iter()
            .map(|v| match self.kind {
                ChallengeKind::Www => Header::WwwAuthenticate(v.clone().into()),
                ChallengeKind::Proxy => Header::ProxyAuthenticate(v.clone().into()),
            })
            .collect()
    }
}

/// A successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthOk {
    /// The authenticated user name.
    pub username: String,
    /// The realm it authenticated in.
    pub realm: String,
    /// Algorithm used.
    pub algorithm: Algorithm,
    /// Nonce count (None for RFC 2069 style).
    pub nc: Option<u32>,
}

/// What the SIP layer should answer for an [`AuthFailure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthAction {
    /// 401/407 with a fresh challenge (`stale` as given).
    Challenge {
        /// Set `stale=true`.
        stale: bool,
    },
    /// 403 Forbidden.
    Forbidden,
    /// 400 Bad Request.
    BadRequest,
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AuthFailure {
    /// No credentials at all.
    #[error("no credentials")]
    NoCredentials,
    /// Credentials only for other realms.
    #[error("credentials for another realm")]
    BadRealm,
    /// The header does not parse.
    #[error("malformed credentials: {0}")]
    Malformed(#[from] ParseError),
    /// `uri` differs from the Request-URI.
    #[error("digest uri does not match the request uri")]
    UriMismatch,
    /// Unsupported `algorithm` or `qop`.
    #[error("unsupported algorithm or qop")]
    Unsupported,
    /// Not a nonce we issued (or a wrong opaque).
    #[error("unknown nonce")]
    BadNonce,
    /// Our nonce, but expired (or forgotten by the bounded tracker).
    #[error("stale nonce")]
    Stale,
    /// nc not increasing, or a qop-less nonce used twice.
    #[error("replayed nonce")]
    Replay,
    /// No such subscriber.
    #[error("unknown user")]
    UnknownUser,
    /// The response hash is wrong.
    #[error("wrong response")]
    WrongResponse,
}

impl AuthFailure {
    /// How to answer this failure.
    pub fn action(&self) -> AuthAction {
        match self {
            Self::NoCredentials | Self::BadRealm | Self::Unsupported | Self::BadNonce => {
                AuthAction::Challenge { stale: false }
            }
            Self::Stale | Self::Replay => AuthAction::Challenge { stale: true },
            Self::Malformed(_) | Self::UriMismatch => AuthAction::BadRequest,
            Self::UnknownUser | Self::WrongResponse => AuthAction::Forbidden,
        }
    }
}

/// Digest authenticator: challenge builder, verifier and nonce replay tracker.
#[derive(Debug)]
pub struct DigestAuth {
    config: AuthConfig,
    nonces: NonceFactory,
    tracker: NonceTracker,
    opaque: String,
}

impl DigestAuth {
    /// A new authenticator; `secret` keys the nonce HMAC (share it between nodes that
    /// must accept each other's nonces).
    pub fn new(config: AuthConfig, secret: [u8; 32]) -> Self {
        let nonces = NonceFactory::new(secret, config.nonce_lifetime_secs);
        let opaque = nonces.opaque();
        let tracker = NonceTracker::new(config.max_tracked_nonces);
        Self {
            config,
            nonces,
            tracker,
            opaque,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Builds a challenge for `method` with a nonce issued at `now`, SHA-256
    /// first and MD5 last (RFC 8760 order; SIP.js uses the last one).
    pub fn challenge(&self, now: i64, method: &str, stale: bool) -> Challenge {
        self.challenge_ordered(now, method, stale, &DEFAULT_ORDER)
    }

    /// Like [`challenge`](Self::challenge) with the algorithms in the given
    /// order (one header each). Legacy phones and sipp take the *first*
    /// header and support only MD5, so UDP clients get MD5 first.
    pub fn challenge_ordered(
        &self,
        now: i64,
        method: &str,
        stale: bool,
        order: &[Algorithm],
    ) -> Challenge {
        self.build_challenge(now, method, stale, rand::random(), order)
    }

    /// Like [`challenge`](Self::challenge) with caller-supplied nonce randomness.
    pub fn challenge_with_random(
        &self,
        now: i64,
        method: &str,
        stale: bool,
        random: [u8; 8],
    ) -> Challenge {
        self.build_challenge(now, method, stale, random, &DEFAULT_ORDER)
    }

    fn build_challenge(
        &self,
        now: i64,
        method: &str,
        stale: bool,
        random: [u8; 8],
        order: &[Algorithm],
    ) -> Challenge {
        let nonce = self.nonces.issue(now, random);
        let realm = quote(&self.config.realm);
        let order = if order.is_empty() {
            &DEFAULT_ORDER[..]
        } else {
            order
        };
        let values = order
            .iter()
            .copied()
            .map(|alg| {
                let mut v = format!(
                    "Digest realm={realm}, nonce=\"{nonce}\", opaque=\"{}\", algorithm={}, qop=\"auth\"",
                    self.opaque,
                    alg.as_str()
                );
                if stale {
                    v.push_str(", stale=true");
                }
                v
            })
            .collect();
        Challenge {
            kind: ChallengeKind::for_method(method),
            values,
        }
    }

    /// Picks the credentials addressed to our realm from the header values given.
    pub fn select_credentials(&self, values: &[&str]) -> Result<Credentials, AuthFailure> {
        if values.is_empty() {
            return Err(AuthFailure::NoCredentials);
        }
        let mut first_err = None;
        for v in values {
            match parse_credentials(v) {
                Ok(c) if c.realm == self.config.realm => return Ok(c),
                Ok(_) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.map_or(AuthFailure::BadRealm, AuthFailure::Malformed))
    }

    /// Verifies a request. `credentials` are all `Authorization` (REGISTER) or
    /// `Proxy-Authorization` header values; `lookup_ha1(username, realm, algorithm)`
    /// returns the stored HA1 hex for that algorithm, `None` for an unknown user.
    /// A success is recorded for replay protection.
    pub fn verify<F>(
        &mut self,
        now: i64,
        method: &str,
        request_uri: &str,
        credentials: &[&str],
        lookup_ha1: F,
    ) -> Result<AuthOk, AuthFailure>
    where
        F: FnOnce(&str, &str, Algorithm) -> Option<String>,
    {
        let creds = self.select_credentials(credentials)?;
        self.verify_credentials(now, method, request_uri, &creds, lookup_ha1)
    }

    /// [`verify`](Self::verify) on already selected credentials.
    pub fn verify_credentials<F>(
        &mut self,
        now: i64,
        method: &str,
        request_uri: &str,
        creds: &Credentials,
        lookup_ha1: F,
    ) -> Result<AuthOk, AuthFailure>
    where
        F: FnOnce(&str, &str, Algorithm) -> Option<String>,
    {
        if creds.realm != self.config.realm {
            return Err(AuthFailure::BadRealm);
        }
        let alg =
            Algorithm::from_param(creds.algorithm.as_deref()).ok_or(AuthFailure::Unsupported)?;
        let qop = match (&creds.qop, &creds.nc_raw, &creds.cnonce) {
            (None, _, _) => None,
            (Some(q), Some(nc), Some(cn)) if q.eq_ignore_ascii_case("auth") => {
                Some((nc.as_str(), cn.as_str(), q.as_str()))
            }
            _ => return Err(AuthFailure::Unsupported),
        };
        if !uri_matches(&creds.uri, request_uri) {
            return Err(AuthFailure::UriMismatch);
        }
        if let Some(op) = &creds.opaque
            && !bool::from(op.as_bytes().ct_eq(self.opaque.as_bytes()))
        {
            return Err(AuthFailure::BadNonce);
        }
        let issued = match self.nonces.check(now, &creds.nonce) {
            NonceStatus::Fresh(ts) => ts,
            NonceStatus::Stale => return Err(AuthFailure::Stale),
            NonceStatus::Invalid => return Err(AuthFailure::BadNonce),
        };
        let nc = creds.qop.as_ref().and(creds.nc);
        let ha1 = lookup_ha1(&creds.username, &creds.realm, alg).ok_or(AuthFailure::UnknownUser)?;
        let expected = response(alg, &ha1, &creds.nonce, method, &creds.uri, qop);
        let got = creds.response.to_ascii_lowercase();
        if !bool::from(expected.as_bytes().ct_eq(got.as_bytes())) {
            return Err(AuthFailure::WrongResponse);
        }
        match self.tracker.check(&creds.nonce, issued, nc) {
            Reuse::Ok => {}
            Reuse::Replay => return Err(AuthFailure::Replay),
            Reuse::Forgotten => return Err(AuthFailure::Stale),
        }
        let expire_before = now.saturating_sub(self.nonces.lifetime_secs());
        self.tracker.record(&creds.nonce, issued, nc, expire_before);
        Ok(AuthOk {
            username: creds.username.clone(),
            realm: creds.realm.clone(),
            algorithm: alg,
            nc,
        })
    }

    /// Number of nonces currently tracked for replay protection.
    pub fn tracked_nonces(&self) -> usize {
        self.tracker.len()
    }
}

/// digest-uri vs Request-URI: equal ignoring ASCII case, or equal once parsed as SIP URIs
/// (rsip may re-serialise the Request-URI slightly differently from the wire).
fn uri_matches(digest_uri: &str, request_uri: &str) -> bool {
    if digest_uri.eq_ignore_ascii_case(request_uri) {
        return true;
    }
    match (
        rsipstack::rsip::Uri::try_from(digest_uri),
        rsipstack::rsip::Uri::try_from(request_uri),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
