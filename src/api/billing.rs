//! `/v1/billing`: what each order owes and holds, and money per day, from the billing
//! projection.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, FieldExt};
use super::extract::{parse_day, PathParams, QueryParams};
use super::openapi::Op;
use super::scoped::Routes;
use crate::auth::Scope;
use crate::domain::values::{Currency, OrderId};
use crate::projections::billing::{self, BillingRow, DailyRow};
use crate::state::AppState;
use utoipa::IntoParams;

pub fn routes() -> Routes {
    Routes::new()
        .get("/billing/orders/{order_id}", Scope::ViewsRead, order)
        .get("/billing/daily", Scope::ViewsRead, daily)
}

/// What [`routes`] serves, for `GET /openapi.json`.
pub fn operations() -> Vec<Op> {
    vec![
        Op::get("/v1/billing/orders/{order_id}", "An order's billing view")
            .param("order_id", <OrderId as utoipa::PartialSchema>::schema())
            .json::<BillingRow>(200, "the order's billing")
            .error(404, "order_not_found"),
        Op::get("/v1/billing/daily", "Money captured and refunded per day")
            .query::<DailyQuery>()
            .json::<DailyOut>(200, "money captured and refunded, per day and currency"),
    ]
}

async fn order(
    State(state): State<AppState>,
    PathParams(order_id): PathParams<OrderId>,
) -> Result<Json<BillingRow>, ApiError> {
    let table = state
        .projections
        .table(billing::NAME, billing::ORDERS.name)
        .await?;
    billing::order(&state.db, &table, order_id.as_str())
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("order_not_found", "the billing view has no such order"))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct DailyQuery {
    /// The first day, inclusive.
    #[param(format = Date)]
    from: String,
    /// The last day, inclusive.
    #[param(format = Date)]
    to: String,
    currency: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = BillingDays)]
struct DailyOut {
    days: Vec<DailyRow>,
}

async fn daily(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<DailyQuery>,
) -> Result<Json<DailyOut>, ApiError> {
    let from = parse_day("from", &query.from)?;
    let to = parse_day("to", &query.to)?;
    let currency = query
        .currency
        .as_deref()
        .map(|c| Currency::parse(c).field("currency"))
        .transpose()?;
    let table = state
        .projections
        .table(billing::NAME, billing::DAILY.name)
        .await?;
    let days = billing::daily(&state.db, &table, &from, &to, currency.map(|c| c.code())).await?;
    Ok(Json(DailyOut { days }))
}
