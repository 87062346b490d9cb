//! Sans-IO SIP transaction layer (RFC 3261 §17, RFC 6026) for a stateful
//! proxy.
//!
//! [`TransactionLayer`] never reads the clock or touches a socket: the shell
//! feeds it parsed messages and the current time, and drains
//! [`TransactionLayer::poll_output`] (bytes to send, TU events) and
//! [`TransactionLayer::poll_timeout`] (when to call
//! [`TransactionLayer::handle_timeout`] next). Like quinn-proto and str0m.
//!
//! The layer is generic over `D`, an opaque destination chosen by the shell
//! (flow id, socket address): a server transaction answers to the `D` its
//! request came from; a client transaction sends to the `D` it was created
//! with. Each transaction knows whether its transport is reliable: then it
//! does not retransmit (timers A, E, G) and timers D, I, J, K are zero.
//!
//! One state machine per file: [`client_invite`], [`client`],
//! [`server_invite`], [`server`]; matching keys in [`key`]; CANCEL, ACK and
//! response construction in [`build`].

pub mod build;
pub mod client;
pub mod client_invite;
mod ctx;
pub mod error;
pub mod key;
pub mod server;
pub mod server_invite;
mod store;
pub mod timer;

use std::collections::VecDeque;
use std::hash::RandomState;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tracing::{debug, trace};

use crate::rsip::{Method, Request, Response};

pub use build::{
    build_ack_for_non2xx, build_cancel, encode_request, encode_response, make_response,
};
pub use client::ClientState;
pub use client_invite::ClientInviteState;
pub use error::TransactionError;
pub use server::ServerState;
pub use server_invite::ServerInviteState;
pub use timer::{TimerConfig, TimerName};

use client::Client;
use client_invite::ClientInvite;
use ctx::{AckVerdict, Action, Ctx, Event, ResponseVerdict};
use key::{ClientMatch, ClientView, ServerMatch, ServerView, response_fingerprint};
use server::Server;
use server_invite::ServerInvite;
use store::{Index, Slab, TxId};
use timer::{HeapEntry, TimerHeap, Timers};

/// Handle of a server transaction (a request we received).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerKey(TxId);

/// Handle of a client transaction (a request we sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey(TxId);

/// Either kind of transaction handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionKey {
    /// A server transaction.
    Server(ServerKey),
    /// A client transaction.
    Client(ClientKey),
}

/// Settings of the layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransactionConfig {
    /// Timer values.
    pub timers: TimerConfig,
    /// Send `100 Trying` as soon as an INVITE creates a server transaction
    /// (§16.2 lets a proxy do so at once; default true).
    pub send_trying: bool,
    /// Cap on live transactions; beyond it new requests get
    /// [`TransactionError::TableFull`] (answer 503) (default 200 000).
    pub max_transactions: usize,
}

impl Default for TransactionConfig {
    fn default() -> Self {
        Self {
            timers: TimerConfig::default(),
            send_trying: true,
            max_transactions: 200_000,
        }
    }
}

/// Bytes for the transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<D> {
    /// Where to send.
    pub to: D,
    /// The serialized message (shared with the retransmission buffer).
    pub data: Bytes,
    /// The client transaction sending it (`None` for a server
    /// transaction's response): whom to tell when the transport fails
    /// ([`TransactionLayer::handle_transport_error`]).
    pub client: Option<ClientKey>,
}

/// What the shell must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output<D> {
    /// Send bytes.
    Transmit(Transmit<D>),
    /// Timer B or F fired, or a transport error was reported, or no final
    /// arrived after timer C plus 64*T1: the proxy synthesizes a 408.
    Timeout(ClientKey),
    /// Timer C fired: the proxy CANCELs the branch (or, without a
    /// provisional, acts as if a 408 arrived, §16.8).
    TimerC(ClientKey),
    /// Timer H fired: our non-2xx final was never ACKed.
    AckTimeout(ServerKey),
    /// The transaction is gone; its key is now invalid.
    Terminated(TransactionKey),
}

/// Why a request did not reach the TU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absorbed {
    /// A retransmission; the last response (if any) was queued again.
    Retransmission,
    /// The ACK for our non-2xx final (or its retransmission).
    Ack,
}

/// Which INVITE a CANCEL targets (§9.2, §16.10).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelTarget {
    /// The INVITE has no final response yet: cancel its branches, answer the
    /// CANCEL 200 and the INVITE 487.
    Pending(ServerKey),
    /// The INVITE was already answered: answer the CANCEL 200, nothing else.
    Answered(ServerKey),
    /// No such INVITE: answer 481 (or forward statelessly, §16.10).
    NoMatch,
}

/// The layer's verdict on a received request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestDisposition {
    /// A new server transaction: the TU handles the request.
    New {
        /// The new transaction.
        key: ServerKey,
        /// The request.
        request: Request,
    },
    /// A new CANCEL server transaction.
    Cancel {
        /// The CANCEL's own non-INVITE transaction.
        key: ServerKey,
        /// The CANCEL.
        request: Request,
        /// The INVITE transaction it matches.
        target: CancelTarget,
    },
    /// Handled inside the layer.
    Absorbed(Absorbed),
    /// An ACK outside any transaction: for a 2xx (`invite` is the Accepted
    /// INVITE transaction it matched, if any) or unknown. The proxy forwards
    /// it end to end.
    StrayAck {
        /// The ACK.
        request: Request,
        /// The INVITE server transaction with the same key, if any.
        invite: Option<ServerKey>,
    },
}

/// The layer's verdict on a received response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseDisposition {
    /// First copy of this response: the TU processes it.
    Deliver {
        /// The client transaction.
        key: ClientKey,
        /// The response.
        response: Response,
    },
    /// A 2xx after the transaction's first final (retransmission or another
    /// fork): a proxy forwards it upstream (RFC 6026 §7.2).
    Forward2xx {
        /// The client transaction.
        key: ClientKey,
        /// The response.
        response: Response,
    },
    /// A retransmission handled by the transaction (re-ACKed if needed).
    Absorbed(ClientKey),
    /// No client transaction: a proxy forwards it statelessly (§16.11).
    Stray(Response),
}

/// The state of one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionState {
    /// Client INVITE.
    ClientInvite(ClientInviteState),
    /// Client non-INVITE.
    Client(ClientState),
    /// Server INVITE.
    ServerInvite(ServerInviteState),
    /// Server non-INVITE.
    Server(ServerState),
}

#[derive(Debug)]
enum Machine {
    // Boxed: it holds the whole INVITE, the other machines are small.
    ClientInvite(Box<ClientInvite>),
    Client(Client),
    ServerInvite(ServerInvite),
    Server(Server),
}

impl Machine {
    fn is_terminated(&self) -> bool {
        match self {
            Self::ClientInvite(m) => m.is_terminated(),
            Self::Client(m) => m.is_terminated(),
            Self::ServerInvite(m) => m.is_terminated(),
            Self::Server(m) => m.is_terminated(),
        }
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>, name: TimerName) {
        match self {
            Self::ClientInvite(m) => m.on_timer(ctx, name),
            Self::Client(m) => m.on_timer(ctx, name),
            Self::ServerInvite(m) => m.on_timer(ctx, name),
            Self::Server(m) => m.on_timer(ctx, name),
        }
    }

    fn state(&self) -> TransactionState {
        match self {
            Self::ClientInvite(m) => TransactionState::ClientInvite(m.state()),
            Self::Client(m) => TransactionState::Client(m.state()),
            Self::ServerInvite(m) => TransactionState::ServerInvite(m.state()),
            Self::Server(m) => TransactionState::Server(m.state()),
        }
    }
}

#[derive(Debug)]
enum MatchKey {
    Server(ServerMatch),
    Client(ClientMatch),
}

#[derive(Debug)]
struct Entry<D> {
    dest: D,
    reliable: bool,
    timers: Timers,
    hash: u64,
    key: MatchKey,
    machine: Machine,
}

impl<D> Entry<D> {
    fn handle(&self, id: TxId) -> TransactionKey {
        match self.key {
            MatchKey::Server(_) => TransactionKey::Server(ServerKey(id)),
            MatchKey::Client(_) => TransactionKey::Client(ClientKey(id)),
        }
    }
}

/// The transaction table: every live transaction, its matching indexes and
/// one timer heap.
pub struct TransactionLayer<D> {
    cfg: TransactionConfig,
    store: Slab<Entry<D>>,
    server_index: Index,
    client_index: Index,
    heap: TimerHeap,
    outputs: VecDeque<Output<D>>,
    actions: Vec<Action>,
    hasher: RandomState,
}

impl<D: Clone> Default for TransactionLayer<D> {
    fn default() -> Self {
        Self::new(TransactionConfig::default())
    }
}

impl<D: Clone> TransactionLayer<D> {
    /// A layer with `cfg` (T1 and T2 are raised to at least 1 ms so that
    /// retransmission timers always move forward).
    pub fn new(mut cfg: TransactionConfig) -> Self {
        let floor = Duration::from_millis(1);
        cfg.timers.t1 = cfg.timers.t1.max(floor);
        cfg.timers.t2 = cfg.timers.t2.max(floor);
        Self {
            cfg,
            store: Slab::default(),
            server_index: Index::default(),
            client_index: Index::default(),
            heap: TimerHeap::default(),
            outputs: VecDeque::new(),
            actions: Vec::new(),
            hasher: RandomState::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &TransactionConfig {
        &self.cfg
    }

    /// Live transactions.
    pub fn len(&self) -> usize {
        self.store.len()
    }

    /// Whether no transaction is live.
    pub fn is_empty(&self) -> bool {
        self.store.len() == 0
    }

    /// The state of a live transaction.
    pub fn state(&self, key: TransactionKey) -> Option<TransactionState> {
        let id = match key {
            TransactionKey::Server(ServerKey(id)) | TransactionKey::Client(ClientKey(id)) => id,
        };
        self.store.get(id).map(|e| e.machine.state())
    }

    /// The INVITE a live client INVITE transaction sent (to build its CANCEL
    /// with [`build_cancel`]).
    pub fn client_request(&self, key: ClientKey) -> Option<&Request> {
        match &self.store.get(key.0)?.machine {
            Machine::ClientInvite(m) => Some(m.request()),
            _ => None,
        }
    }

    /// Feeds a received request. `from` is where it came from (responses go
    /// back there); `reliable` describes its transport.
    pub fn handle_request(
        &mut self,
        now: Instant,
        request: Request,
        from: D,
        reliable: bool,
    ) -> Result<RequestDisposition, TransactionError> {
        let view = ServerView::of_request(&request)?;
        let hash = view.hash_with(&self.hasher);
        let found = self.find_server(hash, &view);

        if request.method == Method::Ack {
            let Some(id) = found else {
                trace!("stray ACK");
                return Ok(RequestDisposition::StrayAck {
                    request,
                    invite: None,
                });
            };
            let verdict = self
                .drive(id, now, |m, ctx| match m {
                    Machine::ServerInvite(s) => s.on_ack(ctx),
                    _ => AckVerdict::Stray,
                })
                .unwrap_or(AckVerdict::Stray);
            return Ok(match verdict {
                AckVerdict::Absorb => RequestDisposition::Absorbed(Absorbed::Ack),
                AckVerdict::Stray => RequestDisposition::StrayAck {
                    request,
                    invite: Some(ServerKey(id)),
                },
            });
        }

        if let Some(id) = found {
            trace!(method = %request.method, "request retransmission absorbed");
            self.drive(id, now, |m, ctx| match m {
                Machine::ServerInvite(s) => s.on_retransmission(ctx),
                Machine::Server(s) => s.on_retransmission(ctx),
                _ => {}
            });
            return Ok(RequestDisposition::Absorbed(Absorbed::Retransmission));
        }

        let target = if request.method == Method::Cancel {
            let invite = view.clone().with_method(Method::Invite);
            let invite_hash = invite.hash_with(&self.hasher);
            Some(match self.find_server(invite_hash, &invite) {
                Some(id) => match self.store.get(id).map(|e| &e.machine) {
                    Some(Machine::ServerInvite(s)) if !s.final_sent() => {
                        CancelTarget::Pending(ServerKey(id))
                    }
                    _ => CancelTarget::Answered(ServerKey(id)),
                },
                None => CancelTarget::NoMatch,
            })
        } else {
            None
        };
        let owned = MatchKey::Server(view.to_owned_key());
        self.check_capacity()?;

        let id = if request.method == Method::Invite {
            let trying = self
                .cfg
                .send_trying
                .then(|| encode_response(&make_response(&request, 100, None, None)));
            self.insert(now, from, reliable, hash, owned, |ctx| {
                Machine::ServerInvite(ServerInvite::start(ctx, trying))
            })?
        } else {
            self.insert(now, from, reliable, hash, owned, |ctx| {
                Machine::Server(Server::start(ctx))
            })?
        };
        let key = ServerKey(id);
        debug!(method = %request.method, ?key, "server transaction created");
        Ok(match target {
            Some(target) => RequestDisposition::Cancel {
                key,
                request,
                target,
            },
            None => RequestDisposition::New { key, request },
        })
    }

    /// Feeds a received response.
    pub fn handle_response(
        &mut self,
        now: Instant,
        response: Response,
    ) -> Result<ResponseDisposition, TransactionError> {
        let view = ClientView::of_response(&response)?;
        let hash = view.hash_with(&self.hasher);
        let Some(id) = self.find_client(hash, &view) else {
            trace!("stray response");
            return Ok(ResponseDisposition::Stray(response));
        };
        // Only provisionals are told apart by content.
        let fingerprint = if response.status_code.code() < 200 {
            response_fingerprint(&response, &self.hasher)
        } else {
            0
        };
        let verdict = self
            .drive(id, now, |m, ctx| match m {
                Machine::ClientInvite(c) => c.on_response(ctx, &response, fingerprint),
                Machine::Client(c) => c.on_response(ctx, &response, fingerprint),
                _ => ResponseVerdict::Absorb,
            })
            .unwrap_or(ResponseVerdict::Absorb);
        let key = ClientKey(id);
        Ok(match verdict {
            ResponseVerdict::Deliver => ResponseDisposition::Deliver { key, response },
            ResponseVerdict::Forward2xx => ResponseDisposition::Forward2xx { key, response },
            ResponseVerdict::Absorb => ResponseDisposition::Absorbed(key),
        })
    }

    /// Starts a client transaction sending `request` to `to`. The top Via
    /// must carry our RFC 3261 branch. ACK is refused (see
    /// [`TransactionError::AckNotTransaction`]).
    pub fn send_request(
        &mut self,
        now: Instant,
        request: Request,
        to: D,
        reliable: bool,
    ) -> Result<ClientKey, TransactionError> {
        if request.method == Method::Ack {
            return Err(TransactionError::AckNotTransaction);
        }
        let view = ClientView::of_request(&request)?;
        let hash = view.hash_with(&self.hasher);
        if self.find_client(hash, &view).is_some() {
            return Err(TransactionError::Duplicate);
        }
        let owned = MatchKey::Client(view.to_owned_key());
        self.check_capacity()?;
        let bytes = encode_request(&request);
        let id = if request.method == Method::Invite {
            self.insert(now, to, reliable, hash, owned, |ctx| {
                Machine::ClientInvite(Box::new(ClientInvite::start(ctx, request, bytes)))
            })?
        } else {
            self.insert(now, to, reliable, hash, owned, |ctx| {
                Machine::Client(Client::start(ctx, bytes))
            })?
        };
        Ok(ClientKey(id))
    }

    /// Sends `response` through a server transaction (serialized once with
    /// [`encode_response`], kept for retransmission).
    pub fn send_response(
        &mut self,
        now: Instant,
        key: &ServerKey,
        response: &Response,
    ) -> Result<(), TransactionError> {
        let code = response.status_code.code();
        if self.store.get(key.0).is_none() {
            return Err(TransactionError::UnknownTransaction);
        }
        let bytes = encode_response(response);
        self.drive(key.0, now, |m, ctx| match m {
            Machine::ServerInvite(s) => s.send_response(ctx, code, bytes),
            Machine::Server(s) => s.send_response(ctx, code, bytes),
            _ => Err(TransactionError::UnknownTransaction),
        })
        .unwrap_or(Err(TransactionError::UnknownTransaction))
    }

    /// The transport could not deliver a client transaction's request
    /// (§17.1.4): the TU gets [`Output::Timeout`] and the transaction ends.
    pub fn handle_transport_error(&mut self, key: ClientKey) {
        if let Some(entry) = self.store.get(key.0)
            && matches!(entry.key, MatchKey::Client(_))
        {
            self.outputs.push_back(Output::Timeout(key));
            self.remove(key.0);
        }
    }

    /// The earliest deadline of any live timer.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        loop {
            let top = *self.heap.peek()?;
            if self.is_live(&top) {
                return Some(top.at);
            }
            self.heap.pop();
        }
    }

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(top) = self.heap.peek().copied() {
            if top.at > now {
                break;
            }
            self.heap.pop();
            let id = TxId {
                idx: top.idx,
                generation: top.generation,
            };
            let (Some(slot), true) = (top.slot(), self.is_live(&top)) else {
                continue;
            };
            let Some(entry) = self.store.get_mut(id) else {
                continue;
            };
            let Some(name) = entry.timers.get(slot).map(|a| a.name) else {
                continue;
            };
            entry.timers.clear(slot);
            trace!(timer = ?name, "timer fired");
            self.drive(id, now, |m, ctx| m.on_timer(ctx, name));
        }
        self.maybe_compact();
    }

    /// The next thing for the shell to do, if any.
    pub fn poll_output(&mut self) -> Option<Output<D>> {
        self.outputs.pop_front()
    }

    fn check_capacity(&self) -> Result<(), TransactionError> {
        if self.store.len() >= self.cfg.max_transactions {
            return Err(TransactionError::TableFull(self.store.len()));
        }
        Ok(())
    }

    fn find_server(&self, hash: u64, view: &ServerView<'_>) -> Option<TxId> {
        self.server_index
            .candidates(hash)
            .iter()
            .copied()
            .find(|id| {
                matches!(self.store.get(*id), Some(Entry { key: MatchKey::Server(k), .. }) if view.matches(k))
            })
    }

    fn find_client(&self, hash: u64, view: &ClientView<'_>) -> Option<TxId> {
        self.client_index
            .candidates(hash)
            .iter()
            .copied()
            .find(|id| {
                matches!(self.store.get(*id), Some(Entry { key: MatchKey::Client(k), .. }) if view.matches(k))
            })
    }

    fn is_live(&self, e: &HeapEntry) -> bool {
        let id = TxId {
            idx: e.idx,
            generation: e.generation,
        };
        match (self.store.get(id), e.slot()) {
            (Some(entry), Some(slot)) => entry.timers.get(slot).is_some_and(|a| a.seq == e.seq),
            _ => false,
        }
    }

    /// Creates a transaction whose machine `init` builds (sending and
    /// arming through the context).
    fn insert(
        &mut self,
        now: Instant,
        dest: D,
        reliable: bool,
        hash: u64,
        key: MatchKey,
        init: impl FnOnce(&mut Ctx<'_>) -> Machine,
    ) -> Result<TxId, TransactionError> {
        let mut timers = Timers::default();
        self.actions.clear();
        let machine = {
            let mut ctx = Ctx {
                now,
                cfg: &self.cfg.timers,
                reliable,
                timers: &mut timers,
                actions: &mut self.actions,
            };
            init(&mut ctx)
        };
        let is_server = matches!(key, MatchKey::Server(_));
        let id = self
            .store
            .insert(Entry {
                dest,
                reliable,
                timers,
                hash,
                key,
                machine,
            })
            .ok_or(TransactionError::TableFull(self.store.len()))?;
        if is_server {
            self.server_index.insert(hash, id);
        } else {
            self.client_index.insert(hash, id);
        }
        self.apply(id);
        Ok(id)
    }

    /// Runs one step of a live transaction's machine.
    fn drive<R>(
        &mut self,
        id: TxId,
        now: Instant,
        f: impl FnOnce(&mut Machine, &mut Ctx<'_>) -> R,
    ) -> Option<R> {
        self.actions.clear();
        let result = {
            let entry = self.store.get_mut(id)?;
            let mut ctx = Ctx {
                now,
                cfg: &self.cfg.timers,
                reliable: entry.reliable,
                timers: &mut entry.timers,
                actions: &mut self.actions,
            };
            f(&mut entry.machine, &mut ctx)
        };
        self.apply(id);
        Some(result)
    }

    /// Turns the collected actions and newly armed timers of `id` into
    /// outputs and heap entries; removes the transaction if it ended.
    fn apply(&mut self, id: TxId) {
        let Some(entry) = self.store.get_mut(id) else {
            return;
        };
        for action in self.actions.drain(..) {
            let out = match action {
                Action::Send(data) => Output::Transmit(Transmit {
                    to: entry.dest.clone(),
                    data,
                    client: matches!(entry.key, MatchKey::Client(_)).then_some(ClientKey(id)),
                }),
                Action::Event(Event::Timeout) => Output::Timeout(ClientKey(id)),
                Action::Event(Event::TimerC) => Output::TimerC(ClientKey(id)),
                Action::Event(Event::AckTimeout) => Output::AckTimeout(ServerKey(id)),
            };
            self.outputs.push_back(out);
        }
        let heap = &mut self.heap;
        let dirty = entry.timers.take_dirty(|| heap.next_seq());
        for (slot, armed) in dirty {
            heap.push(HeapEntry {
                at: armed.at,
                seq: armed.seq,
                idx: id.idx,
                generation: id.generation,
                slot: slot as u8,
            });
        }
        if entry.machine.is_terminated() {
            self.remove(id);
        }
    }

    fn remove(&mut self, id: TxId) {
        let Some(entry) = self.store.remove(id) else {
            return;
        };
        match entry.key {
            MatchKey::Server(_) => self.server_index.remove(entry.hash, id),
            MatchKey::Client(_) => self.client_index.remove(entry.hash, id),
        }
        debug!(key = ?entry.handle(id), "transaction terminated");
        self.outputs.push_back(Output::Terminated(entry.handle(id)));
    }

    /// Drops stale heap entries once they dominate (each live transaction
    /// has at most three armed timers).
    fn maybe_compact(&mut self) {
        let limit = 1024 + 6 * self.store.len();
        if self.heap.len() > limit {
            let store = &self.store;
            self.heap.retain(|e| {
                let id = TxId {
                    idx: e.idx,
                    generation: e.generation,
                };
                match (store.get(id), e.slot()) {
                    (Some(entry), Some(slot)) => {
                        entry.timers.get(slot).is_some_and(|a| a.seq == e.seq)
                    }
                    _ => false,
                }
            });
        }
    }
}
