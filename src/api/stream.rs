//! `GET /v1/events/stream`: the global log as Server-Sent Events. Each event's `id` is
//! its cursor, so a client that reconnects with `Last-Event-ID` resumes right after the
//! last event it got; without it the stream starts from now. `?types=order.*,…` filters.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::Deserialize;

use super::error::ApiError;
use super::extract::QueryParams;
use super::openapi::{string, Op};
use super::scoped::Routes;
use crate::auth::Scope;
use crate::delivery::message::Message;
use crate::delivery::subscription::EventFilter;
use crate::meter::StreamOpen;
use crate::state::AppState;
use crate::store::reader::{self, Cursor, LogEntry};
use utoipa::IntoParams;

pub fn routes() -> Routes {
    Routes::new().get("/events/stream", Scope::EventsRead, stream)
}

/// What [`routes`] serves, for `GET /openapi.json`.
pub fn operations() -> Vec<Op> {
    vec![Op::get(
        "/v1/events/stream",
        "The log as Server-Sent Events, from now",
    )
    .query::<StreamQuery>()
    .header(
        "Last-Event-ID",
        "the cursor of the last event received: resume after it",
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some(super::openapi::CURSOR))
            .into(),
    )
    .content(
        200,
        "one event per message: `id` its cursor, `event` its type, `data` its JSON",
        "text/event-stream",
        string(),
    )
    .error(400, "invalid_cursor")]
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct StreamQuery {
    /// Comma-separated event type patterns; all types when absent.
    types: Option<String>,
    /// A cursor to start after, for clients that cannot send `Last-Event-ID`.
    #[param(pattern = r"^\s*\+?[0-9]{1,18}-\+?[0-9]{1,18}\s*$")]
    after: Option<String>,
}

/// Events read from the log per query.
const BATCH: i64 = 500;
/// The slowest the stream notices new events when no signal reaches it.
const POLL: Duration = Duration::from_secs(1);

async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    QueryParams(query): QueryParams<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let filter = match query.types {
        None => None,
        Some(raw) => Some(
            EventFilter::parse(raw.split(',').map(|t| t.trim().to_owned()).collect())
                .map_err(|reason| ApiError::invalid_field("types", reason))?,
        ),
    };
    let resume = headers
        .get("last-event-id")
        .map(|v| (v.to_str().unwrap_or_default().to_owned(), "Last-Event-ID"))
        .or(query.after.map(|a| (a, "after")));
    let cursor = match resume {
        Some((raw, field)) => Cursor::parse_token(&raw).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_cursor",
                format!("`{field}` must be an event id this stream sent, such as 812-40001"),
            )
            .with_field(field)
        })?,
        None => reader::head(&state.db).await?,
    };
    let tail = Tail {
        _open: state.meter.stream_opened(),
        signal: state.log_signal.subscribe(),
        state,
        cursor,
        filter,
        buffer: VecDeque::new(),
    };
    let events = futures::stream::unfold(tail, |mut tail| async move {
        let entry = tail.next().await?;
        let message = Message::of(&entry);
        // Personal data is opened as it is sent, as deliveries do; a failure to open it
        // ends the stream like a failure to read the log (the client reconnects).
        let body = match tail.state.vault.reveal(&message.body).await {
            Ok(body) => body.into_owned(),
            Err(e) => {
                tracing::warn!(error = %e, "event stream could not open personal data; closing it");
                return None;
            }
        };
        let event = Event::default()
            .id(entry.cursor.token())
            .event(&entry.event_type)
            .data(body);
        Some((Ok(event), tail))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// Follows the log from a cursor, one event at a time.
struct Tail {
    /// Counts the stream as open while it lives.
    _open: StreamOpen,
    state: AppState,
    signal: tokio::sync::watch::Receiver<u64>,
    cursor: Cursor,
    filter: Option<EventFilter>,
    buffer: VecDeque<LogEntry>,
}

impl Tail {
    /// The next matching event; `None` ends the stream (the server is stopping, or the
    /// log cannot be read: the client reconnects with its last id).
    async fn next(&mut self) -> Option<LogEntry> {
        loop {
            if let Some(entry) = self.buffer.pop_front() {
                return Some(entry);
            }
            self.signal.borrow_and_update();
            let batch = match reader::read_after_with_metadata(&self.state.db, self.cursor, BATCH)
                .await
            {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(error = %e, "event stream could not read the log; closing it");
                    return None;
                }
            };
            if let Some(last) = batch.last() {
                self.cursor = last.cursor;
                self.buffer.extend(batch.into_iter().filter(|e| {
                    self.filter
                        .as_ref()
                        .is_none_or(|f| f.matches(&e.event_type))
                }));
                continue;
            }
            tokio::select! {
                _ = self.state.closing.cancelled() => return None,
                _ = self.signal.changed() => {}
                _ = tokio::time::sleep(POLL) => {}
            }
        }
    }
}
