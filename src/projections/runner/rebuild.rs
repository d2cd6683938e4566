//! Blue/green rebuilds: a pass streams the log once into memory for every projection
//! with a pending rebuild, writes each view into generation N+1 (indexes built after
//! the load), catches it up with the tail and makes it the serving generation under the
//! projection's row lock, retiring the old one.
//!
//! It never writes to a serving generation, and never runs a rebuild requested for
//! another code version (that is another process's to run).

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::row::{load_row, lock_row};
use super::{now, Projections, RunnerError, POLL};
use crate::projections::{Envelope, MemoryTables, Projection, ProjectionError, View, ViewStore};
use crate::store::reader::{self, Cursor};
use crate::store::views::{physical, Param, Tx};
use crate::store::{Database, StoreError};

/// Events per rebuild batch: bigger bites than a live one.
const REBUILD_BATCH: i64 = 5_000;

impl Projections {
    /// Runs a projection until no rebuild is under way (for `orderlog projections
    /// rebuild`). Returns at once when none is.
    pub async fn finish_rebuild(&self, name: &str) -> Result<(), RunnerError> {
        self.find(name)?;
        while load_row(&self.db, name).await?.rebuild.is_some() {
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
        Ok(())
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
    /// each view is written once when it has caught up. Returns false when there was
    /// nothing to rebuild.
    async fn rebuild_pass(&self) -> Result<bool, ProjectionError> {
        let mut pending = Vec::new();
        for projection in self.list.iter() {
            let row = load_row(&self.db, projection.name()).await?;
            if let Some((generation, version, _)) = row.rebuild {
                if version == projection.version() {
                    pending.push((projection.clone(), generation));
                }
            }
        }
        if pending.is_empty() {
            return Ok(false);
        }
        // Start from empty tables: a pass that crashed may have left a partial flush.
        // They get their keys and indexes after the flush, in the switch.
        for (projection, generation) in &pending {
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
        let started = std::time::Instant::now();
        let mut views: Vec<Option<View>> = pending
            .iter()
            .map(|(projection, generation)| {
                Some(View {
                    store: ViewStore::Memory(MemoryTables::default()),
                    projection: projection.name(),
                    generation: *generation,
                })
            })
            .collect();
        let mut cursor = Cursor::START;
        let mut events_read = 0usize;
        // Three stages side by side: the log streams in (one query), the next batch is
        // decoded, and this one is applied to every view.
        let (reading, mut decoded) = read_ahead(self.db.clone(), cursor);
        let outcome: Result<(), ProjectionError> = async {
            while let Some(events) = decoded.recv().await {
                let events = events?;
                let Some(last) = events.last() else { continue };
                cursor = last.entry.cursor;
                events_read += events.len();
                let events = Arc::new(events);
                let tasks: Vec<_> = pending
                    .iter()
                    .zip(views.iter_mut())
                    .map(|((projection, _), view)| {
                        let projection = projection.clone();
                        let events = events.clone();
                        let mut view = view.take().expect("a view per rebuilding projection");
                        tokio::spawn(async move {
                            let result = projection.apply(&mut view, &events).await;
                            (view, result)
                        })
                    })
                    .collect();
                for (slot, task) in views.iter_mut().zip(tasks) {
                    let (view, result) =
                        task.await.map_err(|e| StoreError::Corrupt(e.to_string()))?;
                    result?;
                    *slot = Some(view);
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
        // Each view is written and switched in its own transaction, side by side.
        let switches: Vec<_> = pending
            .into_iter()
            .zip(views)
            .filter_map(|((projection, generation), view)| {
                let this = self.clone();
                let view = view?;
                Some(tokio::spawn(async move {
                    this.switch(&projection, generation, view, cursor).await
                }))
            })
            .collect();
        for switch in switches {
            switch
                .await
                .map_err(|e| StoreError::Corrupt(e.to_string()))??;
        }
        Ok(true)
    }

    /// Catches a rebuilt view up with the tail of the log, then writes it and makes it
    /// the serving generation under the projection's row lock.
    async fn switch(
        &self,
        projection: &Arc<dyn Projection>,
        generation: i64,
        mut view: View,
        mut at: Cursor,
    ) -> Result<(), ProjectionError> {
        let name = projection.name();
        // Events appended meanwhile: the live runner takes over from `at` after the
        // switch, so this only shortens its catch-up, and needs no lock.
        loop {
            let tail = read_decoded(self.db.clone(), at).await?;
            let Some(last) = tail.last() else { break };
            at = last.entry.cursor;
            projection.apply(&mut view, &tail).await?;
        }
        // One connection per switch, so switches side by side cannot starve the pool.
        let mut tx = Tx::begin(&self.db).await?;
        let locked = lock_row(&mut tx, name).await?;
        if locked.rebuild.map(|r| r.0) != Some(generation) {
            // Restarted or finished elsewhere meanwhile.
            return Ok(());
        }
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
}

/// Every event after `after` up to the horizon of one query ([`reader::stream_after`]),
/// decoded, in batches of [`REBUILD_BATCH`]. Reading and decoding each run ahead on a
/// task of their own; the stream stops at the first error, which it yields.
fn read_ahead(
    db: Database,
    after: Cursor,
) -> (
    JoinHandle<()>,
    tokio::sync::mpsc::Receiver<Result<Vec<Envelope>, ProjectionError>>,
) {
    let mut raw = reader::stream_after(&db, after, REBUILD_BATCH as usize);
    let (sender, decoded) = tokio::sync::mpsc::channel(2);
    let decoding = tokio::spawn(async move {
        while let Some(batch) = raw.recv().await {
            let events = batch
                .map_err(ProjectionError::from)
                .and_then(|entries| entries.into_iter().map(Envelope::decode).collect());
            let failed = events.is_err();
            if sender.send(events).await.is_err() || failed {
                return;
            }
        }
    });
    (decoding, decoded)
}

/// The next rebuild batch after `after`, decoded.
async fn read_decoded(db: Database, after: Cursor) -> Result<Vec<Envelope>, ProjectionError> {
    let entries = reader::read_after(&db, after, REBUILD_BATCH).await?;
    entries.into_iter().map(Envelope::decode).collect()
}
