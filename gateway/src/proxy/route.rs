//! Route and Record-Route handling (RFC 3261 §16.4, §16.6; RFC 5658 double
//! Record-Route; RFC 5626 flow tokens).
//!
//! rtcgate always inserts two Record-Route entries: one facing the next hop
//! and one facing the previous hop. An entry facing a WebSocket flow carries
//! that flow's token in its user part, so an in-dialog request arriving from
//! either side finds the right flow: after popping our own consecutive Route
//! entries, the *last* one popped faces the next hop; if it carries a flow
//! token the request goes down that flow, otherwise it follows the
//! Request-URI.

use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, SocketAddr};

use crate::rsip;
use crate::transport::{FlowId, Kind};

/// Keyed hashing for flow tokens and loop detection: a per-process random
/// key, so tokens cannot be forged from outside (RFC 5626 §5.2).
#[derive(Clone)]
pub struct Keyed(std::collections::hash_map::RandomState);

impl Default for Keyed {
    fn default() -> Self {
        Self(std::collections::hash_map::RandomState::new())
    }
}

impl Keyed {
    fn mac(&self, parts: &[&[u8]]) -> u64 {
        let mut h = self.0.build_hasher();
        for p in parts {
            h.write(p);
            h.write_u8(0xff);
        }
        h.finish()
    }

    /// The token naming a flow: `f<id>.<mac>`.
    pub fn flow_token(&self, flow: FlowId) -> String {
        let mac = self.mac(&[b"flow", &flow.to_be_bytes()]) & 0xffff_ffff;
        format!("f{flow}.{mac:08x}")
    }

    /// The flow a token names, if the token is authentic.
    pub fn parse_flow_token(&self, token: &str) -> Option<FlowId> {
        let rest = token.strip_prefix('f')?;
        let (id, _) = rest.split_once('.')?;
        let flow: FlowId = id.parse().ok()?;
        (self.flow_token(flow) == token).then_some(flow)
    }

    /// The loop-detection part of a branch (§16.6 step 8): the same request
    /// arriving again unchanged hashes the same.
    pub fn loop_hash(&self, parts: &[&str]) -> String {
        let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
        format!("{:012x}", self.mac(&bytes) & 0xffff_ffff_ffff)
    }
}

/// The addresses under which rtcgate is reachable, per transport.
#[derive(Debug, Clone, Default)]
pub struct Local {
    /// UDP sockets.
    pub udp: Vec<SocketAddr>,
    /// WSS listeners.
    pub wss: Vec<SocketAddr>,
    /// Plain WS listeners.
    pub ws: Vec<SocketAddr>,
    /// Host to advertise instead of the UDP listen address.
    pub advertised_host: Option<String>,
    /// SIP domains served here.
    pub domains: Vec<String>,
}

impl Local {
    /// Whether host:port names this proxy (for Route processing).
    pub fn is_me(&self, host: &str, port: Option<u16>) -> bool {
        let host = strip_brackets(host);
        let ip: Option<IpAddr> = host.parse().ok();
        let addr_match =
            |a: &SocketAddr| ip.is_some_and(|ip| ip == a.ip()) && port.unwrap_or(5060) == a.port();
        self.udp.iter().any(addr_match)
            || self
                .wss
                .iter()
                .chain(self.ws.iter())
                .any(|a| ip.is_some_and(|ip| ip == a.ip()) && port.is_none_or(|p| p == a.port()))
            || self.advertised_host.as_deref().is_some_and(|h| {
                h.eq_ignore_ascii_case(host)
                    && self.udp.iter().any(|a| port.unwrap_or(5060) == a.port())
            })
    }

    /// Whether a host is one of our domains (or our own address).
    pub fn is_our_domain(&self, host: &str) -> bool {
        let host = strip_brackets(host);
        self.domains
            .iter()
            .any(|d| strip_brackets(d).eq_ignore_ascii_case(host))
            || self.is_me(host, None)
            || self.udp.iter().any(|a| a.ip().to_string() == host)
    }

    /// The host:port to write into Via / Record-Route for a transport, as
    /// seen from `toward` (loopback peers get a loopback address).
    pub fn sent_by(&self, kind: Kind, toward: Option<SocketAddr>) -> String {
        let pick = |list: &[SocketAddr]| -> Option<SocketAddr> {
            let family = |a: &&SocketAddr| toward.is_none_or(|t| t.is_ipv4() == a.is_ipv4());
            list.iter().find(family).or(list.first()).copied()
        };
        match kind {
            Kind::Udp => {
                let a = pick(&self.udp);
                match (&self.advertised_host, a) {
                    (Some(h), Some(a)) => format!("{h}:{}", a.port()),
                    (Some(h), None) => h.clone(),
                    (None, Some(a)) => host_port(a),
                    (None, None) => "127.0.0.1".into(),
                }
            }
            Kind::Wss => pick(&self.wss)
                .or(pick(&self.ws))
                .map(host_port)
                .unwrap_or_default(),
            Kind::Ws => pick(&self.ws)
                .or(pick(&self.wss))
                .map(host_port)
                .unwrap_or_default(),
        }
    }
}

fn strip_brackets(h: &str) -> &str {
    h.trim_start_matches('[').trim_end_matches(']')
}

/// `host:port`, with brackets for IPv6.
pub fn host_port(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v4) => {
            let mut out = ipv4_text(*v4.ip());
            out.push(':');
            let mut port = [0u8; 5];
            let mut i = port.len();
            let mut n = v4.port();
            loop {
                i -= 1;
                port[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            port[i..].iter().for_each(|&b| out.push(char::from(b)));
            out
        }
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    }
}

/// Splits a header value holding a comma-separated list of name-addrs,
/// respecting quotes and angle brackets.
pub fn split_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut push = |part: &str| {
        let t = part.trim();
        if !t.is_empty() {
            out.push(t.to_owned());
        }
    };
    if !value.contains(',') {
        push(value);
        return out;
    }
    // Every separator is ASCII, so byte offsets are char boundaries.
    let (mut quoted, mut angle, mut escaped, mut start) = (false, false, false, 0);
    for (i, c) in value.bytes().enumerate() {
        match c {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'<' if !quoted => angle = true,
            b'>' if !quoted => angle = false,
            b',' if !quoted && !angle => {
                push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    push(&value[start..]);
    out
}

/// The URI inside a name-addr (`"x" <sip:...>;p` → `sip:...`), or the
/// addr-spec itself.
pub fn uri_of(name_addr: &str) -> &str {
    match (name_addr.find('<'), name_addr.rfind('>')) {
        (Some(a), Some(b)) if b > a => &name_addr[a + 1..b],
        _ => name_addr.split(';').next().unwrap_or(name_addr).trim(),
    }
}

/// Facts about one URI that routing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriFacts {
    /// The user part, if any.
    pub user: Option<String>,
    /// Host (without brackets).
    pub host: String,
    /// Port, if given.
    pub port: Option<u16>,
    /// `transport` parameter, lower-cased.
    pub transport: Option<String>,
    /// Whether `lr` is present.
    pub lr: bool,
}

/// Parses the facts of a SIP URI; `None` when it is not a sip/sips URI rsip accepts.
pub fn uri_facts(uri: &str) -> Option<UriFacts> {
    let parsed = rsip::Uri::try_from(uri).ok()?;
    Some(facts_of(&parsed))
}

/// The facts of a Route entry's URI and whether it carries our `nm`
/// parameter (see [`is_no_media`]), from one parse.
pub fn route_entry_facts(entry: &str) -> Option<(UriFacts, bool)> {
    let parsed = rsip::Uri::try_from(uri_of(entry)).ok()?;
    Some((facts_of(&parsed), has_no_media_param(&parsed)))
}

/// The facts of a parsed URI.
pub fn facts_of(uri: &rsip::Uri) -> UriFacts {
    let mut transport = None;
    let mut lr = false;
    for p in &uri.params {
        match p {
            rsip::Param::Transport(t) => transport = Some(t.to_string().to_ascii_lowercase()),
            rsip::Param::Lr => lr = true,
            rsip::Param::Other(name, value) => {
                let n = name.to_string().to_ascii_lowercase();
                if n == "transport" {
                    transport = value.as_ref().map(|v| v.to_string().to_ascii_lowercase());
                } else if n == "lr" {
                    lr = true;
                }
            }
            _ => {}
        }
    }
    UriFacts {
        user: uri.auth.as_ref().map(|a| a.user.clone()),
        host: host_text(&uri.host_with_port.host),
        port: uri.host_with_port.port.map(|p| p.value()),
        transport,
        lr,
    }
}

/// A URI host as text without brackets (what `strip_brackets(&host.to_string())`
/// gives, without the formatting machinery for the usual IPv4 address).
fn host_text(host: &rsip::Host) -> String {
    match host {
        rsip::Host::Domain(d) => strip_brackets(&d.0).to_owned(),
        rsip::Host::IpAddr(IpAddr::V4(ip)) => ipv4_text(*ip),
        rsip::Host::IpAddr(ip) => ip.to_string(),
    }
}

/// `a.b.c.d` (what `Ipv4Addr`'s Display writes, without the fmt machinery).
fn ipv4_text(ip: std::net::Ipv4Addr) -> String {
    let mut out = String::with_capacity(21);
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
    out
}

/// All Route entries of a request, in order (comma-joined headers split).
pub fn routes(req: &rsip::Request) -> Vec<String> {
    req.headers
        .iter()
        .filter_map(|h| match h {
            rsip::Header::Route(r) => Some(split_list(r.value())),
            _ => None,
        })
        .flatten()
        .collect()
}

/// Replaces all Route headers with `entries` (one header per entry).
pub fn set_routes(req: &mut rsip::Request, entries: &[String]) {
    let headers = &mut req.headers.0;
    let first = headers
        .iter()
        .position(|h| matches!(h, rsip::Header::Route(_)));
    headers.retain(|h| !matches!(h, rsip::Header::Route(_)));
    // Where the first Route was (only other headers precede it), else last.
    let at = first.unwrap_or(headers.len()).min(headers.len());
    headers.splice(
        at..at,
        entries
            .iter()
            .map(|e| rsip::Header::Route(rsip::headers::Route::new(e.clone()))),
    );
}

/// Builds one of our Record-Route entries.
pub fn record_route_entry(sent_by: &str, kind: Kind, flow_token: Option<&str>) -> String {
    let user = flow_token.map(|t| format!("{t}@")).unwrap_or_default();
    let transport = match kind {
        Kind::Udp => "",
        Kind::Ws => ";transport=ws",
        Kind::Wss => ";transport=ws",
    };
    format!("<sip:{user}{sent_by}{transport};lr>")
}

/// Adds the `nm` ("no media here") parameter to one of our Record-Route
/// entries: a peer node handles the call's media, so this node leaves the
/// SDP of the dialog's requests and responses alone.
pub fn mark_no_media(entry: &str) -> String {
    match entry.strip_suffix('>') {
        Some(inner) => format!("{inner};nm>"),
        None => format!("{entry};nm"),
    }
}

/// Whether a Route entry carries our `nm` parameter (see [`mark_no_media`]).
pub fn is_no_media(entry: &str) -> bool {
    rsip::Uri::try_from(uri_of(entry)).is_ok_and(|u| has_no_media_param(&u))
}

fn has_no_media_param(u: &rsip::Uri) -> bool {
    u.params.iter().any(
        |p| matches!(p, rsip::Param::Other(name, _) if name.to_string().eq_ignore_ascii_case("nm")),
    )
}

/// rsip writes `transport=WS` for a parsed `transport=ws`; browsers and
/// some PBXes compare Request-URIs byte for byte, so keep the lower case.
pub fn lower_transport_param(uri: &mut rsip::Uri) {
    for p in uri.params.iter_mut() {
        if let rsip::Param::Transport(t) = p {
            let value = t.to_string().to_ascii_lowercase();
            *p = rsip::Param::Other(
                rsip::param::OtherParam::new("transport"),
                Some(rsip::param::OtherParamValue::new(value)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_split_respects_quotes_and_brackets() {
        let v = split_list(r#"<sip:a@b;lr>, "x, y" <sip:c@d>, <sip:e,f@g>"#);
        assert_eq!(v.len(), 3);
        assert_eq!(uri_of(&v[1]), "sip:c@d");
        assert_eq!(uri_of(&v[2]), "sip:e,f@g");
    }

    #[test]
    fn flow_tokens_are_authentic() {
        let k = Keyed::default();
        let t = k.flow_token(42);
        assert_eq!(k.parse_flow_token(&t), Some(42));
        assert_eq!(k.parse_flow_token("f42.00000000"), None);
        assert_eq!(Keyed::default().parse_flow_token(&t), None);
    }

    #[test]
    fn uri_facts_of_browser_contact() {
        let f = uri_facts("sip:c9gqccl3@8m1uf7495730.invalid;transport=ws").unwrap();
        assert_eq!(f.transport.as_deref(), Some("ws"));
        assert_eq!(f.host, "8m1uf7495730.invalid");
        let f = uri_facts("sip:f1.abc@127.0.0.1:8443;transport=ws;lr").unwrap();
        assert!(f.lr);
        assert_eq!(f.user.as_deref(), Some("f1.abc"));
    }

    #[test]
    fn host_text_is_the_displayed_host() {
        for uri in [
            "sip:a@127.0.0.1:5060",
            "sip:0.10.100.255",
            "sip:a@[::1]:5060",
            "sip:a@[2001:db8::7]",
            "sip:pbx.example.com",
        ] {
            let u = rsip::Uri::try_from(uri).unwrap();
            let h = &u.host_with_port.host;
            assert_eq!(host_text(h), strip_brackets(&h.to_string()), "{uri}");
        }
    }

    #[test]
    fn host_port_is_the_displayed_address() {
        for a in [
            "127.0.0.1:5060",
            "0.0.0.0:0",
            "10.200.3.45:65535",
            "[::1]:5061",
        ] {
            let a: SocketAddr = a.parse().unwrap();
            let expected = match a {
                SocketAddr::V4(v4) => v4.to_string(),
                SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
            };
            assert_eq!(host_port(a), expected);
        }
    }

    #[test]
    fn no_media_mark_round_trips() {
        let e = record_route_entry("127.0.0.12:5060", Kind::Udp, None);
        assert!(!is_no_media(&e));
        let m = mark_no_media(&e);
        assert_eq!(m, "<sip:127.0.0.12:5060;lr;nm>");
        assert!(is_no_media(&m));
        let f = uri_facts(uri_of(&m)).unwrap();
        assert!(f.lr);
        assert_eq!(f.port, Some(5060));
    }

    #[test]
    fn local_recognizes_itself() {
        let l = Local {
            udp: vec!["127.0.0.1:5060".parse().unwrap()],
            wss: vec!["127.0.0.1:8443".parse().unwrap()],
            ..Default::default()
        };
        assert!(l.is_me("127.0.0.1", None));
        assert!(l.is_me("127.0.0.1", Some(8443)));
        assert!(!l.is_me("127.0.0.1", Some(5080)));
        assert!(!l.is_me("10.0.0.1", Some(5060)));
    }
}
