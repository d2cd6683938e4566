//! The API's one error type. Every failure a client can see has a stable machine `code`,
//! a sentence in `detail`, and, for a bad value, the `field` it came from:
//! `{"code": "invalid_field", "detail": "…", "field": "lines[0].quantity"}`.
//!
//! Client errors are logged at debug level only; anything unexpected becomes an opaque
//! 500 (`internal_error`), logged once with its cause.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::inventory::InventoryError;
use crate::domain::order::OrderError;
use crate::domain::values::ValueError;
use crate::process::placement::PlacementError;
use crate::store::commands::CommandError;
use crate::store::writer::WriteError;
use crate::store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    detail: String,
    field: Option<String>,
    /// More machine-readable facts, under their own key (such as `short` SKUs).
    extra: Option<(&'static str, serde_json::Value)>,
}

/// Marks a response whose failure was transient (a conflict, an outage): a retry with
/// the same idempotency key must run again rather than replay it.
#[derive(Debug, Clone, Copy)]
pub struct Transient;

#[derive(Serialize)]
struct ErrorOut<'a> {
    code: &'a str,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(flatten, skip_serializing_if = "serde_json::Map::is_empty")]
    extra: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            field: None,
            extra: None,
        }
    }

    pub fn with_extra(mut self, key: &'static str, value: serde_json::Value) -> Self {
        self.extra = Some((key, value));
        self
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// A value that parsed as JSON but breaks a rule of its type.
    pub fn invalid_field(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        let field = field.into();
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("`{field}` {reason}"),
        )
        .with_field(field)
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn not_found(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, detail)
    }

    /// An unexpected failure: logged here with its cause, opaque to the client.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "request failed unexpectedly");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the server failed to handle the request; it has been logged",
        )
    }

    /// Saturated: 503 with `Retry-After`, logged as a warning with its cause.
    pub fn unavailable(cause: &dyn std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "request refused: the database is saturated");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the server is saturated; retry after the delay in Retry-After",
        )
    }

    /// Overloaded: the command could not start within `ORDERLOG_COMMAND_DEADLINE` and
    /// nothing was written. Counted (`orderlog_commands_shed_total`) rather than logged:
    /// under overload a line per refusal would flood the log.
    pub fn saturated() -> Self {
        metrics::counter!("orderlog_commands_shed_total").increment(1);
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "saturated",
            "the server is overloaded and did not start this command; nothing was written; \
             retry after the delay in Retry-After",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The sentence the client reads.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

/// Names the field a typed value came from.
pub trait FieldExt<T> {
    fn field(self, name: impl Into<String>) -> Result<T, ApiError>;
}

impl<T> FieldExt<T> for Result<T, ValueError> {
    fn field(self, name: impl Into<String>) -> Result<T, ApiError> {
        self.map_err(|e| ApiError::invalid_field(name, e))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if !self.status.is_server_error() {
            tracing::debug!(code = self.code, detail = %self.detail, "request refused");
        }
        let body = serde_json::to_vec(&ErrorOut {
            code: self.code,
            detail: &self.detail,
            field: self.field.as_deref(),
            extra: self
                .extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        })
        .unwrap_or_default();
        let mut response = (self.status, body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if self.status.is_server_error() || self.code == "conflict" {
            response.extensions_mut().insert(Transient);
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match &error {
            StoreError::Database(e) if crate::store::is_saturation(e) => {
                ApiError::unavailable(&error)
            }
            StoreError::Write(WriteError::Unavailable(_)) => ApiError::unavailable(&error),
            StoreError::Write(WriteError::Saturated) => ApiError::saturated(),
            _ => ApiError::internal(&error),
        }
    }
}

impl From<OrderError> for ApiError {
    fn from(error: OrderError) -> Self {
        use StatusCode as S;
        let (status, code, field) = match &error {
            OrderError::AlreadyExists { .. } => (S::CONFLICT, "order_exists", Some("order_id")),
            OrderError::NotFound => (S::NOT_FOUND, "order_not_found", None),
            OrderError::NoLines => (S::UNPROCESSABLE_ENTITY, "no_lines", Some("lines")),
            OrderError::DuplicateLine { .. } => {
                (S::UNPROCESSABLE_ENTITY, "duplicate_line", Some("lines"))
            }
            OrderError::CurrencyMismatch => (
                S::UNPROCESSABLE_ENTITY,
                "currency_mismatch",
                Some("currency"),
            ),
            OrderError::TotalTooLarge => {
                (S::UNPROCESSABLE_ENTITY, "total_too_large", Some("lines"))
            }
            OrderError::ChargeCurrencyMismatch => (
                S::UNPROCESSABLE_ENTITY,
                "currency_mismatch",
                Some("currency"),
            ),
            OrderError::DiscountLineNotInOrder { .. } => (
                S::UNPROCESSABLE_ENTITY,
                "line_not_in_order",
                Some("discounts"),
            ),
            OrderError::DiscountExceedsLine { .. } | OrderError::DiscountExceedsSubtotal { .. } => {
                (
                    S::UNPROCESSABLE_ENTITY,
                    "discount_exceeds_amount",
                    Some("discounts"),
                )
            }
            OrderError::Cancelled => (S::CONFLICT, "order_cancelled", None),
            OrderError::Expired => (S::CONFLICT, "order_expired", None),
            OrderError::PaymentInProgress { .. } => (S::CONFLICT, "payment_in_progress", None),
            OrderError::AlreadyPaid => (S::CONFLICT, "already_paid", None),
            OrderError::AmountMismatch { .. } => {
                (S::UNPROCESSABLE_ENTITY, "amount_mismatch", Some("amount"))
            }
            OrderError::PaymentExists { .. } => (S::CONFLICT, "payment_exists", Some("payment_id")),
            OrderError::PaymentNotFound { .. } => (S::NOT_FOUND, "payment_not_found", None),
            OrderError::PaymentNotPending { .. } => (S::CONFLICT, "payment_not_pending", None),
            OrderError::NotPaid => (S::CONFLICT, "order_not_paid", None),
            OrderError::AlreadyShipped { .. } => (S::CONFLICT, "order_already_shipped", None),
            OrderError::NothingToShip => (S::CONFLICT, "nothing_to_ship", None),
            OrderError::LineNotInOrder { .. } => {
                (S::UNPROCESSABLE_ENTITY, "line_not_in_order", Some("lines"))
            }
            OrderError::ShipmentExceedsRemaining { .. } => (
                S::UNPROCESSABLE_ENTITY,
                "shipment_exceeds_remaining",
                Some("lines"),
            ),
            OrderError::ShipmentExists { .. } => {
                (S::CONFLICT, "shipment_exists", Some("shipment_id"))
            }
            OrderError::ShipmentNotFound { .. } => (S::NOT_FOUND, "shipment_not_found", None),
            OrderError::AlreadyDelivered { .. } => {
                (S::CONFLICT, "shipment_already_delivered", None)
            }
            OrderError::NothingCaptured => (S::CONFLICT, "nothing_to_refund", None),
            OrderError::RefundExceedsCaptured { .. } => (
                S::UNPROCESSABLE_ENTITY,
                "refund_exceeds_captured",
                Some("amount"),
            ),
            OrderError::RefundExists { .. } => (S::CONFLICT, "refund_exists", Some("refund_id")),
        };
        let api = ApiError::new(status, code, error.to_string());
        match field {
            Some(field) => api.with_field(field),
            None => api,
        }
    }
}

impl From<InventoryError> for ApiError {
    fn from(error: InventoryError) -> Self {
        use StatusCode as S;
        let (status, code, field) = match &error {
            InventoryError::NotTracked { .. } => (S::NOT_FOUND, "sku_not_found", None),
            InventoryError::WouldGoNegative { .. } => {
                (S::CONFLICT, "available_would_go_negative", Some("delta"))
            }
            InventoryError::ZeroAdjustment => {
                (S::UNPROCESSABLE_ENTITY, "invalid_field", Some("delta"))
            }
            InventoryError::AlreadyReserved { .. } => (S::CONFLICT, "already_reserved", None),
            InventoryError::InsufficientStock { .. } => (S::CONFLICT, "insufficient_stock", None),
            InventoryError::TooMuchStock => {
                (S::UNPROCESSABLE_ENTITY, "stock_too_large", Some("quantity"))
            }
        };
        let api = ApiError::new(status, code, error.to_string());
        match field {
            Some(field) => api.with_field(field),
            None => api,
        }
    }
}

impl From<PlacementError> for ApiError {
    fn from(error: PlacementError) -> Self {
        match error {
            PlacementError::OutOfStock { short } => ApiError::new(
                StatusCode::CONFLICT,
                "out_of_stock",
                PlacementError::OutOfStock {
                    short: short.clone(),
                }
                .to_string(),
            )
            .with_extra("short", serde_json::to_value(&short).unwrap_or_default()),
            PlacementError::UnknownSkus { skus } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_sku",
                PlacementError::UnknownSkus { skus: skus.clone() }.to_string(),
            )
            .with_field("lines")
            .with_extra("skus", serde_json::to_value(&skus).unwrap_or_default()),
            pending @ PlacementError::Pending { .. } => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "placement_pending",
                pending.to_string(),
            )
            .with_field("order_id"),
            PlacementError::Order(e) => e.into(),
            PlacementError::Inventory(e) => e.into(),
            PlacementError::Injected => ApiError::internal(&"injected placement fault"),
        }
    }
}

impl<E> From<CommandError<E>> for ApiError
where
    E: std::error::Error + Into<ApiError>,
{
    fn from(error: CommandError<E>) -> Self {
        match error {
            CommandError::Rejected(e) => e.into(),
            CommandError::Conflict => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                "the order was changed by concurrent requests; retry the request",
            ),
            CommandError::Unavailable(e) => ApiError::unavailable(&e),
            CommandError::Saturated => ApiError::saturated(),
            CommandError::Store(e) => ApiError::internal(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saturated_store_answers_503_with_retry_after() {
        let error: ApiError = StoreError::Database(sqlx::Error::PoolTimedOut).into();
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(error.code(), "unavailable");
        let response = error.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert!(response.extensions().get::<Transient>().is_some());

        let error: ApiError =
            CommandError::<OrderError>::Unavailable("pool timed out".into()).into();
        assert_eq!(error.status(), StatusCode::SERVICE_UNAVAILABLE);
        let error: ApiError = StoreError::Corrupt("bad row".into()).into();
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
