//! A small SIP message reader and request builder: just what a user agent
//! needs to run REGISTER and INVITE dialogs, and cheap, because the load
//! generator shares the machine with the system it measures.

use std::fmt::Write as _;

/// A parsed SIP request or response.
#[derive(Debug, Clone)]
pub struct Message {
    /// The start line (`INVITE sip:... SIP/2.0` or `SIP/2.0 200 OK`).
    pub start: String,
    headers: Vec<(String, String)>,
    /// The body, possibly empty.
    pub body: String,
}

fn long_name(name: &str) -> &str {
    match name {
        "v" | "V" => "via",
        "f" | "F" => "from",
        "t" | "T" => "to",
        "i" | "I" => "call-id",
        "m" | "M" => "contact",
        "l" | "L" => "content-length",
        "c" | "C" => "content-type",
        "k" | "K" => "supported",
        _ => name,
    }
}

/// Splits a header value at commas that are outside quotes and `<...>`.
fn split_top_level(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut start) = (false, false, 0);
    for (i, c) in value.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '<' if !quoted => angle = true,
            '>' if !quoted => angle = false,
            ',' if !quoted && !angle => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|v| !v.is_empty());
    out
}

impl Message {
    /// Parses one message; `None` when it is not SIP at all.
    pub fn parse(text: &str) -> Option<Message> {
        let (head, body) = match text.find("\r\n\r\n") {
            Some(i) => (&text[..i], &text[i + 4..]),
            None => (text, ""),
        };
        let mut lines = head.split("\r\n");
        let start = lines.next()?.trim().to_string();
        if !start.contains("SIP/2.0") {
            return None;
        }
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                // folded continuation line
                if let Some(last) = headers.last_mut() {
                    last.1.push(' ');
                    last.1.push_str(line.trim());
                }
                continue;
            }
            let (name, value) = line.split_once(':')?;
            headers.push((
                long_name(name.trim()).to_ascii_lowercase(),
                value.trim().to_string(),
            ));
        }
        Some(Message {
            start,
            headers,
            body: body.to_string(),
        })
    }

    /// The status code of a response.
    pub fn status(&self) -> Option<u16> {
        let rest = self.start.strip_prefix("SIP/2.0 ")?;
        rest.get(..3)?.parse().ok()
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&str> {
        if self.start.starts_with("SIP/2.0") {
            return None;
        }
        self.start.split(' ').next()
    }

    /// The Request-URI of a request.
    pub fn request_uri(&self) -> Option<&str> {
        self.method()?;
        self.start.split(' ').nth(1)
    }

    /// The first value of a header (compact names understood).
    pub fn get(&self, name: &str) -> Option<&str> {
        let name = long_name(name).to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, comma-separated values split apart, in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        let name = long_name(name).to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(n, _)| *n == name)
            .flat_map(|(_, v)| split_top_level(v))
            .collect()
    }

    /// Every header line as received, in order (for copying into responses).
    pub fn header_lines(&self, name: &str) -> impl Iterator<Item = &str> {
        let name = long_name(name).to_ascii_lowercase();
        self.headers
            .iter()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let (n, m) = self.get("cseq")?.split_once(' ')?;
        Some((n.trim().parse().ok()?, m.trim()))
    }

    /// The `tag` parameter of To.
    pub fn to_tag(&self) -> Option<&str> {
        param(self.get("to")?, "tag")
    }

    /// The Record-Route URIs in order, with their `<>`.
    pub fn record_routes(&self) -> Vec<String> {
        self.all("record-route")
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// The URI of the first Contact, without `<>`.
    pub fn contact_uri(&self) -> Option<String> {
        let c = self.get("contact")?;
        Some(match (c.find('<'), c.find('>')) {
            (Some(a), Some(b)) if a < b => c[a + 1..b].to_string(),
            _ => c.split(';').next()?.trim().to_string(),
        })
    }
}

/// A `;name=value` parameter of a header value (outside `<...>`).
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let after_uri = match value.find('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    after_uri.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A random token for tags, branches and Call-IDs.
pub fn token(len: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Builds a request: start line, the given headers in order, Content-Length
/// and the body.
pub fn request(method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut s = String::with_capacity(512 + body.len());
    let _ = write!(s, "{method} {uri} SIP/2.0\r\n");
    for (n, v) in headers {
        let _ = write!(s, "{n}: {v}\r\n");
    }
    let _ = write!(s, "Content-Length: {}\r\n\r\n{body}", body.len());
    s
}

/// Builds a response to `req`: its Vias, From, Call-ID and CSeq copied, To
/// with `to_tag` added when it has none, then `extra` headers and the body.
pub fn response(
    req: &Message,
    code: u16,
    reason: &str,
    to_tag: Option<&str>,
    extra: &[(&str, &str)],
    body: &str,
) -> String {
    let mut s = String::with_capacity(512 + body.len());
    let _ = write!(s, "SIP/2.0 {code} {reason}\r\n");
    for v in req.header_lines("via") {
        let _ = write!(s, "Via: {v}\r\n");
    }
    if let Some(f) = req.get("from") {
        let _ = write!(s, "From: {f}\r\n");
    }
    if let Some(t) = req.get("to") {
        match to_tag {
            Some(tag) if req.to_tag().is_none() => {
                let _ = write!(s, "To: {t};tag={tag}\r\n");
            }
            _ => {
                let _ = write!(s, "To: {t}\r\n");
            }
        }
    }
    for n in ["call-id", "cseq"] {
        if let Some(v) = req.get(n) {
            let _ = write!(
                s,
                "{}: {v}\r\n",
                if n == "cseq" { "CSeq" } else { "Call-ID" }
            );
        }
    }
    for (n, v) in extra {
        let _ = write!(s, "{n}: {v}\r\n");
    }
    let _ = write!(s, "Content-Length: {}\r\n\r\n{body}", body.len());
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &str = "INVITE sip:1001@127.0.0.1 SIP/2.0\r\n\
        v: SIP/2.0/WSS abc.invalid;branch=z9hG4bK1\r\n\
        Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK2, SIP/2.0/UDP 127.0.0.2;branch=z9hG4bK3\r\n\
        From: \"A, B\" <sip:2000@127.0.0.1>;tag=ft\r\n\
        To: <sip:1001@127.0.0.1>\r\n\
        Call-ID: c1\r\n\
        CSeq: 2 INVITE\r\n\
        Record-Route: <sip:127.0.0.1;lr;a=1,2>, <sip:127.0.0.1:5060;lr>\r\n\
        Contact: <sip:x@y.invalid;transport=ws>;+sip.ice\r\n\
        Content-Length: 4\r\n\r\nv=0\n";

    #[test]
    fn reads_headers_compact_forms_and_lists() {
        let m = Message::parse(INVITE).unwrap();
        assert_eq!(m.method(), Some("INVITE"));
        assert_eq!(m.request_uri(), Some("sip:1001@127.0.0.1"));
        assert_eq!(m.all("via").len(), 3);
        assert_eq!(m.cseq(), Some((2, "INVITE")));
        assert_eq!(m.to_tag(), None);
        assert_eq!(
            m.record_routes(),
            vec!["<sip:127.0.0.1;lr;a=1,2>", "<sip:127.0.0.1:5060;lr>"]
        );
        assert_eq!(
            m.contact_uri().as_deref(),
            Some("sip:x@y.invalid;transport=ws")
        );
        assert_eq!(param(m.get("from").unwrap(), "tag"), Some("ft"));
        assert_eq!(m.body, "v=0\n");
    }

    #[test]
    fn response_copies_vias_and_adds_the_tag() {
        let m = Message::parse(INVITE).unwrap();
        let r = Message::parse(&response(&m, 200, "OK", Some("tt"), &[], "")).unwrap();
        assert_eq!(r.status(), Some(200));
        assert_eq!(r.all("via").len(), 3);
        assert_eq!(r.to_tag(), Some("tt"));
        assert_eq!(r.get("call-id"), Some("c1"));
    }

    #[test]
    fn not_sip_and_garbage_do_not_parse() {
        assert!(Message::parse("GET / HTTP/1.1\r\n\r\n").is_none());
        assert!(Message::parse("SIP/2.0 200 OK\r\nno colon here\r\n\r\n").is_none());
        let r = Message::parse("SIP/2.0 2x OK\r\n\r\n").unwrap();
        assert_eq!(r.status(), None);
    }

    #[test]
    fn request_has_content_length() {
        let r = request("OPTIONS", "sip:a", &[("Call-ID", "x")], "ab");
        assert!(r.ends_with("Content-Length: 2\r\n\r\nab"));
        assert!(r.starts_with("OPTIONS sip:a SIP/2.0\r\n"));
    }
}
