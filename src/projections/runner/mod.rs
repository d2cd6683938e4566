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
//! log while the current one keeps answering queries and following the log; once the
//! new one has caught up with it, the switch and the checkpoint move in one transaction
//! under the row lock, and the old tables are dropped shortly after (queries already
//! running on them finish first). A rebuild that fails is retried like a live batch,
//! then stops at the failing event (its own error and event, in the row's rebuild
//! columns) until an operator retries it or skips the event. A projection whose code
//! version differs from its stored version is rebuilt at start.
//!
//! This module owns the set of projections ([`Projections`]), their registration at
//! start, the tasks that run them and the checkpoints they publish; the work itself
//! lives beside it: `live` (the group applying batches to serving generations),
//! `rebuild` (generation N+1 and its switch), `control` (what an operator asks for),
//! `status` (what is shown) and `row` (the stored row of each projection). It never
//! applies events itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use hdrhistogram::Histogram;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Envelope, Projection, ProjectionError};
use crate::store::reader::{Cursor, LogSignal};
use crate::store::views::{fixed_time, physical, Param, Tx};
use crate::store::{Database, StoreError};
use row::load_row;

mod control;
mod live;
mod rebuild;
mod row;
mod status;

pub use status::{FailedEvent, LagSummary, RebuildProgress, Status};

/// The slow poll behind the wake-up signal.
const POLL: Duration = Duration::from_secs(1);

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
    #[error(
        "the rebuild of `{name}` failed at position {position} (event {event_id}): {error}; \
         retry it after a fix, or skip the event"
    )]
    RebuildFailed {
        name: String,
        position: i64,
        event_id: String,
        error: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
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
        let live = match &self.db {
            // The live group holds SQLite's write lock for every batch: on the writers'
            // thread, beside the event writer (`store::spawn_sqlite_writer`).
            Database::Sqlite(_) => crate::store::spawn_sqlite_writer(move |dropped| async move {
                tokio::select! {
                    _ = live.run_live(live_shutdown) => {}
                    _ = dropped.cancelled() => {}
                }
            }),
            Database::Postgres(_) => {
                tokio::spawn(async move { live.run_live(live_shutdown).await })
            }
        };
        vec![
            live,
            tokio::spawn(async move { rebuilds.run_rebuilds(shutdown).await }),
        ]
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

fn now() -> String {
    fixed_time::format(&Utc::now())
}
