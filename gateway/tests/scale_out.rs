//! Scale-out on loopback: two rtcgate nodes (127.0.0.11, 127.0.0.12) sharing a
//! fresh PostgreSQL database, two rtpengines configured on both, a browser-like
//! WSS client on node A and a sipp PBX calling through node B.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::rtpengine::{Daemon, need_rtpengine};
use common::*;
use rtcgate::media::RtpengineInstance;
use sqlx::{AssertSqlSafe, Connection};

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh database on the shared server, dropped at the end.
struct Db {
    name: String,
    admin: String,
}

impl Db {
    async fn create() -> Option<Self> {
        let admin = std::env::var("RTCGATE_TEST_POSTGRES").unwrap_or_else(|_| ADMIN_URL.into());
        let name = format!("rtcgate_scale_{:016x}", rand::random::<u64>());
        let made = async {
            let mut c = sqlx::PgConnection::connect(&admin).await?;
            sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut c)
                .await?;
            c.close().await
        }
        .await;
        if !require("PostgreSQL at 127.0.0.1:5432", made.is_ok()) {
            return None;
        }
        Some(Self { name, admin })
    }

    fn url(&self) -> String {
        let base = self
            .admin
            .rsplit_once('/')
            .map_or(self.admin.as_str(), |(b, _)| b);
        format!("{base}/{}", self.name)
    }

    /// Drops the database (also on a failing test, see `Drop`).
    async fn drop_db(&self) {
        self.drop_named(&self.admin, &self.name).await;
    }
}

impl Drop for Db {
    // A failed assertion must not leave the database behind: drop it from a
    // thread with its own runtime (the test's runtime is unwinding).
    fn drop(&mut self) {
        let (name, admin) = (self.name.clone(), self.admin.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(
                    Db {
                        name: String::new(),
                        admin: String::new(),
                    }
                    .drop_named(&admin, &name),
                );
            }
        })
        .join();
    }
}

impl Db {
    async fn drop_named(&self, admin: &str, name: &str) {
        if name.is_empty() {
            return;
        }
        if let Ok(mut c) = sqlx::PgConnection::connect(admin).await {
            let _ = sqlx::raw_sql(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut c)
            .await;
            let _ = c.close().await;
        }
    }
}

fn free_port_on(ip: &str) -> SocketAddr {
    UdpSocket::bind(format!("{ip}:0"))
        .unwrap()
        .local_addr()
        .unwrap()
}

async fn node(
    id: &str,
    udp: SocketAddr,
    url: &str,
    rtp: &[&Daemon],
) -> Result<TestGateway, String> {
    let instances: Vec<RtpengineInstance> = rtp
        .iter()
        .map(|d| RtpengineInstance {
            address: d.ng,
            weight: 1,
        })
        .collect();
    let ip = udp.ip();
    let url = url.to_owned();
    let id = id.to_owned();
    let cfg = rtp[0].config();
    // A restarted node may find its UDP port still closing: retry the bind briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (url, id, instances, cfg) = (url.clone(), id.clone(), instances.clone(), cfg.clone());
        let started = tokio::spawn(TestGateway::start_with(move |c| {
            c.general.node_id = id;
            c.sip.udp_listen = vec![udp];
            c.websocket.wss_listen = vec![SocketAddr::new(ip, 0)];
            c.websocket.ws_listen = vec![SocketAddr::new(ip, 0)];
            c.database.url = url;
            c.accounting.enabled = false;
            c.rtpengine = cfg;
            c.rtpengine.enabled = true;
            c.rtpengine.instances = instances;
            c.cluster.advertise = Some(udp);
            c.cluster.heartbeat_s = 1;
            c.cluster.node_ttl_s = 3;
            c.cluster.sync_ms = 200;
            c.cluster.peer_timeout_ms = 1000;
        }))
        .await;
        match started {
            Ok(gw) => return Ok(gw),
            Err(e) if Instant::now() < deadline => {
                eprintln!("node start retry: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn register(contact: &str, cseq: u32) -> String {
    format!(
        "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/WSS ua.invalid;branch=z9hG4bKreg{cseq}\r\nMax-Forwards: 70\r\nTo: <sip:1001@localhost>\r\nFrom: <sip:1001@localhost>;tag=r{cseq}\r\nCall-ID: reg{cseq}@ua\r\nCSeq: {cseq} REGISTER\r\nContact: <{contact}>;expires=600\r\nContent-Length: 0\r\n\r\n"
    )
}

async fn registered_on(gw: &TestGateway, cseq: u32) -> Ws {
    let mut ws = ws_connect(gw.wss(), Some(&gw.ca()), Some("sip"), None)
        .await
        .unwrap();
    ws_send(&mut ws, &register("sip:c9gq@ua.invalid;transport=ws", cseq)).await;
    let r = ws_recv(&mut ws).await;
    assert_eq!(sip_status(&r), Some(200), "{r}");
    ws
}

/// Waits (bounded) until `gw` sees user 1001 registered elsewhere.
async fn wait_visible(gw: &TestGateway, want: bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let seen = !gw.app.location.lookup("sip:1001@localhost", now).is_empty();
        if seen == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "registration visible={seen} on the other node"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A hand-built INVITE from a PBX socket to `node`; returns the final status
/// and how long it took.
async fn invite_status(node: SocketAddr, call: &str) -> (u16, Duration) {
    // Async: the nodes run on this test's runtime.
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    let sdp = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";
    let msg = format!(
        "INVITE sip:1001@{node} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call}\r\nMax-Forwards: 70\r\nFrom: <sip:2000@pbx.invalid>;tag=p{call}\r\nTo: <sip:1001@localhost>\r\nCall-ID: {call}@pbx\r\nCSeq: 1 INVITE\r\nContact: <sip:2000@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    let start = Instant::now();
    sock.send_to(msg.as_bytes(), node).await.unwrap();
    let mut buf = vec![0u8; 65536];
    while start.elapsed() < Duration::from_secs(10) {
        let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await
        else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if let Some(code) = sip_status(&text)
            && code >= 200
        {
            let to = sip_header(&text, "To");
            let ack = format!(
                "ACK sip:1001@{node} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{call}\r\nMax-Forwards: 70\r\nFrom: <sip:2000@pbx.invalid>;tag=p{call}\r\nTo: {to}\r\nCall-ID: {call}@pbx\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
            );
            let _ = sock.send_to(ack.as_bytes(), node).await;
            return (code, start.elapsed());
        }
    }
    panic!("no final response to {call} within 10 s");
}

/// The PBX (sipp, through node B) calls 1001 registered on node A; the browser
/// answers, the PBX hangs up after a moment.
async fn pbx_call_through(b: &TestGateway, ws: &mut Ws, rtp: &[&Daemon]) {
    let uac = Path::new(env!("CARGO_MANIFEST_DIR")).join("../loadtest/scenarios/uac_call.xml");
    let target = b.udp().to_string();
    let caller = SippRun::spawn_file(
        &uac,
        &[
            &target,
            "-s",
            "1001",
            "-mi",
            "127.0.0.1",
            "-m",
            "1",
            "-d",
            "500",
        ],
    )
    .unwrap();
    let inv = ws_recv(ws).await;
    assert!(inv.starts_with("INVITE "), "{inv}");
    let body = sip_body(&inv);
    assert!(
        body.contains("UDP/TLS/RTP/SAVPF"),
        "browser leg not WebRTC: {body}"
    );
    // B's Record-Route entries say that the media is not B's.
    let rr = sip_header_values(&inv, "Record-Route");
    let b_host = b.udp().to_string();
    assert!(
        rr.iter().any(|r| r.contains(&b_host) && r.contains(";nm")),
        "{rr:?}"
    );
    // Exactly one rtpengine holds the call.
    let call_id = sip_header(&inv, "Call-ID");
    let holders: Vec<usize> = rtp
        .iter()
        .enumerate()
        .filter(|(_, d)| d.calls().contains(&call_id))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(holders.len(), 1, "call {call_id} on rtpengines {holders:?}");
    let copy = |n: &str| -> String {
        sip_header_values(&inv, n)
            .iter()
            .map(|v| format!("{n}: {v}\r\n"))
            .collect()
    };
    let to = sip_header(&inv, "To");
    let answer = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/media/in-3_answer_browser-to-proxy_webrtc.sdp"),
    )
    .unwrap()
    .replace("\r\n", "\n")
    .replace('\n', "\r\n");
    ws_send(ws, &format!(
        "SIP/2.0 200 OK\r\n{}{}To: {to};tag=bt1\r\n{}{}{}Contact: <sip:c9gq@ua.invalid;transport=ws>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{answer}",
        copy("Via"), copy("From"), copy("Call-ID"), copy("CSeq"), copy("Record-Route"), answer.len()
    ))
    .await;
    let ack = ws_recv(ws).await;
    assert!(ack.starts_with("ACK "), "{ack}");
    let bye = ws_recv(ws).await;
    assert!(bye.starts_with("BYE "), "{bye}");
    let reply: String = ["Via", "From", "To", "Call-ID", "CSeq"]
        .iter()
        .map(|n| {
            sip_header_values(&bye, n)
                .iter()
                .map(|v| format!("{n}: {v}\r\n"))
                .collect::<String>()
        })
        .collect();
    ws_send(
        ws,
        &format!("SIP/2.0 200 OK\r\n{reply}Content-Length: 0\r\n\r\n"),
    )
    .await;
    assert!(
        caller.finish(Duration::from_secs(25)).await,
        "sipp caller failed"
    );
    // The BYE through B deleted the call: nothing left on either rtpengine.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left: Vec<String> = rtp.iter().flat_map(|d| d.calls()).collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "rtpengine still holds {left:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn call_reaches_the_node_holding_the_flow_and_a_dead_node_fails_fast() {
    let Some(bin) = need_rtpengine() else { return };
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let Some(db) = Db::create().await else { return };
    let url = db.url();
    let (r1, r2) = (Daemon::start(&bin), Daemon::start(&bin));
    let rtp = [&r1, &r2];
    let a_udp = free_port_on("127.0.0.11");
    let b_udp = free_port_on("127.0.0.12");
    let a = node("node-a", a_udp, &url, &rtp).await.unwrap();
    let b = node("node-b", b_udp, &url, &rtp).await.unwrap();

    // Both nodes are in the nodes table with their advertised addresses.
    let nodes = b.app.location.store().all_nodes().await.unwrap();
    let addrs: Vec<(String, String)> = nodes
        .iter()
        .map(|n| (n.node_id.clone(), n.sip_addr.clone()))
        .collect();
    assert_eq!(
        addrs,
        vec![
            ("node-a".to_owned(), a_udp.to_string()),
            ("node-b".to_owned(), b_udp.to_string())
        ]
    );

    let mut ws = registered_on(&a, 1).await;
    wait_visible(&b, true).await;
    pbx_call_through(&b, &mut ws, &rtp).await;

    // Node A dies (no graceful leave): the first attempts fail over the peer
    // timeout to 480, then its row expires and the answer is 480 at once.
    drop(ws);
    let TestGateway { app, dir: _keep } = a;
    app.shutdown();
    let (code, took) = invite_status(b_udp, "dead1").await;
    assert!(code == 480 || code == 430, "got {code}");
    assert!(took < Duration::from_secs(4), "took {took:?}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let peers = b.app.cluster.as_ref().unwrap().peers();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        peers.live(now).is_empty(),
        "node-a still live: {:?}",
        peers.live(now)
    );
    // What a crashed node leaves behind: its flow binding, still unexpired.
    b.app
        .location
        .store()
        .upsert_binding(&rtcgate::store::Binding {
            aor: "sip:1001@localhost".into(),
            contact: "sip:c9gq@ua.invalid;transport=ws".into(),
            expires_at: now + 600,
            q: 1000,
            path: Vec::new(),
            received: None,
            flow_id: Some("1".into()),
            node_id: "node-a".into(),
            instance: None,
            reg_id: None,
            user_agent: None,
            call_id: "crashed@ua".into(),
            cseq: 9,
            updated_at: now,
        })
        .await
        .unwrap();
    wait_visible(&b, true).await;
    let (code, took) = invite_status(b_udp, "dead2").await;
    assert_eq!(code, 480);
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(r1.calls().is_empty() && r2.calls().is_empty());

    // Node A comes back, the browser re-registers: calls work again. (In
    // process, App::shutdown does not release the old UDP socket, so the new
    // incarnation advertises a new port; its row is replaced.)
    let a_udp = free_port_on("127.0.0.11");
    let a = node("node-a", a_udp, &url, &rtp).await.unwrap();
    let mut ws = registered_on(&a, 2).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while peers.live(now + 1).is_empty() {
        assert!(
            Instant::now() < deadline,
            "node-a not back in B's peer table"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_visible(&b, true).await;
    pbx_call_through(&b, &mut ws, &rtp).await;

    drop(ws);
    a.app.shutdown();
    b.app.shutdown();
    db.drop_db().await;
}
