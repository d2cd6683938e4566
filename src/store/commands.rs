//! The command path: load an aggregate, let it decide, append its events.
//!
//! Aggregates and their persistence are cqrs-es's (`PersistedEventStore` and the
//! postgres-es or sqlite-es repository); this module adds what an order engine needs
//! around them:
//! - **a queue per aggregate.** Commands to one aggregate never race inside a process:
//!   the first becomes the leader, the others queue behind it. The leader decides the
//!   queued commands one after another on the same in-memory state and appends all
//!   their events in **one transaction** (each event with its own command's metadata).
//!   A flash sale on one SKU thus costs one commit per batch, not per buyer, and no
//!   optimistic-concurrency retry storm;
//! - **an aggregate cache.** The state after the last commit stays in memory, so a hot
//!   aggregate is not re-read before each decision. An aggregate not in the cache is
//!   first assumed new, since most are (a new order): the database refuses the append if
//!   it was not, and a refusal is checked against stored state before anyone hears it;
//! - **group commit.** Appends go through the shared [`EventWriter`], which writes the
//!   batches of many aggregates together;
//! - **conflicts with other processes** (the database refuses a duplicate sequence) drop
//!   the cached state and replay the batch against fresh state, which is safe because
//!   the losing batch appended nothing;
//! - each caller gets the state right after its own command, and its committed events.
//!
//! The leader runs as its own task, so a client that hangs up never strands the
//! commands queued behind it. This module never runs cqrs-es queries: readers follow the
//! committed log instead.

use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::{EventUpcaster, PersistedEventStore, SerializedEvent};
use cqrs_es::{Aggregate, AggregateError, DomainEvent, EventEnvelope, EventStore};
use postgres_es::PostgresEventRepository;
use sqlite_es::SqliteEventRepository;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::Instrument;

use super::idempotency::KeyClaim;
use super::metadata::CommandMetadata;
use super::vault::DataKeyWrite;
use super::writer::{Answer, EventWriter, KeyWrite, NewEvent, WriteError};
use super::Database;
use crate::domain::upcast;

/// How often a batch that lost an optimistic-concurrency race is replayed against fresh
/// state before its callers are told `conflict`.
const CONFLICT_RETRIES: u32 = 8;

/// Queues and cache entries are spread over this many stripes, each behind a short
/// lock: enough that unrelated aggregates rarely meet.
const STRIPES: usize = 1024;

/// Aggregates kept in memory per stripe (about 32,000 in all): a hot SKU or an order in
/// the middle of checkout is decided without reading its events again.
const CACHED_PER_STRIPE: usize = 32;

/// Most commands decided and committed together.
const MAX_BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error> {
    /// The aggregate refused the command: a broken business rule.
    #[error(transparent)]
    Rejected(E),
    /// Another writer kept winning the race for this aggregate.
    #[error("the aggregate was changed concurrently; retry the request")]
    Conflict,
    /// The database is saturated: the command did not run and may be retried.
    #[error("the event store is saturated: {0}")]
    Unavailable(String),
    /// The command could not start before its deadline (`CommandMetadata::start_by`):
    /// it was not decided, or its events were not written. It may be retried.
    #[error("the command could not start within its deadline")]
    Saturated,
    #[error("event store failure: {0}")]
    Store(Box<dyn std::error::Error + Send + Sync>),
}

/// A command that was accepted: the aggregate right after it, and what it appended.
pub struct Executed<A: Aggregate> {
    pub state: A,
    pub events: Vec<EventEnvelope<A>>,
}

type Reply<A> = Result<Executed<A>, CommandError<<A as Aggregate>::Error>>;

/// A keyed request's answer, rendered from the state its command left, before the
/// commit: it is written with the key's claim (`store::idempotency`). `None` when this
/// state has no answer to give, which leaves the answer to the handler.
pub type RenderAnswer<A> = fn(&A) -> Option<Answer>;

struct Pending<A: Aggregate> {
    /// The span the command was issued in, which its `decide` span is a child of;
    /// `Span::none()` when traces are off.
    caller: tracing::Span,
    command: A::Command,
    metadata: HashMap<String, String>,
    /// The same metadata as stored: JSON text, rendered once per command.
    metadata_json: String,
    start_by: Option<Instant>,
    /// Claimed in the commit of this command's events, if it appends any.
    claim: Option<KeyClaim>,
    /// The claim's answer, written with it.
    render: Option<RenderAnswer<A>>,
    /// Written in the commit of this command's events, if it appends any.
    data_key: Option<DataKeyWrite>,
    reply: oneshot::Sender<Reply<A>>,
}

/// One step of `domain::upcast`, as cqrs-es applies it to an aggregate's events while
/// it loads them (in the registry's order, so that steps chain).
struct Upcaster(&'static upcast::Step);

impl EventUpcaster for Upcaster {
    fn can_upcast(&self, event_type: &str, event_version: &str) -> bool {
        self.0.event_type == event_type && self.0.from == event_version
    }

    fn upcast(&self, mut event: SerializedEvent) -> SerializedEvent {
        // Not an object: left as stored, for the decoding to refuse with its own error.
        if let Some(fields) = event.payload.as_object_mut() {
            (self.0.apply)(fields);
            event.event_version = self.0.to.to_owned();
        }
        event
    }
}

fn upcasters() -> Vec<Box<dyn EventUpcaster>> {
    upcast::STEPS
        .iter()
        .map(|step| Box::new(Upcaster(step)) as Box<dyn EventUpcaster>)
        .collect()
}

/// Loads aggregates (cqrs-es replays their events); appends go through the writer.
enum Backend<A: Aggregate> {
    Postgres(PersistedEventStore<PostgresEventRepository, A>),
    Sqlite(PersistedEventStore<SqliteEventRepository, A>),
}

/// An aggregate as of its last event written by this process. Another process may have
/// written since: the database's sequence check then refuses our commit, and the entry
/// is dropped and reloaded.
struct Cached<A> {
    state: A,
    sequence: usize,
}

struct Stripe<A: Aggregate> {
    cache: HashMap<String, Cached<A>>,
    /// Aggregates with a leader at work, and the commands waiting behind it.
    queues: HashMap<String, VecDeque<Pending<A>>>,
}

pub struct AggregateStore<A: Aggregate> {
    backend: Backend<A>,
    services: A::Services,
    stripes: Vec<Mutex<Stripe<A>>>,
    writer: EventWriter,
}

impl<A> AggregateStore<A>
where
    A: Aggregate + Clone + 'static,
    A::Command: Clone + Send + Sync + 'static,
    A::Error: Send + 'static,
    A::Services: 'static,
{
    pub fn new(db: &Database, services: A::Services, writer: EventWriter) -> Self {
        let backend = match db {
            Database::Postgres(pool) => Backend::Postgres(
                PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone()))
                    .with_upcasters(upcasters()),
            ),
            Database::Sqlite(pool) => Backend::Sqlite(
                PersistedEventStore::new_event_store(SqliteEventRepository::new(pool.clone()))
                    .with_upcasters(upcasters()),
            ),
        };
        Self {
            backend,
            services,
            stripes: (0..STRIPES)
                .map(|_| {
                    Mutex::new(Stripe {
                        cache: HashMap::new(),
                        queues: HashMap::new(),
                    })
                })
                .collect(),
            writer,
        }
    }

    /// The aggregate's current state from the database; `A::default()` when it has no
    /// events. Reads never use the cache: another process may have moved on.
    pub async fn load(&self, id: &str) -> Result<A, CommandError<A::Error>> {
        Ok(self.load_fresh(id).await?.0)
    }

    async fn load_fresh(&self, id: &str) -> Result<(A, usize), CommandError<A::Error>> {
        let context = match &self.backend {
            Backend::Postgres(store) => store.load_aggregate(id).await,
            Backend::Sqlite(store) => store.load_aggregate(id).await,
        };
        let context = context.map_err(classify)?;
        Ok((context.aggregate, context.current_sequence))
    }

    /// Runs `command` against aggregate `id` and appends its events atomically, stamped
    /// with `metadata`.
    pub async fn execute(
        self: &Arc<Self>,
        id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
    ) -> Reply<A> {
        self.execute_answered(id, command, metadata, None).await
    }

    /// As [`Self::execute`], and the request's idempotency key, if it has one, commits
    /// with the answer `render` gives for the state the command left.
    pub async fn execute_answered(
        self: &Arc<Self>,
        id: &str,
        command: A::Command,
        metadata: &CommandMetadata,
        render: Option<RenderAnswer<A>>,
    ) -> Reply<A> {
        let (reply, answer) = oneshot::channel();
        let start_by = metadata.start_by;
        let claim = metadata.claim.clone();
        let data_key = metadata.data_key.clone();
        let mut metadata = metadata.to_map();
        // With traces exported, `append` spans this command from its queueing to its
        // commit, under the caller's span (the request's): it is created here, before
        // the events exist, because the `traceparent` they store names it as the parent
        // that readers continue from. The leader, another task, decides under the
        // caller's span too. With traces off both are `Span::none()`, at no cost.
        let (caller, append) = if crate::trace::enabled() {
            let append = tracing::info_span!(
                "append",
                aggregate_type = A::TYPE,
                aggregate_id = id,
                outcome = tracing::field::Empty
            );
            if let Some(traceparent) = crate::trace::traceparent_of(&append) {
                metadata.insert("traceparent".into(), traceparent);
            }
            (tracing::Span::current(), append)
        } else {
            (tracing::Span::none(), tracing::Span::none())
        };
        let pending = Pending {
            caller,
            command,
            // A map of strings always renders.
            metadata_json: serde_json::to_string(&metadata).unwrap_or_default(),
            metadata,
            start_by,
            claim,
            render,
            data_key,
            reply,
        };
        let lead = {
            let mut stripe = self.stripe(id);
            match stripe.queues.get_mut(id) {
                Some(queue) => {
                    queue.push_back(pending);
                    None
                }
                None => {
                    stripe.queues.insert(id.to_owned(), VecDeque::new());
                    Some(pending)
                }
            }
        };
        if let Some(first) = lead {
            let this = self.clone();
            let id = id.to_owned();
            tokio::spawn(async move { this.lead(id, first).await });
        }
        let reply = answer.await.unwrap_or_else(|_| {
            Err(CommandError::Store(
                "the command's batch was abandoned before it finished".into(),
            ))
        });
        // The span ends with the answer: committed, refused or failed.
        if let Err(e) = &reply {
            append.record("outcome", tracing::field::display(e));
        }
        drop(append);
        reply
    }

    /// Works through the aggregate's queue, batch after batch, until it is empty.
    async fn lead(&self, id: String, first: Pending<A>) {
        let mut batch = vec![first];
        loop {
            self.run_batch(&id, batch).await;
            let mut stripe = self.stripe(&id);
            let Some(queue) = stripe.queues.get_mut(&id) else {
                return;
            };
            if queue.is_empty() {
                stripe.queues.remove(&id);
                return;
            }
            let n = queue.len().min(MAX_BATCH);
            batch = queue.drain(..n).collect();
        }
    }

    async fn run_batch(&self, id: &str, batch: Vec<Pending<A>>) {
        // Commands whose turn came too late are refused undecided, before any work.
        let now = Instant::now();
        let (late, batch): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|p| p.start_by.is_some_and(|by| by <= now));
        reply_all(late, &CommandError::Saturated);
        if batch.is_empty() {
            return;
        }
        // The batch may wait (to load, to be written) while any of its commands still
        // has time; a command without a deadline lets it wait as long as it takes.
        let start_by = batch
            .iter()
            .map(|p| p.start_by)
            .reduce(|a, b| a.zip(b).map(|(a, b)| a.max(b)))
            .flatten();
        let mut attempt = 0;
        // While true, decide on what memory says (the cached state, or a new aggregate
        // when none is cached). Only an append lets the database check that, so a batch
        // that appends nothing (refusals, or commands with nothing to do) is decided
        // again on stored state before anyone hears the answer.
        let mut trust_memory = true;
        loop {
            let (state, sequence) = if trust_memory {
                let stripe = self.stripe(id);
                stripe
                    .cache
                    .get(id)
                    .map(|c| (c.state.clone(), c.sequence))
                    .unwrap_or_default()
            } else {
                let loaded = match start_by {
                    Some(by) => tokio::time::timeout_at(by, self.load_fresh(id))
                        .await
                        .unwrap_or(Err(CommandError::Saturated)),
                    None => self.load_fresh(id).await,
                };
                match loaded {
                    Ok(fresh) => fresh,
                    Err(e) => return reply_all(batch, &e),
                }
            };
            let decided = self.decide(id, state, sequence, &batch).await;
            if decided.events.is_empty() && trust_memory {
                self.forget(id);
                trust_memory = false;
                continue;
            }
            let any_events = !decided.events.is_empty();
            let committed = if any_events {
                self.writer
                    .append_with(decided.events, decided.claims, decided.data_keys, start_by)
                    .await
            } else {
                Ok(())
            };
            match committed {
                Ok(()) => {
                    self.remember(id, decided.state, decided.sequence);
                    let outcomes = decided.outcomes.into_iter().zip(decided.answered);
                    for (pending, (outcome, answered)) in batch.into_iter().zip(outcomes) {
                        if let (Some(claim), Ok(executed)) = (&pending.claim, &outcome) {
                            if !executed.events.is_empty() {
                                claim.mark_taken(answered);
                            }
                        }
                        let _ = pending.reply.send(outcome.map_err(CommandError::Rejected));
                    }
                    return;
                }
                Err(WriteError::Conflict) if trust_memory => {
                    // Memory was behind the database (another process wrote, or the
                    // aggregate was not new after all): decide again on stored state.
                    self.forget(id);
                    trust_memory = false;
                }
                Err(WriteError::Conflict) if attempt < CONFLICT_RETRIES => {
                    // Another process keeps writing this aggregate: give it a moment to
                    // finish, and decide again on fresh state.
                    self.forget(id);
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(u64::from(attempt) * 2)).await;
                }
                Err(e) => {
                    self.forget(id);
                    return reply_all(batch, &CommandError::from(e));
                }
            }
        }
    }

    /// Decides each command in turn on the state the previous ones left.
    async fn decide(
        &self,
        id: &str,
        mut state: A,
        mut sequence: usize,
        batch: &[Pending<A>],
    ) -> Decided<A> {
        let mut events = Vec::new();
        let mut claims = Vec::new();
        let mut data_keys = Vec::new();
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut answered = Vec::with_capacity(batch.len());
        for pending in batch {
            let mut with_answer = false;
            let mut candidate = state.clone();
            let sink = EventSink::default();
            let decision = candidate.handle(pending.command.clone(), &self.services, &sink);
            let decision = if pending.caller.is_none() {
                decision.await
            } else {
                let span = tracing::info_span!(
                    parent: &pending.caller,
                    "decide",
                    aggregate_type = A::TYPE,
                    aggregate_id = id
                );
                decision.instrument(span).await
            };
            match decision {
                Ok(()) => {
                    let mut envelopes = Vec::new();
                    for payload in sink.collect().await {
                        sequence += 1;
                        events.push(new_event::<A>(
                            id,
                            sequence,
                            &payload,
                            &pending.metadata_json,
                        ));
                        envelopes.push(EventEnvelope {
                            aggregate_id: id.to_owned(),
                            sequence,
                            payload,
                            metadata: pending.metadata.clone(),
                        });
                    }
                    if let Some(claim) = pending.claim.as_ref().filter(|_| !envelopes.is_empty()) {
                        let answer = pending.render.and_then(|render| render(&candidate));
                        with_answer = answer.is_some();
                        claims.push(claim.write(answer));
                    }
                    if let Some(key) = pending.data_key.as_ref().filter(|_| !envelopes.is_empty()) {
                        data_keys.push(key.clone());
                    }
                    state = candidate;
                    outcomes.push(Ok(Executed {
                        state: state.clone(),
                        events: envelopes,
                    }));
                }
                Err(e) => {
                    outcomes.push(Err(e));
                }
            }
            answered.push(with_answer);
        }
        Decided {
            state,
            sequence,
            events,
            claims,
            data_keys,
            outcomes,
            answered,
        }
    }

    fn stripe(&self, id: &str) -> MutexGuard<'_, Stripe<A>> {
        let mut hasher = DefaultHasher::new();
        id.hash(&mut hasher);
        let index = (hasher.finish() % STRIPES as u64) as usize;
        // A panic while holding this lock cannot leave the maps half-changed.
        self.stripes[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn remember(&self, id: &str, state: A, sequence: usize) {
        let mut stripe = self.stripe(id);
        if stripe.cache.len() >= CACHED_PER_STRIPE && !stripe.cache.contains_key(id) {
            if let Some(evicted) = stripe.cache.keys().next().cloned() {
                stripe.cache.remove(&evicted);
            }
        }
        stripe
            .cache
            .insert(id.to_owned(), Cached { state, sequence });
    }

    fn forget(&self, id: &str) {
        self.stripe(id).cache.remove(id);
    }
}

struct Decided<A: Aggregate> {
    state: A,
    sequence: usize,
    events: Vec<NewEvent>,
    claims: Vec<KeyWrite>,
    data_keys: Vec<DataKeyWrite>,
    outcomes: Vec<Result<Executed<A>, A::Error>>,
    /// For each outcome: its claim's answer is in `claims`.
    answered: Vec<bool>,
}

fn new_event<A: Aggregate>(
    id: &str,
    sequence: usize,
    event: &A::Event,
    metadata_json: &str,
) -> NewEvent {
    NewEvent {
        aggregate_type: A::TYPE,
        aggregate_id: id.to_owned(),
        sequence: sequence as i64,
        event_type: event.event_type(),
        event_version: event.event_version(),
        // Our events are plain data: serialising them cannot fail.
        payload: serde_json::to_string(event).unwrap_or_default(),
        metadata: metadata_json.to_owned(),
    }
}

impl<E: std::error::Error> From<WriteError> for CommandError<E> {
    fn from(error: WriteError) -> Self {
        match error {
            // Another process's request with the same key won: this one is retried, and
            // the retry is answered with the first one's answer.
            WriteError::Conflict | WriteError::KeyTaken => CommandError::Conflict,
            WriteError::Unavailable(why) => CommandError::Unavailable(why),
            WriteError::Saturated => CommandError::Saturated,
            WriteError::Store(why) => CommandError::Store(why.into()),
        }
    }
}

fn reply_all<A: Aggregate>(batch: Vec<Pending<A>>, error: &CommandError<A::Error>) {
    for pending in batch {
        let copy = match error {
            CommandError::Conflict => CommandError::Conflict,
            CommandError::Unavailable(why) => CommandError::Unavailable(why.clone()),
            CommandError::Saturated => CommandError::Saturated,
            other => CommandError::Store(other.to_string().into()),
        };
        let _ = pending.reply.send(Err(copy));
    }
}

/// Why loading an aggregate failed. Loads only read, so no conflict can come from one:
/// appends (and their conflicts) go through the writer.
fn classify<E: std::error::Error>(error: AggregateError<E>) -> CommandError<E> {
    match error {
        AggregateError::UserError(e) => CommandError::Rejected(e),
        AggregateError::AggregateConflict => CommandError::Conflict,
        AggregateError::UnexpectedError(e) | AggregateError::DatabaseConnectionError(e) => {
            match e.downcast_ref::<sqlx::Error>() {
                Some(sqlx) if super::is_saturation(sqlx) => {
                    CommandError::Unavailable(sqlx.to_string())
                }
                _ => CommandError::Store(e),
            }
        }
        AggregateError::DeserializationError(e) => CommandError::Store(e),
    }
}
