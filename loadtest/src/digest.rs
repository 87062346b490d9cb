//! The client side of HTTP digest (RFC 2617 / RFC 7616 / RFC 8760) as SIP
//! uses it: answer a `WWW-Authenticate`/`Proxy-Authenticate` challenge.

use md5::{Digest as _, Md5};
use sha2::Sha256;

/// A parsed digest challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `opaque`, echoed back when present.
    pub opaque: Option<String>,
    /// `algorithm` (default MD5).
    pub algorithm: String,
    /// Whether `qop` offers `auth`.
    pub qop_auth: bool,
}

/// Why a challenge could not be answered.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    /// Not a `Digest` challenge, or realm/nonce missing.
    #[error("malformed digest challenge: {0}")]
    Malformed(String),
    /// An algorithm other than MD5 and SHA-256.
    #[error("unsupported digest algorithm {0}")]
    Algorithm(String),
}

fn params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([' ', ',', '\t']);
        let Some(eq) = rest.find('=') else { break };
        let key = rest[..eq].trim().to_ascii_lowercase();
        rest = &rest[eq + 1..];
        let value;
        if let Some(stripped) = rest.strip_prefix('"') {
            let end = stripped.find('"').unwrap_or(stripped.len());
            value = stripped[..end].to_string();
            rest = stripped.get(end + 1..).unwrap_or("");
        } else {
            let end = rest.find(',').unwrap_or(rest.len());
            value = rest[..end].trim().to_string();
            rest = &rest[end..];
        }
        out.push((key, value));
    }
    out
}

impl Challenge {
    /// Parses a challenge header value.
    pub fn parse(value: &str) -> Result<Challenge, DigestError> {
        let rest = value
            .trim()
            .strip_prefix("Digest")
            .ok_or_else(|| DigestError::Malformed(value.to_string()))?;
        let p = params(rest);
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        let realm = get("realm").ok_or_else(|| DigestError::Malformed(value.to_string()))?;
        let nonce = get("nonce").ok_or_else(|| DigestError::Malformed(value.to_string()))?;
        Ok(Challenge {
            realm,
            nonce,
            opaque: get("opaque"),
            algorithm: get("algorithm").unwrap_or_else(|| "MD5".into()),
            qop_auth: get("qop").is_some_and(|q| q.split(',').any(|x| x.trim() == "auth")),
        })
    }

    /// Picks the best challenge the client can answer: SHA-256 over MD5.
    pub fn best<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Challenge, DigestError> {
        let mut best: Option<Challenge> = None;
        let mut last_err = DigestError::Malformed("no challenge".into());
        for v in values {
            match Challenge::parse(v) {
                Ok(c) if hash_len(&c.algorithm).is_some() => {
                    let better = match &best {
                        None => true,
                        Some(b) => b.algorithm.eq_ignore_ascii_case("MD5"),
                    };
                    if better {
                        best = Some(c);
                    }
                }
                Ok(c) => last_err = DigestError::Algorithm(c.algorithm),
                Err(e) => last_err = e,
            }
        }
        best.ok_or(last_err)
    }

    /// The Authorization value for `method uri` as `user`/`password`; `nc`
    /// and `cnonce` are used only when the challenge offers qop=auth.
    pub fn answer(
        &self,
        user: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> Result<String, DigestError> {
        let h = |s: String| -> Result<String, DigestError> {
            match hash_len(&self.algorithm) {
                Some(Algo::Md5) => Ok(hex::encode(Md5::digest(s.as_bytes()))),
                Some(Algo::Sha256) => Ok(hex::encode(Sha256::digest(s.as_bytes()))),
                None => Err(DigestError::Algorithm(self.algorithm.clone())),
            }
        };
        let ha1 = h(format!("{user}:{}:{password}", self.realm))?;
        let ha2 = h(format!("{method}:{uri}"))?;
        let mut v = format!(
            "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", algorithm={}",
            self.realm, self.nonce, self.algorithm
        );
        if self.qop_auth {
            let nc = format!("{nc:08x}");
            let resp = h(format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))?;
            v.push_str(&format!(
                ", qop=auth, nc={nc}, cnonce=\"{cnonce}\", response=\"{resp}\""
            ));
        } else {
            let resp = h(format!("{ha1}:{}:{ha2}", self.nonce))?;
            v.push_str(&format!(", response=\"{resp}\""));
        }
        if let Some(o) = &self.opaque {
            v.push_str(&format!(", opaque=\"{o}\""));
        }
        Ok(v)
    }
}

enum Algo {
    Md5,
    Sha256,
}

fn hash_len(alg: &str) -> Option<Algo> {
    if alg.eq_ignore_ascii_case("MD5") {
        Some(Algo::Md5)
    } else if alg.eq_ignore_ascii_case("SHA-256") {
        Some(Algo::Sha256)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response_of(v: &str) -> String {
        params(v.strip_prefix("Digest").unwrap())
            .into_iter()
            .find(|(k, _)| k == "response")
            .unwrap()
            .1
    }

    // RFC 7616 section 3.9.1 (SHA-256 and MD5, qop=auth).
    const RFC7616_SHA: &str = "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", \
        algorithm=SHA-256, nonce=\"7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v\", \
        opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\"";

    #[test]
    fn rfc7616_vectors() {
        let c = Challenge::parse(RFC7616_SHA).unwrap();
        assert!(c.qop_auth);
        let a = c
            .answer(
                "Mufasa",
                "Circle of Life",
                "GET",
                "/dir/index.html",
                1,
                "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            )
            .unwrap();
        assert_eq!(
            response_of(&a),
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
        let md5 = Challenge::parse(&RFC7616_SHA.replace("SHA-256", "MD5")).unwrap();
        let a = md5
            .answer(
                "Mufasa",
                "Circle of Life",
                "GET",
                "/dir/index.html",
                1,
                "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            )
            .unwrap();
        assert_eq!(response_of(&a), "8ca523f5e9506fed4657c9700eebdbec");
        assert!(a.contains("nc=00000001"));
        assert!(a.contains("opaque=\"FQhe"));
    }

    #[test]
    fn rfc2617_without_qop() {
        // RFC 2617's example, computed without qop (RFC 2069 style).
        let c = Challenge::parse(
            "Digest realm=\"testrealm@host.com\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\"",
        )
        .unwrap();
        let a = c
            .answer("Mufasa", "Circle Of Life", "GET", "/dir/index.html", 1, "x")
            .unwrap();
        assert_eq!(response_of(&a), "670fd8c2df070c60b045671b8b24ff02");
        assert!(!a.contains("qop"));
    }

    #[test]
    fn picks_sha256_and_refuses_garbage() {
        let md5 = "Digest realm=\"r\", nonce=\"n\", algorithm=MD5";
        let sha = "Digest realm=\"r\", nonce=\"n\", algorithm=SHA-256";
        assert_eq!(Challenge::best([md5, sha]).unwrap().algorithm, "SHA-256");
        assert_eq!(Challenge::best([md5]).unwrap().algorithm, "MD5");
        assert!(matches!(
            Challenge::best(["Basic realm=x"]),
            Err(DigestError::Malformed(_))
        ));
        assert!(matches!(
            Challenge::best(["Digest realm=\"r\", nonce=\"n\", algorithm=SHA-512-256"]),
            Err(DigestError::Algorithm(_))
        ));
        assert!(Challenge::parse("Digest realm=\"unterminated").is_err());
    }
}
