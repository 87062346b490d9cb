//! Client INVITE transaction (RFC 3261 §17.1.1 as updated by RFC 6026 §7.2,
//! plus the proxy's timer C from §16.6/§16.8).
//!
//! ```text
//! Calling --1xx--> Proceeding --1xx (restart C)--> Proceeding
//!    |  \--2xx--> Accepted --M--> Terminated        (2xx retransmissions pass)
//!    |   \-300-699 (send ACK)--> Completed --D--> Terminated (finals re-ACKed)
//!    \--B--> Terminated (Timeout)
//! ```

use bytes::Bytes;
use tracing::{debug, warn};

use crate::rsip::{Request, Response};

use super::build::{build_ack_for_non2xx, encode_request};
use super::ctx::{Ctx, Event, ResponseVerdict, SeenProvisionals};
use super::timer::{Slot, TimerName};

/// States of the client INVITE transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientInviteState {
    /// INVITE sent, nothing heard.
    Calling,
    /// A provisional arrived.
    Proceeding,
    /// A non-2xx final arrived and was ACKed.
    Completed,
    /// A 2xx arrived (RFC 6026).
    Accepted,
    /// Done.
    Terminated,
}

/// The state machine.
#[derive(Debug)]
pub(crate) struct ClientInvite {
    state: ClientInviteState,
    request: Request,
    request_bytes: Bytes,
    ack_bytes: Option<Bytes>,
    interval: std::time::Duration,
    seen: SeenProvisionals,
    /// Timer C fired: provisionals no longer restart it (the CANCEL guard runs).
    c_fired: bool,
}

impl ClientInvite {
    /// Sends the INVITE and arms A (unreliable only), B and C.
    pub fn start(ctx: &mut Ctx<'_>, request: Request, request_bytes: Bytes) -> Self {
        ctx.send(&request_bytes);
        if !ctx.reliable {
            ctx.arm(Slot::Retransmit, ctx.cfg.t1, TimerName::A);
        }
        ctx.arm(Slot::Timeout, ctx.cfg.t1x64(), TimerName::B);
        ctx.arm(Slot::Lifetime, ctx.cfg.timer_c, TimerName::C);
        Self {
            state: ClientInviteState::Calling,
            request,
            request_bytes,
            ack_bytes: None,
            interval: ctx.cfg.t1,
            seen: SeenProvisionals::default(),
            c_fired: false,
        }
    }

    /// Current state.
    pub fn state(&self) -> ClientInviteState {
        self.state
    }

    /// The INVITE this transaction sends (for building a CANCEL).
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// A response matched this transaction.
    pub fn on_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        resp: &Response,
        fingerprint: u64,
    ) -> ResponseVerdict {
        use ClientInviteState::*;
        let code = resp.status_code.code();
        match (self.state, code) {
            (Calling | Proceeding, 100..=199) => {
                if self.state == Calling {
                    ctx.clear(Slot::Retransmit);
                    ctx.clear(Slot::Timeout);
                    self.state = Proceeding;
                }
                // §16.7 step 2: every provisional restarts timer C.
                if !self.c_fired {
                    ctx.arm(Slot::Lifetime, ctx.cfg.timer_c, TimerName::C);
                }
                if self.seen.insert(fingerprint) {
                    ResponseVerdict::Deliver
                } else {
                    ResponseVerdict::Absorb
                }
            }
            (Calling | Proceeding, 200..=299) => {
                ctx.timers.clear_all();
                ctx.arm(Slot::Lifetime, ctx.cfg.t1x64(), TimerName::M);
                self.state = Accepted;
                ResponseVerdict::Deliver
            }
            (Calling | Proceeding, _) if code >= 300 => {
                ctx.timers.clear_all();
                match build_ack_for_non2xx(&self.request, resp) {
                    Ok(ack) => {
                        let bytes = encode_request(&ack);
                        ctx.send(&bytes);
                        self.ack_bytes = Some(bytes);
                    }
                    Err(e) => warn!(error = %e, "cannot build ACK for non-2xx final"),
                }
                match ctx.unreliable_wait(ctx.cfg.timer_d) {
                    Some(d) => {
                        ctx.arm(Slot::Lifetime, d, TimerName::D);
                        self.state = Completed;
                    }
                    None => self.state = Terminated,
                }
                ResponseVerdict::Deliver
            }
            (Completed, _) if code >= 300 => {
                // §17.1.1.2: re-ACK every retransmitted final.
                if let Some(ack) = &self.ack_bytes {
                    ctx.send(ack);
                }
                ResponseVerdict::Absorb
            }
            // RFC 6026 §7.2: any 2xx in Accepted goes to the TU (retransmissions
            // and other forks); a proxy forwards them. A 2xx after a non-2xx
            // final is a broken peer, but 2xx are always forwarded (§16.7).
            (Accepted | Completed, 200..=299) => ResponseVerdict::Forward2xx,
            _ => {
                debug!(code, state = ?self.state, "response absorbed");
                ResponseVerdict::Absorb
            }
        }
    }

    /// A timer of this transaction fired.
    pub fn on_timer(&mut self, ctx: &mut Ctx<'_>, name: TimerName) {
        match name {
            TimerName::A if self.state == ClientInviteState::Calling => {
                ctx.send(&self.request_bytes);
                self.interval = self.interval.saturating_mul(2);
                ctx.arm(Slot::Retransmit, self.interval, TimerName::A);
            }
            TimerName::B if self.state == ClientInviteState::Calling => {
                ctx.event(Event::Timeout);
                self.terminate(ctx);
            }
            TimerName::C => {
                // The proxy now CANCELs (or, without a provisional, acts as
                // if a 408 arrived). If the callee never answers the CANCEL
                // with a final, give up after 64*T1 more (§9.1).
                self.c_fired = true;
                ctx.event(Event::TimerC);
                ctx.arm(Slot::Lifetime, ctx.cfg.t1x64(), TimerName::CancelGuard);
            }
            TimerName::CancelGuard => {
                ctx.event(Event::Timeout);
                self.terminate(ctx);
            }
            TimerName::D | TimerName::M => self.terminate(ctx),
            other => debug!(timer = ?other, state = ?self.state, "timer ignored"),
        }
    }

    fn terminate(&mut self, ctx: &mut Ctx<'_>) {
        ctx.timers.clear_all();
        self.state = ClientInviteState::Terminated;
    }

    /// Whether the transaction has ended.
    pub fn is_terminated(&self) -> bool {
        self.state == ClientInviteState::Terminated
    }
}
