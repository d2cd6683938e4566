//! Structured logs through `tracing`, filtered by `RUST_LOG` (default `info`), and
//! metrics through `metrics`, rendered for Prometheus at `GET /metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the logs, and the OTLP span layer when `traces` is given (`crate::trace`).
pub fn init(format: LogFormat, traces: Option<&crate::trace::Tracing>) {
    use tracing_subscriber::prelude::*;

    fn logs<S>(format: LogFormat) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        // Logs go to stderr, so that CLI output on stdout stays clean.
        let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        match format {
            LogFormat::Text => layer.boxed(),
            LogFormat::Json => layer.json().boxed(),
        }
    }

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // A second initialisation (tests start many servers) is harmless: keep the first.
    let _ = match traces {
        None => tracing_subscriber::registry()
            .with(filter)
            .with(logs(format))
            .try_init(),
        // `RUST_LOG` then filters the logs only: the span layer has its own filter.
        Some(traces) => tracing_subscriber::registry()
            .with(logs(format).with_filter(filter))
            .with(traces.layer())
            .try_init(),
    };
}

/// From half a millisecond (a command decided from memory) to ten seconds (a webhook
/// receiver's timeout).
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's metrics recorder, installed on first use. One per process: tests that
/// start many servers share it.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        // Every `_seconds` histogram is rendered with buckets, never as a summary:
        // buckets add up across servers and feed `histogram_quantile`.
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
            .expect("constant, non-empty buckets")
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only its own");
        }
        handle
    })
}
