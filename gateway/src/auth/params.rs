//! Parser for `Authorization` / `Proxy-Authorization` digest credentials.
//!
//! Grammar (RFC 3261 §25.1, RFC 7616 §3.4): `Digest` LWS auth-param *(COMMA auth-param),
//! auth-param = token EQUAL ( token / quoted-string ). Parameter names are
//! case-insensitive, quoted strings may contain commas and `\`-escapes. We parse this
//! ourselves because rsip's typed Authorization rejects `algorithm=SHA-256` and `nc > 0xff`.

use thiserror::Error;

/// Why a credentials header value could not be parsed (the SIP layer answers 400).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ParseError {
    /// The scheme is not `Digest`.
    #[error("unsupported authorization scheme")]
    NotDigest,
    /// The parameter list does not follow the auth-param grammar.
    #[error("malformed auth-param list at byte {0}")]
    Syntax(usize),
    /// A parameter appeared twice.
    #[error("duplicate parameter {0}")]
    Duplicate(String),
    /// A mandatory parameter is missing.
    #[error("missing parameter {0}")]
    Missing(&'static str),
    /// `nc` is not 1–8 hex digits.
    #[error("invalid nonce count")]
    BadNonceCount,
    /// `qop` was given without `cnonce`/`nc` or the other way round.
    #[error("qop, cnonce and nc must appear together")]
    QopIncomplete,
}

/// Digest credentials as sent by the client (values unquoted and unescaped).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Credentials {
    /// `username`.
    pub username: String,
    /// `realm`.
    pub realm: String,
    /// `nonce` as issued by the server.
    pub nonce: String,
    /// `uri` (digest-uri).
    pub uri: String,
    /// `response`, lower-case hex expected.
    pub response: String,
    /// `algorithm` as written (`MD5`, `SHA-256`, ...); absent means MD5.
    pub algorithm: Option<String>,
    /// `qop` (`auth`, `auth-int`), absent for RFC 2069 style.
    pub qop: Option<String>,
    /// `cnonce`.
    pub cnonce: Option<String>,
    /// `nc`, parsed from 8 hex digits.
    pub nc: Option<u32>,
    /// `nc` exactly as written: it enters the hash verbatim.
    pub nc_raw: Option<String>,
    /// `opaque`.
    pub opaque: Option<String>,
}

/// Parses one `Authorization`/`Proxy-Authorization` header value.
pub fn parse_credentials(value: &str) -> Result<Credentials, ParseError> {
    let value = value.trim();
    let (scheme, rest) = match value.find(|c: char| c.is_ascii_whitespace()) {
        Some(i) => (value.get(..i).unwrap_or(""), value.get(i..).unwrap_or("")),
        None => (value, ""),
    };
    if !scheme.eq_ignore_ascii_case("digest") {
        return Err(ParseError::NotDigest);
    }
    let mut creds = Credentials::default();
    let mut seen: Vec<String> = Vec::new();
    for (name, val) in parse_auth_params(rest)? {
        let lname = name.to_ascii_lowercase();
        if seen.contains(&lname) {
            return Err(ParseError::Duplicate(lname));
        }
        seen.push(lname.clone());
        match lname.as_str() {
            "username" => creds.username = val,
            "realm" => creds.realm = val,
            "nonce" => creds.nonce = val,
            "uri" => creds.uri = val,
            "response" => creds.response = val,
            "algorithm" => creds.algorithm = Some(val),
            "qop" => creds.qop = Some(val),
            "cnonce" => creds.cnonce = Some(val),
            "opaque" => creds.opaque = Some(val),
            "nc" => {
                creds.nc = Some(parse_nc(&val)?);
                creds.nc_raw = Some(val);
            }
            _ => {} // auth-param extensions are ignored (RFC 3261 §25.1)
        }
    }
    for (field, name) in [
        (&creds.username, "username"),
        (&creds.realm, "realm"),
        (&creds.nonce, "nonce"),
        (&creds.uri, "uri"),
        (&creds.response, "response"),
    ] {
        if !seen.iter().any(|s| s == name) || (field.is_empty() && name != "realm") {
            return Err(ParseError::Missing(name));
        }
    }
    let with_qop = creds.qop.is_some();
    if with_qop != creds.cnonce.is_some() || with_qop != creds.nc.is_some() {
        return Err(ParseError::QopIncomplete);
    }
    Ok(creds)
}

/// `nc` is 8LHEX (RFC 7616); be lenient about the length but never about the base.
fn parse_nc(v: &str) -> Result<u32, ParseError> {
    if v.is_empty() || v.len() > 8 || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ParseError::BadNonceCount);
    }
    u32::from_str_radix(v, 16).map_err(|_| ParseError::BadNonceCount)
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

/// Splits `name=value, name="quoted, value"` into unescaped pairs.
pub fn parse_auth_params(input: &str) -> Result<Vec<(String, String)>, ParseError> {
    let bytes = input.as_bytes();
    let mut out = Vec::new();
    let mut i = 0usize;
    let skip_ws = |i: &mut usize| {
        while bytes.get(*i).is_some_and(|b| b.is_ascii_whitespace()) {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= bytes.len() {
            break;
        }
        let start = i;
        while bytes.get(i).copied().is_some_and(is_token_char) {
            i += 1;
        }
        if i == start {
            return Err(ParseError::Syntax(i));
        }
        let name = input
            .get(start..i)
            .ok_or(ParseError::Syntax(i))?
            .to_string();
        skip_ws(&mut i);
        if bytes.get(i) != Some(&b'=') {
            return Err(ParseError::Syntax(i));
        }
        i += 1;
        skip_ws(&mut i);
        let value = if bytes.get(i) == Some(&b'"') {
            i += 1;
            let mut v = Vec::new();
            loop {
                match bytes.get(i) {
                    None => return Err(ParseError::Syntax(i)),
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') => {
                        let c = *bytes.get(i + 1).ok_or(ParseError::Syntax(i))?;
                        v.push(c);
                        i += 2;
                    }
                    Some(&c) => {
                        v.push(c);
                        i += 1;
                    }
                }
            }
            String::from_utf8(v).map_err(|_| ParseError::Syntax(i))?
        } else {
            let vs = i;
            while bytes.get(i).copied().is_some_and(is_token_char) {
                i += 1;
            }
            if i == vs {
                return Err(ParseError::Syntax(i));
            }
            input.get(vs..i).ok_or(ParseError::Syntax(i))?.to_string()
        };
        out.push((name, value));
        skip_ws(&mut i);
        match bytes.get(i) {
            None => break,
            Some(b',') => i += 1,
            Some(_) => return Err(ParseError::Syntax(i)),
        }
    }
    Ok(out)
}

/// Quotes a value as a SIP quoted-string, escaping `"` and `\`.
pub fn quote(value: &str) -> String {
    let mut s = String::with_capacity(value.len() + 2);
    s.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sipjs_fixture_header() {
        let v = r#"Digest algorithm=MD5, username="2000", realm="127.0.0.1", nonce="awQNVmsEDCoaRlsFmV94sa2GKKCVtBXA", uri="sip:127.0.0.1", response="460d0fb312bb90725837e4b4738c4360""#;
        let c = parse_credentials(v).unwrap();
        assert_eq!(c.username, "2000");
        assert_eq!(c.realm, "127.0.0.1");
        assert_eq!(c.algorithm.as_deref(), Some("MD5"));
        assert_eq!(c.uri, "sip:127.0.0.1");
        assert_eq!(c.qop, None);
    }

    #[test]
    fn hex_nc_and_sha256_and_escapes() {
        let v = r#"digest USERNAME="o'brien\"; DROP TABLE x;--", Realm="a, b", nonce="n", uri="sip:x", response="ab", algorithm=SHA-256, qop=auth, cnonce="c", nc=0000010a"#;
        let c = parse_credentials(v).unwrap();
        assert_eq!(c.username, "o'brien\"; DROP TABLE x;--");
        assert_eq!(c.realm, "a, b");
        assert_eq!(c.nc, Some(0x10a));
        assert_eq!(c.nc_raw.as_deref(), Some("0000010a"));
        assert_eq!(c.algorithm.as_deref(), Some("SHA-256"));
        assert_eq!(
            quote("o'brien\"; DROP TABLE x;--"),
            r#""o'brien\"; DROP TABLE x;--""#
        );
    }

    #[test]
    fn rejects_malformed() {
        for v in [
            "Basic abc",
            "Digest",
            r#"Digest username="a"#,
            r#"Digest username="a" realm="b""#,
            r#"Digest username="a", username="b", realm="r", nonce="n", uri="u", response="r""#,
            r#"Digest username="a", realm="r", nonce="n", uri="u", response="r", qop=auth"#,
            r#"Digest username="a", realm="r", nonce="n", uri="u", response="r", qop=auth, cnonce="c", nc=0x1"#,
            r#"Digest username="a", realm="r", nonce="n", uri="u", response="r", qop=auth, cnonce="c", nc=123456789"#,
            r#"Digest username="a", realm="r", nonce="n", uri="u""#,
            "Digest =x",
            "Digest a=",
            "Digest a=\"\\",
        ] {
            assert!(parse_credentials(v).is_err(), "{v}");
        }
    }
}
