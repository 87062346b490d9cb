//! Load generators for rtcgate: a browser-like SIP-over-WebSocket user agent
//! that registers with digest, places and answers WebRTC-shaped calls, and the
//! measurement around it (latency percentiles, CPU and memory of the system
//! under test from `/proc`, JSON and SVG reports).
//!
//! The SIP and digest code here is deliberately independent of the gateway's
//! own, so that a load run also cross-checks the gateway against a second
//! implementation.

pub mod digest;
pub mod procfs;
pub mod report;
pub mod sdp;
pub mod sip;
pub mod stats;
pub mod ua;
