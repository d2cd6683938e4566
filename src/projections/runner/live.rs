//! The live group: every batch of the log is read and decoded once and applied by each
//! running projection to its serving generation, in a transaction of its own, side by
//! side (on SQLite, whose single writer would only queue them, in one transaction for
//! all, falling back to one each when it fails); a projection whose batch fails leaves
//! the group and is retried alone, then stopped (marked failed) at the event it cannot
//! apply. The live runner also drops a generation a switch retired, once queries on it
//! have had time to finish.
//!
//! A projection that is rebuilding keeps its place in the group: its serving generation
//! goes on following the log until the successor takes over (the switch moves the
//! generation and the checkpoint under the row lock, and a batch planned for the old
//! generation then finds the row moved). The rebuild's own cursor and failure are
//! separate columns, never touched here.
//!
//! It never touches a projection that is stopped or failed, or one whose stored version
//! is not this code's (its serving tables were built by other code), never builds or
//! switches a generation, and never waits on a row someone else holds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::row::{load_row, lock_row, lock_rows, Row};
use super::{now, Projections, POLL};
use crate::projections::{Envelope, Projection, ProjectionError, View, ViewStore};
use crate::store::reader::{self, Cursor, LogEntry, LookPast};
use crate::store::views::{physical, Param, Tx};
use crate::store::StoreError;

/// Events per live batch; rebuilds take bigger bites.
const LIVE_BATCH: i64 = 500;
/// Attempts at a failing batch before narrowing it down to the failing event.
pub(super) const ATTEMPTS: u32 = 4;
pub(super) const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// How long retired tables stay for queries that started before a switch.
const RETIRE_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

impl Projections {
    /// Runs the live projections until `shutdown`: every batch of the log is read and
    /// decoded once, and applied by each projection in its own transaction, side by
    /// side. A projection whose batch fails leaves the group: a task of its own retries
    /// it with backoff (then stops it at the failing event) while the others go on, and
    /// it rejoins once that is settled.
    pub(super) async fn run_live(&self, shutdown: CancellationToken) {
        let mut wake = self.signal.subscribe();
        let mut known = HashMap::new();
        let detached: Detached = Arc::default();
        loop {
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = self.live_step(&mut known, &detached, &shutdown) => outcome,
            };
            let busy = match outcome {
                Ok(busy) => busy,
                Err(e) => {
                    tracing::warn!(error = %e, "live projection step failed; retrying");
                    known.clear();
                    false
                }
            };
            if !busy {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = wake.changed() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
        }
    }

    /// One batch for every live projection. Returns true when there may be more to do
    /// right away.
    ///
    /// `known` holds the rows as this task last left them, which saves reading them
    /// again while the projections just run; every batch still checks its row under
    /// the row's lock, and a mismatch (a skip, a stop, a switch) makes the next step
    /// read that row afresh.
    async fn live_step(
        &self,
        known: &mut HashMap<&'static str, Row>,
        detached: &Detached,
        shutdown: &CancellationToken,
    ) -> Result<bool, ProjectionError> {
        let mut live: Vec<(Arc<dyn Projection>, Row)> = Vec::new();
        for projection in self.list.iter() {
            let name = projection.name();
            if lock(detached).contains(name) {
                continue;
            }
            // A rebuilding row is read afresh every step: its switch may land while
            // there is nothing to apply, and the retired tables must still be dropped.
            let mut row = match known.remove(name) {
                Some(row) if row.rebuild.is_none() => row,
                _ => load_row(&self.db, name).await?,
            };
            if let Some(retired) = row.retired {
                if Utc::now() - row.updated_at > RETIRE_AFTER {
                    self.drop_retired(projection, retired).await?;
                    row.retired = None;
                }
            }
            // A rebuilding projection goes on serving (and following the log) until its
            // switch; a stopped or failed one waits for an operator.
            if row.status == "running" && row.version == projection.version() {
                live.push((projection.clone(), row));
            }
        }
        let Some(from) = live.iter().map(|(_, row)| row.cursor).min() else {
            return Ok(false);
        };
        // The metadata is read only for the traces, which parent to what it stores.
        let entries = if crate::trace::enabled() {
            reader::read_after_with_metadata(&self.db, from, LIVE_BATCH).await?
        } else {
            reader::read_after(&self.db, from, LIVE_BATCH).await?
        };
        if entries.is_empty() {
            for (projection, row) in live {
                self.publish(projection.name(), row.cursor);
                known.insert(projection.name(), row);
            }
            return Ok(false);
        }
        let full = entries.len() as i64 == LIVE_BATCH;
        let recorded: Vec<(Cursor, DateTime<Utc>)> =
            entries.iter().map(|e| (e.cursor, e.recorded_at)).collect();
        let events = match entries
            .iter()
            .cloned()
            .map(Envelope::decode)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(events) => events,
            Err(e) => {
                // No projection can get past this event: each finds it on its own,
                // applies what comes before it, and stops there.
                tracing::warn!(error = %e, "an event in the batch cannot be decoded");
                for (projection, row) in live {
                    self.detach(projection, row, &entries, detached, shutdown);
                }
                return Ok(true);
            }
        };

        // Each projection applies its share in its own transaction, all at once: a batch
        // then lasts as long as the slowest projection's few statements, not their sum.
        let mut work = Vec::new();
        for (projection, row) in live {
            let mine = &events[events.partition_point(|e| e.entry.cursor <= row.cursor)..];
            if mine.is_empty() {
                known.insert(projection.name(), row);
            } else {
                work.push((projection, row, mine));
            }
        }
        let outcomes = match self.apply_together(&work).await {
            Some(outcomes) => outcomes,
            None => {
                futures::future::join_all(work.iter().map(|(projection, row, mine)| {
                    self.apply_batch(projection, (row.generation, row.version), row.cursor, mine)
                }))
                .await
            }
        };
        for ((projection, row, _), outcome) in work.into_iter().zip(outcomes) {
            let name = projection.name();
            match outcome {
                Ok(Applied::All(cursor)) => {
                    self.record_lag(name, &recorded, cursor);
                    self.publish(name, cursor);
                    known.insert(name, Row { cursor, ..row });
                }
                // Moved by someone else, or locked by them right now: read it afresh.
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(projection = name, error = %e, "batch failed; retrying it alone");
                    self.detach(projection, row, &entries, detached, shutdown);
                }
            }
        }
        Ok(full)
    }

    /// Takes a projection whose batch failed out of the group, and retries it on a task
    /// of its own: with backoff, then event by event, stopping it at the failing one.
    fn detach(
        &self,
        projection: Arc<dyn Projection>,
        row: Row,
        entries: &[LogEntry],
        detached: &Detached,
        shutdown: &CancellationToken,
    ) {
        let name = projection.name();
        lock(detached).insert(name);
        let mine: Vec<LogEntry> = entries
            .iter()
            .filter(|e| e.cursor > row.cursor)
            .cloned()
            .collect();
        let this = self.clone();
        let detached = detached.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                outcome = this.alone(&projection, row, mine) => {
                    if let Err(e) = outcome {
                        tracing::warn!(projection = name, error = %e, "projection retry failed; it rejoins and tries again");
                    }
                }
            }
            lock(&detached).remove(name);
            this.signal.notify();
        });
    }

    /// Applies `entries` to one projection on its own, retrying; stops the projection
    /// at an event it cannot apply.
    async fn alone(
        &self,
        projection: &Arc<dyn Projection>,
        row: Row,
        entries: Vec<LogEntry>,
    ) -> Result<(), ProjectionError> {
        let name = projection.name();
        let recorded: Vec<(Cursor, DateTime<Utc>)> =
            entries.iter().map(|e| (e.cursor, e.recorded_at)).collect();
        let outcome = self.apply_with_retries(projection, &row, entries).await?;
        if let Applied::All(cursor)
        | Applied::FailedAt {
            applied: Some(cursor),
            ..
        } = &outcome
        {
            self.record_lag(name, &recorded, *cursor);
            self.publish(name, *cursor);
        }
        if let Applied::FailedAt { entry, error, .. } = outcome {
            tracing::error!(
                projection = name,
                position = entry.cursor.position,
                event_type = %entry.event_type,
                error = %error,
                "projection stopped on an event it cannot apply"
            );
            self.mark_failed(name, &entry, &error.to_string()).await?;
        }
        Ok(())
    }

    /// The test-only fault hook's verdict on a batch a projection just applied.
    pub(super) fn injected_fault(
        &self,
        name: &str,
        events: &[Envelope],
    ) -> Result<(), ProjectionError> {
        match &self.fault {
            Some(fault) => match events.iter().find(|e| fault(name, e)) {
                Some(event) => Err(ProjectionError::Injected(format!(
                    "{name} at position {}",
                    event.entry.cursor.position
                ))),
                None => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Applies live entries; on repeated failure narrows down to the failing event.
    async fn apply_with_retries(
        &self,
        projection: &Arc<dyn Projection>,
        row: &Row,
        entries: Vec<LogEntry>,
    ) -> Result<Applied, ProjectionError> {
        let target = (row.generation, projection.version());
        let mut backoff = FIRST_BACKOFF;
        let mut last_error = None;
        for _ in 0..ATTEMPTS {
            match self
                .apply_entries(projection, target, row.cursor, &entries)
                .await
            {
                Ok(outcome) => return Ok(outcome),
                Err(e) => {
                    tracing::warn!(projection = projection.name(), error = %e, "batch failed; backing off");
                    last_error = Some(e);
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
        }
        // Still failing: apply one event at a time to find the one at fault.
        let mut cursor = row.cursor;
        let mut applied = None;
        for entry in entries {
            let single = std::slice::from_ref(&entry);
            let mut result = self.apply_entries(projection, target, cursor, single).await;
            if result.is_err() {
                tokio::time::sleep(FIRST_BACKOFF).await;
                result = self.apply_entries(projection, target, cursor, single).await;
            }
            match result {
                Ok(Applied::All(next)) => {
                    cursor = next;
                    applied = Some(next);
                }
                Ok(other) => return Ok(other),
                Err(error) => {
                    return Ok(Applied::FailedAt {
                        applied,
                        entry: Box::new(entry),
                        error,
                    })
                }
            }
        }
        // Every event passed on its own: the failure was transient after all.
        match (applied, last_error) {
            (Some(cursor), _) => Ok(Applied::All(cursor)),
            (None, Some(e)) => Err(e),
            (None, None) => Ok(Applied::Moved),
        }
    }

    /// SQLite only: every projection's share of the batch in one transaction. SQLite
    /// has one writer, so side by side their transactions only queue for it, and each
    /// pays its own BEGIN and COMMIT; under load those were most of the time the views
    /// held the write lock, which the commands wait for. Returns `None` when the batch
    /// is not for this (PostgreSQL, or a single projection) or any part of it fails:
    /// nothing is then applied, and the caller applies the shares one by one, which
    /// tells the failing projection from the others.
    async fn apply_together(
        &self,
        work: &[(Arc<dyn Projection>, Row, &[Envelope])],
    ) -> Option<Vec<Result<Applied, ProjectionError>>> {
        if !matches!(self.db, crate::store::Database::Sqlite(_)) || work.len() < 2 {
            return None;
        }
        match self.apply_together_now(work).await {
            Ok(outcomes) => Some(outcomes),
            Err(e) => {
                tracing::debug!(error = %e, "the batch failed as one; applying it projection by projection");
                None
            }
        }
    }

    async fn apply_together_now(
        &self,
        work: &[(Arc<dyn Projection>, Row, &[Envelope])],
    ) -> Result<Vec<Result<Applied, ProjectionError>>, ProjectionError> {
        let mut tx = Tx::begin(&self.db).await?;
        let names: Vec<&str> = work.iter().map(|(p, _, _)| p.name()).collect();
        let locked = lock_rows(&mut tx, &names).await?;
        let mut outcomes = Vec::with_capacity(work.len());
        for (projection, row, events) in work {
            let name = projection.name();
            let Some(last) = events.last().map(|e| e.entry.cursor) else {
                outcomes.push(Ok(Applied::Moved));
                continue;
            };
            if !planned_for(locked.get(name), (row.generation, row.version), row.cursor) {
                outcomes.push(Ok(Applied::Moved));
                continue;
            }
            let mut view = View {
                store: ViewStore::Tx(tx),
                projection: name,
                generation: row.generation,
            };
            let applied = projection
                .apply(&mut view, events)
                .instrument(self.apply_span(projection, events))
                .await;
            let ViewStore::Tx(back) = view.store else {
                return Err(
                    StoreError::Corrupt("a live view must be in a transaction".into()).into(),
                );
            };
            tx = back;
            applied?;
            self.injected_fault(name, events)?;
            advance(&mut tx, name, last).await?;
            outcomes.push(Ok(Applied::All(last)));
        }
        tx.commit().await?;
        self.signal.notify();
        Ok(outcomes)
    }

    /// One span per applied batch, not per event (a batch is up to 500 events), tied to
    /// the commands that appended them: their child when the batch is one command's
    /// events, linked to each of them otherwise. None unless traces are exported.
    fn apply_span(&self, projection: &Arc<dyn Projection>, events: &[Envelope]) -> tracing::Span {
        if !crate::trace::enabled() {
            return tracing::Span::none();
        }
        let span = tracing::info_span!(
            "projection_apply",
            projection = projection.name(),
            events = events.len(),
        );
        let stored: Vec<String> = events
            .iter()
            .filter_map(|e| crate::trace::stored_traceparent(e.entry.metadata.as_deref()))
            .collect();
        crate::trace::parent_or_link(&span, stored.iter().map(String::as_str));
        span
    }

    /// One transaction: lock the row, check the checkpoint, apply, advance.
    /// `target` is the (generation, version) the batch was planned for.
    ///
    /// The transaction writes only what the log can rebuild, so its commit does not
    /// wait for the WAL flush, and readers look past it while it runs (it appends no
    /// events). A row someone else holds right now (a switch, an operator) counts as
    /// moved: this never waits for them.
    async fn apply_batch(
        &self,
        projection: &Arc<dyn Projection>,
        target: (i64, i64),
        expected: Cursor,
        events: &[Envelope],
    ) -> Result<Applied, ProjectionError> {
        self.apply_batch_now(projection, target, expected, events)
            .instrument(self.apply_span(projection, events))
            .await
    }

    /// [`Self::apply_batch`], the work itself.
    async fn apply_batch_now(
        &self,
        projection: &Arc<dyn Projection>,
        target: (i64, i64),
        expected: Cursor,
        events: &[Envelope],
    ) -> Result<Applied, ProjectionError> {
        let name = projection.name();
        let Some(last) = events.last().map(|e| e.entry.cursor) else {
            return Ok(Applied::Moved);
        };
        let mut tx = Tx::begin(&self.db).await?;
        let _look_past = tx.derived_only().await?.map(LookPast::register);
        let locked = lock_rows(&mut tx, &[name]).await?;
        if !planned_for(locked.get(name), target, expected) {
            // Another runner, a skip or a switch moved the projection: start over.
            return Ok(Applied::Moved);
        }
        let mut view = View {
            store: ViewStore::Tx(tx),
            projection: name,
            generation: target.0,
        };
        projection.apply(&mut view, events).await?;
        self.injected_fault(name, events)?;
        let ViewStore::Tx(mut tx) = view.store else {
            return Err(StoreError::Corrupt("a live view must be in a transaction".into()).into());
        };
        advance(&mut tx, name, last).await?;
        tx.commit().await?;
        // Other processes' readers do not look past our transaction: events committed
        // meanwhile may just have become visible to them, and ours is told too.
        self.signal.notify();
        Ok(Applied::All(last))
    }

    /// [`Self::apply_batch`] for entries not decoded yet.
    async fn apply_entries(
        &self,
        projection: &Arc<dyn Projection>,
        target: (i64, i64),
        expected: Cursor,
        entries: &[LogEntry],
    ) -> Result<Applied, ProjectionError> {
        let events = entries
            .iter()
            .cloned()
            .map(Envelope::decode)
            .collect::<Result<Vec<_>, _>>()?;
        self.apply_batch(projection, target, expected, &events)
            .await
    }

    async fn drop_retired(
        &self,
        projection: &Arc<dyn Projection>,
        retired: i64,
    ) -> Result<(), StoreError> {
        let name = projection.name();
        let mut tx = Tx::begin(&self.db).await?;
        let locked = lock_row(&mut tx, name).await?;
        if locked.retired != Some(retired) {
            return Ok(());
        }
        for table in projection.tables() {
            tx.drop_table(&physical(name, retired, table.name)).await?;
        }
        tx.execute(
            "UPDATE projections SET retired_generation = NULL WHERE name = $1",
            &[Param::Text(name.to_owned())],
        )
        .await?;
        tx.commit().await
    }

    async fn mark_failed(
        &self,
        name: &str,
        entry: &LogEntry,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut tx = Tx::begin(&self.db).await?;
        tx.execute(
            "UPDATE projections
                SET status = 'failed', last_error = $2, failed_tx = $3, failed_position = $4,
                    failed_event_id = $5, updated_at = $6
              WHERE name = $1",
            &[
                Param::Text(name.to_owned()),
                Param::Text(error.to_owned()),
                Param::Int(entry.cursor.transaction_id),
                Param::Int(entry.cursor.position),
                Param::Text(entry.event_id.to_string()),
                Param::Text(now()),
            ],
        )
        .await?;
        tx.commit().await
    }
}

/// Whether the locked row is still where the batch was planned from: the same
/// (generation, version), checkpoint and running. A row skipped as held elsewhere is not.
fn planned_for(locked: Option<&Row>, target: (i64, i64), expected: Cursor) -> bool {
    let (generation, version) = target;
    locked.is_some_and(|locked| {
        locked.generation == generation
            && locked.cursor == expected
            && locked.status == "running"
            && locked.version == version
    })
}

/// Moves the projection's checkpoint to `last`, in the transaction that applied it.
async fn advance(tx: &mut Tx, name: &str, last: Cursor) -> Result<(), StoreError> {
    let sql = "UPDATE projections SET cursor_tx = $2, cursor_position = $3, updated_at = $4
                WHERE name = $1";
    tx.execute(
        sql,
        &[
            Param::Text(name.to_owned()),
            Param::Int(last.transaction_id),
            Param::Int(last.position),
            Param::Text(now()),
        ],
    )
    .await?;
    Ok(())
}

/// Projections out of the live group while a task of their own retries them.
type Detached = Arc<Mutex<std::collections::HashSet<&'static str>>>;

fn lock(detached: &Detached) -> std::sync::MutexGuard<'_, std::collections::HashSet<&'static str>> {
    detached.lock().unwrap_or_else(|e| e.into_inner())
}

enum Applied {
    All(Cursor),
    /// Someone else moved the projection; nothing was applied.
    Moved,
    FailedAt {
        applied: Option<Cursor>,
        entry: Box<LogEntry>,
        error: ProjectionError,
    },
}
