//! The location service seen from the router: registered bindings turned
//! into targets (a WebSocket flow held by this node, a UDP address, or the
//! peer node that holds the flow).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::registrar::aor_for;
use crate::rsip;
use crate::store::LocationService;
use crate::transport::Source;

use super::routing::{FlowBinding, Located, Location, LocationTarget, NoPeers, Peers};

/// Adapts [`LocationService`] to the router's [`Location`] trait.
///
/// All our domains are one user space (a user registered as
/// `1001@localhost` is reached as `1001@127.0.0.1` too), as PBX users expect.
pub struct StoreLocation {
    service: Arc<LocationService>,
    domains: Vec<String>,
    peers: Arc<dyn Peers>,
    peer_timeout: Duration,
}

impl StoreLocation {
    /// Wraps the location service; `domains` are the domains served here.
    pub fn new(service: Arc<LocationService>, domains: Vec<String>) -> Self {
        Self {
            service,
            domains,
            peers: Arc::new(NoPeers),
            peer_timeout: Duration::from_secs(2),
        }
    }

    /// In a cluster: flows of other live nodes are reached through them
    /// (no-answer time `peer_timeout`).
    pub fn with_peers(mut self, peers: Arc<dyn Peers>, peer_timeout: Duration) -> Self {
        self.peers = peers;
        self.peer_timeout = peer_timeout;
        self
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Location for StoreLocation {
    fn lookup(&self, user: &str, domain: &str, source: &Source) -> Located {
        let node = self.service.node_id().to_owned();
        let now = unix_now();
        // A peer forwarded this to us because the flow is here: never bounce it on.
        let from_peer = matches!(source, Source::Udp { .. }) && self.peers.is_peer(source.peer());
        // Keyed like the registrar's AOR: `o%27neil` and `o'neil` are one user.
        let user = crate::sip::user::decode(user);
        let mut aors = vec![aor_for(&user, domain)];
        for d in &self.domains {
            let a = aor_for(&user, d);
            if !aors.contains(&a) {
                aors.push(a);
            }
        }
        let mut found = Located {
            peer_timeout: self.peer_timeout,
            ..Located::default()
        };
        let mut peer_nodes: Vec<String> = Vec::new();
        for aor in &aors {
            for b in self.service.lookup(aor, now) {
                let Ok(contact) = rsip::Uri::try_from(b.contact.as_str()) else {
                    continue;
                };
                let flow = b.flow_id.as_deref().and_then(|f| f.parse::<u64>().ok());
                match flow {
                    Some(flow) if b.node_id == node => {
                        found.targets.push(LocationTarget::Flow(FlowBinding {
                            contact,
                            flow,
                            secure: true,
                        }));
                    }
                    // From a peer: it routed everything else itself.
                    _ if from_peer => {}
                    // A flow held by another node: reached through it, once per node.
                    Some(_) => {
                        if peer_nodes.contains(&b.node_id) {
                            continue;
                        }
                        // The AOR holds the decoded user: it is escaped again to
                        // go into a URI (`"`, `;` or a space raw would not parse).
                        let aor_uri = crate::sip::user::aor_uri(&b.aor);
                        let (Some(addr), Some(aor_uri)) =
                            (self.peers.node_addr(&b.node_id), aor_uri)
                        else {
                            found.unreachable = true;
                            continue;
                        };
                        peer_nodes.push(b.node_id.clone());
                        found
                            .targets
                            .push(LocationTarget::Peer { aor: aor_uri, addr });
                    }
                    None => {
                        if let Some(addr) = b
                            .received
                            .as_deref()
                            .and_then(|r| r.parse::<SocketAddr>().ok())
                        {
                            found.targets.push(LocationTarget::Udp { contact, addr });
                        }
                    }
                }
            }
        }
        found
    }
}
