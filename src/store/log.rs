//! One aggregate's stream of the log, in sequence order: for the API's event history and
//! for replays to a point in time (`history`). Read-only: the log is appended to only by
//! [`super::commands`].
//!
//! Rows come as [`LogEntry`], the one type for a stored event, with payload and metadata
//! as the JSON text stored: the API sends that text on as it is, and a replay decodes
//! it once, into the aggregate's own events.

use super::reader::{postgres_entry, sqlite_entry, LogEntry};
use super::{Database, StoreError};

/// All events of one aggregate, in sequence order, with their metadata.
pub async fn aggregate_events(
    db: &Database,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<LogEntry>, StoreError> {
    match db {
        Database::Postgres(pool) => {
            // Columns by position, in the order `postgres_entry` reads them.
            let rows = sqlx::query(
                "SELECT transaction_id, global_position, event_id, aggregate_type, aggregate_id,
                        sequence, event_type, event_version, payload::text, recorded_at,
                        metadata::text
                   FROM events
                  WHERE aggregate_type = $1 AND aggregate_id = $2
                  ORDER BY sequence",
            )
            .bind(aggregate_type)
            .bind(aggregate_id)
            .fetch_all(pool)
            .await?;
            rows.iter().map(|row| postgres_entry(row, true)).collect()
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
            rows.iter().map(sqlite_entry).collect()
        }
    }
}
