//! Sans-IO tests of the transaction layer on a virtual clock, fed with the
//! captured messages in /work/shared/fixtures/sip where they fit.

use std::time::{Duration, Instant};

use rtcgate::rsip::{self, Header, Method, Request, Response, prelude::*};
use rtcgate::transaction::{
    Absorbed, CancelTarget, ClientInviteState, ClientKey, Output, RequestDisposition,
    ResponseDisposition, ServerInviteState, ServerKey, ServerState, TransactionConfig,
    TransactionError, TransactionKey, TransactionLayer, TransactionState, build_cancel,
    make_response,
};

const FIXTURES: &str = "/work/shared/fixtures/sip";

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

fn req(name: &str) -> Request {
    Request::try_from(fixture(name)).unwrap()
}

fn resp(name: &str) -> Response {
    Response::try_from(fixture(name)).unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

type Layer = TransactionLayer<u32>;

fn layer() -> Layer {
    TransactionLayer::new(TransactionConfig::default())
}

fn drain(l: &mut Layer) -> Vec<Output<u32>> {
    std::iter::from_fn(|| l.poll_output()).collect()
}

fn transmits(outs: &[Output<u32>]) -> Vec<String> {
    outs.iter()
        .filter_map(|o| match o {
            Output::Transmit(t) => Some(String::from_utf8(t.data.to_vec()).unwrap()),
            _ => None,
        })
        .collect()
}

/// Runs the clock from `t0` to `t0 + until`, firing every deadline exactly
/// when due; returns (offset from t0, output) pairs.
fn run(l: &mut Layer, t0: Instant, until: Duration) -> Vec<(Duration, Output<u32>)> {
    let mut log = Vec::new();
    while let Some(t) = l.poll_timeout() {
        if t > t0 + until {
            break;
        }
        l.handle_timeout(t);
        for o in drain(l) {
            log.push((t - t0, o));
        }
    }
    log
}

fn transmit_times(log: &[(Duration, Output<u32>)]) -> Vec<Duration> {
    log.iter()
        .filter(|(_, o)| matches!(o, Output::Transmit(_)))
        .map(|(t, _)| *t)
        .collect()
}

fn secs(v: &[f64]) -> Vec<Duration> {
    v.iter().map(|s| Duration::from_secs_f64(*s)).collect()
}

fn deliver_key(d: ResponseDisposition) -> ClientKey {
    match d {
        ResponseDisposition::Deliver { key, .. } => key,
        other => panic!("expected Deliver, got {other:?}"),
    }
}

fn new_key(d: RequestDisposition) -> ServerKey {
    match d {
        RequestDisposition::New { key, .. } => key,
        other => panic!("expected New, got {other:?}"),
    }
}

/// A copy of `r` whose top Via branch is `branch` (and a single Via).
fn with_branch(r: &Request, branch: &str) -> Request {
    let mut r = r.clone();
    r.headers.retain(|h| !matches!(h, Header::Via(_)));
    r.headers
        .push_front(Header::Via(rsip::headers::Via::new(format!(
            "SIP/2.0/UDP 127.0.0.1:5160;branch={branch}"
        ))));
    r
}

// ---------------------------------------------------------------- client INVITE

#[test]
fn client_invite_timer_a_doubles_and_b_times_out() {
    let mut l = layer();
    let t0 = Instant::now();
    let key = l
        .send_request(t0, req("out-06_INVITE_proxy-to-pbx_udp.sip"), 7, false)
        .unwrap();
    let first = drain(&mut l);
    assert!(matches!(&first[..], [Output::Transmit(t)] if t.to == 7));
    let log = run(&mut l, t0, Duration::from_secs(200));
    // A: T1, 2T1, 4T1... from the first send, until B = 64*T1.
    assert_eq!(
        transmit_times(&log),
        secs(&[0.5, 1.5, 3.5, 7.5, 15.5, 31.5])
    );
    let tail: Vec<_> = log
        .iter()
        .filter(|(_, o)| !matches!(o, Output::Transmit(_)))
        .collect();
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[0], &(Duration::from_secs(32), Output::Timeout(key)));
    assert_eq!(
        tail[1],
        &(
            Duration::from_secs(32),
            Output::Terminated(TransactionKey::Client(key))
        )
    );
    // The retransmissions are the same bytes as the first send.
    let Output::Transmit(t) = &first[0] else {
        unreachable!()
    };
    assert!(log.iter().all(|(_, o)| match o {
        Output::Transmit(r) => r.data == t.data,
        _ => true,
    }));
    assert!(l.is_empty());
}

#[test]
fn client_invite_reliable_never_retransmits() {
    let mut l = layer();
    let t0 = Instant::now();
    let key = l
        .send_request(t0, req("out-06_INVITE_proxy-to-pbx_udp.sip"), 1, true)
        .unwrap();
    assert_eq!(transmits(&drain(&mut l)).len(), 1);
    let log = run(&mut l, t0, Duration::from_secs(200));
    assert!(transmit_times(&log).is_empty());
    assert_eq!(log[0], (Duration::from_secs(32), Output::Timeout(key)));
    assert!(l.is_empty());
}

#[test]
fn client_invite_provisionals_2xx_and_timer_m() {
    let mut l = layer();
    let t0 = Instant::now();
    let key = l
        .send_request(t0, req("out-06_INVITE_proxy-to-pbx_udp.sip"), 1, false)
        .unwrap();
    drain(&mut l);
    let t = t0 + ms(20);
    assert_eq!(
        deliver_key(
            l.handle_response(t, resp("out-07_100_pbx-to-proxy_udp.sip"))
                .unwrap()
        ),
        key
    );
    assert_eq!(
        l.state(TransactionKey::Client(key)),
        Some(TransactionState::ClientInvite(
            ClientInviteState::Proceeding
        ))
    );
    // Timer A stopped: nothing is sent any more; only timer C remains.
    assert_eq!(l.poll_timeout(), Some(t + Duration::from_secs(180)));
    assert_eq!(
        deliver_key(
            l.handle_response(t, resp("out-08_180_pbx-to-proxy_udp.sip"))
                .unwrap()
        ),
        key
    );
    // A retransmitted 180 is absorbed.
    assert_eq!(
        l.handle_response(t, resp("out-08_180_pbx-to-proxy_udp.sip"))
            .unwrap(),
        ResponseDisposition::Absorbed(key)
    );
    let t = t0 + ms(40);
    assert_eq!(
        deliver_key(
            l.handle_response(t, resp("out-10_200_pbx-to-proxy_udp.sip"))
                .unwrap()
        ),
        key
    );
    assert_eq!(
        l.state(TransactionKey::Client(key)),
        Some(TransactionState::ClientInvite(ClientInviteState::Accepted))
    );
    // 2xx retransmissions pass (RFC 6026), no ACK from the transaction.
    assert!(matches!(
        l.handle_response(t, resp("out-10_200_pbx-to-proxy_udp.sip")).unwrap(),
        ResponseDisposition::Forward2xx { key: k, .. } if k == key
    ));
    assert!(drain(&mut l).is_empty());
    // Timer M = 64*T1 after the 2xx.
    assert_eq!(l.poll_timeout(), Some(t + Duration::from_secs(32)));
    let log = run(&mut l, t0, Duration::from_secs(100));
    assert_eq!(
        log,
        vec![(ms(32_040), Output::Terminated(TransactionKey::Client(key)))]
    );
    assert!(l.is_empty());
}

#[test]
fn client_invite_non2xx_is_acked_by_the_transaction() {
    let mut invite = req("out-06_INVITE_proxy-to-pbx_udp.sip");
    invite.headers.push(Header::Route(rsip::headers::Route::new(
        "<sip:pbx.example.com;lr>",
    )));
    let busy = make_response(&invite, 486, None, Some("pbx-tag"));
    let mut l = layer();
    let t0 = Instant::now();
    let key = l.send_request(t0, invite.clone(), 1, false).unwrap();
    drain(&mut l);
    assert_eq!(
        deliver_key(l.handle_response(t0 + ms(10), busy.clone()).unwrap()),
        key
    );
    let sent = transmits(&drain(&mut l));
    assert_eq!(sent.len(), 1);
    let ack = Request::try_from(sent[0].as_str()).unwrap();
    assert_eq!(ack.method, Method::Ack);
    assert_eq!(ack.uri, invite.uri);
    assert_eq!(ack.cseq_header().unwrap().value(), "2 ACK");
    assert_eq!(
        ack.to_header().unwrap().value(),
        "<sip:1001@127.0.0.1>;tag=pbx-tag"
    );
    assert_eq!(
        ack.via_header().unwrap().value(),
        "SIP/2.0/UDP 127.0.0.1:5160;branch=z9hG4bK061a.c62ca69a533922c4ed1d77a0767302d9.0"
    );
    assert_eq!(ack.route_headers().len(), 1);
    // A retransmitted final is absorbed and re-ACKed with the same bytes.
    assert_eq!(
        l.handle_response(t0 + ms(600), busy).unwrap(),
        ResponseDisposition::Absorbed(key)
    );
    assert_eq!(transmits(&drain(&mut l)), sent);
    // Timer D: 32 s, no retransmission of the INVITE any more.
    let log = run(&mut l, t0, Duration::from_secs(100));
    assert_eq!(
        log,
        vec![(ms(32_010), Output::Terminated(TransactionKey::Client(key)))]
    );
}

#[test]
fn client_invite_reliable_non2xx_terminates_at_once() {
    let invite = req("out-06_INVITE_proxy-to-pbx_udp.sip");
    let mut l = layer();
    let t0 = Instant::now();
    let key = l.send_request(t0, invite.clone(), 1, true).unwrap();
    drain(&mut l);
    l.handle_response(t0, make_response(&invite, 503, None, Some("x")))
        .unwrap();
    let outs = drain(&mut l);
    assert_eq!(transmits(&outs).len(), 1, "the ACK");
    assert_eq!(
        outs.last(),
        Some(&Output::Terminated(TransactionKey::Client(key)))
    );
    assert!(l.is_empty());
}

#[test]
fn timer_c_restarts_on_provisionals_then_guards_the_cancel() {
    let invite = req("out-06_INVITE_proxy-to-pbx_udp.sip");
    let mut l = layer();
    let t0 = Instant::now();
    let key = l.send_request(t0, invite.clone(), 1, false).unwrap();
    drain(&mut l);
    l.handle_response(
        t0 + Duration::from_secs(1),
        resp("out-08_180_pbx-to-proxy_udp.sip"),
    )
    .unwrap();
    assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(181)));
    // The same 180 again (a UAS refreshing it, §13.3.1.1): absorbed, but C restarts.
    assert_eq!(
        l.handle_response(
            t0 + Duration::from_secs(100),
            resp("out-08_180_pbx-to-proxy_udp.sip")
        )
        .unwrap(),
        ResponseDisposition::Absorbed(key)
    );
    assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(280)));
    let log = run(&mut l, t0, Duration::from_secs(1000));
    assert_eq!(
        log,
        vec![
            (Duration::from_secs(280), Output::TimerC(key)),
            (Duration::from_secs(312), Output::Timeout(key)),
            (
                Duration::from_secs(312),
                Output::Terminated(TransactionKey::Client(key))
            ),
        ]
    );
}

#[test]
fn timer_c_then_487_ends_normally() {
    let invite = req("out-06_INVITE_proxy-to-pbx_udp.sip");
    let mut l = layer();
    let t0 = Instant::now();
    let key = l.send_request(t0, invite.clone(), 1, true).unwrap();
    l.handle_response(t0, resp("out-08_180_pbx-to-proxy_udp.sip"))
        .unwrap();
    drain(&mut l);
    let log = run(&mut l, t0, Duration::from_secs(181));
    assert_eq!(log, vec![(Duration::from_secs(180), Output::TimerC(key))]);
    // The proxy builds the CANCEL from the stored INVITE.
    let cancel = build_cancel(l.client_request(key).unwrap()).unwrap();
    let ckey = l
        .send_request(t0 + Duration::from_secs(180), cancel.clone(), 1, true)
        .unwrap();
    assert_ne!(ckey, key);
    let t = t0 + Duration::from_secs(181);
    deliver_key(
        l.handle_response(t, make_response(&cancel, 200, None, Some("x")))
            .unwrap(),
    );
    deliver_key(
        l.handle_response(t, make_response(&invite, 487, None, Some("x")))
            .unwrap(),
    );
    drain(&mut l);
    assert!(l.is_empty());
}

// ---------------------------------------------------------------- client non-INVITE

#[test]
fn client_non_invite_timer_e_caps_at_t2_and_f_times_out() {
    let mut l = layer();
    let t0 = Instant::now();
    let key = l
        .send_request(t0, req("out-15_BYE_proxy-to-pbx_udp.sip"), 1, false)
        .unwrap();
    drain(&mut l);
    let log = run(&mut l, t0, Duration::from_secs(100));
    assert_eq!(
        transmit_times(&log),
        secs(&[0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5])
    );
    let rest: Vec<_> = log
        .into_iter()
        .filter(|(_, o)| !matches!(o, Output::Transmit(_)))
        .collect();
    assert_eq!(
        rest,
        vec![
            (Duration::from_secs(32), Output::Timeout(key)),
            (
                Duration::from_secs(32),
                Output::Terminated(TransactionKey::Client(key))
            ),
        ]
    );
}

#[test]
fn client_non_invite_uses_t2_after_a_provisional_then_k() {
    let bye = req("out-15_BYE_proxy-to-pbx_udp.sip");
    let mut l = layer();
    let t0 = Instant::now();
    let key = l.send_request(t0, bye.clone(), 1, false).unwrap();
    drain(&mut l);
    let mut log = run(&mut l, t0, ms(700)); // one retransmission at 0.5 s
    deliver_key(
        l.handle_response(t0 + ms(700), make_response(&bye, 100, None, None))
            .unwrap(),
    );
    log.extend(run(&mut l, t0, ms(10_000)));
    // E armed at 0.5 s for 1 s fires at 1.5 s, then every T2.
    assert_eq!(transmit_times(&log), secs(&[0.5, 1.5, 5.5, 9.5]));
    let t = t0 + Duration::from_secs(10);
    deliver_key(
        l.handle_response(t, resp("out-16_200-BYE_pbx-to-proxy_udp.sip"))
            .unwrap(),
    );
    // The final's retransmission is absorbed.
    assert_eq!(
        l.handle_response(t, resp("out-16_200-BYE_pbx-to-proxy_udp.sip"))
            .unwrap(),
        ResponseDisposition::Absorbed(key)
    );
    // Timer K = T4.
    let log = run(&mut l, t0, Duration::from_secs(100));
    assert_eq!(
        log,
        vec![(
            Duration::from_secs(15),
            Output::Terminated(TransactionKey::Client(key))
        )]
    );
}

#[test]
fn client_non_invite_reliable() {
    let mut l = layer();
    let t0 = Instant::now();
    let key = l
        .send_request(t0, req("out-15_BYE_proxy-to-pbx_udp.sip"), 1, true)
        .unwrap();
    drain(&mut l);
    assert_eq!(
        l.poll_timeout(),
        Some(t0 + Duration::from_secs(32)),
        "only F"
    );
    deliver_key(
        l.handle_response(t0, resp("out-16_200-BYE_pbx-to-proxy_udp.sip"))
            .unwrap(),
    );
    assert_eq!(
        drain(&mut l),
        vec![Output::Terminated(TransactionKey::Client(key))]
    );
    assert_eq!(l.poll_timeout(), None);
}

// ---------------------------------------------------------------- server INVITE

#[test]
fn server_invite_trying_retransmission_g_and_h() {
    let invite = req("in-01_INVITE_caller-to-proxy_udp.sip");
    let mut l = layer();
    let t0 = Instant::now();
    let key = new_key(l.handle_request(t0, invite.clone(), 9, false).unwrap());
    let outs = drain(&mut l);
    let sent = transmits(&outs);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].starts_with("SIP/2.0 100 Trying\r\n"), "{}", sent[0]);
    assert!(sent[0].contains("branch=z9hG4bK-15110-1-0"));
    assert!(matches!(&outs[0], Output::Transmit(t) if t.to == 9));
    // Retransmitted INVITE: absorbed, 100 re-sent.
    assert_eq!(
        l.handle_request(t0 + ms(500), invite.clone(), 9, false)
            .unwrap(),
        RequestDisposition::Absorbed(Absorbed::Retransmission)
    );
    assert_eq!(transmits(&drain(&mut l)), sent);
    // A final: 486 with a custom reason phrase.
    let t = t0 + Duration::from_secs(1);
    let busy = make_response(&invite, 486, Some("Busy Right Now"), Some("gw1"));
    l.send_response(t, &key, &busy).unwrap();
    let fin = transmits(&drain(&mut l));
    assert!(fin[0].starts_with("SIP/2.0 486 Busy Right Now\r\n"));
    // Retransmitted INVITE now re-sends the final.
    l.handle_request(t + ms(100), invite, 9, false).unwrap();
    assert_eq!(transmits(&drain(&mut l)), fin);
    // No more responses allowed.
    assert!(matches!(
        l.send_response(t, &key, &make_response(&busy_req(), 200, None, None)),
        Err(TransactionError::InvalidState { status: 200, .. })
    ));
    // G: T1 doubling capped at T2; H at 64*T1 -> AckTimeout.
    let log = run(&mut l, t, Duration::from_secs(100));
    assert_eq!(
        transmit_times(&log),
        secs(&[0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5])
    );
    let rest: Vec<_> = log
        .into_iter()
        .filter(|(_, o)| !matches!(o, Output::Transmit(_)))
        .collect();
    assert_eq!(
        rest,
        vec![
            (Duration::from_secs(32), Output::AckTimeout(key)),
            (
                Duration::from_secs(32),
                Output::Terminated(TransactionKey::Server(key))
            ),
        ]
    );
    assert!(l.is_empty());
}

fn busy_req() -> Request {
    req("in-01_INVITE_caller-to-proxy_udp.sip")
}

#[test]
fn server_invite_ack_for_non2xx_is_absorbed_udp_then_timer_i() {
    // The browser's INVITE, our 407, its ACK (captured), as if over UDP.
    let mut l = layer();
    let t0 = Instant::now();
    let key = new_key(
        l.handle_request(t0, req("out-01_INVITE_browser-to-proxy_ws.sip"), 3, false)
            .unwrap(),
    );
    l.send_response(t0, &key, &resp("out-02_407_proxy-to-browser_ws.sip"))
        .unwrap();
    drain(&mut l);
    let t = t0 + ms(30);
    assert_eq!(
        l.handle_request(t, req("out-03_ACK-407_browser-to-proxy_ws.sip"), 3, false)
            .unwrap(),
        RequestDisposition::Absorbed(Absorbed::Ack)
    );
    assert_eq!(
        l.state(TransactionKey::Server(key)),
        Some(TransactionState::ServerInvite(ServerInviteState::Confirmed))
    );
    // Retransmitted ACK: absorbed too. G stopped: no more 407s.
    assert_eq!(
        l.handle_request(t, req("out-03_ACK-407_browser-to-proxy_ws.sip"), 3, false)
            .unwrap(),
        RequestDisposition::Absorbed(Absorbed::Ack)
    );
    let log = run(&mut l, t0, Duration::from_secs(100));
    assert_eq!(
        log,
        vec![(ms(5_030), Output::Terminated(TransactionKey::Server(key)))]
    );
}

#[test]
fn server_invite_over_ws_terminates_on_ack() {
    let mut l = layer();
    let t0 = Instant::now();
    let key = new_key(
        l.handle_request(t0, req("out-01_INVITE_browser-to-proxy_ws.sip"), 3, true)
            .unwrap(),
    );
    l.send_response(t0, &key, &resp("out-02_407_proxy-to-browser_ws.sip"))
        .unwrap();
    assert_eq!(transmits(&drain(&mut l)).len(), 2, "100 and 407");
    // Reliable: no G, only H.
    assert_eq!(l.poll_timeout(), Some(t0 + Duration::from_secs(32)));
    l.handle_request(t0, req("out-03_ACK-407_browser-to-proxy_ws.sip"), 3, true)
        .unwrap();
    assert_eq!(
        drain(&mut l),
        vec![Output::Terminated(TransactionKey::Server(key))]
    );
    assert!(l.is_empty());
    assert_eq!(l.poll_timeout(), None);
    // A late ACK retransmission now matches nothing.
    assert!(matches!(
        l.handle_request(t0, req("out-03_ACK-407_browser-to-proxy_ws.sip"), 3, true)
            .unwrap(),
        RequestDisposition::StrayAck { invite: None, .. }
    ));
}

#[test]
fn server_invite_2xx_accepted_then_timer_l() {
    let invite = req("in-01_INVITE_caller-to-proxy_udp.sip");
    let mut l = layer();
    let t0 = Instant::now();
    let key = new_key(l.handle_request(t0, invite.clone(), 9, false).unwrap());
    l.send_response(t0, &key, &resp("in-08_200_proxy-to-caller_udp.sip"))
        .unwrap();
    drain(&mut l);
    assert_eq!(
        l.state(TransactionKey::Server(key)),
        Some(TransactionState::ServerInvite(ServerInviteState::Accepted))
    );
    // INVITE retransmission: absorbed, nothing re-sent (the UAS core owns 2xx
    // retransmission).
    assert_eq!(
        l.handle_request(t0 + ms(10), invite.clone(), 9, false)
            .unwrap(),
        RequestDisposition::Absorbed(Absorbed::Retransmission)
    );
    assert!(drain(&mut l).is_empty());
    // The caller's ACK for the 2xx has its own branch: stray, forward it.
    assert!(matches!(
        l.handle_request(
            t0 + ms(20),
            req("in-09_ACK_caller-to-proxy_udp.sip"),
            9,
            false
        )
        .unwrap(),
        RequestDisposition::StrayAck { invite: None, .. }
    ));
    // An ACK reusing the INVITE branch matches the Accepted transaction: still passed on.
    let mut ack = invite.clone();
    ack.method = Method::Ack;
    ack.headers.retain(|h| !matches!(h, Header::CSeq(_)));
    ack.headers
        .push(Header::CSeq(rsip::headers::CSeq::new("1 ACK")));
    assert!(matches!(
        l.handle_request(t0 + ms(20), ack, 9, false).unwrap(),
        RequestDisposition::StrayAck { invite: Some(k), .. } if k == key
    ));
    // A retransmitted 2xx from downstream is passed through the transaction.
    l.send_response(
        t0 + ms(500),
        &key,
        &resp("in-08_200_proxy-to-caller_udp.sip"),
    )
    .unwrap();
    assert_eq!(transmits(&drain(&mut l)).len(), 1);
    // A non-2xx now is a TU bug.
    assert!(
        l.send_response(t0, &key, &make_response(&invite, 500, None, None))
            .is_err()
    );
    let log = run(&mut l, t0, Duration::from_secs(100));
    assert_eq!(
        log,
        vec![(
            Duration::from_secs(32),
            Output::Terminated(TransactionKey::Server(key))
        )]
    );
}

#[test]
fn server_invite_without_trying_when_configured() {
    let mut l: Layer = TransactionLayer::new(TransactionConfig {
        send_trying: false,
        ..Default::default()
    });
    let t0 = Instant::now();
    new_key(l.handle_request(t0, busy_req(), 9, false).unwrap());
    assert!(drain(&mut l).is_empty());
}

// ---------------------------------------------------------------- server non-INVITE

#[test]
fn server_non_invite_absorbs_and_resends_then_timer_j() {
    let register = req("reg-01_REGISTER_browser-to-proxy_ws.sip");
    let mut l = layer();
    let t0 = Instant::now();
    let key = new_key(l.handle_request(t0, register.clone(), 4, false).unwrap());
    assert!(drain(&mut l).is_empty(), "no 100 for non-INVITE");
    // Retransmission before any response: absorbed silently.
    assert_eq!(
        l.handle_request(t0 + ms(500), register.clone(), 4, false)
            .unwrap(),
        RequestDisposition::Absorbed(Absorbed::Retransmission)
    );
    assert!(drain(&mut l).is_empty());
    l.send_response(
        t0 + ms(600),
        &key,
        &resp("reg-02_401_proxy-to-browser_ws.sip"),
    )
    .unwrap();
    let fin = transmits(&drain(&mut l));
    assert_eq!(fin.len(), 1);
    assert_eq!(
        fin[0].as_bytes(),
        &fixture("reg-02_401_proxy-to-browser_ws.sip")[..]
    );
    l.handle_request(t0 + ms(1500), register, 4, false).unwrap();
    assert_eq!(transmits(&drain(&mut l)), fin);
    assert_eq!(
        l.state(TransactionKey::Server(key)),
        Some(TransactionState::Server(ServerState::Completed))
    );
    assert!(matches!(
        l.send_response(t0, &key, &resp("reg-02_401_proxy-to-browser_ws.sip")),
        Err(TransactionError::InvalidState {
            status: 401,
            state: "Completed"
        })
    ));
    let log = run(&mut l, t0, Duration::from_secs(100));
    assert_eq!(
        log,
        vec![(ms(32_600), Output::Terminated(TransactionKey::Server(key)))]
    );
}

#[test]
fn server_non_invite_reliable_ends_with_the_final() {
    let mut l = layer();
    let t0 = Instant::now();
    let key = new_key(
        l.handle_request(t0, req("reg-01_REGISTER_browser-to-proxy_ws.sip"), 4, true)
            .unwrap(),
    );
    l.send_response(t0, &key, &resp("reg-02_401_proxy-to-browser_ws.sip"))
        .unwrap();
    let outs = drain(&mut l);
    assert_eq!(outs.len(), 2);
    assert_eq!(outs[1], Output::Terminated(TransactionKey::Server(key)));
    assert_eq!(
        l.send_response(t0, &key, &resp("reg-02_401_proxy-to-browser_ws.sip")),
        Err(TransactionError::UnknownTransaction)
    );
}

#[test]
fn server_guard_drops_a_transaction_the_tu_forgot() {
    let mut l = layer();
    let t0 = Instant::now();
    let key = new_key(
        l.handle_request(t0, req("reg-01_REGISTER_browser-to-proxy_ws.sip"), 4, true)
            .unwrap(),
    );
    let log = run(&mut l, t0, Duration::from_secs(100));
    assert_eq!(
        log,
        vec![(
            Duration::from_secs(37),
            Output::Terminated(TransactionKey::Server(key))
        )]
    );
}

// ---------------------------------------------------------------- CANCEL

#[test]
fn cancel_matches_its_invite() {
    let invite = req("in-01_INVITE_caller-to-proxy_udp.sip");
    let mut l = layer();
    let t0 = Instant::now();
    let ikey = new_key(l.handle_request(t0, invite.clone(), 9, false).unwrap());
    let cancel = build_cancel(&invite).unwrap();
    let ckey = match l.handle_request(t0, cancel.clone(), 9, false).unwrap() {
        RequestDisposition::Cancel {
            key,
            target,
            request,
        } => {
            assert_eq!(target, CancelTarget::Pending(ikey));
            assert_eq!(request.method, Method::Cancel);
            key
        }
        other => panic!("{other:?}"),
    };
    assert_ne!(ckey, ikey);
    // CANCEL retransmission: absorbed by the CANCEL's own transaction.
    assert_eq!(
        l.handle_request(t0, cancel.clone(), 9, false).unwrap(),
        RequestDisposition::Absorbed(Absorbed::Retransmission)
    );
    l.send_response(t0, &ckey, &make_response(&cancel, 200, None, Some("gw")))
        .unwrap();
    l.send_response(t0, &ikey, &make_response(&invite, 487, None, Some("gw")))
        .unwrap();
    drain(&mut l);
    // A CANCEL with another branch matches nothing -> 481.
    let other = build_cancel(&with_branch(&invite, "z9hG4bKother")).unwrap();
    assert!(matches!(
        l.handle_request(t0, other, 9, false).unwrap(),
        RequestDisposition::Cancel {
            target: CancelTarget::NoMatch,
            ..
        }
    ));
}

#[test]
fn cancel_after_final_is_answered_only() {
    let invite = req("in-01_INVITE_caller-to-proxy_udp.sip");
    let mut l = layer();
    let t0 = Instant::now();
    let ikey = new_key(l.handle_request(t0, invite.clone(), 9, false).unwrap());
    l.send_response(t0, &ikey, &resp("in-08_200_proxy-to-caller_udp.sip"))
        .unwrap();
    assert!(matches!(
        l.handle_request(t0, build_cancel(&invite).unwrap(), 9, false).unwrap(),
        RequestDisposition::Cancel { target: CancelTarget::Answered(k), .. } if k == ikey
    ));
}

// ---------------------------------------------------------------- stray, errors, legacy

#[test]
fn stray_response_and_ack() {
    let mut l = layer();
    let t0 = Instant::now();
    assert!(matches!(
        l.handle_response(t0, resp("out-10_200_pbx-to-proxy_udp.sip"))
            .unwrap(),
        ResponseDisposition::Stray(_)
    ));
    assert!(matches!(
        l.handle_request(t0, req("out-12_ACK_browser-to-proxy_ws.sip"), 1, true)
            .unwrap(),
        RequestDisposition::StrayAck { invite: None, .. }
    ));
    // The CSeq method is part of the client key: a 200 to a CANCEL does not
    // match the INVITE with the same branch.
    let invite = req("out-06_INVITE_proxy-to-pbx_udp.sip");
    l.send_request(t0, invite.clone(), 1, false).unwrap();
    let cancel = build_cancel(&invite).unwrap();
    assert!(matches!(
        l.handle_response(t0, make_response(&cancel, 200, None, None))
            .unwrap(),
        ResponseDisposition::Stray(_)
    ));
}

#[test]
fn malformed_messages_are_typed_errors() {
    let mut l = layer();
    let t0 = Instant::now();
    let base = busy_req();
    let strip = |f: fn(&Header) -> bool| {
        let mut r = base.clone();
        r.headers.retain(|h| !f(h));
        r
    };
    let cases: Vec<(Request, TransactionError)> = vec![
        (
            strip(|h| matches!(h, Header::Via(_))),
            TransactionError::MissingVia,
        ),
        (
            strip(|h| matches!(h, Header::CSeq(_))),
            TransactionError::MissingCSeq,
        ),
        (
            strip(|h| matches!(h, Header::CallId(_))),
            TransactionError::MissingCallId,
        ),
        (
            {
                let mut r = strip(|h| matches!(h, Header::Via(_)));
                r.headers
                    .push(Header::Via(rsip::headers::Via::new("SIP/2.0/UDP host")));
                r
            },
            TransactionError::MissingBranch,
        ),
        (
            {
                let mut r = strip(|h| matches!(h, Header::Via(_)));
                r.headers
                    .push(Header::Via(rsip::headers::Via::new("nonsense")));
                r
            },
            TransactionError::MalformedVia,
        ),
        (
            {
                let mut r = strip(|h| matches!(h, Header::CSeq(_)));
                r.headers
                    .push(Header::CSeq(rsip::headers::CSeq::new("1 BYE")));
                r
            },
            TransactionError::CSeqMethodMismatch,
        ),
        (
            {
                let mut r = strip(|h| matches!(h, Header::CSeq(_)));
                r.headers
                    .push(Header::CSeq(rsip::headers::CSeq::new("x INVITE")));
                r
            },
            TransactionError::MalformedCSeq,
        ),
    ];
    for (r, want) in cases {
        assert_eq!(l.handle_request(t0, r.clone(), 1, false), Err(want.clone()));
        assert_eq!(l.send_request(t0, r, 1, false), Err(want));
    }
    let mut resp = resp("out-10_200_pbx-to-proxy_udp.sip");
    resp.headers.retain(|h| !matches!(h, Header::Via(_)));
    assert_eq!(
        l.handle_response(t0, resp),
        Err(TransactionError::MissingVia)
    );
    // Our own requests must use RFC 3261 branches; ACK is not a transaction.
    assert_eq!(
        l.send_request(t0, with_branch(&base, "legacy1"), 1, false),
        Err(TransactionError::BranchNotRfc3261)
    );
    assert_eq!(
        l.send_request(t0, req("out-13_ACK_proxy-to-pbx_udp.sip"), 1, false),
        Err(TransactionError::AckNotTransaction)
    );
    let ok = req("out-06_INVITE_proxy-to-pbx_udp.sip");
    l.send_request(t0, ok.clone(), 1, false).unwrap();
    assert_eq!(
        l.send_request(t0, ok, 1, false),
        Err(TransactionError::Duplicate)
    );
    assert_eq!(l.len(), 1);
}

#[test]
fn rfc4475_torture_messages_never_panic() {
    let mut l = layer();
    let t0 = Instant::now();
    let mut parsed = 0;
    for entry in std::fs::read_dir("/work/shared/rfc4475").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("dat") {
            continue;
        }
        let Ok(msg) = rsip::SipMessage::try_from(std::fs::read(&path).unwrap()) else {
            continue;
        };
        parsed += 1;
        match msg {
            rsip::SipMessage::Request(r) => {
                let _ = l.handle_request(t0, r.clone(), 1, false);
                let _ = l.send_request(t0, r, 1, false);
            }
            rsip::SipMessage::Response(r) => {
                let _ = l.handle_response(t0, r);
            }
        }
    }
    assert!(parsed > 10, "only {parsed} torture messages parsed");
    run(&mut l, t0, Duration::from_secs(1000));
    drain(&mut l);
    assert!(l.is_empty());
}

#[test]
fn table_cap_is_a_typed_error() {
    let mut l: Layer = TransactionLayer::new(TransactionConfig {
        max_transactions: 2,
        ..Default::default()
    });
    let t0 = Instant::now();
    let invite = busy_req();
    l.handle_request(t0, with_branch(&invite, "z9hG4bK1"), 1, false)
        .unwrap();
    l.handle_request(t0, with_branch(&invite, "z9hG4bK2"), 1, false)
        .unwrap();
    assert_eq!(
        l.handle_request(t0, with_branch(&invite, "z9hG4bK3"), 1, false),
        Err(TransactionError::TableFull(2))
    );
    // Retransmissions of existing transactions still work.
    assert_eq!(
        l.handle_request(t0, with_branch(&invite, "z9hG4bK1"), 1, false)
            .unwrap(),
        RequestDisposition::Absorbed(Absorbed::Retransmission)
    );
}

#[test]
fn rfc2543_fallback_matches_retransmission_and_ack() {
    let invite = with_branch(&busy_req(), "oldstyle-1");
    let mut l = layer();
    let t0 = Instant::now();
    let key = new_key(l.handle_request(t0, invite.clone(), 1, false).unwrap());
    assert_eq!(
        l.handle_request(t0, invite.clone(), 1, false).unwrap(),
        RequestDisposition::Absorbed(Absorbed::Retransmission)
    );
    let busy = make_response(&invite, 486, None, Some("t"));
    l.send_response(t0, &key, &busy).unwrap();
    let mut ack = rtcgate::transaction::build_ack_for_non2xx(&invite, &busy).unwrap();
    // The legacy UA keeps its whole Via (branch without the cookie).
    ack.headers.retain(|h| !matches!(h, Header::Via(_)));
    ack.headers.push_front(
        invite
            .headers
            .iter()
            .find(|h| matches!(h, Header::Via(_)))
            .unwrap()
            .clone(),
    );
    assert_eq!(
        l.handle_request(t0, ack, 1, false).unwrap(),
        RequestDisposition::Absorbed(Absorbed::Ack)
    );
    // A different CSeq is a different transaction.
    let mut other = invite.clone();
    other.headers.retain(|h| !matches!(h, Header::CSeq(_)));
    other
        .headers
        .push(Header::CSeq(rsip::headers::CSeq::new("2 INVITE")));
    new_key(l.handle_request(t0, other, 1, false).unwrap());
}

#[test]
fn transport_error_ends_a_client_transaction() {
    let mut l = layer();
    let t0 = Instant::now();
    let key = l
        .send_request(t0, req("out-06_INVITE_proxy-to-pbx_udp.sip"), 1, false)
        .unwrap();
    drain(&mut l);
    l.handle_transport_error(key);
    assert_eq!(
        drain(&mut l),
        vec![
            Output::Timeout(key),
            Output::Terminated(TransactionKey::Client(key))
        ]
    );
    assert_eq!(l.poll_timeout(), None);
}
