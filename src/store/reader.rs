//! The global log reader: every event of every aggregate, in commit order, from a cursor,
//! in batches. Projections, deliveries and the event stream read through it.
//!
//! On PostgreSQL an identity value is taken when a row is inserted, not when it commits,
//! so position 101 can be visible while 100 is still in flight. The reader therefore
//! orders by `(transaction_id, global_position)` and only reads rows whose transaction
//! is older than every transaction still running that may append events (the oldest
//! in the snapshot's in-progress list, looking past this process's projection batches,
//! which append nothing: [`LookPast`]): no row can ever appear behind its cursor. A long
//! transaction elsewhere holds readers back (that is lag) but never makes them skip. On SQLite the single writer commits positions in
//! order, and the position alone is the cursor.
//!
//! New events wake readers through [`LogSignal`]: the command path signals after each
//! commit in this process, and on PostgreSQL each process NOTIFYs `orderlog_events` of
//! its appends (throttled) and LISTENs for the others'. Readers still poll slowly, in
//! case a signal is lost.

use std::cmp::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::StreamExt;
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgListener, PgPool};
use sqlx::sqlite::SqlitePool;
use sqlx::Row;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{copy_out, Database, StoreError};
use crate::domain::upcast;

/// Where a reader is in the log: everything at or before it has been read.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct Cursor {
    /// The writing transaction's id on PostgreSQL; always 0 on SQLite.
    pub transaction_id: i64,
    pub position: i64,
}

impl Cursor {
    pub const START: Cursor = Cursor {
        transaction_id: 0,
        position: 0,
    };
}

impl Cursor {
    /// The cursor as clients see it (an SSE `id`, a `Last-Event-ID`): `tx-position`.
    pub fn token(&self) -> String {
        format!("{}-{}", self.transaction_id, self.position)
    }

    /// Reads [`Cursor::token`] back; `None` for anything else.
    pub fn parse_token(raw: &str) -> Option<Cursor> {
        let (tx, position) = raw.trim().split_once('-')?;
        let cursor = Cursor {
            transaction_id: tx.parse().ok()?,
            position: position.parse().ok()?,
        };
        (cursor.transaction_id >= 0 && cursor.position >= 0).then_some(cursor)
    }
}

impl PartialOrd for Cursor {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Cursor {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.transaction_id, self.position).cmp(&(other.transaction_id, other.position))
    }
}

/// One event as stored: the one read type of the log, for every reader (projections,
/// deliveries, the stream, the API's history, replays). The payload and metadata stay the
/// JSON text stored: deliveries and the API send it on as it is, and each other reader
/// decodes what it needs, once. Projections pair it with its decoded event
/// (`projections::Envelope`), decoded once for all of them.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub cursor: Cursor,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    /// Raw JSON metadata, read only by those who ask ([`read_after_with_metadata`]):
    /// projections never need it, and skipping it keeps rebuilds fast.
    pub metadata: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

impl LogEntry {
    /// This entry at its event type's current version (`domain::upcast`): every reader
    /// of the log gets it so. A payload the upcaster cannot read is left as stored, for
    /// the reader's own decoding to refuse with the event's position, as it refuses any
    /// undecodable event.
    fn current(mut self) -> Self {
        match upcast::upcast(&self.event_type, &self.event_version, &self.payload) {
            None => {}
            Some(Ok((version, payload))) => {
                self.event_version = version.to_owned();
                self.payload = payload;
            }
            Some(Err(e)) => {
                tracing::warn!(event_id = %self.event_id, event_type = %self.event_type, version = %self.event_version, error = %e, "left as stored");
            }
        }
        self
    }
}

/// Up to `limit` events after `after`, in cursor order.
pub async fn read_after(
    db: &Database,
    after: Cursor,
    limit: i64,
) -> Result<Vec<LogEntry>, StoreError> {
    read(db, after, limit, false).await
}

/// As [`read_after`], with each event's metadata (deliveries pass its trace on).
pub async fn read_after_with_metadata(
    db: &Database,
    after: Cursor,
    limit: i64,
) -> Result<Vec<LogEntry>, StoreError> {
    read(db, after, limit, true).await
}

/// The transaction id below which every transaction that may still append events has
/// ended: the oldest one running, not counting those registered in [`LookPast`] (`$4`).
/// Each transaction below it has committed or aborted, or never appends events.
const HORIZON: &str = "SELECT least(
        pg_snapshot_xmax(s)::text::int8,
        (SELECT min(x::text::int8) FROM pg_snapshot_xip(s) AS x
          WHERE NOT x::text::int8 = ANY($4::int8[]))
    )::text::xid8
    FROM (SELECT pg_current_snapshot() AS s) AS snapshot";

/// This process's transactions that never append events (the live projections'
/// batches), registered while they run. Readers need not wait for them: only a
/// transaction that appends can commit an event below a cursor already read past. On
/// PostgreSQL a batch that locks rows holds the horizon back for its whole length, so
/// without this, every event committed meanwhile would wait for it, batch after batch.
///
/// Process-wide on purpose: whichever reader asks, these transactions append nothing.
pub struct LookPast(i64);

static LOOK_PAST: std::sync::Mutex<Vec<i64>> = std::sync::Mutex::new(Vec::new());

impl LookPast {
    /// Registers `transaction_id` until the returned guard is dropped. Only for a
    /// transaction that never appends events.
    pub fn register(transaction_id: i64) -> Self {
        look_past().push(transaction_id);
        Self(transaction_id)
    }

    fn current() -> Vec<i64> {
        look_past().clone()
    }
}

impl Drop for LookPast {
    fn drop(&mut self) {
        look_past().retain(|x| *x != self.0);
    }
}

fn look_past() -> std::sync::MutexGuard<'static, Vec<i64>> {
    LOOK_PAST.lock().unwrap_or_else(|e| e.into_inner())
}

async fn read(
    db: &Database,
    after: Cursor,
    limit: i64,
    with_metadata: bool,
) -> Result<Vec<LogEntry>, StoreError> {
    match db {
        Database::Postgres(pool) => {
            // `transaction_id` comes as it is stored: xid8's binary form is a big-endian
            // 64-bit integer, read below without the text round trip a cast would cost
            // per row. Columns are read by position, in this order.
            let metadata = if with_metadata {
                ", metadata::text"
            } else {
                ""
            };
            let sql = format!(
                "SELECT transaction_id, global_position, event_id, aggregate_type, aggregate_id,
                        sequence, event_type, event_version, payload::text, recorded_at{metadata}
                   FROM events
                  WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
                    AND transaction_id < ({HORIZON})
                  ORDER BY events.transaction_id, events.global_position
                  LIMIT $3"
            );
            let rows = sqlx::query(&sql)
                .bind(after.transaction_id.to_string())
                .bind(after.position)
                .bind(limit)
                .bind(LookPast::current())
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| postgres_entry(row, with_metadata))
                .collect()
        }
        Database::Sqlite(pool) => {
            let metadata = if with_metadata { "metadata" } else { "NULL" };
            let sql = format!(
                "SELECT global_position, event_id, aggregate_type, aggregate_id, sequence,
                        event_type, event_version, payload, {metadata} AS metadata, recorded_at
                   FROM events
                  WHERE global_position > $1
                  ORDER BY global_position
                  LIMIT $2"
            );
            let rows = sqlx::query(&sql)
                .bind(after.position)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.iter().map(sqlite_entry).collect()
        }
    }
}

/// Every event after `after` that a reader may see now, in cursor order, in batches of
/// `batch`, read ahead on a task of its own: for a reader that goes through the whole
/// log in one go (a rebuild). It is one query, so one snapshot and one horizon
/// (`pg_snapshot_xmin` at its start): it yields exactly what successive [`read_after`]
/// calls would have up to that horizon, without a round trip per batch. Events
/// committed later are left for a [`read_after`] from the last cursor it yielded.
/// Without metadata. The first error ends it; dropping the receiver stops the read.
pub fn stream_after(
    db: &Database,
    after: Cursor,
    batch: usize,
) -> mpsc::Receiver<Result<Vec<LogEntry>, StoreError>> {
    let (sender, receiver) = mpsc::channel(2);
    let db = db.clone();
    let batch = batch.max(1);
    tokio::spawn(async move {
        let read = match &db {
            Database::Postgres(pool) => copy_after(pool, after, batch, &sender).await,
            Database::Sqlite(pool) => sqlite_stream_after(pool, after, batch, &sender).await,
        };
        if let Err(e) = read {
            let _ = sender.send(Err(e)).await;
        }
    });
    receiver
}

type Batches = mpsc::Sender<Result<Vec<LogEntry>, StoreError>>;

/// Every event after `after` below one horizon, in log order, as a binary COPY: the
/// rebuild's read of the log, and with `metadata` (a last column) the export's.
pub(crate) fn copy_after_sql(after: Cursor, metadata: bool) -> String {
    // COPY takes no parameters: the cursor's two integers are formatted in.
    format!(
        "COPY (SELECT transaction_id, global_position, event_id, aggregate_type, aggregate_id,
                      sequence, event_type, event_version, payload::text, recorded_at{}
                 FROM events
                WHERE (transaction_id, global_position) > ('{}'::xid8, {})
                  AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
                ORDER BY events.transaction_id, events.global_position)
         TO STDOUT (FORMAT binary)",
        if metadata { ", metadata::text" } else { "" },
        after.transaction_id,
        after.position
    )
}

/// [`stream_after`] on PostgreSQL, as a binary COPY: the same values as the row
/// protocol, without its per-row bookkeeping (see [`super::copy_out`]).
async fn copy_after(
    pool: &PgPool,
    after: Cursor,
    batch: usize,
    sender: &Batches,
) -> Result<(), StoreError> {
    let sql = copy_after_sql(after, false);
    let mut conn = pool.acquire().await?;
    let outcome = copy_batches(&mut conn, &sql, batch, sender).await;
    if !matches!(outcome, Ok(Copied::All)) {
        // Rows of the COPY may still be on their way: the connection is not reusable.
        conn.close_on_drop();
    }
    outcome.map(drop)
}

enum Copied {
    All,
    /// The receiver went away.
    Abandoned,
}

async fn copy_batches(
    conn: &mut sqlx::PgConnection,
    sql: &str,
    batch: usize,
    sender: &Batches,
) -> Result<Copied, StoreError> {
    let mut chunks = conn.copy_out_raw(sql).await?;
    let mut rows = copy_out::BinaryRows::default();
    let mut entries = Vec::with_capacity(batch);
    while let Some(chunk) = chunks.next().await {
        rows.feed(&chunk?, |fields| {
            entries.push(copy_entry(fields)?);
            Ok(())
        })?;
        if entries.len() >= batch {
            let full = std::mem::replace(&mut entries, Vec::with_capacity(batch));
            if sender.send(Ok(full)).await.is_err() {
                return Ok(Copied::Abandoned);
            }
        }
    }
    if !rows.finished() {
        return Err(StoreError::Corrupt(
            "the log's COPY stream ended early".into(),
        ));
    }
    if !entries.is_empty() && sender.send(Ok(entries)).await.is_err() {
        return Ok(Copied::Abandoned);
    }
    Ok(Copied::All)
}

/// A row of [`copy_after`]'s COPY, whose columns come in its SELECT's order.
fn copy_entry(fields: &copy_out::Fields<'_>) -> Result<LogEntry, StoreError> {
    use copy_out::{int8, text, timestamptz, uuid};
    let [transaction_id, position, event_id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, recorded_at] =
        fields[..]
    else {
        return Err(StoreError::Corrupt(format!(
            "a row of the log's COPY has {} fields, not 10",
            fields.len()
        )));
    };
    Ok(LogEntry {
        cursor: Cursor {
            transaction_id: int8(transaction_id, "transaction_id")?,
            position: int8(position, "global_position")?,
        },
        event_id: uuid(event_id, "event_id")?,
        aggregate_type: text(aggregate_type, "aggregate_type")?,
        aggregate_id: text(aggregate_id, "aggregate_id")?,
        sequence: int8(sequence, "sequence")?,
        event_type: text(event_type, "event_type")?,
        event_version: text(event_version, "event_version")?,
        payload: text(payload, "payload")?,
        metadata: None,
        recorded_at: timestamptz(recorded_at, "recorded_at")?,
    }
    .current())
}

/// [`stream_after`] on SQLite: one query, batched.
async fn sqlite_stream_after(
    pool: &SqlitePool,
    after: Cursor,
    batch: usize,
    sender: &Batches,
) -> Result<(), StoreError> {
    let mut rows = sqlx::query(
        "SELECT global_position, event_id, aggregate_type, aggregate_id, sequence,
                event_type, event_version, payload, NULL AS metadata, recorded_at
           FROM events
          WHERE global_position > $1
          ORDER BY global_position",
    )
    .bind(after.position)
    .fetch(pool);
    let mut entries = Vec::with_capacity(batch);
    while let Some(row) = rows.next().await {
        entries.push(sqlite_entry(&row?)?);
        if entries.len() == batch {
            let full = std::mem::replace(&mut entries, Vec::with_capacity(batch));
            if sender.send(Ok(full)).await.is_err() {
                return Ok(());
            }
        }
    }
    if !entries.is_empty() {
        let _ = sender.send(Ok(entries)).await;
    }
    Ok(())
}

/// A row of the PostgreSQL reads, whose columns come in this order: transaction_id,
/// global_position, event_id, aggregate_type, aggregate_id, sequence, event_type,
/// event_version, payload, recorded_at, and metadata when asked for.
pub(super) fn postgres_entry(
    row: &sqlx::postgres::PgRow,
    with_metadata: bool,
) -> Result<LogEntry, StoreError> {
    Ok(LogEntry {
        cursor: Cursor {
            // xid8 in binary is a big-endian 64-bit integer: read as it is stored,
            // without the text round trip a cast would cost per row.
            transaction_id: row.try_get_unchecked(0)?,
            position: row.try_get(1)?,
        },
        event_id: row.try_get(2)?,
        aggregate_type: row.try_get(3)?,
        aggregate_id: row.try_get(4)?,
        sequence: row.try_get(5)?,
        event_type: row.try_get(6)?,
        event_version: row.try_get(7)?,
        payload: row.try_get(8)?,
        recorded_at: row.try_get(9)?,
        metadata: if with_metadata {
            row.try_get(10)?
        } else {
            None
        },
    }
    .current())
}

/// A row of the SQLite reads (by column name; `metadata` may be NULL).
pub(super) fn sqlite_entry(row: &sqlx::sqlite::SqliteRow) -> Result<LogEntry, StoreError> {
    let (event_id, recorded_at) = sqlite_stamps(row)?;
    Ok(LogEntry {
        cursor: Cursor {
            transaction_id: 0,
            position: row.try_get("global_position")?,
        },
        event_id,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: row.try_get("payload")?,
        metadata: row.try_get("metadata")?,
        recorded_at,
    }
    .current())
}

/// The columns SQLite keeps as text that the database stamped: the event id and the
/// time it was recorded.
fn sqlite_stamps(row: &sqlx::sqlite::SqliteRow) -> Result<(Uuid, DateTime<Utc>), StoreError> {
    let event_id: String = row.try_get("event_id")?;
    let recorded_at: String = row.try_get("recorded_at")?;
    let event_id = Uuid::parse_str(&event_id)
        .map_err(|e| StoreError::Corrupt(format!("events.event_id: {e}")))?;
    let recorded_at = DateTime::parse_from_rfc3339(&recorded_at)
        .map_err(|e| StoreError::Corrupt(format!("events.recorded_at: {e}")))?
        .with_timezone(&Utc);
    Ok((event_id, recorded_at))
}

/// How far behind the head of the log a reader at `cursor` is: the events it has not
/// read yet (committed or not), and the age of the oldest of them.
pub async fn lag(db: &Database, cursor: Cursor) -> Result<(i64, f64), StoreError> {
    let (count, oldest): (i64, Option<DateTime<Utc>>) = match db {
        Database::Postgres(pool) => {
            let row = sqlx::query(
                "SELECT count(*) AS n, min(recorded_at) AS oldest FROM events
                  WHERE (transaction_id, global_position) > ($1::text::xid8, $2)",
            )
            .bind(cursor.transaction_id.to_string())
            .bind(cursor.position)
            .fetch_one(pool)
            .await?;
            (row.try_get("n")?, row.try_get("oldest")?)
        }
        Database::Sqlite(pool) => {
            let row = sqlx::query(
                "SELECT count(*) AS n, min(recorded_at) AS oldest FROM events
                  WHERE global_position > $1",
            )
            .bind(cursor.position)
            .fetch_one(pool)
            .await?;
            let oldest: Option<String> = row.try_get("oldest")?;
            let oldest = oldest
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|t| t.with_timezone(&Utc));
            (row.try_get("n")?, oldest)
        }
    };
    let seconds = oldest.map_or(0.0, |t| {
        (Utc::now() - t).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6
    });
    Ok((count, seconds))
}

/// Where a reader starting "now" begins: after every event a reader can see today.
/// Events of transactions still running sort after it, so none is skipped.
pub async fn head(db: &Database) -> Result<Cursor, StoreError> {
    let cursor = match db {
        Database::Postgres(pool) => sqlx::query_as::<_, (i64, i64)>(
            "SELECT transaction_id::text::int8, global_position FROM events
              WHERE transaction_id < pg_snapshot_xmin(pg_current_snapshot())
              ORDER BY events.transaction_id DESC, events.global_position DESC
              LIMIT 1",
        )
        .fetch_optional(pool)
        .await?
        .map(|(transaction_id, position)| Cursor {
            transaction_id,
            position,
        }),
        Database::Sqlite(pool) => {
            sqlx::query_scalar::<_, Option<i64>>("SELECT max(global_position) FROM events")
                .fetch_one(pool)
                .await?
                .map(|position| Cursor {
                    transaction_id: 0,
                    position,
                })
        }
    };
    Ok(cursor.unwrap_or(Cursor::START))
}

/// Where in the log a replay starts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StartAt {
    /// With the event at this global position (or the first one after it).
    Position(i64),
    /// With the first event recorded at or after this time.
    Time(DateTime<Utc>),
}

/// The cursor just before the first event at `start`: a reader there reads that event
/// next. When no event is that late, the head.
pub async fn cursor_before(db: &Database, start: StartAt) -> Result<Cursor, StoreError> {
    let first = match (db, start) {
        (Database::Postgres(pool), StartAt::Position(p)) => {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT transaction_id::text::int8, global_position FROM events
                  WHERE global_position >= $1 ORDER BY global_position LIMIT 1",
            )
            .bind(p)
            .fetch_optional(pool)
            .await?
        }
        (Database::Postgres(pool), StartAt::Time(t)) => {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT transaction_id::text::int8, global_position FROM events
                  WHERE recorded_at >= $1 ORDER BY global_position LIMIT 1",
            )
            .bind(t)
            .fetch_optional(pool)
            .await?
        }
        (Database::Sqlite(pool), StartAt::Position(p)) => {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT 0, global_position FROM events
                  WHERE global_position >= $1 ORDER BY global_position LIMIT 1",
            )
            .bind(p)
            .fetch_optional(pool)
            .await?
        }
        (Database::Sqlite(pool), StartAt::Time(t)) => {
            sqlx::query_as::<_, (i64, i64)>(
                "SELECT 0, global_position FROM events
                  WHERE recorded_at >= $1 ORDER BY global_position LIMIT 1",
            )
            .bind(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .fetch_optional(pool)
            .await?
        }
    };
    match first {
        // The tuple just below the first event's: it is read next, and nothing of its
        // own transaction that came before it is.
        Some((transaction_id, position)) => Ok(Cursor {
            transaction_id,
            position: position - 1,
        }),
        None => head(db).await,
    }
}

/// The cursor of one aggregate's event, for read-your-writes waits.
pub async fn cursor_of(
    db: &Database,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: i64,
) -> Result<Option<Cursor>, StoreError> {
    match db {
        Database::Postgres(pool) => {
            let row = sqlx::query(
                "SELECT transaction_id::text::int8 AS transaction_id, global_position FROM events
                  WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
            )
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(sequence)
            .fetch_optional(pool)
            .await?;
            row.map(|r| {
                Ok(Cursor {
                    transaction_id: r.try_get("transaction_id")?,
                    position: r.try_get("global_position")?,
                })
            })
            .transpose()
        }
        Database::Sqlite(pool) => {
            let row = sqlx::query(
                "SELECT global_position FROM events
                  WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
            )
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(sequence)
            .fetch_optional(pool)
            .await?;
            row.map(|r| {
                Ok(Cursor {
                    transaction_id: 0,
                    position: r.try_get("global_position")?,
                })
            })
            .transpose()
        }
    }
}

/// Wakes readers when the log may have grown. A counter, not a pulse: a reader that was
/// busy when the signal came still sees it changed.
#[derive(Clone)]
pub struct LogSignal {
    sender: watch::Sender<u64>,
    /// Appends made by this process, for other processes to hear of (PostgreSQL).
    appends: watch::Sender<u64>,
}

impl Default for LogSignal {
    fn default() -> Self {
        Self {
            sender: watch::channel(0).0,
            appends: watch::channel(0).0,
        }
    }
}

/// The most often this process NOTIFYs other processes of its appends. Each NOTIFY
/// takes PostgreSQL's global notification lock at commit; once per command, that lock
/// serialised every command's commit.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(5);

impl LogSignal {
    /// Wakes this process's readers.
    pub fn notify(&self) {
        self.sender.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// This process appended events: wakes its readers, and those of other processes.
    pub fn appended(&self) {
        self.notify();
        self.appends.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.sender.subscribe()
    }

    /// On PostgreSQL, until `shutdown`: announces this process's appends on
    /// `orderlog_events` (at most every [`ANNOUNCE_EVERY`], outside any command's
    /// transaction), and wakes this process's readers on announcements from others.
    pub fn listen(&self, db: &Database, shutdown: CancellationToken) {
        let Database::Postgres(pool) = db else {
            return;
        };
        let mut appends = self.appends.subscribe();
        let announcer = pool.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    changed = appends.changed() => if changed.is_err() { return },
                }
                if let Err(e) = sqlx::query("SELECT pg_notify('orderlog_events', '')")
                    .execute(&announcer)
                    .await
                {
                    tracing::debug!(error = %e, "could not announce new events; other processes poll");
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(ANNOUNCE_EVERY) => {}
                }
            }
        });
        let pool = pool.clone();
        let signal = self.clone();
        tokio::spawn(async move {
            loop {
                let listened = async {
                    let mut listener = PgListener::connect_with(&pool).await?;
                    listener.listen("orderlog_events").await?;
                    loop {
                        listener.recv().await?;
                        signal.notify();
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), sqlx::Error>(())
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    result = listened => {
                        if let Err(e) = result {
                            tracing::warn!(error = %e, "LISTEN orderlog_events failed; readers fall back to polling");
                        }
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_order_by_transaction_then_position() {
        let a = Cursor {
            transaction_id: 5,
            position: 100,
        };
        let b = Cursor {
            transaction_id: 6,
            position: 99,
        };
        assert!(a < b);
        assert!(Cursor::START < a);
    }

    #[test]
    fn a_cursor_token_reads_back_and_nonsense_does_not() {
        let cursor = Cursor {
            transaction_id: 812,
            position: 40_001,
        };
        assert_eq!(cursor.token(), "812-40001");
        assert_eq!(Cursor::parse_token(&cursor.token()), Some(cursor));
        for bad in ["", "12", "a-1", "1-", "-1-2", "1-2-3"] {
            assert_eq!(Cursor::parse_token(bad), None, "{bad}");
        }
    }
}
