//! Structured logs through `tracing`, filtered by `RUST_LOG` (default `info`), and
//! metrics through `metrics`, rendered for Prometheus at `GET /metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;
use crate::trace::Tracing;

/// Installs the logs, and the OTLP span layer when `traces` is given (`crate::trace`).
/// `RUST_LOG` filters the logs only: the span layer has its own filter.
pub fn init(format: LogFormat, traces: Option<&Tracing>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Logs go to stderr, so that CLI output on stdout stays clean.
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Text => logs.with_filter(filter).boxed(),
        LogFormat::Json => logs.json().with_filter(filter).boxed(),
    };
    // A second initialisation (tests start many servers) is harmless: keep the first.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces.map(Tracing::layer))
        .try_init();
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
