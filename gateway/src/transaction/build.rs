//! Building the messages a transaction layer and a proxy derive from others:
//! CANCEL (§9.1), ACK for a non-2xx final (§17.1.1.3), locally generated
//! responses (§8.2.6), and the wire encoding that keeps a custom reason
//! phrase.
//!
//! # Reason phrases
//!
//! rsip's `Response::to_bytes` always writes the standard phrase of a known
//! status code; `Response::wire_reason` (set by the parser for non-standard
//! phrases) is never serialized. [`make_response`] stores a custom phrase in
//! `wire_reason` and [`encode_response`] (used by the transaction layer for
//! every response it sends) writes `wire_reason` when present, so both
//! locally built and relayed responses keep their phrase. Shells that send a
//! response outside a transaction should use [`encode_response`] too.
//! (The other way, `StatusCode::Other(code, phrase)`, also serializes the
//! phrase but breaks `==` against the named variants.)

use bytes::Bytes;

use crate::rsip::{self, Header, Headers, Method, Request, Response, StatusCode};

use super::error::TransactionError;
use super::key::{cseq, first_value, tag_param};

/// A response to `req` (§8.2.6.2): all Vias, From, To (with `to_tag` added
/// when the request's To has none), Call-ID, CSeq, Timestamp for 100;
/// `Content-Length: 0`. `reason` replaces the standard phrase (CR, LF and
/// other control characters are dropped).
pub fn make_response(
    req: &Request,
    status: impl Into<StatusCode>,
    reason: Option<&str>,
    to_tag: Option<&str>,
) -> Response {
    let status_code = status.into();
    let is_trying = status_code.code() == 100;
    let mut headers = Headers::default();
    for h in req.headers.iter() {
        match h {
            Header::Via(_) | Header::From(_) | Header::CallId(_) | Header::CSeq(_) => {
                headers.push(h.clone())
            }
            // §8.2.6.1: a 100 echoes the Timestamp.
            Header::Timestamp(_) if is_trying => headers.push(h.clone()),
            Header::To(to) => {
                let value = to.value();
                let header = match to_tag {
                    Some(tag) if tag_param(value).is_none() && !tag.is_empty() => {
                        rsip::headers::To::new(format!("{};tag={tag}", value.trim_end()))
                    }
                    _ => to.clone(),
                };
                headers.push(Header::To(header));
            }
            _ => {}
        }
    }
    headers.push(Header::ContentLength(rsip::headers::ContentLength::new(
        "0",
    )));
    let wire_reason = reason
        .map(|r| r.chars().filter(|c| !c.is_control()).collect::<String>())
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty() && r != status_code.text());
    Response {
        status_code,
        wire_reason,
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

fn find(headers: &Headers, pick: impl Fn(&Header) -> bool) -> Option<&Header> {
    headers.iter().find(|h| pick(h))
}

fn required<'a>(
    headers: &'a Headers,
    name: &'static str,
    pick: impl Fn(&Header) -> bool,
) -> Result<&'a Header, TransactionError> {
    find(headers, pick).ok_or(TransactionError::MissingHeader(name))
}

fn top_via_header(req: &Request) -> Result<Header, TransactionError> {
    let raw = req
        .headers
        .iter()
        .find_map(|h| match h {
            Header::Via(v) => Some(v.value()),
            _ => None,
        })
        .ok_or(TransactionError::MissingVia)?;
    Ok(Header::Via(rsip::headers::Via::new(first_value(raw))))
}

/// The skeleton shared by CANCEL and ACK: top Via only, Route set, fresh
/// Max-Forwards, From, To, Call-ID, CSeq with `method`.
fn derived_request(req: &Request, method: Method, to: Header) -> Result<Request, TransactionError> {
    let (num, _) = cseq(&req.headers)?;
    let via = top_via_header(req)?;
    let from = required(&req.headers, "From", |h| matches!(h, Header::From(_)))?.clone();
    let call_id = required(&req.headers, "Call-ID", |h| matches!(h, Header::CallId(_)))?.clone();
    let mut headers = Headers::default();
    headers.push(via);
    for h in req.headers.iter() {
        if matches!(h, Header::Route(_)) {
            headers.push(h.clone());
        }
    }
    headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
    headers.push(from);
    headers.push(to);
    headers.push(call_id);
    headers.push(Header::CSeq(rsip::headers::CSeq::new(format!(
        "{num} {method}"
    ))));
    headers.push(Header::ContentLength(rsip::headers::ContentLength::new(
        "0",
    )));
    Ok(Request {
        method,
        uri: req.uri.clone(),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    })
}

/// A CANCEL for `original` (§9.1): same Request-URI, Call-ID, From, To and
/// CSeq number, only the top Via (so the branch matches), the same Route
/// set, Max-Forwards 70, no body.
pub fn build_cancel(original: &Request) -> Result<Request, TransactionError> {
    let to = required(&original.headers, "To", |h| matches!(h, Header::To(_)))?.clone();
    derived_request(original, Method::Cancel, to)
}

/// The ACK a client INVITE transaction sends for a non-2xx final
/// (§17.1.1.3): like [`build_cancel`] but with the response's To (its tag)
/// and CSeq method ACK.
pub fn build_ack_for_non2xx(
    request: &Request,
    response: &Response,
) -> Result<Request, TransactionError> {
    let to = required(&response.headers, "To", |h| matches!(h, Header::To(_)))?.clone();
    derived_request(request, Method::Ack, to)
}

/// Wire bytes of a request.
pub fn encode_request(req: &Request) -> Bytes {
    use std::fmt::Write as _;
    // Not `req.to_bytes()`: rsip would escape the Request-URI's user again.
    let mut head = String::with_capacity(head_capacity(&req.headers));
    let _ = write!(
        head,
        "{} {} {}\r\n",
        req.method,
        crate::sip::user::uri_text(&req.uri),
        req.version
    );
    Bytes::from(finish(head, &req.headers, &req.body))
}

/// Wire bytes of a response, writing `wire_reason` when set (see the module
/// docs).
pub fn encode_response(resp: &Response) -> Bytes {
    use std::fmt::Write as _;
    let reason = resp
        .wire_reason
        .as_deref()
        .unwrap_or_else(|| resp.status_code.text());
    let mut head = String::with_capacity(head_capacity(&resp.headers));
    let _ = write!(
        head,
        "{} {} {reason}\r\n",
        resp.version,
        resp.status_code.code()
    );
    Bytes::from(finish(head, &resp.headers, &resp.body))
}

/// Room for the start line and every header line.
fn head_capacity(headers: &Headers) -> usize {
    96 + headers
        .iter()
        .map(|h| h.name().len() + h.value().len() + 4)
        .sum::<usize>()
}

/// Appends the header lines (`Name: value`, what rsip's `Display` writes for
/// every header, without its string per header and join), the empty line
/// and the body.
fn finish(head: String, headers: &Headers, body: &[u8]) -> Vec<u8> {
    let mut buf = head.into_bytes();
    buf.reserve(headers.iter().count() * 4 + 2 + body.len());
    for h in headers.iter() {
        buf.extend_from_slice(h.name().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(h.value().as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(b"\r\n");
    buf.extend_from_slice(body);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rsip::prelude::*;

    const INVITE: &str = concat!(
        "INVITE sip:1001@127.0.0.1:5180 SIP/2.0\r\n",
        "Via: SIP/2.0/UDP 127.0.0.1:5160;branch=z9hG4bKabc, SIP/2.0/WS x.invalid;branch=z9hG4bK1\r\n",
        "Via: SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKdef\r\n",
        "Route: <sip:pbx.example.com;lr>\r\n",
        "Route: <sip:pbx2.example.com;lr>\r\n",
        "To: <sip:1001@127.0.0.1>\r\n",
        "From: \"2000\" <sip:2000@127.0.0.1>;tag=h77m9kfr01\r\n",
        "CSeq: 2 INVITE\r\n",
        "Call-ID: cid\r\n",
        "Max-Forwards: 69\r\n",
        "Timestamp: 54\r\n",
        "Content-Type: application/sdp\r\n",
        "Content-Length: 4\r\n",
        "\r\n",
        "v=0\n"
    );

    fn invite() -> Request {
        Request::try_from(INVITE).unwrap()
    }

    #[test]
    fn cancel_per_9_1() {
        let c = build_cancel(&invite()).unwrap();
        let text = String::from_utf8(c.to_bytes()).unwrap();
        assert!(
            text.starts_with("CANCEL sip:1001@127.0.0.1:5180 SIP/2.0\r\n"),
            "{text}"
        );
        assert_eq!(
            c.headers
                .iter()
                .filter(|h| matches!(h, Header::Via(_)))
                .count(),
            1
        );
        assert_eq!(
            c.via_header().unwrap().value(),
            "SIP/2.0/UDP 127.0.0.1:5160;branch=z9hG4bKabc"
        );
        assert_eq!(c.route_headers().len(), 2);
        assert_eq!(c.cseq_header().unwrap().value(), "2 CANCEL");
        assert_eq!(c.max_forwards_header().unwrap().value(), "70");
        assert_eq!(c.to_header().unwrap().value(), "<sip:1001@127.0.0.1>");
        assert!(text.contains("Content-Length: 0\r\n"));
        assert!(c.body.is_empty());
        // It parses back.
        Request::try_from(text.as_str()).unwrap();
    }

    #[test]
    fn ack_takes_the_response_to_tag() {
        let resp = make_response(&invite(), 486, None, Some("t1"));
        let ack = build_ack_for_non2xx(&invite(), &resp).unwrap();
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(
            ack.to_header().unwrap().value(),
            "<sip:1001@127.0.0.1>;tag=t1"
        );
        assert_eq!(ack.cseq_header().unwrap().value(), "2 ACK");
        assert_eq!(ack.route_headers().len(), 2);
    }

    #[test]
    fn response_copies_and_tags() {
        let r = make_response(&invite(), 100, None, None);
        let text = String::from_utf8(encode_response(&r).to_vec()).unwrap();
        assert!(text.starts_with("SIP/2.0 100 Trying\r\n"), "{text}");
        assert_eq!(
            r.headers
                .iter()
                .filter(|h| matches!(h, Header::Via(_)))
                .count(),
            2
        );
        assert!(text.contains("Timestamp: 54\r\n"));
        assert!(text.ends_with("Content-Length: 0\r\n\r\n"));
        assert!(!text.contains("tag=\r\n"));

        let r = make_response(&invite(), 480, Some("Gone\r\nX: fishing"), Some("abc"));
        let text = String::from_utf8(encode_response(&r).to_vec()).unwrap();
        assert!(text.starts_with("SIP/2.0 480 GoneX: fishing\r\n"), "{text}");
        assert!(text.contains("To: <sip:1001@127.0.0.1>;tag=abc\r\n"));
        assert!(!text.contains("Timestamp"));
        let back = Response::try_from(text.as_str()).unwrap();
        assert_eq!(back.status_code, StatusCode::TemporarilyUnavailable);
        assert_eq!(back.wire_reason.as_deref(), Some("GoneX: fishing"));
    }

    #[test]
    fn existing_to_tag_is_kept() {
        let mut req = invite();
        req.headers.retain(|h| !matches!(h, Header::To(_)));
        req.headers
            .push(Header::To(rsip::headers::To::new("<sip:a@b>;tag=old")));
        let r = make_response(&req, 200, None, Some("new"));
        assert_eq!(r.to_header().unwrap().value(), "<sip:a@b>;tag=old");
    }

    #[test]
    fn missing_headers_are_errors() {
        let mut req = invite();
        req.headers.retain(|h| !matches!(h, Header::CSeq(_)));
        assert_eq!(build_cancel(&req), Err(TransactionError::MissingCSeq));
        let mut req = invite();
        req.headers.retain(|h| !matches!(h, Header::Via(_)));
        assert_eq!(build_cancel(&req), Err(TransactionError::MissingVia));
    }

    #[test]
    fn encoding_is_what_rsip_displays() {
        let mut req = invite();
        req.headers
            .push(Header::Other("X-Odd".into(), "a: b".into()));
        let expected = format!(
            "{} {} {}\r\n{}\r\nv=0\n",
            req.method, req.uri, req.version, req.headers
        );
        assert_eq!(&encode_request(&req)[..], expected.as_bytes());
        let resp = make_response(&req, 486, Some("Busy Here Now"), Some("t1"));
        let expected = format!("SIP/2.0 486 Busy Here Now\r\n{}\r\n", resp.headers);
        assert_eq!(&encode_response(&resp)[..], expected.as_bytes());
        let bare = Response {
            headers: Headers::default(),
            ..resp
        };
        assert_eq!(
            &encode_response(&bare)[..],
            b"SIP/2.0 486 Busy Here Now\r\n\r\n"
        );
    }
}
