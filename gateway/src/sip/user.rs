//! `%XX` escapes of a SIP URI user part (RFC 3261 §19.1.2, §25.1).
//!
//! rsip keeps escapes as written, so `sip:o%27neil@host` and `sip:o'neil@host`
//! name the same user with different text. AORs are keyed on the decoded user
//! (the registrar and the location lookup decode alike). A URI's user is
//! held escaped, as on the wire, and written as held ([`uri_text`]).

use std::borrow::Cow;
use std::fmt::Write;

use crate::rsip;

/// Decodes `%XX` escapes of a URI user part; keeps the input as is when an
/// escape is malformed or the result is not UTF-8.
pub fn decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok());
            match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                Some(v) => {
                    out.push(v);
                    i += 3;
                    continue;
                }
                None => return Cow::Borrowed(s),
            }
        }
        out.push(c);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(d) => Cow::Owned(d),
        Err(_) => Cow::Borrowed(s),
    }
}

/// Escapes a decoded user for a URI: everything but letters, digits and
/// `-_.!~*'()&=+$,` becomes `%XX` (`%` itself included), so [`decode`] gives
/// the input back. `;`, `?` and `/` are allowed by RFC 3261 but escaped: rsip's
/// parser would end the user there.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_.!~*'()&=+$,".contains(&b) {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The URI of a canonical AOR `sip:user@domain` (user decoded), e.g. to
/// send a request to it; `None` when `aor` is not of that form. The user is
/// held escaped, as rsip holds a parsed one (see [`uri_text`]).
pub fn aor_uri(aor: &str) -> Option<rsip::Uri> {
    let (user, domain) = aor.strip_prefix("sip:")?.rsplit_once('@')?;
    let mut uri = rsip::Uri::try_from(format!("sip:{domain}").as_str()).ok()?;
    uri.auth = Some(rsip::Auth {
        user: encode(user),
        password: None,
    });
    Some(uri)
}

/// A URI as text with its user (and password) written as held, i.e. as
/// received. rsip keeps `%XX` escapes when it parses a URI but escapes the
/// user again when it prints one, so `o%27neil` would go out as `o%2527neil`;
/// everything rtcgate sends or records goes through this instead.
pub fn uri_text(uri: &rsip::Uri) -> String {
    use std::fmt::Write as _;
    let Some(auth) = &uri.auth else {
        return uri.to_string();
    };
    // rsip's Display of a URI, with the userinfo written as held (and no
    // clone of the URI to print it without its userinfo).
    let mut out = String::with_capacity(64);
    if let Some(scheme) = &uri.scheme {
        let _ = write!(out, "{scheme}:");
    }
    out.push_str(&auth.user);
    if let Some(p) = &auth.password {
        out.push(':');
        out.push_str(p);
    }
    out.push('@');
    let _ = write!(out, "{}", uri.host_with_port);
    for param in &uri.params {
        let _ = write!(out, "{param}");
    }
    if !uri.headers.is_empty() {
        out.push('?');
        for (i, (k, v)) in uri.headers.iter().enumerate() {
            if i > 0 {
                out.push('&');
            }
            let _ = write!(out, "{k}={v}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NASTY: &str = "o'neil\"\\; DROP TABLE location; --%27ü @:<>";

    #[test]
    fn decode_keeps_what_is_not_an_escape() {
        assert_eq!(decode("1001"), "1001");
        assert_eq!(decode("o%27neil"), "o'neil");
        assert_eq!(decode("%C3%BC%20x"), "ü x");
        assert_eq!(decode("100%2527"), "100%27");
        // Malformed escapes or non-UTF-8 results stay as written.
        assert_eq!(decode("a%2"), "a%2");
        assert_eq!(decode("a%zz"), "a%zz");
        assert_eq!(decode("%FF"), "%FF");
    }

    #[test]
    fn aor_uris_print_escaped_and_name_the_same_user() {
        let aor = crate::registrar::aor_for(NASTY, "localhost");
        let text = aor_uri(&aor).map(|u| uri_text(&u));
        let text = text.unwrap_or_else(|| panic!("{aor}"));
        assert!(!text.contains(['"', '\\', ' ', '<', '>']), "{text}");
        // What the next node parses and looks up.
        let parsed = rsip::Uri::try_from(text.as_str()).unwrap();
        let user = parsed.auth.map(|a| a.user).unwrap();
        assert_eq!(crate::registrar::aor_for(&decode(&user), "localhost"), aor);
        assert_eq!(aor_uri("tel:1"), None);
        assert_eq!(aor_uri("sip:nobody"), None);
    }

    #[test]
    fn uris_go_out_as_received() {
        for text in [
            "sip:c9gq@ua.invalid;ob",
            "sip:br'ow%22s%5Cer%27%C3%BC%3B@br.invalid;x-sql=%27%3B%20DROP;ob",
            "sip:100%25:pa%20ss@10.0.0.1:5060",
            "sips:%2A97@pbx.invalid",
            "sip:pbx.invalid:5080",
        ] {
            let uri = rsip::Uri::try_from(text).unwrap();
            assert_eq!(uri_text(&uri), text);
        }
    }

    #[test]
    fn encode_round_trips() {
        for user in ["1001", NASTY, "100%27", "a;b?c/d"] {
            let e = encode(user);
            assert!(e.bytes().all(|b| b.is_ascii_graphic()), "{e}");
            assert!(
                !e.contains(['"', '\\', ';', '?', '/', '@', ':', '<', '>']),
                "{e}"
            );
            assert_eq!(decode(&e), user);
        }
        assert_eq!(encode("o'neil 100%"), "o'neil%20100%25");
    }

    fn uri_text_via_clone(uri: &rsip::Uri) -> String {
        let Some(auth) = &uri.auth else {
            return uri.to_string();
        };
        let mut rest = uri.clone();
        rest.auth = None;
        let rest = rest.to_string();
        let userinfo = match &auth.password {
            Some(p) => format!("{}:{p}@", auth.user),
            None => format!("{}@", auth.user),
        };
        // After `scheme:` (rsip always writes one for sip/sips/tel URIs).
        match rest.split_once(':') {
            Some((scheme, tail)) if uri.scheme.is_some() => format!("{scheme}:{userinfo}{tail}"),
            _ => format!("{userinfo}{rest}"),
        }
    }

    #[test]
    fn uri_text_is_the_clone_and_split_text() {
        for text in [
            "sip:1001@127.0.0.1:5060",
            "sip:o%27neil@example.com;transport=ws;lr",
            "sips:a:secret@[::1]:5061;user=phone",
            "sip:alice@example.com?subject=hi&priority=urgent",
            "tel:+15551234",
            "sip:example.com",
        ] {
            let uri = rsip::Uri::try_from(text).unwrap();
            assert_eq!(uri_text(&uri), uri_text_via_clone(&uri), "{text}");
        }
        let aor = aor_uri("sip:o'neil x@example.com").unwrap();
        assert_eq!(uri_text(&aor), uri_text_via_clone(&aor));
    }
}
