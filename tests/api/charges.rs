//! Discounts, shipping and taxes on an order, and the first version bump of a stored
//! event: `order.created` 1.0 (lines only) is read as 1.1 by every reader, so a log
//! written before the bump replays unchanged.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;
use crate::receiver::Receiver;

on_both_backends!(
    an_order_owes_its_lines_less_discounts_plus_shipping_and_taxes,
    charges_that_do_not_add_up_are_refused_and_nothing_is_written,
    a_log_written_at_1_0_replays_unchanged_through_every_reader,
);

fn charged_order(order_id: &str) -> Value {
    json!({
        "order_id": order_id,
        "customer_id": "cust-42",
        "currency": "USD",
        "lines": [
            {"sku": "MUG-BLUE", "quantity": 2, "unit_price": 1500},
            {"sku": "TEE-M", "quantity": 1, "unit_price": 2000}
        ],
        "discounts": [
            {"code": "MUG-5", "sku": "MUG-BLUE", "amount": 500},
            {"code": "WELCOME", "amount": 1000}
        ],
        "shipping_lines": [{"title": "Standard", "price": 700}],
        "tax_lines": [{"title": "Sales tax", "amount": 336}]
    })
}

async fn an_order_owes_its_lines_less_discounts_plus_shipping_and_taxes(backend: Backend) {
    let app = spawn_app(backend).await;
    let r = app.post("/v1/orders", &charged_order("ord-1")).await;
    let order = expect_status(r, StatusCode::CREATED).await;
    assert_eq!(order["subtotal"], 5000, "{order}");
    assert_eq!(
        order["total"], 4536,
        "5000 − 500 − 1000 + 700 + 336: {order}"
    );
    assert_eq!(order["amount_due"], 4536);
    assert_eq!(
        order["discounts"],
        json!([{"code": "MUG-5", "sku": "MUG-BLUE", "amount": 500},
               {"code": "WELCOME", "amount": 1000}])
    );
    assert_eq!(
        order["shipping_lines"],
        json!([{"title": "Standard", "price": 700}])
    );
    assert_eq!(
        order["tax_lines"],
        json!([{"title": "Sales tax", "amount": 336}])
    );

    // A payment is checked against that total, not the lines' sum.
    let r = app
        .post(
            "/v1/orders/ord-1/payments",
            &json!({"payment_id": "p1", "amount": 5000}),
        )
        .await;
    let body = expect_status(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["code"], "amount_mismatch", "{body}");
    let r = app
        .post(
            "/v1/orders/ord-1/payments",
            &json!({"payment_id": "p1", "amount": 4536}),
        )
        .await;
    expect_status(r, StatusCode::CREATED).await;

    let events = app.events("ord-1").await;
    assert_eq!(events[0]["event_version"], "1.2");
    assert_eq!(events[0]["payload"]["total"]["amount"], 4536);
    assert_eq!(events[0]["payload"]["subtotal"]["amount"], 5000);

    // The views carry the charged total.
    summary_total(&app, "ord-1", 4536).await;
}

/// Waits until the order list (the `order_summary` view) shows `order_id` at `total`.
async fn summary_total(app: &TestApp, order_id: &str, total: i64) {
    let what = format!("{order_id} listed at {total}");
    eventually(&what, Duration::from_secs(10), || async {
        let list: Value = app.get("/v1/orders").await.json().await.unwrap();
        let row = list["orders"]
            .as_array()
            .and_then(|o| o.iter().find(|o| o["order_id"] == order_id).cloned());
        match row {
            Some(row) if row["total"] == total => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

async fn charges_that_do_not_add_up_are_refused_and_nothing_is_written(backend: Backend) {
    let app = spawn_app(backend).await;
    let cases = [
        (
            json!({"discounts": [{"code": "HAT", "sku": "HAT-1", "amount": 1}]}),
            "line_not_in_order",
            "discounts",
        ),
        (
            json!({"discounts": [{"code": "BIG", "sku": "TEE-M", "amount": 2001}]}),
            "discount_exceeds_amount",
            "discounts",
        ),
        (
            json!({"discounts": [{"code": "ALL", "amount": 5001}],
                   "shipping_lines": [{"title": "Express", "price": 9000}]}),
            "discount_exceeds_amount",
            "discounts",
        ),
        (
            json!({"tax_lines": [{"title": "VAT", "amount": -1}]}),
            "invalid_field",
            "tax_lines[0].amount",
        ),
        (
            json!({"shipping_lines": [{"title": "Free\u{0}", "price": 0}]}),
            "invalid_field",
            "shipping_lines[0].title",
        ),
        (
            json!({"discounts": [{"code": "X", "amount": 1, "percent": 10}]}),
            "invalid_field",
            "discounts[0].percent",
        ),
    ];
    for (i, (charges, code, field)) in cases.into_iter().enumerate() {
        let order_id = format!("bad-{i}");
        let mut body = charged_order(&order_id);
        for key in ["discounts", "shipping_lines", "tax_lines"] {
            body.as_object_mut().unwrap().remove(key);
        }
        body.as_object_mut()
            .unwrap()
            .extend(charges.as_object().unwrap().clone());
        let r = app.post("/v1/orders", &body).await;
        let error = expect_status(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert_eq!(error["code"], code, "{charges}: {error}");
        assert_eq!(error["field"], field, "{charges}: {error}");
        let r = app.get(&format!("/v1/orders/{order_id}")).await;
        assert_eq!(
            r.status(),
            StatusCode::NOT_FOUND,
            "{order_id} was not placed"
        );
    }
}

/// `order.created` as a server before 1.1 wrote it: lines and total, nothing else.
fn created_1_0(order_id: &str) -> Value {
    json!({
        "type": "order.created",
        "order_id": order_id,
        "customer_id": "cust-old",
        "currency": "EUR",
        "lines": [{"sku": "OLD-SKU", "quantity": 3,
                   "unit_price": {"amount": 1000, "currency": "EUR"},
                   "line_total": {"amount": 3000, "currency": "EUR"}, "untracked": true}],
        "total": {"amount": 3000, "currency": "EUR"},
        "placed_at": "2026-11-01T09:00:00Z"
    })
}

async fn a_log_written_at_1_0_replays_unchanged_through_every_reader(backend: Backend) {
    let app = spawn_app(backend).await;
    append_directly(
        &app,
        "order",
        "old-1",
        &[("order.created".into(), "1.0".into(), created_1_0("old-1"))],
    )
    .await;

    // The aggregate loads it: as an order with no charges, for reads and for commands.
    let order = expect_status(app.get("/v1/orders/old-1").await, StatusCode::OK).await;
    assert_eq!(order["subtotal"], 3000, "{order}");
    assert_eq!(order["total"], 3000);
    assert_eq!(order["discounts"], json!([]));
    assert_eq!(order["shipping_lines"], json!([]));
    assert_eq!(order["tax_lines"], json!([]));
    let r = app
        .post(
            "/v1/orders/old-1/payments",
            &json!({"payment_id": "p1", "amount": 3000}),
        )
        .await;
    expect_status(r, StatusCode::CREATED).await;

    // The history shows it at the current version; the log keeps what was written.
    let events = app.events("old-1").await;
    assert_eq!(events[0]["event_version"], "1.2");
    assert_eq!(events[0]["payload"]["discounts"], json!([]));
    assert_eq!(events[1]["event_type"], "payment.attempted");

    // The views read it, live and rebuilt from the log.
    summary_total(&app, "old-1", 3000).await;
    let r = app
        .post_empty("/v1/admin/projections/order_summary/rebuild")
        .await;
    expect_status(r, StatusCode::ACCEPTED).await;
    eventually(
        "the rebuilt summary served",
        Duration::from_secs(15),
        || async {
            let r = app.get("/v1/admin/projections/order_summary").await;
            let status = expect_status(r, StatusCode::OK).await;
            let done = status["generation"] == 2 && status["rebuild"].is_null();
            match done && status["last_error"].is_null() {
                true => Ok(()),
                false => Err(status),
            }
        },
    )
    .await;
    summary_total(&app, "old-1", 3000).await;

    // A delivery carries the current version, so a receiver handles one shape.
    let receiver = Receiver::start(200).await;
    let r = app
        .post(
            "/v1/subscriptions",
            &json!({"kind": "webhook", "url": receiver.url(),
                    "event_types": ["order.created"], "from_position": 1}),
        )
        .await;
    expect_status(r, StatusCode::CREATED).await;
    let received = receiver
        .wait_until(Duration::from_secs(10), "old-1's order.created", |r| {
            r.iter().any(|r| r.body["aggregate_id"] == "old-1")
        })
        .await;
    let delivered = received
        .iter()
        .find(|r| r.body["aggregate_id"] == "old-1")
        .unwrap();
    assert_eq!(delivered.body["version"], "1.2", "{}", delivered.raw);
    assert_eq!(delivered.body["data"]["subtotal"]["amount"], 3000);
    assert_eq!(delivered.body["data"]["tax_lines"], json!([]));
}
