//! Storefront deliveries read into snapshots, and the plan that brings our order to one.
//!
//! Pure: no I/O, no database, no clock, no async. A webhook's body goes in
//! (`shopify::parse`, `woocommerce::parse`, or [`parse`] for either) and comes out as a
//! [`Delivery`] in typed values; [`plan::next_step`] then names the one command that moves
//! our order closer to it. Everything here imports only `crate::domain`; the HTTP side
//! (signatures, the inbox, the applier loop) lives elsewhere and calls in.

pub mod money;
mod personal;
pub mod plan;
pub mod shopify;
pub mod snapshot;
pub mod woocommerce;

#[cfg(test)]
mod tests;

pub use money::{Amount, AmountError};
pub use plan::{next_step, order_id, Step};
pub use snapshot::*;

use crate::domain::values::{Currency, CustomerId, Money, Sku, Text, ValueError};

/// Why a delivery cannot be read or planned. Each variant has a stable [`code`] and a
/// sentence the merchant can act on.
///
/// [`code`]: PayloadError::code
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PayloadError {
    #[error("the body is not valid JSON ({detail}); the platform sends JSON for this topic")]
    NotJson { detail: String },
    #[error("`{path}` is required in the payload and is missing")]
    MissingField { path: String },
    #[error("`{path}` is invalid: {detail}")]
    InvalidField { path: String, detail: String },
    #[error("`{field}` is not an amount we can take exactly (`{raw}`): it {reason}")]
    InvalidAmount {
        field: String,
        raw: String,
        reason: AmountError,
    },
    #[error("currency `{code}` is not an ISO 4217 currency in circulation; set the shop's currency to one")]
    UnsupportedCurrency { code: String },
    #[error("`{field}` {reason}")]
    InvalidValue { field: String, reason: ValueError },
    #[error(
        "the order's lines, discounts, shipping and taxes add up to {computed} minor units, \
         not the platform's total {platform}; charges we do not model (tips, duties, fees) \
         or an edit would explain it: check the order on the storefront"
    )]
    TotalsDisagree { computed: i128, platform: Money },
    #[error(
        "SKU `{sku}` is on two lines at different unit prices; our order keeps one price per \
         SKU, so give the lines distinct SKUs"
    )]
    ConflictingLinePrices { sku: Sku },
    #[error(
        "line `{line_id}` totals {total} minor units over {quantity} unit(s), which is no \
         whole unit price in minor units"
    )]
    UnevenUnitPrice {
        line_id: String,
        total: i64,
        quantity: u32,
    },
    #[error("status `{status}` is not one we know how to follow; use one of the platform's own statuses")]
    UnsupportedStatus { status: String },
    #[error(
        "the order has {what}, which our orders do not model; remove it or record it as a discount"
    )]
    UnsupportedCharge { what: &'static str },
    #[error(
        "the platform says {paid} was paid, but our order is for {total}; the order was \
         edited on the storefront after it was placed, which we do not follow"
    )]
    PaymentDisagrees { paid: Money, total: Money },
}

impl PayloadError {
    /// The stable machine code: a contract with whoever reads the inbox.
    pub fn code(&self) -> &'static str {
        match self {
            PayloadError::NotJson { .. }
            | PayloadError::MissingField { .. }
            | PayloadError::InvalidField { .. } => "invalid_payload",
            PayloadError::InvalidAmount { .. } => "invalid_amount",
            PayloadError::UnsupportedCurrency { .. } => "unsupported_currency",
            PayloadError::InvalidValue { .. } => "invalid_value",
            PayloadError::TotalsDisagree { .. } => "totals_disagree",
            PayloadError::ConflictingLinePrices { .. } => "conflicting_line_prices",
            PayloadError::UnevenUnitPrice { .. } => "uneven_unit_price",
            PayloadError::UnsupportedStatus { .. } => "unsupported_status",
            PayloadError::UnsupportedCharge { .. } => "unsupported_charge",
            PayloadError::PaymentDisagrees { .. } => "payment_disagrees",
        }
    }

    pub(crate) fn value(field: impl Into<String>) -> impl FnOnce(ValueError) -> PayloadError {
        let field = field.into();
        move |reason| PayloadError::InvalidValue { field, reason }
    }
}

/// Reads one delivery of `platform`'s `topic`.
pub fn parse(platform: Platform, topic: &str, body: &[u8]) -> Result<Delivery, PayloadError> {
    match platform {
        Platform::Shopify => shopify::parse(topic, body),
        Platform::WooCommerce => woocommerce::parse(topic, body),
    }
}

/// A payload deserialised into `T`, or an error naming the JSON path that broke.
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, PayloadError> {
    use serde_json::error::Category;
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let detail = strip_position(&inner.to_string());
        match inner.classify() {
            Category::Syntax | Category::Eof | Category::Io => PayloadError::NotJson { detail },
            Category::Data => match detail.strip_prefix("missing field `") {
                // serde reports a missing field at its parent; name the field itself.
                Some(rest) => {
                    let name = rest.trim_end_matches('`');
                    PayloadError::MissingField {
                        path: if path == "." {
                            name.to_owned()
                        } else {
                            format!("{path}.{name}")
                        },
                    }
                }
                None => PayloadError::InvalidField { path, detail },
            },
        }
    })?;
    de.end().map_err(|e| PayloadError::NotJson {
        detail: strip_position(&e.to_string()),
    })?;
    Ok(value)
}

/// serde_json appends " at line 1 column 42"; the path already says where.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Turns an [`AmountError`] into the payload error naming `field`.
pub(crate) fn amount_error(
    field: impl Into<String>,
    raw: &Amount,
) -> impl FnOnce(AmountError) -> PayloadError {
    let field = field.into();
    let raw = raw.as_str().to_owned();
    move |reason| PayloadError::InvalidAmount { field, raw, reason }
}

/// Free text from a payload: `None` when absent or blank, else a [`Text`] or an error
/// naming `field`.
pub(crate) fn optional_text(field: &str, raw: Option<&str>) -> Result<Option<Text>, PayloadError> {
    match raw.map(str::trim).filter(|r| !r.is_empty()) {
        None => Ok(None),
        Some(raw) => Text::parse(raw)
            .map(Some)
            .map_err(PayloadError::value(field)),
    }
}

/// A payload's currency code, or `unsupported_currency`.
pub(crate) fn currency(raw: &str) -> Result<Currency, PayloadError> {
    Currency::parse(raw).map_err(|_| PayloadError::UnsupportedCurrency {
        code: raw.to_owned(),
    })
}

/// The customer of an order placed without an account.
pub(crate) fn guest() -> CustomerId {
    CustomerId::parse("guest").expect("`guest` is a valid customer id")
}

/// A title of our own, for a charge the platform left untitled.
pub(crate) fn fixed(text: &'static str) -> Text {
    Text::parse(text).expect("a fixed title is valid text")
}
