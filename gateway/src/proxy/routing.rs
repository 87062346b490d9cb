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
        LocationTarget::Peer { aor, addr } => Target {
            uri: aor,
            dest: Destination::Udp(addr),
            kind: Kind::Udp,
            codec_policy: None,
        },
    }
}

/// What the location service found: `None` when it has no reachable target
/// (the router goes on with its rules). Targets that are all on peer nodes
/// are tried one after the other with the peer timeout, so a node that died
/// between heartbeats costs seconds, not timer B.
pub fn location_decision(found: Located) -> Option<Decision> {
    if found.targets.is_empty() {
        return None;
    }
    let all_peers = found
        .targets
        .iter()
        .all(|t| matches!(t, LocationTarget::Peer { .. }));
    let mut targets: std::collections::VecDeque<Target> =
        found.targets.into_iter().map(location_target).collect();
    if !all_peers {
        return Some(Decision::Forward(targets.into()));
    }
    let first = targets.pop_front()?;
    Some(Decision::Serial(Box::new(Serial {
        first,
        no_answer: found.peer_timeout,
        rest: Box::new(PeerSerial { rest: targets }),
    })))
}

/// The remaining peer nodes holding a user's flows.
#[derive(Debug)]
struct PeerSerial {
    rest: std::collections::VecDeque<Target>,
}

impl SerialRoute for PeerSerial {
    fn next(&mut self, _failed: &Destination, failure: BranchFailure) -> SerialStep {
        match failure {
            // The peer answered (486, 480 for a flow it lost...): that is the answer.
            BranchFailure::Status(_) => SerialStep::Final,
            BranchFailure::Timeout => match self.rest.pop_front() {
                Some(t) => SerialStep::Next(Box::new(t)),
                None => SerialStep::Exhausted,
            },
        }
    }

    fn exhausted(&self) -> (u16, &'static str) {
        (480, "Temporarily Unavailable")
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

    /// The answer to the caller when every destination failed.
    fn exhausted(&self) -> (u16, &'static str) {
        (503, "All Destinations Failed")
    }
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
    /// The live contacts of `user@domain` for a request from `source` (a
    /// request from a peer node is only delivered to this node's own flows).
    fn lookup(&self, user: &str, domain: &str, source: &Source) -> Located;
}

/// The answer of a [`Location`] lookup.
#[derive(Debug, Clone, Default)]
pub struct Located {
    /// Where the user can be reached.
    pub targets: Vec<LocationTarget>,
    /// Bindings exist that cannot be reached (their node is dead): when nothing
    /// else routes the request, the answer is 480, not 404.
    pub unreachable: bool,
    /// No-answer time of a peer node (see [`location_decision`]).
    pub peer_timeout: std::time::Duration,
}

impl Located {
    /// Targets found, none unreachable.
    pub fn targets(targets: Vec<LocationTarget>) -> Self {
        Self {
            targets,
            ..Self::default()
        }
    }
}

/// The other nodes of a cluster, as the proxy sees them.
pub trait Peers: Send + Sync {
    /// Whether `addr` is the advertised SIP address of a live peer node
    /// (requests from there are trusted; media is the other node's).
    fn is_peer(&self, addr: SocketAddr) -> bool;
    /// The advertised SIP address of live node `node_id` (`None`: unknown or dead).
    fn node_addr(&self, node_id: &str) -> Option<SocketAddr>;
}

/// No cluster: no peers.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPeers;

impl Peers for NoPeers {
    fn is_peer(&self, _addr: SocketAddr) -> bool {
        false
    }
    fn node_addr(&self, _node_id: &str) -> Option<SocketAddr> {
        None
    }
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
    /// Held by another node of the cluster: the request goes there with the
    /// AOR as Request-URI, and that node delivers it down its flows.
    Peer {
        /// `sip:user@domain` as registered.
        aor: rsip::Uri,
        /// The node's advertised SIP address.
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
    fn route(&self, req: &rsip::Request, uri: &UriFacts, source: &Source) -> Decision {
        let user = uri.user.as_deref().unwrap_or("");
        let mut unreachable = false;
        if let Some(location) = &self.location {
            let found = location.lookup(user, &uri.host, source);
            unreachable = found.unreachable;
            if let Some(d) = location_decision(found) {
                return d;
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
        if unreachable {
            return Decision::Reject(480, "Temporarily Unavailable");
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
