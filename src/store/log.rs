//! One aggregate's stream of the log, in sequence order: for the API's event history and
//! for replays to a point in time (`history`). Read-only: the log is appended to only by
//! [`super::commands`].
//!
//! Rows come as [`LogEntry`], the one type for a stored event, with payload and metadata
//! as the JSON text stored: the API sends that text on as it is, and a replay decodes
//! it once, into the aggregate's own events.

use chrono::{DateTime, Utc};

use super::reader::{postgres_entry, sqlite_entry, LogEntry};
use super::{Database, StoreError};

/// The columns `postgres_entry` reads, by position, in its order.
const POSTGRES_ENTRY: &str = "SELECT transaction_id, global_position, event_id, aggregate_type,
        aggregate_id, sequence, event_type, event_version, payload::text, recorded_at,
        metadata::text
   FROM events";
/// The columns `sqlite_entry` reads.
const SQLITE_ENTRY: &str =
    "SELECT global_position, event_id, aggregate_type, aggregate_id, sequence,
        event_type, event_version, payload, metadata, recorded_at
   FROM events";

/// All events of one aggregate, in sequence order, with their metadata.
pub async fn aggregate_events(
    db: &Database,
    aggregate_type: &str,
    aggregate_id: &str,
) -> Result<Vec<LogEntry>, StoreError> {
    match db {
        Database::Postgres(pool) => {
            let sql = format!(
                "{POSTGRES_ENTRY} WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence"
            );
            let rows = sqlx::query(&sql)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .fetch_all(pool)
                .await?;
            rows.iter().map(|row| postgres_entry(row, true)).collect()
        }
        Database::Sqlite(pool) => {
            let sql = format!(
                "{SQLITE_ENTRY} WHERE aggregate_type = ? AND aggregate_id = ? ORDER BY sequence"
            );
            let rows = sqlx::query(&sql)
                .bind(aggregate_type)
                .bind(aggregate_id)
                .fetch_all(pool)
                .await?;
            rows.iter().map(sqlite_entry).collect()
        }
    }
}

/// The inventory events about one order (its reservations, backorders, releases and
/// commits) on the SKUs it names, recorded at or after `since`, in log order.
///
/// Read through each SKU's stream (the `(aggregate_type, aggregate_id, sequence)` key)
/// and filtered by the payload's `order_id`: the log keeps no index by order for
/// inventory events, and a journey is a support agent's rare read, not worth one more
/// index on every append. `since` (a little before the order's first event, as its
/// reservations come just before it) cuts what a long-lived SKU's stream holds earlier.
pub async fn order_inventory_events(
    db: &Database,
    order_id: &str,
    skus: &[String],
    since: DateTime<Utc>,
) -> Result<Vec<LogEntry>, StoreError> {
    match db {
        Database::Postgres(pool) => {
            let sql = format!(
                "{POSTGRES_ENTRY}
                  WHERE aggregate_type = 'inventory' AND aggregate_id = ANY($1)
                    AND recorded_at >= $2 AND payload->>'order_id' = $3
                  ORDER BY transaction_id, global_position"
            );
            let rows = sqlx::query(&sql)
                .bind(skus)
                .bind(since)
                .bind(order_id)
                .fetch_all(pool)
                .await?;
            rows.iter().map(|row| postgres_entry(row, true)).collect()
        }
        Database::Sqlite(pool) => {
            let skus = serde_json::to_string(skus).unwrap_or_else(|_| "[]".to_owned());
            let sql = format!(
                "{SQLITE_ENTRY}
                  WHERE aggregate_type = 'inventory'
                    AND aggregate_id IN (SELECT value FROM json_each(?))
                    AND recorded_at >= ? AND json_extract(payload, '$.order_id') = ?
                  ORDER BY global_position"
            );
            let rows = sqlx::query(&sql)
                .bind(skus)
                // As SQLite stamps it (`strftime('%Y-%m-%dT%H:%M:%fZ')`), so that text
                // order is time order.
                .bind(since.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                .bind(order_id)
                .fetch_all(pool)
                .await?;
            rows.iter().map(sqlite_entry).collect()
        }
    }
}
