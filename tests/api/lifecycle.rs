//! An order from placement to refund, and every step's answer.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    an_order_goes_from_placement_through_payment_and_shipment_to_refund,
    a_failed_payment_can_be_retried,
    a_cancelled_order_can_be_refunded_but_not_shipped,
    partial_shipments_fulfil_the_order_when_the_last_is_delivered,
    an_order_without_an_id_gets_one,
    health_and_readiness_answer,
);

async fn an_order_goes_from_placement_through_payment_and_shipment_to_refund(backend: Backend) {
    let app = spawn_app(backend).await;

    let placed = app.place_order("ord-1").await;
    assert_eq!(placed["status"], "placed");
    assert_eq!(placed["total"], 5000);
    assert_eq!(placed["amount_due"], 5000);
    assert_eq!(placed["lines"][0]["line_total"], 3000);
    assert_eq!(placed["version"], 1);

    let r = app
        .post(
            "/v1/orders/ord-1/payments",
            &json!({"payment_id": "pay-1", "amount": 5000, "method": "card"}),
        )
        .await;
    let payment = expect_status(r, StatusCode::CREATED).await;
    assert_eq!(payment["payment_id"], "pay-1");
    assert_eq!(payment["status"], "pending");
    assert_eq!(payment["order_status"], "payment_pending");

    let r = app
        .post_empty("/v1/orders/ord-1/payments/pay-1/capture")
        .await;
    let captured = expect_status(r, StatusCode::OK).await;
    assert_eq!(captured["status"], "captured");
    assert_eq!(captured["order_status"], "paid");

    let r = app
        .post(
            "/v1/orders/ord-1/shipments",
            &json!({"shipment_id": "shp-1", "carrier": "UPS", "tracking_number": "1Z999"}),
        )
        .await;
    let shipment = expect_status(r, StatusCode::CREATED).await;
    assert_eq!(shipment["status"], "dispatched");
    assert_eq!(shipment["order_status"], "shipped");
    assert_eq!(shipment["lines"].as_array().unwrap().len(), 2);

    let r = app
        .post_empty("/v1/orders/ord-1/shipments/shp-1/deliver")
        .await;
    let delivered = expect_status(r, StatusCode::OK).await;
    assert_eq!(delivered["status"], "delivered");
    assert_eq!(delivered["order_status"], "fulfilled");

    let r = app
        .post(
            "/v1/orders/ord-1/refunds",
            &json!({"refund_id": "ref-1", "amount": 1500, "reason": "one mug arrived broken"}),
        )
        .await;
    let refund = expect_status(r, StatusCode::CREATED).await;
    assert_eq!(refund["amount"], 1500);
    assert_eq!(refund["order_status"], "partially_refunded");

    let r = app
        .post(
            "/v1/orders/ord-1/refunds",
            &json!({"amount": 3500, "reason": "goodwill"}),
        )
        .await;
    let refund = expect_status(r, StatusCode::CREATED).await;
    assert_eq!(refund["order_status"], "refunded");

    let r = app.get("/v1/orders/ord-1").await;
    let order = expect_status(r, StatusCode::OK).await;
    assert_eq!(order["status"], "refunded");
    assert_eq!(order["version"], 8);
    assert_eq!(order["captured"], 5000);
    assert_eq!(order["refunded"], 5000);
    assert_eq!(order["payments"][0]["status"], "captured");
    assert_eq!(order["shipments"][0]["status"], "delivered");
    assert_eq!(order["refunds"].as_array().unwrap().len(), 2);
    assert_eq!(order["shipping_address"]["country"], "GB");

    let types: Vec<String> = app
        .events("ord-1")
        .await
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "order.created",
            "payment.attempted",
            "payment.captured",
            "shipment.dispatched",
            "shipment.delivered",
            "order.fulfilled",
            "order.refunded",
            "order.refunded"
        ]
    );
}

async fn a_failed_payment_can_be_retried(backend: Backend) {
    let app = spawn_app(backend).await;
    app.place_order("ord-f").await;
    let r = app
        .post(
            "/v1/orders/ord-f/payments",
            &json!({"payment_id": "p1", "amount": 5000}),
        )
        .await;
    expect_status(r, StatusCode::CREATED).await;
    let r = app
        .post(
            "/v1/orders/ord-f/payments/p1/fail",
            &json!({"reason": "card declined"}),
        )
        .await;
    let failed = expect_status(r, StatusCode::OK).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["failure_reason"], "card declined");
    assert_eq!(failed["order_status"], "placed");

    let r = app
        .post(
            "/v1/orders/ord-f/payments",
            &json!({"payment_id": "p2", "amount": 5000}),
        )
        .await;
    expect_status(r, StatusCode::CREATED).await;
    let r = app.post_empty("/v1/orders/ord-f/payments/p2/capture").await;
    let captured = expect_status(r, StatusCode::OK).await;
    assert_eq!(captured["order_status"], "paid");
}

async fn a_cancelled_order_can_be_refunded_but_not_shipped(backend: Backend) {
    let app = spawn_app(backend).await;
    app.paid_order("ord-c").await;
    let r = app
        .post(
            "/v1/orders/ord-c/cancel",
            &json!({"reason": "customer asked"}),
        )
        .await;
    let cancelled = expect_status(r, StatusCode::OK).await;
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["cancellation"]["reason"], "customer asked");

    let r = app
        .post(
            "/v1/orders/ord-c/shipments",
            &json!({"carrier": "UPS", "tracking_number": "1"}),
        )
        .await;
    expect_error(r, StatusCode::CONFLICT, "order_cancelled").await;

    let r = app
        .post(
            "/v1/orders/ord-c/refunds",
            &json!({"amount": 5000, "reason": "cancelled"}),
        )
        .await;
    let refund = expect_status(r, StatusCode::CREATED).await;
    assert_eq!(refund["order_status"], "refunded");
}

async fn partial_shipments_fulfil_the_order_when_the_last_is_delivered(backend: Backend) {
    let app = spawn_app(backend).await;
    app.paid_order("ord-p").await;
    let r = app
        .post("/v1/orders/ord-p/shipments", &json!({"shipment_id": "s1", "carrier": "DHL", "tracking_number": "A1", "lines": [{"sku": "MUG-BLUE", "quantity": 2}]}))
        .await;
    let first = expect_status(r, StatusCode::CREATED).await;
    assert_eq!(first["order_status"], "partially_shipped");

    let r = app
        .post_empty("/v1/orders/ord-p/shipments/s1/deliver")
        .await;
    let delivered = expect_status(r, StatusCode::OK).await;
    assert_eq!(delivered["order_status"], "partially_shipped");

    let r = app
        .post(
            "/v1/orders/ord-p/shipments",
            &json!({"shipment_id": "s2", "carrier": "DHL", "tracking_number": "A2"}),
        )
        .await;
    let second = expect_status(r, StatusCode::CREATED).await;
    assert_eq!(second["lines"], json!([{"sku": "TEE-M", "quantity": 1}]));
    assert_eq!(second["order_status"], "shipped");

    let r = app
        .post_empty("/v1/orders/ord-p/shipments/s2/deliver")
        .await;
    let done = expect_status(r, StatusCode::OK).await;
    assert_eq!(done["order_status"], "fulfilled");
}

async fn an_order_without_an_id_gets_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let mut body = fixture("place_order.json", "unused");
    body.as_object_mut().unwrap().remove("order_id");
    let r = app.post("/v1/orders", &body).await;
    let location = r
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let placed = expect_status(r, StatusCode::CREATED).await;
    let id = placed["order_id"].as_str().unwrap();
    assert!(
        uuid::Uuid::parse_str(id).is_ok(),
        "generated id {id} is a UUID"
    );
    assert_eq!(location, format!("/v1/orders/{id}"));
    let r = app.get(&location).await;
    expect_status(r, StatusCode::OK).await;
}

async fn health_and_readiness_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let health = expect_status(app.get("/health").await, StatusCode::OK).await;
    assert_eq!(health["status"], "ok");
    let ready = expect_status(app.get("/ready").await, StatusCode::OK).await;
    let expected = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    assert_eq!(ready["database"], expected);
}
