//! rtcgate: a WebRTC-to-SIP gateway. SIP over WebSocket (RFC 7118) on one
//! side, SIP over UDP toward PBXes on the other, media through rtpengine.

pub use rsipstack::rsip;

pub mod accounting;
pub mod admin;
pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod limits;
pub mod media;
pub mod proxy;
pub mod registrar;
pub mod routing;
pub mod server;
pub mod sip;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod transaction;
pub mod transport;
