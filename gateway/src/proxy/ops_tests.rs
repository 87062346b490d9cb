//! Operations on the proxy core, driven without sockets.

use std::sync::Arc;
use std::time::Instant;

use super::super::route::Local;
use super::super::routing::StaticRouter;
use super::super::*;
use super::HangupOutcome;
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
    let local = Local {
        udp: vec!["127.0.0.1:5060".parse().unwrap()],
        domains: vec!["localhost".into()],
        ..Default::default()
    };
    let routes = vec![StaticRoute {
        prefix: "1".into(),
        destination: PBX.parse().unwrap(),
        codec_policy: None,
    }];
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
        Arc::new(StaticRouter::new(routes, None)),
        false,
        Arc::new(AllAlive),
    )
}

fn feed(p: &mut Proxy, now: Instant, text: &str) {
    let src = Source::Udp {
        local: "127.0.0.1:5060".parse().unwrap(),
        peer: if text.starts_with("SIP/2.0") {
            PBX
        } else {
            CALLER
        }
        .parse()
        .unwrap(),
    };
    let msg = crate::sip::parse(text.as_bytes(), 65535).unwrap_or_else(|e| panic!("{:?}", e.error));
    p.handle_message(now, src, msg);
}

/// Everything sent since the last call: (destination port, text).
fn sent(p: &mut Proxy) -> Vec<(u16, String)> {
    std::iter::from_fn(|| p.poll_send())
        .map(|s| {
            let port = match s.dest {
                Destination::Udp(a) => a.port(),
                Destination::Flow(_) => 0,
            };
            (port, String::from_utf8_lossy(&s.data).into_owned())
        })
        .collect()
}

fn invite(call: &str, user: &str) -> String {
    format!(
        "INVITE sip:{user}@localhost SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK{call}\r\nMax-Forwards: 70\r\nFrom: <sip:2000@localhost>;tag=ft\r\nTo: <sip:{user}@localhost>\r\nCall-ID: {call}\r\nCSeq: 1 INVITE\r\nContact: <sip:2000@{CALLER}>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The PBX's answer to the forwarded INVITE.
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

fn forwarded_invite(p: &mut Proxy) -> String {
    let out = sent(p);
    out.into_iter()
        .find(|(port, t)| *port == 5080 && t.starts_with("INVITE "))
        .map(|(_, t)| t)
        .expect("INVITE forwarded to the PBX")
}

#[test]
fn outcomes_and_attempts_are_counted() {
    let mut p = proxy();
    let now = Instant::now();
    feed(&mut p, now, &invite("c1", "1001"));
    let fwd = forwarded_invite(&mut p);
    feed(&mut p, now, &answer(&fwd, "486 Busy Here"));
    feed(&mut p, now, &invite("c2", "1002"));
    let fwd = forwarded_invite(&mut p);
    feed(&mut p, now, &answer(&fwd, "180 Ringing"));
    feed(&mut p, now, &answer(&fwd, "200 OK"));
    feed(&mut p, now, &invite("c3", "999"));
    let s = p.snapshot();
    assert_eq!(s.call_attempts, 2);
    assert_eq!(
        (
            s.calls.busy,
            s.calls.answered,
            s.calls.rejected,
            s.calls.failed
        ),
        (1, 1, 1, 0),
        "{s:?}"
    );
    assert_eq!((s.dialogs_confirmed, s.dialogs_early), (1, 0));
    let calls = p.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].call_id, "c2");
    assert_eq!(calls[0].caller, "sip:2000@localhost");
    assert_eq!(calls[0].callee, "sip:1001@localhost");
    assert_eq!(calls[0].state, "confirmed");
}

#[test]
fn hangup_sends_bye_to_both_sides_and_cancels_a_ringing_call() {
    let mut p = proxy();
    let now = Instant::now();
    feed(&mut p, now, &invite("c1", "1001"));
    let fwd = forwarded_invite(&mut p);
    feed(&mut p, now, &answer(&fwd, "200 OK"));
    let _ = sent(&mut p);
    assert_eq!(p.hangup(now, "c1"), HangupOutcome::Bye);
    let byes: Vec<u16> = sent(&mut p)
        .into_iter()
        .filter(|(_, t)| t.starts_with("BYE "))
        .map(|(port, _)| port)
        .collect();
    assert_eq!(byes.len(), 2, "{byes:?}");
    assert!(byes.contains(&5070) && byes.contains(&5080));
    assert_eq!(p.snapshot().dialogs_confirmed, 0);
    assert_eq!(p.hangup(now, "c1"), HangupOutcome::NotFound);

    // Ringing: CANCEL toward the PBX.
    feed(&mut p, now, &invite("c2", "1002"));
    let fwd = forwarded_invite(&mut p);
    feed(&mut p, now, &answer(&fwd, "180 Ringing"));
    assert_eq!(p.calls()[0].state, "early");
    let _ = sent(&mut p);
    assert_eq!(p.hangup(now, "c2"), HangupOutcome::Cancelled);
    assert!(
        sent(&mut p)
            .iter()
            .any(|(port, t)| *port == 5080 && t.starts_with("CANCEL ")),
        "no CANCEL to the PBX"
    );
}

#[test]
fn draining_refuses_new_requests_but_not_dialogs() {
    let mut p = proxy();
    let now = Instant::now();
    feed(&mut p, now, &invite("c1", "1001"));
    let fwd = forwarded_invite(&mut p);
    feed(&mut p, now, &answer(&fwd, "200 OK"));
    let _ = sent(&mut p);
    p.set_draining(Some(30));
    assert!(p.snapshot().draining);
    feed(&mut p, now, &invite("c2", "1002"));
    let out = sent(&mut p);
    let refusal = out
        .iter()
        .find(|(port, t)| *port == 5070 && t.starts_with("SIP/2.0 503 "))
        .map(|(_, t)| t.clone())
        .expect("503 to the new INVITE");
    assert!(refusal.contains("Retry-After: 30"), "{refusal}");
    assert!(
        !out.iter().any(|(port, _)| *port == 5080),
        "nothing forwarded"
    );
    assert_eq!(p.snapshot().calls.rejected, 1);
    // The established call's BYE still goes through.
    let bye = format!(
        "BYE sip:pbx@{PBX} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKbye\r\nMax-Forwards: 70\r\nFrom: <sip:2000@localhost>;tag=ft\r\nTo: <sip:1001@localhost>;tag=pbx\r\nCall-ID: c1\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    );
    feed(&mut p, now, &bye);
    assert!(
        sent(&mut p)
            .iter()
            .any(|(port, t)| *port == 5080 && t.starts_with("BYE ")),
        "BYE forwarded during the drain"
    );
    assert_eq!(p.snapshot().dialogs_confirmed, 0);
}
