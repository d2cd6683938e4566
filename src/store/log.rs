//! Reads of the stored log, with the columns the database stamps (global position,
//! event id, time recorded). Read-only: the log is appended to only by [`super::commands`].

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::Row;
use uuid::Uuid;

use super::{Database, StoreError};

/// One event as stored, in the shape the API and every reader show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredEvent {
    pub global_position: i64,
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
    pub recorded_at: DateTime<Utc>,
}

/// All events of one aggregate, in sequence order.
pub async fn aggregate_events(
    db: &Database,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<StoredEvent>, StoreError> {
    match db {
        Database::Postgres(pool) => {
            let rows = sqlx::query(
                "SELECT global_position, event_id, aggregate_type, aggregate_id, sequence,
                        event_type, event_version, payload, metadata, recorded_at
                   FROM events
                  WHERE aggregate_type = $1 AND aggregate_id = $2
                  ORDER BY sequence",
            )
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(StoredEvent {
                        global_position: row.try_get("global_position")?,
                        event_id: row.try_get("event_id")?,
                        aggregate_type: row.try_get("aggregate_type")?,
                        aggregate_id: row.try_get("aggregate_id")?,
                        sequence: row.try_get("sequence")?,
                        event_type: row.try_get("event_type")?,
                        event_version: row.try_get("event_version")?,
                        payload: row.try_get("payload")?,
                        metadata: row.try_get("metadata")?,
                        recorded_at: row.try_get("recorded_at")?,
                    })
                })
                .collect::<Result<_, sqlx::Error>>()
                .map_err(StoreError::from)
        }
        Database::Sqlite(pool) => {
            let rows = sqlx::query(
                "SELECT global_position, event_id, aggregate_type, aggregate_id, sequence,
                        event_type, event_version, payload, metadata, recorded_at
                   FROM events
                  WHERE aggregate_type = ? AND aggregate_id = ?
                  ORDER BY sequence",
            )
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_all(pool)
            .await?;
            rows.iter().map(sqlite_event).collect()
        }
    }
}

/// SQLite keeps the id as canonical text, JSON as text and the time as RFC 3339 text.
fn sqlite_event(row: &sqlx::sqlite::SqliteRow) -> Result<StoredEvent, StoreError> {
    let corrupt = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Corrupt(format!("events.{what} at a stored row: {e}"))
    };
    let (event_id, recorded_at) = super::reader::sqlite_stamps(row)?;
    let payload: String = row.try_get("payload")?;
    let metadata: String = row.try_get("metadata")?;
    Ok(StoredEvent {
        global_position: row.try_get("global_position")?,
        event_id,
        aggregate_type: row.try_get("aggregate_type")?,
        aggregate_id: row.try_get("aggregate_id")?,
        sequence: row.try_get("sequence")?,
        event_type: row.try_get("event_type")?,
        event_version: row.try_get("event_version")?,
        payload: serde_json::from_str(&payload).map_err(|e| corrupt("payload", &e))?,
        metadata: serde_json::from_str(&metadata).map_err(|e| corrupt("metadata", &e))?,
        recorded_at,
    })
}
