//! Which rtpengine ng flags turn an SDP into the profile of the leg it is sent to.
//!
//! The output, [`NgMediaFlags`], is plain data that mirrors the ng dictionary keys; the
//! `ngclient` crate (or the gateway's glue) copies it into the request. Nothing here
//! rewrites SDP: rtpengine does.
//!
//! # Policy
//!
//! Toward a **browser** ([`LegProfile::WebRtc`]): `transport-protocol=UDP/TLS/RTP/SAVPF`,
//! `ICE=force`, `DTLS=passive`, `SDES=[off]`, `rtcp-mux=[offer, require]` on offers and
//! `[require]` on answers, `flags=[generate-mid]`, `replace=[origin]`.
//!
//! Toward a **browser** from a browser (WebRTC offer to a WebRTC leg) the
//! offer also gets `DTLS-reverse=passive`, for the offering browser's leg.
//!
//! Toward a **PBX** ([`LegProfile::PlainRtp`]): `transport-protocol=RTP/AVP`, `ICE=remove`,
//! `DTLS=off`, `SDES=[off]`, `rtcp-mux=[demux]`, `flags=[strip-extmap]`, `replace=[origin]`,
//! and, on an offer whose SDP carries a DTLS fingerprint (a browser offer),
//! `DTLS-reverse=passive`.
//!
//! ## DTLS role: rtpengine is always the DTLS server toward the browser
//!
//! On a browser-originated call rtpengine starts ICE and may start DTLS as client as soon as
//! it handles the offer; when the answer then tells it to be passive the browser stays in
//! "connecting" (rtpengine#2145, #1038). Fixing the role for the browser side *at offer
//! time* with `DTLS-reverse=passive` (accepted by rtpengine 10.5.3.5, checked against the
//! Debian daemon; undocumented in `ng_control_protocol.md`) removes the race, and
//! `DTLS=passive` on every browser-leg answer and offer keeps the same role on re-offers
//! (rtpengine#43, #2156): the browser is always the DTLS client, rtpengine always the server.
//! rtpengine still writes `a=setup:actpass` in offers it sends to a browser (seen in the
//! fixtures); browsers answer `active`, which matches.
//!
//! ## Browser-only attributes toward the PBX
//!
//! rtpengine 10.5.3.5 (Debian 12) supports the `strip-extmap` flag (removes `a=extmap`,
//! checked) but **not** the `sdp-attr` dictionary nor `sdp-media-remove` (it logs
//! "Unknown dictionary key encountered", checked). Newer releases document both (`sdp-attr`
//! with `global`/`audio`/`video` sections holding `remove`/`substitute`/`add` lists). So
//! [`NgMediaFlags::sdp_attr`] and [`NgMediaFlags::sdp_media_remove`] are only filled when
//! [`RtpengineCaps`] says the daemon has them; with 10.5 `a=msid`, `a=ssrc`,
//! `a=rtcp-rsize`, `a=rtcp-fb` survive on the PBX leg (harmless to every PBX tested by the
//! reference capture). `strip_video` with an old daemon strips the video codecs instead.
//!
//! # Deliberate differences from the reference proxy (`fixtures/ng/03,05,09,11`)
//!
//! - `replace`: `[origin]` only. The reference also sends `session-connection`, which
//!   rtpengine dropped (c= lines are always rewritten) and newer versions log as unknown.
//! - PBX-leg offer (03): adds `DTLS-reverse=passive` (role race above) and
//!   `flags=[strip-extmap]` (the reference leaks Chrome's four `a=extmap` lines to the PBX).
//! - Browser-leg offer (09): `rtcp-mux=[offer, require]` where the reference has `[require]`.
//! - PBX-leg answer (11): adds `flags=[strip-extmap]`; no `DTLS-reverse` (the browser already
//!   chose `a=setup:active`).
//! - Browser-leg answer (05): identical apart from `replace`.
//! - `received-from`, `call-id`, tags and `supports` are the caller's business, not here.

use crate::inspect::{MediaKind, SdpInfo};

/// The media profile a call leg must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegProfile {
    /// A browser: ICE, DTLS-SRTP, `UDP/TLS/RTP/SAVPF`, rtcp-mux.
    WebRtc,
    /// A legacy PBX: plain `RTP/AVP`, no ICE, separate RTCP port.
    PlainRtp,
}

/// Whether the SDP sent to rtpengine is an offer or an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SdpKind {
    /// ng `offer`.
    Offer,
    /// ng `answer`.
    Answer,
}

/// Codec handling for a PBX set (applied on offers; rtpengine ignores most codec
/// manipulation in answers). The default keeps everything, telephone-event included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecPolicy {
    /// Remove video from offers sent to this leg.
    pub strip_video: bool,
    /// Keep RFC 4733 `telephone-event` (default true); false strips it.
    pub keep_telephone_event: bool,
    /// Codecs to keep, in this order (e.g. `["PCMA", "PCMU"]`). Empty: keep the offer's
    /// list. Implemented as `strip=[all]` + `offer=<those present in the SDP>`, which
    /// rtpengine 10.5 honours in order (checked).
    pub preference: Vec<String>,
    /// Codecs hidden from this leg but still usable for transcoding (`codec.mask`).
    pub mask: Vec<String>,
    /// Codecs removed outright (`codec.strip`).
    pub strip: Vec<String>,
    /// Codecs rtpengine should add by transcoding (`codec.transcode`), passed through.
    pub transcode: Vec<String>,
}

impl Default for CodecPolicy {
    fn default() -> Self {
        Self {
            strip_video: false,
            keep_telephone_event: true,
            preference: Vec::new(),
            mask: Vec::new(),
            strip: Vec::new(),
            transcode: Vec::new(),
        }
    }
}

/// What the rtpengine daemon in use understands beyond 10.5.3.5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RtpengineCaps {
    /// The `sdp-attr` dictionary (not in 10.5.3.5).
    pub sdp_attr: bool,
    /// The `sdp-media-remove` list (not in 10.5.3.5).
    pub sdp_media_remove: bool,
}

/// Options of [`ng_flags`] besides the codec policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlagOptions {
    /// Add the `trust-address` flag (use the SDP's addresses, not the packet source); only
    /// for peers known not to be behind NAT.
    pub trust_address: bool,
    /// Daemon capabilities.
    pub caps: RtpengineCaps,
}

/// The ng `codec` dictionary.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CodecFlags {
    /// `strip`
    pub strip: Vec<String>,
    /// `mask`
    pub mask: Vec<String>,
    /// `transcode`
    pub transcode: Vec<String>,
    /// `offer`
    pub offer: Vec<String>,
    /// `except`
    pub except: Vec<String>,
    /// `accept`
    pub accept: Vec<String>,
}

impl CodecFlags {
    /// True when no list has entries (the key can be left out of the request).
    pub fn is_empty(&self) -> bool {
        self.strip.is_empty()
            && self.mask.is_empty()
            && self.transcode.is_empty()
            && self.offer.is_empty()
            && self.except.is_empty()
            && self.accept.is_empty()
    }
}

/// The ng `sdp-attr` dictionary, limited to `remove` lists (rtpengine newer than 10.5).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SdpAttrFlags {
    /// `sdp-attr.global.remove`: session-level attribute names.
    pub global_remove: Vec<String>,
    /// `sdp-attr.audio.remove`
    pub audio_remove: Vec<String>,
    /// `sdp-attr.video.remove`
    pub video_remove: Vec<String>,
}

/// Media-related ng keys for one offer or answer; `None`/empty means "leave the key out".
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NgMediaFlags {
    /// `transport protocol`
    pub transport_protocol: Option<String>,
    /// `ICE`
    pub ice: Option<String>,
    /// `DTLS`
    pub dtls: Option<String>,
    /// `DTLS-reverse`
    pub dtls_reverse: Option<String>,
    /// `SDES`
    pub sdes: Vec<String>,
    /// `rtcp-mux`
    pub rtcp_mux: Vec<String>,
    /// `flags`
    pub flags: Vec<String>,
    /// `replace`
    pub replace: Vec<String>,
    /// `codec`
    pub codec: CodecFlags,
    /// `sdp-attr` (only with [`RtpengineCaps::sdp_attr`]).
    pub sdp_attr: Option<SdpAttrFlags>,
    /// `sdp-media-remove` (only with [`RtpengineCaps::sdp_media_remove`]).
    pub sdp_media_remove: Vec<String>,
}

/// Browser-only attributes a PBX has no use for.
const BROWSER_SESSION_ATTRS: [&str; 2] = ["extmap-allow-mixed", "msid-semantic"];
const BROWSER_MEDIA_ATTRS: [&str; 6] = [
    "msid",
    "ssrc",
    "ssrc-group",
    "rtcp-rsize",
    "rtcp-fb",
    "extmap-allow-mixed",
];

/// Computes the ng flags that make rtpengine turn `sdp` (the SDP being sent to it, an
/// offer or an answer) into the `target` leg's profile.
pub fn ng_flags(
    target: LegProfile,
    kind: SdpKind,
    sdp: &SdpInfo,
    policy: &CodecPolicy,
    opts: &FlagOptions,
) -> NgMediaFlags {
    let s = |v: &str| v.to_owned();
    let mut out = NgMediaFlags {
        replace: vec![s("origin")],
        sdes: vec![s("off")],
        ..NgMediaFlags::default()
    };
    match target {
        LegProfile::WebRtc => {
            out.transport_protocol = Some(s("UDP/TLS/RTP/SAVPF"));
            out.ice = Some(s("force"));
            out.dtls = Some(s("passive"));
            out.rtcp_mux = match kind {
                SdpKind::Offer => vec![s("offer"), s("require")],
                SdpKind::Answer => vec![s("require")],
            };
            out.flags.push(s("generate-mid"));
            // Browser to browser: the offering browser's leg has the same
            // role race as toward a PBX (found with two real Chromiums: the
            // caller stayed in DTLS "connecting").
            if kind == SdpKind::Offer && sdp.has_dtls() {
                out.dtls_reverse = Some(s("passive"));
            }
        }
        LegProfile::PlainRtp => {
            out.transport_protocol = Some(s("RTP/AVP"));
            out.ice = Some(s("remove"));
            out.dtls = Some(s("off"));
            if kind == SdpKind::Offer && sdp.has_dtls() {
                out.dtls_reverse = Some(s("passive"));
            }
            out.rtcp_mux = vec![s("demux")];
            out.flags.push(s("strip-extmap"));
            if opts.caps.sdp_attr {
                let media: Vec<String> = BROWSER_MEDIA_ATTRS.iter().map(|a| s(a)).collect();
                out.sdp_attr = Some(SdpAttrFlags {
                    global_remove: BROWSER_SESSION_ATTRS.iter().map(|a| s(a)).collect(),
                    audio_remove: media.clone(),
                    video_remove: media,
                });
            }
        }
    }
    if opts.trust_address {
        out.flags.push(s("trust-address"));
    }
    if kind == SdpKind::Offer {
        apply_codec_policy(&mut out, sdp, policy, opts);
    }
    out
}

fn apply_codec_policy(out: &mut NgMediaFlags, sdp: &SdpInfo, p: &CodecPolicy, opts: &FlagOptions) {
    let c = &mut out.codec;
    c.mask = p.mask.clone();
    c.transcode = p.transcode.clone();
    c.strip = p.strip.clone();
    if p.strip_video && sdp.has_video() {
        if opts.caps.sdp_media_remove {
            out.sdp_media_remove.push("video".to_owned());
        } else {
            // Codecs used only by video sections (red, rtx... may also be audio names).
            for name in codec_names(sdp, |k| *k == MediaKind::Video) {
                let in_audio = codec_names(sdp, |k| *k != MediaKind::Video)
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(&name));
                if !in_audio && !contains(&c.strip, &name) {
                    c.strip.push(name);
                }
            }
        }
    }
    if !p.preference.is_empty() {
        let present = codec_names(sdp, |k| *k == MediaKind::Audio);
        let mut offer: Vec<String> = p
            .preference
            .iter()
            .filter(|want| contains(&present, want) || contains(&p.transcode, want))
            .cloned()
            .collect();
        if p.keep_telephone_event && contains(&present, "telephone-event") {
            offer.push("telephone-event".to_owned());
        }
        // Keep the list untouched rather than strip everything if nothing matches.
        if !offer.is_empty() {
            c.strip.retain(|n| !n.eq_ignore_ascii_case("all"));
            c.strip.insert(0, "all".to_owned());
            for name in offer {
                if !contains(&c.offer, &name) {
                    c.offer.push(name);
                }
            }
        }
    } else if !p.keep_telephone_event && !contains(&c.strip, "telephone-event") {
        c.strip.push("telephone-event".to_owned());
    }
}

fn contains(list: &[String], name: &str) -> bool {
    list.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// Distinct codec names of the active sections whose kind passes `want`.
fn codec_names(sdp: &SdpInfo, want: impl Fn(&MediaKind) -> bool) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for m in sdp.active_media().filter(|m| want(&m.kind)) {
        for c in &m.codecs {
            if !c.name.is_empty() && !contains(&names, &c.name) {
                names.push(c.name.clone());
            }
        }
    }
    names
}
