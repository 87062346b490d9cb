//! rtpengine misbehaving, end to end (hardening): a UDP relay between
//! rtcgate and a real rtpengine makes the ng replies late, garbled or
//! "load limit". Each call must get the right SIP answer quickly, and no
//! rtpengine session may be left behind, whatever rtpengine did with the
//! offer it saw.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::rtpengine::{Daemon, need_rtpengine};
use common::*;
use rtcgate::media::RtpengineInstance;
use tokio::net::UdpSocket;

/// What the relay does to ng traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Both ways untouched.
    Pass,
    /// Every reply held back this long.
    Late(Duration),
    /// Replies to offers replaced by a truncated bencode body (the offer
    /// still reaches rtpengine, which creates the call).
    Garbage,
    /// Offers answered `load limit` by the relay, never forwarded.
    LoadLimit,
}

/// A UDP relay in front of rtpengine's ng port.
struct NgRelay {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    /// Commands seen from rtcgate, in order (`offer`, `answer`, `delete`...).
    commands: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

/// `(cookie, command)` of an ng request: `<cookie> d...7:command<len>:<name>...e`.
fn cookie_and_command(datagram: &[u8]) -> Option<(String, String)> {
    let text = std::str::from_utf8(datagram).ok()?;
    let (cookie, body) = text.split_once(' ')?;
    let after = body.split_once("7:command")?.1;
    let (len, rest) = after.split_once(':')?;
    let len: usize = len.parse().ok()?;
    Some((cookie.to_owned(), rest.get(..len)?.to_owned()))
}

impl NgRelay {
    async fn start(upstream: SocketAddr) -> Self {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = sock.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(Mode::Pass));
        let commands = Arc::new(Mutex::new(Vec::new()));
        let (m, seen) = (mode.clone(), commands.clone());
        let task = tokio::spawn(async move {
            let mut client: Option<SocketAddr> = None;
            // Cookie -> command, to know what a reply answers.
            let mut asked: HashMap<String, String> = HashMap::new();
            let mut buf = vec![0u8; 65536];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let data = buf[..n].to_vec();
                let mode = *m.lock().unwrap();
                if from == upstream {
                    let Some(to) = client else { continue };
                    let cookie = std::str::from_utf8(&data)
                        .ok()
                        .and_then(|t| t.split_once(' '))
                        .map(|(c, _)| c.to_owned())
                        .unwrap_or_default();
                    let command = asked.get(&cookie).cloned().unwrap_or_default();
                    match mode {
                        Mode::Garbage if command == "offer" => {
                            let junk = format!("{cookie} d6:result2:ok3:sdp999:v=0");
                            let _ = sock.send_to(junk.as_bytes(), to).await;
                        }
                        Mode::Late(d) => {
                            let s = sock.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(d).await;
                                let _ = s.send_to(&data, to).await;
                            });
                        }
                        _ => {
                            let _ = sock.send_to(&data, to).await;
                        }
                    }
                    continue;
                }
                client = Some(from);
                let Some((cookie, command)) = cookie_and_command(&data) else {
                    let _ = sock.send_to(&data, upstream).await;
                    continue;
                };
                seen.lock().unwrap().push(command.clone());
                if mode == Mode::LoadLimit && command == "offer" {
                    let reply =
                        format!("{cookie} d7:message19:load limit exceeded6:result10:load limite");
                    let _ = sock.send_to(reply.as_bytes(), from).await;
                    continue;
                }
                asked.insert(cookie, command);
                let _ = sock.send_to(&data, upstream).await;
            }
        });
        Self {
            addr,
            mode,
            commands,
            task,
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn count(&self, command: &str) -> usize {
        self.commands
            .lock()
            .unwrap()
            .iter()
            .filter(|c| *c == command)
            .count()
    }
}

impl Drop for NgRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// INVITE with a WebRTC offer; the final answer, how long it took, and
/// (on 200) the ACK sent.
async fn call(ws: &mut Ws, call: &str) -> (String, Duration) {
    let t0 = Instant::now();
    ws_send(ws, &ws_invite(call, "1001", &webrtc_offer())).await;
    let (resp, _) = ws_final(ws).await;
    let took = t0.elapsed();
    if sip_status(&resp) == Some(200) {
        ws_send(ws, &ws_in_dialog("ACK", 1, call, &resp)).await;
    }
    (resp, took)
}

fn assert_503_with_retry_after(resp: &str) {
    assert_eq!(sip_status(resp), Some(503), "{resp}");
    assert!(
        !sip_header_values(resp, "Retry-After").is_empty(),
        "503 without Retry-After: {resp}"
    );
}

struct Stack {
    rtp: Daemon,
    relay: NgRelay,
    _pbx: SippRun,
    gw: TestGateway,
}

/// rtpengine, a relay in front of it, a PBX, and rtcgate whose ng instances
/// are `wiring(rtpengine, relay)`.
async fn stack(
    bin: &std::path::PathBuf,
    wiring: fn(SocketAddr, SocketAddr) -> Vec<SocketAddr>,
) -> Stack {
    let rtp = Daemon::start(bin);
    let relay = NgRelay::start(rtp.ng).await;
    let pbx = answering_pbx();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let addrs = wiring(rtp.ng, relay.addr);
    let gw = TestGateway::start_with(|c| {
        c.rtpengine = Daemon::config(&rtp);
        c.rtpengine.enabled = true;
        c.rtpengine.instances = addrs
            .into_iter()
            .map(|address| RtpengineInstance { address, weight: 1 })
            .collect();
        c.rtpengine.try_timeout_ms = 250;
        c.rtpengine.tries = 4;
        c.rtpengine.offer_deadline_ms = 1200;
        c.rtpengine.delete_deadline_ms = 3000;
        // Failures here are the relay's doing, not an outage to remember.
        c.rtpengine.down_after = 100;
        c.routes = route_to(pbx.port);
    })
    .await;
    Stack {
        rtp,
        relay,
        _pbx: pbx,
        gw,
    }
}

/// Only the relay.
fn via_relay(_: SocketAddr, relay: SocketAddr) -> Vec<SocketAddr> {
    vec![relay]
}

#[tokio::test]
async fn late_ng_replies_within_the_deadline_are_used_beyond_it_the_call_fails_and_leaves_nothing()
{
    let Some(bin) = need_rtpengine() else { return };
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let s = stack(&bin, via_relay).await;
    let relay = &s.relay;
    let mut ws = ws_connect(s.gw.ws(), None, Some("sip"), None)
        .await
        .unwrap();

    // Late, but before the offer deadline: the retransmission's (or the
    // first try's) reply is taken, the call is answered, one session.
    relay.set(Mode::Late(Duration::from_millis(400)));
    let (ok, took) = call(&mut ws, "late1").await;
    assert_eq!(sip_status(&ok), Some(200), "{ok}");
    eprintln!("call with ng replies 400 ms late answered in {took:?}");
    assert_eq!(s.rtp.calls().len(), 1);
    ws_hang_up(&mut ws, "late1", &ok).await;
    s.rtp.wait_empty(Duration::from_secs(8)).await;

    // Later than the offer deadline: 503 within it, and the session that
    // rtpengine did create from the offer is deleted afterwards.
    relay.set(Mode::Late(Duration::from_millis(2000)));
    let (resp, took) = call(&mut ws, "late2").await;
    assert_503_with_retry_after(&resp);
    eprintln!("call with ng replies 2 s late refused in {took:?}");
    assert!(took < Duration::from_millis(2500), "503 took {took:?}");
    relay.set(Mode::Pass);
    s.rtp.wait_empty(Duration::from_secs(8)).await;
    assert!(relay.count("delete") >= 2, "no delete for the failed call");

    // And the next call works.
    let (ok, _) = call(&mut ws, "late3").await;
    assert_eq!(sip_status(&ok), Some(200), "{ok}");
    ws_hang_up(&mut ws, "late3", &ok).await;
    s.rtp.wait_empty(Duration::from_secs(8)).await;
}

#[tokio::test]
async fn garbled_ng_reply_gives_503_and_the_created_session_is_deleted() {
    let Some(bin) = need_rtpengine() else { return };
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let s = stack(&bin, via_relay).await;
    let relay = &s.relay;
    let mut ws = ws_connect(s.gw.ws(), None, Some("sip"), None)
        .await
        .unwrap();

    relay.set(Mode::Garbage);
    for n in 0..3 {
        let id = format!("garb{n}");
        let (resp, took) = call(&mut ws, &id).await;
        assert_503_with_retry_after(&resp);
        eprintln!("garbled offer reply: 503 in {took:?}");
        assert!(took < Duration::from_secs(2), "503 took {took:?}");
    }
    // rtpengine made a call of each offer; rtcgate deleted them all.
    s.rtp.wait_empty(Duration::from_secs(8)).await;
    assert_eq!(
        relay.count("offer"),
        3,
        "one offer per call, no retry on garbage"
    );

    relay.set(Mode::Pass);
    let (ok, _) = call(&mut ws, "garb-ok").await;
    assert_eq!(sip_status(&ok), Some(200), "{ok}");
    ws_hang_up(&mut ws, "garb-ok", &ok).await;
    s.rtp.wait_empty(Duration::from_secs(8)).await;
    // The gateway is alive and well.
    ws_send(&mut ws, &options("WS", "ngok", "localhost")).await;
    assert_eq!(sip_status(&ws_recv(&mut ws).await), Some(200));
}

#[tokio::test]
async fn load_limit_fails_over_to_the_other_instance_and_alone_gives_503() {
    let Some(bin) = need_rtpengine() else { return };
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    // Two instances: one behind the relay (at its load limit), one direct.
    let s = stack(&bin, |ng, relay| vec![relay, ng]).await;
    let relay = &s.relay;
    relay.set(Mode::LoadLimit);
    let mut ws = ws_connect(s.gw.ws(), None, Some("sip"), None)
        .await
        .unwrap();
    // Calls spread over both instances by Call-ID; every one succeeds.
    let mut up = Vec::new();
    for n in 0..8 {
        let id = format!("ll{n}");
        let (ok, _) = call(&mut ws, &id).await;
        assert_eq!(sip_status(&ok), Some(200), "{id}: {ok}");
        up.push((id, ok));
    }
    assert!(
        relay.count("offer") >= 1,
        "no call was tried on the loaded instance first (hashing changed?)"
    );
    eprintln!(
        "{} of 8 offers hit the load limit and failed over",
        relay.count("offer")
    );
    assert_eq!(s.rtp.calls().len(), 8, "every call on the direct instance");
    for (id, ok) in &up {
        ws_hang_up(&mut ws, id, ok).await;
    }
    s.rtp.wait_empty(Duration::from_secs(8)).await;
    drop(ws);
    drop(s);

    // The loaded instance alone: 503 at once, nothing created.
    let s = stack(&bin, via_relay).await;
    let relay = &s.relay;
    relay.set(Mode::LoadLimit);
    let mut ws = ws_connect(s.gw.ws(), None, Some("sip"), None)
        .await
        .unwrap();
    let (resp, took) = call(&mut ws, "ll-alone").await;
    assert_503_with_retry_after(&resp);
    eprintln!("load limit on the only instance: 503 in {took:?}");
    assert!(took < Duration::from_secs(1), "503 took {took:?}");
    assert!(s.rtp.calls().is_empty());
}
