//! The inventory item's events. Each `rename` is the stored `event_type`: a contract.
//! Every event states the item's levels that it changes, as they are after it, so a stock
//! view never recomputes.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::domain::tagged;
use crate::domain::values::{utc, OrderId, Quantity, ShipmentId, Sku, Text};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Stored as `{"type": <name>, <fields>…}`, through `domain::tagged` (see below): the
// derive gives the externally tagged form, as inherent functions.
#[serde(remote = "Self")]
pub enum InventoryEvent {
    /// Emitted when units arrive (a delivery from a supplier, a restock, a return).
    #[serde(rename = "inventory.received")]
    StockReceived {
        sku: Sku,
        quantity: Quantity,
        on_hand: i64,
        available: i64,
        #[serde(deserialize_with = "utc::deserialize")]
        received_at: DateTime<Utc>,
    },
    /// Emitted when a count is corrected (shrinkage, damage, a stocktake); `delta` may be
    /// negative.
    #[serde(rename = "inventory.adjusted")]
    StockAdjusted {
        sku: Sku,
        delta: i64,
        reason: Text,
        on_hand: i64,
        available: i64,
        #[serde(deserialize_with = "utc::deserialize")]
        adjusted_at: DateTime<Utc>,
    },
    /// Emitted when units are held for an order being placed.
    #[serde(rename = "inventory.reserved")]
    StockReserved {
        sku: Sku,
        order_id: OrderId,
        quantity: Quantity,
        reserved: i64,
        available: i64,
        #[serde(deserialize_with = "utc::deserialize")]
        reserved_at: DateTime<Utc>,
    },
    /// Emitted when a reservation could not be made: too few units available. Nothing is
    /// held; the fact that demand met an empty shelf is kept.
    #[serde(rename = "inventory.rejected")]
    ReservationRejected {
        sku: Sku,
        order_id: OrderId,
        requested: Quantity,
        available: i64,
        #[serde(deserialize_with = "utc::deserialize")]
        rejected_at: DateTime<Utc>,
    },
    /// Emitted when an order's held units go back to available: the order was cancelled,
    /// expired, left unpaid after a failed payment, or never placed.
    #[serde(rename = "inventory.released")]
    ReservationReleased {
        sku: Sku,
        order_id: OrderId,
        quantity: Quantity,
        reason: Text,
        reserved: i64,
        available: i64,
        #[serde(deserialize_with = "utc::deserialize")]
        released_at: DateTime<Utc>,
    },
    /// Emitted when units ship: they leave on-hand, taken from the order's reservation
    /// (`from_reservation`) and, for any rest, from available. Units that stock could not
    /// cover but the order had backordered (`from_backorder`) shipped all the same (the
    /// platform's sale happened): they settle the backorder and never touch on-hand.
    /// Stored before backorders without the two backorder fields, which then read as 0.
    #[serde(rename = "inventory.committed")]
    ReservationCommitted {
        sku: Sku,
        order_id: OrderId,
        shipment_id: ShipmentId,
        quantity: Quantity,
        from_reservation: u32,
        #[serde(default, skip_serializing_if = "is_zero")]
        from_backorder: u32,
        on_hand: i64,
        reserved: i64,
        available: i64,
        /// The SKU's backordered units after it.
        #[serde(default, skip_serializing_if = "is_zero")]
        backordered: i64,
        #[serde(deserialize_with = "utc::deserialize")]
        committed_at: DateTime<Utc>,
    },
    /// Emitted when a storefront's sale wants more units than are available: the rest,
    /// `quantity`, is owed to the order, after any units reserved for it just before.
    /// Nothing is held; `backordered` is the SKU's total owed after it.
    #[serde(rename = "inventory.backordered")]
    StockBackordered {
        sku: Sku,
        order_id: OrderId,
        quantity: Quantity,
        backordered: i64,
        #[serde(deserialize_with = "utc::deserialize")]
        backordered_at: DateTime<Utc>,
    },
    /// Emitted after units became available (a receipt, an adjustment up, a release), once
    /// per backorder they fill, oldest first: `quantity` units move into the order's
    /// reservation, and `remaining` are still owed to it.
    #[serde(rename = "inventory.backorder_filled")]
    BackorderFilled {
        sku: Sku,
        order_id: OrderId,
        quantity: Quantity,
        remaining: u32,
        reserved: i64,
        available: i64,
        backordered: i64,
        #[serde(deserialize_with = "utc::deserialize")]
        filled_at: DateTime<Utc>,
    },
    /// Emitted when an order's outstanding backorder is dropped, by the release of its
    /// stock (cancelled, expired, never placed), after any `inventory.released`: the
    /// `quantity` units still owed to it will not be filled.
    #[serde(rename = "inventory.backorder_cancelled")]
    BackorderCancelled {
        sku: Sku,
        order_id: OrderId,
        quantity: Quantity,
        reason: Text,
        backordered: i64,
        #[serde(deserialize_with = "utc::deserialize")]
        cancelled_at: DateTime<Utc>,
    },
}

/// A count of zero is left out of a stored event: it is what an absent field reads as.
fn is_zero<N: Default + PartialEq>(n: &N) -> bool {
    *n == N::default()
}

tagged::stored_form!(InventoryEvent);

impl InventoryEvent {
    pub const VERSION: &'static str = "1.0";

    /// Every stored name, as [`InventoryEvent::name`] gives them.
    pub const NAMES: &'static [&'static str] = &[
        "inventory.received",
        "inventory.adjusted",
        "inventory.reserved",
        "inventory.rejected",
        "inventory.released",
        "inventory.committed",
        "inventory.backordered",
        "inventory.backorder_filled",
        "inventory.backorder_cancelled",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            InventoryEvent::StockReceived { .. } => "inventory.received",
            InventoryEvent::StockAdjusted { .. } => "inventory.adjusted",
            InventoryEvent::StockReserved { .. } => "inventory.reserved",
            InventoryEvent::ReservationRejected { .. } => "inventory.rejected",
            InventoryEvent::ReservationReleased { .. } => "inventory.released",
            InventoryEvent::ReservationCommitted { .. } => "inventory.committed",
            InventoryEvent::StockBackordered { .. } => "inventory.backordered",
            InventoryEvent::BackorderFilled { .. } => "inventory.backorder_filled",
            InventoryEvent::BackorderCancelled { .. } => "inventory.backorder_cancelled",
        }
    }

    pub fn sku(&self) -> &Sku {
        match self {
            InventoryEvent::StockReceived { sku, .. }
            | InventoryEvent::StockAdjusted { sku, .. }
            | InventoryEvent::StockReserved { sku, .. }
            | InventoryEvent::ReservationRejected { sku, .. }
            | InventoryEvent::ReservationReleased { sku, .. }
            | InventoryEvent::ReservationCommitted { sku, .. }
            | InventoryEvent::StockBackordered { sku, .. }
            | InventoryEvent::BackorderFilled { sku, .. }
            | InventoryEvent::BackorderCancelled { sku, .. } => sku,
        }
    }

    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            InventoryEvent::StockReceived {
                received_at: at, ..
            }
            | InventoryEvent::StockAdjusted {
                adjusted_at: at, ..
            }
            | InventoryEvent::StockReserved {
                reserved_at: at, ..
            }
            | InventoryEvent::ReservationRejected {
                rejected_at: at, ..
            }
            | InventoryEvent::ReservationReleased {
                released_at: at, ..
            }
            | InventoryEvent::ReservationCommitted {
                committed_at: at, ..
            }
            | InventoryEvent::StockBackordered {
                backordered_at: at, ..
            }
            | InventoryEvent::BackorderFilled { filled_at: at, .. }
            | InventoryEvent::BackorderCancelled {
                cancelled_at: at, ..
            } => *at,
        }
    }
}

impl DomainEvent for InventoryEvent {
    fn event_type(&self) -> String {
        self.name().to_owned()
    }

    fn event_version(&self) -> String {
        Self::VERSION.to_owned()
    }
}
