//! Accounting end to end: real sipp callers and PBXes (or a browser-like
//! WebSocket client) through an in-process rtcgate on SQLite; one call
//! record per call with the right disposition, times, reason and
//! destination; rtpengine's delete statistics in the record; `rtcgate cdr
//! list`; records lost (and counted) rather than waited for when the
//! database or the queue cannot take them.

mod common;

use std::time::{Duration, Instant};

use common::rtpengine::{Daemon, need_rtpengine};
use common::*;
use rtcgate::accounting::{Accounting, AccountingConfig};
use rtcgate::media::RtpengineInstance;
use rtcgate::proxy::dialog::{CallStart, DialogEvent, DialogEventKind};
use rtcgate::store::{CallRecord, Store};

/// The one call record of this gateway's database, once written (bounded wait).
async fn the_record(gw: &TestGateway) -> CallRecord {
    let store = gw.app.location.store();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let rows = store.list_call_records(10, None).await.unwrap();
        assert!(rows.len() <= 1, "one call, one record: {rows:?}");
        if let Some(r) = rows.into_iter().next() {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no call record; accounting {:?}",
            gw.app.accounting.as_ref().map(Accounting::stats)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn header_values(text: &str, name: &str) -> Vec<String> {
    sip_header_values(text, name)
}

async fn final_response(ws: &mut Ws) -> String {
    loop {
        let r = ws_recv(ws).await;
        if sip_status(&r).is_some_and(|c| c >= 200) {
            return r;
        }
    }
}

const SDP: &str = "v=0\r\no=browser 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n";

fn invite(call_id: &str) -> String {
    format!(
        "INVITE sip:1001@localhost SIP/2.0\r\nVia: SIP/2.0/WS br.invalid;branch=z9hG4bK{call_id}\r\nMax-Forwards: 70\r\nFrom: <sip:2000@localhost>;tag=ft{call_id}\r\nTo: <sip:1001@localhost>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:u1@br.invalid;transport=ws;ob>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
}

fn in_dialog(method: &str, cseq: u32, call_id: &str, ok: &str) -> String {
    let route: String = header_values(ok, "Record-Route")
        .iter()
        .rev()
        .map(|r| format!("Route: {r}\r\n"))
        .collect();
    let to = sip_header(ok, "To");
    let target = rtcgate::proxy::route::uri_of(&sip_header(ok, "Contact")).to_owned();
    format!(
        "{method} {target} SIP/2.0\r\nVia: SIP/2.0/WS br.invalid;branch=z9hG4bK{call_id}{method}\r\nMax-Forwards: 70\r\n{route}From: <sip:2000@localhost>;tag=ft{call_id}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

#[tokio::test]
async fn answered_call_has_a_200_record_and_cdr_list_shows_it() {
    let Some(pbx) = SippRun::spawn("uas.xml", &["-m", "1"]) else {
        require("sipp", false);
        return;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gw = TestGateway::start_with(|c| c.routes = route_to(pbx.port)).await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let call_id = "acct-answered@browser.invalid";
    let before_ms = unix_ms();
    ws_send(&mut ws, &invite(call_id)).await;
    let ok = final_response(&mut ws).await;
    assert_eq!(sip_status(&ok), Some(200), "{ok}");
    ws_send(&mut ws, &in_dialog("ACK", 1, call_id, &ok)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ws_send(&mut ws, &in_dialog("BYE", 2, call_id, &ok)).await;
    assert_eq!(sip_status(&ws_recv(&mut ws).await), Some(200));
    assert!(pbx.finish(Duration::from_secs(20)).await, "sipp PBX failed");

    let r = the_record(&gw).await;
    assert_eq!(r.call_id, call_id);
    assert_eq!(r.disposition, Some(200));
    assert_eq!(r.reason.as_deref(), Some("bye_caller"));
    assert_eq!(r.direction.as_deref(), Some("browser_to_pbx"));
    assert_eq!(r.caller, "2000@localhost");
    assert_eq!(r.callee, "1001@localhost");
    assert_eq!(
        r.destination.as_deref(),
        Some(format!("udp:127.0.0.1:{}", pbx_port_of(&gw)).as_str())
    );
    let answered = r.answered_at_ms.expect("answer time");
    let ended = r.ended_at_ms.expect("end time");
    assert!(before_ms <= r.started_at_ms, "{r:?}");
    assert!(r.started_at_ms <= answered && answered <= ended, "{r:?}");
    // The BYE left 300 ms after the 200 reached the client.
    assert!(r.duration_ms().unwrap() >= 300, "{r:?}");
    assert_eq!(r.media_stats, None, "no rtpengine in this test");

    // The CLI reads the same table.
    let config = gw.dir.path().join("cdr.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"sqlite://{}/rtcgate.db?mode=rwc\"\n",
            gw.dir.path().display()
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_rtcgate"))
            .args(["cdr", "list", "--config"])
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(&["--limit", "5"]);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(call_id), "{text}");
    assert!(text.contains("2000@localhost -> 1001@localhost"), "{text}");
    assert!(text.contains("browser_to_pbx  200 bye_caller"), "{text}");
    let json: serde_json::Value = serde_json::from_str(run(&["--json"]).trim()).unwrap();
    assert_eq!(json["call_id"], call_id);
    assert_eq!(json["disposition"], 200);
    assert_eq!(json["duration_ms"], serde_json::json!(r.duration_ms()));
}

fn pbx_port_of(gw: &TestGateway) -> u16 {
    gw.app.config.routes[0].destination.port()
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A sipp caller (`uac`) through the gateway to a sipp PBX (`uas`); returns
/// the gateway for its record.
async fn sipp_call(uac: &str, uas: &str, uac_args: &[&str]) -> Option<TestGateway> {
    let Some(pbx) = SippRun::spawn_file(&loadtest_scenario(uas), &["-m", "1"]) else {
        require("sipp", false);
        return None;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gw = TestGateway::start_with(|c| c.routes = route_to(pbx.port)).await;
    let target = gw.udp().to_string();
    let mut args = vec![target.as_str(), "-s", "1001", "-m", "1"];
    args.extend_from_slice(uac_args);
    let caller = SippRun::spawn_file(&loadtest_scenario(uac), &args).unwrap();
    assert!(
        caller.finish(Duration::from_secs(20)).await,
        "sipp {uac} failed"
    );
    assert!(
        pbx.finish(Duration::from_secs(20)).await,
        "sipp {uas} failed"
    );
    Some(gw)
}

#[tokio::test]
async fn busy_call_has_a_486_record() {
    let Some(gw) = sipp_call("uac_busy.xml", "pbx_uas_busy.xml", &[]).await else {
        return;
    };
    let r = the_record(&gw).await;
    assert_eq!(r.disposition, Some(486), "{r:?}");
    assert_eq!(r.reason.as_deref(), Some("busy"));
    assert_eq!(r.direction.as_deref(), Some("pbx_to_pbx"));
    assert_eq!(r.caller, "sipp@127.0.0.1");
    assert_eq!(r.callee, "1001@127.0.0.1");
    assert_eq!(r.answered_at_ms, None);
    assert_eq!(r.duration_ms(), None);
    assert!(r.ended_at_ms.unwrap() >= r.started_at_ms);
    assert_eq!(
        r.destination,
        Some(format!("udp:127.0.0.1:{}", pbx_port_of(&gw)))
    );
}

#[tokio::test]
async fn cancelled_call_has_a_487_record() {
    let Some(gw) = sipp_call(
        "uac_cancel.xml",
        "pbx_uas_ringing_forever.xml",
        &["-d", "500"],
    )
    .await
    else {
        return;
    };
    let r = the_record(&gw).await;
    assert_eq!(r.disposition, Some(487), "{r:?}");
    assert_eq!(r.reason.as_deref(), Some("cancelled"));
    assert_eq!(r.answered_at_ms, None);
    // It rang for 500 ms before the caller gave up.
    assert!(r.ended_at_ms.unwrap() - r.started_at_ms >= 500, "{r:?}");
}

#[tokio::test]
async fn call_to_a_missing_pbx_has_a_408_record() {
    // Nothing listens there; T1 = 50 ms makes timer B 3.2 s.
    let dead = pick_udp_port();
    let gw = TestGateway::start_with(|c| {
        c.routes = route_to(dead);
        c.sip.t1_ms = 50;
    })
    .await;
    let mut ws = ws_connect(gw.ws(), None, Some("sip"), None).await.unwrap();
    let call_id = "acct-failed@browser.invalid";
    ws_send(&mut ws, &invite(call_id)).await;
    let resp = final_response(&mut ws).await;
    let code = sip_status(&resp).unwrap();
    assert!(code == 408 || code == 503, "{resp}");
    let r = the_record(&gw).await;
    assert_eq!(r.call_id, call_id);
    assert_eq!(r.disposition, Some(i64::from(code)));
    assert_eq!(
        r.reason.as_deref(),
        Some(if code == 408 { "timeout" } else { "failed" })
    );
    assert_eq!(r.destination, Some(format!("udp:127.0.0.1:{dead}")));
    assert_eq!(r.answered_at_ms, None);
}

#[tokio::test]
async fn failed_over_call_names_every_destination_tried() {
    // The primary is silent (nothing listens), the backup is busy.
    let dead = pick_udp_port();
    let Some(backup) = SippRun::spawn_file(&loadtest_scenario("pbx_uas_busy.xml"), &["-m", "1"])
    else {
        require("sipp", false);
        return;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let routing = rtcgate::config::Config::parse(
        &format!(
            r#"
[[routing.sets]]
name = "pbx"
failover_timeout_ms = 500
probe = {{ interval_ms = 0 }}
destinations = [
  {{ address = "127.0.0.1:{dead}", priority = 0 }},
  {{ address = "127.0.0.1:{}", priority = 1 }},
]
[[routing.rules]]
default = true
set = "pbx"
"#,
            backup.port
        ),
        "test.toml",
    )
    .unwrap()
    .routing;
    let gw = TestGateway::start_with(|c| c.routing = routing).await;
    let target = gw.udp().to_string();
    let caller = SippRun::spawn_file(
        &loadtest_scenario("uac_busy.xml"),
        &[&target, "-s", "1001", "-m", "1"],
    )
    .unwrap();
    assert!(caller.finish(Duration::from_secs(20)).await, "sipp caller");
    assert!(backup.finish(Duration::from_secs(20)).await, "sipp backup");
    let r = the_record(&gw).await;
    assert_eq!(r.disposition, Some(486), "{r:?}");
    assert_eq!(
        r.destination,
        Some(format!(
            "udp:127.0.0.1:{dead},udp:127.0.0.1:{}",
            backup_port(&gw)
        ))
    );
}

fn backup_port(gw: &TestGateway) -> u16 {
    gw.app.config.routing.sets[0].destinations[1].address.port()
}

#[tokio::test]
async fn answered_call_with_rtpengine_carries_the_delete_statistics() {
    let Some(bin) = need_rtpengine() else { return };
    if !require("sipp", which("sipp").is_some()) {
        return;
    }
    let rtp = Daemon::start(&bin);
    let pbx_media = pick_udp_port().to_string();
    let pbx = SippRun::spawn_file(
        &loadtest_scenario("pbx_uas.xml"),
        &[
            "-m",
            "1",
            "-mi",
            "127.0.0.1",
            "-mp",
            &pbx_media,
            "-rtp_echo",
        ],
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ng = rtp.ng;
    let gw = TestGateway::start_with(|c| {
        c.routes = route_to(pbx.port);
        c.rtpengine.enabled = true;
        c.rtpengine.instances = vec![RtpengineInstance {
            address: ng,
            weight: 1,
        }];
    })
    .await;
    let target = gw.udp().to_string();
    let caller_media = pick_udp_port().to_string();
    // Two seconds of PCMA (the scenario's pcap) toward the PBX, which echoes it.
    let caller = SippRun::spawn_file(
        &loadtest_scenario("uac_call_rtp.xml"),
        &[
            &target,
            "-s",
            "1001",
            "-m",
            "1",
            "-d",
            "2000",
            "-mi",
            "127.0.0.1",
            "-mp",
            &caller_media,
        ],
    )
    .unwrap();
    assert!(caller.finish(Duration::from_secs(25)).await, "sipp caller");
    assert!(pbx.finish(Duration::from_secs(25)).await, "sipp PBX");
    let r = the_record(&gw).await;
    assert_eq!(r.disposition, Some(200), "{r:?}");
    assert_eq!(r.reason.as_deref(), Some("bye_caller"));
    let media: serde_json::Value =
        serde_json::from_str(r.media_stats.as_deref().expect("media statistics")).unwrap();
    eprintln!("media statistics of the record: {media}");
    let legs = media["legs"].as_array().unwrap();
    let leg = |name: &str| {
        legs.iter()
            .find(|l| l["leg"] == name)
            .unwrap_or_else(|| panic!("no {name} leg in {media}"))
    };
    let (caller_leg, callee_leg) = (leg("caller"), leg("callee"));
    assert!(caller_leg["packets"].as_u64().unwrap() > 0, "{media}");
    assert!(caller_leg["bytes"].as_u64().unwrap() > caller_leg["packets"].as_u64().unwrap());
    assert!(callee_leg["packets"].as_u64().unwrap() > 0, "echo: {media}");
    assert!(media["rtp"]["packets"].as_u64().unwrap() > 0, "{media}");
    assert!(rtp.calls().is_empty(), "deleted from rtpengine");
}

// ------------------------------------------------- losses, never waits

fn started(call_id: &str) -> DialogEvent {
    DialogEvent {
        call_id: call_id.into(),
        at: Instant::now(),
        kind: DialogEventKind::Started(CallStart {
            caller: "a@x".into(),
            caller_tag: "t".into(),
            callee: "b@x".into(),
            direction: None,
            destinations: vec![],
        }),
    }
}

fn failed(call_id: &str) -> DialogEvent {
    DialogEvent {
        call_id: call_id.into(),
        at: Instant::now(),
        kind: DialogEventKind::Failed {
            status: 486,
            destinations: vec![],
        },
    }
}

#[tokio::test]
async fn records_wait_out_a_database_outage_and_nothing_waits_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/a.db?mode=rwc", dir.path().display()))
        .await
        .unwrap();
    let acct = Accounting::start(store.clone(), AccountingConfig::default());
    acct.dialog_event(&started("ok1"));
    acct.dialog_event(&failed("ok1"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while acct.stats().written < 1 {
        assert!(Instant::now() < deadline, "{:?}", acct.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The database goes away for good (the pool is closed): the record is
    // held, not lost, and nothing waits for it.
    store.close().await;
    let t0 = Instant::now();
    acct.dialog_event(&started("held1"));
    acct.dialog_event(&failed("held1"));
    assert!(t0.elapsed() < Duration::from_millis(100));
    while acct.stats().held < 1 {
        assert!(Instant::now() < deadline, "{:?}", acct.stats());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let s = acct.stats();
    assert_eq!((s.written, s.dropped_db_error), (1, 0), "{s:?}");
    // A shutdown flush does not hang on it either.
    assert!(acct.flush(Duration::from_secs(5)).await);
    assert_eq!(acct.stats().held, 1);
}

#[tokio::test]
async fn a_full_hold_loses_the_oldest_records_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/a.db?mode=rwc", dir.path().display()))
        .await
        .unwrap();
    store.close().await;
    let acct = Accounting::start(
        store,
        AccountingConfig {
            queue: 4,
            ..AccountingConfig::default()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    for i in 0..6 {
        acct.dialog_event(&started(&format!("h{i}")));
        acct.dialog_event(&failed(&format!("h{i}")));
        // Let the collector and the writer take them (queue of 4).
        while acct.stats().held + acct.stats().dropped_db_error < i + 1 {
            assert!(Instant::now() < deadline, "{:?}", acct.stats());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let s = acct.stats();
    assert_eq!((s.held, s.dropped_db_error, s.written), (4, 2, 0), "{s:?}");
}

#[tokio::test]
async fn full_queue_drops_events_instead_of_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/a.db?mode=rwc", dir.path().display()))
        .await
        .unwrap();
    let acct = Accounting::start(
        store,
        AccountingConfig {
            queue: 2,
            ..AccountingConfig::default()
        },
    );
    // A current-thread runtime: the collector cannot run before this loop
    // yields, so exactly the queue's capacity gets in.
    for i in 0..10 {
        acct.dialog_event(&started(&format!("c{i}")));
    }
    assert_eq!(acct.stats().events_dropped, 8);
}

#[tokio::test]
async fn flush_writes_ended_calls_without_waiting_for_media() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::connect(&format!("sqlite://{}/a.db?mode=rwc", dir.path().display()))
        .await
        .unwrap();
    let acct = Accounting::start(
        store.clone(),
        AccountingConfig {
            media_wait: Duration::from_secs(3600),
            ..AccountingConfig::default()
        },
    );
    acct.dialog_event(&started("ended"));
    acct.dialog_event(&failed("ended"));
    acct.dialog_event(&started("still-ringing"));
    assert!(acct.flush(Duration::from_secs(10)).await, "flush in time");
    let rows = store.list_call_records(10, None).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.call_id.as_str()).collect::<Vec<_>>(),
        vec!["ended"]
    );
    assert_eq!(rows[0].reason.as_deref(), Some("busy"));
    let s = acct.stats();
    assert_eq!((s.written, s.open_calls), (1, 1), "{s:?}");
}
