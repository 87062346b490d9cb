//! Web origins (RFC 6454) for the WebSocket `Origin` allow-list.
//!
//! An origin is compared as a tuple (scheme, host, port), never as text:
//! scheme and host are case-insensitive, a default port (443 for https, 80 for
//! http) equals no port, and one trailing `/` is tolerated. Anything else after
//! the authority (a path, a query, a fragment) and userinfo make the value not
//! an origin at all, so `https://example.com.evil.test` or
//! `https://example.com@evil.test` can never match `https://example.com`.

use std::net::Ipv6Addr;

/// A parsed origin tuple (RFC 6454 §4), normalized for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `http` or `https`, lower-case.
    pub scheme: &'static str,
    /// Host name (lower-case) or IP literal (IPv6 in brackets, canonical form).
    pub host: String,
    /// The port, the scheme's default when none is written.
    pub port: u16,
}

/// Why a text is not an origin (the message of a config error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    /// No `http://` or `https://` prefix.
    #[error("no http:// or https:// scheme")]
    Scheme,
    /// Something after the authority: a path, a query or a fragment.
    #[error("an origin has no path, query or fragment")]
    Path,
    /// `user@` before the host.
    #[error("an origin has no userinfo")]
    Userinfo,
    /// Empty or malformed host.
    #[error("bad host")]
    Host,
    /// Not a number in 1..=65535.
    #[error("bad port")]
    Port,
}

impl Origin {
    /// Parses a serialized origin such as `https://example.com:8443`, with
    /// at most one trailing `/`.
    pub fn parse(text: &str) -> Result<Self, OriginError> {
        let text = text.trim();
        let (scheme, rest, default_port) = if let Some(r) = strip_prefix_ci(text, "https://") {
            ("https", r, 443)
        } else if let Some(r) = strip_prefix_ci(text, "http://") {
            ("http", r, 80)
        } else {
            return Err(OriginError::Scheme);
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '?', '#']) {
            return Err(OriginError::Path);
        }
        if authority.contains('@') {
            return Err(OriginError::Userinfo);
        }
        let (host, port) = split_host_port(authority)?;
        let port = match port {
            None => default_port,
            Some(p) => parse_port(p)?,
        };
        Ok(Self { scheme, host, port })
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// Host (normalized) and the port text, if any.
fn split_host_port(authority: &str) -> Result<(String, Option<&str>), OriginError> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or(OriginError::Host)?;
        let addr: Ipv6Addr = v6.parse().map_err(|_| OriginError::Host)?;
        let port = match after {
            "" => None,
            a => Some(a.strip_prefix(':').ok_or(OriginError::Host)?),
        };
        return Ok((format!("[{addr}]"), port));
    }
    let (host, port) = match authority.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    // Registered names and IPv4 literals: letters, digits, '-' and '.', no
    // empty label (browsers serialize IDNs as punycode).
    let ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !ok {
        return Err(OriginError::Host);
    }
    Ok((host.to_ascii_lowercase(), port))
}

fn parse_port(p: &str) -> Result<u16, OriginError> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return Err(OriginError::Port);
    }
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(OriginError::Port),
        Ok(n) => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(s: &str) -> Origin {
        Origin::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn tuples_compare_case_insensitively_with_default_ports() {
        let base = o("https://example.com");
        for same in [
            "https://example.com",
            "HTTPS://EXAMPLE.COM",
            "https://Example.Com:443",
            "https://example.com/",
            "https://example.com:443/",
            " https://example.com ",
        ] {
            assert_eq!(o(same), base, "{same}");
        }
        for other in [
            "http://example.com",
            "https://example.com:8443",
            "https://example.com.evil.test",
            "https://evil-example.com",
            "https://www.example.com",
        ] {
            assert_ne!(o(other), base, "{other}");
        }
        assert_eq!(o("http://localhost:80"), o("http://LOCALHOST"));
        assert_ne!(o("http://localhost:443"), o("https://localhost"));
        assert_eq!(o("https://[::1]:8443"), o("https://[0:0:0:0:0:0:0:1]:8443"));
        assert_eq!(o("https://127.0.0.1:8443").host, "127.0.0.1");
    }

    #[test]
    fn non_origins_are_refused_with_a_reason() {
        use OriginError::*;
        for (text, why) in [
            ("example.com", Scheme),
            ("null", Scheme),
            ("", Scheme),
            ("ws://example.com", Scheme),
            ("https:/example.com", Scheme),
            ("https://example.com/path", Path),
            ("https://example.com//", Path),
            ("https://example.com?x=1", Path),
            ("https://example.com/#f", Path),
            ("https://user@example.com", Userinfo),
            ("https://example.com@evil.test", Userinfo),
            ("https://", Host),
            ("https://exa mple.com", Host),
            ("https://example..com", Host),
            ("https://example.com:", Port),
            ("https://example.com:0", Port),
            ("https://example.com:65536", Port),
            ("https://example.com:+443", Port),
            ("https://example.com:44x", Port),
            ("https://[::1", Host),
            ("https://[::1]x", Host),
            ("https://[zz]:1", Host),
        ] {
            assert_eq!(Origin::parse(text), Err(why), "{text:?}");
        }
    }
}
