//! The location service seen from the router: registered bindings turned
//! into targets (a WebSocket flow held by this node, or a UDP address).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::registrar::aor_for;
use crate::rsip;
use crate::store::LocationService;

use super::routing::{FlowBinding, Location, LocationTarget};

/// Adapts [`LocationService`] to the router's [`Location`] trait.
///
/// All our domains are one user space (a user registered as
/// `1001@localhost` is reached as `1001@127.0.0.1` too), as PBX users expect.
pub struct StoreLocation {
    service: Arc<LocationService>,
    domains: Vec<String>,
}

impl StoreLocation {
    /// Wraps the location service; `domains` are the domains served here.
    pub fn new(service: Arc<LocationService>, domains: Vec<String>) -> Self {
        Self { service, domains }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Location for StoreLocation {
    fn lookup(&self, user: &str, domain: &str) -> Vec<LocationTarget> {
        let node = self.service.node_id().to_owned();
        let now = unix_now();
        let mut aors = vec![aor_for(user, domain)];
        for d in &self.domains {
            let a = aor_for(user, d);
            if !aors.contains(&a) {
                aors.push(a);
            }
        }
        aors.iter()
            .flat_map(|aor| self.service.lookup(aor, now))
            .filter_map(|b| {
                let contact = rsip::Uri::try_from(b.contact.as_str()).ok()?;
                if let Some(flow) = b.flow_id.as_deref().and_then(|f| f.parse::<u64>().ok()) {
                    // A flow held by another node is not reachable from here.
                    if b.node_id != node {
                        return None;
                    }
                    return Some(LocationTarget::Flow(FlowBinding {
                        contact,
                        flow,
                        secure: true,
                    }));
                }
                let addr: SocketAddr = b.received.as_deref()?.parse().ok()?;
                Some(LocationTarget::Udp { contact, addr })
            })
            .collect()
    }
}
