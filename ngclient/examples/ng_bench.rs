//! Benchmark: N ng round trips against a real rtpengine that this program starts.
//!
//! ```text
//! cargo run --release -p ngclient --example ng_bench -- --mode=ping --n=50000 --concurrency=32
//! cargo run --release -p ngclient --example ng_bench -- --mode=call --n=5000 --concurrency=16
//! ```
//! `--mode=call` runs offer (WebRTC → plain) + answer (plain → WebRTC) + delete cycles
//! with the captured Chrome/PBX SDPs; every command counts as one round trip.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ngclient::{CallRef, ClientConfig, CoreConfig, InstanceConfig, MediaRequest, NgClient, Target};

struct Args {
    mode: String,
    n: usize,
    concurrency: usize,
    threads: u32,
}

fn parse_args() -> Args {
    let mut a = Args {
        mode: "ping".into(),
        n: 20_000,
        concurrency: 16,
        threads: 2,
    };
    for arg in std::env::args().skip(1) {
        let (k, v) = arg.split_once('=').unwrap_or((arg.as_str(), ""));
        match k {
            "--mode" => a.mode = v.to_owned(),
            "--n" => a.n = v.parse().expect("--n=<number>"),
            "--concurrency" => a.concurrency = v.parse().expect("--concurrency=<number>"),
            "--rtpengine-threads" => a.threads = v.parse().expect("--rtpengine-threads=<number>"),
            _ => panic!("unknown argument {arg}; see the doc comment"),
        }
    }
    a
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn pct(sorted: &[Duration], q: f64) -> Duration {
    let i = ((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1);
    sorted
        .get(i.min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let ng = SocketAddr::from(([127, 0, 0, 1], common::free_udp_port()));
    let engine = common::Rtpengine::start_with(ng, (42_000, 43_999), args.threads)
        .expect("rtpengine is required");
    let chrome =
        common::fixture("sdp", "out-1_offer_browser-to-proxy_webrtc.sdp").expect("fixture");
    let pbx = common::fixture("sdp", "out-3_answer_pbx-to-proxy_plain.sdp").expect("fixture");
    let client = NgClient::start(ClientConfig {
        core: CoreConfig {
            instances: vec![InstanceConfig::new(engine.ng)],
            // Generous: the benchmark measures throughput, not failover.
            try_timeout: Duration::from_millis(500),
            tries: 4,
            ..CoreConfig::default()
        },
        bind: None,
    })
    .await
    .expect("client");

    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (client, next, mode, n) = (client.clone(), next.clone(), args.mode.clone(), args.n);
        let (chrome, pbx) = (chrome.clone(), pbx.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                if mode == "ping" {
                    let t = Instant::now();
                    match client.ping(0).await {
                        Ok(_) => lat.push(t.elapsed()),
                        Err(_) => errors += 1,
                    }
                    continue;
                }
                let call = format!("bench-{i}");
                let offer = MediaRequest {
                    ice: Some("remove".into()),
                    dtls: Some("off".into()),
                    transport_protocol: Some("RTP/AVP".into()),
                    rtcp_mux: strs(&["demux"]),
                    sdes: strs(&["off"]),
                    replace: strs(&["origin"]),
                    ..MediaRequest::new(chrome.clone(), call.as_str(), "b")
                };
                let answer = MediaRequest {
                    ice: Some("force".into()),
                    dtls: Some("passive".into()),
                    transport_protocol: Some("UDP/TLS/RTP/SAVPF".into()),
                    rtcp_mux: strs(&["require"]),
                    sdes: strs(&["off"]),
                    replace: strs(&["origin"]),
                    to_tag: Some("p".into()),
                    ..MediaRequest::new(pbx.clone(), call.as_str(), "b")
                };
                let t = Instant::now();
                if client.offer(&offer, Target::Auto).await.is_err() {
                    errors += 1;
                    continue;
                }
                lat.push(t.elapsed());
                let t = Instant::now();
                match client.answer(&answer, Target::Auto).await {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
                let t = Instant::now();
                match client
                    .delete(&CallRef::new(call.as_str()).from_tag("b"), Target::Auto)
                    .await
                {
                    Ok(_) => lat.push(t.elapsed()),
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut lat = Vec::new();
    let mut errors = 0;
    for w in workers {
        let (l, e) = w.await.expect("worker");
        lat.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed();
    lat.sort();
    let m = client.metrics().await.expect("metrics");
    println!(
        "mode={} n={} concurrency={} rtpengine-threads={}",
        args.mode, args.n, args.concurrency, args.threads
    );
    println!(
        "round trips: {} ok, {} errors in {:.2} s = {:.0} round trips/s{}",
        lat.len(),
        errors,
        elapsed.as_secs_f64(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        if args.mode == "call" {
            format!(
                " ({:.0} call cycles/s)",
                args.n as f64 / elapsed.as_secs_f64()
            )
        } else {
            String::new()
        }
    );
    println!(
        "latency: p50 {:?} p90 {:?} p99 {:?} max {:?}",
        pct(&lat, 0.50),
        pct(&lat, 0.90),
        pct(&lat, 0.99),
        lat.last().copied().unwrap_or_default()
    );
    let retrans: u64 = m.commands.iter().map(|c| c.stats.retransmits).sum();
    let timeouts: u64 = m.commands.iter().map(|c| c.stats.timeouts).sum();
    println!(
        "client metrics: retransmits {retrans}, timeouts {timeouts}, dropped {}",
        m.dropped_datagrams
    );
    drop(engine);
}
