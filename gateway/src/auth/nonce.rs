//! Stateless nonces and the bounded replay tracker.
//!
//! A nonce is `base64url(ts_be64 || random64 || HMAC-SHA256(secret, ts || random)[..16])`:
//! rtcgate checks its own nonces without storing them. Only nonces that were *used*
//! successfully enter the tracker, which remembers the highest `nc` per nonce.

use std::collections::{BTreeSet, HashMap};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const MAC_LEN: usize = 16;
const RAW_LEN: usize = 8 + 8 + MAC_LEN;
/// Clock skew tolerated for nonces that claim a future issue time (multi-node clocks).
const FUTURE_SKEW_SECS: i64 = 5;

/// Result of checking a nonce's integrity and age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceStatus {
    /// Issued by us and still fresh; carries the issue time.
    Fresh(i64),
    /// Issued by us but older than the lifetime.
    Stale,
    /// Not one of ours (bad MAC, wrong length, garbage).
    Invalid,
}

/// Issues and checks nonces with a server secret.
#[derive(Clone)]
pub struct NonceFactory {
    secret: [u8; 32],
    lifetime_secs: i64,
}

impl std::fmt::Debug for NonceFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("NonceFactory")
            .field("lifetime_secs", &self.lifetime_secs)
            .finish_non_exhaustive()
    }
}

impl NonceFactory {
    /// A factory with the given HMAC secret and nonce lifetime.
    pub fn new(secret: [u8; 32], lifetime_secs: i64) -> Self {
        Self {
            secret,
            lifetime_secs,
        }
    }

    /// The configured lifetime in seconds.
    pub fn lifetime_secs(&self) -> i64 {
        self.lifetime_secs
    }

    fn mac(&self, data: &[u8]) -> [u8; 32] {
        // new_from_slice only fails for invalid key lengths, which HMAC does not have.
        let mut out = [0u8; 32];
        if let Ok(mut m) = Hmac::<Sha256>::new_from_slice(&self.secret) {
            m.update(data);
            out.copy_from_slice(&m.finalize().into_bytes());
        }
        out
    }

    /// A new nonce issued at `now` (unix seconds) with caller-supplied randomness.
    pub fn issue(&self, now: i64, random: [u8; 8]) -> String {
        let mut raw = [0u8; RAW_LEN];
        raw[..8].copy_from_slice(&now.to_be_bytes());
        raw[8..16].copy_from_slice(&random);
        let mac = self.mac(&raw[..16]);
        raw[16..].copy_from_slice(&mac[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// Checks a nonce received from a client.
    pub fn check(&self, now: i64, nonce: &str) -> NonceStatus {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(nonce) else {
            return NonceStatus::Invalid;
        };
        let (Some(body), Some(mac)) = (raw.get(..16), raw.get(16..)) else {
            return NonceStatus::Invalid;
        };
        if raw.len() != RAW_LEN {
            return NonceStatus::Invalid;
        }
        let expected = self.mac(body);
        if !bool::from(expected[..MAC_LEN].ct_eq(mac)) {
            return NonceStatus::Invalid;
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&raw[..8]);
        let ts = i64::from_be_bytes(ts);
        if ts > now.saturating_add(FUTURE_SKEW_SECS) {
            NonceStatus::Invalid
        } else if now.saturating_sub(ts) > self.lifetime_secs {
            NonceStatus::Stale
        } else {
            NonceStatus::Fresh(ts)
        }
    }

    /// The opaque value sent with every challenge (derived from the secret, constant).
    pub fn opaque(&self) -> String {
        hex::encode(&self.mac(b"rtcgate-opaque")[..8])
    }
}

/// What the tracker says about a use of a nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// The use is new (higher nc, or first use).
    Ok,
    /// nc not higher than before, or a second use without qop.
    Replay,
    /// The nonce may have been evicted from the tracker; ask for a fresh one.
    Forgotten,
}

/// Bounded map nonce → highest nc seen (0 = used once without qop).
#[derive(Debug)]
pub struct NonceTracker {
    capacity: usize,
    seen: HashMap<String, (i64, Option<u32>)>,
    by_age: BTreeSet<(i64, String)>,
    /// Nonces issued at or before this time that are not in `seen` may have been evicted.
    floor: i64,
}

impl NonceTracker {
    /// A tracker holding at most `capacity` nonces (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            seen: HashMap::new(),
            by_age: BTreeSet::new(),
            floor: i64::MIN,
        }
    }

    /// Number of tracked nonces.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// True when no nonce is tracked.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Would this use (nc `None` = no qop) be accepted? Does not record it.
    pub fn check(&self, nonce: &str, issued: i64, nc: Option<u32>) -> Reuse {
        match self.seen.get(nonce) {
            None if issued <= self.floor => Reuse::Forgotten,
            None => Reuse::Ok,
            // A nonce used without qop is single-use (RFC 2069 style has no counter).
            Some((_, None)) => Reuse::Replay,
            Some((_, Some(high))) => match nc {
                Some(n) if n > *high => Reuse::Ok,
                _ => Reuse::Replay,
            },
        }
    }

    /// Records a successful use, evicting expired (issued before `expire_before`) and,
    /// if still full, the oldest entries.
    pub fn record(&mut self, nonce: &str, issued: i64, nc: Option<u32>, expire_before: i64) {
        while let Some((ts, n)) = self.by_age.first().cloned() {
            if ts >= expire_before {
                break;
            }
            self.by_age.pop_first();
            self.seen.remove(&n);
        }
        if !self.seen.contains_key(nonce) {
            while self.seen.len() >= self.capacity {
                let Some((ts, n)) = self.by_age.pop_first() else {
                    break;
                };
                self.seen.remove(&n);
                self.floor = self.floor.max(ts);
            }
            self.by_age.insert((issued, nonce.to_string()));
        }
        self.seen.insert(nonce.to_string(), (issued, nc));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_check_stale_invalid() {
        let f = NonceFactory::new([7; 32], 300);
        let n = f.issue(1000, [1; 8]);
        assert_eq!(n.len(), 43);
        assert_eq!(f.check(1000, &n), NonceStatus::Fresh(1000));
        assert_eq!(f.check(1300, &n), NonceStatus::Fresh(1000));
        assert_eq!(f.check(1301, &n), NonceStatus::Stale);
        assert_eq!(f.check(900, &n), NonceStatus::Invalid);
        let other = NonceFactory::new([8; 32], 300);
        assert_eq!(other.check(1000, &n), NonceStatus::Invalid);
        let mut tampered = n.clone().into_bytes();
        tampered[2] = if tampered[2] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            f.check(1000, std::str::from_utf8(&tampered).unwrap()),
            NonceStatus::Invalid
        );
        assert_eq!(
            f.check(1000, "awQNVmsEDCoaRlsFmV94sa2GKKCVtBXA"),
            NonceStatus::Invalid
        );
        assert_eq!(f.check(1000, "!!"), NonceStatus::Invalid);
    }

    #[test]
    fn tracker_nc_and_eviction() {
        let mut t = NonceTracker::new(2);
        assert_eq!(t.check("a", 10, Some(1)), Reuse::Ok);
        t.record("a", 10, Some(0x0a), 0);
        assert_eq!(t.check("a", 10, Some(0x0a)), Reuse::Replay);
        assert_eq!(t.check("a", 10, Some(0x09)), Reuse::Replay);
        assert_eq!(t.check("a", 10, Some(0x100)), Reuse::Ok);
        assert_eq!(t.check("a", 10, None), Reuse::Replay);
        t.record("b", 11, None, 0);
        assert_eq!(t.check("b", 11, None), Reuse::Replay);
        t.record("c", 12, Some(1), 0); // evicts "a" (oldest)
        assert_eq!(t.len(), 2);
        assert_eq!(t.check("a", 10, Some(0x200)), Reuse::Forgotten);
        assert_eq!(t.check("d", 13, Some(1)), Reuse::Ok);
        t.record("d", 20, Some(1), 12); // expires b (11)
        assert_eq!(t.check("b", 11, None), Reuse::Ok);
    }
}
