//! The pure heart of orderlog: typed values, aggregates, their commands, events and rules.
//!
//! Nothing here does I/O or reads a clock, and nothing here imports `store`, `api` or
//! `delivery`: data flows from the API into the domain and from the domain into the log.

pub mod customer;
pub mod inventory;
pub mod order;
pub mod personal;
pub mod tagged;
pub mod upcast;
pub mod values;
