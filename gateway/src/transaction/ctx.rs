//! What a state machine may do when driven: send bytes, raise a TU event,
//! arm or clear its timers. The table turns these into outputs.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::timer::{Slot, TimerConfig, TimerName, Timers};

/// A TU-facing event raised by a state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// Timer B or F (or the cancel guard) fired: no final response.
    Timeout,
    /// Timer C fired.
    TimerC,
    /// Timer H fired: no ACK for a non-2xx final.
    AckTimeout,
}

/// A side effect requested by a state machine.
#[derive(Debug, Clone)]
pub(crate) enum Action {
    /// Send these bytes to the transaction's peer.
    Send(Bytes),
    /// Tell the TU.
    Event(Event),
}

/// The environment of one state-machine step.
pub(crate) struct Ctx<'a> {
    /// The caller's clock.
    pub now: Instant,
    /// Timer values.
    pub cfg: &'a TimerConfig,
    /// Whether the transport is reliable (no retransmissions, zero D/I/J/K).
    pub reliable: bool,
    /// The transaction's timer slots.
    pub timers: &'a mut Timers,
    /// Collected actions (a buffer reused across steps).
    pub actions: &'a mut Vec<Action>,
}

impl Ctx<'_> {
    /// Queue `data` for the peer (cheap: `Bytes` is reference counted).
    pub fn send(&mut self, data: &Bytes) {
        self.actions.push(Action::Send(data.clone()));
    }

    /// Raise a TU event.
    pub fn event(&mut self, e: Event) {
        self.actions.push(Action::Event(e));
    }

    /// Arm `slot` to fire `after` from now.
    pub fn arm(&mut self, slot: Slot, after: Duration, name: TimerName) {
        self.timers.set(slot, self.now, after, name);
    }

    /// Disarm `slot`.
    pub fn clear(&mut self, slot: Slot) {
        self.timers.clear(slot);
    }

    /// A wait that is zero on reliable transports (timers D, I, J, K):
    /// `None` means "terminate now".
    pub fn unreliable_wait(&self, d: Duration) -> Option<Duration> {
        (!self.reliable).then_some(d)
    }
}

/// What the table should do with a response a client transaction accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResponseVerdict {
    /// New information: hand to the TU.
    Deliver,
    /// A 2xx after the first (retransmission or another fork): the proxy
    /// forwards it upstream (RFC 6026 §7.2).
    Forward2xx,
    /// A retransmission the transaction handled itself.
    Absorb,
}

/// What the table should do with an ACK that matched a server INVITE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckVerdict {
    /// ACK of our non-2xx final: consumed.
    Absorb,
    /// ACK of a 2xx (or no final yet): forward end to end.
    Stray,
}

/// Remembers the last few provisional responses seen, to absorb their
/// retransmissions while passing new ones.
#[derive(Debug, Default, Clone)]
pub(crate) struct SeenProvisionals {
    seen: [u64; 4],
    len: usize,
    next: usize,
}

impl SeenProvisionals {
    /// Records `fingerprint`; true if it was new.
    pub fn insert(&mut self, fingerprint: u64) -> bool {
        let filled = self.seen.get(..self.len).unwrap_or(&[]);
        if filled.contains(&fingerprint) {
            return false;
        }
        if let Some(slot) = self.seen.get_mut(self.next) {
            *slot = fingerprint;
        }
        self.next = (self.next + 1) % self.seen.len();
        self.len = (self.len + 1).min(self.seen.len());
        true
    }
}
