//! Runs every projection over the global log, exactly once per event.
//!
//! The live projections move together: a step reads one batch after the lowest of
//! their checkpoints and decodes it once; then each projection, side by side, locks its
//! row, checks nobody moved its checkpoint, applies its share of the batch to its
//! active generation of tables and advances the checkpoint, in one transaction of its
//! own. A crash anywhere before a commit leaves that view and its checkpoint as they
//! were. One read per batch keeps the database's work small; transactions side by side
//! keep a batch as short as the slowest projection, and the lag low.
//!
//! Failures are contained: a projection whose batch fails leaves the group, and on a
//! task of its own the batch is retried with backoff, then narrowed to the failing
//! event; the events before it are applied, and the projection stops with that event
//! and the error recorded, while the others go on. An operator retries it after a fix
//! or skips the event (the skip is recorded).
//!
//! Rebuilds are blue/green: a new generation of tables is filled from the start of the
//! log while the current one keeps answering queries; once caught up, the switch and
//! the checkpoint move in one transaction, and the old tables are dropped shortly after
//! (queries already running on them finish first). A projection whose code version
//! differs from its stored version is rebuilt at start.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Envelope, MemoryTables, Projection, ProjectionError, View, ViewStore};
use crate::store::reader::{self, Cursor, LogEntry, LogSignal, LookPast};
use crate::store::views::{fixed_time, physical, Param, Tx};
use crate::store::{Database, StoreError};

/// Events per live batch; rebuilds take bigger bites.
const LIVE_BATCH: i64 = 500;
const REBUILD_BATCH: i64 = 5_000;
/// The slow poll behind the wake-up signal.
const POLL: Duration = Duration::from_secs(1);
/// Attempts at a failing batch before narrowing it down to the failing event.
const ATTEMPTS: u32 = 4;
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// How long retired tables stay for queries that started before a switch.
const RETIRE_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// A test-only way to make a projection fail on chosen events, as a crash or a bug
/// would. Returns true to fail.
pub type FaultHook = Arc<dyn Fn(&str, &Envelope) -> bool + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("no projection is named `{0}`")]
    Unknown(String),
    #[error("projection `{name}` is {state}; {action} needs it {needed}")]
    WrongState {
        name: String,
        state: String,
        action: &'static str,
        needed: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
}

/// The stored row of one projection.
#[derive(Debug, Clone, PartialEq)]
struct Row {
    version: i64,
    generation: i64,
    cursor: Cursor,
    status: String,
    last_error: Option<String>,
    failed: Option<(Cursor, String)>,
    rebuild: Option<(i64, i64, Cursor)>,
    retired: Option<i64>,
    updated_at: DateTime<Utc>,
}

/// What `GET /v1/admin/projections` and `orderlog projections list` show.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub name: &'static str,
    pub version: i64,
    pub code_version: i64,
    pub generation: i64,
    /// `running`, `rebuilding`, `stopped` or `failed`.
    pub state: String,
    pub checkpoint: Cursor,
    pub lag_events: i64,
    pub lag_seconds: f64,
    pub last_error: Option<String>,
    pub failed_event: Option<FailedEvent>,
    pub skipped_events: i64,
    pub rebuild: Option<RebuildProgress>,
    /// Since this process started: how long events took from being recorded in the log
    /// to being applied to this view (committed).
    pub apply_lag: LagSummary,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LagSummary {
    pub events: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct FailedEvent {
    pub position: i64,
    pub event_id: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct RebuildProgress {
    pub generation: i64,
    pub version: i64,
    pub checkpoint: Cursor,
}

/// The set of projections, shared by the runners, the API and the CLI.
#[derive(Clone)]
pub struct Projections {
    db: Database,
    list: Arc<Vec<Arc<dyn Projection>>>,
    checkpoints: Arc<HashMap<&'static str, watch::Sender<Cursor>>>,
    /// Apply lag per projection, in microseconds.
    lags: Arc<HashMap<&'static str, Mutex<Histogram<u64>>>>,
    signal: LogSignal,
    /// Wakes the rebuilder: it does not follow the log's signal, which fires on every
    /// append, while rebuild requests are rare.
    rebuild_requested: Arc<tokio::sync::Notify>,
    fault: Option<FaultHook>,
}

impl Projections {
    pub fn new(
        db: Database,
        list: Vec<Arc<dyn Projection>>,
        signal: LogSignal,
        fault: Option<FaultHook>,
    ) -> Self {
        let checkpoints = list
            .iter()
            .map(|p| (p.name(), watch::channel(Cursor::START).0))
            .collect();
        let lags = list
            .iter()
            .map(|p| {
                let histogram = Histogram::new_with_bounds(1, 3_600_000_000, 3)
                    .expect("static histogram bounds are valid");
                (p.name(), Mutex::new(histogram))
            })
            .collect();
        Self {
            db,
            list: Arc::new(list),
            checkpoints: Arc::new(checkpoints),
            lags: Arc::new(lags),
            signal,
            rebuild_requested: Arc::default(),
            fault,
        }
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.list.iter().map(|p| p.name()).collect()
    }

    fn find(&self, name: &str) -> Result<&Arc<dyn Projection>, RunnerError> {
        self.list
            .iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| RunnerError::Unknown(name.to_owned()))
    }

    /// Registers new projections (their first generation is built from the log by the
    /// runner) and starts a rebuild for each whose code version changed.
    pub async fn init(&self) -> Result<(), RunnerError> {
        for projection in self.list.iter() {
            let name = projection.name();
            let mut tx = Tx::begin(&self.db).await?;
            let inserted = tx
                .execute(
                    "INSERT INTO projections (name, version, generation, updated_at)
                     VALUES ($1, $2, 1, $3) ON CONFLICT (name) DO NOTHING",
                    &[
                        Param::Text(name.to_owned()),
                        Param::Int(projection.version()),
                        Param::Text(now()),
                    ],
                )
                .await?;
            if inserted == 1 {
                for table in projection.tables() {
                    tx.create_table(&physical(name, 1, table.name), table)
                        .await?;
                }
            }
            tx.commit().await?;
            let row = load_row(&self.db, name).await?;
            let code = projection.version();
            let rebuilding_to = row.rebuild.map(|(_, version, _)| version);
            if row.version != code && rebuilding_to != Some(code) {
                tracing::info!(
                    projection = name,
                    stored = row.version,
                    code,
                    "projection version changed; rebuilding"
                );
                self.rebuild(name).await?;
            }
            self.publish(name, row.cursor);
        }
        Ok(())
    }

    /// Starts the live runner and the rebuilder; they stop with `shutdown`.
    pub fn spawn(&self, shutdown: CancellationToken) -> Vec<JoinHandle<()>> {
        let live = self.clone();
        let live_shutdown = shutdown.clone();
        let rebuilds = self.clone();
        vec![
            tokio::spawn(async move { live.run_live(live_shutdown).await }),
            tokio::spawn(async move { rebuilds.run_rebuilds(shutdown).await }),
        ]
    }

    /// Runs the live projections until `shutdown`: every batch of the log is read and
    /// decoded once, and applied by each projection in its own transaction, side by
    /// side. A projection whose batch fails leaves the group: a task of its own retries
    /// it with backoff (then stops it at the failing event) while the others go on, and
    /// it rejoins once that is settled.
    async fn run_live(&self, shutdown: CancellationToken) {
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
    async fn run_rebuilds(&self, shutdown: CancellationToken) {
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
            let mut row = match known.remove(name) {
                Some(row) => row,
                None => load_row(&self.db, name).await?,
            };
            if let Some(retired) = row.retired {
                if Utc::now() - row.updated_at > RETIRE_AFTER {
                    self.drop_retired(projection, retired).await?;
                    row.retired = None;
                }
            }
            // A rebuilding projection belongs to the rebuilder until its switch; a
            // stopped or failed one waits for an operator.
            if row.rebuild.is_none()
                && row.status == "running"
                && row.version == projection.version()
            {
                live.push((projection.clone(), row));
            }
        }
        let Some(from) = live.iter().map(|(_, row)| row.cursor).min() else {
            return Ok(false);
        };
        let entries = reader::read_after(&self.db, from, LIVE_BATCH).await?;
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
        let outcomes = futures::future::join_all(work.iter().map(|(projection, row, mine)| {
            self.apply_batch(projection, (row.generation, row.version), row.cursor, mine)
        }))
        .await;
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
    fn injected_fault(&self, name: &str, events: &[Envelope]) -> Result<(), ProjectionError> {
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
        let name = projection.name();
        let Some(last) = events.last().map(|e| e.entry.cursor) else {
            return Ok(Applied::Moved);
        };
        let mut tx = Tx::begin(&self.db).await?;
        let _look_past = tx.derived_only().await?.map(LookPast::register);
        let locked = lock_rows(&mut tx, &[name]).await?;
        let (generation, version) = target;
        let matches = locked.get(name).is_some_and(|locked| {
            locked.generation == generation
                && locked.cursor == expected
                && locked.status == "running"
                && locked.version == version
                && locked.rebuild.is_none()
        });
        if !matches {
            // Another runner, a skip or a switch moved the projection: start over.
            return Ok(Applied::Moved);
        }
        let mut view = View {
            store: ViewStore::Tx(tx),
            projection: name,
            generation,
        };
        projection.apply(&mut view, events).await?;
        self.injected_fault(name, events)?;
        let ViewStore::Tx(mut tx) = view.store else {
            return Err(StoreError::Corrupt("a live view must be in a transaction".into()).into());
        };
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

    fn record_lag(&self, name: &str, recorded: &[(Cursor, DateTime<Utc>)], upto: Cursor) {
        let Some(histogram) = self.lags.get(name) else {
            return;
        };
        let now = Utc::now();
        let mut histogram = histogram.lock().unwrap_or_else(|e| e.into_inner());
        for (_, at) in recorded.iter().filter(|(c, _)| *c <= upto) {
            let micros = (now - *at).num_microseconds().unwrap_or(0).max(1) as u64;
            histogram.saturating_record(micros);
        }
    }

    fn lag_summary(&self, name: &str) -> LagSummary {
        let Some(histogram) = self.lags.get(name) else {
            return LagSummary::default();
        };
        let histogram = histogram.lock().unwrap_or_else(|e| e.into_inner());
        if histogram.is_empty() {
            return LagSummary::default();
        }
        LagSummary {
            events: histogram.len(),
            p50_ms: histogram.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
            max_ms: histogram.max() as f64 / 1000.0,
        }
    }

    fn publish(&self, name: &str, cursor: Cursor) {
        if let Some(sender) = self.checkpoints.get(name) {
            sender.send_if_modified(|current| {
                let newer = cursor > *current;
                if newer {
                    *current = cursor;
                }
                newer
            });
        }
    }

    /// Starts a blue/green rebuild into a fresh generation of tables.
    pub async fn rebuild(&self, name: &str) -> Result<(), RunnerError> {
        let projection = self.find(name)?.clone();
        let mut tx = Tx::begin(&self.db).await?;
        let row = lock_row(&mut tx, name).await?;
        let generation = row
            .generation
            .max(row.rebuild.map_or(0, |r| r.0))
            .max(row.retired.unwrap_or(0))
            + 1;
        if let Some((old, _, _)) = row.rebuild {
            for table in projection.tables() {
                tx.drop_table(&physical(name, old, table.name)).await?;
            }
        }
        for table in projection.tables() {
            tx.create_table(&physical(name, generation, table.name), table)
                .await?;
        }
        tx.execute(
            "UPDATE projections
                SET rebuild_generation = $2, rebuild_version = $3, rebuild_cursor_tx = 0,
                    rebuild_cursor_position = 0, updated_at = $4
              WHERE name = $1",
            &[
                Param::Text(name.to_owned()),
                Param::Int(generation),
                Param::Int(projection.version()),
                Param::Text(now()),
            ],
        )
        .await?;
        tx.commit().await?;
        self.rebuild_requested.notify_one();
        Ok(())
    }

    /// Puts a failed or stopped projection back to work, from where it stopped.
    pub async fn retry(&self, name: &str) -> Result<(), RunnerError> {
        self.find(name)?;
        self.transition(
            name,
            &["failed", "stopped"],
            "retry",
            "failed or stopped",
            "running",
        )
        .await
    }

    /// Stops a running projection; its view stays as it is until `retry`.
    pub async fn stop(&self, name: &str) -> Result<(), RunnerError> {
        self.find(name)?;
        self.transition(name, &["running"], "stop", "running", "stopped")
            .await
    }

    async fn transition(
        &self,
        name: &str,
        from: &[&str],
        action: &'static str,
        needed: &'static str,
        to: &str,
    ) -> Result<(), RunnerError> {
        let mut tx = Tx::begin(&self.db).await?;
        let row = lock_row(&mut tx, name).await?;
        if !from.contains(&row.status.as_str()) {
            return Err(RunnerError::WrongState {
                name: name.to_owned(),
                state: row.status,
                action,
                needed,
            });
        }
        tx.execute(
            "UPDATE projections
                SET status = $2, last_error = NULL, failed_tx = NULL, failed_position = NULL,
                    failed_event_id = NULL, updated_at = $3
              WHERE name = $1",
            &[
                Param::Text(name.to_owned()),
                Param::Text(to.to_owned()),
                Param::Text(now()),
            ],
        )
        .await?;
        tx.commit().await?;
        self.signal.notify();
        Ok(())
    }

    /// Skips the event a failed projection stopped on, records the skip, and resumes.
    pub async fn skip(&self, name: &str) -> Result<(), RunnerError> {
        self.find(name)?;
        let mut tx = Tx::begin(&self.db).await?;
        let row = lock_row(&mut tx, name).await?;
        let (Some((cursor, event_id)), "failed") = (row.failed.clone(), row.status.as_str()) else {
            return Err(RunnerError::WrongState {
                name: name.to_owned(),
                state: row.status,
                action: "skip",
                needed: "failed",
            });
        };
        tx.execute(
            "INSERT INTO projection_skips (name, event_id, position, error, skipped_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[
                Param::Text(name.to_owned()),
                Param::Text(event_id),
                Param::Int(cursor.position),
                Param::Text(row.last_error.unwrap_or_default()),
                Param::Text(now()),
            ],
        )
        .await?;
        tx.execute(
            "UPDATE projections
                SET status = 'running', cursor_tx = $2, cursor_position = $3, last_error = NULL,
                    failed_tx = NULL, failed_position = NULL, failed_event_id = NULL,
                    updated_at = $4
              WHERE name = $1",
            &[
                Param::Text(name.to_owned()),
                Param::Int(cursor.transaction_id),
                Param::Int(cursor.position),
                Param::Text(now()),
            ],
        )
        .await?;
        tx.commit().await?;
        self.publish(name, cursor);
        self.signal.notify();
        Ok(())
    }

    pub async fn status(&self) -> Result<Vec<Status>, RunnerError> {
        let mut out = Vec::with_capacity(self.list.len());
        for projection in self.list.iter() {
            out.push(self.status_of(projection).await?);
        }
        Ok(out)
    }

    pub async fn status_one(&self, name: &str) -> Result<Status, RunnerError> {
        let projection = self.find(name)?.clone();
        self.status_of(&projection).await
    }

    async fn status_of(&self, projection: &Arc<dyn Projection>) -> Result<Status, RunnerError> {
        let name = projection.name();
        let row = load_row(&self.db, name).await?;
        let (lag_events, lag_seconds) = reader::lag(&self.db, row.cursor).await?;
        #[derive(serde::Deserialize)]
        struct Count {
            n: i64,
        }
        let skipped: Vec<Count> = crate::store::views::query(
            &self.db,
            "SELECT count(*) AS n FROM projection_skips WHERE name = $1",
            &["n"],
            &[Param::Text(name.to_owned())],
        )
        .await?;
        let skipped = skipped.first().map_or(0, |c| c.n);
        let state = if row.rebuild.is_some() {
            "rebuilding".to_owned()
        } else {
            row.status.clone()
        };
        Ok(Status {
            name,
            version: row.version,
            code_version: projection.version(),
            generation: row.generation,
            state,
            checkpoint: row.cursor,
            lag_events,
            lag_seconds,
            last_error: row.last_error,
            failed_event: row.failed.map(|(cursor, event_id)| FailedEvent {
                position: cursor.position,
                event_id,
            }),
            skipped_events: skipped,
            rebuild: row
                .rebuild
                .map(|(generation, version, checkpoint)| RebuildProgress {
                    generation,
                    version,
                    checkpoint,
                }),
            apply_lag: self.lag_summary(name),
        })
    }

    /// The physical name of a projection's table in its serving generation.
    pub async fn table(&self, projection: &str, table: &str) -> Result<String, StoreError> {
        let row = load_row(&self.db, projection).await?;
        Ok(physical(projection, row.generation, table))
    }

    /// Waits until each named projection has applied `target`, or `timeout` passes.
    /// Returns the names that did not catch up in time.
    pub async fn wait_for(
        &self,
        names: &[&'static str],
        target: Cursor,
        timeout: Duration,
    ) -> Vec<&'static str> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut lagging = Vec::new();
        for name in names {
            let Some(sender) = self.checkpoints.get(name) else {
                continue;
            };
            let mut rx = sender.subscribe();
            let reached = tokio::time::timeout_at(deadline, rx.wait_for(|c| *c >= target)).await;
            if !matches!(reached, Ok(Ok(_))) {
                lagging.push(*name);
            }
        }
        lagging
    }
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

fn now() -> String {
    fixed_time::format(&Utc::now())
}

const ROW_COLUMNS: &str =
    "name, version, generation, cursor_tx, cursor_position, status, last_error,
    failed_tx, failed_position, failed_event_id, rebuild_generation, rebuild_version,
    rebuild_cursor_tx, rebuild_cursor_position, retired_generation, updated_at";

/// Locks the projection's row for the rest of `tx` and returns it: `FOR UPDATE` on
/// PostgreSQL; on SQLite the transaction already holds the writer lock.
async fn lock_row(tx: &mut Tx, name: &str) -> Result<Row, StoreError> {
    let lock = if tx.is_postgres() { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT {ROW_COLUMNS} FROM projections WHERE name = $1{lock}");
    let rows = tx
        .select_json(&sql, ROW_FIELDS, &[Param::Text(name.to_owned())])
        .await?;
    to_row(name, rows)
}

/// Locks the rows of `names` for the rest of `tx`, skipping rows someone else holds
/// right now (a switch, an operator's action): the live group never waits for them.
async fn lock_rows(tx: &mut Tx, names: &[&str]) -> Result<HashMap<String, Row>, StoreError> {
    let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
    let lock = if tx.is_postgres() {
        " ORDER BY name FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let sql = format!(
        "SELECT {ROW_COLUMNS} FROM projections WHERE name IN ({}){lock}",
        placeholders.join(", ")
    );
    let params: Vec<Param> = names.iter().map(|n| Param::Text((*n).to_owned())).collect();
    let rows: Vec<RowOut> = tx.select_json(&sql, ROW_FIELDS, &params).await?;
    rows.into_iter()
        .map(|row| {
            let name = row.name.clone();
            Ok((name.clone(), to_row(&name, vec![row])?))
        })
        .collect()
}

/// Reads the row outside any transaction (no lock: a snapshot to plan the next step).
async fn load_row(db: &Database, name: &str) -> Result<Row, StoreError> {
    let sql = format!("SELECT {ROW_COLUMNS} FROM projections WHERE name = $1");
    let rows =
        crate::store::views::query(db, &sql, ROW_FIELDS, &[Param::Text(name.to_owned())]).await?;
    to_row(name, rows)
}

const ROW_FIELDS: &[&str] = &[
    "name",
    "version",
    "generation",
    "cursor_tx",
    "cursor_position",
    "status",
    "last_error",
    "failed_tx",
    "failed_position",
    "failed_event_id",
    "rebuild_generation",
    "rebuild_version",
    "rebuild_cursor_tx",
    "rebuild_cursor_position",
    "retired_generation",
    "updated_at",
];

fn to_row(name: &str, rows: Vec<RowOut>) -> Result<Row, StoreError> {
    let row = rows
        .into_iter()
        .next()
        .ok_or_else(|| StoreError::Corrupt(format!("projection `{name}` is not registered")))?;
    let cursor = |tx: Option<i64>, position: Option<i64>| {
        position.map(|position| Cursor {
            transaction_id: tx.unwrap_or(0),
            position,
        })
    };
    Ok(Row {
        version: row.version,
        generation: row.generation,
        cursor: Cursor {
            transaction_id: row.cursor_tx,
            position: row.cursor_position,
        },
        status: row.status,
        last_error: row.last_error,
        failed: cursor(row.failed_tx, row.failed_position).zip(row.failed_event_id),
        rebuild: match (row.rebuild_generation, row.rebuild_version) {
            (Some(g), Some(v)) => Some((
                g,
                v,
                cursor(row.rebuild_cursor_tx, row.rebuild_cursor_position).unwrap_or_default(),
            )),
            _ => None,
        },
        retired: row.retired_generation,
        updated_at: DateTime::parse_from_rfc3339(&row.updated_at)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|_| Utc::now()),
    })
}

#[derive(serde::Deserialize)]
struct RowOut {
    name: String,
    version: i64,
    generation: i64,
    cursor_tx: i64,
    cursor_position: i64,
    status: String,
    last_error: Option<String>,
    failed_tx: Option<i64>,
    failed_position: Option<i64>,
    failed_event_id: Option<String>,
    rebuild_generation: Option<i64>,
    rebuild_version: Option<i64>,
    rebuild_cursor_tx: Option<i64>,
    rebuild_cursor_position: Option<i64>,
    retired_generation: Option<i64>,
    updated_at: String,
}
