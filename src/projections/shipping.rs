//! Shipping: every shipment with its carrier, tracking and status, and the backlog of
//! orders that are paid but still have units to ship.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{BoxFuture, Envelope, Projection, ProjectionError, Rows, View, ViewRow};
use crate::domain::order::OrderEvent;
use crate::store::views::{bigint, fixed_time, select, text, Param, Table};
use crate::store::{Database, StoreError};

pub struct Shipping;

pub const NAME: &str = "shipping";

pub static SHIPMENTS: Table = Table {
    name: "shipments",
    columns: &[
        text("id"),
        text("order_id"),
        text("shipment_id"),
        text("carrier"),
        text("tracking_number"),
        text("status"),
        bigint("units"),
        text("dispatched_at"),
        text("delivered_at"),
    ],
    indexes: &[&["status", "dispatched_at"], &["dispatched_at"]],
};

/// Orders not yet fully shipped. A row leaves when its last unit ships or the order is
/// cancelled, so the table stays as small as the real backlog.
pub static ORDERS: Table = Table {
    name: "orders",
    columns: &[
        text("id"),
        text("customer_id"),
        bigint("total"),
        bigint("captured"),
        bigint("units_ordered"),
        bigint("units_shipped"),
        text("placed_at"),
        text("paid_at"),
    ],
    indexes: &[&["paid_at"]],
};

static TABLES: [Table; 2] = [SHIPMENTS, ORDERS];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShipmentRow {
    pub id: String,
    pub order_id: String,
    pub shipment_id: String,
    pub carrier: String,
    pub tracking_number: String,
    pub status: String,
    pub units: i64,
    #[serde(with = "fixed_time")]
    pub dispatched_at: DateTime<Utc>,
    #[serde(with = "fixed_time::option")]
    pub delivered_at: Option<DateTime<Utc>>,
}

impl ViewRow for ShipmentRow {
    fn id(&self) -> String {
        self.id.clone()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BacklogRow {
    pub id: String,
    pub customer_id: String,
    pub total: i64,
    pub captured: i64,
    pub units_ordered: i64,
    pub units_shipped: i64,
    #[serde(with = "fixed_time")]
    pub placed_at: DateTime<Utc>,
    #[serde(with = "fixed_time::option")]
    pub paid_at: Option<DateTime<Utc>>,
}

impl ViewRow for BacklogRow {
    fn id(&self) -> String {
        self.id.clone()
    }
}

fn shipment_key(order_id: &str, shipment_id: &str) -> String {
    [order_id, shipment_id].join("/")
}

impl Projection for Shipping {
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
            let shipment_ids = order_events.iter().filter_map(|e| match e {
                OrderEvent::ShipmentDelivered {
                    order_id,
                    shipment_id,
                    ..
                } => Some(shipment_key(order_id.as_str(), shipment_id.as_str())),
                _ => None,
            });
            let mut shipments: Rows<ShipmentRow> =
                Rows::load(view, &SHIPMENTS, shipment_ids).await?;
            let order_ids = order_events
                .iter()
                .map(|e| e.order_id().as_str().to_owned());
            let mut orders: Rows<BacklogRow> = Rows::load(view, &ORDERS, order_ids).await?;
            for event in order_events {
                apply(&mut shipments, &mut orders, event);
            }
            shipments.save(view).await?;
            orders.save(view).await?;
            Ok(())
        })
    }
}

fn apply(shipments: &mut Rows<ShipmentRow>, orders: &mut Rows<BacklogRow>, event: &OrderEvent) {
    let order_id = event.order_id().as_str();
    match event {
        OrderEvent::OrderCreated {
            customer_id,
            lines,
            total,
            placed_at,
            ..
        } => orders.insert(BacklogRow {
            id: order_id.to_owned(),
            customer_id: customer_id.as_str().to_owned(),
            total: total.amount(),
            captured: 0,
            units_ordered: lines.iter().map(|l| i64::from(l.quantity.get())).sum(),
            units_shipped: 0,
            placed_at: *placed_at,
            paid_at: None,
        }),
        OrderEvent::PaymentCaptured {
            captured_total,
            captured_at,
            ..
        } => {
            if let Some(row) = orders.get_mut(order_id) {
                row.captured = captured_total.amount();
                if row.captured >= row.total {
                    row.paid_at = Some(*captured_at);
                }
            }
        }
        OrderEvent::ShipmentDispatched {
            shipment_id,
            carrier,
            tracking_number,
            lines,
            order_fully_shipped,
            dispatched_at,
            ..
        } => {
            let units: i64 = lines.iter().map(|l| i64::from(l.quantity.get())).sum();
            shipments.insert(ShipmentRow {
                id: shipment_key(order_id, shipment_id.as_str()),
                order_id: order_id.to_owned(),
                shipment_id: shipment_id.as_str().to_owned(),
                carrier: carrier.as_str().to_owned(),
                tracking_number: tracking_number.as_str().to_owned(),
                status: "dispatched".to_owned(),
                units,
                dispatched_at: *dispatched_at,
                delivered_at: None,
            });
            if *order_fully_shipped {
                orders.remove(order_id);
            } else if let Some(row) = orders.get_mut(order_id) {
                row.units_shipped += units;
            }
        }
        OrderEvent::ShipmentDelivered {
            shipment_id,
            delivered_at,
            ..
        } => {
            if let Some(row) = shipments.get_mut(&shipment_key(order_id, shipment_id.as_str())) {
                row.status = "delivered".to_owned();
                row.delivered_at = Some(*delivered_at);
            }
        }
        OrderEvent::OrderCancelled { .. } | OrderEvent::OrderExpired { .. } => {
            orders.remove(order_id)
        }
        OrderEvent::PaymentAttempted { .. }
        | OrderEvent::PaymentFailed { .. }
        | OrderEvent::OrderFulfilled { .. }
        | OrderEvent::OrderRefunded { .. } => {}
    }
}

/// Shipments, optionally in one status, newest first.
pub async fn shipments(
    db: &Database,
    table: &str,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<ShipmentRow>, StoreError> {
    match status {
        Some(status) => {
            select(
                db,
                table,
                &SHIPMENTS,
                "WHERE status = $1 ORDER BY dispatched_at DESC, id LIMIT $2",
                &[Param::Text(status.to_owned()), Param::Int(limit)],
            )
            .await
        }
        None => {
            select(
                db,
                table,
                &SHIPMENTS,
                "ORDER BY dispatched_at DESC, id LIMIT $1",
                &[Param::Int(limit)],
            )
            .await
        }
    }
}

/// Paid orders with units left to ship, longest waiting first.
pub async fn backlog(
    db: &Database,
    table: &str,
    limit: i64,
) -> Result<Vec<BacklogRow>, StoreError> {
    select(
        db,
        table,
        &ORDERS,
        "WHERE paid_at IS NOT NULL ORDER BY paid_at, id LIMIT $1",
        &[Param::Int(limit)],
    )
    .await
}
