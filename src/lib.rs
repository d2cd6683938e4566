//! orderlog: an event-sourced order lifecycle engine. ARCHITECTURE.md is the map.

pub mod api;
pub mod app;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod process;
pub mod projections;
pub mod store;
pub mod telemetry;
