//! A circuit breaker in front of the database: once it is found unavailable,
//! requests fail at once (503) instead of each waiting out the pool's acquire
//! timeout, while one probe at a time finds out when it is back.
//!
//! Sans-IO: [`Breaker`] is told the time and the outcomes; [`Guard`] wraps it
//! for concurrent use by the store.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Breaker timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// The wait before the first probe after the database failed.
    pub first_retry: Duration,
    /// The longest wait between probes (the wait doubles up to it).
    pub max_retry: Duration,
    /// A probe that has not reported back after this long is presumed lost
    /// (its future was dropped), and another may go.
    pub probe_timeout: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            first_retry: Duration::from_millis(500),
            max_retry: Duration::from_secs(4),
            probe_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    /// Failing: no request before `retry_at`; then one probe.
    Open {
        retry_at: Instant,
        wait: Duration,
        probe_since: Option<Instant>,
    },
}

/// What [`Breaker::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead (the database is believed up).
    Pass,
    /// Go ahead as the probe: the database was down.
    Probe,
    /// Fail now; the next probe may go in this long.
    Refuse(Duration),
}

/// The breaker's state machine.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: State,
}

impl Breaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            state: State::Closed,
        }
    }

    /// Whether a request may go to the database now.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match &mut self.state {
            State::Closed => Admission::Pass,
            State::Open {
                retry_at,
                probe_since,
                ..
            } => {
                let probe_lost = probe_since.is_some_and(|t| now >= t + self.config.probe_timeout);
                if now >= *retry_at && (probe_since.is_none() || probe_lost) {
                    *probe_since = Some(now);
                    Admission::Probe
                } else {
                    Admission::Refuse(retry_at.saturating_duration_since(now))
                }
            }
        }
    }

    /// The outcome of an admitted request: `unavailable` when the database
    /// could not be reached (not when the query itself was wrong).
    pub fn record(&mut self, now: Instant, unavailable: bool) {
        if !unavailable {
            self.state = State::Closed;
            return;
        }
        let wait = match self.state {
            State::Closed => self.config.first_retry,
            State::Open { wait, .. } => (wait * 2).min(self.config.max_retry),
        };
        self.state = State::Open {
            retry_at: now + wait,
            wait,
            probe_since: None,
        };
    }

    /// Whether requests are being refused.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open { .. })
    }
}

/// A [`Breaker`] shared by every clone of a store.
#[derive(Debug)]
pub struct Guard(Mutex<Breaker>);

impl Guard {
    /// A closed breaker with `config`.
    pub fn new(config: BreakerConfig) -> Self {
        Self(Mutex::new(Breaker::new(config)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // Two plain fields: a panic elsewhere cannot leave them half-written.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// See [`Breaker::admit`].
    pub fn admit(&self) -> Admission {
        self.lock().admit(Instant::now())
    }

    /// See [`Breaker::record`]. Concurrent requests report in any order; the
    /// last outcome wins.
    pub fn record(&self, unavailable: bool) {
        self.lock().record(Instant::now(), unavailable);
    }

    /// Whether requests are being refused.
    pub fn is_open(&self) -> bool {
        self.lock().is_open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn opens_on_failure_probes_once_and_closes_on_success() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        assert_eq!(b.admit(t0), Admission::Pass);
        b.record(t0, true);
        assert!(b.is_open());
        assert_eq!(b.admit(t0 + ms(100)), Admission::Refuse(ms(400)));
        // One probe when the wait is over; the others still fail fast.
        assert_eq!(b.admit(t0 + ms(500)), Admission::Probe);
        assert!(matches!(b.admit(t0 + ms(501)), Admission::Refuse(_)));
        b.record(t0 + ms(600), false);
        assert!(!b.is_open());
        assert_eq!(b.admit(t0 + ms(601)), Admission::Pass);
    }

    #[test]
    fn waits_double_up_to_the_cap() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        let mut now = t0;
        b.record(now, true);
        let mut waits = Vec::new();
        for _ in 0..6 {
            let Admission::Refuse(w) = b.admit(now) else {
                panic!("open breaker admitted a request");
            };
            waits.push(w);
            now += w;
            assert_eq!(b.admit(now), Admission::Probe);
            b.record(now, true);
        }
        assert_eq!(
            waits,
            vec![ms(500), ms(1000), ms(2000), ms(4000), ms(4000), ms(4000)]
        );
    }

    #[test]
    fn a_lost_probe_does_not_keep_it_open_forever() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        b.record(t0, true);
        assert_eq!(b.admit(t0 + ms(500)), Admission::Probe);
        // The probe's future was dropped: it never reports.
        assert!(matches!(b.admit(t0 + ms(5000)), Admission::Refuse(_)));
        assert_eq!(b.admit(t0 + ms(10_500)), Admission::Probe);
    }

    #[test]
    fn success_while_open_closes_it() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig::default());
        b.record(t0, true);
        // A request admitted before the failure came back fine.
        b.record(t0 + ms(1), false);
        assert_eq!(b.admit(t0 + ms(2)), Admission::Pass);
    }
}
