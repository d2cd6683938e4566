//! Blue/green rebuilds: a pass streams the log once into memory for every projection
//! with a pending rebuild, writes each view into generation N+1 (indexes built after
//! the load), catches it up with the tail and, under the projection's row lock, with
//! the serving generation (which kept following the log), and makes it the serving
//! generation, retiring the old one. Events skipped under this code version are
//! skipped again. A projection whose replay fails is replayed again with the live
//! group's backoff and attempts, then event by event from the failing batch, and its
//! rebuild stops at the event it cannot apply, with the error recorded: never a
//! silent loop.
//!
//! It never writes to a serving generation, and never runs a rebuild requested for
//! another code version (that is another process's to run).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::live::{ATTEMPTS, FIRST_BACKOFF};
use super::row::{load_row, lock_row};
use super::{now, Projections, RunnerError, POLL};
use crate::projections::{Envelope, MemoryTables, Projection, ProjectionError, View, ViewStore};
use crate::store::reader::{self, Cursor, LookPast};
use crate::store::views::{physical, Param, Tx};
use crate::store::{Database, StoreError};

/// Events per rebuild batch: bigger bites than a live one.
const REBUILD_BATCH: i64 = 5_000;

impl Projections {
    /// Runs a projection until no rebuild is under way (for `orderlog projections
    /// rebuild`). Returns at once when none is.
    pub async fn finish_rebuild(&self, name: &str) -> Result<(), RunnerError> {
        self.find(name)?;
        loop {
            let row = load_row(&self.db, name).await?;
            if row.rebuild.is_none() {
                return Ok(());
            }
            if let Some((error, at, event_id)) = row.rebuild_failure {
                return Err(RunnerError::RebuildFailed {
                    name: name.to_owned(),
                    position: at.position,
                    event_id,
                    error,
                });
            }
            if !self.rebuild_pass().await? {
                // Requested by other code (another version): not ours to run.
                return Err(RunnerError::WrongState {
                    name: name.to_owned(),
                    state: "rebuilding for another version".to_owned(),
                    action: "rebuild",
                    needed: "rebuilding for this version",
                });
            }
        }
    }

    /// Runs pending rebuilds until `shutdown`. Woken by requests made in this process;
    /// those of another (the CLI) are found by the slow poll.
    pub(super) async fn run_rebuilds(&self, shutdown: CancellationToken) {
        loop {
            let busy = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = self.rebuild_pass() => match outcome {
                    Ok(busy) => busy,
                    Err(e) => {
                        tracing::error!(error = %e, "rebuild pass failed; it will start over");
                        false
                    }
                },
            };
            if !busy {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.rebuild_requested.notified() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
        }
    }

    /// Rebuilds every projection with a pending rebuild, in one pass over the log: each
    /// event is read and decoded once, applied in memory to every rebuilding view, and
    /// each view is written once when it has caught up. A projection whose pass fails
    /// is replayed again alone with the live group's backoff and attempt count, then
    /// event by event from the failing batch on, and its rebuild stops (failed) at the
    /// event it cannot apply. Returns false when there was nothing to rebuild.
    async fn rebuild_pass(&self) -> Result<bool, ProjectionError> {
        let mut pending = Vec::new();
        for projection in self.list.iter() {
            let row = load_row(&self.db, projection.name()).await?;
            if let (Some((generation, version, _)), None) = (row.rebuild, &row.rebuild_failure) {
                if version == projection.version() {
                    let skips = self.skipped(projection.name(), version).await?;
                    pending.push(Pending {
                        projection: projection.clone(),
                        generation,
                        skips: Arc::new(skips),
                    });
                }
            }
        }
        if pending.is_empty() {
            return Ok(false);
        }
        // Start from empty tables: a pass that crashed may have left a partial flush.
        // They get their keys and indexes after the flush, in the switch.
        for Pending {
            projection,
            generation,
            ..
        } in &pending
        {
            let name = projection.name();
            let mut tx = Tx::begin(&self.db).await?;
            if lock_row(&mut tx, name).await?.rebuild.map(|r| r.0) != Some(*generation) {
                continue;
            }
            for table in projection.tables() {
                let table_name = physical(name, *generation, table.name);
                tx.drop_table(&table_name).await?;
                tx.create_table_unindexed(&table_name, table).await?;
            }
            tx.commit().await?;
        }
        let mut narrow: HashMap<&'static str, Cursor> = HashMap::new();
        let mut backoff = FIRST_BACKOFF;
        let mut switches = Vec::new();
        for attempt in 1.. {
            let (cursor, outcomes) = self.replay(&pending, &narrow).await?;
            let mut again = Vec::new();
            for (next, outcome) in pending.into_iter().zip(outcomes) {
                let name = next.projection.name();
                match outcome {
                    Ok(view) => {
                        let this = self.clone();
                        switches.push(tokio::spawn(async move {
                            this.switch(&next, view, cursor).await
                        }));
                    }
                    Err(Failure::Event {
                        at,
                        event_id,
                        error,
                    }) => {
                        tracing::error!(
                            projection = name,
                            position = at.position,
                            error = %error,
                            "rebuild stopped on an event it cannot apply"
                        );
                        self.mark_rebuild_failed(name, next.generation, at, event_id, &error)
                            .await?;
                    }
                    Err(Failure::Batch { after, error }) => {
                        tracing::warn!(projection = name, attempt, error = %error, "rebuild batch failed; backing off");
                        if attempt >= ATTEMPTS {
                            // Narrow down to the failing event. A batch before it failing
                            // too while narrowing (a passing fault) narrows the whole log.
                            let from = if narrow.contains_key(name) {
                                Cursor::START
                            } else {
                                after
                            };
                            narrow.insert(name, from);
                        }
                        again.push(next);
                    }
                }
            }
            pending = again;
            if pending.is_empty() {
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
        for switch in switches {
            switch
                .await
                .map_err(|e| StoreError::Corrupt(e.to_string()))??;
        }
        Ok(true)
    }

    /// One replay of the whole log into fresh memory views, one per `pending`
    /// projection; a projection whose batch fails drops out of this replay. Events after
    /// a projection's `narrow` cursor are applied to it one at a time, to find the one
    /// at fault. Returns the cursor reached and, per projection, its view or failure.
    async fn replay(
        &self,
        pending: &[Pending],
        narrow: &HashMap<&'static str, Cursor>,
    ) -> Result<(Cursor, Vec<Result<View, Failure>>), ProjectionError> {
        let started = std::time::Instant::now();
        let mut slots: Vec<Result<View, Failure>> = pending
            .iter()
            .map(|p| {
                Ok(View {
                    store: ViewStore::Memory(MemoryTables::default()),
                    projection: p.projection.name(),
                    generation: p.generation,
                })
            })
            .collect();
        let mut cursor = Cursor::START;
        let mut events_read = 0usize;
        // Three stages side by side: the log streams in (one query), the next batch is
        // decoded, and this one is applied to every view.
        let (reading, mut decoded) = read_ahead(self.db.clone(), cursor);
        let outcome: Result<(), ProjectionError> = async {
            while let Some(batch) = decoded.recv().await {
                let batch = Arc::new(batch?);
                let Some(last) = batch.last_cursor() else {
                    continue;
                };
                let before = cursor;
                cursor = last;
                events_read += batch.events.len();
                let mut tasks = Vec::new();
                for (index, (next, slot)) in pending.iter().zip(slots.iter_mut()).enumerate() {
                    if slot.is_err() {
                        // Failed earlier in this replay.
                        continue;
                    }
                    let placeholder = Err(Failure::Batch {
                        after: before,
                        error: String::new(),
                    });
                    let Ok(mut view) = std::mem::replace(slot, placeholder) else {
                        continue;
                    };
                    let this = self.clone();
                    let projection = next.projection.clone();
                    let skips = next.skips.clone();
                    let batch = batch.clone();
                    let one_by_one = narrow
                        .get(projection.name())
                        .is_some_and(|from| last > *from);
                    tasks.push((
                        index,
                        tokio::spawn(async move {
                            let result = this
                                .apply_rebuild_batch(
                                    &projection,
                                    &mut view,
                                    &batch,
                                    &skips,
                                    before,
                                    one_by_one,
                                )
                                .await;
                            (view, result)
                        }),
                    ));
                }
                if tasks.is_empty() {
                    break;
                }
                for (index, task) in tasks {
                    let (view, result) =
                        task.await.map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    slots[index] = result.map(|()| view);
                }
            }
            Ok(())
        }
        .await;
        reading.abort();
        outcome?;
        tracing::info!(
            events = events_read,
            seconds = started.elapsed().as_secs_f64(),
            projections = pending.len(),
            "rebuild pass read the log"
        );
        Ok((cursor, slots))
    }

    /// Applies one decoded batch to a rebuilding view, leaving out the events skipped
    /// under this code version; a failure says where it happened.
    async fn apply_rebuild_batch(
        &self,
        projection: &Arc<dyn Projection>,
        view: &mut View,
        batch: &DecodedBatch,
        skips: &HashSet<Uuid>,
        before: Cursor,
        one_by_one: bool,
    ) -> Result<(), Failure> {
        let name = projection.name();
        let events = &batch.events;
        // Contiguous runs between skipped events, applied as slices (no copies).
        let mut runs = Vec::new();
        let mut from = 0;
        for (i, event) in events.iter().enumerate() {
            if skips.contains(&event.entry.event_id) {
                runs.push(from..i);
                from = i + 1;
            }
        }
        runs.push(from..events.len());
        for run in runs {
            let slice = &events[run];
            if slice.is_empty() {
                continue;
            }
            if one_by_one {
                for single in slice.chunks(1) {
                    let applied = match projection.apply(view, single).await {
                        Ok(()) => self.injected_fault(name, single),
                        Err(e) => Err(e),
                    };
                    if let Err(error) = applied {
                        return Err(Failure::Event {
                            at: single[0].entry.cursor,
                            event_id: single[0].entry.event_id,
                            error: error.to_string(),
                        });
                    }
                }
            } else {
                let applied = match projection.apply(view, slice).await {
                    Ok(()) => self.injected_fault(name, slice),
                    Err(e) => Err(e),
                };
                if let Err(error) = applied {
                    return Err(Failure::Batch {
                        after: before,
                        error: error.to_string(),
                    });
                }
            }
        }
        match &batch.undecodable {
            Some((at, event_id, error)) if !skips.contains(event_id) => Err(Failure::Event {
                at: *at,
                event_id: *event_id,
                error: error.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Applies the log after `at` to a rebuilt view, to its end or until `until` is
    /// reached, and says where it stopped. The tail is short: it goes event by event, so
    /// a failure names its event.
    async fn apply_tail(
        &self,
        next: &Pending,
        view: &mut View,
        mut at: Cursor,
        until: Option<Cursor>,
    ) -> Result<Result<Cursor, Failure>, ProjectionError> {
        while until.is_none_or(|until| at < until) {
            let tail = read_decoded(self.db.clone(), at).await?;
            let Some(last) = tail.last_cursor() else {
                break;
            };
            if let Err(failure) = self
                .apply_rebuild_batch(&next.projection, view, &tail, &next.skips, at, true)
                .await
            {
                return Ok(Err(failure));
            }
            at = last;
        }
        Ok(Ok(at))
    }

    /// Catches a rebuilt view up with the tail of the log, then writes it and makes it
    /// the serving generation under the projection's row lock.
    async fn switch(
        &self,
        next: &Pending,
        mut view: View,
        mut at: Cursor,
    ) -> Result<(), ProjectionError> {
        let (projection, generation) = (&next.projection, next.generation);
        let name = projection.name();
        // Events appended meanwhile: the live runner takes over from `at` after the
        // switch, so this only shortens the catch-up under the lock, and needs none.
        at = match self.apply_tail(next, &mut view, at, None).await? {
            Ok(reached) => reached,
            Err(failure) => return self.fail_rebuild(name, generation, failure).await,
        };
        // One connection per switch, so switches side by side cannot starve the pool.
        let mut tx = Tx::begin(&self.db).await?;
        let _look_past = tx.derived_only().await?.map(LookPast::register);
        let locked = lock_row(&mut tx, name).await?;
        if locked.rebuild.map(|r| r.0) != Some(generation) || locked.rebuild_failure.is_some() {
            // Restarted, failed or finished elsewhere meanwhile.
            return Ok(());
        }
        // The serving generation went on following the log meanwhile, and may be ahead:
        // under the lock it cannot move, so the successor catches up with it here and
        // takes over from where it stands or later, never earlier (no event is applied
        // twice or missed by the generation that serves next).
        at = match self
            .apply_tail(next, &mut view, at, Some(locked.cursor))
            .await?
        {
            Ok(reached) => reached,
            Err(failure) => {
                drop(tx);
                return self.fail_rebuild(name, generation, failure).await;
            }
        };
        // Only the generation this switch retires is kept for queries in flight; one
        // retired before it (no live runner dropped it yet) goes now.
        if let Some(previous) = locked.retired {
            for table in projection.tables() {
                tx.drop_table(&physical(name, previous, table.name)).await?;
            }
        }
        let ViewStore::Memory(mut memory) = view.store else {
            return Err(StoreError::Corrupt("a rebuild view must be in memory".into()).into());
        };
        let rows = memory.row_count();
        memory.flush(&mut tx, name, generation).await?;
        for table in projection.tables() {
            tx.index_table(&physical(name, generation, table.name), table)
                .await?;
        }
        tx.execute(
            "UPDATE projections
                SET version = $2, generation = $3, cursor_tx = $4, cursor_position = $5,
                    status = 'running', last_error = NULL, failed_tx = NULL,
                    failed_position = NULL, failed_event_id = NULL,
                    rebuild_generation = NULL, rebuild_version = NULL,
                    rebuild_cursor_tx = NULL, rebuild_cursor_position = NULL,
                    rebuild_last_error = NULL, rebuild_failed_tx = NULL,
                    rebuild_failed_position = NULL, rebuild_failed_event_id = NULL,
                    retired_generation = $6, updated_at = $7
              WHERE name = $1",
            &[
                Param::Text(name.to_owned()),
                Param::Int(projection.version()),
                Param::Int(generation),
                Param::Int(at.transaction_id),
                Param::Int(at.position),
                Param::Int(locked.generation),
                Param::Text(now()),
            ],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(
            projection = name,
            generation,
            rows,
            "rebuild caught up; switched to it"
        );
        self.publish(name, at);
        Ok(())
    }

    /// Records why a rebuild stopped, once its retries are spent: the rebuild then
    /// waits, `failed`, for an operator to retry it or skip the event (`control`),
    /// while the serving generation goes on.
    async fn mark_rebuild_failed(
        &self,
        name: &str,
        generation: i64,
        at: Cursor,
        event_id: Uuid,
        error: &str,
    ) -> Result<(), StoreError> {
        let mut tx = Tx::begin(&self.db).await?;
        if lock_row(&mut tx, name).await?.rebuild.map(|r| r.0) != Some(generation) {
            // Requested afresh meanwhile: that rebuild has not failed.
            return Ok(());
        }
        tx.execute(
            "UPDATE projections
                SET rebuild_last_error = $2, rebuild_failed_tx = $3,
                    rebuild_failed_position = $4, rebuild_failed_event_id = $5,
                    updated_at = $6
              WHERE name = $1",
            &[
                Param::Text(name.to_owned()),
                Param::Text(error.to_owned()),
                Param::Int(at.transaction_id),
                Param::Int(at.position),
                Param::Text(event_id.to_string()),
                Param::Text(now()),
            ],
        )
        .await?;
        tx.commit().await
    }

    /// A failure while catching a rebuilt view up: the tail goes event by event, so it
    /// names its event, and the rebuild stops there.
    async fn fail_rebuild(
        &self,
        name: &str,
        generation: i64,
        failure: Failure,
    ) -> Result<(), ProjectionError> {
        match failure {
            Failure::Event {
                at,
                event_id,
                error,
            } => {
                tracing::error!(
                    projection = name,
                    position = at.position,
                    error = %error,
                    "rebuild stopped on an event it cannot apply"
                );
                Ok(self
                    .mark_rebuild_failed(name, generation, at, event_id, &error)
                    .await?)
            }
            Failure::Batch { error, .. } => Err(StoreError::Corrupt(error).into()),
        }
    }

    /// The events skipped under `version` of a projection's code.
    async fn skipped(&self, name: &str, version: i64) -> Result<HashSet<Uuid>, StoreError> {
        #[derive(serde::Deserialize)]
        struct Skip {
            event_id: String,
        }
        let skips: Vec<Skip> = crate::store::views::query(
            &self.db,
            "SELECT event_id FROM projection_skips WHERE name = $1 AND version = $2",
            &["event_id"],
            &[Param::Text(name.to_owned()), Param::Int(version)],
        )
        .await?;
        Ok(skips
            .iter()
            .filter_map(|s| Uuid::parse_str(&s.event_id).ok())
            .collect())
    }
}

/// Every event after `after` up to the horizon of one query ([`reader::stream_after`]),
/// decoded, in batches of up to [`REBUILD_BATCH`]. Reading and decoding each run ahead on
/// a task of their own. An event that cannot be decoded ends its batch (the events
/// before it come with it) and the stream goes on after it: a projection that skipped
/// it is not held up. The stream stops at the first read error, which it yields.
fn read_ahead(
    db: Database,
    after: Cursor,
) -> (
    JoinHandle<()>,
    tokio::sync::mpsc::Receiver<Result<DecodedBatch, ProjectionError>>,
) {
    let mut raw = reader::stream_after(&db, after, REBUILD_BATCH as usize);
    let (sender, decoded) = tokio::sync::mpsc::channel(2);
    let decoding = tokio::spawn(async move {
        while let Some(batch) = raw.recv().await {
            let entries = match batch {
                Ok(entries) => entries,
                Err(e) => {
                    let _ = sender.send(Err(e.into())).await;
                    return;
                }
            };
            let mut events = Vec::with_capacity(entries.len());
            for entry in entries {
                let (at, event_id) = (entry.cursor, entry.event_id);
                match Envelope::decode(entry) {
                    Ok(event) => events.push(event),
                    Err(e) => {
                        let cut = DecodedBatch {
                            events: std::mem::take(&mut events),
                            undecodable: Some((at, event_id, e.to_string())),
                        };
                        if sender.send(Ok(cut)).await.is_err() {
                            return;
                        }
                    }
                }
            }
            let batch = DecodedBatch {
                events,
                undecodable: None,
            };
            if sender.send(Ok(batch)).await.is_err() {
                return;
            }
        }
    });
    (decoding, decoded)
}

/// The next rebuild batch after `after`, decoded up to the first event that cannot be.
async fn read_decoded(db: Database, after: Cursor) -> Result<DecodedBatch, ProjectionError> {
    let entries = reader::read_after(&db, after, REBUILD_BATCH).await?;
    let mut events = Vec::with_capacity(entries.len());
    for entry in entries {
        let (at, event_id) = (entry.cursor, entry.event_id);
        match Envelope::decode(entry) {
            Ok(event) => events.push(event),
            Err(e) => {
                return Ok(DecodedBatch {
                    events,
                    undecodable: Some((at, event_id, e.to_string())),
                })
            }
        }
    }
    Ok(DecodedBatch {
        events,
        undecodable: None,
    })
}

/// A projection with a rebuild to run in this pass.
struct Pending {
    projection: Arc<dyn Projection>,
    generation: i64,
    /// Events skipped under this code version: skipped again.
    skips: Arc<HashSet<Uuid>>,
}

/// Why a replay stopped for one projection.
enum Failure {
    /// The batch after `after` failed, event not known yet.
    Batch { after: Cursor, error: String },
    /// This event cannot be applied.
    Event {
        at: Cursor,
        event_id: Uuid,
        error: String,
    },
}

/// A batch of the log, decoded; it ends early at an event that cannot be.
struct DecodedBatch {
    events: Vec<Envelope>,
    undecodable: Option<(Cursor, Uuid, String)>,
}

impl DecodedBatch {
    fn last_cursor(&self) -> Option<Cursor> {
        match &self.undecodable {
            Some((at, _, _)) => Some(*at),
            None => self.events.last().map(|e| e.entry.cursor),
        }
    }
}
