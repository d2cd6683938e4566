//! The order: its commands, events, rules and state machine.

mod aggregate;
mod commands;
mod errors;
mod events;
#[cfg(test)]
mod tests;

pub use aggregate::{
    Cancellation, Order, OrderStatus, Payment, PaymentStatus, PlacedOrder, Refund, Shipment,
    ShipmentStatus, StatusFacts,
};
pub use commands::*;
pub use errors::OrderError;
pub use events::{Discount, OrderEvent, OrderLine, Origin, ShipmentLine, ShippingLine, TaxLine};
