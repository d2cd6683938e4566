//! The command path: load an aggregate, let it decide, append its events.
//!
//! Aggregates and their persistence are cqrs-es's (`PersistedEventStore` over the
//! postgres-es or sqlite-es repository); this module adds what an order engine needs
//! around them:
//! - commands to one aggregate are serialised within the process (striped locks), so a
//!   hot order or SKU does not turn into an optimistic-concurrency retry storm;
//! - a conflict with another process is retried against fresh state, which is safe
//!   because the losing command appended nothing;
//! - the caller gets the state after the command and the committed envelopes, without a
//!   second read.
//!
//! It is also the one place where an aggregate cache and batched commits will go.
//! It never runs cqrs-es queries: readers follow the committed log instead.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{Aggregate, AggregateContext, AggregateError, EventEnvelope, EventStore};
use postgres_es::PostgresEventRepository;
use sqlite_es::SqliteEventRepository;
use tokio::sync::{Mutex, MutexGuard};

use super::metadata::CommandMetadata;
use super::reader::LogSignal;
use super::Database;

/// How often a command that lost an optimistic-concurrency race is replayed against
/// fresh state before the client is told `conflict`.
const CONFLICT_RETRIES: u32 = 8;

/// Lock stripes: enough that unrelated aggregates rarely share one, few enough to cost
/// nothing. Two aggregates on one stripe merely take turns.
const LOCK_STRIPES: usize = 1024;

/// Aggregates kept in memory per stripe (so about 32,000 in all): a hot SKU or an
/// order in the middle of checkout is decided without reading its events again.
const CACHED_PER_STRIPE: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused the command: a broken business rule.
    #[error(transparent)]
    Rejected(E),
    /// Another writer kept winning the race for this aggregate.
    #[error("the aggregate was changed concurrently; retry the request")]
    Conflict,
    #[error("event store failure: {0}")]
    Store(Box<dyn std::error::Error + Send + Sync>),
}

/// A command that was accepted: the aggregate as it is now, and what was appended.
pub struct Executed<A: Aggregate> {
    pub state: A,
    pub events: Vec<EventEnvelope<A>>,
}

enum Backend<A: Aggregate> {
    Postgres(PersistedEventStore<PostgresEventRepository, A>),
    Sqlite(PersistedEventStore<SqliteEventRepository, A>),
}

pub struct AggregateStore<A: Aggregate> {
    backend: Backend<A>,
    services: A::Services,
    /// Each stripe serialises its aggregates' commands and caches their state.
    stripes: Vec<Mutex<HashMap<String, Cached<A>>>>,
    appended: LogSignal,
}

/// An aggregate as of its last event written by this process. Another process may have
/// written since: the database's sequence check then refuses our commit, and the entry
/// is dropped and reloaded.
struct Cached<A> {
    state: A,
    sequence: usize,
}

impl<A> AggregateStore<A>
where
    A: Aggregate + Clone + 'static,
    A::Command: Clone + Send,
{
    /// `appended` is told after every commit, to wake readers of the log at once.
    pub fn new(db: &Database, services: A::Services, appended: LogSignal) -> Self {
        let backend = match db {
            Database::Postgres(pool) => Backend::Postgres(PersistedEventStore::new_event_store(
                PostgresEventRepository::new(pool.clone()),
            )),
            Database::Sqlite(pool) => Backend::Sqlite(PersistedEventStore::new_event_store(
                SqliteEventRepository::new(pool.clone()),
            )),
        };
        Self {
            backend,
            services,
            stripes: (0..LOCK_STRIPES)
                .map(|_| Mutex::new(HashMap::new()))
                .collect(),
            appended,
        }
    }

    /// The aggregate's current state; `A::default()` when it has no events.
    pub async fn load(&self, id: &str) -> Result<A, CommandError<A::Error>> {
        let context = match &self.backend {
            Backend::Postgres(store) => store.load_aggregate(id).await,
            Backend::Sqlite(store) => store.load_aggregate(id).await,
        };
        let mut context = context.map_err(classify)?;
        Ok(context.aggregate().clone())
    }

    /// Runs `command` against aggregate `id` and appends its events atomically, stamped
    /// with `metadata`.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
    ) -> Result<Executed<A>, CommandError<A::Error>> {
        let mut stripe = self.lock(id).await;
        let metadata = metadata.to_map();
        let mut attempt = 0;
        let mut recheck_refusal = true;
        loop {
            let from_cache = stripe.contains_key(id);
            let cached = stripe.get(id).map(|c| EventStoreAggregateContext {
                aggregate_id: id.to_owned(),
                aggregate: c.state.clone(),
                current_sequence: c.sequence,
                current_snapshot: None,
            });
            let result = match &self.backend {
                Backend::Postgres(store) => {
                    run(
                        store,
                        &self.services,
                        id,
                        cached,
                        command.clone(),
                        metadata.clone(),
                    )
                    .await
                }
                Backend::Sqlite(store) => {
                    run(
                        store,
                        &self.services,
                        id,
                        cached,
                        command.clone(),
                        metadata.clone(),
                    )
                    .await
                }
            };
            match result.map_err(classify) {
                Ok((executed, sequence)) => {
                    if stripe.len() >= CACHED_PER_STRIPE && !stripe.contains_key(id) {
                        if let Some(evicted) = stripe.keys().next().cloned() {
                            stripe.remove(&evicted);
                        }
                    }
                    stripe.insert(
                        id.to_owned(),
                        Cached {
                            state: executed.state.clone(),
                            sequence,
                        },
                    );
                    if !executed.events.is_empty() {
                        self.appended.notify();
                    }
                    return Ok(executed);
                }
                Err(CommandError::Conflict) if attempt < CONFLICT_RETRIES => {
                    // Another process wrote this aggregate: forget what we knew, give it
                    // a moment to finish, and decide again on fresh state.
                    stripe.remove(id);
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 2)).await;
                }
                Err(CommandError::Rejected(_)) if from_cache && recheck_refusal => {
                    // A refusal is never checked by the database: make sure it was not
                    // decided on state another process has moved on from.
                    stripe.remove(id);
                    recheck_refusal = false;
                }
                Err(e) => {
                    if !matches!(e, CommandError::Rejected(_)) {
                        stripe.remove(id);
                    }
                    return Err(e);
                }
            }
        }
    }

    async fn lock(&self, id: &str) -> MutexGuard<'_, HashMap<String, Cached<A>>> {
        let mut hasher = DefaultHasher::new();
        id.hash(&mut hasher);
        let stripe = (hasher.finish() % LOCK_STRIPES as u64) as usize;
        self.stripes[stripe].lock().await
    }
}

/// Decides and commits one command; returns the aggregate's sequence afterwards too.
async fn run<A, ES>(
    store: &ES,
    services: &A::Services,
    id: &str,
    cached: Option<EventStoreAggregateContext<A>>,
    command: A::Command,
    metadata: std::collections::HashMap<String, String>,
) -> Result<(Executed<A>, usize), AggregateError<A::Error>>
where
    A: Aggregate + Clone,
    ES: EventStore<A, AC = EventStoreAggregateContext<A>>,
{
    let mut context = match cached {
        Some(context) => context,
        None => store.load_aggregate(id).await?,
    };
    let sink = EventSink::default();
    context
        .aggregate()
        .handle(command, services, &sink)
        .await
        .map_err(AggregateError::UserError)?;
    // `handle` applied the new events through the sink, so this is the state after them.
    let state = context.aggregate().clone();
    let before = context.current_sequence;
    let events = sink.collect().await;
    let sequence = before + events.len();
    let events = if events.is_empty() {
        Vec::new()
    } else {
        store.commit(events, context, metadata).await?
    };
    Ok((Executed { state, events }, sequence))
}

/// postgres-es reports a duplicate sequence as a conflict, but sqlite-es recognises only
/// a primary-key violation, and our SQLite log's key is the global position: its
/// duplicate sequence surfaces as a unique violation inside an "unexpected" error.
fn classify<E: std::error::Error>(error: AggregateError<E>) -> CommandError<E> {
    match error {
        AggregateError::UserError(e) => CommandError::Rejected(e),
        AggregateError::AggregateConflict => CommandError::Conflict,
        AggregateError::UnexpectedError(e) => {
            let unique_violation = e
                .downcast_ref::<sqlx::Error>()
                .and_then(|e| e.as_database_error())
                .is_some_and(|e| e.is_unique_violation());
            if unique_violation {
                CommandError::Conflict
            } else {
                CommandError::Store(e)
            }
        }
        AggregateError::DatabaseConnectionError(e) | AggregateError::DeserializationError(e) => {
            CommandError::Store(e)
        }
    }
}
