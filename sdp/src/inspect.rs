//! Read-only inspection of an SDP body: what each media section is (WebRTC, plain RTP,
//! SDES-SRTP), its direction, ICE, DTLS and codecs. Parsing is done by `webrtc-sdp`; this
//! module never writes SDP back (webrtc-sdp drops unknown lines such as `a=crypto` when
//! serialising, so rewriting is left to rtpengine).

use std::net::IpAddr;

use webrtc_sdp::address::{Address, ExplicitlyTypedAddress};
use webrtc_sdp::attribute_type::{SdpAttribute, SdpAttributeSetup};
use webrtc_sdp::error::SdpParserError;
use webrtc_sdp::media_type::{SdpFormatList, SdpMedia, SdpMediaValue};
use webrtc_sdp::{SdpConnection, SdpSession};

use crate::error::{SdpError, sanitize};
use crate::limits::{Limits, check};

/// The media profile a section (or a whole SDP) speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaProfile {
    /// ICE + DTLS fingerprint over `UDP/TLS/RTP/SAVPF` (or `RTP/SAVPF`): a browser.
    WebRtc,
    /// `RTP/AVP` or `RTP/AVPF` without crypto: a classic PBX.
    PlainRtp,
    /// `RTP/SAVP(F)` (or best-effort AVP) with `a=crypto` keys (RFC 4568).
    SdesSrtp,
    /// Anything else (data channels, DTLS without ICE, TCP media, T.38, ...).
    Other,
}

/// The media type of an `m=` line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MediaKind {
    /// `m=audio`
    Audio,
    /// `m=video`
    Video,
    /// `m=application`
    Application,
    /// Any other media type, as written.
    Other(String),
}

/// Effective direction of a media section (media-level attribute, else session-level,
/// else `sendrecv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `a=sendrecv` (or nothing).
    SendRecv,
    /// `a=sendonly`
    SendOnly,
    /// `a=recvonly`
    RecvOnly,
    /// `a=inactive`
    Inactive,
}

/// The DTLS role a section asks for (`a=setup`, RFC 4145 / 5763).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetupRole {
    /// `active`: will be the DTLS client.
    Active,
    /// `passive`: will be the DTLS server.
    Passive,
    /// `actpass`: either (offers only).
    ActPass,
    /// `holdconn`
    HoldConn,
}

/// One payload type of an `m=` line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Codec {
    /// RTP payload type.
    pub pt: u8,
    /// Encoding name as written (`opus`, `PCMU`, `telephone-event`); empty if unknown.
    pub name: String,
    /// Clock rate in Hz; 0 if unknown.
    pub rate: u32,
    /// Channel count, if given.
    pub channels: Option<u32>,
}

impl Codec {
    /// True for RFC 4733 DTMF events.
    pub fn is_telephone_event(&self) -> bool {
        self.name.eq_ignore_ascii_case("telephone-event")
    }
}

/// ICE data of a media section (media-level, else session-level credentials).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IceInfo {
    /// `a=ice-ufrag`
    pub ufrag: Option<String>,
    /// `a=ice-pwd`
    pub pwd: Option<String>,
    /// Number of `a=candidate` lines.
    pub candidates: usize,
    /// How many of them use an mDNS `.local` host name instead of an IP address.
    pub mdns_candidates: usize,
}

impl IceInfo {
    /// True when the section takes part in ICE (credentials present).
    pub fn present(&self) -> bool {
        self.ufrag.is_some() && self.pwd.is_some()
    }
}

/// Everything the gateway needs to know about one `m=` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaInfo {
    /// Media type.
    pub kind: MediaKind,
    /// Port of the `m=` line; 0 means the section is rejected/disabled.
    pub port: u32,
    /// Transport protocol as written in the `m=` line (`UDP/TLS/RTP/SAVPF`).
    pub proto: String,
    /// Classification.
    pub profile: MediaProfile,
    /// Effective direction.
    pub direction: Direction,
    /// Effective connection address (media-level, else session-level), as text.
    pub connection: Option<String>,
    /// Hold: `sendonly`/`inactive`, or an unspecified connection address (`c=0.0.0.0`).
    pub on_hold: bool,
    /// `a=mid`
    pub mid: Option<String>,
    /// ICE credentials and candidates.
    pub ice: IceInfo,
    /// `a=fingerprint` values (`sha-256 AB:CD:...`), media-level else session-level.
    pub fingerprints: Vec<String>,
    /// `a=setup`, media-level else session-level.
    pub setup: Option<SetupRole>,
    /// `a=rtcp-mux` present.
    pub rtcp_mux: bool,
    /// At least one `a=crypto` line (SDES) in this section.
    pub has_crypto: bool,
    /// Payload types in `m=` line order.
    pub codecs: Vec<Codec>,
}

impl MediaInfo {
    /// True when this section carries RFC 4733 telephone-event.
    pub fn has_telephone_event(&self) -> bool {
        self.codecs.iter().any(Codec::is_telephone_event)
    }

    /// True when the section is disabled (port 0).
    pub fn is_rejected(&self) -> bool {
        self.port == 0
    }
}

/// Summary of an SDP body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpInfo {
    /// `o=` username.
    pub origin_username: String,
    /// `o=` session id.
    pub session_id: u64,
    /// `o=` session version.
    pub session_version: u64,
    /// The media sections in order.
    pub media: Vec<MediaInfo>,
    /// `a=ice-lite` at session level.
    pub ice_lite: bool,
    /// Number of lines the parser ignored (unknown attributes, `a=crypto`, ...).
    pub ignored_lines: usize,
}

impl SdpInfo {
    /// Profile of the whole SDP: that of the first section that is not rejected
    /// ([`MediaProfile::Other`] if none).
    pub fn profile(&self) -> MediaProfile {
        self.media
            .iter()
            .find(|m| !m.is_rejected())
            .map_or(MediaProfile::Other, |m| m.profile)
    }

    /// True if any active section is WebRTC.
    pub fn is_webrtc(&self) -> bool {
        self.active_media()
            .any(|m| m.profile == MediaProfile::WebRtc)
    }

    /// True if any active section has a DTLS fingerprint.
    pub fn has_dtls(&self) -> bool {
        self.active_media().any(|m| !m.fingerprints.is_empty())
    }

    /// True if any active section is a video section.
    pub fn has_video(&self) -> bool {
        self.active_media().any(|m| m.kind == MediaKind::Video)
    }

    /// True if every active section is on hold (and there is at least one).
    pub fn on_hold(&self) -> bool {
        let mut active = self.active_media().peekable();
        active.peek().is_some() && active.all(|m| m.on_hold)
    }

    /// Sections that are not rejected.
    pub fn active_media(&self) -> impl Iterator<Item = &MediaInfo> {
        self.media.iter().filter(|m| !m.is_rejected())
    }
}

/// Validates untrusted SDP against `limits`, parses it and summarises it.
///
/// Never panics: limit breaches and parser errors come back as [`SdpError`].
pub fn inspect(bytes: &[u8], limits: &Limits) -> Result<SdpInfo, SdpError> {
    let text = check(bytes, limits)?;
    // Defence in depth: a parser bug on hostile input must not take the gateway down.
    let parsed = std::panic::catch_unwind(|| webrtc_sdp::parse_sdp(text, false)).map_err(|_| {
        SdpError::Malformed {
            line: None,
            reason: "SDP parser failure".to_owned(),
        }
    })?;
    let session = parsed.map_err(parser_error)?;
    let crypto = crypto_sections(text);
    Ok(summarise(&session, &crypto))
}

fn parser_error(e: SdpParserError) -> SdpError {
    let (line, reason) = match &e {
        SdpParserError::Line {
            error, line_number, ..
        }
        | SdpParserError::Unsupported {
            error, line_number, ..
        } => (Some(line_number + 1), error.to_string()),
        // Sequence errors are about the whole session (a missing line), not one line.
        SdpParserError::Sequence { message, .. } => (None, message.clone()),
    };
    // webrtc-sdp numbers lines from 0 and uses 0 for "whole body" errors.
    let line = line.filter(|_| !matches!(e, SdpParserError::Line { line_number: 0, .. }));
    SdpError::Malformed {
        line,
        reason: sanitize(&reason, 100),
    }
}

/// Which media sections (by index) carry `a=crypto`; webrtc-sdp drops those lines.
fn crypto_sections(text: &str) -> Vec<bool> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with("m=") {
            out.push(false);
        } else if line.starts_with("a=crypto:")
            && let Some(last) = out.last_mut()
        {
            *last = true;
        }
    }
    out
}

fn summarise(session: &SdpSession, crypto: &[bool]) -> SdpInfo {
    let media = session
        .media
        .iter()
        .enumerate()
        .map(|(i, m)| media_info(session, m, crypto.get(i).copied().unwrap_or(false)))
        .collect();
    SdpInfo {
        origin_username: session.origin.username.clone(),
        session_id: session.origin.session_id,
        session_version: session.origin.session_version,
        media,
        ice_lite: session
            .attribute
            .iter()
            .any(|a| matches!(a, SdpAttribute::IceLite)),
        ignored_lines: session.warnings.len(),
    }
}

fn media_info(session: &SdpSession, m: &SdpMedia, has_crypto: bool) -> MediaInfo {
    let attrs = m.get_attributes();
    // Media-level value first, session-level as fallback (RFC 8866 / 8839 / 8842).
    let find = |pick: &dyn Fn(&SdpAttribute) -> Option<String>| {
        attrs
            .iter()
            .find_map(pick)
            .or_else(|| session.attribute.iter().find_map(pick))
    };
    let ufrag = find(&|a| match a {
        SdpAttribute::IceUfrag(u) => Some(u.clone()),
        _ => None,
    });
    let pwd = find(&|a| match a {
        SdpAttribute::IcePwd(p) => Some(p.clone()),
        _ => None,
    });
    let mut candidates = 0;
    let mut mdns_candidates = 0;
    for a in attrs {
        if let SdpAttribute::Candidate(c) = a {
            candidates += 1;
            if matches!(&c.address, Address::Fqdn(name) if name.to_ascii_lowercase().ends_with(".local"))
            {
                mdns_candidates += 1;
            }
        }
    }
    let fingerprints_of = |list: &[SdpAttribute]| -> Vec<String> {
        list.iter()
            .filter_map(|a| match a {
                SdpAttribute::Fingerprint(f) => Some(f.to_string()),
                _ => None,
            })
            .collect()
    };
    let mut fingerprints = fingerprints_of(attrs);
    if fingerprints.is_empty() {
        fingerprints = fingerprints_of(&session.attribute);
    }
    let setup = attrs
        .iter()
        .chain(session.attribute.iter())
        .find_map(|a| match a {
            SdpAttribute::Setup(s) => Some(match s {
                SdpAttributeSetup::Active => SetupRole::Active,
                SdpAttributeSetup::Passive => SetupRole::Passive,
                SdpAttributeSetup::Actpass => SetupRole::ActPass,
                SdpAttributeSetup::Holdconn => SetupRole::HoldConn,
            }),
            _ => None,
        });
    let direction = direction_of(attrs)
        .or_else(|| direction_of(&session.attribute))
        .unwrap_or(Direction::SendRecv);
    let conn = m.get_connection().as_ref().or(session.connection.as_ref());
    let zero_addr = conn.is_some_and(is_unspecified);
    let proto = m.get_proto().to_string();
    let ice = IceInfo {
        ufrag,
        pwd,
        candidates,
        mdns_candidates,
    };
    let rtcp_mux = attrs.iter().any(|a| matches!(a, SdpAttribute::RtcpMux));
    let profile = classify(&proto, ice.present(), !fingerprints.is_empty(), has_crypto);
    MediaInfo {
        kind: match m.get_type() {
            SdpMediaValue::Audio => MediaKind::Audio,
            SdpMediaValue::Video => MediaKind::Video,
            SdpMediaValue::Application => MediaKind::Application,
            SdpMediaValue::Unknown(s) => MediaKind::Other(s.clone()),
        },
        port: m.get_port(),
        proto,
        profile,
        direction,
        connection: conn.map(|c| c.address.to_string()),
        on_hold: matches!(direction, Direction::SendOnly | Direction::Inactive) || zero_addr,
        mid: attrs.iter().find_map(|a| match a {
            SdpAttribute::Mid(s) => Some(s.clone()),
            _ => None,
        }),
        ice,
        fingerprints,
        setup,
        rtcp_mux,
        has_crypto,
        codecs: codecs_of(m),
    }
}

fn direction_of(attrs: &[SdpAttribute]) -> Option<Direction> {
    attrs.iter().find_map(|a| match a {
        SdpAttribute::Sendrecv => Some(Direction::SendRecv),
        SdpAttribute::Sendonly => Some(Direction::SendOnly),
        SdpAttribute::Recvonly => Some(Direction::RecvOnly),
        SdpAttribute::Inactive => Some(Direction::Inactive),
        _ => None,
    })
}

fn is_unspecified(c: &SdpConnection) -> bool {
    match &c.address {
        ExplicitlyTypedAddress::Ip(ip) => ip.is_unspecified(),
        ExplicitlyTypedAddress::Fqdn { domain, .. } => {
            domain.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
        }
    }
}

/// Classification rule (see [`MediaProfile`]); proto comparison is case-insensitive.
fn classify(proto: &str, ice: bool, fingerprint: bool, crypto: bool) -> MediaProfile {
    let p = proto.to_ascii_uppercase();
    match p.as_str() {
        "UDP/TLS/RTP/SAVPF" | "RTP/SAVPF" if ice && fingerprint => MediaProfile::WebRtc,
        "RTP/SAVP" | "RTP/SAVPF" | "RTP/AVP" | "RTP/AVPF" if crypto => MediaProfile::SdesSrtp,
        "RTP/AVP" | "RTP/AVPF" => MediaProfile::PlainRtp,
        _ => MediaProfile::Other,
    }
}

fn codecs_of(m: &SdpMedia) -> Vec<Codec> {
    let SdpFormatList::Integers(pts) = m.get_formats() else {
        return Vec::new();
    };
    pts.iter()
        .filter_map(|&pt| u8::try_from(pt).ok())
        .map(|pt| {
            let rtpmap = m.get_attributes().iter().find_map(|a| match a {
                SdpAttribute::Rtpmap(r) if r.payload_type == pt => Some(r),
                _ => None,
            });
            match rtpmap {
                Some(r) => Codec {
                    pt,
                    name: r.codec_name.clone(),
                    rate: r.frequency,
                    channels: r.channels,
                },
                None => static_codec(pt),
            }
        })
        .collect()
}

/// RFC 3551 static payload types, for `m=` lines without `a=rtpmap`.
fn static_codec(pt: u8) -> Codec {
    let (name, rate) = match pt {
        0 => ("PCMU", 8000),
        3 => ("GSM", 8000),
        4 => ("G723", 8000),
        8 => ("PCMA", 8000),
        9 => ("G722", 8000),
        13 => ("CN", 8000),
        18 => ("G729", 8000),
        _ => ("", 0),
    };
    Codec {
        pt,
        name: name.to_owned(),
        rate,
        channels: None,
    }
}

/// True when `new` differs from `old` only by an ICE restart: ICE credentials changed in at
/// least one section, while kinds, protocols, directions, codecs, fingerprints, mids and
/// rtcp-mux are the same. Ports, addresses and candidates are ignored because they follow
/// the new network path; `a=setup` is ignored because a re-offer says `actpass` again. Such a re-offer need not reach the PBX leg.
pub fn ice_restart_only(old: &SdpInfo, new: &SdpInfo) -> bool {
    if old.media.len() != new.media.len() {
        return false;
    }
    let mut creds_changed = false;
    for (a, b) in old.media.iter().zip(&new.media) {
        let same_shape = a.kind == b.kind
            && a.proto.eq_ignore_ascii_case(&b.proto)
            && a.is_rejected() == b.is_rejected()
            && a.direction == b.direction
            && a.on_hold == b.on_hold
            && a.codecs == b.codecs
            && a.fingerprints == b.fingerprints
            && a.rtcp_mux == b.rtcp_mux
            && a.mid == b.mid
            && a.ice.present() == b.ice.present();
        if !same_shape {
            return false;
        }
        if a.ice.ufrag != b.ice.ufrag || a.ice.pwd != b.ice.pwd {
            creds_changed = true;
        }
    }
    creds_changed
}
