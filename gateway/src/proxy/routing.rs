//! Where an initial request goes: the one small interface the registrar
//! (location lookup) and PBX routing plug into. For now a static table from
//! the configuration plus registered WebSocket flows.

use std::net::{IpAddr, SocketAddr};

use crate::config::StaticRoute;
use crate::rsip;
use crate::transport::{Destination, FlowId, Kind, Source};

use super::route::UriFacts;

/// One place to send a request.
#[derive(Debug, Clone)]
pub struct Target {
    /// The Request-URI to send.
    pub uri: rsip::Uri,
    /// Where the bytes go.
    pub dest: Destination,
    /// The transport, for Via and Record-Route.
    pub kind: Kind,
    /// The codec policy (by name) for media toward this target.
    pub codec_policy: Option<String>,
}

/// The target for a contact from the location service.
pub fn location_target(t: LocationTarget) -> Target {
    match t {
        LocationTarget::Flow(b) => Target {
            uri: b.contact,
            dest: Destination::Flow(b.flow),
            kind: if b.secure { Kind::Wss } else { Kind::Ws },
            codec_policy: None,
        },
        LocationTarget::Udp { contact, addr } => Target {
            uri: contact,
            dest: Destination::Udp(addr),
            kind: Kind::Udp,
            codec_policy: None,
        },
    }
}

/// The router's answer.
#[derive(Debug)]
pub enum Decision {
    /// Fork to these targets in parallel (one for most calls).
    Forward(Vec<Target>),
    /// Try destinations one after the other (a PBX set with failover).
    Serial(Box<Serial>),
    /// Answer the request with this status and reason.
    Reject(u16, &'static str),
}

/// A serial route: the first target now, the rest on failure.
#[derive(Debug)]
pub struct Serial {
    /// Where the request goes first.
    pub first: Target,
    /// No response at all (not even 100) within this → the next target.
    /// Shorter than timer B, so a dead PBX costs seconds, not 32 s.
    pub no_answer: std::time::Duration,
    /// Picks the next target after a failure.
    pub rest: Box<dyn SerialRoute>,
}

/// Why the current destination of a serial route failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchFailure {
    /// No response within the no-answer time, or the transaction timed out.
    Timeout,
    /// A final response with this status.
    Status(u16),
}

/// What comes after a failed destination.
#[derive(Debug)]
pub enum SerialStep {
    /// Try this target next.
    Next(Box<Target>),
    /// The failure is final for the caller (e.g. 486): relay it.
    Final,
    /// Every destination failed.
    Exhausted,
}

/// The remaining destinations of a serial route; owned by the proxy for the
/// life of the request.
pub trait SerialRoute: Send + std::fmt::Debug {
    /// `failed` (the destination of the current target) failed with
    /// `failure`: where next?
    fn next(&mut self, failed: &Destination, failure: BranchFailure) -> SerialStep;
}

/// A registered contact reachable over a flow.
#[derive(Debug, Clone)]
pub struct FlowBinding {
    /// The Contact URI the UA registered.
    pub contact: rsip::Uri,
    /// The flow it registered over.
    pub flow: FlowId,
    /// Whether that flow is TLS.
    pub secure: bool,
}

/// Looks up registered users (implemented by the registrar).
pub trait Location: Send + Sync {
    /// The live contacts of `user@domain`.
    fn lookup(&self, user: &str, domain: &str) -> Vec<LocationTarget>;
}

/// A contact from the location service.
#[derive(Debug, Clone)]
pub enum LocationTarget {
    /// Reachable down an open WebSocket flow.
    Flow(FlowBinding),
    /// Reachable at a UDP address.
    Udp {
        /// The Contact URI.
        contact: rsip::Uri,
        /// Where to send (received address for NATed UAs).
        addr: SocketAddr,
    },
}

/// Routing of initial requests.
pub trait Router: Send + Sync {
    /// Decides where an initial (out-of-dialog) request addressed to one of
    /// our domains goes.
    fn route(&self, req: &rsip::Request, uri: &UriFacts, source: &Source) -> Decision;

    /// Whether requests from `ip` are accepted without authentication
    /// (a PBX of a destination set).
    fn is_trusted(&self, _ip: IpAddr) -> bool {
        false
    }
}

/// Local users first (location), then the static table.
pub struct StaticRouter {
    routes: Vec<StaticRoute>,
    location: Option<std::sync::Arc<dyn Location>>,
}

impl StaticRouter {
    /// A router over the configured table and an optional location service.
    pub fn new(routes: Vec<StaticRoute>, location: Option<std::sync::Arc<dyn Location>>) -> Self {
        Self { routes, location }
    }
}

impl Router for StaticRouter {
    fn route(&self, req: &rsip::Request, uri: &UriFacts, _source: &Source) -> Decision {
        let user = uri.user.as_deref().unwrap_or("");
        if let Some(location) = &self.location {
            let found = location.lookup(user, &uri.host);
            if !found.is_empty() {
                let targets = found.into_iter().map(location_target).collect();
                return Decision::Forward(targets);
            }
        }
        if let Some(r) = self
            .routes
            .iter()
            .find(|r| !user.is_empty() && user.starts_with(&r.prefix))
        {
            let mut new_uri = req.uri.clone();
            new_uri.host_with_port = rsip::HostWithPort {
                host: rsip::Host::IpAddr(r.destination.ip()),
                port: Some(rsip::Port::from(r.destination.port())),
            };
            return Decision::Forward(vec![Target {
                uri: new_uri,
                dest: Destination::Udp(r.destination),
                kind: Kind::Udp,
                codec_policy: r.codec_policy.clone(),
            }]);
        }
        Decision::Reject(404, "Not Found")
    }
}

/// Where a URI that is not ours points (no DNS: IP literals and localhost).
pub fn resolve(uri: &UriFacts) -> Result<(Destination, Kind), (u16, &'static str)> {
    match uri.transport.as_deref() {
        Some("ws") | Some("wss") => return Err((430, "Flow Failed")),
        Some("udp") | None => {}
        Some(_) => return Err((503, "Unsupported Transport")),
    }
    let ip: IpAddr = if uri.host.eq_ignore_ascii_case("localhost") {
        IpAddr::from([127, 0, 0, 1])
    } else {
        uri.host.parse().map_err(|_| (503, "Cannot Resolve Host"))?
    };
    Ok((
        Destination::Udp(SocketAddr::new(ip, uri.port.unwrap_or(5060))),
        Kind::Udp,
    ))
}
