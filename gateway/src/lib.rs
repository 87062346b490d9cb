//! rtcgate library.
pub use rsipstack::rsip;
pub mod auth;
