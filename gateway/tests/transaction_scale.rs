//! The transaction table at scale: 10k mixed transactions on a virtual clock
//! (deadline ordering, everything terminates), and an ignored throughput
//! benchmark (`cargo test -p rtcgate --test transaction_scale -- --ignored
//! --nocapture`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rtcgate::rsip::{self, Header, Request, Response};
use rtcgate::transaction::{
    Output, RequestDisposition, ResponseDisposition, ServerKey, TransactionConfig,
    TransactionLayer, build_ack_for_non2xx, make_response,
};

fn req(name: &str) -> Request {
    Request::try_from(std::fs::read(format!("/work/shared/fixtures/sip/{name}")).unwrap()).unwrap()
}

fn with_branch(r: &Request, branch: &str) -> Request {
    let mut r = r.clone();
    r.headers.retain(|h| !matches!(h, Header::Via(_)));
    r.headers
        .push_front(Header::Via(rsip::headers::Via::new(format!(
            "SIP/2.0/UDP 10.1.2.3:5060;branch={branch}"
        ))));
    r
}

/// Deterministic pseudo-random numbers (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Something the far end or the TU does at a given time.
enum Ext {
    StartClient(Request, bool),
    Response(Response),
    Request(Request, bool),
    Answer(usize, Response),
}

#[test]
fn ten_thousand_mixed_transactions_all_terminate_in_deadline_order() {
    const N: usize = 10_000;
    let invite_out = req("out-06_INVITE_proxy-to-pbx_udp.sip");
    let bye_out = req("out-15_BYE_proxy-to-pbx_udp.sip");
    let invite_in = req("in-01_INVITE_caller-to-proxy_udp.sip");
    let register_in = req("reg-01_REGISTER_browser-to-proxy_ws.sip");

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let t0 = Instant::now();
    // (time, seq) -> event; seq keeps insertion order for equal times.
    let mut events: BTreeMap<(Duration, usize), Ext> = BTreeMap::new();
    let mut seq = 0usize;
    let mut at = |events: &mut BTreeMap<(Duration, usize), Ext>, t: Duration, e: Ext| {
        seq += 1;
        events.insert((t, seq), e);
    };
    for i in 0..N {
        let start = Duration::from_millis(i as u64 * 3);
        let reliable = rng.below(3) == 0;
        let branch = format!("z9hG4bK-scale-{i}");
        let later = |rng: &mut Rng| start + Duration::from_millis(10 + rng.below(5_000));
        match i % 4 {
            0 => {
                let r = with_branch(&invite_out, &branch);
                at(&mut events, start, Ext::StartClient(r.clone(), reliable));
                match rng.below(4) {
                    0 => {} // no answer: timer B
                    1 => {
                        let t = later(&mut rng);
                        at(
                            &mut events,
                            t,
                            Ext::Response(make_response(&r, 180, None, Some("u"))),
                        );
                        at(
                            &mut events,
                            t + Duration::from_millis(5),
                            Ext::Response(make_response(&r, 486, None, Some("u"))),
                        );
                    }
                    _ => {
                        let t = later(&mut rng);
                        at(
                            &mut events,
                            t,
                            Ext::Response(make_response(&r, 200, None, Some("u"))),
                        );
                        at(
                            &mut events,
                            t + Duration::from_millis(500),
                            Ext::Response(make_response(&r, 200, None, Some("u"))),
                        );
                    }
                }
            }
            1 => {
                let r = with_branch(&bye_out, &branch);
                at(&mut events, start, Ext::StartClient(r.clone(), reliable));
                if rng.below(5) != 0 {
                    let t = later(&mut rng);
                    at(
                        &mut events,
                        t,
                        Ext::Response(make_response(&r, 200, None, None)),
                    );
                }
            }
            2 => {
                let r = with_branch(&invite_in, &branch);
                at(&mut events, start, Ext::Request(r.clone(), reliable));
                let t = later(&mut rng);
                if rng.below(2) == 0 {
                    at(
                        &mut events,
                        t,
                        Ext::Answer(i, make_response(&r, 200, None, Some("g"))),
                    );
                } else {
                    let busy = make_response(&r, 486, None, Some("g"));
                    at(&mut events, t, Ext::Answer(i, busy.clone()));
                    if rng.below(3) != 0 {
                        let ack = build_ack_for_non2xx(&r, &busy).unwrap();
                        at(
                            &mut events,
                            t + Duration::from_millis(50),
                            Ext::Request(ack, reliable),
                        );
                    } // else: timer H
                }
            }
            _ => {
                let r = with_branch(&register_in, &branch);
                at(&mut events, start, Ext::Request(r.clone(), reliable));
                at(
                    &mut events,
                    later(&mut rng),
                    Ext::Answer(i, make_response(&r, 200, None, Some("g"))),
                );
                // A retransmission after the answer (only UDP retransmits).
                if !reliable {
                    at(
                        &mut events,
                        start + Duration::from_millis(6_000),
                        Ext::Request(r, reliable),
                    );
                }
            }
        }
    }

    let mut l: TransactionLayer<usize> = TransactionLayer::new(TransactionConfig::default());
    let mut server_keys: Vec<Option<ServerKey>> = vec![None; N];
    let mut created = 0usize;
    let mut terminated = 0usize;
    let mut max_live = 0usize;
    let mut last_fired = t0;
    let drain = |l: &mut TransactionLayer<usize>, terminated: &mut usize| {
        while let Some(o) = l.poll_output() {
            if matches!(o, Output::Terminated(_)) {
                *terminated += 1;
            }
        }
    };
    loop {
        let next_event = events.keys().next().map(|(t, _)| t0 + *t);
        let next_timer = l.poll_timeout();
        match (next_event, next_timer) {
            (None, None) => break,
            (ev, Some(tt)) if ev.is_none_or(|e| tt < e) => {
                // Deadlines come out in non-decreasing order...
                assert!(tt >= last_fired, "poll_timeout went back in time");
                last_fired = tt;
                l.handle_timeout(tt);
                // ...and handling a time fires everything due by then.
                assert!(l.poll_timeout().is_none_or(|n| n > tt));
                drain(&mut l, &mut terminated);
            }
            _ => {
                let Some(((t, _), ext)) = events.pop_first() else {
                    break;
                };
                let now = t0 + t;
                match ext {
                    Ext::StartClient(r, reliable) => {
                        l.send_request(now, r, 0, reliable).unwrap();
                        created += 1;
                    }
                    Ext::Response(r) => {
                        let _ = l.handle_response(now, r).unwrap();
                    }
                    Ext::Request(r, reliable) => {
                        let i = r
                            .headers
                            .iter()
                            .find_map(|h| match h {
                                Header::Via(v) => {
                                    v.value().rsplit('-').next().map(|s| s.to_owned())
                                }
                                _ => None,
                            })
                            .and_then(|s| s.parse::<usize>().ok())
                            .unwrap();
                        if let RequestDisposition::New { key, .. } =
                            l.handle_request(now, r, 1, reliable).unwrap()
                        {
                            server_keys[i] = Some(key);
                            created += 1;
                        }
                    }
                    Ext::Answer(i, resp) => {
                        let key = server_keys[i].unwrap();
                        l.send_response(now, &key, &resp).unwrap();
                    }
                }
                drain(&mut l, &mut terminated);
            }
        }
        max_live = max_live.max(l.len());
    }
    assert_eq!(created, N);
    assert_eq!(terminated, N, "every transaction reports Terminated once");
    assert!(l.is_empty());
    assert_eq!(l.poll_timeout(), None);
    assert!(
        max_live > 1_000,
        "the run overlapped transactions ({max_live})"
    );
    println!("10k run: peak {max_live} live transactions");
}

#[test]
#[ignore = "benchmark; run with --ignored --nocapture (ideally --release)"]
fn bench_transactions_per_second() {
    const N: usize = 100_000;
    let register = req("reg-01_REGISTER_browser-to-proxy_ws.sip");
    let bye = req("out-15_BYE_proxy-to-pbx_udp.sip");
    let invite = req("in-01_INVITE_caller-to-proxy_udp.sip");

    let run = |label: &str,
               reqs: Vec<Request>,
               f: &mut dyn FnMut(&mut TransactionLayer<u32>, Instant, Request)| {
        let mut l: TransactionLayer<u32> = TransactionLayer::new(TransactionConfig::default());
        let t0 = Instant::now();
        let start = Instant::now();
        for r in reqs {
            f(&mut l, t0, r);
            while l.poll_output().is_some() {}
        }
        // Let the remaining timers run out (virtual clock).
        l.handle_timeout(t0 + Duration::from_secs(600));
        while l.poll_output().is_some() {}
        let el = start.elapsed();
        assert!(l.is_empty());
        println!(
            "{label}: {N} transactions in {:.3} s = {:.0} tx/s",
            el.as_secs_f64(),
            N as f64 / el.as_secs_f64()
        );
    };

    // Server non-INVITE over WS: request -> 200 -> terminated at once.
    let reqs: Vec<_> = (0..N)
        .map(|i| with_branch(&register, &format!("z9hG4bKr{i}")))
        .collect();
    let ok = make_response(&register, 200, None, Some("t"));
    run("server non-INVITE, reliable", reqs, &mut |l, t, r| {
        let RequestDisposition::New { key, .. } = l.handle_request(t, r, 1, true).unwrap() else {
            panic!()
        };
        l.send_response(t, &key, &ok).unwrap();
    });

    // Client non-INVITE over UDP: send -> 200 -> timer K later.
    let reqs: Vec<_> = (0..N)
        .map(|i| with_branch(&bye, &format!("z9hG4bKb{i}")))
        .collect();
    run("client non-INVITE, UDP (+timer K)", reqs, &mut |l, t, r| {
        let resp = make_response(&r, 200, None, None);
        l.send_request(t, r, 1, false).unwrap();
        let ResponseDisposition::Deliver { .. } = l.handle_response(t, resp).unwrap() else {
            panic!()
        };
    });

    // Server INVITE over UDP: INVITE -> 100 -> 200 -> timer L later.
    let reqs: Vec<_> = (0..N)
        .map(|i| with_branch(&invite, &format!("z9hG4bKi{i}")))
        .collect();
    let ok = make_response(&invite, 200, None, Some("t"));
    run(
        "server INVITE, UDP (100 + 200, +timer L)",
        reqs,
        &mut |l, t, r| {
            let RequestDisposition::New { key, .. } = l.handle_request(t, r, 1, false).unwrap()
            else {
                panic!()
            };
            l.send_response(t, &key, &ok).unwrap();
        },
    );
}
