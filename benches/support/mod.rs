//! What every benchmark program needs: settings from the environment, medians, a
//! fresh PostgreSQL schema to run in, a minimal HTTP client and CPU accounting. Each program includes this module; not every
//! program uses every function.
#![allow(dead_code)]

use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A number from the environment (`1_000_000` reads as a million), or `default`.
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

/// Drops and recreates the schema named by the URL's `search_path` (`default` when it
/// names none), over a plain connection to the same server. Returns the schema's name.
pub async fn recreate_schema(url: &str, default: &str) -> Result<String> {
    let schema = url
        .split("search_path]=")
        .nth(1)
        .or_else(|| url.split("search_path%5D=").nth(1))
        .map(|s| s.split(['&', ',']).next().unwrap_or(s).to_owned())
        .unwrap_or_else(|| default.to_owned());
    drop_and_create(url, &schema).await?;
    Ok(schema)
}

/// Drops `schema` with everything in it and creates it empty.
pub async fn drop_and_create(url: &str, schema: &str) -> Result<()> {
    if !schema
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        bail!("schema name `{schema}` must be letters, digits and `_`");
    }
    let mut conn: PgConnection = PgConnectOptions::from_str(url)?.connect().await?;
    sqlx::raw_sql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    ))
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    Ok(())
}

/// A minimal HTTP/1.1 client on one keep-alive connection: enough for JSON requests to
/// this server (Content-Length or chunked bodies).
pub struct Http {
    pub addr: std::net::SocketAddr,
    stream: BufReader<TcpStream>,
}

impl Http {
    pub async fn connect(addr: std::net::SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            addr,
            stream: BufReader::new(stream),
        })
    }

    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, Vec<u8>)> {
        let body = body.unwrap_or("");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n",
            self.addr
        );
        if method == "POST" {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        head.push_str(body);
        self.stream.get_mut().write_all(head.as_bytes()).await?;

        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        if line.is_empty() {
            bail!("the server closed the connection");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow!("bad status line {line:?}"))?;
        let mut length = None;
        let mut chunked = false;
        let mut close = false;
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = Some(value.parse::<usize>()?),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                line.clear();
                self.stream.read_line(&mut line).await?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .context("bad chunk size")?;
                let mut chunk = vec![0; size + 2];
                self.stream.read_exact(&mut chunk).await?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(length) = length {
            body.resize(length, 0);
            self.stream.read_exact(&mut body).await?;
        }
        if close {
            *self = Http::connect(self.addr).await?;
        }
        Ok((status, body))
    }
}

/// CPU seconds used so far by this process and by all PostgreSQL processes on this
/// machine (from /proc; Linux only, assumes 100 clock ticks per second).
#[derive(Debug, Clone, Copy)]
pub struct CpuTimes {
    pub process: f64,
    pub postgres: f64,
    /// Machine-wide, from /proc/stat: busy (not idle, not iowait) and iowait seconds,
    /// summed over all cores.
    pub busy: f64,
    pub iowait: f64,
}

impl CpuTimes {
    pub fn now() -> Option<Self> {
        let ticks = |stat: &str| -> Option<(String, f64)> {
            let open = stat.find('(')?;
            let close = stat.rfind(')')?;
            let comm = stat[open + 1..close].to_owned();
            let fields: Vec<&str> = stat[close + 2..].split(' ').collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((comm, (utime + stime) / 100.0))
        };
        let process = ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?.1;
        let mut postgres = 0.0;
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let Some((comm, secs)) = ticks(&stat) {
                if comm.starts_with("postgres") {
                    postgres += secs;
                }
            }
        }
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<f64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let (idle, iowait) = (*cpu.get(3)?, *cpu.get(4)?);
        let all: f64 = cpu.iter().take(8).sum();
        Some(Self {
            process,
            postgres,
            busy: (all - idle - iowait) / 100.0,
            iowait: iowait / 100.0,
        })
    }
}
