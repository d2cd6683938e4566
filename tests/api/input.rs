//! Input refused at the edge, in the API's own words: text with control characters,
//! `.` and `..` as ids, cursors that decode to such text, bodies over the limit or with
//! bytes after their JSON. Every refusal is a JSON error and appends nothing.

use orderlog::store::Database;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    control_characters_in_body_text_are_422s_naming_the_field,
    free_text_keeps_its_tabs_and_newlines,
    control_characters_in_cursors_and_query_values_are_422s,
    dot_segments_are_neither_ids_nor_skus,
    every_json_route_limits_its_body_and_answers_in_json,
    json_ends_after_its_value,
);

/// Asserts a 422 `invalid_field` naming `field`.
async fn refused(response: reqwest::Response, field: &str, what: &str) {
    let error = expect_error(response, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    assert_eq!(error["field"], field, "{what}: {error}");
}

async fn control_characters_in_body_text_are_422s_naming_the_field(backend: Backend) {
    let app = spawn_app(backend).await;
    let db = Database::connect(&app.database_url, 2).await.unwrap();
    app.paid_order("ord-c").await;
    app.place_order("ord-m").await;
    let r = app
        .post("/v1/inventory/SKU-C/receipts", &json!({"quantity": 5}))
        .await;
    expect_status(r, StatusCode::CREATED).await;
    let before = event_count(&db).await;

    // The finding: PostgreSQL's shipping view could not hold this carrier, and stopped.
    let r = app
        .post(
            "/v1/orders/ord-c/shipments",
            &json!({"shipment_id": "s348", "carrier": "\u{0}", "tracking_number": "1Z999AA1348"}),
        )
        .await;
    refused(r, "carrier", "a NUL carrier").await;

    let bad = [
        "\u{0}",
        "a\u{0}b",
        "\u{1}",
        "\u{1b}[31mred",
        "\u{7f}",
        "\u{85}",
        "line\rfeed",
    ];
    for text in bad {
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "/v1/orders/ord-c/shipments",
                json!({"carrier": text, "tracking_number": "1Z"}),
                "carrier",
            ),
            (
                "/v1/orders/ord-c/shipments",
                json!({"carrier": "UPS", "tracking_number": text}),
                "tracking_number",
            ),
            (
                "/v1/orders/ord-c/refunds",
                json!({"amount": 100, "reason": text}),
                "reason",
            ),
            ("/v1/orders/ord-c/cancel", json!({"reason": text}), "reason"),
            (
                "/v1/orders/ord-c/payments/pay-1/fail",
                json!({"reason": text}),
                "reason",
            ),
            (
                "/v1/orders/ord-m/payments",
                json!({"amount": 5000, "method": text}),
                "method",
            ),
            (
                "/v1/inventory/SKU-C/adjustments",
                json!({"delta": 1, "reason": text}),
                "reason",
            ),
        ];
        for (path, body, field) in cases {
            refused(
                app.post(path, &body).await,
                field,
                &format!("{path} {body}"),
            )
            .await;
        }
        for (pointer, field) in [
            ("/shipping_address/name", "shipping_address.name"),
            ("/shipping_address/line1", "shipping_address.line1"),
            ("/shipping_address/city", "shipping_address.city"),
            (
                "/shipping_address/postal_code",
                "shipping_address.postal_code",
            ),
        ] {
            let mut order = fixture("place_order.json", "ord-new");
            *order.pointer_mut(pointer).unwrap() = json!(text);
            refused(app.post("/v1/orders", &order).await, field, pointer).await;
        }
        let mut order = fixture("place_order.json", "ord-new");
        order["shipping_address"]["line2"] = json!(text);
        refused(
            app.post("/v1/orders", &order).await,
            "shipping_address.line2",
            "line2",
        )
        .await;

        // A subscription's description, on create and on update.
        let sub = json!({
            "kind": "webhook", "url": "http://127.0.0.1:9/hook",
            "event_types": ["order.*"], "description": text,
        });
        refused(
            app.post("/v1/subscriptions", &sub).await,
            "description",
            "create",
        )
        .await;
    }
    let sub = expect_status(
        app.post(
            "/v1/subscriptions",
            &json!({"kind": "webhook", "url": "http://127.0.0.1:9/hook",
                    "event_types": ["order.*"], "description": "fine"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let id = sub["id"].as_str().unwrap();
    for text in bad {
        let r = app
            .client
            .patch(app.url(&format!("/v1/subscriptions/{id}")))
            .json(&json!({ "description": text }))
            .send()
            .await
            .unwrap();
        refused(r, "description", "update").await;
    }
    let shown = expect_status(
        app.get(&format!("/v1/subscriptions/{id}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(shown["description"], "fine");

    assert_eq!(
        event_count(&db).await,
        before,
        "nothing refused was appended"
    );
    let status = app.projections_caught_up().await;
    assert!(
        status["projections"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["state"] == "running"),
        "{status}"
    );
}

async fn free_text_keeps_its_tabs_and_newlines(backend: Backend) {
    let app = spawn_app(backend).await;
    app.paid_order("ord-t").await;
    let r = app
        .post(
            "/v1/orders/ord-t/refunds",
            &json!({"refund_id": "r1", "amount": 100, "reason": " broken\tmug,\nsee photo "}),
        )
        .await;
    let refund = expect_status(r, StatusCode::CREATED).await;
    assert_eq!(refund["reason"], "broken\tmug,\nsee photo", "trimmed, kept");
    let r = app
        .post(
            "/v1/subscriptions",
            &json!({"kind": "webhook", "url": "http://127.0.0.1:9/hook",
                    "event_types": ["order.*"], "description": "line one\nline\ttwo"}),
        )
        .await;
    let sub = expect_status(r, StatusCode::CREATED).await;
    assert_eq!(sub["description"], "line one\nline\ttwo");
    // A carrier is free text too; an empty address line stays allowed, as before.
    let mut order = fixture("place_order.json", "ord-t2");
    order["shipping_address"]["line2"] = json!("");
    expect_status(app.post("/v1/orders", &order).await, StatusCode::CREATED).await;
}

async fn control_characters_in_cursors_and_query_values_are_422s(backend: Backend) {
    let app = spawn_app(backend).await;
    for i in 0..3 {
        app.paid_order(&format!("ord-q{i}")).await;
    }
    let r = app
        .post("/v1/inventory/SKU-Q/receipts", &json!({"quantity": 5}))
        .await;
    expect_status(r, StatusCode::CREATED).await;
    app.projections_caught_up().await;

    let nul_id = hex::encode("2026-11-21T12:00:00.000000Z|a\u{0}");
    let sub = "00000000-0000-0000-0000-000000000001";
    let cases = [
        // The findings: each was a 500 on PostgreSQL.
        ("/v1/orders?cursor=007c00".to_owned(), "cursor"),
        (format!("/v1/orders?status=paid&cursor={nul_id}"), "cursor"),
        (
            "/v1/inventory?below=1000&cursor=317c00".to_owned(),
            "cursor",
        ),
        // Other cursors that decode to text no id holds.
        (
            format!(
                "/v1/orders?cursor={}",
                hex::encode("2026-11-21T12:00:00.000000Z|a\u{1b}")
            ),
            "cursor",
        ),
        (
            format!("/v1/orders?cursor={}", hex::encode("\u{0}|ord-q1")),
            "cursor",
        ),
        (
            format!(
                "/v1/inventory?below=1000&cursor={}",
                hex::encode("1|a\u{7f}")
            ),
            "cursor",
        ),
        // Query values.
        ("/v1/orders?status=paid%00".to_owned(), "status"),
        ("/v1/orders?customer_id=%00".to_owned(), "customer_id"),
        ("/v1/orders?created_after=%00".to_owned(), "created_after"),
        ("/v1/orders/ord-q1?at=%00".to_owned(), "at"),
        ("/v1/inventory?below=%00".to_owned(), "below"),
        (
            "/v1/billing/daily?from=2026-01-01&to=2026-01-02&currency=US%00".to_owned(),
            "currency",
        ),
        (
            "/v1/analytics/summary?from=2026-01-01%00&to=2026-01-02".to_owned(),
            "from",
        ),
        ("/v1/shipping/shipments?status=%1B".to_owned(), "status"),
        ("/v1/events/stream?types=order.*%00".to_owned(), "types"),
        ("/v1/events/stream?after=1-1%00".to_owned(), "after"),
        (
            format!("/v1/subscriptions/{sub}/attempts?event_id=%00"),
            "event_id",
        ),
    ];
    for (path, field) in cases {
        let r = app.get(&path).await;
        refused(r, field, &path).await;
    }

    // Cursors this API returned still page through everything.
    let orders = app.all_pages("/v1/orders?limit=1", "orders").await;
    assert_eq!(orders.len(), 3);
    let items = app
        .all_pages("/v1/inventory?below=1000&limit=1", "items")
        .await;
    assert_eq!(items.len(), 1);
}

async fn dot_segments_are_neither_ids_nor_skus(backend: Backend) {
    let app = spawn_app(backend).await;
    let db = Database::connect(&app.database_url, 2).await.unwrap();
    app.paid_order("ord-d").await;
    let before = event_count(&db).await;
    let json_type = [("content-type", "application/json")];

    // As path segments, written out and percent-encoded (reqwest would resolve them
    // away: these go out as they are).
    for segment in [".", "..", "%2E", "%2E%2E", "%2e%2E"] {
        for (method, path, body, field) in [
            (
                "POST",
                format!("/v1/inventory/{segment}/receipts"),
                r#"{"quantity": 1}"#,
                "sku",
            ),
            (
                "POST",
                format!("/v1/inventory/{segment}/adjustments"),
                r#"{"delta": 1, "reason": "count"}"#,
                "sku",
            ),
            ("GET", format!("/v1/inventory/{segment}"), "", "sku"),
            ("GET", format!("/v1/orders/{segment}"), "", "order_id"),
            (
                "GET",
                format!("/v1/billing/orders/{segment}"),
                "",
                "order_id",
            ),
            (
                "POST",
                format!("/v1/orders/{segment}/cancel"),
                r#"{"reason": "x"}"#,
                "order_id",
            ),
            (
                "POST",
                format!("/v1/orders/ord-d/shipments/{segment}/deliver"),
                "",
                "shipment_id",
            ),
        ] {
            let r = app.raw(method, &path, &json_type, body.into()).await;
            assert_eq!(
                r.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{method} {path}"
            );
            assert_eq!(r.content_type(), "application/json", "{method} {path}");
            let error = r.json();
            assert_eq!(error["code"], "invalid_field", "{method} {path}: {error}");
            assert_eq!(error["field"], field, "{method} {path}: {error}");
        }
    }

    // And in bodies.
    for id in [".", "..", "a/b"] {
        let mut order = fixture("place_order.json", "ord-dots");
        order["lines"][0]["sku"] = json!(id);
        refused(app.post("/v1/orders", &order).await, "lines[0].sku", id).await;
        let order = fixture("place_order.json", id);
        refused(app.post("/v1/orders", &order).await, "order_id", id).await;
        let r = app
            .post(
                "/v1/orders/ord-d/shipments",
                &json!({"shipment_id": id, "carrier": "UPS", "tracking_number": "1"}),
            )
            .await;
        refused(r, "shipment_id", id).await;
        let r = app
            .post(
                "/v1/orders/ord-d/shipments",
                &json!({"carrier": "UPS", "tracking_number": "1",
                        "lines": [{"sku": id, "quantity": 1}]}),
            )
            .await;
        refused(r, "lines[0].sku", id).await;
    }
    // Dots inside a SKU are still fine.
    let r = app
        .post(
            "/v1/inventory/TSHIRT.RED.M/receipts",
            &json!({"quantity": 1}),
        )
        .await;
    expect_status(r, StatusCode::CREATED).await;
    assert_eq!(
        event_count(&db).await,
        before + 1,
        "only the receipt was appended"
    );
}

/// Every route that takes a JSON body, with one its handler accepts.
fn json_routes(order: &str, sub: &str) -> Vec<(&'static str, String, Value)> {
    vec![
        (
            "POST",
            "/v1/orders".into(),
            fixture("place_order.json", "ord-big"),
        ),
        (
            "POST",
            format!("/v1/orders/{order}/payments"),
            json!({"amount": 5000}),
        ),
        (
            "POST",
            format!("/v1/orders/{order}/payments/pay-1/fail"),
            json!({"reason": "x"}),
        ),
        (
            "POST",
            format!("/v1/orders/{order}/shipments"),
            json!({"carrier": "UPS", "tracking_number": "1"}),
        ),
        (
            "POST",
            format!("/v1/orders/{order}/cancel"),
            json!({"reason": "x"}),
        ),
        (
            "POST",
            format!("/v1/orders/{order}/refunds"),
            json!({"amount": 1, "reason": "x"}),
        ),
        (
            "POST",
            "/v1/inventory/SKU-B/receipts".into(),
            json!({"quantity": 47}),
        ),
        (
            "POST",
            "/v1/inventory/SKU-B/adjustments".into(),
            json!({"delta": 1, "reason": "x"}),
        ),
        (
            "POST",
            "/v1/subscriptions".into(),
            json!({"kind": "webhook", "url": "http://127.0.0.1:9/hook", "event_types": ["order.*"]}),
        ),
        (
            "PATCH",
            format!("/v1/subscriptions/{sub}"),
            json!({"description": "x"}),
        ),
        (
            "POST",
            format!("/v1/subscriptions/{sub}/secret/rotate"),
            json!({"overlap": "1h"}),
        ),
        (
            "POST",
            format!("/v1/subscriptions/{sub}/rewind"),
            json!({"position": 1}),
        ),
        (
            "POST",
            "/v1/tokens".into(),
            json!({"name": "big", "scopes": ["orders:read"]}),
        ),
    ]
}

async fn every_json_route_limits_its_body_and_answers_in_json(backend: Backend) {
    let app = spawn_app(backend).await;
    let db = Database::connect(&app.database_url, 2).await.unwrap();
    app.place_order("ord-b").await;
    let sub = expect_status(
        app.post(
            "/v1/subscriptions",
            &json!({"kind": "webhook", "url": "http://127.0.0.1:9/hook",
                    "event_types": ["order.*"], "description": "x"}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let sub = sub["id"].as_str().unwrap().to_owned();
    let before = event_count(&db).await;
    let limit = 1024 * 1024;
    for (method, path, mut body) in json_routes("ord-b", &sub) {
        // A valid body padded past the limit with one more field: refused for its size
        // before anything reads what it says, with or without an Idempotency-Key.
        for size in [limit + 1, limit + limit / 2, 3 * limit] {
            body["padding"] = json!("");
            let pad = size - serde_json::to_vec(&body).unwrap().len();
            body["padding"] = json!("x".repeat(pad));
            let bytes = serde_json::to_vec(&body).unwrap();
            assert_eq!(bytes.len(), size);
            for key in [None, Some(format!("big-{method}-{path}-{size}"))] {
                let mut headers = vec![("content-type", "application/json")];
                if let Some(key) = &key {
                    headers.push(("idempotency-key", key.as_str()));
                }
                let r = app.raw(method, &path, &headers, bytes.clone()).await;
                let what = format!("{method} {path} with {size} bytes, key {key:?}");
                assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{what}");
                assert_eq!(r.content_type(), "application/json", "{what}");
                assert_eq!(r.json()["code"], "payload_too_large", "{what}");
            }
        }
        // Refused in JSON whatever is wrong with it: not JSON, or not said to be.
        body.as_object_mut().unwrap().remove("padding");
        let text = serde_json::to_vec(&body).unwrap();
        for (headers, status, code) in [
            (
                vec![("content-type", "text/plain")],
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
            (
                vec![],
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
        ] {
            let r = app.raw(method, &path, &headers, text.clone()).await;
            let what = format!("{method} {path} with {headers:?}");
            assert_eq!(r.status, status, "{what}");
            assert_eq!(r.content_type(), "application/json", "{what}");
            assert_eq!(r.json()["code"], code, "{what}");
        }
        let r = app
            .raw(
                method,
                &path,
                &[("content-type", "application/json")],
                b"{\"a\": ".to_vec(),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{method} {path}");
        assert_eq!(r.content_type(), "application/json", "{method} {path}");
        assert_eq!(r.json()["code"], "malformed_json", "{method} {path}");
    }
    // The rotation's body is optional; left out, it still rotates.
    let r = app
        .post_empty(&format!("/v1/subscriptions/{sub}/secret/rotate"))
        .await;
    expect_status(r, StatusCode::OK).await;
    assert_eq!(
        event_count(&db).await,
        before,
        "nothing refused was appended"
    );
}

async fn json_ends_after_its_value(backend: Backend) {
    let app = spawn_app(backend).await;
    let db = Database::connect(&app.database_url, 2).await.unwrap();
    app.place_order("ord-j").await;
    let sub = expect_status(
        app.post(
            "/v1/subscriptions",
            &json!({"kind": "webhook", "url": "http://127.0.0.1:9/hook", "event_types": ["order.*"]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let sub = sub["id"].as_str().unwrap().to_owned();
    let before = event_count(&db).await;
    for (method, path, body) in json_routes("ord-j", &sub) {
        let text = serde_json::to_string(&body).unwrap();
        for trailing in ["garbage", "{}", "\u{0}", " x", "\n]", "}"] {
            let bytes = format!("{text}{trailing}").into_bytes();
            let r = app
                .raw(
                    method,
                    &path,
                    &[("content-type", "application/json")],
                    bytes,
                )
                .await;
            let what = format!("{method} {path} followed by {trailing:?}");
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}");
            assert_eq!(r.content_type(), "application/json", "{what}");
            assert_eq!(r.json()["code"], "malformed_json", "{what}");
        }
    }
    assert_eq!(
        event_count(&db).await,
        before,
        "nothing refused was appended"
    );
    // Whitespace after the value is not trailing bytes.
    let r = app
        .raw(
            "POST",
            "/v1/inventory/SKU-J/receipts",
            &[("content-type", "application/json")],
            b"{\"quantity\": 47} \r\n\t ".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}
