//! The media service against a real rtpengine (userspace, loopback, private ports), driven
//! with the SDPs of the reference capture (`tests/fixtures/media/`, copied from the shared
//! fixtures). Needs the Debian `rtpengine-daemon` binary; skipped when absent unless
//! `CI=true`, where its absence fails the test.

use std::time::{Duration, Instant};

use rtcgate::media::{
    EndReason, LegProfile, Media, MediaConfig, MediaError, RtpengineInstance, SdpContext,
};
mod common;

use rtcgate_sdp::{Direction, Limits, MediaProfile, SdpInfo, SetupRole, inspect};

use common::rtpengine::{Daemon, free_udp_port, need_rtpengine};

// ---------------------------------------------------------------- helpers

fn fixture(name: &str) -> Vec<u8> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/media");
    let entry = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with(name))
        .unwrap_or_else(|| panic!("fixture {name} in {}", dir.display()));
    std::fs::read(entry.path()).unwrap()
}

/// The SDP with its direction attribute replaced and the `o=` version raised by `bump`
/// (a hold or unhold re-offer).
fn with_direction(sdp: &[u8], dir: &str, bump: u64) -> Vec<u8> {
    let text = String::from_utf8(sdp.to_vec()).unwrap();
    let mut out = String::new();
    for line in text.split_inclusive("\r\n") {
        let l = line.trim_end();
        if ["a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive"].contains(&l) {
            out.push_str(&format!("a={dir}\r\n"));
        } else if let Some(rest) = line.strip_prefix("o=") {
            // o=<user> <id> <version> ...: version + 1
            let mut parts: Vec<String> = rest.split(' ').map(str::to_owned).collect();
            let v: u64 = parts[2].parse().unwrap();
            parts[2] = (v + bump).to_string();
            out.push_str(&format!("o={}", parts.join(" ")));
        } else {
            out.push_str(line);
        }
    }
    out.into_bytes()
}

/// What a browser would answer to rtpengine's WebRTC offer: Chrome's ICE credentials,
/// candidate and fingerprint from `out-1`, `a=setup:active`, the offer's payload types
/// and mid, and the given direction.
fn browser_answer(offer: &[u8], dir: &str, version: u32) -> Vec<u8> {
    let offer = std::str::from_utf8(offer).unwrap();
    let mline = offer.lines().find(|l| l.starts_with("m=audio")).unwrap();
    let pts: Vec<&str> = mline.split(' ').skip(3).collect();
    let mid = offer
        .lines()
        .find_map(|l| l.strip_prefix("a=mid:"))
        .unwrap_or("0");
    let rtpmaps: Vec<&str> = offer
        .lines()
        .filter(|l| l.starts_with("a=rtpmap:"))
        .collect();
    let mut s = format!(
        "v=0\r\no=- 604887912138858659 {version} IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
         m=audio 51251 UDP/TLS/RTP/SAVPF {}\r\nc=IN IP4 127.0.0.1\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
         a=candidate:478803288 1 udp 2122260223 127.0.0.1 51251 typ host generation 0\r\n\
         a=ice-ufrag:DjnD\r\na=ice-pwd:C+uBlwbwVFG1Y3hYiWzMRnoA\r\n\
         a=fingerprint:sha-256 0C:0F:FC:AB:A7:0B:81:B5:D4:A6:7E:15:5D:EC:E1:2C:EE:97:F7:72:5A:CE:F6:FB:5D:B0:E7:38:BB:02:FD:C8\r\n\
         a=setup:active\r\na=mid:{mid}\r\na={dir}\r\na=rtcp-mux\r\n",
        pts.join(" ")
    );
    for r in rtpmaps {
        s.push_str(r);
        s.push_str("\r\n");
    }
    s.into_bytes()
}

fn info(sdp: &[u8]) -> SdpInfo {
    inspect(sdp, &Limits::default())
        .unwrap_or_else(|e| panic!("{e}\n{}", String::from_utf8_lossy(sdp)))
}

fn text(sdp: &[u8]) -> String {
    String::from_utf8_lossy(sdp).into_owned()
}

fn assert_plain(sdp: &[u8]) -> u32 {
    let i = info(sdp);
    let t = text(sdp);
    assert_eq!(i.profile(), MediaProfile::PlainRtp, "{t}");
    let m = &i.media[0];
    assert_eq!(m.proto, "RTP/AVP", "{t}");
    assert!(
        !m.ice.present() && m.fingerprints.is_empty() && !m.rtcp_mux,
        "{t}"
    );
    assert!(!t.contains("a=candidate") && !t.contains("a=setup"), "{t}");
    m.port
}

fn assert_webrtc(sdp: &[u8]) -> (u32, String) {
    let i = info(sdp);
    let t = text(sdp);
    assert_eq!(i.profile(), MediaProfile::WebRtc, "{t}");
    let m = &i.media[0];
    assert_eq!(m.proto, "UDP/TLS/RTP/SAVPF", "{t}");
    assert!(m.ice.present() && m.ice.candidates >= 1, "{t}");
    assert!(m.rtcp_mux, "{t}");
    let fp = m.fingerprints.first().cloned().unwrap_or_default();
    assert!(!fp.is_empty(), "{t}");
    (m.port, fp)
}

fn setup(sdp: &[u8]) -> Option<SetupRole> {
    info(sdp).media[0].setup
}

fn direction(sdp: &[u8]) -> Direction {
    info(sdp).media[0].direction
}

/// Builds an SdpContext.
fn ctx<'a>(
    call_id: &'a str,
    from: &'a str,
    to: Option<&'a str>,
    branch: &'a str,
    sdp: &'a [u8],
    target: LegProfile,
) -> SdpContext<'a> {
    SdpContext {
        call_id,
        from_tag: from,
        to_tag: to,
        via_branch: branch,
        sdp,
        target,
        codec_policy: None,
        received_from: Some("127.0.0.1".parse().unwrap()),
    }
}

/// The DTLS role rtpengine holds toward the party with this tag (`DTLS role ...` flag of
/// its media in a `query` reply).
async fn dtls_role(media: &Media, call: &str, tag: &str) -> Option<String> {
    let r = media
        .client()
        .query(&ngclient::CallRef::new(call), ngclient::Target::Auto)
        .await
        .unwrap();
    let stats = r.reply.call_stats();
    let t = stats.tags.get(tag)?;
    t.medias
        .iter()
        .flat_map(|m| m.flags.iter())
        .find_map(|f| f.strip_prefix("DTLS role ").map(str::to_owned))
}

async fn calls_in_rtpengine(media: &Media) -> Vec<String> {
    media.client().list(0, Some(100)).await.unwrap()
}

async fn start(d: &Daemon) -> Media {
    let (media, _events) = Media::start(d.config()).await.unwrap();
    media
}

// ---------------------------------------------------------------- tests

/// Browser calls the PBX; the PBX (callee) puts the browser on hold and back, then the
/// browser does the same; BYE. Ports and the DTLS role stay put throughout.
#[tokio::test]
async fn browser_to_pbx_with_hold_from_each_side() {
    let Some(bin) = need_rtpengine() else { return };
    let d = Daemon::start(&bin);
    let media = start(&d).await;
    let call = "out-call-1";
    let (b, p) = ("browser-tag", "pbx-tag");

    // INVITE browser → PBX: the PBX gets plain RTP.
    let chrome_offer = fixture("out-1");
    let to_pbx = media
        .offer(&ctx(
            call,
            b,
            None,
            "z9hG4bK-b1",
            &chrome_offer,
            LegProfile::PlainRtp,
        ))
        .await
        .unwrap();
    let pbx_port = assert_plain(&to_pbx);
    assert!(!text(&to_pbx).contains("a=extmap:"), "{}", text(&to_pbx));

    // 200 PBX → browser: WebRTC, rtpengine is the DTLS server.
    let pbx_answer = fixture("out-3");
    let to_browser = media
        .answer(
            &ctx(
                call,
                b,
                Some(p),
                "z9hG4bK-b1",
                &pbx_answer,
                LegProfile::WebRtc,
            ),
            200,
        )
        .await
        .unwrap();
    let (browser_port, fp) = assert_webrtc(&to_browser);
    assert_eq!(setup(&to_browser), Some(SetupRole::Passive));
    media.invite_final(call, "z9hG4bK-b1", 200).await;
    assert_eq!(media.active_calls(), 1);
    assert_eq!(dtls_role(&media, call, b).await.as_deref(), Some("passive"));

    // re-INVITE from the PBX (callee): From = PBX tag, To = browser tag; hold.
    let pbx_hold = with_direction(&pbx_answer, "sendonly", 1);
    let hold_offer = media
        .offer(&ctx(
            call,
            p,
            Some(b),
            "z9hG4bK-r1",
            &pbx_hold,
            LegProfile::WebRtc,
        ))
        .await
        .unwrap();
    let (port2, fp2) = assert_webrtc(&hold_offer);
    assert_eq!(port2, browser_port, "browser-side port kept");
    assert_eq!(fp2, fp, "same certificate");
    assert_ne!(
        setup(&hold_offer),
        Some(SetupRole::Active),
        "rtpengine must not take the DTLS client role: {}",
        text(&hold_offer)
    );
    assert_eq!(direction(&hold_offer), Direction::SendOnly);
    let browser_hold_answer = browser_answer(&hold_offer, "recvonly", 3);
    let to_pbx2 = media
        .answer(
            &ctx(
                call,
                p,
                Some(b),
                "z9hG4bK-r1",
                &browser_hold_answer,
                LegProfile::PlainRtp,
            ),
            200,
        )
        .await
        .unwrap();
    assert_eq!(assert_plain(&to_pbx2), pbx_port, "PBX-side port kept");
    assert_eq!(direction(&to_pbx2), Direction::RecvOnly);
    media.invite_final(call, "z9hG4bK-r1", 200).await;
    assert_eq!(dtls_role(&media, call, b).await.as_deref(), Some("passive"));

    // Unhold from the PBX.
    let pbx_unhold = with_direction(&pbx_answer, "sendrecv", 2);
    let unhold = media
        .offer(&ctx(
            call,
            p,
            Some(b),
            "z9hG4bK-r2",
            &pbx_unhold,
            LegProfile::WebRtc,
        ))
        .await
        .unwrap();
    assert_eq!(assert_webrtc(&unhold).0, browser_port);
    assert_ne!(setup(&unhold), Some(SetupRole::Active));
    let ans = browser_answer(&unhold, "sendrecv", 4);
    let to_pbx3 = media
        .answer(
            &ctx(call, p, Some(b), "z9hG4bK-r2", &ans, LegProfile::PlainRtp),
            200,
        )
        .await
        .unwrap();
    assert_eq!(assert_plain(&to_pbx3), pbx_port);
    assert_eq!(dtls_role(&media, call, b).await.as_deref(), Some("passive"));

    // re-INVITE from the browser (caller): hold.
    let chrome_hold = with_direction(&chrome_offer, "sendonly", 1);
    let to_pbx4 = media
        .offer(&ctx(
            call,
            b,
            Some(p),
            "z9hG4bK-r3",
            &chrome_hold,
            LegProfile::PlainRtp,
        ))
        .await
        .unwrap();
    assert_eq!(assert_plain(&to_pbx4), pbx_port);
    assert_eq!(direction(&to_pbx4), Direction::SendOnly);
    let pbx_recvonly = with_direction(&pbx_answer, "recvonly", 3);
    let to_browser2 = media
        .answer(
            &ctx(
                call,
                b,
                Some(p),
                "z9hG4bK-r3",
                &pbx_recvonly,
                LegProfile::WebRtc,
            ),
            200,
        )
        .await
        .unwrap();
    let (port3, fp3) = assert_webrtc(&to_browser2);
    assert_eq!((port3, fp3), (browser_port, fp.clone()));
    assert_eq!(setup(&to_browser2), Some(SetupRole::Passive));
    assert_eq!(direction(&to_browser2), Direction::RecvOnly);
    assert_eq!(dtls_role(&media, call, b).await.as_deref(), Some("passive"));

    // BYE: one delete, nothing left in rtpengine.
    assert_eq!(calls_in_rtpengine(&media).await, vec![call.to_owned()]);
    assert!(media.terminate(call, EndReason::Bye).await);
    assert!(!media.terminate(call, EndReason::Bye).await, "only once");
    assert!(calls_in_rtpengine(&media).await.is_empty());
    assert_eq!(media.active_calls(), 0);

    // A late re-INVITE after the BYE is refused, not re-created in rtpengine.
    let late = media
        .offer(&ctx(
            call,
            p,
            Some(b),
            "z9hG4bK-r9",
            &pbx_hold,
            LegProfile::WebRtc,
        ))
        .await;
    assert!(
        matches!(late, Err(MediaError::CallEnded { .. })),
        "{late:?}"
    );
    assert!(calls_in_rtpengine(&media).await.is_empty());
}

/// A legacy caller calls the browser (the fixture's incoming call), then CANCEL-free BYE
/// from the caller.
#[tokio::test]
async fn pbx_to_browser() {
    let Some(bin) = need_rtpengine() else { return };
    let d = Daemon::start(&bin);
    let media = start(&d).await;
    let call = "in-call-1";
    let (c, b) = ("caller-tag", "browser-tag");

    let to_browser = media
        .offer(&ctx(
            call,
            c,
            None,
            "z9hG4bK-i1",
            &fixture("in-1"),
            LegProfile::WebRtc,
        ))
        .await
        .unwrap();
    let (port, _) = assert_webrtc(&to_browser);
    let t = text(&to_browser);
    assert!(t.contains("a=mid:"), "generate-mid: {t}");
    assert_ne!(setup(&to_browser), Some(SetupRole::Active), "{t}");

    let to_caller = media
        .answer(
            &ctx(
                call,
                c,
                Some(b),
                "z9hG4bK-i1",
                &fixture("in-3"),
                LegProfile::PlainRtp,
            ),
            200,
        )
        .await
        .unwrap();
    assert_plain(&to_caller);
    assert!(text(&to_caller).contains("telephone-event"));
    media.invite_final(call, "z9hG4bK-i1", 200).await;

    // Browser (callee) re-INVITEs for hold: its From tag, the caller's To tag.
    let browser_hold = browser_answer(&to_browser, "sendonly", 3);
    let hold_to_caller = media
        .offer(&ctx(
            call,
            b,
            Some(c),
            "z9hG4bK-r1",
            &browser_hold,
            LegProfile::PlainRtp,
        ))
        .await
        .unwrap();
    assert_plain(&hold_to_caller);
    assert_eq!(direction(&hold_to_caller), Direction::SendOnly);
    let caller_recvonly = with_direction(&fixture("in-1"), "recvonly", 1);
    let to_browser2 = media
        .answer(
            &ctx(
                call,
                b,
                Some(c),
                "z9hG4bK-r1",
                &caller_recvonly,
                LegProfile::WebRtc,
            ),
            200,
        )
        .await
        .unwrap();
    assert_eq!(
        assert_webrtc(&to_browser2).0,
        port,
        "browser-side port kept"
    );
    assert_eq!(setup(&to_browser2), Some(SetupRole::Passive));

    assert!(media.terminate(call, EndReason::Bye).await);
    assert!(calls_in_rtpengine(&media).await.is_empty());
}

/// INVITE without SDP from a legacy phone to a browser: the offer comes in the browser's
/// 200, the answer in the phone's ACK.
#[tokio::test]
async fn late_offer() {
    let Some(bin) = need_rtpengine() else { return };
    let d = Daemon::start(&bin);
    let media = start(&d).await;
    let call = "late-1";
    let (phone, b) = ("phone-tag", "browser-tag");

    media
        .invite_without_sdp(call, phone, None, "z9hG4bK-l1")
        .unwrap();
    assert!(
        calls_in_rtpengine(&media).await.is_empty(),
        "no ng call without SDP"
    );
    // 200 from the browser carries Chrome's offer; it goes to the phone as plain RTP.
    let to_phone = media
        .answer(
            &ctx(
                call,
                phone,
                Some(b),
                "z9hG4bK-l1",
                &fixture("out-1"),
                LegProfile::PlainRtp,
            ),
            200,
        )
        .await
        .unwrap();
    assert_plain(&to_phone);
    media.invite_final(call, "z9hG4bK-l1", 200).await;
    // ACK from the phone carries its answer; the browser gets WebRTC.
    let to_browser = media
        .answer_in_request(&ctx(
            call,
            phone,
            Some(b),
            "z9hG4bK-ack",
            &fixture("out-3"),
            LegProfile::WebRtc,
        ))
        .await
        .unwrap();
    assert_webrtc(&to_browser);
    assert_eq!(setup(&to_browser), Some(SetupRole::Passive));

    assert!(media.terminate(call, EndReason::DialogTimeout).await);
    assert!(calls_in_rtpengine(&media).await.is_empty());
}

/// Every way a call can end leaves rtpengine empty.
#[tokio::test]
async fn every_ending_leaves_rtpengine_empty() {
    let Some(bin) = need_rtpengine() else { return };
    let d = Daemon::start(&bin);
    let media = start(&d).await;
    let offer = fixture("out-1");

    // CANCEL while ringing, then the 487 and a 200 crossing the CANCEL.
    media
        .offer(&ctx(
            "c-cancel",
            "A",
            None,
            "br1",
            &offer,
            LegProfile::PlainRtp,
        ))
        .await
        .unwrap();
    assert!(media.terminate("c-cancel", EndReason::Cancel).await);
    media.invite_final("c-cancel", "br1", 487).await;
    let crossing = media
        .answer(
            &ctx(
                "c-cancel",
                "A",
                Some("B"),
                "br1",
                &fixture("out-3"),
                LegProfile::WebRtc,
            ),
            200,
        )
        .await;
    assert!(matches!(crossing, Err(MediaError::CallEnded { .. })));

    // Final failure after serial failover to a second PBX.
    media
        .offer(&ctx(
            "c-fail",
            "A",
            None,
            "br1",
            &offer,
            LegProfile::PlainRtp,
        ))
        .await
        .unwrap();
    media.invite_final("c-fail", "br1", 503).await;
    media
        .offer(&ctx(
            "c-fail",
            "A",
            None,
            "br2",
            &offer,
            LegProfile::PlainRtp,
        ))
        .await
        .unwrap();
    media.invite_final("c-fail", "br2", 486).await;
    assert!(media.terminate("c-fail", EndReason::Failed).await);

    // Transaction timeout.
    media
        .offer(&ctx(
            "c-timeout",
            "A",
            None,
            "br1",
            &offer,
            LegProfile::PlainRtp,
        ))
        .await
        .unwrap();
    media.invite_final("c-timeout", "br1", 408).await;
    assert!(
        media
            .terminate("c-timeout", EndReason::TransactionTimeout)
            .await
    );

    // Shutdown with a confirmed call still up.
    media
        .offer(&ctx("c-up", "A", None, "br1", &offer, LegProfile::PlainRtp))
        .await
        .unwrap();
    media
        .answer(
            &ctx(
                "c-up",
                "A",
                Some("B"),
                "br1",
                &fixture("out-3"),
                LegProfile::WebRtc,
            ),
            200,
        )
        .await
        .unwrap();
    assert_eq!(calls_in_rtpengine(&media).await, vec!["c-up".to_owned()]);
    assert_eq!(media.shutdown().await, 1);
    assert!(calls_in_rtpengine(&media).await.is_empty());
    assert_eq!(media.active_calls(), 0);
}

/// A browser whose WebSocket drops mid-call: after the grace the call is deleted and the
/// proxy told to tear it down.
#[tokio::test]
async fn ws_drop_grace_tears_down() {
    let Some(bin) = need_rtpengine() else { return };
    let d = Daemon::start(&bin);
    let cfg = MediaConfig {
        ws_drop_grace_ms: 200,
        ..d.config()
    };
    let (media, mut events) = Media::start(cfg).await.unwrap();
    let call = "ws-1";
    media
        .offer(&ctx(
            call,
            "A",
            None,
            "br1",
            &fixture("out-1"),
            LegProfile::PlainRtp,
        ))
        .await
        .unwrap();
    media
        .answer(
            &ctx(
                call,
                "A",
                Some("B"),
                "br1",
                &fixture("out-3"),
                LegProfile::WebRtc,
            ),
            200,
        )
        .await
        .unwrap();
    media.ws_dropped(call);
    let ev = tokio::time::timeout(Duration::from_secs(3), events.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ev,
        rtcgate::media::MediaEvent::TearDown {
            call_id: call.into(),
            reason: EndReason::WsDropped
        }
    );
    // The delete was spawned with the event; give it a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !calls_in_rtpengine(&media).await.is_empty() {
        assert!(Instant::now() < deadline, "call still in rtpengine");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// No rtpengine listening: 503 with Retry-After, within the configured deadline.
#[tokio::test]
async fn rtpengine_down_is_503_within_deadline() {
    let dead = free_udp_port(); // nobody listens there any more
    let cfg = MediaConfig {
        instances: vec![RtpengineInstance {
            address: dead,
            weight: 1,
        }],
        offer_deadline_ms: 300,
        try_timeout_ms: 100,
        tries: 5,
        retry_after_secs: 9,
        ..MediaConfig::default()
    };
    let (media, _ev) = Media::start(cfg).await.unwrap();
    let t0 = Instant::now();
    let err = media
        .offer(&ctx(
            "down-1",
            "A",
            None,
            "br1",
            &fixture("out-1"),
            LegProfile::PlainRtp,
        ))
        .await
        .unwrap_err();
    let took = t0.elapsed();
    assert_eq!(err.sip_status(), 503, "{err}");
    assert_eq!(err.retry_after(), Some(9));
    assert!(took < Duration::from_millis(700), "took {took:?}");
    assert!(took >= Duration::from_millis(250), "took {took:?}");
}

/// Bad SDP: 488 with a Warning text; no rtpengine needed, nothing sent.
#[tokio::test]
async fn bad_sdp_is_488() {
    let (media, _ev) = Media::start(MediaConfig {
        instances: vec![RtpengineInstance {
            address: free_udp_port(),
            weight: 1,
        }],
        ..MediaConfig::default()
    })
    .await
    .unwrap();
    let err = media
        .offer(&ctx(
            "bad-1",
            "A",
            None,
            "br1",
            b"v=0\r\nbogus",
            LegProfile::PlainRtp,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.sip_status(), 488);
    let w = err.warning_text().unwrap();
    assert!(!w.is_empty() && !w.contains('"'), "{w}");
    assert_eq!(media.active_calls(), 0, "nothing recorded for refused SDP");
    // An empty body (a proxy bug: messages without SDP must not come here) is refused too.
    let err = media
        .offer(&ctx("bad-2", "A", None, "br1", b"", LegProfile::PlainRtp))
        .await
        .unwrap_err();
    assert_eq!(err.sip_status(), 488);
    assert_eq!(media.active_calls(), 0);
    let m = media.client().metrics().await.unwrap();
    assert_eq!(
        m.total("offer").requests,
        0,
        "no ng request for refused SDP"
    );
}

/// A PBX call forked to three browser registrations: each branch gets its own offer; a
/// branch that fails while others ring, and one that had early media and loses, are deleted
/// on their own; the answered one keeps its media and ports.
#[tokio::test]
async fn forked_call_keeps_branches_apart() {
    let Some(bin) = need_rtpengine() else { return };
    let d = Daemon::start(&bin);
    let media = start(&d).await;
    let call = "fork-1";
    let pbx = "pbx-tag";
    let offer = fixture("in-1");

    let mut ports = Vec::new();
    let mut offers = Vec::new();
    for br in ["f1", "f2", "f3"] {
        let o = media
            .offer(&ctx(call, pbx, None, br, &offer, LegProfile::WebRtc))
            .await
            .unwrap();
        ports.push(assert_webrtc(&o).0);
        offers.push(o);
    }
    let distinct: std::collections::BTreeSet<u32> = ports.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        3,
        "one browser-side port per branch: {ports:?}"
    );

    // f3 is refused while the others ring.
    media.invite_final(call, "f3", 480).await;
    // f1 sends early media (183 with SDP).
    let early = browser_answer(&offers[0], "sendrecv", 2);
    let to_pbx1 = media
        .answer(
            &ctx(call, pbx, Some("ua1"), "f1", &early, LegProfile::PlainRtp),
            183,
        )
        .await
        .unwrap();
    assert_plain(&to_pbx1);
    // f2 answers; the proxy cancels f1, which ends 487.
    let ans2 = browser_answer(&offers[1], "sendrecv", 2);
    let to_pbx = media
        .answer(
            &ctx(call, pbx, Some("ua2"), "f2", &ans2, LegProfile::PlainRtp),
            200,
        )
        .await
        .unwrap();
    let pbx_side_port = assert_plain(&to_pbx);
    media.invite_final(call, "f2", 200).await;
    media.invite_final(call, "f1", 487).await;

    // The call lives on with the answered branch; the losers hold no ports.
    assert_eq!(calls_in_rtpengine(&media).await, vec![call.to_owned()]);
    let r = media
        .client()
        .query(&ngclient::CallRef::new(call), ngclient::Target::Auto)
        .await
        .unwrap();
    let stats = r.reply.call_stats();
    let open_ports: Vec<u16> = stats
        .tags
        .values()
        .flat_map(|t| t.medias.iter())
        .flat_map(|m| m.streams.iter().map(|s| s.local_port))
        .filter(|p| *p != 0)
        .collect();
    assert!(open_ports.contains(&(ports[1] as u16)), "{open_ports:?}");
    assert!(
        !open_ports.contains(&(ports[0] as u16)),
        "f1 released: {open_ports:?}"
    );
    assert!(
        !open_ports.contains(&(ports[2] as u16)),
        "f3 released: {open_ports:?}"
    );
    assert!(stats.tags.contains_key("ua2") && stats.tags.contains_key(pbx));

    // A re-INVITE from the PBX still finds both sides with the same ports.
    let pbx_hold = with_direction(&offer, "sendonly", 1);
    let hold = media
        .offer(&ctx(
            call,
            pbx,
            Some("ua2"),
            "r1",
            &pbx_hold,
            LegProfile::WebRtc,
        ))
        .await
        .unwrap();
    assert_eq!(assert_webrtc(&hold).0, ports[1]);
    let ans = browser_answer(&hold, "recvonly", 3);
    let to_pbx2 = media
        .answer(
            &ctx(call, pbx, Some("ua2"), "r1", &ans, LegProfile::PlainRtp),
            200,
        )
        .await
        .unwrap();
    assert_eq!(assert_plain(&to_pbx2), pbx_side_port);

    assert!(media.terminate(call, EndReason::Bye).await);
    assert!(calls_in_rtpengine(&media).await.is_empty());
}
