//! Edge cases of `inspect`: limits, hold styles, SDES, mDNS, session-level inheritance,
//! ICE restart detection, and a mutation run over the fixtures.

mod common;

use common::fixture;
use rtcgate_sdp::{Direction, Limits, MediaProfile, SdpError, ice_restart_only, inspect};

const PLAIN: &str = "v=0\r\no=pbx 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8\r\na=sendrecv\r\n";

fn ok(s: &str) -> rtcgate_sdp::SdpInfo {
    inspect(s.as_bytes(), &Limits::default()).unwrap_or_else(|e| panic!("{e}\n{s}"))
}

#[test]
fn static_payload_types_get_names() {
    let i = ok(PLAIN);
    let c: Vec<(&str, u32)> = i.media[0]
        .codecs
        .iter()
        .map(|c| (c.name.as_str(), c.rate))
        .collect();
    assert_eq!(c, [("PCMU", 8000), ("PCMA", 8000)]);
}

#[test]
fn hold_styles() {
    assert!(!ok(PLAIN).on_hold());
    let i = ok(&PLAIN.replace("a=sendrecv", "a=sendonly"));
    assert!(i.on_hold());
    assert_eq!(i.media[0].direction, Direction::SendOnly);
    assert!(ok(&PLAIN.replace("a=sendrecv", "a=inactive")).on_hold());
    // recvonly is the answer to a hold, not a hold.
    assert!(!ok(&PLAIN.replace("a=sendrecv", "a=recvonly")).on_hold());
    // RFC 2543 style: c=0.0.0.0.
    assert!(ok(&PLAIN.replace("c=IN IP4 192.0.2.1", "c=IN IP4 0.0.0.0")).on_hold());
    // Session-level direction is inherited.
    let s = PLAIN
        .replace("a=sendrecv\r\n", "")
        .replace("t=0 0\r\n", "t=0 0\r\na=sendonly\r\n");
    assert_eq!(ok(&s).media[0].direction, Direction::SendOnly);
}

#[test]
fn sdes_and_mdns_and_session_level_ice() {
    let sdes = PLAIN.replace("RTP/AVP", "RTP/SAVP")
        + "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n";
    let i = ok(&sdes);
    assert!(i.media[0].has_crypto);
    assert_eq!(i.profile(), MediaProfile::SdesSrtp);
    assert!(i.ignored_lines >= 1, "webrtc-sdp ignores a=crypto");

    let webrtc = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijklmn\r\n\
a=fingerprint:sha-256 0C:0F:FC:AB:A7:0B:81:B5:D4:A6:7E:15:5D:EC:E1:2C:EE:97:F7:72:5A:CE:F6:FB:5D:B0:E7:38:BB:02:FD:C8\r\na=setup:actpass\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:111 opus/48000/2\r\na=rtcp-mux\r\na=sendrecv\r\n\
a=candidate:1 1 udp 2122260223 3f0c7e52-1d63-4e8f-9d7b-2a6e0d2b1c11.local 51000 typ host\r\n\
a=candidate:2 1 udp 1686052607 203.0.113.5 51000 typ srflx raddr 0.0.0.0 rport 0\r\n";
    let i = ok(webrtc);
    let m = &i.media[0];
    assert_eq!(
        i.profile(),
        MediaProfile::WebRtc,
        "session-level ICE and fingerprint count"
    );
    assert_eq!((m.ice.candidates, m.ice.mdns_candidates), (2, 1));
    assert_eq!(m.ice.ufrag.as_deref(), Some("abcd"));
    // Trickle-ICE style initial offer: c=0.0.0.0 port 9 but sendrecv. Counted as hold by
    // the RFC 2543 rule; callers check `is_webrtc()` first for browsers.
    assert!(m.on_hold);
}

#[test]
fn limits_are_enforced_with_sip_friendly_reasons() {
    let l = Limits::default();
    assert_eq!(inspect(b"", &l), Err(SdpError::Empty));
    let big = vec![b'a'; l.max_bytes + 1];
    assert!(matches!(inspect(&big, &l), Err(SdpError::TooLarge { .. })));
    let mut bad = PLAIN.as_bytes().to_vec();
    bad.extend_from_slice(b"a=x:\xff\xfe\r\n");
    assert!(matches!(inspect(&bad, &l), Err(SdpError::NotUtf8 { .. })));
    let long = format!("{PLAIN}a=x-long:{}\r\n", "y".repeat(2000));
    assert!(matches!(
        inspect(long.as_bytes(), &l),
        Err(SdpError::LineTooLong { line: 8, .. })
    ));
    let many = format!("{PLAIN}{}", "a=x:1\r\n".repeat(600));
    assert!(matches!(
        inspect(many.as_bytes(), &l),
        Err(SdpError::TooManyLines { max: 512 })
    ));
    let media = format!("{PLAIN}{}", "m=audio 4000 RTP/AVP 0\r\n".repeat(16));
    assert!(matches!(
        inspect(media.as_bytes(), &l),
        Err(SdpError::TooManyMedia { count: 17, .. })
    ));
    let no_t = PLAIN.replace("t=0 0\r\n", "");
    let err = inspect(no_t.as_bytes(), &l).unwrap_err();
    assert!(matches!(err, SdpError::Malformed { .. }), "{err}");
    let w = err.warning_text();
    assert!(w.contains("timing"), "{w}");
    let evil = PLAIN.replace("m=audio 4000 RTP/AVP 0 8", "m=audio \"x\\y\u{e9} RTP/AVP 0");
    let w = inspect(evil.as_bytes(), &l).unwrap_err().warning_text();
    assert!(
        w.len() <= 120 && w.chars().all(|c| c.is_ascii() && c != '"' && c != '\\'),
        "{w}"
    );
}

#[test]
fn ice_restart_is_told_apart_from_real_changes() {
    let base = String::from_utf8(fixture("out-1_offer_browser-to-proxy_webrtc.sdp")).unwrap();
    let old = ok(&base);
    let restart = base
        .replace("a=ice-ufrag:DjnD", "a=ice-ufrag:Zq9w")
        .replace(
            "a=ice-pwd:C+uBlwbwVFG1Y3hYiWzMRnoA",
            "a=ice-pwd:NEWpwdNEWpwdNEWpwdNEWpwd",
        )
        .replace("m=audio 51251", "m=audio 60000")
        .replace("127.0.0.1 51251 typ host", "127.0.0.1 60000 typ host");
    assert!(ice_restart_only(&old, &ok(&restart)));
    assert!(!ice_restart_only(&old, &old), "nothing changed");
    let hold = restart.replace("a=sendrecv", "a=sendonly");
    assert!(
        !ice_restart_only(&old, &ok(&hold)),
        "hold is not just a restart"
    );
    let codec = restart.replace("a=rtpmap:9 G722/8000", "a=rtpmap:9 G7221/16000");
    assert!(!ice_restart_only(&old, &ok(&codec)), "codec change");
}

/// Deterministic xorshift so a failure is reproducible from the iteration number.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const TOKENS: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b" ",
    b":",
    b"/",
    b"=",
    b"0",
    b"-1",
    b"99999999999999999999999",
    b"m=audio 0 RTP/AVP 0\r\n",
    b"a=rtpmap:200 x/0\r\n",
    b"c=IN IP6 ::\r\n",
    b"a=candidate:1 1 udp 1 a.local 1 typ host\r\n",
    b"a=fingerprint:sha-256 \r\n",
    b"a=setup:\r\n",
    b"a=group:BUNDLE\r\n",
    b"\xc3\xa9",
    b"\xff",
    b"a=ssrc-group:FID 1\r\n",
    b"a=fmtp:\r\n",
    b"a=extmap:999/sendonly x\r\n",
    b"a=rtcp:0 IN IP4\r\n",
];

#[test]
fn twenty_thousand_mutations_never_panic() {
    let seeds: Vec<Vec<u8>> = [
        "out-1_offer_browser-to-proxy_webrtc.sdp",
        "out-2_offer_proxy-to-pbx_rewritten-plain.sdp",
        "out-3_answer_pbx-to-proxy_plain.sdp",
        "out-4_answer_proxy-to-browser_rewritten-webrtc.sdp",
        "in-1_offer_caller-to-proxy_plain.sdp",
        "in-2_offer_proxy-to-browser_rewritten-webrtc.sdp",
        "in-3_answer_browser-to-proxy_webrtc.sdp",
        "in-4_answer_proxy-to-caller_rewritten-plain.sdp",
    ]
    .iter()
    .map(|n| fixture(n))
    .collect();
    let limits = Limits::default();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let (mut accepted, mut rejected) = (0usize, 0usize);
    for iter in 0..20_000 {
        let mut s = seeds[iter % seeds.len()].clone();
        for _ in 0..=rng.below(4) {
            let len = s.len();
            match rng.below(6) {
                0 if len > 0 => {
                    let i = rng.below(len);
                    s[i] = rng.next() as u8;
                }
                1 if len > 0 => {
                    let a = rng.below(len);
                    let b = (a + rng.below(64)).min(len);
                    s.drain(a..b);
                }
                2 => {
                    let t = TOKENS[rng.below(TOKENS.len())];
                    let at = rng.below(len + 1);
                    s.splice(at..at, t.iter().copied());
                }
                3 if len > 0 => {
                    let a = rng.below(len);
                    let b = (a + rng.below(128)).min(len);
                    let chunk = s[a..b].to_vec();
                    let at = rng.below(len + 1);
                    s.splice(at..at, chunk);
                }
                4 => s.truncate(rng.below(len + 1)),
                _ => {
                    // Swap two digits for other digits: exercises numeric parsing.
                    for b in s
                        .iter_mut()
                        .filter(|b| b.is_ascii_digit())
                        .take(rng.below(8))
                    {
                        *b = b'0' + (rng.next() % 10) as u8;
                    }
                }
            }
        }
        match inspect(&s, &limits) {
            Ok(info) => {
                accepted += 1;
                // Exercise the derived queries too.
                let _ = (
                    info.profile(),
                    info.on_hold(),
                    info.is_webrtc(),
                    ice_restart_only(&info, &info),
                );
            }
            Err(e) => {
                rejected += 1;
                // A caught parser panic would show up as this reason; there must be none.
                assert_ne!(
                    e,
                    SdpError::Malformed {
                        line: None,
                        reason: "SDP parser failure".into()
                    },
                    "parser panicked at iteration {iter}"
                );
                let w = e.warning_text();
                assert!(w.len() <= 120 && !w.contains('"'), "iteration {iter}: {w}");
            }
        }
    }
    assert_eq!(accepted + rejected, 20_000);
    assert!(
        accepted > 1000 && rejected > 1000,
        "mutations too weak or too strong: {accepted}/{rejected}"
    );
}
