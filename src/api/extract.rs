//! Extractors that turn a raw request into typed input, refusing anything malformed with
//! the API's own error shape:
//! - [`JsonBody`]: content type (415), size (413), syntax (400) and values (422, with the
//!   path of the offending field);
//! - [`CommandContext`]: who asks and why, from the headers, as event metadata;
//! - [`QueryParams`]: the query string (422, naming the parameter);
//! - and the small parsers handlers share (times, days, page sizes, header text).
//!
//! Waiting for projections after a command (`X-Wait-For`) lives in `wait_for`.

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::{FromRef, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use chrono::Utc;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::ApiError;
use crate::state::AppState;
use crate::store::metadata::{CommandMetadata, TraceParent};

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
const CORRELATION_ID: &str = "x-correlation-id";
const CAUSATION_ID: &str = "x-causation-id";
const ACTOR: &str = "x-actor";
const TRACEPARENT: &str = "traceparent";

/// A JSON request body, parsed into `T`.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    AppState: FromRef<S>,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let limit = AppState::from_ref(state).settings.body_limit;
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the request body must be JSON, sent with `Content-Type: application/json`",
            ));
        }
        let bytes = read_body(req.into_body(), limit).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Reads a whole body, refusing one larger than `limit` bytes with 413.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body exceeds the limit of {limit} bytes"),
            )
        } else {
            ApiError::bad_request(
                "unreadable_body",
                format!("the request body could not be read: {e}"),
            )
        }
    })
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        use serde_json::error::Category;
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => ApiError::bad_request(
                "malformed_json",
                format!("the request body is not valid JSON: {inner}"),
            ),
            Category::Data => {
                let message = strip_position(&inner.to_string());
                // serde reports a missing field at its parent; name the field itself.
                if let Some(rest) = message.strip_prefix("missing field `") {
                    let name = rest.trim_end_matches('`');
                    let field = if path == "." {
                        name.to_owned()
                    } else {
                        format!("{path}.{name}")
                    };
                    return ApiError::invalid_field(field, "is required");
                }
                let field = if path == "." { "body".to_owned() } else { path };
                ApiError::invalid_field(field, format!("is invalid: {message}"))
            }
        }
    })
}

/// serde_json appends " at line 1 column 42"; the field path already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Query-string parameters parsed into `T`; a bad one is a 422 naming it.
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(QueryParams)
            .map_err(|e| {
                let path = e.path().to_string();
                let message = strip_position(&e.into_inner().to_string());
                let field = if path == "." {
                    message.split('`').nth(1).unwrap_or("query").to_owned()
                } else {
                    path
                };
                ApiError::invalid_field(field, format!("is invalid: {message}"))
            })
    }
}

/// The metadata every event of this request's command will carry.
pub struct CommandContext(pub CommandMetadata);

impl<S: Send + Sync> FromRequestParts<S> for CommandContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let headers = &parts.headers;
        let command_id = Uuid::now_v7();
        let idempotency_key = header_text(headers, IDEMPOTENCY_KEY)?;
        let correlation_id =
            header_text(headers, CORRELATION_ID)?.unwrap_or_else(|| Uuid::now_v7().to_string());
        let causation_id =
            header_text(headers, CAUSATION_ID)?.unwrap_or_else(|| command_id.to_string());
        let actor = header_text(headers, ACTOR)?.unwrap_or_else(|| "anonymous".to_owned());
        let traceparent = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(TraceParent::parse)
            .unwrap_or_else(TraceParent::generate);
        Ok(CommandContext(CommandMetadata {
            command_id,
            idempotency_key,
            correlation_id,
            causation_id,
            traceparent: traceparent.as_str().to_owned(),
            actor,
            received_at: Utc::now(),
        }))
    }
}

/// A short, printable header value, or `None` when absent.
pub fn header_text(headers: &HeaderMap, name: &'static str) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 255 && t.bytes().all(|b| (0x21..0x7f).contains(&b)))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_header",
                format!(
                    "header `{name}` must be 1 to 255 printable ASCII characters without spaces"
                ),
            )
            .with_field(name)
        })?;
    Ok(Some(text.to_owned()))
}

/// An RFC 3339 time from a query parameter.
pub fn parse_time(field: &str, raw: &str) -> Result<chrono::DateTime<Utc>, ApiError> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::invalid_field(
                field,
                "must be an RFC 3339 time, such as 2026-11-21T12:00:00Z",
            )
        })
}

/// A calendar day (`2026-11-21`) from a query parameter.
pub fn parse_day(field: &str, raw: &str) -> Result<String, ApiError> {
    chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .map(|d| d.format("%Y-%m-%d").to_string())
        .map_err(|_| ApiError::invalid_field(field, "must be a day, such as 2026-11-21"))
}

/// A page size: `default` when absent, at most `max`.
pub fn parse_limit(raw: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    match raw {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid_field(
            "limit",
            format!("must be from 1 to {max}"),
        )),
    }
}
