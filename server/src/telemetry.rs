//! Logs and traces. Logs are human-readable (or JSON) lines filtered by `RUST_LOG` (default `info`); nothing
//! is logged per request at INFO. Each QuotaService call is a `tracing` span (target [`RPC_TARGET`]) that the
//! log output ignores; when `tracing.otlp_endpoint` is set those spans, and only quotad's own (so the exporter
//! never traces itself), are exported over OTLP/gRPC in batches from a background thread.
//! When no endpoint is set, no span is even created. A missing collector never blocks start-up (the channel
//! connects lazily) or shutdown (flushing is bounded by `tracing.export_timeout`), and export failures are
//! not logged per batch.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::{
    Resource,
    trace::{Sampler, SdkTracerProvider},
};
use tracing::{Level, Subscriber};
use tracing_subscriber::{
    EnvFilter, Layer, Registry,
    filter::{FilterExt as _, filter_fn},
    layer::SubscriberExt as _,
};

use crate::config::{LogFormat, TracingSettings};

/// The target of the per-RPC spans.
pub const RPC_TARGET: &str = "quotad::rpc";

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (a malformed endpoint).
    #[error("tracing.otlp_endpoint: {0}")]
    Exporter(String),
}

/// The span exporter, if any; [`shutdown`](Self::shutdown) flushes it.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    timeout: Duration,
}

/// True for quotad's own spans and events at INFO or above: what the OTLP layer sees.
fn ours(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("quotad") && *meta.level() <= Level::INFO
}

impl Telemetry {
    /// Builds the subscriber (logs in `format`, spans to OTLP when configured). Call it inside a tokio
    /// runtime when an endpoint is set: the exporter's channel lives on it.
    pub fn subscriber(
        format: LogFormat,
        settings: &TracingSettings,
    ) -> Result<(impl Subscriber + Send + Sync + 'static, Telemetry), TelemetryError> {
        let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        // Logs are events: spans only carry fields for the exporter, so the log layer never formats them.
        let logs_filter = env.and(filter_fn(|m| m.is_event()));
        let logs: BoxedLayer = match format {
            LogFormat::Text => tracing_subscriber::fmt::layer()
                .with_target(false)
                // Colour only for a person at a terminal: a file, a pipe or a log collector gets plain text.
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
                .with_filter(logs_filter)
                .boxed(),
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .with_filter(logs_filter)
                .boxed(),
        };
        let mut layers = vec![logs];
        let mut provider = None;
        if let Some(endpoint) = &settings.otlp_endpoint {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_timeout(settings.export_timeout)
                .build()
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
            let p = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                    settings.sample_ratio,
                ))))
                .with_resource(
                    Resource::builder()
                        .with_service_name(settings.service_name.clone())
                        .build(),
                )
                .build();
            let tracer = p.tracer("quotad");
            layers.push(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    .with_filter(filter_fn(ours))
                    .boxed(),
            );
            provider = Some(p);
        }
        let subscriber = Registry::default().with(layers);
        Ok((
            subscriber,
            Telemetry {
                provider,
                timeout: settings.export_timeout,
            },
        ))
    }

    /// True when spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is buffered now, within the export timeout. Blocking: call it off the runtime's
    /// worker threads (`spawn_blocking`).
    pub fn flush(&self) {
        if let Some(p) = &self.provider
            && let Err(e) = p.force_flush()
        {
            tracing::warn!(error = %e, "could not export spans");
        }
    }

    /// Flushes and stops the exporter, waiting at most the export timeout. Blocking, like [`flush`](Self::flush).
    pub fn shutdown(self) {
        if let Some(p) = self.provider
            && let Err(e) = p.shutdown_with_timeout(self.timeout)
        {
            tracing::warn!(error = %e, "span exporter did not shut down cleanly");
        }
    }
}
