//! The stored side of deliveries: subscriptions and their cursors, the per-subscription
//! queue of messages being retried (and dead letters), and the record of attempts.
//! The same SQL runs on both backends; times are Unix milliseconds. Signing secrets are
//! stored sealed ([`SEALED_COLUMNS`], `store::sealed`), never as plain text: they are
//! sealed on the way in and opened on the way out.

use std::collections::HashSet;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::message::Message;
use super::subscription::{EventFilter, Kind, Secret, State, Subscription, Unopened};
use crate::store::reader::Cursor;
use crate::store::sealed::{is_sealed, KeyRing, SealedColumn};
use crate::store::views::{query, Param, Tx};
use crate::store::{Database, StoreError};

pub use crate::store::{from_millis, millis};

/// The columns that hold signing secrets, sealed.
pub const SEALED_COLUMNS: &[SealedColumn] = &[SECRET, PREVIOUS_SECRET];

const SECRET: SealedColumn = SealedColumn {
    table: "subscriptions",
    id: "id",
    column: "secret",
};

const PREVIOUS_SECRET: SealedColumn = SealedColumn {
    table: "subscriptions",
    id: "id",
    column: "previous_secret",
};

/// Opens a stored secret. Legacy plain text (written before secrets were sealed, or by
/// an older server during an upgrade) is taken as it is; the next start seals it.
fn open(
    keys: &KeyRing,
    column: &SealedColumn,
    id: &str,
    stored: Option<&str>,
) -> Result<Option<Secret>, Unopened> {
    let Some(stored) = stored else {
        return Ok(None);
    };
    if !is_sealed(stored) {
        return Ok(Some(Secret::from_stored(stored.to_owned())));
    }
    let place = column.place(id);
    keys.open(stored, &place)
        .map(|plain| Some(Secret::from_stored(plain)))
        .map_err(|error| Unopened { place, error })
}

fn seal(keys: &KeyRing, column: &SealedColumn, id: Uuid, secret: Option<&Secret>) -> Param {
    Param::OptText(secret.map(|s| keys.seal(s.as_str(), &column.place(&id.to_string()))))
}

#[derive(Deserialize)]
struct SubscriptionRow {
    id: String,
    kind: String,
    target: String,
    event_types: String,
    description: Option<String>,
    max_in_flight: i64,
    state: String,
    state_reason: Option<String>,
    secret: Option<String>,
    previous_secret: Option<String>,
    previous_secret_until: Option<i64>,
    cursor_tx: i64,
    cursor_position: i64,
    created_at: i64,
    updated_at: i64,
}

const SUBSCRIPTION_COLUMNS: &[&str] = &[
    "id",
    "kind",
    "target",
    "event_types",
    "description",
    "max_in_flight",
    "state",
    "state_reason",
    "secret",
    "previous_secret",
    "previous_secret_until",
    "cursor_tx",
    "cursor_position",
    "created_at",
    "updated_at",
];

impl SubscriptionRow {
    /// A secret that does not open is not an error here: the subscription is still
    /// listed and shown, with `secret_error` saying why it is not delivered.
    fn parse(self, keys: &KeyRing) -> Result<Subscription, StoreError> {
        let corrupt = |what: &str| {
            StoreError::Corrupt(format!("subscriptions.{what} of subscription {}", self.id))
        };
        let patterns: Vec<String> =
            serde_json::from_str(&self.event_types).map_err(|_| corrupt("event_types"))?;
        let secrets = open(keys, &SECRET, &self.id, self.secret.as_deref()).and_then(|secret| {
            let previous = open(
                keys,
                &PREVIOUS_SECRET,
                &self.id,
                self.previous_secret.as_deref(),
            )?;
            Ok((secret, previous))
        });
        let (secret, previous, secret_error) = match secrets {
            Ok((secret, previous)) => (secret, previous, None),
            Err(unopened) => (None, None, Some(unopened)),
        };
        Ok(Subscription {
            id: Uuid::parse_str(&self.id).map_err(|_| corrupt("id"))?,
            kind: Kind::parse(&self.kind).ok_or_else(|| corrupt("kind"))?,
            target: self.target.clone(),
            event_types: EventFilter::parse(patterns).map_err(|_| corrupt("event_types"))?,
            description: self.description.clone(),
            max_in_flight: u32::try_from(self.max_in_flight)
                .map_err(|_| corrupt("max_in_flight"))?,
            state: State::parse(&self.state).ok_or_else(|| corrupt("state"))?,
            state_reason: self.state_reason.clone(),
            secret,
            previous_secret: previous
                .zip(self.previous_secret_until)
                .map(|(s, until)| (s, from_millis(until))),
            secret_error,
            cursor: Cursor {
                transaction_id: self.cursor_tx,
                position: self.cursor_position,
            },
            created_at: from_millis(self.created_at),
            updated_at: from_millis(self.updated_at),
        })
    }
}

fn settings_params(s: &Subscription) -> Vec<Param> {
    vec![
        Param::Text(s.id.to_string()),
        Param::Text(s.target.clone()),
        Param::Text(serde_json::to_string(s.event_types.patterns()).unwrap_or_default()),
        Param::OptText(s.description.clone()),
        Param::Int(i64::from(s.max_in_flight)),
        Param::Text(s.state.as_str().to_owned()),
        Param::OptText(s.state_reason.clone()),
        Param::Int(millis(s.updated_at)),
    ]
}

/// The secrets, sealed: `$1` the id, then `secret`, `previous_secret`, its expiry.
fn secret_params(keys: &KeyRing, s: &Subscription) -> Vec<Param> {
    vec![
        Param::Text(s.id.to_string()),
        seal(keys, &SECRET, s.id, s.secret.as_ref()),
        seal(
            keys,
            &PREVIOUS_SECRET,
            s.id,
            s.previous_secret.as_ref().map(|(s, _)| s),
        ),
        Param::OptInt(s.previous_secret.as_ref().map(|(_, until)| millis(*until))),
    ]
}

pub async fn insert(db: &Database, keys: &KeyRing, s: &Subscription) -> Result<(), StoreError> {
    let mut params = settings_params(s);
    params.extend(secret_params(keys, s).into_iter().skip(1));
    params.extend([
        Param::Text(s.kind.as_str().to_owned()),
        Param::Int(s.cursor.transaction_id),
        Param::Int(s.cursor.position),
        Param::Int(millis(s.created_at)),
    ]);
    let mut tx = Tx::begin(db).await?;
    tx.execute(
        "INSERT INTO subscriptions (id, target, event_types, description, max_in_flight, state,
                state_reason, updated_at, secret, previous_secret, previous_secret_until,
                kind, cursor_tx, cursor_position, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        &params,
    )
    .await?;
    tx.commit().await
}

/// Saves everything an operator can change but the secrets ([`save_secrets`]); the
/// cursor moves only through [`advance`] and [`rewind`]. Leaving the secrets alone
/// keeps a value this server cannot open as it is, and a value another process
/// re-sealed under a new key untouched.
pub async fn save_settings(db: &Database, s: &Subscription) -> Result<(), StoreError> {
    let mut tx = Tx::begin(db).await?;
    tx.execute(
        "UPDATE subscriptions SET target = $2, event_types = $3, description = $4,
                max_in_flight = $5, state = $6, state_reason = $7, updated_at = $8
          WHERE id = $1",
        &settings_params(s),
    )
    .await?;
    tx.commit().await
}

/// Saves the signing secrets (a rotation), sealed, with `updated_at`.
pub async fn save_secrets(
    db: &Database,
    keys: &KeyRing,
    s: &Subscription,
) -> Result<(), StoreError> {
    let mut params = secret_params(keys, s);
    params.push(Param::Int(millis(s.updated_at)));
    let mut tx = Tx::begin(db).await?;
    tx.execute(
        "UPDATE subscriptions SET secret = $2, previous_secret = $3, previous_secret_until = $4,
                updated_at = $5
          WHERE id = $1",
        &params,
    )
    .await?;
    tx.commit().await
}

pub async fn load(
    db: &Database,
    keys: &KeyRing,
    id: Uuid,
) -> Result<Option<Subscription>, StoreError> {
    let rows: Vec<SubscriptionRow> = query(
        db,
        "SELECT * FROM subscriptions WHERE id = $1",
        SUBSCRIPTION_COLUMNS,
        &[Param::Text(id.to_string())],
    )
    .await?;
    rows.into_iter()
        .next()
        .map(|row| row.parse(keys))
        .transpose()
}

pub async fn list(db: &Database, keys: &KeyRing) -> Result<Vec<Subscription>, StoreError> {
    let rows: Vec<SubscriptionRow> = query(
        db,
        "SELECT * FROM subscriptions ORDER BY created_at, id",
        SUBSCRIPTION_COLUMNS,
        &[],
    )
    .await?;
    rows.into_iter().map(|row| row.parse(keys)).collect()
}

pub async fn delete(db: &Database, id: Uuid) -> Result<bool, StoreError> {
    let id = Param::Text(id.to_string());
    let mut tx = Tx::begin(db).await?;
    tx.execute(
        "DELETE FROM delivery_attempts WHERE subscription_id = $1",
        std::slice::from_ref(&id),
    )
    .await?;
    tx.execute(
        "DELETE FROM delivery_queue WHERE subscription_id = $1",
        std::slice::from_ref(&id),
    )
    .await?;
    let deleted = tx
        .execute("DELETE FROM subscriptions WHERE id = $1", &[id])
        .await?;
    tx.commit().await?;
    Ok(deleted == 1)
}

/// Moves the cursor wherever an operator says; the worker notices that its own
/// compare-and-set fails, and reloads.
pub async fn rewind(db: &Database, id: Uuid, cursor: Cursor) -> Result<(), StoreError> {
    let mut tx = Tx::begin(db).await?;
    tx.execute(
        "UPDATE subscriptions SET cursor_tx = $2, cursor_position = $3, updated_at = $4
          WHERE id = $1",
        &[
            Param::Text(id.to_string()),
            Param::Int(cursor.transaction_id),
            Param::Int(cursor.position),
            Param::Int(millis(Utc::now())),
        ],
    )
    .await?;
    tx.commit().await
}

/// One attempt as recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    pub subscription_id: String,
    pub event_id: String,
    pub position: i64,
    pub attempted_at: i64,
    pub outcome: String,
    pub status: Option<i64>,
    pub latency_ms: i64,
    pub detail: Option<String>,
}

const ATTEMPT_COLUMNS: &[&str] = &[
    "subscription_id",
    "event_id",
    "position",
    "attempted_at",
    "outcome",
    "status",
    "latency_ms",
    "detail",
];

/// A message in a subscription's queue: waiting for its next attempt (or behind an
/// earlier message of its stream), or dead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedRow {
    pub subscription_id: String,
    pub event_id: String,
    pub stream: String,
    pub sequence: i64,
    pub position: i64,
    pub message: String,
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub queued_at: i64,
    pub dead_at: Option<i64>,
    pub last_error: Option<String>,
}

const QUEUE_COLUMNS: &[&str] = &[
    "subscription_id",
    "event_id",
    "stream",
    "sequence",
    "position",
    "message",
    "state",
    "attempts",
    "next_attempt_at",
    "queued_at",
    "dead_at",
    "last_error",
];

impl QueuedRow {
    pub fn new(
        subscription: Uuid,
        message: &Message,
        attempts: i64,
        next_attempt_at: i64,
        last_error: Option<String>,
    ) -> QueuedRow {
        QueuedRow {
            subscription_id: subscription.to_string(),
            event_id: message.event_id.to_string(),
            stream: message.stream.clone(),
            sequence: message.sequence,
            position: message.cursor.position,
            message: serde_json::to_string(message).unwrap_or_default(),
            state: "waiting".to_owned(),
            attempts,
            next_attempt_at,
            queued_at: millis(Utc::now()),
            dead_at: None,
            last_error,
        }
    }

    pub fn message(&self) -> Result<Message, StoreError> {
        serde_json::from_str(&self.message).map_err(|e| {
            StoreError::Corrupt(format!("delivery_queue.message of {}: {e}", self.event_id))
        })
    }
}

/// Inserts rows given as one JSON array, in one statement on either backend. Rows
/// already there are left alone (a rewind may queue an event twice).
async fn insert_rows<R: Serialize>(
    tx: &mut Tx,
    table: &str,
    columns: &[&str],
    rows: &[R],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_string(rows)
        .map_err(|e| StoreError::Corrupt(format!("encoding {table} rows: {e}")))?;
    // A receiver's answer may hold a NUL (kept in an attempt's detail), which
    // PostgreSQL's text cannot: written as U+FFFD, as views do.
    let json = crate::store::views::nul::json(json);
    let names = columns.join(", ");
    let sql = if tx.is_postgres() {
        format!(
            "INSERT INTO {table} ({names}) SELECT {names}
               FROM json_populate_recordset(NULL::{table}, $1::json)
             ON CONFLICT DO NOTHING"
        )
    } else {
        let values: Vec<String> = columns
            .iter()
            .map(|c| format!("json_extract(value, '$.{c}')"))
            .collect();
        // `WHERE true` lets SQLite's parser tell the upsert clause from a join.
        format!(
            "INSERT INTO {table} ({names}) SELECT {} FROM json_each($1) WHERE true
             ON CONFLICT DO NOTHING",
            values.join(", ")
        )
    };
    tx.execute(&sql, &[Param::Text(json)]).await.map(drop)
}

/// Records a batch read from the log: its attempts, the messages that go to the queue,
/// and the cursor moved from `from` to `to`, all in one transaction. `false` when the
/// cursor was no longer at `from` (an operator rewound it): nothing is saved.
pub async fn advance(
    db: &Database,
    id: Uuid,
    from: Cursor,
    to: Cursor,
    attempts: &[AttemptRecord],
    queued: &[QueuedRow],
) -> Result<bool, StoreError> {
    let mut tx = Tx::begin(db).await?;
    let moved = tx
        .execute(
            "UPDATE subscriptions SET cursor_tx = $2, cursor_position = $3
              WHERE id = $1 AND cursor_tx = $4 AND cursor_position = $5",
            &[
                Param::Text(id.to_string()),
                Param::Int(to.transaction_id),
                Param::Int(to.position),
                Param::Int(from.transaction_id),
                Param::Int(from.position),
            ],
        )
        .await?;
    if moved != 1 {
        return Ok(false);
    }
    insert_rows(&mut tx, "delivery_attempts", ATTEMPT_COLUMNS, attempts).await?;
    insert_rows(&mut tx, "delivery_queue", QUEUE_COLUMNS, queued).await?;
    tx.commit().await?;
    Ok(true)
}

/// The streams that have messages queued: their new events queue up behind them.
pub async fn queued_streams(db: &Database, id: Uuid) -> Result<HashSet<String>, StoreError> {
    #[derive(Deserialize)]
    struct Row {
        stream: String,
    }
    let rows: Vec<Row> = query(
        db,
        "SELECT DISTINCT stream FROM delivery_queue WHERE subscription_id = $1",
        &["stream"],
        &[Param::Text(id.to_string())],
    )
    .await?;
    Ok(rows.into_iter().map(|r| r.stream).collect())
}

/// The head of each stream (its earliest queued message): only heads are attempted.
const HEADS: &str = "FROM delivery_queue q
   WHERE q.subscription_id = $1 AND q.state = 'waiting'
     AND q.sequence = (SELECT min(h.sequence) FROM delivery_queue h
                        WHERE h.subscription_id = q.subscription_id AND h.stream = q.stream)";

pub async fn due_heads(
    db: &Database,
    id: Uuid,
    now: i64,
    limit: i64,
) -> Result<Vec<QueuedRow>, StoreError> {
    query(
        db,
        &format!(
            "SELECT q.* {HEADS} AND q.next_attempt_at <= $2 ORDER BY q.next_attempt_at LIMIT $3"
        ),
        QUEUE_COLUMNS,
        &[
            Param::Text(id.to_string()),
            Param::Int(now),
            Param::Int(limit),
        ],
    )
    .await
}

/// When the next head falls due, if any is waiting.
pub async fn next_due(db: &Database, id: Uuid) -> Result<Option<i64>, StoreError> {
    #[derive(Deserialize)]
    struct Row {
        next: Option<i64>,
    }
    let rows: Vec<Row> = query(
        db,
        &format!("SELECT min(q.next_attempt_at) AS next {HEADS}"),
        &["next"],
        &[Param::Text(id.to_string())],
    )
    .await?;
    Ok(rows.into_iter().next().and_then(|r| r.next))
}

/// What became of a queued message's attempt.
pub enum Settled {
    Delivered,
    /// Try again at this time.
    Retry {
        at: i64,
        error: String,
    },
    Dead {
        error: String,
    },
}

/// Records the attempts on queued messages and their results, in one transaction.
pub async fn settle(
    db: &Database,
    id: Uuid,
    attempts: &[AttemptRecord],
    results: &[(String, Settled)],
) -> Result<(), StoreError> {
    let mut tx = Tx::begin(db).await?;
    insert_rows(&mut tx, "delivery_attempts", ATTEMPT_COLUMNS, attempts).await?;
    let subscription = Param::Text(id.to_string());
    for (event_id, settled) in results {
        let event = Param::Text(event_id.clone());
        match settled {
            Settled::Delivered => {
                tx.execute(
                    "DELETE FROM delivery_queue WHERE subscription_id = $1 AND event_id = $2",
                    &[subscription.clone(), event],
                )
                .await?
            }
            Settled::Retry { at, error } => {
                tx.execute(
                    "UPDATE delivery_queue SET attempts = attempts + 1, next_attempt_at = $3,
                            last_error = $4
                      WHERE subscription_id = $1 AND event_id = $2",
                    &[
                        subscription.clone(),
                        event,
                        Param::Int(*at),
                        Param::Text(error.clone()),
                    ],
                )
                .await?
            }
            Settled::Dead { error } => {
                tx.execute(
                    "UPDATE delivery_queue SET attempts = attempts + 1, state = 'dead',
                            dead_at = $3, last_error = $4
                      WHERE subscription_id = $1 AND event_id = $2",
                    &[
                        subscription.clone(),
                        event,
                        Param::Int(millis(Utc::now())),
                        Param::Text(error.clone()),
                    ],
                )
                .await?
            }
        };
    }
    tx.commit().await
}

/// How many messages wait in the queue, and how many of them are dead.
pub async fn counts(db: &Database, id: Uuid) -> Result<(i64, i64), StoreError> {
    #[derive(Deserialize)]
    struct Row {
        waiting: Option<i64>,
        dead: Option<i64>,
    }
    let rows: Vec<Row> = query(
        db,
        "SELECT sum(CASE WHEN state = 'waiting' THEN 1 ELSE 0 END) AS waiting,
                sum(CASE WHEN state = 'dead' THEN 1 ELSE 0 END) AS dead
           FROM delivery_queue WHERE subscription_id = $1",
        &["waiting", "dead"],
        &[Param::Text(id.to_string())],
    )
    .await?;
    let row = rows.into_iter().next();
    Ok((
        row.as_ref().and_then(|r| r.waiting).unwrap_or(0),
        row.as_ref().and_then(|r| r.dead).unwrap_or(0),
    ))
}

/// Dead letters in log order, after `after_position` when paging.
pub async fn dead_letters(
    db: &Database,
    id: Uuid,
    after_position: i64,
    limit: i64,
) -> Result<Vec<QueuedRow>, StoreError> {
    query(
        db,
        "SELECT * FROM delivery_queue
          WHERE subscription_id = $1 AND state = 'dead' AND position > $2
          ORDER BY position LIMIT $3",
        QUEUE_COLUMNS,
        &[
            Param::Text(id.to_string()),
            Param::Int(after_position),
            Param::Int(limit),
        ],
    )
    .await
}

pub async fn dead_letter(
    db: &Database,
    id: Uuid,
    event_id: Uuid,
) -> Result<Option<QueuedRow>, StoreError> {
    let rows: Vec<QueuedRow> = query(
        db,
        "SELECT * FROM delivery_queue
          WHERE subscription_id = $1 AND event_id = $2 AND state = 'dead'",
        QUEUE_COLUMNS,
        &[
            Param::Text(id.to_string()),
            Param::Text(event_id.to_string()),
        ],
    )
    .await?;
    Ok(rows.into_iter().next())
}

/// Every recorded attempt to deliver one event to one subscription, oldest first.
pub async fn attempts_of(
    db: &Database,
    id: Uuid,
    event_id: Uuid,
) -> Result<Vec<AttemptRecord>, StoreError> {
    query(
        db,
        "SELECT * FROM delivery_attempts WHERE subscription_id = $1 AND event_id = $2
          ORDER BY attempted_at",
        ATTEMPT_COLUMNS,
        &[
            Param::Text(id.to_string()),
            Param::Text(event_id.to_string()),
        ],
    )
    .await
}

/// Where one event stands in a subscription's queue, when it is there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueState {
    pub event_id: String,
    /// `waiting` or `dead`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub dead_at: Option<i64>,
    pub last_error: Option<String>,
}

/// Every recorded attempt to deliver any of `event_ids` to one subscription (oldest
/// first), and those of them in its queue: one order's trail. Both are read through
/// the `(subscription_id, event_id)` keys.
pub async fn trail(
    db: &Database,
    id: Uuid,
    event_ids: &[Uuid],
) -> Result<(Vec<AttemptRecord>, Vec<QueueState>), StoreError> {
    let ids = Param::TextList(event_ids.iter().map(Uuid::to_string).collect());
    let among = match db {
        Database::Postgres(_) => "event_id = ANY($2)",
        Database::Sqlite(_) => "event_id IN (SELECT value FROM json_each($2))",
    };
    let subscription = Param::Text(id.to_string());
    let attempts = query(
        db,
        &format!(
            "SELECT * FROM delivery_attempts WHERE subscription_id = $1 AND {among}
              ORDER BY attempted_at"
        ),
        ATTEMPT_COLUMNS,
        &[subscription.clone(), ids.clone()],
    )
    .await?;
    let queued = query(
        db,
        &format!(
            "SELECT event_id, state, attempts, next_attempt_at, dead_at, last_error
               FROM delivery_queue WHERE subscription_id = $1 AND {among}"
        ),
        &[
            "event_id",
            "state",
            "attempts",
            "next_attempt_at",
            "dead_at",
            "last_error",
        ],
        &[subscription, ids],
    )
    .await?;
    Ok((attempts, queued))
}

/// Puts one dead letter (or all) back in the queue, due now. Returns how many.
pub async fn retry_dead(
    db: &Database,
    id: Uuid,
    event_id: Option<Uuid>,
) -> Result<u64, StoreError> {
    let mut tx = Tx::begin(db).await?;
    let n = tx
        .execute(
            "UPDATE delivery_queue SET state = 'waiting', attempts = 0, next_attempt_at = $2,
                    dead_at = NULL
              WHERE subscription_id = $1 AND state = 'dead'
                AND ($3 IS NULL OR event_id = $3)",
            &[
                Param::Text(id.to_string()),
                Param::Int(millis(Utc::now())),
                Param::OptText(event_id.map(|e| e.to_string())),
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// Drops one dead letter (or all); the messages queued behind them go on. Their
/// attempts stay on record.
pub async fn discard_dead(
    db: &Database,
    id: Uuid,
    event_id: Option<Uuid>,
) -> Result<u64, StoreError> {
    let mut tx = Tx::begin(db).await?;
    let n = tx
        .execute(
            "DELETE FROM delivery_queue
              WHERE subscription_id = $1 AND state = 'dead'
                AND ($2 IS NULL OR event_id = $2)",
            &[
                Param::Text(id.to_string()),
                Param::OptText(event_id.map(|e| e.to_string())),
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}

/// Forgets attempts older than `before`, except those of messages still queued: a dead
/// letter keeps its whole history.
pub async fn purge_attempts(db: &Database, before: i64) -> Result<u64, StoreError> {
    let mut tx = Tx::begin(db).await?;
    let n = tx
        .execute(
            "DELETE FROM delivery_attempts
              WHERE attempted_at < $1
                AND NOT EXISTS (SELECT 1 FROM delivery_queue q
                                 WHERE q.subscription_id = delivery_attempts.subscription_id
                                   AND q.event_id = delivery_attempts.event_id)",
            &[Param::Int(before)],
        )
        .await?;
    tx.commit().await?;
    Ok(n)
}
