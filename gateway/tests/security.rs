//! Security tests (issue #11, hardening) with the real parts: no open relay
//! (foreign Request-URI, Route pointing elsewhere, fake in-dialog requests,
//! forged flow tokens), forged in-dialog requests that must neither reach
//! the PBX nor end the real call's media, TLS below 1.2 refused on WSS,
//! replayed and forged digest nonces over WebSocket, and Origin edge cases on
//! WS and WSS. Registrar-level replay: `store_backends::*::replayed_nonce_is_refused`;
//! SQL metacharacters end to end: `security_db`.

mod common;

use std::time::{Duration, Instant};

use common::rtpengine::{Daemon, need_rtpengine};
use common::*;
use rtcgate::config::StaticRoute;
use tokio::net::UdpSocket;

/// A third party on another loopback address: it must never hear from us.
async fn third_party() -> UdpSocket {
    UdpSocket::bind("127.0.0.3:0").await.unwrap()
}

async fn hears_nothing(sock: &UdpSocket, within: Duration) {
    let mut buf = vec![0u8; 65_535];
    if let Ok(Ok((n, from))) = tokio::time::timeout(within, sock.recv_from(&mut buf)).await {
        panic!(
            "relayed to the third party from {from}:\n{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
}

fn request(method: &str, ruri: &str, extra: &str, to_tag: Option<&str>, n: &str) -> String {
    let to_tag = to_tag.map(|t| format!(";tag={t}")).unwrap_or_default();
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/WS br.invalid;branch=z9hG4bKsec{n}\r\nMax-Forwards: 70\r\n{extra}From: <sip:2000@localhost>;tag=f{n}\r\nTo: <sip:1001@localhost>{to_tag}\r\nCall-ID: sec{n}@x\r\nCSeq: 1 {method}\r\nContact: <sip:a@br.invalid;transport=ws>\r\nContent-Length: 0\r\n\r\n"
    )
}

#[tokio::test]
async fn open_relay_attempts_are_refused_and_never_forwarded() {
    let victim = third_party().await;
    let v = victim.local_addr().unwrap();
    let gw = TestGateway::start_with(|c| c.auth.required = true).await;
    let me = gw.udp();
    let cases: Vec<(String, u16)> = vec![
        // Request-URI at a third-party host.
        (
            request("INVITE", &format!("sip:1001@{v}"), "", None, "a"),
            403,
        ),
        (
            request("MESSAGE", &format!("sip:x@{v}"), "", None, "b"),
            403,
        ),
        // Our domain, but a preloaded Route elsewhere.
        (
            request(
                "INVITE",
                "sip:1001@localhost",
                &format!("Route: <sip:{v};lr>\r\n"),
                None,
                "c",
            ),
            403,
        ),
        // Our own Route entry first, then elsewhere.
        (
            request(
                "MESSAGE",
                "sip:1001@localhost",
                &format!("Route: <sip:{me};lr>, <sip:{v};lr>\r\n"),
                None,
                "d",
            ),
            403,
        ),
        // A fake in-dialog request (To tag) straight at the third party.
        (
            request("INVITE", &format!("sip:x@{v}"), "", Some("forged"), "e"),
            481,
        ),
        (
            request("BYE", &format!("sip:x@{v}"), "", Some("forged"), "f"),
            481,
        ),
        // A forged flow token in our Route entry, Request-URI elsewhere.
        (
            request(
                "MESSAGE",
                &format!("sip:x@{v}"),
                &format!("Route: <sip:f1.0123456789abcdef@{me};lr>\r\n"),
                None,
                "g",
            ),
            403,
        ),
        (
            request(
                "BYE",
                &format!("sip:x@{v}"),
                &format!("Route: <sip:f1.0123456789abcdef@{me};lr>\r\n"),
                Some("forged"),
                "h",
            ),
            481,
        ),
    ];
    // From an unauthenticated browser...
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    for (msg, want) in &cases {
        ws_send(&mut ws, msg).await;
        let (r, _) = ws_final(&mut ws).await;
        assert_eq!(sip_status(&r), Some(*want), "for\n{msg}\ngot\n{r}");
    }
    // ... and from an untrusted UDP source.
    let udp = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    for (msg, want) in &cases {
        let msg = msg.replace("SIP/2.0/WS br.invalid", "SIP/2.0/UDP 127.0.0.2");
        udp.send_to(msg.as_bytes(), me).await.unwrap();
        let r = udp_final(&udp).await;
        assert_eq!(sip_status(&r), Some(*want), "for\n{msg}\ngot\n{r}");
    }
    hears_nothing(&victim, Duration::from_millis(500)).await;
}

/// A real call through rtpengine to a sipp PBX; an attacker (another
/// WebSocket and an untrusted UDP source) sends BYEs and re-INVITEs with
/// the right Call-ID but wrong tags or forged Route/flow tokens: all get
/// 481, the PBX sees only the real INVITE and BYE, and the media session
/// survives until the real BYE.
#[tokio::test]
async fn forged_in_dialog_requests_never_reach_the_pbx() {
    let Some(bin) = need_rtpengine() else { return };
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let rtp = Daemon::start(&bin);
    let Some(pbx) = SippRun::spawn("uas.xml", &["-m", "1"]) else {
        return;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ng = rtp.ng;
    let port = pbx.port;
    let gw = TestGateway::start_with(|c| {
        c.rtpengine = rtp.config();
        c.rtpengine.enabled = true;
        c.rtpengine.instances = vec![rtcgate::media::RtpengineInstance {
            address: ng,
            weight: 1,
        }];
        c.routes = vec![StaticRoute {
            prefix: "1".into(),
            destination: format!("127.0.0.1:{port}").parse().unwrap(),
            codec_policy: None,
        }];
    })
    .await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    ws_send(&mut ws, &ws_invite("real", "1001", &webrtc_offer())).await;
    let (ok, seen) = ws_final(&mut ws).await;
    assert_eq!(sip_status(&ok), Some(200), "{seen:?} {ok}");
    ws_send(&mut ws, &ws_in_dialog("ACK", 1, "real", &ok)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rtp.calls().len(), 1);

    let genuine = ws_in_dialog("BYE", 2, "real", &ok);
    let pbx_tag = sip_header(&ok, "To");
    let pbx_tag = pbx_tag.rsplit("tag=").next().unwrap().to_owned();
    let forgeries = [
        // Wrong From tag (the attacker guesses the Call-ID only).
        genuine.replace(";tag=freal", ";tag=attacker"),
        // Wrong To tag.
        genuine.replace(&format!("tag={pbx_tag}"), "tag=guess"),
        // A re-INVITE with a wrong From tag.
        genuine
            .replace("BYE sip:", "INVITE sip:")
            .replace("CSeq: 2 BYE", "CSeq: 3 INVITE")
            .replace(";tag=freal", ";tag=attacker"),
        // Forged flow token in the Route, wrong tag.
        {
            let me = gw.ws();
            let routes: String = sip_header_values(&genuine, "Route")
                .iter()
                .map(|r| format!("Route: {r}\r\n"))
                .collect();
            genuine
                .replace(
                    &routes,
                    &format!("Route: <sip:f7.ffffffffffffffff@{me};transport=ws;lr>\r\n"),
                )
                .replace(";tag=freal", ";tag=attacker")
        },
    ];
    let mut attacker = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let udp = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    for (i, f) in forgeries.iter().enumerate() {
        let f = f.replace("branch=z9hG4bK", &format!("branch=z9hG4bKforged{i}"));
        ws_send(&mut attacker, &f).await;
        let (r, _) = ws_final(&mut attacker).await;
        assert_eq!(sip_status(&r), Some(481), "for\n{f}\ngot\n{r}");
        let f = f.replace("SIP/2.0/WSS br.invalid", "SIP/2.0/UDP 127.0.0.2");
        udp.send_to(f.as_bytes(), gw.udp()).await.unwrap();
        let r = udp_final(&udp).await;
        assert_eq!(sip_status(&r), Some(481), "for\n{f}\ngot\n{r}");
    }
    // The real call is untouched: media still there.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rtp.calls().len(), 1, "a forged BYE ended the media");

    ws_send(&mut ws, &genuine).await;
    let r = ws_recv(&mut ws).await;
    assert_eq!(sip_status(&r), Some(200), "{r}");
    let (sipp_ok, log) = pbx.finish_with_logs(Duration::from_secs(15)).await;
    assert!(sipp_ok, "the PBX scenario failed");
    let count = |m: &str| log.matches(&format!("\n{m} sip:")).count();
    assert_eq!(count("INVITE"), 1, "the PBX saw a forged INVITE:\n{log}");
    assert_eq!(count("BYE"), 1, "the PBX saw a forged BYE:\n{log}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !rtp.calls().is_empty() {
        assert!(Instant::now() < deadline, "session left in rtpengine");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `openssl s_client` limited to one protocol version; true if the
/// handshake completed.
async fn handshake(addr: std::net::SocketAddr, version: &str) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new("openssl")
            .args(["s_client", "-connect", &addr.to_string(), version])
            // Let OpenSSL 3 offer the old versions at all.
            .args(["-cipher", "DEFAULT@SECLEVEL=0", "-servername", "localhost"])
            .stdin(std::process::Stdio::null())
            .output(),
    )
    .await
    .expect("openssl s_client hung")
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let done =
        out.status.success() && text.contains("Cipher is ") && !text.contains("Cipher is (NONE)");
    (done, text)
}

#[tokio::test]
async fn tls_below_1_2_is_refused_on_wss() {
    if !require("openssl", which("openssl").is_some()) {
        return;
    }
    let gw = TestGateway::start().await;
    for v in ["-tls1", "-tls1_1"] {
        let (done, text) = handshake(gw.wss(), v).await;
        assert!(!done, "{v} handshake succeeded:\n{text}");
    }
    // The control: the same client completes 1.2 and 1.3.
    for v in ["-tls1_2", "-tls1_3"] {
        let (done, text) = handshake(gw.wss(), v).await;
        assert!(done, "{v} handshake failed:\n{text}");
    }
}

/// The HTTP status of a SIP WebSocket upgrade with these extra headers
/// (101 when it opened), on WS (`ca` None) or WSS.
async fn upgrade_status(
    addr: std::net::SocketAddr,
    ca: Option<&std::path::Path>,
    origins: &[&str],
) -> u16 {
    let mut headers = vec![("Sec-WebSocket-Protocol", "sip")];
    headers.extend(origins.iter().map(|o| ("Origin", *o)));
    match ws_connect_with_headers(addr, ca, &headers).await {
        Ok(_) => 101,
        Err(code) => code,
    }
}

/// Origins are compared as RFC 6454 tuples on both listeners: case, default
/// ports and a trailing slash do not matter; a path, query or userinfo,
/// `null`, look-alike hosts and two Origin headers are refused (403);
/// `require_origin` decides about a missing Origin; `*` lets anything in.
#[tokio::test]
async fn origin_spoofing_edge_cases_on_ws_and_wss() {
    let allowed = vec![
        "https://example.com".to_owned(),
        "http://LocalHost:8080/".to_owned(),
    ];
    let list = allowed.clone();
    let gw = TestGateway::start_with(move |c| c.websocket.allowed_origins = list).await;
    let ca = gw.ca();
    let cases: &[(&[&str], u16)] = &[
        (&["https://example.com"], 101),
        (&["HTTPS://EXAMPLE.COM"], 101),
        (&["https://Example.Com:443"], 101),
        (&["https://example.com/"], 101),
        (&["http://localhost:8080"], 101),
        (&["http://LOCALHOST:8080/"], 101),
        // No Origin: a non-browser client, allowed unless require_origin.
        (&[], 101),
        (&["https://example.com/app"], 403),
        (&["https://example.com/?x=1"], 403),
        (&["https://example.com?x=1"], 403),
        (&["https://user@example.com"], 403),
        (&["https://example.com@evil.test"], 403),
        (&["https://example.com:8443"], 403),
        (&["http://example.com"], 403),
        (&["http://localhost"], 403),
        (&["null"], 403),
        (&["https://example.com.evil.test"], 403),
        (&["https://evil-example.com"], 403),
        (&["https://example.com, https://evil.test"], 403),
        // Two Origin headers, even when both are allowed.
        (&["https://example.com", "https://evil.test"], 403),
        (&["https://evil.test", "https://example.com"], 403),
        (&["https://example.com", "https://example.com"], 403),
    ];
    for (addr, tls) in [(gw.ws(), None), (gw.wss(), Some(ca.as_path()))] {
        for (origins, want) in cases {
            let got = upgrade_status(addr, tls, origins).await;
            assert_eq!(got, *want, "{origins:?} on {addr} (tls {})", tls.is_some());
        }
    }

    let list = allowed.clone();
    let strict = TestGateway::start_with(move |c| {
        c.websocket.allowed_origins = list;
        c.websocket.require_origin = true;
    })
    .await;
    let ca = strict.ca();
    for (addr, tls) in [(strict.ws(), None), (strict.wss(), Some(ca.as_path()))] {
        assert_eq!(upgrade_status(addr, tls, &[]).await, 403, "no Origin");
        assert_eq!(
            upgrade_status(addr, tls, &["https://example.com"]).await,
            101
        );
        assert_eq!(upgrade_status(addr, tls, &["null"]).await, 403);
    }

    let any = TestGateway::start_with(|c| c.websocket.allowed_origins = vec!["*".into()]).await;
    let ca = any.ca();
    for (addr, tls) in [(any.ws(), None), (any.wss(), Some(ca.as_path()))] {
        assert_eq!(
            upgrade_status(addr, tls, &["null"]).await,
            101,
            "null with *"
        );
        assert_eq!(upgrade_status(addr, tls, &["https://evil.test"]).await, 101);
        assert_eq!(upgrade_status(addr, tls, &[]).await, 101);
    }
}

const PASSWORD: &str = "s3cret";

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A REGISTER of `user@localhost` from a WebSocket client binding `contact`.
fn ws_register(user: &str, cseq: u32, branch: &str, contact: &str, auth: Option<&str>) -> String {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/WSS ua.invalid;branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\nTo: <sip:{user}@localhost>\r\nFrom: <sip:{user}@localhost>;tag=reg{branch}\r\nCall-ID: reg-{user}@ua.invalid\r\nCSeq: {cseq} REGISTER\r\nContact: <{contact}>;expires=600\r\n{auth}Content-Length: 0\r\n\r\n"
    )
}

/// The MD5 challenge of a 401 (SIP.js answers the last one).
fn md5_challenge(resp: &str) -> String {
    sip_header_values(resp, "WWW-Authenticate")
        .into_iter()
        .find(|c| c.contains("MD5"))
        .unwrap_or_else(|| panic!("no MD5 challenge in\n{resp}"))
}

/// A digest challenge as the gateway would word it, with any realm/nonce.
fn forged_challenge(realm: &str, nonce: &str, opaque: Option<&str>) -> String {
    let opaque = opaque
        .map(|o| format!(", opaque=\"{o}\""))
        .unwrap_or_default();
    format!("Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm=MD5, qop=\"auth\"{opaque}")
}

/// Replayed and forged digest credentials over WebSocket: the same
/// Authorization twice (same nonce and nc, also from another connection with
/// another Contact), a nonce never issued, one with a flipped character, one
/// issued by another gateway (another realm and secret), and credentials for a
/// realm not ours. Each is answered 401 with a fresh challenge (`stale=true`
/// for the replay, as `auth::AuthFailure::action` says) and writes nothing to
/// the location table.
#[tokio::test]
async fn replayed_and_forged_nonces_are_rechallenged_over_websocket() {
    let gw = TestGateway::start_with(|c| c.auth.required = true).await;
    let store = gw.app.location.store().clone();
    store
        .add_subscriber("1001", "localhost", PASSWORD, false, unix_now())
        .await
        .unwrap();
    let good_contact = "sip:good@ua.invalid;transport=ws";
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    ws_send(&mut ws, &ws_register("1001", 1, "r1", good_contact, None)).await;
    let first = ws_recv(&mut ws).await;
    assert_eq!(sip_status(&first), Some(401), "{first}");
    let challenge = md5_challenge(&first);
    let realm = digest_param(&challenge, "realm").unwrap().to_owned();
    let nonce = digest_param(&challenge, "nonce").unwrap().to_owned();
    let opaque = digest_param(&challenge, "opaque").map(str::to_owned);
    let auth = digest_authorization(&challenge, "1001", PASSWORD, "REGISTER", "sip:localhost", 1);
    ws_send(
        &mut ws,
        &ws_register("1001", 2, "r2", good_contact, Some(&auth)),
    )
    .await;
    let ok = ws_recv(&mut ws).await;
    assert_eq!(sip_status(&ok), Some(200), "{ok}");
    let bound = || async {
        let mut contacts: Vec<String> = store
            .list_all_bindings(unix_now())
            .await
            .unwrap()
            .into_iter()
            .map(|b| b.contact)
            .collect();
        contacts.sort();
        contacts
    };
    assert_eq!(bound().await, vec![good_contact.to_owned()]);

    // A nonce from another gateway (own realm and random secret).
    let other = TestGateway::start_with(|c| {
        c.auth.required = true;
        c.general.domains = vec!["other.test".into()];
    })
    .await;
    let mut ows = ws_connect(other.ws(), None, Some("sip"), None)
        .await
        .unwrap();
    let reg = ws_register("1001", 1, "o1", good_contact, None).replace("localhost", "other.test");
    ws_send(&mut ows, &reg).await;
    let other_challenge = md5_challenge(&ws_recv(&mut ows).await);
    let other_nonce = digest_param(&other_challenge, "nonce").unwrap().to_owned();
    assert_ne!(other_nonce, nonce);

    // One character of our nonce changed (base64url: another valid digit).
    let mut flipped: Vec<char> = nonce.chars().collect();
    let mid = flipped.len() / 2;
    flipped[mid] = if flipped[mid] == 'A' { 'B' } else { 'A' };
    let flipped: String = flipped.into_iter().collect();
    // A well-formed nonce we never issued (same length, random bytes).
    let never: String = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    };
    let with_nonce = |n: &str| {
        digest_authorization(
            &forged_challenge(&realm, n, opaque.as_deref()),
            "1001",
            PASSWORD,
            "REGISTER",
            "sip:localhost",
            1,
        )
    };
    let evil_contact = "sip:evil@attacker.invalid;transport=ws";
    let foreign_realm = digest_authorization(
        &forged_challenge("evil.test", &nonce, opaque.as_deref()),
        "1001",
        PASSWORD,
        "REGISTER",
        "sip:localhost",
        2,
    );
    // (what, Authorization, stale=true expected)
    let attempts: Vec<(&str, String, bool)> = vec![
        ("the same Authorization again", auth.clone(), true),
        ("a nonce never issued", with_nonce(&never), false),
        (
            "a nonce with a flipped character",
            with_nonce(&flipped),
            false,
        ),
        (
            "a nonce of another realm's gateway",
            with_nonce(&other_nonce),
            false,
        ),
        ("credentials for a realm not ours", foreign_realm, false),
    ];
    let mut attacker = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    for (i, (what, a, stale)) in attempts.iter().enumerate() {
        // From the genuine connection (same Contact) and from an attacker's.
        for (conn, contact, name) in [
            (&mut ws, good_contact, "same flow"),
            (&mut attacker, evil_contact, "another flow"),
        ] {
            let cseq = 3 + u32::try_from(i).unwrap();
            let msg = ws_register(
                "1001",
                cseq,
                &format!("x{i}{}", name.len()),
                contact,
                Some(a),
            );
            ws_send(conn, &msg).await;
            let r = ws_recv(conn).await;
            assert_eq!(
                sip_status(&r),
                Some(401),
                "{what} ({name}) was not refused:\n{r}"
            );
            let fresh = md5_challenge(&r);
            let fresh_nonce = digest_param(&fresh, "nonce").unwrap();
            assert_ne!(fresh_nonce, nonce, "{what}: not a fresh challenge");
            assert_eq!(digest_param(&fresh, "realm"), Some(realm.as_str()));
            assert_eq!(
                digest_param(&fresh, "stale") == Some("true"),
                *stale,
                "{what} ({name}): stale flag in {fresh}"
            );
        }
    }
    // Nothing written: only the genuine binding, unchanged.
    assert_eq!(bound().await, vec![good_contact.to_owned()]);
    let binding = store
        .list_bindings("sip:1001@localhost")
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        binding.cseq, 2,
        "the binding was refreshed by a refused REGISTER"
    );
}
