//! Storefront sources: created, shown, rotated and deleted under `sources:manage`, with
//! secrets sealed and never shown; and their webhooks, verified over the body's bytes
//! as received, before anything is stored.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    a_source_is_created_shown_and_deleted_and_its_secret_never_shown,
    bad_sources_are_refused_with_the_field_named,
    a_delivery_is_verified_over_its_raw_bytes_and_a_tampered_byte_stores_nothing,
    a_repeated_delivery_is_acknowledged_and_stored_once,
    a_rotated_secret_keeps_verifying_during_its_overlap_only,
    a_delivery_from_another_shop_is_refused,
    woocommerce_s_creation_ping_gets_200_and_records_nothing,
);

pub const SHOPIFY_SECRET: &str = "shpss_0123456789abcdef";
pub const WOO_SECRET: &str = "woo secret: spaces and punctuation, too!";

pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    BASE64.encode(mac.finalize().into_bytes())
}

pub async fn create_source(app: &TestApp, body: Value) -> Value {
    expect_status(app.post("/v1/sources", &body).await, StatusCode::CREATED).await
}

pub async fn shopify_source(app: &TestApp, name: &str) -> Value {
    create_source(
        app,
        json!({"name": name, "platform": "shopify", "secret": SHOPIFY_SECRET,
               "shop_domain": "myshop.myshopify.com"}),
    )
    .await
}

pub async fn woocommerce_source(app: &TestApp, name: &str) -> Value {
    create_source(
        app,
        json!({"name": name, "platform": "woocommerce", "secret": WOO_SECRET,
               "site_url": "https://shop.example.com/"}),
    )
    .await
}

/// Sends a Shopify webhook as Shopify does: no bearer token, the HMAC of the bytes.
pub async fn send_shopify(
    app: &TestApp,
    source: &str,
    topic: &str,
    webhook_id: &str,
    body: &[u8],
    signature: &str,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.url(&format!("/v1/ingest/shopify/{source}")))
        .header("content-type", "application/json")
        .header("x-shopify-hmac-sha256", signature)
        .header("x-shopify-topic", topic)
        .header("x-shopify-shop-domain", "myshop.myshopify.com")
        .header("x-shopify-api-version", "2025-07")
        .header("x-shopify-webhook-id", webhook_id)
        .body(body.to_vec())
        .send()
        .await
        .expect("POST a webhook")
}

pub async fn send_woocommerce(
    app: &TestApp,
    source: &str,
    topic: &str,
    body: &[u8],
    signature: &str,
) -> reqwest::Response {
    reqwest::Client::new()
        .post(app.url(&format!("/v1/ingest/woocommerce/{source}")))
        .header("content-type", "application/json")
        .header("x-wc-webhook-signature", signature)
        .header("x-wc-webhook-topic", topic)
        .header("x-wc-webhook-source", "https://shop.example.com/")
        .header("x-wc-webhook-resource", "order")
        .header("x-wc-webhook-id", "7")
        .header("x-wc-webhook-delivery-id", "0f2a9c")
        .body(body.to_vec())
        .send()
        .await
        .expect("POST a webhook")
}

pub async fn inbox(app: &TestApp, source: &str, query: &str) -> Vec<Value> {
    let body = expect_status(
        app.get(&format!("/v1/sources/{source}/inbox{query}")).await,
        StatusCode::OK,
    )
    .await;
    body["deliveries"].as_array().cloned().unwrap_or_default()
}

async fn a_source_is_created_shown_and_deleted_and_its_secret_never_shown(backend: Backend) {
    let app = spawn_app(backend).await;
    let created = shopify_source(&app, "myshop").await;
    assert_eq!(created["name"], "myshop");
    assert_eq!(created["platform"], "shopify");
    assert_eq!(created["shop_domain"], "myshop.myshopify.com");
    assert_eq!(created["ingest_url"], "/v1/ingest/shopify/myshop");
    assert!(!created.to_string().contains(SHOPIFY_SECRET), "{created}");
    woocommerce_source(&app, "mysite").await;

    let shown = expect_status(app.get("/v1/sources/myshop").await, StatusCode::OK).await;
    assert_eq!(shown, created);
    let listed = expect_status(app.get("/v1/sources").await, StatusCode::OK).await;
    let names: Vec<&str> = listed["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["myshop", "mysite"]);
    assert!(!listed.to_string().contains(SHOPIFY_SECRET));
    assert!(!listed.to_string().contains(WOO_SECRET));

    // Sealed at rest: the database never holds the secret in the clear.
    let db = orderlog::store::Database::connect(&app.database_url, 1)
        .await
        .unwrap();
    let rows: Vec<Value> =
        orderlog::store::views::query(&db, "SELECT secret FROM sources", &["secret"], &[])
            .await
            .unwrap();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let stored = row["secret"].as_str().unwrap();
        assert!(
            !stored.contains("shpss") && !stored.contains("woo secret"),
            "{stored}"
        );
    }

    let again = app
        .post(
            "/v1/sources",
            &json!({"name": "myshop", "platform": "shopify", "secret": "x"}),
        )
        .await;
    expect_error(again, StatusCode::CONFLICT, "source_exists").await;

    let r = app
        .client
        .delete(app.url("/v1/sources/myshop"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    expect_error(
        app.get("/v1/sources/myshop").await,
        StatusCode::NOT_FOUND,
        "source_not_found",
    )
    .await;
    let body = br#"{"id":1}"#;
    let gone = send_shopify(
        &app,
        "myshop",
        "orders/create",
        "w-1",
        body,
        &sign(SHOPIFY_SECRET, body),
    )
    .await;
    expect_error(gone, StatusCode::NOT_FOUND, "source_not_found").await;

    // Only a token with `sources:manage` manages sources.
    let r = app
        .post(
            "/v1/tokens",
            &json!({"name": "reader", "scopes": ["orders:read"]}),
        )
        .await;
    let token = expect_status(r, StatusCode::CREATED).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = client_for(&token)
        .get(app.url("/v1/sources"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    app.stop().await;
}

async fn bad_sources_are_refused_with_the_field_named(backend: Backend) {
    let app = spawn_app(backend).await;
    for (body, field) in [
        (
            json!({"name": "My Shop", "platform": "shopify", "secret": "s"}),
            "name",
        ),
        (
            json!({"name": "", "platform": "shopify", "secret": "s"}),
            "name",
        ),
        (
            json!({"name": "a".repeat(41), "platform": "shopify", "secret": "s"}),
            "name",
        ),
        (
            json!({"name": "shop", "platform": "magento", "secret": "s"}),
            "platform",
        ),
        (
            json!({"name": "shop", "platform": "shopify", "secret": ""}),
            "secret",
        ),
        (
            json!({"name": "shop", "platform": "shopify", "secret": "a\u{0}b"}),
            "secret",
        ),
        (
            json!({"name": "shop", "platform": "shopify", "secret": "s", "site_url": "https://x.example/"}),
            "site_url",
        ),
        (
            json!({"name": "shop", "platform": "woocommerce", "secret": "s", "site_url": "ftp://x.example/"}),
            "site_url",
        ),
        (
            json!({"name": "shop", "platform": "shopify", "secret": "s", "shop_domain": "https://x.example/a/b"}),
            "shop_domain",
        ),
    ] {
        let r = app.post("/v1/sources", &body).await;
        let error = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
        assert_eq!(error["field"], field, "{body} → {error}");
    }
    let listed = expect_status(app.get("/v1/sources").await, StatusCode::OK).await;
    assert_eq!(listed["sources"], json!([]));
    app.stop().await;
}

async fn a_delivery_is_verified_over_its_raw_bytes_and_a_tampered_byte_stores_nothing(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    shopify_source(&app, "myshop").await;
    // As Shopify sends it: `/` escaped as `\/`, `&` as `\u0026`. Parsing and printing
    // it again would give other bytes, and another HMAC.
    let body =
        br#"{"id":820982911946154508,"note":"see https:\/\/shop.example.com\/a?b=1\u0026c=2"}"#;
    let signature = sign(SHOPIFY_SECRET, body);

    let mut tampered = body.to_vec();
    tampered[7] = b'9';
    let r = send_shopify(
        &app,
        "myshop",
        "orders/create",
        "w-1",
        &tampered,
        &signature,
    )
    .await;
    expect_error(r, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    let r = send_shopify(&app, "myshop", "orders/create", "w-1", body, "").await;
    expect_error(r, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    let r = send_shopify(
        &app,
        "myshop",
        "orders/create",
        "w-1",
        body,
        &sign("another secret", body),
    )
    .await;
    expect_error(r, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    let r = send_shopify(
        &app,
        "myshop",
        "orders/create",
        "w-1",
        b"",
        &sign(SHOPIFY_SECRET, b""),
    )
    .await;
    expect_error(r, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    assert!(
        inbox(&app, "myshop", "").await.is_empty(),
        "nothing refused is stored"
    );

    let r = send_shopify(&app, "myshop", "orders/create", "w-1", body, &signature).await;
    assert_eq!(expect_status(r, StatusCode::OK).await["status"], "received");
    let stored = inbox(&app, "myshop", "").await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["topic"], "orders/create");
    assert_eq!(
        stored[0]["body"].as_str().unwrap().as_bytes(),
        body,
        "kept as received"
    );
    assert_eq!(stored[0]["headers"]["x-shopify-webhook-id"], "w-1");
    assert!(stored[0]["headers"].get("x-shopify-hmac-sha256").is_none());
    app.stop().await;
}

async fn a_repeated_delivery_is_acknowledged_and_stored_once(backend: Backend) {
    let app = spawn_app(backend).await;
    shopify_source(&app, "myshop").await;
    woocommerce_source(&app, "mysite").await;
    let body = br#"{"id":1001}"#;
    for expected in ["received", "duplicate", "duplicate"] {
        let r = send_shopify(
            &app,
            "myshop",
            "orders/updated",
            "w-9",
            body,
            &sign(SHOPIFY_SECRET, body),
        )
        .await;
        assert_eq!(expect_status(r, StatusCode::OK).await["status"], expected);
    }
    // Another webhook id is another delivery, even with the same body.
    let r = send_shopify(
        &app,
        "myshop",
        "orders/updated",
        "w-10",
        body,
        &sign(SHOPIFY_SECRET, body),
    )
    .await;
    assert_eq!(expect_status(r, StatusCode::OK).await["status"], "received");
    assert_eq!(inbox(&app, "myshop", "").await.len(), 2);

    // WooCommerce makes a new delivery id for every send: the body is what repeats.
    for expected in ["received", "duplicate"] {
        let r = send_woocommerce(
            &app,
            "mysite",
            "order.updated",
            body,
            &sign(WOO_SECRET, body),
        )
        .await;
        assert_eq!(expect_status(r, StatusCode::OK).await["status"], expected);
    }
    assert_eq!(inbox(&app, "mysite", "").await.len(), 1);
    app.stop().await;
}

async fn a_rotated_secret_keeps_verifying_during_its_overlap_only(backend: Backend) {
    let app = spawn_app(backend).await;
    shopify_source(&app, "myshop").await;
    let rotate = |secret: &'static str, overlap: &'static str| {
        let app = &app;
        async move {
            let r = app
                .client
                .patch(app.url("/v1/sources/myshop"))
                .json(&json!({"secret": secret, "overlap": overlap}))
                .send()
                .await
                .unwrap();
            expect_status(r, StatusCode::OK).await
        }
    };
    let rotated = rotate("second secret", "1h").await;
    assert!(
        rotated["previous_secret_expires_at"].is_string(),
        "{rotated}"
    );
    assert!(!rotated.to_string().contains("second secret"));
    for (n, secret) in [(1, SHOPIFY_SECRET), (2, "second secret")] {
        let body = format!(r#"{{"id":{n}}}"#);
        let r = send_shopify(
            &app,
            "myshop",
            "orders/create",
            &format!("w-{n}"),
            body.as_bytes(),
            &sign(secret, body.as_bytes()),
        )
        .await;
        expect_status(r, StatusCode::OK).await;
    }
    // No overlap: the old secret stops verifying at once.
    rotate("third secret", "0s").await;
    let body = br#"{"id":3}"#;
    let r = send_shopify(
        &app,
        "myshop",
        "orders/create",
        "w-3",
        body,
        &sign("second secret", body),
    )
    .await;
    expect_error(r, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    let r = send_shopify(
        &app,
        "myshop",
        "orders/create",
        "w-3",
        body,
        &sign("third secret", body),
    )
    .await;
    expect_status(r, StatusCode::OK).await;

    let r = app
        .client
        .patch(app.url("/v1/sources/myshop"))
        .json(&json!({"secret": "x", "overlap": "forever"}))
        .send()
        .await
        .unwrap();
    let error = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    assert_eq!(error["field"], "overlap");
    app.stop().await;
}

async fn a_delivery_from_another_shop_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    woocommerce_source(&app, "mysite").await;
    let body = br#"{"id":5}"#;
    let r = reqwest::Client::new()
        .post(app.url("/v1/ingest/woocommerce/mysite"))
        .header("x-wc-webhook-signature", sign(WOO_SECRET, body))
        .header("x-wc-webhook-topic", "order.created")
        .header("x-wc-webhook-source", "https://elsewhere.example.com/")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::FORBIDDEN, "wrong_shop").await;
    // The same site without its trailing slash, or in capitals, is the same site.
    let r = reqwest::Client::new()
        .post(app.url("/v1/ingest/woocommerce/mysite"))
        .header("x-wc-webhook-signature", sign(WOO_SECRET, body))
        .header("x-wc-webhook-topic", "order.created")
        .header("x-wc-webhook-source", "https://SHOP.example.com")
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    expect_status(r, StatusCode::OK).await;
    // A Shopify webhook is not taken on a WooCommerce source's URL.
    let r = send_shopify(
        &app,
        "mysite",
        "orders/create",
        "w-1",
        body,
        &sign(WOO_SECRET, body),
    )
    .await;
    expect_error(r, StatusCode::NOT_FOUND, "source_not_found").await;
    assert_eq!(inbox(&app, "mysite", "").await.len(), 1);
    app.stop().await;
}

async fn woocommerce_s_creation_ping_gets_200_and_records_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    woocommerce_source(&app, "mysite").await;
    let r = reqwest::Client::new()
        .post(app.url("/v1/ingest/woocommerce/mysite"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("webhook_id=42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(inbox(&app, "mysite", "").await.is_empty());
    // Anything else unsigned is refused.
    let r = reqwest::Client::new()
        .post(app.url("/v1/ingest/woocommerce/mysite"))
        .body(r#"{"id":1}"#)
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::UNAUTHORIZED, "invalid_signature").await;
    app.stop().await;
}
