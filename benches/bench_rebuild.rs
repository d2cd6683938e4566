//! Benchmark: rebuild every projection from a large log, on PostgreSQL.
//!
//! Loads N events (default 1,000,000, order and inventory events together) straight into
//! `events` in a fresh schema, as the engine would have written them, then, R times
//! (default 3):
//!
//! 1. reads the whole log with `store::reader::read_after`, batches of 5,000 (the
//!    baseline: a reader that does nothing with the events), and with a bench-local copy
//!    of that query whose ORDER BY names the table's columns (see `read_fixed`);
//! 2. rebuilds each projection in turn with `Projections::rebuild` + `finish_rebuild`,
//!    as `orderlog projections rebuild <name>` does, and checks the result;
//!
//! and prints the medians. Then it requests every rebuild together and finishes
//! them (once), and times the phases of an in-memory rebuild pass (read, decode, apply,
//! flush) by driving the same public APIs the runner uses.
//!
//! ```text
//! cargo bench --bench bench_rebuild -- 1000000
//! ```
//!
//! Settings (environment): `ORDERLOG_BENCH_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres?options[search_path]=bench_rebuild`;
//! the schema in its `search_path` is dropped and recreated), `BENCH_EVENTS` (or the
//! first argument), `BENCH_RUNS` (3), `BENCH_TOGETHER` (1: also time all of them requested
//! together, this many times, median reported; 0 skips it), `BENCH_PHASES` (1: also time the phases; 0 skips it),
//! `BENCH_SINGLE` (1: rebuild each projection on its own in every run; 0 skips that),
//! `BENCH_TRACKED` (1: every SKU's stock is tracked, as in a shop that keeps its stock in
//! orderlog: the log opens with a receipt per SKU, each order reserves its lines before
//! it is created and its shipment commits them; 0: a shop that does not: every line is
//! `untracked` and the log holds no inventory events),
//! `BENCH_REUSE` (0; 1: keep the log a previous run loaded into the same schema when it
//! has exactly N events and was generated with the same `BENCH_TRACKED`, instead of
//! loading it again).
//!
//! Not a test: it prints figures. BENCHMARKS.md records them.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use cqrs_es::{Aggregate, DomainEvent};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use sqlx::Row;
use uuid::Uuid;

use orderlog::domain::inventory::{InventoryCommand, InventoryEvent, InventoryItem};
use orderlog::domain::order::{Order, OrderEvent, OrderLine, ShipmentLine};
use orderlog::domain::personal::{Personal, PersonalData, SealedPersonal};
use orderlog::domain::values::{
    CountryCode, Currency, CustomerId, FreeText, Money, OrderId, PaymentId, Quantity, RefundId,
    ShipmentId, ShippingAddress, Sku, Text,
};
use orderlog::process::reservations;
use orderlog::projections::runner::Projections;
use orderlog::projections::{self, Envelope, MemoryTables, Projection, View, ViewStore};
use orderlog::store::reader::{self, Cursor, LogEntry, LogSignal};
use orderlog::store::sealed::{KeyRing, SecretKey};
use orderlog::store::views::{physical, Table, Tx};
use orderlog::store::Database;
use support::{env_number, first_argument, median, recreate_schema, CpuTimes};

const DEFAULT_URL: &str =
    "postgres://postgres@127.0.0.1:5432/postgres?options[search_path]=bench_rebuild";
const DEFAULT_EVENTS: usize = 1_000_000;
/// Rows per INSERT statement (and per transaction) while loading.
const LOAD_CHUNK: usize = 5_000;
/// Batch size of the baseline read: the runner's rebuild batch.
const READ_BATCH: i64 = 5_000;
/// Orders in flight at once while generating: an order's events are spread over about
/// this many other events, so a batch never holds an order's whole life.
const ACTIVE_ORDERS: usize = 2_000;
const SKUS: usize = 1_000;
/// Units received per SKU before the first order (the most one receipt may bring): far
/// more than a run sells, so no reservation is ever refused.
const STOCK_PER_SKU: i64 = 1_000_000;
const CUSTOMERS: u64 = 50_000;
const SPAN_DAYS: i64 = 30;
/// Scratch generation used by the phase breakdown; far above anything the runner uses.
const PHASE_GENERATION: i64 = 9_000;

#[tokio::main]
async fn main() -> Result<()> {
    // Quiet unless asked: `RUST_LOG=orderlog=info` shows how long each rebuild pass read.
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
    let together: usize = env_number("BENCH_TOGETHER", 1)?;
    let phases = env_number("BENCH_PHASES", 1)? != 0;
    let reuse = env_number("BENCH_REUSE", 0)? != 0;
    let single = env_number("BENCH_SINGLE", 1)? != 0;
    let tracked = env_number("BENCH_TRACKED", 1)? != 0;
    let url = std::env::var("ORDERLOG_BENCH_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into());

    println!(
        "bench_rebuild: {events} events, {runs} run(s), PostgreSQL, stock {}",
        if tracked { "tracked" } else { "not tracked" }
    );
    let reused = if reuse {
        reuse_log(&url, events, tracked).await?
    } else {
        None
    };
    let (db, expected, load_secs) = match reused {
        Some((db, expected)) => {
            println!(
                "reusing the log already loaded: {} events, {} orders",
                expected.events, expected.orders
            );
            (db, expected, f64::NAN)
        }
        None => {
            let schema = recreate_schema(&url, "bench_rebuild").await?;
            println!("schema `{schema}` recreated");
            let db = Database::connect(&url, 8).await?;
            db.migrate().await?;
            let Database::Postgres(pool) = &db else {
                bail!("bench_rebuild needs PostgreSQL");
            };
            // Load.
            let started = Instant::now();
            let expected = load(pool, events, tracked).await?;
            let load_secs = started.elapsed().as_secs_f64();
            println!(
                "loaded {} events ({} orders, {} refunded) in {:.1} s: {:.0} events/s",
                expected.events,
                expected.orders,
                expected.refunded_orders,
                load_secs,
                expected.events as f64 / load_secs
            );
            let started = Instant::now();
            sqlx::raw_sql("VACUUM (ANALYZE) events")
                .execute(pool)
                .await?;
            let vacuum_secs = started.elapsed().as_secs_f64();
            let log_size: String =
                sqlx::query_scalar("SELECT pg_size_pretty(pg_total_relation_size('events'))")
                    .fetch_one(pool)
                    .await?;
            println!(
                "VACUUM (ANALYZE) events: {vacuum_secs:.1} s; events table with indexes: {log_size}"
            );
            // The checks hold the views to the generator's account of the log, and a
            // reused log is accounted for from the database: both must agree, or a check
            // could pass (or fail) for the wrong reason.
            let from_log = expected_from_log(pool).await?;
            if from_log != expected {
                bail!(
                    "the loaded log does not match what was generated:\n  in the log: {}\n  generated:  {}",
                    from_log.summary(),
                    expected.summary()
                );
            }
            (db, expected, load_secs)
        }
    };
    print_mix(&db, &expected).await?;

    let p = Projections::new(
        db.clone(),
        orderlog::app::all_projections(&orderlog::config::Settings::default()),
        LogSignal::default(),
        None,
    );
    p.init().await?;
    let names = p.names();

    // Repeated runs: the baseline reads, then each projection rebuilt in turn.
    let mut read_secs = Vec::new();
    let mut fixed_read_secs = Vec::new();
    let mut per_projection: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut start_secs: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut cpu_use: HashMap<&str, Vec<(f64, f64, f64, f64)>> = HashMap::new();
    let mut totals = Vec::new();
    let mut last_cursor = Cursor::START;
    let mut all_ok = true;
    for run in 1..=runs {
        for (reader, into) in [
            (Reader::Library, &mut read_secs),
            (Reader::FixedOrder, &mut fixed_read_secs),
        ] {
            let (secs, count, last) = read_log(&db, reader).await?;
            if count != expected.events {
                println!(
                    "ERROR: the {} read saw {count} events, expected {}",
                    reader.label(),
                    expected.events
                );
                all_ok = false;
            }
            last_cursor = last;
            into.push(secs);
            println!(
                "run {run}: read the log ({}) in {secs:.2} s: {:.0} events/s",
                reader.label(),
                count as f64 / secs
            );
        }
        let mut total = 0.0;
        for name in names.iter().filter(|_| single) {
            let started = Instant::now();
            p.rebuild(name).await?;
            let begun = started.elapsed().as_secs_f64();
            let cpu = CpuTimes::now();
            let started = Instant::now();
            p.finish_rebuild(name).await?;
            let secs = started.elapsed().as_secs_f64();
            let cpu = cpu.zip(CpuTimes::now()).map(|(a, b)| {
                (
                    b.process() - a.process(),
                    b.postgres() - a.postgres(),
                    b.busy - a.busy,
                    b.iowait - a.iowait,
                )
            });
            total += begun + secs;
            start_secs.entry(name).or_default().push(begun);
            per_projection.entry(name).or_default().push(secs);
            if let Some(cpu) = cpu {
                cpu_use.entry(name).or_default().push(cpu);
            }
            println!(
                "run {run}: rebuilt {name:<14} in {secs:7.2} s: {:.0} events/s{}",
                expected.events as f64 / secs,
                cpu.map_or(String::new(), |(c, p, m, w)| format!(
                    "; CPU: bench {c:.1} s, PostgreSQL {p:.1} s, machine busy {m:.1} s, iowait {w:.1} s"
                ))
            );
        }
        if single {
            totals.push(total);
            println!(
                "run {run}: all projections in {total:.2} s: {:.0} events/s",
                expected.events as f64 / total
            );
        }
        if single {
            all_ok &= check(&p, &db, last_cursor, &expected).await?;
        }
    }

    // All requested together, as after a version bump of every projection; then
    // `finish_rebuild` on each in turn (the runner decides how to go about it).
    let mut together_runs = Vec::new();
    for round in 1..=together {
        let cpu = CpuTimes::now();
        let started = Instant::now();
        for name in &names {
            p.rebuild(name).await?;
        }
        for name in &names {
            p.finish_rebuild(name).await?;
            println!(
                "together {round}: {name:<14} finished after {:.2} s",
                started.elapsed().as_secs_f64()
            );
        }
        let secs = started.elapsed().as_secs_f64();
        let cpu = cpu.zip(CpuTimes::now()).map_or(String::new(), |(a, b)| {
            format!(
                "; CPU: bench {:.1} s, PostgreSQL {:.1} s, machine busy {:.1} s",
                b.process() - a.process(),
                b.postgres() - a.postgres(),
                b.busy - a.busy
            )
        });
        println!(
            "together {round}: all projections in {secs:.2} s: {:.0} events/s{cpu}",
            expected.events as f64 / secs
        );
        all_ok &= check(&p, &db, last_cursor, &expected).await?;
        together_runs.push(secs);
    }
    let together_secs = (!together_runs.is_empty()).then(|| median(&together_runs));

    // Where the time goes, with the reader's ordering fixed (bench-local query).
    let (phase_rows, shared) = if phases {
        let mut rows = Vec::new();
        for projection in orderlog::app::all_projections(&orderlog::config::Settings::default()) {
            rows.push(time_phases(&db, projection).await?);
        }
        let shared = time_shared(
            &db,
            orderlog::app::all_projections(&orderlog::config::Settings::default()),
        )
        .await?;
        (rows, Some(shared))
    } else {
        (Vec::new(), None)
    };

    // Summary.
    let n = expected.events as f64;
    let read = median(&read_secs);
    let fixed_read = median(&fixed_read_secs);
    let total = median(&totals);
    let line = |label: &str, secs: f64, extra: &str| {
        println!(
            "{label:<52} {secs:8.2} s {:>10.0} events/s{extra}",
            n / secs
        );
    };
    println!();
    println!(
        "== bench_rebuild summary: {} events, {} orders; median of {runs} run(s) ==",
        expected.events, expected.orders
    );
    line(
        &format!("load (INSERT … UNNEST, {LOAD_CHUNK} rows a statement)"),
        load_secs,
        "",
    );
    line(
        &format!("baseline: read the log, reader::read_after({READ_BATCH})"),
        read,
        "",
    );
    line(
        "baseline: same query, ORDER BY on the table columns",
        fixed_read,
        "   (bench-local copy of the query)",
    );
    if single {
        let mut slowest: (&str, f64) = ("", 0.0);
        for name in &names {
            let secs = median(&per_projection[name]);
            if secs > slowest.1 {
                slowest = (name, secs);
            }
            let cpu = cpu_use.get(name).map_or(String::new(), |v| {
                let client: Vec<f64> = v.iter().map(|c| c.0).collect();
                let postgres: Vec<f64> = v.iter().map(|c| c.1).collect();
                format!(
                    "   (CPU: bench {:.1} s, PostgreSQL {:.1} s)",
                    median(&client),
                    median(&postgres)
                )
            });
            line(&format!("rebuild {name}"), secs, &cpu);
        }
        line(
            &format!("rebuild all {}, one after another", names.len()),
            total,
            "",
        );
        line(
            &format!("slowest single projection ({})", slowest.0),
            slowest.1,
            "",
        );
    }
    if let Some(secs) = together_secs {
        line(
            &format!(
                "rebuild all {} requested together (median of {together})",
                names.len()
            ),
            secs,
            "",
        );
    }
    println!();
    // The target is a rebuild of every projection at once: one pass over the log.
    match together_secs {
        Some(secs) => {
            println!(
            "target >= 200000 events/s rebuilding all projections together: {} (measured {:.0} \
             events/s, {:.1}x the read_after time)",
            if n / secs >= 200_000.0 { "MET" } else { "MISSED" },
            n / secs,
            secs / read
        )
        }
        None => println!("target not judged: BENCH_TOGETHER=0"),
    }
    if single {
        println!(
            "one after another: {:.0} events/s ({:.1}x the read_after time, {:.1}x the \
             fixed-order read)",
            n / total,
            total / read,
            total / fixed_read
        );
    }
    if !phase_rows.is_empty() {
        println!();
        println!(
            "phases of an in-memory rebuild pass with the fixed-order read ({READ_BATCH}-event \
             batches; flush = MemoryTables::flush in one transaction):"
        );
        println!(
            "{:<30} {:>8} {:>8} {:>8} {:>8} {:>8} {:>10}",
            "projection", "read s", "decode s", "apply s", "flush s", "total s", "events/s"
        );
        let mut sum = Phases::default();
        for row in phase_rows.iter().chain(shared.iter()) {
            let t = row.total();
            println!(
                "{:<30} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>10.0}",
                row.name,
                row.read,
                row.decode,
                row.apply,
                row.commit,
                t,
                n / t
            );
            if row.name != SHARED {
                sum.read += row.read;
                sum.decode += row.decode;
                sum.apply += row.apply;
                sum.commit += row.commit;
            }
        }
        println!(
            "{:<30} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>10.0}",
            "sum of the projections",
            sum.read,
            sum.decode,
            sum.apply,
            sum.commit,
            sum.total(),
            n / sum.total()
        );
    }
    if !all_ok {
        println!("ERROR: at least one check failed (see above)");
        std::process::exit(1);
    }
    db.close().await;
    Ok(())
}

/// With `BENCH_REUSE=1`: the log a previous run loaded into the same schema, when it
/// holds exactly `events` events generated with the same `tracked` setting (and `None`
/// otherwise, so that it is loaded afresh).
async fn reuse_log(
    url: &str,
    events: usize,
    tracked: bool,
) -> Result<Option<(Database, Expected)>> {
    let db = Database::connect(url, 8).await?;
    let Database::Postgres(pool) = &db else {
        bail!("bench_rebuild needs PostgreSQL");
    };
    // No log at all (a fresh schema) is an error here, and simply means: load it.
    let counts: Option<(i64, i64)> =
        sqlx::query_as("SELECT count(*), count(*) FILTER (WHERE aggregate_type = $1) FROM events")
            .bind(InventoryItem::TYPE)
            .fetch_optional(pool)
            .await
            .ok()
            .flatten();
    // A tracked log opens with a receipt per SKU; an untracked one has no inventory event.
    match counts {
        Some((n, inventory)) if n as usize == events && (inventory > 0) == tracked => {
            db.migrate().await?;
            match expected_from_log(pool).await {
                Ok(expected) => return Ok(Some((db, expected))),
                Err(e) => {
                    println!("cannot account for the log already loaded ({e:#}): loading it again")
                }
            }
        }
        Some((n, inventory)) => println!(
            "the log already loaded ({n} events, {inventory} of them inventory events) is not \
             the one asked for: loading it again"
        ),
        None => {}
    }
    db.close().await;
    Ok(None)
}

/// What the generator produced, for the checks after each rebuild. Everything in it can
/// also be computed from the log alone (`expected_from_log`).
#[derive(Debug, Default, Clone, PartialEq)]
struct Expected {
    events: usize,
    inventory_events: usize,
    /// Orders created (a placement cut off by the event budget has not created its order).
    orders: usize,
    refunded_orders: usize,
    /// Every SKU's levels after the last event, by SKU.
    stock: BTreeMap<String, Level>,
    /// Stock still held for orders: one hold per order and SKU, reserved and not yet
    /// committed by a shipment.
    holds: usize,
    held_units: i64,
    held_orders: usize,
    /// Shipped lines whose commit is not in the log: 0 unless the budget was too small
    /// to end the log between commands (see `generate`).
    uncommitted_lines: usize,
}

/// One SKU's levels, as the stock view states them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Level {
    on_hand: i64,
    reserved: i64,
    available: i64,
}

impl Expected {
    /// The counts and the stock's totals, for a message.
    fn summary(&self) -> String {
        let total = |f: fn(&Level) -> i64| self.stock.values().map(f).sum::<i64>();
        format!(
            "{} events ({} inventory), {} orders, {} refunded; {} SKUs stocked: {} on hand, {} \
             reserved, {} available; {} holds ({} units, {} orders); {} shipped lines not \
             committed",
            self.events,
            self.inventory_events,
            self.orders,
            self.refunded_orders,
            self.stock.len(),
            total(|l| l.on_hand),
            total(|l| l.reserved),
            total(|l| l.available),
            self.holds,
            self.held_units,
            self.held_orders,
            self.uncommitted_lines,
        )
    }
}

/// The same figures as the generator's, computed from the events in the database alone:
/// stock from the quantities (not from the levels the events state, which the views
/// copy), holds as the reservation manager keeps them.
async fn expected_from_log(pool: &sqlx::PgPool) -> Result<Expected> {
    // Payloads are read with `->` and `->>`, which work on `json` and `jsonb` alike.
    let (events, inventory_events, orders, refunded_orders, shipped_lines, committed): (
        i64,
        i64,
        i64,
        i64,
        i64,
        i64,
    ) = sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE aggregate_type = 'inventory'),
                count(*) FILTER (WHERE event_type = 'order.created'),
                count(DISTINCT aggregate_id) FILTER (WHERE event_type = 'order.refunded'),
                coalesce(sum(json_array_length((payload -> 'lines')::json))
                         FILTER (WHERE event_type = 'shipment.dispatched'), 0)::int8,
                count(*) FILTER (WHERE event_type = 'inventory.committed')
           FROM events",
    )
    .fetch_one(pool)
    .await
    .context("counting the log's events")?;
    let stock: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT aggregate_id,
                sum(CASE event_type
                      WHEN 'inventory.received' THEN (payload ->> 'quantity')::int8
                      WHEN 'inventory.adjusted' THEN (payload ->> 'delta')::int8
                      WHEN 'inventory.committed' THEN -(payload ->> 'quantity')::int8
                      ELSE 0 END)::int8,
                sum(CASE event_type
                      WHEN 'inventory.reserved' THEN (payload ->> 'quantity')::int8
                      WHEN 'inventory.released' THEN -(payload ->> 'quantity')::int8
                      WHEN 'inventory.committed' THEN -(payload ->> 'from_reservation')::int8
                      ELSE 0 END)::int8
           FROM events
          WHERE aggregate_type = 'inventory'
          GROUP BY aggregate_id",
    )
    .fetch_all(pool)
    .await
    .context("summing the log's stock movements")?;
    let (holds, held_units, held_orders): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(held), 0)::int8, count(DISTINCT order_id)
           FROM (SELECT payload ->> 'order_id' AS order_id, aggregate_id,
                        sum(CASE event_type
                              WHEN 'inventory.reserved' THEN (payload ->> 'quantity')::int8
                              WHEN 'inventory.released' THEN -(payload ->> 'quantity')::int8
                              ELSE -(payload ->> 'from_reservation')::int8 END) AS held
                   FROM events
                  WHERE aggregate_type = 'inventory'
                    AND event_type IN ('inventory.reserved', 'inventory.released',
                                       'inventory.committed')
                  GROUP BY 1, 2) AS h
          WHERE held > 0",
    )
    .fetch_one(pool)
    .await
    .context("counting the log's holds")?;
    Ok(Expected {
        events: events as usize,
        inventory_events: inventory_events as usize,
        orders: orders as usize,
        refunded_orders: refunded_orders as usize,
        stock: stock
            .into_iter()
            .map(|(sku, on_hand, reserved)| {
                let level = Level {
                    on_hand,
                    reserved,
                    available: on_hand - reserved,
                };
                (sku, level)
            })
            .collect(),
        holds: holds as usize,
        held_units,
        held_orders: held_orders as usize,
        // The bench's lines are all tracked or all untracked: with stock tracked every
        // shipped line is committed, without it none is due.
        uncommitted_lines: if inventory_events > 0 {
            (shipped_lines - committed) as usize
        } else {
            0
        },
    })
}

/// Prints the log's make-up: events per aggregate type, per event type, and orders.
async fn print_mix(db: &Database, expected: &Expected) -> Result<()> {
    let Database::Postgres(pool) = db else {
        return Ok(());
    };
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT aggregate_type, event_type, count(*) FROM events GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    let mut by_aggregate: BTreeMap<&str, i64> = BTreeMap::new();
    for (aggregate_type, _, n) in &rows {
        *by_aggregate.entry(aggregate_type).or_default() += n;
    }
    let list = |items: Vec<String>| items.join(", ");
    println!(
        "log: {}; {} orders",
        list(
            by_aggregate
                .iter()
                .map(|(t, n)| format!("{n} {t} events"))
                .collect()
        ),
        expected.orders
    );
    println!(
        "log by event type: {}",
        list(rows.iter().map(|(_, t, n)| format!("{t} {n}")).collect())
    );
    Ok(())
}

/// Columns of one INSERT.
#[derive(Default)]
struct Chunk {
    aggregate_type: Vec<String>,
    aggregate_id: Vec<String>,
    sequence: Vec<i64>,
    event_type: Vec<String>,
    event_version: Vec<String>,
    payload: Vec<String>,
    metadata: Vec<String>,
}

impl Chunk {
    fn len(&self) -> usize {
        self.sequence.len()
    }
}

/// Generates on a blocking thread and inserts on one connection, in order: a chunk is
/// one transaction, so the log's commit order is the generation order.
async fn load(pool: &sqlx::PgPool, events: usize, tracked: bool) -> Result<Expected> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(4);
    let generator = tokio::task::spawn_blocking(move || generate(events, tracked, tx));
    // `::json`, not `::jsonb`: it is assigned to either column type.
    let sql = "INSERT INTO events
                   (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
               SELECT t.aggregate_type, t.aggregate_id, t.sequence, t.event_type, t.event_version,
                      t.payload::json, t.metadata::json
                 FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[],
                             $6::text[], $7::text[])
                   AS t(aggregate_type, aggregate_id, sequence, event_type, event_version,
                        payload, metadata)";
    let mut conn = pool.acquire().await?;
    let mut inserted = 0usize;
    let mut last_report = Instant::now();
    let started = Instant::now();
    while let Some(chunk) = rx.recv().await {
        let n = chunk.len();
        sqlx::query(sql)
            .bind(chunk.aggregate_type)
            .bind(chunk.aggregate_id)
            .bind(chunk.sequence)
            .bind(chunk.event_type)
            .bind(chunk.event_version)
            .bind(chunk.payload)
            .bind(chunk.metadata)
            .execute(&mut *conn)
            .await?;
        inserted += n;
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            println!(
                "  loading: {inserted} events, {:.0} events/s",
                inserted as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let expected = generator.await??;
    if expected.events != inserted {
        bail!(
            "generated {} events but inserted {inserted}",
            expected.events
        );
    }
    Ok(expected)
}

/// An order part-way through its life.
struct Flow {
    order_id: OrderId,
    currency: Currency,
    total: Money,
    lines: Vec<OrderLine>,
    /// Each line's SKU, as its index in the catalogue.
    skus: Vec<usize>,
    /// Lines whose stock is held for the order (reserved, not yet committed).
    held: usize,
    /// The next stage to emit (0 = placed).
    stage: u8,
    sequence: i64,
    refund: bool,
    payment_id: PaymentId,
    shipment_id: ShipmentId,
    correlation_id: String,
    actor: String,
}

struct Catalogue {
    skus: Vec<(Sku, i64)>,
    usd: Currency,
    eur: Currency,
    gbp: Currency,
    carriers: Vec<Text>,
    methods: Vec<Text>,
    refund_reasons: Vec<Text>,
    countries: Vec<CountryCode>,
}

impl Catalogue {
    fn new() -> Self {
        let text = |s: &str| Text::parse(s).expect("static text");
        Self {
            skus: (1..=SKUS)
                .map(|i| {
                    let sku = Sku::parse(&format!("SKU-{i:04}.{}", ["S", "M", "L", "XL"][i % 4]))
                        .expect("static sku");
                    // 2.99 to 199.99 in minor units.
                    let price = 299 + ((i as i64 * 7_919) % 19_700);
                    (sku, price)
                })
                .collect(),
            usd: Currency::parse("USD").expect("USD"),
            eur: Currency::parse("EUR").expect("EUR"),
            gbp: Currency::parse("GBP").expect("GBP"),
            carriers: ["UPS", "DHL", "FedEx", "La Poste"].map(text).to_vec(),
            methods: ["card", "paypal", "apple_pay"].map(text).to_vec(),
            refund_reasons: [
                "damaged in transit",
                "customer changed their mind",
                "wrong size",
            ]
            .map(text)
            .to_vec(),
            countries: ["US", "FR", "DE", "GB", "NL"]
                .map(|c| CountryCode::parse(c).expect("country"))
                .to_vec(),
        }
    }
}

/// One SKU's stock while generating: the engine's own aggregate, so that every inventory
/// event states the levels the engine would have written, and the SKU's last sequence.
#[derive(Default)]
struct Stock {
    item: InventoryItem,
    sequence: i64,
}

impl Stock {
    /// Decides `command` as the SKU's aggregate would and applies the one event it causes.
    fn decide(&mut self, sku: &Sku, command: InventoryCommand) -> Result<InventoryEvent> {
        let mut events = self
            .item
            .decide(sku, command)
            .with_context(|| format!("{sku} refused a generated command"))?;
        let (Some(event), true) = (events.pop(), events.is_empty()) else {
            bail!("{sku}: a generated command did not cause exactly one event");
        };
        self.item.evolve(event.clone());
        self.sequence += 1;
        Ok(event)
    }

    fn level(&self) -> Level {
        Level {
            on_hand: self.item.on_hand(),
            reserved: self.item.reserved(),
            available: self.item.available(),
        }
    }
}

/// One event to write. A line's reservation or commit is decided on its SKU only when it
/// is written, so that what the event budget cuts off leaves the stock untouched.
enum Step {
    Order(Box<OrderEvent>),
    /// Reserve the flow's line (its index).
    Reserve(usize),
    /// Commit the flow's shipped line (its index).
    Commit(usize),
}

/// The generated log on its way to the inserter, in chunks, up to the event budget.
struct Output {
    chunk: Chunk,
    sender: tokio::sync::mpsc::Sender<Chunk>,
    emitted: usize,
    budget: usize,
}

impl Output {
    fn is_full(&self) -> bool {
        self.emitted >= self.budget
    }

    fn push<A: Aggregate>(
        &mut self,
        aggregate_id: &str,
        sequence: i64,
        event: &A::Event,
        metadata: &str,
    ) -> Result<()> {
        let payload = serde_json::to_string(event)?;
        // A payload the projections cannot decode (or decode into something else) would
        // only show as a failed or wrong rebuild much later: sample them here.
        if self.emitted % 97 == 0 {
            let back: A::Event = serde_json::from_str(&payload)
                .with_context(|| format!("a generated {} event does not decode", A::TYPE))?;
            if &back != event {
                bail!("a generated payload does not round-trip: {payload}");
            }
        }
        let chunk = &mut self.chunk;
        chunk.aggregate_type.push(A::TYPE.to_owned());
        chunk.aggregate_id.push(aggregate_id.to_owned());
        chunk.sequence.push(sequence);
        chunk.event_type.push(event.event_type());
        chunk.event_version.push(event.event_version());
        chunk.payload.push(payload);
        chunk.metadata.push(metadata.to_owned());
        self.emitted += 1;
        if chunk.len() == LOAD_CHUNK {
            let full = std::mem::take(&mut self.chunk);
            self.send(full)?;
        }
        Ok(())
    }

    fn send(&self, chunk: Chunk) -> Result<()> {
        self.sender
            .blocking_send(chunk)
            .map_err(|_| anyhow::anyhow!("the inserter stopped"))
    }

    /// Sends what is left; returns how many events were generated.
    fn finish(mut self) -> Result<usize> {
        if self.chunk.len() > 0 {
            let rest = std::mem::take(&mut self.chunk);
            self.send(rest)?;
        }
        Ok(self.emitted)
    }
}

fn generate(
    events: usize,
    tracked: bool,
    sender: tokio::sync::mpsc::Sender<Chunk>,
) -> Result<Expected> {
    let catalogue = Catalogue::new();
    // The same log for the same N, run after run.
    let mut rng = SmallRng::seed_from_u64(0x0DDB_1A5E_5BAD_5EED);
    let start: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 10, 22, 0, 0, 0).unwrap();
    let span_micros = TimeDelta::days(SPAN_DAYS).num_microseconds().unwrap_or(1);
    let mut expected = Expected::default();
    let mut pool: Vec<Flow> = Vec::with_capacity(ACTIVE_ORDERS);
    let mut stock: Vec<Stock> = (0..SKUS).map(|_| Stock::default()).collect();
    let mut flows = 0usize;
    let mut log = Output {
        chunk: Chunk::default(),
        sender,
        emitted: 0,
        budget: events,
    };
    if tracked {
        // The shelves are stocked before the shop opens: a SKU's stock is tracked from
        // its first receipt, and a reservation on an untracked SKU is refused.
        let quantity = Quantity::parse(STOCK_PER_SKU).expect("within Quantity::MAX");
        for ((sku, _), stock) in catalogue.skus.iter().zip(&mut stock) {
            if log.is_full() {
                break;
            }
            let event = stock.decide(
                sku,
                InventoryCommand::ReceiveStock {
                    quantity,
                    at: start,
                },
            )?;
            let metadata = metadata(&Uuid::new_v4().to_string(), "warehouse", start);
            log.push::<InventoryItem>(sku.as_str(), stock.sequence, &event, &metadata)?;
            expected.inventory_events += 1;
        }
    }
    let mut misfits = 0usize;
    while !log.is_full() {
        // The log's clock moves evenly over the span: each event is a little later.
        let at = start + TimeDelta::microseconds(span_micros * log.emitted as i64 / events as i64);
        let slot = rng.gen_range(0..ACTIVE_ORDERS);
        if slot >= pool.len() || pool[slot].stage == u8::MAX {
            let flow = new_flow(&catalogue, &mut rng, flows, tracked);
            flows += 1;
            if slot >= pool.len() {
                pool.push(flow);
            } else {
                pool[slot] = flow;
            }
        }
        let slot = slot.min(pool.len() - 1);
        let flow = &mut pool[slot];
        // Near the end of the budget, only a command whose events all fit: a log ends
        // between commands (not with an order's stock reserved but the order not created,
        // or a shipment whose units are not committed), unless none fits for so long that
        // the budget must be too small for any.
        if flow.next_len() > events - log.emitted && misfits < 100 * ACTIVE_ORDERS {
            misfits += 1;
            continue;
        }
        let steps = next_events(&catalogue, &mut rng, flow, at);
        // The inventory commands are caused by the order's command (placement reserves,
        // the shipment's commits follow): one command's metadata for all of them.
        let metadata = metadata(&flow.correlation_id, &flow.actor, at);
        for step in steps {
            if log.is_full() {
                break;
            }
            match step {
                Step::Order(event) => {
                    flow.sequence += 1;
                    match event.as_ref() {
                        OrderEvent::OrderCreated { .. } => expected.orders += 1,
                        OrderEvent::OrderRefunded { .. } => expected.refunded_orders += 1,
                        OrderEvent::ShipmentDispatched { .. } => {
                            expected.uncommitted_lines +=
                                flow.lines.iter().filter(|l| !l.untracked).count();
                        }
                        _ => {}
                    }
                    log.push::<Order>(flow.order_id.as_str(), flow.sequence, &event, &metadata)?;
                }
                Step::Reserve(line) => {
                    let OrderLine { sku, quantity, .. } = &flow.lines[line];
                    let stock = &mut stock[flow.skus[line]];
                    let reserve = InventoryCommand::ReserveStock {
                        order_id: flow.order_id.clone(),
                        quantity: *quantity,
                        at,
                    };
                    let event = stock.decide(sku, reserve)?;
                    if !matches!(event, InventoryEvent::StockReserved { .. }) {
                        bail!("a generated reservation was not made: {event:?}");
                    }
                    expected.holds += 1;
                    expected.held_units += i64::from(quantity.get());
                    expected.held_orders += usize::from(flow.held == 0);
                    flow.held += 1;
                    log.push::<InventoryItem>(sku.as_str(), stock.sequence, &event, &metadata)?;
                    expected.inventory_events += 1;
                }
                Step::Commit(line) => {
                    let OrderLine { sku, quantity, .. } = &flow.lines[line];
                    let stock = &mut stock[flow.skus[line]];
                    let commit = InventoryCommand::CommitReservation {
                        order_id: flow.order_id.clone(),
                        shipment_id: flow.shipment_id.clone(),
                        quantity: *quantity,
                        at,
                    };
                    let event = stock.decide(sku, commit)?;
                    // The whole line ships from its reservation, which ends the hold.
                    let InventoryEvent::ReservationCommitted {
                        from_reservation, ..
                    } = &event
                    else {
                        bail!("a generated commit was not made: {event:?}");
                    };
                    if *from_reservation != quantity.get() {
                        bail!("a shipped line was not reserved in full: {event:?}");
                    }
                    expected.holds -= 1;
                    expected.held_units -= i64::from(quantity.get());
                    flow.held -= 1;
                    expected.held_orders -= usize::from(flow.held == 0);
                    expected.uncommitted_lines -= 1;
                    log.push::<InventoryItem>(sku.as_str(), stock.sequence, &event, &metadata)?;
                    expected.inventory_events += 1;
                }
            }
        }
    }
    expected.stock = catalogue
        .skus
        .iter()
        .zip(&stock)
        .filter(|(_, stock)| stock.sequence > 0)
        .map(|((sku, _), stock)| (sku.to_string(), stock.level()))
        .collect();
    expected.events = log.finish()?;
    Ok(expected)
}

/// A new order: `tracked` says whether its lines' stock is tracked (and reserved).
fn new_flow(catalogue: &Catalogue, rng: &mut SmallRng, index: usize, tracked: bool) -> Flow {
    let currency = match rng.gen_range(0..100u32) {
        0..=79 => catalogue.usd,
        80..=91 => catalogue.eur,
        _ => catalogue.gbp,
    };
    let line_count = rng.gen_range(2..4);
    let mut lines: Vec<OrderLine> = Vec::with_capacity(line_count);
    let mut skus = Vec::with_capacity(line_count);
    while lines.len() < line_count {
        // A skewed draw: low SKU numbers sell more, as best sellers do.
        let a = rng.gen_range(0..SKUS);
        let b = rng.gen_range(0..SKUS);
        let index = a.min(b);
        let (sku, price) = &catalogue.skus[index];
        if lines.iter().any(|l| &l.sku == sku) {
            continue;
        }
        let quantity = Quantity::parse(rng.gen_range(1..=3)).expect("1..=3");
        let unit_price = Money::parse(*price, currency).expect("price");
        lines.push(OrderLine {
            sku: sku.clone(),
            quantity,
            line_total: unit_price.checked_mul(quantity).expect("small"),
            unit_price,
            // As placement marks a line whose SKU refuses reservations for want of
            // tracking (when untracked SKUs are allowed).
            untracked: !tracked,
            backordered: 0,
        });
        skus.push(index);
    }
    let total = lines
        .iter()
        .try_fold(Money::zero(currency), |sum, l| {
            sum.checked_add(l.line_total)
        })
        .expect("small");
    Flow {
        order_id: OrderId::parse(&format!(
            "ord-{index:08}-{:04x}",
            rng.gen_range(0..0x10000u32)
        ))
        .expect("order id"),
        currency,
        total,
        lines,
        skus,
        held: 0,
        stage: 0,
        sequence: 0,
        refund: rng.gen_bool(0.10),
        payment_id: PaymentId::parse(&format!("pay_{:016x}", rng.gen::<u64>()))
            .expect("payment id"),
        shipment_id: ShipmentId::parse(&format!("shp_{:016x}", rng.gen::<u64>()))
            .expect("shipment id"),
        correlation_id: Uuid::from_u64_pair(rng.gen::<u64>(), rng.gen::<u64>()).to_string(),
        actor: format!("storefront-{}", rng.gen_range(0..4u32)),
    }
}

impl Flow {
    /// How many events `next_events` writes for the flow's next command.
    fn next_len(&self) -> usize {
        let tracked = self.lines.iter().filter(|l| !l.untracked).count();
        match self.stage {
            0 | 3 => 1 + tracked,
            4 => 2,
            u8::MAX => 0,
            _ => 1,
        }
    }
}

/// Personal data sealed as the vault seals it, under a key made once.
fn seal(data: &PersonalData) -> Personal {
    static KEY: std::sync::OnceLock<KeyRing> = std::sync::OnceLock::new();
    let key = KEY.get_or_init(|| KeyRing::new(SecretKey::generate()));
    let clear = serde_json::to_string(data).expect("personal data serialises");
    Personal::Sealed(SealedPersonal::new(key.seal(&clear, "order.personal")))
}

/// The events of the flow's next command (delivery and fulfilment come together, as the
/// aggregate appends them in one command) with the inventory events it causes, and moves
/// the flow on.
fn next_events(
    catalogue: &Catalogue,
    rng: &mut SmallRng,
    flow: &mut Flow,
    at: DateTime<Utc>,
) -> Vec<Step> {
    let order_id = flow.order_id.clone();
    let (events, next) = match flow.stage {
        0 => {
            let customer = CustomerId::parse(&format!("cust-{:05}", rng.gen_range(0..CUSTOMERS)))
                .expect("customer id");
            let free = |s: &str| FreeText::parse(s).expect("address text");
            let shipping_address = rng.gen_bool(0.70).then(|| ShippingAddress {
                name: free("A. Customer"),
                line1: free(&format!("{} Main Street", 1 + rng.gen_range(0..999u32))),
                line2: None,
                city: free("Springfield"),
                region: None,
                postal_code: free(&format!("{:05}", rng.gen_range(0..100_000u32))),
                country: catalogue.countries[rng.gen_range(0..catalogue.countries.len())].clone(),
            });
            (
                vec![OrderEvent::OrderCreated {
                    order_id,
                    customer_id: customer,
                    currency: flow.currency,
                    lines: flow.lines.clone(),
                    subtotal: flow.total,
                    discounts: vec![],
                    shipping_lines: vec![],
                    tax_lines: vec![],
                    total: flow.total,
                    // Sealed, as the server stores it (`store::vault`); no projection
                    // opens it.
                    personal: shipping_address.map(|address| {
                        seal(&PersonalData {
                            shipping_address: Some(address),
                            ..PersonalData::default()
                        })
                    }),
                    origin: None,
                    placed_at: at,
                }],
                1,
            )
        }
        1 => (
            vec![OrderEvent::PaymentAttempted {
                order_id,
                payment_id: flow.payment_id.clone(),
                amount: flow.total,
                method: Some(catalogue.methods[rng.gen_range(0..catalogue.methods.len())].clone()),
                attempted_at: at,
            }],
            2,
        ),
        2 => (
            vec![OrderEvent::PaymentCaptured {
                order_id,
                payment_id: flow.payment_id.clone(),
                amount: flow.total,
                captured_total: flow.total,
                captured_at: at,
            }],
            3,
        ),
        3 => (
            vec![OrderEvent::ShipmentDispatched {
                order_id,
                shipment_id: flow.shipment_id.clone(),
                carrier: catalogue.carriers[rng.gen_range(0..catalogue.carriers.len())].clone(),
                tracking_number: Text::parse(&format!(
                    "1Z{:012}",
                    rng.gen_range(0..1_000_000_000_000u64)
                ))
                .expect("tracking"),
                lines: flow
                    .lines
                    .iter()
                    .map(|l| ShipmentLine {
                        sku: l.sku.clone(),
                        quantity: l.quantity,
                    })
                    .collect(),
                order_fully_shipped: true,
                dispatched_at: at,
            }],
            4,
        ),
        4 => (
            vec![
                OrderEvent::ShipmentDelivered {
                    order_id: order_id.clone(),
                    shipment_id: flow.shipment_id.clone(),
                    delivered_at: at,
                },
                OrderEvent::OrderFulfilled {
                    order_id,
                    total: flow.total,
                    fulfilled_at: at,
                },
            ],
            if flow.refund { 5 } else { u8::MAX },
        ),
        5 => {
            let full = rng.gen_bool(0.50) || flow.total.amount() < 2;
            let amount = if full {
                flow.total
            } else {
                Money::parse(flow.total.amount() / 2, flow.currency).expect("half")
            };
            (
                vec![OrderEvent::OrderRefunded {
                    order_id,
                    refund_id: RefundId::parse(&format!("ref_{:016x}", rng.gen::<u64>()))
                        .expect("refund id"),
                    amount,
                    reason: catalogue.refund_reasons
                        [rng.gen_range(0..catalogue.refund_reasons.len())]
                    .clone(),
                    refunded_total: amount,
                    fully_refunded: full,
                    refunded_at: at,
                }],
                u8::MAX,
            )
        }
        _ => (Vec::new(), u8::MAX),
    };
    let tracked_lines = flow
        .lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.untracked)
        .map(|(i, _)| i);
    let orders = events.into_iter().map(|e| Step::Order(Box::new(e)));
    let steps = match flow.stage {
        // Placement reserves every tracked line, each on its SKU, before it creates the
        // order (process::placement).
        0 => tracked_lines.map(Step::Reserve).chain(orders).collect(),
        // The reservation manager commits each shipped tracked line once the shipment is
        // out (process::reservations).
        3 => orders.chain(tracked_lines.map(Step::Commit)).collect(),
        _ => orders.collect(),
    };
    flow.stage = next;
    steps
}

/// The metadata the command path stamps on every event of a command.
fn metadata(correlation_id: &str, actor: &str, at: DateTime<Utc>) -> String {
    let command_id = Uuid::now_v7().to_string();
    json!({
        "command_id": command_id,
        "correlation_id": correlation_id,
        "causation_id": command_id,
        "traceparent": format!("00-{}-{}-01", Uuid::new_v4().simple(), &Uuid::new_v4().simple().to_string()[..16]),
        "actor": actor,
        "received_at": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    })
    .to_string()
}

#[derive(Debug, Clone, Copy)]
enum Reader {
    /// `store::reader::read_after`, as the runner reads.
    Library,
    /// The same query with `ORDER BY events.transaction_id, events.global_position`.
    FixedOrder,
}

impl Reader {
    fn label(self) -> &'static str {
        match self {
            Reader::Library => "reader::read_after",
            Reader::FixedOrder => "fixed ORDER BY",
        }
    }

    async fn read(self, db: &Database, after: Cursor, limit: i64) -> Result<Vec<LogEntry>> {
        match (self, db) {
            (Reader::FixedOrder, Database::Postgres(pool)) => read_fixed(pool, after, limit).await,
            _ => Ok(reader::read_after(db, after, limit).await?),
        }
    }
}

/// `reader::read_after`'s PostgreSQL query, except for its ORDER BY. In the library's
/// query `ORDER BY transaction_id` names the output column (`transaction_id::text::int8
/// AS transaction_id`), not the indexed table column, so PostgreSQL cannot walk
/// `events_by_cursor`: it sorts every event after the cursor to return the first 5,000,
/// and a full read is quadratic in the log's length. Here the ORDER BY names the table's
/// columns.
async fn read_fixed(pool: &sqlx::PgPool, after: Cursor, limit: i64) -> Result<Vec<LogEntry>> {
    let rows = sqlx::query(
        "SELECT transaction_id::text::int8 AS transaction_id, global_position, event_id,
                aggregate_type, aggregate_id, sequence, event_type, event_version,
                payload::text AS payload, recorded_at
           FROM events
          WHERE (transaction_id, global_position) > ($1::text::xid8, $2)
            AND transaction_id < pg_snapshot_xmin(pg_current_snapshot())
          ORDER BY events.transaction_id, events.global_position
          LIMIT $3",
    )
    .bind(after.transaction_id.to_string())
    .bind(after.position)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(LogEntry {
                cursor: Cursor {
                    transaction_id: row.try_get("transaction_id")?,
                    position: row.try_get("global_position")?,
                },
                event_id: row.try_get("event_id")?,
                aggregate_type: row.try_get("aggregate_type")?,
                aggregate_id: row.try_get("aggregate_id")?,
                sequence: row.try_get("sequence")?,
                event_type: row.try_get("event_type")?,
                event_version: row.try_get("event_version")?,
                payload: row.try_get("payload")?,
                metadata: None,
                recorded_at: row.try_get("recorded_at")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// Reads the whole log as a catch-up reader would. Returns seconds, events, last cursor.
async fn read_log(db: &Database, reader: Reader) -> Result<(f64, usize, Cursor)> {
    let started = Instant::now();
    let mut cursor = Cursor::START;
    let mut count = 0usize;
    loop {
        let batch = reader.read(db, cursor, READ_BATCH).await?;
        let Some(last) = batch.last() else {
            break;
        };
        cursor = last.cursor;
        count += batch.len();
    }
    Ok((started.elapsed().as_secs_f64(), count, cursor))
}

/// Every projection is running at the end of the log, and the views hold what was
/// generated. Prints what is wrong and returns false if anything is.
async fn check(p: &Projections, db: &Database, last: Cursor, expected: &Expected) -> Result<bool> {
    let mut ok = true;
    for status in p.status().await? {
        if status.state != "running" || status.checkpoint != last || status.lag_events != 0 {
            println!(
                "ERROR: projection {} is {} at {:?} with {} events to go; expected running at {:?}",
                status.name, status.state, status.checkpoint, status.lag_events, last
            );
            ok = false;
        }
        if let Some(error) = &status.last_error {
            println!("ERROR: projection {} reports: {error}", status.name);
            ok = false;
        }
    }
    let Database::Postgres(pool) = db else {
        return Ok(ok);
    };
    let summary = p
        .table(
            projections::order_summary::NAME,
            projections::order_summary::ORDERS.name,
        )
        .await?;
    let orders: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {summary}"))
        .fetch_one(pool)
        .await?;
    let daily = p
        .table(
            projections::analytics::NAME,
            projections::analytics::DAILY.name,
        )
        .await?;
    let placed: i64 = sqlx::query_scalar(&format!(
        "SELECT coalesce(sum(orders_placed), 0)::int8 FROM {daily}"
    ))
    .fetch_one(pool)
    .await?;
    let refunded: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {summary} WHERE refunded > 0"
    ))
    .fetch_one(pool)
    .await?;
    if orders as usize != expected.orders || placed as usize != expected.orders {
        println!(
            "ERROR: views hold {orders} order summaries and {placed} orders placed; {} were generated",
            expected.orders
        );
        ok = false;
    }
    if refunded as usize != expected.refunded_orders {
        println!(
            "ERROR: {refunded} orders show a refund; {} refunds were generated",
            expected.refunded_orders
        );
        ok = false;
    }

    // Stock: one row per stocked SKU, at the levels its last event states.
    let items = p
        .table(
            projections::inventory::NAME,
            projections::inventory::ITEMS.name,
        )
        .await?;
    let rows: Vec<(String, i64, i64, i64)> = sqlx::query_as(&format!(
        "SELECT id, on_hand, reserved, available FROM {items}"
    ))
    .fetch_all(pool)
    .await?;
    let stock: BTreeMap<String, Level> = rows
        .into_iter()
        .map(|(sku, on_hand, reserved, available)| {
            let level = Level {
                on_hand,
                reserved,
                available,
            };
            (sku, level)
        })
        .collect();
    let wrong: BTreeSet<&String> = expected
        .stock
        .keys()
        .chain(stock.keys())
        .filter(|sku| expected.stock.get(*sku) != stock.get(*sku))
        .collect();
    if let Some(sku) = wrong.first() {
        println!(
            "ERROR: the stock view differs for {} SKU(s) (it holds {} rows, {} SKUs were \
             stocked); {sku}: {:?} in the view, {:?} generated",
            wrong.len(),
            stock.len(),
            expected.stock.len(),
            stock.get(*sku),
            expected.stock.get(*sku)
        );
        ok = false;
    }

    // The reservation manager: every shipped line committed (no commit left to do), and
    // stock held for exactly the orders not shipped yet.
    let holds_table = p
        .table(reservations::NAME, reservations::HOLDS.name)
        .await?;
    let (holds, held_units, held_orders): (i64, i64, i64) = sqlx::query_as(&format!(
        "SELECT count(*), coalesce(sum(quantity), 0)::int8, count(DISTINCT order_id)
           FROM {holds_table}"
    ))
    .fetch_one(pool)
    .await?;
    let actions_table = p
        .table(reservations::NAME, reservations::ACTIONS.name)
        .await?;
    let (commits, actions): (i64, i64) = sqlx::query_as(&format!(
        "SELECT count(*) FILTER (WHERE kind = 'commit'), count(*) FROM {actions_table}"
    ))
    .fetch_one(pool)
    .await?;
    if (holds as usize, held_units, held_orders as usize)
        != (expected.holds, expected.held_units, expected.held_orders)
    {
        println!(
            "ERROR: the reservation manager holds {held_units} units in {holds} holds for \
             {held_orders} orders; {} units in {} holds for {} orders were generated",
            expected.held_units, expected.holds, expected.held_orders
        );
        ok = false;
    }
    if commits as usize != expected.uncommitted_lines {
        println!(
            "ERROR: the reservation manager has {commits} commit actions pending; {} shipped \
             lines were left uncommitted",
            expected.uncommitted_lines
        );
        ok = false;
    }

    let total = |f: fn(&Level) -> i64| stock.values().map(f).sum::<i64>();
    println!(
        "check: {orders} orders, {refunded} refunded; stock of {} SKUs: {} on hand, {} \
         reserved, {} available; {holds} holds ({held_units} units, {held_orders} orders), \
         {commits} commit actions of {actions} actions: {}",
        stock.len(),
        total(|l| l.on_hand),
        total(|l| l.reserved),
        total(|l| l.available),
        if ok { "OK" } else { "FAILED" }
    );
    Ok(ok)
}

#[derive(Default)]
struct Phases {
    name: &'static str,
    read: f64,
    decode: f64,
    apply: f64,
    commit: f64,
}

impl Phases {
    fn total(&self) -> f64 {
        self.read + self.decode + self.apply + self.commit
    }
}

const SHARED: &str = "all from one read";

async fn create_scratch(db: &Database, projection: &dyn Projection, generation: i64) -> Result<()> {
    let mut tx = Tx::begin(db).await?;
    for table in projection.tables() {
        let name = physical(projection.name(), generation, table.name);
        tx.drop_table(&name).await?;
        tx.create_table_unindexed(&name, table).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn drop_scratch(db: &Database, projection: &dyn Projection, generation: i64) -> Result<()> {
    let mut tx = Tx::begin(db).await?;
    for table in projection.tables() {
        tx.drop_table(&physical(projection.name(), generation, table.name))
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// One rebuild pass of `projection` the way the runner's in-memory rebuild does it
/// (read a batch, `Envelope::decode`, `Projection::apply` to a view held in memory;
/// once at the end, `MemoryTables::flush` into fresh tables in one transaction), timing
/// each phase. The read uses the fixed-order query.
async fn time_phases(db: &Database, projection: Arc<dyn Projection>) -> Result<Phases> {
    let name = projection.name();
    create_scratch(db, projection.as_ref(), PHASE_GENERATION).await?;
    let mut phases = Phases {
        name,
        ..Phases::default()
    };
    let mut view = View {
        store: ViewStore::Memory(MemoryTables::default()),
        projection: name,
        generation: PHASE_GENERATION,
    };
    let mut cursor = Cursor::START;
    loop {
        let t = Instant::now();
        let entries = Reader::FixedOrder.read(db, cursor, READ_BATCH).await?;
        phases.read += t.elapsed().as_secs_f64();
        let Some(last) = entries.last() else {
            break;
        };
        cursor = last.cursor;
        let t = Instant::now();
        let events = entries
            .into_iter()
            .map(Envelope::decode)
            .collect::<Result<Vec<_>, _>>()?;
        phases.decode += t.elapsed().as_secs_f64();
        let t = Instant::now();
        projection.apply(&mut view, &events).await?;
        phases.apply += t.elapsed().as_secs_f64();
    }
    let t = Instant::now();
    flush(db, view, projection.tables()).await?;
    phases.commit += t.elapsed().as_secs_f64();
    drop_scratch(db, projection.as_ref(), PHASE_GENERATION).await?;
    println!(
        "phases: {name:<14} read {:.2} s, decode {:.2} s, apply {:.2} s, flush {:.2} s",
        phases.read, phases.decode, phases.apply, phases.commit
    );
    Ok(phases)
}

/// Writes an in-memory view into its tables, then builds their keys and indexes, in one
/// transaction (as the runner's switch does).
async fn flush(db: &Database, view: View, tables: &[Table]) -> Result<()> {
    let ViewStore::Memory(mut memory) = view.store else {
        bail!("expected an in-memory view");
    };
    let mut tx = Tx::begin(db).await?;
    memory
        .flush(&mut tx, view.projection, view.generation)
        .await?;
    for table in tables {
        tx.index_table(
            &physical(view.projection, view.generation, table.name),
            table,
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// All projections from one read, for comparison with one pass per projection: each
/// batch is read and decoded once and applied to every in-memory view concurrently;
/// at the end each is flushed. The apply column is wall time for all of them together.
async fn time_shared(db: &Database, list: Vec<Arc<dyn Projection>>) -> Result<Phases> {
    let generation = PHASE_GENERATION + 1;
    for projection in &list {
        create_scratch(db, projection.as_ref(), generation).await?;
    }
    let mut phases = Phases {
        name: SHARED,
        ..Phases::default()
    };
    let mut views: Vec<Option<View>> = list
        .iter()
        .map(|p| {
            Some(View {
                store: ViewStore::Memory(MemoryTables::default()),
                projection: p.name(),
                generation,
            })
        })
        .collect();
    let mut cursor = Cursor::START;
    loop {
        let t = Instant::now();
        let entries = Reader::FixedOrder.read(db, cursor, READ_BATCH).await?;
        phases.read += t.elapsed().as_secs_f64();
        let Some(last) = entries.last() else {
            break;
        };
        cursor = last.cursor;
        let t = Instant::now();
        let events = Arc::new(
            entries
                .into_iter()
                .map(Envelope::decode)
                .collect::<Result<Vec<_>, _>>()?,
        );
        phases.decode += t.elapsed().as_secs_f64();
        let t = Instant::now();
        let tasks: Vec<_> = list
            .iter()
            .zip(views.iter_mut())
            .map(|(projection, view)| {
                let (projection, events) = (projection.clone(), events.clone());
                let mut view = view.take().expect("a view per projection");
                tokio::spawn(async move {
                    let result = projection.apply(&mut view, &events).await;
                    (view, result)
                })
            })
            .collect();
        for (slot, task) in views.iter_mut().zip(tasks) {
            let (view, result) = task.await?;
            result?;
            *slot = Some(view);
        }
        phases.apply += t.elapsed().as_secs_f64();
    }
    let t = Instant::now();
    // Side by side, one transaction each, as the runner's switches write them.
    let flushes: Vec<_> = views
        .into_iter()
        .zip(&list)
        .filter_map(|(view, projection)| {
            let (db, tables) = (db.clone(), projection.tables());
            view.map(|view| tokio::spawn(async move { flush(&db, view, tables).await }))
        })
        .collect();
    for flushing in flushes {
        flushing.await??;
    }
    phases.commit += t.elapsed().as_secs_f64();
    for projection in &list {
        drop_scratch(db, projection.as_ref(), generation).await?;
    }
    println!(
        "phases: {SHARED}: read {:.2} s, decode {:.2} s, apply to all {:.2} s, flush {:.2} s",
        phases.read, phases.decode, phases.apply, phases.commit
    );
    Ok(phases)
}
