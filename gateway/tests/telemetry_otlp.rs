//! OTLP export end to end: a spawned `rtcgate run` with
//! `[telemetry] otlp_endpoint` pointed at a minimal gRPC collector (HTTP/2
//! via h2, answering every export with an empty OK). A sipp call through
//! the gateway must arrive as a trace carrying its Call-ID, the metrics must
//! arrive too, and the process must still exit promptly on SIGTERM, also
//! when the collector has gone away.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use tokio::sync::mpsc;

/// One export request the collector received: gRPC path and body.
struct Export {
    path: String,
    body: Vec<u8>,
}

/// Serves OTLP/gRPC exports on a free port until the task is aborted.
async fn collector() -> (
    SocketAddr,
    mpsc::UnboundedReceiver<Export>,
    tokio::task::JoinHandle<()>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        // Dropped with this task when it is aborted: every connection ends.
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let tx = tx.clone();
            conns.spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                // Requests run in their own tasks: the connection must keep
                // being polled (accept) for their bodies to arrive.
                while let Some(Ok((req, respond))) = conn.accept().await {
                    tokio::spawn(answer(req, respond, tx.clone()));
                }
            });
        }
    });
    (addr, rx, task)
}

/// Reads one export and answers it with an empty OK.
async fn answer(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    tx: mpsc::UnboundedSender<Export>,
) {
    let path = req.uri().path().to_owned();
    let mut body = req.into_body();
    let mut data = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let _ = tx.send(Export { path, body: data });
    let resp = http::Response::builder()
        .status(200)
        .header("content-type", "application/grpc")
        .body(())
        .unwrap();
    let Ok(mut send) = respond.send_response(resp, false) else {
        return;
    };
    // An empty Export*ServiceResponse: uncompressed, length 0.
    let _ = send.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), false);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let _ = send.send_trailers(trailers);
}

fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Waits until the exports to `path`, taken together, contain every
/// `needle` (spans of one trace come in several batches).
async fn wait_export(
    rx: &mut mpsc::UnboundedReceiver<Export>,
    path: &str,
    needles: &[&[u8]],
) -> bool {
    let start = tokio::time::Instant::now();
    let deadline = start + Duration::from_secs(20);
    let mut seen = Vec::new();
    loop {
        let Ok(e) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            let missing: Vec<String> = needles
                .iter()
                .filter(|n| !contains(&seen, n))
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .collect();
            eprintln!("exports to {path} lack {missing:?}");
            return false;
        };
        let e = e.expect("collector stopped");
        if e.path != path {
            continue;
        }
        seen.extend_from_slice(&e.body);
        eprintln!(
            "export to {path}: {} bytes after {:?}",
            e.body.len(),
            start.elapsed()
        );
        if needles.iter().all(|n| contains(&seen, n)) {
            return true;
        }
    }
}

async fn get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn call_traces_and_metrics_reach_an_otlp_collector() {
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let (otlp, mut exports, collector_task) = collector().await;
    let pbx = SippRun::spawn("../../../loadtest/scenarios/pbx_uas.xml", &["-m", "1"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (udp, admin_port) = (pick_udp_port(), free_tcp_port());
    let config = dir.path().join("rtcgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"[general]
drain_timeout_s = 5
[sip]
udp_listen = ["127.0.0.1:{udp}"]
[websocket]
wss_listen = []
[database]
url = "sqlite://{db}?mode=rwc"
[auth]
required = false
[rtpengine]
enabled = false
[admin]
listen = "127.0.0.1:{admin_port}"
[telemetry]
otlp_endpoint = "http://{otlp}"
service_name = "rtcgate-otlp-test"
export_interval_s = 1
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
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rtcgate"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let dump = || std::fs::read_to_string(dir.path().join("rtcgate.log")).unwrap_or_default();
    let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let start = Instant::now();
    while tokio::net::TcpStream::connect(admin).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "rtcgate did not start\n{}",
            dump()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let uac = SippRun::spawn(
        "../../../loadtest/scenarios/uac_call.xml",
        &[
            &format!("127.0.0.1:{udp}"),
            "-s",
            "1001",
            "-m",
            "1",
            "-d",
            "1000",
        ],
    )
    .unwrap();
    // The Call-ID, from the admin API while the call is up.
    let start = Instant::now();
    let call_id = loop {
        let text = get(admin, "/api/calls").await;
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let calls: Vec<serde_json::Value> = serde_json::from_str(body).unwrap_or_default();
        if let Some(id) = calls.first().and_then(|c| c["call_id"].as_str()) {
            break id.to_owned();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no call\n{}",
            dump()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        uac.finish(Duration::from_secs(20)).await,
        "sipp caller failed"
    );
    assert!(pbx.finish(Duration::from_secs(20)).await, "sipp PBX failed");

    // The call's trace: the root span with its Call-ID, the message spans.
    wait_export(
        &mut exports,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        &[
            call_id.as_bytes(),
            b"call_id",
            b"sip.request",
            b"route",
            b"rtcgate-otlp-test",
        ],
    )
    .await;
    // And the metrics.
    assert!(
        wait_export(
            &mut exports,
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            &[b"rtcgate_calls", b"rtcgate_ws_flows_open", b"answered"],
        )
        .await,
        "no metrics exported\n{}",
        dump()
    );

    // The collector goes away; SIGTERM still ends the process promptly.
    collector_task.abort();
    let pid = child.id().unwrap();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap_or_else(|_| panic!("rtcgate hung at exit\n{}", dump()))
        .unwrap();
    assert!(status.success(), "exit {status}\n{}", dump());
}
