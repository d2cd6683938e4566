//! An aggregate as it was at a point in the log: its stored events up to a global
//! position or a time, folded into its state. Time travel for support and audits.
//!
//! Read-only, and never cached: the command path's state is always the latest, and this
//! never touches it. Payloads are decoded at their current version, as every reader of
//! the log reads them (`domain::upcast`).

use chrono::{DateTime, Utc};

use super::log;
use super::{Database, StoreError};

/// Where in the log to stop: the events at or before it are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// A global position.
    Position(i64),
    /// The time an event was recorded.
    Time(DateTime<Utc>),
}

/// Replays aggregate `A` with id `aggregate_id` up to `as_of`. One aggregate's positions
/// and times grow with its sequence, so the events kept are a prefix. No event before
/// `as_of` gives the default state (for an order: not placed).
pub async fn state_as_of<A: cqrs_es::Aggregate>(
    db: &Database,
    aggregate_id: &str,
    as_of: AsOf,
) -> Result<A, StoreError> {
    let events = log::aggregate_events(db, A::TYPE, aggregate_id).await?;
    let mut state = A::default();
    for event in events {
        let included = match as_of {
            AsOf::Position(p) => event.cursor.position <= p,
            AsOf::Time(t) => event.recorded_at <= t,
        };
        if !included {
            break;
        }
        let decoded: A::Event = serde_json::from_str(&event.payload).map_err(|e| {
            StoreError::Corrupt(format!(
                "{} event {}#{} does not decode: {e}",
                A::TYPE,
                event.aggregate_id,
                event.sequence
            ))
        })?;
        state.apply(decoded);
    }
    Ok(state)
}
