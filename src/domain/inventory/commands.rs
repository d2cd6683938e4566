//! What may be asked of one SKU's stock. `at` is when the request was received.

use chrono::{DateTime, Utc};

use crate::domain::values::{OrderId, Quantity, ShipmentId, Text};

#[derive(Debug, Clone, PartialEq)]
pub enum InventoryCommand {
    ReceiveStock {
        quantity: Quantity,
        at: DateTime<Utc>,
    },
    /// `delta` is non-zero and may be negative.
    AdjustStock {
        delta: i64,
        reason: Text,
        at: DateTime<Utc>,
    },
    ReserveStock {
        order_id: OrderId,
        quantity: Quantity,
        at: DateTime<Utc>,
    },
    /// For a storefront's sale, which already happened and is never refused for stock:
    /// reserves what is available, up to `quantity`, and backorders the rest.
    ReserveOrBackorder {
        order_id: OrderId,
        quantity: Quantity,
        at: DateTime<Utc>,
    },
    /// Releases whatever the order holds and drops what is backordered for it; nothing
    /// when it holds nothing.
    ReleaseReservation {
        order_id: OrderId,
        reason: Text,
        at: DateTime<Utc>,
    },
    /// Ships `quantity` units for the order's shipment: from its reservation first, then
    /// from available, then out of its backorder. Committing the same shipment again
    /// changes nothing.
    CommitReservation {
        order_id: OrderId,
        shipment_id: ShipmentId,
        quantity: Quantity,
        at: DateTime<Utc>,
    },
}
