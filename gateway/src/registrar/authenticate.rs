//! Async glue between [`DigestAuth`] (sans-IO) and the subscriber store.

use std::sync::Mutex;

use rsipstack::rsip::{self, Header};

use super::{make_response, unavailable_response};
use crate::auth::{AuthAction, AuthFailure, AuthOk, ChallengeKind, DigestAuth};
use crate::store::Store;

/// Authenticates `req` (REGISTER: `Authorization`/401, others: `Proxy-Authorization`/407)
/// against subscribers of the realm's domain. On failure returns the response to send:
/// a challenge (with `stale=true` where apt), 403, 400, or 503 if the store is down.
/// `auth` is a std mutex: it is never held across an await.
pub async fn authenticate_request(
    auth: &Mutex<DigestAuth>,
    store: &Store,
    req: &rsip::Request,
    now: i64,
) -> Result<AuthOk, rsip::Response> {
    authenticate_request_ordered(auth, store, req, now, &crate::auth::DEFAULT_ORDER).await
}

/// Like [`authenticate_request`], challenging with the algorithms in `order`.
pub async fn authenticate_request_ordered(
    auth: &Mutex<DigestAuth>,
    store: &Store,
    req: &rsip::Request,
    now: i64,
    order: &[crate::auth::Algorithm],
) -> Result<AuthOk, rsip::Response> {
    let method = req.method.to_string();
    let kind = ChallengeKind::for_method(&method);
    let values: Vec<&str> = req
        .headers
        .iter()
        .filter_map(|h| match (h, kind) {
            (Header::Authorization(a), ChallengeKind::Www) => Some(a.value()),
            (Header::ProxyAuthorization(a), ChallengeKind::Proxy) => Some(a.value()),
            _ => None,
        })
        .collect();
    // As received: rsip's Display would escape the user again (`%27` → `%2527`).
    let uri = crate::sip::user::uri_text(&req.uri);
    // Select the credentials (sync), then fetch the subscriber (async, no lock held).
    let selected = lock(auth).select_credentials(&values);
    let creds = match selected {
        Ok(c) => c,
        Err(f) => return Err(failure_response(auth, req, &method, &f, now, order)),
    };
    let realm = lock(auth).config().realm.clone();
    let sub = match store.get_subscriber(&creds.username, &realm).await {
        Ok(s) => s,
        Err(e) if e.is_unavailable() => {
            tracing::warn!(error = %e, "store unavailable during authentication");
            return Err(unavailable_response(req, 5));
        }
        Err(e) => {
            tracing::error!(error = %e, "store error during authentication");
            return Err(make_response(req, 500, vec![]));
        }
    };
    let res = lock(auth).verify_credentials(now, &method, &uri, &creds, |_, _, alg| {
        sub.as_ref().map(|s| s.ha1(alg).to_string())
    });
    match res {
        Ok(ok) => Ok(ok),
        Err(f) => {
            tracing::info!(user = %creds.username, reason = %f, "authentication failed");
            Err(failure_response(auth, req, &method, &f, now, order))
        }
    }
}

fn lock(auth: &Mutex<DigestAuth>) -> std::sync::MutexGuard<'_, DigestAuth> {
    // The authenticator holds no invariant a panic could break mid-way.
    auth.lock().unwrap_or_else(|e| e.into_inner())
}

/// The response for an authentication failure.
pub fn failure_response(
    auth: &Mutex<DigestAuth>,
    req: &rsip::Request,
    method: &str,
    failure: &AuthFailure,
    now: i64,
    order: &[crate::auth::Algorithm],
) -> rsip::Response {
    match failure.action() {
        AuthAction::Challenge { stale } => {
            let ch = lock(auth).challenge_ordered(now, method, stale, order);
            make_response(req, ch.kind.status(), ch.headers())
        }
        AuthAction::Forbidden => make_response(req, 403, vec![]),
        AuthAction::BadRequest => make_response(req, 400, vec![]),
    }
}
