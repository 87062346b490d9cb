//! Proxy core end to end: a browser-like WebSocket client calling a real
//! sipp PBX over UDP through rtcgate (INVITE/100/180/200/ACK/BYE).

mod common;

use std::time::Duration;

use common::*;
use rtcgate::config::StaticRoute;
use rtcgate::rsip;

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Sipp(tokio::process::Child, tempfile::TempDir);

impl Sipp {
    fn uas(port: u16) -> Option<Self> {
        let sipp = which("sipp")?;
        let work = tempfile::tempdir().unwrap();
        let scenario = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/uas.xml");
        let child = tokio::process::Command::new(sipp)
            .current_dir(work.path())
            .arg("-sf")
            .arg(scenario)
            .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-m", "1"])
            .args([
                "-nostdin",
                "-timeout",
                "30s",
                "-timeout_error",
                "-trace_err",
            ])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Some(Sipp(child, work))
    }

    async fn finish(mut self) -> bool {
        let status = tokio::time::timeout(Duration::from_secs(20), self.0.wait())
            .await
            .expect("sipp did not finish")
            .unwrap();
        if !status.success()
            && let Ok(entries) = std::fs::read_dir(self.1.path())
        {
            for e in entries.flatten() {
                eprintln!(
                    "--- {}:\n{}",
                    e.path().display(),
                    std::fs::read_to_string(e.path()).unwrap_or_default()
                );
            }
        }
        status.success()
    }
}

fn header_values(resp: &rsip::Response, name: &str) -> Vec<String> {
    resp.headers
        .iter()
        .filter_map(|h| {
            let s = h.to_string();
            let (n, v) = s.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
        .flat_map(|v| rtcgate::proxy::route::split_list(&v))
        .collect()
}

async fn recv_response(ws: &mut Ws) -> rsip::Response {
    let text = ws_recv(ws).await;
    rsip::Response::try_from(text.as_str()).unwrap_or_else(|e| panic!("bad response {e}: {text}"))
}

const SDP: &str = "v=0\r\no=browser 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

#[tokio::test]
async fn ws_to_udp_call_through_the_proxy() {
    let pbx_port = free_udp_port();
    let Some(sipp) = Sipp::uas(pbx_port) else {
        require("sipp", false);
        return;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gw = TestGateway::start_with(|c| {
        c.routes = vec![StaticRoute {
            prefix: "1".into(),
            destination: format!("127.0.0.1:{pbx_port}").parse().unwrap(),
            codec_policy: None,
        }]
    })
    .await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let call_id = "call1@browser.invalid";
    let invite = format!(
        "INVITE sip:1001@localhost SIP/2.0\r\nVia: SIP/2.0/WS br.invalid;branch=z9hG4bKinv1\r\nMax-Forwards: 70\r\nFrom: <sip:2000@localhost>;tag=ftag1\r\nTo: <sip:1001@localhost>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:u1@br.invalid;transport=ws;ob>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    );
    ws_send(&mut ws, &invite).await;
    let mut codes = Vec::new();
    let ok = loop {
        let r = recv_response(&mut ws).await;
        codes.push(r.status_code.code());
        if r.status_code.code() >= 200 {
            break r;
        }
    };
    assert_eq!(ok.status_code.code(), 200, "codes {codes:?}");
    assert!(
        codes.contains(&100) && codes.contains(&180),
        "codes {codes:?}"
    );
    assert!(String::from_utf8_lossy(&ok.body).contains("m=audio"));
    let rr = header_values(&ok, "Record-Route");
    assert_eq!(rr.len(), 2, "double Record-Route expected: {rr:?}");
    assert_eq!(header_values(&ok, "Via").len(), 1, "proxy Via not removed");
    let to = header_values(&ok, "To").remove(0);
    let contact = header_values(&ok, "Contact").remove(0);
    let remote_target = rtcgate::proxy::route::uri_of(&contact).to_owned();
    let route: Vec<String> = rr.iter().rev().cloned().collect();
    let route_lines: String = route.iter().map(|r| format!("Route: {r}\r\n")).collect();

    let ack = format!(
        "ACK {remote_target} SIP/2.0\r\nVia: SIP/2.0/WS br.invalid;branch=z9hG4bKack1\r\nMax-Forwards: 70\r\n{route_lines}From: <sip:2000@localhost>;tag=ftag1\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    );
    ws_send(&mut ws, &ack).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let bye = format!(
        "BYE {remote_target} SIP/2.0\r\nVia: SIP/2.0/WS br.invalid;branch=z9hG4bKbye1\r\nMax-Forwards: 70\r\n{route_lines}From: <sip:2000@localhost>;tag=ftag1\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    ws_send(&mut ws, &bye).await;
    let r = recv_response(&mut ws).await;
    assert_eq!(
        r.status_code.code(),
        200,
        "BYE answered {:?}",
        r.status_code
    );
    assert!(sipp.finish().await, "sipp PBX scenario failed");
}

#[tokio::test]
async fn unknown_number_gets_404_and_foreign_domain_403() {
    let gw = TestGateway::start().await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    for (ruri, code) in [("sip:5555@localhost", 404), ("sip:1001@example.com", 403)] {
        let msg = format!(
            "MESSAGE {ruri} SIP/2.0\r\nVia: SIP/2.0/WS br.invalid;branch=z9hG4bK{code}\r\nMax-Forwards: 70\r\nFrom: <sip:2000@localhost>;tag=f\r\nTo: <{ruri}>\r\nCall-ID: m{code}@x\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
        );
        ws_send(&mut ws, &msg).await;
        let r = recv_response(&mut ws).await;
        assert_eq!(r.status_code.code(), code);
    }
}

#[tokio::test]
async fn max_forwards_zero_gets_483() {
    let gw = TestGateway::start().await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let msg = "MESSAGE sip:1001@localhost SIP/2.0\r\nVia: SIP/2.0/WS br.invalid;branch=z9hG4bKmf0\r\nMax-Forwards: 0\r\nFrom: <sip:2000@localhost>;tag=f\r\nTo: <sip:1001@localhost>\r\nCall-ID: mf0@x\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n";
    ws_send(&mut ws, msg).await;
    assert_eq!(recv_response(&mut ws).await.status_code.code(), 483);
}

#[tokio::test]
async fn in_dialog_request_to_a_closed_flow_gets_430() {
    let gw = TestGateway::start().await;
    // A route entry naming a flow token that no longer (never) exists.
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let me = gw.ws();
    let msg = format!(
        "BYE sip:u@br.invalid;transport=ws SIP/2.0\r\nVia: SIP/2.0/WS br.invalid;branch=z9hG4bKgone\r\nMax-Forwards: 70\r\nRoute: <sip:f999.00000000@{me};transport=ws;lr>\r\nFrom: <sip:2000@localhost>;tag=f\r\nTo: <sip:1001@localhost>;tag=t\r\nCall-ID: gone@x\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    ws_send(&mut ws, &msg).await;
    assert_eq!(recv_response(&mut ws).await.status_code.code(), 430);
}
