//! Counters shared by all simulated browsers, and latency percentiles.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// What happened so far; every field is updated lock-free except the maps.
#[derive(Default)]
pub struct Counters {
    /// WebSocket connections established.
    pub connected: AtomicU64,
    /// Connections that failed (TCP, TLS or the upgrade).
    pub connect_failed: AtomicU64,
    /// Connections that closed while they should have been open.
    pub dropped: AtomicU64,
    /// REGISTERs answered 200.
    pub registered: AtomicU64,
    /// REGISTERs that failed (final code other than 200, or no answer).
    pub register_failed: AtomicU64,
    /// Calls started (first INVITE sent).
    pub calls_attempted: AtomicU64,
    /// Calls answered 200.
    pub calls_answered: AtomicU64,
    /// Calls that completed with a 200 to their BYE.
    pub calls_completed: AtomicU64,
    /// Calls that failed, whatever the reason.
    pub calls_failed: AtomicU64,
    /// Calls not started because no connection was idle.
    pub calls_skipped: AtomicU64,
    /// Calls up right now.
    pub calls_active: AtomicU64,
    /// Calls from the far end (the PBX) that we answered.
    pub calls_received: AtomicU64,
    failed_by: Mutex<BTreeMap<String, u64>>,
    examples: Mutex<BTreeMap<String, String>>,
    setup: Mutex<Vec<u32>>,
    register: Mutex<Vec<u32>>,
}

/// Why a call or registration failed, for the report.
pub fn reason_code(code: Option<u16>, what: &str) -> String {
    match code {
        Some(c) => c.to_string(),
        None => what.to_string(),
    }
}

impl Counters {
    /// Counts a failure under `reason` (a status code or a word).
    pub fn fail(&self, reason: String) {
        if let Ok(mut m) = self.failed_by.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    /// Counts a failure and keeps the first detailed message of its kind.
    pub fn fail_with(&self, reason: String, detail: String) {
        if let Ok(mut m) = self.examples.lock()
            && !m.contains_key(&reason)
        {
            m.insert(reason.clone(), detail);
        }
        self.fail(reason);
    }

    /// The first detailed message of each failure reason.
    pub fn examples(&self) -> BTreeMap<String, String> {
        self.examples.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Failures by reason.
    pub fn failures(&self) -> BTreeMap<String, u64> {
        self.failed_by.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Records a call's setup time (first INVITE sent to 200 received).
    pub fn record_setup(&self, d: Duration) {
        if let Ok(mut v) = self.setup.lock() {
            v.push(d.as_micros().min(u32::MAX as u128) as u32);
        }
    }

    /// Records a registration's time (first REGISTER sent to 200 received).
    pub fn record_register(&self, d: Duration) {
        if let Ok(mut v) = self.register.lock() {
            v.push(d.as_micros().min(u32::MAX as u128) as u32);
        }
    }

    /// Setup latency percentiles.
    pub fn setup_latency(&self) -> Latency {
        Latency::of(self.setup.lock().map(|v| v.clone()).unwrap_or_default())
    }

    /// Registration latency percentiles.
    pub fn register_latency(&self) -> Latency {
        Latency::of(self.register.lock().map(|v| v.clone()).unwrap_or_default())
    }

    /// Reads a counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }

    /// Adds one.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    /// Takes one away, never below zero.
    pub fn dec(c: &AtomicU64) {
        let _ = c.fetch_update(Relaxed, Relaxed, |v| v.checked_sub(1));
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Latency {
    /// Number of samples.
    pub n: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

impl Latency {
    /// Nearest-rank percentiles of samples in microseconds.
    pub fn of(mut micros: Vec<u32>) -> Latency {
        if micros.is_empty() {
            return Latency::default();
        }
        micros.sort_unstable();
        let at = |p: f64| {
            let rank = ((p / 100.0) * micros.len() as f64).ceil() as usize;
            micros[rank.clamp(1, micros.len()) - 1] as f64 / 1000.0
        };
        Latency {
            n: micros.len(),
            p50_ms: at(50.0),
            p90_ms: at(90.0),
            p99_ms: at(99.0),
            max_ms: micros[micros.len() - 1] as f64 / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let l = Latency::of((1..=100).map(|i| i * 1000).collect());
        assert_eq!(
            (l.n, l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms),
            (100, 50.0, 90.0, 99.0, 100.0)
        );
        let one = Latency::of(vec![1500]);
        assert_eq!((one.p50_ms, one.p99_ms), (1.5, 1.5));
        assert_eq!(Latency::of(vec![]).n, 0);
    }

    #[test]
    fn counters_and_failures() {
        let c = Counters::default();
        Counters::inc(&c.calls_active);
        Counters::dec(&c.calls_active);
        Counters::dec(&c.calls_active);
        assert_eq!(Counters::get(&c.calls_active), 0);
        c.fail("503".into());
        c.fail("503".into());
        c.fail(reason_code(None, "timeout"));
        assert_eq!(c.failures().get("503"), Some(&2));
        assert_eq!(c.failures().get("timeout"), Some(&1));
    }
}
