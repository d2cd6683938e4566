//! Benchmark: what the token gate costs a request once the token is cached, the path
//! every request but `/health` takes (`Tokens::authenticate`: a SHA-256 of the token,
//! a read lock, a map lookup, a constant-time compare, the expiry and rate checks).
//!
//! ```text
//! cargo bench --bench bench_auth
//! ```
//!
//! Prints the nanoseconds per call, five times over a million calls, on a SQLite
//! database in a temporary directory (the database is read once, to fill the cache).
//!
//! Not a test: it prints figures.

use std::time::Instant;

use orderlog::auth::{Token, Tokens};
use orderlog::store::Database;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}/a.db", dir.path().display());
    let db = Database::connect(&url, 2).await?;
    db.migrate().await?;
    let tokens = Tokens::new(db.clone());
    let token = Token::generate();
    tokens
        .bootstrap(Some(&token), &dir.path().join("t"))
        .await?;
    tokens.authenticate(token.as_str()).await?;
    for _ in 0..5 {
        let n = 1_000_000;
        let start = Instant::now();
        for _ in 0..n {
            let p = tokens.authenticate(token.as_str()).await?;
            std::hint::black_box(p);
        }
        println!(
            "{:.0} ns per authenticate",
            start.elapsed().as_nanos() as f64 / n as f64
        );
    }
    Ok(())
}
