//! Transports: SIP over UDP and over WebSocket (RFC 7118), behind one
//! handle the SIP layer uses to send, and one trait it implements to receive.
//!
//! A WebSocket connection is a *flow*: an id the SIP layer can address later
//! (a browser's Contact is unroutable, so requests to it go down the flow it
//! registered on). UDP has no flows; a UDP destination is an address.

pub mod http;
pub mod udp;
pub mod ws;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::sip::Checked;

/// Identifies one WebSocket connection for its whole life; never reused.
pub type FlowId = u64;

/// Which transport a message travels over, as SIP names it in Via.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// SIP over UDP.
    Udp,
    /// SIP over plain WebSocket.
    Ws,
    /// SIP over WebSocket over TLS.
    Wss,
}

impl Kind {
    /// Whether the transport is reliable (no SIP retransmissions over it).
    pub fn reliable(self) -> bool {
        !matches!(self, Kind::Udp)
    }

    /// The Via transport token.
    pub fn via_token(self) -> &'static str {
        match self {
            Kind::Udp => "UDP",
            Kind::Ws => "WS",
            Kind::Wss => "WSS",
        }
    }
}

/// Where a message came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// A UDP datagram received on `local` from `peer`.
    Udp {
        /// Our socket's address.
        local: SocketAddr,
        /// The sender.
        peer: SocketAddr,
    },
    /// A WebSocket message on a flow.
    Ws {
        /// The flow.
        flow: FlowId,
        /// The remote TCP address.
        peer: SocketAddr,
        /// Whether the connection is TLS.
        secure: bool,
    },
}

impl Source {
    /// The remote address.
    pub fn peer(&self) -> SocketAddr {
        match self {
            Source::Udp { peer, .. } | Source::Ws { peer, .. } => *peer,
        }
    }

    /// The transport kind.
    pub fn kind(&self) -> Kind {
        match self {
            Source::Udp { .. } => Kind::Udp,
            Source::Ws { secure: true, .. } => Kind::Wss,
            Source::Ws { secure: false, .. } => Kind::Ws,
        }
    }

    /// Where to send a reply to this message.
    pub fn reply_to(&self) -> Destination {
        match self {
            Source::Udp { peer, .. } => Destination::Udp(*peer),
            Source::Ws { flow, .. } => Destination::Flow(*flow),
        }
    }
}

/// Where to send a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Destination {
    /// A UDP address.
    Udp(SocketAddr),
    /// An open WebSocket flow.
    Flow(FlowId),
}

/// Why a message could not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The flow is closed (RFC 5626: the proxy answers 430 Flow Failed).
    #[error("flow {0} is gone")]
    FlowGone(FlowId),
    /// The flow's send queue is full; the connection is being closed.
    #[error("flow {0} is not draining its queue")]
    FlowStuck(FlowId),
    /// No UDP socket of the destination's address family.
    #[error("no UDP socket for {0}")]
    NoUdpSocket(SocketAddr),
    /// The OS refused the datagram.
    #[error("UDP send to {0} failed: {1}")]
    Udp(SocketAddr, String),
}

/// What the SIP layer implements to receive from the transports.
pub trait Handler: Send + Sync + 'static {
    /// A message that passed the parse and sanity checks.
    fn on_message(&self, source: Source, msg: Checked);
    /// A flow closed (either side, any reason).
    fn on_flow_closed(&self, _flow: FlowId) {}
}

/// Counters the transports keep (read by metrics and tests).
#[derive(Debug, Default)]
pub struct Counters {
    /// Messages refused by the parser (answered 400 or dropped).
    pub malformed: AtomicU64,
    /// Malformed messages dropped without an answer.
    pub dropped: AtomicU64,
    /// CRLF keepalives seen.
    pub keepalives: AtomicU64,
    /// WebSocket upgrades refused.
    pub upgrades_refused: AtomicU64,
    /// Connections refused by per-IP or total limits.
    pub connections_refused: AtomicU64,
    /// WebSocket flows opened (upgrades accepted).
    pub flows_opened: AtomicU64,
    /// Connections closed because the TLS or HTTP handshake did not finish
    /// within `websocket.handshake_timeout_ms`.
    pub handshake_timeouts: AtomicU64,
    /// Messages refused for their size (513 over UDP, close 1009 over WS).
    pub oversize: AtomicU64,
}

pub(crate) struct FlowEntry {
    pub(crate) tx: mpsc::Sender<Bytes>,
    pub(crate) peer: SocketAddr,
}

/// The send side of all transports; cheap to clone.
#[derive(Clone)]
pub struct Transports {
    inner: Arc<Inner>,
}

struct Inner {
    /// Each socket with its bound address (asked once: `getsockname` per send showed
    /// up in profiles).
    udp: Mutex<Vec<(SocketAddr, Arc<tokio::net::UdpSocket>)>>,
    flows: Mutex<HashMap<FlowId, FlowEntry>>,
    /// Open connections per source IP, and in total.
    per_ip: Mutex<(HashMap<IpAddr, usize>, usize)>,
    next_flow: AtomicU64,
    counters: Counters,
    limiter: Arc<crate::limits::Limiter>,
}

impl Default for Transports {
    fn default() -> Self {
        Self::new()
    }
}

impl Transports {
    /// An empty set of transports without flood limits.
    pub fn new() -> Self {
        Self::with_limiter(Arc::new(crate::limits::Limiter::disabled()))
    }

    /// An empty set of transports whose receive paths consult `limiter`.
    pub fn with_limiter(limiter: Arc<crate::limits::Limiter>) -> Self {
        Self {
            inner: Arc::new(Inner {
                udp: Mutex::new(Vec::new()),
                flows: Mutex::new(HashMap::new()),
                per_ip: Mutex::new((HashMap::new(), 0)),
                next_flow: AtomicU64::new(1),
                counters: Counters::default(),
                limiter,
            }),
        }
    }

    /// Transport counters.
    pub fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    /// The flood limiter of the receive paths.
    pub fn limiter(&self) -> &crate::limits::Limiter {
        &self.inner.limiter
    }

    /// Number of open flows.
    pub fn flow_count(&self) -> usize {
        lock(&self.inner.flows).len()
    }

    /// Whether a flow is open.
    pub fn flow_alive(&self, flow: FlowId) -> bool {
        lock(&self.inner.flows).contains_key(&flow)
    }

    /// The ids of the open flows.
    pub fn flow_ids(&self) -> Vec<FlowId> {
        lock(&self.inner.flows).keys().copied().collect()
    }

    /// Closes a flow from our side: the connection sends a WebSocket close
    /// 1001 (Going Away) once its queue is flushed. True if it was open.
    pub fn close_flow(&self, flow: FlowId) -> bool {
        // Dropping the sender ends the flow task's queue, which it answers
        // with the close frame.
        lock(&self.inner.flows).remove(&flow).is_some()
    }

    /// The remote address of an open flow.
    pub fn flow_peer(&self, flow: FlowId) -> Option<SocketAddr> {
        lock(&self.inner.flows).get(&flow).map(|f| f.peer)
    }

    /// Sends one SIP message.
    pub fn send(&self, dest: Destination, data: Bytes) -> Result<(), SendError> {
        match dest {
            Destination::Udp(addr) => self.send_udp(addr, &data),
            Destination::Flow(flow) => {
                let tx = lock(&self.inner.flows)
                    .get(&flow)
                    .map(|f| f.tx.clone())
                    .ok_or(SendError::FlowGone(flow))?;
                tx.try_send(data).map_err(|e| match e {
                    mpsc::error::TrySendError::Full(_) => SendError::FlowStuck(flow),
                    mpsc::error::TrySendError::Closed(_) => SendError::FlowGone(flow),
                })
            }
        }
    }

    fn send_udp(&self, addr: SocketAddr, data: &[u8]) -> Result<(), SendError> {
        let socket = self
            .udp_socket_for(addr)
            .ok_or(SendError::NoUdpSocket(addr))?;
        match socket.try_send_to(data, addr) {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // The kernel buffer is full: hand the datagram to a task
                // rather than block the caller.
                let data = data.to_vec();
                tokio::spawn(async move {
                    if let Err(e) = socket.send_to(&data, addr).await {
                        tracing::warn!(%addr, error = %e, "UDP send failed");
                    }
                });
                Ok(())
            }
            Err(e) => Err(SendError::Udp(addr, e.to_string())),
        }
    }

    /// The UDP socket to send to `addr` from (same address family; loopback
    /// to loopback when possible).
    pub fn udp_socket_for(&self, addr: SocketAddr) -> Option<Arc<tokio::net::UdpSocket>> {
        self.udp_pick(addr).map(|(_, s)| s)
    }

    fn udp_pick(&self, addr: SocketAddr) -> Option<(SocketAddr, Arc<tokio::net::UdpSocket>)> {
        let sockets = lock(&self.inner.udp);
        let same_family =
            |(l, _): &&(SocketAddr, Arc<tokio::net::UdpSocket>)| l.is_ipv4() == addr.is_ipv4();
        sockets
            .iter()
            .filter(same_family)
            .find(|(l, _)| l.ip().is_loopback() == addr.ip().is_loopback())
            .or_else(|| sockets.iter().find(same_family))
            .cloned()
    }

    /// The local address of the UDP socket used toward `addr`.
    pub fn udp_local_for(&self, addr: SocketAddr) -> Option<SocketAddr> {
        self.udp_pick(addr).map(|(l, _)| l)
    }

    pub(crate) fn add_udp(&self, socket: Arc<tokio::net::UdpSocket>) {
        // A socket whose address cannot be read cannot be chosen by family either.
        if let Ok(local) = socket.local_addr() {
            lock(&self.inner.udp).push((local, socket));
        }
    }

    /// Reserves a connection slot for `ip`; `None` when a limit is reached.
    pub(crate) fn admit(&self, ip: IpAddr, per_ip: usize, total: usize) -> Option<ConnSlot> {
        let mut guard = lock(&self.inner.per_ip);
        let (map, all) = &mut *guard;
        if *all >= total {
            drop(guard);
            self.inner
                .counters
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let n = map.entry(ip).or_insert(0);
        if *n >= per_ip {
            self.inner
                .counters
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *n += 1;
        *all += 1;
        Some(ConnSlot {
            transports: self.clone(),
            ip,
        })
    }

    pub(crate) fn register_flow(
        &self,
        peer: SocketAddr,
        queue: usize,
    ) -> (FlowId, mpsc::Receiver<Bytes>) {
        let id = self.inner.next_flow.fetch_add(1, Ordering::Relaxed);
        self.inner
            .counters
            .flows_opened
            .fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(queue);
        lock(&self.inner.flows).insert(id, FlowEntry { tx, peer });
        (id, rx)
    }

    pub(crate) fn unregister_flow(&self, flow: FlowId) {
        lock(&self.inner.flows).remove(&flow);
    }
}

/// A held connection slot; released on drop.
pub(crate) struct ConnSlot {
    transports: Transports,
    ip: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut guard = lock(&self.transports.inner.per_ip);
        let (map, all) = &mut *guard;
        *all = all.saturating_sub(1);
        if let Some(n) = map.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Locks a mutex, recovering from poisoning (a panicked holder cannot leave
/// these maps half-updated: every critical section is a single map call).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// True for a CRLF keepalive ("\r\n\r\n" ping or "\r\n" pong, RFC 5626 §3.5.1).
pub fn is_keepalive(data: &[u8]) -> bool {
    !data.is_empty() && data.len() <= 4 && data.iter().all(|b| *b == b'\r' || *b == b'\n')
}
