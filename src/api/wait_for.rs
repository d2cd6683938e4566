//! Read-your-writes for a command: `X-Wait-For` names the projections a response waits
//! for, and `X-Wait-For-Result` says how the wait went. This module only waits on the
//! projections' progress; it never applies an event or reads a view itself.

use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;

use super::error::ApiError;
use super::extract::header_text;
use crate::state::AppState;
use crate::store::reader;

const WAIT_FOR: &str = "x-wait-for";
const WAIT_TIMEOUT: &str = "x-wait-timeout-ms";
/// The response header saying whether the projections waited for caught up.
const WAIT_RESULT: &str = "x-wait-for-result";
const DEFAULT_WAIT: Duration = Duration::from_secs(5);
const MAX_WAIT_MS: u64 = 30_000;

/// `X-Wait-For: order_summary,billing` (or `all`), with an optional
/// `X-Wait-Timeout-Ms` (default 5000, at most 30000): read-your-writes for a command.
pub struct WaitFor(pub Option<(Vec<&'static str>, Duration)>);

impl<S> FromRequestParts<S> for WaitFor
where
    S: Send + Sync,
    AppState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Some(raw) = header_text(&parts.headers, WAIT_FOR)? else {
            return Ok(WaitFor(None));
        };
        let known = AppState::from_ref(state).projections.names();
        let names = if raw == "all" {
            known
        } else {
            raw.split(',')
                .map(|name| {
                    known
                        .iter()
                        .copied()
                        .find(|k| *k == name.trim())
                        .ok_or_else(|| {
                            ApiError::bad_request(
                                "invalid_header",
                                format!(
                                    "`{name}` in X-Wait-For is not a projection; known: all, {}",
                                    known.join(", ")
                                ),
                            )
                            .with_field(WAIT_FOR)
                        })
                })
                .collect::<Result<Vec<_>, _>>()?
        };
        let timeout = match header_text(&parts.headers, WAIT_TIMEOUT)? {
            None => DEFAULT_WAIT,
            Some(ms) => ms
                .parse::<u64>()
                .ok()
                .filter(|ms| *ms <= MAX_WAIT_MS)
                .map(Duration::from_millis)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_header",
                        format!("X-Wait-Timeout-Ms must be a whole number of milliseconds up to {MAX_WAIT_MS}"),
                    )
                    .with_field(WAIT_TIMEOUT)
                })?,
        };
        Ok(WaitFor(Some((names, timeout))))
    }
}

impl WaitFor {
    /// Waits, when asked to, until the named projections have applied the aggregate's
    /// event at `sequence` (the command's last), and says how that went.
    pub async fn wait(
        self,
        state: &AppState,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: usize,
    ) -> Result<Option<HeaderValue>, ApiError> {
        let Some((names, timeout)) = self.0 else {
            return Ok(None);
        };
        let target = reader::cursor_of(&state.db, aggregate_type, aggregate_id, sequence as i64)
            .await?
            .ok_or_else(|| ApiError::internal(&"an accepted command's event is not in the log"))?;
        let lagging = state.projections.wait_for(&names, target, timeout).await;
        let result = if lagging.is_empty() {
            "caught_up".to_owned()
        } else {
            format!("timed_out; lagging={}", lagging.join(","))
        };
        Ok(HeaderValue::from_str(&result).ok())
    }
}

/// Adds `X-Wait-For-Result` to a response, when a wait happened.
pub fn with_wait_result(mut response: Response, waited: Option<HeaderValue>) -> Response {
    if let Some(waited) = waited {
        response
            .headers_mut()
            .insert(HeaderName::from_static(WAIT_RESULT), waited);
    }
    response
}
