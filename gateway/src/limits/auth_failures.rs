//! Failed digest authentications per source IP: credential guessing and
//! stuffing. Each source has a bucket of failures (a wrong password or an
//! unknown user); one that empties it is banned for a while, and its
//! requests are refused without their credentials being looked at (no
//! database lookup, no hash). Sans-IO: every call takes `now`.
//!
//! Only failures count, never challenges: a browser's first REGISTER of
//! each refresh is challenged by design. Memory is bounded like the flood
//! table: at most `max_sources` entries; entries whose bucket is full again
//! and that are not banned carry nothing and are swept; when the table is
//! full of live entries, new sources are not counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::bucket::{Guard, Rate, Verdict};

/// Settings.
#[derive(Debug, Clone, Copy)]
pub struct AuthFailureConfig {
    /// Failures a source may have: sustained rate and burst.
    pub rate: Rate,
    /// How long a source that ran out is refused.
    pub ban: Duration,
    /// Sources tracked at most.
    pub max_sources: usize,
}

/// What [`AuthFailures::failed`] made of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Counted; the source may try again.
    Counted,
    /// This failure started a ban of `ban_s` seconds.
    Banned {
        /// Length of the ban, in seconds.
        ban_s: u32,
    },
    /// The table was full: not counted.
    Untracked,
}

/// The per-source failure table.
#[derive(Debug)]
pub struct AuthFailures {
    cfg: AuthFailureConfig,
    entries: HashMap<IpAddr, Guard>,
    next_sweep: Instant,
}

const SWEEP_EVERY: Duration = Duration::from_secs(10);

impl AuthFailures {
    /// An empty table.
    pub fn new(cfg: AuthFailureConfig, now: Instant) -> Self {
        Self {
            cfg,
            entries: HashMap::new(),
            next_sweep: now + SWEEP_EVERY,
        }
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Seconds left of `ip`'s ban (rounded up), if it is banned.
    pub fn banned(&self, ip: IpAddr, now: Instant) -> Option<u32> {
        self.entries.get(&ip).and_then(|g| g.banned_for(now))
    }

    /// Records one failed authentication from `ip`.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) -> Failure {
        if now >= self.next_sweep {
            self.sweep(now);
        }
        if !self.entries.contains_key(&ip) {
            if self.entries.len() >= self.cfg.max_sources {
                self.sweep(now);
            }
            if self.entries.len() >= self.cfg.max_sources {
                return Failure::Untracked;
            }
        }
        let rate = self.cfg.rate;
        let guard = self
            .entries
            .entry(ip)
            .or_insert_with(|| Guard::new(rate, now));
        match guard.check(rate, self.cfg.ban, now) {
            Verdict::Shed {
                new_ban: true,
                retry_after_s,
            } => Failure::Banned {
                ban_s: retry_after_s,
            },
            // A failure while banned cannot happen (banned sources are not
            // checked), and extends nothing if it does.
            Verdict::Shed { .. } | Verdict::Pass => Failure::Counted,
        }
    }

    /// Drops entries that are neither banned nor below a full bucket.
    pub fn sweep(&mut self, now: Instant) {
        let rate = self.cfg.rate;
        self.entries.retain(|_, g| !g.forgettable(rate, now));
        self.next_sweep = now + SWEEP_EVERY;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(burst: u32, max_sources: usize, now: Instant) -> AuthFailures {
        AuthFailures::new(
            AuthFailureConfig {
                // One failure back per 10 s.
                rate: Rate {
                    per_s: 0.1,
                    burst: f64::from(burst),
                },
                ban: Duration::from_secs(300),
                max_sources,
            },
            now,
        )
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn a_burst_of_failures_bans_the_source_only() {
        let t0 = Instant::now();
        let mut t = table(5, 100, t0);
        for _ in 0..5 {
            assert_eq!(t.failed(ip(1), t0), Failure::Counted);
        }
        assert_eq!(t.banned(ip(1), t0), None, "five failures are allowed");
        assert_eq!(t.failed(ip(1), t0), Failure::Banned { ban_s: 300 });
        assert_eq!(t.banned(ip(1), t0), Some(300));
        assert_eq!(t.banned(ip(2), t0), None, "other sources unaffected");
        let later = t0 + Duration::from_millis(299_500);
        assert_eq!(t.banned(ip(1), later), Some(1), "rounded up");
        assert_eq!(t.banned(ip(1), t0 + Duration::from_secs(300)), None);
    }

    #[test]
    fn failures_spread_out_never_ban() {
        let t0 = Instant::now();
        let mut t = table(3, 100, t0);
        // One every 10 s: the bucket refills as fast as it drains.
        for i in 0..100u64 {
            let now = t0 + Duration::from_secs(10 * i);
            assert_eq!(t.failed(ip(1), now), Failure::Counted, "failure {i}");
        }
    }

    #[test]
    fn after_a_ban_the_source_starts_over() {
        let t0 = Instant::now();
        let mut t = table(2, 100, t0);
        t.failed(ip(1), t0);
        t.failed(ip(1), t0);
        assert!(matches!(t.failed(ip(1), t0), Failure::Banned { .. }));
        let after = t0 + Duration::from_secs(301);
        assert_eq!(t.failed(ip(1), after), Failure::Counted);
        assert_eq!(t.failed(ip(1), after), Failure::Counted);
        assert!(matches!(t.failed(ip(1), after), Failure::Banned { .. }));
    }

    #[test]
    fn memory_is_bounded_and_idle_entries_are_swept() {
        let t0 = Instant::now();
        let mut t = table(2, 16, t0);
        for i in 0..16 {
            t.failed(ip(i), t0);
        }
        assert_eq!(t.len(), 16);
        // Full of live entries: a new source is not counted.
        assert_eq!(t.failed(ip(200), t0), Failure::Untracked);
        assert_eq!(t.len(), 16);
        // Their buckets are full again after 20 s: swept, room again.
        let later = t0 + Duration::from_secs(21);
        assert_eq!(t.failed(ip(200), later), Failure::Counted);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn a_banned_entry_survives_sweeps() {
        let t0 = Instant::now();
        let mut t = table(1, 16, t0);
        t.failed(ip(1), t0);
        t.failed(ip(1), t0);
        t.sweep(t0 + Duration::from_secs(100));
        assert!(t.banned(ip(1), t0 + Duration::from_secs(100)).is_some());
        t.sweep(t0 + Duration::from_secs(400));
        assert!(t.is_empty());
    }
}
