//! Server INVITE transaction (RFC 3261 §17.2.1 as updated by RFC 6026 §7.1).
//!
//! ```text
//! Proceeding --1xx--> Proceeding            (INVITE retransmission: resend last)
//!    |  \--2xx--> Accepted --L--> Terminated (INVITE retransmissions absorbed,
//!    |                                        further 2xx from the TU sent)
//!    \--300-699--> Completed --ACK--> Confirmed --I--> Terminated
//!                    | G resends the final (T1 doubling, capped at T2)
//!                    \--H--> Terminated (AckTimeout)
//! ```

use std::time::Duration;

use bytes::Bytes;
use tracing::{debug, warn};

use super::ctx::{AckVerdict, Ctx, Event};
use super::error::TransactionError;
use super::timer::{Slot, TimerName};

/// States of the server INVITE transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerInviteState {
    /// Waiting for the TU's final response.
    Proceeding,
    /// Non-2xx final sent, waiting for the ACK.
    Completed,
    /// ACK received; absorbing ACK retransmissions.
    Confirmed,
    /// 2xx sent (RFC 6026).
    Accepted,
    /// Done.
    Terminated,
}

impl ServerInviteState {
    fn name(self) -> &'static str {
        match self {
            Self::Proceeding => "Proceeding",
            Self::Completed => "Completed",
            Self::Confirmed => "Confirmed",
            Self::Accepted => "Accepted",
            Self::Terminated => "Terminated",
        }
    }
}

/// The state machine.
#[derive(Debug)]
pub(crate) struct ServerInvite {
    state: ServerInviteState,
    last_response: Option<Bytes>,
    interval: Duration,
}

impl ServerInvite {
    /// Enters Proceeding, sending `trying` (the 100) when given.
    pub fn start(ctx: &mut Ctx<'_>, trying: Option<Bytes>) -> Self {
        if let Some(t) = &trying {
            ctx.send(t);
        }
        ctx.arm(
            Slot::Lifetime,
            ctx.cfg.server_invite_guard(),
            TimerName::ServerGuard,
        );
        Self {
            state: ServerInviteState::Proceeding,
            last_response: trying,
            interval: ctx.cfg.t1,
        }
    }

    /// Current state.
    pub fn state(&self) -> ServerInviteState {
        self.state
    }

    /// Whether a final response was sent.
    pub fn final_sent(&self) -> bool {
        self.state != ServerInviteState::Proceeding
    }

    /// The INVITE was retransmitted: resend the last provisional or the
    /// non-2xx final; in Accepted/Confirmed just absorb it.
    pub fn on_retransmission(&mut self, ctx: &mut Ctx<'_>) {
        if matches!(
            self.state,
            ServerInviteState::Proceeding | ServerInviteState::Completed
        ) && let Some(last) = &self.last_response
        {
            ctx.send(last);
        }
    }

    /// An ACK matched this transaction.
    pub fn on_ack(&mut self, ctx: &mut Ctx<'_>) -> AckVerdict {
        match self.state {
            ServerInviteState::Completed => {
                ctx.timers.clear_all();
                match ctx.unreliable_wait(ctx.cfg.t4) {
                    Some(i) => {
                        ctx.arm(Slot::Lifetime, i, TimerName::I);
                        self.state = ServerInviteState::Confirmed;
                    }
                    None => self.state = ServerInviteState::Terminated,
                }
                AckVerdict::Absorb
            }
            ServerInviteState::Confirmed | ServerInviteState::Terminated => AckVerdict::Absorb,
            ServerInviteState::Accepted | ServerInviteState::Proceeding => AckVerdict::Stray,
        }
    }

    /// The TU sends a response with status `code`, encoded as `bytes`.
    pub fn send_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        code: u16,
        bytes: Bytes,
    ) -> Result<(), TransactionError> {
        use ServerInviteState::*;
        match (self.state, code) {
            (Proceeding, 100..=199) => {
                ctx.send(&bytes);
                self.last_response = Some(bytes);
            }
            (Proceeding, 200..=299) => {
                ctx.send(&bytes);
                ctx.timers.clear_all();
                ctx.arm(Slot::Lifetime, ctx.cfg.t1x64(), TimerName::L);
                self.last_response = None;
                self.state = Accepted;
            }
            (Proceeding, 300..=699) => {
                ctx.send(&bytes);
                ctx.timers.clear_all();
                if !ctx.reliable {
                    ctx.arm(Slot::Retransmit, ctx.cfg.t1, TimerName::G);
                }
                ctx.arm(Slot::Timeout, ctx.cfg.t1x64(), TimerName::H);
                self.last_response = Some(bytes);
                self.state = Completed;
            }
            // RFC 6026 §7.1: 2xx from the TU (retransmissions, other forks)
            // are sent in Accepted.
            (Accepted, 200..=299) => ctx.send(&bytes),
            (state, status) => {
                return Err(TransactionError::InvalidState {
                    status,
                    state: state.name(),
                });
            }
        }
        Ok(())
    }

    /// A timer of this transaction fired.
    pub fn on_timer(&mut self, ctx: &mut Ctx<'_>, name: TimerName) {
        use ServerInviteState::*;
        match (name, self.state) {
            (TimerName::G, Completed) => {
                if let Some(last) = &self.last_response {
                    ctx.send(last);
                }
                self.interval = self.interval.saturating_mul(2).min(ctx.cfg.t2);
                ctx.arm(Slot::Retransmit, self.interval, TimerName::G);
            }
            (TimerName::H, Completed) => {
                ctx.event(Event::AckTimeout);
                self.terminate(ctx);
            }
            (TimerName::I | TimerName::L, _) => self.terminate(ctx),
            (TimerName::ServerGuard, Proceeding) => {
                warn!("server INVITE transaction got no final response from the TU; dropped");
                self.terminate(ctx);
            }
            (other, state) => debug!(timer = ?other, ?state, "timer ignored"),
        }
    }

    fn terminate(&mut self, ctx: &mut Ctx<'_>) {
        ctx.timers.clear_all();
        self.state = ServerInviteState::Terminated;
    }

    /// Whether the transaction has ended.
    pub fn is_terminated(&self) -> bool {
        self.state == ServerInviteState::Terminated
    }
}
