//! Building responses to a request (RFC 3261 §8.2.6.2).

use rsipstack::rsip::{self, Header};
use sha2::{Digest, Sha256};

/// A response to `req` with `status`: Via, From, To (tag added if absent), Call-ID and
/// CSeq copied, then `extra` headers, then `Content-Length: 0`.
pub fn make_response(req: &rsip::Request, status: u16, extra: Vec<Header>) -> rsip::Response {
    let mut headers = rsip::Headers::default();
    let mut call_id = "";
    let mut from = "";
    for h in req.headers.iter() {
        match h {
            Header::CallId(c) => call_id = c.value(),
            Header::From(f) => from = f.value(),
            _ => {}
        }
    }
    for h in req.headers.iter() {
        match h {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(h.clone())
            }
            Header::To(t) => {
                let v = t.value();
                if status > 100 && !has_tag(v) {
                    headers.push(Header::To(
                        format!("{v};tag={}", to_tag(call_id, from)).into(),
                    ));
                } else {
                    headers.push(h.clone());
                }
            }
            _ => {}
        }
    }
    for h in extra {
        headers.push(h);
    }
    headers.push(Header::ContentLength("0".into()));
    rsip::Response {
        status_code: rsip::StatusCode::from(status),
        wire_reason: None,
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// True when a To/From value carries a `tag` header parameter (outside the `<>`).
fn has_tag(v: &str) -> bool {
    let params = match v.rfind('>') {
        Some(i) => v.get(i..).unwrap_or(""),
        None => v,
    };
    params
        .split(';')
        .skip(1)
        .any(|p| p.trim().to_ascii_lowercase().starts_with("tag="))
}

/// A stable To tag for a REGISTER dialog-less exchange: same request, same tag, so that
/// retransmitted responses are identical.
fn to_tag(call_id: &str, from: &str) -> String {
    let mut h = Sha256::new();
    h.update(call_id.as_bytes());
    h.update([0u8]);
    h.update(from.as_bytes());
    hex::encode(h.finalize().get(..6).unwrap_or(&[]))
}
