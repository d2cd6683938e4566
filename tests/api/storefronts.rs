//! Storefront orders end to end: the platforms' payloads (`fixtures/shopify`,
//! `fixtures/woocommerce`) through the webhook path and through the import, giving the
//! same orders and events; duplicates, out-of-order and stale snapshots; backorders;
//! and a crash between the inbox and applying.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(an_order_shows_its_origin_and_is_found_by_it,);

async fn an_order_shows_its_origin_and_is_found_by_it(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut body = order_body("myshop-1001", &[("MUG", 1)]);
    body["origin"] = json!({"source": "myshop", "external_id": "1001", "external_number": "#1001"});
    let placed = expect_status(app.post("/v1/orders", &body).await, StatusCode::CREATED).await;
    assert_eq!(placed["origin"], body["origin"]);
    let shown = expect_status(app.get("/v1/orders/myshop-1001").await, StatusCode::OK).await;
    assert_eq!(shown["origin"], body["origin"]);
    app.place_order("plain").await;

    let found = eventually(
        "the summary to show the origin",
        Duration::from_secs(10),
        || async {
            let listed = expect_status(
                app.get("/v1/orders?source=myshop&external_id=1001").await,
                StatusCode::OK,
            )
            .await;
            match listed["orders"].as_array() {
                Some(orders) if orders.len() == 1 => Ok(orders[0].clone()),
                _ => Err(listed),
            }
        },
    )
    .await;
    assert_eq!(found["order_id"], "myshop-1001");
    assert_eq!(found["origin"], body["origin"]);

    let r = app.get("/v1/orders?source=My%20Shop").await;
    let error = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    assert_eq!(error["field"], "source");
    let mut bad = order_body("o-2", &[("MUG", 1)]);
    bad["origin"] = json!({"source": "myshop"});
    expect_status(
        app.post("/v1/orders", &bad).await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    app.stop().await;
}
