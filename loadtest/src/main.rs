//! `rtcgate-load`: simulates browsers over SIP-over-WebSocket (sipp has no
//! WebSocket transport). N connections (ramped, from several source
//! addresses), digest REGISTER, then calls with a WebRTC offer at a target
//! rate, hold, BYE; a live progress line; a report with latency percentiles
//! and, with `--target-pid`, the CPU and memory of the system under test.
//!
//! Exit code: 0 when nothing failed, 1 when something did, 2 on bad usage.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use loadtest::procfs;
use loadtest::report::{Point, Report, Target};
use loadtest::stats::Counters;
use loadtest::ua::{Command, Ua, UaConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::sync::{Semaphore, mpsc};

#[derive(Parser, Debug, Clone)]
#[command(
    version,
    about = "SIP-over-WebSocket browser load generator for rtcgate"
)]
struct Args {
    /// WebSocket URL of the gateway, e.g. wss://127.0.0.1:8443/ (ws:// too).
    #[arg(long)]
    url: String,
    /// CA certificate (PEM) that signed the gateway's certificate (wss).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// TLS server name to check (default: the URL's host).
    #[arg(long)]
    server_name: Option<String>,
    /// Origin header of the upgrade.
    #[arg(long, default_value = "https://127.0.0.1")]
    origin: String,
    /// SIP domain of the users.
    #[arg(long, default_value = "127.0.0.1")]
    domain: String,
    /// First user name (users are FIRST, FIRST+1, ...).
    #[arg(long, default_value_t = 2000)]
    first_user: u64,
    /// Password of every user.
    #[arg(long, default_value = "s3cret")]
    password: String,
    /// Number of connections (browsers).
    #[arg(short = 'n', long, default_value_t = 10)]
    connections: usize,
    /// New connections per second during the ramp-up.
    #[arg(long, default_value_t = 500.0)]
    ramp: f64,
    /// At most this many connections being opened/registered at once.
    #[arg(long, default_value_t = 200)]
    max_pending: usize,
    /// Source addresses to spread connections over: a list (a,b,c) or a
    /// range (127.0.1.1-127.0.1.40). Default: the kernel's choice.
    #[arg(long)]
    source_ips: Option<String>,
    /// Connect without registering.
    #[arg(long)]
    no_register: bool,
    /// Stay connected and idle this long after the ramp (memory reading).
    #[arg(long, default_value_t = 0.0)]
    idle_s: f64,
    /// Calls to place in total (0: none).
    #[arg(short = 'm', long, default_value_t = 0)]
    calls: u64,
    /// Calls per second.
    #[arg(short = 'r', long, default_value_t = 10.0)]
    rate: f64,
    /// Hold time per call, milliseconds.
    #[arg(short = 'd', long, default_value_t = 1000)]
    hold_ms: u64,
    /// User part to call (an extension routed to the PBX).
    #[arg(long, default_value = "1001")]
    callee: String,
    /// After the calls, stay registered this long answering calls from the
    /// far end (a PBX calling browsers).
    #[arg(long, default_value_t = 0.0)]
    linger_s: f64,
    /// Registration lifetime asked for.
    #[arg(long, default_value_t = 3600)]
    expires: u32,
    /// Wait at most this long for any final response, milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Process to measure (CPU and RSS of it and its descendants); repeat
    /// for several.
    #[arg(long)]
    target_pid: Vec<u32>,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the SVG chart here.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// No live progress line.
    #[arg(long)]
    quiet: bool,
}

fn parse_ips(spec: &str) -> Result<Vec<IpAddr>, String> {
    if let Some((a, b)) = spec.split_once('-') {
        let first: std::net::Ipv4Addr = a.trim().parse().map_err(|_| format!("bad address {a}"))?;
        let last: std::net::Ipv4Addr = if b.contains('.') {
            b.trim().parse().map_err(|_| format!("bad address {b}"))?
        } else {
            let o = first.octets();
            let n: u8 = b
                .trim()
                .parse()
                .map_err(|_| format!("bad last octet {b}"))?;
            std::net::Ipv4Addr::new(o[0], o[1], o[2], n)
        };
        let (lo, hi) = (u32::from(first), u32::from(last));
        if hi < lo || hi - lo > 65_535 {
            return Err(format!("bad range {spec}"));
        }
        return Ok((lo..=hi).map(|v| IpAddr::V4(v.into())).collect());
    }
    spec.split(',')
        .map(|s| s.trim().parse().map_err(|_| format!("bad address {s}")))
        .collect()
}

fn tls_config(ca: &PathBuf) -> Result<Arc<rustls::ClientConfig>, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Browsers resume sessions, but a load test should pay full handshakes.
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

struct Handle {
    tx: mpsc::Sender<Command>,
    busy: Arc<AtomicBool>,
}

fn setup(args: &Args) -> Result<UaConfig, String> {
    let rest = args
        .url
        .strip_prefix("wss://")
        .map(|r| (true, r))
        .or_else(|| args.url.strip_prefix("ws://").map(|r| (false, r)));
    let Some((secure, rest)) = rest else {
        return Err(format!(
            "--url must start with ws:// or wss://: {}",
            args.url
        ));
    };
    let hostport = rest.split('/').next().unwrap_or(rest);
    let server: SocketAddr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("--url {hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("--url {hostport}: no address"))?;
    let host = hostport
        .rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(hostport);
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let tls = if secure {
        let ca = args.ca.as_ref().ok_or("--ca is needed for wss://")?;
        let name = args.server_name.clone().unwrap_or(host);
        let name = ServerName::try_from(name).map_err(|e| format!("--server-name: {e}"))?;
        Some((tls_config(ca)?, name))
    } else {
        None
    };
    Ok(UaConfig {
        url: args.url.clone(),
        server,
        tls,
        origin: Some(args.origin.clone()).filter(|o| !o.is_empty()),
        domain: args.domain.clone(),
        password: args.password.clone(),
        expires: args.expires,
        timeout: Duration::from_millis(args.timeout_ms),
    })
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match run(args).await {
        Ok(clean) => std::process::exit(if clean { 0 } else { 1 }),
        Err(e) => {
            eprintln!("rtcgate-load: {e}");
            std::process::exit(2);
        }
    }
}

async fn run(args: Args) -> Result<bool, String> {
    let cfg = Arc::new(setup(&args)?);
    let sources = match &args.source_ips {
        Some(s) => parse_ips(s)?,
        None => Vec::new(),
    };
    // Each connection is a descriptor; the soft limit is often below the hard one.
    let _ = rlimit::increase_nofile_limit(args.connections as u64 + 256);
    if let Ok((soft, _)) = rlimit::getrlimit(rlimit::Resource::NOFILE)
        && soft < args.connections as u64 + 64
    {
        eprintln!(
            "rtcgate-load: warning: open-file limit {soft} is below -n {} + 64",
            args.connections
        );
    }

    let stats = Arc::new(Counters::default());
    let handles: Arc<Mutex<Vec<Handle>>> =
        Arc::new(Mutex::new(Vec::with_capacity(args.connections)));
    let timeline: Arc<Mutex<Vec<Point>>> = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let pids = args.target_pid.clone();
    let before = procfs::sample_all(&pids);
    if !pids.is_empty() && before.is_none() {
        return Err(format!("--target-pid {pids:?}: no such process"));
    }

    // Progress line and timeline, once a second.
    let progress = {
        let (stats, timeline, pids, quiet) =
            (stats.clone(), timeline.clone(), pids.clone(), args.quiet);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut last = procfs::sample_all(&pids);
            let mut last_t = Instant::now();
            loop {
                tick.tick().await;
                let s = procfs::sample_all(&pids);
                let now = Instant::now();
                let cpu = match (last, s) {
                    (Some(a), Some(b)) => {
                        (b.cpu_ticks.saturating_sub(a.cpu_ticks)) as f64
                            / procfs::TICKS_PER_SECOND as f64
                            / now.duration_since(last_t).as_secs_f64().max(1e-3)
                            * 100.0
                    }
                    _ => 0.0,
                };
                last = s;
                last_t = now;
                let p = Point {
                    t_s: started.elapsed().as_secs_f64(),
                    connected: Counters::get(&stats.connected)
                        .saturating_sub(Counters::get(&stats.dropped)),
                    registered: Counters::get(&stats.registered),
                    calls_answered: Counters::get(&stats.calls_answered),
                    calls_failed: Counters::get(&stats.calls_failed),
                    calls_active: Counters::get(&stats.calls_active),
                    target_rss_kib: s.map(|s| s.rss_kib).unwrap_or(0),
                    target_cpu_pct: cpu,
                };
                if !quiet {
                    eprint!(
                        "\r[{:6.1}s] conn {} (fail {}) reg {} (fail {}) | calls {} ok {} fail {} active {} rx {}{}   ",
                        p.t_s,
                        p.connected,
                        Counters::get(&stats.connect_failed),
                        p.registered,
                        Counters::get(&stats.register_failed),
                        Counters::get(&stats.calls_attempted),
                        p.calls_answered,
                        p.calls_failed,
                        p.calls_active,
                        Counters::get(&stats.calls_received),
                        if pids.is_empty() {
                            String::new()
                        } else {
                            format!(" | target {} MiB {:.0}% CPU", p.target_rss_kib / 1024, cpu)
                        }
                    );
                }
                if let Ok(mut t) = timeline.lock() {
                    t.push(p);
                }
            }
        })
    };

    // Phase 1: connect (and register), ramped and bounded.
    let gate = Arc::new(Semaphore::new(args.max_pending.max(1)));
    let ramp_gap = Duration::from_secs_f64(1.0 / args.ramp.max(0.001));
    let reg_start = Instant::now();
    let cpu0 = procfs::sample_all(&pids);
    let mut tasks = Vec::with_capacity(args.connections);
    let mut next = Instant::now();
    for i in 0..args.connections {
        tokio::time::sleep_until(next.into()).await;
        next += ramp_gap;
        let Ok(permit) = gate.clone().acquire_owned().await else {
            break;
        };
        let (cfg, stats, handles) = (cfg.clone(), stats.clone(), handles.clone());
        let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
        let user = (args.first_user + i as u64).to_string();
        let register = !args.no_register;
        tasks.push(tokio::spawn(async move {
            let mut ua = match Ua::connect(cfg, stats.clone(), user, source).await {
                Ok(ua) => ua,
                Err(e) => {
                    Counters::inc(&stats.connect_failed);
                    stats.fail_with(format!("connect: {}", e.reason()), e.to_string());
                    return;
                }
            };
            Counters::inc(&stats.connected);
            if register {
                match ua.register().await {
                    Ok(()) => Counters::inc(&stats.registered),
                    Err(e) => {
                        Counters::inc(&stats.register_failed);
                        stats.fail_with(format!("REGISTER {}", e.reason()), e.to_string());
                    }
                }
            }
            drop(permit);
            let (tx, rx) = mpsc::channel(4);
            let busy = Arc::new(AtomicBool::new(false));
            if let Ok(mut h) = handles.lock() {
                h.push(Handle {
                    tx,
                    busy: busy.clone(),
                });
            }
            ua.serve(rx, busy).await;
        }));
    }
    // Wait for the ramp to settle: every connection registered or failed.
    let settle_deadline = Instant::now() + cfg.timeout * 3 + Duration::from_secs(5);
    loop {
        let done = Counters::get(&stats.connect_failed)
            + Counters::get(&stats.registered)
            + Counters::get(&stats.register_failed)
            + if args.no_register {
                Counters::get(&stats.connected)
            } else {
                0
            };
        if done >= args.connections as u64 || Instant::now() > settle_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reg_elapsed = reg_start.elapsed().as_secs_f64();
    let cpu1 = procfs::sample_all(&pids);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connected_sample = procfs::sample_all(&pids);

    if args.idle_s > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(args.idle_s)).await;
    }
    let idle_sample = procfs::sample_all(&pids);

    // Phase 2: calls at the rate, each on the next idle connection.
    let call_start = Instant::now();
    let cpu2 = procfs::sample_all(&pids);
    let mut dispatch_s = 0.0;
    if args.calls > 0 {
        let gap = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
        let hold = Duration::from_millis(args.hold_ms);
        let mut next = Instant::now();
        let mut cursor = 0usize;
        for _ in 0..args.calls {
            tokio::time::sleep_until(next.into()).await;
            next += gap;
            let picked = {
                let h = handles.lock().map_err(|_| "handle table poisoned")?;
                let n = h.len();
                let mut found = None;
                for k in 0..n {
                    let idx = (cursor + k) % n;
                    if !h[idx].busy.swap(true, Ordering::Relaxed) {
                        found = Some((idx, h[idx].tx.clone()));
                        break;
                    }
                }
                found
            };
            match picked {
                Some((idx, tx)) => {
                    cursor = idx + 1;
                    let cmd = Command::Call {
                        callee: args.callee.clone(),
                        hold,
                    };
                    if tx.try_send(cmd).is_err() {
                        Counters::inc(&stats.calls_skipped);
                    }
                }
                None => Counters::inc(&stats.calls_skipped),
            }
        }
        dispatch_s = call_start.elapsed().as_secs_f64();
        // Let the calls in flight finish.
        let deadline = Instant::now() + hold + cfg.timeout * 3;
        while Instant::now() < deadline {
            let busy = handles
                .lock()
                .map(|h| h.iter().filter(|x| x.busy.load(Ordering::Relaxed)).count())
                .unwrap_or(0);
            if busy == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let cpu3 = procfs::sample_all(&pids);

    if args.linger_s > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(args.linger_s)).await;
    }

    // Close everything: dropping the senders ends each connection's task.
    if let Ok(mut h) = handles.lock() {
        h.clear();
    }
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    progress.abort();
    if !args.quiet {
        eprintln!();
    }

    let answered = Counters::get(&stats.calls_answered);
    let registered = Counters::get(&stats.registered);
    let target = before.map(|b| {
        let secs = |a: Option<procfs::Sample>, z: Option<procfs::Sample>| match (a, z) {
            (Some(a), Some(z)) => z.cpu_seconds() - a.cpu_seconds(),
            _ => 0.0,
        };
        let rss_connected = connected_sample.map(|s| s.rss_kib).unwrap_or(0);
        let conns = Counters::get(&stats.connected).max(1);
        let reg_cpu = secs(cpu0, cpu1);
        let call_cpu = secs(cpu2, cpu3);
        Target {
            pids: pids.clone(),
            rss_before_kib: b.rss_kib,
            rss_connected_kib: rss_connected,
            rss_idle_kib: idle_sample.map(|s| s.rss_kib).unwrap_or(0),
            rss_per_connection_bytes: (rss_connected.saturating_sub(b.rss_kib) as f64 * 1024.0)
                / conns as f64,
            cpu_s_register_phase: reg_cpu,
            cpu_s_per_1000_registrations: if registered > 0 {
                reg_cpu * 1000.0 / registered as f64
            } else {
                0.0
            },
            cpu_s_call_phase: call_cpu,
            cpu_s_per_1000_calls: if answered > 0 {
                call_cpu * 1000.0 / answered as f64
            } else {
                0.0
            },
        }
    });
    let mut settings = BTreeMap::new();
    settings.insert("url".into(), args.url.clone());
    settings.insert("connections".into(), args.connections.to_string());
    settings.insert("calls".into(), args.calls.to_string());
    settings.insert("rate".into(), args.rate.to_string());
    settings.insert("hold_ms".into(), args.hold_ms.to_string());
    settings.insert("source_ips".into(), sources.len().to_string());
    let attempted = Counters::get(&stats.calls_attempted);
    let report = Report {
        settings,
        duration_s: started.elapsed().as_secs_f64(),
        connections: Counters::get(&stats.connected),
        connect_failed: Counters::get(&stats.connect_failed),
        dropped: Counters::get(&stats.dropped),
        registrations_ok: registered,
        registrations_failed: Counters::get(&stats.register_failed),
        registrations_per_s: registered as f64 / reg_elapsed.max(1e-3),
        register_latency: stats.register_latency(),
        calls_attempted: attempted,
        calls_answered: answered,
        calls_completed: Counters::get(&stats.calls_completed),
        calls_failed: Counters::get(&stats.calls_failed),
        calls_skipped: Counters::get(&stats.calls_skipped),
        calls_received: Counters::get(&stats.calls_received),
        failed_by: stats.failures(),
        failure_examples: stats.examples(),
        call_rate_target: if args.calls > 0 { args.rate } else { 0.0 },
        call_rate_achieved: if args.calls > 0 {
            // n calls dispatched at gap g span (n - 1) g
            (attempted.saturating_sub(1)) as f64 / dispatch_s.max(1e-3)
        } else {
            0.0
        },
        setup_latency: stats.setup_latency(),
        target,
        timeline: timeline.lock().map(|t| t.clone()).unwrap_or_default(),
    };
    print!("{}", report.text());
    if let Some(p) = &args.json {
        report
            .write_json(p)
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    if let Some(p) = &args.chart {
        report
            .write_chart(p)
            .map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(report.clean())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ip_specs() {
        assert_eq!(parse_ips("127.0.1.1-3").unwrap().len(), 3);
        assert_eq!(parse_ips("127.0.1.250-127.0.2.4").unwrap().len(), 11);
        assert_eq!(parse_ips("127.0.0.1,::1").unwrap().len(), 2);
        assert!(parse_ips("127.0.1.5-1").is_err());
        assert!(parse_ips("nope").is_err());
    }
}
