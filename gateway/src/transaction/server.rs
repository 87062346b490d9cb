//! Server non-INVITE transaction (RFC 3261 §17.2.2).
//!
//! ```text
//! Trying --1xx--> Proceeding --200-699--> Completed --J--> Terminated
//!   \---------------200-699-------------/
//! ```
//! A retransmitted request is absorbed; from Proceeding on, the last
//! response is resent.

use bytes::Bytes;
use tracing::{debug, warn};

use super::ctx::Ctx;
use super::error::TransactionError;
use super::timer::{Slot, TimerName};

/// States of the server non-INVITE transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// Waiting for the TU.
    Trying,
    /// A provisional was sent.
    Proceeding,
    /// A final was sent; absorbing retransmissions.
    Completed,
    /// Done.
    Terminated,
}

impl ServerState {
    fn name(self) -> &'static str {
        match self {
            Self::Trying => "Trying",
            Self::Proceeding => "Proceeding",
            Self::Completed => "Completed",
            Self::Terminated => "Terminated",
        }
    }
}

/// The state machine.
#[derive(Debug)]
pub(crate) struct Server {
    state: ServerState,
    last_response: Option<Bytes>,
}

impl Server {
    /// Enters Trying (no 100 for non-INVITE, §17.2.2).
    pub fn start(ctx: &mut Ctx<'_>) -> Self {
        ctx.arm(
            Slot::Lifetime,
            ctx.cfg.server_non_invite_guard(),
            TimerName::ServerGuard,
        );
        Self {
            state: ServerState::Trying,
            last_response: None,
        }
    }

    /// Current state.
    pub fn state(&self) -> ServerState {
        self.state
    }

    /// The request was retransmitted.
    pub fn on_retransmission(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(last) = &self.last_response {
            ctx.send(last);
        }
    }

    /// The TU sends a response with status `code`, encoded as `bytes`.
    pub fn send_response(
        &mut self,
        ctx: &mut Ctx<'_>,
        code: u16,
        bytes: Bytes,
    ) -> Result<(), TransactionError> {
        use ServerState::*;
        match (self.state, code) {
            (Trying | Proceeding, 100..=199) => {
                ctx.send(&bytes);
                self.last_response = Some(bytes);
                self.state = Proceeding;
            }
            (Trying | Proceeding, 200..=699) => {
                ctx.send(&bytes);
                ctx.timers.clear_all();
                match ctx.unreliable_wait(ctx.cfg.t1x64()) {
                    Some(j) => {
                        ctx.arm(Slot::Lifetime, j, TimerName::J);
                        self.last_response = Some(bytes);
                        self.state = Completed;
                    }
                    None => self.state = Terminated,
                }
            }
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
        match (name, self.state) {
            (TimerName::J, _) => self.terminate(ctx),
            (TimerName::ServerGuard, ServerState::Trying | ServerState::Proceeding) => {
                warn!("server transaction got no final response from the TU; dropped");
                self.terminate(ctx);
            }
            (other, state) => debug!(timer = ?other, ?state, "timer ignored"),
        }
    }

    fn terminate(&mut self, ctx: &mut Ctx<'_>) {
        ctx.timers.clear_all();
        self.state = ServerState::Terminated;
    }

    /// Whether the transaction has ended.
    pub fn is_terminated(&self) -> bool {
        self.state == ServerState::Terminated
    }
}
