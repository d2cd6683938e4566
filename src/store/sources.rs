//! Storefront sources and their inbox, on both backends (the same SQL; times are Unix
//! milliseconds).
//!
//! A source's signing secrets are sealed at rest ([`SEALED_COLUMNS`], `store::sealed`)
//! and opened only to verify a delivery: they never leave this module in a form a
//! reader could print. The inbox keeps every verified delivery as received, before it
//! is acknowledged; a delivery is taken off it only by an operator (a failed one).
//! Nothing here decides whether a delivery is valid or what it means: the API verifies,
//! and the applier parses and applies.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::domain::values::SourceName;
use crate::store::sealed::{is_sealed, KeyRing, SealedColumn};
use crate::store::views::{query, Param, Tx};
use crate::store::{from_millis, millis, Database, StoreError};
pub use crate::storefront::Platform;

/// The columns that hold storefront secrets, sealed.
pub const SEALED_COLUMNS: &[SealedColumn] = &[SECRET, PREVIOUS_SECRET];

const SECRET: SealedColumn = SealedColumn {
    table: "sources",
    id: "name",
    column: "secret",
};

const PREVIOUS_SECRET: SealedColumn = SealedColumn {
    table: "sources",
    id: "name",
    column: "previous_secret",
};

/// A shared signing secret. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct SourceSecret(String);

impl std::fmt::Debug for SourceSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SourceSecret(…)")
    }
}

impl SourceSecret {
    pub fn new(raw: String) -> SourceSecret {
        SourceSecret(raw)
    }

    /// The HMAC key: the secret's bytes, as both platforms use it.
    pub fn key(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

#[derive(Debug, Clone)]
pub struct Source {
    pub name: SourceName,
    pub platform: Platform,
    /// The only shop domain or site URL whose deliveries are taken, normalised.
    pub shop: Option<String>,
    pub secret: SourceSecret,
    /// After a rotation: the old secret, which still verifies until the time given.
    pub previous_secret: Option<(SourceSecret, DateTime<Utc>)>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Source {
    /// The secrets a delivery may be signed with at `now`: the current one, and the
    /// previous one during its overlap.
    pub fn verifying_secrets(&self, now: DateTime<Utc>) -> impl Iterator<Item = &SourceSecret> {
        let previous = self
            .previous_secret
            .as_ref()
            .filter(|(_, until)| now < *until)
            .map(|(secret, _)| secret);
        std::iter::once(&self.secret).chain(previous)
    }
}

#[derive(Deserialize)]
struct SourceRow {
    name: String,
    platform: String,
    shop: Option<String>,
    secret: String,
    previous_secret: Option<String>,
    previous_secret_until: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

const SOURCE_COLUMNS: &[&str] = &[
    "name",
    "platform",
    "shop",
    "secret",
    "previous_secret",
    "previous_secret_until",
    "created_at",
    "updated_at",
];

fn open(
    keys: &KeyRing,
    column: &SealedColumn,
    name: &str,
    stored: &str,
) -> Result<SourceSecret, StoreError> {
    if !is_sealed(stored) {
        // Legacy plain text is never written here; a row edited by hand is taken as
        // it is, and sealed by the next `secrets reseal`.
        return Ok(SourceSecret(stored.to_owned()));
    }
    let place = column.place(name);
    keys.open(stored, &place)
        .map(SourceSecret)
        .map_err(|e| StoreError::Corrupt(format!("{place} does not open: {e}")))
}

impl SourceRow {
    fn parse(self, keys: &KeyRing) -> Result<Source, StoreError> {
        let corrupt =
            |what: &str| StoreError::Corrupt(format!("sources.{what} of `{}`", self.name));
        let previous = match (&self.previous_secret, self.previous_secret_until) {
            (Some(stored), Some(until)) => Some((
                open(keys, &PREVIOUS_SECRET, &self.name, stored)?,
                from_millis(until),
            )),
            _ => None,
        };
        Ok(Source {
            name: SourceName::parse(&self.name).map_err(|_| corrupt("name"))?,
            platform: Platform::parse(&self.platform).ok_or_else(|| corrupt("platform"))?,
            shop: self.shop.clone(),
            secret: open(keys, &SECRET, &self.name, &self.secret)?,
            previous_secret: previous,
            created_at: from_millis(self.created_at),
            updated_at: from_millis(self.updated_at),
        })
    }
}

fn seal(keys: &KeyRing, column: &SealedColumn, name: &SourceName, secret: &SourceSecret) -> String {
    keys.seal(&secret.0, &column.place(name.as_str()))
}

/// Adds a source; `false` when the name is taken.
pub async fn insert(db: &Database, keys: &KeyRing, source: &Source) -> Result<bool, StoreError> {
    let mut tx = Tx::begin(db).await?;
    let added = tx
        .execute(
            "INSERT INTO sources (name, platform, shop, secret, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (name) DO NOTHING",
            &[
                Param::Text(source.name.as_str().to_owned()),
                Param::Text(source.platform.as_str().to_owned()),
                Param::OptText(source.shop.clone()),
                Param::Text(seal(keys, &SECRET, &source.name, &source.secret)),
                Param::Int(millis(source.created_at)),
            ],
        )
        .await?;
    tx.commit().await?;
    Ok(added == 1)
}

/// Saves a rotation: the new secret, and the old one with the end of its overlap.
pub async fn save_secrets(
    db: &Database,
    keys: &KeyRing,
    source: &Source,
) -> Result<(), StoreError> {
    let previous = source.previous_secret.as_ref();
    let mut tx = Tx::begin(db).await?;
    tx.execute(
        "UPDATE sources SET secret = $2, previous_secret = $3, previous_secret_until = $4,
                updated_at = $5
          WHERE name = $1",
        &[
            Param::Text(source.name.as_str().to_owned()),
            Param::Text(seal(keys, &SECRET, &source.name, &source.secret)),
            Param::OptText(previous.map(|(s, _)| seal(keys, &PREVIOUS_SECRET, &source.name, s))),
            Param::OptInt(previous.map(|(_, until)| millis(*until))),
            Param::Int(millis(source.updated_at)),
        ],
    )
    .await?;
    tx.commit().await
}

pub async fn load(
    db: &Database,
    keys: &KeyRing,
    name: &SourceName,
) -> Result<Option<Source>, StoreError> {
    let rows: Vec<SourceRow> = query(
        db,
        "SELECT * FROM sources WHERE name = $1",
        SOURCE_COLUMNS,
        &[Param::Text(name.as_str().to_owned())],
    )
    .await?;
    rows.into_iter()
        .next()
        .map(|row| row.parse(keys))
        .transpose()
}

pub async fn list(db: &Database, keys: &KeyRing) -> Result<Vec<Source>, StoreError> {
    let rows: Vec<SourceRow> = query(
        db,
        "SELECT * FROM sources ORDER BY name",
        SOURCE_COLUMNS,
        &[],
    )
    .await?;
    rows.into_iter().map(|row| row.parse(keys)).collect()
}

/// Removes a source and its inbox; `false` when there was none.
pub async fn delete(db: &Database, name: &SourceName) -> Result<bool, StoreError> {
    let name = Param::Text(name.as_str().to_owned());
    let mut tx = Tx::begin(db).await?;
    tx.execute(
        "DELETE FROM source_inbox WHERE source = $1",
        std::slice::from_ref(&name),
    )
    .await?;
    let deleted = tx
        .execute("DELETE FROM sources WHERE name = $1", &[name])
        .await?;
    tx.commit().await?;
    Ok(deleted == 1)
}

/// Where a delivery stands in the inbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InboxState {
    /// Stored and acknowledged, not applied yet.
    Waiting,
    /// Its commands ran (or there were none to run).
    Applied,
    /// It could not be parsed, or the domain refused a command; kept with the reason.
    Failed,
}

impl InboxState {
    pub fn as_str(self) -> &'static str {
        match self {
            InboxState::Waiting => "waiting",
            InboxState::Applied => "applied",
            InboxState::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<InboxState> {
        match raw {
            "waiting" => Some(InboxState::Waiting),
            "applied" => Some(InboxState::Applied),
            "failed" => Some(InboxState::Failed),
            _ => None,
        }
    }
}

/// A verified delivery, as it arrived.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub source: SourceName,
    /// What makes a repeated delivery the same one (a webhook id, a body's hash).
    pub dedup_key: String,
    pub topic: String,
    /// A JSON object of the platform's headers.
    pub headers: String,
    pub body: String,
    pub received_at: DateTime<Utc>,
}

const RECEIVE: &str =
    "INSERT INTO source_inbox (source, dedup_key, topic, headers, body, received_at, state)
     VALUES ($1, $2, $3, $4, $5, $6, 'waiting')
     ON CONFLICT (source, dedup_key) DO NOTHING";

fn receive_params(arrival: &Arrival) -> [Param; 6] {
    [
        Param::Text(arrival.source.as_str().to_owned()),
        Param::Text(arrival.dedup_key.clone()),
        Param::Text(arrival.topic.clone()),
        Param::Text(arrival.headers.clone()),
        Param::Text(arrival.body.clone()),
        Param::Int(millis(arrival.received_at)),
    ]
}

/// Stores a delivery as `waiting`; `false` when the same one is already in the inbox
/// (it changes nothing then).
pub async fn receive(db: &Database, arrival: &Arrival) -> Result<bool, StoreError> {
    let mut tx = Tx::begin(db).await?;
    let stored = tx.execute(RECEIVE, &receive_params(arrival)).await?;
    tx.commit().await?;
    Ok(stored == 1)
}

type Receipt = tokio::sync::oneshot::Sender<Result<bool, String>>;

/// Stores webhooks' deliveries with group commit: every delivery that arrives while a
/// transaction commits goes into the next one, so a burst costs one commit (one fsync
/// on SQLite) per batch rather than one per delivery. Each is answered only once its
/// transaction has committed: an acknowledged delivery is durable.
#[derive(Clone)]
pub struct InboxWriter {
    sender: tokio::sync::mpsc::Sender<(Arrival, Receipt)>,
}

/// Deliveries per statement at most (six parameters each: far below SQLite's limit).
const BATCH_MAX: usize = 256;

impl InboxWriter {
    pub fn start(db: Database) -> InboxWriter {
        let (sender, mut queue) = tokio::sync::mpsc::channel::<(Arrival, Receipt)>(4 * BATCH_MAX);
        let sqlite = matches!(db, Database::Sqlite(_));
        let writer = async move {
            let mut batch = Vec::with_capacity(BATCH_MAX);
            while queue.recv_many(&mut batch, BATCH_MAX).await > 0 {
                let outcome = store_batch(&db, &batch).await;
                for (i, (_, receipt)) in batch.drain(..).enumerate() {
                    let answer = match &outcome {
                        Ok(stored) => Ok(stored[i]),
                        Err(e) => Err(e.to_string()),
                    };
                    let _ = receipt.send(answer);
                }
            }
        };
        if sqlite {
            // It holds SQLite's write lock for each batch: on the writers' thread, beside
            // the event writer and the live views (`store::spawn_sqlite_writer`).
            drop(crate::store::spawn_sqlite_writer(|_| writer));
        } else {
            drop(tokio::spawn(writer));
        }
        InboxWriter { sender }
    }

    /// Stores a delivery as `waiting`; `false` when the same one is already in the
    /// inbox.
    pub async fn receive(&self, arrival: Arrival) -> Result<bool, StoreError> {
        let (receipt, answer) = tokio::sync::oneshot::channel();
        let gone = || StoreError::Corrupt("the inbox writer has stopped".to_owned());
        self.sender
            .send((arrival, receipt))
            .await
            .map_err(|_| gone())?;
        answer
            .await
            .map_err(|_| gone())?
            .map_err(|e| StoreError::Corrupt(format!("storing deliveries: {e}")))
    }
}

/// One statement for the batch; whether each delivery was new. A repeat within the
/// batch is a repeat, as across batches: only the first of a key is new.
async fn store_batch(db: &Database, batch: &[(Arrival, Receipt)]) -> Result<Vec<bool>, StoreError> {
    use crate::store::views::nul;
    let arrivals: Vec<&Arrival> = batch.iter().map(|(a, _)| a).collect();
    let mut tx = Tx::begin(db).await?;
    let inserted: Vec<(String, String)> = match &mut tx {
        Tx::Postgres(tx) => {
            let text = |f: fn(&Arrival) -> &str| -> Vec<String> {
                arrivals
                    .iter()
                    .map(|a| nul::text(f(a)).into_owned())
                    .collect()
            };
            sqlx::query_as(
                "INSERT INTO source_inbox (source, dedup_key, topic, headers, body, received_at, state)
                 SELECT s, k, t, h, b, r, 'waiting'
                   FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int8[])
                        AS x(s, k, t, h, b, r)
                 ON CONFLICT (source, dedup_key) DO NOTHING
                 RETURNING source, dedup_key",
            )
            .bind(text(|a| a.source.as_str()))
            .bind(text(|a| &a.dedup_key))
            .bind(text(|a| &a.topic))
            .bind(text(|a| &a.headers))
            .bind(text(|a| &a.body))
            .bind(arrivals.iter().map(|a| millis(a.received_at)).collect::<Vec<i64>>())
            .fetch_all(&mut **tx)
            .await?
        }
        Tx::Sqlite(tx, _) => {
            let rows = vec!["(?, ?, ?, ?, ?, ?, 'waiting')"; arrivals.len()].join(", ");
            let sql = format!(
                "INSERT INTO source_inbox (source, dedup_key, topic, headers, body, received_at, state)
                 VALUES {rows}
                 ON CONFLICT (source, dedup_key) DO NOTHING
                 RETURNING source, dedup_key"
            );
            let mut query = sqlx::query_as(&sql);
            for a in &arrivals {
                query = query
                    .bind(a.source.as_str())
                    .bind(a.dedup_key.as_str())
                    .bind(a.topic.as_str())
                    .bind(a.headers.as_str())
                    .bind(a.body.as_str())
                    .bind(millis(a.received_at));
            }
            query.fetch_all(&mut **tx).await?
        }
    };
    tx.commit().await?;
    let mut new: std::collections::HashSet<(String, String)> = inserted.into_iter().collect();
    Ok(arrivals
        .iter()
        .map(|a| new.remove(&(a.source.as_str().to_owned(), a.dedup_key.clone())))
        .collect())
}

/// One delivery in the inbox.
#[derive(Debug, Clone, Deserialize)]
pub struct InboxRow {
    pub id: i64,
    pub source: String,
    pub dedup_key: String,
    pub topic: String,
    pub headers: String,
    pub body: String,
    pub received_at: i64,
    pub state: String,
    pub order_id: Option<String>,
    pub attempts: i64,
    pub commands: Option<i64>,
    pub error_code: Option<String>,
    pub error: Option<String>,
    pub applied_at: Option<i64>,
}

const INBOX_COLUMNS: &[&str] = &[
    "id",
    "source",
    "dedup_key",
    "topic",
    "headers",
    "body",
    "received_at",
    "state",
    "order_id",
    "attempts",
    "commands",
    "error_code",
    "error",
    "applied_at",
];

/// The oldest waiting deliveries of every source, in arrival order.
pub async fn waiting(db: &Database, limit: i64) -> Result<Vec<InboxRow>, StoreError> {
    query(
        db,
        "SELECT * FROM source_inbox WHERE state = 'waiting' ORDER BY id LIMIT $1",
        INBOX_COLUMNS,
        &[Param::Int(limit)],
    )
    .await
}

/// One delivery, if it is this source's.
pub async fn find(
    db: &Database,
    source: &SourceName,
    id: i64,
) -> Result<Option<InboxRow>, StoreError> {
    let rows: Vec<InboxRow> = query(
        db,
        "SELECT * FROM source_inbox WHERE source = $1 AND id = $2",
        INBOX_COLUMNS,
        &[Param::Text(source.as_str().to_owned()), Param::Int(id)],
    )
    .await?;
    Ok(rows.into_iter().next())
}

/// The delivery stored under `dedup_key`.
pub async fn find_by_key(
    db: &Database,
    source: &SourceName,
    dedup_key: &str,
) -> Result<Option<InboxRow>, StoreError> {
    let rows: Vec<InboxRow> = query(
        db,
        "SELECT * FROM source_inbox WHERE source = $1 AND dedup_key = $2",
        INBOX_COLUMNS,
        &[
            Param::Text(source.as_str().to_owned()),
            Param::Text(dedup_key.to_owned()),
        ],
    )
    .await?;
    Ok(rows.into_iter().next())
}

/// What an erased delivery's body becomes: the webhook as received held the customer's
/// personal data in the clear.
pub const ERASED_BODY: &str = r#"{"erased":true}"#;

/// Scrubs the bodies of the deliveries about `customer_id`'s orders: after the
/// customer's erasure (`process::erasure`). The orders are found in the log (read, not
/// under the write lock); a delivery not yet applied is not tied to an order yet, and is
/// left to be applied.
pub async fn scrub_customer(db: &Database, customer_id: &str) -> Result<u64, StoreError> {
    #[derive(Deserialize)]
    struct Id {
        aggregate_id: String,
    }
    let sql = match db {
        Database::Postgres(_) => {
            "SELECT aggregate_id FROM events
              WHERE aggregate_type = 'order' AND event_type = 'order.created'
                AND payload->>'customer_id' = $1"
        }
        Database::Sqlite(_) => {
            "SELECT aggregate_id FROM events
              WHERE aggregate_type = 'order' AND event_type = 'order.created'
                AND json_extract(payload, '$.customer_id') = $1"
        }
    };
    let orders: Vec<Id> = query(
        db,
        sql,
        &["aggregate_id"],
        &[Param::Text(customer_id.into())],
    )
    .await?;
    if orders.is_empty() {
        return Ok(0);
    }
    let ids = orders.into_iter().map(|o| o.aggregate_id).collect();
    let sql = match db {
        Database::Postgres(_) => {
            "UPDATE source_inbox SET body = $1 WHERE order_id = ANY($2) AND body <> $1"
        }
        Database::Sqlite(_) => {
            "UPDATE source_inbox SET body = $1
              WHERE order_id IN (SELECT value FROM json_each($2)) AND body <> $1"
        }
    };
    let mut tx = Tx::begin(db).await?;
    let scrubbed = tx
        .execute(
            sql,
            &[Param::Text(ERASED_BODY.into()), Param::TextList(ids)],
        )
        .await?;
    tx.commit().await?;
    Ok(scrubbed)
}

/// A source's deliveries, newest first, optionally in one state, before `before`.
pub async fn list_inbox(
    db: &Database,
    source: &SourceName,
    state: Option<InboxState>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<InboxRow>, StoreError> {
    // Two texts rather than `($2 = '' OR state = $2)`, which a generic plan could not
    // serve from the (source, state, id) index.
    let mut params = vec![
        Param::Text(source.as_str().to_owned()),
        Param::Int(before.unwrap_or(i64::MAX)),
        Param::Int(limit),
    ];
    let sql = match state {
        None => {
            "SELECT * FROM source_inbox WHERE source = $1 AND id < $2
              ORDER BY id DESC LIMIT $3"
        }
        Some(state) => {
            params.push(Param::Text(state.as_str().to_owned()));
            "SELECT * FROM source_inbox WHERE source = $1 AND state = $4 AND id < $2
              ORDER BY id DESC LIMIT $3"
        }
    };
    query(db, sql, INBOX_COLUMNS, &params).await
}

/// How many deliveries of one source wait or failed: the dashboard's inbox.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
pub struct InboxDepth {
    pub source: String,
    pub state: String,
    pub deliveries: i64,
}

/// The deliveries still waiting or failed, counted by source; applied ones (the many)
/// are not read, the (state, id) index finds the others.
pub async fn inbox_depths(db: &Database) -> Result<Vec<InboxDepth>, StoreError> {
    query(
        db,
        "SELECT source, state, count(*) AS deliveries FROM source_inbox
          WHERE state IN ('waiting', 'failed')
          GROUP BY source, state ORDER BY source, state",
        &["source", "state", "deliveries"],
        &[],
    )
    .await
}

/// How applying a delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// `order_id` is `None` for a topic that moves no order.
    Applied {
        order_id: Option<String>,
        commands: u32,
    },
    Failed {
        order_id: Option<String>,
        code: String,
        error: String,
        /// The domain refused a command (rather than the body being unreadable): it
        /// may pass once its order has changed.
        refused: bool,
    },
}

/// Records how waiting deliveries ended, in one transaction. A delivery no longer
/// waiting (settled by another node meanwhile, or deleted) is left as it is.
///
/// A delivery that changed its order also puts back in line, in the same transaction,
/// the deliveries of that order whose commands the domain refused: Shopify sends topics
/// in no order, so a refund or fulfilment may have overtaken the order's creation or
/// its payment, and the change may be what it lacked. Returns how many. It cannot loop:
/// only a change puts them back, and a refused command changes nothing.
pub async fn settle(
    db: &Database,
    settled: &[(i64, Settled)],
    at: DateTime<Utc>,
) -> Result<u64, StoreError> {
    if settled.is_empty() {
        return Ok(0);
    }
    let mut tx = Tx::begin(db).await?;
    let mut requeued = 0;
    for (id, settled) in settled {
        let (state, order_id, commands, code, error, refused) = match settled {
            Settled::Applied { order_id, commands } => (
                InboxState::Applied,
                order_id.clone(),
                Some(i64::from(*commands)),
                None,
                None,
                false,
            ),
            Settled::Failed {
                order_id,
                code,
                error,
                refused,
            } => (
                InboxState::Failed,
                order_id.clone(),
                None,
                Some(code.clone()),
                Some(error.clone()),
                *refused,
            ),
        };
        tx.execute(
            "UPDATE source_inbox SET state = $2, order_id = $3, commands = $4, error_code = $5,
                    error = $6, applied_at = $7, refused = $8, attempts = attempts + 1
              WHERE id = $1 AND state = 'waiting'",
            &[
                Param::Int(*id),
                Param::Text(state.as_str().to_owned()),
                Param::OptText(order_id),
                Param::OptInt(commands),
                Param::OptText(code),
                Param::OptText(error),
                Param::Int(millis(at)),
                Param::Int(i64::from(refused)),
            ],
        )
        .await?;
        if let Settled::Applied {
            order_id: Some(order_id),
            commands: 1..,
        } = settled
        {
            requeued += tx
                .execute(
                    "UPDATE source_inbox SET state = 'waiting', error_code = NULL, error = NULL,
                            applied_at = NULL
                      WHERE order_id = $1 AND state = 'failed' AND refused = 1
                        AND source = (SELECT source FROM source_inbox WHERE id = $2)",
                    &[Param::Text(order_id.clone()), Param::Int(*id)],
                )
                .await?;
        }
    }
    tx.commit().await?;
    Ok(requeued)
}

/// Puts a failed delivery back in line; `false` when it is not a failed one of this
/// source's.
pub async fn retry(db: &Database, source: &SourceName, id: i64) -> Result<bool, StoreError> {
    let mut tx = Tx::begin(db).await?;
    let moved = tx
        .execute(
            "UPDATE source_inbox SET state = 'waiting', error_code = NULL, error = NULL,
                    applied_at = NULL
              WHERE source = $1 AND id = $2 AND state = 'failed'",
            &[Param::Text(source.as_str().to_owned()), Param::Int(id)],
        )
        .await?;
    tx.commit().await?;
    Ok(moved == 1)
}

/// Removes a failed delivery for good; `false` when it is not a failed one of this
/// source's. Waiting and applied deliveries stay: they are what makes a repeat a no-op.
pub async fn discard(db: &Database, source: &SourceName, id: i64) -> Result<bool, StoreError> {
    let mut tx = Tx::begin(db).await?;
    let deleted = tx
        .execute(
            "DELETE FROM source_inbox WHERE source = $1 AND id = $2 AND state = 'failed'",
            &[Param::Text(source.as_str().to_owned()), Param::Int(id)],
        )
        .await?;
    tx.commit().await?;
    Ok(deleted == 1)
}

/// How long a source read is trusted from memory. Every webhook needs its source, and
/// a read plus an AEAD open per delivery is most of the cost of taking one; a rotation
/// or deletion through this server takes effect at once, through another within this.
const CACHE_FOR: std::time::Duration = std::time::Duration::from_secs(5);

type Cached = (std::time::Instant, Option<std::sync::Arc<Source>>);

/// Sources as the webhooks read them: from memory for [`CACHE_FOR`].
#[derive(Clone)]
pub struct SourceCache {
    db: Database,
    keys: std::sync::Arc<KeyRing>,
    cached: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<SourceName, Cached>>>,
}

impl SourceCache {
    pub fn new(db: Database, keys: std::sync::Arc<KeyRing>) -> SourceCache {
        SourceCache {
            db,
            keys,
            cached: Default::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<SourceName, Cached>> {
        self.cached
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub async fn get(
        &self,
        name: &SourceName,
    ) -> Result<Option<std::sync::Arc<Source>>, StoreError> {
        if let Some((at, source)) = self.lock().get(name) {
            if at.elapsed() < CACHE_FOR {
                return Ok(source.clone());
            }
        }
        let source = load(&self.db, &self.keys, name)
            .await?
            .map(std::sync::Arc::new);
        let mut cached = self.lock();
        // Names are few (one per shop); a sweep keeps unknown names sent by anyone
        // from growing it without bound.
        if cached.len() > 10_000 {
            cached.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
        }
        cached.insert(name.clone(), (std::time::Instant::now(), source.clone()));
        Ok(source)
    }

    /// Forgets a source changed or deleted through this server.
    pub fn forget(&self, name: &SourceName) {
        self.lock().remove(name);
    }
}
