//! Scale-out: several rtcgate nodes behind a WSS load balancer, sharing the
//! SQL database (`[cluster]`, docs/SCALE_OUT.md).
//!
//! Each node writes a heartbeat row to `nodes` (its id, its advertised SIP
//! address, an expiry) and periodically reads the live nodes ([`PeerTable`])
//! and the other nodes' registrations (into the
//! [`LocationService`] cache). The proxy then forwards a request for a user
//! whose flow lives on another node to that node over UDP, and trusts requests
//! from live peers. Adding a node is starting it; a node that stops beating is
//! dead once its row expires, and its users get 480.

mod config;
mod peers;

pub use config::ClusterConfig;
pub use peers::PeerTable;

use std::sync::Arc;
use std::time::Duration;

use crate::store::{LocationService, NodeRow, Store, StoreError};

use peers::unix_now;

/// A running membership: heartbeat and sync in one task, stopped on drop.
#[derive(Debug)]
pub struct Cluster {
    peers: Arc<PeerTable>,
    store: Store,
    node_id: String,
    task: tokio::task::JoinHandle<()>,
}

/// One round of the membership loop: beat (when due), then read the live
/// nodes and the other nodes' registrations.
struct Round {
    store: Store,
    location: Arc<LocationService>,
    peers: Arc<PeerTable>,
    me: NodeRow,
    ttl: i64,
}

impl Round {
    async fn beat(&mut self, now: i64) -> Result<(), StoreError> {
        self.me.expires_at = now.saturating_add(self.ttl);
        self.me.updated_at = now;
        self.store.upsert_node(&self.me).await
    }

    async fn sync(&self, now: i64) -> Result<(usize, usize), StoreError> {
        let nodes = self.store.live_nodes(now).await?;
        let peers = self.peers.replace(&nodes);
        let remote = self.store.remote_bindings(&self.me.node_id, now).await?;
        let bindings = self.location.replace_remote(remote);
        Ok((peers, bindings))
    }
}

impl Cluster {
    /// Joins the cluster (`LocationService::load` already dropped this node's
    /// flow bindings of a previous life): writes the first heartbeat and
    /// reads the peers before returning (so the node is known before it takes
    /// traffic), then keeps both going.
    pub async fn start(
        store: Store,
        location: Arc<LocationService>,
        node_id: &str,
        config: &ClusterConfig,
    ) -> Result<Self, StoreError> {
        let advertise = config.advertise.map(|a| a.to_string()).unwrap_or_default();
        let now = unix_now();
        let peers = Arc::new(PeerTable::new(node_id));
        let mut round = Round {
            store: store.clone(),
            location,
            peers: peers.clone(),
            me: NodeRow {
                node_id: node_id.to_owned(),
                sip_addr: advertise.clone(),
                started_at: now,
                expires_at: now,
                updated_at: now,
            },
            ttl: i64::try_from(config.node_ttl_s).unwrap_or(i64::MAX),
        };
        round.beat(now).await?;
        let (n_peers, n_bindings) = round.sync(now).await?;
        tracing::info!(
            node_id,
            advertise,
            peers = n_peers,
            remote_bindings = n_bindings,
            "joined the cluster"
        );
        let heartbeat = Duration::from_secs(config.heartbeat_s.max(1));
        let sync = Duration::from_millis(config.sync_ms.max(100));
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(sync);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut last_beat = tokio::time::Instant::now();
            loop {
                tick.tick().await;
                let now = unix_now();
                if last_beat.elapsed() >= heartbeat {
                    match round.beat(now).await {
                        Ok(()) => last_beat = tokio::time::Instant::now(),
                        // Retried on the next tick; the row outlives a few misses.
                        Err(e) => tracing::warn!(error = %e, "cluster heartbeat failed"),
                    }
                }
                match round.sync(now).await {
                    Ok((p, b)) => tracing::trace!(peers = p, remote_bindings = b, "cluster sync"),
                    // The last view stays; peers still expire by their own deadline.
                    Err(e) => tracing::warn!(error = %e, "cluster sync failed"),
                }
            }
        });
        Ok(Self {
            peers,
            store,
            node_id: node_id.to_owned(),
            task,
        })
    }

    /// The live peers as last read.
    pub fn peers(&self) -> Arc<PeerTable> {
        self.peers.clone()
    }

    /// Leaves gracefully: stops beating and deletes this node's row, so peers
    /// stop routing here at their next sync instead of after the TTL.
    pub async fn leave(&self) {
        self.task.abort();
        match self.store.remove_node(&self.node_id).await {
            Ok(_) => tracing::info!(node_id = %self.node_id, "left the cluster"),
            Err(e) => {
                tracing::warn!(error = %e, "could not remove this node's row; it expires by itself")
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.task.abort();
    }
}
