//! Benchmark: export a large log to JSON lines and to Parquet (`store::export::run`, what
//! `orderlog export --out FILE` runs), on SQLite and on PostgreSQL.
//!
//! Loads N events (default 1,000,000: orders placed with their stock reservations, paid,
//! shipped with their stock commits, delivered and fulfilled; ten events an order, with
//! the metadata the command path stamps) straight into `events`, as bench_rebuild does
//! (one multi-row INSERT per 5,000 events), then for each backend and format exports the
//! whole log R times (default 3) into a file, without personal data (the default), and
//! prints each run and the median rate, after a baseline: the rebuild's read of the
//! log (`reader::stream_after`, without metadata), once. Targets (issue 18): ≥ 300,000 events/s to JSON
//! lines and ≥ 200,000 events/s to Parquet, on both backends.
//!
//! ```text
//! cargo bench --bench bench_export -- 1000000
//! ```
//!
//! Settings (environment): `ORDERLOG_BENCH_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres?options[search_path]=bench_export`; the
//! schema in its `search_path` is dropped and recreated), `BENCH_SQLITE_DIR` (default a
//! temporary directory), `BENCH_EVENTS` (or the first argument), `BENCH_RUNS` (3),
//! `BENCH_BACKENDS` (`sqlite,postgres`), `BENCH_REUSE` (0; 1: keep a log of exactly N
//! events already loaded into the same schema or directory).
//!
//! Not a test: it prints figures. BENCHMARKS.md records them: the export's rate follows
//! the machine's read of the log (the baseline), so compare within one run. On
//! 2026-12-03 (medians of 3): SQLite 377,528 events/s to JSON lines and 268,779 to
//! Parquet, PostgreSQL 450,377 and 361,112 (met), with baselines of 140,623 and 613,252.

mod support;

use std::collections::HashMap;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, TimeDelta, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use uuid::Uuid;

use orderlog::store::export::{self, Format, Options};
use orderlog::store::sealed::{KeyRing, SecretKey};
use orderlog::store::Database;
use support::{env_number, first_argument, median, recreate_schema};

const DEFAULT_URL: &str =
    "postgres://postgres@127.0.0.1:5432/postgres?options[search_path]=bench_export";
const DEFAULT_EVENTS: usize = 1_000_000;
/// Rows per INSERT statement (and per transaction) while loading.
const LOAD_CHUNK: usize = 5_000;
const SKUS: usize = 1_000;
const CUSTOMERS: u64 = 50_000;

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx::query=error")),
        )
        .init();
    let events: usize = first_argument()
        .or_else(|| std::env::var("BENCH_EVENTS").ok())
        .map(|s| s.replace('_', "").parse())
        .transpose()
        .context("the event count (first argument or BENCH_EVENTS) must be a whole number")?
        .unwrap_or(DEFAULT_EVENTS);
    let runs: usize = env_number("BENCH_RUNS", 3)?.max(1);
    let reuse = env_number("BENCH_REUSE", 0)? != 0;
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    let url = std::env::var("ORDERLOG_BENCH_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into());
    let scratch = tempfile::tempdir()?;
    let sqlite_dir = std::env::var("BENCH_SQLITE_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| scratch.path().to_path_buf());
    println!(
        "bench_export: {events} events, {runs} run(s) per backend and format, {} cores",
        support::cores()
    );

    let mut results = Vec::new();
    for backend in backends.split(',').map(str::trim) {
        let db = match backend {
            "postgres" => {
                let db_url = url.clone();
                let fresh = !(reuse && count_of(&url).await? == Some(events as i64));
                if fresh {
                    let schema = recreate_schema(&url, "bench_export").await?;
                    println!("postgres: schema `{schema}` recreated");
                }
                let db = Database::connect(&db_url, 4).await?;
                db.migrate().await?;
                if fresh {
                    load(&db, events).await?;
                    if let Database::Postgres(pool) = &db {
                        sqlx::raw_sql("VACUUM (ANALYZE) events")
                            .execute(pool)
                            .await?;
                    }
                } else {
                    println!("postgres: reusing the {events} events loaded");
                }
                db
            }
            "sqlite" => {
                std::fs::create_dir_all(&sqlite_dir)?;
                let file = sqlite_dir.join("bench_export.db");
                let db_url = format!("sqlite://{}", file.display());
                let mut fresh = true;
                if reuse && file.exists() {
                    let db = Database::connect(&db_url, 2).await?;
                    fresh = count(&db).await? != events as i64;
                    db.close().await;
                }
                if fresh {
                    for suffix in ["", "-wal", "-shm"] {
                        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
                    }
                }
                let db = Database::connect(&db_url, 4).await?;
                db.migrate().await?;
                if fresh {
                    load(&db, events).await?;
                } else {
                    println!("sqlite: reusing the {events} events loaded");
                }
                db
            }
            other => bail!("BENCH_BACKENDS: `{other}` is not sqlite or postgres"),
        };
        let in_log = count(&db).await?;
        if in_log != events as i64 {
            bail!("{backend}: the log holds {in_log} events, not {events}");
        }
        // The baseline: the rebuild's read of the whole log (one query, no metadata),
        // which decodes every row into a `LogEntry` and does nothing with it.
        let started = Instant::now();
        let mut read = 0usize;
        let mut batches = orderlog::store::reader::stream_after(
            &db,
            orderlog::store::reader::Cursor::START,
            5_000,
        );
        while let Some(batch) = batches.recv().await {
            read += batch?.len();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "  {backend:<8} baseline: reader::stream_after read {read} events in {secs:.2} s: {:>9.0} events/s",
            read as f64 / secs
        );
        for format in [Format::Jsonl, Format::Parquet] {
            let name = match format {
                Format::Jsonl => "jsonl",
                Format::Parquet => "parquet",
            };
            let mut rates = Vec::new();
            for run in 1..=runs {
                let path = scratch.path().join(format!("export.{name}"));
                let file =
                    std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
                let started = Instant::now();
                let summary = export::run(&db, None, Options::new(format), file).await?;
                let secs = started.elapsed().as_secs_f64();
                let bytes = std::fs::metadata(&path)?.len();
                if summary.events != events as u64 {
                    bail!(
                        "{backend} {name}: exported {} events, not {events}",
                        summary.events
                    );
                }
                let rate = events as f64 / secs;
                println!(
                    "  {backend:<8} {name:<7} run {run}: {events} events in {secs:.2} s: {rate:>9.0} events/s, {:.0} MB, resume with --after {}",
                    bytes as f64 / 1e6,
                    summary.cursor.token()
                );
                rates.push(rate);
            }
            results.push((backend.to_owned(), name, median(&rates)));
        }
        db.close().await;
    }
    println!();
    println!("| backend | format | median events/s | target | |");
    println!("|---|---|---|---|---|");
    for (backend, format, rate) in &results {
        let target = if *format == "jsonl" {
            300_000.0
        } else {
            200_000.0
        };
        println!(
            "| {backend} | {format} | {rate:.0} | {target:.0} | {} |",
            if *rate >= target { "met" } else { "missed" }
        );
    }
    Ok(())
}

async fn count(db: &Database) -> Result<i64> {
    let sql = "SELECT count(*) FROM events";
    Ok(match db {
        Database::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
        Database::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
    })
}

/// The events in the schema of `url`, if it has a log.
async fn count_of(url: &str) -> Result<Option<i64>> {
    let db = Database::connect(url, 1).await?;
    let n = match &db {
        Database::Postgres(pool) => sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events")
            .fetch_one(pool)
            .await
            .ok(),
        Database::Sqlite(_) => None,
    };
    db.close().await;
    Ok(n)
}

/// Columns of one INSERT.
#[derive(Default)]
struct Chunk {
    aggregate_type: Vec<&'static str>,
    aggregate_id: Vec<String>,
    sequence: Vec<i64>,
    event_type: Vec<&'static str>,
    event_version: Vec<&'static str>,
    payload: Vec<String>,
    metadata: Vec<String>,
}

impl Chunk {
    fn push(
        &mut self,
        aggregate: (&'static str, String, i64),
        event_type: &'static str,
        payload: serde_json::Value,
        metadata: &str,
    ) {
        self.aggregate_type.push(aggregate.0);
        self.aggregate_id.push(aggregate.1);
        self.sequence.push(aggregate.2);
        self.event_type.push(event_type);
        self.event_version.push(if event_type == "order.created" {
            "1.2"
        } else {
            "1.0"
        });
        self.payload.push(payload.to_string());
        self.metadata.push(metadata.to_owned());
    }

    fn len(&self) -> usize {
        self.sequence.len()
    }

    fn is_empty(&self) -> bool {
        self.sequence.is_empty()
    }
}

/// Generates on a blocking thread and inserts on one connection, a chunk per
/// transaction, in order.
async fn load(db: &Database, events: usize) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(4);
    let generator = tokio::task::spawn_blocking(move || generate(events, tx));
    let started = Instant::now();
    let mut inserted = 0;
    while let Some(chunk) = rx.recv().await {
        inserted += chunk.len();
        match db {
            Database::Postgres(pool) => {
                // `::json`: the log keeps its JSON as text.
                sqlx::query(
                    "INSERT INTO events
                         (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                     SELECT t.aggregate_type, t.aggregate_id, t.sequence, t.event_type, t.event_version,
                            t.payload::json, t.metadata::json
                       FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[],
                                   $6::text[], $7::text[])
                         AS t(aggregate_type, aggregate_id, sequence, event_type, event_version,
                              payload, metadata)",
                )
                .bind(&chunk.aggregate_type)
                .bind(&chunk.aggregate_id)
                .bind(&chunk.sequence)
                .bind(&chunk.event_type)
                .bind(&chunk.event_version)
                .bind(&chunk.payload)
                .bind(&chunk.metadata)
                .execute(pool)
                .await?;
            }
            Database::Sqlite(pool) => {
                // The same rows through SQLite's JSON functions: one statement a chunk.
                let rows: Vec<serde_json::Value> = (0..chunk.len())
                    .map(|i| {
                        json!([
                            chunk.aggregate_type[i],
                            chunk.aggregate_id[i],
                            chunk.sequence[i],
                            chunk.event_type[i],
                            chunk.event_version[i],
                            chunk.payload[i],
                            chunk.metadata[i],
                        ])
                    })
                    .collect();
                sqlx::query(
                    "INSERT INTO events
                         (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
                     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4,
                            value ->> 5, value ->> 6
                       FROM json_each($1)",
                )
                .bind(serde_json::Value::Array(rows).to_string())
                .execute(pool)
                .await?;
            }
        }
    }
    generator.await??;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}: loaded {inserted} events in {secs:.1} s ({:.0} events/s)",
        db.backend_name(),
        inserted as f64 / secs
    );
    Ok(())
}

/// Orders of ten events each (the last one cut short to make N): placed with a
/// reservation per line, paid, shipped with a commit per line, delivered, fulfilled.
fn generate(events: usize, out: tokio::sync::mpsc::Sender<Chunk>) -> Result<()> {
    let mut rng = SmallRng::seed_from_u64(18);
    let mut chunk = Chunk::default();
    let mut stock: HashMap<usize, (i64, i64)> = HashMap::new();
    let mut sku_sequence: HashMap<usize, i64> = HashMap::new();
    let mut at: DateTime<Utc> = "2026-11-01T00:00:00Z".parse()?;
    let mut written = 0;
    let mut order = 0u64;
    let currencies = ["USD", "EUR", "GBP"];
    let carriers = ["UPS", "DHL", "Royal Mail"];
    // One order's personal data, sealed as the vault seals it: the size of the real thing.
    let sealed = KeyRing::new(SecretKey::generate()).seal(
        r#"{"shipping_address":{"name":"Ada Lovelace","line1":"12 St James's Square","city":"London","postal_code":"SW1Y 4JH","country":"GB"},"email":"ada@example.com"}"#,
        "order.personal",
    );
    while written < events {
        order += 1;
        let order_id = format!("ord-{order:07}");
        let currency = currencies[rng.gen_range(0..currencies.len())];
        let money = |amount: i64| json!({"amount": amount, "currency": currency});
        let lines: Vec<(usize, i64, i64)> = (0..2)
            .map(|_| {
                (
                    rng.gen_range(0..SKUS),
                    rng.gen_range(1..4),
                    rng.gen_range(500..5_000),
                )
            })
            .collect::<Vec<_>>();
        let mut lines = lines;
        if lines[0].0 == lines[1].0 {
            lines[1].0 = (lines[1].0 + 1) % SKUS;
        }
        let subtotal: i64 = lines.iter().map(|(_, q, p)| q * p).sum();
        let correlation = Uuid::new_v4().to_string();
        let payment_id = format!("pay-{order}");
        let shipment_id = format!("shp-{order}");
        let mut steps: Vec<((&'static str, String, i64), &'static str, serde_json::Value)> =
            Vec::with_capacity(10);
        let ts = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let order_agg = |seq: i64| ("order", order_id.clone(), seq);
        steps.push((
            order_agg(1),
            "order.created",
            json!({
                "type": "order.created", "order_id": order_id,
                "customer_id": format!("cust-{}", rng.gen_range(0..CUSTOMERS)),
                "currency": currency,
                "lines": lines.iter().map(|(sku, q, p)| json!({
                    "sku": format!("SKU-{sku:04}"), "quantity": q,
                    "unit_price": money(*p), "line_total": money(q * p)
                })).collect::<Vec<_>>(),
                "subtotal": money(subtotal), "discounts": [], "shipping_lines": [], "tax_lines": [],
                "total": money(subtotal),
                // Sealed, as the server stores it (`store::vault`): the export cuts it.
                "personal": sealed.clone(),
                "placed_at": ts(at),
            }),
        ));
        for (sku, q, _) in &lines {
            let (reserved, available) = stock.entry(*sku).or_insert((0, 1_000_000));
            *reserved += q;
            *available -= q;
            let seq = sku_sequence.entry(*sku).or_insert(0);
            *seq += 1;
            steps.push((
                ("inventory", format!("SKU-{sku:04}"), *seq),
                "inventory.reserved",
                json!({
                    "type": "inventory.reserved", "sku": format!("SKU-{sku:04}"),
                    "order_id": order_id, "quantity": q, "reserved": *reserved,
                    "available": *available, "reserved_at": ts(at)
                }),
            ));
        }
        steps.push((
            order_agg(2),
            "payment.attempted",
            json!({"type": "payment.attempted", "order_id": order_id, "payment_id": payment_id,
                   "amount": money(subtotal), "attempted_at": ts(at + TimeDelta::seconds(5))}),
        ));
        steps.push((
            order_agg(3),
            "payment.captured",
            json!({"type": "payment.captured", "order_id": order_id, "payment_id": payment_id,
                   "amount": money(subtotal), "captured_total": money(subtotal),
                   "captured_at": ts(at + TimeDelta::seconds(9))}),
        ));
        steps.push((
            order_agg(4),
            "shipment.dispatched",
            json!({"type": "shipment.dispatched", "order_id": order_id, "shipment_id": shipment_id,
                   "carrier": carriers[(order % 3) as usize], "tracking_number": format!("1Z{order:012}"),
                   "lines": lines.iter().map(|(sku, q, _)| json!({"sku": format!("SKU-{sku:04}"), "quantity": q})).collect::<Vec<_>>(),
                   "order_fully_shipped": true, "dispatched_at": ts(at + TimeDelta::hours(20))}),
        ));
        for (sku, q, _) in &lines {
            let (reserved, available) = stock.entry(*sku).or_insert((0, 1_000_000));
            *reserved -= q;
            let seq = sku_sequence.entry(*sku).or_insert(0);
            *seq += 1;
            steps.push((
                ("inventory", format!("SKU-{sku:04}"), *seq),
                "inventory.committed",
                json!({
                    "type": "inventory.committed", "sku": format!("SKU-{sku:04}"),
                    "order_id": order_id, "shipment_id": shipment_id, "quantity": q,
                    "from_reservation": q, "on_hand": *available + *reserved,
                    "reserved": *reserved, "available": *available,
                    "committed_at": ts(at + TimeDelta::hours(20))
                }),
            ));
        }
        steps.push((
            order_agg(5),
            "shipment.delivered",
            json!({"type": "shipment.delivered", "order_id": order_id, "shipment_id": shipment_id,
                   "delivered_at": ts(at + TimeDelta::hours(70))}),
        ));
        steps.push((
            order_agg(6),
            "order.fulfilled",
            json!({"type": "order.fulfilled", "order_id": order_id, "total": money(subtotal),
                   "fulfilled_at": ts(at + TimeDelta::hours(70))}),
        ));
        let metadata = metadata(&correlation, at);
        for (aggregate, event_type, payload) in steps {
            if written == events {
                break;
            }
            chunk.push(aggregate, event_type, payload, &metadata);
            written += 1;
            if chunk.len() == LOAD_CHUNK && out.blocking_send(std::mem::take(&mut chunk)).is_err() {
                bail!("the loader stopped");
            }
        }
        at += TimeDelta::milliseconds(rng.gen_range(1..50));
    }
    if !chunk.is_empty() && out.blocking_send(chunk).is_err() {
        bail!("the loader stopped");
    }
    Ok(())
}

/// The metadata the command path stamps on every event of a command.
fn metadata(correlation_id: &str, at: DateTime<Utc>) -> String {
    let command_id = Uuid::now_v7().to_string();
    json!({
        "command_id": command_id,
        "idempotency_key": null,
        "correlation_id": correlation_id,
        "causation_id": command_id,
        "traceparent": format!("00-{}-{}-01", Uuid::new_v4().simple(), &Uuid::new_v4().simple().to_string()[..16]),
        "actor": "storefront",
        "received_at": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    })
    .to_string()
}
