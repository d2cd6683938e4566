//! The HTTP API: JSON under `/v1`, plus `/health` and `/ready`.
//!
//! One file per resource, each with its own `router()`. This module assembles them with
//! the cross-cutting layers: request tracing, idempotency keys, and JSON errors for
//! unknown routes and methods. It holds no business rule.

mod admin;
mod analytics;
mod billing;
pub mod error;
pub mod extract;
mod health;
mod idempotency;
mod inventory;
mod orders;
mod shipping;
mod stream;
mod subscriptions;
mod wait_for;

use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware;
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::state::AppState;
use error::ApiError;

pub fn router(state: AppState) -> Router {
    let v1 = Router::new()
        .merge(orders::router())
        .merge(billing::router())
        .merge(inventory::router())
        .merge(shipping::router())
        .merge(analytics::router())
        .merge(admin::router())
        .merge(subscriptions::router())
        .merge(stream::router())
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotency,
        ));
    Router::new()
        .merge(health::router())
        .nest("/v1", v1)
        .fallback(|| async {
            ApiError::not_found("route_not_found", "no such route; see the README for the API")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not accept that method",
            )
        })
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let route = request
                .extensions()
                .get::<MatchedPath>()
                .map_or(request.uri().path(), MatchedPath::as_str);
            let trace = request
                .headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::info_span!("request", method = %request.method(), route, traceparent = trace)
        }))
        .with_state(state)
}
