//! Stock levels: per SKU, on hand, reserved, available and backordered (owed to
//! storefront orders), as the inventory items' events state them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{BoxFuture, Envelope, Projection, ProjectionError, Rows, View, ViewRow};
use crate::domain::inventory::InventoryEvent;
use crate::store::views::{bigint, fixed_time, select, text, Param, Table};
use crate::store::{Database, StoreError};

pub struct StockLevels;

pub const NAME: &str = "inventory";

pub static ITEMS: Table = Table {
    name: "items",
    columns: &[
        text("id"),
        bigint("on_hand"),
        bigint("reserved"),
        bigint("available"),
        bigint("backordered"),
        text("updated_at"),
    ],
    indexes: &[&["available", "id"]],
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StockRow {
    /// The SKU.
    pub id: String,
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    /// Units sold to storefront orders that stock could not cover yet.
    pub backordered: i64,
    #[serde(with = "fixed_time")]
    pub updated_at: DateTime<Utc>,
}

impl ViewRow for StockRow {
    fn id(&self) -> String {
        self.id.clone()
    }
}

impl Projection for StockLevels {
    fn name(&self) -> &'static str {
        NAME
    }

    /// 2: the `backordered` column.
    fn version(&self) -> i64 {
        2
    }

    fn tables(&self) -> &'static [Table] {
        std::slice::from_ref(&ITEMS)
    }

    fn apply<'a>(
        &'a self,
        view: &'a mut View,
        events: &'a [Envelope],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let ids = events
                .iter()
                .filter_map(Envelope::inventory_event)
                .map(|e| e.sku().as_str().to_owned());
            let mut rows: Rows<StockRow> = Rows::load(view, &ITEMS, ids).await?;
            for event in events.iter().filter_map(Envelope::inventory_event) {
                apply(&mut rows, event);
            }
            rows.save(view).await?;
            Ok(())
        })
    }
}

/// On hand, reserved and available.
type Levels = (i64, i64, i64);

fn apply(rows: &mut Rows<StockRow>, event: &InventoryEvent) {
    // What the event states; the rest it leaves as it was.
    let (levels, backordered): (Option<Levels>, Option<i64>) = match event {
        InventoryEvent::StockReceived {
            on_hand, available, ..
        }
        | InventoryEvent::StockAdjusted {
            on_hand, available, ..
        } => (Some((*on_hand, on_hand - available, *available)), None),
        InventoryEvent::StockReserved {
            reserved,
            available,
            ..
        }
        | InventoryEvent::ReservationReleased {
            reserved,
            available,
            ..
        } => (Some((reserved + available, *reserved, *available)), None),
        InventoryEvent::ReservationCommitted {
            on_hand,
            reserved,
            available,
            backordered,
            ..
        } => (Some((*on_hand, *reserved, *available)), Some(*backordered)),
        InventoryEvent::BackorderFilled {
            reserved,
            available,
            backordered,
            ..
        } => (
            Some((reserved + available, *reserved, *available)),
            Some(*backordered),
        ),
        InventoryEvent::StockBackordered { backordered, .. }
        | InventoryEvent::BackorderCancelled { backordered, .. } => (None, Some(*backordered)),
        InventoryEvent::ReservationRejected { .. } => return,
    };
    let sku = event.sku().as_str();
    let at = event.occurred_at();
    let row = rows.entry(sku, || StockRow {
        id: sku.to_owned(),
        on_hand: 0,
        reserved: 0,
        available: 0,
        backordered: 0,
        updated_at: at,
    });
    if let Some((on_hand, reserved, available)) = levels {
        row.on_hand = on_hand;
        row.reserved = reserved;
        row.available = available;
    }
    if let Some(backordered) = backordered {
        row.backordered = backordered;
    }
    row.updated_at = at;
}

pub async fn item(db: &Database, table: &str, sku: &str) -> Result<Option<StockRow>, StoreError> {
    let rows = select(
        db,
        table,
        &ITEMS,
        "WHERE id = $1",
        &[Param::Text(sku.to_owned())],
    )
    .await?;
    Ok(rows.into_iter().next())
}

/// Items with fewer than `below` units available, fewest first; `after` continues a
/// previous page from its last `(available, sku)`.
pub async fn low_stock(
    db: &Database,
    table: &str,
    below: i64,
    after: Option<(i64, String)>,
    limit: i64,
) -> Result<Vec<StockRow>, StoreError> {
    match after {
        Some((available, sku)) => {
            select(
                db,
                table,
                &ITEMS,
                "WHERE available < $1 AND (available, id) > ($2, $3)
                 ORDER BY available, id LIMIT $4",
                &[
                    Param::Int(below),
                    Param::Int(available),
                    Param::Text(sku),
                    Param::Int(limit),
                ],
            )
            .await
        }
        None => {
            select(
                db,
                table,
                &ITEMS,
                "WHERE available < $1 ORDER BY available, id LIMIT $2",
                &[Param::Int(below), Param::Int(limit)],
            )
            .await
        }
    }
}

/// Items that owe units to orders, most owed first.
pub async fn backordered(
    db: &Database,
    table: &str,
    limit: i64,
) -> Result<Vec<StockRow>, StoreError> {
    select(
        db,
        table,
        &ITEMS,
        "WHERE backordered > 0 ORDER BY backordered DESC, id LIMIT $1",
        &[Param::Int(limit)],
    )
    .await
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use uuid::Uuid;

    use super::*;
    use crate::domain::values::{OrderId, Quantity, Sku};
    use crate::projections::{AnyEvent, MemoryTables, ViewStore};
    use crate::store::reader::{Cursor, LogEntry};

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, 0).unwrap()
    }

    fn envelope(position: i64, event: InventoryEvent) -> Envelope {
        Envelope {
            entry: LogEntry {
                cursor: Cursor {
                    transaction_id: 0,
                    position,
                },
                event_id: Uuid::nil(),
                aggregate_type: "inventory".into(),
                aggregate_id: event.sku().as_str().into(),
                sequence: position,
                event_type: event.name().into(),
                event_version: InventoryEvent::VERSION.into(),
                payload: serde_json::to_string(&event).unwrap(),
                metadata: None,
                recorded_at: at(),
            },
            event: AnyEvent::Inventory(event),
        }
    }

    async fn levels(view: &mut View) -> (i64, i64, i64, i64) {
        let rows: Rows<StockRow> = Rows::load(view, &ITEMS, Vec::new()).await.unwrap();
        let row = rows.get("MUG").cloned().unwrap();
        rows.save(view).await.unwrap();
        (row.on_hand, row.reserved, row.available, row.backordered)
    }

    #[tokio::test]
    async fn the_stock_view_follows_backorders_from_sale_to_fill_to_shipment_and_cancellation() {
        let (mug, a, b) = (
            Sku::parse("MUG").unwrap(),
            OrderId::parse("a").unwrap(),
            OrderId::parse("b").unwrap(),
        );
        let n = |n: i64| Quantity::parse(n).unwrap();
        let mut view = View {
            store: ViewStore::Memory(MemoryTables::default()),
            projection: NAME,
            generation: 1,
        };
        let history = [
            InventoryEvent::StockReceived {
                sku: mug.clone(),
                quantity: n(2),
                on_hand: 2,
                available: 2,
                received_at: at(),
            },
            InventoryEvent::StockReserved {
                sku: mug.clone(),
                order_id: a.clone(),
                quantity: n(2),
                reserved: 2,
                available: 0,
                reserved_at: at(),
            },
            InventoryEvent::StockBackordered {
                sku: mug.clone(),
                order_id: a.clone(),
                quantity: n(3),
                backordered: 3,
                backordered_at: at(),
            },
            InventoryEvent::StockBackordered {
                sku: mug.clone(),
                order_id: b.clone(),
                quantity: n(4),
                backordered: 7,
                backordered_at: at(),
            },
        ];
        let batch: Vec<Envelope> = history
            .into_iter()
            .enumerate()
            .map(|(i, e)| envelope(i as i64 + 1, e))
            .collect();
        StockLevels.apply(&mut view, &batch).await.unwrap();
        assert_eq!(levels(&mut view).await, (2, 2, 0, 7));
        let later = [
            InventoryEvent::StockReceived {
                sku: mug.clone(),
                quantity: n(4),
                on_hand: 6,
                available: 4,
                received_at: at(),
            },
            InventoryEvent::BackorderFilled {
                sku: mug.clone(),
                order_id: a.clone(),
                quantity: n(3),
                remaining: 0,
                reserved: 5,
                available: 1,
                backordered: 4,
                filled_at: at(),
            },
            InventoryEvent::BackorderFilled {
                sku: mug.clone(),
                order_id: b.clone(),
                quantity: n(1),
                remaining: 3,
                reserved: 6,
                available: 0,
                backordered: 3,
                filled_at: at(),
            },
        ];
        let batch: Vec<Envelope> = later
            .into_iter()
            .enumerate()
            .map(|(i, e)| envelope(i as i64 + 5, e))
            .collect();
        StockLevels.apply(&mut view, &batch).await.unwrap();
        assert_eq!(levels(&mut view).await, (6, 6, 0, 3));
        let shipped = InventoryEvent::ReservationCommitted {
            sku: mug.clone(),
            order_id: b.clone(),
            shipment_id: crate::domain::values::ShipmentId::parse("s1").unwrap(),
            quantity: n(2),
            from_reservation: 1,
            from_backorder: 1,
            on_hand: 5,
            reserved: 5,
            available: 0,
            backordered: 2,
            committed_at: at(),
        };
        let dropped = InventoryEvent::BackorderCancelled {
            sku: mug.clone(),
            order_id: b,
            quantity: n(2),
            reason: crate::domain::values::Text::parse("cancelled").unwrap(),
            backordered: 0,
            cancelled_at: at(),
        };
        StockLevels
            .apply(&mut view, &[envelope(8, shipped), envelope(9, dropped)])
            .await
            .unwrap();
        assert_eq!(levels(&mut view).await, (5, 5, 0, 0));
    }
}
