//! SDP inspection, validation and per-leg media profiles for rtcgate.
//!
//! - [`inspect`] validates untrusted SDP (size, lines, sections, UTF-8, syntax) and
//!   summarises it as [`SdpInfo`] (profile, direction, hold, ICE, DTLS, codecs).
//! - [`ng_flags`] picks the rtpengine ng flags that turn an SDP into the profile of the
//!   leg it is sent to ([`LegProfile::WebRtc`] or [`LegProfile::PlainRtp`]).
//!
//! Knows nothing of sockets or SIP, and never re-serialises SDP (rtpengine rewrites it).

mod error;
mod flags;
mod inspect;
mod limits;

pub use error::SdpError;
pub use flags::{
    CodecFlags, CodecPolicy, FlagOptions, LegProfile, NgMediaFlags, RtpengineCaps, SdpAttrFlags,
    SdpKind, ng_flags,
};
pub use inspect::{
    Codec, Direction, IceInfo, MediaInfo, MediaKind, MediaProfile, SdpInfo, SetupRole,
    ice_restart_only, inspect,
};
pub use limits::Limits;
