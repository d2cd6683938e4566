//! Exports of the log for analysis and training: every event after a cursor, up to one
//! horizon, as JSON lines or Parquet, in the documented schema (README, "Exporting the
//! log"), which is a contract like the event names. `orderlog export` and
//! `GET /v1/events/export` both go through [`run`].
//!
//! Consistent and gap-free: on PostgreSQL the log is read by one COPY statement, so one
//! snapshot and one horizon (`pg_snapshot_xmin`), as a rebuild reads it
//! (`reader::stream_after`); on SQLite by one SELECT, one read transaction. Every
//! export ends with the cursor of the last event it read (filtered out or not), and an
//! export with the same filters from that cursor continues with no gap and no repeat.
//!
//! Personal data (`domain::personal`) leaves only when asked for, opened by the vault
//! (and erased customers' shown as erased); without it the sealed field is cut from
//! each exported payload. This module never writes
//! to the database, and never holds more than a batch (events) or a row group (Parquet)
//! in memory, except for `--shape sequences`, which keeps one entry per order.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Datelike, Timelike, Utc};
use futures::StreamExt;
use parquet::basic::{Compression, Encoding};
use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;
use parquet::schema::types::ColumnPath;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use super::reader::Cursor;
use super::vault::{OpenKeys, Vault};
use super::{copy_out, Database, StoreError};
use crate::domain::personal::SEALED_FIELD;
use crate::domain::upcast;

/// The version of the export schema, written into every Parquet file's metadata
/// (`orderlog.schema`). A column is only ever added, at the end, with a new version.
pub const SCHEMA_VERSION: &str = "1";

/// Events read per batch, and so the most held at once between the reader and writer.
const BATCH: usize = 4_096;
/// Rows per Parquet row group.
pub const ROW_GROUP: usize = 65_536;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (`jsonl`, also called `ndjson`).
    Jsonl,
    Parquet,
}

impl Format {
    pub fn parse(raw: &str) -> Option<Format> {
        match raw {
            "jsonl" | "ndjson" => Some(Format::Jsonl),
            "parquet" => Some(Format::Parquet),
            _ => None,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Jsonl => "application/x-ndjson",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Shape {
    /// One row per event.
    #[default]
    Events,
    /// One row per order: its events' types, times and amounts, in log order.
    Sequences,
}

impl Shape {
    pub fn parse(raw: &str) -> Option<Shape> {
        match raw {
            "events" => Some(Shape::Events),
            "sequences" => Some(Shape::Sequences),
            _ => None,
        }
    }
}

/// Which event types an export keeps (the API's and CLI's `types` patterns).
pub type TypeMatch = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// A time of `--since`/`--until`: RFC 3339 (`2026-12-01T21:00:00Z`, any offset), or a
/// day (`2026-12-01`, its midnight UTC).
pub fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|day| day.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            format!(
                "`{raw}` is not a time: use RFC 3339 (2026-12-01T21:00:00Z) or a day (2026-12-01)"
            )
        })
}

/// What to export.
#[derive(Clone)]
pub struct Options {
    pub format: Format,
    pub shape: Shape,
    /// Events after this cursor.
    pub after: Cursor,
    /// Only events recorded at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only events recorded before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only events whose type this accepts; all of them when `None`.
    pub types: Option<TypeMatch>,
    /// Open the personal data (`domain::personal`) in the payloads, rather than cut it.
    pub include_personal_data: bool,
}

impl Options {
    pub fn new(format: Format) -> Options {
        Options {
            format,
            shape: Shape::Events,
            after: Cursor::START,
            since: None,
            until: None,
            types: None,
            include_personal_data: false,
        }
    }

    /// Whether an event of `event_type` recorded at `recorded_at_us` is exported;
    /// `window` is [`Options::window`].
    fn keeps(&self, window: (i64, i64), event_type: &str, recorded_at_us: i64) -> bool {
        recorded_at_us >= window.0
            && recorded_at_us < window.1
            && self.types.as_ref().is_none_or(|keep| keep(event_type))
    }

    /// `since` and `until` in microseconds, unbounded when absent.
    fn window(&self) -> (i64, i64) {
        (
            self.since.map_or(i64::MIN, |t| t.timestamp_micros()),
            self.until.map_or(i64::MAX, |t| t.timestamp_micros()),
        )
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("format", &self.format)
            .field("shape", &self.shape)
            .field("after", &self.after)
            .field("since", &self.since)
            .field("until", &self.until)
            .field("types", &self.types.is_some())
            .field("include_personal_data", &self.include_personal_data)
            .finish()
    }
}

/// How an export ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Resume here (`--after`): the last event read, or the starting cursor.
    pub cursor: Cursor,
    /// Events read from the log, kept or not.
    pub read: u64,
    /// Events written (for `sequences`, the events in its rows).
    pub events: u64,
    /// Rows written: events, or orders for `sequences`.
    pub rows: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("could not write the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("could not write the Parquet file: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("the export's writer stopped: {0}")]
    Writer(String),
}

/// Exports the log as `options` say into `sink`, and returns where it ended. The log
/// is read on this runtime; rows are encoded and written on a blocking thread, so a
/// sink may block (a file, stdout, a bounded channel to an HTTP body).
pub async fn run<W: Write + Send + 'static>(
    db: &Database,
    vault: Option<&Vault>,
    options: Options,
    sink: W,
) -> Result<Summary, ExportError> {
    let vault = match (options.include_personal_data, vault) {
        (false, _) => None,
        (true, Some(vault)) => Some(vault.clone()),
        (true, None) => {
            return Err(ExportError::Writer(
                "personal data cannot be exported without the server's keys".into(),
            ))
        }
    };
    let batches = read(db, options.after, vault);
    tokio::task::spawn_blocking(move || write(batches, &options, sink))
        .await
        .map_err(|e| ExportError::Writer(e.to_string()))?
}

// ---------------------------------------------------------------------------------------
// Reading: batches of raw rows, their text fields back to back in one buffer.

/// A field's place in [`Batch::text`].
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u32,
}

struct RawRow {
    cursor: Cursor,
    event_id: uuid::Uuid,
    sequence: i64,
    recorded_at_us: i64,
    event_type: Span,
    event_version: Span,
    aggregate_type: Span,
    aggregate_id: Span,
    payload: Span,
    correlation_id: Option<Span>,
    causation_id: Option<Span>,
    traceparent: Option<Span>,
}

/// Up to [`BATCH`] events: one allocation for all their text, not one per field.
#[derive(Default)]
struct Batch {
    text: String,
    rows: Vec<RawRow>,
    /// The data keys of the batch's personal data, when it is exported.
    keys: OpenKeys,
}

impl Batch {
    fn with_capacity() -> Batch {
        Batch {
            text: String::with_capacity(BATCH * 1024),
            rows: Vec::with_capacity(BATCH),
            keys: OpenKeys::default(),
        }
    }

    fn push(&mut self, s: &str) -> Span {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        Span {
            start,
            len: s.len() as u32,
        }
    }

    fn get(&self, span: Span) -> &str {
        &self.text[span.start as usize..(span.start + span.len) as usize]
    }

    /// Pushes a row from its fields as read.
    #[allow(clippy::too_many_arguments)]
    fn push_row(
        &mut self,
        cursor: Cursor,
        event_id: uuid::Uuid,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: i64,
        event_type: &str,
        event_version: &str,
        payload: &str,
        recorded_at_us: i64,
        metadata: &str,
    ) {
        let event_type = self.push(event_type);
        let event_version = self.push(event_version);
        let aggregate_type = self.push(aggregate_type);
        let aggregate_id = self.push(aggregate_id);
        let payload = self.push(payload);
        // A metadata field that is not text is left out: the columns are strings.
        let trace: Trace<'_> = serde_json::from_str(metadata).unwrap_or_default();
        let correlation_id = trace.correlation_id.map(|s| self.push(&s.0));
        let causation_id = trace.causation_id.map(|s| self.push(&s.0));
        let traceparent = trace.traceparent.map(|s| self.push(&s.0));
        self.rows.push(RawRow {
            cursor,
            event_id,
            sequence,
            recorded_at_us,
            event_type,
            event_version,
            aggregate_type,
            aggregate_id,
            payload,
            correlation_id,
            causation_id,
            traceparent,
        });
    }
}

/// A string borrowed from the JSON text when it has no escapes.
#[derive(Deserialize, Default)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

/// The metadata fields an export keeps.
#[derive(Deserialize, Default)]
struct Trace<'a> {
    #[serde(borrow, default)]
    correlation_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    causation_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    traceparent: Option<Str<'a>>,
}

type Batches = mpsc::Receiver<Result<Batch, StoreError>>;

/// Every event after `after` up to one horizon, in cursor order, read ahead on a task.
/// The log's batches after `after`; with a vault, each with the data keys that open its
/// personal data, brought in one query per batch.
fn read(db: &Database, after: Cursor, vault: Option<Vault>) -> Batches {
    let raw = read_raw(db, after);
    let Some(vault) = vault else {
        return raw;
    };
    let (sender, receiver) = mpsc::channel(2);
    tokio::spawn(async move {
        let mut raw = raw;
        while let Some(batch) = raw.recv().await {
            let keyed = match batch {
                Ok(mut batch) => {
                    let payloads = batch.rows.iter().map(|r| batch.get(r.payload));
                    match vault.keys_for(payloads).await {
                        Ok(keys) => {
                            batch.keys = keys;
                            Ok(batch)
                        }
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            if sender.send(keyed).await.is_err() {
                return;
            }
        }
    });
    receiver
}

fn read_raw(db: &Database, after: Cursor) -> Batches {
    let (sender, receiver) = mpsc::channel(2);
    let db = db.clone();
    tokio::spawn(async move {
        let read = match &db {
            Database::Postgres(pool) => read_postgres(pool, after, &sender).await,
            Database::Sqlite(pool) => read_sqlite(pool, after, &sender).await,
        };
        if let Err(e) = read {
            let _ = sender.send(Err(e)).await;
        }
    });
    receiver
}

/// As `reader::stream_after`: one COPY, so one snapshot, and the horizon its rows stop
/// at is the oldest transaction running when it starts. With the metadata.
async fn read_postgres(
    pool: &sqlx::PgPool,
    after: Cursor,
    sender: &mpsc::Sender<Result<Batch, StoreError>>,
) -> Result<(), StoreError> {
    let sql = super::reader::copy_after_sql(after, true);
    let mut conn = pool.acquire().await?;
    let outcome = async {
        let mut chunks = conn.copy_out_raw(&sql).await?;
        let mut rows = copy_out::BinaryRows::default();
        let mut batch = Batch::with_capacity();
        while let Some(chunk) = chunks.next().await {
            rows.feed(&chunk?, |fields| copy_row(&mut batch, fields))?;
            if batch.rows.len() >= BATCH {
                let full = std::mem::replace(&mut batch, Batch::with_capacity());
                if sender.send(Ok(full)).await.is_err() {
                    return Ok(false);
                }
            }
        }
        if !rows.finished() {
            return Err(StoreError::Corrupt(
                "the log's COPY stream ended early".into(),
            ));
        }
        if !batch.rows.is_empty() && sender.send(Ok(batch)).await.is_err() {
            return Ok(false);
        }
        Ok(true)
    }
    .await;
    if !matches!(outcome, Ok(true)) {
        // Rows of the COPY may still be on their way: the connection is not reusable.
        conn.close_on_drop();
    }
    outcome.map(drop)
}

fn copy_row(batch: &mut Batch, fields: &copy_out::Fields<'_>) -> Result<(), StoreError> {
    use copy_out::{int8, uuid};
    const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
    let [transaction_id, position, event_id, aggregate_type, aggregate_id, sequence, event_type, event_version, payload, recorded_at, metadata] =
        fields[..]
    else {
        return Err(StoreError::Corrupt(format!(
            "a row of the export's COPY has {} fields, not 11",
            fields.len()
        )));
    };
    fn text<'a>(field: Option<&'a [u8]>, column: &str) -> Result<&'a str, StoreError> {
        field
            .and_then(|f| std::str::from_utf8(f).ok())
            .ok_or_else(|| StoreError::Corrupt(format!("{column} is NULL or not UTF-8")))
    }
    batch.push_row(
        Cursor {
            transaction_id: int8(transaction_id, "transaction_id")?,
            position: int8(position, "global_position")?,
        },
        uuid(event_id, "event_id")?,
        text(aggregate_type, "aggregate_type")?,
        text(aggregate_id, "aggregate_id")?,
        int8(sequence, "sequence")?,
        text(event_type, "event_type")?,
        text(event_version, "event_version")?,
        text(payload, "payload")?,
        int8(recorded_at, "recorded_at")? + POSTGRES_EPOCH_MICROS,
        text(metadata, "metadata")?,
    );
    Ok(())
}

/// One SELECT, so one read transaction: SQLite's single writer commits positions in
/// order, and nothing can appear behind the last one read.
/// Events per query on SQLite, packed into one text (see [`read_sqlite`]).
const SQLITE_CHUNK: i64 = 2_048;

/// One read transaction, so one snapshot, read in chunks that SQLite packs into one
/// text each: its fields joined by U+001F, its events by U+001E, characters that JSON
/// text never holds raw and ids and names may not. Row by row, sqlx's SQLite worker
/// hands over about 144,000 rows/s, under half the export's target; packed, the
/// per-row cost stays inside SQLite (BENCHMARKS.md, the export).
async fn read_sqlite(
    pool: &sqlx::SqlitePool,
    after: Cursor,
    sender: &mpsc::Sender<Result<Batch, StoreError>>,
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let mut from = after.position;
    loop {
        let packed: Option<(String, i64, i64)> = sqlx::query_as(
            // `concat_ws` builds each event's text once, where a chain of `||` copies the
            // growing text at every step (75,000 events/s in a test of this query).
            "SELECT group_concat(
                        concat_ws(char(31), global_position, event_id, aggregate_type,
                                  aggregate_id, sequence, event_type, event_version,
                                  recorded_at, coalesce(metadata, ''), payload),
                        char(30) ORDER BY global_position),
                    max(global_position), count(*)
               FROM (SELECT * FROM events WHERE global_position > $1
                      ORDER BY global_position LIMIT $2)
             HAVING count(*) > 0",
        )
        .bind(from)
        .bind(SQLITE_CHUNK)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((text, last, count)) = packed else {
            break;
        };
        let mut batch = Batch::with_capacity();
        for record in text.split('\u{1e}') {
            push_packed(&mut batch, record)?;
        }
        if batch.rows.len() as i64 != count {
            return Err(StoreError::Corrupt(format!(
                "the export read {} events where SQLite counted {count}",
                batch.rows.len()
            )));
        }
        if sender.send(Ok(batch)).await.is_err() {
            return Ok(());
        }
        if count < SQLITE_CHUNK {
            break;
        }
        from = last;
    }
    tx.commit().await?;
    Ok(())
}

/// One event of a packed SQLite chunk into `batch`.
fn push_packed(batch: &mut Batch, record: &str) -> Result<(), StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("events.{what} of an exported row"));
    // The payload is last and whole, whatever it holds.
    let mut fields = record.splitn(10, '\u{1f}');
    let mut next = |what: &str| fields.next().ok_or_else(|| corrupt(what));
    let position: i64 = next("global_position")?
        .parse()
        .map_err(|_| corrupt("global_position"))?;
    let event_id = uuid::Uuid::parse_str(next("event_id")?).map_err(|_| corrupt("event_id"))?;
    let aggregate_type = next("aggregate_type")?;
    let aggregate_id = next("aggregate_id")?;
    let sequence: i64 = next("sequence")?.parse().map_err(|_| corrupt("sequence"))?;
    let event_type = next("event_type")?;
    let event_version = next("event_version")?;
    let recorded_at =
        DateTime::parse_from_rfc3339(next("recorded_at")?).map_err(|_| corrupt("recorded_at"))?;
    let metadata = next("metadata")?;
    let payload = next("payload")?;
    batch.push_row(
        Cursor {
            transaction_id: 0,
            position,
        },
        event_id,
        aggregate_type,
        aggregate_id,
        sequence,
        event_type,
        event_version,
        payload,
        recorded_at.timestamp_micros(),
        if metadata.is_empty() { "{}" } else { metadata },
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// One event, ready to write.

/// The typed columns an event may have, read from its payload.
#[derive(Debug, Default, Clone, PartialEq)]
struct Common<'a> {
    order_id: Option<Cow<'a, str>>,
    customer_id: Option<Cow<'a, str>>,
    sku: Option<Cow<'a, str>>,
    quantity: Option<i64>,
    amount_minor: Option<i64>,
    currency: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct MoneyIn<'a> {
    amount: i64,
    #[serde(borrow)]
    currency: Str<'a>,
}

/// A payload's common columns and whether it holds any of `personal`, in one pass over
/// its top-level fields (their values are only skipped, unless one is wanted).
struct Scan<'a, 'p> {
    personal: &'p [&'p str],
    common: Common<'a>,
    money: Option<MoneyIn<'a>>,
    /// A money field of lower precedence (`total`), kept if `amount` is absent.
    total: Option<MoneyIn<'a>>,
    currency: Option<Cow<'a, str>>,
    has_personal: bool,
}

impl<'de> Visitor<'de> for &mut Scan<'de, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Str<'de>>()? {
            let raw: &'de RawValue = map.next_value()?;
            let text = |raw: &'de RawValue| serde_json::from_str::<Str<'de>>(raw.get()).ok();
            match &*key.0 {
                "order_id" => self.common.order_id = text(raw).map(|s| s.0),
                "customer_id" => self.common.customer_id = text(raw).map(|s| s.0),
                "sku" => self.common.sku = text(raw).map(|s| s.0),
                "quantity" => self.common.quantity = serde_json::from_str(raw.get()).ok(),
                "amount" => self.money = serde_json::from_str(raw.get()).ok(),
                "total" => self.total = serde_json::from_str(raw.get()).ok(),
                "currency" => self.currency = text(raw).map(|s| s.0),
                name if self.personal.contains(&name) => self.has_personal = true,
                _ => {}
            }
        }
        Ok(())
    }
}

/// A payload's common columns, and whether it holds one of `personal`. A payload that
/// is not a JSON object has none.
fn scan<'a>(payload: &'a str, personal: &[&str]) -> (Common<'a>, bool) {
    let mut scan = Scan {
        personal,
        common: Common::default(),
        money: None,
        total: None,
        currency: None,
        has_personal: false,
    };
    let mut de = serde_json::Deserializer::from_str(payload);
    if de.deserialize_map(&mut scan).is_err() {
        return (Common::default(), false);
    }
    let Scan {
        mut common,
        money,
        total,
        currency,
        has_personal,
        ..
    } = scan;
    match money.or(total) {
        Some(m) => {
            common.amount_minor = Some(m.amount);
            common.currency = Some(m.currency.0);
        }
        None => common.currency = currency,
    }
    (common, has_personal)
}

/// `payload` without its top-level fields named in `personal`, other fields as they
/// were, in their order.
fn strip(payload: &str, personal: &[&str]) -> String {
    struct Strip<'p> {
        personal: &'p [&'p str],
        out: String,
    }
    impl<'de> Visitor<'de> for &mut Strip<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            self.out.push('{');
            let mut first = true;
            while let Some(key) = map.next_key::<Str<'de>>()? {
                let raw: &'de RawValue = map.next_value()?;
                if self.personal.contains(&&*key.0) {
                    continue;
                }
                if !first {
                    self.out.push(',');
                }
                first = false;
                push_json_str(&mut self.out, &key.0);
                self.out.push(':');
                self.out.push_str(raw.get());
            }
            self.out.push('}');
            Ok(())
        }
    }
    let mut strip = Strip {
        personal,
        out: String::with_capacity(payload.len()),
    };
    let mut de = serde_json::Deserializer::from_str(payload);
    match de.deserialize_map(&mut strip) {
        Ok(()) => strip.out,
        // Only a payload that scanned as an object gets here.
        Err(_) => "{}".to_owned(),
    }
}

fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // Writing JSON into a String cannot fail.
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    }
}

/// One event as exported: borrowed from its batch, or from its upcast payload.
struct Event<'a> {
    row: &'a RawRow,
    event_type: &'a str,
    event_version: &'a str,
    aggregate_type: &'a str,
    aggregate_id: &'a str,
    payload: &'a str,
    common: Common<'a>,
    correlation_id: Option<&'a str>,
    causation_id: Option<&'a str>,
    traceparent: Option<&'a str>,
}

/// Turns each kept row of `batch` into an [`Event`] and hands it to `each`.
fn each_event(
    batch: &Batch,
    options: &Options,
    mut each: impl FnMut(Event<'_>) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let window = options.window();
    for row in &batch.rows {
        let event_type = batch.get(row.event_type);
        if !options.keeps(window, event_type, row.recorded_at_us) {
            continue;
        }
        let stored_version = batch.get(row.event_version);
        let stored_payload = batch.get(row.payload);
        // Today's version of the event, as every reader of the log gets it.
        let upcast_payload;
        let (event_version, payload) =
            match upcast::upcast(event_type, stored_version, stored_payload) {
                Some(Ok((version, payload))) => {
                    upcast_payload = payload;
                    (version, upcast_payload.as_str())
                }
                None | Some(Err(_)) => (stored_version, stored_payload),
            };
        // Personal data is opened (or shown erased) when asked for, else cut out.
        let cut: &[&str] = if options.include_personal_data {
            &[]
        } else {
            &[SEALED_FIELD]
        };
        let (common, has_personal) = scan(payload, cut);
        let changed;
        let payload = if has_personal {
            changed = strip(payload, cut);
            changed.as_str()
        } else if options.include_personal_data {
            match batch.keys.reveal(payload).map_err(ExportError::Store)? {
                Cow::Borrowed(_) => payload,
                Cow::Owned(revealed) => {
                    changed = revealed;
                    changed.as_str()
                }
            }
        } else {
            payload
        };
        each(Event {
            row,
            event_type,
            event_version,
            aggregate_type: batch.get(row.aggregate_type),
            aggregate_id: batch.get(row.aggregate_id),
            payload,
            common,
            correlation_id: row.correlation_id.map(|s| batch.get(s)),
            causation_id: row.causation_id.map(|s| batch.get(s)),
            traceparent: row.traceparent.map(|s| batch.get(s)),
        })?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Writing.

/// Receives every batch, writes what `options` keep, and ends the output (its trailer
/// or footer, with the cursor).
fn write<W: Write + Send>(
    mut batches: Batches,
    options: &Options,
    sink: W,
) -> Result<Summary, ExportError> {
    let mut summary = Summary {
        cursor: options.after,
        read: 0,
        events: 0,
        rows: 0,
    };
    let mut out: Box<dyn Output + '_> = match (options.format, options.shape) {
        (Format::Jsonl, Shape::Events) => Box::new(JsonlEvents::new(sink)),
        (Format::Parquet, Shape::Events) => Box::new(ParquetEvents::new(sink)?),
        (_, Shape::Sequences) => Box::new(Sequences::new(options.format, sink)),
    };
    while let Some(batch) = batches.blocking_recv() {
        let batch = batch?;
        each_event(&batch, options, |event| {
            summary.events += u64::from(out.event(&event)?);
            Ok(())
        })?;
        summary.read += batch.rows.len() as u64;
        if let Some(last) = batch.rows.last() {
            summary.cursor = last.cursor;
        }
    }
    summary.rows = out.finish(&summary)?;
    Ok(summary)
}

trait Output {
    /// Takes one event; false when this output leaves it out.
    fn event(&mut self, event: &Event<'_>) -> Result<bool, ExportError>;
    /// Writes the rest and the end (with `summary`'s cursor); returns the rows written.
    fn finish(&mut self, summary: &Summary) -> Result<u64, ExportError>;
}

/// The trailer line of a JSON-lines export: the only line without a `position`.
fn jsonl_trailer(summary: &Summary, rows: u64) -> String {
    format!(
        "{{\"cursor\":\"{}\",\"events\":{},\"rows\":{rows},\"schema\":\"{SCHEMA_VERSION}\"}}\n",
        summary.cursor.token(),
        summary.events
    )
}

/// How much JSON text is gathered before each write to the sink.
const FLUSH_AT: usize = 256 * 1024;

struct JsonlEvents<W: Write> {
    sink: W,
    buf: Vec<u8>,
    rows: u64,
}

impl<W: Write> JsonlEvents<W> {
    fn new(sink: W) -> Self {
        JsonlEvents {
            sink,
            buf: Vec::with_capacity(FLUSH_AT + 64 * 1024),
            rows: 0,
        }
    }
}

impl<W: Write> Output for JsonlEvents<W> {
    fn event(&mut self, e: &Event<'_>) -> Result<bool, ExportError> {
        let b = &mut self.buf;
        b.extend_from_slice(b"{\"position\":");
        push_int(b, e.row.cursor.position);
        b.extend_from_slice(b",\"transaction_id\":");
        push_int(b, e.row.cursor.transaction_id);
        b.extend_from_slice(b",\"event_id\":\"");
        let mut id = [0u8; 36];
        b.extend_from_slice(e.row.event_id.hyphenated().encode_lower(&mut id).as_bytes());
        b.extend_from_slice(b"\",\"event_type\":");
        push_str(b, e.event_type);
        b.extend_from_slice(b",\"event_version\":");
        push_str(b, e.event_version);
        b.extend_from_slice(b",\"aggregate_type\":");
        push_str(b, e.aggregate_type);
        b.extend_from_slice(b",\"aggregate_id\":");
        push_str(b, e.aggregate_id);
        b.extend_from_slice(b",\"sequence\":");
        push_int(b, e.row.sequence);
        b.extend_from_slice(b",\"recorded_at\":\"");
        push_time(b, e.row.recorded_at_us);
        b.push(b'"');
        let c = &e.common;
        push_opt_str(b, b",\"order_id\":", c.order_id.as_deref());
        push_opt_str(b, b",\"customer_id\":", c.customer_id.as_deref());
        push_opt_str(b, b",\"sku\":", c.sku.as_deref());
        push_opt_int(b, b",\"quantity\":", c.quantity);
        push_opt_int(b, b",\"amount_minor\":", c.amount_minor);
        push_opt_str(b, b",\"currency\":", c.currency.as_deref());
        push_opt_str(b, b",\"correlation_id\":", e.correlation_id);
        push_opt_str(b, b",\"causation_id\":", e.causation_id);
        push_opt_str(b, b",\"traceparent\":", e.traceparent);
        b.extend_from_slice(b",\"payload\":");
        push_payload(b, e.payload);
        b.extend_from_slice(b"}\n");
        self.rows += 1;
        if b.len() >= FLUSH_AT {
            self.sink.write_all(b)?;
            b.clear();
        }
        Ok(true)
    }

    fn finish(&mut self, summary: &Summary) -> Result<u64, ExportError> {
        self.buf
            .extend_from_slice(jsonl_trailer(summary, self.rows).as_bytes());
        self.sink.write_all(&self.buf)?;
        self.buf.clear();
        self.sink.flush()?;
        Ok(self.rows)
    }
}

fn push_int(b: &mut Vec<u8>, n: i64) {
    b.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A JSON string. Names and ids rarely need escaping: those that do not are copied.
fn push_str(b: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|c| c >= 0x20 && c != b'"' && c != b'\\') {
        b.push(b'"');
        b.extend_from_slice(s.as_bytes());
        b.push(b'"');
    } else {
        // Writing JSON into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *b, s);
    }
}

fn push_opt_str(b: &mut Vec<u8>, key: &[u8], s: Option<&str>) {
    b.extend_from_slice(key);
    match s {
        Some(s) => push_str(b, s),
        None => b.extend_from_slice(b"null"),
    }
}

fn push_opt_int(b: &mut Vec<u8>, key: &[u8], n: Option<i64>) {
    b.extend_from_slice(key);
    match n {
        Some(n) => push_int(b, n),
        None => b.extend_from_slice(b"null"),
    }
}

/// A payload inline, on one line: JSON text can only hold a raw line break as
/// whitespace between tokens (inside a string it is escaped), so each becomes a space.
fn push_payload(b: &mut Vec<u8>, payload: &str) {
    let start = b.len();
    b.extend_from_slice(payload.as_bytes());
    if payload.bytes().any(|c| c == b'\n' || c == b'\r') {
        for c in &mut b[start..] {
            if *c == b'\n' || *c == b'\r' {
                *c = b' ';
            }
        }
    }
}

/// RFC 3339 in UTC with exactly six fractional digits: `2026-12-01T21:28:42.123456Z`.
fn push_time(b: &mut Vec<u8>, micros: i64) {
    let Some(t) = DateTime::from_timestamp_micros(micros) else {
        b.extend_from_slice(b"1970-01-01T00:00:00.000000Z");
        return;
    };
    let pad = |b: &mut Vec<u8>, n: u32, width: usize| {
        let mut digits = [b'0'; 10];
        let mut n = n;
        for i in (0..width).rev() {
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        b.extend_from_slice(&digits[..width]);
    };
    pad(b, t.year().clamp(0, 9999) as u32, 4);
    b.push(b'-');
    pad(b, t.month(), 2);
    b.push(b'-');
    pad(b, t.day(), 2);
    b.push(b'T');
    pad(b, t.hour(), 2);
    b.push(b':');
    pad(b, t.minute(), 2);
    b.push(b':');
    pad(b, t.second(), 2);
    b.push(b'.');
    pad(b, t.timestamp_subsec_micros(), 6);
    b.push(b'Z');
}

/// The Parquet schema of `--shape events`: the README's table, column for column.
const EVENTS_SCHEMA: &str = "message orderlog_event {
    required int64 position;
    required int64 transaction_id;
    required binary event_id (STRING);
    required binary event_type (STRING);
    required binary event_version (STRING);
    required binary aggregate_type (STRING);
    required binary aggregate_id (STRING);
    required int64 sequence;
    required int64 recorded_at (TIMESTAMP(MICROS,true));
    optional binary order_id (STRING);
    optional binary customer_id (STRING);
    optional binary sku (STRING);
    optional int64 quantity;
    optional int64 amount_minor;
    optional binary currency (STRING);
    optional binary correlation_id (STRING);
    optional binary causation_id (STRING);
    optional binary traceparent (STRING);
    required binary payload (JSON);
}";

/// Columns whose values are mostly distinct: a dictionary would only cost.
const UNIQUE_COLUMNS: &[&str] = &[
    "event_id",
    "payload",
    "correlation_id",
    "causation_id",
    "traceparent",
];

fn properties() -> Arc<WriterProperties> {
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_created_by(format!("orderlog {}", env!("CARGO_PKG_VERSION")));
    for column in UNIQUE_COLUMNS {
        // Nor would their statistics serve a reader: nobody prunes row groups by payload.
        builder = builder
            .set_column_dictionary_enabled(ColumnPath::from(*column), false)
            .set_column_encoding(ColumnPath::from(*column), Encoding::PLAIN)
            .set_column_statistics_enabled(ColumnPath::from(*column), EnabledStatistics::None);
    }
    Arc::new(builder.build())
}

/// A string column of one row group: its values back to back in one buffer.
#[derive(Default)]
struct StrColumn {
    data: Vec<u8>,
    ends: Vec<usize>,
    /// Definition levels (1 present, 0 null), for an optional column.
    defs: Vec<i16>,
}

impl StrColumn {
    fn push(&mut self, s: &str) {
        self.data.extend_from_slice(s.as_bytes());
        self.ends.push(self.data.len());
        self.defs.push(1);
    }

    fn push_opt(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.push(s),
            None => self.defs.push(0),
        }
    }

    /// The values as Parquet takes them: slices of one shared buffer, no copy each.
    fn values(&mut self) -> Vec<ByteArray> {
        let data = Bytes::from(std::mem::take(&mut self.data));
        let mut start = 0;
        let values = self
            .ends
            .iter()
            .map(|&end| {
                let value = ByteArray::from(data.slice(start..end));
                start = end;
                value
            })
            .collect();
        self.ends.clear();
        values
    }
}

#[derive(Default)]
struct IntColumn {
    values: Vec<i64>,
    defs: Vec<i16>,
}

impl IntColumn {
    fn push(&mut self, n: i64) {
        self.values.push(n);
        self.defs.push(1);
    }

    fn push_opt(&mut self, n: Option<i64>) {
        match n {
            Some(n) => self.push(n),
            None => self.defs.push(0),
        }
    }
}

/// A column of one row group, in schema order.
enum Column {
    Int(IntColumn, bool),
    Str(StrColumn, bool),
}

/// Writes `columns` (in schema order) as the next row group of `writer`.
fn write_row_group<W: Write + Send>(
    writer: &mut SerializedFileWriter<W>,
    columns: &mut [&mut Column],
) -> Result<(), ExportError> {
    let mut group = writer.next_row_group()?;
    for column in columns.iter_mut() {
        let Some(mut out) = group.next_column()? else {
            return Err(ExportError::Writer("the schema has fewer columns".into()));
        };
        match column {
            Column::Int(c, optional) => {
                let defs = optional.then_some(&c.defs[..]);
                out.typed::<Int64Type>()
                    .write_batch(&c.values, defs, None)?;
                c.values.clear();
                c.defs.clear();
            }
            Column::Str(c, optional) => {
                let values = c.values();
                let defs = optional.then_some(&c.defs[..]);
                out.typed::<ByteArrayType>()
                    .write_batch(&values, defs, None)?;
                c.defs.clear();
            }
        }
        out.close()?;
    }
    group.close()?;
    Ok(())
}

/// Ends a Parquet file: its footer, with the cursor to resume from.
fn finish_file<W: Write + Send>(
    mut writer: SerializedFileWriter<W>,
    summary: &Summary,
    shape: &str,
) -> Result<(), ExportError> {
    for (key, value) in [
        ("orderlog.cursor", summary.cursor.token()),
        ("orderlog.schema", SCHEMA_VERSION.to_owned()),
        ("orderlog.shape", shape.to_owned()),
        ("orderlog.events", summary.events.to_string()),
    ] {
        writer.append_key_value_metadata(KeyValue::new(key.to_owned(), value));
    }
    let mut sink = writer.into_inner()?;
    sink.flush()?;
    Ok(())
}

struct ParquetEvents<W: Write + Send> {
    writer: Option<SerializedFileWriter<W>>,
    columns: Vec<Column>,
    rows: usize,
    total: u64,
}

impl<W: Write + Send> ParquetEvents<W> {
    fn new(sink: W) -> Result<Self, ExportError> {
        let schema = Arc::new(parse_message_type(EVENTS_SCHEMA)?);
        let writer = SerializedFileWriter::new(sink, schema, properties())?;
        let int = |optional| Column::Int(IntColumn::default(), optional);
        let text = |optional| Column::Str(StrColumn::default(), optional);
        Ok(ParquetEvents {
            writer: Some(writer),
            columns: vec![
                int(false),  // position
                int(false),  // transaction_id
                text(false), // event_id
                text(false), // event_type
                text(false), // event_version
                text(false), // aggregate_type
                text(false), // aggregate_id
                int(false),  // sequence
                int(false),  // recorded_at
                text(true),  // order_id
                text(true),  // customer_id
                text(true),  // sku
                int(true),   // quantity
                int(true),   // amount_minor
                text(true),  // currency
                text(true),  // correlation_id
                text(true),  // causation_id
                text(true),  // traceparent
                text(false), // payload
            ],
            rows: 0,
            total: 0,
        })
    }

    fn flush(&mut self) -> Result<(), ExportError> {
        if self.rows == 0 {
            return Ok(());
        }
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| ExportError::Writer("the file is closed".into()))?;
        let mut columns: Vec<&mut Column> = self.columns.iter_mut().collect();
        write_row_group(writer, &mut columns)?;
        self.rows = 0;
        Ok(())
    }
}

impl<W: Write + Send> Output for ParquetEvents<W> {
    fn event(&mut self, e: &Event<'_>) -> Result<bool, ExportError> {
        let mut id = [0u8; 36];
        let event_id = e.row.event_id.hyphenated().encode_lower(&mut id);
        let c = &e.common;
        let mut at = 0;
        let mut next = || {
            at += 1;
            at - 1
        };
        let columns = &mut self.columns;
        macro_rules! put {
            (int $v:expr) => {
                if let Column::Int(col, _) = &mut columns[next()] {
                    col.push($v)
                }
            };
            (int? $v:expr) => {
                if let Column::Int(col, _) = &mut columns[next()] {
                    col.push_opt($v)
                }
            };
            (str $v:expr) => {
                if let Column::Str(col, _) = &mut columns[next()] {
                    col.push($v)
                }
            };
            (str? $v:expr) => {
                if let Column::Str(col, _) = &mut columns[next()] {
                    col.push_opt($v)
                }
            };
        }
        put!(int e.row.cursor.position);
        put!(int e.row.cursor.transaction_id);
        put!(str event_id);
        put!(str e.event_type);
        put!(str e.event_version);
        put!(str e.aggregate_type);
        put!(str e.aggregate_id);
        put!(int e.row.sequence);
        put!(int e.row.recorded_at_us);
        put!(str? c.order_id.as_deref());
        put!(str? c.customer_id.as_deref());
        put!(str? c.sku.as_deref());
        put!(int? c.quantity);
        put!(int? c.amount_minor);
        put!(str? c.currency.as_deref());
        put!(str? e.correlation_id);
        put!(str? e.causation_id);
        put!(str? e.traceparent);
        put!(str e.payload);
        self.rows += 1;
        self.total += 1;
        if self.rows >= ROW_GROUP {
            self.flush()?;
        }
        Ok(true)
    }

    fn finish(&mut self, summary: &Summary) -> Result<u64, ExportError> {
        self.flush()?;
        if let Some(writer) = self.writer.take() {
            finish_file(writer, summary, "events")?;
        }
        Ok(self.total)
    }
}

// ---------------------------------------------------------------------------------------
// `--shape sequences`: one row per order.

/// One order's events so far, in log order.
#[derive(Default)]
struct Sequence {
    order_id: String,
    customer_id: Option<String>,
    currency: Option<String>,
    event_types: Vec<String>,
    recorded_ats: Vec<i64>,
    amounts: Vec<Option<i64>>,
}

/// The Parquet schema of `--shape sequences`.
const SEQUENCES_SCHEMA: &str = "message orderlog_sequence {
    required binary order_id (STRING);
    optional binary customer_id (STRING);
    optional binary currency (STRING);
    required int64 events;
    required group event_types (LIST) { repeated group list { required binary element (STRING); } }
    required group recorded_ats (LIST) { repeated group list { required int64 element (TIMESTAMP(MICROS,true)); } }
    required group amounts_minor (LIST) { repeated group list { optional int64 element; } }
}";

/// Every order's events, grouped as they are read; written at the end, in the order of
/// each order's first event. Events without an order id are left out.
struct Sequences<W: Write + Send> {
    format: Format,
    sink: Option<W>,
    index: HashMap<String, usize>,
    orders: Vec<Sequence>,
}

impl<W: Write + Send> Sequences<W> {
    fn new(format: Format, sink: W) -> Self {
        Sequences {
            format,
            sink: Some(sink),
            index: HashMap::new(),
            orders: Vec::new(),
        }
    }

    fn write_jsonl(&mut self, sink: &mut W, summary: &Summary) -> Result<(), ExportError> {
        let mut b = Vec::with_capacity(FLUSH_AT + 64 * 1024);
        for s in &self.orders {
            b.extend_from_slice(b"{\"order_id\":");
            push_str(&mut b, &s.order_id);
            push_opt_str(&mut b, b",\"customer_id\":", s.customer_id.as_deref());
            push_opt_str(&mut b, b",\"currency\":", s.currency.as_deref());
            b.extend_from_slice(b",\"events\":");
            push_int(&mut b, s.event_types.len() as i64);
            b.extend_from_slice(b",\"event_types\":[");
            for (i, t) in s.event_types.iter().enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                push_str(&mut b, t);
            }
            b.extend_from_slice(b"],\"recorded_ats\":[");
            for (i, t) in s.recorded_ats.iter().enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                b.push(b'"');
                push_time(&mut b, *t);
                b.push(b'"');
            }
            b.extend_from_slice(b"],\"amounts_minor\":[");
            for (i, a) in s.amounts.iter().enumerate() {
                if i > 0 {
                    b.push(b',');
                }
                match a {
                    Some(a) => push_int(&mut b, *a),
                    None => b.extend_from_slice(b"null"),
                }
            }
            b.extend_from_slice(b"]}\n");
            if b.len() >= FLUSH_AT {
                sink.write_all(&b)?;
                b.clear();
            }
        }
        b.extend_from_slice(jsonl_trailer(summary, self.orders.len() as u64).as_bytes());
        sink.write_all(&b)?;
        sink.flush()?;
        Ok(())
    }

    fn write_parquet(&mut self, sink: W, summary: &Summary) -> Result<(), ExportError> {
        let schema = Arc::new(parse_message_type(SEQUENCES_SCHEMA)?);
        let mut writer = SerializedFileWriter::new(sink, schema, properties())?;
        for chunk in self.orders.chunks(ROW_GROUP) {
            let mut group = writer.next_row_group()?;
            let mut column = 0;
            while let Some(mut out) = group.next_column()? {
                match column {
                    0 => {
                        let v: Vec<ByteArray> =
                            chunk.iter().map(|s| s.order_id.as_str().into()).collect();
                        out.typed::<ByteArrayType>().write_batch(&v, None, None)?;
                    }
                    1 | 2 => {
                        let field = |s: &Sequence| {
                            if column == 1 {
                                s.customer_id.clone()
                            } else {
                                s.currency.clone()
                            }
                        };
                        let defs: Vec<i16> =
                            chunk.iter().map(|s| field(s).is_some() as i16).collect();
                        let v: Vec<ByteArray> = chunk
                            .iter()
                            .filter_map(|s| field(s).map(|x| x.into_bytes().into()))
                            .collect();
                        out.typed::<ByteArrayType>()
                            .write_batch(&v, Some(&defs), None)?;
                    }
                    3 => {
                        let v: Vec<i64> =
                            chunk.iter().map(|s| s.event_types.len() as i64).collect();
                        out.typed::<Int64Type>().write_batch(&v, None, None)?;
                    }
                    4 => {
                        let (defs, reps) = list_levels(chunk, 1);
                        let v: Vec<ByteArray> = chunk
                            .iter()
                            .flat_map(|s| s.event_types.iter().map(|t| t.as_str().into()))
                            .collect();
                        out.typed::<ByteArrayType>()
                            .write_batch(&v, Some(&defs), Some(&reps))?;
                    }
                    5 => {
                        let (defs, reps) = list_levels(chunk, 1);
                        let v: Vec<i64> = chunk
                            .iter()
                            .flat_map(|s| s.recorded_ats.iter().copied())
                            .collect();
                        out.typed::<Int64Type>()
                            .write_batch(&v, Some(&defs), Some(&reps))?;
                    }
                    _ => {
                        let mut defs = Vec::new();
                        let mut reps = Vec::new();
                        let mut v = Vec::new();
                        for s in chunk {
                            for (i, a) in s.amounts.iter().enumerate() {
                                reps.push((i > 0) as i16);
                                match a {
                                    Some(a) => {
                                        defs.push(2);
                                        v.push(*a);
                                    }
                                    None => defs.push(1),
                                }
                            }
                        }
                        out.typed::<Int64Type>()
                            .write_batch(&v, Some(&defs), Some(&reps))?;
                    }
                }
                out.close()?;
                column += 1;
            }
            group.close()?;
        }
        finish_file(writer, summary, "sequences")
    }
}

/// Definition and repetition levels of a required list of required elements (each
/// order has at least one event, so no list is empty).
fn list_levels(chunk: &[Sequence], def: i16) -> (Vec<i16>, Vec<i16>) {
    let mut defs = Vec::new();
    let mut reps = Vec::new();
    for s in chunk {
        for i in 0..s.event_types.len() {
            defs.push(def);
            reps.push((i > 0) as i16);
        }
    }
    (defs, reps)
}

impl<W: Write + Send> Output for Sequences<W> {
    fn event(&mut self, e: &Event<'_>) -> Result<bool, ExportError> {
        let Some(order_id) = e.common.order_id.as_deref() else {
            return Ok(false);
        };
        let at = match self.index.get(order_id) {
            Some(at) => *at,
            None => {
                self.orders.push(Sequence {
                    order_id: order_id.to_owned(),
                    ..Sequence::default()
                });
                self.index
                    .insert(order_id.to_owned(), self.orders.len() - 1);
                self.orders.len() - 1
            }
        };
        let s = &mut self.orders[at];
        if s.customer_id.is_none() {
            s.customer_id = e.common.customer_id.as_deref().map(str::to_owned);
        }
        if s.currency.is_none() {
            s.currency = e.common.currency.as_deref().map(str::to_owned);
        }
        s.event_types.push(e.event_type.to_owned());
        s.recorded_ats.push(e.row.recorded_at_us);
        s.amounts.push(e.common.amount_minor);
        Ok(true)
    }

    fn finish(&mut self, summary: &Summary) -> Result<u64, ExportError> {
        let Some(mut sink) = self.sink.take() else {
            return Ok(0);
        };
        match self.format {
            Format::Jsonl => self.write_jsonl(&mut sink, summary)?,
            Format::Parquet => self.write_parquet(sink, summary)?,
        }
        Ok(self.orders.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_common_columns_come_from_the_payload() {
        let (common, personal) = scan(
            r#"{"type":"payment.captured","order_id":"o-1","amount":{"amount":5000,"currency":"USD"},"captured_total":{"amount":5000,"currency":"USD"}}"#,
            &[],
        );
        assert!(!personal);
        assert_eq!(common.order_id.as_deref(), Some("o-1"));
        assert_eq!(common.amount_minor, Some(5000));
        assert_eq!(common.currency.as_deref(), Some("USD"));
        let (common, _) = scan(
            r#"{"sku":"MUG","order_id":"o-\"2","quantity":3,"reserved":3}"#,
            &[],
        );
        assert_eq!(common.sku.as_deref(), Some("MUG"));
        assert_eq!(common.order_id.as_deref(), Some("o-\"2"));
        assert_eq!(common.quantity, Some(3));
        assert_eq!(common.amount_minor, None);
        assert_eq!(scan("[1,2]", &[]).0, Common::default());
    }

    #[test]
    fn the_sealed_personal_data_is_cut_and_the_rest_kept_in_order() {
        let payload = r#"{"type":"order.created","order_id":"o-1","personal":"sealed:v1:0011223344556677:AAAA","total":{"amount":1,"currency":"GBP"}}"#;
        let (common, has) = scan(payload, &[SEALED_FIELD]);
        assert!(has);
        assert_eq!(common.currency.as_deref(), Some("GBP"));
        assert_eq!(
            strip(payload, &[SEALED_FIELD]),
            r#"{"type":"order.created","order_id":"o-1","total":{"amount":1,"currency":"GBP"}}"#
        );
    }

    #[test]
    fn times_are_utc_with_six_digits() {
        let mut b = Vec::new();
        push_time(&mut b, 1_764_624_522_123_456);
        assert_eq!(String::from_utf8(b).unwrap(), "2025-12-01T21:28:42.123456Z");
        let mut b = Vec::new();
        push_time(&mut b, 0);
        assert_eq!(String::from_utf8(b).unwrap(), "1970-01-01T00:00:00.000000Z");
    }

    #[test]
    fn a_payload_stays_on_one_line() {
        let mut b = Vec::new();
        push_payload(&mut b, "{\n\"a\": \"x\\ny\"\r\n}");
        assert_eq!(String::from_utf8(b).unwrap(), "{ \"a\": \"x\\ny\"  }");
    }

    #[test]
    fn times_parse_as_rfc_3339_or_a_day() {
        assert_eq!(
            parse_time("2026-12-01T22:00:00+01:00")
                .unwrap()
                .to_rfc3339(),
            "2026-12-01T21:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-12-01").unwrap().to_rfc3339(),
            "2026-12-01T00:00:00+00:00"
        );
        assert!(parse_time("yesterday").unwrap_err().contains("yesterday"));
        assert!(parse_time("2026-13-01").is_err());
    }

    #[test]
    fn formats_and_shapes_parse_by_name() {
        assert_eq!(Format::parse("ndjson"), Some(Format::Jsonl));
        assert_eq!(Format::parse("jsonl"), Some(Format::Jsonl));
        assert_eq!(Format::parse("parquet"), Some(Format::Parquet));
        assert_eq!(Format::parse("csv"), None);
        assert_eq!(Shape::parse("sequences"), Some(Shape::Sequences));
        assert_eq!(Shape::parse("orders"), None);
    }
}
