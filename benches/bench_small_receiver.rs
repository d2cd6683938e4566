//! Benchmark: deliveries to a small receiver, and one hot aggregate's stream, over HTTP
//! against PostgreSQL with the real server in this process.
//!
//! - **Small receiver.** A webhook receiver on 127.0.0.1 that accepts at most 4
//!   connections at a time (listen backlog 5), answers one request per connection after
//!   `BENCH_WORK_MS` of work and closes it. First its own capacity is measured with a
//!   client that sends to it directly, 4 connections at a time, a new connection per
//!   request. Then N `order.created` events (N orders: N streams) are placed, and a
//!   subscription with `max_in_flight` 64 delivers them from position 1: the rate until
//!   the receiver has every event, against its capacity. The subscription's status is
//!   sampled every 50 ms: the breaker must never open, and no message may be dead.
//! - **One hot aggregate.** 10,000 `inventory.received` events of one SKU (one stream,
//!   delivered one after another by design) to a fast keep-alive receiver: events/s.
//!
//! ```text
//! cargo bench --bench bench_small_receiver
//! ```
//!
//! Settings (environment): `ORDERLOG_BENCH_SMALL_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres?options[search_path]=bench_small`; the
//! schema is dropped and recreated), `BENCH_EVENTS` (12000; a run of 3,000 measured
//! 47% where 12,000 measured 96%: see BENCHMARKS.md), `BENCH_WORK_MS` (2),
//! `BENCH_HOT_EVENTS` (10000), `BENCH_RUNS` (3).
//!
//! Not a test: it prints figures. BENCHMARKS.md records them.

mod support;

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use orderlog::app::Application;
use support::{env_number, median, recreate_schema, FastReceiver, Http};

const DEFAULT_URL: &str =
    "postgres://postgres@127.0.0.1:5432/postgres?options[search_path]=bench_small";
const CAPACITY: usize = 4;

type Seen = Arc<Mutex<HashSet<String>>>;

#[tokio::main]
async fn main() -> Result<()> {
    let url =
        std::env::var("ORDERLOG_BENCH_SMALL_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.into());
    let events: usize = env_number("BENCH_EVENTS", 12_000)?;
    let work = Duration::from_millis(env_number("BENCH_WORK_MS", 2)?);
    let hot_events: usize = env_number("BENCH_HOT_EVENTS", 10_000)?;
    let runs: usize = env_number("BENCH_RUNS", 3)?.max(1);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .try_init();

    recreate_schema(&url, "bench_small").await?;
    let mut settings = support::server_settings(&url)?;
    // The receivers run on 127.0.0.1, which the SSRF guard refuses by default.
    settings.deliveries.webhook_allow_private_networks = true;
    let application = Application::build(settings).await?;
    let addr = application.local_addr()?;
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(application.run(shutdown.clone()));
    let mut server = Http::connect(addr).await?;
    println!(
        "bench_small_receiver: {} cores; receiver: {CAPACITY} connections at a time, one request each, {work:?} of work; {events} events per run, {runs} runs",
        support::cores()
    );

    let receiver = SmallReceiver::start(CAPACITY, work).await?;
    let mut direct = Vec::new();
    let mut delivered = Vec::new();
    for run in 1..=runs {
        let capacity = receiver.direct_rate(events).await?;
        receiver.reset();
        let first = place_orders(addr, run, events).await?;
        let rate = deliver_to(
            &mut server,
            &receiver.url(),
            &receiver.seen,
            events,
            first,
            "order.*",
        )
        .await?;
        println!(
            "run {run}: receiver capacity (direct client) {capacity:.0}/s; orderlog delivered {:.0}/s = {:.0}% of it; breaker never open, 0 dead",
            rate.0,
            100.0 * rate.0 / capacity
        );
        direct.push(capacity);
        delivered.push(rate.0);
    }
    let (c, d) = (median(&direct), median(&delivered));
    println!(
        "small receiver, medians of {runs}: capacity {c:.0}/s, delivered {d:.0}/s = {:.0}% (target >= 80%)",
        100.0 * d / c
    );

    let fast = FastReceiver::start().await?;
    let first = receive_stock(addr, hot_events).await?;
    let mut rates = Vec::new();
    for run in 1..=runs {
        fast.reset();
        let (rate, _) = deliver_to(
            &mut server,
            &fast.url(),
            &fast.seen,
            hot_events,
            first,
            "inventory.*",
        )
        .await?;
        println!("hot SKU run {run}: {hot_events} events of one stream at {rate:.0}/s");
        rates.push(rate);
    }
    println!("hot SKU, median of {runs}: {:.0} events/s", median(&rates));

    shutdown.cancel();
    let _ = serving.await;
    Ok(())
}

/// `count` orders on untracked SKUs over 16 connections; the log position of the
/// first event they appended.
async fn place_orders(addr: std::net::SocketAddr, run: usize, count: usize) -> Result<i64> {
    let mut conns = Http::connect_many(addr, 16).await?;
    let first = log_end(&mut conns[0]).await? + 1;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for mut conn in conns {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, anyhow::Error>(());
                }
                let body = json!({
                    "order_id": format!("small-{run}-{i}"), "customer_id": "c", "currency": "USD",
                    "lines": [{"sku": format!("UNTRACKED-{run}-{i}"), "quantity": 1, "unit_price": 100}],
                });
                let (status, text) = conn.request("POST", "/v1/orders", Some(&body.to_string())).await?;
                if status != 201 {
                    bail!("placing an order answered {status}: {}", String::from_utf8_lossy(&text));
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(first)
}

/// `count` receipts of one SKU, one after another (one stream); the first's position.
async fn receive_stock(addr: std::net::SocketAddr, count: usize) -> Result<i64> {
    let mut conn = Http::connect(addr).await?;
    let first = log_end(&mut conn).await? + 1;
    for _ in 0..count {
        let (status, text) = conn
            .request(
                "POST",
                "/v1/inventory/HOT-SKU/receipts",
                Some(r#"{"quantity": 1}"#),
            )
            .await?;
        if status != 201 {
            bail!(
                "a receipt answered {status}: {}",
                String::from_utf8_lossy(&text)
            );
        }
    }
    Ok(first)
}

/// The position of the last event in the log (0 when empty), from the projections'
/// view of it: every projection's checkpoint plus its lag.
async fn log_end(conn: &mut Http) -> Result<i64> {
    let statuses = support::projections(conn).await?;
    Ok(statuses
        .iter()
        .map(|s| {
            s["checkpoint"]["position"].as_i64().unwrap_or(0)
                + s["lag_events"].as_i64().unwrap_or(0)
        })
        .max()
        .unwrap_or(0))
}

/// A subscription from `from` until `seen` holds `events` ids: the rate, and the last
/// status. Fails if its breaker ever opens or a message dies.
async fn deliver_to(
    server: &mut Http,
    url: &str,
    seen: &Seen,
    events: usize,
    from: i64,
    types: &str,
) -> Result<(f64, Value)> {
    let body = json!({
        "kind": "webhook", "url": url, "event_types": [types],
        "max_in_flight": 64, "from_position": from,
    });
    let started = Instant::now();
    let (status, response) = server
        .request("POST", "/v1/subscriptions", Some(&body.to_string()))
        .await?;
    if status != 201 {
        bail!(
            "subscribing answered {status}: {}",
            String::from_utf8_lossy(&response)
        );
    }
    let id = serde_json::from_slice::<Value>(&response)?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let last = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (_, body) = server
            .request("GET", &format!("/v1/subscriptions/{id}"), None)
            .await?;
        let s: Value = serde_json::from_slice(&body).context("a subscription's status")?;
        if s["breaker"] == "open" || s["queue"]["dead"].as_i64().unwrap_or(0) > 0 {
            bail!("the subscription gave up on the receiver: {s}");
        }
        if seen.lock().unwrap().len() >= events {
            break s;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("not delivered after 300 s: {s}");
        }
    };
    let rate = events as f64 / started.elapsed().as_secs_f64();
    server
        .request("DELETE", &format!("/v1/subscriptions/{id}"), None)
        .await?;
    Ok((rate, last))
}

/// At most `capacity` connections at a time, one request each.
struct SmallReceiver {
    addr: std::net::SocketAddr,
    seen: Seen,
}

impl SmallReceiver {
    async fn start(capacity: usize, work: Duration) -> Result<SmallReceiver> {
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind("127.0.0.1:0".parse()?)?;
        let listener = socket.listen(capacity as u32 + 1)?;
        let addr = listener.local_addr()?;
        let seen: Seen = Arc::default();
        let permits = Arc::new(Semaphore::new(capacity));
        let state = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    return;
                };
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = state.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let id = request
                                .headers()
                                .get("webhook-id")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let _ = request.into_body().collect().await;
                            tokio::time::sleep(work).await;
                            if let Some(id) = id {
                                seen.lock().unwrap().insert(id);
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(false)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    drop(permit);
                });
            }
        });
        Ok(SmallReceiver { addr, seen })
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn reset(&self) {
        self.seen.lock().unwrap().clear();
    }

    /// What it takes from a client sending straight to it, `CAPACITY` at a time, a new
    /// connection per request: its own capacity.
    async fn direct_rate(&self, requests: usize) -> Result<f64> {
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..CAPACITY {
            let (next, addr) = (next.clone(), self.addr);
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= requests {
                        return Ok::<_, anyhow::Error>(());
                    }
                    let mut conn = Http::connect(addr).await?;
                    let (status, _) = conn.request("POST", "/hook", Some("{}")).await?;
                    if status != 200 {
                        bail!("the receiver answered {status}");
                    }
                }
            }));
        }
        for task in tasks {
            task.await??;
        }
        Ok(requests as f64 / started.elapsed().as_secs_f64())
    }
}
