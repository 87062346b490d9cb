//! Real rtpengine daemons for integration tests: started on free loopback ports,
//! waited for with a ping loop, killed by PID on drop (also when a test panics).

#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Whether a missing dependency must fail the test (CI) instead of skipping it.
pub fn ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Skips (returns `None`) or, under `CI=true`, panics.
pub fn missing<T>(what: &str) -> Option<T> {
    if ci() {
        panic!("{what} (CI=true: failing, not skipping)");
    }
    eprintln!("SKIP: {what}");
    None
}

/// The rtpengine binary: `$RTPENGINE_BIN`, else Debian's locations.
pub fn rtpengine_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("RTPENGINE_BIN") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    ["/usr/bin/rtpengine", "/usr/sbin/rtpengine"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// `shared/fixtures/<sub>` beside the checkout, or at `/work/shared` when
/// the checkout is elsewhere (a clone in /tmp).
pub fn shared_fixtures(sub: &str) -> PathBuf {
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    let root = if beside.is_dir() {
        beside
    } else {
        PathBuf::from("/work/shared/fixtures")
    };
    root.join(sub)
}

/// A fixture file from `shared/fixtures/<sub>/<name>`.
pub fn fixture(sub: &str, name: &str) -> Option<Vec<u8>> {
    let dir = std::env::var_os("FIXTURES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared_fixtures(""));
    let path = dir.join(sub).join(name);
    match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) => missing(&format!("fixture {}: {e}", path.display())),
    }
}

/// A free UDP port on 127.0.0.1 (probed by binding port 0).
pub fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap().port()
}

static RANGE_SEQ: AtomicU32 = AtomicU32::new(0);

/// A media port range of 40 ports unlikely to overlap other tests (rtpengine skips
/// ports in use anyway).
pub fn port_range() -> (u16, u16) {
    let seq = RANGE_SEQ.fetch_add(1, Ordering::Relaxed);
    let slot = (std::process::id().wrapping_mul(7919).wrapping_add(seq * 37)) % 500;
    let min = 40_000 + (slot as u16) * 40;
    (min, min + 39)
}

/// A running rtpengine daemon.
pub struct Rtpengine {
    child: Option<Child>,
    /// Its ng address.
    pub ng: SocketAddr,
    /// Its media port range.
    pub ports: (u16, u16),
    /// Where its log goes.
    pub log: PathBuf,
}

impl Rtpengine {
    /// Starts a daemon on a free port, or skips/fails if rtpengine is not installed.
    pub fn start() -> Option<Self> {
        let ng = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        Self::start_at(ng, port_range())
    }

    /// Starts a daemon on a given ng address and media range.
    pub fn start_at(ng: SocketAddr, ports: (u16, u16)) -> Option<Self> {
        Self::start_with(ng, ports, 1)
    }

    /// Starts a daemon with `threads` worker threads.
    pub fn start_with(ng: SocketAddr, ports: (u16, u16), threads: u32) -> Option<Self> {
        let Some(bin) = rtpengine_bin() else {
            return missing("rtpengine binary not found (set RTPENGINE_BIN)");
        };
        let log = std::env::temp_dir().join(format!(
            "ngclient-rtpengine-{}-{}.log",
            std::process::id(),
            ng.port()
        ));
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args([
                "--config-file=none".to_string(),
                "--table=-1".into(),
                "--foreground".into(),
                "--log-stderr".into(),
                "--log-level=5".into(),
                "--interface=127.0.0.1".into(),
                format!("--listen-ng={ng}"),
                format!("--port-min={}", ports.0),
                format!("--port-max={}", ports.1),
                "--delete-delay=0".into(),
                format!("--num-threads={threads}"),
                "--dtls-passive".into(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let mut me = Self {
            child: Some(child),
            ng,
            ports,
            log,
        };
        me.wait_ready();
        Some(me)
    }

    /// Pings over a plain socket until the daemon answers (at most 10 s).
    fn wait_ready(&mut self) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 512];
        for i in 0..100u32 {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "rtpengine exited early ({status}); log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            let cookie = format!("ready_{i}");
            sock.send_to(format!("{cookie} d7:command4:pinge").as_bytes(), self.ng)
                .unwrap();
            if let Ok((n, _)) = sock.recv_from(&mut buf)
                && buf[..n].starts_with(cookie.as_bytes())
            {
                return;
            }
        }
        panic!(
            "rtpengine on {} not ready after {:?}; log:\n{}",
            self.ng,
            start.elapsed(),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    /// Kills the daemon (by PID) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Rtpengine {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}
