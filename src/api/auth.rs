//! The bearer-token gate in front of every route but `/health` and `/ready`.
//!
//! It authenticates the token (401 `unauthenticated`), then checks the scope the
//! matched route declared in its [`Routes`](super::scoped::Routes) table (403
//! `forbidden`, naming the scope in `field`), and the token's rate (429
//! `rate_limited`). It runs before the idempotency layer and every handler, so a
//! refused request writes nothing. A route missing from the table is refused for
//! everyone: forgetting a scope closes a route rather than opening it.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::scoped::RouteScope;
use crate::auth::{AuthError, Principal, Scope};
use crate::state::AppState;

/// Each route's scope per method, from the routes' own declarations.
#[derive(Clone)]
pub struct Gate {
    state: AppState,
    scopes: Arc<HashMap<String, Vec<(Method, Scope)>>>,
}

impl Gate {
    pub fn new(state: AppState, table: &[RouteScope]) -> Gate {
        let mut scopes: HashMap<String, Vec<(Method, Scope)>> = HashMap::new();
        for route in table {
            scopes
                .entry(route.path.clone())
                .or_default()
                .push((route.method.clone(), route.scope));
        }
        Gate {
            state,
            scopes: Arc::new(scopes),
        }
    }
}

pub async fn authorize(State(gate): State<Gate>, mut request: Request, next: Next) -> Response {
    let Some(presented) = bearer(&request) else {
        return refuse(AuthError::Missing);
    };
    let principal = match gate.state.tokens.authenticate(presented).await {
        Ok(principal) => principal,
        Err(error) => return refuse(error),
    };
    if let Some(route) = request.extensions().get::<MatchedPath>() {
        match needed(&gate, route.as_str(), request.method()) {
            Needed::Scope(scope) if !principal.scopes.allows(scope) => {
                return forbidden(scope);
            }
            Needed::Scope(_) | Needed::MethodNotAllowed => {}
            Needed::Undeclared => {
                tracing::error!(
                    route = route.as_str(),
                    "a route without a declared scope was refused; declare it in its Routes"
                );
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "this route declares no scope, so no token may use it",
                )
                .into_response();
            }
        }
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

enum Needed {
    Scope(Scope),
    /// The route exists, not with this method: the router answers 405.
    MethodNotAllowed,
    Undeclared,
}

fn needed(gate: &Gate, route: &str, method: &Method) -> Needed {
    let Some(methods) = gate.scopes.get(route) else {
        return Needed::Undeclared;
    };
    // HEAD is answered by the GET handler, so it needs what GET needs.
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    methods
        .iter()
        .find(|(m, _)| m == method)
        .map_or(Needed::MethodNotAllowed, |(_, scope)| Needed::Scope(*scope))
}

/// The token of `Authorization: Bearer <token>` (the scheme in any case).
fn bearer(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn forbidden(scope: Scope) -> Response {
    metrics::counter!("orderlog_auth_failures_total", "reason" => "forbidden").increment(1);
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("this token does not hold the scope `{scope}`, which this route needs"),
    )
    .with_field(scope.as_str())
    .into_response()
}

fn refuse(error: AuthError) -> Response {
    let reason = match error {
        AuthError::Missing => "missing",
        AuthError::Unknown => "unknown",
        AuthError::Expired { .. } => "expired",
        AuthError::Revoked { .. } => "revoked",
        AuthError::RateLimited { .. } => "rate_limited",
        AuthError::Store(_) => "store",
    };
    metrics::counter!("orderlog_auth_failures_total", "reason" => reason).increment(1);
    let detail = error.to_string();
    let challenge = match error {
        AuthError::Missing => "Bearer realm=\"orderlog\"",
        AuthError::Unknown | AuthError::Expired { .. } | AuthError::Revoked { .. } => {
            "Bearer realm=\"orderlog\", error=\"invalid_token\""
        }
        AuthError::RateLimited { retry_after, .. } => {
            let mut response = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", detail)
                .into_response();
            // Whole seconds, rounded up: a client that waits that long gets through.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            return response;
        }
        AuthError::Store(e) => return ApiError::from(e).into_response(),
    };
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", detail).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}

/// The principal the gate let in. Only reachable behind the gate: a handler that
/// finds none is a routing bug, reported as one.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Principal>().cloned().ok_or_else(|| {
            ApiError::internal(&"a handler behind the token gate found no principal")
        })
    }
}
