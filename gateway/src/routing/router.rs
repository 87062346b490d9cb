//! The proxy's [`Router`] over the routing table and the location service:
//! `Arc::new(RoutingRouter::new(service.handle(), location))` replaces the
//! `StaticRouter`.

use std::sync::Arc;

use crate::proxy::route::UriFacts;
use crate::proxy::routing::{
    BranchFailure, Decision, Location, Router, Serial, SerialRoute, SerialStep, Target,
    location_decision,
};
use crate::rsip;
use crate::transport::{Destination, Kind, Source};

use super::config::Transport;
use super::shell::RoutingHandle;
use super::table::{CallFailure, Failover, PbxRoute, RouteOutcome, RouteQuery, RoutedDestination};

/// Routes initial requests by the configured rules: registered users are
/// forked to in parallel, a PBX set is tried serially with failover.
pub struct RoutingRouter {
    handle: RoutingHandle,
    location: Option<Arc<dyn Location>>,
}

/// What [`RoutingRouter::route_pbx`] found.
#[derive(Debug)]
pub enum PbxDecision {
    /// Registered users (fork to all in parallel) or a final rejection.
    Decided(Decision),
    /// A destination set: try `targets` one after the other; `route` is what
    /// to hand to `next_after_failure`.
    Serial {
        /// The route (set, rewritten user, timeouts, failover codes).
        route: PbxRoute,
        /// One target per destination, same order as `route.destinations`.
        targets: Vec<Target>,
    },
}

impl RoutingRouter {
    /// A router over `handle`'s table and an optional location service.
    pub fn new(handle: RoutingHandle, location: Option<Arc<dyn Location>>) -> Self {
        Self { handle, location }
    }

    /// Routes a request, keeping a PBX set's whole ordered list.
    pub fn route_pbx(&self, req: &rsip::Request, uri: &UriFacts, source: &Source) -> PbxDecision {
        let user = uri.user.as_deref().unwrap_or("");
        let call_id = crate::proxy::call_id_of(&req.headers);
        let query = RouteQuery {
            user,
            domain: &uri.host,
            call_id: &call_id,
            source_ip: Some(source.peer().ip()),
        };
        let mut outcome = self.handle.route(&query);
        // Registered, but only on nodes that are gone: 480 rather than 404.
        let mut unreachable = false;
        loop {
            match outcome {
                RouteOutcome::Local { user, resume } => {
                    let found = self
                        .location
                        .as_ref()
                        .map(|l| l.lookup(&user, &uri.host, source))
                        .unwrap_or_default();
                    unreachable |= found.unreachable;
                    if let Some(d) = location_decision(found) {
                        return PbxDecision::Decided(d);
                    }
                    outcome = self.handle.route_from(&query, resume);
                }
                RouteOutcome::Reject { code: 404, .. } if unreachable => {
                    return PbxDecision::Decided(Decision::Reject(480, "Temporarily Unavailable"));
                }
                RouteOutcome::Reject { code, reason } => {
                    return PbxDecision::Decided(Decision::Reject(code, reason));
                }
                RouteOutcome::Pbx(route) => {
                    let targets = route
                        .destinations
                        .iter()
                        .map(|d| pbx_target(req, &route.user, d))
                        .collect();
                    return PbxDecision::Serial { route, targets };
                }
            }
        }
    }
}

impl Router for RoutingRouter {
    fn route(&self, req: &rsip::Request, uri: &UriFacts, source: &Source) -> Decision {
        match self.route_pbx(req, uri, source) {
            PbxDecision::Decided(d) => d,
            PbxDecision::Serial { route, targets } => {
                let Some(first) = targets.into_iter().next() else {
                    return Decision::Reject(503, "all destinations down");
                };
                Decision::Serial(Box::new(Serial {
                    first,
                    no_answer: route.failover_timeout,
                    rest: Box::new(PbxSerial {
                        handle: self.handle.clone(),
                        uri: req.uri.clone(),
                        route,
                    }),
                }))
            }
        }
    }

    fn is_trusted(&self, ip: std::net::IpAddr) -> bool {
        self.handle.is_trusted(ip).is_some()
    }
}

/// The rest of a PBX set for one call: asks the table (whose health may
/// have changed meanwhile) for the next destination.
#[derive(Debug)]
struct PbxSerial {
    handle: RoutingHandle,
    uri: rsip::Uri,
    route: PbxRoute,
}

impl SerialRoute for PbxSerial {
    fn next(&mut self, failed: &Destination, failure: BranchFailure) -> SerialStep {
        let Destination::Udp(addr) = failed else {
            return SerialStep::Exhausted;
        };
        let failure = match failure {
            BranchFailure::Timeout => CallFailure::Timeout,
            BranchFailure::Status(code) => CallFailure::Status(code),
        };
        match self.handle.next_after_failure(&self.route, *addr, failure) {
            Failover::Next(dest) => {
                tracing::info!(set = %self.route.set, failed = %addr, next = %dest.address, ?failure, "failover");
                SerialStep::Next(Box::new(target_for(&self.uri, &self.route.user, &dest)))
            }
            Failover::Stop => SerialStep::Final,
            Failover::Exhausted => {
                tracing::warn!(set = %self.route.set, failed = %addr, ?failure, "every destination failed");
                SerialStep::Exhausted
            }
        }
    }
}

/// The Request-URI toward one destination: user rewritten, host:port the
/// destination's, other parts (parameters) kept.
pub fn pbx_target(req: &rsip::Request, user: &str, dest: &RoutedDestination) -> Target {
    target_for(&req.uri, user, dest)
}

fn target_for(request_uri: &rsip::Uri, user: &str, dest: &RoutedDestination) -> Target {
    let mut uri = request_uri.clone();
    uri.host_with_port = rsip::HostWithPort {
        host: rsip::Host::IpAddr(dest.address.ip()),
        port: Some(rsip::Port::from(dest.address.port())),
    };
    match &mut uri.auth {
        Some(auth) => auth.user = user.to_owned(),
        None if !user.is_empty() => {
            uri.auth = Some(rsip::Auth {
                user: user.to_owned(),
                password: None,
            });
        }
        None => {}
    }
    let kind = match dest.transport {
        Transport::Udp => Kind::Udp,
    };
    Target {
        uri,
        dest: Destination::Udp(dest.address),
        kind,
        codec_policy: dest.codec_policy.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Instant;

    use super::*;
    use crate::proxy::route::facts_of;
    use crate::proxy::routing::{FlowBinding, Located, LocationTarget};
    use crate::routing::{RoutingConfig, RoutingTable};

    struct OneUser;

    impl Location for OneUser {
        fn lookup(&self, user: &str, _domain: &str, _source: &Source) -> Located {
            if user != "1001" {
                return Located::default();
            }
            let contact = rsip::Uri::try_from("sip:abc@df7jal23ls0d.invalid;transport=ws");
            Located::targets(
                contact
                    .map(|contact| {
                        vec![LocationTarget::Flow(FlowBinding {
                            contact,
                            flow: 42,
                            secure: true,
                        })]
                    })
                    .unwrap_or_default(),
            )
        }
    }

    fn request(uri: &str) -> rsip::Request {
        let text = format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5099;branch=z9hG4bK1\r\n\
             From: <sip:a@gw.example>;tag=1\r\nTo: <{uri}>\r\nCall-ID: cid-1\r\n\
             CSeq: 1 INVITE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        rsip::Request::try_from(text.as_str()).expect("test request parses")
    }

    fn router() -> RoutingRouter {
        let cfg: RoutingConfig = toml::from_str(
            r#"
            local = "first"
            [[sets]]
            name = "pbx"
            destinations = [
              { address = "127.0.0.1:5080" },
              { address = "127.0.0.1:5082", priority = 1 },
            ]
            [[rules]]
            range = "1000-1999"
            set = "pbx"
            [[rules]]
            e164 = true
            set = "pbx"
            strip = 1
            add_prefix = "00"
            "#,
        )
        .expect("config");
        let table = RoutingTable::new(&cfg, Instant::now()).expect("table");
        RoutingRouter::new(RoutingHandle::new(table), Some(Arc::new(OneUser)))
    }

    fn source() -> Source {
        Source::Udp {
            local: SocketAddr::from(([127, 0, 0, 1], 5060)),
            peer: SocketAddr::from(([127, 0, 0, 1], 5099)),
        }
    }

    #[test]
    fn registered_user_then_pbx_then_404() {
        let r = router();
        let req = request("sip:1001@gw.example");
        match r.route(&req, &facts_of(&req.uri), &source()) {
            Decision::Forward(t) => {
                assert_eq!(t.len(), 1);
                assert!(matches!(t[0].dest, Destination::Flow(42)));
                assert_eq!(t[0].kind, Kind::Wss);
            }
            d => panic!("expected the flow, got {d:?}"),
        }
        let req = request("sip:1500@gw.example;user=phone");
        match r.route(&req, &facts_of(&req.uri), &source()) {
            Decision::Serial(mut s) => {
                assert_eq!(
                    s.first.uri.to_string(),
                    "sip:1500@127.0.0.1:5080;user=phone"
                );
                assert!(matches!(s.first.dest, Destination::Udp(a) if a.port() == 5080));
                // A 503 moves on to the backup, a 486 is final, then nothing is left.
                match s.rest.next(&s.first.dest, BranchFailure::Status(503)) {
                    SerialStep::Next(t) => {
                        assert_eq!(t.uri.to_string(), "sip:1500@127.0.0.1:5082;user=phone");
                        assert!(matches!(
                            s.rest.next(&t.dest, BranchFailure::Timeout),
                            SerialStep::Exhausted
                        ));
                    }
                    other => panic!("expected the backup, got {other:?}"),
                }
                assert!(matches!(
                    s.rest.next(&s.first.dest, BranchFailure::Status(486)),
                    SerialStep::Final
                ));
            }
            d => panic!("expected the PBX, got {d:?}"),
        }
        let req = request("sip:+4930123456@gw.example");
        match r.route_pbx(&req, &facts_of(&req.uri), &source()) {
            PbxDecision::Serial { route, targets } => {
                assert_eq!(route.user, "004930123456");
                assert_eq!(targets.len(), 2);
                assert_eq!(
                    targets[1].uri.to_string(),
                    "sip:004930123456@127.0.0.1:5082"
                );
            }
            d => panic!("expected serial, got {d:?}"),
        }
        let req = request("sip:alice@gw.example");
        assert!(matches!(
            r.route(&req, &facts_of(&req.uri), &source()),
            Decision::Reject(404, _)
        ));
    }
}
