//! Processes that span aggregates: placing an order with its stock reserved, and the
//! durable process manager that makes reservations follow their order afterwards.
//!
//! They issue commands to aggregates; they never write events themselves and never
//! decide a business rule an aggregate could decide.

pub mod erasure;
pub mod placement;
pub mod reservations;
