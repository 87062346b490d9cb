//! SDP inspection, validation and per-leg media profiles.
