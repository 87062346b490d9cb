//! PBX routing: extension rules, destination sets, failover and health checks
//! (the role of Kamailio's dispatcher).
//!
//! - [`config`]: the `[routing]` TOML shape and its validation.
//! - [`RoutingTable`]: the sans-IO core — rules (first match wins), sets
//!   with their algorithm, serial failover, trusted sources, health.
//! - [`Prober`]: sans-IO OPTIONS health checks (up/down after N/M).
//! - [`RoutingService`] / [`RoutingHandle`]: the tokio shell that sends the
//!   probes over its own UDP socket and reloads the configuration.
//! - [`RoutingRouter`]: the proxy's `Router` over all of it.

mod cidr;
mod codes;
pub mod config;
pub mod health;
pub mod router;
mod rules;
pub mod shell;
pub mod table;

pub use cidr::{Cidr, CidrError};
pub use codes::CodeSet;
pub use config::{
    Algorithm, CodeSpec, DestinationConfig, LocalPosition, ProbeConfig, RoutingConfig,
    RoutingConfigError, RuleConfig, SetConfig, Transport,
};
pub use health::{
    DestinationStatus, HealthState, Probe, ProbeOutcome, ProbeSettings, Prober, Transition,
};
pub use router::{PbxDecision, RoutingRouter, pbx_target};
pub use shell::{ProbeOptions, RoutingError, RoutingHandle, RoutingService};
pub use table::{
    CallFailure, Failover, PbxRoute, RouteOutcome, RouteQuery, RoutedDestination, RoutingTable,
    SetView,
};

#[cfg(test)]
mod tests;
