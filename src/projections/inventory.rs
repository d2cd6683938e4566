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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
