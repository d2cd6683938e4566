//! What every benchmark program needs: settings from the environment, medians, and a
//! fresh PostgreSQL schema to run in. Each program includes this module; not every
//! program uses every function.
#![allow(dead_code)]

use std::str::FromStr;

use anyhow::{bail, Context, Result};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

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
