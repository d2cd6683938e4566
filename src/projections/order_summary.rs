//! Order summaries: one row per order, for listing and filtering orders.
//!
//! The row keeps the few facts an order's status follows from, and derives the status
//! with the domain's own rule ([`OrderStatus::of`]), so the list never disagrees with
//! `GET /v1/orders/{id}`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{BoxFuture, Envelope, Projection, ProjectionError, Rows, View, ViewRow};
use crate::domain::order::{OrderEvent, OrderStatus, StatusFacts};
use crate::store::views::{bigint, fixed_time, select, text, Param, Table};
use crate::store::{Database, StoreError};

pub struct OrderSummary;

pub const NAME: &str = "order_summary";

pub static ORDERS: Table = Table {
    name: "orders",
    columns: &[
        text("id"),
        text("status"),
        text("customer_id"),
        text("currency"),
        bigint("total"),
        bigint("paid"),
        bigint("refunded"),
        bigint("item_count"),
        bigint("units_shipped"),
        bigint("pending_payments"),
        bigint("cancelled"),
        bigint("expired"),
        bigint("fulfilled"),
        text("created_at"),
        text("updated_at"),
        text("source"),
        text("external_id"),
        text("external_number"),
    ],
    indexes: &[
        &["created_at", "id"],
        &["status", "created_at"],
        &["customer_id", "created_at"],
        &["source", "external_id"],
    ],
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SummaryRow {
    pub id: String,
    pub status: String,
    pub customer_id: String,
    pub currency: String,
    pub total: i64,
    pub paid: i64,
    pub refunded: i64,
    pub item_count: i64,
    pub units_shipped: i64,
    pub pending_payments: i64,
    pub cancelled: i64,
    pub expired: i64,
    pub fulfilled: i64,
    #[serde(with = "fixed_time")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "fixed_time")]
    pub updated_at: DateTime<Utc>,
    /// The storefront source, and the platform's id and number, of an order that came
    /// through one.
    pub source: Option<String>,
    pub external_id: Option<String>,
    pub external_number: Option<String>,
}

impl ViewRow for SummaryRow {
    fn id(&self) -> String {
        self.id.clone()
    }
}

impl SummaryRow {
    fn refresh_status(&mut self) {
        let facts = StatusFacts {
            total: self.total,
            captured: self.paid,
            refunded: self.refunded,
            pending_payment: self.pending_payments > 0,
            units_ordered: self.item_count.max(0) as u64,
            units_shipped: self.units_shipped.max(0) as u64,
            cancelled: self.cancelled != 0,
            expired: self.expired != 0,
            fulfilled: self.fulfilled != 0,
        };
        // In place: this runs for every event of every order.
        self.status.clear();
        self.status.push_str(OrderStatus::of(&facts).as_str());
    }
}

impl Projection for OrderSummary {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> i64 {
        // 2: the order's origin (source, external id and number).
        2
    }

    fn tables(&self) -> &'static [Table] {
        std::slice::from_ref(&ORDERS)
    }

    fn apply<'a>(
        &'a self,
        view: &'a mut View,
        events: &'a [Envelope],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let ids = events
                .iter()
                .filter_map(Envelope::order_event)
                .map(|e| e.order_id().as_str().to_owned());
            let mut rows: Rows<SummaryRow> = Rows::load(view, &ORDERS, ids).await?;
            for event in events.iter().filter_map(Envelope::order_event) {
                apply(&mut rows, event);
            }
            rows.save(view).await?;
            Ok(())
        })
    }
}

fn apply(rows: &mut Rows<SummaryRow>, event: &OrderEvent) {
    let id = event.order_id().as_str();
    if let OrderEvent::OrderCreated {
        customer_id,
        currency,
        lines,
        total,
        placed_at,
        origin,
        ..
    } = event
    {
        let origin = origin.as_deref();
        let mut row = SummaryRow {
            id: id.to_owned(),
            status: String::new(),
            customer_id: customer_id.as_str().to_owned(),
            currency: currency.code().to_owned(),
            total: total.amount(),
            paid: 0,
            refunded: 0,
            item_count: lines.iter().map(|l| i64::from(l.quantity.get())).sum(),
            units_shipped: 0,
            pending_payments: 0,
            cancelled: 0,
            expired: 0,
            fulfilled: 0,
            created_at: *placed_at,
            updated_at: *placed_at,
            source: origin.map(|o| o.source.as_str().to_owned()),
            external_id: origin.map(|o| o.external_id.as_str().to_owned()),
            external_number: origin
                .and_then(|o| o.external_number.as_ref())
                .map(|n| n.as_str().to_owned()),
        };
        row.refresh_status();
        rows.insert(row);
        return;
    }
    let Some(row) = rows.get_mut(id) else {
        return;
    };
    match event {
        OrderEvent::OrderCreated { .. } => {}
        OrderEvent::PaymentAttempted { .. } => row.pending_payments += 1,
        OrderEvent::PaymentCaptured { captured_total, .. } => {
            row.pending_payments -= 1;
            row.paid = captured_total.amount();
        }
        OrderEvent::PaymentFailed { .. } => row.pending_payments -= 1,
        OrderEvent::ShipmentDispatched { lines, .. } => {
            row.units_shipped += lines
                .iter()
                .map(|l| i64::from(l.quantity.get()))
                .sum::<i64>();
        }
        OrderEvent::ShipmentDelivered { .. } => {}
        OrderEvent::OrderFulfilled { .. } => row.fulfilled = 1,
        OrderEvent::OrderCancelled { .. } => row.cancelled = 1,
        OrderEvent::OrderExpired { .. } => row.expired = 1,
        OrderEvent::OrderRefunded { refunded_total, .. } => row.refunded = refunded_total.amount(),
    }
    row.updated_at = event.occurred_at();
    row.refresh_status();
}

/// Filters of `GET /v1/orders`. Results come newest first.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub status: Option<OrderStatus>,
    pub customer_id: Option<String>,
    /// Orders of one storefront source, and one platform order of it.
    pub source: Option<String>,
    pub external_id: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Continue after this `(created_at, id)`, from a previous page.
    pub after: Option<(String, String)>,
    pub limit: i64,
}

pub async fn list(
    db: &Database,
    table: &str,
    filter: &Filter,
) -> Result<Vec<SummaryRow>, StoreError> {
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    let mut push = |condition: &str, param: Param| {
        params.push(param);
        conditions.push(condition.replace('?', &format!("${}", params.len())));
    };
    if let Some(status) = filter.status {
        push("status = ?", Param::Text(status.as_str().to_owned()));
    }
    if let Some(customer) = &filter.customer_id {
        push("customer_id = ?", Param::Text(customer.clone()));
    }
    if let Some(source) = &filter.source {
        push("source = ?", Param::Text(source.clone()));
    }
    if let Some(external_id) = &filter.external_id {
        push("external_id = ?", Param::Text(external_id.clone()));
    }
    if let Some(after) = &filter.created_after {
        push("created_at >= ?", Param::Text(fixed_time::format(after)));
    }
    if let Some(before) = &filter.created_before {
        push("created_at < ?", Param::Text(fixed_time::format(before)));
    }
    if let Some((created_at, id)) = &filter.after {
        // Row-value comparison: both backends use the (created_at, id) index for it.
        params.push(Param::Text(created_at.clone()));
        params.push(Param::Text(id.clone()));
        conditions.push(format!(
            "(created_at, id) < (${}, ${})",
            params.len() - 1,
            params.len()
        ));
    }
    params.push(Param::Int(filter.limit));
    let filter_sql = format!(
        "{} ORDER BY created_at DESC, id DESC LIMIT ${}",
        if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conditions.join(" AND "))
        },
        params.len()
    );
    select(db, table, &ORDERS, &filter_sql, &params).await
}
