//! Caps on concurrent server transactions: requests outside a dialog that
//! wait for their final response (forwarded, challenged, at the registrar
//! or at rtpengine), in total and per source IP. A new request beyond a cap
//! gets 503 with Retry-After instead of starting work. In-dialog requests
//! (BYE, re-INVITE...) and CANCEL are never refused: they finish work that
//! was admitted, and refusing a BYE would keep a call and its media alive.
//!
//! Sans-IO bookkeeping only; the proxy calls [`Pending::admit`] when a
//! request creates a server transaction and [`Pending::release`] when its
//! final response goes out or the transaction ends.

use std::collections::HashMap;
use std::net::IpAddr;

use std::hash::Hash;

use crate::transaction::ServerKey;

/// The caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingCaps {
    /// Pending requests in total.
    pub total: usize,
    /// Pending requests per source IP (trusted sources are exempt).
    pub per_source: usize,
    /// Retry-After of the 503, in seconds.
    pub retry_after_s: u32,
}

impl Default for PendingCaps {
    fn default() -> Self {
        let l = crate::limits::LimitsConfig::default();
        Self {
            total: l.max_server_transactions,
            per_source: l.max_server_transactions_per_source,
            retry_after_s: l.retry_after_s,
        }
    }
}

/// Which cap refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The total.
    Total,
    /// The source's share.
    PerSource,
}

/// The pending requests, by transaction key (a [`ServerKey`] in the proxy).
#[derive(Debug)]
pub struct Pending<K = ServerKey> {
    caps: PendingCaps,
    by_key: HashMap<K, IpAddr>,
    per_ip: HashMap<IpAddr, usize>,
    refused: u64,
}

impl<K: Hash + Eq + Copy> Pending<K> {
    /// No request pending yet.
    pub fn new(caps: PendingCaps) -> Self {
        Self {
            caps,
            by_key: HashMap::new(),
            per_ip: HashMap::new(),
            refused: 0,
        }
    }

    /// The caps.
    pub fn caps(&self) -> PendingCaps {
        self.caps
    }

    /// Counts a new request from `ip` unless a cap is reached; `trusted`
    /// sources only count toward the total.
    pub fn admit(&mut self, key: K, ip: IpAddr, trusted: bool) -> Result<(), Refusal> {
        if self.by_key.contains_key(&key) {
            return Ok(());
        }
        if self.by_key.len() >= self.caps.total {
            self.refused += 1;
            return Err(Refusal::Total);
        }
        let n = self.per_ip.get(&ip).copied().unwrap_or(0);
        if !trusted && n >= self.caps.per_source {
            self.refused += 1;
            return Err(Refusal::PerSource);
        }
        self.per_ip.insert(ip, n + 1);
        self.by_key.insert(key, ip);
        Ok(())
    }

    /// The request's final response went out, or its transaction ended
    /// (idempotent; unknown keys are ignored).
    pub fn release(&mut self, key: &K) {
        let Some(ip) = self.by_key.remove(key) else {
            return;
        };
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }

    /// Requests pending now.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether none is pending.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Pending requests from `ip`.
    pub fn from(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&ip).copied().unwrap_or(0)
    }

    /// Requests refused by a cap so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(total: usize, per_source: usize) -> PendingCaps {
        PendingCaps {
            total,
            per_source,
            retry_after_s: 5,
        }
    }

    #[test]
    fn per_source_cap_spares_other_sources_and_the_trusted() {
        let a: IpAddr = [127, 0, 0, 2].into();
        let b: IpAddr = [127, 0, 0, 3].into();
        let pbx: IpAddr = [127, 0, 0, 9].into();
        let mut p = Pending::<u32>::new(caps(100, 3));
        for k in 0..3 {
            p.admit(k, a, false).unwrap();
        }
        assert_eq!(p.admit(3, a, false), Err(Refusal::PerSource));
        assert_eq!(p.from(a), 3);
        p.admit(10, b, false).unwrap();
        for k in 20..40 {
            p.admit(k, pbx, true).unwrap();
        }
        assert_eq!(p.len(), 24);
        // A final response frees the slot, once.
        p.release(&0);
        p.release(&0);
        assert_eq!(p.from(a), 2);
        p.admit(4, a, false).unwrap();
        assert_eq!(p.refused(), 1);
        // Admitting the same key twice (a retransmission) counts it once.
        p.admit(4, a, false).unwrap();
        assert_eq!(p.from(a), 3);
    }

    #[test]
    fn total_cap_applies_to_everyone() {
        let pbx: IpAddr = [127, 0, 0, 9].into();
        let mut p = Pending::<u32>::new(caps(5, 5));
        for k in 0..5 {
            p.admit(k, pbx, true).unwrap();
        }
        assert_eq!(p.admit(5, pbx, true), Err(Refusal::Total));
        for k in 0..5 {
            p.release(&k);
        }
        assert!(p.is_empty());
        assert_eq!(p.from(pbx), 0);
        p.admit(5, pbx, true).unwrap();
    }
}
