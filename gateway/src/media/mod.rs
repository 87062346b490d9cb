//! Media: the glue between SIP dialogs, the `sdp` crate and rtpengine (`ngclient`).
//!
//! No SIP parsing happens here: the proxy passes plain facts (Call-ID, the message's own
//! From/To tags, the branch of its client transaction, the SDP body, the profile of the leg
//! the message goes to) and gets back the rewritten SDP or a [`MediaError`] that says how
//! to answer.
//!
//! - [`config`]: the `[rtpengine]` section ([`MediaConfig`]).
//! - [`request`]: the ng tag rule ([`ng_tags`]) and the mapping of computed flags to an
//!   ng request ([`media_request`]); pure functions.
//! - [`tracker`]: [`MediaTracker`], the sans-IO record of calls in rtpengine that decides
//!   offers, answers and the one delete per call.
//! - [`service`]: [`Media`], the async shell (ng client + tracker).
//!
//! # What the proxy calls, and when
//!
//! | SIP event | call |
//! |---|---|
//! | INVITE / re-INVITE / UPDATE **with** SDP forwarded | [`Media::offer`] → replace the body |
//! | INVITE / re-INVITE **without** SDP forwarded | [`Media::invite_without_sdp`] |
//! | 18x / 2xx **with** SDP forwarded | [`Media::answer`] → replace the body |
//! | ACK / PRACK **with** SDP forwarded | [`Media::answer_in_request`] → replace the body |
//! | final response (or timeout = 408) on an INVITE client transaction | [`Media::invite_final`] |
//! | BYE, CANCEL, final failure sent upstream, dialog timeout | [`Media::terminate`] |
//! | browser WebSocket dropped / back | [`Media::ws_dropped`] / [`Media::ws_restored`] |
//! | [`MediaEvent::TearDown`] received | BYE/CANCEL the SIP side |
//! | node shutdown | [`Media::shutdown`] |
//! | accounting wants final statistics | [`Media::report_deleted_calls`] once at start ([`DeletedCall`]: ng `query` before each whole-call delete) |
//!
//! Messages without SDP never reach rtpengine.

pub mod config;
pub mod error;
pub mod request;
pub mod service;
pub mod tracker;

pub use config::{CodecPolicyConfig, MediaConfig, MediaConfigError, RtpengineInstance, SdpLimits};
pub use error::MediaError;
pub use request::{Carrier, NgTags, media_request, ng_tags};
pub use rtcgate_sdp::LegProfile;
pub use service::{DeletedCall, Media, MediaEvent, SdpContext};
pub use tracker::{EndReason, Expired, MediaTracker, MsgIds, NgPlan, TrackerConfig};
