//! `Authorization` / `Proxy-Authorization` values from an unauthenticated
//! client: the digest credentials parser and the full verifier.
//!
//! Input: UTF-8 text, one header value per line (a request may carry
//! several). To let the fuzzer get past the HMAC'd nonce and the hash
//! comparison, three placeholders are substituted before verification:
//! `NONCE` → a nonce this authenticator really issued, `OPAQUE` → its opaque,
//! and a `response` parameter whose value is `RESPONSE` → the correct digest
//! for the parsed credentials. The seeds use them; the fuzzer mutates around
//! them. Nothing here may panic.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use rtcgate::auth::params::parse_auth_params;
use rtcgate::auth::{
    Algorithm, AuthConfig, ChallengeKind, DigestAuth, parse_credentials, quote, response,
};

const REALM: &str = "127.0.0.1";
const NOW: i64 = 1_700_000_000;
const SECRET: [u8; 32] = [7; 32];
const METHOD: &str = "REGISTER";
const REQUEST_URI: &str = "sip:127.0.0.1";

/// The stored HA1 for any user: H("<user>:127.0.0.1:secret") for user 2000.
fn fixed_ha1(alg: Algorithm) -> String {
    rtcgate::auth::ha1(alg, "2000", REALM, "secret")
}

fn param<'a>(challenge: &'a str, name: &str) -> &'a str {
    let start = challenge.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
    let len = challenge[start..].find('"').unwrap();
    &challenge[start..start + len]
}

fuzz_target!(init: common::install_panic_hook(), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };

    // quote() is how we write realms into challenges: it must round-trip
    // through our own parser for any text.
    let quoted = format!("x={}", quote(text));
    let back = parse_auth_params(&quoted).expect("quote() output must parse");
    assert_eq!(back, vec![("x".to_string(), text.to_string())]);

    let mut config = AuthConfig::new(REALM);
    config.max_tracked_nonces = 4;
    let mut auth = DigestAuth::new(config, SECRET);
    let challenge = auth.challenge_with_random(NOW, METHOD, false, [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(challenge.kind, ChallengeKind::Www);
    let _ = challenge.headers();
    let nonce = param(&challenge.values[0], "nonce").to_owned();
    let opaque = param(&challenge.values[0], "opaque").to_owned();

    let mut values: Vec<String> = Vec::new();
    for line in text.lines() {
        let _ = parse_credentials(line);
        let line = line.replace("NONCE", &nonce).replace("OPAQUE", &opaque);
        let line = match parse_credentials(&line) {
            Ok(c) if c.response == "RESPONSE" => {
                let correct = Algorithm::from_param(c.algorithm.as_deref()).map(|alg| {
                    let qop = match (&c.qop, &c.nc_raw, &c.cnonce) {
                        (Some(q), Some(nc), Some(cn)) => Some((nc.as_str(), cn.as_str(), q.as_str())),
                        _ => None,
                    };
                    response(alg, &fixed_ha1(alg), &c.nonce, METHOD, &c.uri, qop)
                });
                match correct {
                    Some(r) => line.replace("RESPONSE", &r),
                    None => line,
                }
            }
            _ => line,
        };
        values.push(line);
    }
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let lookup = |user: &str, _realm: &str, alg: Algorithm| {
        (user == "2000").then(|| fixed_ha1(alg))
    };
    // First use, a replay, a later retry with the same nonce, then a stale one.
    for now in [NOW, NOW, NOW + 1, NOW + 100_000] {
        match auth.verify(now, METHOD, REQUEST_URI, &refs, lookup) {
            Ok(ok) => {
                let _ = (ok.username, ok.algorithm, ok.nc);
            }
            Err(e) => {
                let _ = (e.to_string(), e.action());
            }
        }
    }
    let _ = auth.tracked_nonces();
});
