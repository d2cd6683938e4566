//! OpenTelemetry traces over OTLP/HTTP, only when an `OTEL_EXPORTER_OTLP_*` endpoint is
//! set; with none, no exporter runs and every helper here is one relaxed atomic load.
//!
//! This module owns the standard `OTEL_*` variables ([`TraceSettings`]), the tracer
//! provider and its batch exporter ([`Tracing`]), and the W3C trace context that ties one
//! command's spans together across processes: the request continues an incoming
//! `traceparent` ([`continue_request`]), the events store the context of the span that
//! appended them ([`traceparent_of`]), and readers of the log (projections, deliveries)
//! parent their spans to what is stored ([`set_parent_from`]).
//!
//! It must never slow a request down or stop one: spans go to a bounded queue that an OS
//! thread of the SDK's drains; a full queue, or a collector that is down, drops spans and
//! counts them in `orderlog_trace_spans_dropped_total`, and nothing else.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};
use opentelemetry_sdk::Resource;
use tracing::subscriber::Interest;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::DynFilterFn;
use tracing_subscriber::Layer;

/// A variable that could not be read: named with the value given, and why. Shown as
/// `config::ConfigError` is (this module imports no other of the crate: the store and
/// the readers of the log use it, and the settings use them).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid setting {name}={value:?}: {reason}")]
pub struct ConfigError {
    pub name: String,
    pub value: String,
    pub reason: String,
}

/// The counter of spans that never reached the collector.
pub const DROPPED: &str = "orderlog_trace_spans_dropped_total";

/// True once a tracer provider is installed: the switch every span this crate creates
/// only for OpenTelemetry looks at first, so that with tracing off they cost nothing.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported. Cheap enough for every command and every event.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The wire encoding of OTLP/HTTP (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

/// Which spans are kept (`OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio(f64),
}

impl Sampling {
    fn sampler(self) -> Sampler {
        let parent = |root| Sampler::ParentBased(Box::new(root));
        match self {
            Sampling::AlwaysOn => Sampler::AlwaysOn,
            Sampling::AlwaysOff => Sampler::AlwaysOff,
            Sampling::Ratio(r) => Sampler::TraceIdRatioBased(r),
            Sampling::ParentBasedAlwaysOn => parent(Sampler::AlwaysOn),
            Sampling::ParentBasedAlwaysOff => parent(Sampler::AlwaysOff),
            Sampling::ParentBasedRatio(r) => parent(Sampler::TraceIdRatioBased(r)),
        }
    }
}

/// The `OTEL_*` variables that shape the traces, read and checked once at start.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceSettings {
    /// Where spans are posted, `/v1/traces` included.
    pub endpoint: String,
    pub encoding: Encoding,
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`, decoded (`service.name` among them is taken as the
    /// service name when `OTEL_SERVICE_NAME` is unset).
    pub resource: Vec<(String, String)>,
    pub sampling: Sampling,
    /// Spans waiting for the exporter before new ones are dropped (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub max_queue: usize,
}

const DEFAULT_SERVICE_NAME: &str = "orderlog";
const DEFAULT_MAX_QUEUE: usize = 2_048;

impl TraceSettings {
    /// The settings of the process environment; `None` when no endpoint is set (or
    /// `OTEL_SDK_DISABLED=true`), which leaves tracing off.
    pub fn from_env() -> Result<Option<Self>, ConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// As [`Self::from_env`], from any source of variables. An empty value counts as
    /// unset, as the OpenTelemetry specification asks.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let var = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let bad = |name: &str, value: &str, reason: &str| ConfigError {
            name: name.to_owned(),
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(disabled) = var("OTEL_SDK_DISABLED") {
            match disabled.trim().to_ascii_lowercase().as_str() {
                "true" => return Ok(None),
                "false" => {}
                _ => return Err(bad("OTEL_SDK_DISABLED", &disabled, "must be true or false")),
            }
        }
        let endpoint = match (
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            // The signal's own endpoint is used as given; the general one is a base.
            (Some(traces), _) => endpoint("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &traces, false)?,
            (None, Some(base)) => endpoint("OTEL_EXPORTER_OTLP_ENDPOINT", &base, true)?,
            (None, None) => return Ok(None),
        };
        let (name, raw) = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
            Some(raw) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", raw),
            None => (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                var("OTEL_EXPORTER_OTLP_PROTOCOL").unwrap_or_else(|| "http/protobuf".into()),
            ),
        };
        let encoding = match raw.trim() {
            "http/protobuf" => Encoding::Protobuf,
            "http/json" => Encoding::Json,
            "grpc" => {
                return Err(bad(
                    name,
                    &raw,
                    "grpc is not supported: use http/protobuf or http/json",
                ))
            }
            _ => return Err(bad(name, &raw, "must be one of http/protobuf, http/json")),
        };
        let resource = match var("OTEL_RESOURCE_ATTRIBUTES") {
            Some(raw) => resource_attributes(&raw)
                .map_err(|reason| bad("OTEL_RESOURCE_ATTRIBUTES", &raw, &reason))?,
            None => Vec::new(),
        };
        let service_name = var("OTEL_SERVICE_NAME")
            .map(|s| s.trim().to_owned())
            .or_else(|| {
                resource
                    .iter()
                    .find(|(k, _)| k == "service.name")
                    .map(|(_, v)| v.clone())
            })
            .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
        let sampling = sampling(var("OTEL_TRACES_SAMPLER"), var("OTEL_TRACES_SAMPLER_ARG"))?;
        let max_queue = match var("OTEL_BSP_MAX_QUEUE_SIZE") {
            Some(raw) => raw
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    bad(
                        "OTEL_BSP_MAX_QUEUE_SIZE",
                        &raw,
                        "must be a positive integer",
                    )
                })?,
            None => DEFAULT_MAX_QUEUE,
        };
        // The SDK reads these itself and falls back quietly on a bad value: checked here
        // so that a typo stops the start instead.
        for name in ["OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE"] {
            if let Some(raw) = var(name) {
                if raw.trim().parse::<u64>().ok().filter(|n| *n > 0).is_none() {
                    return Err(bad(name, &raw, "must be a positive integer"));
                }
            }
        }
        for name in [
            "OTEL_EXPORTER_OTLP_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        ] {
            if let Some(raw) = var(name) {
                if raw.trim().parse::<u64>().is_err() {
                    return Err(bad(name, &raw, "must be a whole number of milliseconds"));
                }
            }
        }
        for name in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        ] {
            if let Some(raw) = var(name) {
                // The reason does not quote the text either: it may hold a credential.
                resource_attributes(&raw).map_err(|_| {
                    bad(
                        name,
                        "(hidden)",
                        "must be key=value pairs, separated by commas",
                    )
                })?;
            }
        }
        // No compression is built into the exporter, which would refuse to start.
        for name in [
            "OTEL_EXPORTER_OTLP_COMPRESSION",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        ] {
            if let Some(raw) = var(name) {
                return Err(bad(
                    name,
                    &raw,
                    "compression is not supported: leave it unset",
                ));
            }
        }
        Ok(Some(TraceSettings {
            endpoint,
            encoding,
            service_name,
            resource,
            sampling,
            max_queue,
        }))
    }
}

/// An OTLP/HTTP endpoint: `base` ones get `/v1/traces` appended.
fn endpoint(name: &str, raw: &str, base: bool) -> Result<String, ConfigError> {
    let bad = |reason: &str| ConfigError {
        name: name.to_owned(),
        value: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let url = url::Url::parse(raw.trim())
        .map_err(|e| bad(&format!("not a URL ({e}); use e.g. http://127.0.0.1:4318")))?;
    match url.scheme() {
        "http" => {}
        // No TLS stack is built into the exporter (Cargo.toml says why).
        "https" => {
            return Err(bad(
                "https is not supported: send spans to a collector beside the server over http",
            ))
        }
        _ => return Err(bad("must be an http:// URL")),
    }
    if url.host().is_none() {
        return Err(bad("must name a host"));
    }
    let mut text = url.to_string();
    if base {
        if text.ends_with('/') {
            text.pop();
        }
        text.push_str("/v1/traces");
    }
    Ok(text)
}

/// `key=value,key=value`, values percent-encoded (W3C Baggage's format, as the
/// specification of `OTEL_RESOURCE_ATTRIBUTES` says).
fn resource_attributes(raw: &str) -> Result<Vec<(String, String)>, String> {
    raw.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("`{}` is not key=value", item.trim()))?;
            let key = key.trim();
            if key.is_empty() {
                return Err(format!("`{}` has no key", item.trim()));
            }
            let value = percent_decode(value.trim())
                .ok_or_else(|| format!("the value of `{key}` is not valid percent-encoding"))?;
            Ok((key.to_owned(), value))
        })
        .collect()
}

fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn sampling(sampler: Option<String>, arg: Option<String>) -> Result<Sampling, ConfigError> {
    let ratio = || -> Result<f64, ConfigError> {
        let Some(raw) = &arg else {
            return Ok(1.0);
        };
        raw.trim()
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| ConfigError {
                name: "OTEL_TRACES_SAMPLER_ARG".to_owned(),
                value: raw.clone(),
                reason: "must be a ratio between 0 and 1, such as 0.25".to_owned(),
            })
    };
    let Some(raw) = sampler else {
        return Ok(Sampling::ParentBasedAlwaysOn);
    };
    Ok(match raw.trim() {
        "always_on" => Sampling::AlwaysOn,
        "always_off" => Sampling::AlwaysOff,
        "traceidratio" => Sampling::Ratio(ratio()?),
        "parentbased_always_on" => Sampling::ParentBasedAlwaysOn,
        "parentbased_always_off" => Sampling::ParentBasedAlwaysOff,
        "parentbased_traceidratio" => Sampling::ParentBasedRatio(ratio()?),
        _ => {
            return Err(ConfigError {
                name: "OTEL_TRACES_SAMPLER".to_owned(),
                value: raw,
                reason: "must be one of always_on, always_off, traceidratio, \
                         parentbased_always_on, parentbased_always_off, \
                         parentbased_traceidratio"
                    .to_owned(),
            })
        }
    })
}

/// The tracer provider of a serving process. Keep it until shutdown, then call
/// [`Tracing::shutdown`] so that the last spans leave.
pub struct Tracing {
    provider: SdkTracerProvider,
}

/// The exporter could not be built (not a settings error: those are [`ConfigError`]s).
#[derive(Debug, thiserror::Error)]
#[error("starting the OTLP trace exporter: {0}")]
pub struct StartError(String);

impl Tracing {
    /// Builds the exporter and the provider, and turns [`enabled`] on. Spans reach them
    /// through [`Tracing::layer`].
    pub fn start(settings: &TraceSettings) -> Result<Tracing, StartError> {
        let protocol = match settings.encoding {
            Encoding::Protobuf => Protocol::HttpBinary,
            Encoding::Json => Protocol::HttpJson,
        };
        // The default blocking reqwest client: the batch processor's thread has no Tokio
        // runtime (OBSERVABILITY.md).
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .with_endpoint(settings.endpoint.clone())
            .build()
            .map_err(|e| StartError(e.to_string()))?;
        let pending = Arc::new(AtomicUsize::new(0));
        let batches = BatchSpanProcessor::builder(Counted {
            inner: exporter,
            pending: pending.clone(),
            failing: AtomicBool::new(false),
        })
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(settings.max_queue)
                .build(),
        )
        .build();
        let resource = Resource::builder()
            .with_attributes(
                settings
                    .resource
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .with_service_name(settings.service_name.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Bounded {
                inner: batches,
                pending,
                capacity: settings.max_queue,
            })
            .with_sampler(settings.sampling.sampler())
            .with_resource(resource)
            .build();
        ENABLED.store(true, Ordering::Relaxed);
        Ok(Tracing { provider })
    }

    /// The `tracing` layer that turns this crate's spans into OpenTelemetry spans. It
    /// has its own filter (the crate's spans at `info` and above, and its warnings and
    /// errors as span events), so that `RUST_LOG` shapes the logs, not the traces.
    pub fn layer<S>(&self) -> impl Layer<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn ours(meta: &tracing::Metadata<'_>) -> bool {
            meta.target().starts_with("orderlog")
                && if meta.is_span() {
                    *meta.level() <= tracing::Level::INFO
                } else {
                    *meta.level() <= tracing::Level::WARN
                }
        }
        // `sometimes`, never `always`, for what it takes: a per-layer filter hears of a
        // span through a thread-local its `enabled` sets, and a callsite interested
        // `always` skips `enabled`. sqlx asks `log_enabled!` after each query without
        // logging, which leaves that thread-local saying "disabled", and the next span of
        // an `always` callsite would be lost to this layer (tokio-rs/tracing#2519; seen
        // here with RUST_LOG=info on PostgreSQL: requests lost their parent).
        let filter = DynFilterFn::new(|meta: &tracing::Metadata<'_>, _: &_| ours(meta))
            .with_callsite_filter(|meta| {
                if ours(meta) {
                    Interest::sometimes()
                } else {
                    Interest::never()
                }
            });
        tracing_opentelemetry::layer()
            .with_tracer(self.provider.tracer("orderlog"))
            // Kept cheap for the hot paths: no busy/idle clocks on every poll, no thread
            // name copied into every span.
            .with_tracked_inactivity(false)
            .with_threads(false)
            .with_filter(filter)
    }

    /// Exports what is queued, then stops the exporter. Both block (on the exporter's
    /// thread), so they run off the async workers.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let done = tokio::task::spawn_blocking(move || {
            if let Err(e) = provider.force_flush() {
                tracing::warn!(error = %e, "the last spans could not be exported");
            }
            if let Err(e) = provider.shutdown() {
                tracing::warn!(error = %e, "the trace exporter did not shut down cleanly");
            }
        })
        .await;
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(e) = done {
            tracing::warn!(error = %e, "the trace exporter's shutdown failed");
        }
    }
}

/// The batch processor, behind a count of the spans it holds: past `capacity` a span is
/// dropped (and counted) here, where the SDK would drop it silently.
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    /// Spans handed to `inner` and not yet handed to the exporter.
    pending: Arc<AtomicUsize>,
    capacity: usize,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.pending.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            dropped("queue_full", 1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counting what it takes off the queue and what it fails to send.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    pending: Arc<AtomicUsize>,
    /// Whether the last export failed: failures are logged when they start and end,
    /// not once per batch.
    failing: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        self.pending.fetch_sub(n, Ordering::Relaxed);
        let result = self.inner.export(batch).await;
        match &result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("spans reach the OTLP collector again");
                }
            }
            Err(e) => {
                dropped("export_failed", n);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, dropped = n, "spans could not be exported; dropping them until the collector answers");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// Counts spans lost, by why: `queue_full` or `export_failed`.
fn dropped(reason: &'static str, n: usize) {
    // Described on first use: the recorder is installed after the provider starts.
    static DESCRIBED: std::sync::Once = std::sync::Once::new();
    DESCRIBED.call_once(|| {
        metrics::describe_counter!(
            DROPPED,
            "Spans dropped before reaching the OTLP collector: the export queue was \
             full, or the export failed (collector down)."
        );
    });
    metrics::counter!(DROPPED, "reason" => reason).increment(n as u64);
}

/// Continues the caller's trace on the request span: its W3C `traceparent` header, if
/// it sent a valid one. Without one the span starts a trace of its own, which the
/// command's metadata then carries ([`traceparent_of`]).
pub fn continue_request(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    if !enabled() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&opentelemetry_http::HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Parents `span` to a stored `traceparent` (an event's). Does nothing when tracing is
/// off, when there is none, or when it does not parse. Call it before the span is
/// entered or asked for its context.
pub fn set_parent_from(span: &tracing::Span, traceparent: Option<&str>) {
    if !enabled() {
        return;
    }
    if let Some(cx) = traceparent.and_then(context_of) {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(cx));
    }
}

/// The `traceparent` in an event's stored metadata (JSON text), if any.
pub fn stored_traceparent(metadata: Option<&str>) -> Option<String> {
    // Only the trace is wanted: serde skips the other fields without building them.
    #[derive(serde::Deserialize)]
    struct Trace {
        traceparent: Option<String>,
    }
    serde_json::from_str::<Trace>(metadata?).ok()?.traceparent
}

/// Most links one batch span carries (the SDK's default limit too).
const MAX_LINKS: usize = 128;

/// Ties a span over a batch of events to the commands that appended them: parented by
/// their traceparent when they all carry the same one (one command's events), linked to
/// each distinct one otherwise. Call it before the span is entered.
pub fn parent_or_link<'a>(span: &tracing::Span, traceparents: impl IntoIterator<Item = &'a str>) {
    if !enabled() {
        return;
    }
    let mut distinct: Vec<SpanContext> = Vec::new();
    for cx in traceparents.into_iter().filter_map(context_of) {
        if distinct.len() < MAX_LINKS && !distinct.contains(&cx) {
            distinct.push(cx);
        }
    }
    match distinct.as_slice() {
        [] => {}
        [one] => {
            let parent = opentelemetry::Context::new().with_remote_span_context(one.clone());
            let _ = span.set_parent(parent);
        }
        _ => {
            for cx in distinct {
                span.add_link(cx);
            }
        }
    }
}

/// The span context a `traceparent` describes, if it is valid.
pub fn context_of(traceparent: &str) -> Option<SpanContext> {
    let carrier = Single(traceparent);
    let cx = TraceContextPropagator::new().extract(&carrier);
    let span = cx.span().span_context().clone();
    span.is_valid().then_some(span)
}

/// The `traceparent` naming `span` (its trace, itself as the parent), or `None` when
/// tracing is off or the span is not exported.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    if !enabled() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent")
}

/// [`traceparent_of`] the current span; with tracing off, not even the current span is
/// looked up.
pub fn current_traceparent() -> Option<String> {
    if !enabled() {
        return None;
    }
    traceparent_of(&tracing::Span::current())
}

/// One `traceparent` value as a propagation carrier.
struct Single<'a>(&'a str);

impl Extractor for Single<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<TraceSettings>, ConfigError> {
        TraceSettings::from_vars(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    fn error(vars: &[(&str, &str)]) -> ConfigError {
        settings(vars).expect_err("a bad variable is refused")
    }

    #[test]
    fn without_an_endpoint_tracing_stays_off() {
        assert_eq!(settings(&[]).unwrap(), None);
        assert_eq!(
            settings(&[
                ("OTEL_SERVICE_NAME", "shop"),
                ("OTEL_TRACES_SAMPLER", "always_on")
            ])
            .unwrap(),
            None
        );
        assert_eq!(
            settings(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_SDK_DISABLED", "true"),
            ])
            .unwrap(),
            None
        );
    }

    #[test]
    fn the_general_endpoint_gets_the_traces_path_and_the_signals_own_is_kept() {
        let general = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(general.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(general.encoding, Encoding::Protobuf);
        assert_eq!(general.service_name, "orderlog");
        assert_eq!(general.sampling, Sampling::ParentBasedAlwaysOn);
        let own = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(own.endpoint, "http://c:4318/custom");
        assert_eq!(own.encoding, Encoding::Json);
    }

    #[test]
    fn service_name_and_resource_attributes_follow_the_specification() {
        let s = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=shop,deployment.environment=eu%20west, host.name = n1",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.service_name, "shop");
        assert_eq!(
            s.resource,
            [
                ("service.name".into(), "shop".into()),
                ("deployment.environment".into(), "eu west".into()),
                ("host.name".into(), "n1".into()),
            ]
        );
        let named = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=shop"),
            ("OTEL_SERVICE_NAME", "orders"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(named.service_name, "orders");
    }

    #[test]
    fn samplers_take_their_ratio() {
        let with = |sampler: &str, arg: Option<&str>| {
            let mut vars = vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_TRACES_SAMPLER", sampler),
            ];
            vars.extend(arg.map(|a| ("OTEL_TRACES_SAMPLER_ARG", a)));
            settings(&vars).unwrap().unwrap().sampling
        };
        assert_eq!(
            with("parentbased_traceidratio", Some("0.25")),
            Sampling::ParentBasedRatio(0.25)
        );
        assert_eq!(with("traceidratio", None), Sampling::Ratio(1.0));
        assert_eq!(with("always_off", Some("nonsense")), Sampling::AlwaysOff);
        assert_eq!(
            with("parentbased_always_off", None),
            Sampling::ParentBasedAlwaysOff
        );
    }

    #[test]
    fn a_bad_variable_is_named_with_its_value() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        for (name, value) in [
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/xml"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "json"),
            ("OTEL_RESOURCE_ATTRIBUTES", "team"),
            ("OTEL_RESOURCE_ATTRIBUTES", "=x"),
            ("OTEL_RESOURCE_ATTRIBUTES", "a=%zz"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "0"),
            ("OTEL_BSP_SCHEDULE_DELAY", "5s"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "ten"),
            ("OTEL_SDK_DISABLED", "yes"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ] {
            let e = error(&[base, (name, value)]);
            assert_eq!((e.name.as_str(), e.value.as_str()), (name, value), "{e}");
        }
        // Headers hold credentials: named, never repeated.
        let headers = error(&[base, ("OTEL_EXPORTER_OTLP_HEADERS", "api-key")]);
        assert_eq!(
            (headers.name.as_str(), headers.value.as_str()),
            ("OTEL_EXPORTER_OTLP_HEADERS", "(hidden)")
        );
        let ratio = error(&[
            base,
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ]);
        assert_eq!(ratio.name, "OTEL_TRACES_SAMPLER_ARG");
        for endpoint in ["collector:4318", "https://c:4318", "ftp://c", "not a url"] {
            let e = error(&[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)]);
            assert_eq!(e.name, "OTEL_EXPORTER_OTLP_ENDPOINT", "{e}");
            let e = error(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)]);
            assert_eq!(e.name, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "{e}");
        }
    }

    #[test]
    fn a_stored_traceparent_is_read_as_a_remote_parent() {
        let cx = context_of("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            cx.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(cx.span_id().to_string(), "00f067aa0ba902b7");
        assert!(cx.is_sampled() && cx.is_remote());
        assert!(context_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(context_of("garbage").is_none());
    }

    /// Records the size of each batch it is given; fails every export when `fail`.
    #[derive(Debug, Clone, Default)]
    struct Recording {
        batches: Arc<std::sync::Mutex<Vec<usize>>>,
        fail: bool,
    }

    impl SpanExporter for Recording {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            self.batches.lock().unwrap().push(batch.len());
            if self.fail {
                Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure(
                    "the collector is down".into(),
                ))
            } else {
                Ok(())
            }
        }
    }

    fn provider(exporter: Recording, capacity: usize) -> (SdkTracerProvider, Arc<AtomicUsize>) {
        let pending = Arc::new(AtomicUsize::new(0));
        let batches = BatchSpanProcessor::builder(Counted {
            inner: exporter,
            pending: pending.clone(),
            failing: AtomicBool::new(false),
        })
        // Nothing leaves before the flush.
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_secs(3600))
                .build(),
        )
        .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(Bounded {
                inner: batches,
                pending: pending.clone(),
                capacity,
            })
            .build();
        (provider, pending)
    }

    fn end_spans(provider: &SdkTracerProvider, n: usize) {
        use opentelemetry::trace::{Span as _, Tracer as _};
        let tracer = provider.tracer("test");
        for _ in 0..n {
            tracer.start("span").end();
        }
    }

    #[test]
    fn past_the_queue_spans_are_dropped_before_the_exporter() {
        let exporter = Recording::default();
        let (provider, pending) = provider(exporter.clone(), 3);
        end_spans(&provider, 10);
        assert_eq!(pending.load(Ordering::Relaxed), 3);
        provider.force_flush().unwrap();
        assert_eq!(exporter.batches.lock().unwrap().iter().sum::<usize>(), 3);
        assert_eq!(pending.load(Ordering::Relaxed), 0);
        // Once exported, the queue takes spans again.
        end_spans(&provider, 2);
        provider.force_flush().unwrap();
        assert_eq!(exporter.batches.lock().unwrap().iter().sum::<usize>(), 5);
        provider.shutdown().unwrap();
    }

    #[test]
    fn spans_a_failed_export_held_leave_the_queue() {
        let exporter = Recording {
            fail: true,
            ..Recording::default()
        };
        let (provider, pending) = provider(exporter.clone(), 100);
        end_spans(&provider, 4);
        assert!(provider.force_flush().is_err());
        assert_eq!(exporter.batches.lock().unwrap().as_slice(), [4]);
        assert_eq!(pending.load(Ordering::Relaxed), 0);
        let _ = provider.shutdown();
    }

    #[test]
    fn with_tracing_off_nothing_is_propagated() {
        // No test of this binary starts a provider: `enabled()` stays false.
        let span = tracing::info_span!("off");
        assert_eq!(traceparent_of(&span), None);
        assert_eq!(current_traceparent(), None);
        set_parent_from(
            &span,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
    }
}
