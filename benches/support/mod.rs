//! What every benchmark program needs: settings from the environment and the command
//! line, medians, a fresh PostgreSQL schema to run in, an HTTP/1.1 client on one
//! keep-alive connection, the projections' status and CPU accounting from /proc. Each
//! program includes it with `mod support;`; not every program uses every function, and
//! none of it belongs in the server.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::net::TcpStream;

/// A number from the environment (`1_000_000` reads as a million), or `default`.
/// The admin token every benchmark's server is given (`ORDERLOG_BOOTSTRAP_TOKEN`), and
/// the key its secrets are sealed with: the schemas are the benchmarks' own.
pub const TOKEN: &str = "olk_YmVuY2htYXJrIHRva2VuOiBuZXZlciBmb3IgdXNlISE";
pub const SECRET_KEY: &str = "YmVuY2htYXJrIHNlY3JldCBrZXksIG5ldmVyIGZvciA=";
const BEARER: HeaderValue =
    HeaderValue::from_static("Bearer olk_YmVuY2htYXJrIHRva2VuOiBuZXZlciBmb3IgdXNlISE");

/// A server's settings for a benchmark on `url`: port 0, the benchmark token and key.
pub fn server_settings(url: &str) -> Result<orderlog::config::Settings> {
    Ok(orderlog::config::Settings {
        database_url: url.to_owned(),
        bind: "127.0.0.1:0".parse()?,
        bootstrap_token: Some(orderlog::auth::Token::parse(TOKEN).map_err(|e| anyhow!(e))?),
        secret_key: Some(
            orderlog::store::sealed::SecretKey::parse(SECRET_KEY).map_err(|e| anyhow!("{e}"))?,
        ),
        ..orderlog::config::Settings::default()
    })
}

pub fn env_number<T: FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .ok()
            .with_context(|| format!("{name} must be a number")),
        Err(_) => Ok(default),
    }
}

/// The first command-line argument. `cargo bench` adds `--bench` to a `harness = false`
/// program's arguments (after those given after `--`), so flags are skipped.
pub fn first_argument() -> Option<String> {
    std::env::args().skip(1).find(|arg| !arg.starts_with("--"))
}

/// The median; NaN for no values.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The cores this process may use.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The schema named by the URL's `search_path` (`default` when it names none), checked
/// to be a plain identifier since it is spliced into SQL.
pub fn schema_in(url: &str, default: &str) -> Result<String> {
    let schema = url
        .split("search_path]=")
        .nth(1)
        .or_else(|| url.split("search_path%5D=").nth(1))
        .map(|s| s.split(['&', ',']).next().unwrap_or(s).to_owned())
        .unwrap_or_else(|| default.to_owned());
    plain_identifier(&schema)?;
    Ok(schema)
}

fn plain_identifier(schema: &str) -> Result<()> {
    if schema.is_empty()
        || !schema
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        bail!("schema name `{schema}` must be letters, digits and `_`");
    }
    Ok(())
}

/// Drops and recreates the schema named by the URL's `search_path` (`default` when it
/// names none), over a plain connection to the same server. Returns the schema's name.
pub async fn recreate_schema(url: &str, default: &str) -> Result<String> {
    let schema = schema_in(url, default)?;
    drop_and_create(url, &schema).await?;
    Ok(schema)
}

/// Drops `schema` with everything in it and creates it empty.
pub async fn drop_and_create(url: &str, schema: &str) -> Result<()> {
    plain_identifier(schema)?;
    let mut conn: PgConnection = PgConnectOptions::from_str(url)?.connect().await?;
    sqlx::raw_sql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    ))
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(())
}

/// An HTTP/1.1 client on one keep-alive connection (hyper's, over a `TcpStream` with
/// Nagle off), for JSON requests to this server: one per simulated client, so that the
/// load is a fixed set of connections, each sending its next request when the previous
/// answer is in.
///
/// It shares the cores with the server under test, so a request costs as little as
/// hyper allows: headers are inserted ready-made rather than through
/// `Request::builder`, and each request goes out in one contiguous write (as the
/// hand-written client this replaced did) rather than a vectored one. Measured against
/// that client, it still costs about 4 µs more CPU per request.
pub struct Http {
    pub addr: SocketAddr,
    host: HeaderValue,
    sender: SendRequest<Full<Bytes>>,
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");

impl Http {
    /// `count` keep-alive connections, each checked with `GET /health` (which appends
    /// nothing), opened before a measurement starts.
    pub async fn connect_many(addr: SocketAddr, count: usize) -> Result<Vec<Self>> {
        let mut conns = Vec::with_capacity(count);
        for _ in 0..count {
            let mut conn = Http::connect(addr).await?;
            let (status, _) = conn.request("GET", "/health", None).await?;
            if status != 200 {
                bail!("GET /health answered {status}");
            }
            conns.push(conn);
        }
        Ok(conns)
    }

    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .context("HTTP/1.1 handshake")?;
        // The connection's reads and writes; it ends when the sender is dropped or the
        // server closes the connection.
        tokio::spawn(connection);
        Ok(Self {
            addr,
            host: HeaderValue::try_from(addr.to_string())?,
            sender,
        })
    }

    /// Sends one request and reads the whole answer: its status and body. A POST always
    /// carries a JSON content type and a length (0 without a body). When the server has
    /// closed the connection, the next request opens a new one.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, Bytes)> {
        self.request_keyed(method, path, body, None).await
    }

    /// As [`Http::request`], with an `Idempotency-Key`, as storefronts send on every POST.
    pub async fn request_keyed(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
        key: Option<&str>,
    ) -> Result<(u16, Bytes)> {
        let length = body.map_or(0, str::len);
        let mut request = Request::new(Full::new(Bytes::copy_from_slice(
            body.unwrap_or("").as_bytes(),
        )));
        *request.method_mut() = Method::from_bytes(method.as_bytes())?;
        *request.uri_mut() = Uri::try_from(path).with_context(|| format!("the path {path}"))?;
        let headers = request.headers_mut();
        headers.insert(HOST, self.host.clone());
        headers.insert(ACCEPT, JSON);
        headers.insert(AUTHORIZATION, BEARER);
        if body.is_some() || method == "POST" {
            headers.insert(CONTENT_TYPE, JSON);
            headers.insert(CONTENT_LENGTH, length.into());
        }
        if let Some(key) = key {
            headers.insert("idempotency-key", HeaderValue::try_from(key)?);
        }
        if self.sender.ready().await.is_err() {
            *self = Http::connect(self.addr).await?;
            self.sender
                .ready()
                .await
                .map_err(|e| anyhow!("a new connection to {} failed: {e}", self.addr))?;
        }
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

impl Http {
    /// A POST as a platform's webhook arrives: no bearer token, the body's bytes as
    /// given (not copied), a JSON content type and `headers` (its signature, topic, …).
    pub async fn post_unauthenticated(
        &mut self,
        path: &str,
        body: Bytes,
        headers: &[(&'static str, HeaderValue)],
    ) -> Result<(u16, Bytes)> {
        let length = body.len();
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = Uri::try_from(path).with_context(|| format!("the path {path}"))?;
        let map = request.headers_mut();
        map.insert(HOST, self.host.clone());
        map.insert(ACCEPT, JSON);
        map.insert(CONTENT_TYPE, JSON);
        map.insert(CONTENT_LENGTH, length.into());
        for (name, value) in headers {
            map.insert(*name, value.clone());
        }
        if self.sender.ready().await.is_err() {
            *self = Http::connect(self.addr).await?;
            self.sender
                .ready()
                .await
                .map_err(|e| anyhow!("a new connection to {} failed: {e}", self.addr))?;
        }
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// `GET /v1/admin/projections`: each projection's status (`name`, `state`, `lag_events`,
/// `apply_lag`, …).
pub async fn projections(http: &mut Http) -> Result<Vec<Value>> {
    let body = get_json(http, "/v1/admin/projections").await?;
    Ok(body["projections"].as_array().cloned().unwrap_or_default())
}

/// A GET that must answer 200 with JSON.
pub async fn get_json(http: &mut Http, path: &str) -> Result<Value> {
    let (status, body) = http.request("GET", path, None).await?;
    if status != 200 {
        bail!(
            "GET {path} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(serde_json::from_slice(&body)?)
}

/// CPU seconds used so far by every process, and machine-wide (from /proc; Linux only,
/// assumes 100 clock ticks per second).
#[derive(Debug, Clone)]
pub struct CpuTimes {
    /// Per process id: its name and CPU seconds (user and system).
    pub procs: BTreeMap<u32, (String, f64)>,
    /// Machine-wide, from /proc/stat, summed over all cores: busy (not idle, not
    /// iowait), iowait and steal seconds.
    pub busy: f64,
    pub iowait: f64,
    pub steal: f64,
}

impl CpuTimes {
    pub fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<f64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let (idle, iowait, steal) = (*cpu.get(3)?, *cpu.get(4)?, *cpu.get(7)?);
        let all: f64 = cpu.iter().take(8).sum();
        Some(Self {
            procs: process_cpu(),
            busy: (all - idle - iowait) / 100.0,
            iowait: iowait / 100.0,
            steal: steal / 100.0,
        })
    }

    /// This process's CPU seconds.
    pub fn process(&self) -> f64 {
        self.procs
            .get(&std::process::id())
            .map_or(0.0, |(_, secs)| *secs)
    }

    /// Every PostgreSQL process's CPU seconds, whoever it serves.
    pub fn postgres(&self) -> f64 {
        self.procs
            .values()
            .filter(|(name, _)| name.starts_with("postgres"))
            .map(|(_, secs)| secs)
            .sum()
    }
}

/// CPU seconds per process (pid, name) so far, from /proc.
fn process_cpu() -> BTreeMap<u32, (String, f64)> {
    let mut all = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return all;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
        let ticks = |i: usize| {
            fields
                .get(i)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        all.insert(
            pid,
            (
                stat[open + 1..close].to_owned(),
                (ticks(11) + ticks(12)) / 100.0,
            ),
        );
    }
    all
}

/// A webhook receiver on 127.0.0.1 that answers 200 at once, over keep-alive
/// connections, and remembers each `webhook-id` it saw.
pub struct FastReceiver {
    pub addr: SocketAddr,
    pub seen: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl FastReceiver {
    pub async fn start() -> Result<FastReceiver> {
        use axum::http::{HeaderMap, StatusCode};

        let seen = std::sync::Arc::<std::sync::Mutex<std::collections::HashSet<String>>>::default();
        let state = seen.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap| {
                let seen = state.clone();
                async move {
                    if let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) {
                        seen.lock().unwrap().insert(id.to_owned());
                    }
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(FastReceiver { addr, seen })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn reset(&self) {
        self.seen.lock().unwrap().clear();
    }

    pub fn distinct(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

/// An OTLP/HTTP collector that takes every export (`POST /v1/traces`, either
/// encoding) and counts what it got: the benchmarks' stand-in for a real one, on
/// 127.0.0.1.
pub struct Collector {
    pub addr: SocketAddr,
    exports: std::sync::Arc<std::sync::atomic::AtomicU64>,
    bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Collector {
    pub async fn start() -> Result<Collector> {
        use std::sync::atomic::{AtomicU64, Ordering};
        let exports = std::sync::Arc::new(AtomicU64::new(0));
        let bytes = std::sync::Arc::new(AtomicU64::new(0));
        let (e, b) = (exports.clone(), bytes.clone());
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let (e, b) = (e.clone(), b.clone());
                async move {
                    e.fetch_add(1, Ordering::Relaxed);
                    b.fetch_add(body.len() as u64, Ordering::Relaxed);
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Collector {
            addr,
            exports,
            bytes,
        })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Exports and bytes received so far.
    pub fn received(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.exports.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// The server under test, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: SocketAddr,
    /// Its SQLite file, its token file and its log (`server.log`).
    pub dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `binary serve` on a fresh database: a new SQLite file, or the schema of
    /// `pg_url` (`default_schema` unless the URL names one) dropped and recreated; with
    /// the benchmark token, warnings to a file, every other `ORDERLOG_*` setting
    /// inherited from this environment. Ready once `/ready` answers.
    pub async fn start(
        binary: &str,
        pg_url: &str,
        default_schema: &str,
        backend: &str,
    ) -> Result<Server> {
        Server::start_with(binary, pg_url, default_schema, backend, &[]).await
    }

    /// [`Server::start`], with `env` set on top of what is inherited.
    pub async fn start_with(
        binary: &str,
        pg_url: &str,
        default_schema: &str,
        backend: &str,
        env: &[(String, String)],
    ) -> Result<Server> {
        let dir = tempfile::tempdir()?;
        let url = match backend {
            "sqlite" => format!("sqlite://{}/orderlog.db", dir.path().display()),
            "postgres" => {
                let schema = schema_in(pg_url, default_schema)?;
                drop_and_create(pg_url, &schema).await?;
                pg_url.to_owned()
            }
            other => bail!("unknown backend `{other}`: sqlite or postgres"),
        };
        // The port is free now; the server binds it a moment later.
        let addr = TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut command = Command::new(binary);
        command
            .arg("serve")
            .env("ORDERLOG_DATABASE_URL", &url)
            .env("ORDERLOG_BIND", addr.to_string())
            .env("ORDERLOG_BOOTSTRAP_TOKEN", TOKEN)
            .env(
                "ORDERLOG_BOOTSTRAP_TOKEN_FILE",
                dir.path().join("admin.token"),
            )
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("warn".into()),
            )
            .stdout(Stdio::null())
            // Its warnings go to a file, not between the figures.
            .stderr(std::fs::File::create(dir.path().join("server.log"))?);
        if backend == "postgres" {
            command.env("ORDERLOG_SECRET_KEY", SECRET_KEY);
        }
        command.envs(env.iter().map(|(k, v)| (k, v)));
        let child = command
            .spawn()
            .with_context(|| format!("starting {binary}"))?;
        let mut server = Server { child, addr, dir };
        let started = Instant::now();
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("the server exited at start: {status}");
            }
            if let Ok(mut http) = Http::connect(addr).await {
                if let Ok((200, _)) = http.request("GET", "/ready", None).await {
                    return Ok(server);
                }
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the server was not ready within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}
