//! Benchmark: webhook deliveries per second, on PostgreSQL, with the real server.
//!
//! Loads N `order.created` events (default 100,000; N orders, so N streams) into a fresh
//! schema, starts the server in this process and a fast receiver on 127.0.0.1 (answers
//! 200 at once, counts the distinct `webhook-id`s), then R times (default 3) each:
//!
//! 1. **alone**: a webhook subscription from position 1 to the fast receiver; the time
//!    until its cursor reaches the end of the log with every event received;
//! 2. **beside a dead one**: the same, while a second subscription (created first, from
//!    position 1) points at a port where nothing listens.
//!
//! Prints each run and the medians, and the ratio of the two. Every attempt is recorded
//! (as in production), so the figure includes that write.
//!
//! ```text
//! cargo bench --bench bench_deliveries -- 100000
//! ```
//!
//! Settings (environment): `ORDERLOG_BENCH_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres?options[search_path]=bench_deliveries`;
//! the schema is dropped and recreated), `BENCH_EVENTS` (or the first argument),
//! `BENCH_RUNS` (3), `BENCH_IN_FLIGHT` (the subscription's max_in_flight, 64).
//!
//! Not a test: it prints figures. BENCHMARKS.md records them.

mod support;

use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use axum::http::StatusCode;
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use tokio_util::sync::CancellationToken;

use orderlog::app::Application;
use support::{
    env_number, first_argument, median, projections, recreate_schema, FastReceiver, Http,
};

const DEFAULT_URL: &str =
    "postgres://postgres@127.0.0.1:5432/postgres?options[search_path]=bench_deliveries";

/// A real `order.created` payload's shape and size (two lines, an address).
const PAYLOAD: &str = r#"{"type": "order.created", "lines": [{"sku": "MUG-BLUE", "quantity": 2, "untracked": true, "line_total": {"amount": 3000, "currency": "USD"}, "unit_price": {"amount": 1500, "currency": "USD"}}, {"sku": "TEE-M", "quantity": 1, "untracked": true, "line_total": {"amount": 2000, "currency": "USD"}, "unit_price": {"amount": 2000, "currency": "USD"}}], "total": {"amount": 5000, "currency": "USD"}, "currency": "USD", "order_id": "ORDER", "placed_at": "2026-11-21T12:00:00.000000000Z", "customer_id": "cust-42", "shipping_address": {"city": "London", "name": "Ada Lovelace", "line1": "12 St James's Square", "country": "GB", "postal_code": "SW1Y 4JH"}}"#;
const METADATA: &str = r#"{"command_id":"0193a4c2-0000-7000-8000-000000000000","idempotency_key":null,"correlation_id":"bench","causation_id":"bench","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","actor":"bench","received_at":"2026-11-21T12:00:00Z"}"#;

#[tokio::main]
async fn main() -> Result<()> {
    let url = std::env::var("ORDERLOG_BENCH_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into());
    let events = match first_argument() {
        Some(n) => n
            .parse()
            .context("the first argument is the number of events")?,
        None => env_number("BENCH_EVENTS", 100_000)?,
    };
    let runs = env_number("BENCH_RUNS", 3)?;
    let in_flight = env_number("BENCH_IN_FLIGHT", 64)?;

    recreate_schema(&url, "bench_deliveries").await?;
    let mut settings = support::server_settings(&url)?;
    // Its receivers run on 127.0.0.1, which the SSRF guard refuses by default.
    settings.deliveries.webhook_allow_private_networks = true;
    let application = Application::build(settings).await?;
    let mut server = Http::connect(application.local_addr()?).await?;
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(application.run(shutdown.clone()));

    let mut conn = PgConnectOptions::from_str(&url)?.connect().await?;
    let started = Instant::now();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version,
                             payload, metadata)
         SELECT 'order', 'bench-' || i, 1, 'order.created', '1.0',
                replace($1, 'ORDER', 'bench-' || i)::json, $2::json
           FROM generate_series(1, $3) AS i",
    )
    .bind(PAYLOAD)
    .bind(METADATA)
    .bind(events as i64)
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    println!(
        "loaded {events} order.created events in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The projections apply the new events first, so that they do not share the CPU
    // with the deliveries being measured.
    let started = Instant::now();
    loop {
        let status = projections(&mut server).await?;
        if status
            .iter()
            .all(|p| p["lag_events"] == 0 && p["state"] == "running")
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the projections did not catch up: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "projections caught up in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let receiver = FastReceiver::start().await?;
    let dead = {
        // A port that was free a moment ago: connections to it are refused.
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("http://{}/hook", listener.local_addr()?)
    };
    let mut alone = Vec::new();
    let mut beside = Vec::new();
    for run in 1..=runs {
        let rate = deliver_all(&mut server, &receiver, events, in_flight, None).await?;
        println!("run {run}: alone                 {rate:>9.0} deliveries/s");
        alone.push(rate);
        let rate = deliver_all(&mut server, &receiver, events, in_flight, Some(&dead)).await?;
        println!("run {run}: beside a dead receiver {rate:>9.0} deliveries/s");
        beside.push(rate);
    }
    let (a, b) = (median(&alone), median(&beside));
    println!();
    println!("median, alone:                  {a:>9.0} deliveries/s");
    println!("median, beside a dead receiver: {b:>9.0} deliveries/s");
    println!("beside / alone:                 {:>9.1} %", 100.0 * b / a);

    shutdown.cancel();
    serving.await??;
    Ok(())
}

/// Creates the subscriptions, times the fast one through the whole log, deletes them.
async fn deliver_all(
    server: &mut Http,
    receiver: &FastReceiver,
    events: usize,
    in_flight: usize,
    dead: Option<&str>,
) -> Result<f64> {
    let dead_id = match dead {
        Some(url) => Some(subscribe(server, url, in_flight).await?),
        None => None,
    };
    receiver.reset();
    let started = Instant::now();
    let id = subscribe(server, &receiver.url(), in_flight).await?;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if receiver.distinct() < events {
            continue;
        }
        let (_, body) = server
            .request("GET", &format!("/v1/subscriptions/{id}"), None)
            .await?;
        let status: Value = serde_json::from_slice(&body)?;
        if status["lag"]["events"] == 0 {
            break;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    for id in [Some(id), dead_id].into_iter().flatten() {
        server
            .request("DELETE", &format!("/v1/subscriptions/{id}"), None)
            .await?;
    }
    Ok(events as f64 / seconds)
}

/// A webhook subscription to `url` from position 1; returns its id.
async fn subscribe(server: &mut Http, url: &str, in_flight: usize) -> Result<String> {
    let body = json!({
        "kind": "webhook", "url": url, "event_types": ["order.*"],
        "max_in_flight": in_flight, "from_position": 1,
    });
    let (status, response) = server
        .request("POST", "/v1/subscriptions", Some(&body.to_string()))
        .await?;
    if status != StatusCode::CREATED.as_u16() {
        bail!(
            "creating a subscription answered {status}: {}",
            String::from_utf8_lossy(&response)
        );
    }
    let response: Value = serde_json::from_slice(&response)?;
    Ok(response["id"].as_str().unwrap_or_default().to_owned())
}
