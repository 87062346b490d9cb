//! The fixture SDPs through `inspect` and `ng_flags`, compared with what the reference
//! proxy sent rtpengine for the same legs (`fixtures/0{3,5,9}`, `11`).

mod common;

use common::{fixture, to_ng_json};
use rtcgate_sdp::{
    CodecPolicy, Direction, FlagOptions, LegProfile, Limits, MediaKind, MediaProfile, SdpKind,
    SetupRole, inspect, ng_flags,
};
use serde_json::{Value, json};

fn info(name: &str) -> rtcgate_sdp::SdpInfo {
    inspect(&fixture(name), &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The reference request's media keys (everything but SDP, ids, tags and `supports`).
fn reference(name: &str) -> serde_json::Map<String, Value> {
    let v: Value = serde_json::from_slice(&fixture(name)).unwrap();
    let mut msg = v["message"].as_object().unwrap().clone();
    for k in [
        "sdp",
        "call-id",
        "from-tag",
        "to-tag",
        "command",
        "supports",
        "received-from",
    ] {
        msg.remove(k);
    }
    msg
}

fn flags_json(target: LegProfile, kind: SdpKind, sdp: &str) -> serde_json::Map<String, Value> {
    to_ng_json(&ng_flags(
        target,
        kind,
        &info(sdp),
        &CodecPolicy::default(),
        &FlagOptions::default(),
    ))
}

#[test]
fn chrome_offer_is_webrtc() {
    let i = info("out-1_offer_browser-to-proxy_webrtc.sdp");
    assert_eq!(i.profile(), MediaProfile::WebRtc);
    assert!(i.is_webrtc() && i.has_dtls() && !i.has_video() && !i.on_hold());
    let m = &i.media[0];
    assert_eq!(m.kind, MediaKind::Audio);
    assert_eq!(m.port, 51251);
    assert_eq!(m.proto, "UDP/TLS/RTP/SAVPF");
    assert_eq!(m.direction, Direction::SendRecv);
    assert_eq!(m.setup, Some(SetupRole::ActPass));
    assert!(m.rtcp_mux);
    assert_eq!(m.ice.ufrag.as_deref(), Some("DjnD"));
    assert_eq!(m.ice.pwd.as_deref(), Some("C+uBlwbwVFG1Y3hYiWzMRnoA"));
    assert_eq!((m.ice.candidates, m.ice.mdns_candidates), (2, 0));
    assert_eq!(m.fingerprints.len(), 1);
    assert!(
        m.fingerprints[0].starts_with("sha-256 0C:0F:FC"),
        "{:?}",
        m.fingerprints
    );
    assert_eq!(m.mid.as_deref(), Some("0"));
    let names: Vec<(u8, &str, u32)> = m
        .codecs
        .iter()
        .map(|c| (c.pt, c.name.as_str(), c.rate))
        .collect();
    assert_eq!(
        names,
        vec![
            (111, "opus", 48000),
            (63, "red", 48000),
            (9, "G722", 8000),
            (0, "PCMU", 8000),
            (8, "PCMA", 8000),
            (13, "CN", 8000),
            (110, "telephone-event", 48000),
            (126, "telephone-event", 8000),
        ]
    );
    assert_eq!(m.codecs[0].channels, Some(2));
    assert!(m.has_telephone_event());
}

#[test]
fn pbx_and_caller_sdps_are_plain_rtp() {
    for name in [
        "out-3_answer_pbx-to-proxy_plain.sdp",
        "in-1_offer_caller-to-proxy_plain.sdp",
        "out-2_offer_proxy-to-pbx_rewritten-plain.sdp",
        "in-4_answer_proxy-to-caller_rewritten-plain.sdp",
    ] {
        let i = info(name);
        assert_eq!(i.profile(), MediaProfile::PlainRtp, "{name}");
        let m = &i.media[0];
        assert!(
            !m.ice.present() && m.fingerprints.is_empty() && !m.rtcp_mux,
            "{name}"
        );
        assert_eq!(m.connection.as_deref(), Some("IN IP4 127.0.0.1"), "{name}");
    }
    let i = info("in-1_offer_caller-to-proxy_plain.sdp");
    assert_eq!(i.origin_username, "legacy");
    let c: Vec<&str> = i.media[0].codecs.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(c, ["PCMU", "telephone-event"]);
}

#[test]
fn rtpengine_outputs_for_browsers_are_webrtc_with_fixed_roles() {
    let offer = info("in-2_offer_proxy-to-browser_rewritten-webrtc.sdp");
    assert_eq!(offer.profile(), MediaProfile::WebRtc);
    assert_eq!(offer.media[0].setup, Some(SetupRole::ActPass));
    let answer = info("out-4_answer_proxy-to-browser_rewritten-webrtc.sdp");
    assert_eq!(answer.profile(), MediaProfile::WebRtc);
    assert_eq!(answer.media[0].setup, Some(SetupRole::Passive));
    let chrome_answer = info("in-3_answer_browser-to-proxy_webrtc.sdp");
    assert_eq!(chrome_answer.media[0].setup, Some(SetupRole::Active));
}

#[test]
fn out_1_browser_offer_to_pbx_leg() {
    let got = flags_json(
        LegProfile::PlainRtp,
        SdpKind::Offer,
        "out-1_offer_browser-to-proxy_webrtc.sdp",
    );
    let mut want = reference("03_out-offer_request_proxy-to-rtpengine.json");
    // Deliberate differences (see the `flags` module docs).
    want.insert("replace".into(), json!(["origin"]));
    want.insert("DTLS-reverse".into(), json!("passive"));
    want.insert("flags".into(), json!(["strip-extmap"]));
    assert_eq!(Value::Object(got), Value::Object(want));
}

#[test]
fn out_3_pbx_answer_to_browser_leg() {
    let got = flags_json(
        LegProfile::WebRtc,
        SdpKind::Answer,
        "out-3_answer_pbx-to-proxy_plain.sdp",
    );
    let mut want = reference("05_out-answer_request_proxy-to-rtpengine.json");
    want.insert("replace".into(), json!(["origin"]));
    assert_eq!(Value::Object(got), Value::Object(want));
}

#[test]
fn in_1_caller_offer_to_browser_leg() {
    let got = flags_json(
        LegProfile::WebRtc,
        SdpKind::Offer,
        "in-1_offer_caller-to-proxy_plain.sdp",
    );
    let mut want = reference("09_in-offer_request_proxy-to-rtpengine.json");
    want.insert("replace".into(), json!(["origin"]));
    want.insert("rtcp-mux".into(), json!(["offer", "require"]));
    assert_eq!(Value::Object(got), Value::Object(want));
}

#[test]
fn in_3_browser_answer_to_pbx_leg() {
    let got = flags_json(
        LegProfile::PlainRtp,
        SdpKind::Answer,
        "in-3_answer_browser-to-proxy_webrtc.sdp",
    );
    let mut want = reference("11_in-answer_request_proxy-to-rtpengine.json");
    want.insert("replace".into(), json!(["origin"]));
    want.insert("flags".into(), json!(["strip-extmap"]));
    assert_eq!(Value::Object(got), Value::Object(want));
}

#[test]
fn never_sends_session_connection_and_dtls_role_is_stable() {
    for (t, k, f) in [
        (
            LegProfile::PlainRtp,
            SdpKind::Offer,
            "out-1_offer_browser-to-proxy_webrtc.sdp",
        ),
        (
            LegProfile::WebRtc,
            SdpKind::Answer,
            "out-3_answer_pbx-to-proxy_plain.sdp",
        ),
        (
            LegProfile::WebRtc,
            SdpKind::Offer,
            "in-1_offer_caller-to-proxy_plain.sdp",
        ),
        (
            LegProfile::PlainRtp,
            SdpKind::Answer,
            "in-3_answer_browser-to-proxy_webrtc.sdp",
        ),
    ] {
        let fl = ng_flags(
            t,
            k,
            &info(f),
            &CodecPolicy::default(),
            &FlagOptions::default(),
        );
        assert!(!fl.replace.iter().any(|r| r.contains("session-connection")));
        if t == LegProfile::WebRtc {
            assert_eq!(fl.dtls.as_deref(), Some("passive"), "{f}");
            assert!(fl.rtcp_mux.contains(&"require".to_owned()));
        } else {
            assert_eq!(fl.dtls.as_deref(), Some("off"));
            assert_eq!(fl.ice.as_deref(), Some("remove"));
        }
    }
    // A browser re-offer (hold) toward the PBX gets the same DTLS-reverse as the first offer.
    let hold = String::from_utf8(fixture("out-1_offer_browser-to-proxy_webrtc.sdp"))
        .unwrap()
        .replace("a=sendrecv", "a=sendonly");
    let i = inspect(hold.as_bytes(), &Limits::default()).unwrap();
    assert!(i.on_hold());
    let fl = ng_flags(
        LegProfile::PlainRtp,
        SdpKind::Offer,
        &i,
        &CodecPolicy::default(),
        &FlagOptions::default(),
    );
    assert_eq!(fl.dtls_reverse.as_deref(), Some("passive"));
}

#[test]
fn codec_policy_and_options() {
    let i = info("out-1_offer_browser-to-proxy_webrtc.sdp");
    let policy = CodecPolicy {
        preference: vec!["PCMA".into(), "PCMU".into(), "G729".into()],
        mask: vec!["opus".into()],
        transcode: vec!["G729".into()],
        ..CodecPolicy::default()
    };
    let opts = FlagOptions {
        trust_address: true,
        ..FlagOptions::default()
    };
    let fl = ng_flags(LegProfile::PlainRtp, SdpKind::Offer, &i, &policy, &opts);
    assert_eq!(fl.codec.strip, ["all"]);
    // G729 is absent from the offer but listed for transcoding, so it stays.
    assert_eq!(fl.codec.offer, ["PCMA", "PCMU", "G729", "telephone-event"]);
    assert_eq!(fl.codec.mask, ["opus"]);
    assert_eq!(fl.codec.transcode, ["G729"]);
    assert!(fl.flags.contains(&"trust-address".to_owned()));
    assert!(fl.sdp_attr.is_none(), "10.5 has no sdp-attr");

    // Answers carry no codec manipulation.
    let fl = ng_flags(LegProfile::PlainRtp, SdpKind::Answer, &i, &policy, &opts);
    assert!(fl.codec.is_empty());

    // No DTMF wanted.
    let no_dtmf = CodecPolicy {
        keep_telephone_event: false,
        ..CodecPolicy::default()
    };
    let fl = ng_flags(
        LegProfile::PlainRtp,
        SdpKind::Offer,
        &i,
        &no_dtmf,
        &FlagOptions::default(),
    );
    assert_eq!(fl.codec.strip, ["telephone-event"]);

    // Newer daemons: browser-only attributes removed by sdp-attr.
    let caps = FlagOptions {
        caps: rtcgate_sdp::RtpengineCaps {
            sdp_attr: true,
            sdp_media_remove: true,
        },
        ..FlagOptions::default()
    };
    let fl = ng_flags(
        LegProfile::PlainRtp,
        SdpKind::Offer,
        &i,
        &CodecPolicy::default(),
        &caps,
    );
    let a = fl.sdp_attr.expect("sdp-attr with caps");
    assert!(
        a.audio_remove.contains(&"msid".to_owned())
            && a.global_remove.contains(&"msid-semantic".to_owned())
    );
    let fl = ng_flags(
        LegProfile::WebRtc,
        SdpKind::Offer,
        &i,
        &CodecPolicy::default(),
        &caps,
    );
    assert!(fl.sdp_attr.is_none(), "browser leg keeps its attributes");
}

#[test]
fn strip_video_uses_media_remove_or_video_codecs() {
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nc=IN IP4 127.0.0.1\r\n\
m=audio 4000 RTP/AVP 0 96\r\na=rtpmap:96 red/8000\r\n\
m=video 4002 RTP/AVP 97 98 96\r\na=rtpmap:97 VP8/90000\r\na=rtpmap:98 H264/90000\r\na=rtpmap:96 red/90000\r\n";
    let i = inspect(sdp.as_bytes(), &Limits::default()).unwrap();
    assert!(i.has_video());
    let policy = CodecPolicy {
        strip_video: true,
        ..CodecPolicy::default()
    };
    let fl = ng_flags(
        LegProfile::PlainRtp,
        SdpKind::Offer,
        &i,
        &policy,
        &FlagOptions::default(),
    );
    assert_eq!(
        fl.codec.strip,
        ["VP8", "H264"],
        "red is shared with audio and kept"
    );
    assert!(fl.sdp_media_remove.is_empty());
    let caps = FlagOptions {
        caps: rtcgate_sdp::RtpengineCaps {
            sdp_media_remove: true,
            sdp_attr: false,
        },
        ..FlagOptions::default()
    };
    let fl = ng_flags(LegProfile::PlainRtp, SdpKind::Offer, &i, &policy, &caps);
    assert_eq!(fl.sdp_media_remove, ["video"]);
    assert!(fl.codec.strip.is_empty());
}

#[test]
fn browser_offer_to_browser_leg_fixes_the_offerer_dtls_role() {
    // Browser to browser: same DTLS role race on the offering browser's leg.
    let f = flags_json(
        LegProfile::WebRtc,
        SdpKind::Offer,
        "out-1_offer_browser-to-proxy_webrtc.sdp",
    );
    assert_eq!(f.get("DTLS-reverse"), Some(&json!("passive")));
    assert_eq!(f.get("DTLS"), Some(&json!("passive")));
    // A plain offer to a browser has no browser behind it to fix.
    let f = flags_json(
        LegProfile::WebRtc,
        SdpKind::Offer,
        "in-1_offer_caller-to-proxy_plain.sdp",
    );
    assert_eq!(f.get("DTLS-reverse"), None);
}
