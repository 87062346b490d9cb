//! Registrar, digest authentication and calls to registered users, end to
//! end: a WebSocket client registering with digest and then called by a
//! real sipp caller (UDP → WS), sipp registering with digest over UDP and
//! then called by a WebSocket client, wrong passwords, restart.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::digest_authorization as authorization;
use common::*;
use rtcgate::config::StaticRoute;

const PASSWORD: &str = "s3cret";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn scenarios() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../loadtest/scenarios")
}

fn free_udp_port(ip: &str) -> u16 {
    std::net::UdpSocket::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn add_user(gw: &TestGateway, user: &str) {
    gw.app
        .location
        .store()
        .add_subscriber(user, "localhost", PASSWORD, false, now())
        .await
        .unwrap();
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
        .collect()
}

fn register(user: &str, cseq: u32, branch: &str, auth: Option<&str>) -> String {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/WSS ua.invalid;branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\nTo: <sip:{user}@localhost>\r\nFrom: <sip:{user}@localhost>;tag=regtag\r\nCall-ID: reg-{user}@ua.invalid\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:c9gq@ua.invalid;transport=ws>;expires=600\r\nSupported: path, gruu, outbound\r\n{auth}Content-Length: 0\r\n\r\n"
    )
}

/// Registers `user` over the WebSocket, answering the digest challenge.
async fn ws_register(ws: &mut Ws, user: &str, password: &str) -> String {
    ws_send(ws, &register(user, 1, &format!("r1{user}"), None)).await;
    let challenge = ws_recv(ws).await;
    assert!(challenge.starts_with("SIP/2.0 401 "), "{challenge}");
    let chal = header_values(&challenge, "WWW-Authenticate");
    assert_eq!(
        chal.len(),
        2,
        "SHA-256 and MD5 challenges expected: {chal:?}"
    );
    assert!(chal[0].contains("SHA-256"), "SHA-256 first: {chal:?}");
    assert!(chal[1].contains("MD5"), "MD5 last: {chal:?}");
    let auth = authorization(&chal[1], user, password, "REGISTER", "sip:localhost", 1);
    ws_send(ws, &register(user, 2, &format!("r2{user}"), Some(&auth))).await;
    ws_recv(ws).await
}

/// Answers one incoming call as a browser would (180, 200 with SDP), then
/// waits for the ACK and answers the caller's BYE.
async fn answer_one_call(ws: &mut Ws) {
    let invite = ws_recv(ws).await;
    assert!(invite.starts_with("INVITE "), "{invite}");
    let copy = |name: &str| -> String {
        header_values(&invite, name)
            .iter()
            .map(|v| format!("{name}: {v}\r\n"))
            .collect()
    };
    let to = header_values(&invite, "To").remove(0);
    let base = format!(
        "{}{}To: {to};tag=browsertag\r\n{}{}{}",
        copy("Via"),
        copy("From"),
        copy("Call-ID"),
        copy("CSeq"),
        copy("Record-Route")
    );
    ws_send(ws, &format!("SIP/2.0 180 Ringing\r\n{base}Contact: <sip:c9gq@ua.invalid;transport=ws>\r\nContent-Length: 0\r\n\r\n")).await;
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 41000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    ws_send(ws, &format!("SIP/2.0 200 OK\r\n{base}Contact: <sip:c9gq@ua.invalid;transport=ws>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}", sdp.len())).await;
    let ack = ws_recv(ws).await;
    assert!(ack.starts_with("ACK "), "{ack}");
    let bye = ws_recv(ws).await;
    assert!(bye.starts_with("BYE "), "{bye}");
    let resp = format!(
        "SIP/2.0 200 OK\r\n{}{}{}{}{}Content-Length: 0\r\n\r\n",
        header_values(&bye, "Via")
            .iter()
            .map(|v| format!("Via: {v}\r\n"))
            .collect::<String>(),
        header_values(&bye, "From")
            .iter()
            .map(|v| format!("From: {v}\r\n"))
            .collect::<String>(),
        header_values(&bye, "To")
            .iter()
            .map(|v| format!("To: {v}\r\n"))
            .collect::<String>(),
        header_values(&bye, "Call-ID")
            .iter()
            .map(|v| format!("Call-ID: {v}\r\n"))
            .collect::<String>(),
        header_values(&bye, "CSeq")
            .iter()
            .map(|v| format!("CSeq: {v}\r\n"))
            .collect::<String>(),
    );
    ws_send(ws, &resp).await;
}

fn sipp(args: &[&str], work: &std::path::Path) -> tokio::process::Child {
    tokio::process::Command::new(which("sipp").unwrap())
        .current_dir(work)
        .args(args)
        .args([
            "-nostdin",
            "-timeout",
            "20s",
            "-timeout_error",
            "-trace_err",
        ])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

async fn sipp_ok(mut child: tokio::process::Child, work: &std::path::Path) -> bool {
    let ok = tokio::time::timeout(Duration::from_secs(25), child.wait())
        .await
        .expect("sipp did not finish")
        .unwrap()
        .success();
    if !ok && let Ok(entries) = std::fs::read_dir(work) {
        for e in entries.flatten() {
            eprintln!(
                "--- {}:\n{}",
                e.path().display(),
                std::fs::read_to_string(e.path()).unwrap_or_default()
            );
        }
    }
    ok
}

#[tokio::test]
async fn ws_client_registers_with_digest_and_is_called_by_sipp() {
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let gw = TestGateway::start_with(|c| {
        c.auth.required = true;
        c.auth.trusted = vec!["127.0.0.2".into()];
    })
    .await;
    add_user(&gw, "1001").await;
    let mut ws = ws_connect(gw.wss(), Some(&gw.ca()), Some("sip"), None)
        .await
        .unwrap();
    let ok = ws_register(&mut ws, "1001", PASSWORD).await;
    assert!(ok.starts_with("SIP/2.0 200 "), "{ok}");
    assert!(
        header_values(&ok, "Contact")
            .iter()
            .any(|c| c.contains("expires=")),
        "{ok}"
    );

    // A PBX (trusted, 127.0.0.2) calls 1001: rtcgate finds the flow.
    let work = tempfile::tempdir().unwrap();
    let target = gw.udp().to_string();
    let scenario = scenarios().join("uac_call.xml");
    let caller = sipp(
        &[
            &target,
            "-sf",
            scenario.to_str().unwrap(),
            "-s",
            "1001",
            "-i",
            "127.0.0.2",
            "-mi",
            "127.0.0.2",
            "-m",
            "1",
            "-d",
            "300",
        ],
        work.path(),
    );
    tokio::time::timeout(Duration::from_secs(15), answer_one_call(&mut ws))
        .await
        .expect("call did not reach the browser");
    assert!(sipp_ok(caller, work.path()).await, "sipp caller failed");
}

#[tokio::test]
async fn wrong_password_gets_403_and_stores_nothing() {
    let gw = TestGateway::start_with(|c| c.auth.required = true).await;
    add_user(&gw, "1002").await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let resp = ws_register(&mut ws, "1002", "wrong").await;
    assert!(resp.starts_with("SIP/2.0 403 "), "{resp}");
    assert!(
        gw.app
            .location
            .lookup("sip:1002@localhost", now())
            .is_empty()
    );
}

#[tokio::test]
async fn unauthenticated_call_from_untrusted_source_is_challenged() {
    let gw = TestGateway::start_with(|c| c.auth.required = true).await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let invite = "INVITE sip:1001@localhost SIP/2.0\r\nVia: SIP/2.0/WS ua.invalid;branch=z9hG4bKch1\r\nMax-Forwards: 70\r\nFrom: <sip:2000@localhost>;tag=a\r\nTo: <sip:1001@localhost>\r\nCall-ID: ch1@ua\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    ws_send(&mut ws, invite).await;
    let mut resp = ws_recv(&mut ws).await;
    if resp.starts_with("SIP/2.0 100 ") {
        resp = ws_recv(&mut ws).await;
    }
    assert!(resp.starts_with("SIP/2.0 407 "), "{resp}");
    let chal = header_values(&resp, "Proxy-Authenticate");
    assert_eq!(chal.len(), 2);
}

#[tokio::test]
async fn sipp_registers_over_udp_and_is_called_by_a_ws_client() {
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let gw = TestGateway::start_with(|c| {
        c.auth.required = true;
        c.routes = vec![StaticRoute {
            prefix: "9".into(),
            destination: "127.0.0.9:9".parse().unwrap(),
            codec_policy: None,
        }];
    })
    .await;
    add_user(&gw, "2001").await;
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("users.csv"),
        format!("SEQUENTIAL\n2001;{PASSWORD}\n"),
    )
    .unwrap();
    let port = free_udp_port("127.0.0.3");
    let target = gw.udp().to_string();
    let reg = scenarios().join("uac_register_digest.xml");
    let registering = sipp(
        &[
            &target,
            "-sf",
            reg.to_str().unwrap(),
            "-inf",
            "users.csv",
            "-i",
            "127.0.0.3",
            "-p",
            &port.to_string(),
            "-m",
            "1",
        ],
        work.path(),
    );
    assert!(
        sipp_ok(registering, work.path()).await,
        "sipp REGISTER with digest failed"
    );
    let bindings = gw.app.location.lookup("sip:2001@127.0.0.1", now());
    assert_eq!(bindings.len(), 1, "{bindings:?}");
    assert_eq!(
        bindings[0].received.as_deref(),
        Some(format!("127.0.0.3:{port}").as_str())
    );

    // Now the registered sipp answers calls on the same address.
    let uas = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/uas.xml");
    let callee = sipp(
        &[
            "-sf",
            uas.to_str().unwrap(),
            "-i",
            "127.0.0.3",
            "-p",
            &port.to_string(),
            "-m",
            "1",
        ],
        work.path(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A WebSocket client (untrusted: must answer the 407) calls 2001.
    add_user(&gw, "1003").await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let invite = |cseq: u32, auth: Option<String>| {
        let auth = auth
            .map(|a| format!("Proxy-Authorization: {a}\r\n"))
            .unwrap_or_default();
        format!(
            "INVITE sip:2001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS ua.invalid;branch=z9hG4bKc{cseq}\r\nMax-Forwards: 70\r\nFrom: <sip:1003@localhost>;tag=wsc\r\nTo: <sip:2001@127.0.0.1>\r\nCall-ID: c2001@ua\r\nCSeq: {cseq} INVITE\r\nContact: <sip:u@ua.invalid;transport=ws>\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    ws_send(&mut ws, &invite(1, None)).await;
    let mut r = ws_recv(&mut ws).await;
    while r.starts_with("SIP/2.0 100 ") {
        r = ws_recv(&mut ws).await;
    }
    assert!(r.starts_with("SIP/2.0 407 "), "{r}");
    let chal = header_values(&r, "Proxy-Authenticate");
    // ACK the 407 (hop by hop, same branch).
    let to407 = header_values(&r, "To").remove(0);
    ws_send(&mut ws, &format!("ACK sip:2001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/WS ua.invalid;branch=z9hG4bKc1\r\nMax-Forwards: 70\r\nFrom: <sip:1003@localhost>;tag=wsc\r\nTo: {to407}\r\nCall-ID: c2001@ua\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n")).await;
    let auth = authorization(
        &chal[1],
        "1003",
        PASSWORD,
        "INVITE",
        "sip:2001@127.0.0.1",
        1,
    );
    ws_send(&mut ws, &invite(2, Some(auth))).await;
    let ok = loop {
        let r = ws_recv(&mut ws).await;
        let code: u16 = r[8..11].parse().unwrap();
        if code >= 200 {
            break r;
        }
    };
    assert!(ok.starts_with("SIP/2.0 200 "), "{ok}");
    let rr = header_values(&ok, "Record-Route");
    let routes: Vec<String> = rr
        .iter()
        .flat_map(|v| rtcgate::proxy::route::split_list(v))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let route_lines: String = routes.iter().map(|r| format!("Route: {r}\r\n")).collect();
    let to = header_values(&ok, "To").remove(0);
    let contact = header_values(&ok, "Contact").remove(0);
    let target_uri = rtcgate::proxy::route::uri_of(&contact).to_owned();
    let in_dialog = |method: &str, cseq: u32, branch: &str| {
        format!(
            "{method} {target_uri} SIP/2.0\r\nVia: SIP/2.0/WS ua.invalid;branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n{route_lines}From: <sip:1003@localhost>;tag=wsc\r\nTo: {to}\r\nCall-ID: c2001@ua\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    ws_send(&mut ws, &in_dialog("ACK", 2, "a2")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    ws_send(&mut ws, &in_dialog("BYE", 3, "b3")).await;
    let r = ws_recv(&mut ws).await;
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
    assert!(sipp_ok(callee, work.path()).await, "sipp callee failed");
}

#[tokio::test]
async fn restart_keeps_registrations() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/keep.db?mode=rwc", dir.path().display());
    let gw = TestGateway::start_with(|c| c.database.url = db.clone()).await;
    // A UDP phone registers (no flow: the binding outlives connections).
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    let reg = format!(
        "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKkeep1;rport\r\nMax-Forwards: 70\r\nTo: <sip:3001@localhost>\r\nFrom: <sip:3001@localhost>;tag=k\r\nCall-ID: keep@phone\r\nCSeq: 1 REGISTER\r\nContact: <sip:3001@{me}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(reg.as_bytes(), gw.udp()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("no answer to REGISTER")
        .unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 200 "));
    let TestGateway { app, dir: certs } = gw;
    app.shutdown();
    drop(certs);

    let gw2 = TestGateway::start_with(|c| c.database.url = db.clone()).await;
    let b = gw2.app.location.lookup("sip:3001@localhost", now());
    assert_eq!(b.len(), 1, "registration lost across restart: {b:?}");
    assert_eq!(b[0].received.as_deref(), Some(me.to_string().as_str()));
}

/// Registers `contact_user` for AOR `user` without authentication.
async fn plain_register(ws: &mut Ws, user: &str, contact_user: &str) {
    let reg = format!(
        "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/WSS {contact_user}.invalid;branch=z9hG4bK{contact_user}\r\nMax-Forwards: 70\r\nTo: <sip:{user}@localhost>\r\nFrom: <sip:{user}@localhost>;tag={contact_user}\r\nCall-ID: reg-{contact_user}@ua\r\nCSeq: 1 REGISTER\r\nContact: <sip:{contact_user}@{contact_user}.invalid;transport=ws>;expires=600\r\nContent-Length: 0\r\n\r\n"
    );
    ws_send(ws, &reg).await;
    let r = ws_recv(ws).await;
    assert!(r.starts_with("SIP/2.0 200 "), "{r}");
}

fn reply(req: &str, status: &str, to_tag: Option<&str>, extra: &str) -> String {
    let copy = |name: &str| -> String {
        header_values(req, name)
            .iter()
            .map(|v| format!("{name}: {v}\r\n"))
            .collect()
    };
    let to = header_values(req, "To").remove(0);
    let to = match to_tag {
        Some(t) if !to.contains(";tag=") => format!("{to};tag={t}"),
        _ => to,
    };
    format!(
        "SIP/2.0 {status}\r\n{}{}To: {to}\r\n{}{}{}{extra}Content-Length: 0\r\n\r\n",
        copy("Via"),
        copy("From"),
        copy("Call-ID"),
        copy("CSeq"),
        copy("Record-Route")
    )
}

#[tokio::test]
async fn forks_to_two_browsers_and_cancels_the_one_that_did_not_answer() {
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let gw = TestGateway::start_with(|c| c.auth.trusted = vec!["127.0.0.1".into()]).await;
    let mut a = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let mut b = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    plain_register(&mut a, "1004", "uaa").await;
    plain_register(&mut b, "1004", "uab").await;
    assert_eq!(gw.app.location.lookup("sip:1004@localhost", now()).len(), 2);

    let work = tempfile::tempdir().unwrap();
    let target = gw.udp().to_string();
    let scenario = scenarios().join("uac_call.xml");
    let caller = sipp(
        &[
            &target,
            "-sf",
            scenario.to_str().unwrap(),
            "-s",
            "1004",
            "-i",
            "127.0.0.1",
            "-mi",
            "127.0.0.1",
            "-m",
            "1",
            "-d",
            "300",
        ],
        work.path(),
    );
    // Both contacts ring.
    let inv_a = ws_recv(&mut a).await;
    let inv_b = ws_recv(&mut b).await;
    assert!(inv_a.starts_with("INVITE sip:uaa@"), "{inv_a}");
    assert!(inv_b.starts_with("INVITE sip:uab@"), "{inv_b}");
    ws_send(&mut b, &reply(&inv_b, "180 Ringing", Some("tb"), "")).await;
    ws_send(&mut a, &reply(&inv_a, "180 Ringing", Some("ta"), "")).await;
    // A answers; B must be cancelled.
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 41000 RTP/AVP 0\r\n";
    let ok = reply(
        &inv_a,
        "200 OK",
        Some("ta"),
        "Contact: <sip:uaa@uaa.invalid;transport=ws>\r\nContent-Type: application/sdp\r\n",
    )
    .replace(
        "Content-Length: 0\r\n\r\n",
        &format!("Content-Length: {}\r\n\r\n{sdp}", sdp.len()),
    );
    ws_send(&mut a, &ok).await;
    let cancel = ws_recv(&mut b).await;
    assert!(cancel.starts_with("CANCEL sip:uab@"), "B got {cancel}");
    ws_send(&mut b, &reply(&cancel, "200 OK", Some("tb"), "")).await;
    ws_send(
        &mut b,
        &reply(&inv_b, "487 Request Terminated", Some("tb"), ""),
    )
    .await;
    let ack_b = ws_recv(&mut b).await;
    assert!(
        ack_b.starts_with("ACK sip:uab@"),
        "hop-by-hop ACK for B's 487: {ack_b}"
    );
    // The call goes on with A: ACK, then the caller's BYE.
    let ack = ws_recv(&mut a).await;
    assert!(ack.starts_with("ACK "), "{ack}");
    let bye = ws_recv(&mut a).await;
    assert!(bye.starts_with("BYE "), "{bye}");
    ws_send(&mut a, &reply(&bye, "200 OK", None, "")).await;
    assert!(sipp_ok(caller, work.path()).await, "sipp caller failed");
}
