//! rtcgate library.
pub use rsipstack::rsip;
