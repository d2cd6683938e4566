//! `/v1/ingest/{platform}/{source}`: the platforms' webhooks.
//!
//! These routes carry no bearer token: the signature is the authentication. The HMAC is
//! checked over the body's bytes exactly as received, in constant time, before anything
//! reads what the body says (a body parsed and serialised again would not verify:
//! Shopify escapes `/` as `\/`). A verified delivery is stored in the source's inbox,
//! with the key that makes a repeat of it a no-op, and acknowledged at once; the
//! applier (`apply`) turns it into commands afterwards, so a platform's timeout (5 s
//! for Shopify) is never spent on our work.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{middleware, Json, Router};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::api::error::ApiError;
use crate::api::openapi::{any_object, Op};
use crate::api::scoped::OpenRoutes;
use crate::api::{admission, extract};
use crate::domain::values::SourceName;
use crate::state::AppState;
use crate::store::sources::{self, Arrival, Platform};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// Outside the token gate: the signature is the authentication ([`guard`] adds the rest).
pub fn open_routes() -> OpenRoutes {
    OpenRoutes::new().post("/v1/ingest/{platform}/{source}", ingest)
}

/// What [`open_routes`]' router needs around it: no token gate, but the deadline, the
/// admission queue and the body limit of every command.
pub fn guard(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    router
        .layer(middleware::from_fn_with_state(
            state.clone(),
            extract::limit_body,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            admission::admit,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            extract::stamp_deadline,
        ))
}

/// What [`open_routes`] serves, for `GET /openapi.json`: no bearer token, the signature is
/// the authentication.
pub fn operations() -> Vec<Op> {
    vec![Op::post(
        "/v1/ingest/{platform}/{source}",
        "A storefront's signed webhook",
    )
    .param("platform", platform())
    .raw_body("application/json", any_object())
    .header(
        "X-Shopify-Hmac-Sha256",
        "Shopify's signature of the body",
        header_text(),
    )
    .header(
        "X-Shopify-Topic",
        "Shopify's topic (`orders/create`, …)",
        header_text(),
    )
    .header(
        "X-WC-Webhook-Signature",
        "WooCommerce's signature of the body",
        header_text(),
    )
    .header(
        "X-WC-Webhook-Topic",
        "WooCommerce's topic (`order.created`, …)",
        header_text(),
    )
    .json::<IngestOut>(
        200,
        "the delivery is in the inbox, was there already, or was a ping",
    )
    .error(400, "missing_topic, invalid_encoding")
    .error(401, "invalid_signature")
    .error(403, "wrong_shop")
    .error(404, "source_not_found")]
}

fn header_text() -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).into()
}

fn platform() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("`shopify` or `woocommerce`"))
        .into()
}

/// The headers a delivery's meaning depends on, kept with it in the inbox. Shopify's
/// newer "Events" deliveries send the same names without `X-`.
const KEPT_HEADERS: &[&str] = &[
    "x-shopify-topic",
    "x-shopify-shop-domain",
    "x-shopify-api-version",
    "x-shopify-webhook-id",
    "x-shopify-event-id",
    "x-shopify-triggered-at",
    "x-wc-webhook-source",
    "x-wc-webhook-topic",
    "x-wc-webhook-resource",
    "x-wc-webhook-event",
    "x-wc-webhook-id",
    "x-wc-webhook-delivery-id",
];

/// A header by its `X-` name, or by the same name without `X-` (Shopify "Events").
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .or_else(|| name.strip_prefix("x-").and_then(|bare| headers.get(bare)))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

fn invalid_signature(detail: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "invalid_signature", detail)
}

/// `base64(HMAC-SHA256(secret, body))` equals `signature` for one of the secrets, in
/// constant time (`verify_slice`).
fn signed_by<'a>(
    mut secrets: impl Iterator<Item = &'a sources::SourceSecret>,
    body: &[u8],
    signature: &str,
) -> bool {
    let Ok(expected) = BASE64.decode(signature) else {
        return false;
    };
    secrets.any(|secret| {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.key()) else {
            return false;
        };
        mac.update(body);
        mac.verify_slice(&expected).is_ok()
    })
}

/// A shop domain or site URL as compared: lowercase, without scheme or trailing `/`.
pub fn normal_shop(raw: &str) -> String {
    let lower = raw.trim().to_ascii_lowercase();
    let bare = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .unwrap_or(&lower);
    bare.trim_end_matches('/').to_owned()
}

/// WooCommerce's ping when a webhook is created: a form body `webhook_id=<n>`, unsigned
/// and without the X-WC headers. It needs a 200, and means nothing.
fn is_woocommerce_ping(headers: &HeaderMap, body: &[u8]) -> bool {
    header(headers, "x-wc-webhook-signature").is_none()
        && header(headers, "x-wc-webhook-topic").is_none()
        && body.starts_with(b"webhook_id=")
        && body[b"webhook_id=".len()..].iter().all(u8::is_ascii_digit)
}

pub fn body_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

async fn ingest(
    State(state): State<AppState>,
    Path((platform, source)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<IngestOut>), ApiError> {
    let received_at = Utc::now();
    let unknown = || {
        ApiError::not_found(
            "source_not_found",
            format!("there is no {platform} source named `{source}`"),
        )
    };
    let platform_kind = Platform::parse(&platform).ok_or_else(unknown)?;
    let name = SourceName::parse(&source).map_err(|_| unknown())?;
    let source = state
        .sources
        .get(&name)
        .await?
        .filter(|s| s.platform == platform_kind)
        .ok_or_else(unknown)?;
    if platform_kind == Platform::WooCommerce && is_woocommerce_ping(&headers, &body) {
        return Ok((
            StatusCode::OK,
            Json(IngestOut {
                status: Ingested::Ping,
            }),
        ));
    }
    let signature_header = match platform_kind {
        Platform::Shopify => "x-shopify-hmac-sha256",
        Platform::WooCommerce => "x-wc-webhook-signature",
    };
    let signature = header(&headers, signature_header).ok_or_else(|| {
        invalid_signature(&format!("the delivery has no `{signature_header}` header"))
    })?;
    if body.is_empty() || !signed_by(source.verifying_secrets(received_at), &body, signature) {
        return Err(invalid_signature(
            "the signature does not match the body under this source's secret",
        ));
    }
    let (topic_header, shop_header, dedup_key) = match platform_kind {
        Platform::Shopify => (
            "x-shopify-topic",
            "x-shopify-shop-domain",
            // A retry carries the delivery's webhook id: that is what repeats.
            header(&headers, "x-shopify-webhook-id")
                .map(|id| format!("webhook:{id}"))
                .unwrap_or_else(|| format!("sha256:{}", body_hash(&body))),
        ),
        // WooCommerce's delivery id is made anew for every send: the body is what repeats.
        Platform::WooCommerce => (
            "x-wc-webhook-topic",
            "x-wc-webhook-source",
            format!("sha256:{}", body_hash(&body)),
        ),
    };
    if let Some(expected) = &source.shop {
        let sent = header(&headers, shop_header).map(normal_shop);
        if sent.as_deref() != Some(expected.as_str()) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "wrong_shop",
                format!(
                    "source `{name}` takes deliveries from `{expected}` only; `{shop_header}` says {}",
                    sent.map_or_else(|| "nothing".to_owned(), |s| format!("`{s}`"))
                ),
            ));
        }
    }
    let topic = header(&headers, topic_header).ok_or_else(|| {
        ApiError::bad_request(
            "missing_topic",
            format!("a verified delivery needs its `{topic_header}` header"),
        )
    })?;
    let body = std::str::from_utf8(&body).map_err(|_| {
        ApiError::bad_request("invalid_encoding", "the delivery's body is not UTF-8")
    })?;
    let kept: serde_json::Map<String, Value> = KEPT_HEADERS
        .iter()
        .filter_map(|name| header(&headers, name).map(|v| ((*name).to_owned(), json!(v))))
        .collect();
    let source = name.as_str().to_owned();
    let stored = state
        .inbox
        .receive(Arrival {
            source: name,
            dedup_key,
            topic: topic.to_owned(),
            headers: Value::Object(kept).to_string(),
            body: body.to_owned(),
            received_at,
        })
        .await?;
    if stored {
        state.inbox_signal.notify_one();
    }
    let outcome = if stored {
        Ingested::Received
    } else {
        Ingested::Duplicate
    };
    metrics::counter!("orderlog_inbox_deliveries_total", "source" => source, "outcome" => outcome.as_str())
        .increment(1);
    Ok((StatusCode::OK, Json(IngestOut { status: outcome })))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct IngestOut {
    status: Ingested,
}

#[derive(Clone, Copy, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum Ingested {
    /// Stored in the inbox, to be applied.
    Received,
    /// Already in the inbox: the platform sent it again.
    Duplicate,
    /// WooCommerce's check that the URL answers; nothing stored.
    Ping,
}

impl Ingested {
    fn as_str(self) -> &'static str {
        match self {
            Ingested::Received => "received",
            Ingested::Duplicate => "duplicate",
            Ingested::Ping => "ping",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sources::SourceSecret;

    #[test]
    fn woocommerce_s_own_vector_verifies() {
        // From WooCommerce's tests (STOREFRONTS.md): key "" and message "secret".
        let secret = SourceSecret::new(String::new());
        assert!(signed_by(
            std::iter::once(&secret),
            b"secret",
            "GBDo00G55h6IiV+6CxqivQPLbI//KzaOZm747971tPs="
        ));
        assert!(!signed_by(
            std::iter::once(&secret),
            b"secreT",
            "GBDo00G55h6IiV+6CxqivQPLbI//KzaOZm747971tPs="
        ));
        assert!(!signed_by(
            std::iter::once(&secret),
            b"secret",
            "not base64!"
        ));
    }

    #[test]
    fn shops_compare_without_scheme_case_or_trailing_slash() {
        assert_eq!(normal_shop("https://Shop.Example.com/"), "shop.example.com");
        assert_eq!(normal_shop("myshop.myshopify.com"), "myshop.myshopify.com");
    }

    #[test]
    fn only_an_unsigned_form_with_a_numeric_id_is_a_ping() {
        let none = HeaderMap::new();
        assert!(is_woocommerce_ping(&none, b"webhook_id=42"));
        assert!(!is_woocommerce_ping(&none, b"webhook_id=42&x=1"));
        assert!(!is_woocommerce_ping(&none, b"{\"id\":1}"));
        let mut signed = HeaderMap::new();
        signed.insert("x-wc-webhook-signature", "abc".parse().unwrap());
        assert!(!is_woocommerce_ping(&signed, b"webhook_id=42"));
    }
}
