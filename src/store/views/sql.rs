//! Read queries on view tables, and the binding of [`Param`]s both backends share:
//! every query is wrapped to return its rows as one JSON array of objects, decoded
//! into plain serde structs.
//!
//! It only reads; statements that write live on [`Tx`](super::Tx). It never builds SQL
//! from values: values travel as parameters.

use serde::de::DeserializeOwned;

use super::Table;
use crate::store::{Database, StoreError};

/// A value bound to a query.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Text(String),
    Int(i64),
    OptText(Option<String>),
    OptInt(Option<i64>),
    /// A `text[]` on PostgreSQL; a JSON array on SQLite, which has no arrays (read it
    /// with `json_each`).
    TextList(Vec<String>),
}

/// Binds every parameter; text goes with U+FFFD for each NUL ([`nul`](super::nul)), so a
/// value that reached a view that way is also what finds it again.
macro_rules! bind_all {
    ($query:expr, $params:expr, $list:expr) => {{
        let mut query = $query;
        for param in $params {
            query = match param {
                Param::Text(s) => query.bind($crate::store::views::nul::text(s).into_owned()),
                Param::Int(i) => query.bind(*i),
                Param::OptText(s) => query.bind(
                    s.as_deref()
                        .map(|s| $crate::store::views::nul::text(s).into_owned()),
                ),
                Param::OptInt(i) => query.bind(*i),
                Param::TextList(list) => query.bind($list(list)),
            };
        }
        query
    }};
}
pub(super) use bind_all;

/// A list as PostgreSQL binds it: `text[]`.
pub(super) fn pg_list(list: &[String]) -> Vec<String> {
    list.iter()
        .map(|s| super::nul::text(s).into_owned())
        .collect()
}

/// A list as SQLite binds it: a JSON array, for `json_each`.
pub(super) fn sqlite_list(list: &[String]) -> String {
    super::nul::json(serde_json::to_string(list).unwrap_or_else(|_| "[]".to_owned()))
}

/// Runs a read query against view `table` and decodes its rows.
///
/// `filter` is everything after `FROM <table>`: `WHERE …`, `ORDER BY …`, `LIMIT …`,
/// with `$1`-style placeholders for `params`.
pub async fn select<R: DeserializeOwned>(
    db: &Database,
    name: &str,
    table: &Table,
    filter: &str,
    params: &[Param],
) -> Result<Vec<R>, StoreError> {
    let columns: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
    query(
        db,
        &format!("SELECT * FROM {name} {filter}"),
        &columns,
        params,
    )
    .await
}

/// Runs any read query whose result has `columns`, and decodes its rows.
pub async fn query<R: DeserializeOwned>(
    db: &Database,
    sql: &str,
    columns: &[&str],
    params: &[Param],
) -> Result<Vec<R>, StoreError> {
    let sql = json_rows_sql(matches!(db, Database::Postgres(_)), sql, columns);
    let json: String = match db {
        Database::Postgres(pool) => {
            bind_all!(sqlx::query_scalar::<_, String>(&sql), params, pg_list)
                .fetch_one(pool)
                .await?
        }
        Database::Sqlite(pool) => {
            bind_all!(sqlx::query_scalar::<_, String>(&sql), params, sqlite_list)
                .fetch_one(pool)
                .await?
        }
    };
    serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("view query: {e}")))
}

/// Wraps a query so that it returns its rows as one JSON array of objects.
pub(super) fn json_rows_sql(postgres: bool, sql: &str, columns: &[&str]) -> String {
    if postgres {
        format!("SELECT coalesce(json_agg(x), '[]')::text FROM ({sql}) x")
    } else {
        let pairs: Vec<String> = columns.iter().map(|c| format!("'{c}', {c}")).collect();
        format!(
            "SELECT coalesce(json_group_array(json_object({})), '[]') FROM ({sql})",
            pairs.join(", ")
        )
    }
}
