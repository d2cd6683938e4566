//! Liveness, readiness and metrics, for load balancers, orchestrators and Prometheus.

use std::collections::BTreeSet;
use std::sync::Mutex;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::openapi::{string, Op};
use super::ops::StatsOut;
use super::scoped::{OpenRoutes, Routes};
use crate::auth::Scope;
use crate::state::AppState;
use crate::store::sources::InboxDepth;

/// Open to anyone: what a load balancer probes.
pub fn open_routes() -> OpenRoutes {
    OpenRoutes::new()
        .get("/health", health)
        .get("/ready", ready)
}

pub fn routes() -> Routes {
    Routes::new().get("/metrics", Scope::MetricsRead, metrics)
}

/// What [`open_routes`] and [`routes`] serve, for `GET /openapi.json`.
pub fn operations() -> Vec<Op> {
    vec![
        Op::get("/health", "Liveness").json::<HealthOut>(200, "alive"),
        Op::get("/ready", "Readiness: the database answers").json::<ReadyOut>(200, "ready"),
        Op::get("/metrics", "Prometheus text").content(200, "the series", "text/plain", string()),
    ]
}

/// Prometheus text. The gauges of what the database knows (lags, queues, inboxes) are
/// taken from the dashboard's snapshot as the scrape comes, at most once a second; when
/// the database does not answer they keep their last values, and the counters are
/// rendered all the same.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    match super::ops::snapshot(&state).await {
        Ok(snapshot) => set_gauges(&snapshot),
        Err(e) => tracing::warn!(
            code = e.code(),
            "metrics: the database's gauges were not refreshed"
        ),
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::metrics().render(),
    )
}

fn set_gauges(snapshot: &StatsOut) {
    for p in &snapshot.projections {
        metrics::gauge!("orderlog_projection_lag_events", "projection" => p.name)
            .set(p.lag_events as f64);
        metrics::gauge!("orderlog_projection_lag_seconds", "projection" => p.name)
            .set(p.lag_seconds);
    }
    for s in &snapshot.subscriptions {
        let id = || s.id.clone();
        metrics::gauge!("orderlog_subscription_waiting", "subscription" => id())
            .set(s.waiting as f64);
        metrics::gauge!("orderlog_dead_letters", "subscription" => id()).set(s.dead as f64);
        metrics::gauge!("orderlog_subscription_lag_events", "subscription" => id())
            .set(s.lag_events as f64);
        metrics::gauge!("orderlog_subscription_lag_seconds", "subscription" => id())
            .set(s.lag_seconds);
    }
    set_inbox_gauges(&snapshot.inbox);
}

/// Sets each source's waiting and failed deliveries; a pair no longer counted (its
/// deliveries were applied or discarded) goes back to zero rather than keep its last
/// value.
fn set_inbox_gauges(depths: &[InboxDepth]) {
    static SEEN: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let now: BTreeSet<(String, String)> = depths
        .iter()
        .map(|d| (d.source.clone(), d.state.clone()))
        .collect();
    for (source, state) in seen.difference(&now) {
        metrics::gauge!("orderlog_inbox_depth", "source" => source.clone(), "state" => state.clone())
            .set(0.0);
    }
    for d in depths {
        metrics::gauge!("orderlog_inbox_depth", "source" => d.source.clone(), "state" => d.state.clone())
            .set(d.deliveries as f64);
    }
    seen.extend(now);
}

/// The process is up and serving HTTP.
async fn health() -> Json<HealthOut> {
    Json(HealthOut { status: "ok" })
}

#[derive(Serialize, utoipa::ToSchema)]
struct HealthOut {
    /// Always `ok`.
    status: &'static str,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ReadyOut {
    /// Always `ready`.
    status: &'static str,
    /// `sqlite` or `postgres`.
    database: &'static str,
}

/// The process can do its work: the database answers.
async fn ready(State(state): State<AppState>) -> Result<Json<ReadyOut>, ApiError> {
    state.db.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database does not answer",
        )
    })?;
    Ok(Json(ReadyOut {
        status: "ready",
        database: state.db.backend_name(),
    }))
}
