//! `Idempotency-Key` for every POST, as one middleware rather than in each handler.
//!
//! The key is checked before the handler runs and travels with its command, whose
//! events commit with the claim (`store::idempotency`), and with its answer when the
//! command rendered it before the commit (a placed order); otherwise its response
//! (success or refusal) is kept here. It is replayed to a retry with the same key and
//! body, with the status, content type and body it first had. The same key with another body, path or
//! method is refused with 422 `idempotency_key_reused`. A transient failure (a conflict,
//! a 5xx) before anything was committed keeps nothing, so the retry really runs again.

use std::borrow::Cow;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use sha2::{Digest, Sha256};

use super::error::{ApiError, Transient};
use super::extract::{header_text, read_body, IDEMPOTENCY_KEY};
use crate::auth::Principal;
use crate::state::AppState;
use crate::store::idempotency::{Claim, KeyClaim};
use crate::store::writer::Answer;

/// The body to keep for retries in place of the one sent, when they differ: a response
/// that shows personal data keeps it sealed (`store::vault`), and its replay opens it,
/// so that a kept answer shows an erasure like every other reader.
#[derive(Clone)]
pub struct KeptBody(pub Vec<u8>);

pub async fn idempotency(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match run(state, request, next).await {
        Ok(response) | Err(response) => response,
    }
}

async fn run(state: AppState, request: Request, next: Next) -> Result<Response, Response> {
    if request.method() != Method::POST {
        return Ok(next.run(request).await);
    }
    let key =
        header_text(request.headers(), IDEMPOTENCY_KEY).map_err(IntoResponse::into_response)?;
    let Some(key) = key else {
        return Ok(next.run(request).await);
    };
    let (parts, body) = request.into_parts();
    // Held to the limit by `extract::limit_body`, in front of this layer.
    let bytes = read_body(body).await.map_err(IntoResponse::into_response)?;
    let token = parts.extensions.get::<Principal>().map_or("", |p| &p.name);
    let request_hash = fingerprint(token, &parts.method, parts.uri.path(), &bytes);

    let now = Utc::now();
    let in_flight = || {
        ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_key_in_flight",
            "a request with this Idempotency-Key is still being processed; retry shortly",
        )
        .into_response()
    };
    // Held before the check, so that a duplicate arriving meanwhile cannot also find the
    // key free.
    let Some(held) = state.idempotency.hold(&key).await else {
        return Err(in_flight());
    };
    let found = state
        .idempotency
        .check(&key, &request_hash, now)
        .await
        .map_err(|e| ApiError::from(e).into_response())?;
    match found {
        Claim::Free => {}
        Claim::Replay {
            status,
            content_type,
            body,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            // A response kept before migration 0011 has no type: it was served as JSON.
            let content_type = match content_type {
                Some(kept) => HeaderValue::from_str(&kept).ok(),
                None if body.is_empty() => None,
                None => Some(HeaderValue::from_static("application/json")),
            };
            let body = match std::str::from_utf8(&body) {
                Ok(text) => match state.vault.reveal(text).await {
                    Ok(Cow::Owned(revealed)) => revealed.into_bytes(),
                    Ok(Cow::Borrowed(_)) => body,
                    Err(e) => return Err(ApiError::from(e).into_response()),
                },
                Err(_) => body,
            };
            let mut response = (status, body).into_response();
            let headers = response.headers_mut();
            headers.remove(header::CONTENT_TYPE);
            if let Some(content_type) = content_type {
                headers.insert(header::CONTENT_TYPE, content_type);
            }
            headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
            return Ok(response);
        }
        Claim::Mismatch => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was already used for a different request",
            )
            .with_field(IDEMPOTENCY_KEY)
            .into_response())
        }
        Claim::InFlight => return Err(in_flight()),
        Claim::Lost => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_answer_lost",
                "the request with this Idempotency-Key took effect, but the server stopped \
                 before keeping its answer; it will not run again: read the resource to see \
                 what it did",
            )
            .with_field(IDEMPOTENCY_KEY)
            .into_response())
        }
    }

    let claim = KeyClaim::new(&key, &request_hash, now);
    let mut parts = parts;
    parts.extensions.insert(claim.clone());
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    if response.extensions().get::<Transient>().is_some() && !claim.taken() {
        return Ok(response);
    }
    if claim.answered() {
        // Kept already, in the commit of the command's events.
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    let kept = parts.extensions.remove::<KeptBody>();
    // Our handlers answer with small JSON bodies.
    let body = read_body(body).await.map_err(IntoResponse::into_response)?;
    // The command has taken effect: the client hears so even if keeping the response
    // fails. A claim that committed with the command's events then stays in flight until
    // it expires, so a retry is refused rather than run twice (and the client does not
    // wait for its answer's commit, `store::idempotency`); a request that appended
    // nothing (a refusal, a subscription or token created) and could not be kept is
    // run again by its retry.
    let answer = Answer {
        status: parts.status.as_u16(),
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: kept.map_or_else(|| body.to_vec(), |k| k.0),
    };
    if let Err(e) = state
        .idempotency
        .keep(held, &claim, answer, Utc::now())
        .await
    {
        tracing::error!(error = %e, "could not keep the response of an idempotent request");
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}

/// The request as a key's owner sent it. The token's name is part of it, so another
/// token presenting the same key is refused (`idempotency_key_reused`) instead of
/// being handed the first token's response.
fn fingerprint(token: &str, method: &Method, path: &str, body: &[u8]) -> String {
    let mut hash = Sha256::new();
    hash.update(token.as_bytes());
    hash.update(b"\n");
    hash.update(method.as_str().as_bytes());
    hash.update(b" ");
    hash.update(path.as_bytes());
    hash.update(b"\n");
    hash.update(body);
    hex::encode(hash.finalize())
}
