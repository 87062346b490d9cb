//! One SIP message from the network (a UDP datagram or a WebSocket frame):
//! the sanity layer over rsip, then the helpers every request or response
//! meets before the proxy logic. Nothing here may panic.
#![no_main]

use std::net::SocketAddr;

mod common;

use libfuzzer_sys::fuzz_target;
use rtcgate::proxy::route;
use rtcgate::rsip::{self, Method};
use rtcgate::sip;
use rtcgate::transaction::{build, key};

/// The peer a fuzzed message "arrived" from (UDP/WS source address).
const PEER: &str = "192.0.2.7:50123";

fuzz_target!(init: common::install_panic_hook(), |data: &[u8]| {
    let checked = match sip::parse(data, 65535) {
        Ok(c) => c,
        Err(refused) => {
            // What the transports do with a refused message: a 400/505/513
            // built from the raw header lines, when there are any.
            let reason = refused.error.to_string();
            if let Some(lines) = &refused.reply_headers {
                let _ = sip::error_from_raw(refused.error.status(), lines, &reason, "rtcgate");
            }
            return;
        }
    };
    let _ = (&checked.call_id, checked.cseq, &checked.branch);
    match checked.msg {
        rsip::SipMessage::Request(mut req) => {
            let peer: SocketAddr = PEER.parse().unwrap();
            let _ = sip::stamp_via(&mut req, peer);

            // Transaction matching keys.
            let _ = key::top_via(&req.headers);
            let _ = key::cseq(&req.headers);
            let _ = key::call_id(&req.headers);
            let _ = key::ServerView::of_request(&req);
            let _ = key::ClientView::of_request(&req);

            // Route processing (loose routing, RFC 3261 §16.4).
            let _ = route::facts_of(&req.uri);
            let _ = route::uri_facts(&req.uri.to_string());
            for entry in route::routes(&req) {
                let uri = route::uri_of(&entry);
                let _ = route::uri_facts(uri);
            }
            for h in req.headers.iter() {
                let value = match h {
                    rsip::Header::RecordRoute(v) => v.value(),
                    rsip::Header::Contact(v) => v.value(),
                    rsip::Header::Via(v) => v.value(),
                    rsip::Header::From(v) => v.value(),
                    rsip::Header::To(v) => v.value(),
                    _ => continue,
                };
                for entry in route::split_list(value) {
                    let _ = route::uri_facts(route::uri_of(&entry));
                    let _ = key::tag_param(&entry);
                }
            }
            let mut rewritten = req.clone();
            let routes = route::routes(&req);
            route::set_routes(&mut rewritten, routes.get(1..).unwrap_or_default());
            let _ = build::encode_request(&rewritten);

            // Locally generated answers.
            let reason = String::from_utf8_lossy(&data[..data.len().min(64)]);
            for code in [100u16, 183, 400, 407, 503] {
                let resp = build::make_response(&req, code, Some(&reason), Some("fz1"));
                let _ = build::encode_response(&resp);
            }
            if req.method == Method::Invite {
                if let Ok(cancel) = build::build_cancel(&req) {
                    let bytes = build::encode_request(&cancel);
                    // What we send must parse again.
                    let _ = sip::parse(&bytes, 65535);
                }
            }
            // The stamped request, as forwarded, must parse again too.
            let _ = sip::parse(&build::encode_request(&req), 65535);
        }
        rsip::SipMessage::Response(resp) => {
            let _ = key::top_via(&resp.headers);
            let _ = key::cseq(&resp.headers);
            let _ = key::ClientView::of_response(&resp);
            let _ = key::response_fingerprint(&resp, &std::hash::RandomState::new());
            for h in resp.headers.iter() {
                let value = match h {
                    rsip::Header::RecordRoute(v) => v.value(),
                    rsip::Header::Contact(v) => v.value(),
                    rsip::Header::To(v) => v.value(),
                    _ => continue,
                };
                for entry in route::split_list(value) {
                    let _ = route::uri_facts(route::uri_of(&entry));
                    let _ = key::tag_param(&entry);
                }
            }
            let _ = build::encode_response(&resp);
        }
    }
});
