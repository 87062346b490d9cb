//! TLS material: load, generate, reload.
