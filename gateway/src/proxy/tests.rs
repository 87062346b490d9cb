//! The proxy driven directly, without sockets: messages in, bytes and
//! events out, time given by the test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::dialog::{CallStart, DialogEventKind, Direction, EndCause};
use super::route::Local;
use super::routing::StaticRouter;
use super::*;
use crate::config::StaticRoute;

struct AllAlive;
impl Flows for AllAlive {
    fn alive(&self, _: FlowId) -> bool {
        true
    }
}

const CALLER: &str = "127.0.0.1:5070";
const PBX: &str = "127.0.0.1:5080";

fn proxy() -> Proxy {
    proxy_with_media(false)
}

/// A proxy that bridges media (its [`MediaTask`]s are left to the test).
fn media_proxy() -> Proxy {
    proxy_with_media(true)
}

fn proxy_with_media(media: bool) -> Proxy {
    let local = Local {
        udp: vec!["127.0.0.1:5060".parse().unwrap()],
        domains: vec!["localhost".into()],
        ..Default::default()
    };
    let router = StaticRouter::new(
        vec![StaticRoute {
            prefix: "1".into(),
            destination: PBX.parse().unwrap(),
            codec_policy: None,
        }],
        None,
    );
    Proxy::new(
        ProxyConfig {
            server_header: "test".into(),
            transactions: TransactionConfig::default(),
            auth_required: false,
            trusted: vec![],
            media,
            max_call_duration: Some(std::time::Duration::from_secs(3600)),
            pending: Default::default(),
        },
        local,
        Arc::new(router),
        false,
        Arc::new(AllAlive),
    )
}

fn from(peer: &str) -> Source {
    Source::Udp {
        local: "127.0.0.1:5060".parse().unwrap(),
        peer: peer.parse().unwrap(),
    }
}

fn feed(p: &mut Proxy, now: Instant, src: &str, text: &str) {
    let msg = crate::sip::parse(text.as_bytes(), 65535).unwrap_or_else(|e| panic!("{:?}", e.error));
    p.handle_message(now, from(src), msg);
}

/// Everything sent to `to` since the last call, as text.
fn sent_to(p: &mut Proxy, to: &str) -> Vec<String> {
    let to: SocketAddr = to.parse().unwrap();
    let mut out = Vec::new();
    while let Some(s) = p.poll_send() {
        if s.dest == Destination::Udp(to) {
            out.push(String::from_utf8_lossy(&s.data).into_owned());
        }
    }
    out
}

fn events(p: &mut Proxy) -> Vec<DialogEventKind> {
    std::iter::from_fn(|| p.poll_dialog_event())
        .map(|e| e.kind)
        .collect()
}

const INVITE: &str = "INVITE sip:1001@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKc1\r\nMax-Forwards: 70\r\nFrom: <sip:2000@localhost>;tag=ft\r\nTo: <sip:1001@localhost>\r\nCall-ID: d1@test\r\nCSeq: 1 INVITE\r\nContact: <sip:2000@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n";

/// The PBX's answer to the forwarded INVITE: its Vias and Record-Route copied.
fn answer(forwarded: &str, status: &str) -> String {
    let keep: String = forwarded
        .split("\r\n")
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            ["via:", "from:", "call-id:", "cseq:", "record-route:"]
                .iter()
                .any(|h| l.starts_with(h))
        })
        .map(|l| format!("{l}\r\n"))
        .collect();
    format!(
        "SIP/2.0 {status}\r\n{keep}To: <sip:1001@localhost>;tag=pbx\r\nContact: <sip:pbx@{PBX}>\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn dialog_goes_early_confirmed_terminated() {
    let mut p = proxy();
    let now = Instant::now();
    feed(&mut p, now, CALLER, INVITE);
    let fwd = sent_to(&mut p, PBX);
    assert_eq!(fwd.len(), 1, "INVITE forwarded once");
    assert_eq!(
        events(&mut p),
        vec![DialogEventKind::Started(CallStart {
            caller: "2000@localhost".into(),
            caller_tag: "ft".into(),
            callee: "1001@localhost".into(),
            direction: Some(Direction::PbxToPbx),
            destinations: vec![format!("udp:{PBX}")],
        })]
    );
    assert_eq!(
        fwd[0].matches("Record-Route:").count(),
        2,
        "double Record-Route"
    );
    feed(&mut p, now, PBX, &answer(&fwd[0], "180 Ringing"));
    assert_eq!(events(&mut p), vec![DialogEventKind::Early]);
    feed(&mut p, now, PBX, &answer(&fwd[0], "200 OK"));
    assert_eq!(
        events(&mut p),
        vec![DialogEventKind::Confirmed {
            destination: format!("udp:{PBX}")
        }]
    );
    assert_eq!(p.dialogs(), 1);
    let up = sent_to(&mut p, CALLER);
    assert!(up.iter().any(|m| m.starts_with("SIP/2.0 200 OK")), "{up:?}");

    let bye = format!(
        "BYE sip:pbx@{PBX} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKc2\r\nMax-Forwards: 70\r\nFrom: <sip:2000@localhost>;tag=ft\r\nTo: <sip:1001@localhost>;tag=pbx\r\nCall-ID: d1@test\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    feed(&mut p, now, CALLER, &bye);
    assert_eq!(
        events(&mut p),
        vec![DialogEventKind::Terminated {
            reason: EndCause::ByeFromCaller
        }]
    );
    assert_eq!(p.dialogs(), 0);
    assert!(sent_to(&mut p, PBX).iter().any(|m| m.starts_with("BYE ")));
}

#[test]
fn early_dialog_that_fails_reports_the_status() {
    let mut p = proxy();
    let now = Instant::now();
    feed(&mut p, now, CALLER, INVITE);
    let fwd = sent_to(&mut p, PBX);
    let _ = events(&mut p);
    feed(&mut p, now, PBX, &answer(&fwd[0], "180 Ringing"));
    feed(&mut p, now, PBX, &answer(&fwd[0], "486 Busy Here"));
    assert_eq!(
        events(&mut p),
        vec![
            DialogEventKind::Early,
            DialogEventKind::Failed {
                status: 486,
                destinations: vec![format!("udp:{PBX}")]
            }
        ]
    );
    let up = sent_to(&mut p, CALLER);
    assert!(
        up.iter().any(|m| m.starts_with("SIP/2.0 486 Busy Here")),
        "{up:?}"
    );
}

#[test]
fn unanswered_branch_times_out_with_408_on_a_virtual_clock() {
    let mut p = proxy();
    let t0 = Instant::now();
    feed(&mut p, t0, CALLER, INVITE);
    let _ = sent_to(&mut p, PBX);
    // Timer B (64*T1 = 32 s) without a word from the PBX.
    let mut now = t0;
    while let Some(deadline) = p.poll_timeout() {
        if deadline > t0 + std::time::Duration::from_secs(40) {
            break;
        }
        now = deadline;
        p.handle_timeout(now);
    }
    assert!(now >= t0 + std::time::Duration::from_secs(32));
    let up = sent_to(&mut p, CALLER);
    assert!(up.iter().any(|m| m.starts_with("SIP/2.0 408 ")), "{up:?}");
    // No early dialog, yet the call still ends with a failure event.
    let ev: Vec<_> = std::iter::from_fn(|| p.poll_dialog_event()).collect();
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert!(matches!(ev[0].kind, DialogEventKind::Started(_)));
    assert_eq!(
        ev[1].kind,
        DialogEventKind::Failed {
            status: 408,
            destinations: vec![format!("udp:{PBX}")]
        }
    );
    assert!(
        ev[1].at >= t0 + std::time::Duration::from_secs(32),
        "at the timeout"
    );
}

#[test]
fn calls_are_hung_up_at_the_maximum_duration() {
    let mut p = proxy();
    let t0 = Instant::now();
    feed(&mut p, t0, CALLER, INVITE);
    let fwd = sent_to(&mut p, PBX);
    feed(&mut p, t0, PBX, &answer(&fwd[0], "200 OK"));
    let _ = events(&mut p);
    let _ = sent_to(&mut p, CALLER);
    feed(&mut p, t0, CALLER, &ack_for(&fwd[0]));
    assert_eq!(sent_to(&mut p, PBX).len(), 1, "ACK forwarded");
    // Nothing happens before the hour is up...
    p.handle_timeout(t0 + std::time::Duration::from_secs(3599));
    assert!(events(&mut p).is_empty());
    assert_eq!(p.dialogs(), 1);
    // ...then both sides get a BYE and the dialog ends.
    p.handle_timeout(t0 + std::time::Duration::from_secs(3600));
    assert_eq!(
        events(&mut p),
        vec![DialogEventKind::Terminated {
            reason: EndCause::MaxDuration
        }]
    );
    let mut byes = Vec::new();
    while let Some(s) = p.poll_send() {
        let text = String::from_utf8_lossy(&s.data).into_owned();
        if text.starts_with("BYE ") {
            byes.push((s.dest, text));
        }
    }
    assert_eq!(byes.len(), 2, "{byes:?}");
    assert!(
        byes.iter()
            .any(|(d, t)| *d == Destination::Udp(PBX.parse().unwrap())
                && t.contains("From: <sip:2000@localhost>;tag=ft"))
    );
    assert!(
        byes.iter()
            .any(|(d, t)| *d == Destination::Udp(CALLER.parse().unwrap())
                && t.contains("To: <sip:2000@localhost>;tag=ft"))
    );
    assert_eq!(p.dialogs(), 0);
}

/// The caller's ACK for the 2xx, routed by our Record-Route.
fn ack_for(forwarded: &str) -> String {
    let rr: Vec<&str> = forwarded
        .split("\r\n")
        .filter_map(|l| l.strip_prefix("Record-Route: "))
        .collect();
    let routes: String = rr.iter().map(|r| format!("Route: {r}\r\n")).collect();
    format!(
        "ACK sip:pbx@{PBX} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa1\r\nMax-Forwards: 70\r\n{routes}From: <sip:2000@localhost>;tag=ft\r\nTo: <sip:1001@localhost>;tag=pbx\r\nCall-ID: d1@test\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
    )
}

/// [`INVITE`] sent and answered 200 by the PBX at `t0`, events and sends
/// drained; returns the INVITE as forwarded.
fn answered_call(p: &mut Proxy, t0: Instant) -> String {
    feed(p, t0, CALLER, INVITE);
    let fwd = sent_to(p, PBX).remove(0);
    feed(p, t0, PBX, &answer(&fwd, "200 OK"));
    let _ = events(p);
    let _ = sent_all(p);
    fwd
}

/// The BYEs rtcgate sent since the last poll, by destination.
fn byes(p: &mut Proxy) -> Vec<(Destination, String)> {
    sent_all(p)
        .into_iter()
        .filter(|(_, t)| t.starts_with("BYE "))
        .collect()
}

#[test]
fn answered_call_without_ack_is_given_up_after_64_t1() {
    let mut p = proxy();
    let t0 = Instant::now();
    answered_call(&mut p, t0);
    // The caller vanished: no ACK. Run the virtual clock to just before 64·T1.
    run_until(&mut p, t0 + std::time::Duration::from_millis(31_900));
    assert_eq!(p.dialogs(), 1);
    assert!(byes(&mut p).is_empty());
    run_until(&mut p, t0 + std::time::Duration::from_secs(33));
    assert_eq!(p.dialogs(), 0, "the dialog is gone");
    assert_eq!(
        events(&mut p),
        vec![DialogEventKind::Terminated {
            reason: EndCause::NoAck
        }]
    );
    let mut b = byes(&mut p);
    // UDP retransmissions (timer E) of the same two BYEs may follow.
    b.sort_by(|x, y| x.1.cmp(&y.1));
    b.dedup();
    assert_eq!(b.len(), 2, "a BYE to each side: {b:?}");
    assert!(
        b.iter()
            .any(|(d, t)| *d == Destination::Udp(PBX.parse().unwrap())
                && t.contains("Reason: SIP;cause=480;text=\"No ACK for the 2xx\""))
    );
    assert!(
        b.iter()
            .any(|(d, _)| *d == Destination::Udp(CALLER.parse().unwrap()))
    );
}

#[test]
fn acknowledged_call_outlives_the_ack_wait() {
    let mut p = proxy();
    let t0 = Instant::now();
    let fwd = answered_call(&mut p, t0);
    // An ACK with the wrong To tag proves nothing...
    let forged = ack_for(&fwd).replace("tag=pbx", "tag=other");
    feed(&mut p, t0, CALLER, &forged);
    // ...the real one does.
    feed(
        &mut p,
        t0 + std::time::Duration::from_secs(1),
        CALLER,
        &ack_for(&fwd),
    );
    let _ = sent_all(&mut p);
    run_until(&mut p, t0 + std::time::Duration::from_secs(120));
    assert_eq!(p.dialogs(), 1);
    assert!(events(&mut p).is_empty());
    assert!(byes(&mut p).is_empty());
}

#[test]
fn media_of_an_unacknowledged_call_is_deleted() {
    let mut p = media_proxy();
    let t0 = Instant::now();
    answered_call(&mut p, t0);
    let _ = std::iter::from_fn(|| p.poll_task()).count();
    run_until(&mut p, t0 + std::time::Duration::from_secs(33));
    let ends: Vec<_> = std::iter::from_fn(|| p.poll_task())
        .filter_map(|t| match t {
            Task::Media(MediaTask::Terminate { call_id, reason }) => Some((call_id, reason)),
            _ => None,
        })
        .collect();
    assert_eq!(
        ends,
        vec![(
            "d1@test".to_string(),
            crate::media::EndReason::DialogTimeout
        )]
    );
}

#[test]
fn call_rejected_by_routing_starts_and_fails() {
    let mut p = proxy();
    let now = Instant::now();
    // No route for 5xxx: 404 from routing, never forwarded.
    feed(
        &mut p,
        now,
        CALLER,
        &INVITE.replace("sip:1001@localhost SIP", "sip:5001@localhost SIP"),
    );
    assert!(
        sent_to(&mut p, CALLER)
            .iter()
            .any(|m| m.starts_with("SIP/2.0 404"))
    );
    assert_eq!(
        events(&mut p),
        vec![
            DialogEventKind::Started(CallStart {
                caller: "2000@localhost".into(),
                caller_tag: "ft".into(),
                callee: "5001@localhost".into(),
                direction: None,
                destinations: vec![],
            }),
            DialogEventKind::Failed {
                status: 404,
                destinations: vec![]
            },
        ]
    );
    // Other methods are not calls.
    feed(
        &mut p,
        now,
        CALLER,
        &INVITE
            .replace(
                "INVITE sip:1001@localhost SIP",
                "MESSAGE sip:5001@localhost SIP",
            )
            .replace("1 INVITE", "1 MESSAGE")
            .replace("d1@test", "m1@test"),
    );
    assert!(events(&mut p).is_empty());
}

#[test]
fn bye_from_the_callee_is_told_apart() {
    let mut p = proxy();
    let now = Instant::now();
    feed(&mut p, now, CALLER, INVITE);
    let fwd = sent_to(&mut p, PBX);
    feed(&mut p, now, PBX, &answer(&fwd[0], "200 OK"));
    let _ = events(&mut p);
    let bye = format!(
        "BYE sip:2000@{CALLER} SIP/2.0\r\nVia: SIP/2.0/UDP {PBX};branch=z9hG4bKpb1\r\nMax-Forwards: 70\r\nFrom: <sip:1001@localhost>;tag=pbx\r\nTo: <sip:2000@localhost>;tag=ft\r\nCall-ID: d1@test\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    feed(&mut p, now, PBX, &bye);
    assert_eq!(
        events(&mut p),
        vec![DialogEventKind::Terminated {
            reason: EndCause::ByeFromCallee
        }]
    );
}

const BACKUP: &str = "127.0.0.1:5082";

/// A set of two PBXes tried in order; 408 and 5xx move on.
#[derive(Debug)]
struct TwoPbxes {
    left: Vec<SocketAddr>,
}

impl SerialRoute for TwoPbxes {
    fn next(&mut self, _failed: &Destination, failure: BranchFailure) -> SerialStep {
        if let BranchFailure::Status(c) = failure
            && c != 408
            && c < 500
        {
            return SerialStep::Final;
        }
        match self.left.pop() {
            Some(a) => SerialStep::Next(Box::new(pbx_target(a))),
            None => SerialStep::Exhausted,
        }
    }
}

fn pbx_target(a: SocketAddr) -> Target {
    Target {
        uri: crate::rsip::Uri::try_from(format!("sip:1001@{a}").as_str()).unwrap(),
        dest: Destination::Udp(a),
        kind: Kind::Udp,
        codec_policy: None,
    }
}

struct SerialRouter;

impl Router for SerialRouter {
    fn route(&self, _: &crate::rsip::Request, _: &route::UriFacts, _: &Source) -> Decision {
        Decision::Serial(Box::new(routing::Serial {
            first: pbx_target(PBX.parse().unwrap()),
            no_answer: std::time::Duration::from_secs(2),
            rest: Box::new(TwoPbxes {
                left: vec![BACKUP.parse().unwrap()],
            }),
        }))
    }
}

fn serial_proxy() -> Proxy {
    let local = Local {
        udp: vec!["127.0.0.1:5060".parse().unwrap()],
        domains: vec!["localhost".into()],
        ..Default::default()
    };
    Proxy::new(
        ProxyConfig {
            server_header: "test".into(),
            transactions: TransactionConfig::default(),
            auth_required: false,
            trusted: vec![],
            media: false,
            max_call_duration: None,
            pending: Default::default(),
        },
        local,
        Arc::new(SerialRouter),
        false,
        Arc::new(AllAlive),
    )
}

/// Runs timers up to `until`.
fn run_until(p: &mut Proxy, until: Instant) {
    while let Some(d) = p.poll_timeout() {
        if d > until {
            break;
        }
        p.handle_timeout(d);
    }
}

fn finals(msgs: &[String]) -> Vec<String> {
    msgs.iter()
        .filter(|m| m.starts_with("SIP/2.0 ") && !m.starts_with("SIP/2.0 1"))
        .map(|m| m.lines().next().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn silent_primary_fails_over_after_the_no_answer_time() {
    let mut p = serial_proxy();
    let t0 = Instant::now();
    feed(&mut p, t0, CALLER, INVITE);
    let mut to_primary = Vec::new();
    let mut to_backup = Vec::new();
    fn drain(p: &mut Proxy, primary: &mut Vec<String>, backup: &mut Vec<String>) {
        while let Some(s) = p.poll_send() {
            let text = String::from_utf8_lossy(&s.data).into_owned();
            if s.dest == Destination::Udp(PBX.parse().unwrap()) {
                primary.push(text);
            } else if s.dest == Destination::Udp(BACKUP.parse().unwrap()) {
                backup.push(text);
            }
        }
    }
    drain(&mut p, &mut to_primary, &mut to_backup);
    assert_eq!(to_primary.len(), 1);
    // Retransmissions to the primary, but no backup before 2 s.
    run_until(&mut p, t0 + std::time::Duration::from_millis(1900));
    drain(&mut p, &mut to_primary, &mut to_backup);
    assert!(to_backup.is_empty());
    run_until(&mut p, t0 + std::time::Duration::from_millis(2100));
    drain(&mut p, &mut to_primary, &mut to_backup);
    assert_eq!(to_backup.len(), 1, "the backup gets the INVITE at 2 s");
    assert!(to_backup[0].starts_with("INVITE sip:1001@127.0.0.1:5082 "));
    feed(
        &mut p,
        t0 + std::time::Duration::from_millis(2200),
        BACKUP,
        &answer(&to_backup[0], "200 OK"),
    );
    let up = sent_to(&mut p, CALLER);
    assert_eq!(finals(&up), vec!["SIP/2.0 200 OK"], "{up:?}");
    // A primary waking up late is cancelled, not connected.
    let primary_invite = to_primary[0].clone();
    feed(
        &mut p,
        t0 + std::time::Duration::from_millis(2500),
        PBX,
        &answer(&primary_invite, "180 Ringing"),
    );
    let cancels: Vec<_> = sent_to(&mut p, PBX)
        .into_iter()
        .filter(|m| m.starts_with("CANCEL "))
        .collect();
    assert_eq!(cancels.len(), 1);
}

/// Everything sent since the last call, by destination address.
fn sent_all(p: &mut Proxy) -> Vec<(Destination, String)> {
    std::iter::from_fn(|| p.poll_send())
        .map(|s| (s.dest, String::from_utf8_lossy(&s.data).into_owned()))
        .collect()
}

fn only(sent: &[(Destination, String)], to: &str) -> Vec<String> {
    let to = Destination::Udp(to.parse().unwrap());
    sent.iter()
        .filter(|(d, _)| *d == to)
        .map(|(_, m)| m.clone())
        .collect()
}

#[test]
fn a_5xx_moves_on_a_486_is_final_and_all_failed_is_503() {
    // 503 from the primary → backup; backup's 486 → the caller gets 486.
    let mut p = serial_proxy();
    let t0 = Instant::now();
    feed(&mut p, t0, CALLER, INVITE);
    let fwd = sent_to(&mut p, PBX);
    feed(&mut p, t0, PBX, &answer(&fwd[0], "503 Service Unavailable"));
    let out = sent_all(&mut p);
    assert!(finals(&only(&out, CALLER)).is_empty(), "503 not relayed");
    let to_backup = only(&out, BACKUP);
    let invite = to_backup.iter().find(|m| m.starts_with("INVITE ")).unwrap();
    feed(&mut p, t0, BACKUP, &answer(invite, "486 Busy Here"));
    assert_eq!(
        finals(&sent_to(&mut p, CALLER)),
        vec!["SIP/2.0 486 Busy Here"]
    );

    // A 486 from the primary is final at once.
    let mut p = serial_proxy();
    feed(&mut p, t0, CALLER, INVITE);
    let fwd = sent_to(&mut p, PBX);
    feed(&mut p, t0, PBX, &answer(&fwd[0], "486 Busy Here"));
    let out = sent_all(&mut p);
    assert_eq!(finals(&only(&out, CALLER)), vec!["SIP/2.0 486 Busy Here"]);
    assert!(only(&out, BACKUP).is_empty());

    // Both silent: 503 after two no-answer times, long before timer B.
    let mut p = serial_proxy();
    feed(&mut p, t0, CALLER, INVITE);
    run_until(&mut p, t0 + std::time::Duration::from_millis(4100));
    let up = sent_to(&mut p, CALLER);
    assert_eq!(
        finals(&up),
        vec!["SIP/2.0 503 All Destinations Failed"],
        "{up:?}"
    );
}

#[test]
fn cancel_during_serial_routing_tries_no_further_destination() {
    let mut p = serial_proxy();
    let t0 = Instant::now();
    feed(&mut p, t0, CALLER, INVITE);
    let _ = sent_to(&mut p, PBX);
    // The caller gives up while the primary is still silent.
    let cancel = INVITE
        .replacen("INVITE sip:", "CANCEL sip:", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    feed(&mut p, t0, CALLER, &cancel);
    run_until(&mut p, t0 + std::time::Duration::from_secs(5));
    let out = sent_all(&mut p);
    assert!(
        only(&out, BACKUP).is_empty(),
        "no destination is tried after a CANCEL"
    );
    let up = only(&out, CALLER);
    assert!(
        finals(&up).iter().any(|f| f.starts_with("SIP/2.0 487")),
        "the caller hears 487 at the no-answer time: {up:?}"
    );
}

const VICTIM: &str = "127.0.0.1:5099";

/// Our Record-Route entries of a forwarded request, as Route headers.
fn our_routes(forwarded: &str) -> String {
    forwarded
        .split("\r\n")
        .filter_map(|l| l.strip_prefix("Record-Route: "))
        .map(|r| format!("Route: {r}\r\n"))
        .collect()
}

#[test]
fn in_dialog_request_naming_another_host_goes_to_the_dialog_peer() {
    let mut p = proxy();
    let t0 = Instant::now();
    let fwd = answered_call(&mut p, t0);
    // The caller knows the dialog's tags and tries to use it as a relay:
    // a Route beyond ours and a Request-URI toward someone else.
    let routes = our_routes(&fwd);
    let info = format!(
        "INFO sip:victim@{VICTIM} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKi1\r\nMax-Forwards: 70\r\n{routes}Route: <sip:{VICTIM};lr>\r\nFrom: <sip:2000@localhost>;tag=ft\r\nTo: <sip:1001@localhost>;tag=pbx\r\nCall-ID: d1@test\r\nCSeq: 2 INFO\r\nContent-Length: 0\r\n\r\n"
    );
    feed(&mut p, t0, CALLER, &info);
    let sent = sent_all(&mut p);
    assert!(
        only(&sent, VICTIM).is_empty(),
        "nothing reaches the host the Route named: {sent:?}"
    );
    let to_pbx = only(&sent, PBX);
    assert_eq!(
        to_pbx.len(),
        1,
        "the INFO goes to the dialog's peer: {sent:?}"
    );
    assert!(to_pbx[0].starts_with("INFO "), "{}", to_pbx[0]);
    assert!(
        !to_pbx[0].contains(&format!("Route: <sip:{VICTIM}")),
        "the forged Route is not passed on: {}",
        to_pbx[0]
    );

    // The same with tags of no dialog: refused, nothing sent anywhere.
    let forged = info
        .replace("tag=pbx", "tag=guess")
        .replace("z9hG4bKi1", "z9hG4bKi2");
    feed(&mut p, t0, CALLER, &forged);
    let sent = sent_all(&mut p);
    assert!(only(&sent, VICTIM).is_empty() && only(&sent, PBX).is_empty());
    let answers = only(&sent, CALLER);
    assert!(
        answers.iter().any(|a| a.starts_with("SIP/2.0 481")),
        "forged tags get 481: {answers:?}"
    );
}

#[test]
fn stateless_ack_naming_another_host_goes_to_the_dialog_peer() {
    let mut p = proxy();
    let t0 = Instant::now();
    let fwd = answered_call(&mut p, t0);
    let ack = ack_for(&fwd).replace(
        &format!("ACK sip:pbx@{PBX}"),
        &format!("ACK sip:victim@{VICTIM}"),
    );
    feed(&mut p, t0, CALLER, &ack);
    let sent = sent_all(&mut p);
    assert!(only(&sent, VICTIM).is_empty(), "{sent:?}");
    assert_eq!(only(&sent, PBX).len(), 1, "ACK pinned to the PBX: {sent:?}");
}

#[test]
fn early_dialog_request_naming_another_host_goes_to_the_invites_destination() {
    let mut p = proxy();
    let t0 = Instant::now();
    feed(&mut p, t0, CALLER, INVITE);
    let fwd = sent_to(&mut p, PBX).remove(0);
    feed(&mut p, t0, PBX, &answer(&fwd, "183 Session Progress"));
    let _ = sent_all(&mut p);
    let routes = our_routes(&fwd);
    let prack = format!(
        "PRACK sip:victim@{VICTIM} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKp1\r\nMax-Forwards: 70\r\n{routes}From: <sip:2000@localhost>;tag=ft\r\nTo: <sip:1001@localhost>;tag=pbx\r\nCall-ID: d1@test\r\nCSeq: 2 PRACK\r\nRAck: 1 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    );
    feed(&mut p, t0, CALLER, &prack);
    let sent = sent_all(&mut p);
    assert!(only(&sent, VICTIM).is_empty(), "{sent:?}");
    assert_eq!(only(&sent, PBX).len(), 1, "PRACK goes to the PBX: {sent:?}");
}

#[test]
fn learned_flow_token_does_not_open_a_browsers_connection() {
    let mut p = proxy();
    let t0 = Instant::now();
    // A token as it appears in our Record-Route toward a browser on flow 7.
    let token = p.keyed.flow_token(7);
    for (branch, to) in [("z9hG4bKt1", ""), ("z9hG4bKt2", ";tag=guess")] {
        let invite = format!(
            "INVITE sip:1001@localhost SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5077;branch={branch}\r\nMax-Forwards: 70\r\nRoute: <sip:{token}@127.0.0.1:5060;lr>\r\nFrom: <sip:evil@localhost>;tag=ev\r\nTo: <sip:1001@localhost>{to}\r\nCall-ID: evil-{branch}@test\r\nCSeq: 1 INVITE\r\nContact: <sip:evil@127.0.0.1:5077>\r\nContent-Length: 0\r\n\r\n"
        );
        feed(&mut p, t0, "127.0.0.1:5077", &invite);
        let sent = sent_all(&mut p);
        assert!(
            !sent.iter().any(|(d, _)| matches!(d, Destination::Flow(_))),
            "nothing reaches the browser's flow: {sent:?}"
        );
        let want = if to.is_empty() {
            "SIP/2.0 403"
        } else {
            "SIP/2.0 481"
        };
        assert!(
            only(&sent, "127.0.0.1:5077")
                .iter()
                .any(|a| a.starts_with(want)),
            "{want} expected: {sent:?}"
        );
    }
}

#[test]
fn initial_request_with_a_preloaded_route_to_us_is_routed_as_initial() {
    // SIP.js's `preloadedRouteSet` puts the proxy in a Route header of
    // out-of-dialog requests (§8.1.2).
    let mut p = proxy();
    let t0 = Instant::now();
    let invite = INVITE.replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nRoute: <sip:127.0.0.1:5060;lr>\r\n",
    );
    feed(&mut p, t0, CALLER, &invite);
    let fwd = sent_to(&mut p, PBX);
    assert_eq!(fwd.len(), 1, "routed to the PBX by its number");
    assert!(fwd[0].contains("Record-Route:"), "{}", fwd[0]);
}

#[test]
fn a_failed_send_answers_the_branch_503_at_once() {
    let mut p = proxy();
    let now = Instant::now();
    feed(&mut p, now, CALLER, INVITE);
    let out = std::iter::from_fn(|| p.poll_send())
        .find(|s| s.dest == Destination::Udp(PBX.parse().unwrap()))
        .expect("the INVITE is sent");
    let ck = out.client.expect("a request carries its transaction");
    p.send_failed(now, ck);
    let up = sent_to(&mut p, CALLER);
    assert!(
        up.iter().any(|m| m.starts_with("SIP/2.0 503 ")),
        "same instant, no timer: {up:?}"
    );
    // The PBX's retransmission timer is gone with the transaction.
    assert!(sent_to(&mut p, PBX).is_empty());
}

#[test]
fn a_request_too_large_for_udp_is_not_sent_and_gets_513() {
    let mut p = proxy();
    let now = Instant::now();
    let body = "x".repeat(65_150);
    let big = INVITE.replace(
        "Content-Length: 0",
        &format!("Content-Type: text/plain\r\nContent-Length: {}", body.len()),
    ) + &body;
    feed(&mut p, now, CALLER, &big);
    let mut to_caller = Vec::new();
    while let Some(s) = p.poll_send() {
        assert_ne!(
            s.dest,
            Destination::Udp(PBX.parse().unwrap()),
            "nothing over 65,507 bytes goes out"
        );
        to_caller.push(String::from_utf8_lossy(&s.data).into_owned());
    }
    assert!(
        to_caller.iter().any(|m| m.starts_with("SIP/2.0 513 ")),
        "{to_caller:?}"
    );
}
