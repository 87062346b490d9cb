//! A token bucket: `rate` tokens per second refill it up to `burst`; each
//! message takes one. Sans-IO: the caller passes `now`.

use std::time::{Duration, Instant};

/// A sustained rate and the burst allowed on top of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_s: f64,
    /// Bucket capacity: how many messages may come at once.
    pub burst: f64,
}

impl Rate {
    /// `per_s` per second with bursts of `burst`.
    pub fn new(per_s: u32, burst: u32) -> Self {
        Self {
            per_s: f64::from(per_s.max(1)),
            burst: f64::from(burst.max(1)),
        }
    }

    /// How long an empty bucket takes to fill: an entry idle this long is
    /// indistinguishable from a fresh one.
    pub fn refill_time(&self) -> Duration {
        Duration::from_secs_f64((self.burst / self.per_s).min(86_400.0))
    }
}

/// One bucket's state.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            last: now,
        }
    }

    /// Takes one token; false when the bucket is empty (the message is
    /// over the rate).
    pub fn take(&mut self, rate: Rate, now: Instant) -> bool {
        // A clock that went backwards (it cannot with Instant, but tests may
        // pass any value) refills nothing.
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_s).min(rate.burst);
        self.last = now.max(self.last);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Back to full (a ban ended: the source starts over).
    pub fn refill(&mut self, rate: Rate, now: Instant) {
        *self = Self::full(rate, now);
    }

    /// When a token was last taken or refilled.
    pub fn last(&self) -> Instant {
        self.last
    }
}

/// A bucket with a ban: once the bucket runs dry, everything is shed until
/// the ban ends. Used per WebSocket flow; the per-IP table keeps the same
/// logic for its entries.
#[derive(Debug, Clone, Copy)]
pub struct Guard {
    bucket: Bucket,
    banned_until: Option<Instant>,
}

/// What a guard decided about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within the rate.
    Pass,
    /// Over the rate or banned; `retry_after_s` is the rest of the ban,
    /// rounded up, and `new_ban` says this message started it.
    Shed {
        /// Seconds until the ban ends (at least 1).
        retry_after_s: u32,
        /// This message started the ban.
        new_ban: bool,
    },
}

impl Verdict {
    /// Whether the message passes.
    pub fn passed(&self) -> bool {
        matches!(self, Verdict::Pass)
    }
}

/// Seconds left until `until`, rounded up, at least 1.
pub fn secs_left(until: Instant, now: Instant) -> u32 {
    let left = until.saturating_duration_since(now);
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    u32::try_from(secs.max(1)).unwrap_or(u32::MAX)
}

impl Guard {
    /// A fresh guard with a full bucket.
    pub fn new(rate: Rate, now: Instant) -> Self {
        Self {
            bucket: Bucket::full(rate, now),
            banned_until: None,
        }
    }

    /// Seconds left of the ban (rounded up), if banned at `now`.
    pub fn banned_for(&self, now: Instant) -> Option<u32> {
        self.banned_until
            .filter(|u| now < *u)
            .map(|u| secs_left(u, now))
    }

    /// Not banned and idle long enough to be full again: a fresh guard
    /// would be the same.
    pub fn forgettable(&self, rate: Rate, now: Instant) -> bool {
        self.banned_for(now).is_none()
            && now.saturating_duration_since(self.bucket.last()) >= rate.refill_time()
    }

    /// Judges one message.
    pub fn check(&mut self, rate: Rate, ban: Duration, now: Instant) -> Verdict {
        if let Some(until) = self.banned_until {
            if now < until {
                return Verdict::Shed {
                    retry_after_s: secs_left(until, now),
                    new_ban: false,
                };
            }
            self.banned_until = None;
            self.bucket.refill(rate, now);
        }
        if self.bucket.take(rate, now) {
            return Verdict::Pass;
        }
        let until = now + ban;
        self.banned_until = Some(until);
        Verdict::Shed {
            retry_after_s: secs_left(until, now),
            new_ban: true,
        }
    }

    /// Whether a ban is running at `now`.
    pub fn banned(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|u| now < u)
    }

    /// The bucket (for expiry decisions).
    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn burst_then_sustained_rate() {
        let rate = Rate::new(10, 5);
        let t0 = Instant::now();
        let mut b = Bucket::full(rate, t0);
        for i in 0..5 {
            assert!(b.take(rate, t0), "burst token {i}");
        }
        assert!(!b.take(rate, t0), "the sixth at once is over");
        // 10/s: one token per 100 ms.
        assert!(!b.take(rate, t0 + 50 * MS));
        assert!(b.take(rate, t0 + 150 * MS));
        assert!(!b.take(rate, t0 + 160 * MS));
        // Idle for a long time: back to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            assert!(b.take(rate, later));
        }
        assert!(!b.take(rate, later));
    }

    #[test]
    fn guard_bans_then_forgives() {
        let rate = Rate::new(1, 2);
        let ban = Duration::from_secs(3);
        let t0 = Instant::now();
        let mut g = Guard::new(rate, t0);
        assert!(g.check(rate, ban, t0).passed());
        assert!(g.check(rate, ban, t0).passed());
        assert_eq!(
            g.check(rate, ban, t0),
            Verdict::Shed {
                retry_after_s: 3,
                new_ban: true
            }
        );
        // While banned, even a refilled bucket does not help.
        assert_eq!(
            g.check(rate, ban, t0 + 2500 * MS),
            Verdict::Shed {
                retry_after_s: 1,
                new_ban: false
            }
        );
        assert!(g.banned(t0 + 2999 * MS));
        // After the ban the full burst is available again.
        let after = t0 + ban;
        assert!(!g.banned(after));
        assert!(g.check(rate, ban, after).passed());
        assert!(g.check(rate, ban, after).passed());
        assert!(!g.check(rate, ban, after).passed());
    }

    #[test]
    fn secs_left_rounds_up() {
        let t0 = Instant::now();
        assert_eq!(secs_left(t0 + 1001 * MS, t0), 2);
        assert_eq!(secs_left(t0 + Duration::from_secs(5), t0), 5);
        assert_eq!(secs_left(t0, t0 + MS), 1, "never 0");
    }
}
