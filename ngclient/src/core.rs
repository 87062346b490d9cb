//! The sans-IO heart of the client: cookies, retransmission, instance choice, failover and
//! health pings. It never reads a clock or touches a socket; the caller feeds it `now`,
//! received datagrams and timer expiries, and drains what it wants sent and what completed.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::error::NgError;
use crate::instances::{Health, InstanceConfig, InstanceId, InstanceSet, InstanceStatus};
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::reply::{Reply, ReplyResult};
use crate::request::{self, CallRef, Command, Request};
use crate::wire;

/// Tuning of the core. `Default` gives sub-second failover: 3 tries × 150 ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreConfig {
    /// The rtpengine instances.
    pub instances: Vec<InstanceConfig>,
    /// Wait this long for a reply before resending the same datagram.
    pub try_timeout: Duration,
    /// Datagrams sent per instance (first send + retransmissions) before giving up on it.
    pub tries: u32,
    /// Interval of health pings to every instance (`None`: no pings).
    pub ping_interval: Option<Duration>,
    /// Consecutive timeouts that mark an instance down.
    pub down_after: u32,
    /// Most user requests in flight at once; more are refused with [`NgError::Backpressure`].
    pub max_in_flight: usize,
    /// Prefix of every cookie; make it unique per client (e.g. per process) so that
    /// rtpengine's reply cache never confuses two clients.
    pub cookie_prefix: String,
    /// After an `offer` timed out on one instance and moved to another, send a best-effort
    /// `delete` to the first in case it did create the call (late, not lost).
    pub cleanup_after_failover: bool,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            instances: Vec::new(),
            try_timeout: Duration::from_millis(150),
            tries: 3,
            ping_interval: Some(Duration::from_secs(1)),
            down_after: 1,
            max_in_flight: 65_536,
            cookie_prefix: "ng_".to_owned(),
            cleanup_after_failover: true,
        }
    }
}

/// Handle of a submitted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// The call's remembered instance; for an unseen call, an `offer` picks by weighted
    /// rendezvous hashing over the up instances (with failover), other commands take the
    /// top-ranked configured instance; commands without a call go to the first up one.
    #[default]
    Auto,
    /// This instance (e.g. from a persisted call → instance record). No failover.
    Instance(InstanceId),
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Destination (an instance's ng address).
    pub dest: SocketAddr,
    /// The whole datagram.
    pub payload: Vec<u8>,
}

/// A successful exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The instance that answered.
    pub instance: InstanceId,
    /// Its address.
    pub addr: SocketAddr,
    /// The reply (result `ok`, `pong` or another non-error result).
    pub reply: Reply,
}

/// A finished user request.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Which request.
    pub op: OpId,
    /// Its command.
    pub command: Command,
    /// The outcome.
    pub result: Result<Response, NgError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    User,
    HealthPing,
    Cleanup,
}

#[derive(Debug)]
struct Attempt {
    instance: InstanceId,
    cookie: Vec<u8>,
    datagram: Vec<u8>,
    sent: u32,
    first_sent: Instant,
    deadline: Instant,
}

#[derive(Debug)]
struct Op {
    purpose: Purpose,
    command: Command,
    call_id: Option<String>,
    from_tag: Option<String>,
    ends_call: bool,
    body: Vec<u8>,
    /// Remaining instances to fail over to (only for new-call offers).
    fallbacks: VecDeque<InstanceId>,
    attempt: Attempt,
}

/// The sans-IO ng client core. See the module docs.
#[derive(Debug)]
pub struct Core {
    config: CoreConfig,
    set: InstanceSet,
    ops: HashMap<u64, Op>,
    cookies: HashMap<Vec<u8>, u64>,
    timers: BTreeSet<(Instant, u64)>,
    next_op: u64,
    next_cookie: u64,
    user_in_flight: usize,
    ping_due: Vec<Instant>,
    ping_in_flight: Vec<bool>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Completion>,
    metrics: Metrics,
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

impl Core {
    /// A core whose first health pings are due at `now`.
    pub fn new(config: CoreConfig, now: Instant) -> Self {
        let n = config.instances.len();
        let set = InstanceSet::new(config.instances.clone(), config.down_after);
        Self {
            config,
            set,
            ops: HashMap::new(),
            cookies: HashMap::new(),
            timers: BTreeSet::new(),
            next_op: 0,
            next_cookie: 0,
            user_in_flight: 0,
            ping_due: vec![now; n],
            ping_in_flight: vec![false; n],
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            metrics: Metrics::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Starts a request. Its outcome arrives later as a [`Completion`] from [`Core::poll_event`].
    pub fn submit(
        &mut self,
        now: Instant,
        request: &Request,
        target: Target,
    ) -> Result<OpId, NgError> {
        if self.set.is_empty() {
            return Err(NgError::NoInstances);
        }
        if self.user_in_flight >= self.config.max_in_flight {
            return Err(NgError::Backpressure(self.user_in_flight));
        }
        let call_id = request.call_id().map(str::to_owned);
        let mut candidates: VecDeque<InstanceId> = match (target, &call_id) {
            (Target::Instance(id), _) => {
                if self.set.addr(id).is_none() {
                    return Err(NgError::UnknownInstance(id));
                }
                [id].into()
            }
            (Target::Auto, Some(call)) => match self.set.call_instance(call) {
                Some(id) => [id].into(),
                None if *request.command() == Command::Offer => {
                    self.set.new_call_candidates(call).into()
                }
                // A later command for a call we never saw (e.g. after a restart): the
                // instance every node would have picked first.
                None => self.set.rank(call).into_iter().take(1).collect(),
            },
            (Target::Auto, None) => self.set.first_up().into_iter().collect(),
        };
        let first = candidates.pop_front().ok_or(NgError::NoInstances)?;
        let body = request
            .encode_body()
            .map_err(|e| NgError::Encode(e.to_string()))?;
        let id = self.insert_op(now, Purpose::User, request, body, candidates, first);
        self.user_in_flight += 1;
        Ok(OpId(id))
    }

    fn insert_op(
        &mut self,
        now: Instant,
        purpose: Purpose,
        request: &Request,
        body: Vec<u8>,
        fallbacks: VecDeque<InstanceId>,
        instance: InstanceId,
    ) -> u64 {
        let id = self.next_op;
        self.next_op += 1;
        let attempt = self.launch(now, id, instance, request.command(), &body);
        self.ops.insert(
            id,
            Op {
                purpose,
                command: request.command().clone(),
                call_id: request.call_id().map(str::to_owned),
                from_tag: request.get_str("from-tag").map(str::to_owned),
                ends_call: request.ends_call(),
                body,
                fallbacks,
                attempt,
            },
        );
        id
    }

    /// Sends a fresh datagram (new cookie) for op `id` to `instance` and arms its timer.
    fn launch(
        &mut self,
        now: Instant,
        id: u64,
        instance: InstanceId,
        command: &Command,
        body: &[u8],
    ) -> Attempt {
        let cookie = format!("{}{}", self.config.cookie_prefix, self.next_cookie);
        self.next_cookie += 1;
        let datagram = wire::frame(&cookie, body);
        let deadline = now + self.config.try_timeout;
        if let Some(dest) = self.set.addr(instance) {
            self.transmits.push_back(Transmit {
                dest,
                payload: datagram.clone(),
            });
        }
        self.cookies.insert(cookie.clone().into_bytes(), id);
        self.timers.insert((deadline, id));
        self.metrics.entry(instance, command).requests += 1;
        Attempt {
            instance,
            cookie: cookie.into_bytes(),
            datagram,
            sent: 1,
            first_sent: now,
            deadline,
        }
    }

    /// Feeds a datagram received from `from`. Anything that is not a reply to one of our
    /// in-flight cookies from the instance that cookie was sent to is dropped before decoding.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        let Ok((cookie, body)) = wire::split_cookie(datagram) else {
            self.drop_datagram(from, "no cookie");
            return;
        };
        let Some(&id) = self.cookies.get(cookie) else {
            self.drop_datagram(from, "unknown cookie");
            return;
        };
        let Some(instance) = self.ops.get(&id).map(|op| op.attempt.instance) else {
            self.drop_datagram(from, "stale cookie");
            return;
        };
        let Some(addr) = self.set.addr(instance) else {
            return;
        };
        if canonical(from) != canonical(addr) {
            self.drop_datagram(from, "cookie from another address");
            return;
        }
        let Some(mut op) = self.take_op(id) else {
            return;
        };
        let rtt = now.saturating_duration_since(op.attempt.first_sent);
        self.set.on_reply(instance, rtt);
        let stats = self.metrics.entry(instance, &op.command);
        stats.latency.record(rtt);
        let reply = match wire::decode_body(body).and_then(Reply::from_dict) {
            Ok(r) => r,
            Err(source) => {
                stats.decode_errors += 1;
                self.finish(
                    id,
                    op,
                    Err(NgError::Decode {
                        instance: addr,
                        source,
                    }),
                );
                return;
            }
        };
        match &reply.result {
            ReplyResult::Error { .. } => stats.errors += 1,
            ReplyResult::LoadLimit { .. } => stats.load_limits += 1,
            _ => stats.ok += 1,
        }
        if matches!(reply.result, ReplyResult::LoadLimit { .. })
            && let Some(next) = op.fallbacks.pop_front()
        {
            tracing::info!(from = %addr, "rtpengine load limit: offer fails over");
            self.metrics.failovers += 1;
            op.attempt = self.launch(now, id, next, &op.command, &op.body);
            self.ops.insert(id, op);
            return;
        }
        if op.purpose == Purpose::User
            && let Some(call) = &op.call_id
        {
            if op.ends_call {
                self.set.forget_call(call);
            } else if !matches!(
                reply.result,
                ReplyResult::Error { .. } | ReplyResult::LoadLimit { .. }
            ) {
                self.set.bind_call(call, instance);
            }
        }
        let result = reply.into_result().map(|reply| Response {
            instance,
            addr,
            reply,
        });
        self.finish(id, op, result);
    }

    fn drop_datagram(&mut self, from: SocketAddr, why: &'static str) {
        self.metrics.dropped_datagrams += 1;
        tracing::debug!(%from, why, "ng datagram dropped");
    }

    /// Removes an op and its cookie and timer.
    fn take_op(&mut self, id: u64) -> Option<Op> {
        let op = self.ops.remove(&id)?;
        self.cookies.remove(&op.attempt.cookie);
        self.timers.remove(&(op.attempt.deadline, id));
        Some(op)
    }

    fn finish(&mut self, id: u64, op: Op, result: Result<Response, NgError>) {
        match op.purpose {
            Purpose::User => {
                self.user_in_flight = self.user_in_flight.saturating_sub(1);
                self.events.push_back(Completion {
                    op: OpId(id),
                    command: op.command,
                    result,
                });
            }
            Purpose::HealthPing => {
                if let Some(f) = self.ping_in_flight.get_mut(op.attempt.instance) {
                    *f = false;
                }
            }
            Purpose::Cleanup => {}
        }
    }

    /// When [`Core::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = self.timers.first().map(|(t, _)| *t);
        let ping = if self.config.ping_interval.is_some() {
            self.ping_due.iter().min().copied()
        } else {
            None
        };
        match (timer, ping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Retransmits, gives up, fails over and sends health pings as due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(deadline, id)) = self.timers.first() {
            if deadline > now {
                break;
            }
            self.timers.pop_first();
            self.expire(now, id);
        }
        if let Some(interval) = self.config.ping_interval {
            for instance in 0..self.ping_due.len() {
                if self.ping_due.get(instance).is_some_and(|due| *due <= now) {
                    if let Some(due) = self.ping_due.get_mut(instance) {
                        *due = now + interval;
                    }
                    if !self.ping_in_flight.get(instance).copied().unwrap_or(true) {
                        self.send_internal(now, Purpose::HealthPing, &request::ping(), instance);
                    }
                }
            }
        }
    }

    fn send_internal(
        &mut self,
        now: Instant,
        purpose: Purpose,
        req: &Request,
        instance: InstanceId,
    ) {
        let Ok(body) = req.encode_body() else {
            return;
        };
        if purpose == Purpose::HealthPing
            && let Some(f) = self.ping_in_flight.get_mut(instance)
        {
            *f = true;
        }
        self.insert_op(now, purpose, req, body, VecDeque::new(), instance);
    }

    /// The timer of op `id` (already removed from `timers`) fired.
    fn expire(&mut self, now: Instant, id: u64) {
        let Some(op) = self.ops.get_mut(&id) else {
            return;
        };
        let instance = op.attempt.instance;
        // An instance down for a whole ping interval (tried as a last
        // resort) gets one datagram, not the whole retransmission budget:
        // with every instance dead, new calls fail after one try_timeout.
        // A fresh verdict (one slow ping on a loaded host) still gets the
        // full budget; the next ping reply brings the instance back.
        let settled = match (self.set.down_since(instance), self.config.ping_interval) {
            (Some(since), Some(interval)) => now.saturating_duration_since(since) >= interval,
            (Some(_), None) => true,
            (None, _) => false,
        };
        let tries = if op.purpose == Purpose::User && settled {
            1
        } else {
            self.config.tries
        };
        if op.attempt.sent < tries {
            // rtpengine caches replies by cookie: resend the same bytes, never a new cookie.
            op.attempt.sent += 1;
            op.attempt.deadline = now + self.config.try_timeout;
            self.timers.insert((op.attempt.deadline, id));
            if let Some(dest) = self.set.addr(instance) {
                self.transmits.push_back(Transmit {
                    dest,
                    payload: op.attempt.datagram.clone(),
                });
            }
            let command = op.command.clone();
            self.metrics.entry(instance, &command).retransmits += 1;
            return;
        }
        let Some(mut op) = self.take_op(id) else {
            return;
        };
        self.metrics.entry(instance, &op.command).timeouts += 1;
        self.set.on_timeout(instance, now);
        let addr = self.set.addr(instance);
        if let Some(next) = op.fallbacks.pop_front() {
            tracing::warn!(from = ?addr, "rtpengine offer timed out: failing over");
            self.metrics.failovers += 1;
            if self.config.cleanup_after_failover
                && let (Some(call), Some(tag)) = (&op.call_id, &op.from_tag)
            {
                let cleanup = CallRef::new(call.clone()).from_tag(tag.clone()).delete();
                self.send_internal(now, Purpose::Cleanup, &cleanup, instance);
            }
            op.attempt = self.launch(now, id, next, &op.command, &op.body);
            self.ops.insert(id, op);
            return;
        }
        let tries = op.attempt.sent;
        let err = match addr {
            Some(instance) => NgError::Timeout { instance, tries },
            None => NgError::NoInstances,
        };
        self.finish(id, op, Err(err));
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next finished user request.
    pub fn poll_event(&mut self) -> Option<Completion> {
        self.events.pop_front()
    }

    /// User requests in flight.
    pub fn in_flight(&self) -> usize {
        self.user_in_flight
    }

    /// The instance remembered for a call.
    pub fn call_instance(&self, call_id: &str) -> Option<InstanceId> {
        self.set.call_instance(call_id)
    }

    /// Remembers a call's instance (e.g. restored from storage after a restart).
    pub fn bind_call(&mut self, call_id: &str, instance: InstanceId) -> Result<(), NgError> {
        if self.set.addr(instance).is_none() {
            return Err(NgError::UnknownInstance(instance));
        }
        self.set.bind_call(call_id, instance);
        Ok(())
    }

    /// Forgets a call's instance (the call ended without a `delete` through this client).
    pub fn forget_call(&mut self, call_id: &str) -> Option<InstanceId> {
        self.set.forget_call(call_id)
    }

    /// Number of calls remembered.
    pub fn call_count(&self) -> usize {
        self.set.call_count()
    }

    /// State of every instance.
    pub fn instances(&self) -> Vec<InstanceStatus> {
        self.set.status()
    }

    /// Health of one instance.
    pub fn health(&self, instance: InstanceId) -> Option<Health> {
        self.set.health(instance)
    }

    /// Counters so far.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot(|id| self.set.addr(id))
    }
}
