//! Turning untrusted bytes into a checked SIP message.
//!
//! rsip does the grammar; this module does what it does not: framing by
//! Content-Length, LF-only line endings, the size limit, mandatory headers
//! and the checks RFC 3261 §16.3 asks of a proxy. When the input is too
//! broken for rsip we still try to recover the few raw header lines needed to
//! answer a request with 400 (RFC 3261 §8.2.6), so the sender learns why.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::rsip::{self, prelude::*};

/// Why a message was refused. The text is fit for a 400 reason phrase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Larger than the transport's limit.
    #[error("Message Too Large")]
    TooLarge,
    /// Nothing but whitespace (keepalives are handled before parsing).
    #[error("Empty Message")]
    Empty,
    /// No blank line between headers and body.
    #[error("Missing End Of Headers")]
    NoHeaderEnd,
    /// A byte sequence that is not valid in a SIP head.
    #[error("Invalid Characters In Header")]
    BadCharacters,
    /// Content-Length is not a number.
    #[error("Bad Content-Length")]
    BadContentLength,
    /// Content-Length promises more body than arrived.
    #[error("Content-Length Larger Than Body")]
    Truncated,
    /// rsip rejected the grammar.
    #[error("Malformed {0}")]
    Grammar(String),
    /// A mandatory header is absent.
    #[error("Missing {0} Header")]
    Missing(&'static str),
    /// A mandatory header is present but unusable.
    #[error("Bad {0} Header")]
    BadHeader(&'static str),
    /// The CSeq method differs from the request method.
    #[error("CSeq Method Does Not Match")]
    CseqMismatch,
    /// Not SIP/2.0.
    #[error("Unsupported SIP Version")]
    Version,
}

impl ParseError {
    /// The SIP status code that answers this error.
    pub fn status(&self) -> u16 {
        match self {
            ParseError::TooLarge => 513,
            ParseError::Version => 505,
            _ => 400,
        }
    }
}

/// A message that passed the checks, with the raw facts callers need often.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The parsed message.
    pub msg: rsip::SipMessage,
    /// Call-ID value (trimmed).
    pub call_id: String,
    /// CSeq sequence number.
    pub cseq: u32,
    /// CSeq method.
    pub cseq_method: rsip::Method,
    /// Branch of the top Via, if any.
    pub branch: Option<String>,
}

/// A refused message, and the raw header lines that allow answering it.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Why it was refused.
    pub error: ParseError,
    /// For a request whose Via/From/To/Call-ID/CSeq lines could be found:
    /// those lines, in order, so a 400 can be built from them.
    pub reply_headers: Option<Vec<(String, String)>>,
}

/// Parses and checks one SIP message (one datagram or one WebSocket message).
pub fn parse(data: &[u8], max_size: usize) -> Result<Checked, Box<Refused>> {
    parse_inner(data, max_size).map_err(|error| {
        let reply_headers = if matches!(error, ParseError::Empty) {
            None
        } else {
            // Only the head is scanned, so an oversized body costs nothing here.
            reply_headers(&data[..data.len().min(16 * 1024)])
        };
        Box::new(Refused {
            error,
            reply_headers,
        })
    })
}

fn parse_inner(data: &[u8], max_size: usize) -> Result<Checked, ParseError> {
    if data.len() > max_size {
        return Err(ParseError::TooLarge);
    }
    let start = data
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .ok_or(ParseError::Empty)?;
    let data = &data[start..];
    let (head, body) = split_head(data).ok_or(ParseError::NoHeaderEnd)?;
    if memchr::memchr(0, head).is_some() || (!head.is_ascii() && !is_utf8(head)) {
        return Err(ParseError::BadCharacters);
    }
    let head = normalize_line_endings(head);
    let body = match content_length(&head)? {
        Some(cl) if cl > body.len() => return Err(ParseError::Truncated),
        // RFC 3261 §18.3: octets beyond Content-Length are discarded.
        Some(cl) => &body[..cl],
        None => body,
    };
    let mut raw = Vec::with_capacity(head.len() + 4 + body.len());
    raw.extend_from_slice(&head);
    raw.extend_from_slice(b"\r\n\r\n");
    raw.extend_from_slice(body);

    // A third-party parser on hostile input: a panic must cost one message,
    // not the process.
    let parsed = catch_unwind(AssertUnwindSafe(|| rsip::SipMessage::try_from(raw)))
        .map_err(|_| ParseError::Grammar("Message".into()))?
        .map_err(|e| ParseError::Grammar(grammar_context(&e.to_string())))?;
    check(parsed)
}

fn is_utf8(b: &[u8]) -> bool {
    std::str::from_utf8(b).is_ok()
}

/// Splits at the first empty line (CRLFCRLF, or LFLF from sloppy senders).
fn split_head(data: &[u8]) -> Option<(&[u8], &[u8])> {
    for i in memchr::memchr_iter(b'\n', data) {
        let head_end = if i > 0 && data[i - 1] == b'\r' {
            i - 1
        } else {
            i
        };
        // "\n\n" or "\n\r\n" ends the head.
        match (data.get(i + 1), data.get(i + 2)) {
            (Some(b'\n'), _) => return Some((&data[..head_end], &data[i + 2..])),
            (Some(b'\r'), Some(b'\n')) => return Some((&data[..head_end], &data[i + 3..])),
            _ => {}
        }
    }
    None
}

/// Rewrites bare LF line endings in the head as CRLF (rsip wants CRLF);
/// borrowed when there is none (the usual case).
fn normalize_line_endings(head: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let bare = |i: usize| i == 0 || head[i - 1] != b'\r';
    if !memchr::memchr_iter(b'\n', head).any(bare) {
        return std::borrow::Cow::Borrowed(head);
    }
    let mut out = Vec::with_capacity(head.len() + 32);
    let mut prev = 0u8;
    for &b in head {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    std::borrow::Cow::Owned(out)
}

/// The Content-Length value, from the full or compact (`l`) header name.
/// `head` has CRLF line endings only (see [`normalize_line_endings`]).
fn content_length(head: &[u8]) -> Result<Option<usize>, ParseError> {
    let text = std::str::from_utf8(head).map_err(|_| ParseError::BadCharacters)?;
    let mut found = None;
    // The lines after the start line: every LF ends one (its CR dropped), as
    // splitting at CRLF would.
    let mut start = match memchr::memchr(b'\n', head) {
        Some(i) => i + 1,
        None => return Ok(None),
    };
    loop {
        let end = memchr::memchr(b'\n', &head[start..]).map(|i| start + i);
        let line = &text[start..end.map_or(text.len(), |e| e - 1)];
        // Only a line whose name starts with c or l can be Content-Length.
        if line
            .trim_start()
            .as_bytes()
            .first()
            .is_some_and(|b| matches!(b, b'c' | b'C' | b'l' | b'L'))
            && let Some((name, value)) = line.split_once(':')
        {
            let name = name.trim();
            if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
                let v = value.trim();
                if v.is_empty() || v.len() > 9 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ParseError::BadContentLength);
                }
                let n: usize = v.parse().map_err(|_| ParseError::BadContentLength)?;
                if found.is_some_and(|f| f != n) {
                    return Err(ParseError::BadContentLength);
                }
                found = Some(n);
            }
        }
        match end {
            Some(e) => start = e + 1,
            None => return Ok(found),
        }
    }
}

/// A short, safe context for rsip's error text (never echo input verbatim).
fn grammar_context(e: &str) -> String {
    let lower = e.to_ascii_lowercase();
    for (needle, what) in [
        ("via", "Via"),
        ("cseq", "CSeq"),
        ("uri", "Request-URI"),
        ("version", "Start Line"),
        ("status", "Status Line"),
        ("method", "Method"),
        ("header", "Header"),
    ] {
        if lower.contains(needle) {
            return what.to_owned();
        }
    }
    "Message".to_owned()
}

/// Mandatory headers and the proxy's §16.3 checks.
fn check(msg: rsip::SipMessage) -> Result<Checked, ParseError> {
    let version = match &msg {
        rsip::SipMessage::Request(r) => &r.version,
        rsip::SipMessage::Response(r) => &r.version,
    };
    if *version != rsip::Version::V2 {
        return Err(ParseError::Version);
    }
    let headers = match &msg {
        rsip::SipMessage::Request(r) => &r.headers,
        rsip::SipMessage::Response(r) => &r.headers,
    };
    let mut via = None;
    let (mut from, mut to, mut call_id, mut cseq) = (false, false, None, None);
    for h in headers.iter() {
        match h {
            rsip::Header::Via(v) if via.is_none() => via = Some(v),
            rsip::Header::From(_) => from = true,
            rsip::Header::To(_) => to = true,
            rsip::Header::CallId(c) if call_id.is_none() => call_id = Some(c),
            rsip::Header::CSeq(c) if cseq.is_none() => cseq = Some(c),
            _ => {}
        }
    }
    let via = via.ok_or(ParseError::Missing("Via"))?;
    if !from {
        return Err(ParseError::Missing("From"));
    }
    if !to {
        return Err(ParseError::Missing("To"));
    }
    let call_id = call_id.ok_or(ParseError::Missing("Call-ID"))?;
    let call_id = call_id.value().trim().to_owned();
    if call_id.is_empty() {
        return Err(ParseError::BadHeader("Call-ID"));
    }
    let cseq = cseq
        .ok_or(ParseError::Missing("CSeq"))?
        .typed()
        .map_err(|_| ParseError::BadHeader("CSeq"))?;
    let typed_via = via.typed().map_err(|_| ParseError::BadHeader("Via"))?;
    let branch = typed_via.branch().map(|b| b.to_string());
    if let rsip::SipMessage::Request(r) = &msg {
        if cseq.method != r.method {
            return Err(ParseError::CseqMismatch);
        }
        if branch.as_deref().is_none_or(str::is_empty) {
            // Without a branch neither transactions nor loops can be told
            // apart; every real client since 2002 sends one.
            return Err(ParseError::BadHeader("Via"));
        }
        if let Some(mf) = r
            .headers
            .iter()
            .find(|h| matches!(h, rsip::Header::MaxForwards(_)))
            && mf.value().trim().parse::<u8>().is_err()
        {
            return Err(ParseError::BadHeader("Max-Forwards"));
        }
    }
    Ok(Checked {
        call_id,
        cseq: cseq.seq,
        cseq_method: cseq.method,
        branch,
        msg,
    })
}

/// Raw Via/From/To/Call-ID/CSeq lines of a request, for answering it with
/// 400 when the typed parse failed. `None` for responses and when any of the
/// five is missing (then the message is only dropped and counted).
fn reply_headers(data: &[u8]) -> Option<Vec<(String, String)>> {
    let (head, _) = split_head(data).unwrap_or((data, &[]));
    let text = String::from_utf8_lossy(head);
    let mut lines = text.lines();
    let first = lines.next()?.trim();
    let parts: Vec<&str> = first.split_whitespace().collect();
    if parts.len() != 3 || first.starts_with("SIP/") || !parts[2].starts_with("SIP/") {
        return None;
    }
    let mut out: Vec<(String, String)> = Vec::new();
    let mut seen = [false; 5];
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let canonical = match name.trim().to_ascii_lowercase().as_str() {
            "via" | "v" => (0, "Via"),
            "from" | "f" => (1, "From"),
            "to" | "t" => (2, "To"),
            "call-id" | "i" => (3, "Call-ID"),
            "cseq" => (4, "CSeq"),
            _ => continue,
        };
        let value = value.trim();
        if value.is_empty()
            || value.len() > 1024
            || value.chars().any(|c| c.is_control() && c != '\t')
        {
            return None;
        }
        seen[canonical.0] = true;
        out.push((canonical.1.to_owned(), value.to_owned()));
    }
    seen.iter().all(|s| *s).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: &str = "OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>\r\nCall-ID: abc\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn good_options() {
        let c = parse(OPTIONS.as_bytes(), 65535).unwrap();
        assert_eq!(c.call_id, "abc");
        assert_eq!(c.cseq, 1);
        assert_eq!(c.branch.as_deref(), Some("z9hG4bK-1"));
    }

    #[test]
    fn lf_only_is_accepted() {
        let lf = OPTIONS.replace("\r\n", "\n");
        assert!(parse(lf.as_bytes(), 65535).is_ok());
    }

    #[test]
    fn leading_crlf_is_skipped() {
        let m = format!("\r\n{OPTIONS}");
        assert!(parse(m.as_bytes(), 65535).is_ok());
    }

    #[test]
    fn too_large() {
        let e = parse(OPTIONS.as_bytes(), 10).unwrap_err();
        assert_eq!(e.error, ParseError::TooLarge);
        assert_eq!(e.error.status(), 513);
        assert!(e.reply_headers.is_some());
    }

    #[test]
    fn truncated_body_is_refused_with_reply_headers() {
        let m = OPTIONS.replace("Content-Length: 0", "Content-Length: 50");
        let e = parse(m.as_bytes(), 65535).unwrap_err();
        assert_eq!(e.error, ParseError::Truncated);
        assert_eq!(e.reply_headers.unwrap().len(), 5);
    }

    #[test]
    fn extra_body_is_cut_to_content_length() {
        let m = format!("{}junk", OPTIONS);
        let c = parse(m.as_bytes(), 65535).unwrap();
        match c.msg {
            rsip::SipMessage::Request(r) => assert!(r.body.is_empty()),
            _ => panic!(),
        }
    }

    #[test]
    fn missing_call_id() {
        let m = OPTIONS.replace("Call-ID: abc\r\n", "");
        let e = parse(m.as_bytes(), 65535).unwrap_err();
        assert_eq!(e.error, ParseError::Missing("Call-ID"));
        assert!(e.reply_headers.is_none());
    }

    #[test]
    fn cseq_mismatch() {
        let m = OPTIONS.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
        assert_eq!(
            parse(m.as_bytes(), 65535).unwrap_err().error,
            ParseError::CseqMismatch
        );
    }

    #[test]
    fn bad_max_forwards() {
        let m = OPTIONS.replace("Max-Forwards: 70", "Max-Forwards: lots");
        assert!(parse(m.as_bytes(), 65535).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let base = OPTIONS.as_bytes();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut m = base.to_vec();
            for _ in 0..(seed % 6 + 1) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let pos = (seed as usize) % m.len();
                match seed % 3 {
                    0 => m[pos] = (seed >> 8) as u8,
                    1 => {
                        m.remove(pos);
                    }
                    _ => m.insert(pos, b":;,<>\"\r\n @"[(seed >> 16) as usize % 10]),
                }
            }
            let _ = parse(&m, 65535);
        }
    }

    #[test]
    fn real_fixtures_parse() {
        // Beside the checkout, or at /work/shared for a clone elsewhere.
        let beside =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/sip");
        let dir = if beside.is_dir() {
            beside
        } else {
            std::path::PathBuf::from("/work/shared/fixtures/sip")
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "fixtures missing at {}",
                dir.display()
            );
            eprintln!("skipped: no fixtures at {}", dir.display());
            return;
        };
        let mut n = 0;
        for e in entries.flatten() {
            let data = std::fs::read(e.path()).unwrap();
            if let Err(r) = parse(&data, 65535) {
                panic!("{}: {:?}", e.path().display(), r.error);
            }
            n += 1;
        }
        assert!(n > 20);
    }
}
