//! Starts the listeners the configuration asks for and wires them to the
//! SIP layer.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::transport::{Handler, Transports, udp, ws};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listen address could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which listener.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// WSS is configured but no TLS configuration was given.
    #[error("websocket.wss_listen is set but no TLS certificate is loaded")]
    NoTls,
}

/// The addresses actually bound (ports resolved).
#[derive(Debug, Clone, Default)]
pub struct Bound {
    /// UDP sockets.
    pub udp: Vec<SocketAddr>,
    /// WSS listeners.
    pub wss: Vec<SocketAddr>,
    /// Plain WS listeners.
    pub ws: Vec<SocketAddr>,
}

/// A running set of listeners.
pub struct Server {
    /// Bound UDP addresses (ports resolved when 0 was asked for).
    pub udp_addrs: Vec<SocketAddr>,
    /// Bound WSS addresses.
    pub wss_addrs: Vec<SocketAddr>,
    /// Bound plain WS addresses.
    pub ws_addrs: Vec<SocketAddr>,
    /// The send side of the transports.
    pub transports: Transports,
    tasks: Vec<JoinHandle<()>>,
    /// The WebSocket/HTTP accept loops (stopped first when draining).
    accept_tasks: Vec<JoinHandle<()>>,
}

impl Server {
    /// Binds every configured listener and starts serving. `make_handler`
    /// builds the SIP layer once the transports exist (it needs them to send).
    /// `limiter` guards the receive paths (flood limits).
    pub async fn start(
        config: &Config,
        tls: Option<Arc<rustls::ServerConfig>>,
        web_root: Option<PathBuf>,
        limiter: Arc<crate::limits::Limiter>,
        make_handler: impl FnOnce(Transports, &Bound) -> Arc<dyn Handler>,
    ) -> Result<Self, StartError> {
        let transports = Transports::with_limiter(limiter);
        let mut udp_sockets = Vec::new();
        for &addr in &config.sip.udp_listen {
            let socket = udp::bind(addr).map_err(|source| StartError::Bind {
                addr,
                what: "SIP UDP",
                source,
            })?;
            udp_sockets.push(Arc::new(socket));
        }
        let mut listeners = Vec::new();
        for (&addr, secure) in config
            .websocket
            .wss_listen
            .iter()
            .map(|a| (a, true))
            .chain(config.websocket.ws_listen.iter().map(|a| (a, false)))
        {
            let what = if secure { "WSS/HTTPS" } else { "WS/HTTP" };
            let listener =
                bind_tcp(addr).map_err(|source| StartError::Bind { addr, what, source })?;
            listeners.push((listener, secure));
        }
        let acceptor = match (&tls, listeners.iter().any(|(_, s)| *s)) {
            (Some(cfg), _) => Some(tokio_rustls::TlsAcceptor::from(cfg.clone())),
            (None, true) => return Err(StartError::NoTls),
            (None, false) => None,
        };

        for s in &udp_sockets {
            transports.add_udp(s.clone());
        }
        let bound = Bound {
            udp: udp_sockets
                .iter()
                .filter_map(|s| s.local_addr().ok())
                .collect(),
            wss: listeners
                .iter()
                .filter(|(_, s)| *s)
                .filter_map(|(l, _)| l.local_addr().ok())
                .collect(),
            ws: listeners
                .iter()
                .filter(|(_, s)| !*s)
                .filter_map(|(l, _)| l.local_addr().ok())
                .collect(),
        };
        let handler = make_handler(transports.clone(), &bound);
        let settings = Arc::new(ws::ListenerSettings {
            ws: config.websocket.clone(),
            server_header: config.general.server_header.clone(),
            web_root,
        });
        let mut server = Server {
            udp_addrs: Vec::new(),
            wss_addrs: Vec::new(),
            ws_addrs: Vec::new(),
            transports: transports.clone(),
            tasks: Vec::new(),
            accept_tasks: Vec::new(),
        };
        for socket in udp_sockets {
            if let Ok(a) = socket.local_addr() {
                server.udp_addrs.push(a);
                tracing::info!(addr = %a, "SIP UDP listening");
            }
            server.tasks.push(tokio::spawn(udp::run(
                socket,
                transports.clone(),
                handler.clone(),
                config.sip.max_udp_message_size,
                config.general.server_header.clone(),
            )));
        }
        for (listener, secure) in listeners {
            if let Ok(a) = listener.local_addr() {
                if secure {
                    server.wss_addrs.push(a);
                    tracing::info!(addr = %a, "SIP WSS and HTTPS listening");
                } else {
                    server.ws_addrs.push(a);
                    tracing::info!(addr = %a, "SIP WS and HTTP listening");
                }
            }
            let tls = if secure { acceptor.clone() } else { None };
            server.accept_tasks.push(tokio::spawn(ws::run(
                listener,
                tls,
                settings.clone(),
                transports.clone(),
                handler.clone(),
            )));
        }
        Ok(server)
    }

    /// Closes the WebSocket/HTTP listening sockets; open connections and
    /// UDP keep working (the first step of a graceful shutdown).
    pub fn stop_accepting(&mut self) {
        for t in self.accept_tasks.drain(..) {
            t.abort();
        }
    }

    /// Stops every listener task.
    pub fn shutdown(mut self) {
        self.stop_accepting();
        for t in self.tasks {
            t.abort();
        }
    }
}

fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}
