//! Bad input always gets a stable code and a sentence; never a panic, never a 500.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    malformed_json_is_a_400,
    a_body_that_is_not_json_is_a_415,
    a_body_over_the_limit_is_a_413,
    invalid_values_are_a_422_naming_the_field,
    unknown_orders_payments_and_shipments_are_404s,
    invalid_transitions_are_409s,
    amounts_that_break_the_rules_are_422s,
    unknown_routes_and_methods_answer_in_json,
    no_hostile_body_causes_a_server_error,
);

async fn malformed_json_is_a_400(backend: Backend) {
    let app = spawn_app(backend).await;
    let r = app
        .client
        .post(app.url("/v1/orders"))
        .header("content-type", "application/json")
        .body(r#"{"customer_id": "c1", "#)
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "malformed_json").await;
}

async fn a_body_that_is_not_json_is_a_415(backend: Backend) {
    let app = spawn_app(backend).await;
    let r = app
        .client
        .post(app.url("/v1/orders"))
        .header("content-type", "text/plain")
        .body("customer_id=c1")
        .send()
        .await
        .unwrap();
    expect_error(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
}

async fn a_body_over_the_limit_is_a_413(backend: Backend) {
    let app = spawn_app(backend).await;
    let huge = format!(r#"{{"customer_id": "{}"}}"#, "x".repeat(1024 * 1024 + 1));
    let r = app
        .client
        .post(app.url("/v1/orders"))
        .header("content-type", "application/json")
        .body(huge.clone())
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;

    // The idempotency layer reads bodies too, and must refuse them the same way.
    let r = app
        .client
        .post(app.url("/v1/orders"))
        .header("content-type", "application/json")
        .header("idempotency-key", "big-1")
        .body(huge)
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
}

async fn invalid_values_are_a_422_naming_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let base = fixture("place_order.json", "ord-v");
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/lines/0/quantity", json!(0), "lines[0].quantity"),
        ("/lines/1/quantity", json!(1.5), "lines[1].quantity"),
        ("/lines/0/sku", json!("has space"), "lines[0].sku"),
        ("/lines/0/unit_price", json!(-1), "lines[0].unit_price"),
        ("/currency", json!("usd"), "currency"),
        ("/currency", json!("XAU"), "currency"),
        ("/customer_id", json!(""), "customer_id"),
        ("/order_id", json!("a/b"), "order_id"),
        (
            "/shipping_address/country",
            json!("Britain"),
            "shipping_address.country",
        ),
    ];
    for (pointer, value, field) in cases {
        let mut body = base.clone();
        *body.pointer_mut(pointer).unwrap() = value;
        let r = app.post("/v1/orders", &body).await;
        let error = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
        assert_eq!(error["field"], field, "{error}");
    }

    let mut missing = base.clone();
    missing.as_object_mut().unwrap().remove("customer_id");
    let error = expect_error(
        app.post("/v1/orders", &missing).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    assert_eq!(error["field"], "customer_id");

    let mut unknown = base.clone();
    unknown["coupon"] = json!("FREE");
    expect_error(
        app.post("/v1/orders", &unknown).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;

    let mut empty = base.clone();
    empty["lines"] = json!([]);
    let error = expect_error(
        app.post("/v1/orders", &empty).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "no_lines",
    )
    .await;
    assert_eq!(error["field"], "lines");

    let mut duplicate = base.clone();
    duplicate["lines"][1]["sku"] = json!("MUG-BLUE");
    expect_error(
        app.post("/v1/orders", &duplicate).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "duplicate_line",
    )
    .await;

    // Nothing refused was written.
    let r = app.get("/v1/orders/ord-v").await;
    expect_error(r, StatusCode::NOT_FOUND, "order_not_found").await;
}

async fn unknown_orders_payments_and_shipments_are_404s(backend: Backend) {
    let app = spawn_app(backend).await;
    expect_error(
        app.get("/v1/orders/nope").await,
        StatusCode::NOT_FOUND,
        "order_not_found",
    )
    .await;
    expect_error(
        app.get("/v1/orders/nope/events").await,
        StatusCode::NOT_FOUND,
        "order_not_found",
    )
    .await;
    let r = app
        .post("/v1/orders/nope/payments", &json!({"amount": 100}))
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "order_not_found").await;

    app.paid_order("ord-404").await;
    let r = app
        .post_empty("/v1/orders/ord-404/payments/pay-x/capture")
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "payment_not_found").await;
    let r = app
        .post_empty("/v1/orders/ord-404/shipments/shp-x/deliver")
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "shipment_not_found").await;
}

async fn invalid_transitions_are_409s(backend: Backend) {
    let app = spawn_app(backend).await;
    app.place_order("ord-t").await;
    let again = app
        .post("/v1/orders", &fixture("place_order.json", "ord-t"))
        .await;
    expect_error(again, StatusCode::CONFLICT, "order_exists").await;

    let r = app
        .post(
            "/v1/orders/ord-t/shipments",
            &json!({"carrier": "UPS", "tracking_number": "1"}),
        )
        .await;
    expect_error(r, StatusCode::CONFLICT, "order_not_paid").await;
    let r = app
        .post(
            "/v1/orders/ord-t/refunds",
            &json!({"amount": 1, "reason": "x"}),
        )
        .await;
    expect_error(r, StatusCode::CONFLICT, "nothing_to_refund").await;

    let r = app
        .post(
            "/v1/orders/ord-t/payments",
            &json!({"payment_id": "p1", "amount": 5000}),
        )
        .await;
    expect_status(r, StatusCode::CREATED).await;
    let r = app
        .post(
            "/v1/orders/ord-t/payments",
            &json!({"payment_id": "p2", "amount": 5000}),
        )
        .await;
    expect_error(r, StatusCode::CONFLICT, "payment_in_progress").await;
    expect_status(
        app.post_empty("/v1/orders/ord-t/payments/p1/capture").await,
        StatusCode::OK,
    )
    .await;
    let r = app.post_empty("/v1/orders/ord-t/payments/p1/capture").await;
    expect_error(r, StatusCode::CONFLICT, "payment_not_pending").await;

    let r = app
        .post(
            "/v1/orders/ord-t/shipments",
            &json!({"shipment_id": "s1", "carrier": "UPS", "tracking_number": "1"}),
        )
        .await;
    expect_status(r, StatusCode::CREATED).await;
    let r = app
        .post("/v1/orders/ord-t/cancel", &json!({"reason": "too late"}))
        .await;
    expect_error(r, StatusCode::CONFLICT, "order_already_shipped").await;
    expect_status(
        app.post_empty("/v1/orders/ord-t/shipments/s1/deliver")
            .await,
        StatusCode::OK,
    )
    .await;
    let r = app
        .post_empty("/v1/orders/ord-t/shipments/s1/deliver")
        .await;
    expect_error(r, StatusCode::CONFLICT, "shipment_already_delivered").await;
}

async fn amounts_that_break_the_rules_are_422s(backend: Backend) {
    let app = spawn_app(backend).await;
    app.place_order("ord-a").await;
    let r = app
        .post("/v1/orders/ord-a/payments", &json!({"amount": 4999}))
        .await;
    let error = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "amount_mismatch").await;
    assert_eq!(error["field"], "amount");
    let r = app
        .post("/v1/orders/ord-a/payments", &json!({"amount": 0}))
        .await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;

    app.paid_order("ord-b").await;
    let r = app
        .post(
            "/v1/orders/ord-b/refunds",
            &json!({"amount": 5001, "reason": "too much"}),
        )
        .await;
    expect_error(
        r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "refund_exceeds_captured",
    )
    .await;
    let r = app
        .post("/v1/orders/ord-b/shipments", &json!({"carrier": "UPS", "tracking_number": "1", "lines": [{"sku": "MUG-BLUE", "quantity": 3}]}))
        .await;
    expect_error(
        r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "shipment_exceeds_remaining",
    )
    .await;
    let r = app
        .post("/v1/orders/ord-b/shipments", &json!({"carrier": "UPS", "tracking_number": "1", "lines": [{"sku": "HAT", "quantity": 1}]}))
        .await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "line_not_in_order").await;
}

async fn unknown_routes_and_methods_answer_in_json(backend: Backend) {
    let app = spawn_app(backend).await;
    expect_error(
        app.get("/v2/whatever").await,
        StatusCode::NOT_FOUND,
        "route_not_found",
    )
    .await;
    let r = app
        .client
        .delete(app.url("/v1/orders/x"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
}

async fn no_hostile_body_causes_a_server_error(backend: Backend) {
    let app = spawn_app(backend).await;
    app.paid_order("ord-h").await;
    let bodies = [
        "null",
        "[]",
        "0",
        "\"x\"",
        "{}",
        r#"{"lines": null}"#,
        r#"{"customer_id": "c", "currency": "USD", "lines": [{"sku": "A", "quantity": 1e30, "unit_price": 1}]}"#,
        r#"{"customer_id": "c", "currency": "USD", "lines": [{"sku": "A", "quantity": 1, "unit_price": 9223372036854775807}]}"#,
        r#"{"customer_id": "c", "currency": "USD", "lines": [{"sku": "A", "quantity": 1000000, "unit_price": 1000000000000000}]}"#,
        r#"{"amount": -5, "reason": ""}"#,
        r#"{"amount": 18446744073709551616}"#,
        "\u{0000}",
        r#"{"reason": "\ud800"}"#,
    ];
    let paths = [
        "/v1/orders",
        "/v1/orders/ord-h/payments",
        "/v1/orders/ord-h/refunds",
        "/v1/orders/ord-h/shipments",
        "/v1/orders/ord-h/cancel",
        "/v1/orders/ord-h/payments/pay-1/fail",
    ];
    for path in paths {
        for body in bodies {
            let r = app
                .client
                .post(app.url(path))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let status = r.status();
            assert!(
                status.is_client_error(),
                "{path} with {body:?} answered {status}"
            );
            let error: Value = r.json().await.unwrap();
            assert!(error["code"].is_string(), "{error}");
        }
    }
    let weird_ids = ["%20", "a%2Fb", &"x".repeat(300), "%F0%9F%92%A9"];
    for id in weird_ids {
        let status = app.get(&format!("/v1/orders/{id}")).await.status();
        assert!(
            status.is_client_error(),
            "GET /v1/orders/{id} answered {status}"
        );
    }
}

on_both_backends!(
    undecodable_path_parameters_are_a_400_in_json_naming_them,
    path_values_their_type_refuses_are_422s_naming_the_parameter,
    query_rejections_are_json_naming_the_parameter,
);

/// Every route with a path parameter, once per parameter: the method, the path with
/// `{}` where the parameter goes (the others hold well-formed values), and its name.
fn routes_with_a_path_parameter() -> Vec<(reqwest::Method, String, &'static str)> {
    use reqwest::Method;
    let sub = "00000000-0000-0000-0000-000000000001";
    let event = "00000000-0000-0000-0000-000000000002";
    vec![
        (Method::GET, "/v1/orders/{}".into(), "order_id"),
        (Method::GET, "/v1/orders/{}/events".into(), "order_id"),
        (Method::POST, "/v1/orders/{}/payments".into(), "order_id"),
        (
            Method::POST,
            "/v1/orders/{}/payments/p1/capture".into(),
            "order_id",
        ),
        (
            Method::POST,
            "/v1/orders/o1/payments/{}/capture".into(),
            "payment_id",
        ),
        (
            Method::POST,
            "/v1/orders/{}/payments/p1/fail".into(),
            "order_id",
        ),
        (
            Method::POST,
            "/v1/orders/o1/payments/{}/fail".into(),
            "payment_id",
        ),
        (Method::POST, "/v1/orders/{}/shipments".into(), "order_id"),
        (
            Method::POST,
            "/v1/orders/{}/shipments/s1/deliver".into(),
            "order_id",
        ),
        (
            Method::POST,
            "/v1/orders/o1/shipments/{}/deliver".into(),
            "shipment_id",
        ),
        (Method::POST, "/v1/orders/{}/cancel".into(), "order_id"),
        (Method::POST, "/v1/orders/{}/refunds".into(), "order_id"),
        (Method::GET, "/v1/billing/orders/{}".into(), "order_id"),
        (Method::GET, "/v1/inventory/{}".into(), "sku"),
        (Method::POST, "/v1/inventory/{}/receipts".into(), "sku"),
        (Method::POST, "/v1/inventory/{}/adjustments".into(), "sku"),
        (Method::GET, "/v1/admin/projections/{}".into(), "name"),
        (
            Method::POST,
            "/v1/admin/projections/{}/rebuild".into(),
            "name",
        ),
        (
            Method::POST,
            "/v1/admin/projections/{}/retry".into(),
            "name",
        ),
        (Method::POST, "/v1/admin/projections/{}/skip".into(), "name"),
        (Method::POST, "/v1/admin/projections/{}/stop".into(), "name"),
        (Method::GET, "/v1/subscriptions/{}".into(), "id"),
        (Method::PATCH, "/v1/subscriptions/{}".into(), "id"),
        (Method::DELETE, "/v1/subscriptions/{}".into(), "id"),
        (
            Method::POST,
            "/v1/subscriptions/{}/secret/rotate".into(),
            "id",
        ),
        (Method::POST, "/v1/subscriptions/{}/rewind".into(), "id"),
        (Method::GET, "/v1/subscriptions/{}/attempts".into(), "id"),
        (
            Method::GET,
            "/v1/subscriptions/{}/dead-letters".into(),
            "id",
        ),
        (
            Method::DELETE,
            "/v1/subscriptions/{}/dead-letters".into(),
            "id",
        ),
        (
            Method::POST,
            "/v1/subscriptions/{}/dead-letters/retry".into(),
            "id",
        ),
        (
            Method::GET,
            format!("/v1/subscriptions/{{}}/dead-letters/{event}"),
            "id",
        ),
        (
            Method::GET,
            format!("/v1/subscriptions/{sub}/dead-letters/{{}}"),
            "event_id",
        ),
        (
            Method::DELETE,
            format!("/v1/subscriptions/{{}}/dead-letters/{event}"),
            "id",
        ),
        (
            Method::DELETE,
            format!("/v1/subscriptions/{sub}/dead-letters/{{}}"),
            "event_id",
        ),
        (
            Method::POST,
            format!("/v1/subscriptions/{{}}/dead-letters/{event}/retry"),
            "id",
        ),
        (
            Method::POST,
            format!("/v1/subscriptions/{sub}/dead-letters/{{}}/retry"),
            "event_id",
        ),
    ]
}

/// Sends `method path` without a body, so the path is the first thing refused.
async fn send(app: &TestApp, method: reqwest::Method, path: &str) -> reqwest::Response {
    app.client
        .request(method, app.url(path))
        .send()
        .await
        .expect("send")
}

async fn undecodable_path_parameters_are_a_400_in_json_naming_them(backend: Backend) {
    let app = spawn_app(backend).await;
    for (method, template, field) in routes_with_a_path_parameter() {
        for bad in ["%FF", "%C3%28", "ok%80"] {
            let path = template.replace("{}", bad);
            let r = send(&app, method.clone(), &path).await;
            let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
            assert_eq!(content_type, "application/json", "{method} {path}");
            let error = expect_error(r, StatusCode::BAD_REQUEST, "invalid_path").await;
            assert_eq!(error["field"], field, "{method} {path}: {error}");
        }
    }
}

async fn path_values_their_type_refuses_are_422s_naming_the_parameter(backend: Backend) {
    let app = spawn_app(backend).await;
    let long = "x".repeat(65);
    for (method, template, field) in routes_with_a_path_parameter() {
        // Projection names are the runner's to know: an unknown one is its 404.
        let bad: &[&str] = match field {
            "name" => continue,
            "id" | "event_id" => &["nope", "00000000-0000-0000-0000"],
            "sku" => &["has%20space", "a%2Fb", long.as_str()],
            _ => &[
                "a%20b",
                "a%2Fb",
                "TSHIRT.RED.M",
                "%F0%9F%92%A9",
                long.as_str(),
            ],
        };
        for value in bad {
            let path = template.replace("{}", value);
            let r = send(&app, method.clone(), &path).await;
            let error = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
            assert_eq!(error["field"], field, "{method} {path}: {error}");
        }
    }
    expect_error(
        app.post_empty("/v1/admin/projections/%F0%9F%92%A9/stop")
            .await,
        StatusCode::NOT_FOUND,
        "projection_not_found",
    )
    .await;
}

async fn query_rejections_are_json_naming_the_parameter(backend: Backend) {
    let app = spawn_app(backend).await;
    app.place_order("ord-q").await;
    let sub = "00000000-0000-0000-0000-000000000001";
    for (path, field) in [
        ("/v1/orders/ord-q?at=%FF".to_owned(), "at"),
        ("/v1/orders/ord-q?at=later".to_owned(), "at"),
        ("/v1/orders/ord-q?as_of=1".to_owned(), "as_of"),
        ("/v1/orders?status=%FF".to_owned(), "status"),
        ("/v1/orders?limit=%FF".to_owned(), "limit"),
        ("/v1/orders?customer_id=%FF".to_owned(), "customer_id"),
        ("/v1/inventory?below=few".to_owned(), "below"),
        (format!("/v1/subscriptions/{sub}/attempts"), "event_id"),
        (
            format!("/v1/subscriptions/{sub}/attempts?event_id=%FF"),
            "event_id",
        ),
        (
            format!("/v1/subscriptions/{sub}/dead-letters?after=first"),
            "after",
        ),
        ("/v1/events/stream?types=%FF".to_owned(), "types"),
        ("/v1/events/stream?colour=red".to_owned(), "colour"),
    ] {
        let r = app.get(&path).await;
        let content_type = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(content_type, "application/json", "{path}");
        let body = expect_status(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(body["code"].is_string(), "{path}: {body}");
        assert_eq!(body["field"], field, "{path}: {body}");
    }
}
