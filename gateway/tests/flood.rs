//! Flood protection end to end on loopback (`[limits]`): a UDP source over
//! its rate is banned (answered 503 or dropped) while another source is
//! served, and served again once the ban ends; WebSocket handshake floods,
//! per-flow message rates and half-open connections; the caps on pending
//! server transactions; oversized datagrams.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use rtcgate::config::Config;
use rtcgate::limits::BanAction;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// A UDP socket on its own loopback address (a distinct source IP).
async fn udp_from(last: u8) -> UdpSocket {
    UdpSocket::bind(SocketAddr::new(ip(last), 0)).await.unwrap()
}

/// Every datagram that arrives until `quiet` passes without one (bounded).
async fn drain(sock: &UdpSocket, quiet: Duration) -> Vec<String> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    for _ in 0..100_000 {
        match tokio::time::timeout(quiet, sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            _ => break,
        }
    }
    out
}

/// The statuses that arrive for one Call-ID (late answers to earlier
/// requests, e.g. the flood's INVITEs, are skipped).
async fn answers_for(sock: &UdpSocket, call_id: &str) -> Vec<Option<u16>> {
    drain(sock, Duration::from_millis(500))
        .await
        .iter()
        .filter(|m| sip_header(m, "Call-ID") == call_id)
        .map(|m| sip_status(m))
        .collect()
}

/// An initial INVITE for `user` with a fresh branch and Call-ID.
fn invite(user: &str, n: u32, from_port: u16) -> String {
    format!(
        "INVITE sip:{user}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{from_port};branch=z9hG4bKinv{n}\r\nMax-Forwards: 70\r\nFrom: <sip:caller@client.invalid>;tag=f{n}\r\nTo: <sip:{user}@127.0.0.1>\r\nCall-ID: inv{n}@client.invalid\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@127.0.0.1:{from_port}>\r\nContent-Length: 0\r\n\r\n"
    )
}

fn tight_udp(cfg: &mut Config, action: BanAction) {
    cfg.limits.udp_rate = 10;
    cfg.limits.udp_burst = 20;
    cfg.limits.ban_s = 2;
    cfg.limits.action = action;
}

/// The value of a Prometheus series line starting with `series`.
fn series(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn udp_flood_is_banned_with_503_while_another_source_is_served() {
    let gw = TestGateway::start_with(|c| tight_udp(c, BanAction::Reply)).await;
    let attacker = udp_from(2).await;
    let port = attacker.local_addr().unwrap().port();
    // 150 requests at once, OPTIONS and INVITEs mixed.
    for n in 0..150u32 {
        let msg = if n % 2 == 0 {
            options("UDP", &format!("fl{n}"), "127.0.0.1")
        } else {
            invite("2000", n, port)
        };
        attacker.send_to(msg.as_bytes(), gw.udp()).await.unwrap();
    }
    let got = drain(&attacker, Duration::from_millis(700)).await;
    let finals: Vec<&String> = got.iter().filter(|m| sip_status(m) != Some(100)).collect();
    let shed: Vec<&&String> = finals
        .iter()
        .filter(|m| sip_status(m) == Some(503))
        .collect();
    assert!(
        shed.len() >= 120,
        "at most the burst (20) plus a few refilled tokens pass; {} of {} final answers were 503",
        shed.len(),
        finals.len()
    );
    for m in &shed {
        let retry: u32 = sip_header(m, "Retry-After").parse().unwrap();
        assert!(
            (1..=2).contains(&retry),
            "Retry-After is the rest of the ban: {m}"
        );
    }
    let served = finals.len() - shed.len();
    assert!(
        (15..=30).contains(&served),
        "the burst was served: {served}"
    );
    let counters = gw.app.server.transports.limiter().counters();
    assert_eq!(counters.source_bans.load(Ordering::Relaxed), 1);
    assert!(counters.udp_shed.load(Ordering::Relaxed) >= 120);

    // Another source is not affected by the ban.
    let other = udp_from(3).await;
    other
        .send_to(options("UDP", "other1", "127.0.0.1").as_bytes(), gw.udp())
        .await
        .unwrap();
    let answers = drain(&other, Duration::from_millis(500)).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(sip_status(&answers[0]), Some(200), "{}", answers[0]);

    // Still banned a moment later...
    attacker
        .send_to(options("UDP", "still", "127.0.0.1").as_bytes(), gw.udp())
        .await
        .unwrap();
    // (The flood's INVITEs' 404s are retransmitted meanwhile: no ACK.)
    let answers = answers_for(&attacker, "still@client.invalid").await;
    assert_eq!(answers, [Some(503)]);

    // ...and served again once the ban (2 s) is over.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    attacker
        .send_to(options("UDP", "again", "127.0.0.1").as_bytes(), gw.udp())
        .await
        .unwrap();
    let answers = answers_for(&attacker, "again@client.invalid").await;
    assert_eq!(answers, [Some(200)]);

    // What was shed shows on /metrics.
    let text = gw.app.metrics.render().await;
    let udp = series(&text, "rtcgate_shed_total{reason=\"udp_rate\"}").unwrap_or(0.0);
    assert!(udp >= 120.0, "{text}");
    assert_eq!(
        series(&text, "rtcgate_limits_bans_total{kind=\"source\"}"),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn udp_flood_is_dropped_silently_in_drop_mode() {
    let gw = TestGateway::start_with(|c| tight_udp(c, BanAction::Drop)).await;
    let attacker = udp_from(4).await;
    for n in 0..100u32 {
        attacker
            .send_to(
                options("UDP", &format!("dr{n}"), "127.0.0.1").as_bytes(),
                gw.udp(),
            )
            .await
            .unwrap();
    }
    let got = drain(&attacker, Duration::from_millis(700)).await;
    assert!(
        got.iter().all(|m| sip_status(m) == Some(200)),
        "only 200s, no 503: {got:?}"
    );
    assert!(
        (15..=30).contains(&got.len()),
        "the burst of 20 is answered, the rest dropped: {}",
        got.len()
    );
    let shed = gw
        .app
        .server
        .transports
        .limiter()
        .counters()
        .udp_shed
        .load(Ordering::Relaxed);
    assert_eq!(shed as usize + got.len(), 100);

    let other = udp_from(5).await;
    other
        .send_to(options("UDP", "other2", "127.0.0.1").as_bytes(), gw.udp())
        .await
        .unwrap();
    let answers = drain(&other, Duration::from_millis(500)).await;
    assert_eq!(
        answers.iter().map(|m| sip_status(m)).collect::<Vec<_>>(),
        [Some(200)]
    );

    tokio::time::sleep(Duration::from_millis(2_100)).await;
    attacker
        .send_to(options("UDP", "back", "127.0.0.1").as_bytes(), gw.udp())
        .await
        .unwrap();
    let answers = drain(&attacker, Duration::from_millis(500)).await;
    assert_eq!(
        answers.iter().map(|m| sip_status(m)).collect::<Vec<_>>(),
        [Some(200)]
    );
}

#[tokio::test]
async fn trusted_pbx_address_is_never_banned() {
    let gw = TestGateway::start_with(|c| {
        tight_udp(c, BanAction::Reply);
        c.auth.trusted = vec!["127.0.0.6".into()];
    })
    .await;
    let pbx = udp_from(6).await;
    for n in 0..200u32 {
        pbx.send_to(
            options("UDP", &format!("pbx{n}"), "127.0.0.1").as_bytes(),
            gw.udp(),
        )
        .await
        .unwrap();
    }
    let got = drain(&pbx, Duration::from_millis(700)).await;
    assert_eq!(got.len(), 200, "every request answered");
    assert!(got.iter().all(|m| sip_status(m) == Some(200)));
    let c = gw.app.server.transports.limiter().counters();
    assert_eq!(c.udp_shed.load(Ordering::Relaxed), 0);
    assert_eq!(c.source_bans.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn oversized_udp_message_gets_513() {
    let gw = TestGateway::start_with(|c| c.sip.max_udp_message_size = 1024).await;
    let sock = udp_from(7).await;
    // The padding comes last: the headers a response needs fit in the
    // part of the datagram that is read (the limit plus one byte).
    let big = options("UDP", "big", "127.0.0.1").replace(
        "Content-Length: 0\r\n",
        &format!("X-Padding: {}\r\nContent-Length: 0\r\n", "a".repeat(2000)),
    );
    sock.send_to(big.as_bytes(), gw.udp()).await.unwrap();
    let answers = drain(&sock, Duration::from_millis(500)).await;
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(sip_status(&answers[0]), Some(513), "{}", answers[0]);
    assert!(answers[0].contains("Call-ID: big@client.invalid"));
    let c = gw.app.server.transports.counters();
    assert_eq!(c.oversize.load(Ordering::Relaxed), 1);
}

/// A TCP connection from a given loopback address.
async fn tcp_from(last: u8, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(ip(last), 0)).unwrap();
    s.connect(to).await.unwrap()
}

/// A plain-WS upgrade from `last`: true when it got `101`.
async fn upgrade_from(last: u8, to: SocketAddr) -> bool {
    let mut tcp = tcp_from(last, to).await;
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {to}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: sip\r\n\r\n"
    );
    if tcp.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    match tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => buf[..n].starts_with(b"HTTP/1.1 101"),
        _ => false,
    }
}

#[tokio::test]
async fn websocket_handshake_flood_is_refused_per_source() {
    let gw = TestGateway::start_with(|c| {
        c.limits.ws_handshake_rate = 1;
        c.limits.ws_handshake_burst = 5;
        c.limits.ban_s = 2;
    })
    .await;
    let mut ok = 0;
    for _ in 0..12 {
        if upgrade_from(8, gw.ws()).await {
            ok += 1;
        }
    }
    assert!(
        (5..=6).contains(&ok),
        "the burst of 5 upgrades passed: {ok}"
    );
    let c = gw.app.server.transports.limiter().counters();
    assert!(c.handshakes_shed.load(Ordering::Relaxed) >= 6);
    assert_eq!(c.source_bans.load(Ordering::Relaxed), 1);
    // Another address connects, and works.
    assert!(upgrade_from(9, gw.ws()).await);
    // After the ban the first address may connect again.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    assert!(upgrade_from(8, gw.ws()).await);
}

#[tokio::test]
async fn half_open_tls_and_slow_http_are_closed_after_the_handshake_timeout() {
    let gw = TestGateway::start_with(|c| c.websocket.handshake_timeout_ms = 500).await;
    // TLS: connect and send nothing (or half a ClientHello).
    let mut silent = TcpStream::connect(gw.wss()).await.unwrap();
    let mut half = TcpStream::connect(gw.wss()).await.unwrap();
    half.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    // Plain WS: an HTTP head that never ends (slowloris).
    let mut slow = TcpStream::connect(gw.ws()).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t0 = tokio::time::Instant::now();
    for (name, s) in [
        ("silent TLS", &mut silent),
        ("half ClientHello", &mut half),
        ("slow HTTP head", &mut slow),
    ] {
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{name}: still open after 5 s"));
        assert!(
            matches!(r, Ok(0) | Err(_)),
            "{name}: closed by the gateway, got {r:?}"
        );
    }
    let elapsed = t0.elapsed();
    assert!(
        elapsed >= Duration::from_millis(400) && elapsed < Duration::from_secs(3),
        "closed at the timeout, not before: {elapsed:?}"
    );
    let c = gw.app.server.transports.counters();
    assert_eq!(c.handshake_timeouts.load(Ordering::Relaxed), 3);
    // The slots are free again: a real client connects.
    let ws = ws_connect(gw.ws(), None, Some("sip"), None).await;
    assert!(ws.is_ok());
}

#[tokio::test]
async fn websocket_flow_over_its_rate_gets_503_and_other_flows_do_not() {
    let gw = TestGateway::start_with(|c| {
        c.limits.ws_flow_rate = 5;
        c.limits.ws_flow_burst = 10;
        c.limits.ban_s = 1;
    })
    .await;
    let mut noisy = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let mut quiet = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    for n in 0..40 {
        ws_send(&mut noisy, &options("WS", &format!("wsf{n}"), "127.0.0.1")).await;
    }
    let mut codes = Vec::new();
    while let Some(m) = ws_recv_within(&mut noisy, Duration::from_millis(500)).await {
        if sip_status(&m) == Some(503) {
            assert_eq!(sip_header(&m, "Retry-After"), "1", "{m}");
        }
        codes.push(sip_status(&m));
    }
    assert_eq!(codes.len(), 40, "every request answered: {codes:?}");
    let ok = codes.iter().filter(|c| **c == Some(200)).count();
    assert!((10..=12).contains(&ok), "the burst of 10 passed: {codes:?}");
    // Same address, another flow (another browser behind the same NAT).
    ws_send(&mut quiet, &options("WS", "quiet1", "127.0.0.1")).await;
    assert_eq!(sip_status(&ws_recv(&mut quiet).await), Some(200));
    // The noisy flow is served again after its ban.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    ws_send(&mut noisy, &options("WS", "wsback", "127.0.0.1")).await;
    assert_eq!(sip_status(&ws_recv(&mut noisy).await), Some(200));
    let c = gw.app.server.transports.limiter().counters();
    assert_eq!(c.flow_bans.load(Ordering::Relaxed), 1);
    assert!(c.ws_shed.load(Ordering::Relaxed) >= 28);
}

/// A response to a request in text form: its Via, From, To (tagged),
/// Call-ID and CSeq.
fn answer(req: &str, code: u16, reason: &str) -> String {
    let mut out = format!("SIP/2.0 {code} {reason}\r\n");
    for v in sip_header_values(req, "Via") {
        out.push_str(&format!("Via: {v}\r\n"));
    }
    out.push_str(&format!("From: {}\r\n", sip_header(req, "From")));
    out.push_str(&format!("To: {};tag=pbx\r\n", sip_header(req, "To")));
    out.push_str(&format!("Call-ID: {}\r\n", sip_header(req, "Call-ID")));
    out.push_str(&format!(
        "CSeq: {}\r\nContent-Length: 0\r\n\r\n",
        sip_header(req, "CSeq")
    ));
    out
}

/// The final status each Call-ID got, from what arrived on `sock`
/// (retransmissions of a final counted once).
async fn finals(sock: &UdpSocket) -> std::collections::BTreeSet<(String, u16, String)> {
    drain(sock, Duration::from_millis(500))
        .await
        .into_iter()
        .filter_map(|m| {
            let code = sip_status(&m)?;
            (code >= 200).then(|| {
                let retry = sip_header_values(&m, "Retry-After")
                    .into_iter()
                    .next()
                    .unwrap_or_default();
                (sip_header(&m, "Call-ID"), code, retry)
            })
        })
        .collect()
}

#[tokio::test]
async fn pending_transaction_caps_answer_503_and_free_up() {
    // A PBX that the test answers by hand: INVITEs stay pending until then.
    let pbx = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let pbx_addr = pbx.local_addr().unwrap();
    let gw = TestGateway::start_with(|c| {
        c.limits.max_server_transactions = 4;
        c.limits.max_server_transactions_per_source = 3;
        c.limits.retry_after_s = 7;
        c.routes = vec![rtcgate::config::StaticRoute {
            prefix: String::new(),
            destination: pbx_addr,
            codec_policy: None,
        }];
    })
    .await;
    let a = udp_from(10).await;
    let a_port = a.local_addr().unwrap().port();
    for n in 0..4 {
        a.send_to(invite("3000", 100 + n, a_port).as_bytes(), gw.udp())
            .await
            .unwrap();
    }
    // Three forwarded, the fourth refused for the source's cap.
    let mut forwarded = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while forwarded.len() < 3 {
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), pbx.recv_from(&mut buf))
            .await
            .expect("the PBX got fewer than 3 INVITEs")
            .unwrap();
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        if sip_method(&m).as_deref() == Some("INVITE") {
            forwarded.push(m);
        }
    }
    assert_eq!(
        finals(&a).await,
        [("inv103@client.invalid".to_owned(), 503, "7".to_owned())].into()
    );
    // Another source gets the last slot of the total, then hits the total.
    let b = udp_from(11).await;
    let b_port = b.local_addr().unwrap().port();
    b.send_to(invite("3000", 200, b_port).as_bytes(), gw.udp())
        .await
        .unwrap();
    b.send_to(invite("3000", 201, b_port).as_bytes(), gw.udp())
        .await
        .unwrap();
    assert_eq!(
        finals(&b).await,
        [("inv201@client.invalid".to_owned(), 503, "7".to_owned())].into()
    );
    // The PBX answers one call busy: its slot is free for the next request.
    pbx.send_to(answer(&forwarded[0], 486, "Busy Here").as_bytes(), gw.udp())
        .await
        .unwrap();
    let got = finals(&a).await;
    assert!(
        got.contains(&("inv100@client.invalid".to_owned(), 486, String::new())),
        "{got:?}"
    );
    a.send_to(invite("3000", 104, a_port).as_bytes(), gw.udp())
        .await
        .unwrap();
    let got = finals(&a).await;
    assert!(
        !got.iter().any(|(c, _, _)| c == "inv104@client.invalid"),
        "admitted (pending at the PBX), not refused: {got:?}"
    );
    // It did reach the PBX.
    let mut reached = false;
    for _ in 0..20 {
        let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_secs(2), pbx.recv_from(&mut buf)).await
        else {
            break;
        };
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        if sip_method(&m).as_deref() == Some("INVITE") && m.contains("inv104@client.invalid") {
            reached = true;
            break;
        }
    }
    assert!(reached, "the INVITE freed by the 486 was forwarded");
    let snap = gw.app.proxy.snapshot().await.unwrap();
    assert_eq!(snap.overloaded, 2);
    let text = gw.app.metrics.render().await;
    assert_eq!(
        series(&text, "rtcgate_shed_total{reason=\"transactions\"}"),
        Some(2.0),
        "{text}"
    );
}

const PASSWORD: &str = "s3cret";

/// A REGISTER for 1001 over UDP from `sock`, with `auth` as Authorization.
async fn udp_register(sock: &UdpSocket, to: SocketAddr, n: u32, auth: Option<&str>) -> String {
    let me = sock.local_addr().unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let msg = format!(
        "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKreg{n};rport\r\nMax-Forwards: 70\r\nFrom: <sip:1001@localhost>;tag=r{n}\r\nTo: <sip:1001@localhost>\r\nCall-ID: guess-{me}\r\nCSeq: {n} REGISTER\r\nContact: <sip:1001@{me}>\r\nExpires: 60\r\n{auth}Content-Length: 0\r\n\r\n"
    );
    sock.send_to(msg.as_bytes(), to).await.unwrap();
    udp_final(sock).await
}

/// REGISTER, then again answering its MD5 challenge with `password`.
async fn register_with(sock: &UdpSocket, to: SocketAddr, n: u32, password: &str) -> String {
    let first = udp_register(sock, to, n, None).await;
    if sip_status(&first) != Some(401) {
        return first;
    }
    let challenge = sip_header_values(&first, "WWW-Authenticate")
        .into_iter()
        .find(|c| c.contains("MD5"))
        .expect("an MD5 challenge");
    let auth = digest_authorization(&challenge, "1001", password, "REGISTER", "sip:localhost", 1);
    udp_register(sock, to, n + 1, Some(&auth)).await
}

#[tokio::test]
async fn password_guessing_bans_the_source_and_spares_its_neighbours() {
    let gw = TestGateway::start_with(|c| {
        c.auth.required = true;
        c.limits.auth_failures_burst = 3;
        c.limits.auth_failures_per_min = 1;
        c.limits.auth_ban_s = 60;
    })
    .await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    gw.app
        .location
        .store()
        .add_subscriber("1001", "localhost", PASSWORD, false, now)
        .await
        .unwrap();
    let attacker = udp_from(31).await;
    // Three guesses are allowed (plain 403s), the fourth starts the ban.
    for i in 0..4u32 {
        let r = register_with(&attacker, gw.udp(), 10 * i + 1, "guess").await;
        assert_eq!(sip_status(&r), Some(403), "guess {i}: {r}");
        assert!(sip_header_values(&r, "Retry-After").is_empty(), "{r}");
    }
    let c = gw.app.server.transports.limiter().counters();
    assert_eq!(c.auth_bans.load(Ordering::Relaxed), 1);
    // Banned: even the right password is refused, before any challenge.
    let r = udp_register(&attacker, gw.udp(), 100, None).await;
    assert_eq!(sip_status(&r), Some(403), "{r}");
    let retry: u32 = sip_header(&r, "Retry-After").parse().unwrap();
    assert!((1..=60).contains(&retry), "{r}");
    assert!(r.contains("Too many failed authentications"), "{r}");
    assert!(c.auth_refused.load(Ordering::Relaxed) >= 1);
    // Another source with the right password registers.
    let neighbour = udp_from(32).await;
    let r = register_with(&neighbour, gw.udp(), 1, PASSWORD).await;
    assert_eq!(sip_status(&r), Some(200), "{r}");
    // Challenges alone never count: a browser's every refresh is one.
    for i in 0..10u32 {
        let r = udp_register(&neighbour, gw.udp(), 10 + i, None).await;
        assert_eq!(sip_status(&r), Some(401), "{r}");
    }
    assert_eq!(c.auth_bans.load(Ordering::Relaxed), 1);
}
