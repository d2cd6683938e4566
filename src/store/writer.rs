//! Group commit: the appends of many aggregates share one write.
//!
//! Every aggregate's leader (`store::commands`) hands its batch of events here and
//! waits. A committer takes everything queued at that moment, from any aggregate, and
//! appends it in one atomic statement (PostgreSQL) or one transaction (SQLite). While
//! one write is out, the next group gathers, so under load many commands share a commit
//! and its WAL flush, and under light load a command is written at once.
//!
//! The queue needs no bound of its own: each append is awaited by its aggregate's
//! leader, so it holds at most one append per aggregate with commands in flight.
//!
//! The database still guards each aggregate: a sequence already taken (another process
//! won the race) refuses the whole group, which is then written one append at a time so
//! that only the append that lost hears `Conflict`.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::time::Instant;

use super::reader::LogSignal;
use super::{is_saturation, Database};

/// Most events written in one statement.
const MAX_GROUP_EVENTS: usize = 4_096;

/// Writes in flight at once on PostgreSQL: one gathers while others commit. SQLite has a
/// single writer, so it gets one.
const POSTGRES_COMMITTERS: usize = 4;

/// One event ready for the log; the database stamps position, id, time and transaction.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    /// JSON text.
    pub payload: String,
    /// JSON text.
    pub metadata: String,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A sequence in the append is taken: another writer got there first.
    #[error("another writer appended to the aggregate first")]
    Conflict,
    /// The database is saturated; nothing was written.
    #[error("the event store is saturated: {0}")]
    Unavailable(String),
    /// The append waited past its deadline for the database; nothing was written.
    #[error("the append waited past its deadline")]
    Saturated,
    #[error("event store failure: {0}")]
    Store(String),
}

struct Append {
    events: Vec<NewEvent>,
    start_by: Option<Instant>,
    done: oneshot::Sender<Result<(), WriteError>>,
}

/// Appends events to the log, many aggregates to a commit. Cheap to clone.
#[derive(Clone)]
pub struct EventWriter {
    queue: mpsc::UnboundedSender<Append>,
}

impl EventWriter {
    /// Starts the committers; they end when the last writer is dropped. `appended` is
    /// told after every write, to wake readers of the log at once.
    pub fn start(db: &Database, appended: LogSignal) -> Self {
        let (queue, receiver) = mpsc::unbounded_channel();
        let receiver = Arc::new(Mutex::new(receiver));
        let committers = match db {
            Database::Postgres(_) => POSTGRES_COMMITTERS,
            Database::Sqlite(_) => 1,
        };
        for _ in 0..committers {
            let db = db.clone();
            let receiver = receiver.clone();
            let appended = appended.clone();
            tokio::spawn(async move { commit_loop(db, receiver, appended).await });
        }
        Self { queue }
    }

    /// Appends `events` atomically: all of them, or none. An append still queued at
    /// `start_by` is refused (`Saturated`) rather than written late.
    pub async fn append(
        &self,
        events: Vec<NewEvent>,
        start_by: Option<Instant>,
    ) -> Result<(), WriteError> {
        if events.is_empty() {
            return Ok(());
        }
        let (done, answer) = oneshot::channel();
        self.queue
            .send(Append {
                events,
                start_by,
                done,
            })
            .map_err(|_| WriteError::Store("the event writer has stopped".into()))?;
        answer
            .await
            .unwrap_or_else(|_| Err(WriteError::Store("the event writer has stopped".into())))
    }
}

async fn commit_loop(
    db: Database,
    receiver: Arc<Mutex<mpsc::UnboundedReceiver<Append>>>,
    appended: LogSignal,
) {
    loop {
        let group = {
            let mut receiver = receiver.lock().await;
            let Some(first) = receiver.recv().await else {
                return;
            };
            let mut size = first.events.len();
            let mut group = vec![first];
            while size < MAX_GROUP_EVENTS {
                match receiver.try_recv() {
                    Ok(next) => {
                        size += next.events.len();
                        group.push(next);
                    }
                    Err(_) => break,
                }
            }
            group
        };
        let now = Instant::now();
        let (late, group): (Vec<_>, Vec<_>) = group
            .into_iter()
            .partition(|a| a.start_by.is_some_and(|by| by <= now));
        for append in late {
            let _ = append.done.send(Err(WriteError::Saturated));
        }
        if group.is_empty() {
            continue;
        }
        let events: Vec<&NewEvent> = group.iter().flat_map(|a| &a.events).collect();
        match write(&db, &events).await {
            Ok(()) => {
                appended.appended();
                for append in group {
                    let _ = append.done.send(Ok(()));
                }
            }
            Err(WriteError::Conflict) if group.len() > 1 => {
                // Find the append that lost; the others are written on their own.
                let mut any = false;
                for append in group {
                    let events: Vec<&NewEvent> = append.events.iter().collect();
                    let result = write(&db, &events).await;
                    any |= result.is_ok();
                    let _ = append.done.send(result);
                }
                if any {
                    appended.appended();
                }
            }
            Err(error) => {
                for append in group {
                    let _ = append.done.send(Err(copy(&error)));
                }
            }
        }
    }
}

fn copy(error: &WriteError) -> WriteError {
    match error {
        WriteError::Conflict => WriteError::Conflict,
        WriteError::Unavailable(why) => WriteError::Unavailable(why.clone()),
        WriteError::Saturated => WriteError::Saturated,
        WriteError::Store(why) => WriteError::Store(why.clone()),
    }
}

async fn write(db: &Database, events: &[&NewEvent]) -> Result<(), WriteError> {
    let result = match db {
        Database::Postgres(pool) => {
            // One statement is one atomic write, and one round trip. Ordinality keeps
            // each aggregate's events in sequence order in the log.
            let column =
                |f: fn(&NewEvent) -> &str| -> Vec<&str> { events.iter().map(|e| f(e)).collect() };
            sqlx::query(
                "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                                     event_version, payload, metadata)
                 SELECT t, i, s, et, ev, p::json, m::json
                   FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[],
                               $6::text[], $7::text[])
                        WITH ORDINALITY AS u(t, i, s, et, ev, p, m, n)
                  ORDER BY n",
            )
            .bind(column(|e| e.aggregate_type))
            .bind(column(|e| &e.aggregate_id))
            .bind(events.iter().map(|e| e.sequence).collect::<Vec<_>>())
            .bind(column(|e| &e.event_type))
            .bind(column(|e| &e.event_version))
            .bind(column(|e| &e.payload))
            .bind(column(|e| &e.metadata))
            .execute(pool)
            .await
            .map(drop)
        }
        Database::Sqlite(pool) => {
            async {
                let mut tx = pool.begin().await?;
                for event in events {
                    sqlx::query(
                        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type,
                                         event_version, payload, metadata)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(event.aggregate_type)
                    .bind(&event.aggregate_id)
                    .bind(event.sequence)
                    .bind(&event.event_type)
                    .bind(&event.event_version)
                    .bind(&event.payload)
                    .bind(&event.metadata)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await
            }
            .await
        }
    };
    result.map_err(|e| {
        if is_saturation(&e) {
            WriteError::Unavailable(e.to_string())
        } else if e
            .as_database_error()
            .is_some_and(|d| d.is_unique_violation())
        {
            WriteError::Conflict
        } else {
            WriteError::Store(e.to_string())
        }
    })
}
