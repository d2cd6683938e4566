//! Idempotency keys: the first response to a key is kept, and a retry gets it back.
//!
//! A key is claimed before the command runs and completed with the response after it. A
//! claim left behind by a crash stays in flight until it expires rather than being
//! re-run: the command may have appended its events already, and a second run could
//! append them twice (a second order, for one without a client-chosen id).

use chrono::{DateTime, Duration, Utc};
use sqlx::Row;

use super::{Database, StoreError};

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is new and now ours: run the request, then `complete` or `release`.
    Claimed,
    /// The same request was answered before: send this again, with its content type
    /// (`None` for a response kept without one).
    Replay {
        status: u16,
        content_type: Option<String>,
        body: Vec<u8>,
    },
    /// The key was used for a different request.
    Mismatch,
    /// The first request with this key has not finished.
    InFlight,
}

#[derive(Clone)]
pub struct IdempotencyStore {
    db: Database,
    ttl: Duration,
}

impl IdempotencyStore {
    pub fn new(db: Database, ttl: std::time::Duration) -> Self {
        Self {
            db,
            ttl: Duration::from_std(ttl).unwrap_or(Duration::hours(24)),
        }
    }

    pub async fn claim(
        &self,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        let expired_before = now - self.ttl;
        let row = match &self.db {
            Database::Postgres(pool) => {
                sqlx::query("DELETE FROM idempotency_keys WHERE key = $1 AND created_at < $2")
                    .bind(key)
                    .bind(expired_before)
                    .execute(pool)
                    .await?;
                let inserted = sqlx::query(
                    "INSERT INTO idempotency_keys (key, request_hash, created_at)
                     VALUES ($1, $2, $3) ON CONFLICT (key) DO NOTHING",
                )
                .bind(key)
                .bind(request_hash)
                .bind(now)
                .execute(pool)
                .await?;
                if inserted.rows_affected() == 1 {
                    return Ok(Claim::Claimed);
                }
                let row = sqlx::query(
                    "SELECT request_hash, status_code::int4 AS status_code, content_type,
                            response_body
                       FROM idempotency_keys WHERE key = $1",
                )
                .bind(key)
                .fetch_optional(pool)
                .await?;
                row.map(|r| -> Result<_, sqlx::Error> {
                    Ok((
                        r.try_get::<String, _>("request_hash")?,
                        r.try_get::<Option<i32>, _>("status_code")?,
                        r.try_get::<Option<String>, _>("content_type")?,
                        r.try_get::<Option<Vec<u8>>, _>("response_body")?,
                    ))
                })
                .transpose()?
            }
            Database::Sqlite(pool) => {
                sqlx::query("DELETE FROM idempotency_keys WHERE key = ? AND created_at < ?")
                    .bind(key)
                    .bind(expired_before.timestamp_millis())
                    .execute(pool)
                    .await?;
                let inserted = sqlx::query(
                    "INSERT INTO idempotency_keys (key, request_hash, created_at)
                     VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING",
                )
                .bind(key)
                .bind(request_hash)
                .bind(now.timestamp_millis())
                .execute(pool)
                .await?;
                if inserted.rows_affected() == 1 {
                    return Ok(Claim::Claimed);
                }
                let row = sqlx::query(
                    "SELECT request_hash, status_code, content_type, response_body
                       FROM idempotency_keys WHERE key = ?",
                )
                .bind(key)
                .fetch_optional(pool)
                .await?;
                row.map(|r| -> Result<_, sqlx::Error> {
                    Ok((
                        r.try_get::<String, _>("request_hash")?,
                        r.try_get::<Option<i32>, _>("status_code")?,
                        r.try_get::<Option<String>, _>("content_type")?,
                        r.try_get::<Option<Vec<u8>>, _>("response_body")?,
                    ))
                })
                .transpose()?
            }
        };
        Ok(match row {
            // Expired and purged between our insert and select: treat as in flight, the
            // client's next retry claims it afresh.
            None => Claim::InFlight,
            Some((hash, _, _, _)) if hash != request_hash => Claim::Mismatch,
            Some((_, Some(status), content_type, body)) => Claim::Replay {
                status: u16::try_from(status).unwrap_or(500),
                content_type,
                body: body.unwrap_or_default(),
            },
            Some((_, None, _, _)) => Claim::InFlight,
        })
    }

    /// Keeps the response for retries: its status, content type and body.
    pub async fn complete(
        &self,
        key: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match &self.db {
            Database::Postgres(pool) => {
                sqlx::query(
                    "UPDATE idempotency_keys
                        SET status_code = $2, content_type = $3, response_body = $4,
                            completed_at = $5
                      WHERE key = $1",
                )
                .bind(key)
                .bind(i16::try_from(status).unwrap_or(500))
                .bind(content_type)
                .bind(body)
                .bind(now)
                .execute(pool)
                .await?;
            }
            Database::Sqlite(pool) => {
                sqlx::query(
                    "UPDATE idempotency_keys
                        SET status_code = ?, content_type = ?, response_body = ?,
                            completed_at = ?
                      WHERE key = ?",
                )
                .bind(i32::from(status))
                .bind(content_type)
                .bind(body)
                .bind(now.timestamp_millis())
                .bind(key)
                .execute(pool)
                .await?;
            }
        }
        Ok(())
    }

    /// Gives a claim back when the request failed in a way worth retrying (a conflict,
    /// an outage), so that the retry runs instead of replaying the failure.
    pub async fn release(&self, key: &str) -> Result<(), StoreError> {
        let sql_pg = "DELETE FROM idempotency_keys WHERE key = $1 AND status_code IS NULL";
        let sql_lite = "DELETE FROM idempotency_keys WHERE key = ? AND status_code IS NULL";
        match &self.db {
            Database::Postgres(pool) => sqlx::query(sql_pg)
                .bind(key)
                .execute(pool)
                .await
                .map(drop)?,
            Database::Sqlite(pool) => sqlx::query(sql_lite)
                .bind(key)
                .execute(pool)
                .await
                .map(drop)?,
        }
        Ok(())
    }

    /// Deletes every key older than the retention. Returns how many went.
    pub async fn purge_expired(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let expired_before = now - self.ttl;
        let done = match &self.db {
            Database::Postgres(pool) => {
                sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
                    .bind(expired_before)
                    .execute(pool)
                    .await?
                    .rows_affected()
            }
            Database::Sqlite(pool) => {
                sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?")
                    .bind(expired_before.timestamp_millis())
                    .execute(pool)
                    .await?
                    .rows_affected()
            }
        };
        Ok(done)
    }
}
