//! Analytics: per UTC day, orders placed, paid, cancelled, refunded, shipped and
//! delivered; revenue per day and currency; units and revenue per SKU.
//!
//! Each count goes to the day the fact happened: an order placed on Monday and paid on
//! Tuesday counts as placed on Monday and paid on Tuesday. The funnel over a range
//! compares those counts (placed → paid → shipped → delivered).

use serde::{Deserialize, Serialize};

use super::{day, BoxFuture, Envelope, Projection, ProjectionError, Rows, View, ViewRow};
use crate::domain::order::OrderEvent;
use crate::store::views::{bigint, query, select, text, Param, Table};
use crate::store::{Database, StoreError};

pub struct Analytics;

pub const NAME: &str = "analytics";

pub static DAILY: Table = Table {
    name: "daily",
    columns: &[
        text("id"),
        bigint("orders_placed"),
        bigint("orders_paid"),
        bigint("orders_cancelled"),
        bigint("orders_expired"),
        bigint("orders_refunded"),
        bigint("orders_shipped"),
        bigint("orders_delivered"),
    ],
    indexes: &[],
};

pub static REVENUE: Table = Table {
    name: "revenue",
    columns: &[
        text("id"),
        text("day"),
        text("currency"),
        bigint("orders_placed"),
        bigint("placed_value"),
        bigint("gross"),
        bigint("refunded"),
    ],
    indexes: &[&["day"]],
};

pub static SKUS: Table = Table {
    name: "skus",
    columns: &[
        text("id"),
        text("day"),
        text("currency"),
        text("sku"),
        bigint("units"),
        bigint("revenue"),
    ],
    indexes: &[&["day"]],
};

static TABLES: [Table; 3] = [DAILY, REVENUE, SKUS];

/// One day's counts; `id` is the day (`2026-11-21`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DailyRow {
    pub id: String,
    pub orders_placed: i64,
    pub orders_paid: i64,
    pub orders_cancelled: i64,
    /// Orders that expired unpaid that day.
    pub orders_expired: i64,
    /// Orders whose captured money was refunded in full that day.
    pub orders_refunded: i64,
    /// Orders whose last unit shipped that day.
    pub orders_shipped: i64,
    /// Orders fulfilled (everything delivered) that day.
    pub orders_delivered: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RevenueRow {
    pub id: String,
    pub day: String,
    pub currency: String,
    pub orders_placed: i64,
    /// Sum of the totals of orders placed.
    pub placed_value: i64,
    /// Money captured.
    pub gross: i64,
    pub refunded: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SkuRow {
    pub id: String,
    pub day: String,
    pub currency: String,
    pub sku: String,
    pub units: i64,
    pub revenue: i64,
}

impl ViewRow for DailyRow {
    fn id(&self) -> String {
        self.id.clone()
    }
}

impl ViewRow for RevenueRow {
    fn id(&self) -> String {
        self.id.clone()
    }
}

impl ViewRow for SkuRow {
    fn id(&self) -> String {
        self.id.clone()
    }
}

/// The (day, currency) an event's money counts towards, if it carries money.
fn revenue_key(event: &OrderEvent) -> Option<(String, String)> {
    let (at, currency) = match event {
        OrderEvent::OrderCreated {
            currency,
            placed_at,
            ..
        } => (placed_at, currency.code().to_owned()),
        OrderEvent::PaymentCaptured {
            amount,
            captured_at,
            ..
        } => (captured_at, amount.currency().code().to_owned()),
        OrderEvent::OrderRefunded {
            amount,
            refunded_at,
            ..
        } => (refunded_at, amount.currency().code().to_owned()),
        _ => return None,
    };
    Some((day(at), currency))
}

fn revenue_id(day: &str, currency: &str) -> String {
    [day, currency].join("|")
}

fn sku_id(day: &str, currency: &str, sku: &str) -> String {
    [day, currency, sku].join("|")
}

impl Projection for Analytics {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> i64 {
        1
    }

    fn tables(&self) -> &'static [Table] {
        &TABLES
    }

    fn apply<'a>(
        &'a self,
        view: &'a mut View,
        events: &'a [Envelope],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let order_events: Vec<&OrderEvent> =
                events.iter().filter_map(Envelope::order_event).collect();
            let days = order_events.iter().map(|e| day(&e.occurred_at()));
            let mut daily: Rows<DailyRow> = Rows::load(view, &DAILY, days).await?;
            let revenue_ids = order_events
                .iter()
                .filter_map(|e| revenue_key(e))
                .map(|(d, c)| revenue_id(&d, &c));
            let mut revenue: Rows<RevenueRow> = Rows::load(view, &REVENUE, revenue_ids).await?;
            let sku_ids = order_events.iter().flat_map(|e| match e {
                OrderEvent::OrderCreated {
                    currency,
                    lines,
                    placed_at,
                    ..
                } => lines
                    .iter()
                    .map(|l| sku_id(&day(placed_at), currency.code(), l.sku.as_str()))
                    .collect(),
                _ => Vec::new(),
            });
            let mut skus: Rows<SkuRow> = Rows::load(view, &SKUS, sku_ids).await?;
            for event in order_events {
                apply(&mut daily, &mut revenue, &mut skus, event);
            }
            daily.save(view).await?;
            revenue.save(view).await?;
            skus.save(view).await?;
            Ok(())
        })
    }
}

fn apply(
    daily: &mut Rows<DailyRow>,
    revenue: &mut Rows<RevenueRow>,
    skus: &mut Rows<SkuRow>,
    event: &OrderEvent,
) {
    let today = day(&event.occurred_at());
    let counts = daily.entry(&today, || DailyRow {
        id: today.clone(),
        ..DailyRow::default()
    });
    match event {
        OrderEvent::OrderCreated { .. } => counts.orders_placed += 1,
        OrderEvent::PaymentCaptured { .. } => counts.orders_paid += 1,
        OrderEvent::OrderCancelled { .. } => counts.orders_cancelled += 1,
        OrderEvent::OrderExpired { .. } => counts.orders_expired += 1,
        OrderEvent::OrderRefunded { fully_refunded, .. } => {
            counts.orders_refunded += i64::from(*fully_refunded)
        }
        OrderEvent::ShipmentDispatched {
            order_fully_shipped,
            ..
        } => counts.orders_shipped += i64::from(*order_fully_shipped),
        OrderEvent::OrderFulfilled { .. } => counts.orders_delivered += 1,
        OrderEvent::PaymentAttempted { .. }
        | OrderEvent::PaymentFailed { .. }
        | OrderEvent::ShipmentDelivered { .. } => {}
    }

    if let Some((day, currency)) = revenue_key(event) {
        let id = revenue_id(&day, &currency);
        let money = revenue.entry(&id, || RevenueRow {
            id: id.clone(),
            day: day.clone(),
            currency: currency.clone(),
            ..RevenueRow::default()
        });
        match event {
            OrderEvent::OrderCreated { total, lines, .. } => {
                money.orders_placed += 1;
                money.placed_value += total.amount();
                for line in lines {
                    let id = sku_id(&day, &currency, line.sku.as_str());
                    let sku = skus.entry(&id, || SkuRow {
                        id: id.clone(),
                        day: day.clone(),
                        currency: currency.clone(),
                        sku: line.sku.as_str().to_owned(),
                        ..SkuRow::default()
                    });
                    sku.units += i64::from(line.quantity.get());
                    sku.revenue += line.line_total.amount();
                }
            }
            OrderEvent::PaymentCaptured { amount, .. } => money.gross += amount.amount(),
            OrderEvent::OrderRefunded { amount, .. } => money.refunded += amount.amount(),
            _ => {}
        }
    }
}

/// Day counts in `[from, to]`, oldest first.
pub async fn daily(
    db: &Database,
    table: &str,
    from: &str,
    to: &str,
) -> Result<Vec<DailyRow>, StoreError> {
    select(
        db,
        table,
        &DAILY,
        "WHERE id >= $1 AND id <= $2 ORDER BY id",
        &[Param::Text(from.to_owned()), Param::Text(to.to_owned())],
    )
    .await
}

/// Revenue rows in `[from, to]`, oldest first.
pub async fn revenue(
    db: &Database,
    table: &str,
    from: &str,
    to: &str,
) -> Result<Vec<RevenueRow>, StoreError> {
    select(
        db,
        table,
        &REVENUE,
        "WHERE day >= $1 AND day <= $2 ORDER BY day, currency",
        &[Param::Text(from.to_owned()), Param::Text(to.to_owned())],
    )
    .await
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopSku {
    pub sku: String,
    pub currency: String,
    pub units: i64,
    pub revenue: i64,
}

/// SKUs by units sold in `[from, to]`, then by revenue.
pub async fn top_skus(
    db: &Database,
    table: &str,
    from: &str,
    to: &str,
    limit: i64,
) -> Result<Vec<TopSku>, StoreError> {
    query(
        db,
        &format!(
            "SELECT sku, currency, CAST(sum(units) AS BIGINT) AS units,
                    CAST(sum(revenue) AS BIGINT) AS revenue
               FROM {table} WHERE day >= $1 AND day <= $2
              GROUP BY sku, currency
              ORDER BY units DESC, revenue DESC, sku LIMIT $3"
        ),
        &["sku", "currency", "units", "revenue"],
        &[
            Param::Text(from.to_owned()),
            Param::Text(to.to_owned()),
            Param::Int(limit),
        ],
    )
    .await
}
