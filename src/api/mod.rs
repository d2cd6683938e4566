//! The HTTP API: JSON under `/v1`, plus `/health` and `/ready`.
//!
//! One file per resource, each with its own `router()`. This module assembles them with
//! the cross-cutting layers: request tracing, the token gate, idempotency keys, and
//! JSON errors for unknown routes and methods. It holds no business rule.

mod admin;
pub mod admission;
mod analytics;
mod auth;
mod billing;
mod customers;
pub mod error;
mod export;
pub mod extract;
mod health;
mod idempotency;
mod inventory;
pub mod openapi;
pub mod ops;
mod orders;
pub mod scoped;
mod shipping;
pub mod sources;
mod stream;
mod subscriptions;
mod tokens;
mod wait_for;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::StatusCode;
use axum::middleware;
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::state::AppState;
use error::ApiError;
use scoped::{OpenRoute, OpenRoutes, RouteScope, Routes};

/// Every route behind the token gate, with the scope it needs: what the gate
/// enforces, and what the authorization tests walk.
pub fn routes() -> Routes {
    Routes::new()
        .merge(orders::routes())
        .merge(billing::routes())
        .merge(customers::routes())
        .merge(inventory::routes())
        .merge(shipping::routes())
        .merge(analytics::routes())
        .merge(admin::routes())
        .merge(subscriptions::routes())
        .merge(stream::routes())
        .merge(export::routes())
        .merge(tokens::routes())
        .merge(sources::routes())
        .merge(ops::routes())
        .nest("/v1")
        .merge(health::routes())
}

/// What each gated route needs, as the gate enforces it.
pub fn route_table() -> Vec<RouteScope> {
    routes().into_parts().1
}

/// Every route outside the token gate: `/health`, `/ready`, this API's document, the
/// dashboard's files and the signed storefront webhooks. `guard` wraps the webhooks'
/// router in the layers that need the state (`sources::ingest::guard`); the table does
/// not depend on it.
fn open_routes(guard: impl FnOnce(Router<AppState>) -> Router<AppState>) -> OpenRoutes {
    OpenRoutes::new()
        .merge(health::open_routes())
        .merge(openapi::open_routes())
        .merge(ops::open_routes())
        .merge(sources::ingest::open_routes().wrap(guard))
}

/// The routes outside the token gate, as they are served. The OpenAPI tests hold the
/// document to these and to [`route_table`], both ways.
pub fn open_route_table() -> Vec<OpenRoute> {
    open_routes(|router| router).into_parts().1
}

/// Every operation `GET /openapi.json` describes, gated or open.
pub fn operations() -> Vec<openapi::Op> {
    [
        orders::operations(),
        billing::operations(),
        customers::operations(),
        inventory::operations(),
        shipping::operations(),
        analytics::operations(),
        admin::operations(),
        subscriptions::operations(),
        stream::operations(),
        export::operations(),
        tokens::operations(),
        sources::operations(),
        ops::operations(),
        health::operations(),
        openapi::operations(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

pub fn router(state: AppState) -> Router {
    let (gated, table) = routes().into_parts();
    // Layers run outside in: the deadline's clock starts first (every wait after it
    // counts), then the gate, so that a refused request reaches neither
    // the idempotency keys nor a handler, and no unauthenticated body is read; then the
    // one body limit, so that everything after it reads a body that fits.
    let gated = gated
        .layer(middleware::from_fn_with_state(
            state.clone(),
            idempotency::idempotency,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            extract::limit_body,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            admission::admit,
        ))
        // `limit_body` is the limit: axum's own default (2 MiB, answered in text/plain)
        // must never be met first.
        .layer(DefaultBodyLimit::disable())
        .layer(middleware::from_fn_with_state(
            auth::Gate::new(state.clone(), &table),
            auth::authorize,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            extract::stamp_deadline,
        ))
        // Outermost: a command's time is what its client waited, refusals included.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            ops::meter_commands,
        ));
    let (open, _) = open_routes(|router| sources::ingest::guard(router, &state)).into_parts();
    Router::new()
        .merge(open)
        .merge(gated)
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
            let span =
                tracing::info_span!("request", method = %request.method(), route, traceparent = trace);
            // With traces exported, the span continues the caller's trace; the command's
            // metadata then names this span's trace (`extract::CommandContext`).
            crate::trace::continue_request(&span, request.headers());
            span
        })
        // Each failure is logged once where it happens (`ApiError::internal`, with its
        // cause); a 503 under overload is counted, not logged per request.
        .on_failure(()))
        .with_state(state)
}
