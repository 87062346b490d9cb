//! ng datagram framing: `<cookie><space><bencoded dict>`, with guards for untrusted input.

use std::collections::BTreeMap;

use bt_bencode::{ByteString, Value};

use crate::error::DecodeError;

/// Largest datagram accepted (and the receive buffer size). rtpengine's biggest routine
/// replies (delete stats ~2 KB, statistics ~7.5 KB) fit with a wide margin.
pub const MAX_DATAGRAM: usize = 65_536;

/// Longest cookie accepted in a reply.
pub const MAX_COOKIE: usize = 128;

/// Deepest list/dict nesting accepted. rtpengine's deepest reply (query/delete stats:
/// dict > tags > tag > medias > media > streams > stream > endpoint) is 8 levels;
/// bt_bencode recurses per level, and ~10,000 levels overflow a 2 MiB stack.
pub const MAX_DEPTH: usize = 32;

/// A dictionary as bt_bencode represents it (keys sorted on encode; rtpengine does not care).
pub type Dict = BTreeMap<ByteString, Value>;

/// Encodes one ng datagram.
pub fn encode(cookie: &str, dict: &Dict) -> Result<Vec<u8>, bt_bencode::Error> {
    let body = encode_body(dict)?;
    Ok(frame(cookie, &body))
}

/// Encodes only the bencoded dictionary (the part after the cookie).
///
/// The same bytes as `bt_bencode::to_vec` (keys in byte order, which is the
/// `BTreeMap`'s), written straight into one buffer: bt_bencode serialises
/// every value of a map into a buffer of its own and sorts them in a second
/// map, several allocations per key on every ng request.
pub fn encode_body(dict: &Dict) -> Result<Vec<u8>, bt_bencode::Error> {
    let mut out = Vec::with_capacity(512);
    write_dict(&mut out, dict);
    Ok(out)
}

fn write_dict(out: &mut Vec<u8>, dict: &Dict) {
    out.push(b'd');
    for (k, v) in dict {
        write_bytes(out, k.as_ref());
        write_value(out, v);
    }
    out.push(b'e');
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::ByteStr(b) => write_bytes(out, b.as_ref()),
        Value::Int(bt_bencode::value::Number::Signed(n)) => {
            out.push(b'i');
            if *n < 0 {
                out.push(b'-');
            }
            write_decimal(out, n.unsigned_abs());
            out.push(b'e');
        }
        Value::Int(bt_bencode::value::Number::Unsigned(n)) => {
            out.push(b'i');
            write_decimal(out, *n);
            out.push(b'e');
        }
        Value::List(items) => {
            out.push(b'l');
            for v in items {
                write_value(out, v);
            }
            out.push(b'e');
        }
        Value::Dict(d) => write_dict(out, d),
    }
}

fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_decimal(out, b.len() as u64);
    out.push(b':');
    out.extend_from_slice(b);
}

fn write_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Prefixes an encoded body with `cookie` and a space.
pub fn frame(cookie: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(cookie.len() + 1 + body.len());
    out.extend_from_slice(cookie.as_bytes());
    out.push(b' ');
    out.extend_from_slice(body);
    out
}

/// Splits a datagram into cookie and body without looking at the body.
///
/// Cheap, so replies can be matched against in-flight cookies before any decoding.
pub fn split_cookie(datagram: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(DecodeError::TooLarge(datagram.len()));
    }
    let space = datagram
        .iter()
        .position(|&b| b == b' ')
        .ok_or(DecodeError::MissingCookie)?;
    if space == 0 {
        return Err(DecodeError::MissingCookie);
    }
    if space > MAX_COOKIE {
        return Err(DecodeError::CookieTooLong);
    }
    let (cookie, rest) = datagram.split_at(space);
    Ok((cookie, rest.get(1..).unwrap_or_default()))
}

/// Decodes a bencoded body into a dictionary, after checking size and nesting depth.
pub fn decode_body(body: &[u8]) -> Result<Dict, DecodeError> {
    if body.len() > MAX_DATAGRAM {
        return Err(DecodeError::TooLarge(body.len()));
    }
    check_depth(body, MAX_DEPTH)?;
    let value: Value =
        bt_bencode::from_slice(body).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    match value {
        Value::Dict(d) => Ok(d),
        _ => Err(DecodeError::NotADict),
    }
}

/// Decodes a whole datagram into its cookie and dictionary.
pub fn decode(datagram: &[u8]) -> Result<(&[u8], Dict), DecodeError> {
    let (cookie, body) = split_cookie(datagram)?;
    Ok((cookie, decode_body(body)?))
}

/// Iterative scan of bencode token structure that fails if containers nest deeper
/// than `max_depth`. It never recurses, so it is safe on hostile input; it does only
/// enough validation to walk the tokens (bt_bencode does the real parse afterwards).
pub fn check_depth(bytes: &[u8], max_depth: usize) -> Result<(), DecodeError> {
    let malformed = |what: &str| DecodeError::Malformed(format!("pre-scan: {what}"));
    let mut depth = 0usize;
    let mut i = 0usize;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'd' | b'l' => {
                depth += 1;
                if depth > max_depth {
                    return Err(DecodeError::TooDeep(max_depth));
                }
                i += 1;
            }
            b'e' => {
                depth = depth.checked_sub(1).ok_or_else(|| malformed("stray 'e'"))?;
                i += 1;
            }
            b'i' => {
                let end = bytes
                    .get(i..)
                    .and_then(|s| s.iter().position(|&c| c == b'e'))
                    .ok_or_else(|| malformed("unterminated integer"))?;
                i += end + 1;
            }
            b'0'..=b'9' => {
                let colon = bytes
                    .get(i..)
                    .and_then(|s| s.iter().position(|&c| c == b':'))
                    .ok_or_else(|| malformed("string without ':'"))?;
                let digits = bytes.get(i..i + colon).unwrap_or_default();
                let len: usize = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| malformed("bad string length"))?;
                i = i
                    .checked_add(colon + 1)
                    .and_then(|p| p.checked_add(len))
                    .filter(|&p| p <= bytes.len())
                    .ok_or_else(|| malformed("string runs past the end"))?;
            }
            _ => return Err(malformed("unexpected byte")),
        }
        if depth == 0 {
            // One complete top-level value; trailing bytes are bt_bencode's call.
            return Ok(());
        }
    }
    Err(malformed("truncated"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_and_decode_ping() {
        let (cookie, dict) = decode(b"5323_1 d6:result4:ponge").unwrap();
        assert_eq!(cookie, b"5323_1");
        assert_eq!(
            dict.get(&ByteString::from("result"))
                .and_then(Value::as_str),
            Some("pong")
        );
    }

    #[test]
    fn rejects_missing_or_empty_cookie() {
        assert_eq!(
            split_cookie(b"d6:result4:ponge"),
            Err(DecodeError::MissingCookie)
        );
        assert_eq!(
            split_cookie(b" d6:result4:ponge"),
            Err(DecodeError::MissingCookie)
        );
        let long = [b'a'; MAX_COOKIE + 1];
        let mut dg = long.to_vec();
        dg.extend_from_slice(b" de");
        assert_eq!(split_cookie(&dg), Err(DecodeError::CookieTooLong));
    }

    #[test]
    fn rejects_oversized() {
        let big = vec![b'x'; MAX_DATAGRAM + 1];
        assert_eq!(
            split_cookie(&big),
            Err(DecodeError::TooLarge(MAX_DATAGRAM + 1))
        );
    }

    #[test]
    fn deep_nesting_is_rejected_without_recursion() {
        // 10,000 levels aborts the process inside bt_bencode; the pre-scan must stop it.
        let mut body = vec![b'l'; 10_000];
        body.extend(std::iter::repeat_n(b'e', 10_000));
        assert_eq!(decode_body(&body), Err(DecodeError::TooDeep(MAX_DEPTH)));
        let mut dict = b"d1:a".to_vec();
        dict.extend(std::iter::repeat_n(b'l', 1_000_000));
        assert_eq!(
            check_depth(&dict, MAX_DEPTH),
            Err(DecodeError::TooDeep(MAX_DEPTH))
        );
    }

    #[test]
    fn depth_limit_is_exact() {
        let ok = format!("{}{}", "l".repeat(MAX_DEPTH), "e".repeat(MAX_DEPTH));
        assert!(check_depth(ok.as_bytes(), MAX_DEPTH).is_ok());
        let deep = format!("{}{}", "l".repeat(MAX_DEPTH + 1), "e".repeat(MAX_DEPTH + 1));
        assert_eq!(
            check_depth(deep.as_bytes(), MAX_DEPTH),
            Err(DecodeError::TooDeep(MAX_DEPTH))
        );
    }

    #[test]
    fn malformed_inputs_are_errors() {
        for bad in [
            &b""[..],
            b"d",
            b"e",
            b"i12",
            b"99999999999999999999999:x",
            b"5:ab",
            b"d3:abce",
            b"x",
        ] {
            assert!(decode_body(bad).is_err(), "{bad:?}");
        }
        assert_eq!(decode_body(b"le"), Err(DecodeError::NotADict));
    }

    #[test]
    fn encode_roundtrip_keeps_non_utf8() {
        let mut d = Dict::new();
        d.insert(
            "sdp".into(),
            Value::ByteStr(ByteString::from(vec![0xff, 0x00, b'v'])),
        );
        let dg = encode("c1", &d).unwrap();
        let (cookie, back) = decode(&dg).unwrap();
        assert_eq!(cookie, b"c1");
        assert_eq!(back, d);
    }

    #[test]
    fn encoding_is_bt_bencodes() {
        use bt_bencode::value::Number;
        let mut inner = Dict::new();
        inner.insert("zz".into(), Value::Int(Number::Signed(-42)));
        inner.insert("a".into(), Value::Int(Number::Unsigned(u64::MAX)));
        inner.insert("m".into(), Value::Int(Number::Signed(i64::MIN)));
        let mut d = Dict::new();
        d.insert(
            "sdp".into(),
            Value::ByteStr(ByteString::from(vec![0xff, 0x00, b'v'])),
        );
        d.insert("command".into(), Value::ByteStr(ByteString::from("offer")));
        d.insert("".into(), Value::ByteStr(ByteString::from(Vec::new())));
        d.insert(
            "flags".into(),
            Value::List(vec![
                Value::ByteStr(ByteString::from("trust-address")),
                Value::Int(Number::Unsigned(0)),
                Value::List(Vec::new()),
                Value::Dict(inner.clone()),
            ]),
        );
        d.insert("inner".into(), Value::Dict(inner));
        d.insert("empty".into(), Value::Dict(Dict::new()));
        assert_eq!(encode_body(&d).unwrap(), bt_bencode::to_vec(&d).unwrap());
        assert_eq!(encode_body(&Dict::new()).unwrap(), b"de");
    }
}
