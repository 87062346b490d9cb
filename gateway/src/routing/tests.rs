//! Unit tests of the routing table on a virtual clock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::*;

fn parse(text: &str) -> RoutingConfig {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Root {
        routing: RoutingConfig,
    }
    match toml::from_str::<Root>(text) {
        Ok(r) => r.routing,
        Err(e) => panic!("bad test config: {e}"),
    }
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

const BASE: &str = r#"
[routing]
local = "first"

[[routing.sets]]
name = "freepbx"
trusted_sources = ["127.0.0.1", "10.0.0.0/8"]
destinations = [
  { address = "127.0.0.1:5082", priority = 2 },
  { address = "127.0.0.1:5080", priority = 1, codec_policy = "g711" },
]

[[routing.sets]]
name = "trunk"
algorithm = "round_robin"
failover_codes = [408, "503"]
destinations = [
  { address = "127.0.0.1:6001" },
  { address = "127.0.0.1:6002" },
  { address = "127.0.0.1:6003" },
]

[[routing.sets]]
name = "lab"
destinations = [{ address = "127.0.0.1:7000" }]

[[routing.rules]]
range = "1000-1999"
set = "freepbx"

[[routing.rules]]
name = "international"
e164 = true
set = "trunk"
strip = 1
add_prefix = "00"

[[routing.rules]]
regex = "^7[0-9]{2}$"
domain = "lab.example"
set = "lab"

[[routing.rules]]
prefix = "9"
set = "trunk"
strip = 1

[[routing.rules]]
prefix = "1"
set = "lab"
"#;

fn q<'a>(user: &'a str, call_id: &'a str) -> RouteQuery<'a> {
    RouteQuery {
        user,
        domain: "gw.example",
        call_id,
        source_ip: None,
    }
}

/// Routes, skipping Local outcomes (nobody registered).
fn pbx(t: &mut RoutingTable, query: &RouteQuery<'_>, now: Instant) -> RouteOutcome {
    let mut out = t.route(query, now);
    while let RouteOutcome::Local { resume, .. } = out {
        out = t.route_from(query, resume, now);
    }
    out
}

fn first_dest(out: &RouteOutcome) -> Option<(String, SocketAddr, String)> {
    match out {
        RouteOutcome::Pbx(r) => r
            .destinations
            .first()
            .map(|d| (r.set.clone(), d.address, r.user.clone())),
        _ => None,
    }
}

fn order_of(out: &RouteOutcome) -> Vec<u16> {
    match out {
        RouteOutcome::Pbx(r) => r.destinations.iter().map(|d| d.address.port()).collect(),
        _ => Vec::new(),
    }
}

/// Marks `dest` down by failing `down_after` probes in a row.
fn take_down(t: &mut RoutingTable, dest: SocketAddr, now: Instant) {
    for _ in 0..10 {
        t.prober().transaction_timeout(now, dest);
    }
    assert_eq!(t.state(dest), HealthState::Down);
}

#[test]
fn rules_first_match_ranges_prefixes_regex_e164_rewrite() {
    let now = Instant::now();
    let mut t = RoutingTable::new(&parse(BASE), now).unwrap();
    let r = |t: &mut RoutingTable, user: &str| first_dest(&pbx(t, &q(user, "c"), now));
    // Range beats the later prefix "1".
    assert_eq!(
        r(&mut t, "1500"),
        Some(("freepbx".into(), addr(5080), "1500".into()))
    );
    // Outside the range, the prefix "1" rule catches it.
    assert_eq!(
        r(&mut t, "12345"),
        Some(("lab".into(), addr(7000), "12345".into()))
    );
    // E.164 with + and with 00 (strip 1, add "00": meant for the + form).
    assert_eq!(
        r(&mut t, "+4930123456").map(|x| x.2),
        Some("004930123456".into())
    );
    assert_eq!(
        r(&mut t, "004930123456").map(|x| x.2),
        Some("0004930123456".into()) // strip/add are literal
    );
    // Prefix 9 stripped.
    assert_eq!(
        r(&mut t, "9030555").map(|x| (x.0, x.2)),
        Some(("trunk".into(), "030555".into()))
    );
    // Regex only for its domain.
    assert_eq!(r(&mut t, "755"), None);
    let lab = RouteQuery {
        domain: "LAB.example",
        ..q("755", "c")
    };
    assert_eq!(
        first_dest(&pbx(&mut t, &lab, now)).map(|x| x.0),
        Some("lab".into())
    );
    // Nothing matches → 404.
    assert_eq!(
        pbx(&mut t, &q("alice", "c"), now),
        RouteOutcome::Reject {
            code: 404,
            reason: "Not Found"
        }
    );
}

#[test]
fn local_first_last_or_in_rules() {
    let now = Instant::now();
    let mut t = RoutingTable::new(&parse(BASE), now).unwrap();
    assert_eq!(
        t.route(&q("1500", "c"), now),
        RouteOutcome::Local {
            user: "1500".into(),
            resume: 1
        }
    );
    let last = BASE.replace("local = \"first\"", "local = \"last\"");
    let mut t = RoutingTable::new(&parse(&last), now).unwrap();
    assert!(matches!(
        t.route(&q("1500", "c"), now),
        RouteOutcome::Pbx(_)
    ));
    assert!(matches!(
        t.route(&q("alice", "c"), now),
        RouteOutcome::Local { .. }
    ));
    // Explicit position: between the range rule and the rest.
    let rules = BASE
        .replace("local = \"first\"", "local = \"rules\"")
        .replace(
            "[[routing.rules]]\nname = \"international\"",
            "[[routing.rules]]\nlocal = true\n\n[[routing.rules]]\nname = \"international\"",
        );
    let mut t = RoutingTable::new(&parse(&rules), now).unwrap();
    assert!(matches!(
        t.route(&q("1500", "c"), now),
        RouteOutcome::Pbx(_)
    ));
    let out = t.route(&q("12345", "c"), now);
    let RouteOutcome::Local { resume, .. } = out else {
        panic!("expected local, got {out:?}");
    };
    assert_eq!(
        first_dest(&t.route_from(&q("12345", "c"), resume, now)).map(|x| x.0),
        Some("lab".into())
    );
    // A local rule without local = "rules" is refused with its key.
    let bad = BASE.replace(
        "[[routing.rules]]\nprefix = \"1\"",
        "[[routing.rules]]\nlocal = true\n\n[[routing.rules]]\nprefix = \"1\"",
    );
    assert_eq!(
        parse(&bad).validate().unwrap_err().key,
        "routing.rules[4].local"
    );
}

#[test]
fn priority_order_skips_down_and_503_when_all_down() {
    let now = Instant::now();
    let mut t = RoutingTable::new(&parse(BASE), now).unwrap();
    let out = pbx(&mut t, &q("1000", "c"), now);
    assert_eq!(order_of(&out), [5080, 5082]);
    if let RouteOutcome::Pbx(r) = &out {
        assert_eq!(
            r.destinations
                .first()
                .and_then(|d| d.codec_policy.as_deref()),
            Some("g711")
        );
        assert_eq!(r.failover_timeout, Duration::from_millis(4000));
    }
    take_down(&mut t, addr(5080), now);
    assert_eq!(order_of(&pbx(&mut t, &q("1000", "c"), now)), [5082]);
    take_down(&mut t, addr(5082), now);
    assert_eq!(
        pbx(&mut t, &q("1000", "c"), now),
        RouteOutcome::Reject {
            code: 503,
            reason: "all destinations down"
        }
    );
}

#[test]
fn serial_failover() {
    let now = Instant::now();
    let mut t = RoutingTable::new(&parse(BASE), now).unwrap();
    let RouteOutcome::Pbx(route) = pbx(&mut t, &q("1000", "c"), now) else {
        panic!("expected a PBX route");
    };
    let next = t.next_after_failure(&route, addr(5080), CallFailure::Status(503), now);
    assert!(matches!(next, Failover::Next(ref d) if d.address == addr(5082)));
    assert_eq!(
        t.next_after_failure(&route, addr(5080), CallFailure::Status(486), now),
        Failover::Stop
    );
    assert_eq!(
        t.next_after_failure(&route, addr(5080), CallFailure::Status(404), now),
        Failover::Stop
    );
    assert_eq!(
        t.next_after_failure(&route, addr(5082), CallFailure::Status(500), now),
        Failover::Exhausted
    );
    // Timeouts count against health: three of them take 5080 down.
    for _ in 0..3 {
        let n = t.next_after_failure(&route, addr(5080), CallFailure::Timeout, now);
        assert!(matches!(n, Failover::Next(_)));
    }
    assert_eq!(t.state(addr(5080)), HealthState::Down);
    // The backup went down meanwhile: nothing left.
    take_down(&mut t, addr(5082), now);
    assert_eq!(
        t.next_after_failure(&route, addr(5080), CallFailure::Timeout, now),
        Failover::Exhausted
    );
}

#[test]
fn round_robin_rotates_and_skips_down() {
    let now = Instant::now();
    let mut t = RoutingTable::new(&parse(BASE), now).unwrap();
    let firsts: Vec<u16> = (0..6)
        .map(|i| order_of(&pbx(&mut t, &q("+4930123456", &format!("c{i}")), now))[0])
        .collect();
    assert_eq!(firsts, [6001, 6002, 6003, 6001, 6002, 6003]);
    assert_eq!(
        order_of(&pbx(&mut t, &q("+4930123456", "x"), now)),
        [6001, 6002, 6003]
    );
    take_down(&mut t, addr(6002), now);
    let firsts: Vec<u16> = (0..4)
        .map(|i| order_of(&pbx(&mut t, &q("+4930123456", &format!("d{i}")), now))[0])
        .collect();
    assert_eq!(firsts, [6003, 6001, 6003, 6001]);
}

const WEIGHTED: &str = r#"
[routing]
[[routing.sets]]
name = "w"
algorithm = "weighted"
destinations = [
  { address = "127.0.0.1:1", weight = 3 },
  { address = "127.0.0.1:2", weight = 1 },
  { address = "127.0.0.1:3", weight = 6 },
]
[[routing.rules]]
default = true
set = "w"
"#;

#[test]
fn weighted_distribution_is_proportional_and_smooth() {
    let now = Instant::now();
    let mut cfg = parse(WEIGHTED);
    cfg.local = LocalPosition::Rules;
    let mut t = RoutingTable::new(&cfg, now).unwrap();
    let mut counts: HashMap<u16, usize> = HashMap::new();
    let mut seq = Vec::new();
    for i in 0..1000 {
        let o = order_of(&t.route(&q("x", &format!("call{i}")), now));
        assert_eq!(o.len(), 3);
        *counts.entry(o[0]).or_default() += 1;
        seq.push(o[0]);
    }
    assert_eq!(counts.get(&1), Some(&300));
    assert_eq!(counts.get(&2), Some(&100));
    assert_eq!(counts.get(&3), Some(&600));
    // Smooth: the heavy one never gets more than 2 in a row at 6/10.
    assert!(
        seq.windows(3)
            .all(|w| !(w[0] == 3 && w[1] == 3 && w[2] == 3))
    );
    // The rest follow, heaviest first.
    for i in 0..10 {
        let o = order_of(&t.route(&q("x", &format!("r{i}")), now));
        let mut rest: Vec<u16> = [3, 1, 2].into_iter().filter(|p| *p != o[0]).collect();
        rest.truncate(2);
        assert_eq!(o[1..], rest[..]);
    }
    // Down: its share goes to the others.
    take_down(&mut t, addr(3), now);
    let mut counts: HashMap<u16, usize> = HashMap::new();
    for i in 0..400 {
        *counts
            .entry(order_of(&t.route(&q("x", &format!("d{i}")), now))[0])
            .or_default() += 1;
    }
    assert_eq!(counts.get(&1), Some(&300));
    assert_eq!(counts.get(&2), Some(&100));
}

#[test]
fn hash_call_id_is_stable_and_spreads() {
    let now = Instant::now();
    let cfg = WEIGHTED.replace("\"weighted\"", "\"hash_call_id\"");
    let mut t = RoutingTable::new(&parse(&cfg), now).unwrap();
    let mut first: HashMap<String, u16> = HashMap::new();
    let mut counts: HashMap<u16, usize> = HashMap::new();
    for i in 0..300 {
        let id = format!("{i:x}-call@host");
        let o = order_of(&pbx(&mut t, &q("x", &id), now));
        *counts.entry(o[0]).or_default() += 1;
        first.insert(id, o[0]);
    }
    assert!(counts.values().all(|c| *c > 50), "spread: {counts:?}");
    // Same Call-ID, same answer, also from a fresh table (restart).
    let mut t2 = RoutingTable::new(&parse(&cfg), now).unwrap();
    for (id, port) in &first {
        assert_eq!(order_of(&pbx(&mut t2, &q("x", id), now))[0], *port);
    }
    // One destination down: calls of the others keep their destination.
    take_down(&mut t2, addr(2), now);
    for (id, port) in &first {
        let got = order_of(&pbx(&mut t2, &q("x", id), now))[0];
        if *port != 2 {
            assert_eq!(got, *port);
        } else {
            assert_ne!(got, 2);
        }
    }
}

#[test]
fn trusted_sources() {
    let now = Instant::now();
    let t = RoutingTable::new(&parse(BASE), now).unwrap();
    assert_eq!(t.is_trusted("127.0.0.1".parse().unwrap()), Some("freepbx"));
    assert_eq!(t.is_trusted("10.9.8.7".parse().unwrap()), Some("freepbx"));
    assert_eq!(t.is_trusted("192.0.2.1".parse().unwrap()), None);
}

#[test]
fn reload_keeps_health_of_kept_destinations_and_refuses_bad_config() {
    let now = Instant::now();
    let mut t = RoutingTable::new(&parse(BASE), now).unwrap();
    take_down(&mut t, addr(5080), now);
    take_down(&mut t, addr(6001), now);
    let changed = BASE.replace("127.0.0.1:6001", "127.0.0.1:6009");
    t.reload(&parse(&changed), now).unwrap();
    assert_eq!(t.state(addr(5080)), HealthState::Down);
    assert_eq!(t.state(addr(6009)), HealthState::Unknown);
    assert!(t.states().iter().all(|s| s.address != addr(6001)));
    // A bad config leaves everything as it was.
    let bad = parse(&BASE.replace(
        "prefix = \"1\"\nset = \"lab\"",
        "prefix = \"1\"\nset = \"nope\"",
    ));
    let before = t.sets();
    let err = t.reload(&bad, now).expect_err("unknown set");
    assert_eq!(err.key, "routing.rules[4].set");
    assert_eq!(t.state(addr(5080)), HealthState::Down);
    assert_eq!(t.sets(), before);
}

#[test]
fn validation_names_the_key() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "range = \"1000-1999\"",
            "range = \"1999-1000\"",
            "routing.rules[0].range",
        ),
        (
            "regex = \"^7[0-9]{2}$\"",
            "regex = \"^7[\"",
            "routing.rules[2].regex",
        ),
        (
            "prefix = \"9\"\nset = \"trunk\"",
            "prefix = \"9\"\nset = \"trunc\"",
            "routing.rules[3].set",
        ),
        (
            "e164 = true",
            "e164 = true\nprefix = \"0\"",
            "routing.rules[1]",
        ),
        (
            "\"10.0.0.0/8\"",
            "\"10.0.0.0/80\"",
            "routing.sets[0].trusted_sources[1]",
        ),
        (
            "[408, \"503\"]",
            "[408, \"9xx\"]",
            "routing.sets[1].failover_codes[1]",
        ),
        ("name = \"lab\"", "name = \"trunk\"", "routing.sets[2].name"),
        (
            "{ address = \"127.0.0.1:6002\" }",
            "{ address = \"127.0.0.1:6002\", weight = 0 }",
            "routing.sets[1].destinations[1].weight",
        ),
        (
            "{ address = \"127.0.0.1:6003\" }",
            "{ address = \"127.0.0.1:6001\" }",
            "routing.sets[1].destinations[2].address",
        ),
        (
            "name = \"lab\"\n",
            "name = \"lab\"\nfailover_timeout_ms = 40000\n",
            "routing.sets[2].failover_timeout_ms",
        ),
        (
            "name = \"lab\"\n",
            "name = \"lab\"\nprobe = { down_after = 0 }\n",
            "routing.sets[2].probe.down_after",
        ),
        (
            "name = \"lab\"\n",
            "name = \"lab\"\nprobe = { interval_ms = 1000, timeout_ms = 2000 }\n",
            "routing.sets[2].probe.timeout_ms",
        ),
        (
            "name = \"lab\"\n",
            "name = \"lab\"\nprobe = { reply_codes = [\"2xx\", 1000] }\n",
            "routing.sets[2].probe.reply_codes[1]",
        ),
    ];
    assert!(parse(BASE).validate().is_ok());
    for (from, to, key) in cases {
        assert!(BASE.contains(from), "{from}");
        let text = BASE.replacen(from, to, 1);
        let err = parse(&text).validate().expect_err(key);
        assert_eq!(&err.key, key, "{err}");
        assert!(RoutingTable::new(&parse(&text), Instant::now()).is_err());
    }
    // Unknown keys and transports other than udp are refused by serde.
    assert!(toml::from_str::<RoutingConfig>("set = 1").is_err());
    assert!(toml::from_str::<RoutingConfig>(
        "[[sets]]\nname = \"a\"\ndestinations = [{ address = \"127.0.0.1:1\", transport = \"tcp\" }]"
    )
    .is_err());
    // Defaults: an empty routing section is valid and routes nothing but local.
    let empty = RoutingConfig::default();
    let mut t = RoutingTable::new(&empty, Instant::now()).unwrap();
    assert!(matches!(
        t.route(&q("1000", "c"), Instant::now()),
        RouteOutcome::Local { .. }
    ));
    assert_eq!(
        t.route_from(&q("1000", "c"), 1, Instant::now()),
        RouteOutcome::Reject {
            code: 404,
            reason: "Not Found"
        }
    );
}
