//! Read models folded from the global log: order summaries, billing, shipping and
//! analytics. Each applies every event exactly once, because a batch's view changes and
//! its checkpoint commit in one transaction ([`runner`]), and each can be rebuilt from
//! the log into fresh tables while the current ones keep answering queries.
//!
//! A projection never writes events and never reads another projection: everything it
//! needs is in the events themselves. Adding one is a new module implementing
//! [`Projection`] plus a line in [`all`].

pub mod analytics;
pub mod billing;
pub mod order_summary;
pub mod runner;
pub mod shipping;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::domain::order::{Order, OrderEvent};
use crate::store::reader::LogEntry;
use crate::store::views::{physical, Table, Tx};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("event at position {position} ({event_type}) could not be decoded: {reason}")]
    Decode {
        position: i64,
        event_type: String,
        reason: String,
    },
    /// A fault injected by a test through [`runner::FaultHook`].
    #[error("injected fault: {0}")]
    Injected(String),
}

/// An event as projections see it: where it is in the log, and what it says.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub entry: LogEntry,
    pub event: DomainEvent,
}

/// Every event type a projection may meet. Aggregates added later add a variant here;
/// projections ignore what they do not know.
#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    Order(OrderEvent),
    Other,
}

impl Envelope {
    pub fn decode(entry: LogEntry) -> Result<Envelope, ProjectionError> {
        let event = if entry.aggregate_type == <Order as cqrs_es::Aggregate>::TYPE {
            DomainEvent::Order(serde_json::from_str(&entry.payload).map_err(|e| {
                ProjectionError::Decode {
                    position: entry.cursor.position,
                    event_type: entry.event_type.clone(),
                    reason: e.to_string(),
                }
            })?)
        } else {
            DomainEvent::Other
        };
        Ok(Envelope { entry, event })
    }

    pub fn order_event(&self) -> Option<&OrderEvent> {
        match &self.event {
            DomainEvent::Order(e) => Some(e),
            DomainEvent::Other => None,
        }
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

pub trait Projection: Send + Sync + 'static {
    /// Stable name: part of table names, the API and the CLI.
    fn name(&self) -> &'static str;
    /// Bump it when the projection's logic or tables change: the view is rebuilt.
    fn version(&self) -> i64;
    fn tables(&self) -> &'static [Table];
    /// Applies a batch of events to the view, inside the batch's transaction.
    fn apply<'a>(
        &'a self,
        view: &'a mut View,
        events: &'a [Envelope],
    ) -> BoxFuture<'a, Result<(), ProjectionError>>;
}

/// Every projection the engine runs.
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(order_summary::OrderSummary),
        Arc::new(billing::Billing),
        Arc::new(shipping::Shipping),
        Arc::new(analytics::Analytics),
    ]
}

/// One generation of one projection's tables, within a batch's transaction.
pub struct View {
    pub tx: Tx,
    pub projection: &'static str,
    pub generation: i64,
}

impl View {
    pub fn table_name(&self, table: &Table) -> String {
        physical(self.projection, self.generation, table.name)
    }
}

/// Rows of one view table touched by a batch: loaded once, changed in memory, written
/// back once. A row changed by fifty events of a batch is written once.
pub struct Rows<R> {
    table: &'static Table,
    rows: HashMap<String, R>,
    dirty: HashSet<String>,
    removed: HashSet<String>,
}

impl<R: Serialize + DeserializeOwned + ViewRow> Rows<R> {
    pub async fn load(
        view: &mut View,
        table: &'static Table,
        ids: impl IntoIterator<Item = String>,
    ) -> Result<Self, StoreError> {
        let ids: Vec<String> = ids
            .into_iter()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let name = view.table_name(table);
        let loaded: Vec<R> = view.tx.load(&name, table, &ids).await?;
        Ok(Self {
            table,
            rows: loaded.into_iter().map(|r| (r.id(), r)).collect(),
            dirty: HashSet::new(),
            removed: HashSet::new(),
        })
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut R> {
        let row = self.rows.get_mut(id)?;
        self.dirty.insert(id.to_owned());
        Some(row)
    }

    /// The row, created with `new` when absent.
    pub fn entry(&mut self, id: &str, new: impl FnOnce() -> R) -> &mut R {
        self.dirty.insert(id.to_owned());
        self.removed.remove(id);
        self.rows.entry(id.to_owned()).or_insert_with(new)
    }

    pub fn insert(&mut self, row: R) {
        let id = row.id();
        self.dirty.insert(id.clone());
        self.removed.remove(&id);
        self.rows.insert(id, row);
    }

    pub fn remove(&mut self, id: &str) {
        if self.rows.remove(id).is_some() {
            self.dirty.remove(id);
            self.removed.insert(id.to_owned());
        }
    }

    pub async fn save(mut self, view: &mut View) -> Result<(), StoreError> {
        let name = view.table_name(self.table);
        let removed: Vec<String> = self.removed.drain().collect();
        view.tx.delete(&name, &removed).await?;
        let changed: Vec<&R> = self
            .dirty
            .iter()
            .filter_map(|id| self.rows.get(id))
            .collect();
        view.tx.upsert(&name, self.table, &changed).await
    }
}

/// A row of a view table, identified by its `id` column.
pub trait ViewRow {
    fn id(&self) -> String;
}

/// The UTC day of a time, as view tables key it.
pub fn day(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}
