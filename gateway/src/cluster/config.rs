//! `[cluster]`: several rtcgate nodes sharing one SQL database.

use std::net::SocketAddr;

use serde::Deserialize;

/// Scale-out settings. Clustering is on when `advertise` is set.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's SIP address for traffic from other nodes (UDP `ip:port`), written
    /// to the `nodes` table. It must be an address this node's UDP socket sends from
    /// (one of `sip.udp_listen`), because peers trust inter-node requests by source.
    pub advertise: Option<SocketAddr>,
    /// Seconds between heartbeats (the node's row is refreshed).
    pub heartbeat_s: u64,
    /// A node whose row was not refreshed for this long is dead.
    pub node_ttl_s: u64,
    /// Milliseconds between reads of the other nodes' registrations and of the
    /// live nodes: how long a registration takes to be routable cluster-wide.
    pub sync_ms: u64,
    /// A request forwarded to a peer node that gives no response at all (not even
    /// 100) within this many milliseconds fails over, finally with 480.
    pub peer_timeout_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            advertise: None,
            heartbeat_s: 5,
            node_ttl_s: 15,
            sync_ms: 1000,
            peer_timeout_ms: 2000,
        }
    }
}

impl ClusterConfig {
    /// Whether this node runs as part of a cluster.
    pub fn enabled(&self) -> bool {
        self.advertise.is_some()
    }

    /// Checks the values; `udp_listen` are the node's UDP listen addresses.
    /// Errors name the key.
    pub fn validate(&self, udp_listen: &[SocketAddr]) -> Result<(), (String, String)> {
        let bad = |key: &str, msg: String| Err((format!("cluster.{key}"), msg));
        let Some(adv) = self.advertise else {
            return Ok(());
        };
        if adv.ip().is_unspecified() || adv.port() == 0 {
            return bad(
                "advertise",
                format!("{adv} must be a concrete address and port other nodes can reach"),
            );
        }
        let listens = udp_listen
            .iter()
            .any(|l| l.port() == adv.port() && (l.ip() == adv.ip() || l.ip().is_unspecified()));
        if !listens {
            return bad(
                "advertise",
                format!(
                    "{adv} is not one of sip.udp_listen (peers trust inter-node SIP by its source address)"
                ),
            );
        }
        if self.heartbeat_s == 0 || self.heartbeat_s > 3600 {
            return bad("heartbeat_s", "must be between 1 and 3600".into());
        }
        if self.node_ttl_s <= self.heartbeat_s {
            return bad(
                "node_ttl_s",
                "must be larger than cluster.heartbeat_s (a missed beat is not a death)".into(),
            );
        }
        if !(100..=60_000).contains(&self.sync_ms) {
            return bad("sync_ms", "must be between 100 and 60000".into());
        }
        if !(100..=30_000).contains(&self.peer_timeout_ms) {
            return bad("peer_timeout_ms", "must be between 100 and 30000".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(adv: &str) -> ClusterConfig {
        ClusterConfig {
            advertise: Some(adv.parse().unwrap()),
            ..ClusterConfig::default()
        }
    }

    #[test]
    fn off_by_default_and_always_valid_then() {
        let c = ClusterConfig::default();
        assert!(!c.enabled());
        assert!(c.validate(&[]).is_ok());
    }

    #[test]
    fn advertise_must_be_a_listen_address() {
        let listen: Vec<SocketAddr> = vec!["10.0.0.5:5060".parse().unwrap()];
        assert!(on("10.0.0.5:5060").validate(&listen).is_ok());
        let any: Vec<SocketAddr> = vec!["0.0.0.0:5060".parse().unwrap()];
        assert!(on("10.0.0.5:5060").validate(&any).is_ok());
        let (key, _) = on("10.0.0.6:5060").validate(&listen).unwrap_err();
        assert_eq!(key, "cluster.advertise");
        let (key, _) = on("0.0.0.0:5060").validate(&any).unwrap_err();
        assert_eq!(key, "cluster.advertise");
    }

    #[test]
    fn ttl_must_outlive_the_heartbeat() {
        let listen: Vec<SocketAddr> = vec!["10.0.0.5:5060".parse().unwrap()];
        let mut c = on("10.0.0.5:5060");
        c.node_ttl_s = c.heartbeat_s;
        assert_eq!(c.validate(&listen).unwrap_err().0, "cluster.node_ttl_s");
        let mut c = on("10.0.0.5:5060");
        c.sync_ms = 10;
        assert_eq!(c.validate(&listen).unwrap_err().0, "cluster.sync_ms");
    }
}
