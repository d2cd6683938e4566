//! One SKU's stock: on hand, reserved per order, and what is left available.
//!
//! The invariant it keeps, at every event: reserved + committed ≤ received + adjustments,
//! i.e. `reserved ≤ on_hand`, so `available = on_hand − reserved` is never negative.
//! Pure, like every aggregate: no clock, no I/O.

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

use super::commands::InventoryCommand;
use super::errors::InventoryError;
use super::events::InventoryEvent;
use crate::domain::values::{OrderId, Quantity, ShipmentId, Sku, Text};

/// The most units one SKU may count: far beyond any warehouse, far from overflow.
const MAX_STOCK: i64 = 1_000_000_000_000;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InventoryItem {
    sku: Option<Sku>,
    /// Stock is tracked once it has been received or adjusted.
    tracked: bool,
    on_hand: i64,
    reservations: OrdMap<OrderId, u32>,
    reserved: i64,
    /// Shipments already committed, so that a repeated commit changes nothing.
    committed: OrdSet<(OrderId, ShipmentId)>,
}

impl InventoryItem {
    pub fn on_hand(&self) -> i64 {
        self.on_hand
    }

    pub fn reserved(&self) -> i64 {
        self.reserved
    }

    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }

    pub fn reservation_of(&self, order_id: &OrderId) -> u32 {
        self.reservations.get(order_id).copied().unwrap_or(0)
    }

    /// Decides which events a command causes for `sku` (the aggregate's id).
    pub fn decide(
        &self,
        sku: &Sku,
        command: InventoryCommand,
    ) -> Result<Vec<InventoryEvent>, InventoryError> {
        let sku = sku.clone();
        match command {
            InventoryCommand::ReceiveStock { quantity, at } => {
                let on_hand = self.on_hand + i64::from(quantity.get());
                if on_hand > MAX_STOCK {
                    return Err(InventoryError::TooMuchStock);
                }
                Ok(vec![InventoryEvent::StockReceived {
                    sku,
                    quantity,
                    on_hand,
                    available: on_hand - self.reserved,
                    received_at: at,
                }])
            }
            InventoryCommand::AdjustStock { delta, reason, at } => {
                if delta == 0 {
                    return Err(InventoryError::ZeroAdjustment);
                }
                let on_hand = self.on_hand.saturating_add(delta);
                if on_hand > MAX_STOCK {
                    return Err(InventoryError::TooMuchStock);
                }
                let available = on_hand - self.reserved;
                if available < 0 {
                    return Err(InventoryError::WouldGoNegative { after: available });
                }
                Ok(vec![InventoryEvent::StockAdjusted {
                    sku,
                    delta,
                    reason,
                    on_hand,
                    available,
                    adjusted_at: at,
                }])
            }
            InventoryCommand::ReserveStock {
                order_id,
                quantity,
                at,
            } => {
                if !self.tracked {
                    return Err(InventoryError::NotTracked { sku });
                }
                if self.reservations.contains_key(&order_id) {
                    return Err(InventoryError::AlreadyReserved { order_id });
                }
                let wanted = i64::from(quantity.get());
                if wanted > self.available() {
                    return Ok(vec![InventoryEvent::ReservationRejected {
                        sku,
                        order_id,
                        requested: quantity,
                        available: self.available(),
                        rejected_at: at,
                    }]);
                }
                Ok(vec![InventoryEvent::StockReserved {
                    sku,
                    order_id,
                    quantity,
                    reserved: self.reserved + wanted,
                    available: self.available() - wanted,
                    reserved_at: at,
                }])
            }
            InventoryCommand::ReleaseReservation {
                order_id,
                reason,
                at,
            } => Ok(self
                .release(sku, order_id, reason, at)
                .into_iter()
                .collect()),
            InventoryCommand::CommitReservation {
                order_id,
                shipment_id,
                quantity,
                at,
            } => {
                if self
                    .committed
                    .contains(&(order_id.clone(), shipment_id.clone()))
                {
                    return Ok(Vec::new());
                }
                let wanted = quantity.get();
                let from_reservation = self.reservation_of(&order_id).min(wanted);
                let rest = i64::from(wanted - from_reservation);
                if rest > self.available() {
                    return Err(InventoryError::InsufficientStock {
                        requested: wanted,
                        available: self.available(),
                    });
                }
                let on_hand = self.on_hand - i64::from(wanted);
                let reserved = self.reserved - i64::from(from_reservation);
                Ok(vec![InventoryEvent::ReservationCommitted {
                    sku,
                    order_id,
                    shipment_id,
                    quantity,
                    from_reservation,
                    on_hand,
                    reserved,
                    available: on_hand - reserved,
                    committed_at: at,
                }])
            }
        }
    }

    fn release(
        &self,
        sku: Sku,
        order_id: OrderId,
        reason: Text,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Option<InventoryEvent> {
        let held = self.reservation_of(&order_id);
        let quantity = Quantity::parse(i64::from(held)).ok()?;
        Some(InventoryEvent::ReservationReleased {
            sku,
            order_id,
            quantity,
            reason,
            reserved: self.reserved - i64::from(held),
            available: self.available() + i64::from(held),
            released_at: at,
        })
    }

    pub fn evolve(&mut self, event: InventoryEvent) {
        if self.sku.is_none() {
            self.sku = Some(event.sku().clone());
        }
        match event {
            InventoryEvent::StockReceived { on_hand, .. }
            | InventoryEvent::StockAdjusted { on_hand, .. } => {
                self.tracked = true;
                self.on_hand = on_hand;
            }
            InventoryEvent::StockReserved {
                order_id, quantity, ..
            } => {
                self.reservations.insert(order_id, quantity.get());
                self.reserved += i64::from(quantity.get());
            }
            InventoryEvent::ReservationRejected { .. } => {}
            InventoryEvent::ReservationReleased {
                order_id, quantity, ..
            } => {
                self.reservations.remove(&order_id);
                self.reserved -= i64::from(quantity.get());
            }
            InventoryEvent::ReservationCommitted {
                order_id,
                shipment_id,
                from_reservation,
                on_hand,
                ..
            } => {
                self.committed.insert((order_id.clone(), shipment_id));
                let left = self
                    .reservation_of(&order_id)
                    .saturating_sub(from_reservation);
                if left == 0 {
                    self.reservations.remove(&order_id);
                } else {
                    self.reservations.insert(order_id, left);
                }
                self.reserved -= i64::from(from_reservation);
                self.on_hand = on_hand;
            }
        }
    }
}

/// A command with the SKU it is for: cqrs-es does not hand `handle` the aggregate id, and
/// the events name their SKU.
#[derive(Debug, Clone, PartialEq)]
pub struct InventoryCommandFor {
    pub sku: Sku,
    pub command: InventoryCommand,
}

impl Aggregate for InventoryItem {
    const TYPE: &'static str = "inventory";
    type Command = InventoryCommandFor;
    type Event = InventoryEvent;
    type Error = InventoryError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(&command.sku, command.command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.evolve(event);
    }
}
