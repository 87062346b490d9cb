//! SQL metacharacters end to end on SQLite, PostgreSQL and MariaDB (issue
//! #11): a browser-like WebSocket client registers with digest, with quotes,
//! backslashes, `'; DROP TABLE location; --`, `%27`, UTF-8 and long values
//! (Call-ID and User-Agent over 300 characters) in the user name (escaped in
//! the URI), display names, Contact URI user and parameters, User-Agent,
//! Call-ID and `+sip.instance`; a UDP peer then calls that user and the call
//! must reach the browser, and the location and accounting tables must hold
//! the exact values. On the servers the call enters through a second node of
//! a cluster, which forwards it to the node holding the browser's flow.
//!
//! A missing server fails the test under `CI=true`, otherwise skips it.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::db::{Server, ServerDb};
use common::*;
use rtcgate::store::{Binding, CallRecord};
use tokio::net::UdpSocket;

/// The subscriber: everything SQL and SIP quoting care about, decoded.
const USER: &str = "o'neil\"\\; DROP TABLE location; --%27ü";
const PASSWORD: &str = "pa'ss\"; DROP TABLE subscribers; --";
const SQL: &str = "'; DROP TABLE location; --";
/// The address of the trusted UDP peer (a PBX).
const PBX_IP: &str = "127.0.0.5";

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Every byte but letters and digits as `%XX` (more than the gateway's own
/// escaping does: the two spellings must name the same user).
fn esc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// What the browser registers, and what must come back byte for byte.
struct Reg {
    contact: String,
    instance: String,
    user_agent: String,
    call_id: String,
}

impl Reg {
    fn new() -> Self {
        Self {
            contact: format!(
                "sip:br'ow%22s%5Cer%27%3B{}@br.invalid;transport=ws;x-sql='{};ob",
                esc("ü"),
                esc(SQL)
            ),
            instance: format!("<urn:uuid:{SQL}\"\\%27ü>"),
            user_agent: format!(
                "SIP.js/0.21.2 {SQL} \"q\" \\b\\ %27 ü日本 {}",
                "u".repeat(300)
            ),
            call_id: format!("{SQL}\"\\%27ü-{}@ua.invalid", "c".repeat(320)),
        }
    }

    /// The REGISTER (digest `auth` when answering the challenge).
    fn register(&self, cseq: u32, auth: Option<&str>) -> String {
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let user = esc(USER);
        let instance = rtcgate::auth::quote(&self.instance);
        format!(
            "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/WSS ua.invalid;branch=z9hG4bKsqlreg{cseq}\r\nMax-Forwards: 70\r\nTo: \"O'Neil \\\"the\\\" \\\\ {SQL}\" <sip:{user}@localhost>\r\nFrom: \"O'Neil {SQL}\" <sip:{user}@localhost>;tag=sqlreg\r\nCall-ID: {}\r\nCSeq: {cseq} REGISTER\r\nContact: \"Brow'ser \\\"x\\\" \\\\ {SQL} ü\" <{}>;+sip.instance={instance};reg-id=1;expires=600\r\nUser-Agent: {}\r\nSupported: path, outbound\r\n{auth}Content-Length: 0\r\n\r\n",
            self.call_id, self.contact, self.user_agent
        )
    }
}

/// Registers [`USER`] over `ws`, answering the digest challenge.
async fn register(ws: &mut Ws, reg: &Reg) {
    ws_send(ws, &reg.register(1, None)).await;
    let challenge = ws_recv(ws).await;
    assert_eq!(sip_status(&challenge), Some(401), "{challenge}");
    let md5 = sip_header_values(&challenge, "WWW-Authenticate")
        .into_iter()
        .find(|c| c.contains("MD5"))
        .unwrap();
    let auth = digest_authorization(&md5, USER, PASSWORD, "REGISTER", "sip:localhost", 1);
    ws_send(ws, &reg.register(2, Some(&auth))).await;
    let ok = ws_recv(ws).await;
    assert_eq!(sip_status(&ok), Some(200), "REGISTER refused:\n{ok}");
    assert!(ok.contains(&reg.contact), "contact not echoed:\n{ok}");
}

/// The one binding of [`USER`], as stored (read through the store, not the cache).
async fn stored_binding(gw: &TestGateway) -> Binding {
    let aor = rtcgate::registrar::aor_for(USER, "localhost");
    let mut rows = gw.app.location.store().list_bindings(&aor).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    rows.remove(0)
}

/// Next SIP message on `sock` (5 s).
async fn udp_recv(sock: &UdpSocket) -> String {
    let mut buf = vec![0u8; 65_535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("nothing received over UDP")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The final response to the request with `cseq_method` on `sock`.
async fn udp_final(sock: &UdpSocket, cseq_method: &str) -> String {
    loop {
        let r = udp_recv(sock).await;
        if sip_status(&r).is_some_and(|c| c >= 200) && sip_cseq_method(&r) == cseq_method {
            return r;
        }
    }
}

/// The call: INVITE → the browser answers 200 → ACK → BYE from the PBX,
/// answered by the browser. Returns the Call-ID used.
async fn call_the_browser(gw_udp: SocketAddr, ws: &mut Ws, reg: &Reg) -> String {
    let pbx = UdpSocket::bind(format!("{PBX_IP}:0")).await.unwrap();
    let me = pbx.local_addr().unwrap();
    let call_id = format!("{SQL}\"\\%27ü日本-{}@pbx.invalid", "i".repeat(320));
    let user = esc(USER);
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.5\r\ns=-\r\nc=IN IP4 127.0.0.5\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let from = format!("\"Caller {SQL} \\\"x\\\" \\\\ ü\" <sip:pbx'caller%27@{PBX_IP}>;tag=pbxtag");
    let invite = format!(
        "INVITE sip:{user}@localhost SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKsqlinv;rport\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: \"O'Neil {SQL}\" <sip:{user}@localhost>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:pbx@{me}>\r\nUser-Agent: {}\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        reg.user_agent,
        sdp.len()
    );
    pbx.send_to(invite.as_bytes(), gw_udp).await.unwrap();

    // The browser gets it (a 404/480 would arrive at the PBX instead).
    let got = tokio::select! {
        m = ws_recv_within(ws, Duration::from_secs(5)) => m,
        r = udp_final(&pbx, "INVITE") => panic!("the call never reached the browser:\n{r}"),
    };
    let got = got.expect("no INVITE at the browser");
    assert_eq!(sip_method(&got).as_deref(), Some("INVITE"), "{got}");
    assert_eq!(sip_header(&got, "Call-ID"), call_id);
    let ruri = got.split(' ').nth(1).unwrap_or_default();
    assert_eq!(ruri, reg.contact, "Request-URI toward the browser");
    let copy = |msg: &str, name: &str| -> String {
        sip_header_values(msg, name)
            .iter()
            .map(|v| format!("{name}: {v}\r\n"))
            .collect()
    };
    let to = sip_header(&got, "To");
    let base = format!(
        "{}{}To: {to};tag=browsertag\r\n{}{}{}",
        copy(&got, "Via"),
        copy(&got, "From"),
        copy(&got, "Call-ID"),
        copy(&got, "CSeq"),
        copy(&got, "Record-Route")
    );
    ws_send(
        ws,
        &format!(
            "SIP/2.0 200 OK\r\n{base}Contact: <{}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            reg.contact,
            sdp.len()
        ),
    )
    .await;
    let ok = udp_final(&pbx, "INVITE").await;
    assert_eq!(sip_status(&ok), Some(200), "{ok}");

    // ACK and BYE along the route set of the 2xx.
    let route: String = sip_header_values(&ok, "Record-Route")
        .iter()
        .rev()
        .map(|r| format!("Route: {r}\r\n"))
        .collect();
    let target = rtcgate::proxy::route::uri_of(&sip_header(&ok, "Contact")).to_owned();
    let to = sip_header(&ok, "To");
    let in_dialog = |method: &str, cseq: u32| {
        format!(
            "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKsql{method}{cseq};rport\r\nMax-Forwards: 70\r\n{route}From: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
        )
    };
    pbx.send_to(in_dialog("ACK", 1).as_bytes(), gw_udp)
        .await
        .unwrap();
    let ack = ws_recv(ws).await;
    assert_eq!(sip_method(&ack).as_deref(), Some("ACK"), "{ack}");
    pbx.send_to(in_dialog("BYE", 2).as_bytes(), gw_udp)
        .await
        .unwrap();
    let bye = ws_recv(ws).await;
    assert_eq!(sip_method(&bye).as_deref(), Some("BYE"), "{bye}");
    ws_send(
        ws,
        &format!(
            "SIP/2.0 200 OK\r\n{}{}{}{}{}Content-Length: 0\r\n\r\n",
            copy(&bye, "Via"),
            copy(&bye, "From"),
            copy(&bye, "To"),
            copy(&bye, "Call-ID"),
            copy(&bye, "CSeq")
        ),
    )
    .await;
    let done = udp_final(&pbx, "BYE").await;
    assert_eq!(sip_status(&done), Some(200), "{done}");
    call_id
}

/// The browser calls the same user (itself), answering the 407: the digest
/// `uri` is the escaped Request-URI as sent and must match it. The call is
/// delivered back to its flow, which refuses it with 486.
async fn browser_calls_the_user(ws: &mut Ws) {
    let ruri = format!("sip:{}@localhost", esc(USER));
    let invite = |cseq: u32, auth: &str| {
        format!(
            "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/WSS ua.invalid;branch=z9hG4bKsqlself{cseq}\r\nMax-Forwards: 70\r\nFrom: \"O'Neil {SQL}\" <sip:{}@localhost>;tag=self\r\nTo: <{ruri}>\r\nCall-ID: self-{SQL}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:self@br.invalid;transport=ws>\r\n{auth}Content-Length: 0\r\n\r\n",
            esc(USER)
        )
    };
    ws_send(ws, &invite(1, "")).await;
    let (challenge, _) = ws_final(ws).await;
    assert_eq!(sip_status(&challenge), Some(407), "{challenge}");
    let md5 = sip_header_values(&challenge, "Proxy-Authenticate")
        .into_iter()
        .find(|c| c.contains("MD5"))
        .unwrap();
    let auth = digest_authorization(&md5, USER, PASSWORD, "INVITE", &ruri, 1);
    ws_send(ws, &invite(2, &format!("Proxy-Authorization: {auth}\r\n"))).await;
    loop {
        let m = ws_recv(ws).await;
        if sip_method(&m).as_deref() == Some("INVITE") {
            let copy = |name: &str| -> String {
                sip_header_values(&m, name)
                    .iter()
                    .map(|v| format!("{name}: {v}\r\n"))
                    .collect()
            };
            let to = sip_header(&m, "To");
            ws_send(
                ws,
                &format!(
                    "SIP/2.0 486 Busy Here\r\n{}{}To: {to};tag=busy\r\n{}{}Content-Length: 0\r\n\r\n",
                    copy("Via"),
                    copy("From"),
                    copy("Call-ID"),
                    copy("CSeq")
                ),
            )
            .await;
            continue;
        }
        let code = sip_status(&m).unwrap_or(0);
        if code >= 200 && sip_header(&m, "Via").contains("sqlself2") {
            assert_eq!(code, 486, "the authenticated INVITE was refused:\n{m}");
            return;
        }
    }
}

/// The ended call records in `gw`'s database (bounded wait for `n`).
async fn ended_records(gw: &TestGateway, n: usize) -> Vec<CallRecord> {
    let store = gw.app.location.store();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows: Vec<CallRecord> = store
            .list_call_records(10, None)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.ended_at_ms.is_some())
            .collect();
        if rows.len() >= n {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} call records written: {rows:?}",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks the stored binding and the call records against what was sent.
fn check_binding(b: &Binding, reg: &Reg) {
    assert_eq!(b.aor, rtcgate::registrar::aor_for(USER, "localhost"));
    assert_eq!(b.contact, reg.contact);
    assert_eq!(b.instance.as_deref(), Some(reg.instance.as_str()));
    assert_eq!(b.reg_id, Some(1));
    assert_eq!(b.user_agent.as_deref(), Some(reg.user_agent.as_str()));
    assert_eq!(b.call_id, reg.call_id);
    assert_eq!(b.cseq, 2);
}

fn check_record(r: &CallRecord, call_id: &str, callee_user: &str) {
    assert_eq!(r.call_id, call_id);
    assert_eq!(r.caller, format!("pbx'caller%27@{PBX_IP}"));
    assert_eq!(r.callee, format!("{callee_user}@localhost"));
    assert_eq!(r.disposition, Some(200), "{r:?}");
    assert!(r.answered_at_ms.is_some(), "{r:?}");
}

async fn add_subscriber(gw: &TestGateway) {
    gw.app
        .location
        .store()
        .add_subscriber(USER, "localhost", PASSWORD, false, unix_now())
        .await
        .unwrap();
}

fn auth_settings(c: &mut rtcgate::config::Config) {
    c.auth.required = true;
    c.auth.trusted = vec![PBX_IP.into()];
}

#[tokio::test]
async fn sql_metacharacters_end_to_end_sqlite() {
    let gw = TestGateway::start_with(auth_settings).await;
    add_subscriber(&gw).await;
    let reg = Reg::new();
    let mut ws = ws_connect(gw.wss(), Some(&gw.ca()), Some("sip"), None)
        .await
        .unwrap();
    register(&mut ws, &reg).await;
    check_binding(&stored_binding(&gw).await, &reg);

    let call_id = call_the_browser(gw.udp(), &mut ws, &reg).await;
    let records = ended_records(&gw, 1).await;
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    check_record(r, &call_id, &esc(USER));
    assert_eq!(r.destination.as_deref(), Some(reg.contact.as_str()));
    // The tables are all still there and intact.
    check_binding(&stored_binding(&gw).await, &reg);
    browser_calls_the_user(&mut ws).await;
    assert!(
        gw.app
            .location
            .store()
            .get_subscriber(USER, "localhost")
            .await
            .unwrap()
            .is_some()
    );
}

/// A free UDP address on `ip` (bound then released).
fn free_udp_on(ip: &str) -> SocketAddr {
    std::net::UdpSocket::bind(format!("{ip}:0"))
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A cluster node on its own loopback address, sharing `url`.
async fn node(id: &str, ip: &str, url: &str) -> TestGateway {
    let udp = free_udp_on(ip);
    let (id, url, ip) = (id.to_owned(), url.to_owned(), udp.ip());
    TestGateway::start_with(move |c| {
        auth_settings(c);
        c.general.node_id = id;
        c.sip.udp_listen = vec![udp];
        c.websocket.wss_listen = vec![SocketAddr::new(ip, 0)];
        c.websocket.ws_listen = vec![SocketAddr::new(ip, 0)];
        c.database.url = url;
        c.cluster.advertise = Some(udp);
        c.cluster.heartbeat_s = 1;
        c.cluster.node_ttl_s = 5;
        c.cluster.sync_ms = 200;
        c.cluster.peer_timeout_ms = 2000;
    })
    .await
}

/// On a server: the browser registers on node A, the PBX calls node B, which
/// forwards to A with the AOR as Request-URI (escaped again).
async fn on_server(server: Server) {
    let Some(db) = ServerDb::create(server).await else {
        return;
    };
    let a = node("sql-a", "127.0.0.21", &db.url).await;
    let b = node("sql-b", "127.0.0.22", &db.url).await;
    add_subscriber(&a).await;
    let reg = Reg::new();
    let mut ws = ws_connect(a.wss(), Some(&a.ca()), Some("sip"), None)
        .await
        .unwrap();
    register(&mut ws, &reg).await;
    check_binding(&stored_binding(&a).await, &reg);
    check_binding(&stored_binding(&b).await, &reg);

    // B sees the registration (cluster sync) before the PBX calls it.
    let aor = rtcgate::registrar::aor_for(USER, "localhost");
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.app.location.lookup(&aor, unix_now()).is_empty() {
        assert!(Instant::now() < deadline, "B never saw the registration");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let call_id = call_the_browser(b.udp(), &mut ws, &reg).await;

    // One record per node that handled the call, both exact.
    let records = ended_records(&a, 2).await;
    assert_eq!(records.len(), 2, "{records:?}");
    // B writes the AOR's user escaped again, its own way.
    let forwarded = rtcgate::sip::user::encode(USER);
    let on_a = records
        .iter()
        .find(|r| r.destination.as_deref() == Some(reg.contact.as_str()))
        .unwrap_or_else(|| panic!("no record of node A delivering to the browser: {records:?}"));
    check_record(on_a, &call_id, &forwarded);
    let a_udp = format!("udp:{}", a.udp());
    let on_b = records
        .iter()
        .find(|r| r.destination.as_deref() == Some(a_udp.as_str()))
        .unwrap_or_else(|| panic!("no record of node B forwarding to A: {records:?}"));
    check_record(on_b, &call_id, &esc(USER));
    check_binding(&stored_binding(&a).await, &reg);
    browser_calls_the_user(&mut ws).await;
    drop((a, b));
}

#[tokio::test]
async fn sql_metacharacters_end_to_end_postgres() {
    on_server(Server::Postgres).await;
}

#[tokio::test]
async fn sql_metacharacters_end_to_end_mariadb() {
    on_server(Server::MySql).await;
}
