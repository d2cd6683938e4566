//! `/v1/inventory`: receive and adjust stock (commands to the SKU's inventory item), and
//! read stock levels (from the inventory projection), with the units backordered for
//! storefront orders.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{parse_limit, CommandContext, JsonBody, PathParams, QueryParams};
use super::openapi::Op;
use super::scoped::Routes;
use super::wait_for::{with_wait_result, WaitFor};
use crate::auth::Scope;
use crate::domain::inventory::{InventoryCommand, InventoryCommandFor, InventoryItem};
use crate::domain::values::{check_line, Quantity, Sku, Text};
use crate::projections::inventory::{self, StockRow};
use crate::state::AppState;
use utoipa::{IntoParams, ToSchema};

pub fn routes() -> Routes {
    use Scope::{InventoryRead, InventoryWrite};
    Routes::new()
        .get("/inventory", InventoryRead, low_stock)
        .get("/inventory/{sku}", InventoryRead, item)
        .post("/inventory/{sku}/receipts", InventoryWrite, receive)
        .post("/inventory/{sku}/adjustments", InventoryWrite, adjust)
}

/// What [`routes`] serves, for `GET /openapi.json`.
pub fn operations() -> Vec<Op> {
    let sku = |op: Op| op.param("sku", <Sku as utoipa::PartialSchema>::schema());
    vec![
        Op::get(
            "/v1/inventory",
            "SKUs with fewer than `below` available, fewest first",
        )
        .query::<LowStockQuery>()
        .json::<LowStockOut>(200, "a page of SKUs; `next_cursor` for the next one"),
        sku(Op::get("/v1/inventory/{sku}", "A SKU's stock levels"))
            .json::<StockRow>(200, "the SKU's stock levels")
            .error(404, "sku_not_found"),
        sku(Op::post("/v1/inventory/{sku}/receipts", "Receive units"))
            .json_body::<ReceiptIn>()
            .json::<LevelsOut>(201, "the levels, after any backorders the units filled")
            .error(422, "stock_too_large"),
        sku(Op::post(
            "/v1/inventory/{sku}/adjustments",
            "Correct a count",
        ))
        .json_body::<AdjustmentIn>()
        .json::<LevelsOut>(201, "the levels")
        .error(404, "sku_not_found")
        .error(409, "available_would_go_negative"),
    ]
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReceiptIn {
    quantity: Quantity,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct AdjustmentIn {
    delta: i64,
    reason: Text,
}

/// The item's levels right after a command.
#[derive(Serialize, ToSchema)]
struct LevelsOut {
    sku: Sku,
    on_hand: i64,
    reserved: i64,
    available: i64,
}

impl LevelsOut {
    fn new(sku: Sku, item: &InventoryItem) -> Self {
        Self {
            sku,
            on_hand: item.on_hand(),
            reserved: item.reserved(),
            available: item.available(),
        }
    }
}

/// Largest single adjustment, either way.
const MAX_DELTA: i64 = 1_000_000_000;

async fn run(
    state: &AppState,
    sku: Sku,
    command: InventoryCommand,
    ctx: CommandContext,
    wait: WaitFor,
) -> Result<Response, ApiError> {
    let command = InventoryCommandFor {
        sku: sku.clone(),
        command,
    };
    let executed = state
        .inventory
        .execute(sku.as_str(), command, &ctx.0)
        .await?;
    let waited = match executed.events.last() {
        Some(event) => {
            let item_type = <InventoryItem as cqrs_es::Aggregate>::TYPE;
            wait.wait(state, item_type, sku.as_str(), event.sequence)
                .await?
        }
        None => None,
    };
    let body = Json(LevelsOut::new(sku, &executed.state));
    Ok(with_wait_result(
        (StatusCode::CREATED, body).into_response(),
        waited,
    ))
}

#[tracing::instrument(skip_all, fields(sku = %sku))]
async fn receive(
    State(state): State<AppState>,
    PathParams(sku): PathParams<Sku>,
    ctx: CommandContext,
    wait: WaitFor,
    JsonBody(body): JsonBody<ReceiptIn>,
) -> Result<Response, ApiError> {
    let command = InventoryCommand::ReceiveStock {
        quantity: body.quantity,
        at: ctx.0.received_at,
    };
    run(&state, sku, command, ctx, wait).await
}

#[tracing::instrument(skip_all, fields(sku = %sku))]
async fn adjust(
    State(state): State<AppState>,
    PathParams(sku): PathParams<Sku>,
    ctx: CommandContext,
    wait: WaitFor,
    JsonBody(body): JsonBody<AdjustmentIn>,
) -> Result<Response, ApiError> {
    // `unsigned_abs`: `abs` of i64::MIN overflows (a panic, or in release a negative
    // number that passed this check).
    if body.delta == 0 || body.delta.unsigned_abs() > MAX_DELTA.unsigned_abs() {
        return Err(ApiError::invalid_field(
            "delta",
            format!("must be non-zero and at most {MAX_DELTA} either way"),
        ));
    }
    let command = InventoryCommand::AdjustStock {
        delta: body.delta,
        reason: body.reason,
        at: ctx.0.received_at,
    };
    run(&state, sku, command, ctx, wait).await
}

async fn item(
    State(state): State<AppState>,
    PathParams(sku): PathParams<Sku>,
) -> Result<Json<StockRow>, ApiError> {
    let table = state
        .projections
        .table(inventory::NAME, inventory::ITEMS.name)
        .await?;
    inventory::item(&state.db, &table, sku.as_str())
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::not_found("sku_not_found", format!("no stock is tracked for `{sku}`"))
        })
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct LowStockQuery {
    below: i64,
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
struct LowStockOut {
    items: Vec<StockRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// Items with fewer than `below` units available, fewest first.
async fn low_stock(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<LowStockQuery>,
) -> Result<Json<LowStockOut>, ApiError> {
    let limit = parse_limit(query.limit, 100, 1000)?;
    let after = query
        .cursor
        .as_deref()
        .map(|raw| {
            let invalid = || ApiError::invalid_field("cursor", "is not a cursor this API returned");
            let text = hex::decode(raw)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(invalid)?;
            let (available, sku) = text.split_once('|').ok_or_else(invalid)?;
            // Decoded, it is a client's text like any other.
            if sku.is_empty() || check_line(sku).is_err() {
                return Err(invalid());
            }
            Ok::<_, ApiError>((
                available.parse::<i64>().map_err(|_| invalid())?,
                sku.to_owned(),
            ))
        })
        .transpose()?;
    let table = state
        .projections
        .table(inventory::NAME, inventory::ITEMS.name)
        .await?;
    let mut items = inventory::low_stock(&state.db, &table, query.below, after, limit + 1).await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items
            .last()
            .map(|i| hex::encode(format!("{}|{}", i.available, i.id)))
    } else {
        None
    };
    Ok(Json(LowStockOut { items, next_cursor }))
}
