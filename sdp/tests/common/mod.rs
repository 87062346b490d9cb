//! Helpers shared by the test files.
#![allow(dead_code)]

use rtcgate_sdp::NgMediaFlags;
use serde_json::{Map, Value, json};

/// Reads a fixture from `tests/fixtures`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The media keys of an ng request, as rtpengine's dictionary (JSON form).
pub fn to_ng_json(f: &NgMediaFlags) -> Map<String, Value> {
    let mut m = Map::new();
    let mut opt = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            m.insert(k.to_owned(), json!(v));
        }
    };
    opt("transport-protocol", &f.transport_protocol);
    opt("ICE", &f.ice);
    opt("DTLS", &f.dtls);
    opt("DTLS-reverse", &f.dtls_reverse);
    let mut list = |k: &str, v: &Vec<String>| {
        if !v.is_empty() {
            m.insert(k.to_owned(), json!(v));
        }
    };
    list("SDES", &f.sdes);
    list("rtcp-mux", &f.rtcp_mux);
    list("flags", &f.flags);
    list("replace", &f.replace);
    list("sdp-media-remove", &f.sdp_media_remove);
    if !f.codec.is_empty() {
        let c = &f.codec;
        let mut codec = Map::new();
        for (k, v) in [
            ("strip", &c.strip),
            ("mask", &c.mask),
            ("transcode", &c.transcode),
            ("offer", &c.offer),
            ("except", &c.except),
            ("accept", &c.accept),
        ] {
            if !v.is_empty() {
                codec.insert(k.to_owned(), json!(v));
            }
        }
        m.insert("codec".to_owned(), Value::Object(codec));
    }
    if let Some(a) = &f.sdp_attr {
        m.insert(
            "sdp-attr".to_owned(),
            json!({
                "global": {"remove": a.global_remove},
                "audio": {"remove": a.audio_remove},
                "video": {"remove": a.video_remove},
            }),
        );
    }
    m
}
