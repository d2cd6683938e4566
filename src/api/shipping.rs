//! `/v1/shipping`: shipments and the backlog of paid orders still to ship, from the
//! shipping projection.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{parse_limit, QueryParams};
use super::openapi::Op;
use super::scoped::Routes;
use crate::auth::Scope;
use crate::projections::shipping::{self, BacklogRow, ShipmentRow};
use crate::state::AppState;
use utoipa::IntoParams;

pub fn routes() -> Routes {
    Routes::new()
        .get("/shipping/shipments", Scope::ViewsRead, shipments)
        .get("/shipping/backlog", Scope::ViewsRead, backlog)
}

/// What [`routes`] serves, for `GET /openapi.json`.
pub fn operations() -> Vec<Op> {
    vec![
        Op::get("/v1/shipping/shipments", "Shipments, by status")
            .query::<ShipmentsQuery>()
            .json::<ShipmentsOut>(200, "the shipments, newest first"),
        Op::get(
            "/v1/shipping/backlog",
            "Paid orders with units still to ship",
        )
        .query::<BacklogQuery>()
        .json::<BacklogOut>(200, "the paid orders still to ship, oldest first"),
    ]
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ShipmentsQuery {
    status: Option<String>,
    limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ShipmentsOut {
    shipments: Vec<ShipmentRow>,
}

async fn shipments(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ShipmentsQuery>,
) -> Result<Json<ShipmentsOut>, ApiError> {
    if let Some(status) = &query.status {
        if !["dispatched", "delivered"].contains(&status.as_str()) {
            return Err(ApiError::invalid_field(
                "status",
                "must be `dispatched` or `delivered`",
            ));
        }
    }
    let limit = parse_limit(query.limit, 100, 1000)?;
    let table = state
        .projections
        .table(shipping::NAME, shipping::SHIPMENTS.name)
        .await?;
    let shipments = shipping::shipments(&state.db, &table, query.status.as_deref(), limit).await?;
    Ok(Json(ShipmentsOut { shipments }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct BacklogQuery {
    limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct BacklogOut {
    orders: Vec<BacklogRow>,
}

async fn backlog(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<BacklogQuery>,
) -> Result<Json<BacklogOut>, ApiError> {
    let limit = parse_limit(query.limit, 100, 1000)?;
    let table = state
        .projections
        .table(shipping::NAME, shipping::ORDERS.name)
        .await?;
    let orders = shipping::backlog(&state.db, &table, limit).await?;
    Ok(Json(BacklogOut { orders }))
}
