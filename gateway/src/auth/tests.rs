use super::*;

const REALM: &str = "127.0.0.1";
const PASSWORD: &str = "s3cret";

fn auth() -> DigestAuth {
    DigestAuth::new(AuthConfig::new(REALM), [42; 32])
}

fn lookup(user: &str, realm: &str, alg: Algorithm) -> Option<String> {
    (user == "2000").then(|| ha1(alg, user, realm, PASSWORD))
}

/// What a client would send: picks the challenge value for `alg`, computes the response.
fn answer(
    ch: &Challenge,
    alg: Algorithm,
    method: &str,
    uri: &str,
    nc: Option<u32>,
    password: &str,
) -> String {
    let value = ch
        .values
        .iter()
        .find(|v| v.contains(&format!("algorithm={}", alg.as_str())))
        .unwrap();
    let params = params::parse_auth_params(value.strip_prefix("Digest ").unwrap()).unwrap();
    let get = |n: &str| {
        params
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    let (nonce, opaque, realm) = (get("nonce"), get("opaque"), get("realm"));
    let h = ha1(alg, "2000", &realm, password);
    match nc {
        Some(nc) => {
            let ncs = format!("{nc:08x}");
            let r = response(
                alg,
                &h,
                &nonce,
                method,
                uri,
                Some((&ncs, "0a4f113b", "auth")),
            );
            format!(
                "Digest username=\"2000\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\", algorithm={}, qop=auth, nc={ncs}, cnonce=\"0a4f113b\", opaque=\"{opaque}\"",
                alg.as_str()
            )
        }
        None => {
            let r = response(alg, &h, &nonce, method, uri, None);
            format!(
                "Digest algorithm={}, username=\"2000\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\"",
                alg.as_str()
            )
        }
    }
}

#[test]
fn challenge_lists_sha256_first_md5_last() {
    let a = auth();
    let ch = a.challenge_with_random(1000, "REGISTER", false, [1; 8]);
    assert_eq!(ch.kind, ChallengeKind::Www);
    assert_eq!(ch.kind.status(), 401);
    assert_eq!(ch.values.len(), 2);
    assert!(ch.values[0].contains("algorithm=SHA-256"));
    assert!(ch.values[1].contains("algorithm=MD5"));
    assert!(
        ch.values
            .iter()
            .all(|v| v.contains("qop=\"auth\"") && v.contains("realm=\"127.0.0.1\""))
    );
    assert!(ch.values.iter().all(|v| !v.contains("stale")));
    let st = a.challenge(1000, "INVITE", true);
    assert_eq!(st.kind, ChallengeKind::Proxy);
    assert_eq!(st.kind.challenge_header(), "Proxy-Authenticate");
    assert!(st.values.iter().all(|v| v.ends_with("stale=true")));
    assert_eq!(st.headers().len(), 2);
}

#[test]
fn md5_and_sha256_with_hex_nc() {
    let mut a = auth();
    for alg in [Algorithm::Md5, Algorithm::Sha256] {
        let ch = a.challenge(1000, "REGISTER", false);
        for nc in [1u32, 2, 0x0a, 0xff, 0x100, 0x1234] {
            let h = answer(&ch, alg, "REGISTER", "sip:127.0.0.1", Some(nc), PASSWORD);
            let ok = a
                .verify(1001, "REGISTER", "sip:127.0.0.1", &[&h], lookup)
                .unwrap();
            assert_eq!(ok.username, "2000");
            assert_eq!(ok.algorithm, alg);
            assert_eq!(ok.nc, Some(nc));
        }
        // Same nc again, and a lower one: replay.
        for nc in [0x1234, 0x0a] {
            let h = answer(&ch, alg, "REGISTER", "sip:127.0.0.1", Some(nc), PASSWORD);
            let err = a
                .verify(1002, "REGISTER", "sip:127.0.0.1", &[&h], lookup)
                .unwrap_err();
            assert_eq!(err, AuthFailure::Replay);
            assert_eq!(err.action(), AuthAction::Challenge { stale: true });
        }
    }
}

#[test]
fn rfc2069_style_is_single_use() {
    let mut a = auth();
    let ch = a.challenge(1000, "INVITE", false);
    let h = answer(
        &ch,
        Algorithm::Md5,
        "INVITE",
        "sip:1001@127.0.0.1",
        None,
        PASSWORD,
    );
    assert!(
        a.verify(1000, "INVITE", "sip:1001@127.0.0.1", &[&h], lookup)
            .is_ok()
    );
    assert_eq!(
        a.verify(1001, "INVITE", "sip:1001@127.0.0.1", &[&h], lookup),
        Err(AuthFailure::Replay)
    );
}

#[test]
fn stale_wrong_unknown_realm_malformed() {
    let mut a = auth();
    let ch = a.challenge(1000, "REGISTER", false);
    let good = answer(
        &ch,
        Algorithm::Md5,
        "REGISTER",
        "sip:127.0.0.1",
        Some(1),
        PASSWORD,
    );
    let e = a
        .verify(1301, "REGISTER", "sip:127.0.0.1", &[&good], lookup)
        .unwrap_err();
    assert_eq!(e, AuthFailure::Stale);
    assert_eq!(e.action(), AuthAction::Challenge { stale: true });

    let bad = answer(
        &ch,
        Algorithm::Md5,
        "REGISTER",
        "sip:127.0.0.1",
        Some(1),
        "wrong",
    );
    let e = a
        .verify(1001, "REGISTER", "sip:127.0.0.1", &[&bad], lookup)
        .unwrap_err();
    assert_eq!(e, AuthFailure::WrongResponse);
    assert_eq!(e.action(), AuthAction::Forbidden);
    // The failed attempt did not burn nc=1.
    assert!(
        a.verify(1001, "REGISTER", "sip:127.0.0.1", &[&good], lookup)
            .is_ok()
    );

    let e = a
        .verify(
            1001,
            "REGISTER",
            "sip:127.0.0.1",
            &[&good.replace("\"2000\"", "\"2001\"")],
            lookup,
        )
        .unwrap_err();
    // The username changed, so the lookup fails before the hash is checked.
    assert_eq!(e, AuthFailure::UnknownUser);
    assert_eq!(e.action(), AuthAction::Forbidden);

    let other = good.replace("realm=\"127.0.0.1\"", "realm=\"elsewhere\"");
    assert_eq!(
        a.verify(1001, "REGISTER", "sip:127.0.0.1", &[&other], lookup),
        Err(AuthFailure::BadRealm)
    );
    assert_eq!(
        a.verify(1001, "REGISTER", "sip:127.0.0.1", &[], lookup),
        Err(AuthFailure::NoCredentials)
    );
    let e = a
        .verify(
            1001,
            "REGISTER",
            "sip:127.0.0.1",
            &["Digest username=\"2000\""],
            lookup,
        )
        .unwrap_err();
    assert_eq!(e.action(), AuthAction::BadRequest);
    let e = a
        .verify(1001, "REGISTER", "sip:other.example", &[&good], lookup)
        .unwrap_err();
    assert_eq!(e, AuthFailure::UriMismatch);
    let sess = good.replace("algorithm=MD5", "algorithm=MD5-sess");
    assert_eq!(
        a.verify(1001, "REGISTER", "sip:127.0.0.1", &[&sess], lookup),
        Err(AuthFailure::Unsupported)
    );
}

#[test]
fn sipjs_fixture_credentials_with_foreign_nonce_are_rechallenged() {
    let msg = std::fs::read_to_string(
        "/work/shared/fixtures/sip/reg-03_REGISTER-auth_browser-to-proxy_ws.sip",
    );
    let Ok(msg) = msg else {
        eprintln!("fixtures not available, skipping");
        return;
    };
    let line = msg
        .lines()
        .find(|l| l.starts_with("Authorization: "))
        .unwrap();
    let value = line.trim_start_matches("Authorization: ");
    let creds = parse_credentials(value).unwrap();
    // The captured hash is right for password s3cret ...
    let h = ha1(Algorithm::Md5, "2000", "127.0.0.1", PASSWORD);
    assert_eq!(
        response(
            Algorithm::Md5,
            &h,
            &creds.nonce,
            "REGISTER",
            &creds.uri,
            None
        ),
        creds.response
    );
    // ... but the nonce is Kamailio's, not ours: fresh challenge, not 403.
    let mut a = auth();
    let e = a
        .verify(1000, "REGISTER", "sip:127.0.0.1", &[value], lookup)
        .unwrap_err();
    assert_eq!(e, AuthFailure::BadNonce);
    assert_eq!(e.action(), AuthAction::Challenge { stale: false });
}
