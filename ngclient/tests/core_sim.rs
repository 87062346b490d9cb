//! The sans-IO core on a virtual clock: no sockets, no sleeps.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ngclient::wire;
use ngclient::{
    CallRef, Completion, Core, CoreConfig, Health, InstanceConfig, MediaRequest, NgError, Target,
    Transmit,
};

const A: &str = "127.0.0.1:20001";
const B: &str = "127.0.0.1:20002";
const C: &str = "127.0.0.1:20003";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn core(instances: &[&str], pings: bool, t0: Instant) -> Core {
    Core::new(
        CoreConfig {
            instances: instances
                .iter()
                .map(|a| InstanceConfig::new(addr(a)))
                .collect(),
            ping_interval: pings.then(|| Duration::from_secs(1)),
            cookie_prefix: "t_".into(),
            ..CoreConfig::default()
        },
        t0,
    )
}

fn drain(core: &mut Core) -> Vec<Transmit> {
    std::iter::from_fn(|| core.poll_transmit()).collect()
}

fn events(core: &mut Core) -> Vec<Completion> {
    std::iter::from_fn(|| core.poll_event()).collect()
}

fn cookie(t: &Transmit) -> String {
    String::from_utf8(wire::split_cookie(&t.payload).unwrap().0.to_vec()).unwrap()
}

fn command(t: &Transmit) -> String {
    let d = wire::decode(&t.payload).unwrap().1;
    d.get(&b"command"[..]).unwrap().as_str().unwrap().to_owned()
}

fn reply(t: &Transmit, body: &str) -> Vec<u8> {
    format!("{} {body}", cookie(t)).into_bytes()
}

const OK_SDP: &str = "d3:sdp3:v=06:result2:oke";
const OK: &str = "d6:result2:oke";

fn offer(call: &str) -> ngclient::Request {
    MediaRequest::new("v=0\r\n", call, "ftag").offer()
}

#[test]
fn retransmits_same_bytes_then_times_out() {
    let t0 = Instant::now();
    let mut c = core(&[A], false, t0);
    c.submit(t0, &ngclient::request::ping(), Target::Auto)
        .unwrap();
    let first = drain(&mut c);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].dest, addr(A));
    assert_eq!(c.poll_timeout(), Some(t0 + Duration::from_millis(150)));

    // Nothing before the deadline.
    c.handle_timeout(t0 + Duration::from_millis(149));
    assert!(drain(&mut c).is_empty());

    let mut now = t0;
    for _ in 0..2 {
        now += Duration::from_millis(150);
        c.handle_timeout(now);
        let again = drain(&mut c);
        assert_eq!(again.len(), 1);
        // Same cookie, same bytes: rtpengine answers retransmissions from its cache.
        assert_eq!(again[0].payload, first[0].payload);
        assert!(events(&mut c).is_empty());
    }
    now += Duration::from_millis(150);
    c.handle_timeout(now);
    assert!(drain(&mut c).is_empty());
    let ev = events(&mut c);
    assert_eq!(ev.len(), 1);
    assert_eq!(
        ev[0].result,
        Err(NgError::Timeout {
            instance: addr(A),
            tries: 3
        })
    );
    assert_eq!(now - t0, Duration::from_millis(450));
    assert_eq!(c.poll_timeout(), None);
    assert_eq!(c.instances()[0].health, Health::Down);
    let m = c.metrics().total("ping");
    assert_eq!((m.requests, m.retransmits, m.timeouts), (1, 2, 1));
}

#[test]
fn replies_match_by_cookie_and_source_many_in_flight() {
    let t0 = Instant::now();
    let mut c = core(&[A], false, t0);
    let mut ops = Vec::new();
    for i in 0..100 {
        let op = c
            .submit(t0, &CallRef::new(format!("call-{i}")).query(), Target::Auto)
            .unwrap();
        ops.push(op);
    }
    let sent = drain(&mut c);
    assert_eq!(sent.len(), 100);
    let mut cookies: Vec<_> = sent.iter().map(cookie).collect();
    cookies.sort();
    cookies.dedup();
    assert_eq!(cookies.len(), 100, "cookies must be unique");
    assert_eq!(c.in_flight(), 100);

    // Wrong source, unknown cookie, garbage: all dropped, nothing completes.
    c.handle_datagram(t0, addr(B), &reply(&sent[0], OK));
    c.handle_datagram(t0, addr(A), b"nope d6:result2:oke");
    c.handle_datagram(t0, addr(A), b"garbage");
    assert!(events(&mut c).is_empty());
    assert_eq!(c.metrics().dropped_datagrams, 3);

    // Replies in reverse order complete the right ops.
    let later = t0 + Duration::from_millis(3);
    for t in sent.iter().rev() {
        c.handle_datagram(later, addr(A), &reply(t, OK));
    }
    let ev = events(&mut c);
    assert_eq!(ev.len(), 100);
    assert_eq!(ev[0].op, ops[99]);
    assert!(ev.iter().all(|e| e.result.is_ok()));
    assert_eq!(c.in_flight(), 0);
    // A duplicate (late retransmission answer) is ignored.
    c.handle_datagram(later, addr(A), &reply(&sent[0], OK));
    assert!(events(&mut c).is_empty());
    let q = c.metrics().total("query");
    assert_eq!(q.ok, 100);
    assert_eq!(q.latency.count, 100);
    assert_eq!(q.latency.max_us, 3_000);
}

#[test]
fn error_and_undecodable_replies_are_typed_errors() {
    let t0 = Instant::now();
    let mut c = core(&[A], false, t0);
    c.submit(
        t0,
        &MediaRequest::new("v=0", "x", "f").answer(),
        Target::Auto,
    )
    .unwrap();
    let t = drain(&mut c).remove(0);
    c.handle_datagram(
        t0,
        addr(A),
        &reply(&t, "d6:result5:error12:error-reason15:Unknown call-ide"),
    );
    assert_eq!(
        events(&mut c)[0].result,
        Err(NgError::Rtpengine {
            reason: "Unknown call-id".into()
        })
    );
    c.submit(t0, &ngclient::request::ping(), Target::Auto)
        .unwrap();
    let t = drain(&mut c).remove(0);
    c.handle_datagram(t0, addr(A), &reply(&t, "d6:resulti5ee"));
    assert!(matches!(
        events(&mut c)[0].result,
        Err(NgError::Decode { .. })
    ));
    // The call was never created: nothing remembered.
    assert_eq!(c.call_instance("x"), None);
}

#[test]
fn offer_fails_over_on_timeout_and_cleans_up() {
    let t0 = Instant::now();
    let mut c = core(&[A, B, C], false, t0);
    let call = "failover-call";
    c.submit(t0, &offer(call), Target::Auto).unwrap();
    let first = drain(&mut c).remove(0);
    let dead = first.dest;
    let mut now = t0;
    for _ in 0..3 {
        now += Duration::from_millis(150);
        c.handle_timeout(now);
    }
    let sent = drain(&mut c);
    // Two retransmissions to the dead one, then a cleanup delete to it and the offer
    // (new cookie) to the next instance.
    let retrans: Vec<_> = sent.iter().filter(|t| t.payload == first.payload).collect();
    assert_eq!(retrans.len(), 2);
    let cleanup: Vec<_> = sent.iter().filter(|t| command(t) == "delete").collect();
    assert_eq!(cleanup.len(), 1);
    assert_eq!(cleanup[0].dest, dead);
    let moved: Vec<_> = sent
        .iter()
        .filter(|t| command(t) == "offer" && t.dest != dead)
        .collect();
    assert_eq!(moved.len(), 1);
    assert_ne!(cookie(moved[0]), cookie(&first));
    let live = moved[0].dest;
    c.handle_datagram(
        now + Duration::from_millis(1),
        live,
        &reply(moved[0], OK_SDP),
    );
    let ev = events(&mut c);
    let resp = ev[0].result.as_ref().unwrap();
    assert_eq!(resp.addr, live);
    assert_eq!(resp.reply.sdp.as_deref(), Some(&b"v=0"[..]));
    // Well under a second.
    assert!(now + Duration::from_millis(1) - t0 < Duration::from_secs(1));
    assert_eq!(c.metrics().failovers, 1);
    let dead_id = c.instances().iter().find(|i| i.addr == dead).unwrap().id;
    assert_eq!(c.health(dead_id), Some(Health::Down));

    // Later commands of that call stick to the live instance.
    c.submit(
        now,
        &MediaRequest::new("v=0", call, "ftag").answer(),
        Target::Auto,
    )
    .unwrap();
    let ans: Vec<_> = drain(&mut c)
        .into_iter()
        .filter(|t| command(t) == "answer")
        .collect();
    assert_eq!(ans[0].dest, live);

    // A new call whose HRW top is the dead instance skips it immediately.
    let mut skipped = 0;
    for i in 0..60 {
        let call = format!("new-{i}");
        c.submit(now, &offer(&call), Target::Auto).unwrap();
        let t = drain(&mut c)
            .into_iter()
            .find(|t| command(t) == "offer")
            .unwrap();
        assert_ne!(t.dest, dead);
        skipped += 1;
    }
    assert_eq!(skipped, 60);
}

#[test]
fn load_limit_fails_over_without_cleanup() {
    let t0 = Instant::now();
    let mut c = core(&[A, B], false, t0);
    c.submit(t0, &offer("ll"), Target::Auto).unwrap();
    let t = drain(&mut c).remove(0);
    c.handle_datagram(
        t0,
        t.dest,
        &reply(&t, "d7:message4:full6:result10:load limite"),
    );
    let next = drain(&mut c);
    assert_eq!(next.len(), 1);
    assert_ne!(next[0].dest, t.dest);
    assert_eq!(command(&next[0]), "offer");
    // Both overloaded: the caller gets the typed load-limit error.
    c.handle_datagram(
        t0,
        next[0].dest,
        &reply(&next[0], "d6:result10:load limite"),
    );
    assert_eq!(
        events(&mut c)[0].result,
        Err(NgError::LoadLimit { message: None })
    );
    // Load limit is an answer: the instances stay up.
    assert!(c.instances().iter().all(|i| i.health == Health::Up));
}

#[test]
fn pings_take_instances_down_and_back_up() {
    let t0 = Instant::now();
    let mut c = core(&[A, B], true, t0);
    assert_eq!(c.poll_timeout(), Some(t0));
    c.handle_timeout(t0);
    let pings = drain(&mut c);
    assert_eq!(pings.len(), 2);
    assert!(pings.iter().all(|t| command(t) == "ping"));
    // B answers, A does not.
    let b_ping = pings.iter().find(|t| t.dest == addr(B)).unwrap();
    c.handle_datagram(t0, addr(B), &reply(b_ping, "d6:result4:ponge"));
    let mut now = t0;
    for _ in 0..10 {
        if c.health(0) == Some(Health::Down) {
            break;
        }
        now = c.poll_timeout().unwrap();
        c.handle_timeout(now);
        drain(&mut c);
    }
    // Three unanswered tries of 150 ms.
    assert_eq!(now - t0, Duration::from_millis(450));
    assert_eq!(c.health(0), Some(Health::Down));
    assert_eq!(c.health(1), Some(Health::Up));
    // Ping events are internal.
    assert!(events(&mut c).is_empty());

    // Every new call now lands on B.
    for i in 0..20 {
        c.submit(now, &offer(&format!("c{i}")), Target::Auto)
            .unwrap();
        let t = drain(&mut c).remove(0);
        assert_eq!(t.dest, addr(B));
    }

    // A answers the next ping: back up.
    let next_ping_at = t0 + Duration::from_secs(1);
    c.handle_timeout(next_ping_at);
    let a_ping = drain(&mut c)
        .into_iter()
        .find(|t| t.dest == addr(A) && command(t) == "ping")
        .unwrap();
    c.handle_datagram(next_ping_at, addr(A), &reply(&a_ping, "d6:result4:ponge"));
    assert_eq!(c.health(0), Some(Health::Up));
    assert!(c.instances()[0].last_rtt.is_some());
}

#[test]
fn explicit_target_binding_and_delete_forgets() {
    let t0 = Instant::now();
    let mut c = core(&[A, B], false, t0);
    assert_eq!(
        c.submit(t0, &offer("x"), Target::Instance(7)),
        Err(NgError::UnknownInstance(7))
    );
    c.submit(t0, &offer("pinned"), Target::Instance(1)).unwrap();
    let t = drain(&mut c).remove(0);
    assert_eq!(t.dest, addr(B));
    c.handle_datagram(t0, addr(B), &reply(&t, OK_SDP));
    assert_eq!(c.call_instance("pinned"), Some(1));
    assert_eq!(c.instances()[1].calls, 1);

    // A branch delete (with to-tag) keeps the mapping; a whole-call delete drops it.
    let mut branch = CallRef::new("pinned").from_tag("ftag");
    branch.to_tag = Some("tt".into());
    c.submit(t0, &branch.delete(), Target::Auto).unwrap();
    let t = drain(&mut c).remove(0);
    assert_eq!(t.dest, addr(B));
    c.handle_datagram(t0, addr(B), &reply(&t, OK));
    assert_eq!(c.call_instance("pinned"), Some(1));
    c.submit(
        t0,
        &CallRef::new("pinned").from_tag("ftag").delete(),
        Target::Auto,
    )
    .unwrap();
    let t = drain(&mut c).remove(0);
    c.handle_datagram(t0, addr(B), &reply(&t, OK));
    assert_eq!(c.call_instance("pinned"), None);

    // Restored binding (e.g. from SQL) is honoured.
    c.bind_call("restored", 0).unwrap();
    c.submit(t0, &CallRef::new("restored").query(), Target::Auto)
        .unwrap();
    assert_eq!(drain(&mut c).remove(0).dest, addr(A));
}

#[test]
fn backpressure_and_no_instances() {
    let t0 = Instant::now();
    let mut c = Core::new(
        CoreConfig {
            instances: vec![InstanceConfig::new(addr(A))],
            max_in_flight: 2,
            ping_interval: None,
            ..CoreConfig::default()
        },
        t0,
    );
    c.submit(t0, &ngclient::request::ping(), Target::Auto)
        .unwrap();
    c.submit(t0, &ngclient::request::ping(), Target::Auto)
        .unwrap();
    assert_eq!(
        c.submit(t0, &ngclient::request::ping(), Target::Auto),
        Err(NgError::Backpressure(2))
    );
    let mut empty = Core::new(CoreConfig::default(), t0);
    assert_eq!(
        empty.submit(t0, &ngclient::request::ping(), Target::Auto),
        Err(NgError::NoInstances)
    );
}

#[test]
fn every_node_picks_the_same_instance() {
    let t0 = Instant::now();
    let n1 = core(&[A, B, C], false, t0);
    let n2 = core(&[A, B, C], false, t0 + Duration::from_secs(5));
    let mut n1 = n1;
    let mut n2 = n2;
    for i in 0..200 {
        let call = format!("shared-{i}");
        n1.submit(t0, &offer(&call), Target::Auto).unwrap();
        n2.submit(t0, &offer(&call), Target::Auto).unwrap();
        assert_eq!(drain(&mut n1)[0].dest, drain(&mut n2)[0].dest);
    }
}

#[test]
fn a_down_instance_gets_one_try_then_comes_back_on_a_reply() {
    let t0 = Instant::now();
    let mut c = core(&[A], false, t0);
    // A dies: the first offer spends the whole budget and marks it down.
    c.submit(t0, &offer("c1"), Target::Auto).unwrap();
    let mut now = t0;
    while events(&mut c).is_empty() {
        drain(&mut c);
        now = c.poll_timeout().unwrap();
        c.handle_timeout(now);
    }
    assert_eq!(now - t0, Duration::from_millis(450));
    assert_eq!(c.health(0), Some(Health::Down));

    // The next offer still tries A (last resort) but with one datagram:
    // it fails after one try_timeout, not three.
    let start = now;
    c.submit(now, &offer("c2"), Target::Auto).unwrap();
    assert_eq!(drain(&mut c).len(), 1);
    now = c.poll_timeout().unwrap();
    c.handle_timeout(now);
    assert!(
        drain(&mut c).is_empty(),
        "no retransmission to a down instance"
    );
    let ev = events(&mut c);
    assert_eq!(
        ev[0].result,
        Err(NgError::Timeout {
            instance: addr(A),
            tries: 1
        })
    );
    assert_eq!(now - start, Duration::from_millis(150));

    // A answers again: up, and the full budget applies once more.
    c.submit(now, &offer("c3"), Target::Auto).unwrap();
    let t = drain(&mut c).remove(0);
    c.handle_datagram(now, addr(A), &reply(&t, OK_SDP));
    assert_eq!(c.health(0), Some(Health::Up));
    assert!(events(&mut c)[0].result.is_ok());
    c.submit(now, &offer("c4"), Target::Auto).unwrap();
    drain(&mut c);
    now = c.poll_timeout().unwrap();
    c.handle_timeout(now);
    assert_eq!(drain(&mut c).len(), 1, "retransmitted while up");
}
