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
//! its own write), and the lines are reserved side by side, so an order's reservations
//! share one group commit; if a line is refused, or the order cannot be created, the
//! reservations (and backorders) made are released before answering. A crash
//! between the reservations and the order leaves holds behind: the reservation process
//! manager releases each once the order has not appeared in time, and a retry of the
//! order meanwhile is told to wait ([`PlacementError::Pending`]), not that it exists.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::domain::inventory::{
    InventoryCommand, InventoryCommandFor, InventoryError, InventoryEvent, InventoryItem,
};
use crate::domain::order::{Order, OrderCommand, OrderError, PlaceOrder};
use crate::domain::values::{OrderId, Quantity, Sku, Text};
use crate::store::commands::{AggregateStore, CommandError, Executed, RenderAnswer};
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
    /// A SKU already holds stock for this order id, and no order of that id exists: an
    /// earlier placement of it is finishing, or was cut off by a crash and its holds
    /// are released once `ORDERLOG_ORPHAN_HOLD_TIMEOUT` has passed. Either way a retry
    /// later gets the true answer; "the order exists" now would be false.
    #[error(
        "an earlier placement of order `{order_id}` holds its stock but has not created it; \
         it is finishing, or was cut off and its holds will be released: retry shortly"
    )]
    Pending { order_id: OrderId },
    #[error("injected placement fault")]
    Injected,
}

/// The first SKU that appears on more than one line.
fn first_repeated(command: &PlaceOrder) -> Option<Sku> {
    let mut seen = std::collections::HashSet::with_capacity(command.lines.len());
    command
        .lines
        .iter()
        .find(|line| !seen.insert(&line.sku))
        .map(|line| line.sku.clone())
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
    /// The answer a keyed request's claim commits with (`store::idempotency`).
    pub answer: Option<RenderAnswer<Order>>,
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
        // Two lines on one SKU would race each other for its stock; the order refuses
        // them anyway, so refuse before anything is held.
        if let Some(sku) = first_repeated(&command) {
            return Err(PlacementError::Order(CommandError::Rejected(
                OrderError::DuplicateLine { sku },
            )));
        }
        for line in command.lines.iter_mut() {
            // What stock says of the line, not what the caller guessed.
            line.backordered = 0;
            if mode == Mode::Backorder {
                line.untracked = false;
            }
        }
        // Every line at once: each is a command on its own SKU, so they share one group
        // commit rather than waiting for one round each. The deadline bounds when a
        // placement starts, not how long it takes: only the first line carries it, as
        // when lines were reserved one after another (a 5 ms deadline under a burst then
        // refused nearly every two-line order, each line having its own chance to miss
        // it). Should it be shed, what the others held is given back. No read first: a
        // repeated order id is refused by the order itself (after its holds are
        // released again), or by its SKUs while the first order holds them.
        let results =
            futures::future::join_all(command.lines.iter().enumerate().map(|(i, line)| {
                let sku = line.sku.clone();
                let reserve = InventoryCommandFor {
                    sku: line.sku.clone(),
                    command: mode.reserve(order_id.clone(), line.quantity, command.at),
                };
                let line_metadata = if i == 0 {
                    metadata.caused()
                } else {
                    metadata.caused().unbounded()
                };
                async move {
                    self.inventory
                        .execute(sku.as_str(), reserve, &line_metadata)
                        .await
                }
            }))
            .await;
        let mut held: Vec<Sku> = Vec::new();
        let mut short = Vec::new();
        let mut unknown = Vec::new();
        let mut failed = None;
        for (line, result) in command.lines.iter_mut().zip(results) {
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
                    // The order exists, or another placement of it holds this SKU
                    // (told apart below).
                    failed.get_or_insert(PlacementError::Pending {
                        order_id: order_id.clone(),
                    });
                }
                Err(e) => {
                    failed.get_or_insert(PlacementError::Inventory(e));
                }
            }
        }
        if let Some(error) = failed {
            self.release(&order_id, &held, metadata, "order_not_placed")
                .await;
            return Err(match error {
                PlacementError::Pending { order_id } => self.exists_or_pending(order_id).await,
                other => other,
            });
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
            .execute_answered(
                order_id.as_str(),
                OrderCommand::PlaceOrder(command),
                &order_metadata,
                self.answer,
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

    /// A SKU holds stock for `order_id` already: the order exists, or another placement
    /// of it (alive, or cut off by a crash) holds the stock.
    async fn exists_or_pending(&self, order_id: OrderId) -> PlacementError {
        match self.orders.load(order_id.as_str()).await {
            Ok(order) if order.placed().is_some() => {
                PlacementError::Order(CommandError::Rejected(OrderError::AlreadyExists {
                    order_id,
                }))
            }
            Ok(_) => PlacementError::Pending { order_id },
            Err(e) => PlacementError::Order(e),
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

#[cfg(test)]
mod tests {
    //! Placements against a real log (a SQLite file of the test's own).

    use chrono::TimeZone;

    use super::*;
    use crate::domain::order::{Charges, Origin, RequestedLine};
    use crate::domain::values::{Currency, CustomerId, Money, SourceName};
    use crate::meter::Meter;
    use crate::store::reader::LogSignal;
    use crate::store::writer::EventWriter;
    use crate::store::Database;

    struct Stores {
        orders: Arc<AggregateStore<Order>>,
        inventory: Arc<AggregateStore<InventoryItem>>,
        _dir: tempfile::TempDir,
    }

    async fn stores() -> Stores {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("log.db").display());
        let db = Database::connect(&url, 2).await.unwrap();
        db.migrate().await.unwrap();
        let writer = EventWriter::start(&db, LogSignal::default(), Meter::default());
        Stores {
            orders: Arc::new(AggregateStore::new(&db, (), writer.clone())),
            inventory: Arc::new(AggregateStore::new(&db, (), writer)),
            _dir: dir,
        }
    }

    impl Stores {
        fn placement(&self) -> Placement<'_> {
            Placement {
                orders: &self.orders,
                inventory: &self.inventory,
                require_tracked_skus: true,
                fault: None,
                answer: None,
            }
        }

        async fn receive(&self, sku: &str, n: i64) {
            let command = InventoryCommandFor {
                sku: Sku::parse(sku).unwrap(),
                command: InventoryCommand::ReceiveStock {
                    quantity: Quantity::parse(n).unwrap(),
                    at: at(),
                },
            };
            self.inventory
                .execute(sku, command, &metadata())
                .await
                .unwrap();
        }

        async fn item(&self, sku: &str) -> InventoryItem {
            self.inventory.load(sku).await.unwrap()
        }
    }

    fn at() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc
            .with_ymd_and_hms(2026, 11, 21, 12, 0, 0)
            .unwrap()
    }

    fn metadata() -> CommandMetadata {
        CommandMetadata::system("test", "corr", "cause")
    }

    fn order_of(id: &str, lines: &[(&str, i64)]) -> PlaceOrder {
        let usd = Currency::parse("USD").unwrap();
        PlaceOrder {
            order_id: OrderId::parse(id).unwrap(),
            customer_id: CustomerId::parse("cust-1").unwrap(),
            currency: usd,
            lines: lines
                .iter()
                .map(|(sku, n)| RequestedLine {
                    sku: Sku::parse(sku).unwrap(),
                    quantity: Quantity::parse(*n).unwrap(),
                    unit_price: Money::parse(1000, usd).unwrap(),
                    untracked: false,
                    backordered: 0,
                })
                .collect(),
            charges: Charges::default(),
            personal: None,
            origin: Some(Box::new(Origin {
                source: SourceName::parse("shop").unwrap(),
                external_id: Text::parse("820982911946154508").unwrap(),
                external_number: None,
            })),
            at: at(),
        }
    }

    #[tokio::test]
    async fn a_sale_is_placed_with_its_short_lines_backordered_and_unknown_skus_untracked() {
        let stores = stores().await;
        stores.receive("MUG", 2).await;
        stores.receive("TEE", 5).await;
        let sale = order_of("sale-1", &[("MUG", 5), ("TEE", 1), ("EBOOK", 1)]);
        let placed = stores
            .placement()
            .place_sale(sale, &metadata())
            .await
            .unwrap();
        let lines = &placed.state.placed().unwrap().lines;
        let of = |sku: &str| lines.iter().find(|l| l.sku.as_str() == sku).unwrap();
        assert_eq!((of("MUG").backordered, of("MUG").untracked), (3, false));
        assert_eq!((of("TEE").backordered, of("TEE").untracked), (0, false));
        assert_eq!((of("EBOOK").backordered, of("EBOOK").untracked), (0, true));
        let mug = stores.item("MUG").await;
        let order = OrderId::parse("sale-1").unwrap();
        assert_eq!((mug.available(), mug.backordered()), (0, 3));
        assert_eq!(
            (mug.reservation_of(&order), mug.backorder_of(&order)),
            (2, 3)
        );
    }

    #[tokio::test]
    async fn an_order_through_our_api_is_still_refused_for_stock_and_holds_nothing() {
        let stores = stores().await;
        stores.receive("MUG", 2).await;
        stores.receive("TEE", 5).await;
        let order = order_of("api-1", &[("TEE", 1), ("MUG", 5)]);
        let refused = stores.placement().place(order, &metadata()).await;
        match refused.err() {
            Some(PlacementError::OutOfStock { short }) => assert_eq!(
                short,
                vec![ShortLine {
                    sku: Sku::parse("MUG").unwrap(),
                    requested: 5,
                    available: 2,
                }]
            ),
            other => panic!("expected out of stock, got {other:?}"),
        }
        let (mug, tee) = (stores.item("MUG").await, stores.item("TEE").await);
        assert_eq!((mug.available(), mug.backordered()), (2, 0));
        assert_eq!((tee.available(), tee.reserved()), (5, 0));
        let unknown = stores
            .placement()
            .place(order_of("api-2", &[("EBOOK", 1)]), &metadata())
            .await;
        assert!(matches!(unknown, Err(PlacementError::UnknownSkus { .. })));
    }

    #[tokio::test]
    async fn an_order_naming_a_sku_twice_is_refused_before_anything_is_held() {
        let stores = stores().await;
        stores.receive("MUG", 5).await;
        let order = order_of("api-3", &[("MUG", 1), ("MUG", 2)]);
        let refused = stores.placement().place(order, &metadata()).await;
        let error = refused.err();
        assert!(
            matches!(
                &error,
                Some(PlacementError::Order(CommandError::Rejected(
                    OrderError::DuplicateLine { sku }
                ))) if sku.as_str() == "MUG"
            ),
            "{error:?}"
        );
        let mug = stores.item("MUG").await;
        assert_eq!((mug.available(), mug.reserved()), (5, 0));
    }

    #[tokio::test]
    async fn when_one_line_is_short_the_lines_reserved_beside_it_are_given_back() {
        let stores = stores().await;
        stores.receive("MUG", 1).await;
        stores.receive("TEE", 5).await;
        stores.receive("CAP", 5).await;
        let order = order_of("api-4", &[("TEE", 2), ("MUG", 3), ("CAP", 1)]);
        let refused = stores.placement().place(order, &metadata()).await;
        assert!(matches!(refused, Err(PlacementError::OutOfStock { .. })));
        for (sku, stocked) in [("MUG", 1), ("TEE", 5), ("CAP", 5)] {
            let item = stores.item(sku).await;
            assert_eq!((item.available(), item.reserved()), (stocked, 0), "{sku}");
        }
    }

    #[tokio::test]
    async fn a_sale_that_cannot_be_created_leaves_nothing_held_or_owed() {
        let stores = stores().await;
        stores.receive("MUG", 1).await;
        // A line priced in another currency: the order refuses it, after its SKU has
        // reserved one unit and backordered two.
        let mut sale = order_of("sale-2", &[("MUG", 3)]);
        let eur = Currency::parse("EUR").unwrap();
        sale.lines[0].unit_price = Money::parse(1000, eur).unwrap();
        let refused = stores.placement().place_sale(sale, &metadata()).await;
        let error = refused.err();
        assert!(
            matches!(
                error,
                Some(PlacementError::Order(CommandError::Rejected(
                    OrderError::CurrencyMismatch
                )))
            ),
            "{error:?}"
        );
        let mug = stores.item("MUG").await;
        assert_eq!(
            (mug.available(), mug.reserved(), mug.backordered()),
            (1, 0, 0)
        );
    }
}
