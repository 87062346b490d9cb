//! The computed flags sent to a real rtpengine (userspace, loopback, private ports): the
//! SDP it returns must have the target leg's profile. Needs the Debian `rtpengine-daemon`
//! binary; skipped when absent unless `CI=true`, where its absence fails the test.

mod common;

use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, to_ng_json};
use rtcgate_sdp::{
    CodecPolicy, FlagOptions, LegProfile, Limits, MediaProfile, SdpInfo, SdpKind, SetupRole,
    inspect, ng_flags,
};
use serde_json::{Value, json};

fn rtpengine_bin() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("RTPENGINE_BIN").map(PathBuf::from),
        Some(PathBuf::from("/usr/bin/rtpengine")),
        Some(PathBuf::from("/usr/sbin/rtpengine")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// A running daemon, killed on drop.
struct Daemon {
    child: Child,
    ng: std::net::SocketAddr,
    sock: UdpSocket,
    seq: u32,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn start(bin: &PathBuf) -> Daemon {
        // A free UDP port for ng; the media range is derived from it to avoid other tests.
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let ng = probe.local_addr().unwrap();
        drop(probe);
        let base = 20_000 + (u32::from(ng.port()) % 400) * 100;
        let child = Command::new(bin)
            .args([
                "--config-file=none",
                "--table=-1",
                "--foreground",
                "--log-stderr",
                "--log-level=4",
                &format!("--listen-ng={ng}"),
                "--interface=127.0.0.1",
                &format!("--port-min={base}"),
                &format!("--port-max={}", base + 99),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn rtpengine");
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut d = Daemon {
            child,
            ng,
            sock,
            seq: 0,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = d.try_call(&json!({"command": "ping"})) {
                assert_eq!(r.get("result").and_then(|v| v.as_str()), Some("pong"));
                return d;
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("rtpengine exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "rtpengine did not answer ping within 10 s"
            );
        }
    }

    fn try_call(&mut self, msg: &Value) -> Option<bt_bencode::Value> {
        self.seq += 1;
        let cookie = format!("t{}_{}", std::process::id(), self.seq);
        let mut buf = format!("{cookie} ").into_bytes();
        buf.extend(bt_bencode::to_vec(msg).unwrap());
        self.sock.send_to(&buf, self.ng).ok()?;
        let mut rx = vec![0u8; 65536];
        let n = self.sock.recv(&mut rx).ok()?;
        let rx = &rx[..n];
        let space = rx.iter().position(|b| *b == b' ')?;
        assert_eq!(&rx[..space], cookie.as_bytes(), "cookie echoed");
        Some(bt_bencode::from_slice(&rx[space + 1..]).unwrap())
    }

    fn call(&mut self, msg: &Value) -> bt_bencode::Value {
        for _ in 0..10 {
            if let Some(r) = self.try_call(msg) {
                return r;
            }
        }
        panic!("no reply from rtpengine");
    }

    /// Sends an offer/answer with the computed flags and returns the inspected result SDP.
    fn exchange(
        &mut self,
        kind: SdpKind,
        target: LegProfile,
        sdp_file: &str,
        call_id: &str,
        policy: &CodecPolicy,
    ) -> (SdpInfo, String) {
        let sdp = fixture(sdp_file);
        let info = inspect(&sdp, &Limits::default()).unwrap();
        let flags = ng_flags(target, kind, &info, policy, &FlagOptions::default());
        let mut msg = to_ng_json(&flags);
        msg.insert("sdp".into(), json!(String::from_utf8(sdp).unwrap()));
        msg.insert("call-id".into(), json!(call_id));
        msg.insert("from-tag".into(), json!("caller-tag"));
        let command = match kind {
            SdpKind::Offer => "offer",
            SdpKind::Answer => {
                msg.insert("to-tag".into(), json!("callee-tag"));
                "answer"
            }
        };
        msg.insert("command".into(), json!(command));
        let reply = self.call(&Value::Object(msg));
        let result = reply
            .get("result")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        assert_eq!(
            result.as_deref(),
            Some("ok"),
            "{command} {sdp_file}: {reply:?}"
        );
        assert!(
            reply.get("warning").is_none(),
            "{command} {sdp_file}: {reply:?}"
        );
        let out = reply
            .get("sdp")
            .and_then(|v| v.as_str())
            .unwrap()
            .to_owned();
        let out_info = inspect(out.as_bytes(), &Limits::default())
            .unwrap_or_else(|e| panic!("rtpengine output does not inspect: {e}\n{out}"));
        (out_info, out)
    }
}

fn assert_webrtc(info: &SdpInfo, sdp: &str, setup: SetupRole) {
    assert_eq!(info.profile(), MediaProfile::WebRtc, "{sdp}");
    let m = &info.media[0];
    assert_eq!(m.proto, "UDP/TLS/RTP/SAVPF");
    assert!(
        m.rtcp_mux && m.ice.present() && m.ice.candidates >= 1,
        "{sdp}"
    );
    assert_eq!(m.setup, Some(setup), "{sdp}");
    assert!(m.mid.is_some(), "generate-mid: {sdp}");
}

fn assert_plain(info: &SdpInfo, sdp: &str) {
    assert_eq!(info.profile(), MediaProfile::PlainRtp, "{sdp}");
    let m = &info.media[0];
    assert_eq!(m.proto, "RTP/AVP");
    assert!(
        !m.rtcp_mux && !m.ice.present() && m.fingerprints.is_empty(),
        "{sdp}"
    );
    assert!(!sdp.contains("a=extmap:"), "strip-extmap: {sdp}");
    assert!(
        !sdp.contains("a=setup") && !sdp.contains("a=candidate"),
        "{sdp}"
    );
}

#[test]
fn computed_flags_give_each_leg_its_profile() {
    let Some(bin) = rtpengine_bin() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "rtpengine binary missing (install rtpengine-daemon)"
        );
        eprintln!("SKIPPED: rtpengine not installed");
        return;
    };
    let mut d = Daemon::start(&bin);
    let call = format!("sdp-it-{}", std::process::id());
    let policy = CodecPolicy::default();

    // Outgoing: browser offer -> PBX leg, PBX answer -> browser leg.
    let out_call = format!("{call}-out");
    let (info, sdp) = d.exchange(
        SdpKind::Offer,
        LegProfile::PlainRtp,
        "out-1_offer_browser-to-proxy_webrtc.sdp",
        &out_call,
        &policy,
    );
    assert_plain(&info, &sdp);
    let (info, sdp) = d.exchange(
        SdpKind::Answer,
        LegProfile::WebRtc,
        "out-3_answer_pbx-to-proxy_plain.sdp",
        &out_call,
        &policy,
    );
    assert_webrtc(&info, &sdp, SetupRole::Passive);

    // Incoming: caller offer -> browser leg, browser answer -> caller leg.
    let in_call = format!("{call}-in");
    let (info, sdp) = d.exchange(
        SdpKind::Offer,
        LegProfile::WebRtc,
        "in-1_offer_caller-to-proxy_plain.sdp",
        &in_call,
        &policy,
    );
    assert_webrtc(&info, &sdp, SetupRole::ActPass);
    assert!(info.media[0].has_telephone_event());
    let (info, sdp) = d.exchange(
        SdpKind::Answer,
        LegProfile::PlainRtp,
        "in-3_answer_browser-to-proxy_webrtc.sdp",
        &in_call,
        &policy,
    );
    assert_plain(&info, &sdp);

    // Codec preference on the PBX leg: only PCMA, PCMU (in that order) and DTMF survive.
    let pref = CodecPolicy {
        preference: vec!["PCMA".into(), "PCMU".into()],
        ..CodecPolicy::default()
    };
    let (info, sdp) = d.exchange(
        SdpKind::Offer,
        LegProfile::PlainRtp,
        "out-1_offer_browser-to-proxy_webrtc.sdp",
        &format!("{call}-pref"),
        &pref,
    );
    let names: Vec<&str> = info.media[0]
        .codecs
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["PCMA", "PCMU", "telephone-event"], "{sdp}");

    for id in [out_call, in_call, format!("{call}-pref")] {
        let r = d.call(&json!({"command": "delete", "call-id": id, "from-tag": "caller-tag"}));
        assert_eq!(r.get("result").and_then(|v| v.as_str()), Some("ok"));
    }
}
