//! Benchmark: signed storefront webhooks over HTTP into one source, then until all are
//! applied.
//!
//! For each backend it starts the real `orderlog serve` binary as a child process, on a
//! fresh database (a new SQLite file, or a recreated PostgreSQL schema), with the
//! benchmark token, and creates one Shopify source (`bench`, bound to
//! `bench.myshopify.com`). Then `BENCH_SENDERS` senders, each on its own keep-alive
//! HTTP/1.1 connection, post signed deliveries to `/v1/ingest/shopify/bench` for
//! `BENCH_SECONDS`, closed loop (each sends its next delivery when the previous answer is
//! in), as Shopify does: no bearer token, `X-Shopify-Hmac-Sha256` over the body's bytes,
//! `X-Shopify-Topic`, `X-Shopify-Shop-Domain`, a fresh `X-Shopify-Webhook-Id` (a UUID)
//! per delivery. Each request is timed from its send to the whole answer.
//!
//! The mix: each sender repeats a cycle of three deliveries of one new order, so a third
//! of what arrives is a repeat of an order already seen, and a ninth of the total a plain
//! retry:
//!
//! 1. `orders/create`: `fixtures/shopify/orders-create.json` with a fresh order id (the
//!    top-level `id` and the one in `admin_graphql_api_id`) and a fresh
//!    `name`/`number`/`order_number`, every other byte as in the fixture (the totals
//!    must agree, or the applier fails the delivery); answered `received`;
//! 2. `orders/paid`: `fixtures/shopify/orders-paid.json` with the same substitutions,
//!    under a new webhook id; answered `received`;
//! 3. the create of step 1 sent again, same bytes, signature and webhook id (a platform's
//!    retry); answered `duplicate`, and stored nothing.
//!
//! With `BENCH_RATE` set, the senders are paced instead (open loop): together they offer
//! that many deliveries per second, each sender on a fixed schedule of its own, the 64
//! schedules evenly staggered, as a platform's webhooks arrive at the pace of its shop's
//! orders whatever our answers take. A sender whose answer comes late sends its next
//! delivery at once, and each latency is timed from when the delivery was due, not from
//! when it went (so a slow answer counts against every delivery it held up: no
//! coordinated omission, as wrk2 measures). Closed loop measures latency at saturation,
//! where Little's law makes p50 the queue (64 senders / the server's rate); paced
//! measures it at a given load.
//!
//! A 503 (`Retry-After: 1`) makes the sender wait that long (never past the end of the
//! run). Any answer but 200 is an error, counted, and the first few are printed; a 200
//! with the other `status` than expected is counted as unexpected.
//!
//! Once the load stops it polls the inbox (`?state=waiting&limit=1`) until nothing
//! waits, and counts the `failed` deliveries (printing the first one's error), so that
//! every stored delivery is known to be applied; it then reads each sender's last whole
//! order back and checks that it is `paid`.
//!
//! Prints, per backend: deliveries acknowledged (received and duplicate), the
//! acknowledged rate over the run's duration, p50/p99/p99.9/max latency, errors, the
//! time from the end of the load until nothing waited, failed deliveries, the applied
//! rate (stored deliveries / (load time + drain time)), the CPU seconds taken by the
//! server, by PostgreSQL and by this client during the load and during the drain; then a
//! summary table and a verdict against the target: at 64 senders, at least 2,000
//! deliveries/s acknowledged, p99 at most 25 ms, 0 failed, all applied.
//!
//! ```text
//! cargo bench --bench bench_ingest
//! BENCH_BACKENDS=sqlite BENCH_SENDERS=16 BENCH_SECONDS=5 cargo bench --bench bench_ingest
//! ORDERLOG_BIN=/path/to/older/orderlog cargo bench --bench bench_ingest   # another build
//! ```
//!
//! Settings (environment): `BENCH_BACKENDS` (`sqlite,postgres`), `BENCH_SENDERS` (64),
//! `BENCH_SECONDS` (10), `BENCH_RATE` (deliveries/s offered by all senders together;
//! unset or 0: closed loop), `ORDERLOG_BIN` (the binary this bench was built with),
//! `ORDERLOG_BENCH_INGEST_DATABASE_URL`
//! (`postgres://postgres@127.0.0.1:5432/postgres?options[search_path]=bench_ingest`; the
//! schema is dropped and recreated for each run). Any other `ORDERLOG_*` variable in the
//! environment is passed to the server (`ORDERLOG_COMMAND_DEADLINE`, `ORDERLOG_DB_POOL_SIZE`).
//!
//! Not a test: it prints figures.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use hyper::body::Bytes;
use hyper::header::HeaderValue;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::Mutex;

use support::{env_number, CpuTimes, Http, Server};

const DEFAULT_PG_URL: &str =
    "postgres://postgres@127.0.0.1:5432/postgres?options[search_path]=bench_ingest";

const SOURCE: &str = "bench";
const SHOP: &str = "bench.myshopify.com";
const SOURCE_SECRET: &str = "bench-ingest shopify secret, never for use";
const INGEST_PATH: &str = "/v1/ingest/shopify/bench";
const API_VERSION: &str = "2025-07";

/// The fixtures' order, and the values each delivery replaces.
const FIXTURE_ID: &str = "5712036428813373457";
const FIXTURE_NAME: &str = r##""name":"#1042""##;
const FIXTURE_NUMBER: &str = r#""number":42,"#;
const FIXTURE_ORDER_NUMBER: &str = r#""order_number":1042,"#;
/// Order ids as Shopify's are, 19 digits below 2^63: sender `i`'s `n`th order is
/// `ID_BASE + i * ID_STRIDE + n`.
const ID_BASE: u64 = 7_000_000_000_000_000_000;
const ID_STRIDE: u64 = 1_000_000_000;

const TARGET_RATE: f64 = 2000.0;
const TARGET_P99_MS: f64 = 25.0;
const DRAIN_LIMIT: Duration = Duration::from_secs(300);

struct Config {
    seconds: f64,
    senders: usize,
    /// Deliveries/s offered by all senders together; `None`: closed loop.
    rate: Option<f64>,
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
        senders: env_number("BENCH_SENDERS", 64)?,
        rate: Some(env_number("BENCH_RATE", 0.0)?).filter(|r| *r > 0.0),
        binary: std::env::var("ORDERLOG_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_orderlog").to_owned()),
        pg_url: std::env::var("ORDERLOG_BENCH_INGEST_DATABASE_URL")
            .unwrap_or_else(|_| DEFAULT_PG_URL.to_owned()),
    };
    ensure!(config.senders > 0, "BENCH_SENDERS must be at least 1");
    let backends = list("BENCH_BACKENDS", "sqlite,postgres");
    let templates = Arc::new(Templates::load()?);
    println!(
        "bench_ingest: binary {}, {} senders, {} s per run, {}; each sender: orders/create, \
         orders/paid, the create again (duplicate)",
        config.binary,
        config.senders,
        config.seconds,
        config.load()
    );
    let mut runs = Vec::new();
    for backend in &backends {
        let run = run(&config, backend, templates.clone()).await?;
        println!("{}", run.report);
        runs.push(run);
    }
    print_summary(&config, &runs);
    Ok(())
}

impl Config {
    fn load(&self) -> String {
        match self.rate {
            Some(rate) => format!("paced: {rate:.0} deliveries/s offered"),
            None => "closed loop".to_owned(),
        }
    }
}

/// The two fixtures, checked to take a fresh order id and number where expected.
struct Templates {
    create: String,
    paid: String,
}

impl Templates {
    fn load() -> Result<Self> {
        let read = |name: &str| {
            let path = format!("{}/fixtures/shopify/{name}", env!("CARGO_MANIFEST_DIR"));
            std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))
        };
        let templates = Self {
            create: read("orders-create.json")?,
            paid: read("orders-paid.json")?,
        };
        for (name, template) in [("create", &templates.create), ("paid", &templates.paid)] {
            for (pattern, times) in [
                (FIXTURE_ID, 2),
                (FIXTURE_NAME, 1),
                (FIXTURE_NUMBER, 1),
                (FIXTURE_ORDER_NUMBER, 1),
            ] {
                let found = template.matches(pattern).count();
                ensure!(
                    found == times,
                    "orders-{name}.json holds `{pattern}` {found} times, not {times}"
                );
            }
            // The substitution touches those fields and nothing else.
            let (id, number) = (ID_BASE + 12_345, 67_890);
            let mut fresh: Value = serde_json::from_str(&substitute(template, id, number))
                .with_context(|| format!("orders-{name}.json with a fresh id"))?;
            let mut original: Value = serde_json::from_str(template)?;
            ensure!(
                fresh["id"].as_u64() == Some(id)
                    && fresh["admin_graphql_api_id"] == json!(format!("gid://shopify/Order/{id}"))
                    && fresh["order_number"].as_u64() == Some(1000 + number)
                    && fresh["number"].as_u64() == Some(number)
                    && fresh["name"] == json!(format!("#{}", 1000 + number)),
                "orders-{name}.json: the substitution did not land: {}",
                fresh.to_string().chars().take(300).collect::<String>()
            );
            for field in [
                "id",
                "admin_graphql_api_id",
                "order_number",
                "number",
                "name",
            ] {
                fresh[field] = Value::Null;
                original[field] = Value::Null;
            }
            ensure!(
                fresh == original,
                "orders-{name}.json: the substitution changed more than the order's id and number"
            );
        }
        Ok(templates)
    }
}

/// The fixture's order as order `id`, number `number` (`name` `#<1000 + number>`).
fn substitute(template: &str, id: u64, number: u64) -> String {
    template
        .replace(FIXTURE_ID, &id.to_string())
        .replacen(
            FIXTURE_NAME,
            &format!(r##""name":"#{}""##, 1000 + number),
            1,
        )
        .replacen(FIXTURE_NUMBER, &format!(r#""number":{number},"#), 1)
        .replacen(
            FIXTURE_ORDER_NUMBER,
            &format!(r#""order_number":{},"#, 1000 + number),
            1,
        )
}

/// `base64(HMAC-SHA256(secret, body))`, as Shopify signs.
fn sign(body: &[u8]) -> HeaderValue {
    let mut mac = Hmac::<Sha256>::new_from_slice(SOURCE_SECRET.as_bytes()).expect("any key");
    mac.update(body);
    HeaderValue::try_from(BASE64.encode(mac.finalize().into_bytes())).expect("base64 is ASCII")
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// What senders saw.
#[derive(Default)]
struct Tally {
    /// Every 200, received or duplicate, in microseconds.
    acknowledged: Option<Histogram<u64>>,
    received: u64,
    duplicate: u64,
    /// A 200 whose `status` was not the one expected (a new delivery taken as a
    /// duplicate, or a retry stored again).
    unexpected: u64,
    /// Anything but 200, and requests that failed outright.
    errors: u64,
    /// Of those, 503s (answered with `Retry-After`).
    saturated: u64,
    first_errors: Vec<String>,
    /// Each sender's last order whose create and paid were both received.
    last_whole: Vec<u64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        if let Some(theirs) = other.acknowledged {
            self.acknowledged
                .get_or_insert_with(histogram)
                .add(theirs)
                .expect("same bounds");
        }
        self.received += other.received;
        self.duplicate += other.duplicate;
        self.unexpected += other.unexpected;
        self.errors += other.errors;
        self.saturated += other.saturated;
        let room = 5usize.saturating_sub(self.first_errors.len());
        self.first_errors
            .extend(other.first_errors.into_iter().take(room));
        self.last_whole.extend(other.last_whole);
    }

    fn acknowledged(&self) -> u64 {
        self.acknowledged.as_ref().map_or(0, Histogram::len)
    }

    /// The latency at `q`, in milliseconds (NaN for none).
    fn ms(&self, q: f64) -> f64 {
        match &self.acknowledged {
            Some(h) if !h.is_empty() => h.value_at_quantile(q) as f64 / 1000.0,
            _ => f64::NAN,
        }
    }

    fn max_ms(&self) -> f64 {
        match &self.acknowledged {
            Some(h) if !h.is_empty() => h.max() as f64 / 1000.0,
            _ => f64::NAN,
        }
    }
}

/// One delivery as sent: its bytes, signature, topic and webhook id.
struct Delivery {
    body: Bytes,
    signature: HeaderValue,
    topic: &'static str,
    webhook_id: HeaderValue,
}

impl Delivery {
    fn new(body: String, topic: &'static str) -> Self {
        let body = Bytes::from(body);
        Self {
            signature: sign(&body),
            body,
            topic,
            webhook_id: HeaderValue::try_from(uuid::Uuid::new_v4().to_string())
                .expect("a UUID is ASCII"),
        }
    }
}

/// A paced sender's schedule: when its next delivery is due, and the gap between two.
struct Pace {
    next: Instant,
    every: Duration,
}

/// One simulated Shopify shop's webhook sender on one connection.
struct Sender {
    http: Http,
    tally: Tally,
    until: Instant,
    pace: Option<Pace>,
}

impl Sender {
    /// Whether the run is over for this sender: a paced one sends nothing due after it.
    fn over(&self) -> bool {
        self.pace.as_ref().map_or_else(Instant::now, |p| p.next) >= self.until
    }

    /// Sends one delivery; whether it was acknowledged with `expect` as its status.
    async fn send(&mut self, delivery: &Delivery, expect: &str) -> bool {
        let headers = [
            ("x-shopify-hmac-sha256", delivery.signature.clone()),
            ("x-shopify-topic", HeaderValue::from_static(delivery.topic)),
            ("x-shopify-shop-domain", HeaderValue::from_static(SHOP)),
            ("x-shopify-webhook-id", delivery.webhook_id.clone()),
            (
                "x-shopify-api-version",
                HeaderValue::from_static(API_VERSION),
            ),
        ];
        // Paced, the clock starts when the delivery was due, even if it goes later.
        let sent = match &mut self.pace {
            Some(pace) => {
                let due = pace.next;
                pace.next += pace.every;
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => Instant::now(),
        };
        let answer = self
            .http
            .post_unauthenticated(INGEST_PATH, delivery.body.clone(), &headers)
            .await;
        let micros = sent.elapsed().as_micros() as u64;
        let (status, body) = match answer {
            Ok(answer) => answer,
            Err(e) => {
                self.error(format!("{} failed: {e:#}", delivery.topic));
                return false;
            }
        };
        if status != 200 {
            self.error(format!(
                "{} answered {status}: {}",
                delivery.topic,
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ));
            if status == 503 {
                self.tally.saturated += 1;
                // Every 503 of ours says `Retry-After: 1`; a wait ends with the run.
                let wake = Instant::now() + Duration::from_secs(1);
                tokio::time::sleep_until(wake.min(self.until).into()).await;
            }
            return false;
        }
        self.tally
            .acknowledged
            .get_or_insert_with(histogram)
            .record(micros.max(1))
            .expect("within bounds");
        let said = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["status"].as_str().map(str::to_owned));
        match said.as_deref() {
            Some("received") => self.tally.received += 1,
            Some("duplicate") => self.tally.duplicate += 1,
            _ => {}
        }
        if said.as_deref() == Some(expect) {
            true
        } else {
            self.tally.unexpected += 1;
            false
        }
    }

    fn error(&mut self, what: String) {
        self.tally.errors += 1;
        if self.tally.first_errors.len() < 5 {
            self.tally.first_errors.push(what);
        }
    }

    /// Cycles of create, paid and the create again, until the end of the run.
    async fn run(&mut self, templates: &Templates, index: usize) {
        let mut last_whole = None;
        for n in 0.. {
            let id = ID_BASE + index as u64 * ID_STRIDE + n;
            let number = index as u64 * 10_000_000 + n + 1;
            if self.over() {
                break;
            }
            let create = Delivery::new(substitute(&templates.create, id, number), "orders/create");
            let created = self.send(&create, "received").await;
            if self.over() {
                break;
            }
            let paid = Delivery::new(substitute(&templates.paid, id, number), "orders/paid");
            if self.send(&paid, "received").await && created {
                last_whole = Some(id);
            }
            if self.over() {
                break;
            }
            // A platform's retry: same bytes, signature and webhook id.
            self.send(&create, "duplicate").await;
        }
        self.tally.last_whole.extend(last_whole);
    }
}

/// One backend's figures.
struct Run {
    backend: String,
    elapsed: f64,
    tally: Tally,
    /// From the end of the load until nothing waited; `None` when it never came.
    drain: Option<f64>,
    failed: u64,
    /// Sampled orders that did not end `paid`.
    not_paid: usize,
    report: String,
}

impl Run {
    fn rate(&self) -> f64 {
        self.tally.acknowledged() as f64 / self.elapsed
    }

    fn applied_rate(&self) -> f64 {
        self.drain.map_or(f64::NAN, |d| {
            self.tally.received as f64 / (self.elapsed + d)
        })
    }

    fn all_applied(&self) -> bool {
        self.drain.is_some() && self.failed == 0 && self.not_paid == 0
    }

    fn met(&self) -> bool {
        self.rate() >= TARGET_RATE && self.tally.ms(0.99) <= TARGET_P99_MS && self.all_applied()
    }
}

async fn run(config: &Config, backend: &str, templates: Arc<Templates>) -> Result<Run> {
    let server = Server::start(&config.binary, &config.pg_url, "bench_ingest", backend).await?;
    let mut admin = Http::connect(server.addr).await?;
    let source = json!({
        "name": SOURCE,
        "platform": "shopify",
        "secret": SOURCE_SECRET,
        "shop_domain": SHOP,
    })
    .to_string();
    let (status, body) = admin.request("POST", "/v1/sources", Some(&source)).await?;
    if status != 201 {
        bail!(
            "POST /v1/sources answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    let conns = Http::connect_many(server.addr, config.senders).await?;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let cpu_before = CpuTimes::now();
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(config.seconds);
    let (rate, senders) = (config.rate, config.senders);
    let mut tasks = Vec::new();
    for (i, http) in conns.into_iter().enumerate() {
        let (tally, templates) = (tally.clone(), templates.clone());
        tasks.push(tokio::spawn(async move {
            // Sender `i` of `n` at `rate`/s together: every `n / rate` s, from `i / rate` s.
            let pace = rate.map(|rate| Pace {
                next: started + Duration::from_secs_f64(i as f64 / rate),
                every: Duration::from_secs_f64(senders as f64 / rate),
            });
            let mut sender = Sender {
                http,
                tally: Tally::default(),
                until,
                pace,
            };
            sender.run(&templates, i).await;
            tally.lock().await.merge(sender.tally);
        }));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu_loaded = CpuTimes::now();
    let tally = std::mem::take(&mut *tally.lock().await);

    let drain_started = Instant::now();
    let drain = loop {
        if !inbox(&mut admin, "waiting", 1, None).await?.0.is_empty() {
            if drain_started.elapsed() > DRAIN_LIMIT {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        break Some(drain_started.elapsed().as_secs_f64());
    };
    let cpu_drained = CpuTimes::now();
    let (failed, first_failure) = failures(&mut admin).await?;

    let mut not_paid = Vec::new();
    for id in &tally.last_whole {
        let path = format!("/v1/orders/{SOURCE}-{id}");
        let (status, body) = admin.request("GET", &path, None).await?;
        let order: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if status != 200 || order["status"] != "paid" {
            not_paid.push(format!(
                "{path}: {status} {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ));
        }
    }

    let cpu = |from: &Option<CpuTimes>, to: &Option<CpuTimes>, seconds: f64| match (from, to) {
        (Some(a), Some(b)) => {
            let of = |t: &CpuTimes| t.procs.get(&server.pid()).map_or(0.0, |p| p.1);
            format!(
                "server {:.1}, postgres {:.1}, client {:.1}, machine busy {:.0}%",
                of(b) - of(a),
                b.postgres() - a.postgres(),
                b.process() - a.process(),
                100.0 * (b.busy - a.busy) / (seconds.max(1e-3) * support::cores() as f64)
            )
        }
        _ => "unavailable".into(),
    };
    let drain_seconds = drain_started.elapsed().as_secs_f64();
    let mut run = Run {
        backend: backend.to_owned(),
        elapsed,
        drain,
        failed,
        not_paid: not_paid.len(),
        report: String::new(),
        tally,
    };
    let t = &run.tally;
    let mut report = format!(
        "{backend} x{} ({}): {:.0} deliveries/s acknowledged in {elapsed:.1} s; acknowledged {} \
         (received {}, duplicate {}); p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms; \
         errors {} (503 {}); unexpected status {}; ",
        config.senders,
        config.load(),
        run.rate(),
        t.acknowledged(),
        t.received,
        t.duplicate,
        t.ms(0.5),
        t.ms(0.99),
        t.ms(0.999),
        t.max_ms(),
        t.errors,
        t.saturated,
        t.unexpected,
    );
    match drain {
        Some(d) => report.push_str(&format!(
            "all applied {d:.2} s after the load ({:.0} applied/s over load and drain); ",
            run.applied_rate()
        )),
        None => report.push_str(&format!(
            "NOT all applied: deliveries still waiting {} s after the load; ",
            DRAIN_LIMIT.as_secs()
        )),
    }
    report.push_str(&format!("failed {failed}"));
    if let Some(first) = first_failure {
        report.push_str(&format!(" (the first: {first})"));
    }
    report.push_str(&format!(
        "; last whole order of each sender paid: {}/{}",
        t.last_whole.len() - not_paid.len(),
        t.last_whole.len()
    ));
    if let Some(first) = not_paid.first() {
        report.push_str(&format!(" (not paid: {first})"));
    }
    report.push_str(&format!(
        "; CPU s during the load: {}; during the drain: {}",
        cpu(&cpu_before, &cpu_loaded, elapsed),
        cpu(&cpu_loaded, &cpu_drained, drain_seconds),
    ));
    if !t.first_errors.is_empty() {
        report.push_str(&format!("; first errors: {:?}", t.first_errors));
    }
    let log = std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default();
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
    run.report = report;
    Ok(run)
}

/// One page of the source's inbox in `state`, newest first, and the `before` of the
/// next page.
async fn inbox(
    http: &mut Http,
    state: &str,
    limit: usize,
    before: Option<i64>,
) -> Result<(Vec<Value>, Option<i64>)> {
    let mut path = format!("/v1/sources/{SOURCE}/inbox?state={state}&limit={limit}");
    if let Some(before) = before {
        path.push_str(&format!("&before={before}"));
    }
    let (status, body) = http.request("GET", &path, None).await?;
    if status != 200 {
        bail!(
            "GET {path} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let mut page: Value = serde_json::from_slice(&body)?;
    let deliveries = match page["deliveries"].take() {
        Value::Array(all) => all,
        _ => Vec::new(),
    };
    Ok((deliveries, page["next_before"].as_i64()))
}

/// The failed deliveries' count, and the oldest one's topic and error.
async fn failures(http: &mut Http) -> Result<(u64, Option<String>)> {
    let (mut count, mut oldest, mut before) = (0, None, None);
    loop {
        let (page, next) = inbox(http, "failed", 500, before).await?;
        count += page.len() as u64;
        if let Some(last) = page.last() {
            oldest = Some(format!(
                "{} {}: {} {}",
                last["topic"].as_str().unwrap_or("?"),
                last["dedup_key"].as_str().unwrap_or("?"),
                last["error"]["code"].as_str().unwrap_or("?"),
                last["error"]["detail"].as_str().unwrap_or("")
            ));
        }
        match next {
            Some(next) => before = Some(next),
            None => return Ok((count, oldest)),
        }
    }
}

fn print_summary(config: &Config, runs: &[Run]) {
    println!();
    println!("== bench_ingest summary ==");
    println!(
        "signed Shopify webhooks to one source, {} senders x {} s, {}; each: create, paid, \
         the create again",
        config.senders,
        config.seconds,
        config.load()
    );
    println!(
        "{:<9} {:>8} {:>8} {:>8} {:>11} {:>8} {:>8} {:>8} {:>8} {:>7} {:>8} {:>7} {:>10}",
        "backend",
        "acked",
        "received",
        "dup",
        "acked/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "errors",
        "drain s",
        "failed",
        "applied/s"
    );
    for r in runs {
        let t = &r.tally;
        println!(
            "{:<9} {:>8} {:>8} {:>8} {:>11.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>8} {:>7} {:>10.0}",
            r.backend,
            t.acknowledged(),
            t.received,
            t.duplicate,
            r.rate(),
            t.ms(0.5),
            t.ms(0.99),
            t.ms(0.999),
            t.max_ms(),
            t.errors,
            r.drain.map_or("NEVER".to_owned(), |d| format!("{d:.2}")),
            r.failed,
            r.applied_rate(),
        );
    }
    let verdicts: Vec<String> = runs
        .iter()
        .map(|r| format!("{} {}", r.backend, if r.met() { "MET" } else { "MISSED" }))
        .collect();
    let senders_note = if config.senders == 64 {
        String::new()
    } else {
        format!(
            " (the target is at 64 senders; this ran {})",
            config.senders
        )
    };
    println!(
        "target >= {TARGET_RATE:.0} deliveries/s acknowledged, p99 <= {TARGET_P99_MS:.0} ms, \
         0 failed, all applied: {}{senders_note}",
        if runs.iter().all(Run::met) && !runs.is_empty() {
            format!("MET ({})", verdicts.join(", "))
        } else {
            format!("MISSED ({})", verdicts.join(", "))
        }
    );
}
