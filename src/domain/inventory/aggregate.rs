//! One SKU's stock: on hand, reserved per order, what is left available, and what is
//! owed to storefront orders (backordered) that stock could not cover.
//!
//! The invariants it keeps:
//! - at every event, reserved + committed ≤ received + adjustments, i.e. `reserved ≤
//!   on_hand`, so `available = on_hand − reserved` is never negative, and neither is
//!   on-hand;
//! - a backorder holds nothing: its units are owed to the order, counted in
//!   `backordered` and never in on-hand, reserved or available. A shipment of owed units
//!   settles the backorder instead of taking on-hand below zero;
//! - after every command, no unit is available while a backorder waits: units that become
//!   available (a receipt, an adjustment up, a release) fill the backorders first, oldest
//!   first, so `backordered > 0` implies `available == 0`, and an order placed through
//!   our API cannot take units owed to an earlier sale.
//!
//! Pure, like every aggregate: no clock, no I/O.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use imbl::{OrdMap, OrdSet, Vector};
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
    /// Units owed per order, in the order they were backordered: the oldest is filled
    /// first. An order appears at most once, and never with zero units.
    backorders: Vector<(OrderId, u32)>,
    backordered: i64,
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

    pub fn backordered(&self) -> i64 {
        self.backordered
    }

    pub fn reservation_of(&self, order_id: &OrderId) -> u32 {
        self.reservations.get(order_id).copied().unwrap_or(0)
    }

    /// The units still owed to the order.
    pub fn backorder_of(&self, order_id: &OrderId) -> u32 {
        self.backorders
            .iter()
            .find(|(id, _)| id == order_id)
            .map_or(0, |(_, units)| *units)
    }

    /// Whether the order holds units or is owed some: a second reservation is refused.
    fn serves(&self, order_id: &OrderId) -> bool {
        self.reservations.contains_key(order_id) || self.backorder_of(order_id) > 0
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
                let received = InventoryEvent::StockReceived {
                    sku: sku.clone(),
                    quantity,
                    on_hand,
                    available: on_hand - self.reserved,
                    received_at: at,
                };
                Ok(self.then_fill(&sku, vec![received], at))
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
                let adjusted = InventoryEvent::StockAdjusted {
                    sku: sku.clone(),
                    delta,
                    reason,
                    on_hand,
                    available,
                    adjusted_at: at,
                };
                // Units found are stock like units received: they are owed first.
                Ok(self.then_fill(&sku, vec![adjusted], at))
            }
            InventoryCommand::ReserveStock {
                order_id,
                quantity,
                at,
            } => {
                if !self.tracked {
                    return Err(InventoryError::NotTracked { sku });
                }
                if self.serves(&order_id) {
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
            InventoryCommand::ReserveOrBackorder {
                order_id,
                quantity,
                at,
            } => {
                if !self.tracked {
                    return Err(InventoryError::NotTracked { sku });
                }
                if self.serves(&order_id) {
                    return Err(InventoryError::AlreadyReserved { order_id });
                }
                let wanted = quantity.get();
                // `available` is never negative, and at most `wanted` here.
                let held = u32::try_from(self.available().min(i64::from(wanted))).unwrap_or(0);
                let mut events = Vec::with_capacity(2);
                if let Ok(held_units) = Quantity::parse(i64::from(held)) {
                    events.push(InventoryEvent::StockReserved {
                        sku: sku.clone(),
                        order_id: order_id.clone(),
                        quantity: held_units,
                        reserved: self.reserved + i64::from(held),
                        available: self.available() - i64::from(held),
                        reserved_at: at,
                    });
                }
                let owed = wanted - held;
                if let Ok(owed_units) = Quantity::parse(i64::from(owed)) {
                    events.push(InventoryEvent::StockBackordered {
                        sku,
                        order_id,
                        quantity: owed_units,
                        backordered: self.backordered + i64::from(owed),
                        backordered_at: at,
                    });
                }
                Ok(events)
            }
            InventoryCommand::ReleaseReservation {
                order_id,
                reason,
                at,
            } => {
                let mut events: Vec<InventoryEvent> = self
                    .release(sku.clone(), order_id.clone(), reason.clone(), at)
                    .into_iter()
                    .collect();
                let owed = self.backorder_of(&order_id);
                if let Ok(quantity) = Quantity::parse(i64::from(owed)) {
                    events.push(InventoryEvent::BackorderCancelled {
                        sku: sku.clone(),
                        order_id,
                        quantity,
                        reason,
                        backordered: self.backordered - i64::from(owed),
                        cancelled_at: at,
                    });
                }
                // The released units are owed to older sales before anyone else.
                Ok(self.then_fill(&sku, events, at))
            }
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
                let rest = wanted - from_reservation;
                let from_available =
                    u32::try_from(self.available().min(i64::from(rest))).unwrap_or(0);
                // What stock could not cover shipped all the same: it can only be units
                // the order was owed, which then are owed no more.
                let from_backorder = self.backorder_of(&order_id).min(rest - from_available);
                if from_reservation + from_available + from_backorder < wanted {
                    return Err(InventoryError::InsufficientStock {
                        requested: wanted,
                        available: self.available(),
                    });
                }
                let on_hand = self.on_hand - i64::from(from_reservation + from_available);
                let reserved = self.reserved - i64::from(from_reservation);
                Ok(vec![InventoryEvent::ReservationCommitted {
                    sku,
                    order_id,
                    shipment_id,
                    quantity,
                    from_reservation,
                    from_backorder,
                    on_hand,
                    reserved,
                    available: on_hand - reserved,
                    backordered: self.backordered - i64::from(from_backorder),
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
        at: DateTime<Utc>,
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

    /// `events`, followed by the fills of the backorders that the units available after
    /// them cover, oldest first.
    fn then_fill(
        &self,
        sku: &Sku,
        mut events: Vec<InventoryEvent>,
        at: DateTime<Utc>,
    ) -> Vec<InventoryEvent> {
        if self.backorders.is_empty() {
            return events;
        }
        let mut after = self.clone();
        for event in &events {
            after.evolve(event.clone());
        }
        events.extend(after.fills(sku, at));
        events
    }

    fn fills(&self, sku: &Sku, at: DateTime<Utc>) -> Vec<InventoryEvent> {
        let mut available = self.available();
        let mut reserved = self.reserved;
        let mut backordered = self.backordered;
        let mut events = Vec::new();
        for (order_id, owed) in self.backorders.iter() {
            let units = u32::try_from(available.min(i64::from(*owed))).unwrap_or(0);
            let Ok(quantity) = Quantity::parse(i64::from(units)) else {
                break;
            };
            available -= i64::from(units);
            reserved += i64::from(units);
            backordered -= i64::from(units);
            events.push(InventoryEvent::BackorderFilled {
                sku: sku.clone(),
                order_id: order_id.clone(),
                quantity,
                remaining: owed - units,
                reserved,
                available,
                backordered,
                filled_at: at,
            });
        }
        events
    }

    /// Takes `units` off what is owed to the order, forgetting it once nothing is.
    fn settle_backorder(&mut self, order_id: &OrderId, units: u32) {
        if units == 0 {
            return;
        }
        if let Some(index) = self.backorders.iter().position(|(id, _)| id == order_id) {
            let owed = self.backorders[index].1.saturating_sub(units);
            if owed == 0 {
                self.backorders.remove(index);
            } else {
                self.backorders.set(index, (order_id.clone(), owed));
            }
        }
        self.backordered -= i64::from(units);
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
                from_backorder,
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
                    self.reservations.insert(order_id.clone(), left);
                }
                self.reserved -= i64::from(from_reservation);
                self.on_hand = on_hand;
                self.settle_backorder(&order_id, from_backorder);
            }
            InventoryEvent::StockBackordered {
                order_id, quantity, ..
            } => {
                self.backorders.push_back((order_id, quantity.get()));
                self.backordered += i64::from(quantity.get());
            }
            InventoryEvent::BackorderFilled {
                order_id, quantity, ..
            } => {
                let units = quantity.get();
                let held = self.reservation_of(&order_id).saturating_add(units);
                self.reservations.insert(order_id.clone(), held);
                self.reserved += i64::from(units);
                self.settle_backorder(&order_id, units);
            }
            InventoryEvent::BackorderCancelled {
                order_id, quantity, ..
            } => self.settle_backorder(&order_id, quantity.get()),
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
