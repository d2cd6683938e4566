//! Benchmark: rebuild every projection from a large log, on PostgreSQL.
//!
//! Loads N order events (default 1,000,000) straight into `events` in a fresh schema,
//! then, R times (default 3):
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
//! cargo run --release --bin bench_rebuild -- 1000000
//! ```
//!
//! Settings (environment): `ORDERLOG_BENCH_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres?options[search_path]=bench_rebuild`;
//! the schema in its `search_path` is dropped and recreated), `BENCH_EVENTS` (or the
//! first argument), `BENCH_RUNS` (3), `BENCH_TOGETHER` (1: also time all of them requested
//! together, this many times, median reported; 0 skips it), `BENCH_PHASES` (1: also time the phases; 0 skips it),
//! `BENCH_SINGLE` (1: rebuild each projection on its own in every run; 0 skips that),
//! `BENCH_REUSE` (0; 1: keep the log a previous run loaded into the same schema when it
//! has exactly N events, instead of loading it again).
//!
//! Not a test: it prints figures. BENCHMARKS.md records them.

mod bench_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::json;
use sqlx::Row;
use uuid::Uuid;

use bench_support::{env_number, median, recreate_schema, CpuTimes};
use orderlog::domain::order::{OrderEvent, OrderLine, ShipmentLine};
use orderlog::domain::values::{
    CountryCode, Currency, CustomerId, Money, OrderId, PaymentId, Quantity, RefundId, ShipmentId,
    ShippingAddress, Sku, Text,
};
use orderlog::projections::runner::Projections;
use orderlog::projections::{self, Envelope, MemoryTables, Projection, View, ViewStore};
use orderlog::store::reader::{self, Cursor, LogEntry, LogSignal};
use orderlog::store::views::{physical, Table, Tx};
use orderlog::store::Database;

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
const CUSTOMERS: u64 = 50_000;
const SPAN_DAYS: i64 = 30;
/// Scratch generation used by the phase breakdown; far above anything the runner uses.
const PHASE_GENERATION: i64 = 9_000;

#[tokio::main]
async fn main() -> Result<()> {
    let events: usize = std::env::args()
        .nth(1)
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
    let url = std::env::var("ORDERLOG_BENCH_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into());

    println!("bench_rebuild: {events} events, {runs} run(s), PostgreSQL");
    let reused = if reuse {
        reuse_log(&url, events).await?
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
            let expected = load(pool, events).await?;
            let load_secs = started.elapsed().as_secs_f64();
            println!(
                "loaded {} events ({} orders, {} to be refunded) in {:.1} s: {:.0} events/s",
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
            (db, expected, load_secs)
        }
    };

    let p = Projections::new(
        db.clone(),
        projections::all(&orderlog::config::Settings::default()),
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
                    b.process - a.process,
                    b.postgres - a.postgres,
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
                b.process - a.process,
                b.postgres - a.postgres,
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
        for projection in projections::all(&orderlog::config::Settings::default()) {
            rows.push(time_phases(&db, projection).await?);
        }
        let shared = time_shared(
            &db,
            projections::all(&orderlog::config::Settings::default()),
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
/// holds exactly `events` events (and `None` otherwise, so that it is loaded afresh).
async fn reuse_log(url: &str, events: usize) -> Result<Option<(Database, Expected)>> {
    let db = Database::connect(url, 8).await?;
    let Database::Postgres(pool) = &db else {
        bail!("bench_rebuild needs PostgreSQL");
    };
    let counts: Option<(i64, i64, i64)> = sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE event_type = 'order.created'),
                count(DISTINCT aggregate_id) FILTER (WHERE event_type = 'order.refunded')
           FROM events",
    )
    .fetch_optional(pool)
    .await
    .ok()
    .flatten();
    match counts {
        Some((n, orders, refunded)) if n as usize == events => {
            db.migrate().await?;
            Ok(Some((
                db,
                Expected {
                    events,
                    orders: orders as usize,
                    refunded_orders: refunded as usize,
                },
            )))
        }
        _ => {
            db.close().await;
            Ok(None)
        }
    }
}

/// What the generator produced, for the checks after each rebuild.
#[derive(Debug, Default, Clone)]
struct Expected {
    events: usize,
    orders: usize,
    refunded_orders: usize,
}

/// Columns of one INSERT.
#[derive(Default)]
struct Chunk {
    aggregate_id: Vec<String>,
    sequence: Vec<i64>,
    event_type: Vec<String>,
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
async fn load(pool: &sqlx::PgPool, events: usize) -> Result<Expected> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(4);
    let generator = tokio::task::spawn_blocking(move || generate(events, tx));
    let sql = "INSERT INTO events
                   (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
               SELECT 'order', t.aggregate_id, t.sequence, t.event_type, $5, t.payload::jsonb,
                      t.metadata::jsonb
                 FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $6::text[])
                   AS t(aggregate_id, sequence, event_type, payload, metadata)";
    let mut conn = pool.acquire().await?;
    let mut inserted = 0usize;
    let mut last_report = Instant::now();
    let started = Instant::now();
    while let Some(chunk) = rx.recv().await {
        let n = chunk.len();
        sqlx::query(sql)
            .bind(chunk.aggregate_id)
            .bind(chunk.sequence)
            .bind(chunk.event_type)
            .bind(chunk.payload)
            .bind(OrderEvent::VERSION)
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

/// splitmix64: small, fast and reproducible; no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// An order part-way through its life.
struct Flow {
    order_id: OrderId,
    currency: Currency,
    total: Money,
    lines: Vec<OrderLine>,
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

fn generate(events: usize, out: tokio::sync::mpsc::Sender<Chunk>) -> Result<Expected> {
    let catalogue = Catalogue::new();
    let mut rng = Rng(0x0DDB_1A5E_5BAD_5EED);
    let start: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 10, 22, 0, 0, 0).unwrap();
    let span_micros = TimeDelta::days(SPAN_DAYS).num_microseconds().unwrap_or(1);
    let mut expected = Expected::default();
    let mut pool: Vec<Flow> = Vec::with_capacity(ACTIVE_ORDERS);
    let mut chunk = Chunk::default();
    let mut emitted = 0usize;
    while emitted < events {
        // The log's clock moves evenly over the span: each event is a little later.
        let at = start + TimeDelta::microseconds(span_micros * emitted as i64 / events as i64);
        let slot = rng.below(ACTIVE_ORDERS as u64) as usize;
        if slot >= pool.len() || pool[slot].stage == u8::MAX {
            let flow = new_flow(&catalogue, &mut rng, expected.orders);
            expected.orders += 1;
            expected.refunded_orders += usize::from(flow.refund);
            if slot >= pool.len() {
                pool.push(flow);
            } else {
                pool[slot] = flow;
            }
        }
        let slot = slot.min(pool.len() - 1);
        let batch = next_events(&catalogue, &mut rng, &mut pool[slot], at);
        let metadata = metadata(&pool[slot], at);
        for event in batch {
            if emitted == events {
                break;
            }
            let flow = &mut pool[slot];
            flow.sequence += 1;
            let payload = serde_json::to_string(&event)?;
            if emitted % 97 == 0 {
                let back: OrderEvent = serde_json::from_str(&payload)
                    .context("a generated payload does not decode as an OrderEvent")?;
                if back != event {
                    bail!("a generated payload does not round-trip: {payload}");
                }
            }
            chunk.aggregate_id.push(flow.order_id.to_string());
            chunk.sequence.push(flow.sequence);
            chunk.event_type.push(event.name().to_owned());
            chunk.payload.push(payload);
            chunk.metadata.push(metadata.clone());
            emitted += 1;
            if chunk.len() == LOAD_CHUNK {
                out.blocking_send(std::mem::take(&mut chunk))
                    .map_err(|_| anyhow::anyhow!("the inserter stopped"))?;
            }
        }
    }
    if chunk.len() > 0 {
        out.blocking_send(chunk)
            .map_err(|_| anyhow::anyhow!("the inserter stopped"))?;
    }
    expected.events = emitted;
    Ok(expected)
}

fn new_flow(catalogue: &Catalogue, rng: &mut Rng, index: usize) -> Flow {
    let currency = match rng.below(100) {
        0..=79 => catalogue.usd,
        80..=91 => catalogue.eur,
        _ => catalogue.gbp,
    };
    let line_count = 2 + rng.below(2) as usize;
    let mut lines: Vec<OrderLine> = Vec::with_capacity(line_count);
    while lines.len() < line_count {
        // A skewed draw: low SKU numbers sell more, as best sellers do.
        let a = rng.below(SKUS as u64);
        let b = rng.below(SKUS as u64);
        let (sku, price) = &catalogue.skus[a.min(b) as usize];
        if lines.iter().any(|l| &l.sku == sku) {
            continue;
        }
        let quantity = Quantity::parse(1 + rng.below(3) as i64).expect("1..=3");
        let unit_price = Money::parse(*price, currency).expect("price");
        lines.push(OrderLine {
            sku: sku.clone(),
            quantity,
            line_total: unit_price.checked_mul(quantity).expect("small"),
            unit_price,
            untracked: false,
        });
    }
    let total = lines
        .iter()
        .try_fold(Money::zero(currency), |sum, l| {
            sum.checked_add(l.line_total)
        })
        .expect("small");
    Flow {
        order_id: OrderId::parse(&format!("ord-{index:08}-{:04x}", rng.below(0x10000)))
            .expect("order id"),
        currency,
        total,
        lines,
        stage: 0,
        sequence: 0,
        refund: rng.chance(10),
        payment_id: PaymentId::parse(&format!("pay_{:016x}", rng.next())).expect("payment id"),
        shipment_id: ShipmentId::parse(&format!("shp_{:016x}", rng.next())).expect("shipment id"),
        correlation_id: Uuid::from_u64_pair(rng.next(), rng.next()).to_string(),
        actor: format!("storefront-{}", rng.below(4)),
    }
}

/// The events of the flow's next command (delivery and fulfilment come together, as the
/// aggregate appends them in one command), and moves the flow on.
fn next_events(
    catalogue: &Catalogue,
    rng: &mut Rng,
    flow: &mut Flow,
    at: DateTime<Utc>,
) -> Vec<OrderEvent> {
    let order_id = flow.order_id.clone();
    let (events, next) = match flow.stage {
        0 => {
            let customer = CustomerId::parse(&format!("cust-{:05}", rng.below(CUSTOMERS)))
                .expect("customer id");
            let shipping_address = rng.chance(70).then(|| ShippingAddress {
                name: "A. Customer".to_owned(),
                line1: format!("{} Main Street", 1 + rng.below(999)),
                line2: None,
                city: "Springfield".to_owned(),
                region: None,
                postal_code: format!("{:05}", rng.below(100_000)),
                country: catalogue.countries[rng.below(catalogue.countries.len() as u64) as usize]
                    .clone(),
            });
            (
                vec![OrderEvent::OrderPlaced {
                    order_id,
                    customer_id: customer,
                    currency: flow.currency,
                    lines: flow.lines.clone(),
                    total: flow.total,
                    shipping_address,
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
                method: Some(
                    catalogue.methods[rng.below(catalogue.methods.len() as u64) as usize].clone(),
                ),
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
                carrier: catalogue.carriers[rng.below(catalogue.carriers.len() as u64) as usize]
                    .clone(),
                tracking_number: Text::parse(&format!("1Z{:012}", rng.below(1_000_000_000_000)))
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
            let full = rng.chance(50) || flow.total.amount() < 2;
            let amount = if full {
                flow.total
            } else {
                Money::parse(flow.total.amount() / 2, flow.currency).expect("half")
            };
            (
                vec![OrderEvent::OrderRefunded {
                    order_id,
                    refund_id: RefundId::parse(&format!("ref_{:016x}", rng.next()))
                        .expect("refund id"),
                    amount,
                    reason: catalogue.refund_reasons
                        [rng.below(catalogue.refund_reasons.len() as u64) as usize]
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
    flow.stage = next;
    events
}

/// The metadata the command path stamps on every event of a command.
fn metadata(flow: &Flow, at: DateTime<Utc>) -> String {
    let command_id = Uuid::now_v7().to_string();
    json!({
        "command_id": command_id,
        "correlation_id": flow.correlation_id,
        "causation_id": command_id,
        "traceparent": format!("00-{}-{}-01", Uuid::new_v4().simple(), &Uuid::new_v4().simple().to_string()[..16]),
        "actor": flow.actor,
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
    // A refunded order may be cut off by the event budget before its refund.
    if refunded as usize > expected.refunded_orders {
        println!(
            "ERROR: {refunded} orders show a refund; at most {} were generated",
            expected.refunded_orders
        );
        ok = false;
    }
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
