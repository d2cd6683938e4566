//! One transaction on either backend, and every statement on view tables inside it:
//! create, index and drop tables; load rows by id; upsert, bulk insert (COPY on
//! PostgreSQL) and delete them; run a read in the transaction. A view change and its
//! checkpoint commit together because both go through one [`Tx`].
//!
//! It never commits on its own: the caller decides when the transaction ends.

use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::{Postgres, Sqlite, Transaction};

use super::sql::{bind_all, json_rows_sql, pg_list, sqlite_list, Param};
use super::{csv, nul, Kind, Table};
use crate::store::{Database, StoreError};

/// One transaction on either backend.
pub enum Tx {
    Postgres(Transaction<'static, Postgres>),
    /// With its turn at the write lock, held until the transaction ends.
    Sqlite(
        Transaction<'static, Sqlite>,
        tokio::sync::OwnedMutexGuard<()>,
    ),
}

impl Tx {
    /// Begins a transaction. On SQLite it takes the write lock at once, so that a read
    /// followed by a write can never fail on a snapshot another writer moved.
    pub async fn begin(db: &Database) -> Result<Tx, StoreError> {
        Ok(match db {
            Database::Postgres(pool) => Tx::Postgres(pool.begin().await?),
            Database::Sqlite(pool) => {
                let turn = crate::store::sqlite_write_turn(pool).await;
                Tx::Sqlite(pool.begin_with("BEGIN IMMEDIATE").await?, turn)
            }
        })
    }

    pub async fn commit(self) -> Result<(), StoreError> {
        match self {
            Tx::Postgres(tx) => tx.commit().await?,
            Tx::Sqlite(tx, _) => tx.commit().await?,
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
            Tx::Sqlite(..) => None,
        })
    }

    /// Runs a statement written with `$1`-style placeholders (both backends take them).
    pub async fn execute(&mut self, sql: &str, params: &[Param]) -> Result<u64, StoreError> {
        Ok(match self {
            Tx::Postgres(tx) => bind_all!(sqlx::query(sql), params, pg_list)
                .execute(&mut **tx)
                .await?
                .rows_affected(),
            Tx::Sqlite(tx, _) => bind_all!(sqlx::query(sql), params, sqlite_list)
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
        self.create_columns(name, table, true).await?;
        self.create_indexes(name, table).await
    }

    /// Creates a table that [`Tx::bulk_insert`] is about to fill, to be finished by
    /// [`Tx::index_table`]. On PostgreSQL it has no primary key and no index yet: building
    /// them once over the loaded rows costs a fraction of maintaining them row by row.
    /// Only for a table nobody reads or writes before it is indexed (a rebuild's).
    pub async fn create_table_unindexed(
        &mut self,
        name: &str,
        table: &Table,
    ) -> Result<(), StoreError> {
        if self.is_postgres() {
            self.create_columns(name, table, false).await
        } else {
            // SQLite's bulk insert is an upsert, which needs the key; it is small anyway.
            self.create_table(name, table).await
        }
    }

    /// Adds the primary key and indexes of a table made by [`Tx::create_table_unindexed`],
    /// the same ones [`Tx::create_table`] makes.
    pub async fn index_table(&mut self, name: &str, table: &Table) -> Result<(), StoreError> {
        if !self.is_postgres() {
            return Ok(());
        }
        self.execute(&format!("ALTER TABLE {name} ADD PRIMARY KEY (id)"), &[])
            .await?;
        self.create_indexes(name, table).await
    }

    async fn create_columns(
        &mut self,
        name: &str,
        table: &Table,
        with_key: bool,
    ) -> Result<(), StoreError> {
        let pg = self.is_postgres();
        let columns: Vec<String> = table
            .columns
            .iter()
            .map(|c| {
                // Text compares byte by byte on both backends: SQLite's BINARY, and "C"
                // on PostgreSQL rather than the database's locale. Keys and cursors
                // sort the same everywhere, and a rebuild builds its indexes a quarter
                // faster (no strcoll per comparison).
                let kind = match (c.kind, pg) {
                    (Kind::Text, true) => "TEXT COLLATE \"C\"",
                    (Kind::Text, false) => "TEXT",
                    (Kind::BigInt, true) => "BIGINT",
                    (Kind::BigInt, false) => "INTEGER",
                };
                let key = if with_key && c.name == "id" {
                    " PRIMARY KEY"
                } else {
                    ""
                };
                format!("{} {kind}{key}", c.name)
            })
            .collect();
        self.execute(
            &format!("CREATE TABLE IF NOT EXISTS {name} ({})", columns.join(", ")),
            &[],
        )
        .await
        .map(drop)
    }

    async fn create_indexes(&mut self, name: &str, table: &Table) -> Result<(), StoreError> {
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
            Tx::Sqlite(_, _) => (
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
            // A `\u0000` in a row's text would stop `json_populate_recordset` (PostgreSQL's
            // text holds no NUL) and so the projection, for good: written as U+FFFD
            // instead, on both backends alike (see `nul`).
            let json = nul::json(json);
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
                Tx::Sqlite(_, _) => format!(
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
        let mut writer = csv::RowWriter::new(table);
        let mut buffer = String::with_capacity(256 * 1024);
        for chunk in rows.chunks(2_000) {
            buffer.clear();
            for row in chunk {
                writer
                    .write(row, &mut buffer)
                    .map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))?;
            }
            copy.send(buffer.as_bytes()).await?;
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
            Tx::Sqlite(_, _) => (
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
            Tx::Sqlite(tx, _) => {
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
