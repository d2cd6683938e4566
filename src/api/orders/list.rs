//! `GET /v1/orders`: the order summary view, newest first, filtered and paged with an
//! opaque cursor.

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::error::{ApiError, FieldExt};
use crate::api::extract::{parse_limit, parse_time, QueryParams};
use crate::api::openapi::Op;
use crate::api::scoped::Routes;
use crate::auth::Scope;
use crate::domain::order::*;
use crate::domain::values::*;
use crate::projections::order_summary;
use crate::state::AppState;
use crate::store::views::fixed_time;

pub(super) fn routes() -> Routes {
    Routes::new().get("/orders", Scope::OrdersRead, list_orders)
}

pub(super) fn operations() -> Vec<Op> {
    vec![Op::get(
        "/v1/orders",
        "Orders from the summary view, newest first, paged",
    )
    .query::<ListQuery>()
    .json::<ListOut>(200, "a page of orders; `next_cursor` for the next one")]
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    status: Option<String>,
    customer_id: Option<String>,
    /// A storefront source's orders; with `external_id`, one platform order of it.
    source: Option<String>,
    external_id: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct ListOut {
    orders: Vec<SummaryOut>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct SummaryOut {
    order_id: String,
    status: String,
    customer_id: String,
    currency: String,
    total: i64,
    paid: i64,
    refunded: i64,
    item_count: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<OriginOut>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
struct OriginOut {
    source: String,
    external_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_number: Option<String>,
}

/// Lists orders from the order summary view, newest first.
async fn list_orders(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<ListOut>, ApiError> {
    let limit = parse_limit(query.limit, 50, 500)?;
    let filter = order_summary::Filter {
        status: query
            .status
            .as_deref()
            .map(|s| {
                OrderStatus::parse(s)
                    .ok_or_else(|| ApiError::invalid_field("status", "is not an order status"))
            })
            .transpose()?,
        customer_id: query
            .customer_id
            .as_deref()
            .map(|c| {
                CustomerId::parse(c)
                    .field("customer_id")
                    .map(|c| c.to_string())
            })
            .transpose()?,
        source: query
            .source
            .as_deref()
            .map(|s| SourceName::parse(s).field("source").map(|s| s.to_string()))
            .transpose()?,
        external_id: query
            .external_id
            .as_deref()
            .map(|id| {
                Text::parse(id)
                    .field("external_id")
                    .map(|t| t.as_str().to_owned())
            })
            .transpose()?,
        created_after: query
            .created_after
            .as_deref()
            .map(|t| parse_time("created_after", t))
            .transpose()?,
        created_before: query
            .created_before
            .as_deref()
            .map(|t| parse_time("created_before", t))
            .transpose()?,
        after: query.cursor.as_deref().map(decode_cursor).transpose()?,
        limit: limit + 1,
    };
    let table = state
        .projections
        .table(order_summary::NAME, order_summary::ORDERS.name)
        .await?;
    let mut rows = order_summary::list(&state.db, &table, &filter).await?;
    let next_cursor = if rows.len() as i64 > limit {
        rows.truncate(limit as usize);
        rows.last()
            .map(|r| encode_cursor(&fixed_time::format(&r.created_at), &r.id))
    } else {
        None
    };
    Ok(Json(ListOut {
        orders: rows
            .into_iter()
            .map(|r| SummaryOut {
                order_id: r.id,
                status: r.status,
                customer_id: r.customer_id,
                currency: r.currency,
                total: r.total,
                paid: r.paid,
                refunded: r.refunded,
                item_count: r.item_count,
                origin: r
                    .source
                    .zip(r.external_id)
                    .map(|(source, external_id)| OriginOut {
                        source,
                        external_id,
                        external_number: r.external_number,
                    }),
                created_at: r.created_at,
                updated_at: r.updated_at,
            })
            .collect(),
        next_cursor,
    }))
}

/// Page cursors are opaque to clients: hex of `created_at|order_id`.
fn encode_cursor(created_at: &str, id: &str) -> String {
    hex::encode(format!("{created_at}|{id}"))
}

/// A cursor decoded is a client's text like any other: its time must be a time and its
/// id a line of text (no control character), whatever bytes the hex held.
fn decode_cursor(raw: &str) -> Result<(String, String), ApiError> {
    let invalid = || ApiError::invalid_field("cursor", "is not a cursor this API returned");
    let bytes = hex::decode(raw).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (created_at, id) = text.split_once('|').ok_or_else(invalid)?;
    let created_at = chrono::DateTime::parse_from_rfc3339(created_at).map_err(|_| invalid())?;
    if id.is_empty() || check_line(id).is_err() {
        return Err(invalid());
    }
    Ok((
        fixed_time::format(&created_at.with_timezone(&Utc)),
        id.to_owned(),
    ))
}
