//! Sans-IO health of destinations: when to send an OPTIONS probe, what its
//! answer (or silence) means, and when a destination goes down or comes back.
//!
//! Driven by `now` only: [`Prober::poll_probe`] hands out probes that are due,
//! [`Prober::probe_result`] feeds their outcome back, [`Prober::handle_timeout`]
//! turns probes that got no answer within their timeout into failures, and
//! [`Prober::transaction_timeout`] lets a call's timeout count as a failure too
//! (like Kamailio's dispatcher marking a gateway after a failed relay).
//!
//! Transitions: `unknown` → `up` on the first good reply; `unknown`/`up` →
//! `down` after `down_after` consecutive failures; `down` → `up` after
//! `up_after` consecutive good replies. A destination is routable unless it
//! is `down`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::codes::CodeSet;

/// The health of one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HealthState {
    /// Not probed yet, or probing is off: routable.
    Unknown,
    /// Answering probes: routable.
    Up,
    /// Failed `down_after` times in a row: skipped until it recovers.
    Down,
}

impl HealthState {
    /// The lower-case name for logs and the admin view.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Unknown => "unknown",
            HealthState::Up => "up",
            HealthState::Down => "down",
        }
    }
}

/// How one destination is probed (from its set's `probe` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSettings {
    /// Time between probes; `None` turns probing off.
    pub interval: Option<Duration>,
    /// How long a probe may go unanswered.
    pub timeout: Duration,
    /// Consecutive failures that mark the destination down.
    pub down_after: u32,
    /// Consecutive good replies that bring it back up.
    pub up_after: u32,
    /// Reply codes that count as alive.
    pub reply_codes: CodeSet,
}

/// An OPTIONS the shell should send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// Where to send it.
    pub dest: SocketAddr,
    /// Identifies this probe; hand it back with the result.
    pub id: u64,
    /// When it counts as unanswered.
    pub deadline: Instant,
}

/// What came of a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// A final reply with this status code.
    Reply(u16),
    /// No reply within the timeout (or the send failed).
    Timeout,
}

/// The admin view of one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationStatus {
    /// The address.
    pub address: SocketAddr,
    /// Current state.
    pub state: HealthState,
    /// Failures in a row.
    pub failures: u32,
    /// Good replies in a row.
    pub successes: u32,
    /// The code of the last probe reply, if any.
    pub last_code: Option<u16>,
    /// When the state last changed (or probing began).
    pub since: Instant,
    /// Whether it is being probed.
    pub probed: bool,
}

/// A state change, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The destination.
    pub dest: SocketAddr,
    /// State before.
    pub from: HealthState,
    /// State after.
    pub to: HealthState,
}

#[derive(Debug, Clone)]
struct Entry {
    settings: ProbeSettings,
    state: HealthState,
    failures: u32,
    successes: u32,
    last_code: Option<u16>,
    since: Instant,
    next_probe: Instant,
    in_flight: Option<(u64, Instant)>,
}

/// The health of every configured destination.
#[derive(Debug, Default)]
pub struct Prober {
    entries: BTreeMap<SocketAddr, Entry>,
    next_id: u64,
    transitions: Vec<Transition>,
}

impl Prober {
    /// An empty prober.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the tracked destinations exactly `dests`: new ones start
    /// `unknown` with a probe due now, removed ones are forgotten, kept ones
    /// keep their state and counters (their settings are updated).
    pub fn set_destinations(
        &mut self,
        now: Instant,
        dests: impl IntoIterator<Item = (SocketAddr, ProbeSettings)>,
    ) {
        let mut next: BTreeMap<SocketAddr, Entry> = BTreeMap::new();
        for (addr, settings) in dests {
            if next.contains_key(&addr) {
                continue; // the first set that lists an address sets its probing
            }
            let entry = match self.entries.remove(&addr) {
                Some(mut e) => {
                    if e.settings.interval != settings.interval {
                        e.next_probe = now;
                    }
                    if settings.interval.is_none() {
                        e.state = HealthState::Unknown;
                        e.in_flight = None;
                    }
                    e.settings = settings;
                    e
                }
                None => Entry {
                    settings,
                    state: HealthState::Unknown,
                    failures: 0,
                    successes: 0,
                    last_code: None,
                    since: now,
                    next_probe: now,
                    in_flight: None,
                },
            };
            next.insert(addr, entry);
        }
        self.entries = next;
    }

    /// The state of `dest` (`unknown` for an address not tracked).
    pub fn state(&self, dest: SocketAddr) -> HealthState {
        self.entries
            .get(&dest)
            .map_or(HealthState::Unknown, |e| e.state)
    }

    /// Whether calls may go to `dest`.
    pub fn routable(&self, dest: SocketAddr) -> bool {
        self.state(dest) != HealthState::Down
    }

    /// The next probe that is due, if any; call until it returns `None`.
    pub fn poll_probe(&mut self, now: Instant) -> Option<Probe> {
        let (dest, e) = self.entries.iter_mut().find(|(_, e)| {
            e.settings.interval.is_some() && e.in_flight.is_none() && e.next_probe <= now
        })?;
        let interval = e.settings.interval?;
        self.next_id += 1;
        let deadline = now + e.settings.timeout;
        e.in_flight = Some((self.next_id, deadline));
        e.next_probe = now + interval;
        Some(Probe {
            dest: *dest,
            id: self.next_id,
            deadline,
        })
    }

    /// When the shell must call again (`poll_probe` or `handle_timeout`).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| e.settings.interval.is_some())
            .map(|e| match e.in_flight {
                Some((_, deadline)) => deadline,
                None => e.next_probe,
            })
            .min()
    }

    /// Turns every probe unanswered past its deadline into a failure.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<(SocketAddr, u64)> = self
            .entries
            .iter()
            .filter_map(|(a, e)| match e.in_flight {
                Some((id, deadline)) if deadline <= now => Some((*a, id)),
                _ => None,
            })
            .collect();
        for (dest, id) in expired {
            self.probe_result(now, dest, id, ProbeOutcome::Timeout);
        }
    }

    /// The outcome of probe `id` to `dest`. Stale or unknown ids are ignored
    /// (a late answer to a probe already counted as timed out).
    pub fn probe_result(&mut self, now: Instant, dest: SocketAddr, id: u64, outcome: ProbeOutcome) {
        let Some(e) = self.entries.get_mut(&dest) else {
            return;
        };
        match e.in_flight {
            Some((current, _)) if current == id => e.in_flight = None,
            _ => return,
        }
        let good = match outcome {
            ProbeOutcome::Reply(code) => {
                e.last_code = Some(code);
                e.settings.reply_codes.contains(code)
            }
            ProbeOutcome::Timeout => false,
        };
        if good {
            self.success(now, dest);
        } else {
            self.failure(now, dest);
        }
    }

    /// A call's transaction to `dest` got no final answer in time: counts
    /// as a failed probe (only for probed destinations, since only a probe
    /// can bring a destination back).
    pub fn transaction_timeout(&mut self, now: Instant, dest: SocketAddr) {
        if self
            .entries
            .get(&dest)
            .is_some_and(|e| e.settings.interval.is_some())
        {
            self.failure(now, dest);
        }
    }

    fn success(&mut self, now: Instant, dest: SocketAddr) {
        let Some(e) = self.entries.get_mut(&dest) else {
            return;
        };
        e.failures = 0;
        e.successes = e.successes.saturating_add(1);
        let to = match e.state {
            HealthState::Unknown => HealthState::Up,
            HealthState::Down if e.successes >= e.settings.up_after => HealthState::Up,
            s => s,
        };
        Self::change(&mut self.transitions, now, dest, e, to);
    }

    fn failure(&mut self, now: Instant, dest: SocketAddr) {
        let Some(e) = self.entries.get_mut(&dest) else {
            return;
        };
        e.successes = 0;
        e.failures = e.failures.saturating_add(1);
        let to = if e.failures >= e.settings.down_after {
            HealthState::Down
        } else {
            e.state
        };
        Self::change(&mut self.transitions, now, dest, e, to);
    }

    fn change(
        log: &mut Vec<Transition>,
        now: Instant,
        dest: SocketAddr,
        e: &mut Entry,
        to: HealthState,
    ) {
        if e.state == to {
            return;
        }
        let from = e.state;
        e.state = to;
        e.since = now;
        match to {
            HealthState::Down => tracing::warn!(%dest, from = from.as_str(), "destination down"),
            _ => tracing::info!(%dest, from = from.as_str(), to = to.as_str(), "destination state"),
        }
        if log.len() < 1024 {
            log.push(Transition { dest, from, to });
        }
    }

    /// State changes since the last call (for metrics and events).
    pub fn take_transitions(&mut self) -> Vec<Transition> {
        std::mem::take(&mut self.transitions)
    }

    /// Every tracked destination, by address.
    pub fn states(&self) -> Vec<DestinationStatus> {
        self.entries
            .iter()
            .map(|(a, e)| DestinationStatus {
                address: *a,
                state: e.state,
                failures: e.failures,
                successes: e.successes,
                last_code: e.last_code,
                since: e.since,
                probed: e.settings.interval.is_some(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::config::CodeSpec;

    fn settings(down: u32, up: u32) -> ProbeSettings {
        ProbeSettings {
            interval: Some(Duration::from_secs(1)),
            timeout: Duration::from_millis(500),
            down_after: down,
            up_after: up,
            reply_codes: CodeSet::parse(&[CodeSpec::Text("2xx".into()), CodeSpec::Number(404)])
                .unwrap(),
        }
    }

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    /// Sends every due probe and answers it with `outcome(dest)`.
    fn round(
        p: &mut Prober,
        now: Instant,
        outcome: impl Fn(SocketAddr) -> Option<ProbeOutcome>,
    ) -> usize {
        let mut n = 0;
        while let Some(probe) = p.poll_probe(now) {
            n += 1;
            if let Some(o) = outcome(probe.dest) {
                p.probe_result(now, probe.dest, probe.id, o);
            }
        }
        n
    }

    #[test]
    fn unknown_up_down_up() {
        let t0 = Instant::now();
        let mut p = Prober::new();
        p.set_destinations(t0, [(addr(1), settings(3, 2))]);
        assert_eq!(p.state(addr(1)), HealthState::Unknown);
        assert!(p.routable(addr(1)));
        assert_eq!(round(&mut p, t0, |_| Some(ProbeOutcome::Reply(200))), 1);
        assert_eq!(p.state(addr(1)), HealthState::Up);
        // Not due again before the interval.
        assert!(p.poll_probe(t0 + Duration::from_millis(999)).is_none());
        assert_eq!(p.next_deadline(), Some(t0 + Duration::from_secs(1)));
        // Two timeouts: still up; the third: down.
        let mut now = t0;
        for i in 1..=3 {
            now = t0 + Duration::from_secs(i);
            let probe = p.poll_probe(now).unwrap();
            assert_eq!(p.next_deadline(), Some(probe.deadline));
            p.handle_timeout(probe.deadline);
            let want = if i < 3 {
                HealthState::Up
            } else {
                HealthState::Down
            };
            assert_eq!(p.state(addr(1)), want, "after {i} timeouts");
        }
        assert!(!p.routable(addr(1)));
        // One good reply is not enough; two are.
        now += Duration::from_secs(1);
        round(&mut p, now, |_| Some(ProbeOutcome::Reply(200)));
        assert_eq!(p.state(addr(1)), HealthState::Down);
        now += Duration::from_secs(1);
        round(&mut p, now, |_| Some(ProbeOutcome::Reply(404)));
        assert_eq!(p.state(addr(1)), HealthState::Up);
        let t: Vec<_> = p.take_transitions().iter().map(|t| t.to).collect();
        assert_eq!(t, [HealthState::Up, HealthState::Down, HealthState::Up]);
    }

    #[test]
    fn bad_codes_count_as_failures_and_reset_successes() {
        let t0 = Instant::now();
        let mut p = Prober::new();
        p.set_destinations(t0, [(addr(1), settings(2, 2))]);
        let mut now = t0;
        for _ in 0..2 {
            round(&mut p, now, |_| Some(ProbeOutcome::Reply(503)));
            now += Duration::from_secs(1);
        }
        assert_eq!(p.state(addr(1)), HealthState::Down);
        // good, bad, good: the streak restarts, still down.
        for code in [200, 500, 200] {
            round(&mut p, now, |_| Some(ProbeOutcome::Reply(code)));
            now += Duration::from_secs(1);
        }
        assert_eq!(p.state(addr(1)), HealthState::Down);
        round(&mut p, now, |_| Some(ProbeOutcome::Reply(200)));
        assert_eq!(p.state(addr(1)), HealthState::Up);
        assert_eq!(p.states()[0].last_code, Some(200));
    }

    #[test]
    fn call_timeouts_count_and_stale_replies_are_ignored() {
        let t0 = Instant::now();
        let mut p = Prober::new();
        p.set_destinations(t0, [(addr(1), settings(2, 1))]);
        let probe = p.poll_probe(t0).unwrap();
        p.transaction_timeout(t0, addr(1));
        p.transaction_timeout(t0, addr(1));
        assert_eq!(p.state(addr(1)), HealthState::Down);
        // A reply with a wrong id is ignored; the right one counts.
        p.probe_result(t0, addr(1), probe.id + 7, ProbeOutcome::Reply(200));
        assert_eq!(p.state(addr(1)), HealthState::Down);
        p.probe_result(t0, addr(1), probe.id, ProbeOutcome::Reply(200));
        assert_eq!(p.state(addr(1)), HealthState::Up);
        // Answering twice does not count twice.
        p.probe_result(t0, addr(1), probe.id, ProbeOutcome::Reply(200));
        assert_eq!(p.states()[0].successes, 1);
    }

    #[test]
    fn probing_off_keeps_unknown_and_reload_keeps_state() {
        let t0 = Instant::now();
        let mut p = Prober::new();
        let mut off = settings(1, 1);
        off.interval = None;
        p.set_destinations(t0, [(addr(1), settings(1, 1)), (addr(2), off.clone())]);
        assert_eq!(round(&mut p, t0, |_| Some(ProbeOutcome::Timeout)), 1);
        p.transaction_timeout(t0, addr(2));
        assert_eq!(p.state(addr(1)), HealthState::Down);
        assert_eq!(p.state(addr(2)), HealthState::Unknown);
        assert_eq!(p.next_deadline(), Some(t0 + Duration::from_secs(1)));
        // Reload: addr(1) kept (still down), addr(2) dropped, addr(3) new.
        p.set_destinations(t0, [(addr(1), settings(1, 1)), (addr(3), settings(1, 1))]);
        assert_eq!(p.state(addr(1)), HealthState::Down);
        assert_eq!(p.states().len(), 2);
        assert_eq!(p.poll_probe(t0).map(|x| x.dest), Some(addr(3)));
    }
}
