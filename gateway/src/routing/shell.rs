//! The tokio shell: one task sends the prober's OPTIONS over a UDP socket of
//! its own and feeds the answers back; a cloneable [`RoutingHandle`] lets the
//! proxy route calls, report failures and reload the configuration.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::config::{RoutingConfig, RoutingConfigError};
use super::health::{DestinationStatus, Probe, ProbeOutcome};
use super::table::{CallFailure, Failover, PbxRoute, RouteOutcome, RouteQuery, RoutingTable};

/// Why the routing service could not start.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] RoutingConfigError),
    /// The probe socket could not be bound.
    #[error("cannot bind the probe socket on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Where probes come from.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// The probe socket's address (`0.0.0.0:0` lets the OS choose).
    pub bind: SocketAddr,
    /// Host for the From URI (`sip:rtcgate@HOST`); the socket's IP when absent.
    pub from_host: Option<String>,
}

impl Default for ProbeOptions {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            from_host: None,
        }
    }
}

struct Shared {
    table: Mutex<RoutingTable>,
    wake: Notify,
}

/// A cheap, cloneable handle on the routing table.
#[derive(Clone)]
pub struct RoutingHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RoutingHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoutingHandle").finish_non_exhaustive()
    }
}

impl RoutingHandle {
    /// A handle on `table` without a probe task (probing off, or tests);
    /// [`RoutingService::start`] gives one that probes.
    pub fn new(table: RoutingTable) -> Self {
        Self {
            shared: Arc::new(Shared {
                table: Mutex::new(table),
                wake: Notify::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RoutingTable> {
        // The table holds no invariant a panicking holder could break halfway.
        self.shared
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Routes a call (see [`RoutingTable::route`]).
    pub fn route(&self, query: &RouteQuery<'_>) -> RouteOutcome {
        self.lock().route(query, Instant::now())
    }

    /// Continues routing after a `Local` outcome that found nobody.
    pub fn route_from(&self, query: &RouteQuery<'_>, resume: usize) -> RouteOutcome {
        self.lock().route_from(query, resume, Instant::now())
    }

    /// Serial failover (see [`RoutingTable::next_after_failure`]).
    pub fn next_after_failure(
        &self,
        route: &PbxRoute,
        failed: SocketAddr,
        failure: CallFailure,
    ) -> Failover {
        self.lock()
            .next_after_failure(route, failed, failure, Instant::now())
    }

    /// The set trusting `ip`, if any.
    pub fn is_trusted(&self, ip: IpAddr) -> Option<String> {
        self.lock().is_trusted(ip).map(str::to_owned)
    }

    /// Every destination's health.
    pub fn states(&self) -> Vec<DestinationStatus> {
        self.lock().states()
    }

    /// Every set with its destinations' health (admin view).
    pub fn view(&self) -> Vec<super::table::SetView> {
        self.lock().view()
    }

    /// Swaps rules and sets atomically (health of kept destinations kept);
    /// on error the old configuration stays.
    pub fn reload(&self, config: &RoutingConfig) -> Result<(), RoutingConfigError> {
        self.lock().reload(config, Instant::now())?;
        self.shared.wake.notify_one();
        tracing::info!(
            sets = config.sets.len(),
            rules = config.rules.len(),
            "routing reloaded"
        );
        Ok(())
    }

    /// Runs `f` on the table (tests, admin).
    pub fn with_table<R>(&self, f: impl FnOnce(&mut RoutingTable) -> R) -> R {
        f(&mut self.lock())
    }
}

/// The routing table plus its probe task; dropping it stops probing.
pub struct RoutingService {
    handle: RoutingHandle,
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl RoutingService {
    /// Compiles `config`, binds the probe socket and starts probing.
    pub async fn start(
        config: &RoutingConfig,
        options: ProbeOptions,
    ) -> Result<Self, RoutingError> {
        let table = RoutingTable::new(config, Instant::now())?;
        let socket = UdpSocket::bind(options.bind)
            .await
            .map_err(|source| RoutingError::Bind {
                addr: options.bind,
                source,
            })?;
        let local = socket.local_addr().map_err(|source| RoutingError::Bind {
            addr: options.bind,
            source,
        })?;
        let shared = Arc::new(Shared {
            table: Mutex::new(table),
            wake: Notify::new(),
        });
        let handle = RoutingHandle {
            shared: shared.clone(),
        };
        let task = tokio::spawn(probe_loop(shared, socket, local, options.from_host));
        tracing::info!(%local, "routing: probing PBX destinations");
        Ok(Self {
            handle,
            local,
            task,
        })
    }

    /// A handle for the proxy, the admin API and SIGHUP.
    pub fn handle(&self) -> RoutingHandle {
        self.handle.clone()
    }

    /// The probe socket's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for RoutingService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Pending {
    dest: SocketAddr,
    id: u64,
    deadline: Instant,
}

async fn probe_loop(
    shared: Arc<Shared>,
    socket: UdpSocket,
    local: SocketAddr,
    from_host: Option<String>,
) {
    let handle = RoutingHandle { shared };
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut buf = vec![0u8; 65_535];
    let seed: u64 = rand::random();
    let mut via_ips: HashMap<SocketAddr, IpAddr> = HashMap::new();
    loop {
        let now = Instant::now();
        let (probes, deadline) = handle.with_table(|t| {
            let p = t.prober();
            p.handle_timeout(now);
            let mut due = Vec::new();
            while let Some(probe) = p.poll_probe(now) {
                due.push(probe);
            }
            (due, p.next_deadline())
        });
        pending.retain(|_, p| p.deadline + Duration::from_secs(1) > now);
        for probe in probes {
            let call_id = format!("{seed:016x}-{}@rtcgate.probe", probe.id);
            let via_ip = *via_ips
                .entry(probe.dest)
                .or_insert_with(|| source_ip_toward(local, probe.dest));
            let msg = options_request(
                &probe,
                &call_id,
                seed,
                SocketAddr::new(via_ip, local.port()),
                from_host.as_deref(),
            );
            tracing::trace!(dest = %probe.dest, %call_id, "probe");
            if let Err(e) = socket.send_to(msg.as_bytes(), probe.dest).await {
                tracing::debug!(dest = %probe.dest, error = %e, "probe send failed");
                handle.with_table(|t| {
                    t.prober().probe_result(
                        Instant::now(),
                        probe.dest,
                        probe.id,
                        ProbeOutcome::Timeout,
                    )
                });
                continue;
            }
            pending.insert(
                call_id,
                Pending {
                    dest: probe.dest,
                    id: probe.id,
                    deadline: probe.deadline,
                },
            );
        }
        let wait = deadline
            .map_or(Duration::from_secs(1), |d| {
                d.saturating_duration_since(Instant::now())
            })
            .min(Duration::from_secs(1));
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    let Some((code, call_id)) = buf.get(..n).and_then(parse_reply) else {
                        tracing::debug!(%from, "probe socket: not an OPTIONS reply");
                        continue;
                    };
                    if code < 200 {
                        continue;
                    }
                    if let Some(p) = pending.remove(call_id) {
                        tracing::trace!(dest = %p.dest, code, "probe reply");
                        handle.with_table(|t| {
                            t.prober().probe_result(Instant::now(), p.dest, p.id, ProbeOutcome::Reply(code))
                        });
                    }
                }
                // ICMP port unreachable shows up here on some systems; the
                // probe's timeout counts it.
                Err(e) => tracing::trace!(error = %e, "probe socket receive"),
            },
            _ = tokio::time::sleep(wait) => {}
            _ = handle.shared.wake.notified() => {}
        }
    }
}

/// Our IP as `dest` sees it: the socket's own unless it is a wildcard.
fn source_ip_toward(local: SocketAddr, dest: SocketAddr) -> IpAddr {
    if !local.ip().is_unspecified() {
        return local.ip();
    }
    let probe = || -> std::io::Result<IpAddr> {
        let bind: SocketAddr = if dest.is_ipv4() {
            SocketAddr::from(([0, 0, 0, 0], 0))
        } else {
            SocketAddr::from(([0u16; 8], 0))
        };
        let s = std::net::UdpSocket::bind(bind)?;
        s.connect(dest)?;
        Ok(s.local_addr()?.ip())
    };
    probe().unwrap_or_else(|_| local.ip())
}

fn host_of(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// A minimal out-of-dialog OPTIONS (RFC 3261 §11) with a unique branch and Call-ID.
pub(crate) fn options_request(
    probe: &Probe,
    call_id: &str,
    seed: u64,
    via: SocketAddr,
    from_host: Option<&str>,
) -> String {
    let dest = host_of(probe.dest);
    let via = host_of(via);
    let from_host = from_host.map_or_else(|| via.clone(), str::to_owned);
    let id = probe.id;
    format!(
        "OPTIONS sip:{dest} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {via};branch=z9hG4bK.rtp{seed:08x}{id:x};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:rtcgate@{from_host}>;tag=rtp{seed:x}\r\n\
         To: <sip:{dest}>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Accept: application/sdp\r\n\
         User-Agent: rtcgate\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The status code and Call-ID of a response to an OPTIONS, or `None`.
pub(crate) fn parse_reply(data: &[u8]) -> Option<(u16, &str)> {
    let text = std::str::from_utf8(data).ok()?;
    let head = text.split("\r\n\r\n").next()?;
    let mut lines = head.split("\r\n").map(|l| l.trim_end_matches('\n'));
    let status = lines.next()?;
    let mut parts = status.splitn(3, ' ');
    if parts.next()? != "SIP/2.0" {
        return None;
    }
    let code: u16 = parts
        .next()?
        .parse()
        .ok()
        .filter(|c| (100..700).contains(c))?;
    let mut call_id = None;
    let mut is_options = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("call-id") || name.eq_ignore_ascii_case("i") {
            call_id = Some(value.trim());
        } else if name.eq_ignore_ascii_case("cseq") {
            is_options = value
                .split_whitespace()
                .nth(1)
                .is_some_and(|m| m.eq_ignore_ascii_case("OPTIONS"));
        }
    }
    if !is_options {
        return None;
    }
    Some((code, call_id?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_and_parses() {
        let probe = Probe {
            dest: SocketAddr::from(([127, 0, 0, 1], 5080)),
            id: 7,
            deadline: Instant::now(),
        };
        let msg = options_request(
            &probe,
            "abc@x",
            0x1234,
            SocketAddr::from(([127, 0, 0, 1], 4000)),
            None,
        );
        assert!(msg.starts_with("OPTIONS sip:127.0.0.1:5080 SIP/2.0\r\n"));
        assert!(msg.contains("Call-ID: abc@x\r\n"));
        assert!(msg.contains("Via: SIP/2.0/UDP 127.0.0.1:4000;branch=z9hG4bK.rtp"));
        let parsed = crate::sip::parse(msg.as_bytes(), 65_535);
        assert!(parsed.is_ok(), "our OPTIONS must parse");
        let reply =
            "SIP/2.0 200 OK\r\nVia: x\r\ni: abc@x\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_reply(reply.as_bytes()), Some((200, "abc@x")));
        let invite = "SIP/2.0 200 OK\r\nCall-ID: abc@x\r\nCSeq: 1 INVITE\r\n\r\n";
        assert_eq!(parse_reply(invite.as_bytes()), None);
        assert_eq!(parse_reply(b"OPTIONS sip:x SIP/2.0\r\n\r\n"), None);
        assert_eq!(parse_reply(&[0xff, 0xfe]), None);
        assert_eq!(parse_reply(b"SIP/2.0 99999 X\r\n\r\n"), None);
    }
}
