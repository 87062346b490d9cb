//! The configured rtpengine instances: health, HRW ranking, and the call → instance map.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::hrw;

/// Index of an instance in the configured list.
pub type InstanceId = usize;

/// One configured rtpengine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceConfig {
    /// Its ng control address.
    pub addr: SocketAddr,
    /// Relative share of new calls (0 = take no new calls, e.g. to drain it).
    pub weight: u32,
}

impl InstanceConfig {
    /// An instance with weight 1.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, weight: 1 }
    }
}

/// Whether an instance takes new calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Answering; takes new calls.
    Up,
    /// Stopped answering; skipped for new calls until it answers again.
    Down,
}

/// A snapshot of one instance's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    /// Its index.
    pub id: InstanceId,
    /// Its ng address.
    pub addr: SocketAddr,
    /// Its configured weight.
    pub weight: u32,
    /// Up or down.
    pub health: Health,
    /// Timeouts (all tries exhausted) since the last reply.
    pub consecutive_timeouts: u32,
    /// When it was last marked down, if it is down.
    pub down_since: Option<Instant>,
    /// Round-trip time of the last reply.
    pub last_rtt: Option<Duration>,
    /// Calls currently mapped to it.
    pub calls: usize,
}

#[derive(Debug)]
struct Instance {
    config: InstanceConfig,
    key: Vec<u8>,
    health: Health,
    consecutive_timeouts: u32,
    down_since: Option<Instant>,
    last_rtt: Option<Duration>,
}

/// Instances, their health, and which instance owns which call.
#[derive(Debug)]
pub struct InstanceSet {
    instances: Vec<Instance>,
    down_after: u32,
    calls: HashMap<String, InstanceId>,
}

impl InstanceSet {
    /// A set where every instance starts up. An instance is marked down after
    /// `down_after` consecutive timeouts (at least 1).
    pub fn new(configs: Vec<InstanceConfig>, down_after: u32) -> Self {
        let instances = configs
            .into_iter()
            .map(|config| Instance {
                // Ranking uses the configured address text, identical on every gateway node.
                key: config.addr.to_string().into_bytes(),
                config,
                health: Health::Up,
                consecutive_timeouts: 0,
                down_since: None,
                last_rtt: None,
            })
            .collect();
        Self {
            instances,
            down_after: down_after.max(1),
            calls: HashMap::new(),
        }
    }

    /// Number of configured instances.
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    /// Whether none is configured.
    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// Address of an instance.
    pub fn addr(&self, id: InstanceId) -> Option<SocketAddr> {
        self.instances.get(id).map(|i| i.config.addr)
    }

    /// The instance configured with this address, if any.
    pub fn by_addr(&self, addr: SocketAddr) -> Option<InstanceId> {
        self.instances.iter().position(|i| i.config.addr == addr)
    }

    /// Health of an instance.
    pub fn health(&self, id: InstanceId) -> Option<Health> {
        self.instances.get(id).map(|i| i.health)
    }

    /// Since when `id` has been down (`None` while up or unknown).
    pub fn down_since(&self, id: InstanceId) -> Option<Instant> {
        self.instances.get(id).and_then(|i| i.down_since)
    }

    /// All configured instances ranked for `call_id`, ignoring health.
    pub fn rank(&self, call_id: &str) -> Vec<InstanceId> {
        hrw::rank(
            call_id.as_bytes(),
            self.instances
                .iter()
                .map(|i| (i.key.as_slice(), i.config.weight)),
        )
    }

    /// Candidates for a new call, best first: up instances by rank, then down ones as a
    /// last resort (health may be stale; trying beats failing outright). Weight-0
    /// instances are excluded unless nothing else is configured.
    pub fn new_call_candidates(&self, call_id: &str) -> Vec<InstanceId> {
        let ranked = self.rank(call_id);
        let weighted =
            |id: &InstanceId| self.instances.get(*id).is_some_and(|i| i.config.weight > 0);
        let up = |id: &InstanceId| self.health(*id) == Some(Health::Up);
        let mut out: Vec<InstanceId> = ranked
            .iter()
            .copied()
            .filter(|id| weighted(id) && up(id))
            .collect();
        out.extend(ranked.iter().copied().filter(|id| weighted(id) && !up(id)));
        if out.is_empty() {
            out = ranked;
        }
        out
    }

    /// The first up instance in configuration order (for commands without a call).
    pub fn first_up(&self) -> Option<InstanceId> {
        self.instances
            .iter()
            .position(|i| i.health == Health::Up)
            .or(if self.instances.is_empty() {
                None
            } else {
                Some(0)
            })
    }

    /// Records a reply from `id`: it is up.
    pub fn on_reply(&mut self, id: InstanceId, rtt: Duration) {
        if let Some(i) = self.instances.get_mut(id) {
            if i.health == Health::Down {
                tracing::info!(instance = %i.config.addr, "rtpengine instance answers again: up");
            }
            i.health = Health::Up;
            i.consecutive_timeouts = 0;
            i.down_since = None;
            i.last_rtt = Some(rtt);
        }
    }

    /// Records a timeout (all tries exhausted) on `id`.
    pub fn on_timeout(&mut self, id: InstanceId, now: Instant) {
        if let Some(i) = self.instances.get_mut(id) {
            i.consecutive_timeouts = i.consecutive_timeouts.saturating_add(1);
            if i.health == Health::Up && i.consecutive_timeouts >= self.down_after {
                tracing::warn!(instance = %i.config.addr, "rtpengine instance stopped answering: down");
                i.health = Health::Down;
                i.down_since = Some(now);
            }
        }
    }

    /// The instance remembered for a call.
    pub fn call_instance(&self, call_id: &str) -> Option<InstanceId> {
        self.calls.get(call_id).copied()
    }

    /// Remembers that `call_id` lives on `id`.
    pub fn bind_call(&mut self, call_id: &str, id: InstanceId) {
        if self.calls.get(call_id) != Some(&id) {
            self.calls.insert(call_id.to_owned(), id);
        }
    }

    /// Forgets a call.
    pub fn forget_call(&mut self, call_id: &str) -> Option<InstanceId> {
        self.calls.remove(call_id)
    }

    /// Number of calls remembered.
    pub fn call_count(&self) -> usize {
        self.calls.len()
    }

    /// Snapshot of every instance.
    pub fn status(&self) -> Vec<InstanceStatus> {
        let mut per_instance = vec![0usize; self.instances.len()];
        for id in self.calls.values() {
            if let Some(n) = per_instance.get_mut(*id) {
                *n += 1;
            }
        }
        self.instances
            .iter()
            .enumerate()
            .map(|(id, i)| InstanceStatus {
                id,
                addr: i.config.addr,
                weight: i.config.weight,
                health: i.health,
                consecutive_timeouts: i.consecutive_timeouts,
                down_since: i.down_since,
                last_rtt: i.last_rtt,
                calls: per_instance.get(id).copied().unwrap_or(0),
            })
            .collect()
    }
}
