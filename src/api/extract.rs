//! Extractors that turn a raw request into typed input, refusing anything malformed with
//! the API's own error shape:
//! - [`limit_body`]: the one limit on every request body (413), a layer in front of
//!   everything that reads one;
//! - [`JsonBody`] (and [`OptionalJsonBody`], for a body that may be left out): content
//!   type (415), syntax, including bytes after the value (400), and values (422, with the
//!   path of the offending field);
//! - [`PathParams`]: path parameters as typed values (422, or 400 for undecodable text,
//!   naming the parameter);
//! - [`QueryParams`]: the query string (422, naming the parameter);
//! - [`CommandContext`]: who asks and why, from the headers, as event metadata, with
//!   the deadline [`stamp_deadline`] set when the request arrived;
//! - and the small parsers handlers share (times, days, page sizes, header text).
//!
//! Waiting for projections after a command (`X-Wait-For`) lives in `wait_for`.

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use http_body_util::BodyExt;
use serde::de::{DeserializeOwned, IgnoredAny};
use uuid::Uuid;

use super::error::ApiError;
use crate::auth::{Principal, TokenName};
use crate::domain::values::{
    check_line, CustomerId, OrderId, PaymentId, RefundId, ShipmentId, Sku, SourceName, ValueError,
};
use crate::state::AppState;
use crate::store::idempotency::KeyClaim;
use crate::store::metadata::{CommandMetadata, TraceParent};

pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
const CORRELATION_ID: &str = "x-correlation-id";
const CAUSATION_ID: &str = "x-causation-id";
/// Who the token acts for (a storefront's staff user): kept as `on_behalf_of`, never
/// as the actor, which is the token's name.
const ON_BEHALF_OF: &str = "x-actor";
const TRACEPARENT: &str = "traceparent";

/// The one limit on request bodies, `ORDERLOG_BODY_LIMIT`, as a layer in front of every
/// route behind the token gate: the idempotency keys and every handler then read a body
/// that fits, so no route can have another limit (axum's own is disabled) or answer
/// anything but the API's JSON error.
///
/// A body larger than the limit, declared so (`Content-Length`) or found so while it is
/// read, is refused with 413 `payload_too_large` before anything looks at what it says.
/// The client may still be sending it: a server that stopped reading and closed would
/// have it fail on a broken pipe before it ever read the answer. So the rest is read and
/// discarded, up to [`DRAIN_FACTOR`] times the limit and for [`DRAIN_TIME`]; a body
/// beyond either (or one the client waits to send, `Expect: 100-continue`) is left
/// unread, and the answer says `Connection: close`.
pub async fn limit_body(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let limit = state.settings.body_limit;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let waits_to_send = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let (parts, mut body) = request.into_parts();
    if declared.is_some_and(|length| length > limit as u64) {
        let drained = !waits_to_send && drain(body, 0, limit).await;
        return refusal(too_large(limit), drained);
    }
    let mut bytes = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => return refusal(unreadable(&e), false),
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if bytes.len() + data.len() > limit {
            let drained = drain(body, bytes.len() + data.len(), limit).await;
            return refusal(too_large(limit), drained);
        }
        bytes.extend_from_slice(&data);
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// How much of a refused body is still read (times the limit), and for how long.
const DRAIN_FACTOR: usize = 4;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and discards the rest of `body`, `read` bytes of which are already read;
/// whether it reached the end within [`DRAIN_FACTOR`] times `limit` and [`DRAIN_TIME`].
async fn drain(mut body: Body, mut read: usize, limit: usize) -> bool {
    let cap = limit.saturating_mul(DRAIN_FACTOR);
    let to_the_end = async {
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            read += frame.data_ref().map_or(0, Bytes::len);
            if read > cap {
                return false;
            }
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, to_the_end)
        .await
        .unwrap_or(false)
}

/// A refusal of the request's body; unless the whole body was read, the connection
/// closes after it.
fn refusal(error: ApiError, drained: bool) -> Response {
    let mut response = error.into_response();
    if !drained {
        response.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body exceeds the limit of {limit} bytes"),
    )
}

fn unreadable(e: &dyn std::fmt::Display) -> ApiError {
    ApiError::bad_request(
        "unreadable_body",
        format!("the request body could not be read: {e}"),
    )
}

/// A JSON request body, parsed into `T`.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(not_json());
        }
        let bytes = read_body(req.into_body()).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A JSON request body that may be left out: an empty one (or only whitespace) is
/// `T::default()`; any other is a [`JsonBody`], with the same rules.
pub struct OptionalJsonBody<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(req.headers());
        let bytes = read_body(req.into_body()).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJsonBody(T::default()));
        }
        if !json {
            return Err(not_json());
        }
        parse_json(&bytes).map(OptionalJsonBody)
    }
}

fn not_json() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "the request body must be JSON, sent with `Content-Type: application/json`",
    )
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

/// Reads a whole body: a request's, already held to the limit by [`limit_body`], or a
/// handler's answer.
pub async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    to_bytes(body, usize::MAX).await.map_err(|e| unreadable(&e))
}

/// Parses a whole body as one JSON value of type `T`. The JSON must end after that value
/// (whitespace aside): anything else after it is 400 `malformed_json`, as is a body that
/// is not JSON at all, even where a field is also wrong (a 422 is for JSON that says
/// the wrong thing).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    use serde_json::error::Category;
    let malformed = |inner: &serde_json::Error| {
        ApiError::bad_request(
            "malformed_json",
            format!("the request body is not valid JSON: {inner}"),
        )
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => malformed(&inner),
            Category::Data => {
                // Deserialising stopped at the wrong value; the rest may not be JSON (or
                // not UTF-8, which skipping a value does not check).
                if let Err(syntax) = serde_json::from_slice::<IgnoredAny>(bytes) {
                    if syntax.classify() != Category::Data {
                        return malformed(&syntax);
                    }
                }
                if let Err(e) = std::str::from_utf8(bytes) {
                    return ApiError::bad_request(
                        "malformed_json",
                        format!("the request body is not valid JSON: it is not UTF-8 ({e})"),
                    );
                }
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
    })?;
    de.end().map_err(|e| malformed(&e))?;
    Ok(value)
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
        // No query value holds a control character, whatever it is parsed into next.
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            check_line(&key)
                .and_then(|()| check_line(&value))
                .map_err(|reason| ApiError::invalid_field(key.as_ref(), reason))?;
        }
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

/// Path parameters parsed into typed values: `PathParams<OrderId>`, or a tuple in the
/// route's order, `PathParams<(OrderId, PaymentId)>`. A value its type refuses is a 422
/// `invalid_field`, and a segment that is not UTF-8 once percent-decoded a 400
/// `invalid_path`; both name the parameter as the route does (`{order_id}`: `order_id`).
pub struct PathParams<T>(pub T);

impl<S: Send + Sync, T: FromPath> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(path_rejection)?;
        T::from_path(&params).map(PathParams)
    }
}

/// Only undecodable text is the client's fault: every segment is a string, so anything
/// else means a handler asked for parameters its route does not have.
fn path_rejection(rejection: PathRejection) -> ApiError {
    if let PathRejection::FailedToDeserializePathParams(e) = &rejection {
        if let ErrorKind::InvalidUtf8InPathParam { key } = e.kind() {
            return ApiError::bad_request(
                "invalid_path",
                format!("path parameter `{key}` is not valid UTF-8 once percent-decoded"),
            )
            .with_field(key.as_str());
        }
    }
    ApiError::internal(&rejection)
}

/// A type one path segment parses into, with the reason it refuses a segment.
pub trait PathValue: Sized {
    type Error: std::fmt::Display;

    fn parse_segment(raw: &str) -> Result<Self, Self::Error>;
}

macro_rules! identifier_path_values {
    ($($id:ty),*) => {$(
        impl PathValue for $id {
            type Error = ValueError;

            fn parse_segment(raw: &str) -> Result<Self, ValueError> {
                Self::parse(raw)
            }
        }
    )*};
}

identifier_path_values!(OrderId, CustomerId, Sku, PaymentId, ShipmentId, RefundId, SourceName);

/// A row number, such as an inbox delivery's id.
impl PathValue for i64 {
    type Error = &'static str;

    fn parse_segment(raw: &str) -> Result<Self, Self::Error> {
        raw.parse::<i64>()
            .ok()
            .filter(|id| *id > 0)
            .ok_or("must be a positive integer")
    }
}

/// Subscription and event ids.
impl PathValue for Uuid {
    type Error = &'static str;

    fn parse_segment(raw: &str) -> Result<Self, Self::Error> {
        Uuid::parse_str(raw).map_err(|_| "must be a UUID")
    }
}

impl PathValue for TokenName {
    type Error = String;

    fn parse_segment(raw: &str) -> Result<Self, Self::Error> {
        TokenName::parse(raw)
    }
}

/// A name its owner resolves, such as a projection's (unknown ones are its 404).
impl PathValue for String {
    type Error = std::convert::Infallible;

    fn parse_segment(raw: &str) -> Result<Self, Self::Error> {
        Ok(raw.to_owned())
    }
}

/// All of a route's path parameters: one [`PathValue`], or a tuple of them.
pub trait FromPath: Sized {
    fn from_path(params: &[(String, String)]) -> Result<Self, ApiError>;
}

/// One parameter: no control character, whatever its type, then its type's rules.
fn segment<T: PathValue>((name, raw): &(String, String)) -> Result<T, ApiError> {
    check_line(raw).map_err(|reason| ApiError::invalid_field(name.as_str(), reason))?;
    T::parse_segment(raw).map_err(|reason| ApiError::invalid_field(name.as_str(), reason))
}

fn wrong_count(params: &[(String, String)], expected: usize) -> ApiError {
    ApiError::internal(&format!(
        "a handler expects {expected} path parameters, its route has {}",
        params.len()
    ))
}

impl<A: PathValue> FromPath for A {
    fn from_path(params: &[(String, String)]) -> Result<Self, ApiError> {
        match params {
            [a] => segment(a),
            _ => Err(wrong_count(params, 1)),
        }
    }
}

impl<A: PathValue, B: PathValue> FromPath for (A, B) {
    fn from_path(params: &[(String, String)]) -> Result<Self, ApiError> {
        match params {
            [a, b] => Ok((segment(a)?, segment(b)?)),
            _ => Err(wrong_count(params, 2)),
        }
    }
}

/// When a request's command must have started: stamped as the request arrives, so the
/// time spent at the gate, on its idempotency key and queued for its aggregate and the
/// database all count (`ORDERLOG_COMMAND_DEADLINE`).
#[derive(Clone, Copy)]
pub struct StartBy(pub tokio::time::Instant);

/// The first layer a gated request meets: stamps its [`StartBy`].
pub async fn stamp_deadline(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let start_by = tokio::time::Instant::now() + state.settings.command_deadline;
    request.extensions_mut().insert(StartBy(start_by));
    next.run(request).await
}

/// The metadata every event of this request's command will carry.
pub struct CommandContext(pub CommandMetadata);

impl<S: Send + Sync> FromRequestParts<S> for CommandContext {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let actor = Principal::from_request_parts(parts, state)
            .await?
            .name
            .to_string();
        let headers = &parts.headers;
        let command_id = Uuid::now_v7();
        let idempotency_key = header_text(headers, IDEMPOTENCY_KEY)?;
        let correlation_id =
            header_text(headers, CORRELATION_ID)?.unwrap_or_else(|| Uuid::now_v7().to_string());
        let causation_id =
            header_text(headers, CAUSATION_ID)?.unwrap_or_else(|| command_id.to_string());
        let on_behalf_of = header_text(headers, ON_BEHALF_OF)?;
        // With traces exported, the request span's own context (which continued the
        // caller's header): the stored trace is then the exported one. The append
        // names its own span as the parent (`store::commands`).
        let traceparent = crate::trace::current_traceparent()
            .and_then(|t| TraceParent::parse(&t))
            .or_else(|| {
                headers
                    .get(TRACEPARENT)
                    .and_then(|v| v.to_str().ok())
                    .and_then(TraceParent::parse)
            })
            .unwrap_or_else(TraceParent::generate);
        Ok(CommandContext(CommandMetadata {
            command_id,
            idempotency_key,
            correlation_id,
            causation_id,
            traceparent: traceparent.as_str().to_owned(),
            actor,
            on_behalf_of,
            received_at: Utc::now(),
            start_by: parts.extensions.get::<StartBy>().map(|s| s.0),
            claim: parts.extensions.get::<KeyClaim>().cloned(),
            data_key: None,
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

/// How long a replaced secret keeps working beside its successor (`overlap`: `0s`,
/// `1h`, `24h`; at most 30 days), or `default` when the request does not say.
pub fn parse_overlap(
    raw: Option<&str>,
    default: std::time::Duration,
) -> Result<std::time::Duration, ApiError> {
    let Some(raw) = raw else { return Ok(default) };
    humantime::parse_duration(raw)
        .ok()
        .filter(|d| *d <= std::time::Duration::from_secs(30 * 86_400))
        .ok_or_else(|| {
            ApiError::invalid_field(
                "overlap",
                "must be a duration of up to 30d, such as 0s, 1h or 24h",
            )
        })
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

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt;

    use super::*;

    /// A route with two typed parameters; the handler echoes them.
    fn app() -> Router {
        Router::new().route(
            "/orders/{order_id}/payments/{payment_id}",
            get(
                |PathParams((order, payment)): PathParams<(OrderId, PaymentId)>| async move {
                    format!("{order} {payment}")
                },
            ),
        )
    }

    async fn answer(uri: &str) -> (StatusCode, Bytes) {
        let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
        let response = app().oneshot(request).await.unwrap();
        let status = response.status();
        (
            status,
            to_bytes(response.into_body(), 1 << 16).await.unwrap(),
        )
    }

    async fn error(uri: &str) -> (StatusCode, serde_json::Value) {
        let (status, body) = answer(uri).await;
        (status, serde_json::from_slice(&body).unwrap_or_default())
    }

    #[tokio::test]
    async fn path_parameters_parse_into_their_types_in_the_routes_order() {
        let (status, body) = answer("/orders/o-1/payments/p_2").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"o-1 p_2");
    }

    #[tokio::test]
    async fn undecodable_text_in_a_path_parameter_is_a_400_naming_it() {
        for (uri, field) in [
            ("/orders/%FF/payments/p1", "order_id"),
            ("/orders/o1/payments/%C3%28", "payment_id"),
        ] {
            let (status, body) = error(uri).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
            assert_eq!(body["code"], "invalid_path", "{uri}: {body}");
            assert_eq!(body["field"], field, "{uri}: {body}");
        }
    }

    #[test]
    fn json_ends_after_its_value_and_syntax_comes_before_values() {
        #[derive(serde::Deserialize, Debug)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct In {
            quantity: crate::domain::values::Quantity,
        }
        let code = |body: &[u8]| parse_json::<In>(body).err().map(|e| e.code());
        assert_eq!(code(b"{\"quantity\": 47}"), None);
        assert_eq!(code(b" {\"quantity\": 47} \r\n\t"), None);
        for trailing in [&b"garbage"[..], b"{}", b"\0", b"]", b"\xff"] {
            let body = [&b"{\"quantity\": 47}"[..], trailing].concat();
            assert_eq!(code(&body), Some("malformed_json"), "{trailing:?}");
            let body = [&b"{\"quantity\": 0}"[..], trailing].concat();
            assert_eq!(
                code(&body),
                Some("malformed_json"),
                "a wrong value, then junk"
            );
        }
        assert_eq!(code(b"{\"quantity\": 0}"), Some("invalid_field"));
        let deep = format!(
            "{{\"quantity\": {}1{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        // Deep, but JSON: refused for its type, without recursing through it.
        assert_eq!(code(deep.as_bytes()), Some("invalid_field"));
        assert_eq!(
            code(&deep.as_bytes()[..deep.len() - 1]),
            Some("malformed_json")
        );
        assert_eq!(code(b"{\"quantity\": 1e400}"), Some("malformed_json"));
        assert_eq!(code(b"{\"other\": \"\xc3\x28\"}"), Some("malformed_json"));
    }

    #[tokio::test]
    async fn control_characters_in_a_path_parameter_are_a_422_naming_it() {
        for (uri, field) in [
            ("/orders/a%00/payments/p1", "order_id"),
            ("/orders/o1/payments/%1B", "payment_id"),
            ("/orders/%2E%2E/payments/p1", "order_id"),
        ] {
            let (status, body) = error(uri).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {body}");
            assert_eq!(body["field"], field, "{uri}: {body}");
        }
    }

    #[tokio::test]
    async fn a_path_value_its_type_refuses_is_a_422_naming_the_parameter() {
        for (uri, field) in [
            ("/orders/a%20b/payments/p1", "order_id"),
            ("/orders/o1/payments/a%2Fb", "payment_id"),
        ] {
            let (status, body) = error(uri).await;
            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {body}");
            assert_eq!(body["code"], "invalid_field", "{uri}: {body}");
            assert_eq!(body["field"], field, "{uri}: {body}");
        }
    }
}
