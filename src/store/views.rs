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
        Fixed(t).to_string()
    }

    /// Displays as [`format`] returns, without allocating: views write millions of these
    /// when a rebuild flushes.
    pub struct Fixed<'a>(pub &'a DateTime<Utc>);

    impl std::fmt::Display for Fixed<'_> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            use chrono::{Datelike, Timelike};
            let t = self.0.naive_utc();
            let year = t.year();
            if !(0..=9999).contains(&year) {
                return write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.6fZ"));
            }
            // As chrono's `%S%.6f`: a leap second reads as second 60.
            let nanos = t.nanosecond();
            let second = t.second() + nanos / 1_000_000_000;
            let micros = (nanos % 1_000_000_000) / 1_000;
            let mut buf = *b"0000-00-00T00:00:00.000000Z";
            let mut put = |at: usize, width: usize, mut value: u32| {
                for i in (at..at + width).rev() {
                    buf[i] = b'0' + (value % 10) as u8;
                    value /= 10;
                }
            };
            put(0, 4, year as u32);
            put(5, 2, t.month());
            put(8, 2, t.day());
            put(11, 2, t.hour());
            put(14, 2, t.minute());
            put(17, 2, second);
            put(20, 6, micros);
            f.write_str(std::str::from_utf8(&buf).map_err(|_| std::fmt::Error)?)
        }
    }

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&Fixed(t))
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
                Some(t) => s.collect_str(&super::Fixed(t)),
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

/// Rows as CSV lines for `COPY … (FORMAT csv)`, written straight from each row's serde
/// form: every field lands in its column's slot, and the slots are joined in the table's
/// column order. No intermediate JSON value, and no allocation per row once warm.
mod csv {
    use std::fmt::{self, Display, Write as _};

    use serde::ser::{self, Impossible, Serialize, SerializeStruct, Serializer};

    use super::Table;

    #[derive(Debug)]
    pub struct Error(String);

    impl Display for Error {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl std::error::Error for Error {}

    impl ser::Error for Error {
        fn custom<T: Display>(msg: T) -> Self {
            Error(msg.to_string())
        }
    }

    fn unsupported(what: &str) -> Error {
        Error(format!("a view row field cannot be {what}"))
    }

    pub struct RowWriter {
        columns: Vec<&'static str>,
        /// Each column's CSV text for the row being written; `None` is NULL.
        slots: Vec<Option<String>>,
        spare: Vec<String>,
    }

    impl RowWriter {
        pub fn new(table: &Table) -> Self {
            Self {
                columns: table.columns.iter().map(|c| c.name).collect(),
                slots: table.columns.iter().map(|_| None).collect(),
                spare: Vec::new(),
            }
        }

        /// Appends `row` to `out` as one CSV line. Fields that are no column are ignored;
        /// columns that no field fills are NULL.
        pub fn write<R: Serialize + ?Sized>(
            &mut self,
            row: &R,
            out: &mut String,
        ) -> Result<(), Error> {
            for slot in &mut self.slots {
                if let Some(text) = slot.take() {
                    self.spare.push(text);
                }
            }
            row.serialize(RowSerializer { writer: self })?;
            for (i, slot) in self.slots.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                if let Some(text) = slot {
                    out.push_str(text);
                }
            }
            out.push('\n');
            Ok(())
        }
    }

    struct RowSerializer<'a> {
        writer: &'a mut RowWriter,
    }

    impl SerializeStruct for RowSerializer<'_> {
        type Ok = ();
        type Error = Error;

        fn serialize_field<T: Serialize + ?Sized>(
            &mut self,
            key: &'static str,
            value: &T,
        ) -> Result<(), Error> {
            let writer = &mut *self.writer;
            let Some(i) = writer.columns.iter().position(|c| *c == key) else {
                return Ok(());
            };
            let mut text = writer.spare.pop().unwrap_or_default();
            text.clear();
            if value.serialize(FieldSerializer { out: &mut text })? {
                writer.slots[i] = Some(text);
            } else {
                writer.spare.push(text);
            }
            Ok(())
        }

        fn end(self) -> Result<(), Error> {
            Ok(())
        }
    }

    macro_rules! not_a_row {
        ($($method:ident($($arg:ty),*) -> $ret:ty;)*) => {$(
            fn $method(self, $(_: $arg),*) -> Result<$ret, Error> {
                Err(Error("a view row must serialise as a struct".into()))
            }
        )*};
    }

    impl<'a> Serializer for RowSerializer<'a> {
        type Ok = ();
        type Error = Error;
        type SerializeSeq = Impossible<(), Error>;
        type SerializeTuple = Impossible<(), Error>;
        type SerializeTupleStruct = Impossible<(), Error>;
        type SerializeTupleVariant = Impossible<(), Error>;
        type SerializeMap = Impossible<(), Error>;
        type SerializeStruct = Self;
        type SerializeStructVariant = Impossible<(), Error>;

        fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Error> {
            Ok(self)
        }

        not_a_row! {
            serialize_bool(bool) -> ();
            serialize_i8(i8) -> ();
            serialize_i16(i16) -> ();
            serialize_i32(i32) -> ();
            serialize_i64(i64) -> ();
            serialize_u8(u8) -> ();
            serialize_u16(u16) -> ();
            serialize_u32(u32) -> ();
            serialize_u64(u64) -> ();
            serialize_f32(f32) -> ();
            serialize_f64(f64) -> ();
            serialize_char(char) -> ();
            serialize_str(&str) -> ();
            serialize_bytes(&[u8]) -> ();
            serialize_none() -> ();
            serialize_unit() -> ();
            serialize_unit_struct(&'static str) -> ();
            serialize_unit_variant(&'static str, u32, &'static str) -> ();
            serialize_seq(Option<usize>) -> Self::SerializeSeq;
            serialize_tuple(usize) -> Self::SerializeTuple;
            serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
            serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
            serialize_map(Option<usize>) -> Self::SerializeMap;
            serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
        }

        fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Error> {
            value.serialize(self)
        }

        fn serialize_newtype_struct<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            value: &T,
        ) -> Result<(), Error> {
            value.serialize(self)
        }

        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<(), Error> {
            Err(Error("a view row must serialise as a struct".into()))
        }
    }

    /// One field's value as CSV text. `Ok(false)` means NULL (nothing written).
    struct FieldSerializer<'a> {
        out: &'a mut String,
    }

    impl FieldSerializer<'_> {
        fn plain(self, value: impl Display) -> Result<bool, Error> {
            write!(self.out, "{value}").map_err(|e| Error(e.to_string()))?;
            Ok(true)
        }

        /// Integers skip the formatting machinery: a rebuild writes millions of them.
        fn integer(self, value: impl itoa::Integer) -> Result<bool, Error> {
            self.out.push_str(itoa::Buffer::new().format(value));
            Ok(true)
        }

        /// A quoted field, so that an empty text is not NULL, with `"` doubled.
        fn quoted(self, value: &(impl Display + ?Sized)) -> Result<bool, Error> {
            self.out.push('"');
            let start = self.out.len();
            write!(self.out, "{value}").map_err(|e| Error(e.to_string()))?;
            if self.out[start..].contains('"') {
                let escaped = self.out[start..].replace('"', "\"\"");
                self.out.truncate(start);
                self.out.push_str(&escaped);
            }
            self.out.push('"');
            Ok(true)
        }

        /// [`Self::quoted`] for a text at hand, copied without the formatting machinery.
        fn quoted_str(self, value: &str) -> Result<bool, Error> {
            self.out.reserve(value.len() + 2);
            self.out.push('"');
            let mut rest = value;
            while let Some(at) = rest.find('"') {
                self.out.push_str(&rest[..=at]);
                self.out.push('"');
                rest = &rest[at + 1..];
            }
            self.out.push_str(rest);
            self.out.push('"');
            Ok(true)
        }
    }

    macro_rules! plain {
        ($($method:ident($ty:ty);)*) => {$(
            fn $method(self, value: $ty) -> Result<bool, Error> {
                self.plain(value)
            }
        )*};
    }

    macro_rules! integer {
        ($($method:ident($ty:ty);)*) => {$(
            fn $method(self, value: $ty) -> Result<bool, Error> {
                self.integer(value)
            }
        )*};
    }

    impl Serializer for FieldSerializer<'_> {
        type Ok = bool;
        type Error = Error;
        type SerializeSeq = Impossible<bool, Error>;
        type SerializeTuple = Impossible<bool, Error>;
        type SerializeTupleStruct = Impossible<bool, Error>;
        type SerializeTupleVariant = Impossible<bool, Error>;
        type SerializeMap = Impossible<bool, Error>;
        type SerializeStruct = Impossible<bool, Error>;
        type SerializeStructVariant = Impossible<bool, Error>;

        plain! {
            serialize_bool(bool);
            serialize_f32(f32);
            serialize_f64(f64);
        }

        integer! {
            serialize_i8(i8);
            serialize_i16(i16);
            serialize_i32(i32);
            serialize_i64(i64);
            serialize_u8(u8);
            serialize_u16(u16);
            serialize_u32(u32);
            serialize_u64(u64);
        }

        fn serialize_char(self, value: char) -> Result<bool, Error> {
            self.quoted(&value)
        }

        fn serialize_str(self, value: &str) -> Result<bool, Error> {
            self.quoted_str(value)
        }

        fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result<bool, Error> {
            self.quoted(value)
        }

        fn serialize_bytes(self, _: &[u8]) -> Result<bool, Error> {
            Err(unsupported("bytes"))
        }

        fn serialize_none(self) -> Result<bool, Error> {
            Ok(false)
        }

        fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<bool, Error> {
            value.serialize(self)
        }

        fn serialize_unit(self) -> Result<bool, Error> {
            Ok(false)
        }

        fn serialize_unit_struct(self, _: &'static str) -> Result<bool, Error> {
            Ok(false)
        }

        fn serialize_unit_variant(
            self,
            _: &'static str,
            _: u32,
            variant: &'static str,
        ) -> Result<bool, Error> {
            self.quoted(variant)
        }

        fn serialize_newtype_struct<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            value: &T,
        ) -> Result<bool, Error> {
            value.serialize(self)
        }

        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<bool, Error> {
            Err(unsupported("an enum with data"))
        }

        fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Error> {
            Err(unsupported("a list"))
        }

        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Error> {
            Err(unsupported("a tuple"))
        }

        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct, Error> {
            Err(unsupported("a tuple"))
        }

        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, Error> {
            Err(unsupported("an enum with data"))
        }

        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Error> {
            Err(unsupported("a map"))
        }

        fn serialize_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStruct, Error> {
            Err(unsupported("a struct"))
        }

        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, Error> {
            Err(unsupported("an enum with data"))
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, TimeZone, Utc};
    use serde::Serialize;

    use super::*;

    static ROWS: Table = Table {
        name: "rows",
        columns: &[
            text("id"),
            bigint("n"),
            text("note"),
            text("at"),
            bigint("maybe"),
        ],
        indexes: &[],
    };

    #[derive(Serialize)]
    struct Row {
        // Out of column order on purpose, with a field that is no column.
        note: Option<String>,
        id: String,
        ignored: i64,
        n: i64,
        #[serde(with = "fixed_time")]
        at: DateTime<Utc>,
    }

    #[test]
    fn csv_rows_follow_the_column_order_and_quote_every_text() {
        let mut writer = csv::RowWriter::new(&ROWS);
        let mut out = String::new();
        let at = Utc.with_ymd_and_hms(2026, 11, 21, 9, 5, 7).unwrap();
        for row in [
            Row {
                note: Some("say \"hi\", twice\nplease".into()),
                id: "a,1".into(),
                ignored: 7,
                n: -42,
                at,
            },
            Row {
                note: None,
                id: "".into(),
                ignored: 0,
                n: 0,
                at,
            },
        ] {
            writer.write(&row, &mut out).unwrap();
        }
        assert_eq!(
            out,
            "\"a,1\",-42,\"say \"\"hi\"\", twice\nplease\",\"2026-11-21T09:05:07.000000Z\",\n\
             \"\",0,,\"2026-11-21T09:05:07.000000Z\",\n"
        );
    }

    #[test]
    fn fixed_time_reads_as_chrono_formats_it() {
        let times = [
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            Utc.timestamp_opt(1_790_000_000, 123_456_789).unwrap(),
            Utc.timestamp_opt(0, 999_999_999).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10000, 1, 1, 0, 0, 0).unwrap(),
            // A leap second.
            DateTime::from_timestamp(1_483_228_799, 1_500_000_000).unwrap(),
        ];
        for t in times {
            assert_eq!(
                fixed_time::format(&t),
                t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
                "{t:?}"
            );
            let json = serde_json::to_string(&fixed_time::Fixed(&t).to_string()).unwrap();
            assert_eq!(
                serde_json::to_string(&Wrapped { t }).unwrap(),
                format!("{{\"t\":{json}}}")
            );
        }
    }

    #[derive(Serialize)]
    struct Wrapped {
        #[serde(with = "fixed_time")]
        t: DateTime<Utc>,
    }
}
