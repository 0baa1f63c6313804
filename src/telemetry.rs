//! Logging and tracing setup: human-readable text on a terminal, JSON lines in containers,
//! and OpenTelemetry traces over OTLP/HTTP when an endpoint is configured. The only place
//! that knows how logs are formatted or where spans go; the rest of the code makes
//! `tracing` spans and asks here for trace context to carry in envelopes.

use std::collections::HashMap;

use std::sync::Arc;

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::metrics::Metrics;
use crate::settings::{LogFormat, LogSettings, OtelSettings};

/// Why logging or tracing could not be set up; each names the setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid value for `log.level`")]
    LogLevel(#[source] tracing_subscriber::filter::ParseError),
    #[error("invalid value for `otel.endpoint`")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled(#[source] tracing_subscriber::util::TryInitError),
}

/// Keeps the exporters alive; `shutdown` flushes what is still buffered.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    meters: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Exports the node's metrics over OTLP as well, observed from the same counters that
    /// `/metrics` shows (so both always agree). The latency histogram is on `/metrics` only.
    pub fn export_metrics(&self, metrics: Arc<Metrics>) {
        let Some(provider) = &self.meters else { return };
        let meter = provider.meter("roomcast");
        for (i, (name, kind, help, _)) in metrics.samples().into_iter().enumerate() {
            let m = Arc::clone(&metrics);
            let name = format!("roomcast_{name}");
            if kind == "counter" {
                meter
                    .u64_observable_counter(name)
                    .with_description(help)
                    .with_callback(move |o| o.observe(m.samples()[i].3.max(0) as u64, &[]))
                    .build();
            } else {
                meter
                    .i64_observable_gauge(name)
                    .with_description(help)
                    .with_callback(move |o| o.observe(m.samples()[i].3, &[]))
                    .build();
            }
        }
        let m = Arc::clone(&metrics);
        meter
            .i64_observable_gauge("roomcast_connections")
            .with_description("Open client connections, by transport.")
            .with_callback(move |o| {
                let labels = crate::wire::Framing::LABELS.iter();
                for (label, gauge) in labels.zip(&m.connections) {
                    o.observe(gauge.get(), &[KeyValue::new("transport", *label)]);
                }
            })
            .build();
    }

    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("roomcast: flushing traces failed: {error}");
        }
        if let Some(meters) = self.meters
            && let Err(error) = meters.shutdown()
        {
            eprintln!("roomcast: flushing metrics failed: {error}");
        }
    }
}

/// The OTLP endpoint: `otel.endpoint`, else the standard `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn endpoint(otel: &OtelSettings) -> Option<String> {
    otel.endpoint
        .clone()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.is_empty())
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over `log.level`.
pub fn init(
    log: &LogSettings,
    otel: &OtelSettings,
    node_id: &str,
) -> Result<Telemetry, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.is_empty() => EnvFilter::try_new(spec),
        _ => EnvFilter::try_new(&log.level),
    }
    .map_err(TelemetryError::LogLevel)?;
    let (provider, meters) = match endpoint(otel) {
        Some(endpoint) => (
            Some(tracer_provider(&endpoint, otel, node_id)?),
            Some(meter_provider(&endpoint, otel, node_id)?),
        ),
        None => (None, None),
    };
    // Traces have their own filter: a quiet log level must not switch tracing off.
    let otel_layer = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("roomcast"))
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("roomcast", tracing::Level::INFO),
            )
    });
    let (text, json) = match log.format {
        LogFormat::Text => (
            Some(tracing_subscriber::fmt::layer().with_writer(std::io::stderr)),
            None,
        ),
        LogFormat::Json => (
            None,
            Some(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_writer(std::io::stderr),
            ),
        ),
    };
    let logs = text
        .map(|l| l.boxed())
        .or(json.map(|l| l.boxed()))
        .map(|l| l.with_filter(filter));
    tracing_subscriber::registry()
        .with(logs)
        .with(otel_layer)
        .try_init()
        .map_err(TelemetryError::AlreadyInstalled)?;
    Ok(Telemetry { provider, meters })
}

fn resource(otel: &OtelSettings, node_id: &str) -> opentelemetry_sdk::Resource {
    opentelemetry_sdk::Resource::builder()
        .with_service_name(otel.service_name.clone())
        .with_attribute(KeyValue::new("service.instance.id", node_id.to_string()))
        .build()
}

fn meter_provider(
    endpoint: &str,
    otel: &OtelSettings,
    node_id: &str,
) -> Result<SdkMeterProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/metrics", endpoint.trim_end_matches('/')))
        .build()
        .map_err(TelemetryError::Exporter)?;
    // Export interval: OTEL_METRIC_EXPORT_INTERVAL (ms), default 60 s.
    Ok(SdkMeterProvider::builder()
        .with_periodic_exporter(exporter)
        .with_resource(resource(otel, node_id))
        .build())
}

fn tracer_provider(
    endpoint: &str,
    otel: &OtelSettings,
    node_id: &str,
) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig;
    let traces = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(traces)
        .build()
        .map_err(TelemetryError::Exporter)?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(otel.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.instance.id",
            node_id.to_string(),
        ))
        .build();
    // A publish that arrives with a sampled trace context is traced whatever the ratio,
    // so a backend can trace one message through every node it reaches.
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(otel.sample_ratio)));
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .with_resource(resource)
        .build())
}

/// The W3C `traceparent` of a span, to carry in an envelope; `None` when tracing is off.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let mut carrier = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.remove("traceparent")
}

/// Makes `traceparent` (from an envelope) the parent of `span`.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(cx);
}
