//! The whole proxy core (sans-IO `Proxy`): a sequence of messages from
//! four sources (an untrusted UDP client, the trusted PBX, two WebSocket
//! flows), with time passing, flows closing and the PBX answering what the
//! proxy actually sent. Transactions, dialogs, routing, the no-relay rules,
//! failover and timers all run. Nothing may panic, and no request the proxy
//! sends over UDP may exceed a datagram.
//!
//! Input: chunks separated by `\0\0\0`. A chunk's first byte is an op:
//! - `0xFF`: the flow 1 closes;
//! - `0xFE c`: the PBX answers the last request sent to it with the status
//!   `CODES[c % CODES.len()]`, copying its Vias, tags and Record-Route;
//! - otherwise bits 0-1 pick the source, bits 2-7 advance the clock by that
//!   many 100 ms, and the rest of the chunk is the message.
#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use libfuzzer_sys::fuzz_target;
use rtcgate::config::StaticRoute;
use rtcgate::proxy::route::Local;
use rtcgate::proxy::routing::StaticRouter;
use rtcgate::proxy::{Flows, Proxy, ProxyConfig, Task, TaskResult};
use rtcgate::sip;
use rtcgate::transaction::{TransactionConfig, build};
use rtcgate::transport::{Destination, FlowId, Source};

const ME: &str = "127.0.0.1:5060";
const CLIENT: &str = "192.0.2.7:5070";
const PBX: &str = "127.0.0.1:5080";
const MAX_UDP_DATAGRAM: usize = 65_507;
const CODES: [u16; 22] = [
    100, 180, 183, 200, 202, 302, 401, 403, 404, 407, 408, 480, 481, 482, 486, 487, 488, 500, 503,
    504, 600, 603,
];

struct OpenFlows;
impl Flows for OpenFlows {
    fn alive(&self, flow: FlowId) -> bool {
        flow != 1 || !CLOSED.with(|c| c.get())
    }
}

thread_local! {
    static CLOSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn proxy() -> Proxy {
    let local = Local {
        udp: vec![ME.parse().unwrap()],
        ws: vec!["127.0.0.1:8080".parse().unwrap()],
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
            server_header: "fuzz".into(),
            transactions: TransactionConfig::default(),
            auth_required: true,
            trusted: vec![],
            media: false,
            max_call_duration: Some(Duration::from_secs(3600)),
            pending: Default::default(),
        },
        local,
        Arc::new(router),
        true,
        Arc::new(OpenFlows),
    )
}

fn source(selector: u8) -> Source {
    let udp = |peer: &str| Source::Udp {
        local: ME.parse().unwrap(),
        peer: peer.parse().unwrap(),
    };
    match selector & 3 {
        0 => udp(CLIENT),
        1 => udp(PBX),
        n => Source::Ws {
            flow: u64::from(n) - 1,
            peer: "192.0.2.9:40000".parse().unwrap(),
            secure: n == 3,
        },
    }
}

/// A response of the PBX to `req` (text as sent by the proxy).
fn pbx_answer(req: &str, code: u16) -> String {
    let mut out = format!("SIP/2.0 {code} Fuzz\r\n");
    for line in req.split("\r\n").skip(1) {
        let lower = line.to_ascii_lowercase();
        if [
            "via:",
            "v:",
            "from:",
            "f:",
            "call-id:",
            "i:",
            "cseq:",
            "record-route:",
        ]
        .iter()
        .any(|h| lower.starts_with(h))
        {
            out.push_str(line);
            out.push_str("\r\n");
        } else if lower.starts_with("to:") || lower.starts_with("t:") {
            out.push_str(line);
            if !lower.contains(";tag=") {
                out.push_str(";tag=pbx");
            }
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!(
        "Contact: <sip:pbx@{PBX}>\r\nContent-Length: 0\r\n\r\n"
    ));
    out
}

/// Sends, tasks and events out; the tasks answered as a registrar and an
/// authenticator that accepts everyone would.
fn drain(p: &mut Proxy, now: Instant, last_to_pbx: &mut Option<String>) {
    for _ in 0..1000 {
        let mut progressed = false;
        while let Some(out) = p.poll_send() {
            progressed = true;
            if let (Destination::Udp(_), Some(_)) = (out.dest, out.client) {
                assert!(
                    out.data.len() <= MAX_UDP_DATAGRAM,
                    "a {}-byte request sent over UDP",
                    out.data.len()
                );
            }
            let pbx: SocketAddr = PBX.parse().unwrap();
            if out.dest == Destination::Udp(pbx) && out.client.is_some() {
                *last_to_pbx = Some(String::from_utf8_lossy(&out.data).into_owned());
            }
        }
        while let Some(task) = p.poll_task() {
            progressed = true;
            let result = match task {
                Task::Authenticate { key, .. } => TaskResult::Authenticated {
                    key,
                    result: Ok("1001".into()),
                },
                Task::Register { key, request, .. } => TaskResult::Registered {
                    key,
                    response: build::make_response(&request, 200, None, Some("reg")),
                },
                Task::Media(_) => continue,
            };
            p.task_done(now, result);
        }
        while p.poll_dialog_event().is_some() {
            progressed = true;
        }
        if !progressed {
            return;
        }
    }
}

fn feed(p: &mut Proxy, now: Instant, src: Source, bytes: &[u8]) {
    if let Ok(msg) = sip::parse(bytes, 65_535) {
        p.handle_message(now, src, msg);
    }
}

fuzz_target!(init: common::install_panic_hook(), |data: &[u8]| {
    CLOSED.with(|c| c.set(false));
    let mut p = proxy();
    let mut now = Instant::now();
    let mut last_to_pbx: Option<String> = None;
    for chunk in data.split_inner(b"\0\0\0").take(64) {
        let Some((&op, rest)) = chunk.split_first() else {
            continue;
        };
        match op {
            0xFF => {
                CLOSED.with(|c| c.set(true));
                p.flow_closed(now, 1);
            }
            0xFE => {
                let c = usize::from(rest.first().copied().unwrap_or(3));
                let code = CODES[c % CODES.len()];
                if let Some(req) = &last_to_pbx {
                    let answer = pbx_answer(req, code);
                    feed(&mut p, now, source(1), answer.as_bytes());
                }
            }
            _ => {
                now += Duration::from_millis(100 * u64::from(op >> 2));
                feed(&mut p, now, source(op), rest);
            }
        }
        while let Some(t) = p.poll_timeout() {
            if t > now {
                break;
            }
            p.handle_timeout(now);
            drain(&mut p, now, &mut last_to_pbx);
        }
        drain(&mut p, now, &mut last_to_pbx);
    }
    // Let every timer run out: transactions and dialogs end cleanly.
    for _ in 0..10_000 {
        let Some(t) = p.poll_timeout() else { break };
        now = now.max(t);
        p.handle_timeout(now);
        drain(&mut p, now, &mut last_to_pbx);
    }
});

/// `split` on a multi-byte separator.
trait SplitInner {
    fn split_inner<'a>(&'a self, sep: &'a [u8]) -> Box<dyn Iterator<Item = &'a [u8]> + 'a>;
}

impl SplitInner for [u8] {
    fn split_inner<'a>(&'a self, sep: &'a [u8]) -> Box<dyn Iterator<Item = &'a [u8]> + 'a> {
        let mut rest = Some(self);
        Box::new(std::iter::from_fn(move || {
            let r = rest?;
            match r.windows(sep.len()).position(|w| w == sep) {
                Some(i) => {
                    rest = Some(&r[i + sep.len()..]);
                    Some(&r[..i])
                }
                None => {
                    rest = None;
                    Some(r)
                }
            }
        }))
    }
}
