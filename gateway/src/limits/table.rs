//! The per-source table: one entry per remote IP address with a bucket for
//! SIP messages over UDP and one for WebSocket handshakes, and one ban for
//! both (a source that floods one is shed on both). Sans-IO: every call
//! takes `now`.
//!
//! Memory is bounded: at most `max_sources` entries. An entry whose buckets
//! are full again and that is not banned carries no information (a fresh
//! entry would be the same), so sweeps drop it. When the table is full of
//! live entries, new sources pass untracked (and are counted): shedding
//! them would let an attacker spraying source addresses lock everyone out,
//! and the transaction caps still bound what they can cost.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::bucket::{Bucket, Rate, Verdict, secs_left};

/// What is being counted for a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A SIP message over UDP.
    Message,
    /// A WebSocket (TCP) connection attempt.
    Handshake,
}

/// Settings of the table.
#[derive(Debug, Clone, Copy)]
pub struct TableConfig {
    /// UDP messages per source.
    pub message: Rate,
    /// WebSocket handshakes per source.
    pub handshake: Rate,
    /// How long an over-rate source is shed.
    pub ban: Duration,
    /// Entries at most.
    pub max_sources: usize,
    /// How often trust is looked up again for a known source (routing
    /// reloads can change it).
    pub trust_recheck: Duration,
}

/// Why a source passed or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Within the rate (or trusted, or untracked: see the flags).
    Pass {
        /// The source is trusted: never counted, never banned.
        trusted: bool,
        /// The table was full: the source was not counted.
        untracked: bool,
    },
    /// Shed.
    Shed {
        /// Seconds until the ban ends (at least 1).
        retry_after_s: u32,
        /// This message started the ban.
        new_ban: bool,
    },
}

impl Outcome {
    /// Whether the message or connection goes on.
    pub fn passed(&self) -> bool {
        matches!(self, Outcome::Pass { .. })
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    message: Bucket,
    handshake: Bucket,
    banned_until: Option<Instant>,
    trusted: bool,
    trust_checked: Instant,
}

/// The per-source table.
#[derive(Debug)]
pub struct SourceTable {
    cfg: TableConfig,
    entries: HashMap<IpAddr, Entry>,
    next_sweep: Instant,
    last_sweep: Instant,
}

/// Regular sweeps; a full table may sweep early, at most every `MIN_SWEEP`.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
const MIN_SWEEP: Duration = Duration::from_millis(200);

impl SourceTable {
    /// An empty table.
    pub fn new(cfg: TableConfig, now: Instant) -> Self {
        Self {
            cfg,
            entries: HashMap::new(),
            next_sweep: now + SWEEP_EVERY,
            last_sweep: now,
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

    /// Whether `ip` is banned at `now`.
    pub fn banned(&self, ip: IpAddr, now: Instant) -> bool {
        self.entries
            .get(&ip)
            .and_then(|e| e.banned_until)
            .is_some_and(|u| now < u)
    }

    /// Judges one message or connection from `ip`; `trusted` is asked when
    /// the source is new or its trust is due for a recheck.
    pub fn check(
        &mut self,
        now: Instant,
        ip: IpAddr,
        kind: Kind,
        trusted: impl FnOnce(IpAddr) -> bool,
    ) -> Outcome {
        if now >= self.next_sweep {
            self.sweep(now);
        }
        let cfg = self.cfg;
        if !self.entries.contains_key(&ip) {
            if self.entries.len() >= cfg.max_sources
                && now.saturating_duration_since(self.last_sweep) >= MIN_SWEEP
            {
                self.sweep(now);
            }
            if self.entries.len() >= cfg.max_sources {
                return Outcome::Pass {
                    trusted: trusted(ip),
                    untracked: true,
                };
            }
            let trusted = trusted(ip);
            self.entries.insert(
                ip,
                Entry {
                    message: Bucket::full(cfg.message, now),
                    handshake: Bucket::full(cfg.handshake, now),
                    banned_until: None,
                    trusted,
                    trust_checked: now,
                },
            );
            if trusted {
                return Outcome::Pass {
                    trusted,
                    untracked: false,
                };
            }
        } else if let Some(e) = self.entries.get_mut(&ip)
            && now.saturating_duration_since(e.trust_checked) >= cfg.trust_recheck
        {
            e.trusted = trusted(ip);
            e.trust_checked = now;
        }
        let Some(e) = self.entries.get_mut(&ip) else {
            return Outcome::Pass {
                trusted: false,
                untracked: true,
            };
        };
        if e.trusted {
            e.banned_until = None;
            return Outcome::Pass {
                trusted: true,
                untracked: false,
            };
        }
        let verdict = judge(e, &cfg, kind, now);
        match verdict {
            Verdict::Pass => Outcome::Pass {
                trusted: false,
                untracked: false,
            },
            Verdict::Shed {
                retry_after_s,
                new_ban,
            } => Outcome::Shed {
                retry_after_s,
                new_ban,
            },
        }
    }

    /// Drops entries that carry no information any more: not banned, not
    /// trusted-and-recent, buckets full again.
    pub fn sweep(&mut self, now: Instant) {
        let cfg = self.cfg;
        self.entries.retain(|_, e| !forgettable(e, &cfg, now));
        self.last_sweep = now;
        self.next_sweep = now + SWEEP_EVERY;
    }
}

fn judge(e: &mut Entry, cfg: &TableConfig, kind: Kind, now: Instant) -> Verdict {
    if let Some(until) = e.banned_until {
        if now < until {
            return Verdict::Shed {
                retry_after_s: secs_left(until, now),
                new_ban: false,
            };
        }
        // The ban is over: start from full buckets.
        e.banned_until = None;
        e.message = Bucket::full(cfg.message, now);
        e.handshake = Bucket::full(cfg.handshake, now);
    }
    let ok = match kind {
        Kind::Message => e.message.take(cfg.message, now),
        Kind::Handshake => e.handshake.take(cfg.handshake, now),
    };
    if ok {
        return Verdict::Pass;
    }
    let until = now + cfg.ban;
    e.banned_until = Some(until);
    Verdict::Shed {
        retry_after_s: secs_left(until, now),
        new_ban: true,
    }
}

fn forgettable(e: &Entry, cfg: &TableConfig, now: Instant) -> bool {
    if e.banned_until.is_some_and(|u| now < u) {
        return false;
    }
    let idle = |b: &Bucket, r: &super::bucket::Rate| {
        now.saturating_duration_since(b.last()) >= r.refill_time()
    };
    if e.trusted {
        // Trusted entries only cache a lookup; keep them while in use.
        return now.saturating_duration_since(e.message.last().max(e.handshake.last()))
            >= cfg.trust_recheck;
    }
    idle(&e.message, &cfg.message) && idle(&e.handshake, &cfg.handshake)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn cfg(max_sources: usize) -> TableConfig {
        TableConfig {
            message: Rate::new(10, 20),
            handshake: Rate::new(2, 3),
            ban: Duration::from_secs(5),
            max_sources,
            trust_recheck: Duration::from_secs(10),
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    const PASS: Outcome = Outcome::Pass {
        trusted: false,
        untracked: false,
    };

    fn untrusted(_: IpAddr) -> bool {
        false
    }

    #[test]
    fn flood_is_banned_and_others_are_not() {
        let t0 = Instant::now();
        let mut t = SourceTable::new(cfg(100), t0);
        for i in 0..20 {
            assert_eq!(t.check(t0, ip(1), Kind::Message, untrusted), PASS, "{i}");
        }
        assert_eq!(
            t.check(t0, ip(1), Kind::Message, untrusted),
            Outcome::Shed {
                retry_after_s: 5,
                new_ban: true
            }
        );
        assert!(t.banned(ip(1), t0));
        // The ban covers handshakes too.
        assert!(!t.check(t0, ip(1), Kind::Handshake, untrusted).passed());
        // Another source is untouched.
        assert_eq!(t.check(t0, ip(2), Kind::Message, untrusted), PASS);
        // Banned: shed for the whole ban even at a trickle...
        let mid = t0 + Duration::from_secs(3);
        assert_eq!(
            t.check(mid, ip(1), Kind::Message, untrusted),
            Outcome::Shed {
                retry_after_s: 2,
                new_ban: false
            }
        );
        // ...and served again when it ends, with a full burst.
        let after = t0 + Duration::from_secs(5);
        assert!(!t.banned(ip(1), after));
        for _ in 0..20 {
            assert!(t.check(after, ip(1), Kind::Message, untrusted).passed());
        }
        assert!(!t.check(after, ip(1), Kind::Message, untrusted).passed());
    }

    #[test]
    fn sustained_rate_below_the_limit_is_never_banned() {
        let t0 = Instant::now();
        let mut t = SourceTable::new(cfg(100), t0);
        // 9/s against 10/s for a minute.
        for i in 0..540u32 {
            let now = t0 + Duration::from_millis(u64::from(i) * 1000 / 9);
            assert!(
                t.check(now, ip(1), Kind::Message, untrusted).passed(),
                "{i}"
            );
        }
    }

    #[test]
    fn handshake_rate_is_separate_from_messages() {
        let t0 = Instant::now();
        let mut t = SourceTable::new(cfg(100), t0);
        for _ in 0..3 {
            assert!(t.check(t0, ip(1), Kind::Handshake, untrusted).passed());
        }
        assert_eq!(
            t.check(t0, ip(1), Kind::Handshake, untrusted),
            Outcome::Shed {
                retry_after_s: 5,
                new_ban: true
            }
        );
        // A source that only sends messages is not affected by another's
        // handshakes.
        for _ in 0..20 {
            assert!(t.check(t0, ip(2), Kind::Message, untrusted).passed());
        }
    }

    #[test]
    fn trusted_sources_are_never_banned() {
        let t0 = Instant::now();
        let mut c = cfg(100);
        c.ban = Duration::from_secs(60);
        let mut t = SourceTable::new(c, t0);
        let mut asked = 0;
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_micros(i * 10);
            let o = t.check(now, ip(9), Kind::Message, |_| {
                asked += 1;
                true
            });
            assert_eq!(
                o,
                Outcome::Pass {
                    trusted: true,
                    untracked: false
                }
            );
        }
        assert_eq!(asked, 1, "trust is cached, not looked up per message");
        assert!(!t.banned(ip(9), t0 + Duration::from_millis(100)));
        // Trust is looked up again after the recheck interval: a source
        // that lost it is counted from then on.
        let later = t0 + Duration::from_secs(11);
        assert!(t.check(later, ip(9), Kind::Message, untrusted).passed());
        for _ in 0..19 {
            t.check(later, ip(9), Kind::Message, untrusted);
        }
        assert!(!t.check(later, ip(9), Kind::Message, untrusted).passed());
        // And one that gains trust mid-ban is served again at once.
        let again = later + Duration::from_secs(10);
        assert!(t.check(again, ip(9), Kind::Message, |_| true).passed());
    }

    #[test]
    fn table_is_capped_and_idle_entries_expire() {
        let t0 = Instant::now();
        let mut t = SourceTable::new(cfg(50), t0);
        // A spray of 1000 addresses, one message each, all at once.
        let mut untracked = 0;
        for i in 0..1000u32 {
            let a = IpAddr::from((0x0a00_0000 + i).to_be_bytes());
            match t.check(t0, a, Kind::Message, untrusted) {
                Outcome::Pass {
                    untracked: true, ..
                } => untracked += 1,
                o => assert!(o.passed()),
            }
            assert!(t.len() <= 50);
        }
        assert_eq!(t.len(), 50);
        assert_eq!(untracked, 950);
        // An entry is forgotten once its buckets are full again (20 tokens
        // at 10/s: 2 s; 3 at 2/s: 1.5 s).
        t.sweep(t0 + Duration::from_millis(1900));
        assert_eq!(t.len(), 50, "not refilled yet");
        t.sweep(t0 + Duration::from_secs(2));
        assert_eq!(t.len(), 0);
        // Sweeps happen by themselves as traffic goes on.
        let later = t0 + Duration::from_secs(10);
        for i in 0..50u8 {
            t.check(later, ip(i), Kind::Message, untrusted);
        }
        let much_later = later + Duration::from_secs(10);
        assert!(
            t.check(much_later, ip(200), Kind::Message, untrusted)
                .passed()
        );
        assert_eq!(t.len(), 1, "the idle ones went at the next sweep");
    }

    #[test]
    fn full_table_makes_room_from_idle_entries() {
        let t0 = Instant::now();
        let mut t = SourceTable::new(cfg(10), t0);
        let filled = t0 + 1500 * MS;
        for i in 0..10u8 {
            t.check(filled, ip(i), Kind::Message, untrusted);
        }
        t.sweep(t0 + 1900 * MS);
        assert_eq!(t.len(), 10);
        // The next regular sweep is due at 3.9 s, but the entries are idle
        // (2 s) at 3.6 s: a full table sweeps early and the newcomer is
        // tracked.
        let now = t0 + 3600 * MS;
        let o = t.check(now, ip(100), Kind::Message, untrusted);
        assert_eq!(o, PASS);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn bans_survive_sweeps_until_they_end() {
        let t0 = Instant::now();
        let mut t = SourceTable::new(cfg(10), t0);
        for _ in 0..21 {
            t.check(t0, ip(1), Kind::Message, untrusted);
        }
        assert!(t.banned(ip(1), t0));
        t.sweep(t0 + Duration::from_secs(4));
        assert!(t.banned(ip(1), t0 + Duration::from_secs(4)));
        t.sweep(t0 + Duration::from_secs(5));
        assert!(t.is_empty(), "ended ban and full buckets: forgotten");
    }
}
