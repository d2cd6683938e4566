//! Benchmark: projection lag under a steady command load, on PostgreSQL.
//!
//! Starts the real server in this process (fresh schema, port 0), drives it over HTTP
//! at a fixed command rate for a fixed time, then prints what the server measured for
//! each projection: `apply_lag` from `GET /v1/admin/projections`, the time from an
//! event's `recorded_at` to the commit of the view batch that applied it. It also
//! prints the achieved command rate and the client-side command latency.
//!
//! Load model: open loop at the level of flows. A flow (place an order, attempt a
//! payment for its total, capture that payment: three commands, one event each) starts
//! every `3 / rate` seconds on a fixed schedule, whatever the responses do; within a
//! flow each command waits for the previous answer. Flows run on a fixed set of
//! keep-alive HTTP/1.1 connections (hyper's client); when all are busy a flow waits, and that wait is
//! reported ("start delay") so that a server which cannot keep up shows it.
//!
//! ```text
//! cargo bench --bench bench_lag
//! BENCH_RATE=1000 cargo bench --bench bench_lag
//! ```
//!
//! Settings (environment): `ORDERLOG_BENCH_LAG_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres?options[search_path]=bench_lag`; the
//! schema in its `search_path` is dropped and recreated), `BENCH_SECONDS` (20),
//! `BENCH_RATE` (400 commands/s), `BENCH_CONNECTIONS` (32), `BENCH_POOL` (the server's
//! database pool, 16).
//!
//! Not a test: it prints figures. BENCHMARKS.md records them.

mod support;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::ConnectOptions;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use orderlog::app::Application;
use orderlog::config::Settings;
use support::{cores, env_number, projections, recreate_schema, CpuTimes, Http};

const DEFAULT_URL: &str =
    "postgres://postgres@127.0.0.1:5432/postgres?options[search_path]=bench_lag";
const COMMANDS_PER_FLOW: f64 = 3.0;

#[tokio::main]
async fn main() -> Result<()> {
    let seconds = env_number("BENCH_SECONDS", 20.0)?;
    let rate = env_number("BENCH_RATE", 400.0)?;
    let connections = env_number("BENCH_CONNECTIONS", 32.0)? as usize;
    let pool_size = env_number("BENCH_POOL", 16.0)? as u32;
    let url =
        std::env::var("ORDERLOG_BENCH_LAG_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into());
    if rate <= 0.0 || seconds <= 0.0 || connections == 0 {
        bail!("BENCH_RATE, BENCH_SECONDS and BENCH_CONNECTIONS must be positive");
    }

    let schema = recreate_schema(&url, "bench_lag").await?;
    let settings = Settings {
        db_pool_size: pool_size,
        ..support::server_settings(&url)?
    };
    let app = Application::build(settings).await?;
    let addr = app.local_addr()?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run(shutdown.clone()));
    println!(
        "bench_lag: server on {addr}, schema `{schema}`, database pool {pool_size}; \
         target {rate} commands/s for {seconds} s over {connections} keep-alive connections \
         (open-loop flows of 3 commands, one every {:.2} ms)",
        1000.0 * COMMANDS_PER_FLOW / rate
    );

    // Open the connections first (GET /health appends nothing).
    let conns = Http::connect_many(addr, connections).await?;

    // How busy the machine is without us: other work skews every figure below.
    let idle_before = CpuTimes::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle_after = CpuTimes::now();
    let cores = cores();
    if let (Some(a), Some(b)) = (idle_before, idle_after) {
        println!(
            "machine busy before the load (1 s sample): {:.0}% of {cores} cores",
            100.0 * (b.busy - a.busy) / cores as f64
        );
    }
    let mut stats_conn: PgConnection = PgConnectOptions::from_str(&url)?.connect().await?;
    let stats_before = PgCounters::read(&mut stats_conn).await?;
    let cpu_before = CpuTimes::now();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let rx = Arc::new(Mutex::new(rx));
    let started = Instant::now();
    let workers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            let rx = rx.clone();
            tokio::spawn(worker(i, conn, rx, started))
        })
        .collect();

    // The schedule: flow k starts at started + k * period.
    let period = Duration::from_secs_f64(COMMANDS_PER_FLOW / rate);
    let flows = (seconds * rate / COMMANDS_PER_FLOW).round() as u64;
    for k in 0..flows {
        let at = started + period.mul_f64(k as f64);
        tokio::time::sleep_until(at.into()).await;
        tx.send(at).map_err(|_| anyhow!("every worker stopped"))?;
    }
    drop(tx);
    let mut report = Report::default();
    for worker in workers {
        report.merge(worker.await??);
    }
    let load_secs = started.elapsed().as_secs_f64();
    let cpu_after = CpuTimes::now();

    // Right after the load: how far behind are the projections?
    let mut admin = Http::connect(addr).await?;
    let at_end = projections(&mut admin).await?;
    let behind: Vec<String> = at_end
        .iter()
        .map(|p| format!("{}={}", p["name"].as_str().unwrap_or("?"), p["lag_events"]))
        .collect();
    // Then let them catch up, so every event is in the histogram.
    let caught_up = Instant::now();
    let status = loop {
        let status = projections(&mut admin).await?;
        let done = status.iter().all(|p| p["lag_events"].as_i64() == Some(0));
        if done || caught_up.elapsed() > Duration::from_secs(60) {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let caught_up = caught_up.elapsed();

    // Statistics reach the cumulative views within about a second of a transaction.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let stats_after = PgCounters::read(&mut stats_conn).await?;

    // Summary.
    let commands = report.latencies.len();
    println!();
    println!("== bench_lag summary ==");
    println!(
        "flows: {} scheduled, {} completed; commands: {} ok, {} failed",
        flows, report.flows, commands, report.errors
    );
    println!(
        "achieved command rate: {:.1} commands/s over {:.2} s (target {rate}; schedule {seconds} s)",
        commands as f64 / load_secs,
        load_secs
    );
    let per_second = report.per_second(load_secs);
    if !per_second.is_empty() {
        let mut sorted = per_second.clone();
        sorted.sort_unstable();
        println!(
            "commands completed per whole second: min {}, median {}, max {}",
            sorted[0],
            sorted[sorted.len() / 2],
            sorted[sorted.len() - 1]
        );
    }
    println!(
        "client command latency (send to full response): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&report.latencies, 0.50),
        percentile(&report.latencies, 0.99),
        percentile(&report.latencies, 1.0)
    );
    for (kind, label) in [(0, "place order"), (1, "attempt payment"), (2, "capture")] {
        let of_kind: Vec<f64> = report
            .by_kind
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, ms)| *ms)
            .collect();
        println!(
            "  {label:<16} p50 {:.2} ms, p99 {:.2} ms",
            percentile(&of_kind, 0.50),
            percentile(&of_kind, 0.99)
        );
    }
    println!(
        "flow start delay (scheduled to picked up by a connection): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        percentile(&report.start_delays, 0.50),
        percentile(&report.start_delays, 0.99),
        percentile(&report.start_delays, 1.0)
    );
    if let (Some(before), Some(after)) = (cpu_before, cpu_after) {
        let process = after.process() - before.process();
        let postgres = after.postgres() - before.postgres();
        let busy = after.busy - before.busy;
        println!(
            "CPU during the load: this process (server + client) {process:.1} s, all PostgreSQL \
             processes {postgres:.1} s, everything else {:.1} s; machine busy {:.0}%, iowait {:.0}% \
             of {cores} cores over {load_secs:.1} s",
            (busy - process - postgres).max(0.0),
            100.0 * busy / (cores as f64 * load_secs),
            100.0 * (after.iowait - before.iowait) / (cores as f64 * load_secs),
        );
    }
    let per = |after: i64, before: i64| (after - before) as f64 / commands.max(1) as f64;
    println!(
        "PostgreSQL work per command: {:.1} commits and {:.1} WAL flushes ({:.0} WAL bytes) in \
         the whole database and cluster, so other sessions count too; in this schema's tables \
         {:.1} rows inserted, {:.1} updated, {:.1} deleted",
        per(stats_after.commits, stats_before.commits),
        per(stats_after.wal_syncs, stats_before.wal_syncs),
        per(stats_after.wal_bytes, stats_before.wal_bytes),
        per(stats_after.inserted, stats_before.inserted),
        per(stats_after.updated, stats_before.updated),
        per(stats_after.deleted, stats_before.deleted),
    );
    println!(
        "projection lag_events right after the load: {}",
        behind.join(", ")
    );
    println!(
        "caught up {:.2} s after the load ended",
        caught_up.as_secs_f64()
    );
    println!();
    println!("apply_lag per projection, as the server measured it (recorded_at to view commit):");
    println!(
        "{:<14} {:>8} {:>9} {:>9} {:>9}  {:>7}",
        "projection", "events", "p50 ms", "p99 ms", "max ms", "target"
    );
    let mut worst_p99: f64 = 0.0;
    for p in &status {
        let lag = &p["apply_lag"];
        let p99 = lag["p99_ms"].as_f64().unwrap_or(f64::NAN);
        worst_p99 = worst_p99.max(p99);
        println!(
            "{:<14} {:>8} {:>9.2} {:>9.2} {:>9.2}  {:>7}",
            p["name"].as_str().unwrap_or("?"),
            lag["events"].as_u64().unwrap_or(0),
            lag["p50_ms"].as_f64().unwrap_or(f64::NAN),
            p99,
            lag["max_ms"].as_f64().unwrap_or(f64::NAN),
            if p99 <= 50.0 { "met" } else { "MISSED" }
        );
        if p["state"].as_str() != Some("running") || !p["last_error"].is_null() {
            println!(
                "ERROR: projection {} is {} ({})",
                p["name"], p["state"], p["last_error"]
            );
        }
    }
    println!(
        "target p99 <= 50 ms: {} (worst projection p99 {:.2} ms)",
        if worst_p99 <= 50.0 { "MET" } else { "MISSED" },
        worst_p99
    );

    shutdown.cancel();
    server.await??;
    Ok(())
}

/// Cumulative counters of the database and of the WAL.
#[derive(Debug, Clone, Copy)]
struct PgCounters {
    commits: i64,
    inserted: i64,
    updated: i64,
    deleted: i64,
    wal_syncs: i64,
    wal_bytes: i64,
}

impl PgCounters {
    async fn read(conn: &mut PgConnection) -> Result<Self> {
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&mut *conn)
            .await?;
        let commits: i64 = sqlx::query_scalar(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&mut *conn)
        .await?;
        // Row changes of this schema's tables only: other sessions do not count here.
        let (inserted, updated, deleted): (i64, i64, i64) = sqlx::query_as(
            "SELECT coalesce(sum(n_tup_ins), 0)::int8, coalesce(sum(n_tup_upd), 0)::int8,
                    coalesce(sum(n_tup_del), 0)::int8
               FROM pg_stat_user_tables WHERE schemaname = $1",
        )
        .bind(&self_schema(conn).await?)
        .fetch_one(&mut *conn)
        .await?;
        let (wal_syncs, wal_bytes): (i64, i64) =
            sqlx::query_as("SELECT wal_sync, wal_bytes::int8 FROM pg_stat_wal")
                .fetch_one(&mut *conn)
                .await?;
        Ok(Self {
            commits,
            inserted,
            updated,
            deleted,
            wal_syncs,
            wal_bytes,
        })
    }
}

/// The schema this connection's `search_path` names first.
async fn self_schema(conn: &mut PgConnection) -> Result<String> {
    Ok(sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(&mut *conn)
        .await?)
}

#[derive(Default)]
struct Report {
    flows: u64,
    errors: u64,
    /// Milliseconds, every successful command.
    latencies: Vec<f64>,
    by_kind: Vec<(u8, f64)>,
    /// When each command completed, in seconds since the start.
    completed_at: Vec<f64>,
    start_delays: Vec<f64>,
}

impl Report {
    fn merge(&mut self, other: Report) {
        self.flows += other.flows;
        self.errors += other.errors;
        self.latencies.extend(other.latencies);
        self.by_kind.extend(other.by_kind);
        self.completed_at.extend(other.completed_at);
        self.start_delays.extend(other.start_delays);
    }

    fn per_second(&self, secs: f64) -> Vec<u64> {
        let whole = secs.floor() as usize;
        let mut buckets = vec![0u64; whole];
        for t in &self.completed_at {
            if let Some(b) = buckets.get_mut(*t as usize) {
                *b += 1;
            }
        }
        buckets
    }
}

fn percentile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Takes scheduled flows until the schedule ends, runs each on its connection.
async fn worker(
    index: usize,
    mut http: Http,
    schedule: Arc<Mutex<tokio::sync::mpsc::UnboundedReceiver<Instant>>>,
    started: Instant,
) -> Result<Report> {
    let mut report = Report::default();
    // Each connection's own orders, the same from one run to the next.
    let mut rng = SmallRng::seed_from_u64(index as u64);
    loop {
        let next = schedule.lock().await.recv().await;
        let Some(at) = next else {
            return Ok(report);
        };
        report
            .start_delays
            .push(at.elapsed().as_secs_f64() * 1000.0);
        report.flows += 1;
        if let Err(e) = run_flow(&mut http, &mut report, &mut rng, started).await {
            report.errors += 1;
            if report.errors <= 3 {
                eprintln!("flow failed on connection {index}: {e:#}");
            }
        }
    }
}

async fn run_flow(
    http: &mut Http,
    report: &mut Report,
    rng: &mut SmallRng,
    started: Instant,
) -> Result<()> {
    let lines: Vec<Value> = {
        let count: u64 = rng.gen_range(1..=3);
        let first: u64 = rng.gen_range(0..1000);
        (0..count)
            .map(|i| {
                json!({
                    "sku": format!("SKU-{:04}", (first + i * 37) % 1000 + 1),
                    "quantity": rng.gen_range(1..=3),
                    "unit_price": rng.gen_range(299..19_999),
                })
            })
            .collect()
    };
    let body = json!({
        "customer_id": format!("cust-{}", rng.gen_range(0..50_000)),
        "currency": "USD",
        "lines": lines,
    });
    let order = command(http, report, 0, "/v1/orders", Some(body), 201, started).await?;
    let order_id = order["order_id"]
        .as_str()
        .ok_or_else(|| anyhow!("no order_id in {order}"))?
        .to_owned();
    let total = order["total"]
        .as_i64()
        .ok_or_else(|| anyhow!("no total in {order}"))?;
    let payment = command(
        http,
        report,
        1,
        &format!("/v1/orders/{order_id}/payments"),
        Some(json!({ "amount": total })),
        201,
        started,
    )
    .await?;
    let payment_id = payment["payment_id"]
        .as_str()
        .ok_or_else(|| anyhow!("no payment_id in {payment}"))?
        .to_owned();
    command(
        http,
        report,
        2,
        &format!("/v1/orders/{order_id}/payments/{payment_id}/capture"),
        None,
        200,
        started,
    )
    .await?;
    Ok(())
}

async fn command(
    http: &mut Http,
    report: &mut Report,
    kind: u8,
    path: &str,
    body: Option<Value>,
    expect: u16,
    started: Instant,
) -> Result<Value> {
    let body = body.map(|b| b.to_string());
    let sent = Instant::now();
    let (status, response) = http.request("POST", path, body.as_deref()).await?;
    let ms = sent.elapsed().as_secs_f64() * 1000.0;
    if status != expect {
        bail!(
            "POST {path} answered {status}: {}",
            String::from_utf8_lossy(&response)
        );
    }
    report.latencies.push(ms);
    report.by_kind.push((kind, ms));
    report.completed_at.push(started.elapsed().as_secs_f64());
    Ok(serde_json::from_slice(&response)?)
}
