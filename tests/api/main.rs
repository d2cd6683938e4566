//! The HTTP-level suite: the real server, over real HTTP, on SQLite and on PostgreSQL.

mod helpers;
mod receiver;

mod append_only;
mod auth;
mod charges;
mod concurrency;
mod dashboard;
mod deliveries;
mod errors;
mod export;
mod group_commit;
mod hostile;
mod idempotency;
mod input;
mod inventory;
mod leases;
mod lifecycle;
mod log_reader;
mod metadata;
mod openapi;
mod overload;
mod poison;
mod privacy;
mod projections;
mod property;
mod rebuilds;
mod secrets;
mod settings;
mod small_receivers;
mod sources;
mod storefronts;
mod targets;
mod three_nodes;
mod traces;
mod walkthrough;
