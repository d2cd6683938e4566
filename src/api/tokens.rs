//! `/v1/tokens`: API tokens, for holders of `tokens:manage`. A token's text is in the
//! answer to its creation and nowhere else; a token never grants (or revokes) scopes
//! its own holder lacks.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{JsonBody, PathParams};
use super::openapi::Op;
use super::scoped::Routes;
use crate::auth::store::TokenRecord;
use crate::auth::{NewToken, Principal, Rate, Scope, Scopes, TokenError, TokenName};
use crate::state::AppState;
use utoipa::ToSchema;

pub fn routes() -> Routes {
    use Scope::TokensManage as Manage;
    Routes::new()
        .post("/tokens", Manage, create)
        .get("/tokens", Manage, list)
        .delete("/tokens/{name}", Manage, revoke)
}

/// What [`routes`] serves, for `GET /openapi.json`.
pub fn operations() -> Vec<Op> {
    vec![
        Op::post("/v1/tokens", "Make a token, shown this once")
            .json_body::<TokenIn>()
            .json::<TokenOut>(201, "the token's record and the `token`, shown this once")
            .error(403, "forbidden: a scope the caller does not hold itself")
            .error(409, "token_exists"),
        Op::get("/v1/tokens", "Every token's record, without the token")
            .json::<TokensOut>(200, "`{tokens}`, without `token`"),
        Op::delete("/v1/tokens/{name}", "Revoke a token")
            .param(
                "name",
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .pattern(Some("^[A-Za-z0-9._:-]{1,64}$"))
                    .into(),
            )
            .empty(204, "revoked")
            .error(
                403,
                "forbidden: the token holds a scope the caller does not",
            )
            .error(404, "token_not_found"),
    ]
}

impl From<TokenError> for ApiError {
    fn from(error: TokenError) -> Self {
        let detail = error.to_string();
        match error {
            TokenError::Exists(_) => {
                ApiError::new(StatusCode::CONFLICT, "token_exists", detail).with_field("name")
            }
            TokenError::NotFound(_) => ApiError::not_found("token_not_found", detail),
            TokenError::Beyond(scope) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", detail).with_field(scope.as_str())
            }
            TokenError::Store(e) => e.into(),
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TokenIn {
    name: String,
    scopes: Vec<String>,
    /// A humantime span from now: `90d`, `12h`.
    expires_in: Option<String>,
    /// `200/s`, `1000/min`.
    rate: Option<String>,
}

impl TokenIn {
    fn parse(self) -> Result<NewToken, ApiError> {
        Ok(NewToken {
            name: TokenName::parse(&self.name).map_err(|e| ApiError::invalid_field("name", e))?,
            scopes: Scopes::parse_list(self.scopes.iter().map(String::as_str))
                .map_err(|e| ApiError::invalid_field("scopes", e))?,
            expires_in: self
                .expires_in
                .as_deref()
                .map(crate::delivery::settings::nonzero_duration)
                .transpose()
                .map_err(|e| ApiError::invalid_field("expires_in", e))?,
            rate: self
                .rate
                .as_deref()
                .map(Rate::parse)
                .transpose()
                .map_err(|e| ApiError::invalid_field("rate", e))?,
        })
    }
}

#[derive(Serialize, ToSchema)]
struct TokenOut {
    name: String,
    scopes: Vec<&'static str>,
    rate: Option<String>,
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
    last_used_at: Option<String>,
    /// Only in the answer to a creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl From<&TokenRecord> for TokenOut {
    fn from(record: &TokenRecord) -> Self {
        TokenOut {
            name: record.name.to_string(),
            scopes: record.scopes.names(),
            rate: record.rate.map(|r| r.to_string()),
            created_at: rfc3339(record.created_at),
            expires_at: record.expires_at.map(rfc3339),
            revoked_at: record.revoked_at.map(rfc3339),
            last_used_at: record.last_used_at.map(rfc3339),
            token: None,
        }
    }
}

async fn create(
    State(state): State<AppState>,
    principal: Principal,
    JsonBody(body): JsonBody<TokenIn>,
) -> Result<Response, ApiError> {
    let new = body.parse()?;
    let (record, token) = state.tokens.create(new, principal.scopes).await?;
    tracing::info!(token = %record.name, by = %principal.name, scopes = %record.scopes, "token created");
    let out = TokenOut {
        token: Some(token.as_str().to_owned()),
        ..TokenOut::from(&record)
    };
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

#[derive(Serialize, ToSchema)]
struct TokensOut {
    tokens: Vec<TokenOut>,
}

async fn list(State(state): State<AppState>) -> Result<Json<TokensOut>, ApiError> {
    let tokens = state.tokens.list().await?;
    Ok(Json(TokensOut {
        tokens: tokens.iter().map(TokenOut::from).collect(),
    }))
}

async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    PathParams(name): PathParams<TokenName>,
) -> Result<StatusCode, ApiError> {
    state.tokens.revoke(&name, principal.scopes).await?;
    tracing::info!(token = %name, by = %principal.name, "token revoked");
    Ok(StatusCode::NO_CONTENT)
}
