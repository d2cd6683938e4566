//! One subscription's worker: an independent reader of the log with its own cursor.
//!
//! Each step reads a batch after the cursor, keeps the events the subscription wants,
//! and sends them: streams (one aggregate's events) in parallel up to `max_in_flight`,
//! each stream's events one after another. A message whose attempt fails goes to the
//! subscription's queue with the rest of its stream's batch behind it, and the cursor
//! moves past the batch in the same transaction that records the attempts: a failing
//! order waits in the queue while every other order goes on. Queued streams are
//! retried head first, on the retry schedule, until delivered or dead.
//!
//! Delivery is at least once: a crash after a send and before the cursor's commit
//! sends that batch again, with the same `webhook-id`.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::breaker::{Breaker, BreakerState};
use super::lease::{self, Lease};
use super::message::Message;
use super::sink::{Attempt, Sink, Verdict};
use super::store::{self, millis, AttemptRecord, QueuedRow, Settled};
use super::subscription::{State, Subscription};
use super::window::{Failure, Permit, Window};
use super::Shared;
use crate::meter::Meter;
use crate::store::reader::{self, Cursor, LogEntry};
use crate::store::StoreError;

/// Events read from the log per step.
const BATCH: i64 = 1000;
/// The slowest a worker notices new events when no signal reaches it.
const POLL: Duration = Duration::from_secs(1);
/// How often one message is sent again at once after pushback the window absorbed,
/// before it waits for the retry schedule. Each such failure at least halves the window
/// or comes from a burst already answered, so a few suffice to reach its minimum,
/// where failures go to the breaker and the schedule as before.
const RESENDS: u32 = 4;
/// How often a standby instance tries to take over a subscription.
const LEASE_RETRY: Duration = Duration::from_secs(2);

pub(super) struct Worker {
    pub shared: Arc<Shared>,
    pub id: Uuid,
    pub breaker: Arc<Breaker>,
    pub window: Arc<Window>,
    pub control: watch::Receiver<u64>,
    pub stop: CancellationToken,
}

/// What the worker holds between steps; rebuilt whenever the subscription changes.
struct Run {
    subscription: Subscription,
    sink: Sink,
    /// Streams with messages in the queue: their new events queue up behind.
    queued: HashSet<String>,
    /// The batch after `.0`, read while the previous batch was being sent.
    ahead: Option<(Cursor, Vec<LogEntry>)>,
    /// The previous batch's commit, which runs while the next batch is sent; `false`
    /// when the cursor had moved under it.
    committing: Option<JoinHandle<Result<bool, StoreError>>>,
}

enum Step {
    Progress,
    /// Nothing to do now; look again after this long (or on a signal).
    Idle(Duration),
    /// The stored subscription changed under the worker (a rewind, a 410): reload.
    Reload,
}

impl Worker {
    pub async fn run(mut self) {
        // Held for as long as this worker runs: one instance delivers each subscription.
        let Some(_lease) = self.lease().await else {
            return;
        };
        self.deliver(Utc::now()).await;
        if let Err(e) = lease::release(&self.shared.db, self.id, &self.shared.node).await {
            // Stale within seconds anyway: nobody will be said to hold it.
            tracing::debug!(subscription = %self.id, error = %e, "could not clear the lease record");
        }
    }

    /// Delivers until told to stop, reporting the lease taken at `since`.
    async fn deliver(&mut self, since: DateTime<Utc>) {
        let mut reported = None;
        let mut log = self.shared.log_signal.subscribe();
        'reload: loop {
            self.control.borrow_and_update();
            let run = match self.load().await {
                Ok(Some(run)) => run,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(subscription = %self.id, error = %e, "could not load the subscription; retrying");
                    if self.pause(Duration::from_secs(1)).await {
                        continue 'reload;
                    }
                    return;
                }
            };
            let mut run = run;
            loop {
                // A change an operator made (a rotated secret, a new filter) applies
                // from the next message on.
                if self.control.has_changed().unwrap_or(false) {
                    continue 'reload;
                }
                let step = if run.subscription.state == State::Active {
                    self.step(&mut run).await
                } else {
                    Ok(Step::Idle(Duration::MAX))
                };
                self.report();
                self.report_lease(since, &mut reported).await;
                let wait = match step {
                    Ok(Step::Progress) => continue,
                    Ok(Step::Idle(wait)) => wait.min(POLL),
                    Ok(Step::Reload) => {
                        let _ = self.committed(&mut run).await;
                        continue 'reload;
                    }
                    Err(e) => {
                        // What is in memory may be ahead of what was stored: start
                        // again from the stored cursor.
                        tracing::warn!(subscription = %self.id, error = %e, "delivery step failed; retrying");
                        let _ = self.committed(&mut run).await;
                        if self.pause(Duration::from_secs(1)).await {
                            continue 'reload;
                        }
                        return;
                    }
                };
                tokio::select! {
                    _ = self.stop.cancelled() => return,
                    _ = self.control.changed() => continue 'reload,
                    _ = log.changed() => {}
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    /// On PostgreSQL, waits until this instance holds the subscription's advisory lock,
    /// on a connection of its own (outside the pool) kept for the worker's life; when
    /// the instance holding it dies, its connection closes and another takes over from
    /// the stored cursor. SQLite has one process. `None` when told to stop first, or
    /// when the subscription is gone.
    async fn lease(&self) -> Option<Option<sqlx::PgConnection>> {
        use sqlx::Connection;

        let crate::store::Database::Postgres(pool) = &self.shared.db else {
            return Some(None);
        };
        let key = i64::from_be_bytes(self.id.as_bytes()[8..].try_into().ok()?);
        let mut announced = false;
        loop {
            let attempt = async {
                let mut conn = sqlx::PgConnection::connect_with(&pool.connect_options()).await?;
                let held: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(key)
                    .fetch_one(&mut conn)
                    .await?;
                Ok::<_, sqlx::Error>(held.then_some(conn))
            };
            match attempt.await {
                Ok(Some(conn)) => return Some(Some(conn)),
                Ok(None) if !announced => {
                    tracing::info!(subscription = %self.id, "another instance delivers this subscription; standing by");
                    announced = true;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(subscription = %self.id, error = %e, "could not take the subscription's lease")
                }
            }
            if !self.pause(LEASE_RETRY).await {
                return None;
            }
            if matches!(
                store::load(&self.shared.db, &self.shared.keys, self.id).await,
                Ok(None)
            ) {
                return None;
            }
        }
    }

    /// Waits for the previous batch's commit; `false` when its cursor had moved.
    async fn committed(&self, run: &mut Run) -> Result<bool, StoreError> {
        match run.committing.take() {
            None => Ok(true),
            Some(commit) => commit
                .await
                .map_err(|e| StoreError::Corrupt(format!("a delivery commit failed: {e}")))?,
        }
    }

    /// Runs `work` to its end, or `None` as soon as the worker is told to stop.
    async fn unless_stopped<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            _ = self.stop.cancelled() => None,
            done = work => Some(done),
        }
    }

    /// Waits `wait` unless stopped; `false` when stopped.
    async fn pause(&self, wait: Duration) -> bool {
        tokio::select! {
            _ = self.stop.cancelled() => false,
            _ = tokio::time::sleep(wait) => true,
        }
    }

    async fn load(&self) -> Result<Option<Run>, StoreError> {
        let Some(subscription) = store::load(&self.shared.db, &self.shared.keys, self.id).await?
        else {
            return Ok(None);
        };
        if let Some(error) = &subscription.secret_error {
            // Nothing to sign with: stop, rather than send unsigned or retry forever.
            // Discovery reports it; a rotation of the secret starts a worker again.
            tracing::error!(subscription = %self.id, code = error.error.code(), error = %error, "worker stopped: the subscription's signing secret does not open");
            return Ok(None);
        }
        let sink = Sink::of(&subscription, self.shared.settings.webhook_timeout)
            .map_err(|e| StoreError::Corrupt(format!("subscription {}: {e}", self.id)))?;
        let queued = store::queued_streams(&self.shared.db, self.id).await?;
        self.window.set_max(subscription.max_in_flight);
        Ok(Some(Run {
            subscription,
            sink,
            queued,
            ahead: None,
            committing: None,
        }))
    }

    fn report(&self) {
        let id = self.id.to_string();
        metrics::gauge!("orderlog_subscription_breaker_state", "subscription" => id.clone())
            .set(self.breaker.state().level());
        metrics::gauge!("orderlog_subscription_window", "subscription" => id)
            .set(f64::from(self.window.size()));
    }

    /// Tells the window, and through it maybe the breaker, how an attempt went; `true`
    /// for a failure the window absorbed (it narrowed, the breaker was not told).
    fn settle(&self, permit: Permit<'_>, verdict: Verdict) -> bool {
        if answered(verdict) {
            permit.delivered();
            self.breaker.record(true);
            return false;
        }
        match permit.failed() {
            Failure::Absorbed => true,
            Failure::AtMinimum => {
                self.breaker.record(false);
                false
            }
        }
    }

    /// Tells every server who holds this subscription and how its breaker stands: when
    /// the breaker moves, and every `REPORT_EVERY` otherwise.
    async fn report_lease(
        &self,
        since: DateTime<Utc>,
        reported: &mut Option<(BreakerState, Instant)>,
    ) {
        let breaker = self.breaker.state();
        if matches!(reported, Some((state, at)) if *state == breaker && at.elapsed() < lease::REPORT_EVERY)
        {
            return;
        }
        let record = Lease {
            node: self.shared.node.clone(),
            since,
            breaker,
            window: self.window.size(),
            reported_at: Utc::now(),
        };
        match lease::report(&self.shared.db, self.id, &record).await {
            Ok(()) => *reported = Some((breaker, Instant::now())),
            // Deleted meanwhile (the foreign key), or the database is away: try again
            // at the next step.
            Err(e) => {
                tracing::debug!(subscription = %self.id, error = %e, "could not report the lease")
            }
        }
    }

    async fn step(&self, run: &mut Run) -> Result<Step, StoreError> {
        if let Some(wait) = self.breaker.closed_for() {
            return Ok(Step::Idle(wait));
        }
        let retried = self.retry_due(run).await?;
        if let Step::Reload = retried {
            return Ok(Step::Reload);
        }
        match self.deliver_new(run).await? {
            Step::Idle(_) => Ok(retried),
            other => Ok(other),
        }
    }

    /// Reads the next batch after the cursor and sends what the subscription wants.
    async fn deliver_new(&self, run: &mut Run) -> Result<Step, StoreError> {
        if self.breaker.closed_for().is_some() {
            return Ok(Step::Idle(POLL));
        }
        let entries = match run.ahead.take() {
            Some((after, entries)) if after == run.subscription.cursor => entries,
            _ => {
                reader::read_after_with_metadata(&self.shared.db, run.subscription.cursor, BATCH)
                    .await?
            }
        };
        let full = entries.len() as i64 == BATCH;
        let Some(last) = entries.last() else {
            return Ok(if self.committed(run).await? {
                Step::Idle(POLL)
            } else {
                Step::Reload
            });
        };
        let to = last.cursor;
        let mut streams: Vec<Vec<Message>> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for entry in &entries {
            if !run.subscription.event_types.matches(&entry.event_type) {
                continue;
            }
            let message = Message::of(entry);
            let slot = *index.entry(message.stream.clone()).or_insert_with(|| {
                streams.push(Vec::new());
                streams.len() - 1
            });
            streams[slot].push(message);
        }
        let now = millis(Utc::now());
        let mut queued = Vec::new();
        let mut sends = Vec::new();
        for messages in streams {
            if run.queued.contains(&messages[0].stream) {
                queued.extend(messages.iter().map(|m| self.behind(m, now)));
            } else {
                sends.push(messages);
            }
        }
        let sink = &run.sink;
        let sending = stream::iter(sends)
            .map(|messages| self.send_stream(sink, messages))
            .buffer_unordered(run.subscription.max_in_flight.max(1) as usize)
            .collect::<Vec<StreamOutcome>>();
        // A full batch means more is waiting: read it while this one is out.
        let read_ahead = async {
            if full {
                reader::read_after_with_metadata(&self.shared.db, to, BATCH)
                    .await
                    .ok()
            } else {
                None
            }
        };
        // Stopping abandons the batch: its cursor was not moved, so whatever went out
        // goes again after the restart, with the same ids.
        let (outcomes, ahead) = futures::join!(self.unless_stopped(sending), read_ahead);
        let Some(outcomes) = outcomes else {
            return Ok(Step::Idle(POLL));
        };
        let mut attempts = Vec::new();
        let mut gone = false;
        for outcome in outcomes {
            attempts.extend(outcome.attempts);
            queued.extend(outcome.queued);
            gone |= outcome.gone;
        }
        let subscription = self.id.to_string();
        count(&self.shared.meter, &subscription, &attempts);
        let dead = queued.iter().filter(|row| row.state == "dead").count();
        if dead > 0 {
            self.shared.meter.dead_lettered(&subscription, dead as u64);
        }
        if !self.committed(run).await? {
            return Ok(Step::Reload);
        }
        let from = run.subscription.cursor;
        run.subscription.cursor = to;
        run.ahead = ahead.filter(|e| !e.is_empty()).map(|e| (to, e));
        run.queued
            .extend(queued.iter().map(|row| row.stream.clone()));
        // The commit runs while the next batch goes out; it is awaited before the
        // next one, so cursors are stored in order.
        let (db, id) = (self.shared.db.clone(), self.id);
        run.committing = Some(tokio::spawn(async move {
            store::advance(&db, id, from, to, &attempts, &queued).await
        }));
        if gone {
            self.committed(run).await?;
            self.disable(run).await?;
            return Ok(Step::Reload);
        }
        Ok(Step::Progress)
    }

    /// Sends `message` with its personal data opened (or shown erased) at this moment:
    /// queued and dead messages keep it sealed, so an erasure reaches them too.
    async fn send(&self, sink: &Sink, message: &Message) -> Attempt {
        match self.shared.vault.reveal(&message.body).await {
            Ok(Cow::Borrowed(_)) => sink.send(&self.shared.connections, message).await,
            Ok(Cow::Owned(body)) => {
                let opened = Message {
                    body,
                    ..message.clone()
                };
                sink.send(&self.shared.connections, &opened).await
            }
            Err(e) => Attempt {
                at: Utc::now(),
                latency: Duration::ZERO,
                status: None,
                verdict: Verdict::Retry { retry_after: None },
                detail: Some(format!(
                    "not sent: its personal data could not be opened: {e}"
                )),
                turned_away: false,
            },
        }
    }

    /// One stream's messages from a batch, in order; at the first failure the rest
    /// queue up behind it.
    async fn send_stream(&self, sink: &Sink, messages: Vec<Message>) -> StreamOutcome {
        let mut outcome = StreamOutcome::default();
        let mut messages = messages.into_iter();
        while let Some(message) = messages.next() {
            let mut resends = 0;
            let attempt = loop {
                let permit = self.window.acquire().await;
                if !self.breaker.admit() {
                    break None;
                }
                let attempt = self.send(sink, &message).await;
                let absorbed = self.settle(permit, attempt.verdict);
                outcome.attempts.push(self.record(&message, &attempt));
                // Sent again at once rather than after the retry schedule's first step:
                // on a small receiver's full backlog, waiting 5 s for that step was what
                // kept short runs at half its capacity (BENCHMARKS.md, small receiver).
                if absorbed && attempt.turned_away && resends < RESENDS {
                    resends += 1;
                    continue;
                }
                break Some(attempt);
            };
            let now = millis(Utc::now());
            let Some(attempt) = attempt else {
                outcome.queued.push(self.behind(&message, now));
                outcome
                    .queued
                    .extend(messages.map(|m| self.behind(&m, now)));
                break;
            };
            let next_at = match attempt.verdict {
                Verdict::Delivered => continue,
                Verdict::Retry { retry_after } => now + self.delay(1, retry_after),
                Verdict::Gone => {
                    outcome.gone = true;
                    now
                }
            };
            outcome.queued.push(QueuedRow::new(
                self.id,
                &message,
                1,
                next_at,
                Some(describe(&attempt)),
            ));
            outcome
                .queued
                .extend(messages.map(|m| self.behind(&m, now)));
            break;
        }
        outcome
    }

    /// Attempts the heads of queued streams that are due.
    async fn retry_due(&self, run: &mut Run) -> Result<Step, StoreError> {
        if run.queued.is_empty() {
            return Ok(Step::Idle(POLL));
        }
        // The queue is read from the database: what the last batch queued must be there.
        if !self.committed(run).await? {
            return Ok(Step::Reload);
        }
        let now = millis(Utc::now());
        let limit = i64::from(run.subscription.max_in_flight.max(1));
        let heads = store::due_heads(&self.shared.db, self.id, now, limit).await?;
        let sink = &run.sink;
        let trying = stream::iter(heads)
            .map(|row| async move {
                let message = row.message().ok()?;
                let permit = self.window.acquire().await;
                if !self.breaker.admit() {
                    return None;
                }
                let attempt = self.send(sink, &message).await;
                self.settle(permit, attempt.verdict);
                Some((row, message, attempt))
            })
            .buffer_unordered(limit as usize)
            .collect::<Vec<Option<(QueuedRow, Message, Attempt)>>>();
        let Some(tries) = self.unless_stopped(trying).await else {
            return Ok(Step::Idle(POLL));
        };
        let schedule = self.shared.settings.retry_schedule.len() as i64;
        let mut attempts = Vec::new();
        let mut results = Vec::new();
        let mut delivered = false;
        let mut gone = false;
        for (row, message, attempt) in tries.into_iter().flatten() {
            attempts.push(self.record(&message, &attempt));
            let number = row.attempts + 1;
            let settled = match attempt.verdict {
                Verdict::Delivered => {
                    delivered = true;
                    Settled::Delivered
                }
                Verdict::Gone => {
                    gone = true;
                    Settled::Retry {
                        at: now,
                        error: describe(&attempt),
                    }
                }
                Verdict::Retry { .. } if number > schedule => Settled::Dead {
                    error: describe(&attempt),
                },
                Verdict::Retry { retry_after } => Settled::Retry {
                    at: millis(Utc::now()) + self.delay(number, retry_after),
                    error: describe(&attempt),
                },
            };
            results.push((row.event_id, settled));
        }
        let subscription = self.id.to_string();
        count(&self.shared.meter, &subscription, &attempts);
        let dead = results
            .iter()
            .filter(|(_, settled)| matches!(settled, Settled::Dead { .. }))
            .count();
        if dead > 0 {
            self.shared.meter.dead_lettered(&subscription, dead as u64);
        }
        if !results.is_empty() {
            store::settle(&self.shared.db, self.id, &attempts, &results).await?;
        }
        if gone {
            self.disable(run).await?;
            return Ok(Step::Reload);
        }
        if delivered {
            run.queued = store::queued_streams(&self.shared.db, self.id).await?;
            return Ok(Step::Progress);
        }
        let wait = match store::next_due(&self.shared.db, self.id).await? {
            Some(at) => Duration::from_millis((at - millis(Utc::now())).max(1) as u64),
            None => POLL,
        };
        Ok(Step::Idle(wait))
    }

    /// A message queued behind an earlier one of its stream: no attempt of its own yet.
    fn behind(&self, message: &Message, now: i64) -> QueuedRow {
        QueuedRow::new(self.id, message, 0, now, None)
    }

    /// Milliseconds before retry number `number` (1 is the first retry): the schedule's
    /// delay with ±10% jitter, so receivers coming back are not hit by every message at
    /// once; never sooner than the receiver's Retry-After.
    fn delay(&self, number: i64, retry_after: Option<Duration>) -> i64 {
        let schedule = &self.shared.settings.retry_schedule;
        let base = schedule[(number.max(1) as usize - 1).min(schedule.len() - 1)];
        let jittered = base.mul_f64(rand::thread_rng().gen_range(0.9..1.1));
        let capped_after = retry_after.map(|d| d.min(Duration::from_secs(24 * 3600)));
        jittered.max(capped_after.unwrap_or_default()).as_millis() as i64
    }

    fn record(&self, message: &Message, attempt: &Attempt) -> AttemptRecord {
        AttemptRecord {
            subscription_id: self.id.to_string(),
            event_id: message.event_id.to_string(),
            position: message.cursor.position,
            attempted_at: millis(attempt.at),
            outcome: attempt.verdict.outcome().to_owned(),
            status: attempt.status.map(i64::from),
            latency_ms: attempt.latency.as_millis() as i64,
            detail: attempt.detail.clone(),
        }
    }

    /// The receiver answered 410 Gone: stop until an operator resumes.
    async fn disable(&self, run: &Run) -> Result<(), StoreError> {
        let mut subscription = run.subscription.clone();
        subscription.state = State::Disabled;
        subscription.state_reason = Some(format!(
            "the receiver answered 410 Gone at {}",
            Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
        subscription.updated_at = Utc::now();
        tracing::warn!(subscription = %self.id, "receiver answered 410 Gone; subscription disabled");
        store::save_settings(&self.shared.db, &subscription).await
    }
}

#[derive(Default)]
struct StreamOutcome {
    attempts: Vec<AttemptRecord>,
    queued: Vec<QueuedRow>,
    gone: bool,
}

/// Whether the receiver was up, for the breaker: a 410 is an answer, not an outage.
fn answered(verdict: Verdict) -> bool {
    !matches!(verdict, Verdict::Retry { .. })
}

fn describe(attempt: &Attempt) -> String {
    let detail = attempt.detail.as_deref().unwrap_or("");
    match attempt.status {
        Some(status) => format!("HTTP {status}: {detail}"),
        None => detail.to_owned(),
    }
}

fn count(meter: &Meter, subscription: &str, attempts: &[AttemptRecord]) {
    for attempt in attempts {
        let latency = Duration::from_millis(attempt.latency_ms.max(0) as u64);
        meter.attempt(subscription, &attempt.outcome, latency);
    }
}
