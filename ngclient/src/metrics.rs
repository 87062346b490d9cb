//! Per-instance, per-command counters and latency histograms, exported as plain snapshots.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::instances::InstanceId;
use crate::request::Command;

/// Upper bounds of the latency buckets, in microseconds (Prometheus-style `le`; a final
/// `+Inf` bucket is implied by `count`).
pub const BUCKETS_US: [u64; 16] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// A fixed-bucket latency histogram.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Non-cumulative counts per bucket of [`BUCKETS_US`]; values above the last bound only
    /// count in `count`.
    pub buckets: [u64; BUCKETS_US.len()],
    /// Number of observations.
    pub count: u64,
    /// Sum of observations, µs.
    pub sum_us: u64,
    /// Largest observation, µs.
    pub max_us: u64,
}

impl Histogram {
    /// Adds one observation.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if let Some(i) = BUCKETS_US.iter().position(|&b| us <= b)
            && let Some(slot) = self.buckets.get_mut(i)
        {
            *slot += 1;
        }
        self.count += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
    }

    /// Estimated quantile (`q` in 0..=1) in µs: the upper bound of the bucket holding it,
    /// capped at the maximum seen.
    pub fn quantile_us(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bound, n) in BUCKETS_US.iter().zip(self.buckets) {
            seen += n;
            if seen >= rank {
                return Some((*bound).min(self.max_us));
            }
        }
        Some(self.max_us)
    }
}

/// Counters for one (instance, command) pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandStats {
    /// Requests started on this instance (a failover counts once per instance).
    pub requests: u64,
    /// Replies with result `ok`/`pong`/other non-error results.
    pub ok: u64,
    /// Replies with result `error`.
    pub errors: u64,
    /// Replies with result `load limit`.
    pub load_limits: u64,
    /// Requests that got no reply after all tries.
    pub timeouts: u64,
    /// Retransmissions sent.
    pub retransmits: u64,
    /// Replies matching a cookie that could not be decoded.
    pub decode_errors: u64,
    /// Latency from first send to reply.
    pub latency: Histogram,
}

/// One row of a [`MetricsSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandMetrics {
    /// Instance index.
    pub instance: InstanceId,
    /// Instance address.
    pub addr: SocketAddr,
    /// Command name as on the wire.
    pub command: String,
    /// The counters.
    pub stats: CommandStats,
}

/// Everything measured so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Per instance and command.
    pub commands: Vec<CommandMetrics>,
    /// Datagrams dropped: unknown cookie, wrong source address, or unparseable framing.
    pub dropped_datagrams: u64,
    /// Failovers of new calls to another instance.
    pub failovers: u64,
}

impl MetricsSnapshot {
    /// Sum of a command's counters over every instance.
    pub fn total(&self, command: &str) -> CommandStats {
        let mut t = CommandStats::default();
        for row in self.commands.iter().filter(|r| r.command == command) {
            let s = &row.stats;
            t.requests += s.requests;
            t.ok += s.ok;
            t.errors += s.errors;
            t.load_limits += s.load_limits;
            t.timeouts += s.timeouts;
            t.retransmits += s.retransmits;
            t.decode_errors += s.decode_errors;
            for (a, b) in t.latency.buckets.iter_mut().zip(s.latency.buckets) {
                *a += b;
            }
            t.latency.count += s.latency.count;
            t.latency.sum_us += s.latency.sum_us;
            t.latency.max_us = t.latency.max_us.max(s.latency.max_us);
        }
        t
    }
}

/// The live counters.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    per: BTreeMap<(InstanceId, Command), CommandStats>,
    pub(crate) dropped_datagrams: u64,
    pub(crate) failovers: u64,
}

impl Metrics {
    pub(crate) fn entry(&mut self, instance: InstanceId, command: &Command) -> &mut CommandStats {
        self.per.entry((instance, command.clone())).or_default()
    }

    pub(crate) fn snapshot(
        &self,
        addr_of: impl Fn(InstanceId) -> Option<SocketAddr>,
    ) -> MetricsSnapshot {
        MetricsSnapshot {
            commands: self
                .per
                .iter()
                .filter_map(|((id, cmd), stats)| {
                    Some(CommandMetrics {
                        instance: *id,
                        addr: addr_of(*id)?,
                        command: cmd.as_str().to_owned(),
                        stats: stats.clone(),
                    })
                })
                .collect(),
            dropped_datagrams: self.dropped_datagrams,
            failovers: self.failovers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_us(0.5), None);
        for _ in 0..90 {
            h.record(Duration::from_micros(200));
        }
        for _ in 0..10 {
            h.record(Duration::from_millis(30));
        }
        assert_eq!(h.count, 100);
        assert_eq!(h.quantile_us(0.5), Some(250));
        assert_eq!(h.quantile_us(0.9), Some(250));
        assert_eq!(h.quantile_us(0.99), Some(30_000));
        assert_eq!(h.max_us, 30_000);
        h.record(Duration::from_secs(100));
        assert_eq!(h.count, 101);
        assert_eq!(h.buckets.iter().sum::<u64>(), 100);
        assert_eq!(h.quantile_us(1.0), Some(100_000_000));
    }
}
