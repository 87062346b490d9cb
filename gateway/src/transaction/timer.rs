//! Timer values (RFC 3261 §17, table 4; RFC 6026 timers L and M; §16.6 timer C)
//! and the per-transaction timer slots the state machines arm.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// The RFC 3261 timer base values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    /// RTT estimate; base of A, B, E, F, G, H, J, L, M (default 500 ms).
    pub t1: Duration,
    /// Cap on non-INVITE and INVITE-response retransmit intervals (default 4 s).
    pub t2: Duration,
    /// Longest time a message stays in the network (default 5 s): timers I, K.
    pub t4: Duration,
    /// Proxy INVITE timer C (§16.6 step 11, > 3 min; default 180 s).
    pub timer_c: Duration,
    /// Client INVITE wait for retransmitted finals on unreliable transports
    /// (timer D, at least 32 s).
    pub timer_d: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        Self {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            timer_c: Duration::from_secs(180),
            timer_d: Duration::from_secs(32),
        }
    }
}

impl TimerConfig {
    /// 64*T1: timers B, F, H, J, L, M.
    pub fn t1x64(&self) -> Duration {
        self.t1.saturating_mul(64)
    }

    /// How long a server INVITE transaction waits for the TU's final response
    /// before it is dropped (not in the RFC: a memory bound). Timer C plus
    /// 64*T1 leaves a proxy time to CANCEL and collect its branches.
    pub fn server_invite_guard(&self) -> Duration {
        self.timer_c.saturating_add(self.t1x64())
    }

    /// How long a non-INVITE server transaction waits for the TU's final
    /// response (not in the RFC: a memory bound). After 64*T1 the client's
    /// timer F has fired, so a later answer is useless.
    pub fn server_non_invite_guard(&self) -> Duration {
        self.t1x64().saturating_add(self.t4)
    }
}

/// Names of the timers, for tracing and for the state machines' dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimerName {
    /// Client INVITE retransmit (unreliable only).
    A,
    /// Client INVITE transaction timeout.
    B,
    /// Proxy INVITE timer C.
    C,
    /// Grace period after timer C fired, waiting for the CANCEL's effect.
    CancelGuard,
    /// Client INVITE Completed wait.
    D,
    /// Client non-INVITE retransmit (unreliable only).
    E,
    /// Client non-INVITE transaction timeout.
    F,
    /// Server INVITE final-response retransmit (unreliable only).
    G,
    /// Server INVITE wait for ACK.
    H,
    /// Server INVITE Confirmed wait.
    I,
    /// Server non-INVITE Completed wait.
    J,
    /// Client non-INVITE Completed wait.
    K,
    /// Server INVITE Accepted wait (RFC 6026).
    L,
    /// Client INVITE Accepted wait (RFC 6026).
    M,
    /// Server transaction waiting too long for its TU (memory bound).
    ServerGuard,
}

/// The three timers a transaction may run at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// A, E, G.
    Retransmit = 0,
    /// B, F, H.
    Timeout = 1,
    /// C, CancelGuard, ServerGuard, D, I, J, K, L, M.
    Lifetime = 2,
}

impl Slot {
    const ALL: [Slot; 3] = [Slot::Retransmit, Slot::Timeout, Slot::Lifetime];

    fn from_index(i: u8) -> Option<Self> {
        Self::ALL.get(usize::from(i)).copied()
    }
}

/// One armed timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Armed {
    pub at: Instant,
    pub name: TimerName,
    /// Global sequence number; a heap entry is live only if it carries the
    /// same number (lazy deletion).
    pub seq: u64,
}

/// A transaction's timer slots, with a dirty mask of slots armed since the
/// table last scheduled them.
#[derive(Debug, Default, Clone)]
pub(crate) struct Timers {
    slots: [Option<Armed>; 3],
    dirty: u8,
}

impl Timers {
    /// Arms `slot` to fire `after` from `now`, replacing what it held.
    pub fn set(&mut self, slot: Slot, now: Instant, after: Duration, name: TimerName) {
        let at = now.checked_add(after).unwrap_or(now);
        self.slots[slot as usize] = Some(Armed { at, name, seq: 0 });
        self.dirty |= 1 << (slot as u8);
    }

    /// Disarms `slot`.
    pub fn clear(&mut self, slot: Slot) {
        self.slots[slot as usize] = None;
        self.dirty &= !(1 << (slot as u8));
    }

    /// Disarms every slot.
    pub fn clear_all(&mut self) {
        self.slots = [None; 3];
        self.dirty = 0;
    }

    /// The armed timer in `slot`, if any.
    pub fn get(&self, slot: Slot) -> Option<&Armed> {
        self.slots[slot as usize].as_ref()
    }

    /// Takes the slots armed since the last call, stamping each with a fresh
    /// sequence number from `next_seq`.
    pub fn take_dirty(&mut self, mut next_seq: impl FnMut() -> u64) -> DirtyIter {
        let mut out = DirtyIter::default();
        for slot in Slot::ALL {
            if self.dirty & (1 << (slot as u8)) != 0
                && let Some(armed) = self.slots[slot as usize].as_mut()
            {
                armed.seq = next_seq();
                out.items[slot as usize] = Some((slot, *armed));
            }
        }
        self.dirty = 0;
        out
    }
}

/// Up to three newly armed timers (no allocation).
#[derive(Debug, Default)]
pub(crate) struct DirtyIter {
    items: [Option<(Slot, Armed)>; 3],
}

impl Iterator for DirtyIter {
    type Item = (Slot, Armed);
    fn next(&mut self) -> Option<Self::Item> {
        for item in self.items.iter_mut() {
            if let Some(v) = item.take() {
                return Some(v);
            }
        }
        None
    }
}

/// A heap entry: (deadline, seq) orders it; (tx index, generation, slot)
/// locate the timer it stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct HeapEntry {
    pub at: Instant,
    pub seq: u64,
    pub idx: u32,
    pub generation: u32,
    pub slot: u8,
}

impl HeapEntry {
    /// The slot this entry refers to.
    pub fn slot(&self) -> Option<Slot> {
        Slot::from_index(self.slot)
    }
}

/// Min-heap of deadlines with lazy deletion: re-arming or clearing a slot
/// leaves the old entry in place; it is skipped when it surfaces.
#[derive(Debug, Default)]
pub(crate) struct TimerHeap {
    heap: BinaryHeap<Reverse<HeapEntry>>,
    next_seq: u64,
}

impl TimerHeap {
    /// A fresh sequence number.
    pub fn next_seq(&mut self) -> u64 {
        self.next_seq = self.next_seq.wrapping_add(1);
        self.next_seq
    }

    /// Schedules an entry.
    pub fn push(&mut self, entry: HeapEntry) {
        self.heap.push(Reverse(entry));
    }

    /// The earliest entry, live or stale.
    pub fn peek(&self) -> Option<&HeapEntry> {
        self.heap.peek().map(|Reverse(e)| e)
    }

    /// Removes the earliest entry.
    pub fn pop(&mut self) -> Option<HeapEntry> {
        self.heap.pop().map(|Reverse(e)| e)
    }

    /// Number of entries, live and stale.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Drops every entry `live` rejects (O(n)); called when stale entries
    /// dominate so memory stays proportional to the live timers.
    pub fn retain(&mut self, mut live: impl FnMut(&HeapEntry) -> bool) {
        self.heap.retain(|Reverse(e)| live(e));
    }
}
