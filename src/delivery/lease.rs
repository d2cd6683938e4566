//! Who delivers each subscription, told to every server: the holder of a
//! subscription's lease records its name, since when it holds it, its breaker's state
//! and its in-flight window (`delivery_leases`), when it takes the lease, whenever the
//! breaker moves and every [`REPORT_EVERY`]. Any server answers a status from that record; one that is
//! older than [`STALE_AFTER`] is from a server that died, and nobody is said to hold the
//! subscription rather than guessing that all is well.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::breaker::BreakerState;
use super::store::{from_millis, millis};
use crate::store::views::{query, Param, Tx};
use crate::store::{Database, StoreError};

/// How often the holder reports, at the least.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);
/// A report older than this is not believed: three reports were missed.
pub const STALE_AFTER: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    pub node: String,
    pub since: DateTime<Utc>,
    pub breaker: BreakerState,
    pub window: u32,
    pub reported_at: DateTime<Utc>,
}

pub async fn report(db: &Database, subscription: Uuid, lease: &Lease) -> Result<(), StoreError> {
    let mut tx = Tx::begin(db).await?;
    tx.execute(
        "INSERT INTO delivery_leases (subscription_id, node, since, breaker, window_size, reported_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (subscription_id) DO UPDATE
            SET node = excluded.node, since = excluded.since, breaker = excluded.breaker,
                window_size = excluded.window_size, reported_at = excluded.reported_at",
        &[
            Param::Text(subscription.to_string()),
            Param::Text(lease.node.clone()),
            Param::Int(millis(lease.since)),
            Param::Text(lease.breaker.as_str().to_owned()),
            Param::Int(i64::from(lease.window)),
            Param::Int(millis(lease.reported_at)),
        ],
    )
    .await?;
    tx.commit().await
}

/// Forgets this node's record, when it lets the lease go.
pub async fn release(db: &Database, subscription: Uuid, node: &str) -> Result<(), StoreError> {
    let mut tx = Tx::begin(db).await?;
    tx.execute(
        "DELETE FROM delivery_leases WHERE subscription_id = $1 AND node = $2",
        &[
            Param::Text(subscription.to_string()),
            Param::Text(node.to_owned()),
        ],
    )
    .await?;
    tx.commit().await
}

/// The subscription's holder as last reported, unless that report is stale.
pub async fn current(
    db: &Database,
    subscription: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<Lease>, StoreError> {
    #[derive(Deserialize)]
    struct Row {
        node: String,
        since: i64,
        breaker: String,
        window_size: i64,
        reported_at: i64,
    }
    let rows: Vec<Row> = query(
        db,
        "SELECT node, since, breaker, window_size, reported_at
           FROM delivery_leases WHERE subscription_id = $1",
        &["node", "since", "breaker", "window_size", "reported_at"],
        &[Param::Text(subscription.to_string())],
    )
    .await?;
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    let reported_at = from_millis(row.reported_at);
    let stale = now - reported_at > chrono::Duration::from_std(STALE_AFTER).unwrap_or_default();
    if stale {
        return Ok(None);
    }
    let breaker = BreakerState::parse(&row.breaker).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "delivery_leases.breaker of subscription {subscription}"
        ))
    })?;
    Ok(Some(Lease {
        node: row.node,
        since: from_millis(row.since),
        breaker,
        window: u32::try_from(row.window_size).unwrap_or(1),
        reported_at,
    }))
}
