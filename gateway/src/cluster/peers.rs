//! The live nodes of the cluster as last read from the `nodes` table. Plain
//! data driven by `now`; the shell in [`super`] refreshes it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::RwLock;

use crate::store::NodeRow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Peer {
    addr: SocketAddr,
    expires_at: i64,
}

/// Other nodes by id, with their advertised SIP address and heartbeat expiry.
#[derive(Debug)]
pub struct PeerTable {
    me: String,
    peers: RwLock<HashMap<String, Peer>>,
}

impl PeerTable {
    /// An empty table for node `me` (its own row is never a peer).
    pub fn new(me: impl Into<String>) -> Self {
        Self {
            me: me.into(),
            peers: RwLock::new(HashMap::new()),
        }
    }

    /// Replaces the table with `rows` (a read of the live nodes). Rows with an
    /// address that does not parse are skipped. Returns the number of peers.
    pub fn replace(&self, rows: &[NodeRow]) -> usize {
        let mut next = HashMap::with_capacity(rows.len());
        for r in rows.iter().filter(|r| r.node_id != self.me) {
            match r.sip_addr.parse::<SocketAddr>() {
                Ok(addr) => {
                    next.insert(
                        r.node_id.clone(),
                        Peer {
                            addr,
                            expires_at: r.expires_at,
                        },
                    );
                }
                Err(_) => {
                    tracing::warn!(node = %r.node_id, addr = %r.sip_addr, "node row with a bad address ignored");
                }
            }
        }
        let n = next.len();
        // A poisoned lock only means a panic elsewhere mid-swap of a plain map.
        *self.peers.write().unwrap_or_else(|e| e.into_inner()) = next;
        n
    }

    /// The address of `node_id` if it is alive at `now`.
    pub fn addr_of(&self, node_id: &str, now: i64) -> Option<SocketAddr> {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(node_id)
            .filter(|p| p.expires_at > now)
            .map(|p| p.addr)
    }

    /// Whether `addr` is the advertised address of a node alive at `now`.
    pub fn is_peer_at(&self, addr: SocketAddr, now: i64) -> bool {
        self.peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|p| p.addr == addr && p.expires_at > now)
    }

    /// Live peers at `now`: (node id, address), by node id.
    pub fn live(&self, now: i64) -> Vec<(String, SocketAddr)> {
        let mut v: Vec<(String, SocketAddr)> = self
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, p)| p.expires_at > now)
            .map(|(id, p)| (id.clone(), p.addr))
            .collect();
        v.sort();
        v
    }
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl crate::proxy::routing::Peers for PeerTable {
    fn is_peer(&self, addr: SocketAddr) -> bool {
        self.is_peer_at(addr, unix_now())
    }

    fn node_addr(&self, node_id: &str) -> Option<SocketAddr> {
        self.addr_of(node_id, unix_now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, addr: &str, expires_at: i64) -> NodeRow {
        NodeRow {
            node_id: id.into(),
            sip_addr: addr.into(),
            started_at: 0,
            expires_at,
            updated_at: 0,
        }
    }

    #[test]
    fn own_row_and_bad_addresses_are_not_peers() {
        let t = PeerTable::new("a");
        let n = t.replace(&[
            row("a", "127.0.0.11:5060", 100),
            row("b", "127.0.0.12:5060", 100),
            row("c", "not an address", 100),
        ]);
        assert_eq!(n, 1);
        assert_eq!(t.addr_of("a", 50), None);
        assert_eq!(t.addr_of("b", 50), Some("127.0.0.12:5060".parse().unwrap()));
        assert!(t.is_peer_at("127.0.0.12:5060".parse().unwrap(), 50));
        assert!(!t.is_peer_at("127.0.0.12:5061".parse().unwrap(), 50));
        assert!(!t.is_peer_at("127.0.0.11:5060".parse().unwrap(), 50));
    }

    #[test]
    fn a_peer_dies_when_its_heartbeat_expires() {
        let t = PeerTable::new("a");
        t.replace(&[row("b", "127.0.0.12:5060", 100)]);
        assert_eq!(t.live(99).len(), 1);
        assert_eq!(t.addr_of("b", 100), None);
        assert!(!t.is_peer_at("127.0.0.12:5060".parse().unwrap(), 100));
        assert!(t.live(100).is_empty());
        // A later read without it forgets it at once.
        t.replace(&[]);
        assert_eq!(t.addr_of("b", 0), None);
    }
}
