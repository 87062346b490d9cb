//! Client non-INVITE transaction (RFC 3261 §17.1.2).
//!
//! ```text
//! Trying --1xx--> Proceeding --200-699--> Completed --K--> Terminated
//!   |  \------------200-699-------------/
//!   \--F--> Terminated (Timeout)     E retransmits (T1 doubling, capped at
//!                                    T2; T2 once a provisional arrived)
//! ```

use std::time::Duration;

use bytes::Bytes;
use tracing::debug;

use crate::rsip::Response;

use super::ctx::{Ctx, Event, ResponseVerdict, SeenProvisionals};
use super::timer::{Slot, TimerName};

/// States of the client non-INVITE transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Request sent, nothing heard.
    Trying,
    /// A provisional arrived.
    Proceeding,
    /// A final arrived; absorbing its retransmissions.
    Completed,
    /// Done.
    Terminated,
}

/// The state machine.
#[derive(Debug)]
pub(crate) struct Client {
    state: ClientState,
    request_bytes: Bytes,
    interval: Duration,
    seen: SeenProvisionals,
}

impl Client {
    /// Sends the request and arms E (unreliable only) and F.
    pub fn start(ctx: &mut Ctx<'_>, request_bytes: Bytes) -> Self {
        ctx.send(&request_bytes);
        if !ctx.reliable {
            ctx.arm(Slot::Retransmit, ctx.cfg.t1, TimerName::E);
        }
        ctx.arm(Slot::Timeout, ctx.cfg.t1x64(), TimerName::F);
        Self {
            state: ClientState::Trying,
            request_bytes,
            interval: ctx.cfg.t1,
            seen: SeenProvisionals::default(),
        }
    }

    /// Current state.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// A response matched this transaction.
    pub fn on_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        resp: &Response,
        fingerprint: u64,
    ) -> ResponseVerdict {
        use ClientState::*;
        let code = resp.status_code.code();
        match (self.state, code) {
            (Trying | Proceeding, 100..=199) => {
                self.state = Proceeding;
                if self.seen.insert(fingerprint) {
                    ResponseVerdict::Deliver
                } else {
                    ResponseVerdict::Absorb
                }
            }
            (Trying | Proceeding, _) if code >= 200 => {
                ctx.timers.clear_all();
                match ctx.unreliable_wait(ctx.cfg.t4) {
                    Some(k) => {
                        ctx.arm(Slot::Lifetime, k, TimerName::K);
                        self.state = Completed;
                    }
                    None => self.state = Terminated,
                }
                ResponseVerdict::Deliver
            }
            _ => {
                debug!(code, state = ?self.state, "response absorbed");
                ResponseVerdict::Absorb
            }
        }
    }

    /// A timer of this transaction fired.
    pub fn on_timer(&mut self, ctx: &mut Ctx<'_>, name: TimerName) {
        use ClientState::*;
        match (name, self.state) {
            (TimerName::E, Trying | Proceeding) => {
                ctx.send(&self.request_bytes);
                // §17.1.2.2: doubling capped at T2; straight T2 in Proceeding.
                self.interval = if self.state == Proceeding {
                    ctx.cfg.t2
                } else {
                    self.interval.saturating_mul(2).min(ctx.cfg.t2)
                };
                ctx.arm(Slot::Retransmit, self.interval, TimerName::E);
            }
            (TimerName::F, Trying | Proceeding) => {
                ctx.event(Event::Timeout);
                self.terminate(ctx);
            }
            (TimerName::K, _) => self.terminate(ctx),
            (other, state) => debug!(timer = ?other, ?state, "timer ignored"),
        }
    }

    fn terminate(&mut self, ctx: &mut Ctx<'_>) {
        ctx.timers.clear_all();
        self.state = ClientState::Terminated;
    }

    /// Whether the transaction has ended.
    pub fn is_terminated(&self) -> bool {
        self.state == ClientState::Terminated
    }
}
