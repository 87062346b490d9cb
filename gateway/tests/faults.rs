//! Fault injection with the real parts (issue #11, hardening): rtpengine
//! killed under load and restarted on the same port, the database (a
//! private PostgreSQL or MariaDB of this test, never the shared servers)
//! killed and restarted on the same port and data directory. Each must end with the
//! right SIP answer, quickly, and nothing lost or leaked.
//!
//! Covered elsewhere and not repeated here: a killed PBX with a backup
//! (`pbx_routing::failover_health_and_rules_with_real_pbxes`), a browser
//! vanishing mid-call (`media_calls::websocket_dropped_mid_call_hangs_up_the_pbx`
//! and `faults::websocket_reset_mid_call_ends_every_call_of_the_flow` below).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::rtpengine::{Daemon, need_rtpengine};
use common::*;
use rtcgate::media::RtpengineInstance;

/// Sets up one browser call (INVITE with a WebRTC offer, ACK); returns the 200.
async fn call_up(ws: &mut Ws, call: &str) -> String {
    ws_send(ws, &ws_invite(call, "1001", &webrtc_offer())).await;
    let (ok, seen) = ws_final(ws).await;
    assert_eq!(sip_status(&ok), Some(200), "{call}: {seen:?}\n{ok}");
    ws_send(ws, &ws_in_dialog("ACK", 1, call, &ok)).await;
    ok
}

#[tokio::test]
async fn rtpengine_killed_under_load_then_restarted() {
    let Some(bin) = need_rtpengine() else { return };
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let mut rtp = Daemon::start(&bin);
    let ng = rtp.ng;
    let pbx = answering_pbx();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gw = TestGateway::start_with(|c| {
        c.rtpengine.enabled = true;
        c.rtpengine.instances = vec![RtpengineInstance {
            address: ng,
            weight: 1,
        }];
        // Production-like deadlines, a little patient for a loaded machine.
        c.rtpengine.try_timeout_ms = 300;
        c.rtpengine.tries = 3;
        c.rtpengine.offer_deadline_ms = 2000;
        c.rtpengine.delete_deadline_ms = 1000;
        c.rtpengine.ping_interval_ms = 300;
        c.rtpengine.down_after = 2;
        c.routes = route_to(pbx.port);
    })
    .await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();

    // Load: four calls up, four sessions in rtpengine.
    let mut up = Vec::new();
    for n in 0..4 {
        let call = format!("load{n}");
        let ok = call_up(&mut ws, &call).await;
        up.push((call, ok));
    }
    assert_eq!(rtp.calls().len(), 4, "one session per call");

    // rtpengine dies.
    rtp.kill();

    // New calls: 503 with Retry-After within the offer deadline, and after
    // a single try (300 ms, no retransmissions) once the instance is known
    // to be down.
    let mut took = Vec::new();
    let mut fast = false;
    for n in 0..20 {
        let call = format!("dead{n}");
        let t0 = Instant::now();
        ws_send(&mut ws, &ws_invite(&call, "1001", &webrtc_offer())).await;
        let (resp, _) = ws_final(&mut ws).await;
        let t = t0.elapsed();
        assert_eq!(sip_status(&resp), Some(503), "{resp}");
        assert!(
            !sip_header_values(&resp, "Retry-After").is_empty(),
            "503 without Retry-After: {resp}"
        );
        assert!(t < Duration::from_millis(2500), "503 took {t:?}");
        took.push(t);
        if t < Duration::from_millis(600) {
            fast = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("503 times after the kill: {took:?}");
    assert!(fast, "never answered after a single ng try: {took:?}");

    // Calls already up still end cleanly: the BYE passes to the PBX and
    // its 200 comes back, the failed deletes are bounded.
    let (call, ok) = up.remove(0);
    let t = ws_hang_up(&mut ws, &call, &ok).await;
    eprintln!("BYE while rtpengine is down answered in {t:?}");
    assert!(t < Duration::from_secs(3), "BYE took {t:?}");

    // rtpengine comes back on the same port: new calls work again.
    let rtp = Daemon::start_on(&bin, ng);
    let t0 = Instant::now();
    let mut back = None;
    for n in 0..40 {
        let call = format!("back{n}");
        ws_send(&mut ws, &ws_invite(&call, "1001", &webrtc_offer())).await;
        let (resp, seen) = ws_final(&mut ws).await;
        match sip_status(&resp) {
            Some(200) => {
                ws_send(&mut ws, &ws_in_dialog("ACK", 1, &call, &resp)).await;
                back = Some((call, resp));
                break;
            }
            Some(503) => tokio::time::sleep(Duration::from_millis(250)).await,
            _ => panic!("unexpected answer after the restart {seen:?}: {resp}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "no recovery");
    }
    let (call, ok) = back.expect("no call succeeded after the restart");
    eprintln!(
        "first call after the restart answered {:?} after it",
        t0.elapsed()
    );
    assert_eq!(rtp.calls().len(), 1, "the new call is in the new daemon");
    ws_hang_up(&mut ws, &call, &ok).await;
    // The calls from before the crash end too (their sessions died with it).
    for (call, ok) in up {
        ws_hang_up(&mut ws, &call, &ok).await;
    }
    rtp.wait_empty(Duration::from_secs(5)).await;
    drop(pbx);
}

/// A WebSocket client whose TCP connection is reset (SO_LINGER 0, no close
/// frame, no BYE) with two calls up: both PBX legs get a BYE and rtpengine
/// keeps nothing.
#[tokio::test]
async fn websocket_reset_mid_call_ends_every_call_of_the_flow() {
    let Some(bin) = need_rtpengine() else { return };
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let rtp = Daemon::start(&bin);
    let ng = rtp.ng;
    // uas.xml passes only when the BYE arrives: two calls, two BYEs.
    let Some(pbx) = SippRun::spawn("uas.xml", &["-m", "2"]) else {
        return;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gw = TestGateway::start_with(|c| {
        c.rtpengine = Daemon::config(&rtp);
        c.rtpengine.enabled = true;
        c.rtpengine.instances = vec![RtpengineInstance {
            address: ng,
            weight: 1,
        }];
        c.rtpengine.ws_drop_grace_ms = 300;
        c.routes = route_to(pbx.port);
    })
    .await;
    let tcp = tokio::net::TcpStream::connect(gw.ws()).await.unwrap();
    let raw = tcp.into_std().unwrap();
    let sock = socket2::SockRef::from(&raw);
    sock.set_linger(Some(Duration::ZERO)).unwrap();
    let tcp = tokio::net::TcpStream::from_std(raw).unwrap();
    let mut ws = ws_over(tcp, gw.ws()).await;
    call_up(&mut ws, "rst1").await;
    call_up(&mut ws, "rst2").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rtp.calls().len(), 2);
    // Dropping a socket with linger 0 sends RST: the browser is gone.
    drop(ws);
    let t0 = Instant::now();
    assert!(
        pbx.finish(Duration::from_secs(15)).await,
        "the PBX did not get a BYE for both calls"
    );
    eprintln!("both PBX legs hung up {:?} after the reset", t0.elapsed());
    rtp.wait_empty(Duration::from_secs(5)).await;
}

/// A browser that takes the 200 and never sends the ACK (it crashed, or its
/// answer was lost): after 64·T1 rtcgate ends the call on both sides and
/// deletes the rtpengine session, instead of holding both until the maximum
/// call duration.
#[tokio::test]
async fn answered_call_never_acknowledged_is_ended_and_its_media_deleted() {
    let Some(bin) = need_rtpengine() else { return };
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let rtp = Daemon::start(&bin);
    let ng = rtp.ng;
    let Some(pbx) = SippRun::spawn("pbx_no_ack.xml", &["-m", "1"]) else {
        return;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gw = TestGateway::start_with(|c| {
        c.rtpengine = Daemon::config(&rtp);
        c.rtpengine.enabled = true;
        c.rtpengine.instances = vec![RtpengineInstance {
            address: ng,
            weight: 1,
        }];
        // 64·T1 = 3.2 s instead of 32 s.
        c.sip.t1_ms = 50;
        c.routes = route_to(pbx.port);
    })
    .await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    ws_send(&mut ws, &ws_invite("noack1", "1001", &webrtc_offer())).await;
    let (ok, seen) = ws_final(&mut ws).await;
    assert_eq!(sip_status(&ok), Some(200), "{seen:?}\n{ok}");
    let t0 = Instant::now();
    assert_eq!(rtp.calls().len(), 1, "the call is in rtpengine");
    // No ACK. The browser hears the 2xx again, then rtcgate's BYE.
    let bye = loop {
        let m = ws_recv_within(&mut ws, Duration::from_secs(10))
            .await
            .expect("a BYE from rtcgate within 10 s");
        if sip_method(&m).as_deref() == Some("BYE") {
            break m;
        }
        assert_eq!(sip_status(&m), Some(200), "only 2xx retransmissions: {m}");
    };
    let waited = t0.elapsed();
    assert!(bye.contains("No ACK for the 2xx"), "BYE says why: {bye}");
    assert_eq!(sip_header(&bye, "Call-ID"), "noack1@br.invalid");
    assert!(
        pbx.finish(Duration::from_secs(10)).await,
        "the PBX did not get its BYE"
    );
    eprintln!("call given up {waited:?} after the unacknowledged 2xx");
    rtp.wait_empty(Duration::from_secs(5)).await;
}

/// A SIP WebSocket (plain ws, no Origin) over an existing TCP stream.
async fn ws_over(tcp: tokio::net::TcpStream, addr: SocketAddr) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let mut req = format!("ws://localhost:{}/", addr.port())
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("sip"));
    let stream: Box<dyn AsyncStream> = Box::new(tcp);
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_tungstenite::client_async(req, stream),
    )
    .await
    .expect("handshake timed out")
    .expect("upgrade refused");
    ws
}

// ------------------------------------------------------------- database

/// A PostgreSQL server of this test alone: its own data directory in a
/// temp dir, a free port on 127.0.0.1, its own process group (killed by
/// that group's id). Started as the `postgres` user when the tests run as
/// root (PostgreSQL refuses root).
struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<std::process::Child>,
}

fn pg_bin(name: &str) -> Option<PathBuf> {
    let dir = std::fs::read_dir("/usr/lib/postgresql").ok()?;
    let mut versions: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
    versions.sort();
    versions
        .into_iter()
        .rev()
        .map(|v| v.join("bin").join(name))
        .find(|p| p.is_file())
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// `program args...`, as `postgres` when we are root.
fn pg_command(program: &Path) -> std::process::Command {
    if running_as_root() {
        let mut c = std::process::Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        std::process::Command::new(program)
    }
}

impl PrivatePostgres {
    /// initdb + start; `None` when PostgreSQL's server binaries are missing.
    fn create() -> Option<Self> {
        let initdb = pg_bin("initdb")?;
        let dir = tempfile::tempdir().unwrap();
        if running_as_root() {
            let status = std::process::Command::new("chown")
                .args(["postgres:"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success(), "chown of the temp dir to postgres");
        }
        let out = pg_command(&initdb)
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = Self {
            dir,
            port: free_tcp_port(),
            child: None,
        };
        pg.start();
        Some(pg)
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server on its port and data directory, waits until it
    /// accepts connections (bounded).
    fn start(&mut self) {
        use std::os::unix::process::CommandExt;
        let postgres = pg_bin("postgres").expect("postgres binary");
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let child = pg_command(&postgres)
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .arg("-k")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-h", "127.0.0.1"])
            .args(["-c", "fsync=off"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap();
        self.child = Some(child);
        // Accepting TCP is not enough (startup/recovery answers "starting
        // up"): wait for a real query to succeed.
        let url = self.url();
        let ready = wait_connectable(Duration::from_secs(20), move || {
            let url = url.clone();
            async move {
                let pool = sqlx::postgres::PgPoolOptions::new()
                    .max_connections(1)
                    .connect(&url)
                    .await
                    .ok()?;
                pool.close().await;
                Some(())
            }
        });
        assert!(
            ready,
            "private postgres did not start: {}",
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    /// SIGKILL to the server's process group (postmaster and backends):
    /// a crash, not a shutdown.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.kill();
            let _ = c.wait();
            // Backends of the group may outlive the postmaster by a moment;
            // the restart needs them gone (shared memory still attached).
            let deadline = Instant::now() + Duration::from_secs(5);
            while group_alive(c.id()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// Tries `connect` (2 s per try, 100 ms apart) until it succeeds or
/// `within` has passed; on a thread with its own runtime, since callers are
/// already inside one.
fn wait_connectable<F, Fut>(within: Duration, connect: F) -> bool
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Option<()>>,
{
    let deadline = Instant::now() + within;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            loop {
                if let Ok(Some(())) = tokio::time::timeout(Duration::from_secs(2), connect()).await
                {
                    return true;
                }
                if Instant::now() > deadline {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    })
    .join()
    .unwrap()
}

/// Whether any process is left in process group `pgid`.
fn group_alive(pgid: u32) -> bool {
    std::process::Command::new("kill")
        .args(["-0", "--", &format!("-{pgid}")])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn register(user: &str, cseq: u32) -> String {
    format!(
        "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/WSS ua.invalid;branch=z9hG4bKdb{user}{cseq}\r\nMax-Forwards: 70\r\nTo: <sip:{user}@localhost>\r\nFrom: <sip:{user}@localhost>;tag=r{user}\r\nCall-ID: db-{user}@ua.invalid\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:{user}c@ua.invalid;transport=ws>;expires=600\r\nContent-Length: 0\r\n\r\n"
    )
}

/// REGISTER over `ws`; the response and how long it took.
async fn register_timed(ws: &mut Ws, user: &str, cseq: u32) -> (String, Duration) {
    let t0 = Instant::now();
    ws_send(ws, &register(user, cseq)).await;
    let r = ws_recv_within(ws, Duration::from_secs(15))
        .await
        .expect("no answer to REGISTER within 15 s");
    (r, t0.elapsed())
}

/// A database server private to one test: crashed and started again.
trait PrivateDb {
    fn url(&self) -> String;
    fn kill(&mut self);
    fn start(&mut self);
}

impl PrivateDb for PrivatePostgres {
    fn url(&self) -> String {
        PrivatePostgres::url(self)
    }
    fn kill(&mut self) {
        PrivatePostgres::kill(self)
    }
    fn start(&mut self) {
        PrivatePostgres::start(self)
    }
}

#[tokio::test]
async fn database_killed_then_restarted_postgres() {
    let pg = PrivatePostgres::create();
    if !require(
        "PostgreSQL server binaries (initdb, postgres)",
        pg.is_some(),
    ) {
        return;
    }
    database_killed_then_restarted(&mut pg.unwrap()).await;
}

#[tokio::test]
async fn database_killed_then_restarted_mariadb() {
    let db = PrivateMariaDb::create();
    if !require(
        "MariaDB server binaries (mariadb-install-db, mariadbd)",
        db.is_some(),
    ) {
        return;
    }
    database_killed_then_restarted(&mut db.unwrap()).await;
}

/// REGISTERs while the database is up, crashed (SIGKILL) and back.
async fn database_killed_then_restarted(pg: &mut impl PrivateDb) {
    let url = pg.url();
    let gw = TestGateway::start_with(|c| c.database.url = url.clone()).await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();

    let (r, _) = register_timed(&mut ws, "3001", 1).await;
    assert_eq!(sip_status(&r), Some(200), "{r}");
    // Call records on the same store (its breaker shared with REGISTER).
    let acct =
        rtcgate::accounting::Accounting::start(gw.app.location.store().clone(), Default::default());
    acct.dialog_event(&call_event("before", true));
    acct.dialog_event(&call_event("before", false));
    wait_for(|| acct.stats().written == 1, "the first call record").await;

    pg.kill();
    // A call ends during the outage: its record is held, not lost.
    acct.dialog_event(&call_event("during", true));
    acct.dialog_event(&call_event("during", false));

    // Every REGISTER meanwhile: 503 with Retry-After, never a hang or a
    // dropped answer. The first waits out the pool's acquire timeout (3 s);
    // then the circuit breaker answers the others at once.
    let mut took_all = Vec::new();
    for cseq in 1..=4 {
        let (r, took) = register_timed(&mut ws, "3002", cseq).await;
        took_all.push(took);
        eprintln!(
            "REGISTER with the database down: {:?} in {took:?}",
            sip_status(&r)
        );
        assert!(
            matches!(sip_status(&r), Some(500) | Some(503)),
            "expected 500/503: {r}"
        );
        assert!(
            !sip_header_values(&r, "Retry-After").is_empty(),
            "no Retry-After: {r}"
        );
        assert!(took < Duration::from_secs(5), "answer took {took:?}");
    }
    let fast = took_all[1..]
        .iter()
        .filter(|t| **t < Duration::from_secs(1))
        .count();
    assert!(
        fast >= 2,
        "the breaker did not fail REGISTERs fast: {took_all:?}"
    );
    // The process is alive and still answers what needs no database.
    ws_send(&mut ws, &options("WS", "dbdown", "localhost")).await;
    assert_eq!(sip_status(&ws_recv(&mut ws).await), Some(200));

    // Back on the same port and data directory: registrations work again.
    pg.start();
    let t0 = Instant::now();
    let mut cseq = 10;
    loop {
        cseq += 1;
        let (r, _) = register_timed(&mut ws, "3003", cseq).await;
        if sip_status(&r) == Some(200) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "REGISTER still failing after the restart: {r}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("REGISTER succeeded {:?} after the restart", t0.elapsed());
    wait_for(|| acct.stats().written == 2, "the held call record").await;
    let s = acct.stats();
    assert_eq!((s.held, s.dropped_db_error), (0, 0), "{s:?}");

    // Data intact: the binding from before the crash and the new one are
    // in the database, the refused one is not.
    let store = rtcgate::store::Store::connect(&pg.url()).await.unwrap();
    let aor = |u: &str| format!("sip:{u}@localhost");
    let before = store.list_bindings(&aor("3001")).await.unwrap();
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].contact, "sip:3001c@ua.invalid;transport=ws");
    assert_eq!(store.list_bindings(&aor("3003")).await.unwrap().len(), 1);
    assert!(store.list_bindings(&aor("3002")).await.unwrap().is_empty());
    let mut calls: Vec<String> = store
        .list_call_records(10, None)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.call_id)
        .collect();
    calls.sort();
    assert_eq!(calls, ["before", "during"]);
    store.close().await;
}

/// A call's start (`true`) or its failure with 486.
fn call_event(call_id: &str, start: bool) -> rtcgate::proxy::dialog::DialogEvent {
    use rtcgate::proxy::dialog::{CallStart, DialogEvent, DialogEventKind};
    DialogEvent {
        call_id: call_id.into(),
        at: Instant::now(),
        kind: if start {
            DialogEventKind::Started(CallStart {
                caller: "a@x".into(),
                caller_tag: "t".into(),
                callee: "b@x".into(),
                direction: None,
                destinations: vec![],
            })
        } else {
            DialogEventKind::Failed {
                status: 486,
                destinations: vec![],
            }
        },
    }
}

/// Polls `done` for up to 15 s.
async fn wait_for(done: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A MariaDB server of one test: its own data directory (a fresh
/// `mariadb-install-db`), port and socket; no grant tables, so root needs no
/// password. The database `rtcgate` is a directory of the data directory.
struct PrivateMariaDb {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<std::process::Child>,
}

impl PrivateMariaDb {
    fn create() -> Option<Self> {
        let install = which("mariadb-install-db")?;
        std::path::Path::new("/usr/sbin/mariadbd")
            .is_file()
            .then_some(())?;
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let out = std::process::Command::new(install)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
            .args(if running_as_root() {
                vec!["--user=root"]
            } else {
                vec![]
            })
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "mariadb-install-db failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::create_dir(data.join("rtcgate")).unwrap();
        let mut db = Self {
            dir,
            port: free_tcp_port(),
            child: None,
        };
        db.start();
        Some(db)
    }
}

impl PrivateDb for PrivateMariaDb {
    fn url(&self) -> String {
        format!("mysql://root@127.0.0.1:{}/rtcgate", self.port)
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
        let mut cmd = std::process::Command::new("/usr/sbin/mariadbd");
        cmd.arg("--no-defaults")
            .arg(format!(
                "--datadir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!(
                "--socket={}",
                self.dir.path().join("sock").display()
            ))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-grant-tables",
                "--skip-log-bin",
                // Written to the OS at each commit: a killed server loses
                // nothing (0 would lose up to a second of commits).
                "--innodb-flush-log-at-trx-commit=2",
                "--innodb-buffer-pool-size=16M",
            ]);
        if running_as_root() {
            cmd.arg("--user=root");
        }
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let url = self.url();
        let ready = wait_connectable(Duration::from_secs(30), move || {
            let url = url.clone();
            async move {
                let pool = sqlx::mysql::MySqlPoolOptions::new()
                    .max_connections(1)
                    .connect(&url)
                    .await
                    .ok()?;
                pool.close().await;
                Some(())
            }
        });
        assert!(
            ready,
            "private mariadbd did not start: {}",
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    /// SIGKILL: a crash (InnoDB recovers on the next start).
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        PrivateDb::kill(self);
    }
}
