//! The stored row of each projection in `projections`: its version, serving
//! generation, checkpoint, state, failure, and any rebuild under way (with a failure of
//! its own), read plainly, or locked for the rest of a transaction.
//!
//! This file only reads rows; the state changes are written by the files that decide
//! them. It never waits on a row the live group skips (`lock_rows`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::store::reader::Cursor;
use crate::store::views::{Param, Tx};
use crate::store::{Database, StoreError};

/// The stored row of one projection.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Row {
    pub(super) version: i64,
    pub(super) generation: i64,
    pub(super) cursor: Cursor,
    pub(super) status: String,
    pub(super) last_error: Option<String>,
    pub(super) failed: Option<(Cursor, String)>,
    pub(super) rebuild: Option<(i64, i64, Cursor)>,
    /// A rebuild that stopped on an event: its error, and the event (cursor, id).
    pub(super) rebuild_failure: Option<(String, Cursor, String)>,
    pub(super) retired: Option<i64>,
    pub(super) updated_at: DateTime<Utc>,
}

const ROW_COLUMNS: &str =
    "name, version, generation, cursor_tx, cursor_position, status, last_error,
    failed_tx, failed_position, failed_event_id, rebuild_generation, rebuild_version,
    rebuild_cursor_tx, rebuild_cursor_position, rebuild_last_error, rebuild_failed_tx,
    rebuild_failed_position, rebuild_failed_event_id, retired_generation, updated_at";

/// Locks the projection's row for the rest of `tx` and returns it: `FOR UPDATE` on
/// PostgreSQL; on SQLite the transaction already holds the writer lock.
pub(super) async fn lock_row(tx: &mut Tx, name: &str) -> Result<Row, StoreError> {
    let lock = if tx.is_postgres() { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT {ROW_COLUMNS} FROM projections WHERE name = $1{lock}");
    let rows = tx
        .select_json(&sql, ROW_FIELDS, &[Param::Text(name.to_owned())])
        .await?;
    to_row(name, rows)
}

/// Locks the rows of `names` for the rest of `tx`, skipping rows someone else holds
/// right now (a switch, an operator's action): the live group never waits for them.
pub(super) async fn lock_rows(
    tx: &mut Tx,
    names: &[&str],
) -> Result<HashMap<String, Row>, StoreError> {
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
pub(super) async fn load_row(db: &Database, name: &str) -> Result<Row, StoreError> {
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
    "rebuild_last_error",
    "rebuild_failed_tx",
    "rebuild_failed_position",
    "rebuild_failed_event_id",
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
        rebuild_failure: match (
            row.rebuild_last_error,
            cursor(row.rebuild_failed_tx, row.rebuild_failed_position),
            row.rebuild_failed_event_id,
        ) {
            (Some(error), Some(at), Some(event_id)) => Some((error, at, event_id)),
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
    rebuild_last_error: Option<String>,
    rebuild_failed_tx: Option<i64>,
    rebuild_failed_position: Option<i64>,
    rebuild_failed_event_id: Option<String>,
    retired_generation: Option<i64>,
    updated_at: String,
}
