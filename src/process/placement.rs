//! Placing an order: reserve every tracked line, then create the order.
//!
//! Two modes. [`Placement::place`], for orders through our API, is all or nothing: the
//! caller gets a synchronous answer, the order with its stock held, or the short SKUs and
//! nothing held. [`Placement::place_sale`], for a storefront platform's sale, which
//! already happened, never refuses for stock: a short line reserves what is available and
//! backorders the rest, a SKU whose stock is not tracked becomes an untracked line, and
//! the order is created with each line's backordered units.
//!
//! Each reservation is its own command on its SKU (so a hot SKU is contended only for
//! its own write); if a line is refused, or the order cannot be created, the
//! reservations (and backorders) already made are released before answering. A crash
//! between the reservations and the order leaves holds behind: the reservation process
//! manager releases them once the order has not appeared in time.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::domain::inventory::{
    InventoryCommand, InventoryCommandFor, InventoryError, InventoryEvent, InventoryItem,
};
use crate::domain::order::{Order, OrderCommand, OrderError, PlaceOrder};
use crate::domain::values::{OrderId, Quantity, Sku, Text};
use crate::store::commands::{AggregateStore, CommandError, Executed};
use crate::store::metadata::CommandMetadata;

/// A test-only fault between the reservations and the order, as a crash would strike.
pub type PlacementFault = Arc<dyn Fn(&OrderId) -> bool + Send + Sync>;

/// A line that could not be reserved.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShortLine {
    pub sku: Sku,
    pub requested: u32,
    pub available: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error("not enough stock for {}", list_skus(.short.iter().map(|s| &s.sku)))]
    OutOfStock { short: Vec<ShortLine> },
    #[error("stock is not tracked for {}", list_skus(.skus.iter()))]
    UnknownSkus { skus: Vec<Sku> },
    #[error(transparent)]
    Order(CommandError<OrderError>),
    #[error(transparent)]
    Inventory(CommandError<InventoryError>),
    #[error("injected placement fault")]
    Injected,
}

fn list_skus<'a>(skus: impl Iterator<Item = &'a Sku>) -> String {
    skus.map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a placement treats a line that stock cannot cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Refuse the order (`OutOfStock`, or `UnknownSkus` when tracking is required).
    AllOrNothing,
    /// Backorder what is short; take an untracked SKU as an untracked line.
    Backorder,
}

impl Mode {
    fn reserve(self, order_id: OrderId, quantity: Quantity, at: DateTime<Utc>) -> InventoryCommand {
        match self {
            Mode::AllOrNothing => InventoryCommand::ReserveStock {
                order_id,
                quantity,
                at,
            },
            Mode::Backorder => InventoryCommand::ReserveOrBackorder {
                order_id,
                quantity,
                at,
            },
        }
    }
}

pub struct Placement<'a> {
    pub orders: &'a Arc<AggregateStore<Order>>,
    pub inventory: &'a Arc<AggregateStore<InventoryItem>>,
    pub require_tracked_skus: bool,
    pub fault: Option<&'a PlacementFault>,
}

impl Placement<'_> {
    /// Places an order through our API: every tracked line reserved in full, or the
    /// order refused and nothing held.
    pub async fn place(
        &self,
        command: PlaceOrder,
        metadata: &CommandMetadata,
    ) -> Result<Executed<Order>, PlacementError> {
        self.run(command, metadata, Mode::AllOrNothing).await
    }

    /// Places a storefront platform's sale (`command.origin` set): never refused for
    /// stock, so never `OutOfStock` nor `UnknownSkus`. Each line's `backordered` is set
    /// here from what its SKU could not cover (whatever the caller put there), and
    /// `untracked` for a SKU whose stock is not tracked; `require_tracked_skus` does not
    /// apply.
    pub async fn place_sale(
        &self,
        command: PlaceOrder,
        metadata: &CommandMetadata,
    ) -> Result<Executed<Order>, PlacementError> {
        self.run(command, metadata, Mode::Backorder).await
    }

    async fn run(
        &self,
        mut command: PlaceOrder,
        metadata: &CommandMetadata,
        mode: Mode,
    ) -> Result<Executed<Order>, PlacementError> {
        let order_id = command.order_id.clone();
        // No read first: a repeated order id is refused by the order itself (after its
        // holds are released again), or by its SKUs while the first order holds them.
        let mut held: Vec<Sku> = Vec::new();
        let mut short = Vec::new();
        let mut unknown = Vec::new();
        for line in command.lines.iter_mut() {
            line.backordered = 0;
            let reserve = InventoryCommandFor {
                sku: line.sku.clone(),
                command: mode.reserve(order_id.clone(), line.quantity, command.at),
            };
            // The deadline bounds when a placement starts, not how long it takes: once a
            // line is held, the rest go on rather than hold stock only to give it back.
            let line_metadata = if held.is_empty() {
                metadata.caused()
            } else {
                metadata.caused().unbounded()
            };
            let result = self
                .inventory
                .execute(line.sku.as_str(), reserve, &line_metadata)
                .await;
            match result {
                Ok(executed) => match executed.events.last().map(|e| &e.payload) {
                    Some(InventoryEvent::StockReserved { .. }) => held.push(line.sku.clone()),
                    Some(InventoryEvent::StockBackordered { quantity, .. }) => {
                        // Released like a reservation: a backorder for an order that
                        // is not placed must not wait for stock.
                        held.push(line.sku.clone());
                        line.backordered = quantity.get();
                    }
                    Some(InventoryEvent::ReservationRejected { available, .. }) => {
                        short.push(ShortLine {
                            sku: line.sku.clone(),
                            requested: line.quantity.get(),
                            available: *available,
                        })
                    }
                    _ => {}
                },
                Err(CommandError::Rejected(InventoryError::NotTracked { .. })) => {
                    if mode == Mode::AllOrNothing && self.require_tracked_skus {
                        unknown.push(line.sku.clone());
                    } else {
                        line.untracked = true;
                    }
                }
                Err(CommandError::Rejected(InventoryError::AlreadyReserved { .. })) => {
                    // The same order id is being placed by another request right now.
                    self.release(&order_id, &held, metadata, "order_not_placed")
                        .await;
                    return Err(PlacementError::Order(CommandError::Rejected(
                        OrderError::AlreadyExists { order_id },
                    )));
                }
                Err(e) => {
                    self.release(&order_id, &held, metadata, "order_not_placed")
                        .await;
                    return Err(PlacementError::Inventory(e));
                }
            }
        }
        if !short.is_empty() || !unknown.is_empty() {
            self.release(&order_id, &held, metadata, "order_not_placed")
                .await;
            return Err(if unknown.is_empty() {
                PlacementError::OutOfStock { short }
            } else {
                PlacementError::UnknownSkus { skus: unknown }
            });
        }
        if self.fault.is_some_and(|fault| fault(&order_id)) {
            // As a crash would: the holds stay for the process manager to find.
            return Err(PlacementError::Injected);
        }
        let order_metadata = if held.is_empty() {
            metadata.clone()
        } else {
            metadata.clone().unbounded()
        };
        match self
            .orders
            .execute(
                order_id.as_str(),
                OrderCommand::PlaceOrder(command),
                &order_metadata,
            )
            .await
        {
            Ok(executed) => Ok(executed),
            Err(e) => {
                self.release(&order_id, &held, metadata, "order_not_placed")
                    .await;
                Err(PlacementError::Order(e))
            }
        }
    }

    /// Best effort: a release that fails here is retried by the process manager, which
    /// finds holds whose order never appeared.
    async fn release(
        &self,
        order_id: &OrderId,
        skus: &[Sku],
        metadata: &CommandMetadata,
        why: &str,
    ) {
        let Ok(reason) = Text::parse(why) else { return };
        for sku in skus {
            let release = InventoryCommandFor {
                sku: sku.clone(),
                command: InventoryCommand::ReleaseReservation {
                    order_id: order_id.clone(),
                    reason: reason.clone(),
                    at: metadata.received_at,
                },
            };
            // A release is never shed: it is what keeps stock from being held for nobody.
            if let Err(e) = self
                .inventory
                .execute(sku.as_str(), release, &metadata.caused().unbounded())
                .await
            {
                tracing::warn!(%order_id, %sku, error = %e, "could not release a reservation; the process manager will");
            }
        }
    }
}
