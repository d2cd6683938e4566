//! `/v1/customers/{id}`: erasing a customer's personal data (`process::erasure`), and
//! its state. Both need scope `privacy:erase`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::error::{ApiError, FieldExt};
use super::extract::{CommandContext, OptionalJsonBody, PathParams};
use super::openapi::Op;
use super::scoped::Routes;
use crate::auth::Scope;
use crate::domain::customer::{CustomerError, Erase};
use crate::domain::values::{CustomerId, Text};
use crate::process::erasure::{ErasureError, Erasures, Receipt};
use crate::state::AppState;
use utoipa::ToSchema;

pub fn routes() -> Routes {
    Routes::new()
        .post("/customers/{customer_id}/erase", Scope::PrivacyErase, erase)
        .get(
            "/customers/{customer_id}/erasure",
            Scope::PrivacyErase,
            erasure,
        )
}

/// What [`routes`] serves, for `GET /openapi.json`.
pub fn operations() -> Vec<Op> {
    let customer = |op: Op| {
        op.param(
            "customer_id",
            <CustomerId as utoipa::PartialSchema>::schema(),
        )
    };
    vec![
        customer(Op::post(
            "/v1/customers/{customer_id}/erase",
            "Erase a customer's personal data",
        ))
        .optional_json_body::<EraseIn>()
        .json::<Receipt>(200, "the erasure receipt"),
        customer(Op::get(
            "/v1/customers/{customer_id}/erasure",
            "A customer's erasure receipt",
        ))
        .json::<Receipt>(
            200,
            "the receipt; `state: not_erased` for a customer never erased",
        ),
    ]
}

#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
struct EraseIn {
    /// Why, for the record ("GDPR request #4411"): never personal data.
    reason: Option<Text>,
}

impl From<CustomerError> for ApiError {
    fn from(error: CustomerError) -> Self {
        match error {}
    }
}

impl From<ErasureError> for ApiError {
    fn from(error: ErasureError) -> Self {
        match error {
            ErasureError::Command(e) => e.into(),
            ErasureError::Store(e) => e.into(),
        }
    }
}

fn erasures(state: &AppState) -> Erasures<'_> {
    Erasures {
        db: &state.db,
        customers: &state.customers,
        vault: &state.vault,
    }
}

/// Destroys the customer's data keys and appends `customer.erased`; answers with the
/// receipt. Erasing again is allowed, and destroys what arrived since.
#[tracing::instrument(skip_all, fields(customer_id = %customer_id))]
async fn erase(
    State(state): State<AppState>,
    PathParams(customer_id): PathParams<CustomerId>,
    ctx: CommandContext,
    OptionalJsonBody(body): OptionalJsonBody<EraseIn>,
) -> Result<Response, ApiError> {
    let metadata = ctx.0;
    let text = |raw: &str, field: &'static str| Text::parse(raw).field(field);
    let command = Erase {
        customer_id,
        requested_by: text(&metadata.actor, "actor")?,
        on_behalf_of: metadata
            .on_behalf_of
            .as_deref()
            .map(|w| text(w, "X-Actor"))
            .transpose()?,
        reason: body.reason,
        at: metadata.received_at,
    };
    let receipt: Receipt = erasures(&state).erase(command, &metadata).await?;
    Ok((StatusCode::OK, Json(receipt)).into_response())
}

async fn erasure(
    State(state): State<AppState>,
    PathParams(customer_id): PathParams<CustomerId>,
) -> Result<Json<Receipt>, ApiError> {
    Ok(Json(erasures(&state).state(customer_id).await?))
}
