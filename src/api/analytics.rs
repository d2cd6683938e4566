//! `/v1/analytics`: daily counts, revenue, the funnel and top SKUs, from the analytics
//! projection. Ranges are inclusive UTC days.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{parse_day, parse_limit, QueryParams};
use super::openapi::Op;
use super::scoped::Routes;
use crate::auth::Scope;
use crate::projections::analytics::{self, DailyRow, TopSku};
use crate::state::AppState;
use utoipa::{IntoParams, ToSchema};

pub fn routes() -> Routes {
    Routes::new()
        .get("/analytics/summary", Scope::ViewsRead, summary)
        .get("/analytics/top-skus", Scope::ViewsRead, top_skus)
}

/// What [`routes`] serves, for `GET /openapi.json`.
pub fn operations() -> Vec<Op> {
    vec![
        Op::get(
            "/v1/analytics/summary",
            "Per-day counts, revenue and the funnel",
        )
        .query::<RangeQuery>()
        .json::<SummaryOut>(200, "the range's days, totals, revenue and funnel"),
        Op::get("/v1/analytics/top-skus", "SKUs by units sold, then revenue")
            .query::<RangeQuery>()
            .json::<TopSkusOut>(200, "the range's SKUs by units sold"),
    ]
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct RangeQuery {
    /// The first day, inclusive.
    #[param(format = Date)]
    from: String,
    /// The last day, inclusive.
    #[param(format = Date)]
    to: String,
    limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = AnalyticsSummary)]
struct SummaryOut {
    from: String,
    to: String,
    days: Vec<DayOut>,
    totals: Counts,
    revenue: Vec<RevenueOut>,
    funnel: FunnelOut,
}

#[derive(Serialize, Default, Clone, Copy, ToSchema)]
struct Counts {
    orders_placed: i64,
    orders_paid: i64,
    orders_cancelled: i64,
    orders_refunded: i64,
    orders_shipped: i64,
    orders_delivered: i64,
}

impl Counts {
    fn add(&mut self, row: &DailyRow) {
        self.orders_placed += row.orders_placed;
        self.orders_paid += row.orders_paid;
        self.orders_cancelled += row.orders_cancelled;
        self.orders_refunded += row.orders_refunded;
        self.orders_shipped += row.orders_shipped;
        self.orders_delivered += row.orders_delivered;
    }
}

#[derive(Serialize, ToSchema)]
struct DayOut {
    day: String,
    #[serde(flatten)]
    counts: Counts,
    revenue: Vec<RevenueOut>,
}

/// Amounts in minor units of `currency`.
#[derive(Serialize, Default, Clone, ToSchema)]
struct RevenueOut {
    currency: String,
    orders_placed: i64,
    gross_revenue: i64,
    refunded: i64,
    net_revenue: i64,
    /// Total of the orders placed divided by their number, rounded to the minor unit.
    average_order_value: i64,
    placed_value: i64,
}

impl RevenueOut {
    fn finish(mut self) -> Self {
        self.net_revenue = self.gross_revenue - self.refunded;
        self.average_order_value = if self.orders_placed == 0 {
            0
        } else {
            (self.placed_value + self.orders_placed / 2) / self.orders_placed
        };
        self
    }
}

#[derive(Serialize, ToSchema)]
struct FunnelOut {
    placed: i64,
    paid: i64,
    shipped: i64,
    delivered: i64,
    /// paid / placed, shipped / paid, delivered / shipped and delivered / placed;
    /// `null` where the stage before is empty.
    placed_to_paid: Option<f64>,
    paid_to_shipped: Option<f64>,
    shipped_to_delivered: Option<f64>,
    placed_to_delivered: Option<f64>,
}

fn rate(n: i64, d: i64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

async fn summary(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<RangeQuery>,
) -> Result<Json<SummaryOut>, ApiError> {
    let from = parse_day("from", &query.from)?;
    let to = parse_day("to", &query.to)?;
    let daily_table = state
        .projections
        .table(analytics::NAME, analytics::DAILY.name)
        .await?;
    let revenue_table = state
        .projections
        .table(analytics::NAME, analytics::REVENUE.name)
        .await?;
    let daily = analytics::daily(&state.db, &daily_table, &from, &to).await?;
    let revenue = analytics::revenue(&state.db, &revenue_table, &from, &to).await?;

    let mut per_day: BTreeMap<String, (Counts, Vec<RevenueOut>)> = BTreeMap::new();
    let mut totals = Counts::default();
    for row in &daily {
        totals.add(row);
        per_day.entry(row.id.clone()).or_default().0.add(row);
    }
    let mut per_currency: BTreeMap<String, RevenueOut> = BTreeMap::new();
    for row in revenue {
        let out = RevenueOut {
            currency: row.currency.clone(),
            orders_placed: row.orders_placed,
            gross_revenue: row.gross,
            refunded: row.refunded,
            placed_value: row.placed_value,
            ..RevenueOut::default()
        };
        let sum = per_currency
            .entry(row.currency.clone())
            .or_insert_with(|| RevenueOut {
                currency: row.currency.clone(),
                ..RevenueOut::default()
            });
        sum.orders_placed += out.orders_placed;
        sum.gross_revenue += out.gross_revenue;
        sum.refunded += out.refunded;
        sum.placed_value += out.placed_value;
        per_day.entry(row.day).or_default().1.push(out.finish());
    }
    Ok(Json(SummaryOut {
        from,
        to,
        days: per_day
            .into_iter()
            .map(|(day, (counts, revenue))| DayOut {
                day,
                counts,
                revenue,
            })
            .collect(),
        totals,
        revenue: per_currency.into_values().map(RevenueOut::finish).collect(),
        funnel: FunnelOut {
            placed: totals.orders_placed,
            paid: totals.orders_paid,
            shipped: totals.orders_shipped,
            delivered: totals.orders_delivered,
            placed_to_paid: rate(totals.orders_paid, totals.orders_placed),
            paid_to_shipped: rate(totals.orders_shipped, totals.orders_paid),
            shipped_to_delivered: rate(totals.orders_delivered, totals.orders_shipped),
            placed_to_delivered: rate(totals.orders_delivered, totals.orders_placed),
        },
    }))
}

#[derive(Serialize, ToSchema)]
struct TopSkusOut {
    from: String,
    to: String,
    skus: Vec<TopSku>,
}

async fn top_skus(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<RangeQuery>,
) -> Result<Json<TopSkusOut>, ApiError> {
    let from = parse_day("from", &query.from)?;
    let to = parse_day("to", &query.to)?;
    let limit = parse_limit(query.limit, 10, 100)?;
    let table = state
        .projections
        .table(analytics::NAME, analytics::SKUS.name)
        .await?;
    let skus = analytics::top_skus(&state.db, &table, &from, &to, limit).await?;
    Ok(Json(TopSkusOut { from, to, skus }))
}
