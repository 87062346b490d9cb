//! The process-wide `tracing` subscriber: formatted logs, plus the
//! OpenTelemetry layer exporting call traces over OTLP when configured.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::{TRACE_TARGET, TelemetryConfig};

/// How long an OTLP export may take before it is given up.
pub(super) const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// Keeps the trace exporter alive; [`TracingGuard::shutdown`] flushes it.
#[derive(Debug, Default)]
pub struct TracingGuard {
    provider: Option<SdkTracerProvider>,
}

impl TracingGuard {
    /// Whether traces are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter (bounded; an unreachable collector
    /// does not hold the exit).
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown_with_timeout(EXPORT_TIMEOUT)
        {
            tracing::warn!(error = %e, "trace exporter shutdown");
        }
    }
}

/// Installs the global subscriber: logs filtered by `RUST_LOG` or
/// `log_filter`, and, with `[telemetry] otlp_endpoint`, the call traces.
/// Must run inside the tokio runtime (the gRPC client needs it).
pub fn init_tracing(log_filter: &str, cfg: &TelemetryConfig) -> TracingGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(log_filter));
    let fmt = tracing_subscriber::fmt::layer().with_filter(filter);
    let mut warning = None;
    let provider = cfg.otlp_endpoint.as_deref().and_then(|endpoint| {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build();
        match exporter {
            Ok(exporter) => Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                        cfg.trace_sample_ratio,
                    ))))
                    .with_resource(
                        Resource::builder()
                            .with_service_name(cfg.service_name.clone())
                            .build(),
                    )
                    .build(),
            ),
            Err(e) => {
                warning = Some(format!("OTLP trace export disabled: {e}"));
                None
            }
        }
    });
    // Call spans and their children, plus the gateway's own log lines
    // (they become span events); dependencies stay out of the traces.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("rtcgate"))
            .with_filter(
                Targets::new()
                    .with_target("rtcgate", LevelFilter::INFO)
                    .with_target(TRACE_TARGET, LevelFilter::DEBUG),
            )
    });
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    if let Some(e) = &cfg.otlp_endpoint
        && provider.is_some()
    {
        tracing::info!(endpoint = %e, "exporting traces over OTLP");
    }
    TracingGuard { provider }
}
