//! Contact header values of a REGISTER (RFC 3261 §20.10, RFC 5626 §4.2).
//!
//! Parsed here rather than with rsip's typed Contact because that one rewrites the URI
//! (it drops `transport=udp`) and we must store and echo the URI exactly as sent.

use rsipstack::rsip;

/// One contact of a REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContactSpec {
    /// The URI as written (inside `<>` if it had them).
    pub uri: String,
    /// `expires` parameter; `Some(None)` when present but malformed.
    pub expires: Option<Option<u32>>,
    /// `q` in thousandths.
    pub q: Option<u16>,
    /// `+sip.instance`, unquoted.
    pub instance: Option<String>,
    /// `reg-id`.
    pub reg_id: Option<u32>,
}

/// The Contact set of a REGISTER.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contacts {
    /// No Contact header: a query.
    None,
    /// `Contact: *` alone.
    Star,
    /// One or more contacts.
    List(Vec<ContactSpec>),
}

/// Why the Contact headers are unacceptable (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContactError {
    /// `*` mixed with other contacts.
    #[error("'*' must be the only contact")]
    StarWithOthers,
    /// Bad syntax (unbalanced quotes/brackets, empty element, bad URI, bad q).
    #[error("malformed contact: {0}")]
    Malformed(&'static str),
}

/// Splits on `sep` outside double quotes and angle brackets.
fn split_outside(s: &str, sep: char) -> Result<Vec<&str>, ContactError> {
    let mut out = Vec::new();
    let (mut in_q, mut esc, mut depth, mut start) = (false, false, 0i32, 0usize);
    for (i, c) in s.char_indices() {
        if esc {
            esc = false;
            continue;
        }
        match c {
            '\\' if in_q => esc = true,
            '"' => in_q = !in_q,
            '<' if !in_q => depth += 1,
            '>' if !in_q => depth -= 1,
            c if c == sep && !in_q && depth == 0 => {
                out.push(s.get(start..i).unwrap_or(""));
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    if in_q || depth != 0 {
        return Err(ContactError::Malformed("unbalanced quotes or brackets"));
    }
    out.push(s.get(start..).unwrap_or(""));
    Ok(out)
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    match v.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
        Some(inner) => {
            let mut s = String::with_capacity(inner.len());
            let mut esc = false;
            for c in inner.chars() {
                if !esc && c == '\\' {
                    esc = true;
                    continue;
                }
                esc = false;
                s.push(c);
            }
            s
        }
        None => v.to_string(),
    }
}

/// q = "0" [ "." 0*3DIGIT ] / "1" [ "." 0*3("0") ], as thousandths.
fn parse_q(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u16 = match int {
        "0" => 0,
        "1" => 1,
        _ => return None,
    };
    let mut f: u16 = 0;
    for i in 0..3 {
        f = f * 10 + frac.as_bytes().get(i).map_or(0, |b| u16::from(b - b'0'));
    }
    let q = whole * 1000 + f;
    (q <= 1000).then_some(q)
}

fn parse_one(elem: &str) -> Result<ContactSpec, ContactError> {
    let elem = elem.trim();
    if elem.is_empty() {
        return Err(ContactError::Malformed("empty contact"));
    }
    // name-addr has '<' outside quotes; addr-spec ends at the first ';' (RFC 3261 §20.10).
    let (uri, params) = match find_outside_quotes(elem, '<') {
        Some(lt) => {
            let rest = elem.get(lt + 1..).unwrap_or("");
            let gt = rest
                .find('>')
                .ok_or(ContactError::Malformed("missing '>'"))?;
            (
                rest.get(..gt).unwrap_or(""),
                rest.get(gt + 1..).unwrap_or(""),
            )
        }
        None => match elem.find(';') {
            Some(i) => (elem.get(..i).unwrap_or(""), elem.get(i..).unwrap_or("")),
            None => (elem, ""),
        },
    };
    let uri = uri.trim();
    if rsip::Uri::try_from(uri).is_err() {
        return Err(ContactError::Malformed("bad contact URI"));
    }
    let mut spec = ContactSpec {
        uri: uri.to_string(),
        expires: None,
        q: None,
        instance: None,
        reg_id: None,
    };
    let params = params.trim();
    if !params.is_empty() {
        let params = params
            .strip_prefix(';')
            .ok_or(ContactError::Malformed("junk after contact URI"))?;
        for p in split_outside(params, ';')? {
            let (name, value) = match p.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim())),
                None => (p.trim(), None),
            };
            match (name.to_ascii_lowercase().as_str(), value) {
                ("expires", Some(v)) => spec.expires = Some(v.parse::<u32>().ok()),
                ("q", Some(v)) => {
                    spec.q = Some(parse_q(v).ok_or(ContactError::Malformed("bad q"))?);
                }
                ("+sip.instance", Some(v)) => spec.instance = Some(unquote(v)),
                ("reg-id", Some(v)) => {
                    spec.reg_id = Some(
                        v.parse::<u32>()
                            .ok()
                            .filter(|r| *r > 0)
                            .ok_or(ContactError::Malformed("bad reg-id"))?,
                    );
                }
                ("", _) => return Err(ContactError::Malformed("empty parameter")),
                _ => {}
            }
        }
    }
    Ok(spec)
}

fn find_outside_quotes(s: &str, needle: char) -> Option<usize> {
    let (mut in_q, mut esc) = (false, false);
    for (i, c) in s.char_indices() {
        if esc {
            esc = false;
            continue;
        }
        match c {
            '\\' if in_q => esc = true,
            '"' => in_q = !in_q,
            c if c == needle && !in_q => return Some(i),
            _ => {}
        }
    }
    None
}

/// Parses all Contact header values of a request.
pub fn parse_contacts(values: &[&str]) -> Result<Contacts, ContactError> {
    let mut specs = Vec::new();
    let mut star = false;
    for v in values {
        for elem in split_outside(v, ',')? {
            if elem.trim() == "*" {
                star = true;
            } else {
                specs.push(parse_one(elem)?);
            }
        }
    }
    match (star, specs.is_empty()) {
        (true, true) => Ok(Contacts::Star),
        (true, false) => Err(ContactError::StarWithOthers),
        (false, true) => Ok(Contacts::None),
        (false, false) => Ok(Contacts::List(specs)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sipjs_and_outbound_contacts() {
        let c = parse_contacts(&["<sip:c9gqccl3@8m1uf7495730.invalid;transport=ws>;expires=300"])
            .unwrap();
        let Contacts::List(l) = c else { panic!() };
        assert_eq!(l[0].uri, "sip:c9gqccl3@8m1uf7495730.invalid;transport=ws");
        assert_eq!(l[0].expires, Some(Some(300)));

        let v = r#""Alice, \"A\"" <sip:a@h;transport=udp>;+sip.instance="<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>";reg-id=1;q=0.5, sip:b@h;expires=0, <sip:c@h>;expires=junk"#;
        let Contacts::List(l) = parse_contacts(&[v]).unwrap() else {
            panic!()
        };
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].uri, "sip:a@h;transport=udp");
        assert_eq!(
            l[0].instance.as_deref(),
            Some("<urn:uuid:00000000-0000-1000-8000-AABBCCDDEEFF>")
        );
        assert_eq!(l[0].reg_id, Some(1));
        assert_eq!(l[0].q, Some(500));
        assert_eq!(l[1].uri, "sip:b@h");
        assert_eq!(l[1].expires, Some(Some(0)));
        assert_eq!(l[2].expires, Some(None));
    }

    #[test]
    fn star_and_errors() {
        assert_eq!(parse_contacts(&[]).unwrap(), Contacts::None);
        assert_eq!(parse_contacts(&[" * "]).unwrap(), Contacts::Star);
        assert_eq!(
            parse_contacts(&["*", "<sip:a@h>"]),
            Err(ContactError::StarWithOthers)
        );
        assert_eq!(
            parse_contacts(&["*, <sip:a@h>"]),
            Err(ContactError::StarWithOthers)
        );
        for bad in [
            "<sip:a@h",
            "\"x <sip:a@h>",
            "<sip:a@h>;q=2",
            "<sip:a@h>;q=0.1234",
            "<sip:a@h>;reg-id=0",
            "<sip:a@h> junk",
            "<sip:a@h>,,<sip:b@h>",
            "<>",
        ] {
            assert!(parse_contacts(&[bad]).is_err(), "{bad}");
        }
        assert_eq!(parse_q("1"), Some(1000));
        assert_eq!(parse_q("0.05"), Some(50));
        assert_eq!(parse_q("1.000"), Some(1000));
        assert_eq!(parse_q("1.5"), None);
    }
}
