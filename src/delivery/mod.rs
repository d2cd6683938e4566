//! Deliveries: every committed event, out to each subscriber that wants it.
//!
//! A subscription is a webhook URL or a NATS subject prefix with an event filter. Each
//! runs its own [`worker`]: its own cursor in the log, in-flight limit, circuit breaker,
//! retry queue and dead letters, so a slow or dead receiver holds back nobody else.
//! This module keeps the workers and carries out what operators ask through the API.

pub mod breaker;
pub mod lease;
pub mod message;
pub mod settings;
pub mod sink;
pub mod store;
pub mod subscription;
pub mod target;
pub mod window;
mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::meter::Meter;
use crate::store::reader::{self, Cursor, LogSignal, StartAt};
use crate::store::sealed::KeyRing;
use crate::store::vault::Vault;
use crate::store::{Database, StoreError};
use breaker::{Breaker, BreakerState};
pub use settings::DeliverySettings;
use sink::Connections;
use subscription::{parse_webhook_url, EventFilter, Kind, Secret, State, Subscription};
use target::{TargetError, TargetPolicy};
use window::Window;

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("no subscription with id {0}")]
    NotFound(Uuid),
    #[error("no dead letter for event {0} in this subscription")]
    DeadLetterNotFound(Uuid),
    #[error("`{field}` {reason}")]
    Invalid { field: &'static str, reason: String },
    /// A webhook URL the SSRF guard refuses (or whose host DNS cannot carry).
    #[error("`url` {0}")]
    Target(#[from] TargetError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What workers share: the database, the keys that open its secrets, the settings,
/// the outgoing connections.
pub(crate) struct Shared {
    db: Database,
    keys: Arc<KeyRing>,
    /// Opens the personal data in a message as it is sent; stored, it stays sealed.
    vault: Vault,
    settings: DeliverySettings,
    connections: Connections,
    /// Where webhooks may point: checked here at create and update, and by
    /// `connections` at connect time.
    targets: TargetPolicy,
    log_signal: LogSignal,
    /// This server's name in lease records.
    node: String,
    /// Counts attempts and dead letters.
    meter: Meter,
}

struct Handle {
    control: watch::Sender<u64>,
    breaker: Arc<Breaker>,
    window: Arc<Window>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The running workers, one per subscription, and the operations on subscriptions.
#[derive(Clone)]
pub struct Deliveries {
    shared: Arc<Shared>,
    workers: Arc<Mutex<HashMap<Uuid, Handle>>>,
    /// Set once [`Deliveries::start`] ran: workers are children of it.
    running: Arc<Mutex<Option<CancellationToken>>>,
    /// Subscriptions whose secrets do not open, already reported: discovery says so
    /// once, not every few seconds.
    unopened: Arc<Mutex<HashSet<Uuid>>>,
}

/// A new subscription, parsed.
pub struct NewSubscription {
    pub kind: Kind,
    pub target: String,
    pub event_types: EventFilter,
    pub description: Option<String>,
    pub max_in_flight: u32,
    /// `None`: from now on.
    pub start: Option<StartAt>,
}

/// What an operator may change; `None` leaves a setting as it is.
#[derive(Default)]
pub struct Changes {
    pub state: Option<State>,
    pub target: Option<String>,
    pub event_types: Option<EventFilter>,
    pub description: Option<Option<String>>,
    pub max_in_flight: Option<u32>,
}

/// A subscription with how it is doing.
pub struct Status {
    pub subscription: Subscription,
    /// As the lease holder has it; `None` when no server reports holding the lease.
    pub breaker: Option<BreakerState>,
    /// How many messages the holder lets be in flight now (at most `max_in_flight`).
    pub window: Option<u32>,
    pub lease: Option<lease::Lease>,
    pub waiting: i64,
    pub dead: i64,
    /// Events after the cursor (of any type), and the age of the oldest.
    pub lag_events: i64,
    pub lag_seconds: f64,
}

/// How often attempt records older than the retention are removed.
const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// How often the stored subscriptions are listed, to pick up those created (or taken
/// over) through another instance.
const DISCOVER_EVERY: Duration = Duration::from_secs(5);

impl Deliveries {
    pub fn new(
        db: Database,
        settings: DeliverySettings,
        log_signal: LogSignal,
        keys: Arc<KeyRing>,
        vault: Vault,
        meter: Meter,
    ) -> Deliveries {
        let targets = TargetPolicy::new(settings.webhook_allow_private_networks);
        Deliveries {
            shared: Arc::new(Shared {
                connections: Connections::new(settings.nats_url.clone(), targets.clone()),
                targets,
                node: settings.node(),
                db,
                keys,
                vault,
                settings,
                log_signal,
                meter,
            }),
            workers: Arc::default(),
            running: Arc::default(),
            unopened: Arc::default(),
        }
    }

    /// Starts a worker per stored subscription, and the sweeper of old attempts.
    pub async fn start(&self, shutdown: CancellationToken) -> Result<JoinHandle<()>, StoreError> {
        *self.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(shutdown.clone());
        self.discover().await?;
        let this = self.clone();
        Ok(tokio::spawn(async move {
            let mut purge = tokio::time::interval(PURGE_EVERY);
            // Discovery just ran above; the next is one period from now.
            let mut discover = tokio::time::interval_at(
                tokio::time::Instant::now() + DISCOVER_EVERY,
                DISCOVER_EVERY,
            );
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = purge.tick() => this.purge_attempts().await,
                    _ = discover.tick() => {
                        if let Err(e) = this.discover().await {
                            tracing::warn!(error = %e, "could not list the subscriptions");
                        }
                    }
                }
            }
            this.stop_all().await;
        }))
    }

    /// Starts a worker for every stored subscription without one here (another
    /// instance may have created it), and forgets workers whose subscription is gone.
    /// A subscription whose secrets do not open gets no worker: it would sign with
    /// nothing. It is logged once, and the others go on.
    async fn discover(&self) -> Result<(), StoreError> {
        let stored = store::list(&self.shared.db, &self.shared.keys).await?;
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, handle| !handle.task.is_finished());
        for subscription in stored {
            let mut unopened = self.unopened.lock().unwrap_or_else(|e| e.into_inner());
            match &subscription.secret_error {
                Some(error) => {
                    if unopened.insert(subscription.id) {
                        tracing::error!(subscription = %subscription.id, code = error.error.code(), error = %error, "not delivering this subscription: its signing secret does not open");
                    }
                }
                None => {
                    unopened.remove(&subscription.id);
                    drop(unopened);
                    self.spawn(subscription.id);
                }
            }
        }
        Ok(())
    }

    async fn purge_attempts(&self) {
        let retention = chrono::Duration::from_std(self.shared.settings.attempt_retention)
            .unwrap_or(chrono::Duration::MAX);
        let before = store::millis(Utc::now() - retention);
        match store::purge_attempts(&self.shared.db, before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "old delivery attempts removed"),
            Err(e) => tracing::warn!(error = %e, "could not purge old delivery attempts"),
        }
    }

    async fn stop_all(&self) {
        let handles: Vec<Handle> = self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain()
            .map(|(_, h)| h)
            .collect();
        for handle in handles {
            handle.stop.cancel();
            let _ = handle.task.await;
        }
    }

    /// Starts the subscription's worker unless one runs already (creation and discovery
    /// may both ask).
    fn spawn(&self, id: Uuid) {
        let Some(parent) = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        else {
            return;
        };
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if workers.get(&id).is_some_and(|h| !h.task.is_finished()) {
            return;
        }
        let (control, receiver) = watch::channel(0);
        let breaker = Arc::new(Breaker::new(
            self.shared.settings.breaker_failures,
            self.shared.settings.breaker_cooldown,
        ));
        // Sized from the stored subscription when the worker loads it.
        let window = Arc::new(Window::new(subscription::DEFAULT_MAX_IN_FLIGHT));
        let stop = parent.child_token();
        let task = tokio::spawn(
            worker::Worker {
                shared: self.shared.clone(),
                id,
                breaker: breaker.clone(),
                window: window.clone(),
                control: receiver,
                stop: stop.clone(),
            }
            .run(),
        );
        workers.insert(
            id,
            Handle {
                control,
                breaker,
                window,
                stop,
                task,
            },
        );
    }

    /// Tells a worker its subscription changed; `reset` also closes its breaker.
    fn poke(&self, id: Uuid, reset: bool) {
        if let Some(handle) = self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            if reset {
                handle.breaker.reset();
            }
            handle.control.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// This server's own breaker and window of a subscription it holds.
    fn local_state(&self, id: Uuid) -> Option<(BreakerState, u32)> {
        self.workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map(|h| (h.breaker.state(), h.window.size()))
    }

    /// Stores a subscription and starts its worker. Webhooks get a new signing secret,
    /// returned here and never again.
    pub async fn create(
        &self,
        new: NewSubscription,
    ) -> Result<(Subscription, Option<Secret>), DeliveryError> {
        // Before anything is read or written: a refused target leaves no trace.
        if new.kind == Kind::Webhook {
            self.check_target(&new.target).await?;
        }
        let cursor = match new.start {
            None => reader::head(&self.shared.db).await?,
            Some(start) => reader::cursor_before(&self.shared.db, start).await?,
        };
        let now = Utc::now();
        let secret = (new.kind == Kind::Webhook).then(Secret::generate);
        let subscription = Subscription {
            id: Uuid::now_v7(),
            kind: new.kind,
            target: new.target,
            event_types: new.event_types,
            description: new.description,
            max_in_flight: new.max_in_flight,
            state: State::Active,
            state_reason: None,
            secret: secret.clone(),
            previous_secret: None,
            secret_error: None,
            cursor,
            created_at: now,
            updated_at: now,
        };
        store::insert(&self.shared.db, &self.shared.keys, &subscription).await?;
        self.spawn(subscription.id);
        Ok((subscription, secret))
    }

    pub async fn get(&self, id: Uuid) -> Result<Subscription, DeliveryError> {
        store::load(&self.shared.db, &self.shared.keys, id)
            .await?
            .ok_or(DeliveryError::NotFound(id))
    }

    pub async fn status(&self, id: Uuid) -> Result<Status, DeliveryError> {
        let subscription = self.get(id).await?;
        self.status_of(subscription).await
    }

    pub async fn list(&self) -> Result<Vec<Status>, DeliveryError> {
        let mut out = Vec::new();
        for subscription in store::list(&self.shared.db, &self.shared.keys).await? {
            out.push(self.status_of(subscription).await?);
        }
        Ok(out)
    }

    async fn status_of(&self, subscription: Subscription) -> Result<Status, DeliveryError> {
        let (waiting, dead) = store::counts(&self.shared.db, subscription.id).await?;
        let (lag_events, lag_seconds) = reader::lag(&self.shared.db, subscription.cursor).await?;
        let lease = lease::current(&self.shared.db, subscription.id, Utc::now()).await?;
        // The holder's own breaker and window are fresher than its last report.
        let (breaker, window) = match &lease {
            Some(held) if held.node == self.shared.node => self
                .local_state(subscription.id)
                .map_or((Some(held.breaker), Some(held.window)), |(b, w)| {
                    (Some(b), Some(w))
                }),
            Some(held) => (Some(held.breaker), Some(held.window)),
            None => (None, None),
        };
        Ok(Status {
            breaker,
            window,
            lease,
            subscription,
            waiting,
            dead,
            lag_events,
            lag_seconds,
        })
    }

    pub async fn update(&self, id: Uuid, changes: Changes) -> Result<Subscription, DeliveryError> {
        let mut subscription = self.get(id).await?;
        if let (Kind::Webhook, Some(target)) = (subscription.kind, &changes.target) {
            self.check_target(target).await?;
        }
        if let Some(target) = changes.target {
            subscription.target = target;
        }
        if let Some(event_types) = changes.event_types {
            subscription.event_types = event_types;
        }
        if let Some(description) = changes.description {
            subscription.description = description;
        }
        if let Some(max_in_flight) = changes.max_in_flight {
            subscription.max_in_flight = max_in_flight;
        }
        let resumed = changes.state == Some(State::Active) && subscription.state != State::Active;
        if let Some(state) = changes.state {
            if state != subscription.state {
                subscription.state = state;
                subscription.state_reason = None;
            }
        }
        subscription.updated_at = Utc::now();
        store::save_settings(&self.shared.db, &subscription).await?;
        self.poke(id, resumed);
        Ok(subscription)
    }

    /// The SSRF guard's create-time check of a webhook URL, host resolved.
    async fn check_target(&self, raw: &str) -> Result<(), DeliveryError> {
        let url = parse_webhook_url(raw).map_err(|reason| DeliveryError::Invalid {
            field: "url",
            reason,
        })?;
        Ok(self.shared.targets.check(&url).await?)
    }

    pub async fn delete(&self, id: Uuid) -> Result<(), DeliveryError> {
        let handle = self
            .workers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        if let Some(handle) = handle {
            handle.stop.cancel();
            let _ = handle.task.await;
        }
        if !store::delete(&self.shared.db, id).await? {
            return Err(DeliveryError::NotFound(id));
        }
        Ok(())
    }

    /// A new signing secret; the old one keeps signing beside it for `overlap`, so
    /// receivers can switch without missing a message. A subscription whose stored
    /// secret does not open (its key is lost) gets a new one with no overlap, and is
    /// delivered again: rotating is how an operator recovers it.
    pub async fn rotate_secret(
        &self,
        id: Uuid,
        overlap: Duration,
    ) -> Result<(Subscription, Secret), DeliveryError> {
        let mut subscription = self.get(id).await?;
        if subscription.kind != Kind::Webhook {
            return Err(DeliveryError::Invalid {
                field: "kind",
                reason: "is nats; only webhook subscriptions have signing secrets".into(),
            });
        }
        let now = Utc::now();
        let secret = Secret::generate();
        let until = now + chrono::Duration::from_std(overlap).unwrap_or(chrono::Duration::MAX);
        subscription.previous_secret = subscription.secret.take().map(|old| (old, until));
        subscription.secret = Some(secret.clone());
        subscription.secret_error = None;
        subscription.updated_at = now;
        store::save_secrets(&self.shared.db, &self.shared.keys, &subscription).await?;
        self.poke(id, false);
        if self
            .unopened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id)
        {
            self.spawn(id);
        }
        Ok((subscription, secret))
    }

    /// Moves the cursor back (or forward) to `start`; events from there are sent again.
    pub async fn rewind(&self, id: Uuid, start: StartAt) -> Result<Cursor, DeliveryError> {
        self.get(id).await?;
        let cursor = reader::cursor_before(&self.shared.db, start).await?;
        store::rewind(&self.shared.db, id, cursor).await?;
        self.poke(id, false);
        Ok(cursor)
    }

    pub async fn dead_letters(
        &self,
        id: Uuid,
        after_position: i64,
        limit: i64,
    ) -> Result<Vec<store::QueuedRow>, DeliveryError> {
        self.get(id).await?;
        Ok(store::dead_letters(&self.shared.db, id, after_position, limit).await?)
    }

    pub async fn dead_letter(
        &self,
        id: Uuid,
        event_id: Uuid,
    ) -> Result<(store::QueuedRow, Vec<store::AttemptRecord>), DeliveryError> {
        self.get(id).await?;
        let row = store::dead_letter(&self.shared.db, id, event_id)
            .await?
            .ok_or(DeliveryError::DeadLetterNotFound(event_id))?;
        let attempts = store::attempts_of(&self.shared.db, id, event_id).await?;
        Ok((row, attempts))
    }

    pub async fn attempts(
        &self,
        id: Uuid,
        event_id: Uuid,
    ) -> Result<Vec<store::AttemptRecord>, DeliveryError> {
        self.get(id).await?;
        Ok(store::attempts_of(&self.shared.db, id, event_id).await?)
    }

    /// The attempts to deliver `event_ids` to subscription `id`, and those of them in
    /// its queue (waiting or dead).
    pub async fn trail(
        &self,
        id: Uuid,
        event_ids: &[Uuid],
    ) -> Result<(Vec<store::AttemptRecord>, Vec<store::QueueState>), DeliveryError> {
        Ok(store::trail(&self.shared.db, id, event_ids).await?)
    }

    /// Sends one dead letter (or all of them, with `None`) again, keeping its event id.
    pub async fn retry_dead(&self, id: Uuid, event_id: Option<Uuid>) -> Result<u64, DeliveryError> {
        self.get(id).await?;
        let n = store::retry_dead(&self.shared.db, id, event_id).await?;
        if let (Some(event_id), 0) = (event_id, n) {
            return Err(DeliveryError::DeadLetterNotFound(event_id));
        }
        self.poke(id, true);
        Ok(n)
    }

    pub async fn discard_dead(
        &self,
        id: Uuid,
        event_id: Option<Uuid>,
    ) -> Result<u64, DeliveryError> {
        self.get(id).await?;
        let n = store::discard_dead(&self.shared.db, id, event_id).await?;
        if let (Some(event_id), 0) = (event_id, n) {
            return Err(DeliveryError::DeadLetterNotFound(event_id));
        }
        self.poke(id, false);
        Ok(n)
    }
}
