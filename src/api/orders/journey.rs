//! `GET /v1/orders/{order_id}/journey`: what a support agent opens when a customer
//! calls. In time order, every event of the order and the inventory events of its
//! reservations; for each, the command that caused it (its trace id, actor,
//! correlation), which projections have applied it, and every attempt to deliver it to
//! each subscription that takes its type, with where it stands (delivered, waiting,
//! dead, not yet read).
//!
//! Read-only, and without payloads: `GET /v1/orders/{id}` is the order's state, and
//! `GET /v1/orders/{id}/events` (scope `events:read`) the events themselves.

use std::collections::{BTreeSet, HashMap};

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::api::error::ApiError;
use crate::api::extract::PathParams;
use crate::delivery::store::{from_millis, AttemptRecord, QueueState};
use crate::domain::order::{Order, OrderError};
use crate::domain::values::OrderId;
use crate::state::AppState;
use crate::store::log;
use crate::store::metadata::TraceParent;
use crate::store::reader::{Cursor, LogEntry};

/// How long before the order's first event its reservations may have been recorded:
/// placement reserves, then creates the order, within one request.
const RESERVED_BEFORE: Duration = Duration::minutes(5);

#[derive(Serialize, utoipa::ToSchema)]
pub(super) struct JourneyOut {
    order_id: OrderId,
    events: Vec<StepOut>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct StepOut {
    global_position: i64,
    event_id: Uuid,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    recorded_at: DateTime<Utc>,
    /// The command's W3C trace id: the same in every span and log line of it.
    trace_id: Option<String>,
    command_id: Option<String>,
    correlation_id: Option<String>,
    actor: Option<String>,
    projections: Vec<AppliedOut>,
    deliveries: Vec<DeliveryOut>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct AppliedOut {
    name: &'static str,
    applied: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = JourneyDelivery)]
struct DeliveryOut {
    subscription_id: Uuid,
    kind: &'static str,
    target: String,
    /// `delivered`, `waiting` (to be tried again), `dead` (a dead letter), `pending`
    /// (the subscription has not read it yet) or `passed` (read, with no attempt on
    /// record: the subscription started after it, or its attempts aged out).
    state: &'static str,
    attempts: Vec<AttemptOut>,
    /// For a message still queued.
    next_attempt_at: Option<DateTime<Utc>>,
    dead_at: Option<DateTime<Utc>>,
    last_error: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = JourneyAttempt)]
struct AttemptOut {
    attempted_at: DateTime<Utc>,
    outcome: String,
    status: Option<i64>,
    latency_ms: i64,
    detail: Option<String>,
}

/// The metadata keys a journey shows.
#[derive(Deserialize, Default)]
struct Stamp {
    traceparent: Option<String>,
    command_id: Option<String>,
    correlation_id: Option<String>,
    actor: Option<String>,
}

/// What of `order.created` names the SKUs reserved.
#[derive(Deserialize)]
struct Created {
    #[serde(default)]
    lines: Vec<Line>,
}

#[derive(Deserialize)]
struct Line {
    sku: String,
}

pub(super) async fn journey(
    State(state): State<AppState>,
    PathParams(order_id): PathParams<OrderId>,
) -> Result<Json<JourneyOut>, ApiError> {
    let order_type = <Order as cqrs_es::Aggregate>::TYPE;
    let mut entries = log::aggregate_events(&state.db, order_type, order_id.as_str()).await?;
    let Some(first) = entries.first() else {
        return Err(OrderError::NotFound.into());
    };
    let since = first.recorded_at - RESERVED_BEFORE;
    let skus: BTreeSet<String> = entries
        .iter()
        .filter(|e| e.event_type == "order.created")
        .filter_map(|e| serde_json::from_str::<Created>(&e.payload).ok())
        .flat_map(|c| c.lines.into_iter().map(|l| l.sku))
        .collect();
    if !skus.is_empty() {
        let skus: Vec<String> = skus.into_iter().collect();
        entries
            .extend(log::order_inventory_events(&state.db, order_id.as_str(), &skus, since).await?);
    }
    entries.sort_by_key(|e| (e.recorded_at, e.cursor));

    let projections = state.projections.status().await?;
    let subscriptions = state.deliveries.list().await?;
    let event_ids: Vec<Uuid> = entries.iter().map(|e| e.event_id).collect();
    let mut trails = Vec::with_capacity(subscriptions.len());
    for status in &subscriptions {
        let subscription = &status.subscription;
        if !entries
            .iter()
            .any(|e| subscription.event_types.matches(&e.event_type))
        {
            continue;
        }
        let (attempts, queued) = state.deliveries.trail(subscription.id, &event_ids).await?;
        trails.push((status, group(attempts), index(queued)));
    }

    let events = entries
        .iter()
        .map(|entry| {
            let stamp: Stamp = entry
                .metadata
                .as_deref()
                .and_then(|m| serde_json::from_str(m).ok())
                .unwrap_or_default();
            let deliveries = trails
                .iter()
                .filter(|(status, _, _)| status.subscription.event_types.matches(&entry.event_type))
                .map(|(status, attempts, queued)| {
                    let key = entry.event_id.to_string();
                    let attempts = attempts.get(&key).map(Vec::as_slice).unwrap_or(&[]);
                    delivery(status, entry, attempts, queued.get(&key))
                })
                .collect();
            StepOut {
                global_position: entry.cursor.position,
                event_id: entry.event_id,
                aggregate_type: entry.aggregate_type.clone(),
                aggregate_id: entry.aggregate_id.clone(),
                sequence: entry.sequence,
                event_type: entry.event_type.clone(),
                recorded_at: entry.recorded_at,
                trace_id: stamp.traceparent.as_deref().and_then(trace_id),
                command_id: stamp.command_id,
                correlation_id: stamp.correlation_id,
                actor: stamp.actor,
                projections: projections
                    .iter()
                    .map(|p| AppliedOut {
                        name: p.name,
                        applied: reached(p.checkpoint, entry.cursor),
                    })
                    .collect(),
                deliveries,
            }
        })
        .collect();
    Ok(Json(JourneyOut { order_id, events }))
}

fn group(attempts: Vec<AttemptRecord>) -> HashMap<String, Vec<AttemptRecord>> {
    let mut by_event: HashMap<String, Vec<AttemptRecord>> = HashMap::new();
    for attempt in attempts {
        by_event
            .entry(attempt.event_id.clone())
            .or_default()
            .push(attempt);
    }
    by_event
}

fn index(queued: Vec<QueueState>) -> HashMap<String, QueueState> {
    queued
        .into_iter()
        .map(|q| (q.event_id.clone(), q))
        .collect()
}

fn delivery(
    status: &crate::delivery::Status,
    entry: &LogEntry,
    attempts: &[AttemptRecord],
    queued: Option<&QueueState>,
) -> DeliveryOut {
    let subscription = &status.subscription;
    let state = match queued {
        Some(q) if q.state == "dead" => "dead",
        Some(_) => "waiting",
        None if attempts.iter().any(|a| a.outcome == "delivered") => "delivered",
        None if !reached(subscription.cursor, entry.cursor) => "pending",
        None => "passed",
    };
    DeliveryOut {
        subscription_id: subscription.id,
        kind: subscription.kind.as_str(),
        target: subscription.target.clone(),
        state,
        attempts: attempts
            .iter()
            .map(|a| AttemptOut {
                attempted_at: from_millis(a.attempted_at),
                outcome: a.outcome.clone(),
                status: a.status,
                latency_ms: a.latency_ms,
                detail: a.detail.clone(),
            })
            .collect(),
        next_attempt_at: queued
            .filter(|q| q.state == "waiting")
            .map(|q| from_millis(q.next_attempt_at)),
        dead_at: queued.and_then(|q| q.dead_at).map(from_millis),
        last_error: queued.and_then(|q| q.last_error.clone()),
    }
}

/// Whether a reader at `checkpoint` has read the event at `at` (cursors order by
/// transaction, then position).
fn reached(checkpoint: Cursor, at: Cursor) -> bool {
    checkpoint >= at
}

/// The trace id of a W3C `traceparent`, as the command path reads one.
fn trace_id(traceparent: &str) -> Option<String> {
    TraceParent::parse(traceparent).map(|t| t.trace_id().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_id_is_read_from_a_traceparent_and_nothing_else() {
        assert_eq!(
            trace_id("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(trace_id("garbage"), None);
        assert_eq!(trace_id("00-xyz-b7ad6b7169203331-01"), None);
    }

    #[test]
    fn a_reader_has_read_what_its_cursor_passed() {
        let at = |transaction_id, position| Cursor {
            transaction_id,
            position,
        };
        assert!(reached(at(0, 5), at(0, 5)));
        assert!(!reached(at(0, 4), at(0, 5)));
        assert!(reached(at(9, 1), at(8, 7)), "a later transaction");
        assert!(!reached(at(8, 9), at(9, 1)));
    }
}
