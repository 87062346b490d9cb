//! Operations end to end: `/metrics` and the JSON admin API of a real
//! gateway, the `rtcgate` CLI (the real binary) against it, bearer token
//! enforcement, and a graceful SIGTERM of a spawned `rtcgate run` with a
//! call in progress. Calls are real sipp UAC → rtcgate → sipp UAS, media
//! through a real rtpengine where it matters.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::rtpengine::{Daemon, need_rtpengine};
use common::*;
use rtcgate::media::RtpengineInstance;
use rtcgate::routing::{ProbeOptions, RoutingConfig, RoutingService};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_rtcgate");

/// A loadtest scenario, relative to `gateway/tests/sipp` (what `SippRun` takes).
fn scenario(name: &str) -> String {
    format!("../../../loadtest/scenarios/{name}")
}

/// One HTTP request to the admin API: status and body.
async fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut raw))
        .await
        .expect("admin API did not answer")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not HTTP: {text}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

async fn scrape(addr: SocketAddr) -> String {
    let (status, body) = http(addr, "GET", "/metrics", None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// The value of one series in a Prometheus text exposition: `name` with
/// at least the given labels.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            return None;
        }
        let all = labels
            .iter()
            .all(|(k, v)| rest.split(',').any(|p| p == format!("{k}=\"{v}\"")));
        all.then(|| value.parse().ok()).flatten()
    })
}

fn m(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(text, name, labels).unwrap_or(0.0)
}

/// Runs the real `rtcgate` binary; returns exit code, stdout, stderr.
async fn cli(args: &[&str]) -> (i32, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(BIN).args(args).output(),
    )
    .await
    .expect("rtcgate CLI hung")
    .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Polls `/api/calls` until `n` calls are confirmed.
async fn wait_confirmed(admin: SocketAddr, n: usize) -> Vec<serde_json::Value> {
    let start = Instant::now();
    loop {
        let (status, body) = http(admin, "GET", "/api/calls", None).await;
        assert_eq!(status, 200, "{body}");
        let calls: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        let confirmed = calls.iter().filter(|c| c["state"] == "confirmed").count();
        if confirmed == n {
            return calls;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "never {n} confirmed calls: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Answers every SIP OPTIONS on a UDP port with 200 (a healthy PBX for
/// the routing prober).
async fn options_responder() -> (u16, tokio::task::JoinHandle<()>) {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if !text.starts_with("OPTIONS ") {
                continue;
            }
            let keep: String = text
                .split("\r\n")
                .filter(|l| {
                    let n = l
                        .split(':')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .to_ascii_lowercase();
                    ["via", "from", "to", "call-id", "cseq"].contains(&n.as_str())
                })
                .map(|l| format!("{l}\r\n"))
                .collect();
            let resp = format!("SIP/2.0 200 OK\r\n{keep}Content-Length: 0\r\n\r\n");
            let _ = sock.send_to(resp.as_bytes(), from).await;
        }
    });
    (port, task)
}

/// A routing service with one set: a healthy destination and a dead one.
async fn routing(up: u16, down: u16) -> RoutingService {
    let text = format!(
        r#"
[[sets]]
name = "pbx"
algorithm = "priority"
destinations = [
  {{ address = "127.0.0.1:{up}", priority = 0 }},
  {{ address = "127.0.0.1:{down}", priority = 1 }},
]
probe = {{ interval_ms = 100, timeout_ms = 100, down_after = 2, up_after = 1 }}
"#
    );
    let cfg: RoutingConfig = toml::from_str(&text).unwrap();
    let options = ProbeOptions {
        bind: "127.0.0.1:0".parse().unwrap(),
        from_host: None,
    };
    RoutingService::start(&cfg, options).await.unwrap()
}

fn ws_register(user: &str) -> String {
    format!(
        "REGISTER sip:localhost SIP/2.0\r\nVia: SIP/2.0/WS {user}.invalid;branch=z9hG4bKreg{user}\r\nMax-Forwards: 70\r\nTo: <sip:{user}@localhost>\r\nFrom: <sip:{user}@localhost>;tag=r{user}\r\nCall-ID: reg-{user}@ua\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@{user}.invalid;transport=ws>;expires=600\r\nContent-Length: 0\r\n\r\n"
    )
}

#[tokio::test]
async fn metrics_move_after_a_call_and_cover_the_dashboard() {
    let Some(bin) = need_rtpengine() else { return };
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let rtp = Daemon::start(&bin);
    let pbx = SippRun::spawn(&scenario("pbx_uas.xml"), &["-m", "1"]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ng = rtp.ng;
    let gw = TestGateway::start_with(|c| {
        c.rtpengine.enabled = true;
        c.rtpengine.instances = vec![RtpengineInstance {
            address: ng,
            weight: 1,
        }];
        c.routes = route_to(pbx.port);
    })
    .await;
    let (up, _responder) = options_responder().await;
    let down = pick_udp_port();
    let routing = routing(up, down).await;
    gw.app.metrics.sources().set_routing(Some(routing.handle()));
    let admin = gw.admin();
    let before = scrape(admin).await;
    assert_eq!(m(&before, "rtcgate_call_attempts_total", &[]), 0.0);
    assert_eq!(m(&before, "rtcgate_ws_flows_open", &[]), 0.0);

    // A browser registers over WebSocket...
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    ws_send(&mut ws, &ws_register("1500")).await;
    assert!(ws_recv(&mut ws).await.starts_with("SIP/2.0 200 "));
    // ...and a UDP caller calls the PBX through rtcgate and rtpengine.
    let gw_udp = gw.udp().to_string();
    let uac = SippRun::spawn(
        &scenario("uac_call.xml"),
        &[&gw_udp, "-s", "1001", "-m", "1", "-d", "1500"],
    )
    .unwrap();
    wait_confirmed(admin, 1).await;
    let during = scrape(admin).await;
    assert_eq!(
        m(&during, "rtcgate_dialogs", &[("state", "confirmed")]),
        1.0
    );
    assert_eq!(m(&during, "rtcgate_ws_flows_open", &[]), 1.0);
    assert_eq!(m(&during, "rtcgate_registrations_active", &[]), 1.0);
    assert_eq!(m(&during, "rtcgate_media_calls", &[]), 1.0);
    let rtpengine = ng.to_string();
    assert_eq!(
        m(
            &during,
            "rtcgate_rtpengine_up",
            &[("rtpengine", &rtpengine)]
        ),
        1.0
    );
    assert!(uac.finish(Duration::from_secs(20)).await, "sipp UAC failed");
    assert!(pbx.finish(Duration::from_secs(20)).await, "sipp PBX failed");

    // After the call (BYE answered, media deleted).
    let start = Instant::now();
    let after = loop {
        let text = scrape(admin).await;
        let dest = |port: u16| {
            metric(
                &text,
                "rtcgate_pbx_destination_up",
                &[
                    ("set", "pbx"),
                    ("destination", &format!("127.0.0.1:{port}")),
                ],
            )
        };
        if m(&text, "rtcgate_dialogs", &[("state", "confirmed")]) == 0.0
            && m(&text, "rtcgate_media_calls", &[]) == 0.0
            && dest(up) == Some(1.0)
            && dest(down) == Some(0.0)
        {
            break text;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(m(&after, "rtcgate_call_attempts_total", &[]), 1.0);
    assert_eq!(
        m(&after, "rtcgate_calls_total", &[("outcome", "answered")]),
        1.0
    );
    assert_eq!(
        m(&after, "rtcgate_calls_total", &[("outcome", "failed")]),
        0.0
    );
    for method in ["INVITE", "ACK", "BYE", "REGISTER"] {
        assert!(
            m(
                &after,
                "rtcgate_sip_requests_received_total",
                &[("method", method)]
            ) >= 1.0,
            "no {method} counted"
        );
    }
    assert!(
        m(
            &after,
            "rtcgate_sip_responses_sent_total",
            &[("code", "200"), ("class", "2xx")]
        ) >= 3.0,
        "200s to INVITE, BYE and REGISTER"
    );
    assert!(
        m(
            &after,
            "rtcgate_sip_responses_sent_total",
            &[("code", "180")]
        ) >= 1.0
    );
    assert_eq!(
        m(
            &after,
            "rtcgate_register_responses_total",
            &[("code", "200")]
        ),
        1.0
    );
    assert_eq!(m(&after, "rtcgate_ws_flows_accepted_total", &[]), 1.0);
    for command in ["offer", "answer", "delete"] {
        let labels = [("rtpengine", rtpengine.as_str()), ("command", command)];
        assert!(
            m(&after, "rtcgate_ng_requests_total", &labels) >= 1.0,
            "no ng {command}: {after}"
        );
        assert!(m(&after, "rtcgate_ng_latency_seconds_count", &labels) >= 1.0);
        assert_eq!(
            m(
                &after,
                "rtcgate_ng_errors_total",
                &[("command", command), ("kind", "timeout")]
            ),
            0.0
        );
    }
    assert_eq!(m(&after, "rtcgate_draining", &[]), 0.0);

    // Every series the Grafana dashboard queries exists.
    let dashboard = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/grafana/rtcgate-dashboard.json"),
    )
    .unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let names: std::collections::BTreeSet<&str> = regex::Regex::new(r"rtcgate_[a-z0-9_]+")
        .unwrap()
        .find_iter(&dashboard)
        .map(|x| x.as_str())
        .collect();
    assert!(names.len() >= 15, "{names:?}");
    for name in &names {
        assert!(
            after.lines().any(|l| !l.starts_with('#')
                && (l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))),
            "the dashboard uses {name}, absent from /metrics:\n{after}"
        );
    }
}

#[tokio::test]
async fn cli_commands_against_a_running_gateway() {
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let pbx = SippRun::spawn(&scenario("pbx_uas.xml"), &["-m", "1"]).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gw = TestGateway::start_with(|c| c.routes = route_to(pbx.port)).await;
    let url = format!("http://{}", gw.admin());
    let with = |cmd: &[&str]| {
        let mut v: Vec<String> = cmd.iter().map(|s| s.to_string()).collect();
        v.extend(["--admin".to_string(), url.clone()]);
        v
    };
    let run = |cmd: &[&str]| {
        let args = with(cmd);
        async move {
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&refs).await
        }
    };

    let (code, out, err) = run(&["stats"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("registrations  0 active"), "{out}");
    assert!(out.contains("0 established"), "{out}");

    let (code, out, _) = run(&["calls"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "no active calls\n");

    // A registration shows up.
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    ws_send(&mut ws, &ws_register("1600")).await;
    assert!(ws_recv(&mut ws).await.starts_with("SIP/2.0 200 "));
    let (code, out, err) = run(&["registrations"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("AOR "), "{out}");
    assert!(out.contains("sip:1600@localhost"), "{out}");

    // A call the caller never hangs up: the CLI lists it and ends it.
    let gw_udp = gw.udp().to_string();
    let uac = SippRun::spawn(
        &scenario("uac_call_wait_bye.xml"),
        &[&gw_udp, "-s", "1001", "-m", "1"],
    )
    .unwrap();
    wait_confirmed(gw.admin(), 1).await;
    let (code, out, err) = run(&["calls", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let calls: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(calls.len(), 1, "{out}");
    let call_id = calls[0]["call_id"].as_str().unwrap().to_owned();
    assert!(
        calls[0]["caller"]
            .as_str()
            .unwrap()
            .starts_with("sip:sipp@"),
        "{out}"
    );
    assert!(
        calls[0]["callee"]
            .as_str()
            .unwrap()
            .starts_with("sip:1001@"),
        "{out}"
    );
    assert!(calls[0]["since_ms"].as_i64().is_some(), "{out}");
    let (code, out, _) = run(&["calls"]).await;
    assert_eq!(code, 0);
    assert!(out.contains(&call_id) && out.contains("confirmed"), "{out}");
    let (code, out, _) = run(&["stats"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("1 established"), "{out}");

    let (code, out, err) = run(&["hangup", &call_id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("BYE sent to both sides"), "{out}");
    // Both sipps end cleanly only if each got its BYE and answered it.
    assert!(pbx.finish(Duration::from_secs(20)).await, "PBX got no BYE");
    assert!(
        uac.finish(Duration::from_secs(20)).await,
        "caller got no BYE"
    );
    let (code, out, _) = run(&["calls"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "no active calls\n");
    let (code, _, err) = run(&["hangup", &call_id]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no call"), "{err}");

    // Reload: the certificate is re-read.
    let (code, out, err) = run(&["reload"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("certificate: ok"), "{out}");
    let (code, out, _) = run(&["reload", "--json"]).await;
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["items"][0]["what"], "certificate");

    // No rtpengine: said so. The static route shows as an unprobed set.
    let (code, out, _) = run(&["rtpengine"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "rtpengine is not configured\n");
    let (code, out, _) = run(&["sets"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("routes.0") && out.contains("unknown"), "{out}");
    let (code, out, _) = run(&["sets", "--json"]).await;
    assert_eq!(code, 0);
    let sets: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(sets.as_array().map(Vec::len), Some(1), "{out}");

    // With a routing service: one destination up, one down.
    let (up, _responder) = options_responder().await;
    let down = pick_udp_port();
    let routing = routing(up, down).await;
    gw.app.metrics.sources().set_routing(Some(routing.handle()));
    let start = Instant::now();
    loop {
        let (code, out, _) = run(&["sets"]).await;
        assert_eq!(code, 0);
        let line = |port: u16| {
            out.lines()
                .find(|l| l.contains(&format!("127.0.0.1:{port}")))
                .unwrap_or("")
                .to_owned()
        };
        if line(up).contains(" up ") && line(down).contains(" down ") {
            assert!(out.starts_with("SET "), "{out}");
            assert!(line(up).starts_with("pbx "), "{out}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The address comes from --config when --admin is not given.
    let conf = gw.dir.path().join("cli.toml");
    std::fs::write(&conf, format!("[admin]\nlisten = \"{}\"\n", gw.admin())).unwrap();
    let (code, out, err) = cli(&["stats", "--config", conf.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("node node1"), "{out}");
    // Nothing listening: a clear error, exit 1.
    let (code, _, err) = cli(&["stats", "--admin", "http://127.0.0.1:9"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the admin API"), "{err}");
}

#[tokio::test]
async fn admin_token_is_enforced() {
    let token = "s3cret-token-for-tests";
    let gw = TestGateway::start_with(|c| c.admin.token = Some(token.into())).await;
    let admin = gw.admin();
    for path in ["/metrics", "/api/stats", "/api/calls", "/api/registrations"] {
        let (status, body) = http(admin, "GET", path, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        let (status, _) = http(admin, "GET", path, Some("wrong-token-wrong-token")).await;
        assert_eq!(status, 401, "{path}");
        let (status, body) = http(admin, "GET", path, Some(token)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (status, _) = http(admin, "POST", "/api/reload", None).await;
    assert_eq!(status, 401);
    let (status, _) = http(admin, "POST", "/api/calls/x/hangup", None).await;
    assert_eq!(status, 401);
    // Wrong method, unknown path, unknown call.
    let (status, _) = http(admin, "POST", "/api/stats", Some(token)).await;
    assert_eq!(status, 405);
    let (status, _) = http(admin, "GET", "/api/nothing", Some(token)).await;
    assert_eq!(status, 404);
    let (status, body) = http(admin, "POST", "/api/calls/nope%40x/hangup", Some(token)).await;
    assert_eq!(status, 404);
    assert!(body.contains("nope@x"), "{body}");

    // The CLI: refused without the token, fine with it.
    let url = format!("http://{admin}");
    let (code, _, err) = cli(&["stats", "--admin", &url]).await;
    assert_eq!(code, 1);
    assert!(err.contains("unauthorized"), "{err}");
    let (code, out, err) = cli(&["stats", "--admin", &url, "--token", token]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("node node1"), "{out}");
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The `rtcgate run` process, killed on drop if still running.
struct Process(tokio::process::Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

#[tokio::test]
async fn sigterm_drains_a_running_process() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let pbx = SippRun::spawn(&scenario("pbx_uas.xml"), &["-m", "1"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (udp, ws_port, admin_port) = (pick_udp_port(), free_tcp_port(), free_tcp_port());
    let config = dir.path().join("rtcgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"[general]
drain_timeout_s = 20
[sip]
udp_listen = ["127.0.0.1:{udp}"]
[websocket]
wss_listen = []
ws_listen = ["127.0.0.1:{ws_port}"]
[database]
url = "sqlite://{db}?mode=rwc"
[auth]
required = false
[rtpengine]
enabled = false
[admin]
listen = "127.0.0.1:{admin_port}"
[[routes]]
prefix = "1"
destination = "127.0.0.1:{pbx}"
"#,
            db = dir.path().join("rtcgate.db").display(),
            pbx = pbx.port
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("rtcgate.log")).unwrap();
    let child = tokio::process::Command::new(BIN)
        .args(["run", "--config", config.to_str().unwrap()])
        .current_dir(dir.path())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut process = Process(child);
    let pid = process.0.id().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let start = Instant::now();
    while tokio::net::TcpStream::connect(admin).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "rtcgate did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dump = || std::fs::read_to_string(dir.path().join("rtcgate.log")).unwrap_or_default();

    // An idle browser and a call in progress (the caller hangs up after 4 s).
    let ws_addr: SocketAddr = format!("127.0.0.1:{ws_port}").parse().unwrap();
    let mut ws = ws_connect(ws_addr, None, Some("sip"), None).await.unwrap();
    let uac = SippRun::spawn(
        &scenario("uac_call.xml"),
        &[
            &format!("127.0.0.1:{udp}"),
            "-s",
            "1001",
            "-m",
            "1",
            "-d",
            "4000",
        ],
    )
    .unwrap();
    wait_confirmed(admin, 1).await;

    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());

    // The idle browser is told to go elsewhere: close 1001 Going Away.
    let close = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await
    .expect("no close frame within 5 s");
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away), "{}", dump());

    // No new WebSocket connections, and new calls get 503 + Retry-After.
    assert!(tokio::net::TcpStream::connect(ws_addr).await.is_err());
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();
    let invite = format!(
        "INVITE sip:1002@127.0.0.1:{udp} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKdrain1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:late@{me}>;tag=late\r\nTo: <sip:1002@127.0.0.1>\r\nCall-ID: late-call@test\r\nCSeq: 1 INVITE\r\nContact: <sip:late@{me}>\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(invite.as_bytes(), format!("127.0.0.1:{udp}"))
        .await
        .unwrap();
    let refused = udp_final(&sock).await;
    assert_eq!(sip_status(&refused), Some(503), "{refused}");
    let retry: u32 = sip_header(&refused, "Retry-After").parse().unwrap();
    assert!(retry >= 5, "{refused}");
    let (status, body) = http(admin, "GET", "/api/stats", None).await;
    assert_eq!(status, 200);
    assert!(body.contains("\"draining\": true"), "{body}");

    // The call in progress ends normally: its BYE goes through.
    assert!(
        uac.finish(Duration::from_secs(20)).await,
        "caller's BYE failed during the drain\n{}",
        dump()
    );
    assert!(pbx.finish(Duration::from_secs(20)).await, "PBX got no BYE");
    let status = tokio::time::timeout(Duration::from_secs(15), process.0.wait())
        .await
        .unwrap_or_else(|_| panic!("rtcgate did not exit after the call\n{}", dump()))
        .unwrap();
    assert!(status.success(), "exit {status}\n{}", dump());
    let log = dump();
    assert!(log.contains("drained"), "{log}");
    assert!(log.contains("calls_hung_up: 0"), "{log}");
}
