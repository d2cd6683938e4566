//! Idempotency keys: the first response to a key is kept, and a retry gets it back.
//!
//! Nothing is written before the command runs. A request is checked against the kept
//! keys (a read), held in this process so that a concurrent duplicate waits its turn,
//! and its key rides to the log with its command ([`KeyClaim`]): the claim commits in
//! the same group commit as the command's events (`store::writer`), so a retry after a
//! crash finds both or neither.
//!
//! A command whose answer can be rendered from the state it decided (placing an order,
//! `store::commands::RenderAnswer`) writes that answer with its claim, and the key is
//! answered when its events commit: no second write, and no crash can lose the answer
//! (one write fewer per keyed order: +8–10% keyed orders/s on PostgreSQL in one
//! alternating run, 2,355 and 2,386 against 2,592 and 2,571; SQLite level; BENCHMARKS.md).
//! Any other answer is kept once the handler has it, in the next group commit, and the
//! client does not wait for that commit: the claim already stops the command from
//! running twice, and a crash before the answer commits leaves the claim in flight
//! whether or not the client heard (a third of a keyed order's time went to waiting for
//! it, measured in BENCHMARKS.md). Until the answer is in, the key stays held in this
//! process, and a duplicate arriving meanwhile waits for it and gets it.
//!
//! A request that appends nothing (a refusal, a route outside the aggregates) keeps key
//! and answer at once. Two processes given one key at the same instant: for a command,
//! the database refuses the second claim with its events (409 `conflict`, whose retry
//! gets the first answer); elsewhere both may run, and the first answer is kept.
//!
//! A claim whose answer was lost (a crash between the two commits, a few milliseconds)
//! is never run again: the command took effect, and running it again could append it
//! twice. For [`ANSWER_GRACE`] it reads as in flight, since another process may be about
//! to keep its answer; after that, as [`Claim::Lost`]: applied, its answer gone, and the
//! resource itself says what it did. A retry told "in flight" until the key expired
//! would never learn that its command took effect (a placed order's answer is never
//! lost: the crash test in `tests/api/crash.rs` holds every retry to it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use sqlx::Row;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use super::writer::{Answer, EventWriter, KeyWrite};
use super::{Database, StoreError};

/// What a check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is unused: run the request.
    Free,
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
    /// The first request with this key took effect (its claim committed with its
    /// events), and its answer was never kept: a crash came between the two commits.
    Lost,
}

/// A request's key, carried with its command (`CommandMetadata::claim`) so that the
/// claim commits with the command's events. Told when it did, and whether its answer
/// committed with it.
#[derive(Debug, Clone)]
pub struct KeyClaim {
    pub key: String,
    pub request_hash: String,
    pub at: DateTime<Utc>,
    taken: Arc<AtomicBool>,
    answered: Arc<AtomicBool>,
}

impl KeyClaim {
    pub fn new(key: &str, request_hash: &str, at: DateTime<Utc>) -> Self {
        Self {
            key: key.to_owned(),
            request_hash: request_hash.to_owned(),
            at,
            taken: Arc::default(),
            answered: Arc::default(),
        }
    }

    /// The claim, with the answer rendered before the commit when there is one.
    pub fn write(&self, answer: Option<Answer>) -> KeyWrite {
        KeyWrite::Claim {
            key: self.key.clone(),
            request_hash: self.request_hash.clone(),
            answer,
            at: self.at,
        }
    }

    /// The claim is committed, with the command's events, and with its answer when
    /// `answered`.
    pub fn mark_taken(&self, answered: bool) {
        self.answered.store(answered, Ordering::Release);
        self.taken.store(true, Ordering::Release);
    }

    pub fn taken(&self) -> bool {
        self.taken.load(Ordering::Acquire)
    }

    /// The answer committed with the claim: nothing is left to keep.
    pub fn answered(&self) -> bool {
        self.taken() && self.answered.load(Ordering::Acquire)
    }
}

impl PartialEq for KeyClaim {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.request_hash == other.request_hash
    }
}

impl Eq for KeyClaim {}

/// How long after its claim an answer may still be on its way: kept in the group commit
/// after its command's, milliseconds later even under load; with a margin for a process
/// stalled in between. A claim older than this without its answer has lost it.
pub const ANSWER_GRACE: Duration = Duration::seconds(5);

#[derive(Clone)]
pub struct IdempotencyStore {
    db: Database,
    writer: EventWriter,
    ttl: Duration,
    running: Running,
    /// Answers being kept after their response went out.
    keeping: TaskTracker,
}

/// Keys with a request running in this process; once its response is out, with the
/// token cancelled when its answer is kept.
type Running = Arc<Mutex<HashMap<String, Option<CancellationToken>>>>;

/// How long a duplicate waits for its twin's answer to be kept before it is told the
/// key is in flight. The answer's commit takes milliseconds; this only bounds a stall.
const KEEPING_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A key held by the request running it in this process; let go when dropped.
pub struct Held {
    key: String,
    running: Running,
}

impl Held {
    /// The response is out and the answer on its way to the log: duplicates wait for it.
    fn answering(self) -> Answering {
        let kept = CancellationToken::new();
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(self.key.clone(), Some(kept.clone()));
        Answering {
            _held: self,
            _kept: kept.drop_guard(),
        }
    }
}

/// A held key whose answer is being kept. Dropped once it is: the key is let go first,
/// then the duplicates waiting are woken, so that they find it free.
struct Answering {
    _held: Held,
    _kept: DropGuard,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&self.key);
    }
}

impl IdempotencyStore {
    pub fn new(db: Database, ttl: std::time::Duration, writer: EventWriter) -> Self {
        Self {
            db,
            writer,
            ttl: Duration::from_std(ttl).unwrap_or(Duration::hours(24)),
            running: Arc::default(),
            keeping: TaskTracker::new(),
        }
    }

    /// Holds `key` for a request of this process, or `None` when one is running. When
    /// that one has answered and its answer is being kept, waits for it (a retry that
    /// fast then gets the answer replayed, as it would a moment later).
    pub async fn hold(&self, key: &str) -> Option<Held> {
        loop {
            let kept = {
                let mut running = self
                    .running
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                match running.get(key) {
                    None => {
                        running.insert(key.to_owned(), None);
                        return Some(Held {
                            key: key.to_owned(),
                            running: self.running.clone(),
                        });
                    }
                    Some(None) => return None,
                    Some(Some(kept)) => kept.clone(),
                }
            };
            tokio::time::timeout(KEEPING_WAIT, kept.cancelled())
                .await
                .ok()?;
        }
    }

    /// Waits for the answers still being kept: the server calls it once it takes no
    /// more requests, before it closes the database.
    pub async fn settle(&self) {
        self.keeping.close();
        self.keeping.wait().await;
    }

    /// What the kept keys say of this request. Reads only, but for an expired key,
    /// which it deletes so that the key is free again.
    pub async fn check(
        &self,
        key: &str,
        request_hash: &str,
        now: DateTime<Utc>,
    ) -> Result<Claim, StoreError> {
        let expired_before = now - self.ttl;
        let kept = match &self.db {
            Database::Postgres(pool) => {
                let row = sqlx::query(
                    "SELECT request_hash, status_code::int4 AS status_code, content_type,
                            response_body, created_at < $2 AS expired, created_at < $3 AS overdue
                       FROM idempotency_keys WHERE key = $1",
                )
                .bind(key)
                .bind(expired_before)
                .bind(now - ANSWER_GRACE)
                .fetch_optional(pool)
                .await?;
                row.map(|r| kept_row(&r)).transpose()?
            }
            Database::Sqlite(pool) => {
                let row = sqlx::query(
                    "SELECT request_hash, status_code, content_type, response_body,
                            created_at < ? AS expired, created_at < ? AS overdue
                       FROM idempotency_keys WHERE key = ?",
                )
                .bind(super::millis(expired_before))
                .bind(super::millis(now - ANSWER_GRACE))
                .bind(key)
                .fetch_optional(pool)
                .await?;
                row.map(|r| kept_row(&r)).transpose()?
            }
        };
        let Some(kept) = kept else {
            return Ok(Claim::Free);
        };
        if kept.expired {
            self.forget_expired(key, expired_before).await?;
            return Ok(Claim::Free);
        }
        Ok(if kept.request_hash != request_hash {
            Claim::Mismatch
        } else if let Some(status) = kept.status {
            Claim::Replay {
                status: u16::try_from(status).unwrap_or(500),
                content_type: kept.content_type,
                body: kept.body.unwrap_or_default(),
            }
        } else if kept.overdue {
            Claim::Lost
        } else {
            Claim::InFlight
        })
    }

    /// Keeps the answer for retries, and lets the key go once it is kept.
    ///
    /// With a claim that committed with the command's events, this returns at once and
    /// the answer follows in the next group commit (the module's doc says why). With
    /// nothing claimed (a refusal, a route outside the aggregates), the key and answer
    /// are recorded before this returns: the retry of a request that appended nothing
    /// runs again unless it finds them.
    pub async fn keep(
        &self,
        held: Held,
        claim: &KeyClaim,
        answer: Answer,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        if !claim.taken() {
            let record = KeyWrite::Record {
                key: claim.key.clone(),
                request_hash: claim.request_hash.clone(),
                answer,
                at: claim.at,
            };
            let kept = self
                .writer
                .append_with(Vec::new(), vec![record], Vec::new(), None)
                .await;
            drop(held);
            return Ok(kept?);
        }
        let write = KeyWrite::Answer {
            key: claim.key.clone(),
            answer,
            at: now,
        };
        let answering = held.answering();
        let writer = self.writer.clone();
        self.keeping.spawn(async move {
            if let Err(e) = writer
                .append_with(Vec::new(), vec![write], Vec::new(), None)
                .await
            {
                // The claim stays in flight until it expires, as after a crash.
                tracing::error!(error = %e, "could not keep the response of an idempotent request");
            }
            drop(answering);
        });
        Ok(())
    }

    async fn forget_expired(
        &self,
        key: &str,
        expired_before: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        match &self.db {
            Database::Postgres(pool) => {
                sqlx::query("DELETE FROM idempotency_keys WHERE key = $1 AND created_at < $2")
                    .bind(key)
                    .bind(expired_before)
                    .execute(pool)
                    .await?;
            }
            Database::Sqlite(pool) => {
                sqlx::query("DELETE FROM idempotency_keys WHERE key = ? AND created_at < ?")
                    .bind(key)
                    .bind(super::millis(expired_before))
                    .execute(pool)
                    .await?;
            }
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

struct Kept {
    request_hash: String,
    status: Option<i32>,
    content_type: Option<String>,
    body: Option<Vec<u8>>,
    expired: bool,
    /// Claimed longer ago than [`ANSWER_GRACE`].
    overdue: bool,
}

fn kept_row<R: Row>(row: &R) -> Result<Kept, sqlx::Error>
where
    for<'r> &'r str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i32>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<Vec<u8>>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Kept {
        request_hash: row.try_get("request_hash")?,
        status: row.try_get("status_code")?,
        content_type: row.try_get("content_type")?,
        body: row.try_get("response_body")?,
        expired: row.try_get("expired")?,
        overdue: row.try_get("overdue")?,
    })
}
