//! SIP message helpers around rsip (`rsipstack::rsip`): parsing with sanity
//! checks, building and encoding responses, stamping Via. Kept small so the
//! choice of message crate stays swappable.

pub mod parse;
pub mod user;

use std::net::{IpAddr, SocketAddr};

use crate::rsip::{self, prelude::*};

pub use parse::{Checked, ParseError, Refused, parse};

/// A reason phrase safe to put on a status line.
fn sanitize_reason(r: &str) -> String {
    r.chars()
        .filter(|c| !c.is_control())
        .take(128)
        .collect::<String>()
}

/// An error response (400, 505, 513) built from the raw header lines of a
/// request rsip could not parse.
pub fn error_from_raw(
    code: u16,
    lines: &[(String, String)],
    reason: &str,
    server: &str,
) -> Vec<u8> {
    let mut out = format!("SIP/2.0 {code} {}\r\n", sanitize_reason(reason));
    for (name, value) in lines {
        if name == "To" && !value.to_ascii_lowercase().contains(";tag=") {
            out.push_str(&format!("To: {value};tag={}\r\n", new_tag()));
        } else {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    if !server.is_empty() {
        out.push_str(&format!("Server: {server}\r\n"));
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

/// A random token for tags and branches (RFC 3261 §19.3: ≥ 32 bits of randomness).
pub fn new_tag() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    format!("{:016x}", rng.random::<u64>())
}

/// Records where a request really came from in its top Via (RFC 3261
/// §18.2.1 `received`, RFC 3581 `rport`), so responses find their way back
/// through NATs.
pub fn stamp_via(req: &mut rsip::Request, peer: SocketAddr) -> Result<(), ParseError> {
    let via = req
        .via_header_mut()
        .map_err(|_| ParseError::Missing("Via"))?;
    let mut typed = via.typed().map_err(|_| ParseError::BadHeader("Via"))?;
    let wants_rport = matches!(typed.rport(), Some(None));
    let sent_by_ip: Option<IpAddr> = match &typed.uri.host_with_port.host {
        rsip::Host::IpAddr(ip) => Some(*ip),
        rsip::Host::Domain(_) => None,
    };
    let mut changed = false;
    if wants_rport {
        typed.params.retain(|p| !matches!(p, rsip::Param::Rport(_)));
        typed.params.push(rsip::Param::Rport(Some(peer.port())));
        changed = true;
    }
    if wants_rport || sent_by_ip != Some(peer.ip()) {
        typed
            .params
            .retain(|p| !matches!(p, rsip::Param::Received(_)));
        typed
            .params
            .push(rsip::Param::Received(rsip::param::Received::new(
                peer.ip().to_string(),
            )));
        changed = true;
    }
    if changed {
        *via = typed.into();
    }
    Ok(())
}

/// Whether a message body is an SDP (Content-Type application/sdp, or no
/// Content-Type and a body that starts like one).
pub fn has_sdp(headers: &rsip::Headers, body: &[u8]) -> bool {
    if body.is_empty() {
        return false;
    }
    let ctype = headers.iter().find_map(|h| match h {
        rsip::Header::ContentType(c) => Some(c.value().to_ascii_lowercase()),
        _ => None,
    });
    match ctype {
        Some(c) => c.trim().starts_with("application/sdp"),
        None => body.starts_with(b"v=0"),
    }
}

/// Replaces a message body and its Content-Length (Content-Type is kept,
/// or removed with an empty body).
pub fn replace_body(headers: &mut rsip::Headers, body: &mut Vec<u8>, new: Vec<u8>) {
    headers.retain(|h| !matches!(h, rsip::Header::ContentLength(_)));
    if new.is_empty() {
        headers.retain(|h| !matches!(h, rsip::Header::ContentType(_)));
    }
    headers.push(rsip::Header::ContentLength(
        rsip::headers::ContentLength::new(new.len().to_string()),
    ));
    *body = new;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(s: &str) -> rsip::Request {
        rsip::Request::try_from(s).unwrap()
    }

    const REQ: &str = "OPTIONS sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5070;branch=z9hG4bK-1;rport\r\nVia: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bK-0\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: abc\r\nCSeq: 7 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn via_gets_received_and_rport() {
        let mut r = req(REQ);
        stamp_via(&mut r, "192.0.2.7:40000".parse().unwrap()).unwrap();
        let v = r.via_header().unwrap().to_string();
        assert!(v.contains("rport=40000"), "{v}");
        assert!(v.contains("received=192.0.2.7"), "{v}");
    }

    #[test]
    fn bad_request_from_raw_lines() {
        let lines = vec![
            (
                "Via".to_string(),
                "SIP/2.0/UDP h;branch=z9hG4bKx".to_string(),
            ),
            ("From".to_string(), "<sip:a@b>;tag=1".to_string()),
            ("To".to_string(), "<sip:c@d>".to_string()),
            ("Call-ID".to_string(), "x".to_string()),
            ("CSeq".to_string(), "1 INVITE".to_string()),
        ];
        let text = String::from_utf8(error_from_raw(400, &lines, "Bad CSeq", "gw")).unwrap();
        assert!(text.starts_with("SIP/2.0 400 Bad CSeq\r\n"));
        assert!(text.contains(";tag="));
    }
}
