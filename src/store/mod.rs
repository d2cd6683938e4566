//! The event log and everything stored beside it, on PostgreSQL or SQLite.
//!
//! This module owns the connection pools, the schema (applied from `migrations/`), the
//! command path that appends events ([`commands`], with group commit in [`writer`]), the reads of stored events
//! ([`log`]), idempotency records ([`idempotency`]) and secrets sealed at rest
//! ([`sealed`], keys from [`key_source`]). It never decides a business rule:
//! aggregates do. It never updates or deletes an event: the database refuses that anyway.

pub mod commands;
mod copy_out;
pub mod export;
pub mod files;
pub mod history;
pub mod idempotency;
pub mod key_source;
pub mod log;
pub mod metadata;
pub mod reader;
pub mod sealed;
pub mod sources;
pub mod vault;
pub mod views;
pub mod writer;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// The one error type of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("could not apply the schema migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("could not create the directory for the SQLite file `{path}`: {source}")]
    CreateDirectory {
        path: String,
        source: std::io::Error,
    },
    #[error("a stored row could not be read: {0}")]
    Corrupt(String),
    /// A write through the group commit (`writer`) failed.
    #[error(transparent)]
    Write(#[from] writer::WriteError),
}

/// The database is out of connections or refusing new ones: a request can succeed
/// later, so callers say "come back" (503) rather than "we failed" (500).
pub fn is_saturation(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut => true,
        sqlx::Error::Database(e) => matches!(
            e.code().as_deref(),
            // too_many_connections, cannot_connect_now
            Some("53300") | Some("57P03")
        ),
        _ => false,
    }
}

/// Where the log lives. Chosen once, from `ORDERLOG_DATABASE_URL`.
#[derive(Clone, Debug)]
pub enum Database {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

async fn sqlite_pool(options: SqliteConnectOptions, size: u32) -> Result<SqlitePool, StoreError> {
    Ok(SqlitePoolOptions::new()
        .max_connections(size)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?)
}

/// A turn at an SQLite database's single write lock, one per database file in this
/// process, handed out in order. Every write transaction of the engine's own (the event
/// writer's, the views') takes one first: left to SQLite, writers that find the lock
/// taken sleep in its busy handler (up to 100 ms a time) and wake in no order, so under
/// load the views fell seconds behind the log while the lock stood idle between sleeps.
pub async fn sqlite_write_turn(pool: &SqlitePool) -> tokio::sync::OwnedMutexGuard<()> {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::{Arc, LazyLock, Mutex};
    type Turns = Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>;
    static TURNS: LazyLock<Turns> = LazyLock::new(Turns::default);
    let file = pool.connect_options().get_filename().to_path_buf();
    let turn = TURNS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry(file)
        .or_default()
        .clone();
    turn.lock_owned().await
}

/// Runs a task that takes SQLite write turns ([`sqlite_write_turn`]) on a thread of
/// its own, and returns a handle to it on the caller's runtime.
///
/// A task holding the write lock awaits every statement it runs; on the server's
/// runtime each of those wake-ups waited behind the request tasks (two cores, 64
/// connections), and the lock stood idle meanwhile: measured with the lock busy 98% of
/// the time, the server at 0.65 of its two cores. On a thread of their own the writers
/// run the moment their statement is done.
///
/// `task` is handed a token cancelled when the returned handle's task is dropped
/// unfinished (the caller's runtime ending, as a test's does), so that nothing outlives
/// the runtime that started it. Should the thread not start, the task runs on the
/// caller's runtime.
pub fn spawn_sqlite_writer<F>(
    task: impl FnOnce(tokio_util::sync::CancellationToken) -> F,
) -> tokio::task::JoinHandle<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    use std::sync::LazyLock;
    static WRITERS: LazyLock<Option<tokio::runtime::Handle>> =
        LazyLock::new(|| {
            let (handle, started) = std::sync::mpsc::channel();
            let thread = std::thread::Builder::new()
            .name("sqlite-writers".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => {
                        let _ = handle.send(Some(runtime.handle().clone()));
                        runtime.block_on(std::future::pending::<()>());
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not start the SQLite writers' runtime");
                        let _ = handle.send(None);
                    }
                }
            });
            match thread {
                Ok(_) => started.recv().ok().flatten(),
                Err(e) => {
                    tracing::warn!(error = %e, "could not start the SQLite writers' thread");
                    None
                }
            }
        });
    let stop = tokio_util::sync::CancellationToken::new();
    let future = task(stop.clone());
    let Some(writers) = WRITERS.as_ref() else {
        return tokio::spawn(future);
    };
    let running = writers.spawn(future);
    tokio::spawn(async move {
        let _stop = stop.drop_guard();
        let _ = running.await;
    })
}

/// Times in the tables the engine keeps besides the log (deliveries, tokens) are Unix
/// milliseconds, so that both backends compare them alike.
pub fn millis(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_millis(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

impl Database {
    /// Connects to `url` (`postgres://…` or `sqlite://…`). A SQLite file and its directory
    /// are created when missing, so the default needs no setup at all.
    pub async fn connect(url: &str, pool_size: u32) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                // WAL lets readers run beside the single writer; FULL makes each commit
                // durable before the client hears about it.
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Full)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true)
                // Deleted rows are zeroed, not left in free pages: an erased customer's
                // data keys (`vault`) must be gone from the file, not merely unlinked.
                .pragma("secure_delete", "ON")
                // A checkpoint runs in the commit that crosses the threshold, with the
                // write turn held; the hot pages (the log's last leaf, the checkpoints,
                // the views' rows) are copied back once per checkpoint however often
                // they were written. Every 10,000 pages (about 40 MB of WAL) rather than
                // SQLite's 1,000: measured +4% and +13% orders/s, same run.
                .pragma("wal_autocheckpoint", "10000");
            if let Some(parent) = options.get_filename().parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent).map_err(|source| {
                        StoreError::CreateDirectory {
                            path: options.get_filename().display().to_string(),
                            source,
                        }
                    })?;
                }
            }
            Ok(Database::Sqlite(sqlite_pool(options, pool_size).await?))
        } else {
            let options = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(pool_size)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            Ok(Database::Postgres(pool))
        }
    }

    /// The connections the views are written through. On SQLite their commits do not
    /// wait for the disk (`synchronous=NORMAL`): a view and its checkpoint commit
    /// together, so a crash can only lose both, and the events (written through the
    /// other connections, `FULL`) are applied again from the older checkpoint; as the
    /// views do on PostgreSQL (`Tx::derived_only`). Only the projections use it: their
    /// views and checkpoints, and the operator's controls of them (rebuild, retry,
    /// skip). Those survive a process crash, as every commit does in WAL mode; an OS
    /// crash or power loss before the next event's commit (which flushes the shared
    /// WAL) can undo the last control, which the operator then asks for again.
    pub async fn for_views(&self, pool_size: u32) -> Result<Self, StoreError> {
        let Database::Sqlite(pool) = self else {
            return Ok(self.clone());
        };
        let options = (*pool.connect_options())
            .clone()
            .synchronous(SqliteSynchronous::Normal);
        Ok(Database::Sqlite(sqlite_pool(options, pool_size).await?))
    }

    /// Applies every migration not applied yet. Safe to run on every start.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Database::Postgres(pool) => sqlx::migrate!("./migrations/postgres").run(pool).await?,
            Database::Sqlite(pool) => sqlx::migrate!("./migrations/sqlite").run(pool).await?,
        }
        Ok(())
    }

    /// Moves what the WAL holds into the SQLite file and empties the WAL, so that pages
    /// freed (and zeroed, `secure_delete`) are not still held there in their old form.
    /// Nothing to do on PostgreSQL, whose dumps and readers never see dead rows. Readers
    /// in the way leave part of the WAL for the next checkpoint, which SQLite makes on
    /// its own.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        if let Database::Sqlite(pool) = self {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// Readiness: the database answers a trivial query.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Database::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop)?,
            Database::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop)?,
        }
        Ok(())
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Database::Postgres(_) => "postgres",
            Database::Sqlite(_) => "sqlite",
        }
    }

    pub async fn close(&self) {
        match self {
            Database::Postgres(pool) => pool.close().await,
            Database::Sqlite(pool) => pool.close().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exhausted_pool_is_saturation_and_a_bad_row_is_not() {
        assert!(is_saturation(&sqlx::Error::PoolTimedOut));
        assert!(!is_saturation(&sqlx::Error::RowNotFound));
        assert!(!is_saturation(&sqlx::Error::PoolClosed));
    }
}
