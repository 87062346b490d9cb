//! docker/ checked without a Docker engine: the compose file by
//! `docker-compose config`, the systemd unit by `systemd-analyze verify`, the
//! compose setup's rtcgate.toml by `rtcgate check-config`, and the
//! consistency of ports and addresses between the files.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{require, which};
use rtcgate::config::Config;

fn docker_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker")
}

fn read(name: &str) -> String {
    std::fs::read_to_string(docker_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The first capture of `re` in `text` as a number.
fn number(text: &str, re: &str) -> u32 {
    regex::Regex::new(re)
        .unwrap()
        .captures(text)
        .unwrap_or_else(|| panic!("no match for {re}"))[1]
        .parse()
        .unwrap()
}

#[test]
fn compose_file_is_valid_for_docker_compose() {
    let Some(bin) = which("docker-compose") else {
        require("docker-compose (scripts/setup.d/docker.sh)", false);
        return;
    };
    let out = Command::new(bin)
        .args(["-f", "compose.yaml", "config", "-q"])
        .current_dir(docker_dir())
        .env_remove("RTPENGINE_INTERFACE")
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Interpolation works and defaults to loopback.
    let out = Command::new(which("docker-compose").unwrap())
        .args(["-f", "compose.yaml", "config"])
        .current_dir(docker_dir())
        .env("RTPENGINE_INTERFACE", "10.0.0.5!203.0.113.7")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("--interface=10.0.0.5!203.0.113.7"), "{text}");
}

#[test]
fn compose_services_agree_with_each_other() {
    let compose = read("compose.yaml");
    for service in ["rtcgate:", "rtpengine:", "mariadb:"] {
        assert!(
            compose.contains(&format!("\n  {service}\n")),
            "service {service} missing"
        );
    }
    // Media: host networking, or a published range equal to rtpengine's.
    let min = number(&compose, r#""--port-min=(\d+)""#);
    let max = number(&compose, r#""--port-max=(\d+)""#);
    assert!(min < max, "{min}..{max}");
    let published = format!("{min}-{max}:{min}-{max}/udp");
    let rtpengine = compose
        .split("\n  rtpengine:\n")
        .nth(1)
        .and_then(|s| s.split("\n  mariadb:\n").next())
        .unwrap();
    assert!(
        rtpengine.contains("network_mode: host") || rtpengine.contains(&published),
        "rtpengine needs host networking or {published}"
    );
    assert!(
        compose.contains(&format!("{min}-{max}/udp")),
        "the header names the media range"
    );
    // rtcgate reaches rtpengine's ng port and MariaDB as configured.
    let config = Config::parse(&read("rtcgate.toml"), "docker/rtcgate.toml").unwrap();
    let ng = number(&compose, r#""--listen-ng=127\.0\.0\.1:(\d+)""#);
    assert_eq!(config.rtpengine.instances.len(), 1);
    assert_eq!(
        config.rtpengine.instances[0].address,
        format!("127.0.0.1:{ng}").parse().unwrap()
    );
    assert!(config.rtpengine.enabled && config.accounting.enabled);
    let db_port = number(&config.database.url, r"@127\.0\.0\.1:(\d+)/");
    assert!(config.database.url.starts_with("mysql://rtcgate:rtcgate@"));
    assert!(
        compose.contains(&format!("\"127.0.0.1:{db_port}:3306\"")),
        "MariaDB published where rtcgate.toml looks"
    );
    assert!(compose.contains("MARIADB_DATABASE: rtcgate"));
    assert!(compose.contains("MARIADB_USER: rtcgate"));
    assert!(compose.contains("MARIADB_PASSWORD: rtcgate"));
}

#[test]
fn compose_rtcgate_toml_passes_check_config() {
    let out = Command::new(env!("CARGO_BIN_EXE_rtcgate"))
        .arg("check-config")
        .arg(docker_dir().join("rtcgate.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).ends_with(": ok\n"));
}

#[test]
fn dockerfile_shape() {
    let df = read("Dockerfile");
    let froms: Vec<&str> = df.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(froms.len(), 3, "{froms:?}");
    assert!(
        froms
            .iter()
            .any(|f| f.starts_with("FROM rust:1.95-bookworm AS build"))
    );
    assert_eq!(froms.last(), Some(&"FROM debian:bookworm-slim"));
    assert!(df.contains("cargo build --release --locked -p rtcgate"));
    assert!(df.contains("ca-certificates"));
    let user = df
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .unwrap();
    assert_ne!(user.trim(), "root");
    assert!(df.contains("HEALTHCHECK") && df.contains("/healthz"));
    assert!(df.contains("ENTRYPOINT [\"/usr/local/bin/rtcgate\"]"));
    // The ports it exposes are the ones the compose configuration listens on.
    let config = Config::parse(&read("rtcgate.toml"), "docker/rtcgate.toml").unwrap();
    let expose = df
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .unwrap()
        .to_owned();
    for a in &config.sip.udp_listen {
        assert!(expose.contains(&format!("{}/udp", a.port())), "{expose}");
    }
    for a in &config.websocket.wss_listen {
        assert!(expose.contains(&format!("{}/tcp", a.port())), "{expose}");
        assert!(
            df.contains(&format!("https://127.0.0.1:{}/healthz", a.port())),
            "health check on the WSS port"
        );
    }
    // The build context leaves build output out.
    let ignore = read("Dockerfile.dockerignore");
    for p in ["**/target", "**/node_modules", ".git"] {
        assert!(ignore.lines().any(|l| l == p), "{p}");
    }
    let rtp = read("rtpengine.Dockerfile");
    assert!(rtp.contains("FROM debian:bookworm-slim"));
    assert!(rtp.contains("rtpengine-daemon"));
    assert!(rtp.contains("--table=-1"), "userspace forwarding");
}

#[test]
fn systemd_unit_verifies_cleanly() {
    let unit = read("rtcgate.service");
    for line in [
        "Type=simple",
        "Restart=on-failure",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line}");
    }
    assert!(unit.lines().any(|l| l.starts_with("LimitNOFILE=")));
    let Some(analyze) = which("systemd-analyze") else {
        require("systemd-analyze", false);
        return;
    };
    // verify insists that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rtcgate.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/rtcgate", env!("CARGO_BIN_EXE_rtcgate")),
    )
    .unwrap();
    let out = Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    // Unknown keys and bad values are only warnings ("ignoring"): none allowed.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("rtcgate.service"))
        .collect();
    assert!(ours.is_empty(), "{ours:?}");
}

/// The scale-out topology (docker/scale/): the compose file is valid, every
/// node's configuration passes check-config, node ids and advertised
/// addresses are distinct and match the compose addresses and haproxy's
/// servers, and all nodes share one database and one rtpengine set.
#[test]
fn scale_out_topology_is_consistent() {
    let dir = docker_dir().join("scale");
    if let Some(bin) = which("docker-compose") {
        let out = Command::new(bin)
            .args(["-f", "compose.yaml", "config", "-q"])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "docker-compose config (scale): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        require("docker-compose (scripts/setup.d/docker.sh)", false);
    }
    let compose = std::fs::read_to_string(dir.join("compose.yaml")).unwrap();
    let haproxy = std::fs::read_to_string(dir.join("haproxy.cfg")).unwrap();
    let mut ids = Vec::new();
    let mut sets = Vec::new();
    let mut urls = Vec::new();
    for n in ["node1", "node2"] {
        let file = dir.join(format!("{n}.toml"));
        let out = Command::new(env!("CARGO_BIN_EXE_rtcgate"))
            .arg("check-config")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{n}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let c = Config::load(&file).unwrap();
        let adv = c.cluster.advertise.expect("cluster.advertise set");
        assert!(
            compose.contains(&format!("ipv4_address: {}", adv.ip())),
            "{n}: {adv} not in compose"
        );
        let wss = c.websocket.wss_listen[0];
        assert!(
            haproxy.contains(&format!("{}:{}", wss.ip(), wss.port())),
            "{n}: {wss} not an haproxy server"
        );
        ids.push(c.general.node_id.clone());
        let mut set: Vec<String> = c
            .rtpengine
            .instances
            .iter()
            .map(|i| i.address.to_string())
            .collect();
        set.sort();
        sets.push(set);
        urls.push(c.database.url.clone());
    }
    assert_ne!(ids[0], ids[1], "node ids must differ");
    assert_eq!(sets[0], sets[1], "every node needs the same rtpengine set");
    assert_eq!(urls[0], urls[1], "every node needs the same database");
    assert!(urls[0].starts_with("postgres://"));
}
