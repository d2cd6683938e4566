//! `GET /v1/events/export`: the log as NDJSON or Parquet, streamed as it is read (never
//! held whole), in the export schema of the README. It is `orderlog export` over HTTP:
//! the same reader, the same rows, the same end (the NDJSON trailer line or the Parquet
//! footer's `orderlog.cursor`). A response cut short has no such end, so a client can
//! always tell a whole export from a broken one.
//!
//! Personal data needs `privacy:read` besides the route's `events:read`, checked here:
//! a route declares one scope.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;
use tokio::sync::mpsc;

use super::error::ApiError;
use super::extract::QueryParams;
use super::openapi::{string, Op};
use super::scoped::Routes;
use crate::auth::{Principal, Scope};
use crate::delivery::subscription::EventFilter;
use crate::state::AppState;
use crate::store::export::{self, Format, Options, Shape};
use crate::store::reader::Cursor;
use utoipa::IntoParams;

pub fn routes() -> Routes {
    Routes::new().get("/events/export", Scope::EventsRead, export)
}

/// What [`routes`] serves, for `GET /openapi.json`.
pub fn operations() -> Vec<Op> {
    vec![
        Op::get("/v1/events/export", "The log up to one horizon, streamed")
            .query::<ExportQuery>()
            .content(
                200,
                "NDJSON, ending with the trailer line `{\"cursor\": …}`; or Parquet",
                "application/x-ndjson",
                string(),
            )
            .content(200, "", "application/vnd.apache.parquet", string())
            .error(400, "invalid_cursor")
            .error(
                403,
                "forbidden (`field`: `privacy:read`) for include_personal_data=true",
            ),
    ]
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct ExportQuery {
    /// `ndjson` (the default; `jsonl` too) or `parquet`.
    format: Option<String>,
    /// `events` (the default) or `sequences`.
    shape: Option<String>,
    /// A cursor an export ended with: continue after it.
    #[param(pattern = r"^\s*\+?[0-9]{1,18}-\+?[0-9]{1,18}\s*$")]
    after: Option<String>,
    since: Option<String>,
    until: Option<String>,
    /// Comma-separated event type patterns (`order.*,inventory.reserved`).
    types: Option<String>,
    #[serde(default)]
    include_personal_data: bool,
}

/// The options a query asks for, or the error that names what is wrong.
fn options(query: ExportQuery, principal: &Principal) -> Result<Options, ApiError> {
    let format = match query.format.as_deref() {
        None => Format::Jsonl,
        Some(raw) => Format::parse(raw)
            .ok_or_else(|| ApiError::invalid_field("format", "must be `ndjson` or `parquet`"))?,
    };
    let mut options = Options::new(format);
    if let Some(raw) = query.shape.as_deref() {
        options.shape = Shape::parse(raw)
            .ok_or_else(|| ApiError::invalid_field("shape", "must be `events` or `sequences`"))?;
    }
    if let Some(raw) = query.after.as_deref() {
        options.after = Cursor::parse_token(raw).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_cursor",
                "`after` must be the cursor an export ended with, such as 812-40001",
            )
            .with_field("after")
        })?;
    }
    for (field, raw, into) in [
        ("since", &query.since, &mut options.since),
        ("until", &query.until, &mut options.until),
    ] {
        if let Some(raw) = raw {
            *into = Some(export::parse_time(raw).map_err(|r| ApiError::invalid_field(field, r))?);
        }
    }
    if let Some(raw) = query.types {
        let filter = EventFilter::parse(raw.split(',').map(|t| t.trim().to_owned()).collect())
            .map_err(|reason| ApiError::invalid_field("types", reason))?;
        options.types = Some(Arc::new(move |t: &str| filter.matches(t)));
    }
    if query.include_personal_data {
        if !principal.scopes.allows(Scope::PrivacyRead) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this token does not hold the scope `privacy:read`, which \
                 `include_personal_data=true` needs",
            )
            .with_field(Scope::PrivacyRead.as_str()));
        }
        options.include_personal_data = true;
    }
    Ok(options)
}

#[tracing::instrument(skip_all, fields(actor = %principal.name))]
async fn export(
    State(state): State<AppState>,
    principal: Principal,
    QueryParams(query): QueryParams<ExportQuery>,
) -> Result<Response, ApiError> {
    let options = options(query, &principal)?;
    let (format, shape, after) = (options.format, options.shape, options.after);
    let (chunks, body) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let abort = chunks.clone();
    let db = state.db.clone();
    let vault = state.vault.clone();
    let closing = state.closing.clone();
    tokio::spawn(async move {
        let outcome = tokio::select! {
            outcome = export::run(&db, Some(&vault), options, ChunkWriter::new(chunks)) => outcome.map_err(|e| e.to_string()),
            _ = closing.cancelled() => Err("the server is stopping".to_owned()),
        };
        match outcome {
            Ok(summary) => tracing::info!(
                events = summary.events,
                read = summary.read,
                cursor = %summary.cursor.token(),
                "export sent"
            ),
            Err(e) => {
                // The body ends in an error, so the client sees it cut short (no trailer
                // or footer), never a shorter export that looks whole.
                tracing::warn!(error = %e, "export stopped");
                let _ = abort.send(Err(std::io::Error::other(e))).await;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(body));
    let extension = match (format, shape) {
        (Format::Jsonl, _) => "ndjson",
        (Format::Parquet, _) => "parquet",
    };
    let name = match shape {
        Shape::Events => "events",
        Shape::Sequences => "sequences",
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"orderlog-{name}-after-{}.{extension}\"",
        after.token()
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// The export's sink on its blocking thread: chunks of about [`CHUNK`] bytes into the
/// response body, waiting while the client is slow. The client gone, writes fail and
/// the export stops.
struct ChunkWriter {
    chunks: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 64 * 1024;

impl ChunkWriter {
    fn new(chunks: mpsc::Sender<Result<Bytes, std::io::Error>>) -> Self {
        ChunkWriter {
            chunks,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.chunks
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client left"))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if data.len() >= CHUNK {
            self.send()?;
            self.buf.extend_from_slice(data);
            self.send()?;
        } else {
            self.buf.extend_from_slice(data);
            if self.buf.len() >= CHUNK {
                self.send()?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}
