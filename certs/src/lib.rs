//! TLS material for rtcgate: load PEM chains and keys, generate a dev CA and leaf with
//! rcgen, and serve a certificate that is reloaded when its files change.
//!
//! Knows nothing of SIP. Uses the ring crypto provider only.

mod config;
mod devpki;
mod error;
mod load;
mod resolver;

pub use config::server_config;
pub use devpki::{
    CA_VALIDITY_DAYS, DEFAULT_NAMES, DevPki, DevPkiStatus, LEAF_VALIDITY_DAYS, RENEW_MARGIN,
    generate_dev_pki,
};
pub use error::CertError;
pub use load::{
    LeafInfo, certified_key_from_pem, leaf_info_of, load_certified_key, parse_cert_chain,
    parse_private_key,
};
pub use resolver::{ReloadOutcome, ReloadingCertResolver};
