//! One SKU's stock: receipts, adjustments, and reservations that follow orders.

mod aggregate;
mod commands;
mod errors;
mod events;
#[cfg(test)]
mod tests;

pub use aggregate::{InventoryCommandFor, InventoryItem};
pub use commands::InventoryCommand;
pub use errors::InventoryError;
pub use events::InventoryEvent;
