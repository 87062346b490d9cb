//! SIP over UDP: one socket per listen address, a receive loop that checks
//! the sender against the flood limits, parses and checks each datagram and
//! hands it to the SIP layer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::UdpSocket;

use super::{Handler, Source, Transports, is_keepalive};
use crate::limits::{BanAction, Outcome, shed_reply};
use crate::sip;

/// Binds a UDP socket with generous kernel buffers (SIP bursts at call peaks).
pub fn bind(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Keep [::] from also taking the IPv4 port: v4 gets its own socket.
        socket.set_only_v6(true)?;
    }
    // Best effort: the kernel caps these at net.core.[rw]mem_max.
    let _ = socket.set_recv_buffer_size(4 * 1024 * 1024);
    let _ = socket.set_send_buffer_size(4 * 1024 * 1024);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Runs the receive loop of one socket until the task is aborted.
pub async fn run(
    socket: Arc<UdpSocket>,
    transports: Transports,
    handler: Arc<dyn Handler>,
    max_size: usize,
    server_header: String,
) {
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "UDP socket has no local address");
            return;
        }
    };
    // One byte more than the limit, to tell "exactly max" from "too large".
    let mut buf = vec![0u8; max_size.saturating_add(1).min(65_536)];
    loop {
        let (n, peer) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP port unreachable from an earlier send shows up here on
                // some systems; it is not fatal for the socket.
                tracing::debug!(%local, error = %e, "UDP receive error");
                continue;
            }
        };
        let data = &buf[..n];
        // Flood limit first: a banned source costs one map lookup.
        let limiter = transports.limiter();
        if let Outcome::Shed { retry_after_s, .. } = limiter.check_udp(peer.ip()) {
            if limiter.action() == BanAction::Reply
                && !is_keepalive(data)
                && let Some(reply) = shed_reply(data, max_size, retry_after_s, &server_header)
            {
                let _ = socket.try_send_to(&reply, peer);
            }
            continue;
        }
        if is_keepalive(data) {
            transports
                .counters()
                .keepalives
                .fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match sip::parse(data, max_size) {
            Ok(msg) => handler.on_message(Source::Udp { local, peer }, msg),
            Err(refused) => {
                let counters = transports.counters();
                counters.malformed.fetch_add(1, Ordering::Relaxed);
                if refused.error.status() == 513 {
                    counters.oversize.fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!(%peer, reason = %refused.error, "malformed SIP over UDP");
                match refused.reply_headers {
                    Some(lines) => {
                        let reply = sip::error_from_raw(
                            refused.error.status(),
                            &lines,
                            &refused.error.to_string(),
                            &server_header,
                        );
                        let _ = socket.try_send_to(&reply, peer);
                    }
                    None => {
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }
}
