//! The state every request handler shares: the database, the two aggregate stores, the
//! projections and the deliveries. Built by `app`, read by `api`; it holds no logic.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::api::admission::Admission;
use crate::api::ops::Latest;
use crate::auth::Tokens;
use crate::config::Settings;
use crate::delivery::Deliveries;
use crate::domain::customer::Customer;
use crate::domain::inventory::InventoryItem;
use crate::domain::order::Order;
use crate::meter::Meter;
use crate::process::placement::PlacementFault;
use crate::process::reservations::Ticker;
use crate::projections::runner::Projections;
use crate::store::commands::AggregateStore;
use crate::store::idempotency::IdempotencyStore;
use crate::store::reader::LogSignal;
use crate::store::sealed::KeyRing;
use crate::store::sources::{InboxWriter, SourceCache};
use crate::store::vault::Vault;
use crate::store::Database;

/// What every handler can reach. Cheap to clone: everything inside is shared.
#[derive(Clone)]
pub struct AppState {
    pub settings: Arc<Settings>,
    pub db: Database,
    pub orders: Arc<AggregateStore<Order>>,
    pub inventory: Arc<AggregateStore<InventoryItem>>,
    /// Customers: their erasures.
    pub customers: Arc<AggregateStore<Customer>>,
    pub idempotency: IdempotencyStore,
    /// Turns for commands: at most `ORDERLOG_MAX_CONCURRENT_COMMANDS` run at once.
    pub admission: Arc<Admission>,
    /// API tokens: every request but `/health` and `/ready` is checked against them.
    pub tokens: Tokens,
    pub placement_fault: Option<PlacementFault>,
    pub projections: Projections,
    /// Told whenever events may have been appended.
    pub log_signal: LogSignal,
    pub deliveries: Deliveries,
    /// The server's keys, which open the sealed secrets (webhook and storefront).
    pub keys: Arc<KeyRing>,
    /// This server's rates and latencies, for the dashboard and `/metrics`.
    pub meter: Meter,
    /// The dashboard's latest snapshot, shared by its viewers.
    pub ops: Latest,
    /// Customers' data keys: seals personal data at the edge, opens it for readers.
    pub vault: Vault,
    /// Storefront sources as webhooks read them (briefly cached).
    pub sources: SourceCache,
    /// Stores webhooks' deliveries, with group commit.
    pub inbox: InboxWriter,
    /// Told when a storefront delivery lands in an inbox.
    pub inbox_signal: Arc<tokio::sync::Notify>,
    /// Cancelled when the server begins to stop: long-lived responses (event streams)
    /// end so that shutdown does not wait on them.
    pub closing: CancellationToken,
}

impl AppState {
    /// What the reservation ticker needs, and nothing of HTTP.
    pub fn ticker(&self) -> Ticker {
        Ticker {
            db: self.db.clone(),
            projections: self.projections.clone(),
            orders: self.orders.clone(),
            inventory: self.inventory.clone(),
        }
    }
}
