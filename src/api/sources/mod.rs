//! `/v1/sources`: the storefronts whose webhooks we take (scope `sources:manage`), each
//! source's inbox of deliveries, and the reconciliation import.
//!
//! A source's secret is taken once, sealed at rest and never shown again; a rotation
//! keeps the previous one verifying for an overlap, since a platform may take up to an
//! hour to sign with the new one. The webhooks themselves arrive through [`ingest`],
//! and are applied by [`apply`].

pub mod apply;
pub mod ingest;

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiError;
use super::extract::{parse_limit, parse_overlap, JsonBody, PathParams, QueryParams};
use super::openapi::{integer, Op};
use super::scoped::Routes;
use crate::auth::Scope;
use crate::domain::values::SourceName;
use crate::state::AppState;
use crate::store::sources::{self, InboxRow, InboxState, Platform, Source, SourceSecret};
use crate::store::{from_millis, millis};
use utoipa::{IntoParams, ToSchema};

pub fn routes() -> Routes {
    use Scope::SourcesManage as Manage;
    Routes::new()
        .post("/sources", Manage, create)
        .get("/sources", Manage, list)
        .get("/sources/{name}", Manage, show)
        .patch("/sources/{name}", Manage, rotate)
        .delete("/sources/{name}", Manage, remove)
        .get("/sources/{name}/inbox", Manage, inbox)
        .post("/sources/{name}/inbox/{id}/retry", Manage, retry)
        .delete("/sources/{name}/inbox/{id}", Manage, discard)
        .post("/sources/{name}/import", Manage, import)
}

/// What [`routes`] and [`ingest::router`] serve, for `GET /openapi.json`.
pub fn operations() -> Vec<Op> {
    let named = |op: Op| {
        op.param("name", <SourceName as utoipa::PartialSchema>::schema())
            .error(404, "source_not_found")
    };
    let delivery = |op: Op| {
        named(op)
            .param("id", integer(None))
            .error(404, "delivery_not_failed")
    };
    let mut ops = vec![
        Op::post("/v1/sources", "Register a storefront source")
            .json_body::<SourceIn>()
            .json::<SourceOut>(201, "the source, with its `ingest_url`")
            .error(409, "source_exists"),
        Op::get("/v1/sources", "Every source").json::<ListOut>(200, "every source"),
        named(Op::get("/v1/sources/{name}", "A source")).json::<SourceOut>(200, "the source"),
        named(Op::patch("/v1/sources/{name}", "Rotate a source's secret"))
            .json_body::<RotateIn>()
            .json::<SourceOut>(200, "the source"),
        named(Op::delete(
            "/v1/sources/{name}",
            "Delete a source and its inbox",
        ))
        .empty(204, "deleted"),
        named(Op::get(
            "/v1/sources/{name}/inbox",
            "A source's deliveries, newest first",
        ))
        .query::<InboxQuery>()
        .json::<InboxPageOut>(200, "a page of deliveries; `next_before` for the next one"),
        delivery(Op::post(
            "/v1/sources/{name}/inbox/{id}/retry",
            "Retry a failed delivery",
        ))
        .json::<InboxOut>(202, "the delivery, waiting to be applied again"),
        delivery(Op::delete(
            "/v1/sources/{name}/inbox/{id}",
            "Discard a failed delivery",
        ))
        .empty(204, "discarded"),
        named(Op::post(
            "/v1/sources/{name}/import",
            "Import platform orders, one per line",
        ))
        // Any JSON value per line: a line that is not a platform order is reported in
        // `failed`, never refused as a whole.
        .raw_body("application/x-ndjson", super::openapi::any_value())
        .json::<apply::ImportCounts>(200, "what the import did, line by line"),
    ];
    ops.extend(ingest::operations());
    ops
}

/// How long a replaced secret still verifies, unless the request says: Shopify can take
/// up to an hour to sign with a rotated one.
const DEFAULT_OVERLAP: Duration = Duration::from_secs(3600);
const MAX_SECRET_LEN: usize = 512;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct SourceIn {
    name: SourceName,
    platform: String,
    secret: String,
    /// Shopify: the only `X-Shopify-Shop-Domain` accepted.
    shop_domain: Option<String>,
    /// WooCommerce: the only `X-WC-Webhook-Source` accepted.
    site_url: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RotateIn {
    secret: String,
    overlap: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = Source)]
struct SourceOut {
    name: SourceName,
    platform: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    shop_domain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    site_url: Option<String>,
    /// Where the platform sends its webhooks.
    ingest_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_secret_expires_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl SourceOut {
    fn new(source: &Source) -> Self {
        let (shop_domain, site_url) = match source.platform {
            Platform::Shopify => (source.shop.clone(), None),
            Platform::WooCommerce => (None, source.shop.clone()),
        };
        Self {
            name: source.name.clone(),
            platform: source.platform.as_str(),
            shop_domain,
            site_url,
            ingest_url: format!("/v1/ingest/{}/{}", source.platform.as_str(), source.name),
            previous_secret_expires_at: source
                .previous_secret
                .as_ref()
                .map(|(_, until)| *until)
                .filter(|until| *until > Utc::now()),
            created_at: source.created_at,
            updated_at: source.updated_at,
        }
    }
}

fn secret(raw: String) -> Result<SourceSecret, ApiError> {
    if raw.is_empty() {
        return Err(ApiError::invalid_field(
            "secret",
            "must not be empty: anyone could sign with an empty secret",
        ));
    }
    if raw.chars().count() > MAX_SECRET_LEN || raw.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "secret",
            format!("must be at most {MAX_SECRET_LEN} characters, none of them control characters"),
        ));
    }
    Ok(SourceSecret::new(raw))
}

/// The shop a source is bound to: a bare domain for Shopify, an http(s) URL for
/// WooCommerce, each only for its own platform.
fn shop(platform: Platform, body: &SourceIn) -> Result<Option<String>, ApiError> {
    let check = |field: &str, raw: &str, url: bool| {
        let normal = ingest::normal_shop(raw);
        let scheme_ok = !url || raw.starts_with("https://") || raw.starts_with("http://");
        let chars_ok = !normal.is_empty()
            && normal.len() <= 255
            && normal
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
        if scheme_ok && chars_ok && (url || !normal.contains('/')) {
            Ok(Some(normal))
        } else if url {
            Err(ApiError::invalid_field(
                field,
                "must be the site's http(s) URL, such as https://shop.example.com/",
            ))
        } else {
            Err(ApiError::invalid_field(
                field,
                "must be the shop's domain, such as myshop.myshopify.com",
            ))
        }
    };
    match (platform, &body.shop_domain, &body.site_url) {
        (Platform::Shopify, domain, None) => domain
            .as_deref()
            .map_or(Ok(None), |d| check("shop_domain", d, false)),
        (Platform::WooCommerce, None, url) => url
            .as_deref()
            .map_or(Ok(None), |u| check("site_url", u, true)),
        (Platform::Shopify, _, Some(_)) => Err(ApiError::invalid_field(
            "site_url",
            "is for WooCommerce sources; a Shopify source takes `shop_domain`",
        )),
        (Platform::WooCommerce, Some(_), _) => Err(ApiError::invalid_field(
            "shop_domain",
            "is for Shopify sources; a WooCommerce source takes `site_url`",
        )),
    }
}

/// Now, as the table keeps it (milliseconds), so that an answer shows what a read
/// of the source will.
fn stored_now() -> DateTime<Utc> {
    from_millis(millis(Utc::now()))
}

fn not_found(name: &SourceName) -> ApiError {
    ApiError::not_found(
        "source_not_found",
        format!("there is no source named `{name}`"),
    )
}

async fn load(state: &AppState, name: &SourceName) -> Result<Source, ApiError> {
    sources::load(&state.db, &state.keys, name)
        .await?
        .ok_or_else(|| not_found(name))
}

async fn create(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SourceIn>,
) -> Result<
    (
        StatusCode,
        [(header::HeaderName, String); 1],
        Json<SourceOut>,
    ),
    ApiError,
> {
    let platform = Platform::parse(&body.platform)
        .ok_or_else(|| ApiError::invalid_field("platform", "must be `shopify` or `woocommerce`"))?;
    let shop = shop(platform, &body)?;
    let now = stored_now();
    let source = Source {
        name: body.name,
        platform,
        shop,
        secret: secret(body.secret)?,
        previous_secret: None,
        created_at: now,
        updated_at: now,
    };
    let added = sources::insert(&state.db, &state.keys, &source).await?;
    // An unknown name is cached too: the new source must be found at once.
    state.sources.forget(&source.name);
    if !added {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "source_exists",
            format!("a source named `{}` already exists", source.name),
        )
        .with_field("name"));
    }
    let location = format!("/v1/sources/{}", source.name);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(SourceOut::new(&source)),
    ))
}

#[derive(Serialize, ToSchema)]
#[schema(as = SourceList)]
struct ListOut {
    sources: Vec<SourceOut>,
}

async fn list(State(state): State<AppState>) -> Result<Json<ListOut>, ApiError> {
    let all = sources::list(&state.db, &state.keys).await?;
    let sources = all.iter().map(SourceOut::new).collect();
    Ok(Json(ListOut { sources }))
}

async fn show(
    State(state): State<AppState>,
    PathParams(name): PathParams<SourceName>,
) -> Result<Json<SourceOut>, ApiError> {
    Ok(Json(SourceOut::new(&load(&state, &name).await?)))
}

/// A new secret; the old one verifies beside it for `overlap` (default one hour).
async fn rotate(
    State(state): State<AppState>,
    PathParams(name): PathParams<SourceName>,
    JsonBody(body): JsonBody<RotateIn>,
) -> Result<Json<SourceOut>, ApiError> {
    let overlap = parse_overlap(body.overlap.as_deref(), DEFAULT_OVERLAP)?;
    let new = secret(body.secret)?;
    let mut source = load(&state, &name).await?;
    let now = stored_now();
    let old = std::mem::replace(&mut source.secret, new);
    source.previous_secret = (!overlap.is_zero()).then(|| {
        let until = now + chrono::Duration::from_std(overlap).unwrap_or(chrono::Duration::MAX);
        (old, until)
    });
    source.updated_at = now;
    sources::save_secrets(&state.db, &state.keys, &source).await?;
    state.sources.forget(&name);
    Ok(Json(SourceOut::new(&source)))
}

async fn remove(
    State(state): State<AppState>,
    PathParams(name): PathParams<SourceName>,
) -> Result<StatusCode, ApiError> {
    let deleted = sources::delete(&state.db, &name).await?;
    state.sources.forget(&name);
    if !deleted {
        return Err(not_found(&name));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct InboxQuery {
    state: Option<String>,
    /// The `id` of the last delivery on the previous page.
    before: Option<i64>,
    limit: Option<i64>,
}

/// One delivery as the inbox lists it. The body is kept, and shown, as received.
#[derive(Serialize, ToSchema)]
#[schema(as = InboxDelivery)]
struct InboxOut {
    id: i64,
    topic: String,
    state: String,
    received_at: DateTime<Utc>,
    dedup_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    order_id: Option<String>,
    attempts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    commands: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    settled_at: Option<DateTime<Utc>>,
    /// The platform's headers that were kept, by name.
    #[schema(value_type = Object)]
    headers: Value,
    body: String,
}

#[derive(Serialize, ToSchema)]
#[schema(as = InboxError)]
struct ErrorOut {
    code: String,
    detail: String,
}

impl InboxOut {
    fn new(row: InboxRow) -> Self {
        Self {
            id: row.id,
            topic: row.topic,
            state: row.state,
            received_at: from_millis(row.received_at),
            dedup_key: row.dedup_key,
            order_id: row.order_id,
            attempts: row.attempts,
            commands: row.commands,
            error: row.error_code.map(|code| ErrorOut {
                code,
                detail: row.error.unwrap_or_default(),
            }),
            settled_at: row.applied_at.map(from_millis),
            headers: serde_json::from_str(&row.headers).unwrap_or(Value::Null),
            body: row.body,
        }
    }
}

async fn inbox(
    State(state): State<AppState>,
    PathParams(name): PathParams<SourceName>,
    QueryParams(query): QueryParams<InboxQuery>,
) -> Result<Json<InboxPageOut>, ApiError> {
    let wanted = query
        .state
        .as_deref()
        .map(|raw| {
            InboxState::parse(raw).ok_or_else(|| {
                ApiError::invalid_field("state", "must be `waiting`, `applied` or `failed`")
            })
        })
        .transpose()?;
    let limit = parse_limit(query.limit, 50, 500)?;
    load(&state, &name).await?;
    let rows = sources::list_inbox(&state.db, &name, wanted, query.before, limit).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let deliveries = rows.into_iter().map(InboxOut::new).collect();
    Ok(Json(InboxPageOut {
        deliveries,
        next_before: next,
    }))
}

#[derive(Serialize, ToSchema)]
struct InboxPageOut {
    deliveries: Vec<InboxOut>,
    /// The `before` of the next page; null on the last.
    next_before: Option<i64>,
}

fn not_failed(name: &SourceName, id: i64) -> ApiError {
    ApiError::not_found(
        "delivery_not_failed",
        format!("source `{name}` has no failed delivery {id}; only failed deliveries can be retried or discarded"),
    )
}

async fn retry(
    State(state): State<AppState>,
    PathParams((name, id)): PathParams<(SourceName, i64)>,
) -> Result<(StatusCode, Json<InboxOut>), ApiError> {
    if !sources::retry(&state.db, &name, id).await? {
        return Err(not_failed(&name, id));
    }
    state.inbox_signal.notify_one();
    let row = sources::find(&state.db, &name, id)
        .await?
        .ok_or_else(|| not_failed(&name, id))?;
    Ok((StatusCode::ACCEPTED, Json(InboxOut::new(row))))
}

async fn discard(
    State(state): State<AppState>,
    PathParams((name, id)): PathParams<(SourceName, i64)>,
) -> Result<StatusCode, ApiError> {
    if !sources::discard(&state.db, &name, id).await? {
        return Err(not_failed(&name, id));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// NDJSON, one platform order per line as their REST APIs return them (Shopify's
/// `GET /orders.json` entries, WooCommerce's `GET /wc/v3/orders` entries). Each line
/// goes through the inbox like a webhook (a line already there is `unchanged`) and is
/// applied before the answer, which counts what happened.
async fn import(
    State(state): State<AppState>,
    PathParams(name): PathParams<SourceName>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<apply::ImportCounts>, ApiError> {
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-ndjson"));
    if !ndjson {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "an import is NDJSON: send it as `Content-Type: application/x-ndjson`, one order per line",
        ));
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("invalid_encoding", "the import is not UTF-8"))?;
    let source = load(&state, &name).await?;
    let counts = apply::import(&state, &source, text).await?;
    Ok(Json(counts))
}
