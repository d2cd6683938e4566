//! `/v1/subscriptions`: webhook and NATS subscribers, their signing secrets, cursors
//! and dead letters.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{
    parse_limit, parse_overlap, parse_time, JsonBody, OptionalJsonBody, PathParams, QueryParams,
};
use super::openapi::{uuid, Op};
use super::scoped::Routes;
use crate::auth::Scope;
use crate::delivery::store::{from_millis, AttemptRecord, QueuedRow};
use crate::delivery::subscription::{
    is_subject, parse_webhook_url, EventFilter, Kind, State as SubscriptionState,
    DEFAULT_MAX_IN_FLIGHT, MAX_IN_FLIGHT_LIMIT,
};
use crate::delivery::{Changes, DeliveryError, NewSubscription, Status};
use crate::domain::values::FreeText;
use crate::state::AppState;
use crate::store::reader::StartAt;

pub fn routes() -> Routes {
    use Scope::SubscriptionsManage as Manage;
    Routes::new()
        .post("/subscriptions", Manage, create)
        .get("/subscriptions", Manage, list)
        .get("/subscriptions/{id}", Manage, show)
        .patch("/subscriptions/{id}", Manage, update)
        .delete("/subscriptions/{id}", Manage, remove)
        .post("/subscriptions/{id}/secret/rotate", Manage, rotate)
        .post("/subscriptions/{id}/rewind", Manage, rewind)
        .get("/subscriptions/{id}/attempts", Manage, attempts)
        .get("/subscriptions/{id}/dead-letters", Manage, dead_letters)
        .delete("/subscriptions/{id}/dead-letters", Manage, discard_all)
        .post("/subscriptions/{id}/dead-letters/retry", Manage, retry_all)
        .get(
            "/subscriptions/{id}/dead-letters/{event_id}",
            Manage,
            dead_letter,
        )
        .delete(
            "/subscriptions/{id}/dead-letters/{event_id}",
            Manage,
            discard_one,
        )
        .post(
            "/subscriptions/{id}/dead-letters/{event_id}/retry",
            Manage,
            retry_one,
        )
}

/// What [`routes`] serves, for `GET /openapi.json`.
pub fn operations() -> Vec<Op> {
    let with_id = |op: Op| op.param("id", uuid()).error(404, "subscription_not_found");
    let with_event = |op: Op| {
        with_id(op)
            .param("event_id", uuid())
            .error(404, "dead_letter_not_found")
    };
    vec![
        Op::post(
            "/v1/subscriptions",
            "Subscribe a webhook or a NATS subject to events",
        )
        .json_body::<CreateIn>()
        .json::<CreatedOut>(
            201,
            "the subscription, with its signing `secret` shown once",
        )
        .error(422, "invalid_field, forbidden_target"),
        Op::get("/v1/subscriptions", "Every subscription and its state")
            .json::<ListOut>(200, "every subscription"),
        with_id(Op::get(
            "/v1/subscriptions/{id}",
            "A subscription's settings and state",
        ))
        .json::<SubscriptionOut>(200, "the subscription"),
        with_id(Op::patch(
            "/v1/subscriptions/{id}",
            "Pause, resume or change a subscription",
        ))
        .json_body::<UpdateIn>()
        .json::<SubscriptionOut>(200, "the subscription")
        .error(422, "invalid_field, forbidden_target"),
        with_id(Op::delete(
            "/v1/subscriptions/{id}",
            "Delete a subscription and its queue",
        ))
        .empty(204, "deleted"),
        with_id(Op::post(
            "/v1/subscriptions/{id}/secret/rotate",
            "Rotate the signing secret",
        ))
        .optional_json_body::<RotateIn>()
        .json::<RotatedOut>(200, "the new secret, shown once"),
        with_id(Op::post(
            "/v1/subscriptions/{id}/rewind",
            "Move the cursor back to a position or time",
        ))
        .json_body::<RewindIn>()
        .json::<SubscriptionOut>(200, "the subscription"),
        with_id(Op::get(
            "/v1/subscriptions/{id}/attempts",
            "Every attempt to deliver one event",
        ))
        .query::<AttemptsQuery>()
        .json::<AttemptsOut>(200, "the event's attempts, oldest first"),
        with_id(Op::get(
            "/v1/subscriptions/{id}/dead-letters",
            "Dead letters, in log order",
        ))
        .query::<PageQuery>()
        .json::<DeadLettersOut>(200, "a page of dead letters; `next_after` for the next one"),
        with_id(Op::delete(
            "/v1/subscriptions/{id}/dead-letters",
            "Discard every dead letter",
        ))
        .json::<DiscardedOut>(200, "how many were discarded"),
        with_id(Op::post(
            "/v1/subscriptions/{id}/dead-letters/retry",
            "Send every dead letter again",
        ))
        .json::<RetriedOut>(202, "how many are queued again"),
        with_event(Op::get(
            "/v1/subscriptions/{id}/dead-letters/{event_id}",
            "A dead letter and its attempts",
        ))
        .json::<DeadLetterOut>(200, "the dead letter with its `history`"),
        with_event(Op::delete(
            "/v1/subscriptions/{id}/dead-letters/{event_id}",
            "Discard one dead letter",
        ))
        .empty(204, "discarded"),
        with_event(Op::post(
            "/v1/subscriptions/{id}/dead-letters/{event_id}/retry",
            "Send one dead letter again",
        ))
        .json::<RetriedOut>(202, "how many are queued again"),
    ]
}

impl From<DeliveryError> for ApiError {
    fn from(error: DeliveryError) -> Self {
        match error {
            DeliveryError::NotFound(_) => {
                ApiError::not_found("subscription_not_found", error.to_string())
            }
            DeliveryError::DeadLetterNotFound(_) => {
                ApiError::not_found("dead_letter_not_found", error.to_string())
            }
            DeliveryError::Invalid { field, reason } => ApiError::invalid_field(field, reason),
            DeliveryError::Target(refused) if refused.is_forbidden() => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "forbidden_target",
                DeliveryError::Target(refused).to_string(),
            )
            .with_field("url"),
            DeliveryError::Target(malformed) => ApiError::invalid_field("url", malformed),
            DeliveryError::Store(e) => e.into(),
        }
    }
}

fn event_types(raw: Vec<String>) -> Result<EventFilter, ApiError> {
    EventFilter::parse(raw).map_err(|reason| ApiError::invalid_field("event_types", reason))
}

fn max_in_flight(raw: u32) -> Result<u32, ApiError> {
    if (1..=MAX_IN_FLIGHT_LIMIT).contains(&raw) {
        Ok(raw)
    } else {
        Err(ApiError::invalid_field(
            "max_in_flight",
            format!("must be from 1 to {MAX_IN_FLIGHT_LIMIT}"),
        ))
    }
}

fn webhook_url(raw: &str) -> Result<String, ApiError> {
    parse_webhook_url(raw)
        .map(|url| url.to_string())
        .map_err(|reason| ApiError::invalid_field("url", reason))
}

fn subject(raw: String) -> Result<String, ApiError> {
    if is_subject(&raw) {
        Ok(raw)
    } else {
        Err(ApiError::invalid_field(
            "subject",
            "must be NATS subject tokens (letters, digits, `_`, `-`) joined by dots, without wildcards",
        ))
    }
}

/// Where a replay starts: a global position or a time, not both.
fn start_at(
    position: Option<i64>,
    time: Option<String>,
    names: (&'static str, &'static str),
) -> Result<Option<StartAt>, ApiError> {
    match (position, time) {
        (Some(_), Some(_)) => Err(ApiError::invalid_field(
            names.1,
            format!("cannot be given together with `{}`", names.0),
        )),
        (Some(p), None) if p < 1 => Err(ApiError::invalid_field(
            names.0,
            "must be a global position of 1 or more",
        )),
        (Some(p), None) => Ok(Some(StartAt::Position(p))),
        (None, Some(t)) => Ok(Some(StartAt::Time(parse_time(names.1, &t)?))),
        (None, None) => Ok(None),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateIn {
    kind: String,
    url: Option<String>,
    subject: Option<String>,
    event_types: Vec<String>,
    description: Option<FreeText>,
    max_in_flight: Option<u32>,
    from_position: Option<i64>,
    from_time: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Subscription)]
struct SubscriptionOut {
    id: Uuid,
    kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    event_types: Vec<String>,
    description: Option<String>,
    max_in_flight: u32,
    state: SubscriptionState,
    state_reason: Option<String>,
    /// The cursor: everything at or before it has been delivered or queued.
    cursor: String,
    position: i64,
    /// As the server holding the lease has it; null when no server reports holding it.
    breaker: Option<crate::delivery::breaker::BreakerState>,
    /// How many messages the holder lets be in flight now: it grows while the receiver
    /// keeps up and halves when it fails; at most `max_in_flight`.
    window: Option<u32>,
    /// Which server delivers it, and since when; null when none does.
    lease: Option<LeaseOut>,
    queue: QueueOut,
    lag: LagOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_secret_expires_at: Option<String>,
    /// Why the subscription is not delivered: its stored secret does not open on this
    /// server (rotating the secret gives it a new one). Never the secret itself: no
    /// response but creation and rotation carries that.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret_error: Option<SecretErrorOut>,
    created_at: String,
    updated_at: String,
}

#[derive(Serialize, ToSchema)]
struct SecretErrorOut {
    code: &'static str,
    detail: String,
}

#[derive(Serialize, ToSchema)]
struct LeaseOut {
    node: String,
    since: String,
    reported_at: String,
}

#[derive(Serialize, ToSchema)]
struct QueueOut {
    waiting: i64,
    dead: i64,
}

#[derive(Serialize, ToSchema)]
struct LagOut {
    events: i64,
    seconds: f64,
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl From<Status> for SubscriptionOut {
    fn from(status: Status) -> Self {
        let s = status.subscription;
        let (url, subject) = match s.kind {
            Kind::Webhook => (Some(s.target.clone()), None),
            Kind::Nats => (None, Some(s.target.clone())),
        };
        SubscriptionOut {
            id: s.id,
            kind: s.kind,
            url,
            subject,
            event_types: s.event_types.patterns().to_vec(),
            description: s.description,
            max_in_flight: s.max_in_flight,
            state: s.state,
            state_reason: s.state_reason,
            cursor: s.cursor.token(),
            position: s.cursor.position,
            breaker: status.breaker,
            window: status.window,
            lease: status.lease.map(|held| LeaseOut {
                node: held.node,
                since: rfc3339(held.since),
                reported_at: rfc3339(held.reported_at),
            }),
            queue: QueueOut {
                waiting: status.waiting,
                dead: status.dead,
            },
            lag: LagOut {
                events: status.lag_events,
                seconds: status.lag_seconds,
            },
            previous_secret_expires_at: s
                .previous_secret
                .as_ref()
                .filter(|(_, until)| *until > chrono::Utc::now())
                .map(|(_, until)| rfc3339(*until)),
            secret_error: s.secret_error.map(|e| SecretErrorOut {
                code: e.error.code(),
                detail: e.to_string(),
            }),
            created_at: rfc3339(s.created_at),
            updated_at: rfc3339(s.updated_at),
        }
    }
}

async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<CreateIn>,
) -> Result<Response, ApiError> {
    let kind = Kind::parse(&body.kind)
        .ok_or_else(|| ApiError::invalid_field("kind", "must be `webhook` or `nats`"))?;
    let target = match (kind, body.url, body.subject) {
        (Kind::Webhook, Some(url), None) => webhook_url(&url)?,
        (Kind::Webhook, None, _) => return Err(ApiError::invalid_field("url", "is required")),
        (Kind::Webhook, Some(_), Some(_)) => {
            return Err(ApiError::invalid_field(
                "subject",
                "is for nats subscriptions; a webhook has a url",
            ))
        }
        (Kind::Nats, Some(_), _) => {
            return Err(ApiError::invalid_field(
                "url",
                "is for webhook subscriptions; a nats subscription has a subject",
            ))
        }
        (Kind::Nats, None, Some(s)) => subject(s)?,
        (Kind::Nats, None, None) => state.settings.deliveries.nats_subject_prefix.clone(),
    };
    let new = NewSubscription {
        kind,
        target,
        event_types: event_types(body.event_types)?,
        description: body.description.map(FreeText::into_string),
        max_in_flight: max_in_flight(body.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT))?,
        start: start_at(
            body.from_position,
            body.from_time,
            ("from_position", "from_time"),
        )?,
    };
    let (subscription, secret) = state.deliveries.create(new).await?;
    let id = subscription.id;
    let out = CreatedOut {
        subscription: state.deliveries.status(id).await?.into(),
        // Shown here once; GET never returns it.
        secret: secret.map(|s| s.as_str().to_owned()),
    };
    let mut response = (StatusCode::CREATED, Json(out)).into_response();
    if let Ok(location) = format!("/v1/subscriptions/{id}").parse() {
        response
            .headers_mut()
            .insert(axum::http::header::LOCATION, location);
    }
    Ok(response)
}

#[derive(Serialize, ToSchema)]
struct CreatedOut {
    #[serde(flatten)]
    subscription: SubscriptionOut,
    /// The signing secret of a webhook; a NATS subscription has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = SubscriptionList)]
struct ListOut {
    subscriptions: Vec<SubscriptionOut>,
}

async fn list(State(state): State<AppState>) -> Result<Json<ListOut>, ApiError> {
    let subscriptions: Vec<SubscriptionOut> = state
        .deliveries
        .list()
        .await?
        .into_iter()
        .map(SubscriptionOut::from)
        .collect();
    Ok(Json(ListOut { subscriptions }))
}

async fn show(
    State(state): State<AppState>,
    PathParams(id): PathParams<Uuid>,
) -> Result<Json<SubscriptionOut>, ApiError> {
    Ok(Json(state.deliveries.status(id).await?.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct UpdateIn {
    state: Option<String>,
    url: Option<String>,
    subject: Option<String>,
    event_types: Option<Vec<String>>,
    #[serde(default, with = "serde_with_null")]
    #[schema(value_type = Option<FreeText>)]
    description: Option<Option<FreeText>>,
    max_in_flight: Option<u32>,
}

/// Tells an absent `description` (leave it) from `null` (clear it).
mod serde_with_null {
    use serde::{Deserialize, Deserializer};

    use crate::domain::values::FreeText;

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<FreeText>>, D::Error> {
        Option::<FreeText>::deserialize(d).map(Some)
    }
}

async fn update(
    State(state): State<AppState>,
    PathParams(id): PathParams<Uuid>,
    JsonBody(body): JsonBody<UpdateIn>,
) -> Result<Json<SubscriptionOut>, ApiError> {
    let current = state.deliveries.get(id).await?;
    let target = match (current.kind, body.url, body.subject) {
        (_, None, None) => None,
        (Kind::Webhook, Some(url), None) => Some(webhook_url(&url)?),
        (Kind::Nats, None, Some(s)) => Some(subject(s)?),
        (Kind::Webhook, _, Some(_)) => {
            return Err(ApiError::invalid_field(
                "subject",
                "is for nats subscriptions; this one is a webhook",
            ))
        }
        (Kind::Nats, Some(_), _) => {
            return Err(ApiError::invalid_field(
                "url",
                "is for webhook subscriptions; this one is nats",
            ))
        }
    };
    let changes = Changes {
        state: body
            .state
            .map(|s| match s.as_str() {
                "active" => Ok(SubscriptionState::Active),
                "paused" => Ok(SubscriptionState::Paused),
                _ => Err(ApiError::invalid_field(
                    "state",
                    "must be `paused` or `active` (to resume)",
                )),
            })
            .transpose()?,
        target,
        event_types: body.event_types.map(event_types).transpose()?,
        description: body.description.map(|d| d.map(FreeText::into_string)),
        max_in_flight: body.max_in_flight.map(max_in_flight).transpose()?,
    };
    state.deliveries.update(id, changes).await?;
    Ok(Json(state.deliveries.status(id).await?.into()))
}

async fn remove(
    State(state): State<AppState>,
    PathParams(id): PathParams<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.deliveries.delete(id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateIn {
    /// How long the replaced secret keeps signing beside the new one.
    overlap: Option<String>,
}

/// How long a replaced secret signs beside the new one, unless the request says.
const DEFAULT_OVERLAP: Duration = Duration::from_secs(24 * 3600);

async fn rotate(
    State(state): State<AppState>,
    PathParams(id): PathParams<Uuid>,
    // The body is optional: an empty one takes the default overlap.
    OptionalJsonBody(body): OptionalJsonBody<RotateIn>,
) -> Result<Json<RotatedOut>, ApiError> {
    let overlap = parse_overlap(body.overlap.as_deref(), DEFAULT_OVERLAP)?;
    let (subscription, secret) = state.deliveries.rotate_secret(id, overlap).await?;
    Ok(Json(RotatedOut {
        id: subscription.id,
        secret: secret.as_str().to_owned(),
        previous_secret_expires_at: subscription
            .previous_secret
            .map(|(_, until)| rfc3339(until)),
    }))
}

#[derive(Serialize, ToSchema)]
struct RotatedOut {
    id: Uuid,
    secret: String,
    /// Until when the replaced secret still signs beside the new one.
    previous_secret_expires_at: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RewindIn {
    position: Option<i64>,
    time: Option<String>,
}

async fn rewind(
    State(state): State<AppState>,
    PathParams(id): PathParams<Uuid>,
    JsonBody(body): JsonBody<RewindIn>,
) -> Result<Json<SubscriptionOut>, ApiError> {
    let start = start_at(body.position, body.time, ("position", "time"))?
        .ok_or_else(|| ApiError::invalid_field("position", "or `time` is required"))?;
    state.deliveries.rewind(id, start).await?;
    Ok(Json(state.deliveries.status(id).await?.into()))
}

#[derive(Serialize, ToSchema)]
#[schema(as = DeliveryAttempt)]
struct AttemptOut {
    attempted_at: String,
    outcome: String,
    status: Option<i64>,
    latency_ms: i64,
    detail: Option<String>,
}

impl From<AttemptRecord> for AttemptOut {
    fn from(a: AttemptRecord) -> Self {
        AttemptOut {
            attempted_at: rfc3339(from_millis(a.attempted_at)),
            outcome: a.outcome,
            status: a.status,
            latency_ms: a.latency_ms,
            detail: a.detail,
        }
    }
}

#[derive(Serialize, ToSchema)]
struct DeadLetterOut {
    event_id: String,
    event_type: String,
    stream: String,
    position: i64,
    attempts: i64,
    dead_at: Option<String>,
    last_error: Option<String>,
    /// The message as it would be sent now.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    message: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<Vec<AttemptOut>>,
}

fn dead_letter_out(
    row: QueuedRow,
    history: Option<Vec<AttemptRecord>>,
    body: Option<&str>,
) -> DeadLetterOut {
    let message = row.message().ok();
    DeadLetterOut {
        event_type: message
            .as_ref()
            .map(|m| m.event_type.clone())
            .unwrap_or_default(),
        message: body.and_then(|b| serde_json::from_str(b).ok()),
        event_id: row.event_id,
        stream: row.stream,
        position: row.position,
        attempts: row.attempts,
        dead_at: row.dead_at.map(|t| rfc3339(from_millis(t))),
        last_error: row.last_error,
        history: history.map(|h| h.into_iter().map(AttemptOut::from).collect()),
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<i64>,
    /// The position of the last dead letter on the previous page.
    after: Option<i64>,
}

async fn dead_letters(
    State(state): State<AppState>,
    PathParams(id): PathParams<Uuid>,
    QueryParams(query): QueryParams<PageQuery>,
) -> Result<Json<DeadLettersOut>, ApiError> {
    let limit = parse_limit(query.limit, 100, 1000)?;
    let rows = state
        .deliveries
        .dead_letters(id, query.after.unwrap_or(0), limit)
        .await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.position))
        .flatten();
    let dead_letters = rows
        .into_iter()
        .map(|r| dead_letter_out(r, None, None))
        .collect();
    Ok(Json(DeadLettersOut {
        dead_letters,
        next_after: next,
    }))
}

#[derive(Serialize, ToSchema)]
struct DeadLettersOut {
    dead_letters: Vec<DeadLetterOut>,
    /// The `after` of the next page; null on the last.
    next_after: Option<i64>,
}

#[derive(Serialize, ToSchema)]
struct RetriedOut {
    retried: u64,
}

#[derive(Serialize, ToSchema)]
struct DiscardedOut {
    discarded: u64,
}

async fn dead_letter(
    State(state): State<AppState>,
    PathParams((id, event_id)): PathParams<(Uuid, Uuid)>,
) -> Result<Json<DeadLetterOut>, ApiError> {
    let (row, history) = state.deliveries.dead_letter(id, event_id).await?;
    // Shown as it would be sent now: personal data opened, or erased.
    let body = match row.message() {
        Ok(message) => Some(state.vault.reveal(&message.body).await?.into_owned()),
        Err(_) => None,
    };
    Ok(Json(dead_letter_out(row, Some(history), body.as_deref())))
}

async fn retry_one(
    State(state): State<AppState>,
    PathParams((id, event_id)): PathParams<(Uuid, Uuid)>,
) -> Result<(StatusCode, Json<RetriedOut>), ApiError> {
    let retried = state.deliveries.retry_dead(id, Some(event_id)).await?;
    Ok((StatusCode::ACCEPTED, Json(RetriedOut { retried })))
}

async fn retry_all(
    State(state): State<AppState>,
    PathParams(id): PathParams<Uuid>,
) -> Result<(StatusCode, Json<RetriedOut>), ApiError> {
    let retried = state.deliveries.retry_dead(id, None).await?;
    Ok((StatusCode::ACCEPTED, Json(RetriedOut { retried })))
}

async fn discard_one(
    State(state): State<AppState>,
    PathParams((id, event_id)): PathParams<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    state.deliveries.discard_dead(id, Some(event_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn discard_all(
    State(state): State<AppState>,
    PathParams(id): PathParams<Uuid>,
) -> Result<Json<DiscardedOut>, ApiError> {
    let discarded = state.deliveries.discard_dead(id, None).await?;
    Ok(Json(DiscardedOut { discarded }))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct AttemptsQuery {
    event_id: String,
}

/// Every attempt to deliver one event to this subscription.
async fn attempts(
    State(state): State<AppState>,
    PathParams(id): PathParams<Uuid>,
    QueryParams(query): QueryParams<AttemptsQuery>,
) -> Result<Json<AttemptsOut>, ApiError> {
    let event_id = Uuid::parse_str(&query.event_id)
        .map_err(|_| ApiError::invalid_field("event_id", "must be an event id (a UUID)"))?;
    let attempts: Vec<AttemptOut> = state
        .deliveries
        .attempts(id, event_id)
        .await?
        .into_iter()
        .map(AttemptOut::from)
        .collect();
    Ok(Json(AttemptsOut { event_id, attempts }))
}

#[derive(Serialize, ToSchema)]
struct AttemptsOut {
    event_id: Uuid,
    attempts: Vec<AttemptOut>,
}
