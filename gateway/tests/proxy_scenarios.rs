//! Proxy core scenarios end to end (issue "SIP proxy core"): a browser-like
//! WebSocket client on one side, a real sipp PBX over UDP on the other,
//! rtcgate in the middle as a stateful, record-routing proxy.
//!
//! WS → UDP: CANCEL while ringing, 486 passed back (ACK hop by hop),
//! re-INVITE (hold) in dialog, BYE from the PBX, calls over a lossy UDP
//! link, two concurrent clients. UDP → WS waits for the registrar wiring.
//!
//! Every sipp scenario file in `tests/sipp/` names its command line.

mod common;

use std::time::Duration;

use common::*;
use rtcgate::config::StaticRoute;

const CONTACT: &str = "<sip:u1@br.invalid;transport=ws;ob>";
const SDP: &str = "v=0\r\no=browser 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
const HOLD_SDP: &str = "v=0\r\no=browser 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendonly\r\n";

/// Starts sipp with `scenario` as the PBX, or None (skip) without sipp.
fn pbx(scenario: &str, args: &[&str]) -> Option<SippRun> {
    let run = SippRun::spawn(scenario, args);
    require("sipp", run.is_some());
    run
}

/// A gateway routing numbers starting with 1 to the sipp PBX.
async fn gateway_to(pbx_port: u16) -> TestGateway {
    TestGateway::start_with(|c| {
        c.routes = vec![StaticRoute {
            prefix: "1".into(),
            destination: format!("127.0.0.1:{pbx_port}").parse().unwrap(),
            codec_policy: None,
        }]
    })
    .await
}

/// The caller's side of one call, as a browser (SIP.js) would keep it.
struct Call {
    call_id: String,
    from: String,
    /// Filled from the final response.
    to: String,
    target: String,
    /// Route set: the Record-Route of the 2xx, reversed.
    routes: Vec<String>,
}

impl Call {
    fn new(name: &str) -> Self {
        Self {
            call_id: format!("{name}@browser.invalid"),
            from: format!("<sip:2000@localhost>;tag=f{name}"),
            to: "<sip:1001@localhost>".into(),
            target: "sip:1001@localhost".into(),
            routes: Vec::new(),
        }
    }

    fn request(&self, method: &str, branch: &str, cseq: u32, extra: &str, body: &str) -> String {
        let route_lines: String = self
            .routes
            .iter()
            .map(|r| format!("Route: {r}\r\n"))
            .collect();
        let typed = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".into()
        };
        format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/WS br.invalid;branch={branch}\r\nMax-Forwards: 70\r\n{route_lines}From: {from}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContact: {CONTACT}\r\n{extra}{typed}Content-Length: {len}\r\n\r\n{body}",
            target = self.target,
            from = self.from,
            to = self.to,
            cid = self.call_id,
            len = body.len(),
        )
    }

    /// The initial INVITE (out of dialog: R-URI = the dialled number).
    fn invite(&self, branch: &str) -> String {
        self.request("INVITE", branch, 1, "", SDP)
    }

    /// Takes the dialog state from a 2xx to the INVITE.
    fn established(&mut self, ok: &str) {
        self.to = sip_header(ok, "To");
        self.target = rtcgate::proxy::route::uri_of(&sip_header(ok, "Contact")).to_owned();
        self.routes = sip_header_values(ok, "Record-Route")
            .into_iter()
            .rev()
            .collect();
    }
}

/// Receives until a final response (skipping 1xx); returns the 1xx codes
/// seen and the final response.
async fn final_response(ws: &mut Ws) -> (Vec<u16>, String) {
    let mut provisional = Vec::new();
    loop {
        let m = ws_recv(ws).await;
        let code = sip_status(&m).unwrap_or_else(|| panic!("expected a response, got:\n{m}"));
        if code >= 200 {
            return (provisional, m);
        }
        provisional.push(code);
    }
}

/// INVITE → 200 → ACK (the ACK follows the route set); returns the call.
async fn set_up(ws: &mut Ws, name: &str) -> Call {
    let mut call = Call::new(name);
    ws_send(ws, &call.invite(&format!("z9hG4bK{name}inv"))).await;
    let (prov, ok) = final_response(ws).await;
    assert_eq!(
        sip_status(&ok),
        Some(200),
        "{name}: 1xx {prov:?}, final:\n{ok}"
    );
    assert!(prov.contains(&180), "{name}: 1xx {prov:?}");
    assert_eq!(
        sip_header_values(&ok, "Record-Route").len(),
        2,
        "{name}: double Record-Route expected:\n{ok}"
    );
    assert_eq!(
        sip_header_values(&ok, "Via").len(),
        1,
        "{name}: proxy Via left in:\n{ok}"
    );
    call.established(&ok);
    ws_send(
        ws,
        &call.request("ACK", &format!("z9hG4bK{name}ack"), 1, "", ""),
    )
    .await;
    call
}

/// BYE from the caller, answered 200.
async fn hang_up(ws: &mut Ws, call: &Call, cseq: u32) {
    let name = &call.call_id;
    ws_send(
        ws,
        &call.request("BYE", &format!("z9hG4bK{cseq}bye{name}"), cseq, "", ""),
    )
    .await;
    let (_, r) = final_response(ws).await;
    assert_eq!(sip_status(&r), Some(200), "{name}: BYE answered:\n{r}");
    assert_eq!(sip_cseq_method(&r), "BYE");
}

const SIPP_WAIT: Duration = Duration::from_secs(20);

/// 1. CANCEL while ringing: 200 for the CANCEL from the proxy, 487 for the
/// INVITE relayed from the PBX, the ACK for the 487 absorbed hop by hop
/// (the PBX gets only the proxy's own ACK, with the INVITE's branch).
#[tokio::test]
async fn cancel_while_ringing() {
    let Some(sipp) = pbx("pbx_ringing_cancel.xml", &["-m", "1"]) else {
        return;
    };
    let gw = gateway_to(sipp.port).await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let call = Call::new("cancel1");
    let branch = "z9hG4bKcancel1inv";
    ws_send(&mut ws, &call.invite(branch)).await;
    // Wait for the 180 (the 100 comes from the proxy itself).
    loop {
        let m = ws_recv(&mut ws).await;
        match sip_status(&m) {
            Some(180) => break,
            Some(c) if c < 200 => continue,
            other => panic!("expected 180, got {other:?}:\n{m}"),
        }
    }
    // §9.1: same Request-URI, Call-ID, From, To, CSeq number and top Via
    // (branch) as the INVITE.
    let cancel = call.request("CANCEL", branch, 1, "", "");
    ws_send(&mut ws, &cancel).await;
    let mut got_cancel_ok = false;
    let mut final_invite = None;
    while !(got_cancel_ok && final_invite.is_some()) {
        let m = ws_recv(&mut ws).await;
        match (sip_status(&m), sip_cseq_method(&m).as_str()) {
            (Some(200), "CANCEL") => got_cancel_ok = true,
            (Some(c), "INVITE") if c >= 200 => final_invite = Some(m),
            (Some(c), "INVITE") if c < 200 => {}
            _ => panic!("unexpected message after CANCEL:\n{m}"),
        }
    }
    let r487 = final_invite.unwrap();
    assert_eq!(sip_status(&r487), Some(487), "{r487}");
    assert_eq!(
        sip_header_values(&r487, "Via").len(),
        1,
        "proxy Via left:\n{r487}"
    );
    assert!(
        sip_header_values(&r487, "Via")[0].contains(branch),
        "487 for our INVITE branch:\n{r487}"
    );
    // ACK for a non-2xx: hop by hop, the INVITE's branch, the 487's To tag.
    let mut acked = Call::new("cancel1");
    acked.to = sip_header(&r487, "To");
    ws_send(&mut ws, &acked.request("ACK", branch, 1, "", "")).await;
    // Nothing else comes back to the client (no 487 retransmission over a
    // reliable transport, no stray responses).
    assert_eq!(
        ws_recv_within(&mut ws, Duration::from_millis(700)).await,
        None,
        "unexpected message after the ACK"
    );
    assert!(sipp.finish(SIPP_WAIT).await, "sipp PBX scenario failed");
}

/// 2. 486 Busy Here passed back with its reason phrase; the client's ACK
/// for it is absorbed by the proxy (the PBX gets the proxy's own ACK only).
#[tokio::test]
async fn busy_486_passes_back_and_ack_is_hop_by_hop() {
    let Some(sipp) = pbx("pbx_busy.xml", &["-m", "1"]) else {
        return;
    };
    let gw = gateway_to(sipp.port).await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let mut call = Call::new("busy1");
    let branch = "z9hG4bKbusy1inv";
    ws_send(&mut ws, &call.invite(branch)).await;
    let (_, busy) = final_response(&mut ws).await;
    assert!(
        busy.starts_with("SIP/2.0 486 Busy Here\r\n"),
        "status line with its reason phrase expected:\n{busy}"
    );
    assert_eq!(sip_cseq_method(&busy), "INVITE");
    assert_eq!(
        sip_header_values(&busy, "Via").len(),
        1,
        "proxy Via left:\n{busy}"
    );
    assert!(sip_header(&busy, "To").contains("tag="), "{busy}");
    call.to = sip_header(&busy, "To");
    ws_send(&mut ws, &call.request("ACK", branch, 1, "", "")).await;
    assert_eq!(
        ws_recv_within(&mut ws, Duration::from_millis(700)).await,
        None,
        "unexpected message after the ACK"
    );
    assert!(sipp.finish(SIPP_WAIT).await, "sipp PBX scenario failed");
}

/// 3. re-INVITE in dialog (hold, a=sendonly) after the call is up: the PBX
/// sees the sendonly SDP, answers 200 (recvonly), the client ACKs; then BYE.
#[tokio::test]
async fn reinvite_hold_in_dialog() {
    let Some(sipp) = pbx("pbx_reinvite.xml", &["-m", "1"]) else {
        return;
    };
    let gw = gateway_to(sipp.port).await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let call = set_up(&mut ws, "hold1").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    ws_send(
        &mut ws,
        &call.request("INVITE", "z9hG4bKhold1reinv", 2, "", HOLD_SDP),
    )
    .await;
    let (_, ok) = final_response(&mut ws).await;
    assert_eq!(sip_status(&ok), Some(200), "re-INVITE answered:\n{ok}");
    assert_eq!(sip_cseq_method(&ok), "INVITE");
    assert_eq!(sip_header(&ok, "CSeq").split_whitespace().next(), Some("2"));
    assert_eq!(
        sip_header(&ok, "X-Hold-Seen"),
        "a=sendonly",
        "PBX saw:\n{ok}"
    );
    assert!(sip_body(&ok).contains("a=recvonly"), "{ok}");
    assert_eq!(
        sip_header_values(&ok, "Via").len(),
        1,
        "proxy Via left:\n{ok}"
    );
    assert_eq!(sip_header(&ok, "To"), call.to, "same dialog");
    ws_send(
        &mut ws,
        &call.request("ACK", "z9hG4bKhold1reack", 2, "", ""),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    hang_up(&mut ws, &call, 3).await;
    assert!(sipp.finish(SIPP_WAIT).await, "sipp PBX scenario failed");
}

/// 4. BYE from the PBX along the Record-Route set it got: it reaches the
/// client over its WebSocket (routes consumed, R-URI = the client's
/// Contact); the client's 200 goes back to sipp.
#[tokio::test]
async fn bye_from_the_pbx_reaches_the_websocket_client() {
    let Some(sipp) = pbx("pbx_answer_then_bye.xml", &["-m", "1"]) else {
        return;
    };
    let gw = gateway_to(sipp.port).await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let call = set_up(&mut ws, "pbxbye1").await;
    let bye = ws_recv(&mut ws).await;
    assert_eq!(
        sip_method(&bye).as_deref(),
        Some("BYE"),
        "expected BYE:\n{bye}"
    );
    let ruri = bye.lines().next().unwrap().split(' ').nth(1).unwrap();
    // Equal as URIs (§19.1.4: the transport parameter compares
    // case-insensitively; the proxy re-serializes it as `transport=WS`).
    assert_eq!(
        ruri.to_ascii_lowercase(),
        rtcgate::proxy::route::uri_of(CONTACT),
        "R-URI = our Contact"
    );
    assert!(
        sip_header_values(&bye, "Route").is_empty(),
        "rtcgate's Route entries must be consumed:\n{bye}"
    );
    let vias = sip_header_values(&bye, "Via");
    assert_eq!(vias.len(), 2, "proxy Via on top of sipp's:\n{bye}");
    assert!(vias[0].starts_with("SIP/2.0/WS"), "{bye}");
    assert_eq!(sip_header(&bye, "Call-ID"), call.call_id);
    // The PBX's From is our To (with its tag) and vice versa.
    assert_eq!(sip_header(&bye, "To"), call.from);
    assert_eq!(sip_header(&bye, "From"), call.to);
    let via_lines: String = sip_header_values(&bye, "Via")
        .iter()
        .map(|v| format!("Via: {v}\r\n"))
        .collect();
    let ok = format!(
        "SIP/2.0 200 OK\r\n{via_lines}From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        sip_header(&bye, "From"),
        sip_header(&bye, "To"),
        sip_header(&bye, "Call-ID"),
        sip_header(&bye, "CSeq"),
    );
    ws_send(&mut ws, &ok).await;
    assert!(sipp.finish(SIPP_WAIT).await, "sipp PBX scenario failed");
    // The dialog is over: nothing else arrives (no BYE retransmission).
    assert_eq!(
        ws_recv_within(&mut ws, Duration::from_millis(300)).await,
        None
    );
}

/// 5. Fifteen sequential calls over a UDP link losing 10 % of the PBX's
/// messages (sipp lost="10"): all complete through retransmissions.
#[tokio::test]
async fn calls_complete_over_a_lossy_udp_link() {
    const CALLS: usize = 15;
    // Unlucky runs of losses stretch a call by several Timer E periods (up
    // to T2 = 4 s each), so the whole run gets more than the default bound.
    let Some(sipp) = pbx(
        "pbx_lossy.xml",
        &["-m", &CALLS.to_string(), "-timeout", "90s"],
    ) else {
        return;
    };
    let gw = gateway_to(sipp.port).await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    match tokio::spawn(async move { lossy_calls(&mut ws, CALLS).await }).await {
        Ok(re_acks) => eprintln!("lossy link: {re_acks} retransmitted 200s re-ACKed"),
        Err(e) => {
            // Show what sipp saw before failing.
            sipp.abort_and_dump().await;
            std::panic::resume_unwind(e.into_panic());
        }
    }
    let (ok, logs) = sipp.finish_with_logs(SIPP_WAIT).await;
    assert!(ok, "sipp PBX scenario failed");
    // The claim needs losses: with 5 lossy points per call at 10 %, none in
    // 15 calls has a probability of 0.9^75 ≈ 0.04 %.
    // sipp logs "UDP message voluntary lost (while sending)" and "UDP
    // message lost (recv)".
    let lost = logs.matches("voluntary lost").count() + logs.matches("message lost (recv)").count();
    eprintln!("lossy link: sipp dropped {lost} messages");
    assert!(lost > 0, "sipp dropped nothing: the link was not lossy");
}

/// The caller's side of `calls` sequential calls over the lossy link;
/// returns how many retransmitted 200s it ACKed again.
async fn lossy_calls(ws: &mut Ws, calls: usize) -> usize {
    let mut re_acks = 0;
    for i in 0..calls {
        let name = format!("lossy{i}");
        let mut call = Call::new(&name);
        ws_send(ws, &call.invite(&format!("z9hG4bK{name}inv"))).await;
        let ok = loop {
            let m = ws_recv_long(ws).await;
            match sip_status(&m) {
                Some(c) if c < 200 => continue,
                Some(200) => break m,
                _ => panic!("{name}: unexpected:\n{m}"),
            }
        };
        call.established(&ok);
        let ack = call.request("ACK", &format!("z9hG4bK{name}ack"), 1, "", "");
        ws_send(ws, &ack).await;
        // A lost ACK shows as a retransmitted 200: ACK it again.
        let until = tokio::time::Instant::now() + Duration::from_millis(600);
        while let Some(m) = ws_recv_within(
            ws,
            until.saturating_duration_since(tokio::time::Instant::now()),
        )
        .await
        {
            assert_eq!(sip_status(&m), Some(200), "{name}: unexpected:\n{m}");
            assert_eq!(sip_cseq_method(&m), "INVITE");
            re_acks += 1;
            ws_send(ws, &ack).await;
        }
        ws_send(
            ws,
            &call.request("BYE", &format!("z9hG4bK{name}bye"), 2, "", ""),
        )
        .await;
        loop {
            let m = ws_recv_long(ws).await;
            match (sip_status(&m), sip_cseq_method(&m).as_str()) {
                (Some(200), "BYE") => break,
                // A 200 retransmission crossing our BYE.
                (Some(200), "INVITE") => continue,
                _ => panic!("{name}: unexpected:\n{m}"),
            }
        }
    }
    re_acks
}

/// Next message within 25 s (losses can cost several retransmissions, each
/// up to T2 = 4 s apart; Timer F gives up only at 32 s).
async fn ws_recv_long(ws: &mut Ws) -> String {
    ws_recv_within(ws, Duration::from_secs(25))
        .await
        .expect("no message within 25 s")
}

/// 6. Two WebSocket clients, each with a call to the PBX at the same time
/// (one sipp UAS handling both): both complete, each on its own flow.
#[tokio::test]
async fn two_concurrent_clients_both_complete() {
    let Some(sipp) = pbx("uas.xml", &["-m", "2"]) else {
        return;
    };
    let gw = gateway_to(sipp.port).await;
    let mut a = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let mut b = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let one = async {
        let call = set_up(&mut a, "twoA").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        hang_up(&mut a, &call, 2).await;
        call
    };
    let two = async {
        let call = set_up(&mut b, "twoB").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        hang_up(&mut b, &call, 2).await;
        call
    };
    let (ca, cb) = tokio::join!(one, two);
    // Each client's Record-Route names its own flow.
    let ws_entry = |c: &Call| {
        c.routes
            .iter()
            .find(|r| r.contains("transport=ws"))
            .cloned()
            .unwrap_or_else(|| panic!("no ws route entry in {:?}", c.routes))
    };
    assert_ne!(ws_entry(&ca), ws_entry(&cb), "flow tokens must differ");
    assert!(sipp.finish(SIPP_WAIT).await, "sipp PBX scenario failed");
}

/// UDP → WS: a legacy caller (sipp UAC) calls a browser registered over
/// WebSocket. Needs the registrar wired into the proxy.
#[tokio::test]
async fn udp_to_ws_call_to_a_registered_browser() {
    let gw = TestGateway::start().await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let reg = "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/WS br.invalid;branch=z9hG4bKreg1\r\nMax-Forwards: 70\r\nFrom: <sip:2000@localhost>;tag=freg\r\nTo: <sip:2000@localhost>\r\nCall-ID: reg1@browser.invalid\r\nCSeq: 2 REGISTER\r\nContact: <sip:u1@br.invalid;transport=ws>;expires=300\r\nSupported: outbound, path, gruu\r\nContent-Length: 0\r\n\r\n";
    ws_send(&mut ws, reg).await;
    let (_, r) = final_response(&mut ws).await;
    assert_eq!(sip_status(&r), Some(200), "REGISTER:\n{r}");
    let gw_udp = gw.udp().to_string();
    let Some(sipp) = pbx("caller_to_browser.xml", &["-s", "2000", &gw_udp, "-m", "1"]) else {
        return;
    };
    let invite = loop {
        let m = ws_recv(&mut ws).await;
        if sip_method(&m).as_deref() == Some("INVITE") {
            break m;
        }
    };
    assert_eq!(
        invite.lines().next().unwrap().split(' ').nth(1).unwrap(),
        "sip:u1@br.invalid;transport=ws",
        "R-URI = the registered Contact"
    );
    let rr = sip_header_values(&invite, "Record-Route");
    assert_eq!(rr.len(), 2, "double Record-Route:\n{invite}");
    let copy = |m: &str, code: &str, extra: &str, body: &str| {
        let vias: String = sip_header_values(m, "Via")
            .iter()
            .map(|v| format!("Via: {v}\r\n"))
            .collect();
        let rrs: String = sip_header_values(m, "Record-Route")
            .iter()
            .map(|v| format!("Record-Route: {v}\r\n"))
            .collect();
        format!(
            "SIP/2.0 {code}\r\n{vias}{rrs}From: {}\r\nTo: {};tag=brtag\r\nCall-ID: {}\r\nCSeq: {}\r\nContact: <sip:u1@br.invalid;transport=ws>\r\n{extra}Content-Length: {}\r\n\r\n{body}",
            sip_header(m, "From"),
            sip_header(m, "To"),
            sip_header(m, "Call-ID"),
            sip_header(m, "CSeq"),
            body.len()
        )
    };
    ws_send(&mut ws, &copy(&invite, "180 Ringing", "", "")).await;
    ws_send(
        &mut ws,
        &copy(&invite, "200 OK", "Content-Type: application/sdp\r\n", SDP),
    )
    .await;
    let ack = ws_recv(&mut ws).await;
    assert_eq!(sip_method(&ack).as_deref(), Some("ACK"), "{ack}");
    let bye = ws_recv(&mut ws).await;
    assert_eq!(sip_method(&bye).as_deref(), Some("BYE"), "{bye}");
    let vias: String = sip_header_values(&bye, "Via")
        .iter()
        .map(|v| format!("Via: {v}\r\n"))
        .collect();
    let ok = format!(
        "SIP/2.0 200 OK\r\n{vias}From: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        sip_header(&bye, "From"),
        sip_header(&bye, "To"),
        sip_header(&bye, "Call-ID"),
        sip_header(&bye, "CSeq"),
    );
    ws_send(&mut ws, &ok).await;
    assert!(sipp.finish(SIPP_WAIT).await, "sipp caller scenario failed");
}
