//! An untrusted SDP body (from a browser or a PBX): validation and summary,
//! then the ng flags for every leg profile and offer/answer kind, with the
//! default codec policy and a busy one. Nothing here may panic.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use rtcgate_sdp::{
    CodecPolicy, FlagOptions, LegProfile, Limits, RtpengineCaps, SdpKind, ice_restart_only,
    inspect, ng_flags,
};

fuzz_target!(init: common::install_panic_hook(), |data: &[u8]| {
    let info = match inspect(data, &Limits::default()) {
        Ok(info) => info,
        Err(e) => {
            // Goes into a Warning header of the 488.
            let _ = e.warning_text();
            let _ = e.to_string();
            return;
        }
    };
    let _ = (
        info.profile(),
        info.is_webrtc(),
        info.has_dtls(),
        info.has_video(),
        info.on_hold(),
        info.active_media().count(),
    );
    for m in &info.media {
        let _ = (m.has_telephone_event(), m.is_rejected(), m.ice.present());
    }
    let _ = ice_restart_only(&info, &info);

    let busy = CodecPolicy {
        strip_video: true,
        keep_telephone_event: false,
        preference: vec!["PCMA".into(), "opus".into(), "G722".into()],
        mask: vec!["PCMU".into()],
        strip: vec!["VP8".into()],
        transcode: vec!["PCMA".into()],
    };
    let plain = FlagOptions::default();
    let rich = FlagOptions {
        trust_address: true,
        caps: RtpengineCaps {
            sdp_attr: true,
            sdp_media_remove: true,
        },
    };
    for target in [LegProfile::WebRtc, LegProfile::PlainRtp] {
        for kind in [SdpKind::Offer, SdpKind::Answer] {
            let _ = ng_flags(target, kind, &info, &CodecPolicy::default(), &plain);
            let f = ng_flags(target, kind, &info, &busy, &rich);
            let _ = f.codec.is_empty();
        }
    }
});
