//! PBX health probing against real sipp instances answering OPTIONS:
//! primary and backup probed up, the primary killed → down after N probes and
//! the backup routed first, restarted → up after M probes, both down → 503.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rtcgate::routing::{
    HealthState, ProbeOptions, RouteOutcome, RouteQuery, RoutingConfig, RoutingHandle,
    RoutingService,
};

const SIPP: &str = "/usr/bin/sipp";

/// Whether sipp is here; on CI its absence is a failure, elsewhere a skip.
fn have_sipp() -> bool {
    if Path::new(SIPP).exists() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{SIPP} is required on CI (Debian package sip-tester)"
    );
    eprintln!("skipping: {SIPP} not installed");
    false
}

fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("local addr").port()
}

/// A sipp UAS that auto-answers OPTIONS; killed (by PID) on drop.
struct Sipp {
    child: Option<Child>,
}

impl Sipp {
    fn start(port: u16) -> Self {
        let child = Command::new(SIPP)
            .args(["-sn", "uas", "-aa", "-nostdin", "-i", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sipp");
        let sipp = Self { child: Some(child) };
        assert!(answers(port), "sipp on port {port} never answered OPTIONS");
        sipp
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Sipp {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `port` with OPTIONS until a reply comes (at most 5 s).
fn answers(port: u16) -> bool {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let me = s.local_addr().expect("addr");
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(5) {
        n += 1;
        let msg = format!(
            "OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-ready{n}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=r\r\nTo: <sip:127.0.0.1:{port}>\r\n\
             Call-ID: ready-{n}-{port}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        );
        let _ = s.send_to(msg.as_bytes(), ("127.0.0.1", port));
        let mut buf = [0u8; 2048];
        if let Ok((len, _)) = s.recv_from(&mut buf)
            && buf[..len].starts_with(b"SIP/2.0 200")
        {
            return true;
        }
    }
    false
}

fn config(primary: u16, backup: u16) -> RoutingConfig {
    let text = format!(
        r#"
local = "last"

[[sets]]
name = "freepbx"
algorithm = "priority"
trusted_sources = ["127.0.0.1"]
failover_timeout_ms = 2000
destinations = [
  {{ address = "127.0.0.1:{primary}", priority = 0 }},
  {{ address = "127.0.0.1:{backup}", priority = 1 }},
]
probe = {{ interval_ms = 200, timeout_ms = 150, down_after = 3, up_after = 2 }}

[[rules]]
range = "1000-1999"
set = "freepbx"
"#
    );
    toml::from_str(&text).expect("config parses")
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn state(h: &RoutingHandle, port: u16) -> HealthState {
    h.with_table(|t| t.state(addr(port)))
}

/// Waits (bounded) until `port` is in `want`.
async fn wait_state(h: &RoutingHandle, port: u16, want: HealthState) {
    let start = Instant::now();
    while state(h, port) != want {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{port} never became {want:?}: {:?}",
            h.states()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn route_first(h: &RoutingHandle) -> Result<u16, (u16, &'static str)> {
    let q = RouteQuery {
        user: "1001",
        domain: "gw.example",
        call_id: "call-1@test",
        source_ip: None,
    };
    match h.route(&q) {
        RouteOutcome::Pbx(r) => r
            .destinations
            .first()
            .map(|d| d.address.port())
            .ok_or((0, "empty")),
        RouteOutcome::Reject { code, reason } => Err((code, reason)),
        RouteOutcome::Local { .. } => Err((0, "local")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_mark_down_and_up_and_route_follows() {
    if !have_sipp() {
        return;
    }
    let (p1, p2) = (free_udp_port(), free_udp_port());
    let mut primary = Sipp::start(p1);
    let mut backup = Sipp::start(p2);

    let service = RoutingService::start(
        &config(p1, p2),
        ProbeOptions {
            bind: "127.0.0.1:0".parse().expect("addr"),
            from_host: None,
        },
    )
    .await
    .expect("routing service");
    let h = service.handle();
    assert_eq!(
        h.is_trusted("127.0.0.1".parse().expect("ip")).as_deref(),
        Some("freepbx")
    );

    // Both probed up; the primary is routed first.
    wait_state(&h, p1, HealthState::Up).await;
    wait_state(&h, p2, HealthState::Up).await;
    assert_eq!(route_first(&h), Ok(p1));

    // Kill the primary: down after 3 unanswered probes (~3 × 200 ms).
    primary.stop();
    let killed = Instant::now();
    wait_state(&h, p1, HealthState::Down).await;
    let took = killed.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "down too early: {took:?}"
    );
    let st = h.states();
    let p1_status = st.iter().find(|s| s.address == addr(p1)).expect("tracked");
    assert!(p1_status.failures >= 3, "{p1_status:?}");
    assert_eq!(route_first(&h), Ok(p2));
    assert_eq!(state(&h, p2), HealthState::Up);

    // A reload keeps the health of unchanged destinations.
    let mut reloaded = config(p1, p2);
    reloaded.rules.push(rtcgate::routing::RuleConfig {
        prefix: Some("2".into()),
        set: Some("freepbx".into()),
        ..Default::default()
    });
    h.reload(&reloaded).expect("reload");
    assert_eq!(state(&h, p1), HealthState::Down);
    assert_eq!(state(&h, p2), HealthState::Up);

    // Restart it: up again after 2 good probes, and first again.
    let _primary2 = Sipp::start(p1);
    wait_state(&h, p1, HealthState::Up).await;
    assert_eq!(route_first(&h), Ok(p1));
    drop(_primary2);

    // Both down → 503.
    backup.stop();
    wait_state(&h, p1, HealthState::Down).await;
    wait_state(&h, p2, HealthState::Down).await;
    assert_eq!(route_first(&h), Err((503, "all destinations down")));
}
