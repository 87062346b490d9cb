//! Telemetry: OpenTelemetry metrics (a Prometheus registry for
//! `GET /metrics`, OTLP export when configured), per-call trace spans, and
//! the `tracing` subscriber of the `rtcgate run` process.
//!
//! Metrics are read where they already live (transport counters, the
//! proxy's stats, the location cache, the ng client, the routing table) when
//! a scrape or an export asks; the message path only bumps a few atomics
//! ([`SipCounters`]).

mod calls;
mod counters;
mod metrics;
mod ng;
mod router;
mod setup;

pub use calls::{CALL_TARGET, CallTraces, TRACE_TARGET};
pub use counters::{CodeCounters, METHODS, SipCounters, method_index, response_code};
pub use metrics::{MetricSources, Metrics, MetricsError};
pub use router::TracedRouter;
pub use setup::{TracingGuard, init_tracing};

use serde::Deserialize;

/// The `[telemetry]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP/gRPC collector for traces and metrics, e.g.
    /// `http://127.0.0.1:4317` (plaintext gRPC: run the collector on the
    /// same host or network). Absent: nothing is exported (Prometheus
    /// scraping of the admin listener still works).
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// How often metrics are pushed over OTLP, in seconds.
    pub export_interval_s: u64,
    /// Fraction of calls whose trace is exported (0.0 to 1.0).
    pub trace_sample_ratio: f64,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "rtcgate".into(),
            export_interval_s: 15,
            trace_sample_ratio: 1.0,
        }
    }
}

impl TelemetryConfig {
    /// Checks the section; returns the key (relative to `telemetry.`) and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(e) = &self.otlp_endpoint
            && !e.starts_with("http://")
        {
            return Err((
                "otlp_endpoint",
                format!(
                    "{e:?} must be a plain gRPC URL like \"http://127.0.0.1:4317\" (run the collector next to rtcgate)"
                ),
            ));
        }
        if self.service_name.trim().is_empty() {
            return Err(("service_name", "must not be empty".into()));
        }
        if self.export_interval_s == 0 {
            return Err(("export_interval_s", "must be positive".into()));
        }
        if !(0.0..=1.0).contains(&self.trace_sample_ratio) {
            return Err(("trace_sample_ratio", "must be between 0.0 and 1.0".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn endpoint_must_be_a_url() {
        let err = Config::parse(
            "[telemetry]\notlp_endpoint = \"localhost:4317\"\n",
            "c.toml",
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("`telemetry.otlp_endpoint`"),
            "{err}"
        );
        Config::parse(
            "[telemetry]\notlp_endpoint = \"http://127.0.0.1:4317\"\n",
            "c.toml",
        )
        .unwrap();
    }
}
