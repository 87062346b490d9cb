//! Media orchestration end to end: a browser-like WebSocket client and real
//! sipp PBXes through rtcgate with a real rtpengine in the loop. The
//! browser leg must be ICE + DTLS-SRTP (UDP/TLS/RTP/SAVPF, rtcp-mux), the
//! PBX leg plain RTP/AVP, and rtpengine must hold no session after the call,
//! however it ended.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::rtpengine::{Daemon, free_udp_port, need_rtpengine};
use common::*;
use rtcgate::config::StaticRoute;
use rtcgate::media::RtpengineInstance;

fn scenario(name: &str) -> PathBuf {
    let local = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name);
    if local.exists() {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../loadtest/scenarios")
        .join(name)
}

struct Sipp {
    child: tokio::process::Child,
    work: tempfile::TempDir,
}

impl Sipp {
    fn start(args: &[&str]) -> Sipp {
        let work = tempfile::tempdir().unwrap();
        let child = tokio::process::Command::new(which("sipp").unwrap())
            .current_dir(work.path())
            .args(args)
            .args([
                "-nostdin",
                "-timeout",
                "20s",
                "-timeout_error",
                "-trace_err",
                "-trace_msg",
            ])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Sipp { child, work }
    }

    /// Waits for the end; returns success and the message log.
    async fn finish(mut self) -> (bool, String) {
        let ok = tokio::time::timeout(Duration::from_secs(25), self.child.wait())
            .await
            .expect("sipp did not finish")
            .unwrap()
            .success();
        let mut log = String::new();
        for e in std::fs::read_dir(self.work.path()).unwrap().flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            if !ok {
                eprintln!("--- {}:\n{text}", e.path().display());
            }
            if e.file_name().to_string_lossy().ends_with("_messages.log") {
                log.push_str(&text);
            }
        }
        (ok, log)
    }
}

fn header_values(text: &str, name: &str) -> Vec<String> {
    text.split("\r\n")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
        .flat_map(|v| rtcgate::proxy::route::split_list(&v))
        .collect()
}

fn body(text: &str) -> &str {
    text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn code(text: &str) -> u16 {
    text.get(8..11).and_then(|c| c.parse().ok()).unwrap_or(0)
}

fn assert_webrtc(sdp: &str) {
    assert!(sdp.contains("UDP/TLS/RTP/SAVPF"), "not SAVPF: {sdp}");
    assert!(sdp.contains("a=fingerprint:"), "no fingerprint: {sdp}");
    assert!(sdp.contains("a=candidate:"), "no ICE candidate: {sdp}");
    assert!(sdp.contains("a=ice-ufrag:"), "no ICE credentials: {sdp}");
    assert!(sdp.contains("a=rtcp-mux"), "no rtcp-mux: {sdp}");
}

fn assert_plain(sdp: &str) {
    assert!(sdp.contains(" RTP/AVP "), "not RTP/AVP: {sdp}");
    for banned in [
        "a=fingerprint",
        "a=candidate",
        "a=ice-ufrag",
        "SAVPF",
        "a=extmap:",
    ] {
        assert!(!sdp.contains(banned), "{banned} on the PBX leg: {sdp}");
    }
}

/// The SDP of the first message in a sipp log that starts with `start`.
fn sdp_in_log(log: &str, start: &str) -> String {
    let i = log
        .find(start)
        .unwrap_or_else(|| panic!("no {start:?} in sipp log:\n{log}"));
    let msg = &log[i..];
    let end = msg.find("\n----").unwrap_or(msg.len());
    let msg = &msg[..end];
    msg.split_once("\n\n")
        .or_else(|| msg.split_once("\r\n\r\n"))
        .map_or(String::new(), |(_, b)| b.to_owned())
}

async fn wait_empty(rtp: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let calls = rtp.calls();
        if calls.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "rtpengine still holds {calls:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn gateway(rtp: &Daemon, pbx: Option<u16>) -> TestGateway {
    gateway_with(rtp, pbx, |_| {}).await
}

/// A gateway using `rtp`, routing `1xxx` to the sipp PBX on `pbx`, with
/// `tweak` applied last.
async fn gateway_with(
    rtp: &Daemon,
    pbx: Option<u16>,
    tweak: impl FnOnce(&mut rtcgate::config::Config),
) -> TestGateway {
    let ng = rtp.ng;
    TestGateway::start_with(|c| {
        c.rtpengine.enabled = true;
        c.rtpengine.instances = vec![RtpengineInstance {
            address: ng,
            weight: 1,
        }];
        if let Some(p) = pbx {
            c.routes = vec![StaticRoute {
                prefix: "1".into(),
                destination: format!("127.0.0.1:{p}").parse().unwrap(),
                codec_policy: None,
            }];
        }
        tweak(c);
    })
    .await
}

fn invite(call: &str, sdp: &str) -> String {
    format!(
        "INVITE sip:1001@localhost SIP/2.0\r\nVia: SIP/2.0/WSS br.invalid;branch=z9hG4bK{call}\r\nMax-Forwards: 70\r\nFrom: <sip:2000@localhost>;tag=f{call}\r\nTo: <sip:1001@localhost>\r\nCall-ID: {call}@br.invalid\r\nCSeq: 1 INVITE\r\nContact: <sip:u@br.invalid;transport=ws;ob>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    )
}

async fn final_response(ws: &mut Ws) -> (String, Vec<u16>) {
    let mut seen = Vec::new();
    loop {
        let r = ws_recv(ws).await;
        seen.push(code(&r));
        if code(&r) >= 200 {
            return (r, seen);
        }
    }
}

fn in_dialog(method: &str, cseq: u32, call: &str, ok: &str) -> String {
    let rr = header_values(ok, "Record-Route");
    let route: String = rr.iter().rev().map(|r| format!("Route: {r}\r\n")).collect();
    let to = header_values(ok, "To").remove(0);
    let contact = header_values(ok, "Contact").remove(0);
    let target = rtcgate::proxy::route::uri_of(&contact).to_owned();
    format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/WSS br.invalid;branch=z9hG4bK{call}{method}\r\nMax-Forwards: 70\r\n{route}From: <sip:2000@localhost>;tag=f{call}\r\nTo: {to}\r\nCall-ID: {call}@br.invalid\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

#[tokio::test]
async fn browser_calls_pbx_with_media_bridged() {
    let Some(bin) = need_rtpengine() else { return };
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let rtp = Daemon::start(&bin);
    let port = free_udp_port().port();
    let uas = scenario("uas.xml");
    let pbx = Sipp::start(&[
        "-sf",
        uas.to_str().unwrap(),
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        "1",
    ]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gw = gateway(&rtp, Some(port)).await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    ws_send(&mut ws, &invite("m1", &webrtc_offer())).await;
    let (ok, codes) = final_response(&mut ws).await;
    assert_eq!(code(&ok), 200, "{codes:?} {ok}");
    assert_webrtc(body(&ok));
    assert!(
        !body(&ok).contains("a=setup:actpass"),
        "an answer must not be actpass"
    );
    assert_eq!(rtp.calls().len(), 1, "one call in rtpengine while up");
    ws_send(&mut ws, &in_dialog("ACK", 1, "m1", &ok)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    ws_send(&mut ws, &in_dialog("BYE", 2, "m1", &ok)).await;
    assert_eq!(code(&ws_recv(&mut ws).await), 200);
    let (sipp_ok, log) = pbx.finish().await;
    assert!(sipp_ok, "sipp PBX failed");
    assert_plain(&sdp_in_log(&log, "INVITE sip:"));
    wait_empty(&rtp).await;
}

#[tokio::test]
async fn pbx_calls_browser_with_media_bridged() {
    let Some(bin) = need_rtpengine() else { return };
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let rtp = Daemon::start(&bin);
    let gw = gateway(&rtp, None).await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let reg = "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/WSS ua.invalid;branch=z9hG4bKreg\r\nMax-Forwards: 70\r\nTo: <sip:1001@localhost>\r\nFrom: <sip:1001@localhost>;tag=r\r\nCall-ID: reg@ua\r\nCSeq: 1 REGISTER\r\nContact: <sip:c9gq@ua.invalid;transport=ws>;expires=600\r\nContent-Length: 0\r\n\r\n";
    ws_send(&mut ws, reg).await;
    assert_eq!(code(&ws_recv(&mut ws).await), 200);

    let target = gw.udp().to_string();
    let uac = scenario("uac_call.xml");
    let caller = Sipp::start(&[
        &target,
        "-sf",
        uac.to_str().unwrap(),
        "-s",
        "1001",
        "-i",
        "127.0.0.1",
        "-mi",
        "127.0.0.1",
        "-m",
        "1",
        "-d",
        "300",
    ]);
    let inv = ws_recv(&mut ws).await;
    assert!(inv.starts_with("INVITE "), "{inv}");
    assert_webrtc(body(&inv));
    // Answer as Chrome does.
    let copy = |n: &str| -> String {
        header_values(&inv, n)
            .iter()
            .map(|v| format!("{n}: {v}\r\n"))
            .collect()
    };
    let to = header_values(&inv, "To").remove(0);
    let answer = media_fixture("in-3_answer_browser-to-proxy_webrtc.sdp");
    let base = format!(
        "{}{}To: {to};tag=bt1\r\n{}{}{}",
        copy("Via"),
        copy("From"),
        copy("Call-ID"),
        copy("CSeq"),
        copy("Record-Route")
    );
    ws_send(&mut ws, &format!("SIP/2.0 200 OK\r\n{base}Contact: <sip:c9gq@ua.invalid;transport=ws>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}", answer.len())).await;
    let ack = ws_recv(&mut ws).await;
    assert!(ack.starts_with("ACK "), "{ack}");
    let bye = ws_recv(&mut ws).await;
    assert!(bye.starts_with("BYE "), "{bye}");
    let reply: String = ["Via", "From", "To", "Call-ID", "CSeq"]
        .iter()
        .map(|n| {
            header_values(&bye, n)
                .iter()
                .map(|v| format!("{n}: {v}\r\n"))
                .collect::<String>()
        })
        .collect();
    ws_send(
        &mut ws,
        &format!("SIP/2.0 200 OK\r\n{reply}Content-Length: 0\r\n\r\n"),
    )
    .await;
    let (ok, log) = caller.finish().await;
    assert!(ok, "sipp caller failed");
    assert_plain(&sdp_in_log(&log, "SIP/2.0 200 OK"));
    wait_empty(&rtp).await;
}

#[tokio::test]
async fn busy_and_cancel_leave_no_session() {
    let Some(bin) = need_rtpengine() else { return };
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let rtp = Daemon::start(&bin);
    // 486 Busy Here.
    let port = free_udp_port().port();
    let busy = scenario("pbx_uas_busy.xml");
    let pbx = Sipp::start(&[
        "-sf",
        busy.to_str().unwrap(),
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        "1",
    ]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gw = gateway(&rtp, Some(port)).await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    ws_send(&mut ws, &invite("b1", &webrtc_offer())).await;
    let (resp, _) = final_response(&mut ws).await;
    assert_eq!(code(&resp), 486, "{resp}");
    let to = header_values(&resp, "To").remove(0);
    ws_send(&mut ws, &format!("ACK sip:1001@localhost SIP/2.0\r\nVia: SIP/2.0/WSS br.invalid;branch=z9hG4bKb1\r\nMax-Forwards: 70\r\nFrom: <sip:2000@localhost>;tag=fb1\r\nTo: {to}\r\nCall-ID: b1@br.invalid\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n")).await;
    let _ = pbx.finish().await;
    wait_empty(&rtp).await;

    // CANCEL while ringing.
    let port = free_udp_port().port();
    let ringing = scenario("pbx_uas_ringing_forever.xml");
    let pbx = Sipp::start(&[
        "-sf",
        ringing.to_str().unwrap(),
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        "1",
    ]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gw = gateway(&rtp, Some(port)).await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    ws_send(&mut ws, &invite("c1", &webrtc_offer())).await;
    loop {
        let r = ws_recv(&mut ws).await;
        if code(&r) == 180 {
            break;
        }
        assert!(code(&r) < 200, "{r}");
    }
    assert_eq!(rtp.calls().len(), 1);
    ws_send(&mut ws, "CANCEL sip:1001@localhost SIP/2.0\r\nVia: SIP/2.0/WSS br.invalid;branch=z9hG4bKc1\r\nMax-Forwards: 70\r\nFrom: <sip:2000@localhost>;tag=fc1\r\nTo: <sip:1001@localhost>\r\nCall-ID: c1@br.invalid\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n").await;
    let mut got = Vec::new();
    while !got.contains(&487) {
        got.push(code(&ws_recv(&mut ws).await));
    }
    assert!(got.contains(&200), "200 for the CANCEL: {got:?}");
    wait_empty(&rtp).await;
    drop(pbx);
}

#[tokio::test]
async fn rtpengine_unreachable_gives_503_fast() {
    let dead = free_udp_port();
    let gw = TestGateway::start_with(|c| {
        c.rtpengine.enabled = true;
        c.rtpengine.instances = vec![RtpengineInstance {
            address: dead,
            weight: 1,
        }];
        c.routes = vec![StaticRoute {
            prefix: "1".into(),
            destination: "127.0.0.1:9".parse().unwrap(),
            codec_policy: None,
        }];
    })
    .await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let t0 = Instant::now();
    ws_send(&mut ws, &invite("d1", &webrtc_offer())).await;
    let (resp, _) = final_response(&mut ws).await;
    assert_eq!(code(&resp), 503, "{resp}");
    assert!(!header_values(&resp, "Retry-After").is_empty(), "{resp}");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn websocket_dropped_mid_call_hangs_up_the_pbx() {
    let Some(bin) = need_rtpengine() else { return };
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let rtp = Daemon::start(&bin);
    let port = free_udp_port().port();
    let uas = scenario("uas.xml");
    // uas.xml succeeds only if a BYE arrives after the ACK.
    let pbx = Sipp::start(&[
        "-sf",
        uas.to_str().unwrap(),
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        "1",
    ]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gw = gateway_with(&rtp, Some(port), |c| {
        c.rtpengine.ws_drop_grace_ms = 300;
    })
    .await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    ws_send(&mut ws, &invite("w1", &webrtc_offer())).await;
    let (ok, _) = final_response(&mut ws).await;
    assert_eq!(code(&ok), 200);
    ws_send(&mut ws, &in_dialog("ACK", 1, "w1", &ok)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rtp.calls().len(), 1);
    // The browser vanishes (no close handshake, no BYE).
    drop(ws);
    let t0 = Instant::now();
    let (sipp_ok, log) = pbx.finish().await;
    assert!(sipp_ok, "the PBX never got its BYE");
    assert!(log.contains("BYE sip:"), "{log}");
    assert!(
        log.contains("WebSocket closed"),
        "Reason header expected: {log}"
    );
    assert!(t0.elapsed() < Duration::from_secs(10));
    wait_empty(&rtp).await;
}

#[tokio::test]
async fn websocket_dropped_mid_call_without_media_hangs_up_at_once() {
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let port = free_udp_port().port();
    let uas = scenario("uas.xml");
    let pbx = Sipp::start(&[
        "-sf",
        uas.to_str().unwrap(),
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        "1",
    ]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gw = TestGateway::start_with(|c| {
        c.routes = vec![StaticRoute {
            prefix: "1".into(),
            destination: format!("127.0.0.1:{port}").parse().unwrap(),
            codec_policy: None,
        }];
    })
    .await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let plain = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\n";
    ws_send(&mut ws, &invite("w2", plain)).await;
    let (ok, _) = final_response(&mut ws).await;
    assert_eq!(code(&ok), 200);
    ws_send(&mut ws, &in_dialog("ACK", 1, "w2", &ok)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(ws);
    let (sipp_ok, _) = pbx.finish().await;
    assert!(sipp_ok, "the PBX never got its BYE");
}

#[tokio::test]
async fn late_offer_through_the_gateway() {
    let Some(bin) = need_rtpengine() else { return };
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let rtp = Daemon::start(&bin);
    let port = free_udp_port().port();
    let uas = scenario("uas.xml");
    // uas.xml puts a plain SDP in its 200: with an INVITE without SDP that
    // is the offer, and the browser's answer rides on the ACK.
    let pbx = Sipp::start(&[
        "-sf",
        uas.to_str().unwrap(),
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        "1",
    ]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gw = gateway(&rtp, Some(port)).await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let inv = "INVITE sip:1001@localhost SIP/2.0\r\nVia: SIP/2.0/WSS br.invalid;branch=z9hG4bKl1\r\nMax-Forwards: 70\r\nFrom: <sip:2000@localhost>;tag=fl1\r\nTo: <sip:1001@localhost>\r\nCall-ID: l1@br.invalid\r\nCSeq: 1 INVITE\r\nContact: <sip:u@br.invalid;transport=ws;ob>\r\nContent-Length: 0\r\n\r\n";
    ws_send(&mut ws, inv).await;
    let (ok, _) = final_response(&mut ws).await;
    assert_eq!(code(&ok), 200, "{ok}");
    // The PBX's offer reaches the browser as WebRTC.
    assert_webrtc(body(&ok));
    let answer = media_fixture("in-3_answer_browser-to-proxy_webrtc.sdp");
    let ack = in_dialog("ACK", 1, "l1", &ok).replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        ),
    );
    ws_send(&mut ws, &ack).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws_send(&mut ws, &in_dialog("BYE", 2, "l1", &ok)).await;
    assert_eq!(code(&ws_recv(&mut ws).await), 200);
    let (sipp_ok, log) = pbx.finish().await;
    assert!(sipp_ok, "sipp PBX failed");
    // The browser's answer reached the PBX as plain RTP in the ACK.
    assert_plain(&sdp_in_log(&log, "ACK sip:"));
    wait_empty(&rtp).await;
}

#[tokio::test]
async fn many_calls_ending_every_way_leave_rtpengine_empty() {
    let Some(bin) = need_rtpengine() else { return };
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let rtp = Daemon::start(&bin);
    let offer = webrtc_offer();
    for round in 0..3 {
        // 1. Answered, browser hangs up.
        let port = free_udp_port().port();
        let pbx = Sipp::start(&[
            "-sf",
            scenario("uas.xml").to_str().unwrap(),
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            "1",
        ]);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let gw = gateway(&rtp, Some(port)).await;
        let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
        let id = format!("r{round}a");
        ws_send(&mut ws, &invite(&id, &offer)).await;
        let (ok, _) = final_response(&mut ws).await;
        assert_eq!(code(&ok), 200);
        ws_send(&mut ws, &in_dialog("ACK", 1, &id, &ok)).await;
        ws_send(&mut ws, &in_dialog("BYE", 2, &id, &ok)).await;
        assert_eq!(code(&ws_recv(&mut ws).await), 200);
        assert!(pbx.finish().await.0);

        // 2. Busy.
        let port = free_udp_port().port();
        let pbx = Sipp::start(&[
            "-sf",
            scenario("pbx_uas_busy.xml").to_str().unwrap(),
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            "1",
        ]);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let gw = gateway(&rtp, Some(port)).await;
        let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
        let id = format!("r{round}b");
        ws_send(&mut ws, &invite(&id, &offer)).await;
        assert_eq!(code(&final_response(&mut ws).await.0), 486);
        drop(pbx);

        // 3. Cancelled while ringing.
        let port = free_udp_port().port();
        let pbx = Sipp::start(&[
            "-sf",
            scenario("pbx_uas_ringing_forever.xml").to_str().unwrap(),
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            "1",
        ]);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let gw = gateway(&rtp, Some(port)).await;
        let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
        let id = format!("r{round}c");
        ws_send(&mut ws, &invite(&id, &offer)).await;
        while code(&ws_recv(&mut ws).await) != 180 {}
        ws_send(&mut ws, &format!("CANCEL sip:1001@localhost SIP/2.0\r\nVia: SIP/2.0/WSS br.invalid;branch=z9hG4bK{id}\r\nMax-Forwards: 70\r\nFrom: <sip:2000@localhost>;tag=f{id}\r\nTo: <sip:1001@localhost>\r\nCall-ID: {id}@br.invalid\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n")).await;
        while code(&ws_recv(&mut ws).await) != 487 {}
        drop(pbx);

        // 4. Answered, then the browser's WebSocket vanishes.
        let port = free_udp_port().port();
        let pbx = Sipp::start(&[
            "-sf",
            scenario("uas.xml").to_str().unwrap(),
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            "1",
        ]);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let gw = gateway_with(&rtp, Some(port), |c| {
            c.rtpengine.ws_drop_grace_ms = 200;
        })
        .await;
        let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
        let id = format!("r{round}d");
        ws_send(&mut ws, &invite(&id, &offer)).await;
        let (ok, _) = final_response(&mut ws).await;
        ws_send(&mut ws, &in_dialog("ACK", 1, &id, &ok)).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(ws);
        assert!(
            pbx.finish().await.0,
            "PBX got no BYE after the WebSocket vanished"
        );
    }
    wait_empty(&rtp).await;
}

#[tokio::test]
async fn codec_policy_of_the_route_shapes_the_offer_to_the_pbx() {
    let Some(bin) = need_rtpengine() else { return };
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let rtp = Daemon::start(&bin);
    let port = free_udp_port().port();
    let uas = scenario("uas.xml");
    let pbx = Sipp::start(&[
        "-sf",
        uas.to_str().unwrap(),
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        "1",
    ]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gw = gateway_with(&rtp, Some(port), |c| {
        c.rtpengine.codec_policies.insert(
            "g711u".into(),
            rtcgate::media::CodecPolicyConfig {
                preference: vec!["PCMU".into()],
                ..Default::default()
            },
        );
        c.routes[0].codec_policy = Some("g711u".into());
    })
    .await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    ws_send(&mut ws, &invite("p1", &webrtc_offer())).await;
    let (ok, _) = final_response(&mut ws).await;
    assert_eq!(code(&ok), 200);
    ws_send(&mut ws, &in_dialog("ACK", 1, "p1", &ok)).await;
    ws_send(&mut ws, &in_dialog("BYE", 2, "p1", &ok)).await;
    assert_eq!(code(&ws_recv(&mut ws).await), 200);
    let (sipp_ok, log) = pbx.finish().await;
    assert!(sipp_ok);
    let sdp = sdp_in_log(&log, "INVITE sip:");
    assert_plain(&sdp);
    let m = sdp
        .lines()
        .find(|l| l.starts_with("m=audio"))
        .unwrap()
        .to_owned();
    assert!(m.contains("RTP/AVP 0"), "PCMU first: {m}");
    for other in ["opus/", "G722/", "PCMA/"] {
        assert!(!sdp.contains(other), "{other} should be gone: {sdp}");
    }
    wait_empty(&rtp).await;
}
