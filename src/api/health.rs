//! Liveness, readiness and metrics, for load balancers, orchestrators and Prometheus.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::error::ApiError;
use super::scoped::Routes;
use crate::auth::Scope;
use crate::state::AppState;

/// Open to anyone: what a load balancer probes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
}

pub fn routes() -> Routes {
    Routes::new().get("/metrics", Scope::MetricsRead, metrics)
}

/// Prometheus text: delivery attempts by outcome, each subscription's breaker state.
async fn metrics() -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        crate::telemetry::metrics().render(),
    )
}

/// The process is up and serving HTTP.
async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// The process can do its work: the database answers.
async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state.db.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check failed");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "database_unavailable",
            "the database does not answer",
        )
    })?;
    Ok(Json(
        json!({ "status": "ready", "database": state.db.backend_name() }),
    ))
}
