//! Stock without overselling: reservations on placement, all or nothing, that follow
//! the order afterwards, and survive a crash mid-placement.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use orderlog::app::Overrides;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    receipts_and_adjustments_move_stock_levels,
    an_adjustment_below_what_is_reserved_is_refused,
    placing_an_order_reserves_its_lines,
    an_order_for_more_than_is_available_is_refused_and_holds_nothing,
    a_multi_line_order_is_all_or_nothing,
    untracked_skus_are_accepted_without_a_reservation,
    untracked_skus_are_refused_when_tracking_is_required,
    five_hundred_buyers_of_one_hundred_units_never_oversell,
    cancelling_releases_the_stock,
    a_failed_payment_releases_the_stock_after_the_grace_period,
    a_new_payment_attempt_within_the_grace_period_keeps_the_stock,
    an_unpaid_order_expires_and_releases_its_stock,
    shipping_commits_the_reserved_units,
    a_crash_between_reserving_and_placing_leaves_no_stock_held,
    low_stock_is_listed_fewest_first_in_pages,
    a_receipt_can_wait_until_stock_levels_show_it,
    a_repeated_order_id_is_refused_as_such_and_holds_nothing_more,
);

async fn a_repeated_order_id_is_refused_as_such_and_holds_nothing_more(backend: Backend) {
    let app = spawn_app(backend).await;
    receive(&app, "MUG", 2).await;
    let body = order_body("o-dup", &[("MUG", 2)]);
    expect_status(app.post("/v1/orders", &body).await, StatusCode::CREATED).await;
    // Sold out now, and the first order holds its units: still "this order exists".
    expect_error(
        app.post("/v1/orders", &body).await,
        StatusCode::CONFLICT,
        "order_exists",
    )
    .await;
    receive(&app, "MUG", 5).await;
    expect_error(
        app.post("/v1/orders", &body).await,
        StatusCode::CONFLICT,
        "order_exists",
    )
    .await;
    app.projections_caught_up().await;
    let view = levels_when(&app, "MUG", 5).await;
    assert_eq!(view["reserved"], 2, "only the first order holds stock");
}

async fn a_receipt_can_wait_until_stock_levels_show_it(backend: Backend) {
    let app = spawn_app(backend).await;
    for n in 1..=3 {
        let r = app
            .client
            .post(app.url("/v1/inventory/SOCK/receipts"))
            .header("X-Wait-For", "inventory")
            .json(&json!({"quantity": 5}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-wait-for-result"], "caught_up");
        expect_status(r, StatusCode::CREATED).await;
        // Read-your-writes: no polling needed.
        let view = expect_status(app.get("/v1/inventory/SOCK").await, StatusCode::OK).await;
        assert_eq!(view["on_hand"], 5 * n);
    }
}

async fn receive(app: &TestApp, sku: &str, quantity: i64) -> Value {
    let r = app
        .post(
            &format!("/v1/inventory/{sku}/receipts"),
            &json!({"quantity": quantity}),
        )
        .await;
    expect_status(r, StatusCode::CREATED).await
}

/// The stock view of `sku` once it satisfies `expected` (it follows the log, and the
/// process manager acts on timers).
async fn levels_where(app: &TestApp, sku: &str, expected: impl Fn(&Value) -> bool) -> Value {
    let what = format!("{sku} to reach the expected levels");
    eventually(&what, Duration::from_secs(10), || async {
        let r = app.get(&format!("/v1/inventory/{sku}")).await;
        if r.status() != StatusCode::OK {
            return Err(format!("status {}", r.status()));
        }
        let levels: Value = r.json().await.unwrap();
        if expected(&levels) {
            Ok(levels)
        } else {
            Err(levels.to_string())
        }
    })
    .await
}

async fn levels_when(app: &TestApp, sku: &str, available: i64) -> Value {
    levels_where(app, sku, |v| v["available"] == available).await
}

/// The `inventory.released` event for `sku`, once the process manager has released it.
async fn released(app: &TestApp, sku: &str) -> Value {
    let what = format!("{sku} to be released");
    eventually(&what, Duration::from_secs(10), || async {
        let events = app.inventory_events(sku).await;
        events
            .iter()
            .find(|e| e["event_type"] == "inventory.released")
            .cloned()
            .ok_or_else(|| format!("{} events, none a release", events.len()))
    })
    .await
}

async fn receipts_and_adjustments_move_stock_levels(backend: Backend) {
    let app = spawn_app(backend).await;
    let levels = receive(&app, "MUG", 10).await;
    assert_eq!(
        levels,
        json!({"sku": "MUG", "on_hand": 10, "reserved": 0, "available": 10})
    );
    let r = app
        .post(
            "/v1/inventory/MUG/adjustments",
            &json!({"delta": -3, "reason": "broken in storage"}),
        )
        .await;
    let levels = expect_status(r, StatusCode::CREATED).await;
    assert_eq!(levels["on_hand"], 7);
    let view = levels_when(&app, "MUG", 7).await;
    assert_eq!(view["on_hand"], 7);
    assert_eq!(view["reserved"], 0);
    assert!(view["updated_at"].is_string());

    expect_error(
        app.get("/v1/inventory/NEVER-SEEN").await,
        StatusCode::NOT_FOUND,
        "sku_not_found",
    )
    .await;
    let r = app
        .post("/v1/inventory/MUG/receipts", &json!({"quantity": 0}))
        .await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    let r = app
        .post(
            "/v1/inventory/MUG/adjustments",
            &json!({"delta": 0, "reason": "nothing"}),
        )
        .await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    let r = app
        .post("/v1/inventory/bad%20sku/receipts", &json!({"quantity": 1}))
        .await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
}

async fn an_adjustment_below_what_is_reserved_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    receive(&app, "MUG", 5).await;
    expect_status(
        app.post("/v1/orders", &order_body("o-1", &[("MUG", 3)]))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let r = app
        .post(
            "/v1/inventory/MUG/adjustments",
            &json!({"delta": -3, "reason": "stocktake"}),
        )
        .await;
    expect_error(r, StatusCode::CONFLICT, "available_would_go_negative").await;
    let r = app
        .post(
            "/v1/inventory/MUG/adjustments",
            &json!({"delta": -2, "reason": "stocktake"}),
        )
        .await;
    let levels = expect_status(r, StatusCode::CREATED).await;
    assert_eq!(levels["available"], 0);
    assert_eq!(levels["reserved"], 3);
}

async fn placing_an_order_reserves_its_lines(backend: Backend) {
    let app = spawn_app(backend).await;
    receive(&app, "MUG", 10).await;
    expect_status(
        app.post("/v1/orders", &order_body("o-1", &[("MUG", 4)]))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let view = levels_when(&app, "MUG", 6).await;
    assert_eq!(view["reserved"], 4);
    assert_eq!(view["on_hand"], 10);
    let events = app.inventory_events("MUG").await;
    let reserved = events
        .iter()
        .find(|e| e["event_type"] == "inventory.reserved")
        .unwrap();
    assert_eq!(reserved["payload"]["order_id"], "o-1");
    assert_eq!(reserved["payload"]["quantity"], 4);
}

async fn an_order_for_more_than_is_available_is_refused_and_holds_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    receive(&app, "MUG", 2).await;
    let r = app
        .post("/v1/orders", &order_body("o-big", &[("MUG", 3)]))
        .await;
    let error = expect_error(r, StatusCode::CONFLICT, "out_of_stock").await;
    assert_eq!(
        error["short"],
        json!([{"sku": "MUG", "requested": 3, "available": 2}])
    );
    expect_error(
        app.get("/v1/orders/o-big").await,
        StatusCode::NOT_FOUND,
        "order_not_found",
    )
    .await;
    let events = app.inventory_events("MUG").await;
    assert_eq!(events.last().unwrap()["event_type"], "inventory.rejected");
    app.projections_caught_up().await;
    assert_eq!(levels_when(&app, "MUG", 2).await["reserved"], 0);
}

async fn a_multi_line_order_is_all_or_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    receive(&app, "MUG", 5).await;
    receive(&app, "TEE", 1).await;
    receive(&app, "HAT", 1).await;
    let r = app
        .post(
            "/v1/orders",
            &order_body("o-m", &[("MUG", 2), ("TEE", 2), ("HAT", 1)]),
        )
        .await;
    let error = expect_error(r, StatusCode::CONFLICT, "out_of_stock").await;
    assert_eq!(
        error["short"],
        json!([{"sku": "TEE", "requested": 2, "available": 1}])
    );
    app.projections_caught_up().await;
    // What was reserved for the lines that fit went back.
    assert_eq!(levels_when(&app, "MUG", 5).await["reserved"], 0);
    assert_eq!(levels_when(&app, "HAT", 1).await["reserved"], 0);
    let released = app.inventory_events("MUG").await;
    assert_eq!(released.last().unwrap()["event_type"], "inventory.released");

    let r = app
        .post(
            "/v1/orders",
            &order_body("o-ok", &[("MUG", 2), ("TEE", 1), ("HAT", 1)]),
        )
        .await;
    expect_status(r, StatusCode::CREATED).await;
    assert_eq!(levels_when(&app, "TEE", 0).await["reserved"], 1);
}

async fn untracked_skus_are_accepted_without_a_reservation(backend: Backend) {
    let app = spawn_app(backend).await;
    receive(&app, "MUG", 5).await;
    let r = app
        .post(
            "/v1/orders",
            &order_body("o-u", &[("MUG", 1), ("EBOOK", 1)]),
        )
        .await;
    expect_status(r, StatusCode::CREATED).await;
    let created = &app.events("o-u").await[0];
    let lines = created["payload"]["lines"].as_array().unwrap();
    assert!(
        lines[0].get("untracked").is_none(),
        "tracked lines say nothing"
    );
    assert_eq!(lines[1]["untracked"], true);
    assert!(
        app.inventory_events("EBOOK").await.is_empty(),
        "nothing is written for an untracked SKU"
    );
}

async fn untracked_skus_are_refused_when_tracking_is_required(backend: Backend) {
    let url = fresh_database(backend).await;
    let app = spawn_app_on(&url, |s| s.require_tracked_skus = true).await;
    receive(&app, "MUG", 5).await;
    let r = app
        .post(
            "/v1/orders",
            &order_body("o-r", &[("MUG", 1), ("EBOOK", 1)]),
        )
        .await;
    let error = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "unknown_sku").await;
    assert_eq!(error["skus"], json!(["EBOOK"]));
    app.projections_caught_up().await;
    assert_eq!(
        levels_when(&app, "MUG", 5).await["reserved"],
        0,
        "the tracked line's hold went back"
    );
}

async fn five_hundred_buyers_of_one_hundred_units_never_oversell(backend: Backend) {
    let app = &spawn_app(backend).await;
    receive(app, "DROP", 100).await;
    let responses = join_all((0..500).map(|i| async move {
        app.post(
            "/v1/orders",
            &order_body(&format!("fs-{i}"), &[("DROP", 1)]),
        )
        .await
    }))
    .await;
    let (mut created, mut refused) = (0, 0);
    for r in responses {
        match r.status() {
            StatusCode::CREATED => created += 1,
            _ => {
                expect_error(r, StatusCode::CONFLICT, "out_of_stock").await;
                refused += 1;
            }
        }
    }
    assert_eq!((created, refused), (100, 400));
    let events = app.inventory_events("DROP").await;
    for event in &events {
        let available = event["payload"]["available"].as_i64().unwrap();
        assert!(
            available >= 0,
            "an event shows negative availability: {event}"
        );
    }
    let reserved = events
        .iter()
        .filter(|e| e["event_type"] == "inventory.reserved")
        .count();
    assert_eq!(reserved, 100);
    let view = levels_when(app, "DROP", 0).await;
    assert_eq!(view["reserved"], 100);
}

async fn cancelling_releases_the_stock(backend: Backend) {
    let app = spawn_app(backend).await;
    receive(&app, "MUG", 3).await;
    expect_status(
        app.post("/v1/orders", &order_body("o-c", &[("MUG", 3)]))
            .await,
        StatusCode::CREATED,
    )
    .await;
    levels_when(&app, "MUG", 0).await;
    let r = app
        .post("/v1/orders/o-c/cancel", &json!({"reason": "changed mind"}))
        .await;
    expect_status(r, StatusCode::OK).await;
    let view = levels_when(&app, "MUG", 3).await;
    assert_eq!(view["reserved"], 0);
    let events = app.inventory_events("MUG").await;
    let released = events.last().unwrap();
    assert_eq!(released["event_type"], "inventory.released");
    assert_eq!(released["payload"]["reason"], "order cancelled");
    assert_eq!(released["metadata"]["actor"], "orderlog:reservations");
}

async fn pay_and_fail(app: &TestApp, order_id: &str, payment_id: &str) {
    let r = app
        .post(
            &format!("/v1/orders/{order_id}/payments"),
            &json!({"payment_id": payment_id, "amount": 100}),
        )
        .await;
    expect_status(r, StatusCode::CREATED).await;
    let r = app
        .post(
            &format!("/v1/orders/{order_id}/payments/{payment_id}/fail"),
            &json!({"reason": "declined"}),
        )
        .await;
    expect_status(r, StatusCode::OK).await;
}

async fn a_failed_payment_releases_the_stock_after_the_grace_period(backend: Backend) {
    let url = fresh_database(backend).await;
    let app = spawn_app_on(&url, |s| s.payment_grace = Duration::from_millis(400)).await;
    receive(&app, "MUG", 1).await;
    expect_status(
        app.post("/v1/orders", &order_body("o-f", &[("MUG", 1)]))
            .await,
        StatusCode::CREATED,
    )
    .await;
    pay_and_fail(&app, "o-f", "p1").await;
    let event = released(&app, "MUG").await;
    assert_eq!(
        event["payload"]["reason"],
        "payment failed and no new attempt came in time"
    );
    app.projections_caught_up().await;
    assert_eq!(levels_when(&app, "MUG", 1).await["reserved"], 0);
    let order = expect_status(app.get("/v1/orders/o-f").await, StatusCode::OK).await;
    assert_eq!(
        order["status"], "placed",
        "the order stays; only its stock went back"
    );
}

async fn a_new_payment_attempt_within_the_grace_period_keeps_the_stock(backend: Backend) {
    let url = fresh_database(backend).await;
    let app = spawn_app_on(&url, |s| s.payment_grace = Duration::from_millis(800)).await;
    receive(&app, "MUG", 1).await;
    expect_status(
        app.post("/v1/orders", &order_body("o-g", &[("MUG", 1)]))
            .await,
        StatusCode::CREATED,
    )
    .await;
    pay_and_fail(&app, "o-g", "p1").await;
    let r = app
        .post(
            "/v1/orders/o-g/payments",
            &json!({"payment_id": "p2", "amount": 100}),
        )
        .await;
    expect_status(r, StatusCode::CREATED).await;
    expect_status(
        app.post_empty("/v1/orders/o-g/payments/p2/capture").await,
        StatusCode::OK,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    app.projections_caught_up().await;
    let view = levels_when(&app, "MUG", 0).await;
    assert_eq!(view["reserved"], 1, "still held for the paid order");
}

async fn an_unpaid_order_expires_and_releases_its_stock(backend: Backend) {
    let url = fresh_database(backend).await;
    let app = spawn_app_on(&url, |s| s.unpaid_order_ttl = Duration::from_millis(400)).await;
    receive(&app, "MUG", 2).await;
    expect_status(
        app.post("/v1/orders", &order_body("o-e", &[("MUG", 2)]))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let event = released(&app, "MUG").await;
    assert_eq!(event["payload"]["reason"], "order expired");
    let order = expect_status(app.get("/v1/orders/o-e").await, StatusCode::OK).await;
    assert_eq!(order["status"], "expired");
    let events = app.events("o-e").await;
    let expired = events.last().unwrap();
    assert_eq!(expired["event_type"], "order.expired");
    assert_eq!(expired["metadata"]["actor"], "orderlog:reservations");
    let r = app
        .post("/v1/orders/o-e/payments", &json!({"amount": 200}))
        .await;
    expect_error(r, StatusCode::CONFLICT, "order_expired").await;
}

async fn shipping_commits_the_reserved_units(backend: Backend) {
    let app = spawn_app(backend).await;
    receive(&app, "MUG", 10).await;
    receive(&app, "TEE", 10).await;
    expect_status(
        app.post(
            "/v1/orders",
            &order_body("o-s", &[("MUG", 3), ("TEE", 1), ("EBOOK", 1)]),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let r = app
        .post(
            "/v1/orders/o-s/payments",
            &json!({"payment_id": "p1", "amount": 500}),
        )
        .await;
    expect_status(r, StatusCode::CREATED).await;
    expect_status(
        app.post_empty("/v1/orders/o-s/payments/p1/capture").await,
        StatusCode::OK,
    )
    .await;
    let r = app
        .post("/v1/orders/o-s/shipments", &json!({"shipment_id": "s1", "carrier": "UPS", "tracking_number": "1", "lines": [{"sku": "MUG", "quantity": 2}, {"sku": "EBOOK", "quantity": 1}]}))
        .await;
    expect_status(r, StatusCode::CREATED).await;
    // The first shipment commits 2 of the 3 units held; the untracked line commits nothing.
    let mug = levels_where(&app, "MUG", |v| v["on_hand"] == 8).await;
    assert_eq!(
        (mug["reserved"].clone(), mug["available"].clone()),
        (json!(1), json!(7))
    );
    let r = app
        .post(
            "/v1/orders/o-s/shipments",
            &json!({"shipment_id": "s2", "carrier": "UPS", "tracking_number": "2"}),
        )
        .await;
    expect_status(r, StatusCode::CREATED).await;
    let tee = levels_where(&app, "TEE", |v| v["on_hand"] == 9).await;
    assert_eq!(
        (tee["reserved"].clone(), tee["available"].clone()),
        (json!(0), json!(9))
    );
    let mug = levels_where(&app, "MUG", |v| v["on_hand"] == 7).await;
    assert_eq!(
        (mug["reserved"].clone(), mug["available"].clone()),
        (json!(0), json!(7))
    );
    let committed = app
        .inventory_events("MUG")
        .await
        .into_iter()
        .filter(|e| e["event_type"] == "inventory.committed")
        .count();
    assert_eq!(committed, 2, "one commit per shipment, never repeated");
}

async fn a_crash_between_reserving_and_placing_leaves_no_stock_held(backend: Backend) {
    let url = fresh_database(backend).await;
    let overrides = Overrides {
        placement_fault: Some(Arc::new(|order_id: &orderlog::domain::values::OrderId| {
            order_id.as_str() == "o-crash"
        })),
        ..Overrides::default()
    };
    // Held for 3 s before its release falls due: still held when the storefront
    // retries at once.
    let app = spawn_app_with(
        &url,
        |s| s.orphan_hold_timeout = Duration::from_secs(3),
        overrides,
    )
    .await;
    receive(&app, "MUG", 4).await;
    let body = order_body("o-crash", &[("MUG", 3)]);
    let r = app.post("/v1/orders", &body).await;
    expect_error(r, StatusCode::INTERNAL_SERVER_ERROR, "internal_error").await;
    // The retry is told the truth: the order does not exist, and stock is held for it
    // until the hold is released; "it exists" would make a storefront give up on it.
    let r = app.post("/v1/orders", &body).await;
    assert_eq!(r.headers()["retry-after"], "1");
    expect_error(r, StatusCode::SERVICE_UNAVAILABLE, "placement_pending").await;
    // The process "died" holding 3 units for an order that does not exist.
    let events = app.inventory_events("MUG").await;
    assert_eq!(events.last().unwrap()["event_type"], "inventory.reserved");
    expect_error(
        app.get("/v1/orders/o-crash").await,
        StatusCode::NOT_FOUND,
        "order_not_found",
    )
    .await;
    // Restart: the process manager finds the orphaned hold and releases it.
    app.stop().await;
    let restarted =
        spawn_app_on(&url, |s| s.orphan_hold_timeout = Duration::from_millis(300)).await;
    let released = eventually(
        "the orphaned hold to be released",
        Duration::from_secs(15),
        || async {
            let last = restarted.inventory_events("MUG").await.pop().unwrap();
            if last["event_type"] == "inventory.released" {
                Ok(last)
            } else {
                Err(last)
            }
        },
    )
    .await;
    assert_eq!(released["event_type"], "inventory.released");
    assert_eq!(released["payload"]["reason"], "order never placed");
    restarted.projections_caught_up().await;
    assert_eq!(levels_when(&restarted, "MUG", 4).await["reserved"], 0);
    // And the storefront's next retry places the order the crash cut off.
    let placed = expect_status(
        restarted.post("/v1/orders", &body).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(placed["lines"][0]["quantity"], 3);
    assert_eq!(levels_when(&restarted, "MUG", 1).await["reserved"], 3);
}

async fn low_stock_is_listed_fewest_first_in_pages(backend: Backend) {
    let app = spawn_app(backend).await;
    for (sku, n) in [("A", 5), ("B", 1), ("C", 3), ("D", 50), ("E", 2)] {
        receive(&app, sku, n).await;
    }
    app.projections_caught_up().await;
    let items = app
        .all_pages("/v1/inventory?below=10&limit=2", "items")
        .await;
    let seen: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(seen, ["B", "E", "C", "A"]);
    let r = app.get("/v1/inventory").await;
    let error = expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
    assert_eq!(error["field"], "below");
}
