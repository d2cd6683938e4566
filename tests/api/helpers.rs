//! `spawn_app(backend)`: the real server on 127.0.0.1, port 0, against a fresh database,
//! with a typed client. PostgreSQL is never skipped: without it, tests fail and say how
//! to get one.

use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use orderlog::app::{Application, Overrides};
use orderlog::auth::Token;
use orderlog::config::Settings;
use orderlog::store::reader::{read_after, Cursor, LogEntry, LogSignal};
use orderlog::store::writer::{EventWriter, NewEvent};
use orderlog::store::Database;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each named `async fn name(backend: Backend)` once per backend.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::helpers::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::helpers::Backend::Postgres).await
            }
        }
    )*};
}

/// The NATS server (with JetStream) deliveries publish to in tests.
pub fn nats_url() -> String {
    std::env::var("ORDERLOG_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

pub fn postgres_base_url() -> String {
    std::env::var("ORDERLOG_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A fresh, empty database for one test: its own PostgreSQL schema, or its own SQLite
/// file. Returns the URL the server should use.
pub async fn fresh_database(backend: Backend) -> String {
    match backend {
        Backend::Sqlite => {
            let dir = tempdir_root().join(uuid::Uuid::new_v4().simple().to_string());
            std::fs::create_dir_all(&dir).expect("create a temporary directory");
            format!("sqlite://{}/orderlog.db", dir.display())
        }
        Backend::Postgres => {
            let base = postgres_base_url();
            let mut conn = sqlx::PgConnection::connect(&base)
                .await
                .unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is not reachable at {base}: {e}\n\
                     The suite never skips PostgreSQL. Run `scripts/test`, which starts a \
                     throwaway server when none answers, or point ORDERLOG_TEST_DATABASE_URL \
                     at a server where this user may create schemas."
                    )
                });
            let schema = format!("test_{}", uuid::Uuid::new_v4().simple());
            sqlx::query(&format!("CREATE SCHEMA {schema}"))
                .execute(&mut conn)
                .await
                .expect("create a schema for the test");
            let separator = if base.contains('?') { '&' } else { '?' };
            format!("{base}{separator}options[search_path]={schema}")
        }
    }
}

fn tempdir_root() -> &'static std::path::Path {
    static ROOT: OnceLock<tempfile::TempDir> = OnceLock::new();
    ROOT.get_or_init(|| tempfile::tempdir().expect("create a temporary directory"))
        .path()
}

/// The servers' logs, filtered by `RUST_LOG` (default `info`): on stderr only when
/// `TEST_LOG` is set (`TEST_LOG=1 cargo test --test api deliveries`), into
/// `std::io::sink` otherwise, so that a run of hundreds of servers stays readable. It is
/// installed once, before the first server starts, in place of `telemetry::init`, which
/// always writes to stderr.
fn init_test_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt().with_env_filter(filter);
        let _ = if std::env::var_os("TEST_LOG").is_some() {
            builder.with_writer(std::io::stderr).try_init()
        } else {
            builder.with_writer(std::io::sink).try_init()
        };
    });
}

/// The `bootstrap` admin token of every test server (`ORDERLOG_BOOTSTRAP_TOKEN`).
pub const ADMIN_TOKEN: &str = "olk_9ndKJC08SGgtlfeEqTLwfqcHreB_Sv9jFdTxQFih2Yc";

/// A client that sends `token` as its bearer token on every request.
pub fn client_for(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}")
            .parse()
            .expect("a token is a header value"),
    );
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("a test client")
}

/// Appends events straight to the log, as another writer (or an older server) could:
/// through the log's own writer, past every check of the domain and the API.
pub async fn append_directly(
    app: &TestApp,
    aggregate_type: &'static str,
    aggregate_id: &str,
    events: &[(String, String, Value)],
) {
    let db = Database::connect(&app.database_url, 1).await.unwrap();
    let writer = EventWriter::start(&db, LogSignal::default(), Default::default());
    let metadata = json!({"actor": "another-writer", "correlation_id": "direct"}).to_string();
    let events = events
        .iter()
        .enumerate()
        .map(|(i, (event_type, event_version, payload))| NewEvent {
            aggregate_type,
            aggregate_id: aggregate_id.to_owned(),
            sequence: i as i64 + 1,
            event_type: event_type.clone(),
            event_version: event_version.clone(),
            payload: serde_json::to_string(payload).unwrap(),
            metadata: metadata.clone(),
        })
        .collect();
    writer.append(events, None).await.unwrap();
    db.close().await;
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub database_url: String,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    server: Option<JoinHandle<anyhow::Result<()>>>,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    let url = fresh_database(backend).await;
    spawn_app_on(&url, |_| {}).await
}

/// A server on an existing database (a restart, or a second instance beside the first).
pub async fn spawn_app_on(database_url: &str, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with(database_url, tweak, Overrides::default()).await
}

/// A server with test overrides: other projections, or a fault hook in the runner.
pub async fn spawn_app_with(
    database_url: &str,
    tweak: impl FnOnce(&mut Settings),
    overrides: Overrides,
) -> TestApp {
    init_test_logs();
    let mut settings = Settings {
        database_url: database_url.to_owned(),
        bind: "127.0.0.1:0".parse().unwrap(),
        db_pool_size: 8,
        ..Settings::default()
    };
    settings.deliveries.nats_url = nats_url();
    // The suite runs many servers at once on a debug build: a burst of a test's own can
    // outlast the default deadline. Tests of shedding (tests/api/overload.rs) set theirs.
    settings.command_deadline = std::time::Duration::from_secs(30);
    // The suite's receivers run on 127.0.0.1, which the SSRF guard refuses by default;
    // tests of the guard (tests/api/targets.rs) turn it back off in their `tweak`.
    settings.deliveries.webhook_allow_private_networks = true;
    // Every test server's first token is known in advance; `app.client` sends it.
    settings.bootstrap_token = Some(Token::parse(ADMIN_TOKEN).unwrap());
    // PostgreSQL servers refuse to start without a key (SQLite makes a key file): a
    // fixed one for every test, which a test may replace or take away.
    if !database_url.starts_with("sqlite:") {
        settings.secret_key = Some(test_secret_key());
    }
    tweak(&mut settings);
    let application = Application::build_with(settings, overrides)
        .await
        .expect("build the server");
    let addr = application.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(application.run(shutdown.clone()));
    TestApp {
        addr,
        database_url: database_url.to_owned(),
        client: client_for(ADMIN_TOKEN),
        shutdown,
        server: Some(server),
    }
}

/// The key PostgreSQL test servers seal with.
pub fn test_secret_key() -> orderlog::store::sealed::SecretKey {
    orderlog::store::sealed::SecretKey::parse("b3JkZXJsb2cgdGVzdCBrZXksIG5ldmVyIGZvciB1c2U=")
        .expect("the test key is 32 bytes of base64")
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client.get(self.url(path)).send().await.expect("GET")
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn post_with_key(&self, path: &str, key: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("POST")
    }

    pub async fn post_empty(&self, path: &str) -> Response {
        self.client.post(self.url(path)).send().await.expect("POST")
    }

    /// Places an order for 2 × MUG at 15.00 and 1 × TEE at 20.00 (total 5000 cents).
    pub async fn place_order(&self, order_id: &str) -> Value {
        let response = self
            .post("/v1/orders", &fixture("place_order.json", order_id))
            .await;
        expect_status(response, StatusCode::CREATED).await
    }

    /// Places, pays and captures an order.
    pub async fn paid_order(&self, order_id: &str) -> Value {
        self.place_order(order_id).await;
        let path = format!("/v1/orders/{order_id}/payments");
        let r = self
            .post(&path, &json!({"payment_id": "pay-1", "amount": 5000}))
            .await;
        expect_status(r, StatusCode::CREATED).await;
        let r = self
            .post_empty(&format!("/v1/orders/{order_id}/payments/pay-1/capture"))
            .await;
        expect_status(r, StatusCode::OK).await
    }

    /// Every item of a paged list: follows `next_cursor` from `path` to the last page
    /// and collects what each page holds under `key`, in the order served.
    pub async fn all_pages(&self, path: &str, key: &str) -> Vec<Value> {
        let separator = if path.contains('?') { '&' } else { '?' };
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page_path = match &cursor {
                Some(c) => format!("{path}{separator}cursor={c}"),
                None => path.to_owned(),
            };
            let page = expect_status(self.get(&page_path).await, StatusCode::OK).await;
            items.extend(page[key].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return items,
            }
        }
    }

    pub async fn events(&self, order_id: &str) -> Vec<Value> {
        let r = self.get(&format!("/v1/orders/{order_id}/events")).await;
        let body = expect_status(r, StatusCode::OK).await;
        body["events"].as_array().cloned().unwrap_or_default()
    }

    /// The events of one SKU's stock, read from the log itself: the API has no route
    /// for them.
    pub async fn inventory_events(&self, sku: &str) -> Vec<Value> {
        let db = Database::connect(&self.database_url, 2).await.unwrap();
        orderlog::store::log::aggregate_events(&db, "inventory", sku)
            .await
            .unwrap()
            .into_iter()
            .map(|e| {
                json!({
                    "event_type": e.event_type,
                    "event_version": e.event_version,
                    "payload": serde_json::from_str::<Value>(&e.payload).unwrap(),
                    "metadata": serde_json::from_str::<Value>(e.metadata.as_deref().unwrap()).unwrap(),
                })
            })
            .collect()
    }

    /// The ids of `order_id`'s events whose type `keep` accepts, in log order.
    pub async fn event_ids(&self, order_id: &str, keep: impl Fn(&str) -> bool) -> Vec<String> {
        self.events(order_id)
            .await
            .into_iter()
            .filter(|e| keep(e["event_type"].as_str().unwrap()))
            .map(|e| e["event_id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Waits until every projection is running and has applied every committed event.
    pub async fn projections_caught_up(&self) -> Value {
        eventually(
            "the projections to catch up",
            Duration::from_secs(20),
            || async {
                let status =
                    expect_status(self.get("/v1/admin/projections").await, StatusCode::OK).await;
                let done = status["projections"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|p| p["state"] == "running" && p["lag_events"] == 0);
                if done {
                    Ok(status)
                } else {
                    Err(status)
                }
            },
        )
        .await
    }

    /// Everything the read side answers, for comparing two states of the views.
    pub async fn read_side(&self) -> Value {
        let mut billing = Vec::new();
        let orders = expect_status(self.get("/v1/orders?limit=500").await, StatusCode::OK).await;
        for order in orders["orders"].as_array().unwrap() {
            let id = order["order_id"].as_str().unwrap();
            let r = self.get(&format!("/v1/billing/orders/{id}")).await;
            billing.push(expect_status(r, StatusCode::OK).await);
        }
        let range = "from=2000-01-01&to=2100-01-01";
        json!({
            "orders": orders,
            "billing": billing,
            "daily": expect_status(self.get(&format!("/v1/billing/daily?{range}")).await, StatusCode::OK).await,
            "shipments": expect_status(self.get("/v1/shipping/shipments?limit=1000").await, StatusCode::OK).await,
            "backlog": expect_status(self.get("/v1/shipping/backlog?limit=1000").await, StatusCode::OK).await,
            "summary": expect_status(self.get(&format!("/v1/analytics/summary?{range}")).await, StatusCode::OK).await,
            "top": expect_status(self.get(&format!("/v1/analytics/top-skus?{range}&limit=100")).await, StatusCode::OK).await,
        })
    }

    /// Stops the server the way SIGTERM does, and waits for it to finish.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("server task")
                .expect("server stopped cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// How often [`eventually`] asks again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Asks `check` every 20 ms until it answers `Ok(value)`, and returns that value.
/// Whatever the server does in the background (projections, deliveries, timers) is
/// awaited this way. `check` answers `Err(observation)` while the condition does not
/// hold; once `timeout` has passed, the test fails naming `what` it waited for and
/// the last observation.
pub async fn eventually<T, E, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// The whole log after `after` (up to 100 events), once at least `n` of them are
/// visible: on a shared PostgreSQL, other sessions' open transactions may hold the
/// reader back for a moment (that is lag, never a skip).
pub async fn read_log(db: &Database, after: Cursor, n: usize) -> Vec<LogEntry> {
    let what = format!("{n} events in the log");
    eventually(&what, Duration::from_secs(10), || async {
        let log = read_after(db, after, 100).await.unwrap();
        if log.len() >= n {
            Ok(log)
        } else {
            Err(format!("{} events", log.len()))
        }
    })
    .await
}

/// A request body from `fixtures/`, with `{{order_id}}` filled in.
pub fn fixture(name: &str, order_id: &str) -> Value {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&text.replace("{{order_id}}", order_id))
        .unwrap_or_else(|e| panic!("parse {path}: {e}"))
}

/// Asserts the status, then returns the JSON body.
pub async fn expect_status(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let text = response.text().await.expect("read the body");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// Asserts an error response: its status, its stable code, and a non-empty sentence.
pub async fn expect_error(response: Response, status: StatusCode, code: &str) -> Value {
    let body = expect_status(response, status).await;
    assert_eq!(body["code"], code, "unexpected error code: {body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "an error must explain itself: {body}"
    );
    body
}

/// An answer to [`TestApp::raw`]: the status, the headers and the whole body.
pub struct RawResponse {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn content_type(&self) -> &str {
        self.headers
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as JSON, or `Null` when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl TestApp {
    /// Sends a request exactly as written, on a connection of its own, with the admin
    /// token and `headers`: the path is not normalised (`..` and `%2E%2E` reach the
    /// server as they are, which reqwest's URLs would resolve away) and the body is any
    /// bytes. For tests of hostile input. A 2xx answer's body is not read (the event
    /// stream never ends).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> RawResponse {
        use http_body_util::{BodyExt, Full};
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect to the server");
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .expect("HTTP/1.1 handshake");
        tokio::spawn(connection);
        let mut request = hyper::Request::new(Full::new(axum::body::Bytes::from(body)));
        *request.method_mut() = hyper::Method::from_bytes(method.as_bytes()).expect("a method");
        *request.uri_mut() = hyper::Uri::try_from(path)
            .unwrap_or_else(|e| panic!("{path:?} is not a request target hyper sends: {e}"));
        let sent = request.headers_mut();
        sent.insert("host", self.addr.to_string().parse().unwrap());
        sent.insert(
            "authorization",
            format!("Bearer {ADMIN_TOKEN}").parse().unwrap(),
        );
        for (name, value) in headers {
            sent.insert(
                hyper::header::HeaderName::from_bytes(name.as_bytes()).expect("a header name"),
                value.parse().expect("a header value"),
            );
        }
        let send = async {
            let response = sender.send_request(request).await.expect("an answer");
            let status = response.status();
            let headers = response.headers().clone();
            let body = if status.is_success() {
                Vec::new()
            } else {
                let collected = response.into_body().collect().await.expect("the body");
                collected.to_bytes().to_vec()
            };
            RawResponse {
                status,
                headers,
                body,
            }
        };
        tokio::time::timeout(Duration::from_secs(30), send)
            .await
            .unwrap_or_else(|_| panic!("{method} {path} got no answer within 30 s"))
    }
}

/// How many events the log holds, counted by the database itself: unlike a reader of
/// the log, whose view may trail commits a moment on a busy PostgreSQL.
pub async fn event_count(db: &Database) -> i64 {
    let sql = "SELECT count(*) FROM events";
    match db {
        Database::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        Database::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
    }
}

/// An order for `lines` of (sku, quantity) at 1.00 each.
pub fn order_body(order_id: &str, lines: &[(&str, i64)]) -> Value {
    serde_json::json!({
        "order_id": order_id,
        "customer_id": "cust-1",
        "currency": "USD",
        "lines": lines.iter().map(|(sku, q)| serde_json::json!({"sku": sku, "quantity": q, "unit_price": 100})).collect::<Vec<_>>(),
    })
}
