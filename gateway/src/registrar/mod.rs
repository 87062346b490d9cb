//! Registrar core (RFC 3261 §10.3, RFC 5626 outbound, RFC 3327 Path), sans-IO.
//!
//! [`process_register`] turns a REGISTER plus the AOR's current bindings into binding
//! changes and the response. [`handle_register`] is the thin async shell that runs it
//! under [`LocationService`]'s per-AOR lock and persists the changes.
//!
//! Choices worth knowing:
//! - Contact URIs are stored and compared exactly as sent (no RFC 3261 §19.1.4
//!   normalisation); UAs re-send their own Contact byte-for-byte.
//! - An out-of-order CSeq for the same Call-ID aborts the whole request (no change,
//!   500), as §10.3 step 7 says ("the update MUST be aborted and the request fails").
//! - More than `max_contacts` live bindings after the update: 403, nothing changed.
//! - Every binding records the flow id and node that carried the REGISTER, with or
//!   without RFC 5626 (SIP.js does not send reg-id by default but can only be reached
//!   over its WebSocket).

mod authenticate;
mod contact;
mod response;

pub use authenticate::{authenticate_request, authenticate_request_ordered, failure_response};
pub use contact::{ContactError, ContactSpec, Contacts, parse_contacts};
pub use response::make_response;

use std::net::SocketAddr;

use rsipstack::rsip::{self, Header};

use crate::store::{Binding, BindingChange, LocationService};

/// Registrar settings.
#[derive(Debug, Clone)]
pub struct RegistrarConfig {
    /// Shorter non-zero expirations are refused with 423 + Min-Expires.
    pub min_expires: u32,
    /// Longer expirations are shortened to this.
    pub max_expires: u32,
    /// Used when neither the contact nor the request gives one (or it is malformed).
    pub default_expires: u32,
    /// Live bindings allowed per AOR.
    pub max_contacts: usize,
    /// Domains we are registrar for; empty = any.
    pub domains: Vec<String>,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        Self {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 600,
            max_contacts: 10,
            domains: Vec::new(),
        }
    }
}

/// What the transport and auth layers know about the request.
#[derive(Debug, Clone, Copy)]
pub struct RegisterContext<'a> {
    /// Current time, unix seconds.
    pub now: i64,
    /// Flow (connection) the request came on.
    pub flow_id: Option<&'a str>,
    /// Source address of the request.
    pub source: Option<SocketAddr>,
    /// This node's id.
    pub node_id: &'a str,
    /// The digest user name that authenticated, if authentication ran; the AOR's
    /// user part must equal it.
    pub authenticated_user: Option<&'a str>,
}

/// The result of [`process_register`].
#[derive(Debug, Clone)]
pub struct RegisterOutcome {
    /// Changes to persist (empty on any error response).
    pub changes: Vec<BindingChange>,
    /// The response to send.
    pub response: rsip::Response,
    /// Live bindings of the AOR once the changes are applied.
    pub bindings: Vec<Binding>,
}

/// A REGISTER whose AOR cannot be determined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AorError {
    /// No To header.
    #[error("missing To header")]
    MissingTo,
    /// To URI not a sip/sips URI with a user part.
    #[error("To is not a sip/sips URI with a user")]
    BadUri,
}

/// The canonical AOR for a user in a domain: `sip:user@domain` (domain lower-cased).
pub fn aor_for(user: &str, domain: &str) -> String {
    format!("sip:{user}@{}", domain.to_ascii_lowercase())
}

/// The canonical AOR of a REGISTER (from its To header; `sips` folds to `sip`, port and
/// parameters dropped, `%XX` escapes in the user part decoded).
pub fn register_aor(req: &rsip::Request) -> Result<String, AorError> {
    let to = req
        .headers
        .iter()
        .find_map(|h| match h {
            Header::To(t) => Some(t.value()),
            _ => None,
        })
        .ok_or(AorError::MissingTo)?;
    let to = rsip::typed::To::parse(to).map_err(|_| AorError::BadUri)?;
    match to.uri.scheme {
        None | Some(rsip::Scheme::Sip) | Some(rsip::Scheme::Sips) => {}
        Some(_) => return Err(AorError::BadUri),
    }
    let user = to.uri.auth.as_ref().map(|a| a.user.as_str()).unwrap_or("");
    if user.is_empty() {
        return Err(AorError::BadUri);
    }
    Ok(aor_for(
        &crate::sip::user::decode(user),
        &to.uri.host_with_port.host.to_string(),
    ))
}

fn header_values<'a>(
    req: &'a rsip::Request,
    pick: fn(&'a Header) -> Option<&'a str>,
) -> Vec<&'a str> {
    req.headers.iter().filter_map(pick).collect()
}

fn has_option_tag(req: &rsip::Request, tag: &str) -> bool {
    header_values(req, |h| match h {
        Header::Supported(s) => Some(s.value()),
        _ => None,
    })
    .iter()
    .flat_map(|v| v.split(','))
    .any(|t| t.trim().eq_ignore_ascii_case(tag))
}

fn reply(
    req: &rsip::Request,
    status: u16,
    extra: Vec<Header>,
    current: &[Binding],
    now: i64,
) -> RegisterOutcome {
    RegisterOutcome {
        changes: Vec::new(),
        response: make_response(req, status, extra),
        bindings: current
            .iter()
            .filter(|b| !b.is_expired(now))
            .cloned()
            .collect(),
    }
}

fn contact_header(b: &Binding, now: i64) -> Header {
    let mut v = format!("<{}>;expires={}", b.contact, b.remaining(now));
    if b.q != 1000 {
        v.push_str(&format!(";q={}.{:03}", b.q / 1000, b.q % 1000));
    }
    if let Some(i) = &b.instance {
        v.push_str(&format!(";+sip.instance={}", crate::auth::quote(i)));
    }
    if let Some(r) = b.reg_id {
        v.push_str(&format!(";reg-id={r}"));
    }
    Header::Contact(v.into())
}

/// Processes a REGISTER (already authenticated by the caller) against the AOR's current
/// bindings (`current`, as returned by [`LocationService::update`]).
pub fn process_register(
    cfg: &RegistrarConfig,
    req: &rsip::Request,
    ctx: &RegisterContext<'_>,
    current: &[Binding],
) -> RegisterOutcome {
    let now = ctx.now;
    let aor = match register_aor(req) {
        Ok(a) => a,
        Err(_) => return reply(req, 400, vec![], &[], now),
    };
    let aor_user = aor.strip_prefix("sip:").and_then(|s| s.rsplit_once('@'));
    if let Some(user) = ctx.authenticated_user
        && aor_user.map(|(u, _)| u) != Some(user)
    {
        return reply(req, 403, vec![], &[], now);
    }
    if !cfg.domains.is_empty()
        && !aor_user.is_some_and(|(_, d)| cfg.domains.iter().any(|x| x.eq_ignore_ascii_case(d)))
    {
        return reply(req, 403, vec![], &[], now);
    }
    let mut call_id = None;
    let mut cseq = None;
    let mut expires_hdr: Option<Option<u32>> = None;
    let mut user_agent = None;
    let mut vias = 0usize;
    for h in req.headers.iter() {
        match h {
            Header::CallId(c) => call_id = Some(c.value().trim().to_string()),
            Header::CSeq(c) => {
                cseq = c
                    .value()
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u32>().ok());
            }
            Header::Expires(e) => expires_hdr = Some(e.value().trim().parse::<u32>().ok()),
            Header::UserAgent(u) => user_agent = Some(u.value().to_string()),
            Header::Via(v) => vias += v.value().split(',').count(),
            _ => {}
        }
    }
    let (Some(call_id), Some(cseq)) = (call_id, cseq) else {
        return reply(req, 400, vec![], current, now);
    };
    let path = header_values(req, |h| match h {
        Header::Path(p) => Some(p.value()),
        _ => None,
    });
    let path: Vec<String> = path.iter().map(|p| p.trim().to_string()).collect();
    let contact_values = header_values(req, |h| match h {
        Header::Contact(c) => Some(c.value()),
        _ => None,
    });
    let contacts = match parse_contacts(&contact_values) {
        Ok(c) => c,
        Err(_) => return reply(req, 400, vec![], current, now),
    };

    let out_of_order = |b: &Binding| b.call_id == call_id && cseq <= b.cseq;
    let mut changes = Vec::new();
    let mut working: Vec<Binding> = current.to_vec();
    let mut outbound = false;

    match contacts {
        Contacts::None => {}
        Contacts::Star => {
            if expires_hdr != Some(Some(0)) {
                return reply(req, 400, vec![], current, now);
            }
            if working
                .iter()
                .any(|b| !b.is_expired(now) && out_of_order(b))
            {
                return reply(req, 500, vec![], current, now);
            }
            for b in working.drain(..) {
                changes.push(BindingChange::Remove {
                    aor: b.aor,
                    contact: b.contact,
                });
            }
        }
        Contacts::List(specs) => {
            let mut resolved = Vec::with_capacity(specs.len());
            for s in specs {
                let e = s
                    .expires
                    .or(expires_hdr)
                    .flatten()
                    .unwrap_or(cfg.default_expires);
                if e > 0 && e < cfg.min_expires {
                    return reply(
                        req,
                        423,
                        vec![Header::MinExpires(cfg.min_expires.to_string().into())],
                        current,
                        now,
                    );
                }
                resolved.push((s, e.min(cfg.max_expires)));
            }
            outbound = resolved
                .iter()
                .any(|(s, _)| s.instance.is_some() && s.reg_id.is_some());
            // RFC 5626 §6: behind another proxy, outbound needs that proxy's Path with ;ob.
            if outbound && vias > 1 && !path.first().is_some_and(|p| p.contains(";ob")) {
                return reply(req, 439, vec![], current, now);
            }
            for (s, e) in resolved {
                // reg-id without an instance is ignored (RFC 5626 §6).
                let reg_id = s.instance.as_ref().and(s.reg_id);
                if working
                    .iter()
                    .any(|b| b.contact == s.uri && !b.is_expired(now) && out_of_order(b))
                {
                    return reply(req, 500, vec![], current, now);
                }
                // Same instance (+ same reg-id) on another contact/flow: replaced.
                if let Some(inst) = &s.instance {
                    let (keep, gone): (Vec<Binding>, Vec<Binding>) =
                        working.into_iter().partition(|b| {
                            !(b.instance.as_deref() == Some(inst.as_str())
                                && b.reg_id == reg_id
                                && b.contact != s.uri)
                        });
                    working = keep;
                    for b in gone {
                        changes.push(BindingChange::Remove {
                            aor: b.aor,
                            contact: b.contact,
                        });
                    }
                }
                if e == 0 {
                    if working.iter().any(|b| b.contact == s.uri) {
                        working.retain(|b| b.contact != s.uri);
                        changes.push(BindingChange::Remove {
                            aor: aor.clone(),
                            contact: s.uri,
                        });
                    }
                    continue;
                }
                let b = Binding {
                    aor: aor.clone(),
                    contact: s.uri.clone(),
                    expires_at: now.saturating_add(i64::from(e)),
                    q: s.q.unwrap_or(1000),
                    path: path.clone(),
                    received: ctx.source.map(|a| a.to_string()),
                    flow_id: ctx.flow_id.map(str::to_string),
                    node_id: ctx.node_id.to_string(),
                    instance: s.instance.clone(),
                    reg_id,
                    user_agent: user_agent.clone(),
                    call_id: call_id.clone(),
                    cseq,
                    updated_at: now,
                };
                working.retain(|x| x.contact != b.contact);
                working.push(b.clone());
                changes.push(BindingChange::Upsert(b));
            }
        }
    }

    let live: Vec<Binding> = working.into_iter().filter(|b| !b.is_expired(now)).collect();
    if live.len() > cfg.max_contacts {
        return reply(req, 403, vec![], current, now);
    }
    let mut extra: Vec<Header> = live.iter().map(|b| contact_header(b, now)).collect();
    if outbound {
        extra.push(Header::Require("outbound".into()));
    }
    if !path.is_empty() && has_option_tag(req, "path") {
        extra.extend(path.iter().map(|p| Header::Path(p.clone().into())));
    }
    RegisterOutcome {
        changes,
        response: make_response(req, 200, extra),
        bindings: live,
    }
}

/// 503 Service Unavailable with Retry-After, for when the store is down.
pub fn unavailable_response(req: &rsip::Request, retry_after_secs: u32) -> rsip::Response {
    make_response(
        req,
        503,
        vec![Header::RetryAfter(retry_after_secs.to_string().into())],
    )
}

/// 403 for a source banned for failed authentications: how long the ban
/// lasts in `Retry-After`, why in a `Warning` (RFC 3261 §20.43).
pub fn banned_response(req: &rsip::Request, retry_after_secs: u32) -> rsip::Response {
    make_response(
        req,
        403,
        vec![
            Header::RetryAfter(retry_after_secs.to_string().into()),
            Header::Other(
                "Warning".into(),
                "399 rtcgate \"Too many failed authentications\"".into(),
            ),
        ],
    )
}

/// Async shell: runs [`process_register`] under the AOR lock of `location` and persists
/// the changes. A store outage gives 503 + Retry-After (and no binding change).
pub async fn handle_register(
    location: &LocationService,
    cfg: &RegistrarConfig,
    req: &rsip::Request,
    ctx: &RegisterContext<'_>,
) -> rsip::Response {
    let aor = match register_aor(req) {
        Ok(a) => a,
        Err(e) => {
            tracing::debug!(error = %e, "REGISTER without usable AOR");
            return make_response(req, 400, vec![]);
        }
    };
    let res = location
        .update(&aor, |current| {
            let o = process_register(cfg, req, ctx, current);
            (o.changes, o.response)
        })
        .await;
    match res {
        Ok(resp) => resp,
        Err(e) if e.is_unavailable() => {
            tracing::warn!(error = %e, %aor, "store unavailable during REGISTER");
            unavailable_response(req, 5)
        }
        Err(e) => {
            tracing::error!(error = %e, %aor, "store error during REGISTER");
            make_response(req, 500, vec![])
        }
    }
}

#[cfg(test)]
mod tests;
