//! Integration tests against real rtpengine daemons (userspace forwarding only).
//! Under `CI=true` a missing rtpengine or fixture fails the tests.

mod common;

use std::time::{Duration, Instant};

use common::{Rtpengine, fixture};
use ngclient::{
    CallRef, ClientConfig, CoreConfig, Health, InstanceConfig, MediaRequest, NgClient, NgError,
    Target,
};

const LIMIT: Duration = Duration::from_secs(10);

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// WebRTC → plain RTP leg (towards a legacy PBX).
fn legacy_profile(sdp: Vec<u8>, call: &str, from: &str) -> MediaRequest {
    MediaRequest {
        ice: Some("remove".into()),
        dtls: Some("off".into()),
        transport_protocol: Some("RTP/AVP".into()),
        rtcp_mux: strs(&["demux"]),
        sdes: strs(&["off"]),
        replace: strs(&["origin"]),
        ..MediaRequest::new(sdp, call, from)
    }
}

/// Plain → WebRTC leg (towards the browser).
fn webrtc_profile(sdp: Vec<u8>, call: &str, from: &str) -> MediaRequest {
    MediaRequest {
        ice: Some("force".into()),
        dtls: Some("passive".into()),
        transport_protocol: Some("UDP/TLS/RTP/SAVPF".into()),
        rtcp_mux: strs(&["require"]),
        sdes: strs(&["off"]),
        flags: strs(&["generate-mid"]),
        replace: strs(&["origin"]),
        ..MediaRequest::new(sdp, call, from)
    }
}

fn config(instances: &[&Rtpengine]) -> ClientConfig {
    ClientConfig {
        core: CoreConfig {
            instances: instances
                .iter()
                .map(|r| InstanceConfig::new(r.ng))
                .collect(),
            ping_interval: Some(Duration::from_millis(200)),
            ..CoreConfig::default()
        },
        bind: None,
    }
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test step timed out")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_webrtc(sdp: &str) {
    assert!(sdp.contains("UDP/TLS/RTP/SAVPF"), "{sdp}");
    assert!(sdp.contains("a=candidate:"), "{sdp}");
    assert!(sdp.contains("a=fingerprint:"), "{sdp}");
    assert!(sdp.contains("a=ice-ufrag:"), "{sdp}");
    assert!(sdp.contains("a=rtcp-mux"), "{sdp}");
    assert!(sdp.contains("127.0.0.1"), "{sdp}");
}

fn assert_plain(sdp: &str) {
    assert!(sdp.contains("c=IN IP4 127.0.0.1"), "{sdp}");
    assert!(sdp.contains(" RTP/AVP "), "{sdp}");
    for absent in ["a=candidate", "a=fingerprint", "a=ice-ufrag", "SAVPF"] {
        assert!(!sdp.contains(absent), "{absent} in {sdp}");
    }
}

#[tokio::test]
async fn browser_to_pbx_call_flow() {
    let Some(engine) = Rtpengine::start() else {
        return;
    };
    let (Some(chrome), Some(pbx)) = (
        fixture("sdp", "out-1_offer_browser-to-proxy_webrtc.sdp"),
        fixture("sdp", "out-3_answer_pbx-to-proxy_plain.sdp"),
    ) else {
        return;
    };
    let client = NgClient::start(config(&[&engine])).await.unwrap();
    let call = format!("out-{}", std::process::id());

    let offer = bounded(client.offer(&legacy_profile(chrome, &call, "browser1"), Target::Auto))
        .await
        .unwrap();
    let plain = text(offer.sdp().unwrap());
    assert_plain(&plain);
    assert_eq!(offer.instance, 0);
    assert_eq!(client.call_instance(&call).await.unwrap(), Some(0));

    let mut answer = webrtc_profile(pbx, &call, "browser1");
    answer.to_tag = Some("pbx1".into());
    let answer = bounded(client.answer(&answer, Target::Auto)).await.unwrap();
    let webrtc = text(answer.sdp().unwrap());
    assert_webrtc(&webrtc);

    let q = bounded(client.query(&CallRef::new(&call), Target::Auto))
        .await
        .unwrap();
    let stats = q.reply.call_stats();
    assert!(stats.created.is_some());
    assert!(
        stats.tags.contains_key("browser1"),
        "{:?}",
        stats.tags.keys()
    );
    assert!(stats.tags.contains_key("pbx1"));
    let ports: Vec<u16> = stats
        .streams()
        .map(|(_, s)| s.local_port)
        .filter(|p| *p != 0)
        .collect();
    assert!(!ports.is_empty());
    assert!(
        ports
            .iter()
            .all(|p| (engine.ports.0..=engine.ports.1).contains(p)),
        "{ports:?} outside {:?}",
        engine.ports
    );
    let browser_media = &stats.tags["browser1"].medias[0];
    assert_eq!(browser_media.protocol.as_deref(), Some("UDP/TLS/RTP/SAVPF"));

    let listed = bounded(client.list(0, None)).await.unwrap();
    assert_eq!(listed, vec![call.clone()]);

    let del = bounded(client.delete(&CallRef::new(&call).from_tag("browser1"), Target::Auto))
        .await
        .unwrap();
    assert_eq!(del.reply.call_stats().tags.len(), 2);
    assert_eq!(client.call_instance(&call).await.unwrap(), None);
    assert!(bounded(client.list(0, None)).await.unwrap().is_empty());

    let stats = bounded(client.statistics(0)).await.unwrap();
    assert!(stats.statistics().is_some());
    assert_eq!(stats.statistic("currentstatistics", "sessionsown"), Some(0));

    let m = client.metrics().await.unwrap();
    for cmd in ["offer", "answer", "query", "list", "delete"] {
        let t = m.total(cmd);
        assert!(t.ok >= 1 && t.latency.count >= 1, "{cmd}: {t:?}");
        assert_eq!(t.timeouts, 0);
    }
}

#[tokio::test]
async fn pbx_to_browser_offer_gets_webrtc_profile() {
    let Some(engine) = Rtpengine::start() else {
        return;
    };
    let Some(plain) = fixture("sdp", "in-1_offer_caller-to-proxy_plain.sdp") else {
        return;
    };
    let client = NgClient::start(config(&[&engine])).await.unwrap();
    let call = format!("in-{}@127.0.0.1", std::process::id());
    // DTLS-reverse is undocumented; 10.5 must still accept the offer with it.
    let mut req = webrtc_profile(plain, &call, "caller1");
    req.dtls_reverse = Some("passive".into());
    let offer = bounded(client.offer(&req, Target::Auto)).await.unwrap();
    eprintln!("warning with DTLS-reverse: {:?}", offer.reply.warning);
    let sdp = text(offer.sdp().unwrap());
    assert_webrtc(&sdp);
    assert!(sdp.contains("a=setup:"), "{sdp}");
    bounded(client.delete(&CallRef::new(&call).from_tag("caller1"), Target::Auto))
        .await
        .unwrap();
    assert!(bounded(client.list(0, None)).await.unwrap().is_empty());
}

#[tokio::test]
async fn error_reply_is_typed() {
    let Some(engine) = Rtpengine::start() else {
        return;
    };
    let client = NgClient::start(config(&[&engine])).await.unwrap();
    let mut req = MediaRequest::new("v=0\r\n", "no-such-call", "a");
    req.to_tag = Some("b".into());
    let err = bounded(client.answer(&req, Target::Auto))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        NgError::Rtpengine {
            reason: "Unknown call-id".into()
        }
    );
    // Delete of an unknown call with `fatal` is an error too.
    let mut del = CallRef::new("no-such-call").from_tag("a");
    del.flags = strs(&["fatal"]);
    let err = bounded(client.delete(&del, Target::Auto))
        .await
        .unwrap_err();
    assert!(matches!(err, NgError::Rtpengine { .. }), "{err:?}");
    assert!(client.metrics().await.unwrap().total("answer").errors >= 1);
}

/// Call-ids whose weighted-rendezvous first choice is `addr` among `all`.
fn calls_ranked_first(
    all: &[std::net::SocketAddr],
    addr: std::net::SocketAddr,
    n: usize,
) -> Vec<String> {
    let keys: Vec<Vec<u8>> = all.iter().map(|a| a.to_string().into_bytes()).collect();
    let want = all.iter().position(|a| *a == addr).unwrap();
    (0..)
        .map(|i| format!("fo-{}-{i}", std::process::id()))
        .filter(|c| {
            ngclient::hrw::rank(c.as_bytes(), keys.iter().map(|k| (k.as_slice(), 1)))[0] == want
        })
        .take(n)
        .collect()
}

async fn wait_health(client: &NgClient, id: usize, want: Health) -> Duration {
    let start = Instant::now();
    loop {
        let st = client.instances().await.unwrap();
        if st[id].health == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < LIMIT,
            "instance {id} never became {want:?}: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn failover_when_an_instance_dies_and_recovery() {
    let Some(live) = Rtpengine::start() else {
        return;
    };
    let Some(mut doomed) = Rtpengine::start() else {
        return;
    };
    let (Some(chrome), Some(pbx)) = (
        fixture("sdp", "out-1_offer_browser-to-proxy_webrtc.sdp"),
        fixture("sdp", "out-3_answer_pbx-to-proxy_plain.sdp"),
    ) else {
        return;
    };
    let client = NgClient::start(config(&[&live, &doomed])).await.unwrap();
    let all = [live.ng, doomed.ng];

    // A call in progress on the instance that survives.
    let kept = calls_ranked_first(&all, live.ng, 1).remove(0);
    let r = bounded(client.offer(&legacy_profile(chrome.clone(), &kept, "k1"), Target::Auto))
        .await
        .unwrap();
    assert_eq!(r.instance, 0);

    doomed.kill();

    // New calls that would hash to the dead instance: the first one pays the failover
    // (3 × 150 ms), well under a second.
    let moved = calls_ranked_first(&all, doomed.ng, 3);
    let t = Instant::now();
    let r = bounded(client.offer(
        &legacy_profile(chrome.clone(), &moved[0], "m0"),
        Target::Auto,
    ))
    .await
    .unwrap();
    let failover = t.elapsed();
    assert_eq!(r.instance, 0);
    assert!(
        failover < Duration::from_secs(1),
        "failover took {failover:?}"
    );
    eprintln!("failover took {failover:?}");

    // The dead one is down; later new calls skip it at once.
    wait_health(&client, 1, Health::Down).await;
    let t = Instant::now();
    let r = bounded(client.offer(
        &legacy_profile(chrome.clone(), &moved[1], "m1"),
        Target::Auto,
    ))
    .await
    .unwrap();
    assert_eq!(r.instance, 0);
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );

    // The call already on the live instance keeps working.
    let mut ans = webrtc_profile(pbx, &kept, "k1");
    ans.to_tag = Some("kpbx".into());
    let a = bounded(client.answer(&ans, Target::Auto)).await.unwrap();
    assert_webrtc(&text(a.sdp().unwrap()));
    assert_eq!(a.instance, 0);
    for (call, tag) in [(&kept, "k1"), (&moved[0], "m0"), (&moved[1], "m1")] {
        bounded(client.delete(&CallRef::new(call.as_str()).from_tag(tag), Target::Auto))
            .await
            .unwrap();
    }
    assert!(bounded(client.list(0, None)).await.unwrap().is_empty());

    // Restart on the same address: back up after pings.
    let restarted = Rtpengine::start_at(doomed.ng, doomed.ports).unwrap();
    let back = wait_health(&client, 1, Health::Up).await;
    eprintln!("back up after {back:?}");
    let r = bounded(client.offer(&legacy_profile(chrome, &moved[2], "m2"), Target::Auto))
        .await
        .unwrap();
    assert_eq!(r.instance, 1, "HRW first choice is used again once up");
    bounded(client.delete(
        &CallRef::new(moved[2].as_str()).from_tag("m2"),
        Target::Auto,
    ))
    .await
    .unwrap();

    let m = client.metrics().await.unwrap();
    assert!(m.failovers >= 1);
    assert!(m.total("offer").timeouts >= 1);
    drop(restarted);
}
