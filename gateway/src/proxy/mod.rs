//! The stateful proxy (RFC 3261 §16), sans-IO: requests and responses go
//! in with `now`, bytes to send come out. The transaction layer underneath
//! absorbs retransmissions and runs the timers; this layer decides where
//! requests go, keeps rtcgate in the path with Record-Route, forks, picks
//! the best final response and cancels what is no longer wanted.

pub mod dialog;
pub mod location;
pub mod ops;
pub mod pending;
pub mod route;
pub mod routing;
pub mod shell;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::rsip::{self, prelude::*};
use crate::sip::Checked;
use crate::transaction::{
    self, CancelTarget, ClientKey, Output, RequestDisposition, ResponseDisposition, ServerKey,
    TransactionConfig, TransactionKey, TransactionLayer,
};
use crate::transport::{Destination, FlowId, Kind, Source};

use route::{Keyed, Local};
use routing::{BranchFailure, Decision, Router, SerialRoute, SerialStep, Target};

/// The largest UDP payload over IPv4 (65,535 minus the IP and UDP headers).
const MAX_UDP_DATAGRAM: usize = 65_507;

/// Methods rtcgate handles, for `Allow`.
pub const ALLOW: &str = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, INFO, UPDATE, MESSAGE, NOTIFY, SUBSCRIBE, REFER, PRACK";

/// Work the proxy hands to the shell because it waits on I/O (the database);
/// the outcome comes back through [`Proxy::task_done`]. Retransmissions
/// meanwhile are absorbed by the transaction layer.
#[derive(Debug, Clone)]
pub enum Task {
    /// Check the request's digest credentials.
    Authenticate {
        /// The parked server transaction.
        key: ServerKey,
        /// The request.
        request: rsip::Request,
        /// Where it came from (the challenge order depends on the transport).
        source: Source,
    },
    /// Process a REGISTER.
    Register {
        /// The parked server transaction.
        key: ServerKey,
        /// The REGISTER.
        request: rsip::Request,
        /// Where it came from (flow and address for the binding).
        source: Source,
        /// The authenticated user, when authentication ran.
        user: Option<String>,
    },
    /// rtpengine work.
    Media(MediaTask),
}

/// What the media layer needs to know about one SDP-carrying message.
#[derive(Debug, Clone)]
pub struct MediaMsg {
    /// Call-ID.
    pub call_id: String,
    /// The message's From tag.
    pub from_tag: String,
    /// The message's To tag.
    pub to_tag: Option<String>,
    /// Our client branch (the fork) the message belongs to.
    pub via_branch: String,
    /// The SDP.
    pub sdp: Vec<u8>,
    /// The profile of the leg the message is forwarded to.
    pub target: rtcgate_sdp::LegProfile,
    /// The sender's address.
    pub received_from: Option<std::net::IpAddr>,
    /// The codec policy of the target (offers toward a PBX set).
    pub codec_policy: Option<String>,
}

/// Media work (rtpengine) the shell runs for the proxy.
#[derive(Debug, Clone)]
pub enum MediaTask {
    /// ng offer for a request about to be forwarded on a branch.
    Offer {
        /// The server transaction.
        key: ServerKey,
        /// The branch index.
        branch: usize,
        /// The message facts.
        msg: MediaMsg,
    },
    /// ng answer (or late offer) for a response about to be forwarded.
    Answer {
        /// The server transaction.
        key: ServerKey,
        /// The branch index.
        branch: usize,
        /// The response.
        response: rsip::Response,
        /// The message facts.
        msg: MediaMsg,
    },
    /// An INVITE without SDP was forwarded (late offer follows in the 2xx).
    NoSdpInvite {
        /// The message facts (empty SDP).
        msg: MediaMsg,
    },
    /// A final response to an INVITE branch.
    Final {
        /// Call-ID.
        call_id: String,
        /// Our branch.
        via_branch: String,
        /// The status.
        status: u16,
    },
    /// The call ended.
    Terminate {
        /// Call-ID.
        call_id: String,
        /// Why.
        reason: crate::media::EndReason,
    },
    /// A browser's WebSocket in this call dropped: start the grace.
    WsDropped {
        /// Call-ID.
        call_id: String,
    },
    /// An ACK carrying the answer to a late offer.
    AckAnswer {
        /// The ACK, ready to send but for its body.
        request: rsip::Request,
        /// Where it goes.
        dest: Destination,
        /// The message facts.
        msg: MediaMsg,
    },
}

/// A media failure, as SIP will report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaFailure {
    /// 488, 503, 500...
    pub status: u16,
    /// Text for `Warning: 399`.
    pub warning: Option<String>,
    /// Seconds for `Retry-After`.
    pub retry_after: Option<u32>,
}

/// The outcome of a [`Task`].
#[derive(Debug, Clone)]
pub enum TaskResult {
    /// Authentication finished: the user name, or the response to send
    /// (challenge, 403, 503...).
    Authenticated {
        /// The parked server transaction.
        key: ServerKey,
        /// The outcome.
        result: Result<String, rsip::Response>,
    },
    /// The registrar's response.
    Registered {
        /// The server transaction.
        key: ServerKey,
        /// The response.
        response: rsip::Response,
    },
    /// The ng offer for a branch finished: the SDP to send, or why not.
    Offered {
        /// The server transaction.
        key: ServerKey,
        /// The branch index.
        branch: usize,
        /// The rewritten SDP, or the failure.
        result: Result<Vec<u8>, MediaFailure>,
    },
    /// The ng answer finished: the response to forward (body rewritten, or
    /// removed when rtpengine failed).
    Answered {
        /// The server transaction.
        key: ServerKey,
        /// The branch index.
        branch: usize,
        /// The response.
        response: rsip::Response,
    },
    /// A late-offer ACK is ready to go.
    AckReady {
        /// The ACK with its rewritten body.
        request: rsip::Request,
        /// Where it goes.
        dest: Destination,
    },
}

/// What to do with a parked request once it is authenticated.
enum AfterAuth {
    Register,
    Route { routes: Vec<String> },
}

struct Parked {
    source: Source,
    request: rsip::Request,
    next: AfterAuth,
}

/// Tells the proxy whether a WebSocket flow is still open.
pub trait Flows: Send + Sync {
    /// Whether the flow is open.
    fn alive(&self, flow: FlowId) -> bool;
}

impl Flows for crate::transport::Transports {
    fn alive(&self, flow: FlowId) -> bool {
        self.flow_alive(flow)
    }
}

/// Settings of the proxy core.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Value of the Server header in responses rtcgate creates.
    pub server_header: String,
    /// Transaction timers and limits.
    pub transactions: TransactionConfig,
    /// Authenticate REGISTERs and initial requests from untrusted sources.
    pub auth_required: bool,
    /// Sources accepted without authentication (PBXes).
    pub trusted: Vec<crate::config::TrustedSource>,
    /// Bridge media through rtpengine (the shell runs [`MediaTask`]s).
    pub media: bool,
    /// Confirmed calls are hung up after this long (`None`: never).
    pub max_call_duration: Option<std::time::Duration>,
    /// Caps on requests waiting for their final response.
    pub pending: pending::PendingCaps,
}

/// One client branch of a forwarded request.
struct Branch {
    key: Option<ClientKey>,
    dest: Destination,
    kind: Kind,
    via_branch: String,
    /// Waiting for rtpengine's offer before the request can be sent.
    awaiting_offer: bool,
    /// The request as forwarded (for CANCEL).
    request: rsip::Request,
    provisional: bool,
    done: bool,
    cancel_on_provisional: bool,
    /// rtpengine handles this branch's SDP (not when a peer node does).
    media: bool,
}

/// The state of one forwarded request (one server transaction).
/// The next hop [`Proxy::dialog_hop`] allows.
struct DialogHop {
    dest: Destination,
    kind: Kind,
    /// The route set recorded for that side of a confirmed dialog (none
    /// recorded yet in an early dialog: the request's own is kept).
    route: Option<Vec<String>>,
}

struct Forward {
    source: Source,
    method: rsip::Method,
    request: rsip::Request,
    branches: Vec<Branch>,
    best: Option<rsip::Response>,
    final_sent: bool,
    /// Responses received but not yet forwarded (kept in order while one
    /// waits for rtpengine).
    queue: VecDeque<(usize, rsip::Response)>,
    /// A response at the head of `queue` is with rtpengine.
    answering: bool,
    /// Route set and Record-Route choice, for branches added later.
    routes: Vec<String>,
    record_route: bool,
    /// Serial failover through a destination set.
    serial: Option<SerialState>,
    /// The answer when every serial destination failed.
    exhausted: (u16, &'static str),
    /// An out-of-dialog request.
    initial: bool,
    /// This node does the media of the request (an in-dialog request of a call
    /// whose media a peer node handles does not).
    media: bool,
}

/// What [`Proxy::fail_over`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailoverResult {
    /// The next destination is being tried on this branch.
    Started(usize),
    /// The failure goes to the caller as it is.
    Final,
    /// No destination is left.
    Exhausted,
    /// Not the current branch of a serial route.
    NotSerial,
}

/// A request being tried on one destination after the other.
struct SerialState {
    /// The branch index of the destination being tried.
    current: usize,
    no_answer: std::time::Duration,
    rest: Box<dyn SerialRoute>,
}

impl Forward {
    /// Keeps `resp` as the response to send upstream if it beats the best
    /// so far (§16.7 step 6).
    fn keep_if_better(&mut self, resp: rsip::Response) {
        let code = resp.status_code.code();
        if self
            .best
            .as_ref()
            .is_none_or(|b| rank(code) < rank(b.status_code.code()))
        {
            self.best = Some(resp);
        }
    }
}

/// Counters the proxy keeps.
#[derive(Debug, Default, Clone)]
pub struct ProxyStats {
    /// Requests forwarded (per branch).
    pub forwarded: u64,
    /// Responses rtcgate generated itself, by class (index 1..=6).
    pub local_responses: [u64; 7],
    /// Loops detected (482).
    pub loops: u64,
    /// Initial INVITEs forwarded (call attempts).
    pub call_attempts: u64,
    /// Initial INVITEs by final outcome.
    pub calls: ops::CallOutcomes,
    /// New requests refused with 503 by the transaction caps.
    pub overloaded: u64,
}

/// The proxy core.
pub struct Proxy {
    txns: TransactionLayer<Destination>,
    local: Local,
    keyed: Keyed,
    router: Arc<dyn Router>,
    flows: Arc<dyn Flows>,
    peers: Arc<dyn routing::Peers>,
    server_header: String,
    auth_required: bool,
    trusted: Vec<crate::config::TrustedSource>,
    registrar_enabled: bool,
    media: bool,
    parked: HashMap<ServerKey, Parked>,
    tasks: VecDeque<Task>,
    dialogs: dialog::Dialogs,
    dialog_events: VecDeque<dialog::DialogEvent>,
    /// Call-IDs with an early (not yet confirmed) dialog.
    early: std::collections::HashSet<String>,
    /// Call-IDs whose initial INVITE was routed and has no final response
    /// yet (each gets exactly one `Confirmed` or `Failed`), with the
    /// server transaction that forwards it (none when routing refused it).
    started: HashMap<String, Option<ServerKey>>,
    max_call_duration: Option<std::time::Duration>,
    /// When confirmed dialogs time out (lazy deletion: an entry whose dialog
    /// is gone is skipped).
    call_deadlines: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, String)>>,
    /// When answered calls whose ACK has not passed are given up (64·T1
    /// after the 2xx, §13.3.1.4): a caller that vanished after the 2xx must
    /// not leave a dialog and its rtpengine session behind.
    ack_deadlines: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, String)>>,
    ack_wait: std::time::Duration,
    /// No-answer deadlines of serial branches (lazy deletion: a branch that
    /// got a response meanwhile is skipped).
    failover_deadlines: std::collections::BinaryHeap<std::cmp::Reverse<(Instant, u64)>>,
    failover_branches: HashMap<u64, (ServerKey, usize)>,
    forwards: HashMap<ServerKey, Forward>,
    owners: HashMap<ClientKey, (ServerKey, usize)>,
    sends: VecDeque<Outgoing>,
    /// Client transactions the transport failed, with the status their
    /// branch gets (§16.9: a transport error reads as 503; 513 for a
    /// request too large for a UDP datagram).
    send_errors: HashMap<ClientKey, u16>,
    seq: u64,
    stats: ProxyStats,
    /// Shutting down: new requests get 503 with this Retry-After.
    draining: Option<u32>,
    /// Out-of-dialog requests waiting for their final response.
    pending: pending::Pending,
    overload_log: crate::limits::throttle::LogThrottle,
}

/// What the shell must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Where.
    pub dest: Destination,
    /// The bytes.
    pub data: Bytes,
    /// The client transaction sending them, if any (see
    /// [`Proxy::send_failed`]).
    pub client: Option<ClientKey>,
}

impl Proxy {
    /// A proxy for the given local addresses, router and flow view.
    /// `registrar_enabled` says whether the shell runs [`Task::Register`].
    pub fn new(
        config: ProxyConfig,
        local: Local,
        router: Arc<dyn Router>,
        registrar_enabled: bool,
        flows: Arc<dyn Flows>,
    ) -> Self {
        Self {
            ack_wait: config.transactions.timers.t1 * 64,
            txns: TransactionLayer::new(config.transactions),
            local,
            keyed: Keyed::default(),
            router,
            flows,
            peers: Arc::new(routing::NoPeers),
            server_header: config.server_header,
            auth_required: config.auth_required,
            trusted: config.trusted.clone(),
            registrar_enabled,
            media: config.media,
            parked: HashMap::new(),
            tasks: VecDeque::new(),
            dialogs: dialog::Dialogs::new(200_000),
            dialog_events: VecDeque::new(),
            early: std::collections::HashSet::new(),
            started: HashMap::new(),
            max_call_duration: config.max_call_duration,
            call_deadlines: std::collections::BinaryHeap::new(),
            ack_deadlines: std::collections::BinaryHeap::new(),
            failover_deadlines: std::collections::BinaryHeap::new(),
            failover_branches: HashMap::new(),
            forwards: HashMap::new(),
            owners: HashMap::new(),
            sends: VecDeque::new(),
            send_errors: HashMap::new(),
            seq: 0,
            stats: ProxyStats::default(),
            draining: None,
            pending: pending::Pending::new(config.pending),
            overload_log: crate::limits::throttle::LogThrottle::new(
                std::time::Duration::from_secs(10),
            ),
        }
    }

    /// In a cluster: requests from live peer nodes are trusted, and calls
    /// forwarded to a peer leave their media to it.
    pub fn with_peers(mut self, peers: Arc<dyn routing::Peers>) -> Self {
        self.peers = peers;
        self
    }

    /// Counters.
    pub fn stats(&self) -> &ProxyStats {
        &self.stats
    }

    /// Number of live transactions (for tests and metrics).
    pub fn transactions(&self) -> usize {
        self.txns.len()
    }

    /// The earliest time `handle_timeout` must be called.
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        let calls = self.call_deadlines.peek().map(|r| r.0.0);
        let failover = self.failover_deadlines.peek().map(|r| r.0.0);
        let acks = self.ack_deadlines.peek().map(|r| r.0.0);
        [self.txns.poll_timeout(), calls, failover, acks]
            .into_iter()
            .flatten()
            .min()
    }

    /// Runs due timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.txns.handle_timeout(now);
        while let Some(std::cmp::Reverse((at, id))) = self.failover_deadlines.peek().copied() {
            if at > now {
                break;
            }
            self.failover_deadlines.pop();
            let Some((skey, idx)) = self.failover_branches.remove(&id) else {
                continue;
            };
            let silent = self
                .forwards
                .get(&skey)
                .filter(|f| !f.final_sent)
                .and_then(|f| f.branches.get(idx))
                .is_some_and(|b| !b.done && !b.provisional);
            if silent {
                tracing::info!(
                    call_id = %self.forwards.get(&skey).map(|f| call_id_of(&f.request.headers)).unwrap_or_default(),
                    "no answer from the destination"
                );
                match self.fail_over(now, skey, idx, BranchFailure::Timeout) {
                    FailoverResult::Started(_) => {}
                    FailoverResult::Final | FailoverResult::Exhausted => {
                        self.answer_exhausted(now, skey);
                    }
                    FailoverResult::NotSerial => {
                        // Cancelled while the destination stayed silent: no
                        // CANCEL can go out before a provisional (§9.1), so
                        // the caller hears 487 now instead of at timer B.
                        let cancelled = self
                            .forwards
                            .get(&skey)
                            .and_then(|f| f.branches.get(idx))
                            .is_some_and(|b| b.cancel_on_provisional);
                        if cancelled {
                            self.fail_branch(now, skey, idx, 487, None, None, None);
                        }
                    }
                }
            }
        }
        while let Some(std::cmp::Reverse((at, _))) = self.call_deadlines.peek() {
            if *at > now {
                break;
            }
            let Some(std::cmp::Reverse((_, call_id))) = self.call_deadlines.pop() else {
                break;
            };
            if self.dialogs.get(&call_id).is_some() {
                tracing::info!(%call_id, "maximum call duration reached");
                if self.media {
                    self.tasks.push_back(Task::Media(MediaTask::Terminate {
                        call_id: call_id.clone(),
                        reason: crate::media::EndReason::DialogTimeout,
                    }));
                }
                self.teardown(now, &call_id, dialog::EndCause::MaxDuration);
            }
        }
        while let Some(std::cmp::Reverse((at, _))) = self.ack_deadlines.peek() {
            if *at > now {
                break;
            }
            let Some(std::cmp::Reverse((_, call_id))) = self.ack_deadlines.pop() else {
                break;
            };
            if self.dialogs.get(&call_id).is_some_and(|d| !d.acked) {
                tracing::info!(%call_id, "no ACK for the 2xx: call given up");
                if self.media {
                    self.tasks.push_back(Task::Media(MediaTask::Terminate {
                        call_id: call_id.clone(),
                        reason: crate::media::EndReason::DialogTimeout,
                    }));
                }
                self.teardown(now, &call_id, dialog::EndCause::NoAck);
            }
        }
        self.drain(now);
    }

    /// The next message to send.
    pub fn poll_send(&mut self) -> Option<Outgoing> {
        self.sends.pop_front()
    }

    /// The transport could not send a request of client transaction `ck`
    /// ([`Outgoing::client`]; a socket error, no socket for the address
    /// family): it fails now as if the branch got a 503 (§16.9) instead of
    /// retransmitting until timer B/F.
    pub fn send_failed(&mut self, now: Instant, ck: ClientKey) {
        self.fail_branch_transport(ck, 503);
        self.drain(now);
    }

    fn fail_branch_transport(&mut self, ck: ClientKey, code: u16) {
        self.send_errors.insert(ck, code);
        self.txns.handle_transport_error(ck);
    }

    fn queue_send(&mut self, dest: Destination, data: Bytes) {
        self.sends.push_back(Outgoing {
            dest,
            data,
            client: None,
        });
    }

    /// The next asynchronous task for the shell.
    pub fn poll_task(&mut self) -> Option<Task> {
        self.tasks.pop_front()
    }

    /// The outcome of a task.
    pub fn task_done(&mut self, now: Instant, result: TaskResult) {
        match result {
            TaskResult::Authenticated { key, result } => {
                let Some(parked) = self.parked.remove(&key) else {
                    return;
                };
                match (result, parked.next) {
                    (Err(resp), _) => self.send_final(now, key, resp),
                    (Ok(user), AfterAuth::Register) => self.tasks.push_back(Task::Register {
                        key,
                        request: parked.request,
                        source: parked.source,
                        user: Some(user),
                    }),
                    (Ok(_), AfterAuth::Route { routes }) => {
                        self.route_initial(now, key, parked.source, parked.request, routes)
                    }
                }
            }
            TaskResult::Registered { key, response } => self.send_final(now, key, response),
            TaskResult::Offered {
                key,
                branch,
                result,
            } => self.offered(now, key, branch, result),
            TaskResult::Answered {
                key,
                branch,
                response,
            } => {
                if let Some(fwd) = self.forwards.get_mut(&key) {
                    fwd.answering = false;
                }
                self.deliver(now, key, branch, response);
                self.process_queue(now, key);
            }
            TaskResult::AckReady { request, dest } => {
                self.queue_send(dest, transaction::encode_request(&request));
            }
        }
        self.drain(now);
    }

    fn is_trusted(&self, source: &Source) -> bool {
        matches!(source, Source::Udp { .. })
            && (self.trusted.iter().any(|t| t.matches(source.peer()))
                || self.router.is_trusted(source.peer().ip())
                || self.peers.is_peer(source.peer()))
    }

    /// Whether an in-dialog request from `source` belongs to a dialog this
    /// proxy set up: trusted sources always pass; others need the Call-ID
    /// of a confirmed dialog with both tags matching (either direction) or
    /// of an INVITE still being set up (early-dialog PRACK/UPDATE).
    fn dialog_known(&self, source: &Source, req: &rsip::Request) -> bool {
        if self.is_trusted(source) {
            return true;
        }
        let call_id = call_id_of(&req.headers);
        if let Some(d) = self.dialogs.get(&call_id) {
            let from = tag_of_header(req, |h| matches!(h, rsip::Header::From(_)));
            let to = tag_of_header(req, |h| matches!(h, rsip::Header::To(_)));
            return match (from, to) {
                (Some(f), Some(t)) => {
                    (f == d.caller.tag && t == d.callee.tag)
                        || (f == d.callee.tag && t == d.caller.tag)
                }
                _ => false,
            };
        }
        self.started.contains_key(&call_id)
    }

    /// The only next hop an in-dialog request from an untrusted source may
    /// take: its own Route and Request-URI could name any host (an open
    /// relay past authentication) or a flow token learned from a
    /// Record-Route (another browser's connection).
    /// `proposed` is where the request's own Route or Request-URI points.
    fn dialog_hop(
        &self,
        req: &rsip::Request,
        source: &Source,
        proposed: &[(Destination, Kind)],
    ) -> Option<DialogHop> {
        let call_id = call_id_of(&req.headers);
        if let Some(d) = self.dialogs.get(&call_id) {
            let from = tag_of_header(req, |h| matches!(h, rsip::Header::From(_)))?;
            let to = tag_of_header(req, |h| matches!(h, rsip::Header::To(_)))?;
            let side = if from == d.caller.tag && to == d.callee.tag {
                &d.callee
            } else if from == d.callee.tag && to == d.caller.tag {
                &d.caller
            } else {
                return None;
            };
            return Some(DialogHop {
                dest: side.dest,
                kind: side.kind,
                route: Some(side.route.clone()),
            });
        }
        // Early dialog (PRACK, UPDATE): from a callee back to the caller;
        // from the caller to a destination of the INVITE. The callee's
        // Contact or Record-Route may name an address other than the one
        // we sent to (NAT), so a lone destination is taken as the hop.
        let key = (*self.started.get(&call_id)?)?;
        let fwd = self.forwards.get(&key)?;
        let from = source.reply_to();
        let caller = (fwd.source.reply_to(), fwd.source.kind());
        let hop = |(dest, kind)| DialogHop {
            dest,
            kind,
            route: None,
        };
        if fwd.branches.iter().any(|b| b.dest == from) {
            return Some(hop(caller));
        }
        match (proposed, fwd.branches.as_slice()) {
            ([p], _) if fwd.branches.iter().any(|b| b.dest == p.0) => Some(hop(*p)),
            (_, [only]) => Some(hop((only.dest, only.kind))),
            _ => None,
        }
    }

    fn park_for_auth(
        &mut self,
        key: ServerKey,
        source: Source,
        request: rsip::Request,
        next: AfterAuth,
    ) {
        self.tasks.push_back(Task::Authenticate {
            key,
            request: request.clone(),
            source,
        });
        self.parked.insert(
            key,
            Parked {
                source,
                request,
                next,
            },
        );
    }

    /// Routes an initial request addressed to one of our users.
    fn route_initial(
        &mut self,
        now: Instant,
        key: ServerKey,
        source: Source,
        req: rsip::Request,
        routes: Vec<String>,
    ) {
        let facts = route::facts_of(&req.uri);
        let targets = match self.router.route(&req, &facts, &source) {
            Decision::Forward(t) if !t.is_empty() => t,
            Decision::Forward(_) => {
                self.count_rejected(&req);
                self.call_rejected(now, &req, &source, 480);
                self.reply(now, key, &req, 480, Some("Temporarily Unavailable"));
                return;
            }
            Decision::Serial(serial) => {
                let serial = *serial;
                let media = self.media;
                self.forward(
                    now,
                    key,
                    source,
                    req,
                    routes,
                    vec![serial.first],
                    true,
                    media,
                );
                if let Some(fwd) = self.forwards.get_mut(&key) {
                    fwd.exhausted = serial.rest.exhausted();
                    fwd.serial = Some(SerialState {
                        current: 0,
                        no_answer: serial.no_answer,
                        rest: serial.rest,
                    });
                    self.arm_failover(now, key, 0);
                }
                return;
            }
            Decision::Reject(code, reason) => {
                self.count_rejected(&req);
                self.call_rejected(now, &req, &source, code);
                self.reply(now, key, &req, code, Some(reason));
                return;
            }
        };
        let media = self.media;
        self.forward(now, key, source, req, routes, targets, true, media);
    }

    /// Starts the no-answer timer of serial branch `idx`.
    fn arm_failover(&mut self, now: Instant, skey: ServerKey, idx: usize) {
        let Some(no_answer) = self
            .forwards
            .get(&skey)
            .and_then(|f| f.serial.as_ref())
            .map(|s| s.no_answer)
        else {
            return;
        };
        self.seq += 1;
        self.failover_branches.insert(self.seq, (skey, idx));
        self.failover_deadlines
            .push(std::cmp::Reverse((now + no_answer, self.seq)));
    }

    /// The current serial branch `idx` failed: start the next destination.
    fn fail_over(
        &mut self,
        now: Instant,
        skey: ServerKey,
        idx: usize,
        failure: BranchFailure,
    ) -> FailoverResult {
        let Some(mut fwd) = self.forwards.remove(&skey) else {
            return FailoverResult::NotSerial;
        };
        let result = self.next_serial_branch(now, skey, &mut fwd, idx, failure);
        self.forwards.insert(skey, fwd);
        if let FailoverResult::Started(next) = result {
            self.arm_failover(now, skey, next);
        }
        result
    }

    fn next_serial_branch(
        &mut self,
        now: Instant,
        skey: ServerKey,
        fwd: &mut Forward,
        idx: usize,
        failure: BranchFailure,
    ) -> FailoverResult {
        if fwd.final_sent || fwd.serial.as_ref().is_none_or(|s| s.current != idx) {
            return FailoverResult::NotSerial;
        }
        let Some(failed) = fwd.branches.get_mut(idx) else {
            return FailoverResult::NotSerial;
        };
        if failure == BranchFailure::Timeout {
            // Silent so far: stop waiting, but CANCEL it should it wake up.
            failed.done = true;
            failed.awaiting_offer = false;
            failed.cancel_on_provisional = true;
            if self.media {
                // The branch's media state goes; the call's stays for the next one.
                self.tasks.push_back(Task::Media(MediaTask::Final {
                    call_id: call_id_of(&fwd.request.headers),
                    via_branch: failed.via_branch.clone(),
                    status: 408,
                }));
            }
        }
        let failed_dest = failed.dest;
        let step = match fwd.serial.as_mut() {
            Some(serial) => serial.rest.next(&failed_dest, failure),
            None => return FailoverResult::NotSerial,
        };
        match step {
            SerialStep::Next(target) => {
                let loop_part = self.loop_hash(&fwd.request);
                let before = fwd.branches.len();
                self.start_branch(now, skey, fwd, *target, &loop_part);
                if fwd.branches.len() == before {
                    // Not even sent (transaction table full).
                    fwd.serial = None;
                    return FailoverResult::Exhausted;
                }
                if let Some(s) = fwd.serial.as_mut() {
                    s.current = before;
                }
                FailoverResult::Started(before)
            }
            SerialStep::Final => {
                fwd.serial = None;
                FailoverResult::Final
            }
            SerialStep::Exhausted => {
                fwd.serial = None;
                FailoverResult::Exhausted
            }
        }
    }

    /// Every destination of a serial route failed: 503 to the caller (480 for
    /// peer nodes, see [`routing::SerialRoute::exhausted`]).
    fn answer_exhausted(&mut self, now: Instant, skey: ServerKey) {
        let Some(fwd) = self.forwards.get_mut(&skey) else {
            return;
        };
        let (code, reason) = fwd.exhausted;
        let mut resp = transaction::make_response(
            &fwd.request,
            code,
            Some(reason),
            Some(&crate::sip::new_tag()),
        );
        if code == 503 {
            resp.headers
                .push(rsip::Header::RetryAfter(rsip::headers::RetryAfter::new(
                    "30".to_owned(),
                )));
        }
        fwd.best = Some(resp);
        for b in &mut fwd.branches {
            if !b.done && !b.provisional {
                b.done = true;
                b.cancel_on_provisional = true;
            }
        }
        self.maybe_send_best(now, skey);
    }

    /// A flow closed: branches waiting on it fail now instead of at timer B.
    pub fn flow_closed(&mut self, now: Instant, flow: FlowId) {
        let keys: Vec<ClientKey> = self
            .forwards
            .values()
            .flat_map(|f| f.branches.iter())
            .filter(|b| !b.done && b.dest == Destination::Flow(flow))
            .filter_map(|b| b.key)
            .collect();
        for k in keys {
            self.txns.handle_transport_error(k);
        }
        for call_id in self.dialogs.on_flow(flow) {
            if self.media {
                // rtpengine keeps the media for a grace period, then asks
                // for the teardown (MediaEvent::TearDown).
                self.tasks
                    .push_back(Task::Media(MediaTask::WsDropped { call_id }));
            } else {
                self.teardown(now, &call_id, dialog::EndCause::WsDropped);
            }
        }
        self.drain(now);
    }

    /// The media layer gave up on a call (its browser's WebSocket did not
    /// come back): hang up the sides that are still there.
    pub fn media_teardown(&mut self, now: Instant, call_id: &str) {
        self.teardown(now, call_id, dialog::EndCause::WsDropped);
        self.drain(now);
    }

    /// The next dialog event (early, confirmed, terminated, failed).
    pub fn poll_dialog_event(&mut self) -> Option<dialog::DialogEvent> {
        self.dialog_events.pop_front()
    }

    fn dialog_event(&mut self, now: Instant, call_id: String, kind: dialog::DialogEventKind) {
        // Bounded: a shell that never drains must not grow memory.
        if self.dialog_events.len() >= 10_000 {
            self.dialog_events.pop_front();
        }
        self.dialog_events.push_back(dialog::DialogEvent {
            call_id,
            at: now,
            kind,
        });
    }

    /// `Started` for an initial INVITE about to be forwarded to `targets`.
    fn call_started(
        &mut self,
        now: Instant,
        req: &rsip::Request,
        source: &Source,
        targets: &[Target],
        key: Option<ServerKey>,
    ) {
        let call_id = call_id_of(&req.headers);
        let start = dialog::CallStart {
            caller: from_party(req),
            caller_tag: tag_of_header(req, |h| matches!(h, rsip::Header::From(_)))
                .unwrap_or_default(),
            callee: party(&route::facts_of(&req.uri)),
            direction: targets
                .first()
                .map(|t| dialog::Direction::of(source.kind(), t.kind)),
            destinations: targets
                .iter()
                .map(|t| dialog::describe_destination(t.dest, &t.uri))
                .collect(),
        };
        // Bounded by the INVITE transactions: every one ends with a final response.
        self.started.insert(call_id.clone(), key);
        self.dialog_event(now, call_id, dialog::DialogEventKind::Started(start));
    }

    /// `Started` then `Failed` for an initial INVITE that routing refused.
    fn call_rejected(&mut self, now: Instant, req: &rsip::Request, source: &Source, status: u16) {
        if req.method == rsip::Method::Invite {
            self.call_started(now, req, source, &[], None);
            self.call_failed(now, call_id_of(&req.headers), status, Vec::new());
        }
    }

    /// `Failed`, once, for a started call.
    fn call_failed(
        &mut self,
        now: Instant,
        call_id: String,
        status: u16,
        destinations: Vec<String>,
    ) {
        self.early.remove(&call_id);
        if self.started.remove(&call_id).is_some() {
            self.dialog_event(
                now,
                call_id,
                dialog::DialogEventKind::Failed {
                    status,
                    destinations,
                },
            );
        }
    }

    /// Adds a call deadline; ended calls' entries are dropped whenever they
    /// outnumber the live dialogs, so the heap stays proportional to them.
    fn schedule_call_deadline(&mut self, at: Instant, call_id: String) {
        if self.call_deadlines.len() > 2 * self.dialogs.len() + 1024 {
            let dialogs = &self.dialogs;
            self.call_deadlines
                .retain(|std::cmp::Reverse((_, c))| dialogs.get(c).is_some());
        }
        self.call_deadlines.push(std::cmp::Reverse((at, call_id)));
    }

    /// Number of confirmed dialogs tracked.
    pub fn dialogs(&self) -> usize {
        self.dialogs.len()
    }

    /// Sends BYE to every side of a dialog whose transport is still up.
    fn teardown(&mut self, now: Instant, call_id: &str, cause: dialog::EndCause) {
        if let Some(d) = self.dialogs.remove(call_id) {
            self.teardown_dialog(now, d, cause);
        }
    }

    /// [`Self::teardown`] of a dialog already taken out of the table.
    fn teardown_dialog(&mut self, now: Instant, d: dialog::Dialog, cause: dialog::EndCause) {
        let call_id = d.call_id.as_str();
        self.dialog_event(
            now,
            call_id.to_owned(),
            dialog::DialogEventKind::Terminated { reason: cause },
        );
        let reason = cause.text();
        for to_caller in [true, false] {
            let side = if to_caller { &d.caller } else { &d.callee };
            if let Destination::Flow(f) = side.dest
                && !self.flows.alive(f)
            {
                continue;
            }
            let (dest, kind) = (side.dest, side.kind);
            let toward = match dest {
                Destination::Udp(a) => Some(a),
                Destination::Flow(_) => None,
            };
            self.seq += 1;
            let mut via = format!(
                "SIP/2.0/{} {};branch=z9hG4bK.rb{:x}",
                kind.via_token(),
                self.local.sent_by(kind, toward),
                self.seq
            );
            if kind == Kind::Udp {
                via.push_str(";rport");
            }
            let Some(bye) = dialog::bye(&d, to_caller, &via, reason) else {
                tracing::warn!(call_id, "could not build the teardown BYE");
                continue;
            };
            tracing::info!(
                call_id,
                to_caller,
                cause = cause.as_str(),
                "BYE from rtcgate"
            );
            if let Err(e) = self.txns.send_request(now, bye, dest, kind.reliable()) {
                tracing::warn!(call_id, error = %e, "teardown BYE not sent");
            }
        }
    }

    /// For an in-dialog request whose Request-URI cannot be reached (a
    /// browser's `.invalid` Contact, sent by a UA that ignored our
    /// Record-Route): the side of the dialog its To tag names.
    fn dialog_side(&self, req: &rsip::Request) -> Option<(Destination, Kind)> {
        let d = self.dialogs.get(&call_id_of(&req.headers))?;
        let to_tag = tag_of_header(req, |h| matches!(h, rsip::Header::To(_)))?;
        let side = [&d.caller, &d.callee]
            .into_iter()
            .find(|s| s.tag == to_tag)?;
        if let Destination::Flow(f) = side.dest
            && !self.flows.alive(f)
        {
            return None;
        }
        Some((side.dest, side.kind))
    }

    /// Records the dialog a 2xx to an initial INVITE establishes.
    fn record_dialog(&mut self, now: Instant, skey: ServerKey, idx: usize, resp: &rsip::Response) {
        let Some(fwd) = self.forwards.get(&skey) else {
            return;
        };
        let Some(branch) = fwd.branches.get(idx) else {
            return;
        };
        let req = &fwd.request;
        let first = |headers: &rsip::Headers, which: fn(&rsip::Header) -> bool| {
            headers
                .iter()
                .find(|h| which(h))
                .map(|h| h.value().trim().to_owned())
        };
        let contact_of = |headers: &rsip::Headers| {
            first(headers, |h| matches!(h, rsip::Header::Contact(_)))
                .map(|c| route::uri_of(&c).to_owned())
        };
        let (Some(caller_target), Some(callee_target)) =
            (contact_of(&req.headers), contact_of(&resp.headers))
        else {
            return;
        };
        let (Some(from), Some(to)) = (
            first(&req.headers, |h| matches!(h, rsip::Header::From(_))),
            first(&resp.headers, |h| matches!(h, rsip::Header::To(_))),
        ) else {
            return;
        };
        let (Some(from_tag), Some(to_tag)) = (
            header_tag(&req.headers, |h| matches!(h, rsip::Header::From(_))),
            header_tag(&resp.headers, |h| matches!(h, rsip::Header::To(_))),
        ) else {
            return;
        };
        let cseq = cseq_number(&req.headers).max(1);
        // Record-Route of the 2xx: [downstream..., ours (2), upstream...].
        let rr: Vec<String> = resp
            .headers
            .iter()
            .filter_map(|h| match h {
                rsip::Header::RecordRoute(r) => Some(route::split_list(r.value())),
                _ => None,
            })
            .flatten()
            .collect();
        let is_ours = |e: &String| {
            route::uri_facts(route::uri_of(e)).is_some_and(|f| self.local.is_me(&f.host, f.port))
        };
        let ours_at = rr.iter().position(is_ours).unwrap_or(rr.len());
        let downstream: Vec<String> = rr[..ours_at].iter().rev().cloned().collect();
        let upstream: Vec<String> = rr[ours_at..]
            .iter()
            .skip_while(|e| is_ours(e))
            .cloned()
            .collect();
        let d = dialog::Dialog {
            call_id: call_id_of(&req.headers),
            caller: dialog::Side {
                dest: fwd.source.reply_to(),
                kind: fwd.source.kind(),
                target: caller_target,
                identity: from,
                tag: from_tag,
                route: upstream,
                cseq,
            },
            callee: dialog::Side {
                dest: branch.dest,
                kind: branch.kind,
                target: callee_target,
                identity: to,
                tag: to_tag,
                route: downstream,
                cseq: 0,
            },
            acked: false,
        };
        if let Some(old) = self.dialogs.insert(d) {
            tracing::warn!(call_id = %old.call_id, "dialog table full: a tracked call ended to make room");
            if self.media {
                self.tasks.push_back(Task::Media(MediaTask::Terminate {
                    call_id: old.call_id.clone(),
                    reason: crate::media::EndReason::DialogTimeout,
                }));
            }
            self.teardown_dialog(now, old, dialog::EndCause::TableFull);
        }
    }

    /// A checked message from a transport.
    pub fn handle_message(&mut self, now: Instant, source: Source, msg: Checked) {
        match msg.msg {
            rsip::SipMessage::Request(req) => self.on_request(now, source, req),
            rsip::SipMessage::Response(resp) => self.on_response(now, resp),
        }
        self.drain(now);
    }

    fn on_request(&mut self, now: Instant, source: Source, mut req: rsip::Request) {
        let _ = crate::sip::stamp_via(&mut req, source.peer());
        let disposition = match self.txns.handle_request(
            now,
            req.clone(),
            source.reply_to(),
            source.kind().reliable(),
        ) {
            Ok(d) => d,
            Err(crate::transaction::TransactionError::TableFull(n)) => {
                if req.method != rsip::Method::Ack {
                    self.pending_refused(now, source, n, "transaction table full");
                    self.reply_overloaded(&req, source);
                }
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "request refused by the transaction layer");
                if req.method != rsip::Method::Ack {
                    self.reply_stateless(&req, source, 400, Some("Bad Request"));
                }
                return;
            }
        };
        match disposition {
            RequestDisposition::New { key, request } => {
                let in_dialog =
                    tag_of_header(&request, |h| matches!(h, rsip::Header::To(_))).is_some();
                if !in_dialog
                    && let Err(which) =
                        self.pending
                            .admit(key, source.peer().ip(), self.is_trusted(&source))
                {
                    let why = match which {
                        pending::Refusal::Total => "limits.max_server_transactions",
                        pending::Refusal::PerSource => "limits.max_server_transactions_per_source",
                    };
                    self.pending_refused(now, source, self.pending.len(), why);
                    self.count_rejected(&request);
                    let resp = self.overloaded(&request);
                    self.send_final(now, key, resp);
                    return;
                }
                self.on_new_request(now, key, source, request)
            }
            RequestDisposition::Cancel {
                key,
                request,
                target,
            } => {
                let code = if matches!(target, CancelTarget::NoMatch) {
                    481
                } else {
                    200
                };
                self.reply(now, key, &request, code, None);
                if let CancelTarget::Pending(invite) = target {
                    if self.media {
                        self.tasks.push_back(Task::Media(MediaTask::Terminate {
                            call_id: call_id_of(&request.headers),
                            reason: crate::media::EndReason::Cancel,
                        }));
                    }
                    self.cancel_branches(now, invite, None);
                }
            }
            RequestDisposition::Absorbed(_) => {}
            RequestDisposition::StrayAck { request, .. } => self.forward_stateless(source, request),
        }
    }

    fn on_new_request(&mut self, now: Instant, key: ServerKey, source: Source, req: rsip::Request) {
        // A BYE that names no dialog of ours (forged tags) must not end
        // someone else's media session.
        if self.media && req.method == rsip::Method::Bye && self.dialog_known(&source, &req) {
            self.tasks.push_back(Task::Media(MediaTask::Terminate {
                call_id: call_id_of(&req.headers),
                reason: crate::media::EndReason::Bye,
            }));
        }
        let max_forwards = max_forwards(&req);
        let to_tag = tag_of_header(&req, |h| matches!(h, rsip::Header::To(_)));
        if to_tag.is_some() {
            let call_id = call_id_of(&req.headers);
            if let Some(from_tag) = tag_of_header(&req, |h| matches!(h, rsip::Header::From(_))) {
                let cseq = cseq_number(&req.headers);
                self.dialogs.saw_request(&call_id, &from_tag, cseq);
            }
        }
        if max_forwards == Some(0) {
            // §16.3 step 3 lets a proxy answer an OPTIONS itself. Only when it
            // is addressed to us: a hop-limited probe toward a user must learn
            // where it ran out (483), not that the user answered.
            let facts = route::facts_of(&req.uri);
            let for_us = req.method == rsip::Method::Options
                && facts.user.is_none()
                && self.local.is_our_domain(&facts.host);
            if for_us {
                self.local_request(now, key, source, &req);
            } else {
                self.reply(now, key, &req, 483, None);
            }
            return;
        }
        if self.is_loop(&req) {
            self.stats.loops += 1;
            self.reply(now, key, &req, 482, None);
            return;
        }
        if self.draining.is_some() && to_tag.is_none() && req.method != rsip::Method::Options {
            self.refuse_draining(now, key, &req);
            return;
        }
        // Route processing (§16.4): pop our own entries; the last one popped
        // faces the next hop.
        let mut routes = route::routes(&req);
        let mut next_flow: Option<Option<FlowId>> = None;
        // Our Record-Route said a peer node does this call's media.
        let mut peer_media = false;
        while let Some(first) = routes.first() {
            let Some((f, no_media)) = route::route_entry_facts(first) else {
                break;
            };
            if !self.local.is_me(&f.host, f.port) {
                break;
            }
            peer_media |= no_media;
            next_flow = Some(
                f.user
                    .as_deref()
                    .and_then(|u| self.keyed.parse_flow_token(u)),
            );
            routes.remove(0);
        }

        let target: Result<Vec<Target>, (u16, &'static str)> = if let Some(first) = routes.first() {
            // Loose routing toward the next proxy in the route set.
            match route::uri_facts(route::uri_of(first)) {
                Some(f) => routing::resolve(&f).map(|(dest, kind)| {
                    vec![Target {
                        uri: req.uri.clone(),
                        dest,
                        kind,
                        codec_policy: None,
                    }]
                }),
                None => Err((400, "Bad Route Header")),
            }
        } else if let Some(Some(flow)) = next_flow {
            self.flow_target(&req, flow)
        } else if to_tag.is_some() {
            // In dialog: the Request-URI is the remote target.
            let facts = route::facts_of(&req.uri);
            let to_us = self.local.is_me(&facts.host, facts.port);
            if to_us && facts.user.is_none() && self.dialog_side(&req).is_none() {
                self.local_request(now, key, source, &req);
                return;
            }
            let resolved = if to_us {
                // A UA that ignored Contact and Record-Route addresses us:
                // the dialog knows where the other side is.
                Err((481, "Call/Transaction Does Not Exist"))
            } else {
                routing::resolve(&facts)
            };
            resolved
                .or_else(|e| self.dialog_side(&req).ok_or(e))
                .map(|(dest, kind)| {
                    vec![Target {
                        uri: req.uri.clone(),
                        dest,
                        kind,
                        codec_policy: None,
                    }]
                })
        } else {
            let facts = route::facts_of(&req.uri);
            let needs_auth = self.auth_required && !self.is_trusted(&source);
            if !self.local.is_our_domain(&facts.host) {
                Err((403, "Relay Denied"))
            } else if req.method == rsip::Method::Register {
                if !self.registrar_enabled {
                    self.reply(now, key, &req, 501, Some("Registrar Not Enabled"));
                } else if needs_auth {
                    self.park_for_auth(key, source, req, AfterAuth::Register);
                } else {
                    self.tasks.push_back(Task::Register {
                        key,
                        request: req,
                        source,
                        user: None,
                    });
                }
                return;
            } else if facts.user.is_none() {
                self.local_request(now, key, source, &req);
                return;
            } else if needs_auth {
                self.park_for_auth(key, source, req, AfterAuth::Route { routes });
                return;
            } else {
                self.route_initial(now, key, source, req, routes);
                return;
            }
        };
        // No relay (§26.3.2.2 applied to in-dialog requests): an untrusted
        // source goes only inside a dialog we set up, and only to its other
        // side; a forged To tag, Route or flow token never gets past us.
        let target = match target {
            Ok(t) if !self.is_trusted(&source) => {
                let proposed: Vec<_> = t.iter().map(|t| (t.dest, t.kind)).collect();
                match self.dialog_hop(&req, &source, &proposed) {
                    Some(hop) => {
                        if let Some(route) = hop.route {
                            routes = route;
                        }
                        Ok(vec![Target {
                            uri: req.uri.clone(),
                            dest: hop.dest,
                            kind: hop.kind,
                            codec_policy: None,
                        }])
                    }
                    None => {
                        tracing::info!(method = %req.method, peer = %source.peer(), "request outside any known dialog refused (no relay)");
                        Err(if to_tag.is_some() {
                            (481, "Call/Transaction Does Not Exist")
                        } else {
                            (403, "Relay Denied")
                        })
                    }
                }
            }
            other => other,
        };
        match target {
            Ok(targets) => {
                if req.method == rsip::Method::Bye {
                    // Routed (possibly by the dialog record): the dialog ends.
                    let call_id = call_id_of(&req.headers);
                    if let Some(d) = self.dialogs.remove(&call_id) {
                        let from_tag = tag_of_header(&req, |h| matches!(h, rsip::Header::From(_)));
                        let reason = if from_tag.as_deref() == Some(d.callee.tag.as_str()) {
                            dialog::EndCause::ByeFromCallee
                        } else {
                            dialog::EndCause::ByeFromCaller
                        };
                        self.dialog_event(
                            now,
                            call_id,
                            dialog::DialogEventKind::Terminated { reason },
                        );
                    }
                }
                let media = self.media && !peer_media;
                self.forward(
                    now,
                    key,
                    source,
                    req,
                    routes,
                    targets,
                    to_tag.is_none(),
                    media,
                )
            }
            Err((code, reason)) => self.reply(now, key, &req, code, Some(reason)),
        }
    }

    fn flow_target(
        &self,
        req: &rsip::Request,
        flow: FlowId,
    ) -> Result<Vec<Target>, (u16, &'static str)> {
        if !self.flows.alive(flow) {
            return Err((430, "Flow Failed"));
        }
        Ok(vec![Target {
            uri: req.uri.clone(),
            dest: Destination::Flow(flow),
            kind: Kind::Ws,
            codec_policy: None,
        }])
    }

    /// Requests for rtcgate itself: OPTIONS (keepalive/health) and REGISTER.
    fn local_request(
        &mut self,
        now: Instant,
        key: ServerKey,
        _source: Source,
        req: &rsip::Request,
    ) {
        match req.method {
            rsip::Method::Options => {
                let mut resp =
                    transaction::make_response(req, 200, None, Some(&crate::sip::new_tag()));
                resp.headers
                    .push(rsip::Header::Allow(rsip::headers::Allow::new(ALLOW)));
                resp.headers
                    .push(rsip::Header::Accept(rsip::headers::Accept::new(
                        "application/sdp",
                    )));
                self.send_final(now, key, resp);
            }
            _ => {
                let mut resp =
                    transaction::make_response(req, 405, None, Some(&crate::sip::new_tag()));
                resp.headers
                    .push(rsip::Header::Allow(rsip::headers::Allow::new(ALLOW)));
                self.send_final(now, key, resp);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        now: Instant,
        key: ServerKey,
        source: Source,
        req: rsip::Request,
        routes: Vec<String>,
        targets: Vec<Target>,
        initial: bool,
        media: bool,
    ) {
        let record_route = initial
            && matches!(
                req.method,
                rsip::Method::Invite | rsip::Method::Subscribe | rsip::Method::Refer
            );
        if initial && req.method == rsip::Method::Invite {
            self.call_started(now, &req, &source, &targets, Some(key));
        }
        let loop_part = self.loop_hash(&req);
        let mut fwd = Forward {
            source,
            method: req.method,
            request: req,
            branches: Vec::new(),
            best: None,
            final_sent: false,
            queue: VecDeque::new(),
            answering: false,
            routes,
            record_route,
            serial: None,
            exhausted: (503, "All Destinations Failed"),
            initial,
            media,
        };
        for target in targets {
            self.start_branch(now, key, &mut fwd, target, &loop_part);
        }
        if fwd.branches.is_empty() {
            let (code, reason) = if self.txns.len() >= self.txns.config().max_transactions {
                (503, "Overloaded")
            } else {
                (430, "Flow Failed")
            };
            let request = fwd.request;
            if initial {
                self.count_rejected(&request);
            }
            self.call_failed(now, call_id_of(&request.headers), code, Vec::new());
            self.reply(now, key, &request, code, Some(reason));
            return;
        }
        if initial && fwd.method == rsip::Method::Invite {
            self.stats.call_attempts += 1;
        }
        self.forwards.insert(key, fwd);
    }

    /// Adds a branch toward `target` to `fwd` (nothing when the target's
    /// flow is gone or no client transaction can be created).
    fn start_branch(
        &mut self,
        now: Instant,
        key: ServerKey,
        fwd: &mut Forward,
        target: Target,
        loop_part: &str,
    ) {
        if let Destination::Flow(f) = target.dest
            && !self.flows.alive(f)
        {
            return;
        }
        let source = fwd.source;
        // A call handed to the peer node holding the flow: that node does the media.
        let to_peer =
            fwd.initial && matches!(target.dest, Destination::Udp(a) if self.peers.is_peer(a));
        let media = fwd.media && !to_peer;
        let mut out = fwd.request.clone();
        out.uri = target.uri.clone();
        route::lower_transport_param(&mut out.uri);
        route::set_routes(&mut out, &fwd.routes);
        set_max_forwards(&mut out);
        if fwd.record_route {
            self.add_record_routes(&mut out, &source, &target, !media && self.media);
        }
        self.seq += 1;
        let branch = format!("z9hG4bK.rg{loop_part}.{:x}", self.seq);
        let toward = match target.dest {
            Destination::Udp(a) => Some(a),
            Destination::Flow(_) => None,
        };
        let mut via = format!(
            "SIP/2.0/{} {};branch={branch}",
            target.kind.via_token(),
            self.local.sent_by(target.kind, toward)
        );
        if target.kind == Kind::Udp {
            via.push_str(";rport");
        }
        if let Source::Ws { flow, .. } = source {
            via.push_str(";fl=");
            via.push_str(&self.keyed.flow_token(flow));
        }
        insert_headers(
            &mut out.headers,
            [rsip::Header::Via(rsip::headers::Via::new(via))],
            |h| matches!(h, rsip::Header::Via(_)),
            false,
        );
        let offers_sdp = media
            && matches!(out.method, rsip::Method::Invite | rsip::Method::Update)
            && crate::sip::has_sdp(&out.headers, &out.body);
        if offers_sdp {
            // rtpengine rewrites the offer for this branch first.
            let idx = fwd.branches.len();
            let mut msg = media_msg(
                &out,
                &branch,
                out.body.clone(),
                profile(target.kind),
                Some(source.peer().ip()),
            );
            msg.codec_policy = target.codec_policy.clone();
            fwd.branches.push(Branch {
                key: None,
                dest: target.dest,
                kind: target.kind,
                via_branch: branch.clone(),
                awaiting_offer: true,
                request: out,
                provisional: false,
                done: false,
                cancel_on_provisional: false,
                media,
            });
            self.tasks.push_back(Task::Media(MediaTask::Offer {
                key,
                branch: idx,
                msg,
            }));
            return;
        }
        if media && out.method == rsip::Method::Invite {
            let msg = media_msg(&out, &branch, Vec::new(), profile(target.kind), None);
            self.tasks
                .push_back(Task::Media(MediaTask::NoSdpInvite { msg }));
        }
        match self
            .txns
            .send_request(now, out.clone(), target.dest, target.kind.reliable())
        {
            Ok(ck) => {
                self.owners.insert(ck, (key, fwd.branches.len()));
                fwd.branches.push(Branch {
                    key: Some(ck),
                    dest: target.dest,
                    kind: target.kind,
                    via_branch: branch,
                    awaiting_offer: false,
                    request: out,
                    provisional: false,
                    done: false,
                    cancel_on_provisional: false,
                    media,
                });
                self.stats.forwarded += 1;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot create client transaction");
            }
        }
    }

    /// `peer_media`: a peer node does this call's media; the entries say so,
    /// for the in-dialog requests that come back through them.
    fn add_record_routes(
        &self,
        out: &mut rsip::Request,
        source: &Source,
        target: &Target,
        peer_media: bool,
    ) {
        let inbound_token = match source {
            Source::Ws { flow, .. } => Some(self.keyed.flow_token(*flow)),
            Source::Udp { .. } => None,
        };
        let outbound_token = match target.dest {
            Destination::Flow(f) => Some(self.keyed.flow_token(f)),
            Destination::Udp(_) => None,
        };
        let toward = match target.dest {
            Destination::Udp(a) => Some(a),
            Destination::Flow(_) => None,
        };
        let mut outbound = route::record_route_entry(
            &self.local.sent_by(target.kind, toward),
            target.kind,
            outbound_token.as_deref(),
        );
        let mut inbound = route::record_route_entry(
            &self.local.sent_by(source.kind(), Some(source.peer())),
            source.kind(),
            inbound_token.as_deref(),
        );
        if peer_media {
            outbound = route::mark_no_media(&outbound);
            inbound = route::mark_no_media(&inbound);
        }
        // push_front twice: the outbound-facing entry ends up on top.
        out.headers
            .push_front(rsip::Header::RecordRoute(rsip::headers::RecordRoute::new(
                inbound,
            )));
        out.headers
            .push_front(rsip::Header::RecordRoute(rsip::headers::RecordRoute::new(
                outbound,
            )));
    }

    /// Forwards a request outside any transaction (the ACK for a 2xx).
    fn forward_stateless(&mut self, source: Source, mut req: rsip::Request) {
        if max_forwards(&req) == Some(0) {
            return;
        }
        let mut routes = route::routes(&req);
        let mut next_flow = None;
        let mut peer_media = false;
        while let Some(first) = routes.first() {
            let Some((f, no_media)) = route::route_entry_facts(first) else {
                break;
            };
            if !self.local.is_me(&f.host, f.port) {
                break;
            }
            peer_media |= no_media;
            next_flow = f
                .user
                .as_deref()
                .and_then(|u| self.keyed.parse_flow_token(u));
            routes.remove(0);
        }
        let dest = if let Some(first) = routes.first() {
            route::uri_facts(route::uri_of(first)).and_then(|f| routing::resolve(&f).ok())
        } else if let Some(flow) = next_flow {
            Some((Destination::Flow(flow), Kind::Ws))
        } else {
            let facts = route::facts_of(&req.uri);
            if self.local.is_me(&facts.host, facts.port) {
                self.dialog_side(&req)
            } else {
                routing::resolve(&facts)
                    .ok()
                    .or_else(|| self.dialog_side(&req))
            }
        };
        let Some((mut dest, mut kind)) = dest else {
            tracing::debug!(method = %req.method, "stateless request has no route; dropped");
            return;
        };
        if !self.is_trusted(&source) {
            match self.dialog_hop(&req, &source, &[(dest, kind)]) {
                Some(hop) => {
                    (dest, kind) = (hop.dest, hop.kind);
                    if let Some(route) = hop.route {
                        routes = route;
                    }
                }
                None => {
                    tracing::info!(method = %req.method, peer = %source.peer(), "stateless request outside any known dialog dropped (no relay)");
                    return;
                }
            }
        }
        if req.method == rsip::Method::Ack
            && let (Some(from_tag), Some(to_tag)) = (
                tag_of_header(&req, |h| matches!(h, rsip::Header::From(_))),
                tag_of_header(&req, |h| matches!(h, rsip::Header::To(_))),
            )
        {
            self.dialogs
                .saw_ack(&call_id_of(&req.headers), &from_tag, &to_tag);
        }
        route::set_routes(&mut req, &routes);
        route::lower_transport_param(&mut req.uri);
        set_max_forwards(&mut req);
        self.seq += 1;
        let toward = match dest {
            Destination::Udp(a) => Some(a),
            Destination::Flow(_) => None,
        };
        let mut via = format!(
            "SIP/2.0/{} {};branch=z9hG4bK.rs{}.{:x}",
            kind.via_token(),
            self.local.sent_by(kind, toward),
            self.loop_hash(&req),
            self.seq
        );
        if let Source::Ws { flow, .. } = source {
            via.push_str(";fl=");
            via.push_str(&self.keyed.flow_token(flow));
        }
        req.headers
            .push_front(rsip::Header::Via(rsip::headers::Via::new(via)));
        if self.media
            && !peer_media
            && req.method == rsip::Method::Ack
            && crate::sip::has_sdp(&req.headers, &req.body)
        {
            let msg = media_msg(
                &req,
                "",
                req.body.clone(),
                profile(kind),
                Some(source.peer().ip()),
            );
            self.tasks.push_back(Task::Media(MediaTask::AckAnswer {
                request: req,
                dest,
                msg,
            }));
            return;
        }
        self.queue_send(dest, transaction::encode_request(&req));
    }

    fn on_response(&mut self, now: Instant, resp: rsip::Response) {
        match self.txns.handle_response(now, resp) {
            Ok(ResponseDisposition::Deliver { key, response }) => {
                self.on_branch_response(now, key, response)
            }
            Ok(ResponseDisposition::Forward2xx { key, response }) => {
                let dest = self
                    .owners
                    .get(&key)
                    .and_then(|(s, _)| self.forwards.get(s))
                    .map(|f| f.source.reply_to());
                match dest {
                    Some(d) => {
                        if let Some(r) = pop_via(response)
                            && first_via(&r.headers).is_some()
                        {
                            self.queue_send(d, transaction::encode_response(&r));
                        }
                    }
                    None => self.forward_response_stateless(response),
                }
            }
            Ok(ResponseDisposition::Absorbed(_)) => {}
            Ok(ResponseDisposition::Stray(response)) => self.forward_response_stateless(response),
            Err(e) => tracing::debug!(error = %e, "response refused by the transaction layer"),
        }
    }

    /// §16.11: a response with no transaction goes to the next Via.
    fn forward_response_stateless(&mut self, resp: rsip::Response) {
        let Some(top) = first_via(&resp.headers) else {
            return;
        };
        let Ok(typed) = rsip::headers::Via::new(top.clone()).typed() else {
            return;
        };
        let host = typed.uri.host_with_port.host.to_string();
        if !self
            .local
            .is_me(&host, typed.uri.host_with_port.port.map(|p| p.value()))
        {
            return;
        }
        let flow = typed.params.iter().find_map(|p| match p {
            rsip::Param::Other(n, Some(v)) if n.to_string().eq_ignore_ascii_case("fl") => {
                self.keyed.parse_flow_token(&v.to_string())
            }
            _ => None,
        });
        let Some(resp) = pop_via(resp) else {
            return;
        };
        if first_via(&resp.headers).is_none() {
            return;
        }
        let dest = match flow {
            Some(f) => Some(Destination::Flow(f)),
            None => first_via(&resp.headers).and_then(|v| via_destination(&v)),
        };
        if let Some(d) = dest {
            self.queue_send(d, transaction::encode_response(&resp));
        }
    }

    fn on_branch_response(&mut self, now: Instant, key: ClientKey, resp: rsip::Response) {
        let Some(&(skey, idx)) = self.owners.get(&key) else {
            return;
        };
        let Some(resp) = pop_via(resp) else {
            return;
        };
        // §16.7 step 3: no Via left means the response was for us.
        if first_via(&resp.headers).is_none() {
            tracing::debug!("response with no Via for the previous hop; not forwarded");
            return;
        }
        let code = resp.status_code.code();
        let mut cancel_now = None;
        let Some(fwd) = self.forwards.get_mut(&skey) else {
            return;
        };
        if let Some(b) = fwd.branches.get_mut(idx) {
            if code < 200 {
                if !b.provisional && b.cancel_on_provisional {
                    cancel_now = Some(b.request.clone());
                }
                b.provisional = true;
            } else {
                b.done = true;
            }
        }
        if let Some(original) = cancel_now
            && let Some(dest) = fwd.branches.get(idx).map(|b| b.dest)
        {
            self.send_cancel(now, &original, dest);
        }
        let Some(fwd) = self.forwards.get_mut(&skey) else {
            return;
        };
        fwd.queue.push_back((idx, resp));
        self.process_queue(now, skey);
    }

    /// rtpengine answered (or failed) the offer of a parked branch.
    fn offered(
        &mut self,
        now: Instant,
        skey: ServerKey,
        idx: usize,
        result: Result<Vec<u8>, MediaFailure>,
    ) {
        let Some(fwd) = self.forwards.get_mut(&skey) else {
            return;
        };
        let Some(b) = fwd.branches.get_mut(idx) else {
            return;
        };
        if b.done || !b.awaiting_offer {
            return;
        }
        b.awaiting_offer = false;
        match result {
            Ok(sdp) => {
                let mut out = b.request.clone();
                crate::sip::replace_body(&mut out.headers, &mut out.body, sdp);
                b.request = out.clone();
                let (dest, reliable) = (b.dest, b.kind.reliable());
                match self.txns.send_request(now, out, dest, reliable) {
                    Ok(ck) => {
                        if let Some(b) = self
                            .forwards
                            .get_mut(&skey)
                            .and_then(|f| f.branches.get_mut(idx))
                        {
                            b.key = Some(ck);
                        }
                        self.owners.insert(ck, (skey, idx));
                        self.stats.forwarded += 1;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot create client transaction");
                        self.fail_branch(now, skey, idx, 503, Some("Overloaded"), None, None);
                    }
                }
            }
            Err(f) => {
                let reason = match f.status {
                    503 => "Media Relay Unavailable",
                    488 => "Not Acceptable Here",
                    _ => "Media Error",
                };
                self.fail_branch(
                    now,
                    skey,
                    idx,
                    f.status,
                    Some(reason),
                    f.warning,
                    f.retry_after,
                );
            }
        }
    }

    /// Ends a branch locally with a response as if it had arrived.
    #[allow(clippy::too_many_arguments)]
    fn fail_branch(
        &mut self,
        now: Instant,
        skey: ServerKey,
        idx: usize,
        code: u16,
        reason: Option<&str>,
        warning: Option<String>,
        retry_after: Option<u32>,
    ) {
        let Some(fwd) = self.forwards.get_mut(&skey) else {
            return;
        };
        let mut resp =
            transaction::make_response(&fwd.request, code, reason, Some(&crate::sip::new_tag()));
        if let Some(w) = warning {
            let host = self.local.sent_by(Kind::Udp, None);
            resp.headers
                .push(rsip::Header::Warning(rsip::headers::Warning::new(format!(
                    "399 {host} \"{w}\""
                ))));
        }
        if let Some(secs) = retry_after {
            resp.headers
                .push(rsip::Header::RetryAfter(rsip::headers::RetryAfter::new(
                    secs.to_string(),
                )));
        }
        if let Some(b) = fwd.branches.get_mut(idx) {
            b.done = true;
        }
        fwd.keep_if_better(resp);
        self.maybe_send_best(now, skey);
    }

    /// Forwards queued responses in order; one that carries SDP for the
    /// media layer waits for rtpengine and holds the ones behind it.
    fn process_queue(&mut self, now: Instant, skey: ServerKey) {
        loop {
            let media = self.media;
            let Some(fwd) = self.forwards.get_mut(&skey) else {
                return;
            };
            if fwd.answering {
                return;
            }
            let Some((idx, resp)) = fwd.queue.pop_front() else {
                return;
            };
            let code = resp.status_code.code();
            let wants_answer = media
                && fwd.branches.get(idx).is_some_and(|b| b.media)
                && matches!(fwd.method, rsip::Method::Invite | rsip::Method::Update)
                && (180..300).contains(&code)
                && crate::sip::has_sdp(&resp.headers, &resp.body);
            if wants_answer {
                let via_branch = fwd
                    .branches
                    .get(idx)
                    .map(|b| b.via_branch.clone())
                    .unwrap_or_default();
                let received_from = match fwd.branches.get(idx).map(|b| b.dest) {
                    Some(Destination::Udp(a)) => Some(a.ip()),
                    _ => None,
                };
                let target = profile(fwd.source.kind());
                fwd.answering = true;
                let msg = MediaMsg {
                    call_id: call_id_of(&resp.headers),
                    from_tag: header_tag(&resp.headers, |h| matches!(h, rsip::Header::From(_)))
                        .unwrap_or_default(),
                    to_tag: header_tag(&resp.headers, |h| matches!(h, rsip::Header::To(_))),
                    via_branch,
                    sdp: resp.body.clone(),
                    target,
                    received_from,
                    codec_policy: None,
                };
                self.tasks.push_back(Task::Media(MediaTask::Answer {
                    key: skey,
                    branch: idx,
                    response: resp,
                    msg,
                }));
                return;
            }
            self.deliver(now, skey, idx, resp);
        }
    }

    /// Forwards one branch response upstream per §16.7.
    fn deliver(&mut self, now: Instant, skey: ServerKey, idx: usize, resp: rsip::Response) {
        let code = resp.status_code.code();
        let media = self.media;
        let Some(fwd) = self.forwards.get_mut(&skey) else {
            return;
        };
        let is_invite = fwd.method == rsip::Method::Invite;
        if media
            && is_invite
            && code >= 200
            && let Some(b) = fwd.branches.get(idx)
        {
            self.tasks.push_back(Task::Media(MediaTask::Final {
                call_id: call_id_of(&resp.headers),
                via_branch: b.via_branch.clone(),
                status: code,
            }));
        }
        let Some(fwd) = self.forwards.get_mut(&skey) else {
            return;
        };
        match code {
            100 => {}
            101..=199 => {
                if !fwd.final_sent {
                    let initial = is_invite
                        && tag_of_header(&fwd.request, |h| matches!(h, rsip::Header::To(_)))
                            .is_none();
                    let _ = self.txns.send_response(now, &skey, &resp);
                    if initial
                        && header_tag(&resp.headers, |h| matches!(h, rsip::Header::To(_))).is_some()
                    {
                        let call_id = call_id_of(&resp.headers);
                        if self.started.contains_key(&call_id) && self.early.insert(call_id.clone())
                        {
                            self.dialog_event(now, call_id, dialog::DialogEventKind::Early);
                        }
                    }
                }
            }
            200..=299 => {
                // Every 2xx goes upstream, even after another branch's 2xx
                // (§16.7 step 5).
                let first_final = !fwd.final_sent;
                fwd.final_sent = true;
                let initial =
                    tag_of_header(&fwd.request, |h| matches!(h, rsip::Header::To(_))).is_none();
                if is_invite && initial && first_final {
                    self.stats.calls.record(code);
                }
                self.pending.release(&skey);
                let _ = self.txns.send_response(now, &skey, &resp);
                if is_invite {
                    if initial {
                        let call_id = call_id_of(&resp.headers);
                        self.early.remove(&call_id);
                        if self.started.remove(&call_id).is_some() {
                            let destination = fwd
                                .branches
                                .get(idx)
                                .map(|b| dialog::describe_destination(b.dest, &b.request.uri))
                                .unwrap_or_default();
                            self.dialog_event(
                                now,
                                call_id,
                                dialog::DialogEventKind::Confirmed { destination },
                            );
                        }
                        self.record_dialog(now, skey, idx, &resp);
                        let call_id = call_id_of(&resp.headers);
                        if self.dialogs.get(&call_id).is_some() {
                            if let Some(max) = self.max_call_duration {
                                self.schedule_call_deadline(now + max, call_id.clone());
                            }
                            self.ack_deadlines
                                .push(std::cmp::Reverse((now + self.ack_wait, call_id)));
                        }
                    }
                    self.cancel_branches(now, skey, Some(idx));
                }
            }
            _ => {
                let serial_current =
                    is_invite && fwd.serial.as_ref().is_some_and(|s| s.current == idx);
                if serial_current {
                    match self.fail_over(now, skey, idx, BranchFailure::Status(code)) {
                        // The failure stays between rtcgate and that PBX.
                        FailoverResult::Started(_) => return,
                        FailoverResult::Exhausted => {
                            self.answer_exhausted(now, skey);
                            return;
                        }
                        FailoverResult::Final | FailoverResult::NotSerial => {}
                    }
                }
                let Some(fwd) = self.forwards.get_mut(&skey) else {
                    return;
                };
                fwd.keep_if_better(resp);
                self.maybe_send_best(now, skey);
            }
        }
    }

    fn maybe_send_best(&mut self, now: Instant, skey: ServerKey) {
        let Some(fwd) = self.forwards.get_mut(&skey) else {
            return;
        };
        if fwd.final_sent || fwd.branches.iter().any(|b| !b.done) {
            return;
        }
        fwd.final_sent = true;
        let best = fwd.best.take().unwrap_or_else(|| {
            transaction::make_response(&fwd.request, 408, None, Some(&crate::sip::new_tag()))
        });
        let initial_invite = fwd.method == rsip::Method::Invite
            && tag_of_header(&fwd.request, |h| matches!(h, rsip::Header::To(_))).is_none();
        let call_id = call_id_of(&fwd.request.headers);
        if initial_invite {
            self.stats.calls.record(best.status_code.code());
            let status = best.status_code.code();
            // Every destination the INVITE went to (serial failover adds branches).
            let tried = fwd
                .branches
                .iter()
                .map(|b| dialog::describe_destination(b.dest, &b.request.uri))
                .collect();
            self.call_failed(now, call_id.clone(), status, tried);
        }
        if self.media && initial_invite {
            self.tasks.push_back(Task::Media(MediaTask::Terminate {
                call_id,
                reason: crate::media::EndReason::Failed,
            }));
        }
        self.pending.release(&skey);
        let _ = self.txns.send_response(now, &skey, &best);
    }

    /// Cancels the pending branches of an INVITE (all, or all but `except`).
    fn cancel_branches(&mut self, now: Instant, skey: ServerKey, except: Option<usize>) {
        let Some(fwd) = self.forwards.get_mut(&skey) else {
            return;
        };
        // Answered or cancelled: no further destination is tried.
        fwd.serial = None;
        let mut to_cancel = Vec::new();
        for (i, b) in fwd.branches.iter_mut().enumerate() {
            if Some(i) == except || b.done {
                continue;
            }
            if b.awaiting_offer {
                // Never sent: nothing to cancel downstream.
                b.awaiting_offer = false;
                b.done = true;
            } else if b.provisional {
                to_cancel.push((b.request.clone(), b.dest));
            } else {
                // §9.1: no CANCEL before a provisional; send it when one comes.
                b.cancel_on_provisional = true;
            }
        }
        for (req, dest) in to_cancel {
            self.send_cancel(now, &req, dest);
        }
        // Branches that ended here (never sent) may complete the set.
        if except.is_none()
            && let Some(fwd) = self.forwards.get_mut(&skey)
            && fwd.branches.iter().all(|b| b.done)
            && !fwd.final_sent
        {
            let resp =
                transaction::make_response(&fwd.request, 487, None, Some(&crate::sip::new_tag()));
            fwd.best = Some(resp);
            self.maybe_send_best(now, skey);
        }
    }

    fn send_cancel(&mut self, now: Instant, original: &rsip::Request, dest: Destination) {
        if let Ok(cancel) = transaction::build_cancel(original) {
            let reliable = matches!(dest, Destination::Flow(_));
            if let Err(e) = self.txns.send_request(now, cancel, dest, reliable) {
                tracing::debug!(error = %e, "cannot send CANCEL");
            }
        }
    }

    /// Handles the transaction layer's outputs.
    fn drain(&mut self, now: Instant) {
        while let Some(out) = self.txns.poll_output() {
            match out {
                Output::Transmit(t) => {
                    // No TCP toward UDP peers (§18.1.1 would switch): a
                    // request that cannot fit a datagram fails its branch.
                    if let (Destination::Udp(_), Some(ck)) = (t.to, t.client)
                        && t.data.len() > MAX_UDP_DATAGRAM
                    {
                        tracing::info!(bytes = t.data.len(), "request too large for UDP");
                        self.fail_branch_transport(ck, 513);
                        continue;
                    }
                    self.sends.push_back(Outgoing {
                        dest: t.to,
                        data: t.data,
                        client: t.client,
                    });
                }
                Output::Timeout(ck) => {
                    let code = self.send_errors.remove(&ck).unwrap_or(408);
                    // Too large is about the request, not the destination:
                    // no failover, no mark on the PBX's health.
                    let owner = if code == 513 {
                        None
                    } else {
                        self.owners.get(&ck).copied()
                    };
                    if let Some((skey, idx)) = owner {
                        match self.fail_over(now, skey, idx, BranchFailure::Timeout) {
                            FailoverResult::Started(_) => continue,
                            FailoverResult::Final | FailoverResult::Exhausted => {
                                self.answer_exhausted(now, skey);
                                continue;
                            }
                            FailoverResult::NotSerial => {}
                        }
                    }
                    if let Some(req) = self.branch_request(ck) {
                        let resp = transaction::make_response(
                            &req,
                            code,
                            None,
                            Some(&crate::sip::new_tag()),
                        );
                        // Pretend the answer arrived on the branch; pop_via
                        // expects our Via on top, and the branch request has it.
                        self.on_branch_response(now, ck, resp);
                    }
                }
                Output::TimerC(ck) => {
                    let branch = self
                        .owners
                        .get(&ck)
                        .and_then(|(s, i)| self.forwards.get(s).and_then(|f| f.branches.get(*i)))
                        .map(|b| (b.provisional, b.request.clone(), b.dest));
                    match branch {
                        Some((true, req, dest)) => self.send_cancel(now, &req, dest),
                        Some((false, req, _)) => {
                            let resp = transaction::make_response(
                                &req,
                                408,
                                None,
                                Some(&crate::sip::new_tag()),
                            );
                            self.on_branch_response(now, ck, resp);
                        }
                        None => {}
                    }
                }
                Output::AckTimeout(_) => {}
                Output::Terminated(TransactionKey::Client(ck)) => {
                    self.owners.remove(&ck);
                }
                Output::Terminated(TransactionKey::Server(sk)) => {
                    self.pending.release(&sk);
                    self.parked.remove(&sk);
                    if let Some(fwd) = self.forwards.remove(&sk) {
                        if !fwd.final_sent && fwd.method == rsip::Method::Invite {
                            // Gone without a final response (its transport
                            // failed): nothing more will come for this call.
                            let call_id = call_id_of(&fwd.request.headers);
                            self.started.remove(&call_id);
                            self.early.remove(&call_id);
                        }
                        for b in fwd.branches {
                            if let Some(k) = b.key {
                                self.owners.remove(&k);
                            }
                        }
                    }
                }
            }
        }
    }

    fn branch_request(&self, ck: ClientKey) -> Option<rsip::Request> {
        let (s, i) = self.owners.get(&ck)?;
        Some(self.forwards.get(s)?.branches.get(*i)?.request.clone())
    }

    fn reply(
        &mut self,
        now: Instant,
        key: ServerKey,
        req: &rsip::Request,
        code: u16,
        reason: Option<&str>,
    ) {
        let tag = crate::sip::new_tag();
        let resp = transaction::make_response(req, code, reason, Some(&tag));
        self.send_final(now, key, resp);
    }

    fn send_final(&mut self, now: Instant, key: ServerKey, mut resp: rsip::Response) {
        let class = (resp.status_code.code() / 100) as usize;
        if let Some(c) = self.stats.local_responses.get_mut(class) {
            *c += 1;
        }
        if !self.server_header.is_empty() {
            resp.headers
                .push(rsip::Header::Server(rsip::headers::Server::new(
                    self.server_header.clone(),
                )));
        }
        if resp.status_code.code() >= 200 {
            self.pending.release(&key);
        }
        if let Err(e) = self.txns.send_response(now, &key, &resp) {
            tracing::debug!(error = %e, "cannot send response");
        }
    }

    /// The 503 of an overloaded proxy: `Retry-After` and our Server header.
    fn overloaded(&self, req: &rsip::Request) -> rsip::Response {
        let mut resp = transaction::make_response(
            req,
            503,
            Some("Service Unavailable"),
            Some(&crate::sip::new_tag()),
        );
        resp.headers
            .push(rsip::Header::RetryAfter(rsip::headers::RetryAfter::new(
                self.pending.caps().retry_after_s.to_string(),
            )));
        resp
    }

    /// The same 503 sent without a transaction (the table is full).
    fn reply_overloaded(&mut self, req: &rsip::Request, source: Source) {
        let mut resp = self.overloaded(req);
        if !self.server_header.is_empty() {
            resp.headers
                .push(rsip::Header::Server(rsip::headers::Server::new(
                    self.server_header.clone(),
                )));
        }
        self.queue_send(source.reply_to(), transaction::encode_response(&resp));
    }

    /// Counts (and, rate-limited, logs) a request refused by a cap.
    fn pending_refused(&mut self, now: Instant, source: Source, pending: usize, why: &'static str) {
        self.stats.overloaded += 1;
        if self.overload_log.event(now).is_some() {
            tracing::warn!(peer = %source.peer(), pending, cap = why, refused_total = self.stats.overloaded, "overload: new requests refused with 503");
        }
    }

    fn reply_stateless(
        &mut self,
        req: &rsip::Request,
        source: Source,
        code: u16,
        reason: Option<&str>,
    ) {
        let resp = transaction::make_response(req, code, reason, Some(&crate::sip::new_tag()));
        self.queue_send(source.reply_to(), transaction::encode_response(&resp));
    }

    fn loop_hash(&self, req: &rsip::Request) -> String {
        let from = tag_of_header(req, |h| matches!(h, rsip::Header::From(_))).unwrap_or_default();
        let to = tag_of_header(req, |h| matches!(h, rsip::Header::To(_))).unwrap_or_default();
        let call_id = call_id_of(&req.headers);
        let cseq = req
            .headers
            .iter()
            .find_map(|h| match h {
                rsip::Header::CSeq(c) => Some(c.value().trim().to_owned()),
                _ => None,
            })
            .unwrap_or_default();
        let uri = req.uri.to_string();
        self.keyed.loop_hash(&[&uri, &from, &to, &call_id, &cseq])
    }

    /// §16.3 step 4: a Via of ours whose branch carries this request's hash.
    fn is_loop(&self, req: &rsip::Request) -> bool {
        // Only a Via with our branch prefix can carry the hash: most requests
        // have none, and then the hash need not be computed.
        let ours = |h: &rsip::Header| matches!(h, rsip::Header::Via(v) if v.value().contains("z9hG4bK.rg"));
        if !req.headers.iter().any(ours) {
            return false;
        }
        let mine = format!("z9hG4bK.rg{}.", self.loop_hash(req));
        req.headers.iter().any(|h| match h {
            rsip::Header::Via(v) => route::split_list(v.value())
                .iter()
                .any(|one| one.contains(&mine)),
            _ => false,
        })
    }
}

/// The media profile of a leg, from its transport: browsers speak WebRTC,
/// everything on UDP plain RTP.
fn profile(kind: Kind) -> rtcgate_sdp::LegProfile {
    match kind {
        Kind::Ws | Kind::Wss => rtcgate_sdp::LegProfile::WebRtc,
        Kind::Udp => rtcgate_sdp::LegProfile::PlainRtp,
    }
}

/// The CSeq sequence number (0 when absent or malformed).
fn cseq_number(headers: &rsip::Headers) -> u32 {
    headers
        .iter()
        .find_map(|h| match h {
            rsip::Header::CSeq(c) => c.value().split_whitespace().next()?.parse().ok(),
            _ => None,
        })
        .unwrap_or(0)
}

/// The Call-ID value, trimmed (empty when absent).
pub(crate) fn call_id_of(headers: &rsip::Headers) -> String {
    headers
        .iter()
        .find_map(|h| match h {
            rsip::Header::CallId(c) => Some(c.value().trim().to_owned()),
            _ => None,
        })
        .unwrap_or_default()
}

/// `user@host` (or `host`) of a URI, as call records name parties.
fn party(f: &route::UriFacts) -> String {
    match &f.user {
        Some(u) => format!("{u}@{}", f.host),
        None => f.host.clone(),
    }
}

/// The caller as the From header names it (empty when it cannot be parsed).
fn from_party(req: &rsip::Request) -> String {
    req.headers
        .iter()
        .find_map(|h| match h {
            rsip::Header::From(f) => route::uri_facts(route::uri_of(f.value())),
            _ => None,
        })
        .map(|f| party(&f))
        .unwrap_or_default()
}

/// The `tag` parameter of the first header matching `which`.
fn header_tag(headers: &rsip::Headers, which: impl Fn(&rsip::Header) -> bool) -> Option<String> {
    let value = headers.iter().find(|h| which(h))?.value();
    let after = match value.rfind('>') {
        Some(i) => &value[i + 1..],
        None => value,
    };
    after.split(';').find_map(|p| {
        let (n, v) = p.split_once('=')?;
        n.trim()
            .eq_ignore_ascii_case("tag")
            .then(|| v.trim().to_owned())
    })
}

fn media_msg(
    req: &rsip::Request,
    via_branch: &str,
    sdp: Vec<u8>,
    target: rtcgate_sdp::LegProfile,
    received_from: Option<std::net::IpAddr>,
) -> MediaMsg {
    MediaMsg {
        call_id: call_id_of(&req.headers),
        from_tag: header_tag(&req.headers, |h| matches!(h, rsip::Header::From(_)))
            .unwrap_or_default(),
        to_tag: header_tag(&req.headers, |h| matches!(h, rsip::Header::To(_))),
        via_branch: via_branch.to_owned(),
        sdp,
        target,
        received_from,
        codec_policy: None,
    }
}

/// The class rank for choosing the best final response (§16.7 step 6):
/// 6xx first, then the lowest class.
fn rank(code: u16) -> u16 {
    if code >= 600 { 0 } else { code / 100 }
}

/// Inserts `new` just before the first header matching `same`; when there
/// is none, after the last Via (`after_vias`) or at the top.
fn insert_headers<const N: usize>(
    headers: &mut rsip::Headers,
    new: [rsip::Header; N],
    same: impl Fn(&rsip::Header) -> bool,
    after_vias: bool,
) {
    let headers = &mut headers.0;
    let at = headers.iter().position(&same).unwrap_or_else(|| {
        if after_vias {
            headers
                .iter()
                .rposition(|h| matches!(h, rsip::Header::Via(_)))
                .map_or(0, |i| i + 1)
        } else {
            0
        }
    });
    headers.splice(at..at, new);
}

fn max_forwards(req: &rsip::Request) -> Option<u32> {
    req.headers.iter().find_map(|h| match h {
        rsip::Header::MaxForwards(m) => m.value().trim().parse().ok(),
        _ => None,
    })
}

fn set_max_forwards(req: &mut rsip::Request) {
    let next = max_forwards(req).map_or(70, |m| m.saturating_sub(1));
    req.headers
        .retain(|h| !matches!(h, rsip::Header::MaxForwards(_)));
    req.headers
        .push(rsip::Header::MaxForwards(rsip::headers::MaxForwards::new(
            next.to_string(),
        )));
}

/// The `tag` parameter of a request's first header matching `which`.
fn tag_of_header(req: &rsip::Request, which: impl Fn(&rsip::Header) -> bool) -> Option<String> {
    header_tag(&req.headers, which)
}

/// The first Via value of a message (splitting a comma-joined header).
fn first_via(headers: &rsip::Headers) -> Option<String> {
    headers.iter().find_map(|h| match h {
        rsip::Header::Via(v) => route::split_list(v.value()).into_iter().next(),
        _ => None,
    })
}

/// Removes the top Via value (ours) from a response.
fn pop_via(mut resp: rsip::Response) -> Option<rsip::Response> {
    let headers = &mut resp.headers.0;
    let pos = headers
        .iter()
        .position(|h| matches!(h, rsip::Header::Via(_)))?;
    let rest = match &headers[pos] {
        rsip::Header::Via(v) => route::split_list(v.value()),
        _ => Vec::new(),
    };
    if rest.len() > 1 {
        headers[pos] = rsip::Header::Via(rsip::headers::Via::new(rest[1..].join(", ")));
    } else {
        headers.remove(pos);
    }
    Some(resp)
}

/// Where a response goes according to a Via (received/rport, else sent-by).
fn via_destination(via: &str) -> Option<Destination> {
    let typed = rsip::headers::Via::new(via.to_owned()).typed().ok()?;
    let ip = typed
        .received()
        .and_then(|r| r.ok())
        .or(match &typed.uri.host_with_port.host {
            rsip::Host::IpAddr(ip) => Some(*ip),
            rsip::Host::Domain(_) => None,
        })?;
    let port = typed
        .rport()
        .flatten()
        .or(typed.uri.host_with_port.port.map(|p| p.value()))
        .unwrap_or(5060);
    Some(Destination::Udp(std::net::SocketAddr::new(ip, port)))
}

#[cfg(test)]
mod tests;
