//! PBX routing end to end with real sipp PBXes: extension rules pick the
//! set, the primary answers, a killed primary fails over to the backup
//! within one call setup and is marked down, a restarted one comes back up,
//! both down → 503 well before timer B; unmatched numbers get 404, foreign
//! domains 403, untrusted callers a challenge; a reload changes a route
//! without dropping a call that is up.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use rtcgate::config::Config;
use rtcgate::routing::HealthState;
use tokio::net::UdpSocket;

/// A sipp PBX (`loadtest/scenarios/pbx_uas.xml`: answers with SDP, copies
/// Record-Route; `-aa` answers the OPTIONS probes), killed on drop.
struct Pbx {
    child: Option<tokio::process::Child>,
    port: u16,
    _work: tempfile::TempDir,
}

impl Pbx {
    fn start(port: u16) -> Option<Self> {
        let sipp = which("sipp")?;
        let work = tempfile::tempdir().unwrap();
        let scenario =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../loadtest/scenarios/pbx_uas.xml");
        let child = tokio::process::Command::new(sipp)
            .current_dir(work.path())
            .arg("-sf")
            .arg(scenario)
            .args(["-i", "127.0.0.1", "-p", &port.to_string()])
            .args(["-mp", &pick_udp_port().to_string()])
            .args(["-aa", "-nostdin", "-trace_err"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Some(Self {
            child: Some(child),
            port,
            _work: work,
        })
    }

    async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }
}

/// How a test call ended.
#[derive(Debug)]
struct Outcome {
    code: u16,
    /// The port of the PBX that answered (from its Contact).
    answered_by: Option<u16>,
    took: Duration,
    response: String,
}

/// A UDP caller (a PBX-like SIP peer or a phone) on `ip`.
struct Caller {
    sock: UdpSocket,
    gw: SocketAddr,
    n: u32,
}

const SDP: &str = "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

impl Caller {
    async fn new(ip: &str, gw: SocketAddr) -> Self {
        Self {
            sock: UdpSocket::bind(format!("{ip}:0")).await.unwrap(),
            gw,
            n: 0,
        }
    }

    async fn recv(&self, until: Instant) -> Option<String> {
        let mut buf = vec![0u8; 65_535];
        let left = until.checked_duration_since(Instant::now())?;
        let (n, _) = tokio::time::timeout(left, self.sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    async fn send(&self, msg: &str) {
        self.sock.send_to(msg.as_bytes(), self.gw).await.unwrap();
    }

    /// INVITE `user@domain`; a 200 is acknowledged and, unless `hold`,
    /// hung up at once. Returns the outcome and, for a held call, the BYE
    /// to send later.
    async fn call(&mut self, user: &str, domain: &str, hold: bool) -> (Outcome, Option<String>) {
        self.n += 1;
        let n = self.n;
        let me = self.sock.local_addr().unwrap();
        let call_id = format!("route-{n}-{}@test.invalid", me.port());
        let invite = format!(
            "INVITE sip:{user}@{domain} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKinv{n}x{}\r\nMax-Forwards: 70\r\nFrom: <sip:caller@{me}>;tag=f{n}\r\nTo: <sip:{user}@{domain}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:caller@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
            me.port(),
            SDP.len()
        );
        let start = Instant::now();
        self.send(&invite).await;
        let until = start + Duration::from_secs(40);
        let final_resp = loop {
            let Some(msg) = self.recv(until).await else {
                panic!("no final response to INVITE {user}@{domain}");
            };
            if sip_cseq_method(&msg) != "INVITE" {
                continue;
            }
            match sip_status(&msg) {
                Some(c) if c >= 200 => break msg,
                _ => continue,
            }
        };
        let took = start.elapsed();
        let code = sip_status(&final_resp).unwrap();
        let to = sip_header(&final_resp, "To");
        if code >= 300 {
            // Hop-by-hop ACK for a failure (same branch as the INVITE).
            let ack = format!(
                "ACK sip:{user}@{domain} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKinv{n}x{}\r\nMax-Forwards: 70\r\nFrom: <sip:caller@{me}>;tag=f{n}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
                me.port()
            );
            self.send(&ack).await;
            let outcome = Outcome {
                code,
                answered_by: None,
                took,
                response: final_resp,
            };
            return (outcome, None);
        }
        let contact = sip_header(&final_resp, "Contact");
        let target = rtcgate::proxy::route::uri_of(&contact).to_owned();
        let answered_by = target
            .rsplit(':')
            .next()
            .and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|p| p.parse().ok());
        let routes: String = sip_header_values(&final_resp, "Record-Route")
            .iter()
            .rev()
            .map(|r| format!("Route: {r}\r\n"))
            .collect();
        let in_dialog = |method: &str, cseq: u32, branch: &str| {
            format!(
                "{method} {target} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK{branch}\r\nMax-Forwards: 70\r\n{routes}From: <sip:caller@{me}>;tag=f{n}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
            )
        };
        self.send(&in_dialog("ACK", 1, &format!("ack{n}"))).await;
        let bye = in_dialog("BYE", 2, &format!("bye{n}"));
        let outcome = Outcome {
            code,
            answered_by,
            took,
            response: final_resp,
        };
        if hold {
            return (outcome, Some(bye));
        }
        self.hang_up(&bye).await;
        (outcome, None)
    }

    /// Sends a BYE and waits for its 200.
    async fn hang_up(&self, bye: &str) {
        self.send(bye).await;
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let msg = self.recv(until).await.expect("no answer to BYE");
            if sip_cseq_method(&msg) == "BYE" {
                assert_eq!(sip_status(&msg), Some(200), "BYE answered {msg}");
                return;
            }
        }
    }
}

fn routing_toml(primary: u16, backup: u16, sales: u16) -> String {
    format!(
        r#"
[routing]
local = "first"

[[routing.sets]]
name = "freepbx"
algorithm = "priority"
trusted_sources = ["127.0.0.1"]
failover_timeout_ms = 1500
probe = {{ interval_ms = 300, timeout_ms = 250, down_after = 2, up_after = 2 }}
destinations = [
  {{ address = "127.0.0.1:{primary}", priority = 0 }},
  {{ address = "127.0.0.1:{backup}", priority = 1 }},
]

[[routing.sets]]
name = "sales"
probe = {{ interval_ms = 300, timeout_ms = 250 }}
destinations = [{{ address = "127.0.0.1:{sales}" }}]

[[routing.rules]]
name = "extensions"
range = "1000-1999"
set = "freepbx"

[[routing.rules]]
range = "2000-2999"
set = "sales"
"#
    )
}

fn state_of(gw: &TestGateway, port: u16) -> HealthState {
    gw.app
        .routing
        .handle()
        .states()
        .iter()
        .find(|s| s.address.port() == port)
        .map(|s| s.state)
        .unwrap_or(HealthState::Unknown)
}

/// Waits (bounded) until `port` is in `want`.
async fn wait_state(gw: &TestGateway, port: u16, want: HealthState) {
    let until = Instant::now() + Duration::from_secs(10);
    while state_of(gw, port) != want {
        assert!(
            Instant::now() < until,
            "destination :{port} never became {want:?}: {:?}",
            gw.app.routing.handle().view()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One routing set for every number: `primary` first, then `backup`; no
/// probes (the calls alone decide).
fn primary_and_backup(primary: u16, backup: u16) -> String {
    format!(
        r#"
[[routing.sets]]
name = "pbx"
trusted_sources = ["127.0.0.1"]
probe = {{ interval_ms = 0 }}
destinations = [
  {{ address = "127.0.0.1:{primary}", priority = 0 }},
  {{ address = "127.0.0.1:{backup}", priority = 1 }},
]
[[routing.rules]]
default = true
set = "pbx"
"#
    )
}

async fn gateway(toml_text: &str) -> TestGateway {
    let parsed = Config::parse(toml_text, "test.toml").expect("test routing config");
    TestGateway::start_with(|c| {
        c.routing = parsed.routing;
        c.auth.required = true;
    })
    .await
}

#[tokio::test]
async fn failover_health_and_rules_with_real_pbxes() {
    let (pa, pb, pc) = (pick_udp_port(), pick_udp_port(), pick_udp_port());
    let Some(mut primary) = Pbx::start(pa) else {
        require("sipp", false);
        return;
    };
    let mut backup = Pbx::start(pb).unwrap();
    let mut sales = Pbx::start(pc).unwrap();
    let gw = gateway(&routing_toml(pa, pb, pc)).await;
    for port in [pa, pb, pc] {
        wait_state(&gw, port, HealthState::Up).await;
    }
    let mut pbx_side = Caller::new("127.0.0.1", gw.udp()).await;

    // Rules: 1xxx → freepbx (primary first), 2xxx → sales, others → 404.
    let (o, _) = pbx_side.call("1500", "localhost", false).await;
    assert_eq!((o.code, o.answered_by), (200, Some(pa)), "{}", o.response);
    let (o, _) = pbx_side.call("2500", "localhost", false).await;
    assert_eq!((o.code, o.answered_by), (200, Some(pc)), "{}", o.response);
    let (o, _) = pbx_side.call("3000", "localhost", false).await;
    assert_eq!(o.code, 404, "{}", o.response);

    // Not our domain: no relay, whoever asks.
    let (o, _) = pbx_side.call("1500", "example.com", false).await;
    assert_eq!(o.code, 403, "{}", o.response);

    // A caller outside every trusted source is challenged.
    let mut stranger = Caller::new("127.0.0.2", gw.udp()).await;
    let (o, _) = stranger.call("1500", "localhost", false).await;
    assert_eq!(o.code, 407, "{}", o.response);
    assert!(
        !sip_header_values(&o.response, "Proxy-Authenticate").is_empty(),
        "{}",
        o.response
    );

    // The primary dies: the very next call reaches the backup, and the
    // primary is marked down (by the call's timeout or the probes).
    primary.kill().await;
    let (o, _) = pbx_side.call("1501", "localhost", false).await;
    assert_eq!((o.code, o.answered_by), (200, Some(pb)), "{}", o.response);
    assert!(
        o.took < Duration::from_secs(10),
        "failover took {:?} (timer B would be 32 s)",
        o.took
    );
    wait_state(&gw, pa, HealthState::Down).await;
    // Down destinations are skipped without waiting.
    let (o, _) = pbx_side.call("1502", "localhost", false).await;
    assert_eq!((o.code, o.answered_by), (200, Some(pb)), "{}", o.response);
    assert!(o.took < Duration::from_secs(1), "{:?}", o.took);

    // The primary comes back: up after the probes, first choice again.
    primary = Pbx::start(pa).unwrap();
    wait_state(&gw, pa, HealthState::Up).await;
    let (o, _) = pbx_side.call("1503", "localhost", false).await;
    assert_eq!((o.code, o.answered_by), (200, Some(pa)), "{}", o.response);

    // Both die: 503 quickly (failover timeouts or the probes' verdict),
    // never a 32 s timer B.
    primary.kill().await;
    backup.kill().await;
    let (o, _) = pbx_side.call("1504", "localhost", false).await;
    assert_eq!(o.code, 503, "{}", o.response);
    assert!(o.took < Duration::from_secs(10), "{:?}", o.took);
    wait_state(&gw, pa, HealthState::Down).await;
    wait_state(&gw, pb, HealthState::Down).await;
    let (o, _) = pbx_side.call("1505", "localhost", false).await;
    assert_eq!(o.code, 503, "{}", o.response);
    assert!(o.took < Duration::from_secs(1), "{:?}", o.took);
    sales.kill().await;
}

#[tokio::test]
async fn busy_is_final_and_not_failed_over() {
    let Some(busy) = SippRun::spawn("pbx_busy.xml", &["-aa", "-m", "1"]) else {
        require("sipp", false);
        return;
    };
    let backup = Pbx::start(pick_udp_port()).unwrap();
    let toml_text = primary_and_backup(busy.port, backup.port);
    let gw = gateway(&toml_text).await;
    let mut caller = Caller::new("127.0.0.1", gw.udp()).await;
    let (o, _) = caller.call("1000", "localhost", false).await;
    assert_eq!(o.code, 486, "a 486 is the callee's answer: {}", o.response);
    assert!(busy.finish(Duration::from_secs(10)).await);
}

#[tokio::test]
async fn reload_changes_a_route_without_dropping_a_call() {
    let (pa, pb, pc) = (pick_udp_port(), pick_udp_port(), pick_udp_port());
    let Some(_a) = Pbx::start(pa) else {
        require("sipp", false);
        return;
    };
    let _b = Pbx::start(pb).unwrap();
    let _c = Pbx::start(pc).unwrap();
    let gw = gateway(&routing_toml(pa, pb, pc)).await;
    wait_state(&gw, pa, HealthState::Up).await;
    let mut caller = Caller::new("127.0.0.1", gw.udp()).await;
    let (o, bye) = caller.call("1500", "localhost", true).await;
    assert_eq!((o.code, o.answered_by), (200, Some(pa)), "{}", o.response);

    // Extensions now go to sales; the file is re-read by the reload.
    let changed = routing_toml(pa, pb, pc).replace(
        "range = \"1000-1999\"\nset = \"freepbx\"",
        "range = \"1000-1999\"\nset = \"sales\"",
    );
    let file = gw.dir.path().join("rtcgate.toml");
    let base = format!(
        "[auth]\nrequired = true\n[sip]\nudp_listen = [\"127.0.0.1:0\"]\n[database]\nurl = \"sqlite://{}/reload.db?mode=rwc\"\n",
        gw.dir.path().display()
    );
    std::fs::write(&file, format!("{base}{changed}")).unwrap();
    gw.app.set_config_path(Some(file.clone()));
    let report = gw.app.reload();
    let routing = report.items.iter().find(|i| i.what == "routing");
    assert!(
        report.ok() && routing.is_some_and(|r| r.detail.starts_with("2 sets, 2 rules")),
        "{report:?}"
    );
    let (o, _) = caller.call("1501", "localhost", false).await;
    assert_eq!((o.code, o.answered_by), (200, Some(pc)), "{}", o.response);

    // The call set up before the reload still ends normally.
    caller.hang_up(&bye.unwrap()).await;

    // A broken file is refused and the running routing stays.
    std::fs::write(
        &file,
        format!(
            "{base}{}",
            changed.replace("set = \"sales\"", "set = \"nope\"")
        ),
    )
    .unwrap();
    let report = gw.app.reload();
    let routing = report.items.iter().find(|i| i.what == "routing");
    assert!(
        !report.ok() && routing.is_some_and(|r| !r.ok && r.detail.contains("routing.rules[0]")),
        "{report:?}"
    );
    let (o, _) = caller.call("1502", "localhost", false).await;
    assert_eq!((o.code, o.answered_by), (200, Some(pc)), "{}", o.response);
}

/// A browser call through real rtpengine to a routing set whose primary
/// is overloaded: it answers 100 Trying, then 503 with Retry-After. The call
/// fails over to the backup and is answered; the browser never sees the
/// 503, gets a WebRTC answer, and after the BYE rtpengine holds nothing (the
/// offer made for the primary is reused, not leaked).
#[tokio::test]
async fn overloaded_pbx_503_mid_setup_fails_over_with_media_and_leaks_nothing() {
    let Some(bin) = common::rtpengine::need_rtpengine() else {
        return;
    };
    let Some(overloaded) = SippRun::spawn("pbx_overloaded.xml", &["-m", "1"]) else {
        require("sipp", false);
        return;
    };
    let backup = Pbx::start(pick_udp_port()).unwrap();
    let rtp = common::rtpengine::Daemon::start(&bin);
    let toml_text = primary_and_backup(overloaded.port, backup.port);
    let parsed = Config::parse(&toml_text, "test.toml").expect("test routing config");
    let gw = TestGateway::start_with(|c| {
        c.routing = parsed.routing;
        c.rtpengine = rtp.config();
        c.rtpengine.enabled = true;
    })
    .await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    ws_send(&mut ws, &ws_invite("ovl", "1000", &webrtc_offer())).await;
    let (ok, seen) = ws_final(&mut ws).await;
    assert_eq!(sip_status(&ok), Some(200), "{seen:?} {ok}");
    assert!(
        !seen.contains(&503),
        "the 503 stays between us and the PBX: {seen:?}"
    );
    let contact = sip_header(&ok, "Contact");
    assert!(
        contact.contains(&format!(":{}", backup.port)),
        "answered by the backup: {contact}"
    );
    let answer = sip_body(&ok);
    assert!(answer.contains("UDP/TLS/RTP/SAVPF"), "{answer}");
    assert!(answer.contains("a=fingerprint:"), "{answer}");
    ws_send(&mut ws, &ws_in_dialog("ACK", 1, "ovl", &ok)).await;
    assert_eq!(rtp.calls().len(), 1, "one media session for the call");
    // The overloaded PBX got its hop-by-hop ACK.
    assert!(overloaded.finish(Duration::from_secs(10)).await);
    ws_hang_up(&mut ws, "ovl", &ok).await;
    rtp.wait_empty(Duration::from_secs(5)).await;
}
