//! View tables: the storage side of projections, on either backend.
//!
//! A projection describes its tables ([`Table`]); this module creates them, loads rows by
//! id, upserts and deletes rows in bulk, and runs read queries, inside one transaction
//! per batch so that a view change and its checkpoint commit together. Rows travel as
//! JSON (one parameter per statement, however many rows), so each projection's row is a
//! plain serde struct and no per-type SQL mapping exists.
//!
//! Tables are named `<projection>_g<generation>_<table>`: a rebuild fills a new
//! generation beside the one serving queries. That name is built at run time, which is
//! why these tables are created here and not in `migrations/`.
//!
//! Column types are deliberately few (text and 64-bit integers, times as fixed-width
//! RFC 3339 text) so that one SQL text serves both backends and ordering by time is
//! ordering by text.

use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::{Postgres, Sqlite, Transaction};

use super::{Database, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    BigInt,
}

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
}

/// A view table. Every table has a text primary key column `id`, listed first.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [Column],
    /// Secondary indexes, each a list of columns.
    pub indexes: &'static [&'static [&'static str]],
}

pub const fn text(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::Text,
    }
}

pub const fn bigint(name: &'static str) -> Column {
    Column {
        name,
        kind: Kind::BigInt,
    }
}

/// The physical name of `table` in generation `generation` of `projection`.
pub fn physical(projection: &str, generation: i64, table: &str) -> String {
    format!("{projection}_g{generation}_{table}")
}

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

/// One transaction on either backend.
pub enum Tx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Sqlite>),
}

macro_rules! bind_all {
    ($query:expr, $params:expr, $list:expr) => {{
        let mut query = $query;
        for param in $params {
            query = match param {
                Param::Text(s) => query.bind(s.clone()),
                Param::Int(i) => query.bind(*i),
                Param::OptText(s) => query.bind(s.clone()),
                Param::OptInt(i) => query.bind(*i),
                Param::TextList(list) => query.bind($list(list)),
            };
        }
        query
    }};
}

/// A list as PostgreSQL binds it: `text[]`.
fn pg_list(list: &[String]) -> Vec<String> {
    list.to_vec()
}

/// A list as SQLite binds it: a JSON array, for `json_each`.
fn sqlite_list(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".to_owned())
}

impl Tx {
    /// Begins a transaction. On SQLite it takes the write lock at once, so that a read
    /// followed by a write can never fail on a snapshot another writer moved.
    pub async fn begin(db: &Database) -> Result<Tx, StoreError> {
        Ok(match db {
            Database::Postgres(pool) => Tx::Postgres(pool.begin().await?),
            Database::Sqlite(pool) => Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?),
        })
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Postgres(tx) => tx.commit().await?,
            Tx::Sqlite(tx) => tx.commit().await?,
        }
        Ok(())
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Tx::Postgres(_))
    }

    /// Declares that this transaction writes only what the log can rebuild (views and
    /// their checkpoints, together). On PostgreSQL its commit then does not wait for the
    /// WAL flush: a crash can only lose it whole, views and checkpoint alike, and the
    /// events are applied again from the older checkpoint. Returns the transaction's id
    /// (assigned now) on PostgreSQL.
    pub async fn derived_only(&mut self) -> Result<Option<i64>, StoreError> {
        Ok(match self {
            Tx::Postgres(tx) => Some(
                sqlx::query_scalar::<_, i64>(
                    "SELECT pg_current_xact_id()::text::int8
                      FROM set_config('synchronous_commit', 'off', true)",
                )
                .fetch_one(&mut **tx)
                .await?,
            ),
            Tx::Sqlite(_) => None,
        })
    }

    /// Runs a statement written with `$1`-style placeholders (both backends take them).
    pub async fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64, StoreError> {
        Ok(match self {
            Tx::Postgres(tx) => bind_all!(sqlx::query(sql), params, pg_list)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            Tx::Sqlite(tx) => bind_all!(sqlx::query(sql), params, sqlite_list)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
        })
    }

    /// Runs a read query whose result has `columns`, in this transaction.
    pub async fn select_json<R: DeserializeOwned>(
        &mut self,
        sql: &str,
        columns: &[&str],
        params: &[Param],
    ) -> Result<Vec<R>, StoreError> {
        let sql = json_rows_sql(self.is_postgres(), sql, columns);
        let json = self.scalar_text(&sql, params).await?;
        serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("view query: {e}")))
    }

    pub async fn create_table(&mut self, name: &str, table: &Table) -> Result<(), StoreError> {
        let pg = self.is_postgres();
        let columns: Vec<String> = table
            .columns
            .iter()
            .map(|c| {
                let kind = match (c.kind, pg) {
                    (Kind::Text, _) => "TEXT",
                    (Kind::BigInt, true) => "BIGINT",
                    (Kind::BigInt, false) => "INTEGER",
                };
                let key = if c.name == "id" { " PRIMARY KEY" } else { "" };
                format!("{} {kind}{key}", c.name)
            })
            .collect();
        self.execute(
            &format!("CREATE TABLE IF NOT EXISTS {name} ({})", columns.join(", ")),
            &[],
        )
        .await?;
        for (i, index) in table.indexes.iter().enumerate() {
            self.execute(
                &format!(
                    "CREATE INDEX IF NOT EXISTS {name}_i{i} ON {name} ({})",
                    index.join(", ")
                ),
                &[],
            )
            .await?;
        }
        Ok(())
    }

    pub async fn drop_table(&mut self, name: &str) -> Result<(), StoreError> {
        self.execute(&format!("DROP TABLE IF EXISTS {name}"), &[])
            .await
            .map(drop)
    }

    /// The rows of `table` whose ids are in `ids`.
    pub async fn load<R: DeserializeOwned>(
        &mut self,
        name: &str,
        table: &Table,
        ids: &[String],
    ) -> Result<Vec<R>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let (sql, ids) = match self {
            // A real array, which the planner sizes: from a JSON text it guesses 100 rows
            // and may choose to scan the whole table.
            Tx::Postgres(_) => (
                format!(
                    "SELECT coalesce(json_agg(t), '[]')::text FROM {name} t
                      WHERE id = ANY($1::text[])"
                ),
                Param::TextList(ids.to_vec()),
            ),
            Tx::Sqlite(_) => (
                format!(
                    "SELECT coalesce(json_group_array({}), '[]') FROM {name}
                      WHERE id IN (SELECT value FROM json_each($1))",
                    json_object(table)
                ),
                Param::TextList(ids.to_vec()),
            ),
        };
        let json = self.scalar_text(&sql, &[ids]).await?;
        serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))
    }

    /// Inserts or replaces `rows`, each serialising to an object with every column.
    pub async fn upsert<R: Serialize>(
        &mut self,
        name: &str,
        table: &Table,
        rows: &[R],
    ) -> Result<(), StoreError> {
        // Bounded statements keep memory flat during a rebuild of millions of rows.
        for chunk in rows.chunks(5_000) {
            let json =
                serde_json::to_string(chunk).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            let columns: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
            let updates: Vec<String> = columns
                .iter()
                .filter(|c| **c != "id")
                .map(|c| format!("{c} = excluded.{c}"))
                .collect();
            let sql = match self {
                Tx::Postgres(_) => format!(
                    "INSERT INTO {name} ({cols})
                     SELECT {cols} FROM json_populate_recordset(NULL::{name}, $1::json)
                     ON CONFLICT (id) DO UPDATE SET {updates}",
                    cols = columns.join(", "),
                    updates = updates.join(", "),
                ),
                Tx::Sqlite(_) => format!(
                    "INSERT INTO {name} ({cols})
                     SELECT {extracts} FROM json_each($1) WHERE true
                     ON CONFLICT (id) DO UPDATE SET {updates}",
                    cols = columns.join(", "),
                    extracts = columns
                        .iter()
                        .map(|c| format!("json_extract(value, '$.{c}')"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    updates = updates.join(", "),
                ),
            };
            self.execute(&sql, &[Param::Text(json)]).await?;
        }
        Ok(())
    }

    /// Writes `rows` into a fresh, empty table (a rebuild's): COPY on PostgreSQL, bulk
    /// inserts on SQLite.
    pub async fn bulk_insert<R: Serialize>(
        &mut self,
        name: &str,
        table: &Table,
        rows: &[R],
    ) -> Result<(), StoreError> {
        let Tx::Postgres(tx) = self else {
            return self.upsert(name, table, rows).await;
        };
        let columns: Vec<&str> = table.columns.iter().map(|c| c.name).collect();
        let mut copy = tx
            .copy_in_raw(&format!(
                "COPY {name} ({}) FROM STDIN (FORMAT csv)",
                columns.join(", ")
            ))
            .await?;
        let mut csv = String::with_capacity(64 * 1024);
        for chunk in rows.chunks(2_000) {
            csv.clear();
            for row in chunk {
                let value =
                    serde_json::to_value(row).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                for (i, column) in columns.iter().enumerate() {
                    if i > 0 {
                        csv.push(',');
                    }
                    match value.get(column) {
                        None | Some(serde_json::Value::Null) => {}
                        Some(serde_json::Value::String(text)) => {
                            csv.push('"');
                            csv.push_str(&text.replace('"', "\"\""));
                            csv.push('"');
                        }
                        Some(other) => csv.push_str(&other.to_string()),
                    }
                }
                csv.push('\n');
            }
            copy.send(csv.as_bytes()).await?;
        }
        copy.finish().await?;
        Ok(())
    }

    pub async fn delete(&mut self, name: &str, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let (sql, ids) = match self {
            Tx::Postgres(_) => (
                format!("DELETE FROM {name} WHERE id = ANY($1::text[])"),
                Param::TextList(ids.to_vec()),
            ),
            Tx::Sqlite(_) => (
                format!("DELETE FROM {name} WHERE id IN (SELECT value FROM json_each($1))"),
                Param::TextList(ids.to_vec()),
            ),
        };
        self.execute(&sql, &[ids]).await.map(drop)
    }

    async fn scalar_text(&mut self, sql: &str, params: &[Param]) -> Result<String, StoreError> {
        Ok(match self {
            Tx::Postgres(tx) => {
                bind_all!(sqlx::query_scalar::<_, String>(sql), params, pg_list)
                    .fetch_one(&mut **tx)
                    .await?
            }
            Tx::Sqlite(tx) => {
                bind_all!(sqlx::query_scalar::<_, String>(sql), params, sqlite_list)
                    .fetch_one(&mut **tx)
                    .await?
            }
        })
    }
}

/// `json_object('id', id, 'col', col, …)` for SQLite.
fn json_object(table: &Table) -> String {
    let pairs: Vec<String> = table
        .columns
        .iter()
        .map(|c| format!("'{0}', {0}", c.name))
        .collect();
    format!("json_object({})", pairs.join(", "))
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
fn json_rows_sql(postgres: bool, sql: &str, columns: &[&str]) -> String {
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

/// Fixed-width UTC time text (`2026-11-21T12:00:00.000000Z`): sorts as it reads.
pub mod fixed_time {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn format(t: &DateTime<Utc>) -> String {
        t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
    }

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let raw = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&raw)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }

    pub mod option {
        use chrono::{DateTime, Utc};
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            t: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&super::format(t)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|raw| {
                    DateTime::parse_from_rfc3339(&raw)
                        .map(|t| t.with_timezone(&Utc))
                        .map_err(serde::de::Error::custom)
                })
                .transpose()
        }
    }
}
