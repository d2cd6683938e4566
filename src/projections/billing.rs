//! Billing: what each order owes and holds, and money in and out per day and currency.
//!
//! Money is integer minor units; days are UTC days of the payment or refund itself.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{day, BoxFuture, Envelope, Projection, ProjectionError, Rows, View, ViewRow};
use crate::domain::order::OrderEvent;
use crate::store::views::{bigint, fixed_time, select, text, Param, Table};
use crate::store::{Database, StoreError};

pub struct Billing;

pub const NAME: &str = "billing";

pub static ORDERS: Table = Table {
    name: "orders",
    columns: &[
        text("id"),
        text("currency"),
        bigint("total"),
        bigint("amount_due"),
        bigint("captured"),
        bigint("failed_attempts"),
        bigint("refunded"),
        bigint("balance"),
        text("updated_at"),
    ],
    indexes: &[],
};

pub static DAILY: Table = Table {
    name: "daily",
    columns: &[
        text("id"),
        text("day"),
        text("currency"),
        bigint("captured"),
        bigint("refunded"),
        bigint("net"),
    ],
    indexes: &[&["day", "currency"]],
};

static TABLES: [Table; 2] = [ORDERS, DAILY];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BillingRow {
    pub id: String,
    pub currency: String,
    pub total: i64,
    /// Still to be captured.
    pub amount_due: i64,
    pub captured: i64,
    pub failed_attempts: i64,
    pub refunded: i64,
    /// Captured minus refunded: what the merchant holds.
    pub balance: i64,
    #[serde(with = "fixed_time")]
    pub updated_at: DateTime<Utc>,
}

impl ViewRow for BillingRow {
    fn id(&self) -> String {
        self.id.clone()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = BillingDay)]
pub struct DailyRow {
    pub id: String,
    pub day: String,
    pub currency: String,
    pub captured: i64,
    pub refunded: i64,
    pub net: i64,
}

impl ViewRow for DailyRow {
    fn id(&self) -> String {
        self.id.clone()
    }
}

fn daily_id(day: &str, currency: &str) -> String {
    [day, currency].join("|")
}

/// The day and currency a money movement counts towards, if the event moves money.
fn money_movement(event: &OrderEvent) -> Option<(String, String)> {
    match event {
        OrderEvent::PaymentCaptured {
            amount,
            captured_at,
            ..
        } => Some((day(captured_at), amount.currency().code().to_owned())),
        OrderEvent::OrderRefunded {
            amount,
            refunded_at,
            ..
        } => Some((day(refunded_at), amount.currency().code().to_owned())),
        _ => None,
    }
}

impl Projection for Billing {
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
            let order_ids = order_events
                .iter()
                .map(|e| e.order_id().as_str().to_owned());
            let mut orders: Rows<BillingRow> = Rows::load(view, &ORDERS, order_ids).await?;
            let day_ids = order_events
                .iter()
                .filter_map(|e| money_movement(e))
                .map(|(d, c)| daily_id(&d, &c));
            let mut daily: Rows<DailyRow> = Rows::load(view, &DAILY, day_ids).await?;
            for event in order_events {
                apply(&mut orders, &mut daily, event);
            }
            orders.save(view).await?;
            daily.save(view).await?;
            Ok(())
        })
    }
}

fn apply(orders: &mut Rows<BillingRow>, daily: &mut Rows<DailyRow>, event: &OrderEvent) {
    let id = event.order_id().as_str();
    if let OrderEvent::OrderCreated {
        currency,
        total,
        placed_at,
        ..
    } = event
    {
        orders.insert(BillingRow {
            id: id.to_owned(),
            currency: currency.code().to_owned(),
            total: total.amount(),
            amount_due: total.amount(),
            captured: 0,
            failed_attempts: 0,
            refunded: 0,
            balance: 0,
            updated_at: *placed_at,
        });
        return;
    }
    if let Some((day, currency)) = money_movement(event) {
        let entry = daily.entry(&daily_id(&day, &currency), || DailyRow {
            id: daily_id(&day, &currency),
            day: day.clone(),
            currency: currency.clone(),
            captured: 0,
            refunded: 0,
            net: 0,
        });
        match event {
            OrderEvent::PaymentCaptured { amount, .. } => entry.captured += amount.amount(),
            OrderEvent::OrderRefunded { amount, .. } => entry.refunded += amount.amount(),
            _ => {}
        }
        entry.net = entry.captured - entry.refunded;
    }
    let Some(row) = orders.get_mut(id) else {
        return;
    };
    match event {
        OrderEvent::PaymentCaptured { captured_total, .. } => {
            row.captured = captured_total.amount();
        }
        OrderEvent::PaymentFailed { .. } => row.failed_attempts += 1,
        OrderEvent::OrderRefunded { refunded_total, .. } => {
            row.refunded = refunded_total.amount();
        }
        _ => return,
    }
    row.amount_due = (row.total - row.captured).max(0);
    row.balance = row.captured - row.refunded;
    row.updated_at = event.occurred_at();
}

pub async fn order(
    db: &Database,
    table: &str,
    order_id: &str,
) -> Result<Option<BillingRow>, StoreError> {
    let rows = select(
        db,
        table,
        &ORDERS,
        "WHERE id = $1",
        &[Param::Text(order_id.to_owned())],
    )
    .await?;
    Ok(rows.into_iter().next())
}

/// Days in `[from, to]` (inclusive), optionally of one currency, oldest first.
pub async fn daily(
    db: &Database,
    table: &str,
    from: &str,
    to: &str,
    currency: Option<&str>,
) -> Result<Vec<DailyRow>, StoreError> {
    let mut params = vec![Param::Text(from.to_owned()), Param::Text(to.to_owned())];
    let mut filter = "WHERE day >= $1 AND day <= $2".to_owned();
    if let Some(currency) = currency {
        params.push(Param::Text(currency.to_owned()));
        filter.push_str(" AND currency = $3");
    }
    filter.push_str(" ORDER BY day, currency");
    select(db, table, &DAILY, &filter, &params).await
}
