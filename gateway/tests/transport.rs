//! Foundation: WSS/WS upgrade rules, SIP over WebSocket and UDP end to end,
//! malformed input, certificate reload.

mod common;

use std::time::Duration;

use common::*;
use tokio::net::UdpSocket;

const ORIGIN: &str = "https://localhost:8443";

#[tokio::test]
async fn wss_options_gets_200() {
    let gw = TestGateway::start().await;
    let mut ws = ws_connect(gw.wss(), Some(&gw.ca()), Some("sip"), Some(ORIGIN))
        .await
        .expect("upgrade refused");
    ws_send(&mut ws, &options("WSS", "wss1", "localhost")).await;
    let resp = ws_recv(&mut ws).await;
    assert!(resp.starts_with("SIP/2.0 200 OK\r\n"), "{resp}");
    assert!(resp.contains("Call-ID: wss1@client.invalid"));
    assert!(resp.contains("Allow: "));
}

#[tokio::test]
async fn ws_plain_works_the_same() {
    let gw = TestGateway::start().await;
    let mut ws = ws_connect(gw.ws(), None, Some("chat, sip"), Some(ORIGIN))
        .await
        .expect("upgrade refused");
    ws_send(&mut ws, &options("WS", "ws1", "127.0.0.1")).await;
    assert!(ws_recv(&mut ws).await.starts_with("SIP/2.0 200 OK\r\n"));
}

#[tokio::test]
async fn upgrade_without_sip_subprotocol_is_refused() {
    let gw = TestGateway::start().await;
    assert_eq!(
        ws_connect(gw.wss(), Some(&gw.ca()), None, Some(ORIGIN))
            .await
            .err(),
        Some(400)
    );
    assert_eq!(
        ws_connect(gw.ws(), None, Some("chat"), Some(ORIGIN))
            .await
            .err(),
        Some(400)
    );
}

#[tokio::test]
async fn upgrade_from_disallowed_origin_is_refused() {
    let gw = TestGateway::start().await;
    assert_eq!(
        ws_connect(
            gw.wss(),
            Some(&gw.ca()),
            Some("sip"),
            Some("https://evil.example")
        )
        .await
        .err(),
        Some(403)
    );
    assert_eq!(
        ws_connect(gw.ws(), None, Some("sip"), Some("http://evil.example"))
            .await
            .err(),
        Some(403)
    );
}

#[tokio::test]
async fn healthz_on_the_same_port() {
    let gw = TestGateway::start().await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(gw.ws()).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = String::new();
    tcp.read_to_string(&mut buf).await.unwrap();
    assert!(buf.starts_with("HTTP/1.1 200 OK"), "{buf}");
    assert!(buf.ends_with("ok\n"));
}

#[tokio::test]
async fn crlf_keepalive_gets_crlf() {
    let gw = TestGateway::start().await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    ws_send(&mut ws, "\r\n\r\n").await;
    assert_eq!(ws_recv(&mut ws).await, "\r\n");
}

#[tokio::test]
async fn other_methods_for_rtcgate_itself_get_405() {
    let gw = TestGateway::start().await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let msg = options("WS", "m1", "localhost").replace("OPTIONS", "MESSAGE");
    ws_send(&mut ws, &msg).await;
    let resp = ws_recv(&mut ws).await;
    assert!(resp.starts_with("SIP/2.0 405 "), "{resp}");
    assert!(resp.contains("Allow: "));
}

/// Malformed messages that still carry what a response needs.
fn answerable_garbage() -> Vec<String> {
    let good = options("WS", "bad", "localhost");
    vec![
        good.replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE"),
        good.replace("Content-Length: 0", "Content-Length: 999"),
        good.replace("Content-Length: 0", "Content-Length: -4"),
        good.replace("Max-Forwards: 70", "Max-Forwards: many"),
        good.replace(
            "OPTIONS sip:localhost SIP/2.0",
            "OPTIONS sip:localhost SIP/3.0",
        ),
        good.replace("OPTIONS sip:localhost", "OPTIONS <<<"),
    ]
}

/// Messages with nothing to answer: dropped.
fn hopeless_garbage() -> Vec<Vec<u8>> {
    vec![
        b"hello".to_vec(),
        b"SIP/2.0 200 OK\r\n\r\n".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x01],
        b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/WS x;branch=z9hG4bKq\r\n".to_vec(),
        "A".repeat(70_000).into_bytes(),
    ]
}

#[tokio::test]
async fn malformed_over_ws_gets_400_or_dropped_and_flow_survives() {
    let gw = TestGateway::start().await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    for bad in answerable_garbage() {
        ws_send(&mut ws, &bad).await;
        let resp = ws_recv(&mut ws).await;
        assert!(
            resp.starts_with("SIP/2.0 400 ") || resp.starts_with("SIP/2.0 505 "),
            "for {bad:?}: {resp}"
        );
    }
    use futures_util::SinkExt;
    for bad in hopeless_garbage().into_iter().filter(|b| b.len() < 60_000) {
        ws.send(tokio_tungstenite::tungstenite::Message::Binary(bad.into()))
            .await
            .unwrap();
    }
    ws_send(&mut ws, &options("WS", "after", "localhost")).await;
    let resp = ws_recv(&mut ws).await;
    assert!(resp.starts_with("SIP/2.0 200 OK"), "{resp}");
    assert!(resp.contains("after@client.invalid"));
    assert!(
        gw.app
            .server
            .transports
            .counters()
            .malformed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 9
    );
}

#[tokio::test]
async fn oversized_ws_message_closes_with_1009_and_others_unaffected() {
    let gw = TestGateway::start_with(|c| {
        c.websocket.max_message_size = 4096;
        c.websocket.max_frame_size = 4096;
    })
    .await;
    let mut other = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    ws_send(&mut ws, &"x".repeat(10_000)).await;
    use futures_util::StreamExt;
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(f))) => return f,
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(
        close.map(|f| u16::from(f.code)),
        Some(1009),
        "expected close code 1009"
    );
    ws_send(&mut other, &options("WS", "other", "localhost")).await;
    assert!(ws_recv(&mut other).await.starts_with("SIP/2.0 200 OK"));
}

#[tokio::test]
async fn malformed_over_udp_gets_400_or_dropped_and_server_answers_next() {
    let gw = TestGateway::start().await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = vec![0u8; 65536];
    for bad in answerable_garbage() {
        let bad = bad.replace("SIP/2.0/WS", "SIP/2.0/UDP");
        sock.send_to(bad.as_bytes(), gw.udp()).await.unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .expect("no 400")
            .unwrap();
        let resp = String::from_utf8_lossy(&buf[..n]);
        assert!(
            resp.starts_with("SIP/2.0 400 ") || resp.starts_with("SIP/2.0 505 "),
            "for {bad:?}: {resp}"
        );
    }
    for bad in hopeless_garbage().into_iter().filter(|b| b.len() < 60_000) {
        sock.send_to(&bad, gw.udp()).await.unwrap();
    }
    sock.send_to(b"\r\n\r\n", gw.udp()).await.unwrap();
    sock.send_to(options("UDP", "udpok", "127.0.0.1").as_bytes(), gw.udp())
        .await
        .unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("no answer to the good request")
        .unwrap();
    let resp = String::from_utf8_lossy(&buf[..n]);
    assert!(resp.starts_with("SIP/2.0 200 OK"), "{resp}");
    assert!(resp.contains("udpok@client.invalid"));
}

#[tokio::test]
async fn sipp_options_over_udp_gets_200() {
    let Some(sipp) = which("sipp") else {
        require("sipp", false);
        return;
    };
    let gw = TestGateway::start().await;
    let scenario = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sipp/options.xml");
    let work = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(sipp)
            .current_dir(work.path())
            .args(["-sf"])
            .arg(&scenario)
            .args(["-m", "3", "-i", "127.0.0.1", "-p", "0", "-nostdin"])
            .args(["-timeout", "15s", "-timeout_error", "-trace_err"])
            .arg(gw.udp().to_string())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("sipp did not finish")
    .unwrap();
    assert!(
        out.status.success(),
        "sipp failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn replaced_certificate_is_served_to_next_handshake() {
    let gw = TestGateway::start().await;
    let leaf_der = |dir: &std::path::Path| {
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        CertificateDer::pem_file_iter(dir.join("cert.pem"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .to_vec()
    };
    let presented = |ca: std::path::PathBuf| {
        let addr = gw.wss();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let connector = tokio_rustls::TlsConnector::from(client_tls(&ca));
            // Fails (unknown issuer) while the old certificate is still served.
            let tls = connector
                .connect(
                    rustls::pki_types::ServerName::try_from("localhost").unwrap(),
                    tcp,
                )
                .await
                .ok()?;
            Some(tls.get_ref().1.peer_certificates()?[0].to_vec())
        }
    };
    let certs = gw.dir.path().join("certs");
    assert_eq!(presented(gw.ca()).await, Some(leaf_der(&certs)));

    // A whole new PKI written over the old files.
    let fresh = tempfile::tempdir().unwrap();
    rtcgate_certs::generate_dev_pki(fresh.path(), &[]).unwrap();
    for f in ["ca.pem", "ca-key.pem", "key.pem", "cert.pem"] {
        std::fs::copy(fresh.path().join(f), certs.join(f)).unwrap();
    }
    let new_leaf = leaf_der(&certs);
    let mut served = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        served = presented(certs.join("ca.pem")).await;
        if served.as_ref() == Some(&new_leaf) {
            break;
        }
    }
    assert_eq!(
        served,
        Some(new_leaf),
        "new certificate not served after reload"
    );
}
