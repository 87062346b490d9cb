//! Security edge cases (issue #11, hardening), with the real parts:
//! - size limits: a UDP datagram at the limit is answered and one byte more
//!   gets 513; an oversized WebSocket message, a fragmented one that grows
//!   past the limit and a frame header announcing a gigabyte all close with
//!   1009 on WS and WSS; an oversized upgrade head gets 431 on both;
//! - hop limits: Max-Forwards 0 on an OPTIONS is answered only when the
//!   OPTIONS is for us (483 toward a user); a request coming back with our
//!   Via and the same Request-URI is a loop (482), one retargeted by the PBX
//!   is a spiral and is forwarded; a request with 70 Vias passes intact;
//! - a browser party to a real call through rtpengine trying to use the
//!   dialog as a relay (a Route beyond ours, a foreign Request-URI) or to
//!   point media at a third party (its SDP naming someone else's address).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::rtpengine::{Daemon, need_rtpengine};
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// The next request (not a response) on `sock` within `wait`.
async fn udp_request_within(sock: &UdpSocket, wait: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = udp_recv_within(sock, left).await?;
        if sip_method(&m).is_some() {
            return Some(m);
        }
    }
}

/// Reads until the server's Close frame; its code (None if the stream
/// ended without one). Bounded by 5 s.
async fn close_code(ws: &mut Ws) -> Option<u16> {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("no close within 5 s")
}

/// A response a UAS builds for `req`: Vias, Record-Route, From, To (tagged
/// with `tag` when untagged), Call-ID and CSeq copied.
fn response_to(req: &str, code: u16, reason: &str, tag: &str, extra: &str, body: &str) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for v in sip_header_values(req, "Via") {
        out.push_str(&format!("Via: {v}\r\n"));
    }
    for r in sip_header_values(req, "Record-Route") {
        out.push_str(&format!("Record-Route: {r}\r\n"));
    }
    let to = sip_header(req, "To");
    let to = if to.contains(";tag=") {
        to
    } else {
        format!("{to};tag={tag}")
    };
    out.push_str(&format!(
        "From: {}\r\nTo: {to}\r\nCall-ID: {}\r\nCSeq: {}\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        sip_header(req, "From"),
        sip_header(req, "Call-ID"),
        sip_header(req, "CSeq"),
        body.len()
    ));
    out
}

/// A UDP socket on a free port of `ip`.
async fn udp_on(ip: &str) -> UdpSocket {
    UdpSocket::bind(format!("{ip}:0")).await.unwrap()
}

#[tokio::test]
async fn udp_datagram_at_the_size_limit_is_answered_one_byte_more_gets_513() {
    let limit = 1024;
    let gw = TestGateway::start_with(|c| c.sip.max_udp_message_size = limit).await;
    let sock = udp_on("127.0.0.1").await;
    let sized = |branch: &str, total: usize| {
        let base = options("UDP", branch, "127.0.0.1");
        // "X-Padding: " + padding + CRLF before Content-Length.
        let pad = total - base.len() - "X-Padding: \r\n".len();
        let m = base.replace(
            "Content-Length: 0\r\n",
            &format!("X-Padding: {}\r\nContent-Length: 0\r\n", "p".repeat(pad)),
        );
        assert_eq!(m.len(), total);
        m
    };
    sock.send_to(sized("atlimit", limit).as_bytes(), gw.udp())
        .await
        .unwrap();
    let r = udp_final(&sock).await;
    assert_eq!(sip_status(&r), Some(200), "{r}");
    assert!(r.contains("atlimit@client.invalid"), "{r}");

    sock.send_to(sized("over", limit + 1).as_bytes(), gw.udp())
        .await
        .unwrap();
    let r = udp_final(&sock).await;
    assert_eq!(sip_status(&r), Some(513), "{r}");
    assert!(r.contains("over@client.invalid"), "{r}");
    let c = gw.app.server.transports.counters();
    assert_eq!(c.oversize.load(Ordering::Relaxed), 1);
}

/// Performs a WebSocket upgrade by hand on `stream`; returns the server's
/// response head.
async fn raw_upgrade<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, extra: &str) -> String {
    let req = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n{extra}\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), async {
        while !head.ends_with(b"\r\n\r\n") {
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => break,
            }
        }
    })
    .await
    .expect("no upgrade response within 5 s");
    String::from_utf8_lossy(&head).into_owned()
}

/// Everything the server sends until it closes (5 s at most).
async fn read_to_close<S: AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    out
}

/// A masked client frame header announcing a text frame of `len` bytes.
fn huge_frame_header(len: u64) -> Vec<u8> {
    let mut h = vec![0x81, 0x80 | 127];
    h.extend_from_slice(&len.to_be_bytes());
    h.extend_from_slice(&[1, 2, 3, 4]);
    h
}

/// On a connection upgraded by hand: a frame header announcing 1 GiB is
/// answered with a Close 1009 at once (the payload is never awaited).
async fn huge_frame_closes_with_1009<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) {
    let head = raw_upgrade(&mut s, "").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(&huge_frame_header(1 << 30)).await.unwrap();
    let got = read_to_close(&mut s).await;
    // Close frame from the server: FIN+opcode 8, unmasked, code 1009.
    assert!(
        got.len() >= 4 && got[0] == 0x88 && got[2..4] == 1009u16.to_be_bytes(),
        "expected a Close 1009 frame, got {got:?}"
    );
}

async fn tls_to(
    addr: SocketAddr,
    ca: &std::path::Path,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(client_tls(ca))
        .connect(
            rustls::pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn oversized_websocket_messages_close_with_1009_on_ws_and_wss() {
    let gw = TestGateway::start_with(|c| {
        c.websocket.max_message_size = 4096;
        c.websocket.max_frame_size = 4096;
    })
    .await;
    let ca = gw.ca();
    for secure in [false, true] {
        let (addr, tls) = if secure {
            (gw.wss(), Some(ca.as_path()))
        } else {
            (gw.ws(), None)
        };
        let mut bystander = ws_connect(addr, tls, Some("sip"), None).await.unwrap();

        // One message over the limit.
        let mut ws = ws_connect(addr, tls, Some("sip"), None).await.unwrap();
        ws_send(&mut ws, &"x".repeat(10_000)).await;
        assert_eq!(close_code(&mut ws).await, Some(1009), "secure={secure}");

        // Frames each within the frame limit whose message grows past it.
        let mut ws = ws_connect(addr, tls, Some("sip"), None).await.unwrap();
        let chunk = "y".repeat(1000);
        for i in 0..5 {
            let op = if i == 0 {
                OpCode::Data(Data::Text)
            } else {
                OpCode::Data(Data::Continue)
            };
            let frame = Frame::message(chunk.clone().into_bytes(), op, i == 4);
            if ws.send(Message::Frame(frame)).await.is_err() {
                break;
            }
        }
        assert_eq!(close_code(&mut ws).await, Some(1009), "secure={secure}");

        // A frame header announcing a gigabyte.
        if secure {
            huge_frame_closes_with_1009(tls_to(addr, &ca).await).await;
        } else {
            huge_frame_closes_with_1009(TcpStream::connect(addr).await.unwrap()).await;
        }

        // A message just under the limit still works, and so does everyone else.
        let mut ok = ws_connect(addr, tls, Some("sip"), None).await.unwrap();
        let near = options("WS", "near", "localhost").replace(
            "Content-Length: 0\r\n",
            &format!("X-Padding: {}\r\nContent-Length: 0\r\n", "n".repeat(3500)),
        );
        assert!(near.len() <= 4096);
        ws_send(&mut ok, &near).await;
        assert!(ws_recv(&mut ok).await.starts_with("SIP/2.0 200 OK"));
        ws_send(&mut bystander, &options("WS", "bystander", "localhost")).await;
        assert!(ws_recv(&mut bystander).await.starts_with("SIP/2.0 200 OK"));
    }
    let c = gw.app.server.transports.counters();
    assert!(
        c.oversize.load(Ordering::Relaxed) >= 6,
        "every oversize counted"
    );
}

#[tokio::test]
async fn oversized_upgrade_head_gets_431_on_ws_and_wss() {
    let gw = TestGateway::start().await;
    let big = format!("X-Big: {}\r\n", "b".repeat(9 * 1024));
    let mut tcp = TcpStream::connect(gw.ws()).await.unwrap();
    let head = raw_upgrade(&mut tcp, &big).await;
    assert!(head.starts_with("HTTP/1.1 431"), "ws: {head}");
    let mut tls = tls_to(gw.wss(), &gw.ca()).await;
    let head = raw_upgrade(&mut tls, &big).await;
    assert!(head.starts_with("HTTP/1.1 431"), "wss: {head}");
    // The listener still upgrades a normal client.
    let mut ws = ws_connect(gw.wss(), Some(&gw.ca()), Some("sip"), None)
        .await
        .unwrap();
    ws_send(&mut ws, &options("WSS", "after431", "localhost")).await;
    assert!(ws_recv(&mut ws).await.starts_with("SIP/2.0 200 OK"));
}

/// An OPTIONS from a browser with the given Request-URI and Max-Forwards.
fn ws_options(ruri: &str, max_forwards: u32, n: &str) -> String {
    format!(
        "OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/WSS br.invalid;branch=z9hG4bKmf{n}\r\nMax-Forwards: {max_forwards}\r\nFrom: <sip:2000@localhost>;tag=f{n}\r\nTo: <{ruri}>\r\nCall-ID: mf{n}@br.invalid\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

#[tokio::test]
async fn max_forwards_zero_options_is_answered_only_when_it_is_for_us() {
    let pbx = udp_on("127.0.0.1").await;
    let port = pbx.local_addr().unwrap().port();
    let gw = TestGateway::start_with(|c| c.routes = route_to(port)).await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();

    // For us: a keepalive, answered by the gateway itself.
    ws_send(&mut ws, &ws_options("sip:localhost", 0, "a")).await;
    let (r, _) = ws_final(&mut ws).await;
    assert_eq!(sip_status(&r), Some(200), "{r}");
    assert!(!sip_header_values(&r, "Allow").is_empty(), "{r}");

    // For a user behind us: out of hops here, and the PBX never sees it.
    ws_send(&mut ws, &ws_options("sip:1001@localhost", 0, "b")).await;
    let (r, _) = ws_final(&mut ws).await;
    assert_eq!(sip_status(&r), Some(483), "{r}");
    assert!(
        udp_request_within(&pbx, Duration::from_millis(300))
            .await
            .is_none()
    );

    // One hop left: forwarded with none left, and the PBX's answer comes back.
    ws_send(&mut ws, &ws_options("sip:1001@localhost", 1, "c")).await;
    let req = udp_request_within(&pbx, Duration::from_secs(5))
        .await
        .expect("the PBX got nothing");
    assert_eq!(sip_header(&req, "Max-Forwards"), "0", "{req}");
    let from = sip_header(&req, "Via");
    assert!(!from.is_empty());
    pbx.send_to(
        response_to(&req, 200, "OK", "pbx", "", "").as_bytes(),
        gw.udp(),
    )
    .await
    .unwrap();
    let (r, _) = ws_final(&mut ws).await;
    assert_eq!(sip_status(&r), Some(200), "{r}");
    assert!(r.contains("mfc@br.invalid"), "{r}");
}

/// A MESSAGE from an untrusted UDP client to `user@localhost`.
fn udp_message(user: &str, n: &str, vias: &[String]) -> String {
    let mut via = String::new();
    for v in vias {
        via.push_str(&format!("Via: {v}\r\n"));
    }
    format!(
        "MESSAGE sip:{user}@localhost SIP/2.0\r\n{via}Max-Forwards: 70\r\nFrom: <sip:2000@localhost>;tag=f{n}\r\nTo: <sip:{user}@localhost>\r\nCall-ID: loop{n}@client\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    )
}

/// `req` with its request line replaced by `method uri`.
fn with_request_line(req: &str, line: &str) -> String {
    let (_, rest) = req.split_once("\r\n").unwrap();
    format!("{line}\r\n{rest}")
}

#[tokio::test]
async fn a_request_coming_back_is_a_loop_482_a_retargeted_one_a_spiral() {
    let pbx = udp_on("127.0.0.1").await;
    let port = pbx.local_addr().unwrap().port();
    let gw = TestGateway::start_with(|c| c.routes = route_to(port)).await;
    let client = udp_on("127.0.0.2").await;
    let me = client.local_addr().unwrap();

    // Loop: the PBX sends the request back unchanged but for the
    // Request-URI it was first sent to us with.
    let msg = udp_message(
        "1001",
        "l",
        &[format!("SIP/2.0/UDP {me};branch=z9hG4bKloop1")],
    );
    client.send_to(msg.as_bytes(), gw.udp()).await.unwrap();
    let fwd = udp_request_within(&pbx, Duration::from_secs(5))
        .await
        .expect("not forwarded");
    assert_eq!(sip_header_values(&fwd, "Via").len(), 2, "{fwd}");
    let back = with_request_line(&fwd, "MESSAGE sip:1001@localhost SIP/2.0");
    pbx.send_to(back.as_bytes(), gw.udp()).await.unwrap();
    let r = udp_final(&pbx).await;
    assert_eq!(sip_status(&r), Some(482), "{r}");
    assert!(
        udp_request_within(&pbx, Duration::from_millis(300))
            .await
            .is_none(),
        "the looped request was forwarded again"
    );
    // The original transaction is untouched: the PBX answers it.
    pbx.send_to(
        response_to(&fwd, 200, "OK", "p1", "", "").as_bytes(),
        gw.udp(),
    )
    .await
    .unwrap();
    let r = udp_final(&client).await;
    assert_eq!(sip_status(&r), Some(200), "{r}");

    // Spiral: the PBX retargets the request to another extension through
    // us; it goes out again, with both of our Vias.
    let msg = udp_message(
        "1001",
        "s",
        &[format!("SIP/2.0/UDP {me};branch=z9hG4bKspiral1")],
    );
    client.send_to(msg.as_bytes(), gw.udp()).await.unwrap();
    let fwd = udp_request_within(&pbx, Duration::from_secs(5))
        .await
        .expect("not forwarded");
    let back = with_request_line(&fwd, "MESSAGE sip:1002@localhost SIP/2.0");
    pbx.send_to(back.as_bytes(), gw.udp()).await.unwrap();
    let spiral = udp_request_within(&pbx, Duration::from_secs(5))
        .await
        .expect("the spiral was not forwarded");
    assert!(spiral.starts_with("MESSAGE sip:1002@"), "{spiral}");
    let vias = sip_header_values(&spiral, "Via");
    assert_eq!(vias.len(), 3, "{spiral}");
    assert_ne!(vias[0], vias[1], "two passes, two branches");
    assert_eq!(sip_header(&spiral, "Max-Forwards"), "68", "{spiral}");
    // Answers unwind both passes.
    pbx.send_to(
        response_to(&spiral, 200, "OK", "p2", "", "").as_bytes(),
        gw.udp(),
    )
    .await
    .unwrap();
    let r = udp_final(&pbx).await;
    assert_eq!(sip_status(&r), Some(200), "the spiral's answer: {r}");
    pbx.send_to(
        response_to(&fwd, 200, "OK", "p2", "", "").as_bytes(),
        gw.udp(),
    )
    .await
    .unwrap();
    let r = udp_final(&client).await;
    assert_eq!(sip_status(&r), Some(200), "{r}");
    assert_eq!(
        gw.app
            .server
            .transports
            .counters()
            .malformed
            .load(Ordering::Relaxed),
        0
    );
}

#[tokio::test]
async fn a_request_with_70_vias_passes_intact_both_ways() {
    let pbx = udp_on("127.0.0.1").await;
    let port = pbx.local_addr().unwrap().port();
    let gw = TestGateway::start_with(|c| c.routes = route_to(port)).await;
    let client = udp_on("127.0.0.2").await;
    let me = client.local_addr().unwrap();
    let mut vias = vec![format!("SIP/2.0/UDP {me};branch=z9hG4bKvias0;rport")];
    vias.extend((1..70).map(|i| {
        format!(
            "SIP/2.0/UDP 10.0.{}.{};branch=z9hG4bKhop{i}",
            i / 250,
            i % 250 + 1
        )
    }));
    client
        .send_to(udp_message("1001", "v", &vias).as_bytes(), gw.udp())
        .await
        .unwrap();
    let fwd = udp_request_within(&pbx, Duration::from_secs(5))
        .await
        .expect("not forwarded");
    let got = sip_header_values(&fwd, "Via");
    assert_eq!(got.len(), 71, "{fwd}");
    // Ours on top; the client's (with received/rport filled in) and the
    // other 69 below in order.
    assert!(
        got[1].starts_with(&format!("SIP/2.0/UDP {me};branch=z9hG4bKvias0")),
        "{}",
        got[1]
    );
    assert_eq!(got[2..], vias[1..]);
    pbx.send_to(
        response_to(&fwd, 200, "OK", "pv", "", "").as_bytes(),
        gw.udp(),
    )
    .await
    .unwrap();
    let r = udp_final(&client).await;
    assert_eq!(sip_status(&r), Some(200), "{r}");
    let back = sip_header_values(&r, "Via");
    assert_eq!(back.len(), 70, "{r}");
    assert_eq!(back[1..], vias[1..]);
}

/// A PBX on 127.0.0.1 answering every INVITE with plain RTP on `rtp_port`
/// and every other request with 200; reports each message it gets.
fn mini_pbx(sock: UdpSocket, rtp_port: u16) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let me = sock.local_addr().unwrap();
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            match sip_method(&m).as_deref() {
                Some("INVITE") => {
                    let sdp = format!(
                        "v=0\r\no=pbx 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp_port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
                    );
                    let contact =
                        format!("Contact: <sip:pbx@{me}>\r\nContent-Type: application/sdp\r\n");
                    let ok = response_to(&m, 200, "OK", "pbx", &contact, &sdp);
                    let _ = sock.send_to(ok.as_bytes(), from).await;
                }
                Some("ACK") | None => {}
                Some(_) => {
                    let ok = response_to(&m, 200, "OK", "pbx", "", "");
                    let _ = sock.send_to(ok.as_bytes(), from).await;
                }
            }
            if tx.send(m).is_err() {
                break;
            }
        }
    });
    rx
}

/// The media address (c= and m= port) of an SDP.
fn media_address(sdp: &str) -> SocketAddr {
    let ip = sdp
        .lines()
        .find_map(|l| l.strip_prefix("c=IN IP4 "))
        .expect("no c= line")
        .trim();
    let port = sdp
        .lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|l| l.split(' ').next())
        .expect("no m=audio line");
    format!("{ip}:{port}").parse().unwrap()
}

/// Waits (5 s) for a request of `method` to reach the PBX.
async fn pbx_got(seen: &mut mpsc::UnboundedReceiver<String>, method: &str) -> String {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let m = seen.recv().await.expect("PBX task ended");
            if sip_method(&m).as_deref() == Some(method) {
                return m;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the PBX got no {method}"))
}

/// Reads WebSocket messages until the final response to `method`.
async fn ws_final_for(ws: &mut Ws, method: &str) -> String {
    loop {
        let r = ws_recv(ws).await;
        if sip_cseq_method(&r) == method && sip_status(&r).is_some_and(|c| c >= 200) {
            return r;
        }
    }
}

/// A browser in a real call through rtpengine: its SDP names a third
/// party's address (c=, m= port and the ICE candidate), and it then sends
/// in-dialog requests routed at another host. The PBX sees only
/// rtpengine's address, the PBX's RTP never reaches the third party (no
/// ICE consent from it), the requests go to the dialog's other side only,
/// and the media session is gone after the BYE.
#[tokio::test]
async fn a_browser_cannot_relay_or_aim_media_at_a_third_party_through_a_real_call() {
    let Some(bin) = need_rtpengine() else { return };
    let rtp = Daemon::start(&bin);
    let victim = udp_on("127.0.0.3").await;
    let v = victim.local_addr().unwrap();
    let media_victim = udp_on("127.0.0.3").await;
    let mv = media_victim.local_addr().unwrap();
    let pbx_sock = udp_on("127.0.0.1").await;
    let port = pbx_sock.local_addr().unwrap().port();
    let pbx_rtp = udp_on("127.0.0.1").await;
    let mut seen = mini_pbx(pbx_sock, pbx_rtp.local_addr().unwrap().port());
    let gw = TestGateway::start_with(|c| {
        c.rtpengine = rtp.config();
        c.rtpengine.enabled = true;
        c.routes = route_to(port);
    })
    .await;

    let offer = webrtc_offer()
        .replace("127.0.0.1", "127.0.0.3")
        .replace("51251", &mv.port().to_string());
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    ws_send(&mut ws, &ws_invite("tp", "1001", &offer)).await;
    let invite = pbx_got(&mut seen, "INVITE").await;
    let to_pbx = sip_body(&invite);
    assert!(
        !to_pbx.contains("127.0.0.3"),
        "third party leaked:\n{to_pbx}"
    );
    assert!(to_pbx.contains("RTP/AVP"), "{to_pbx}");
    let (ok, codes) = ws_final(&mut ws).await;
    assert_eq!(sip_status(&ok), Some(200), "{codes:?} {ok}");
    ws_send(&mut ws, &ws_in_dialog("ACK", 1, "tp", &ok)).await;
    assert_eq!(rtp.calls().len(), 1);

    // The PBX talks: rtpengine must not forward its RTP to an address the
    // browser named but never proved (ICE) it owns.
    let toward = media_address(to_pbx);
    let mut packet = vec![0x80, 0x00, 0, 0, 0, 0, 0, 0, 0x11, 0x22, 0x33, 0x44];
    packet.extend_from_slice(&[0xff; 160]);
    for seq in 0u16..50 {
        packet[2..4].copy_from_slice(&seq.to_be_bytes());
        packet[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        pbx_rtp.send_to(&packet, toward).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut buf = vec![0u8; 2048];
    let (mut stun, mut media) = (0, 0);
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while let Ok(Ok((n, _))) =
        tokio::time::timeout_at(deadline, media_victim.recv_from(&mut buf)).await
    {
        // RFC 7983: 0-3 STUN, 20-63 DTLS, 128-191 RTP/RTCP.
        match buf.first() {
            Some(0..=3) if n >= 20 && buf[4..8] == [0x21, 0x12, 0xa4, 0x42] => stun += 1,
            Some(128..=191) => media += 1,
            _ => {}
        }
    }
    assert_eq!(
        media, 0,
        "RTP reached the third party ({stun} STUN checks seen)"
    );

    // In-dialog requests with a Route beyond ours and a foreign
    // Request-URI: pinned to the PBX, the victim hears nothing.
    let info = ws_in_dialog("INFO", 2, "tp", &ok);
    let target = rtcgate::proxy::route::uri_of(&sip_header(&ok, "Contact")).to_owned();
    let relay = info
        .replacen(&target, &format!("sip:victim@{v}"), 1)
        .replace(
            "From: <sip:2000@",
            &format!("Route: <sip:{v};lr>\r\nFrom: <sip:2000@"),
        );
    ws_send(&mut ws, &relay).await;
    let r = ws_final_for(&mut ws, "INFO").await;
    assert_eq!(sip_status(&r), Some(200), "{r}");
    let at_pbx = pbx_got(&mut seen, "INFO").await;
    assert!(
        at_pbx.starts_with(&format!("INFO sip:victim@{v}")),
        "the Request-URI is the UA's business: {at_pbx}"
    );
    // A Route naming only the victim (ours left out).
    let only_victim: String = ws_in_dialog("MESSAGE", 3, "tp", &ok)
        .lines()
        .filter(|l| !l.starts_with("Route:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let only_victim = only_victim.replace(
        "From: <sip:2000@",
        &format!("Route: <sip:{v};lr>\r\nFrom: <sip:2000@"),
    );
    ws_send(&mut ws, &only_victim).await;
    let r = ws_final_for(&mut ws, "MESSAGE").await;
    assert_eq!(sip_status(&r), Some(200), "{r}");
    pbx_got(&mut seen, "MESSAGE").await;
    assert!(
        udp_recv_within(&victim, Duration::from_millis(300))
            .await
            .is_none(),
        "a request was relayed to the victim"
    );

    ws_send(&mut ws, &ws_in_dialog("BYE", 4, "tp", &ok)).await;
    let r = ws_final_for(&mut ws, "BYE").await;
    assert_eq!(sip_status(&r), Some(200), "{r}");
    pbx_got(&mut seen, "BYE").await;
    rtp.wait_empty(Duration::from_secs(5)).await;
}

/// A MESSAGE from a browser to `user@localhost` with a body of `body` bytes.
fn ws_message(user: &str, n: &str, body: usize) -> String {
    format!(
        "MESSAGE sip:{user}@localhost SIP/2.0\r\nVia: SIP/2.0/WSS br.invalid;branch=z9hG4bKbig{n}\r\nMax-Forwards: 70\r\nFrom: <sip:2000@localhost>;tag=f{n}\r\nTo: <sip:{user}@localhost>\r\nCall-ID: big{n}@br.invalid\r\nCSeq: 1 MESSAGE\r\nContent-Type: text/plain\r\nContent-Length: {body}\r\n\r\n{}",
        "m".repeat(body)
    )
}

#[tokio::test]
async fn a_request_too_large_for_a_udp_datagram_gets_513_at_once() {
    let pbx = udp_on("127.0.0.1").await;
    let port = pbx.local_addr().unwrap().port();
    let gw = TestGateway::start_with(|c| c.routes = route_to(port)).await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    // Fits the WebSocket limit (64 KiB), not a UDP datagram once our Via is on.
    let big = ws_message("1001", "a", 65_200);
    assert!(big.len() < 65_536 && big.len() > 65_400, "{}", big.len());
    let t0 = std::time::Instant::now();
    ws_send(&mut ws, &big).await;
    let (r, _) = ws_final(&mut ws).await;
    assert_eq!(sip_status(&r), Some(513), "{r}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(
        udp_recv_within(&pbx, Duration::from_millis(200))
            .await
            .is_none()
    );
    // A smaller one goes through.
    ws_send(&mut ws, &ws_message("1001", "b", 1000)).await;
    let req = udp_request_within(&pbx, Duration::from_secs(5))
        .await
        .expect("not forwarded");
    pbx.send_to(
        response_to(&req, 200, "OK", "p", "", "").as_bytes(),
        gw.udp(),
    )
    .await
    .unwrap();
    let (r, _) = ws_final(&mut ws).await;
    assert_eq!(sip_status(&r), Some(200), "{r}");
}

#[tokio::test]
async fn a_destination_the_transport_cannot_send_to_gets_503_at_once() {
    // IPv6 PBX, IPv4-only gateway: no socket to send from. Without the
    // transport error the caller would wait out timer F (32 s) for a 408.
    let gw = TestGateway::start_with(|c| {
        c.routes = vec![rtcgate::config::StaticRoute {
            prefix: "1".into(),
            destination: "[::1]:5999".parse().unwrap(),
            codec_policy: None,
        }];
    })
    .await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let t0 = std::time::Instant::now();
    ws_send(&mut ws, &ws_message("1001", "c", 10)).await;
    let (r, _) = ws_final(&mut ws).await;
    assert_eq!(sip_status(&r), Some(503), "{r}");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

/// A browser registered over WebSocket flow 1 of a gateway that then died
/// (its binding is still in the database). The restarted gateway's first
/// connection is flow 1 again, another browser's: a call to the first user
/// must not reach it.
#[tokio::test]
async fn after_a_restart_a_dead_connections_registration_reaches_no_other_browser() {
    let db = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/location.db?mode=rwc", db.path().display());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    {
        let store = rtcgate::store::Store::connect(&url).await.unwrap();
        store
            .upsert_binding(&rtcgate::store::Binding {
                aor: "sip:1001@localhost".into(),
                contact: "sip:alice@a.invalid;transport=ws".into(),
                expires_at: now + 600,
                q: 1000,
                path: vec![],
                received: Some("127.0.0.1:40001".into()),
                flow_id: Some("1".into()),
                node_id: rtcgate::config::Config::default().general.node_id,
                instance: None,
                reg_id: None,
                user_agent: None,
                call_id: "alice-reg".into(),
                cseq: 1,
                updated_at: now,
            })
            .await
            .unwrap();
        store.close().await;
    }
    let gw = TestGateway::start_with(|c| c.database.url = url.clone()).await;
    assert!(
        gw.app.location.lookup("sip:1001@localhost", now).is_empty(),
        "a dead connection's binding was loaded"
    );
    // Bob's browser: the first connection, flow 1.
    let mut bob = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    ws_send(&mut bob, &options("WS", "bob", "localhost")).await;
    assert!(ws_recv(&mut bob).await.starts_with("SIP/2.0 200"));
    let caller = udp_on("127.0.0.2").await;
    let me = caller.local_addr().unwrap();
    let message = format!(
        "MESSAGE sip:1001@localhost SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKrestart1\r\nMax-Forwards: 70\r\nFrom: <sip:2000@localhost>;tag=r1\r\nTo: <sip:1001@localhost>\r\nCall-ID: restart1@client\r\nCSeq: 1 MESSAGE\r\nContent-Length: 0\r\n\r\n"
    );
    caller.send_to(message.as_bytes(), gw.udp()).await.unwrap();
    let r = udp_final(&caller).await;
    assert!(
        matches!(sip_status(&r), Some(404 | 480)),
        "1001 is not registered any more: {r}"
    );
    assert!(
        ws_recv_within(&mut bob, Duration::from_millis(300))
            .await
            .is_none(),
        "alice's message reached bob"
    );
    let stored = gw
        .app
        .location
        .store()
        .list_bindings("sip:1001@localhost")
        .await
        .unwrap();
    assert!(stored.is_empty(), "{stored:?}");
}
