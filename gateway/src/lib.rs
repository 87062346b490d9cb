//! rtcgate library.
pub use rsipstack::rsip;
pub mod auth;
pub mod registrar;
pub mod store;
