//! `/v1/admin/projections`: the state of every projection, and the operator's levers:
//! rebuild, retry, skip the failing event, stop.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use super::error::ApiError;
use super::extract::PathParams;
use super::openapi::Op;
use super::scoped::Routes;
use crate::auth::Scope;
use crate::projections::runner::{RunnerError, Status};
use crate::state::AppState;

pub fn routes() -> Routes {
    use Scope::ProjectionsManage as Manage;
    Routes::new()
        .get("/admin/projections", Manage, list)
        .get("/admin/projections/{name}", Manage, show)
        .post("/admin/projections/{name}/rebuild", Manage, rebuild)
        .post("/admin/projections/{name}/retry", Manage, retry)
        .post("/admin/projections/{name}/skip", Manage, skip)
        .post("/admin/projections/{name}/stop", Manage, stop)
}

/// What [`routes`] serves, for `GET /openapi.json`.
pub fn operations() -> Vec<Op> {
    let named = |op: Op| op.error(404, "projection_not_found");
    vec![
        Op::get("/v1/admin/projections", "Every projection's state")
            .json::<ListOut>(200, "every projection"),
        named(Op::get(
            "/v1/admin/projections/{name}",
            "A projection's state",
        ))
        .json::<Status>(200, "the projection"),
        named(Op::post(
            "/v1/admin/projections/{name}/rebuild",
            "Start a blue/green rebuild",
        ))
        .json::<Status>(202, "the projection, its rebuild started")
        .error(409, "the projection is busy"),
        named(Op::post(
            "/v1/admin/projections/{name}/retry",
            "Resume a failed or stopped projection",
        ))
        .json::<Status>(200, "the projection")
        .error(409, "the projection is busy"),
        named(Op::post(
            "/v1/admin/projections/{name}/skip",
            "Skip the event it failed on",
        ))
        .json::<Status>(200, "the projection")
        .error(409, "the projection is busy"),
        named(Op::post(
            "/v1/admin/projections/{name}/stop",
            "Stop a projection",
        ))
        .json::<Status>(200, "the projection")
        .error(409, "the projection is busy"),
    ]
}

impl From<RunnerError> for ApiError {
    fn from(error: RunnerError) -> Self {
        match error {
            RunnerError::Unknown(_) => {
                ApiError::not_found("projection_not_found", error.to_string())
            }
            RunnerError::WrongState { .. } | RunnerError::RebuildFailed { .. } => ApiError::new(
                StatusCode::CONFLICT,
                "projection_state_conflict",
                error.to_string(),
            ),
            RunnerError::Store(e) => e.into(),
            RunnerError::Projection(e) => ApiError::internal(&e),
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = ProjectionList)]
struct ListOut {
    projections: Vec<Status>,
}

async fn list(State(state): State<AppState>) -> Result<Json<ListOut>, ApiError> {
    Ok(Json(ListOut {
        projections: state.projections.status().await?,
    }))
}

async fn show(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Result<Json<Status>, ApiError> {
    Ok(Json(state.projections.status_one(&name).await?))
}

async fn rebuild(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Result<(StatusCode, Json<Status>), ApiError> {
    state.projections.rebuild(&name).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(state.projections.status_one(&name).await?),
    ))
}

async fn retry(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Result<Json<Status>, ApiError> {
    state.projections.retry(&name).await?;
    Ok(Json(state.projections.status_one(&name).await?))
}

async fn skip(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Result<Json<Status>, ApiError> {
    state.projections.skip(&name).await?;
    Ok(Json(state.projections.status_one(&name).await?))
}

async fn stop(
    State(state): State<AppState>,
    PathParams(name): PathParams<String>,
) -> Result<Json<Status>, ApiError> {
    state.projections.stop(&name).await?;
    Ok(Json(state.projections.status_one(&name).await?))
}
