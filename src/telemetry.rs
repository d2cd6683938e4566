//! Structured logs through `tracing`, filtered by `RUST_LOG` (default `info`), and
//! metrics through `metrics`, rendered for Prometheus at `GET /metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
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

/// The process's metrics recorder, installed on first use. One per process: tests that
/// start many servers share it.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only its own");
        }
        handle
    })
}
