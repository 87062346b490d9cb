//! A real rtpengine daemon for tests (userspace forwarding, loopback, its
//! own ng port and media port range), killed by PID on drop.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rtcgate::media::{MediaConfig, RtpengineInstance};

pub fn rtpengine_bin() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("RTPENGINE_BIN").map(PathBuf::from),
        Some(PathBuf::from("/usr/bin/rtpengine")),
        Some(PathBuf::from("/usr/sbin/rtpengine")),
    ];
    candidates.into_iter().flatten().find(|p| p.is_file())
}

/// `Some(path)`, or `None` when the test should be skipped (never under `CI=true`).
pub fn need_rtpengine() -> Option<PathBuf> {
    let bin = rtpengine_bin();
    if bin.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "rtpengine binary missing (install rtpengine-daemon)"
        );
        eprintln!("SKIPPED: rtpengine not installed");
    }
    bin
}

/// A running daemon, killed (by PID, through its handle) on drop.
pub struct Daemon {
    child: Child,
    /// The ng control address.
    pub ng: SocketAddr,
    /// Holds this daemon's media port slot.
    _slot: std::fs::File,
}

/// A free media-port slot (0..290, 100 ports each from 30000), held by an
/// exclusive file lock that the OS drops with the process or the file.
fn port_slot() -> (u32, std::fs::File) {
    let dir = std::env::temp_dir().join("rtcgate-test-rtp-slots");
    std::fs::create_dir_all(&dir).unwrap();
    let start = std::process::id() % 290;
    for k in 0..290 {
        let slot = (start + k) % 290;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("{slot}.lock")))
            .unwrap();
        if file.try_lock().is_ok() {
            return (slot, file);
        }
    }
    panic!("no free rtpengine port slot (290 daemons running?)");
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_udp_port() -> SocketAddr {
    let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap()
}

impl Daemon {
    pub fn start(bin: &PathBuf) -> Daemon {
        Self::start_on(bin, free_udp_port())
    }

    /// Kills the daemon now (SIGKILL, by PID) and reaps it: an rtpengine
    /// crash as the gateway sees it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A daemon on a given ng address (e.g. the one of a killed daemon,
    /// to restart "the same" rtpengine).
    pub fn start_on(bin: &PathBuf, ng: SocketAddr) -> Daemon {
        // A media port range of its own: a slot locked for the daemon's
        // life, so parallel test processes never share ports.
        let (slot, lock) = port_slot();
        let base = 30_000 + slot * 100;
        let child = Command::new(bin)
            .args([
                "--config-file=none",
                "--table=-1",
                "--foreground",
                "--log-stderr",
                "--log-level=4",
                &format!("--listen-ng={ng}"),
                "--interface=127.0.0.1",
                &format!("--port-min={base}"),
                &format!("--port-max={}", base + 99),
                "--delete-delay=0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn rtpengine");
        let mut d = Daemon {
            child,
            ng,
            _slot: lock,
        };
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut buf = [0u8; 256];
        loop {
            let _ = sock.send_to(b"p1 d7:command4:pinge", ng);
            if let Ok(n) = sock.recv(&mut buf)
                && buf.get(..n).is_some_and(|b| b.ends_with(b"4:ponge"))
            {
                return d;
            }
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("rtpengine exited early: {status}");
            }
            assert!(Instant::now() < deadline, "rtpengine did not answer ping");
        }
    }

    pub fn config(&self) -> MediaConfig {
        MediaConfig {
            instances: vec![RtpengineInstance {
                address: self.ng,
                weight: 1,
            }],
            // Tests share two cores with parallel builds and other tests:
            // patience here keeps a slow ng reply from reading as an outage.
            // Tests of the outage itself set their own deadlines.
            try_timeout_ms: 400,
            tries: 4,
            offer_deadline_ms: 3000,
            delete_deadline_ms: 3000,
            down_after: 3,
            ..MediaConfig::default()
        }
    }
}

impl Daemon {
    /// Waits (up to `within`) until rtpengine holds no call; panics with
    /// the calls left otherwise.
    pub async fn wait_empty(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let calls = self.calls();
            if calls.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "rtpengine still holds {calls:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Calls rtpengine holds now (ng `list`).
    pub fn calls(&self) -> Vec<String> {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        // A fresh cookie each time: rtpengine answers a repeated cookie from
        // its reply cache (that is how retransmissions stay idempotent).
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let req = format!("l{}.{n} d7:command4:list5:limiti1000ee", std::process::id());
        sock.send_to(req.as_bytes(), self.ng).unwrap();
        let mut buf = vec![0u8; 65536];
        let n = sock.recv(&mut buf).expect("rtpengine list");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        // "l1 d5:callsl<len>:<id>...e6:result2:oke": pull the strings of the list.
        let Some(start) = text.find("5:callsl") else {
            return Vec::new();
        };
        let mut rest = &text[start + 8..];
        let mut out = Vec::new();
        while let Some((len, tail)) = rest.split_once(':') {
            let Ok(len) = len.parse::<usize>() else { break };
            out.push(tail[..len].to_owned());
            rest = &tail[len..];
        }
        out
    }
}
