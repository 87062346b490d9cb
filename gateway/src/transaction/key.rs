//! Transaction matching keys (RFC 3261 §17.1.3, §17.2.3) and the borrowed,
//! allocation-free header scans they are built from.

use std::hash::{BuildHasher, Hash, Hasher};

use crate::rsip::{Header, Headers, Method, Request, Response};

use super::error::TransactionError;

/// The RFC 3261 branch prefix; branches without it come from RFC 2543 peers.
pub const MAGIC_COOKIE: &str = "z9hG4bK";

/// Whether `branch` is an RFC 3261 branch (starts with the magic cookie).
pub fn is_rfc3261_branch(branch: &str) -> bool {
    branch.starts_with(MAGIC_COOKIE)
}

/// The parts of the top Via value that matching needs, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopVia<'a> {
    /// The whole first Via value (first entry of a comma-separated header).
    pub value: &'a str,
    /// `host[:port]`, as written.
    pub sent_by: &'a str,
    /// The `branch` parameter, if present and non-empty.
    pub branch: Option<&'a str>,
}

/// Scans the top Via of `headers` without allocating.
pub fn top_via(headers: &Headers) -> Result<TopVia<'_>, TransactionError> {
    let raw = headers
        .iter()
        .find_map(|h| match h {
            Header::Via(v) => Some(v.value()),
            _ => None,
        })
        .ok_or(TransactionError::MissingVia)?;
    parse_via_value(first_value(raw))
}

/// The first entry of a comma-separated header value (commas inside quoted
/// strings do not split).
pub(crate) fn first_value(raw: &str) -> &str {
    if !raw.contains(',') {
        return raw.trim();
    }
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in raw.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => return raw.get(..i).unwrap_or(raw).trim(),
            _ => {}
        }
    }
    raw.trim()
}

/// Parses one Via value: `SIP / 2.0 / transport sent-by *(; param)`.
pub fn parse_via_value(value: &str) -> Result<TopVia<'_>, TransactionError> {
    let value = value.trim();
    // Skip "SIP/2.0/" (LWS around the slashes is legal, RFC 4475 §3.1.1.1).
    let mut rest = value;
    for _ in 0..2 {
        let slash = rest.find('/').ok_or(TransactionError::MalformedVia)?;
        rest = rest
            .get(slash + 1..)
            .ok_or(TransactionError::MalformedVia)?;
    }
    let rest = rest.trim_start();
    let ws = rest
        .find(|c: char| c.is_ascii_whitespace())
        .ok_or(TransactionError::MalformedVia)?;
    let after_transport = rest.get(ws..).ok_or(TransactionError::MalformedVia)?;
    let (sent_by, params) = match after_transport.split_once(';') {
        Some((s, p)) => (s.trim(), Some(p)),
        None => (after_transport.trim(), None),
    };
    if sent_by.is_empty() {
        return Err(TransactionError::MalformedVia);
    }
    let branch = params.and_then(|p| {
        p.split(';').find_map(|param| {
            let (name, val) = param.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("branch")
                .then(|| val.trim())
                .filter(|v| !v.is_empty())
        })
    });
    Ok(TopVia {
        value,
        sent_by,
        branch,
    })
}

/// The CSeq number and method, scanned without allocating.
pub fn cseq(headers: &Headers) -> Result<(u32, Method), TransactionError> {
    let raw = headers
        .iter()
        .find_map(|h| match h {
            Header::CSeq(c) => Some(c.value()),
            _ => None,
        })
        .ok_or(TransactionError::MissingCSeq)?;
    let mut parts = raw.split_ascii_whitespace();
    let num = parts
        .next()
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or(TransactionError::MalformedCSeq)?;
    let method = parts
        .next()
        .and_then(|m| m.parse::<Method>().ok())
        .ok_or(TransactionError::MalformedCSeq)?;
    if parts.next().is_some() {
        return Err(TransactionError::MalformedCSeq);
    }
    Ok((num, method))
}

/// The Call-ID value, borrowed.
pub fn call_id(headers: &Headers) -> Result<&str, TransactionError> {
    headers
        .iter()
        .find_map(|h| match h {
            Header::CallId(c) => Some(c.value().trim()),
            _ => None,
        })
        .filter(|v| !v.is_empty())
        .ok_or(TransactionError::MissingCallId)
}

/// The `tag` parameter of a From/To value, borrowed.
pub fn tag_param(value: &str) -> Option<&str> {
    // Parameters follow the closing '>' of a name-addr, else the first ';'.
    let params = match value.rfind('>') {
        Some(i) => value.get(i + 1..)?,
        None => value.split_once(';').map(|(_, p)| p)?,
    };
    params.split(';').find_map(|p| {
        let (name, val) = p.split_once('=')?;
        name.trim()
            .eq_ignore_ascii_case("tag")
            .then(|| val.trim())
            .filter(|v| !v.is_empty())
    })
}

fn from_value(headers: &Headers) -> Option<&str> {
    headers.iter().find_map(|h| match h {
        Header::From(f) => Some(f.value()),
        _ => None,
    })
}

fn to_value(headers: &Headers) -> Option<&str> {
    headers.iter().find_map(|h| match h {
        Header::To(t) => Some(t.value()),
        _ => None,
    })
}

/// The method a server transaction is keyed under: an ACK belongs to the
/// INVITE transaction (§17.2.3), every other method to its own.
pub fn server_method(method: Method) -> Method {
    if method == Method::Ack {
        Method::Invite
    } else {
        method
    }
}

/// An owned server transaction key, kept in the transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMatch {
    /// RFC 3261 §17.2.3: branch + sent-by + method.
    Branch {
        /// The top Via branch (with the magic cookie).
        branch: Box<str>,
        /// The top Via sent-by.
        sent_by: Box<str>,
        /// INVITE for INVITE and ACK, else the request method.
        method: Method,
    },
    /// RFC 2543 fallback (§17.2.3, last paragraphs): what identifies the
    /// request, excluding the To tag so the ACK matches its INVITE.
    Legacy {
        /// Call-ID, From tag, CSeq number, top Via and Request-URI, joined.
        fingerprint: Box<str>,
        /// INVITE for INVITE and ACK, else the request method.
        method: Method,
    },
}

/// A borrowed server key used for lookups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerView<'a> {
    /// See [`ServerMatch::Branch`].
    Branch {
        /// The top Via branch.
        branch: &'a str,
        /// The top Via sent-by.
        sent_by: &'a str,
        /// Key method.
        method: Method,
    },
    /// See [`ServerMatch::Legacy`]; the fingerprint must be built (allocates).
    Legacy {
        /// The joined identifying fields.
        fingerprint: String,
        /// Key method.
        method: Method,
    },
}

impl<'a> ServerView<'a> {
    /// The key of `req` (ACK mapped to INVITE).
    pub fn of_request(req: &'a Request) -> Result<Self, TransactionError> {
        let via = top_via(&req.headers)?;
        let (num, cseq_method) = cseq(&req.headers)?;
        if cseq_method != req.method {
            return Err(TransactionError::CSeqMethodMismatch);
        }
        let call_id = call_id(&req.headers)?;
        let method = server_method(req.method);
        let branch = via.branch.ok_or(TransactionError::MissingBranch)?;
        if is_rfc3261_branch(branch) {
            return Ok(Self::Branch {
                branch,
                sent_by: via.sent_by,
                method,
            });
        }
        let from_tag = from_value(&req.headers).and_then(tag_param).unwrap_or("");
        let fingerprint = format!(
            "{call_id}\u{0}{from_tag}\u{0}{num}\u{0}{}\u{0}{}",
            via.value, req.uri
        );
        Ok(Self::Legacy {
            fingerprint,
            method,
        })
    }

    /// The same key with another method (used to find the INVITE a CANCEL
    /// targets).
    pub fn with_method(mut self, m: Method) -> Self {
        match &mut self {
            Self::Branch { method, .. } | Self::Legacy { method, .. } => *method = m,
        }
        self
    }

    /// The key method.
    pub fn method(&self) -> Method {
        match self {
            Self::Branch { method, .. } | Self::Legacy { method, .. } => *method,
        }
    }

    /// Hash with `state`; equal to [`ServerMatch::hash_with`] of the owned key.
    pub fn hash_with(&self, state: &impl BuildHasher) -> u64 {
        let mut h = state.build_hasher();
        match self {
            Self::Branch {
                branch,
                sent_by,
                method,
            } => hash_branch(&mut h, branch, sent_by, *method),
            Self::Legacy {
                fingerprint,
                method,
            } => hash_legacy(&mut h, fingerprint, *method),
        }
        h.finish()
    }

    /// Whether the owned key is the same key.
    pub fn matches(&self, owned: &ServerMatch) -> bool {
        match (self, owned) {
            (
                Self::Branch {
                    branch,
                    sent_by,
                    method,
                },
                ServerMatch::Branch {
                    branch: b,
                    sent_by: s,
                    method: m,
                },
            ) => method == m && *branch == &**b && sent_by.eq_ignore_ascii_case(s),
            (
                Self::Legacy {
                    fingerprint,
                    method,
                },
                ServerMatch::Legacy {
                    fingerprint: f,
                    method: m,
                },
            ) => method == m && fingerprint.as_str() == &**f,
            _ => false,
        }
    }

    /// The owned copy of this key.
    pub fn to_owned_key(&self) -> ServerMatch {
        match self {
            Self::Branch {
                branch,
                sent_by,
                method,
            } => ServerMatch::Branch {
                branch: (*branch).into(),
                sent_by: (*sent_by).into(),
                method: *method,
            },
            Self::Legacy {
                fingerprint,
                method,
            } => ServerMatch::Legacy {
                fingerprint: fingerprint.as_str().into(),
                method: *method,
            },
        }
    }
}

impl ServerMatch {
    /// Hash with `state`; equal to [`ServerView::hash_with`] of the same key.
    pub fn hash_with(&self, state: &impl BuildHasher) -> u64 {
        let mut h = state.build_hasher();
        match self {
            Self::Branch {
                branch,
                sent_by,
                method,
            } => hash_branch(&mut h, branch, sent_by, *method),
            Self::Legacy {
                fingerprint,
                method,
            } => hash_legacy(&mut h, fingerprint, *method),
        }
        h.finish()
    }
}

fn hash_branch(h: &mut impl Hasher, branch: &str, sent_by: &str, method: Method) {
    h.write_u8(1);
    method.hash(h);
    h.write_usize(branch.len());
    h.write(branch.as_bytes());
    // sent-by hosts compare case-insensitively.
    h.write_usize(sent_by.len());
    for b in sent_by.bytes() {
        h.write_u8(b.to_ascii_lowercase());
    }
}

fn hash_legacy(h: &mut impl Hasher, fingerprint: &str, method: Method) {
    h.write_u8(2);
    method.hash(h);
    h.write(fingerprint.as_bytes());
}

/// An owned client transaction key (§17.1.3): branch + CSeq method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientMatch {
    /// The branch of the Via we inserted.
    pub branch: Box<str>,
    /// The request method (CANCEL shares the INVITE's branch).
    pub method: Method,
}

/// Borrowed client key for lookups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientView<'a> {
    /// Top Via branch.
    pub branch: &'a str,
    /// CSeq method.
    pub method: Method,
}

impl<'a> ClientView<'a> {
    /// Key of an outgoing request; its branch must carry the magic cookie.
    pub fn of_request(req: &'a Request) -> Result<Self, TransactionError> {
        let via = top_via(&req.headers)?;
        let (_, cseq_method) = cseq(&req.headers)?;
        if cseq_method != req.method {
            return Err(TransactionError::CSeqMethodMismatch);
        }
        call_id(&req.headers)?;
        let branch = via.branch.ok_or(TransactionError::MissingBranch)?;
        if !is_rfc3261_branch(branch) {
            return Err(TransactionError::BranchNotRfc3261);
        }
        Ok(Self {
            branch,
            method: req.method,
        })
    }

    /// Key of an incoming response.
    pub fn of_response(resp: &'a Response) -> Result<Self, TransactionError> {
        let via = top_via(&resp.headers)?;
        let (_, method) = cseq(&resp.headers)?;
        call_id(&resp.headers)?;
        let branch = via.branch.ok_or(TransactionError::MissingBranch)?;
        Ok(Self { branch, method })
    }

    /// Hash with `state`.
    pub fn hash_with(&self, state: &impl BuildHasher) -> u64 {
        let mut h = state.build_hasher();
        h.write_u8(3);
        self.method.hash(&mut h);
        h.write(self.branch.as_bytes());
        h.finish()
    }

    /// Whether the owned key is the same key.
    pub fn matches(&self, owned: &ClientMatch) -> bool {
        self.method == owned.method && self.branch == &*owned.branch
    }

    /// The owned copy.
    pub fn to_owned_key(&self) -> ClientMatch {
        ClientMatch {
            branch: self.branch.into(),
            method: self.method,
        }
    }
}

/// Identity of a response for absorbing retransmitted provisionals: status,
/// To tag, RSeq and body.
pub fn response_fingerprint(resp: &Response, state: &impl BuildHasher) -> u64 {
    let mut h = state.build_hasher();
    h.write_u16(resp.status_code.code());
    let to_tag = to_value(&resp.headers).and_then(tag_param).unwrap_or("");
    h.write(to_tag.as_bytes());
    h.write_u8(0);
    for header in resp.headers.iter() {
        if let Header::RSeq(r) = header {
            h.write(r.value().trim().as_bytes());
        }
    }
    h.write_u8(0);
    h.write(&resp.body);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn via_with_lws_and_params() {
        let v =
            parse_via_value("SIP / 2.0 / UDP  host.example.com:5060 ; branch = z9hG4bKx ;rport")
                .unwrap();
        assert_eq!(v.sent_by, "host.example.com:5060");
        assert_eq!(v.branch, Some("z9hG4bKx"));
    }

    #[test]
    fn via_first_of_comma_list() {
        let raw = "SIP/2.0/UDP 127.0.0.1:5160;branch=z9hG4bK061a.0, SIP/2.0/WS a.invalid;branch=z9hG4bK64";
        let v = parse_via_value(first_value(raw)).unwrap();
        assert_eq!(v.sent_by, "127.0.0.1:5160");
        assert_eq!(v.branch, Some("z9hG4bK061a.0"));
    }

    #[test]
    fn via_two_spaces_and_ipv6() {
        let v = parse_via_value("SIP/2.0/WS  127.0.0.1:8180;branch=z9hG4bKa").unwrap();
        assert_eq!(v.sent_by, "127.0.0.1:8180");
        let v = parse_via_value("SIP/2.0/UDP [2001:db8::9:1]:5070;branch=z9hG4bKb").unwrap();
        assert_eq!(v.sent_by, "[2001:db8::9:1]:5070");
    }

    #[test]
    fn malformed_vias_are_errors() {
        assert_eq!(
            parse_via_value("garbage"),
            Err(TransactionError::MalformedVia)
        );
        assert_eq!(
            parse_via_value("SIP/2.0/UDP"),
            Err(TransactionError::MalformedVia)
        );
        assert_eq!(parse_via_value("SIP/2.0/UDP host").unwrap().branch, None);
        assert_eq!(
            parse_via_value("SIP/2.0/UDP host;branch=").unwrap().branch,
            None
        );
    }

    #[test]
    fn tags() {
        assert_eq!(
            tag_param("\"2000\" <sip:2000@127.0.0.1>;tag=h77m9kfr01"),
            Some("h77m9kfr01")
        );
        assert_eq!(tag_param("sip:a@b;tag=x"), Some("x"));
        assert_eq!(tag_param("<sip:a@b;tag=uri-param>"), None);
        assert_eq!(tag_param("<sip:a@b>"), None);
    }
}
