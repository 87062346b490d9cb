//! Digest hash computations (RFC 3261 §22.4, RFC 7616 §3.4.1, RFC 8760).

use md5::Md5;
use sha2::{Digest, Sha256};

/// A digest algorithm rtcgate accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// `MD5` (the default when `algorithm` is absent; the only one SIP.js speaks).
    Md5,
    /// `SHA-256` (RFC 8760).
    Sha256,
}

impl Algorithm {
    /// Parses the `algorithm` parameter; `None` (absent) means MD5. `-sess` variants
    /// are not offered, so they are not accepted either.
    pub fn from_param(value: Option<&str>) -> Option<Self> {
        match value {
            None => Some(Self::Md5),
            Some(v) if v.eq_ignore_ascii_case("MD5") => Some(Self::Md5),
            Some(v) if v.eq_ignore_ascii_case("SHA-256") => Some(Self::Sha256),
            Some(_) => None,
        }
    }

    /// The spelling used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "MD5",
            Self::Sha256 => "SHA-256",
        }
    }

    /// Lower-case hex hash of `data`.
    pub fn hash_hex(self, data: &[u8]) -> String {
        match self {
            Self::Md5 => hex::encode(Md5::digest(data)),
            Self::Sha256 => hex::encode(Sha256::digest(data)),
        }
    }
}

/// HA1 = H(username ":" realm ":" password), the value stored per subscriber.
pub fn ha1(alg: Algorithm, username: &str, realm: &str, password: &str) -> String {
    alg.hash_hex(format!("{username}:{realm}:{password}").as_bytes())
}

/// The expected `response` for the given HA1 and request.
///
/// `qop` is `Some((nc_as_sent, cnonce, qop))` for qop=auth and `None` for RFC 2069 style.
pub fn response(
    alg: Algorithm,
    ha1: &str,
    nonce: &str,
    method: &str,
    digest_uri: &str,
    qop: Option<(&str, &str, &str)>,
) -> String {
    let ha2 = alg.hash_hex(format!("{method}:{digest_uri}").as_bytes());
    let kd = match qop {
        Some((nc, cnonce, qop)) => format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"),
        None => format!("{ha1}:{nonce}:{ha2}"),
    };
    alg.hash_hex(kd.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7616 §3.9.1 example (HTTP, so method GET; same construction as SIP).
    #[test]
    fn rfc7616_examples() {
        let nonce = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
        let uri = "/dir/index.html";
        let q = Some((
            "00000001",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            "auth",
        ));
        let h = ha1(
            Algorithm::Md5,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        assert_eq!(
            response(Algorithm::Md5, &h, nonce, "GET", uri, q),
            "8ca523f5e9506fed4657c9700eebdbec"
        );
        let h = ha1(
            Algorithm::Sha256,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        assert_eq!(
            response(Algorithm::Sha256, &h, nonce, "GET", uri, q),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    /// The SIP.js REGISTER and INVITE captured in /work/shared/fixtures (password s3cret).
    #[test]
    fn sipjs_fixture_responses() {
        let h = ha1(Algorithm::Md5, "2000", "127.0.0.1", "s3cret");
        let nonce = "awQNVmsEDCoaRlsFmV94sa2GKKCVtBXA";
        assert_eq!(
            response(Algorithm::Md5, &h, nonce, "REGISTER", "sip:127.0.0.1", None),
            "460d0fb312bb90725837e4b4738c4360"
        );
        assert_eq!(
            response(
                Algorithm::Md5,
                &h,
                nonce,
                "INVITE",
                "sip:1001@127.0.0.1",
                None
            ),
            "021f6a18c459db4cc6ed137985bf1fa6"
        );
    }
}
