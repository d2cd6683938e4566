//! orderlog: an event-sourced order lifecycle engine. ARCHITECTURE.md is the map.

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod meter;
pub mod process;
pub mod projections;
pub mod state;
pub mod store;
pub mod storefront;
pub mod telemetry;
pub mod trace;

/// Every binary of the crate allocates through mimalloc: with glibc's allocator, threads
/// queued on its arena locks in profiles of the delivery and command paths.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
