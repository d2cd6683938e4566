//! Every rule an inventory command can break, one variant each.

use crate::domain::values::{OrderId, Sku};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    #[error("SKU `{sku}` has no stock tracked: it never received stock or an adjustment")]
    NotTracked { sku: Sku },
    #[error(
        "the adjustment would leave {after} unit(s) available; available may not go below zero"
    )]
    WouldGoNegative { after: i64 },
    #[error("an adjustment must change the count")]
    ZeroAdjustment,
    #[error("order `{order_id}` already holds or is owed units of this SKU")]
    AlreadyReserved { order_id: OrderId },
    #[error(
        "{requested} unit(s) cannot ship: {available} available beyond the order's reservation and backorder"
    )]
    InsufficientStock { requested: u32, available: i64 },
    #[error("the count would exceed the largest stock level accepted")]
    TooMuchStock,
}
