//! Benchmark: the server as users run it, under HTTP load from another process.
//!
//! For each backend and client count it starts the real `orderlog serve` binary as a
//! child process, on a fresh database (a new SQLite file, or a recreated PostgreSQL
//! schema), with a token and every projection live. It stocks `BENCH_SKUS` SKUs with
//! 1,000,000 units each, then drives one scenario for `BENCH_SECONDS` from this process
//! over keep-alive HTTP/1.1 connections (closed loop: each client sends its next request
//! when the previous answer is in), with an `Idempotency-Key` on every POST as a
//! storefront sends (`BENCH_KEYS=0` leaves them out):
//!
//! - `orders`: `POST /v1/orders` of 1–`BENCH_LINES` (3) distinct SKUs, every line reserved;
//! - `flows`: place → attempt payment → capture, one flow after another;
//! - `flash`: `BENCH_FLASH_ATTEMPTS` one-unit orders race for `BENCH_FLASH_UNITS` units
//!   of one SKU; the accepted count is checked against the stock (0 oversold).
//!
//! With `BENCH_PERSONAL=1` each order carries personal data (a shipping address, an email
//! and a phone number), which the server seals under a new data key (`store::vault`);
//! `BENCH_PERSONAL=0,1` runs both, one after the other, to measure what sealing costs.
//!
//! `BENCH_VARIANTS` runs each case under several server settings, one after the other,
//! in one run: `;`-separated `name:VAR=value,VAR=value` (a name alone sets nothing).
//! `{collector}` in a value is the address of an OTLP/HTTP collector this program
//! starts on 127.0.0.1 (it takes every export and counts it). What the meter and
//! tracing cost:
//! `BENCH_VARIANTS='off:ORDERLOG_LIVE_STATS=false;meter;traced:OTEL_EXPORTER_OTLP_ENDPOINT={collector}'`.
//!
//! With `BENCH_DASHBOARD=1`, headless Chromium watches `/ops` through each run
//! (`tests/browser/watch.mjs`: install it as `scripts/test` does) and the report adds what
//! the page lived with: updates, the gap between them, render times, long tasks, the
//! events/s it showed, and how long its search took to open an order's journey. Does the
//! dashboard stay usable at 10,000 events/s:
//! `BENCH_DASHBOARD=1 BENCH_KEYS=0 BENCH_LINES=6 BENCH_SCENARIOS=orders`.
//!
//! A 503 (`saturated`, `unavailable`) is answered with `Retry-After`; the client waits
//! that long before its next request, as the header asks. Refused requests are counted
//! and timed on their own.
//!
//! Prints, per run: accepted and refused counts, the accepted rate, p50/p99/p99.9 of
//! accepted and refused requests, the CPU seconds taken by the server, by PostgreSQL
//! and by this client, the server's peak RSS, how long the views took to catch up once
//! the load stopped, and the views' apply-lag percentiles as the server measured them.
//!
//! ```text
//! cargo bench --bench http_load
//! BENCH_BACKENDS=sqlite BENCH_SCENARIOS=orders BENCH_CLIENTS=64,1024 cargo bench --bench http_load
//! ORDERLOG_BIN=/path/to/older/orderlog cargo bench --bench http_load   # another build
//! ```
//!
//! Settings (environment): `BENCH_BACKENDS` (`sqlite,postgres`), `BENCH_SCENARIOS`
//! (`orders,flows,flash`), `BENCH_CLIENTS` (`64`), `BENCH_SECONDS` (10), `BENCH_KEYS`
//! (1), `BENCH_LINES` (3), `BENCH_DASHBOARD` (0), `BENCH_PERSONAL` (`0`), `BENCH_SKUS` (1000), `BENCH_FLASH_UNITS` (1000), `BENCH_FLASH_ATTEMPTS` (5000),
//! `ORDERLOG_BIN` (the binary this bench was built with), `ORDERLOG_BENCH_HTTP_DATABASE_URL`
//! (`postgres://postgres@127.0.0.1:5432/postgres?options[search_path]=bench_http`; the
//! schema is dropped and recreated for each run). Any other `ORDERLOG_*` variable in the
//! environment is passed to the server (`ORDERLOG_COMMAND_DEADLINE`, `ORDERLOG_DB_POOL_SIZE`).
//!
//! Not a test: it prints figures. BENCHMARKS.md records them.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use support::{env_number, projections, CpuTimes, Http, Server};

const DEFAULT_PG_URL: &str =
    "postgres://postgres@127.0.0.1:5432/postgres?options[search_path]=bench_http";
const STOCK: u64 = 1_000_000;

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    Orders,
    Flows,
    Flash,
}

impl Scenario {
    fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "orders" => Self::Orders,
            "flows" => Self::Flows,
            "flash" => Self::Flash,
            other => bail!("unknown scenario `{other}`: orders, flows or flash"),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Orders => "orders",
            Self::Flows => "flows",
            Self::Flash => "flash",
        }
    }
}

struct Config {
    seconds: f64,
    keys: bool,
    /// At most this many lines an order.
    lines: usize,
    dashboard: bool,
    skus: usize,
    flash_units: u64,
    flash_attempts: usize,
    binary: String,
    pg_url: String,
}

fn list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    let config = Config {
        seconds: env_number("BENCH_SECONDS", 10.0)?,
        keys: env_number("BENCH_KEYS", 1)? != 0,
        lines: env_number("BENCH_LINES", 3)?,
        dashboard: env_number("BENCH_DASHBOARD", 0)? != 0,
        skus: env_number("BENCH_SKUS", 1000)?,
        flash_units: env_number("BENCH_FLASH_UNITS", 1000)?,
        flash_attempts: env_number("BENCH_FLASH_ATTEMPTS", 5000)?,
        binary: std::env::var("ORDERLOG_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_orderlog").to_owned()),
        pg_url: std::env::var("ORDERLOG_BENCH_HTTP_DATABASE_URL")
            .unwrap_or_else(|_| DEFAULT_PG_URL.to_owned()),
    };
    let backends = list("BENCH_BACKENDS", "sqlite,postgres");
    let scenarios = list("BENCH_SCENARIOS", "orders,flows,flash")
        .iter()
        .map(|s| Scenario::parse(s))
        .collect::<Result<Vec<_>>>()?;
    let personal: Vec<bool> = list("BENCH_PERSONAL", "0")
        .iter()
        .map(|p| p != "0")
        .collect();
    let variants = variants(&std::env::var("BENCH_VARIANTS").unwrap_or_default())?;
    let collector = if variants
        .iter()
        .any(|v| v.env.iter().any(|(_, value)| value.contains("{collector}")))
    {
        Some(support::Collector::start().await?)
    } else {
        None
    };
    let clients: Vec<usize> = list("BENCH_CLIENTS", "64")
        .iter()
        .map(|c| c.parse().context("BENCH_CLIENTS is a list of numbers"))
        .collect::<Result<_>>()?;
    println!(
        "http_load: binary {}, {} s per run, Idempotency-Key on every POST: {}",
        config.binary, config.seconds, config.keys
    );
    for backend in &backends {
        for scenario in &scenarios {
            for &c in &clients {
                for &personal in &personal {
                    for variant in &variants {
                        let env: Vec<(String, String)> = variant
                            .env
                            .iter()
                            .map(|(k, v)| {
                                let endpoint = collector.as_ref().map(|c| c.endpoint());
                                (
                                    k.clone(),
                                    v.replace("{collector}", endpoint.as_deref().unwrap_or("")),
                                )
                            })
                            .collect();
                        let before = collector.as_ref().map(|c| c.received());
                        let report = run(&config, backend, *scenario, c, personal, &env).await?;
                        let exported = match (&collector, before) {
                            (Some(c), Some((e0, b0))) if !variant.env.is_empty() => {
                                let (e1, b1) = c.received();
                                format!(
                                    "; collector got {} exports, {} KiB",
                                    e1 - e0,
                                    (b1 - b0) / 1024
                                )
                            }
                            _ => String::new(),
                        };
                        println!("[{}] {report}{exported}", variant.name);
                    }
                }
            }
        }
    }
    Ok(())
}

impl Server {
    /// Peak resident set (VmHWM), in MiB.
    fn peak_rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }
}

#[derive(Default)]
struct Tally {
    accepted: Option<Histogram<u64>>,
    refused: Option<Histogram<u64>>,
    /// Flash sale: one-unit orders refused for stock (409), a true answer.
    sold_out: usize,
    other: Vec<String>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        for (mine, theirs) in [
            (&mut self.accepted, other.accepted),
            (&mut self.refused, other.refused),
        ] {
            if let Some(theirs) = theirs {
                mine.get_or_insert_with(histogram)
                    .add(theirs)
                    .expect("same bounds");
            }
        }
        self.sold_out += other.sold_out;
        self.other.extend(other.other.into_iter().take(5));
    }
}

fn count(h: &Option<Histogram<u64>>) -> u64 {
    h.as_ref().map_or(0, Histogram::len)
}

fn quantiles(h: &Option<Histogram<u64>>) -> String {
    match h {
        Some(h) if !h.is_empty() => format!(
            "p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms",
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.value_at_quantile(0.999) as f64 / 1000.0
        ),
        _ => "none".into(),
    }
}

/// What one client does per unit of work, and what a unit is.
struct Client {
    http: Http,
    rng: SmallRng,
    name: String,
    n: usize,
    keys: bool,
    lines: usize,
    /// Orders carry personal data.
    personal: bool,
    tally: Tally,
    /// The end of a timed run: a wait for `Retry-After` ends there too, so that a client
    /// refused near the end does not stretch the run with a second of doing nothing.
    until: Option<Instant>,
}

impl Client {
    /// One command; `Ok(Some(body))` when accepted with `expect`.
    async fn command(
        &mut self,
        path: &str,
        body: Option<Value>,
        expect: u16,
    ) -> Result<Option<Value>> {
        self.n += 1;
        let key = self.keys.then(|| format!("{}-{}", self.name, self.n));
        let body = body.map(|b| b.to_string());
        let sent = Instant::now();
        let (status, answer) = self
            .http
            .request_keyed("POST", path, body.as_deref(), key.as_deref())
            .await?;
        let micros = sent.elapsed().as_micros() as u64;
        if status == expect {
            self.tally
                .accepted
                .get_or_insert_with(histogram)
                .record(micros.max(1))?;
            return Ok(Some(serde_json::from_slice(&answer)?));
        }
        if status == 503 {
            self.tally
                .refused
                .get_or_insert_with(histogram)
                .record(micros.max(1))?;
            // Every 503 of ours says `Retry-After: 1`.
            let wake = Instant::now() + Duration::from_secs(1);
            tokio::time::sleep_until(self.until.map_or(wake, |u| wake.min(u)).into()).await;
        } else if status == 409 && path == "/v1/orders" {
            self.tally.sold_out += 1;
        } else if self.tally.other.len() < 5 {
            self.tally.other.push(format!(
                "{status} {}",
                String::from_utf8_lossy(&answer)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ));
        }
        Ok(None)
    }

    async fn place(&mut self, skus: usize) -> Result<Option<Value>> {
        let count = self.rng.gen_range(1..=self.lines);
        let first = self.rng.gen_range(0..skus);
        let lines: Vec<Value> = (0..count)
            .map(|i| {
                json!({
                    "sku": format!("SKU-{:04}", (first + i * 37) % skus),
                    "quantity": 1,
                    "unit_price": self.rng.gen_range(299..19_999),
                })
            })
            .collect();
        let order_id = format!("{}-{}", self.name, self.n);
        let customer = self.rng.gen_range(0..50_000);
        let mut body = json!({
            "order_id": order_id,
            "customer_id": format!("cust-{customer}"),
            "currency": "USD",
            "lines": lines,
        });
        if self.personal {
            body["shipping_address"] = json!({
                "name": "Ada Lovelace",
                "line1": format!("{} St James's Square", customer % 90 + 1),
                "city": "London",
                "postal_code": "SW1Y 4JH",
                "country": "GB",
            });
            body["email"] = json!(format!("customer{customer}@example.com"));
            body["phone"] = json!("+44 20 7946 0958");
        }
        self.command("/v1/orders", Some(body), 201).await
    }

    async fn flow(&mut self, skus: usize) -> Result<bool> {
        let Some(order) = self.place(skus).await? else {
            return Ok(false);
        };
        let id = order["order_id"]
            .as_str()
            .ok_or_else(|| anyhow!("no order_id"))?
            .to_owned();
        let total = order["total"].clone();
        let path = format!("/v1/orders/{id}/payments");
        let Some(payment) = self
            .command(&path, Some(json!({ "amount": total })), 201)
            .await?
        else {
            return Ok(false);
        };
        let payment = payment["payment_id"]
            .as_str()
            .ok_or_else(|| anyhow!("no payment_id"))?;
        let path = format!("/v1/orders/{id}/payments/{payment}/capture");
        Ok(self.command(&path, None, 200).await?.is_some())
    }

    async fn flash(&mut self) -> Result<()> {
        let order_id = format!("{}-{}", self.name, self.n);
        let body = json!({
            "order_id": order_id,
            "customer_id": "cust-flash",
            "currency": "USD",
            "lines": [{"sku": "FLASH", "quantity": 1, "unit_price": 4999}],
        });
        self.command("/v1/orders", Some(body), 201).await.map(drop)
    }
}

/// One set of server settings to run every case under.
struct Variant {
    name: String,
    env: Vec<(String, String)>,
}

fn variants(raw: &str) -> Result<Vec<Variant>> {
    let mut out = Vec::new();
    for item in raw.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, settings) = item.split_once(':').unwrap_or((item, ""));
        let env = settings
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .ok_or_else(|| anyhow!("BENCH_VARIANTS: `{s}` is not VAR=value"))
            })
            .collect::<Result<_>>()?;
        out.push(Variant {
            name: name.to_owned(),
            env,
        });
    }
    if out.is_empty() {
        out.push(Variant {
            name: "default".into(),
            env: Vec::new(),
        });
    }
    Ok(out)
}

async fn run(
    config: &Config,
    backend: &str,
    scenario: Scenario,
    clients: usize,
    personal: bool,
    env: &[(String, String)],
) -> Result<String> {
    let server =
        Server::start_with(&config.binary, &config.pg_url, "bench_http", backend, env).await?;
    let mut admin = Http::connect(server.addr).await?;
    stock(server.addr, config, scenario).await?;
    wait_caught_up(&mut admin, Duration::from_secs(120)).await?;
    let mut watcher = match config.dashboard {
        true => Some(Watcher::start(&mut admin, server.addr, config.seconds).await?),
        false => None,
    };
    let events_before = events_total(&mut admin).await?;

    let conns = Http::connect_many(server.addr, clients).await?;
    let flash_left = Arc::new(AtomicUsize::new(config.flash_attempts));
    let flows = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let cpu_before = CpuTimes::now();
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(config.seconds);
    let mut tasks = Vec::new();
    for (i, http) in conns.into_iter().enumerate() {
        let (flash_left, flows, tally) = (flash_left.clone(), flows.clone(), tally.clone());
        let (skus, keys, lines) = (config.skus, config.keys, config.lines);
        tasks.push(tokio::spawn(async move {
            let mut client = Client {
                http,
                rng: SmallRng::seed_from_u64(i as u64),
                name: format!("c{i}"),
                n: 0,
                keys,
                lines,
                personal,
                tally: Tally::default(),
                until: (scenario != Scenario::Flash).then_some(until),
            };
            let result: Result<()> = async {
                loop {
                    match scenario {
                        Scenario::Flash => {
                            let left = flash_left.fetch_sub(1, Ordering::Relaxed);
                            if left == 0 || left > usize::MAX / 2 {
                                break;
                            }
                            client.flash().await?;
                        }
                        _ if Instant::now() >= until => break,
                        Scenario::Orders => drop(client.place(skus).await?),
                        Scenario::Flows => {
                            if client.flow(skus).await? {
                                flows.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                }
                Ok(())
            }
            .await;
            tally.lock().await.merge(client.tally);
            result
        }));
    }
    for task in tasks {
        task.await??;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_after = CpuTimes::now();
    let appended = events_total(&mut admin).await? - events_before;
    let catch_up_started = Instant::now();
    let status = wait_caught_up(&mut admin, Duration::from_secs(300)).await?;
    let catch_up = catch_up_started.elapsed().as_secs_f64();
    let tally = std::mem::take(&mut *tally.lock().await);

    let accepted = count(&tally.accepted);
    let refused = count(&tally.refused);
    let rate = match scenario {
        Scenario::Flows => format!(
            "{:.0} flows/s",
            flows.load(Ordering::Relaxed) as f64 / elapsed
        ),
        Scenario::Flash => format!(
            "{:.0} attempts/s",
            (accepted as usize + tally.sold_out + refused as usize) as f64 / elapsed
        ),
        Scenario::Orders => format!("{:.0} orders/s", accepted as f64 / elapsed),
    };
    let cpu = match (cpu_before, cpu_after) {
        (Some(a), Some(b)) => {
            let of = |t: &CpuTimes| t.procs.get(&server.pid()).map_or(0.0, |p| p.1);
            format!(
                "CPU s: server {:.1}, postgres {:.1}, client {:.1}, machine busy {:.0}%",
                of(&b) - of(&a),
                b.postgres() - a.postgres(),
                b.process() - a.process(),
                100.0 * (b.busy - a.busy) / (elapsed * support::cores() as f64)
            )
        }
        _ => "CPU: unavailable".into(),
    };
    let lag = status
        .iter()
        .map(|p| {
            format!(
                "{} p50 {} p99 {} max {}",
                p["name"].as_str().unwrap_or("?"),
                p["apply_lag"]["p50_ms"],
                p["apply_lag"]["p99_ms"],
                p["apply_lag"]["max_ms"]
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let log = std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default();
    let mut report = format!(
        "{backend} {}{} x{clients}: {rate} in {elapsed:.1} s; {:.0} events appended/s; accepted {accepted} ({}); \
         refused 503 {refused} ({}); {}peak RSS {:.0} MiB; {cpu}; views caught up {catch_up:.2} s \
         after the load; apply-lag ms: {lag}",
        scenario.name(),
        if personal { " (personal data)" } else { "" },
        appended as f64 / elapsed,
        quantiles(&tally.accepted),
        quantiles(&tally.refused),
        if scenario == Scenario::Flash {
            format!("sold out 409 {}; ", tally.sold_out)
        } else {
            String::new()
        },
        server.peak_rss_mib(),
    );
    if scenario == Scenario::Flash {
        let (_, body) = admin.request("GET", "/v1/inventory/FLASH", None).await?;
        let levels: Value = serde_json::from_slice(&body)?;
        let oversold = accepted as i64 - config.flash_units as i64;
        if oversold > 0
            || levels["available"].as_i64() != Some(config.flash_units as i64 - accepted as i64)
        {
            bail!(
                "oversold: {accepted} accepted of {} units; stock view {levels}",
                config.flash_units
            );
        }
        report.push_str("; 0 oversold");
    }
    let warnings = log.lines().count();
    if warnings > 0 {
        let first = log
            .lines()
            .next()
            .unwrap_or("")
            .chars()
            .take(300)
            .collect::<String>();
        report.push_str(&format!(
            "; the server logged {warnings} lines, the first: {first}"
        ));
    }
    if let Some(watcher) = watcher.take() {
        report.push_str(&format!("; dashboard: {}", watcher.figures().await?));
    }
    if !tally.other.is_empty() {
        report.push_str(&format!("; unexpected answers: {:?}", tally.other));
    }
    Ok(report)
}

/// Receives the stock a scenario needs, 32 requests at a time.
async fn stock(addr: SocketAddr, config: &Config, scenario: Scenario) -> Result<()> {
    let receipts: Vec<(String, u64)> = match scenario {
        Scenario::Flash => vec![("FLASH".into(), config.flash_units)],
        _ => (0..config.skus)
            .map(|i| (format!("SKU-{i:04}"), STOCK))
            .collect(),
    };
    let receipts = Arc::new(Mutex::new(receipts));
    let mut tasks = Vec::new();
    for mut http in Http::connect_many(addr, 32).await? {
        let receipts = receipts.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let Some((sku, units)) = receipts.lock().await.pop() else {
                    return Ok::<_, anyhow::Error>(());
                };
                let body = json!({ "quantity": units }).to_string();
                let path = format!("/v1/inventory/{sku}/receipts");
                let (status, answer) = http.request("POST", &path, Some(&body)).await?;
                if status != 201 {
                    bail!(
                        "{path} answered {status}: {}",
                        String::from_utf8_lossy(&answer)
                    );
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// Events the server has appended since it started, as its meter counts them.
async fn events_total(http: &mut Http) -> Result<u64> {
    support::get_json(http, "/v1/ops/stats").await?["events"]["total"]
        .as_u64()
        .ok_or_else(|| anyhow!("no events.total in the stats"))
}

/// Headless Chromium on `/ops` for one run (`tests/browser/watch.mjs`).
struct Watcher {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Watcher {
    /// Places the order the page will open, starts the browser and waits until the page
    /// is live and watched.
    async fn start(admin: &mut Http, addr: SocketAddr, seconds: f64) -> Result<Watcher> {
        use tokio::io::AsyncBufReadExt;
        let order = json!({
            "order_id": "watched-order",
            "customer_id": "cust-watched",
            "currency": "USD",
            "lines": [{ "sku": "SKU-0000", "quantity": 1, "unit_price": 1299 }],
        });
        let (status, body) = admin
            .request("POST", "/v1/orders", Some(&order.to_string()))
            .await?;
        if status != 201 {
            bail!(
                "the watched order: {status} {}",
                String::from_utf8_lossy(&body)
            );
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser/watch.mjs");
        let mut child = tokio::process::Command::new("node")
            .arg(script)
            .env("OPS_URL", format!("http://{addr}"))
            .env("OPS_TOKEN", support::TOKEN)
            .env("OPS_SECONDS", seconds.to_string())
            .env("OPS_ORDER", "watched-order")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("node runs tests/browser/watch.mjs (install it as scripts/test does)")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        match tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await {
            Ok(Ok(Some(line))) if line == "live" => Ok(Watcher { child, lines }),
            other => bail!("the dashboard did not come up: {other:?}"),
        }
    }

    /// What the page lived with, once its watch is over.
    async fn figures(mut self) -> Result<String> {
        let line = tokio::time::timeout(Duration::from_secs(60), self.lines.next_line())
            .await
            .context("the watcher did not finish")??;
        let status = self.child.wait().await?;
        match line {
            Some(figures) if status.success() => Ok(figures),
            _ => bail!("the watcher failed ({status}); its error is above"),
        }
    }
}

/// Waits until every projection has applied the whole log; returns their status.
async fn wait_caught_up(http: &mut Http, within: Duration) -> Result<Vec<Value>> {
    let started = Instant::now();
    loop {
        let status = projections(http).await?;
        if status.iter().all(|p| p["lag_events"].as_i64() == Some(0)) {
            return Ok(status);
        }
        if started.elapsed() > within {
            bail!("the views did not catch up within {within:?}: {status:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
