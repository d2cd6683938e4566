//! Read models folded from the global log: order summaries, billing, shipping and
//! analytics. Each applies every event exactly once, because a batch's view changes and
//! its checkpoint commit in one transaction ([`runner`]), and each can be rebuilt from
//! the log into fresh tables while the current ones keep answering queries.
//!
//! A projection never writes events and never reads another projection: everything it
//! needs is in the events themselves. Adding one is a new module implementing
//! [`Projection`] plus a line in `app::all_projections`, where the engine is wired.

pub mod analytics;
pub mod billing;
pub mod inventory;
pub mod order_summary;
pub mod runner;
pub mod shipping;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::domain::inventory::{InventoryEvent, InventoryItem};
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
    pub event: AnyEvent,
}

/// Every event type a projection may meet. Aggregates added later add a variant here;
/// projections ignore what they do not know.
#[derive(Debug, Clone, PartialEq)]
pub enum AnyEvent {
    Order(OrderEvent),
    Inventory(InventoryEvent),
    Other,
}

impl Envelope {
    pub fn decode(entry: LogEntry) -> Result<Envelope, ProjectionError> {
        let undecodable = |e: serde_json::Error| ProjectionError::Decode {
            position: entry.cursor.position,
            event_type: entry.event_type.clone(),
            reason: e.to_string(),
        };
        let event = match entry.aggregate_type.as_str() {
            <Order as cqrs_es::Aggregate>::TYPE => {
                AnyEvent::Order(serde_json::from_str(&entry.payload).map_err(undecodable)?)
            }
            <InventoryItem as cqrs_es::Aggregate>::TYPE => {
                AnyEvent::Inventory(serde_json::from_str(&entry.payload).map_err(undecodable)?)
            }
            _ => AnyEvent::Other,
        };
        Ok(Envelope { entry, event })
    }

    pub fn order_event(&self) -> Option<&OrderEvent> {
        match &self.event {
            AnyEvent::Order(e) => Some(e),
            _ => None,
        }
    }

    pub fn inventory_event(&self) -> Option<&InventoryEvent> {
        match &self.event {
            AnyEvent::Inventory(e) => Some(e),
            _ => None,
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

/// One generation of one projection's tables: in a batch's transaction (live), or in
/// memory (a rebuild, which writes everything once when it has caught up).
pub struct View {
    pub store: ViewStore,
    pub projection: &'static str,
    pub generation: i64,
}

pub enum ViewStore {
    Tx(Tx),
    Memory(MemoryTables),
}

impl View {
    pub fn table_name(&self, table: &Table) -> String {
        physical(self.projection, self.generation, table.name)
    }
}

/// A rebuild's tables, held in memory. They are the whole truth of a generation that
/// nobody else writes, so a row missing here does not exist.
#[derive(Default)]
pub struct MemoryTables {
    tables: HashMap<&'static str, Box<dyn MemoryTable>>,
}

impl MemoryTables {
    /// The whole table, taken out for a batch; [`MemoryTables::put_back`] returns it.
    fn take<R: Serialize + Send + Sync + 'static>(
        &mut self,
        table: &'static Table,
    ) -> Result<FxHashMap<String, R>, StoreError> {
        let typed = self.typed::<R>(table);
        if typed.taken {
            return Err(StoreError::Corrupt(format!(
                "view table `{}` is already loaded in this batch",
                table.name
            )));
        }
        typed.taken = true;
        Ok(std::mem::take(&mut typed.rows))
    }

    fn put_back<R: Serialize + Send + Sync + 'static>(
        &mut self,
        table: &'static Table,
        rows: FxHashMap<String, R>,
    ) {
        let typed = self.typed::<R>(table);
        typed.rows = rows;
        typed.taken = false;
    }

    fn typed<R: Serialize + Send + Sync + 'static>(
        &mut self,
        table: &'static Table,
    ) -> &mut Typed<R> {
        let erased = self.tables.entry(table.name).or_insert_with(|| {
            Box::new(Typed::<R> {
                table,
                rows: FxHashMap::default(),
                taken: false,
            })
        });
        erased
            .as_any()
            .downcast_mut::<Typed<R>>()
            .expect("one row type per table")
    }

    /// Writes every table into generation `generation` of `projection`, in `tx`.
    pub async fn flush(
        &mut self,
        tx: &mut Tx,
        projection: &str,
        generation: i64,
    ) -> Result<(), StoreError> {
        for table in self.tables.values_mut() {
            table.flush(tx, projection, generation).await?;
        }
        Ok(())
    }

    pub fn row_count(&self) -> usize {
        self.tables.values().map(|t| t.len()).sum()
    }
}

trait MemoryTable: Send {
    fn as_any(&mut self) -> &mut dyn std::any::Any;
    fn len(&self) -> usize;
    fn flush<'a>(
        &'a mut self,
        tx: &'a mut Tx,
        projection: &'a str,
        generation: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

struct Typed<R> {
    table: &'static Table,
    rows: FxHashMap<String, R>,
    /// Out with a batch's [`Rows`].
    taken: bool,
}

impl<R: Serialize + Send + Sync + 'static> MemoryTable for Typed<R> {
    fn as_any(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    fn flush<'a>(
        &'a mut self,
        tx: &'a mut Tx,
        projection: &'a str,
        generation: i64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let name = physical(projection, generation, self.table.name);
            let rows: Vec<&R> = self.rows.values().collect();
            tx.bulk_insert(&name, self.table, &rows).await
        })
    }
}

/// Rows of one view table touched by a batch: loaded once, changed in memory, written
/// back once. A row changed by fifty events of a batch is written once.
///
/// In a rebuild (a view in memory) the batch holds the whole table instead: nothing is
/// looked up or copied per id, and nothing needs tracking, since the table is written
/// once at the end. A projection sees the same rows either way as long as it touches
/// only the ids it loaded, which [`Projection::apply`] must do anyway.
pub struct Rows<R> {
    table: &'static Table,
    rows: FxHashMap<String, R>,
    /// Whether `dirty` and `removed` are kept: only for a batch in a transaction.
    track: bool,
    dirty: FxHashSet<String>,
    removed: FxHashSet<String>,
}

impl<R: Serialize + DeserializeOwned + ViewRow + Send + Sync + 'static> Rows<R> {
    /// Loads the rows with these ids. `ids` is only consumed for a view in a
    /// transaction, so building them costs nothing in a rebuild.
    pub async fn load(
        view: &mut View,
        table: &'static Table,
        ids: impl IntoIterator<Item = String>,
    ) -> Result<Self, StoreError> {
        let name = view.table_name(table);
        let (rows, track) = match &mut view.store {
            ViewStore::Tx(tx) => {
                let ids: Vec<String> = ids
                    .into_iter()
                    .collect::<FxHashSet<_>>()
                    .into_iter()
                    .collect();
                let loaded: Vec<R> = tx.load(&name, table, &ids).await?;
                (loaded.into_iter().map(|r| (r.id(), r)).collect(), true)
            }
            ViewStore::Memory(memory) => (memory.take::<R>(table)?, false),
        };
        Ok(Self {
            table,
            rows,
            track,
            dirty: FxHashSet::default(),
            removed: FxHashSet::default(),
        })
    }

    pub fn get(&self, id: &str) -> Option<&R> {
        self.rows.get(id)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.rows.contains_key(id)
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut R> {
        let row = self.rows.get_mut(id)?;
        if self.track {
            self.dirty.insert(id.to_owned());
        }
        Some(row)
    }

    /// The row, created with `new` when absent.
    pub fn entry(&mut self, id: &str, new: impl FnOnce() -> R) -> &mut R {
        if self.track {
            self.dirty.insert(id.to_owned());
            self.removed.remove(id);
        }
        if !self.rows.contains_key(id) {
            self.rows.insert(id.to_owned(), new());
        }
        self.rows.get_mut(id).expect("inserted above")
    }

    pub fn insert(&mut self, row: R) {
        let id = row.id();
        if self.track {
            self.dirty.insert(id.clone());
            self.removed.remove(&id);
        }
        self.rows.insert(id, row);
    }

    pub fn remove(&mut self, id: &str) {
        if self.rows.remove(id).is_some() && self.track {
            self.dirty.remove(id);
            self.removed.insert(id.to_owned());
        }
    }

    pub async fn save(self, view: &mut View) -> Result<(), StoreError> {
        let name = view.table_name(self.table);
        match &mut view.store {
            ViewStore::Tx(tx) => {
                let removed: Vec<String> = self.removed.into_iter().collect();
                tx.delete(&name, &removed).await?;
                let changed: Vec<&R> = self
                    .dirty
                    .iter()
                    .filter_map(|id| self.rows.get(id))
                    .collect();
                tx.upsert(&name, self.table, &changed).await
            }
            ViewStore::Memory(memory) => {
                memory.put_back(self.table, self.rows);
                Ok(())
            }
        }
    }
}

/// A row of a view table, identified by its `id` column.
pub trait ViewRow {
    fn id(&self) -> String;
}

/// The UTC day of a time, as view tables key it (`2026-11-21`): the date part of the
/// view tables' fixed-width time, whose digits are written by hand once, there.
pub fn day(t: &chrono::DateTime<chrono::Utc>) -> String {
    let mut day = crate::store::views::fixed_time::format(t);
    day.truncate(day.find('T').unwrap_or(day.len()));
    day
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    #[test]
    fn a_day_reads_as_chrono_formats_it() {
        for t in [
            Utc.with_ymd_and_hms(2026, 11, 21, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(12345, 6, 7, 0, 0, 0).unwrap(),
        ] {
            assert_eq!(super::day(&t), t.format("%Y-%m-%d").to_string());
        }
    }
}
