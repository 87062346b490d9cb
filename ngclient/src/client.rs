//! Thin tokio shell around [`Core`]: one UDP socket and one task per client.
//!
//! Callers talk to the task over a channel and await only their own reply; the task owns
//! the socket and the core, so there are no locks.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::core::{Core, CoreConfig, OpId, Response, Target};
use crate::error::NgError;
use crate::instances::{InstanceId, InstanceStatus};
use crate::metrics::MetricsSnapshot;
use crate::reply::Reply;
use crate::request::{self, CallRef, MediaRequest, Request};
use crate::wire::MAX_DATAGRAM;

/// Configuration of an [`NgClient`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientConfig {
    /// The core's tuning and instances.
    pub core: CoreConfig,
    /// Local address of the socket. Default: port 0 on loopback if every instance is on
    /// loopback, else on the unspecified address of the instances' family.
    pub bind: Option<SocketAddr>,
}

type Reply1<T> = oneshot::Sender<T>;

enum Cmd {
    Request {
        req: Request,
        target: Target,
        reply: Reply1<Result<Response, NgError>>,
    },
    Instances(Reply1<Vec<InstanceStatus>>),
    Metrics(Reply1<MetricsSnapshot>),
    CallInstance(String, Reply1<Option<InstanceId>>),
    BindCall(String, InstanceId, Reply1<Result<(), NgError>>),
    ForgetCall(String),
}

/// Handle to a running ng client. Cheap to clone; the task stops when the last handle drops.
#[derive(Debug, Clone)]
pub struct NgClient {
    tx: mpsc::UnboundedSender<Cmd>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

impl Response {
    /// The rewritten SDP, or an error if the reply has none.
    pub fn sdp(&self) -> Result<&[u8], NgError> {
        self.reply
            .sdp
            .as_deref()
            .ok_or_else(|| NgError::UnexpectedReply("no sdp in reply".into()))
    }
}

fn default_bind(config: &CoreConfig) -> SocketAddr {
    let addrs = || config.instances.iter().map(|i| i.addr.ip());
    let any_v6 = addrs().any(|ip| ip.is_ipv6());
    let all_loopback = addrs().all(|ip| ip.is_loopback());
    let ip = match (any_v6, all_loopback) {
        (false, true) => IpAddr::V4(Ipv4Addr::LOCALHOST),
        (false, false) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (true, true) if addrs().all(|ip| ip.is_ipv6()) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        (true, _) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}

impl NgClient {
    /// Binds the socket and spawns the client task on the current tokio runtime.
    pub async fn start(mut config: ClientConfig) -> Result<Self, NgError> {
        if config.core.instances.is_empty() {
            return Err(NgError::NoInstances);
        }
        let bind = config.bind.unwrap_or_else(|| default_bind(&config.core));
        let socket = UdpSocket::bind(bind)
            .await
            .map_err(|e| NgError::Io(format!("bind {bind}: {e}")))?;
        let local_addr = socket
            .local_addr()
            .map_err(|e| NgError::Io(e.to_string()))?;
        // A random token per client keeps cookies unique across clients and restarts, so
        // rtpengine's cookie-keyed reply cache never hands us someone else's reply.
        let token = std::collections::hash_map::RandomState::new()
            .hash_one((std::process::id(), local_addr));
        config.core.cookie_prefix =
            format!("{}{:x}_", config.core.cookie_prefix, token & 0xffff_ffff);
        let core = Core::new(config.core, Instant::now());
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(socket, core, rx));
        Ok(Self { tx, local_addr })
    }

    /// The local address of the client's socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    async fn ask<T>(&self, make: impl FnOnce(Reply1<T>) -> Cmd) -> Result<T, NgError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(make(tx)).map_err(|_| NgError::Closed)?;
        rx.await.map_err(|_| NgError::Closed)
    }

    /// Sends any request; resolves with the reply (`error`/`load limit` results are errors).
    pub async fn request(&self, req: Request, target: Target) -> Result<Response, NgError> {
        self.ask(|reply| Cmd::Request { req, target, reply })
            .await?
    }

    /// `ping` to one instance.
    pub async fn ping(&self, instance: InstanceId) -> Result<Response, NgError> {
        self.request(request::ping(), Target::Instance(instance))
            .await
    }

    /// `offer`; the rewritten SDP is in [`Response::sdp`].
    pub async fn offer(&self, req: &MediaRequest, target: Target) -> Result<Response, NgError> {
        self.request(req.offer(), target).await
    }

    /// `answer`; the rewritten SDP is in [`Response::sdp`].
    pub async fn answer(&self, req: &MediaRequest, target: Target) -> Result<Response, NgError> {
        self.request(req.answer(), target).await
    }

    /// `delete`; the reply carries the call's final statistics ([`Reply::call_stats`]).
    pub async fn delete(&self, call: &CallRef, target: Target) -> Result<Response, NgError> {
        self.request(call.delete(), target).await
    }

    /// `query`; see [`Reply::call_stats`].
    pub async fn query(&self, call: &CallRef, target: Target) -> Result<Response, NgError> {
        self.request(call.query(), target).await
    }

    /// `list`: the call-ids an instance holds (at most `limit`, rtpengine's default 32).
    pub async fn list(
        &self,
        instance: InstanceId,
        limit: Option<u64>,
    ) -> Result<Vec<String>, NgError> {
        let r = self
            .request(request::list(limit), Target::Instance(instance))
            .await?;
        Ok(r.reply.calls())
    }

    /// `statistics` of one instance; see [`Reply::statistics`].
    pub async fn statistics(&self, instance: InstanceId) -> Result<Reply, NgError> {
        let r = self
            .request(request::statistics(), Target::Instance(instance))
            .await?;
        Ok(r.reply)
    }

    /// State of every instance.
    pub async fn instances(&self) -> Result<Vec<InstanceStatus>, NgError> {
        self.ask(Cmd::Instances).await
    }

    /// Counters so far.
    pub async fn metrics(&self) -> Result<MetricsSnapshot, NgError> {
        self.ask(Cmd::Metrics).await
    }

    /// The instance remembered for a call.
    pub async fn call_instance(&self, call_id: &str) -> Result<Option<InstanceId>, NgError> {
        let call = call_id.to_owned();
        self.ask(|r| Cmd::CallInstance(call, r)).await
    }

    /// Remembers a call's instance (e.g. restored from storage).
    pub async fn bind_call(&self, call_id: &str, instance: InstanceId) -> Result<(), NgError> {
        let call = call_id.to_owned();
        self.ask(|r| Cmd::BindCall(call, instance, r)).await?
    }

    /// Forgets a call's instance.
    pub fn forget_call(&self, call_id: &str) -> Result<(), NgError> {
        self.tx
            .send(Cmd::ForgetCall(call_id.to_owned()))
            .map_err(|_| NgError::Closed)
    }
}

/// Maps a v4 destination for a v6 (dual-stack) socket.
fn dest_for(socket_v6: bool, dest: SocketAddr) -> SocketAddr {
    match (socket_v6, dest.ip()) {
        (true, IpAddr::V4(v4)) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), dest.port()),
        _ => dest,
    }
}

async fn run(socket: UdpSocket, mut core: Core, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let socket_v6 = socket.local_addr().is_ok_and(|a| a.is_ipv6());
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut waiters: HashMap<OpId, Reply1<Result<Response, NgError>>> = HashMap::new();
    loop {
        while let Some(t) = core.poll_transmit() {
            if let Err(e) = socket
                .send_to(&t.payload, dest_for(socket_v6, t.dest))
                .await
            {
                // Treated like a lost datagram: the retry timer covers it.
                tracing::debug!(dest = %t.dest, error = %e, "ng send failed");
            }
        }
        while let Some(done) = core.poll_event() {
            if let Some(w) = waiters.remove(&done.op) {
                // The caller may have given up (dropped its future); nothing to do then.
                let _ = w.send(done.result);
            }
        }
        let deadline = core.poll_timeout();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    if let Some(dg) = buf.get(..n) {
                        core.handle_datagram(Instant::now(), from, dg);
                    }
                }
                Err(e) => tracing::debug!(error = %e, "ng recv failed"),
            },
            cmd = rx.recv() => match cmd {
                None => break,
                Some(cmd) => handle_cmd(&mut core, &mut waiters, cmd),
            },
            () = sleep => core.handle_timeout(Instant::now()),
        }
    }
}

fn handle_cmd(
    core: &mut Core,
    waiters: &mut HashMap<OpId, Reply1<Result<Response, NgError>>>,
    cmd: Cmd,
) {
    match cmd {
        Cmd::Request { req, target, reply } => match core.submit(Instant::now(), &req, target) {
            Ok(op) => {
                waiters.insert(op, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        },
        Cmd::Instances(r) => {
            let _ = r.send(core.instances());
        }
        Cmd::Metrics(r) => {
            let _ = r.send(core.metrics());
        }
        Cmd::CallInstance(call, r) => {
            let _ = r.send(core.call_instance(&call));
        }
        Cmd::BindCall(call, id, r) => {
            let _ = r.send(core.bind_call(&call, id));
        }
        Cmd::ForgetCall(call) => {
            core.forget_call(&call);
        }
    }
}
