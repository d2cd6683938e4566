//! Storefront orders end to end: the platforms' payloads (`fixtures/shopify`,
//! `fixtures/woocommerce`) through the webhook path and through the import, giving the
//! same orders and events; duplicates, out-of-order and stale snapshots; backorders and
//! a later receipt; deliveries the domain refuses; and a crash between the inbox and
//! applying.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;
use crate::sources::{
    inbox, send_shopify, send_woocommerce, shopify_source, sign, woocommerce_source,
    SHOPIFY_SECRET, WOO_SECRET,
};

on_both_backends!(
    an_order_shows_its_origin_and_is_found_by_it,
    every_fixture_gives_the_same_orders_through_webhooks_and_through_import,
    duplicate_stale_and_out_of_order_snapshots_change_nothing,
    a_short_line_is_backordered_and_a_later_receipt_fills_it,
    a_delivery_the_domain_refuses_is_kept_failed_and_can_be_retried_or_discarded,
    a_crash_between_the_inbox_and_applying_loses_nothing,
    a_hundred_concurrent_deliveries_for_one_order_apply_once,
    an_import_counts_what_it_applied_left_unchanged_and_failed,
    a_storefront_customer_s_personal_data_is_sealed_shown_and_erased,
);

/// Shopify's order #1042 (id above 2^53) as our order id.
const ORDER_1042: &str = "myshop-5712036428813373457";

pub fn fixture_bytes(platform: &str, name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/{platform}/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// Every fixture of a platform with its topic (`topics.json`), in the order a platform
/// would send them: the order `topics.json` lists them in (its text order; a JSON
/// object's keys have none of their own).
pub fn fixtures(platform: &str) -> Vec<(String, String, Vec<u8>)> {
    let text = String::from_utf8(fixture_bytes(platform, "topics.json")).unwrap();
    let topics: serde_json::Map<String, Value> = serde_json::from_str(&text).unwrap();
    let mut listed: Vec<(usize, String, String)> = topics
        .into_iter()
        .filter_map(|(name, topic)| {
            let at = text.find(&format!("\"{name}\"")).unwrap();
            Some((at, name, topic.as_str()?.to_owned()))
        })
        .collect();
    listed.sort();
    listed
        .into_iter()
        .map(|(_, name, topic)| {
            let body = fixture_bytes(platform, &name);
            (name, topic, body)
        })
        .collect()
}

async fn send_fixture(app: &TestApp, platform: &str, name: &str, topic: &str, id: &str) {
    let body = fixture_bytes(platform, name);
    let r = match platform {
        "shopify" => {
            send_shopify(
                app,
                "myshop",
                topic,
                id,
                &body,
                &sign(SHOPIFY_SECRET, &body),
            )
            .await
        }
        _ => send_woocommerce(app, "mysite", topic, &body, &sign(WOO_SECRET, &body)).await,
    };
    expect_status(r, StatusCode::OK).await;
}

/// Waits until `source` has `n` deliveries and none is waiting; returns them.
pub async fn settled(app: &TestApp, source: &str, n: usize) -> Vec<Value> {
    eventually(
        "the inbox to be applied",
        Duration::from_secs(30),
        || async {
            let all = inbox(app, source, "?limit=500").await;
            let waiting = all.iter().filter(|d| d["state"] == "waiting").count();
            if all.len() == n && waiting == 0 {
                Ok(all)
            } else {
                Err(format!("{} deliveries, {waiting} waiting", all.len()))
            }
        },
    )
    .await
}

async fn order(app: &TestApp, id: &str) -> Value {
    expect_status(app.get(&format!("/v1/orders/{id}")).await, StatusCode::OK).await
}

async fn event_types(app: &TestApp, id: &str) -> Vec<String> {
    app.events(id)
        .await
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect()
}

async fn command_ids(app: &TestApp, id: &str) -> Vec<String> {
    let mut ids: Vec<String> = app
        .events(id)
        .await
        .iter()
        .map(|e| e["metadata"]["command_id"].as_str().unwrap().to_owned())
        .collect();
    ids.dedup();
    ids
}

/// What two ways of bringing in the same sales must agree on: everything but the
/// times we received things at.
fn comparable(order: &Value) -> Value {
    json!({
        "status": order["status"], "currency": order["currency"], "customer_id": order["customer_id"],
        "lines": order["lines"], "subtotal": order["subtotal"], "discounts": order["discounts"],
        "shipping_lines": order["shipping_lines"], "tax_lines": order["tax_lines"],
        "total": order["total"], "captured": order["captured"], "refunded": order["refunded"],
        "origin": order["origin"], "placed_at": order["placed_at"],
        "payments": order["payments"].as_array().unwrap().iter()
            .map(|p| json!([p["payment_id"], p["amount"], p["status"]])).collect::<Vec<_>>(),
        "shipments": order["shipments"].as_array().unwrap().iter()
            .map(|s| json!([s["shipment_id"], s["lines"], s["status"], s["carrier"], s["tracking_number"]])).collect::<Vec<_>>(),
        "refunds": order["refunds"].as_array().unwrap().iter()
            .map(|r| json!([r["refund_id"], r["amount"], r["reason"]])).collect::<Vec<_>>(),
        "cancellation": order["cancellation"]["reason"],
    })
}

/// Every order the fixtures describe, as `{source}-{platform id}`.
const FIXTURE_ORDERS: &[&str] = &[
    ORDER_1042,
    "myshop-5712036428813389021",
    "myshop-5712036428813402117",
    "myshop-5712036428813415550",
    "myshop-5712036428813420009",
    "myshop-5712036428813431877",
    "mysite-4127",
    "mysite-4128",
    "mysite-4129",
    "mysite-4130",
];

async fn every_fixture_gives_the_same_orders_through_webhooks_and_through_import(backend: Backend) {
    let hooks = spawn_app(backend).await;
    shopify_source(&hooks, "myshop").await;
    woocommerce_source(&hooks, "mysite").await;
    let mut sent = (0, 0);
    for (i, (name, topic, _)) in fixtures("shopify").iter().enumerate() {
        send_fixture(&hooks, "shopify", name, topic, &format!("w-{i}")).await;
        sent.0 += 1;
    }
    for (name, topic, _) in fixtures("woocommerce") {
        send_fixture(&hooks, "woocommerce", &name, &topic, "").await;
        sent.1 += 1;
    }
    let shopify = settled(&hooks, "myshop", sent.0).await;
    let woo = settled(&hooks, "mysite", sent.1).await;
    for delivery in shopify.iter().chain(&woo) {
        assert_eq!(delivery["state"], "applied", "{delivery}");
    }

    // The same sales as the platforms' REST APIs list them: whole orders only.
    let imports = spawn_app(backend).await;
    shopify_source(&imports, "myshop").await;
    woocommerce_source(&imports, "mysite").await;
    for (platform, source) in [("shopify", "myshop"), ("woocommerce", "mysite")] {
        let lines: Vec<String> = fixtures(platform)
            .into_iter()
            .filter(|(_, topic, _)| topic.starts_with("orders/") || topic.starts_with("order."))
            .filter(|(_, topic, _)| topic != "order.deleted")
            .map(|(_, _, body)| String::from_utf8(body).unwrap())
            .collect();
        let r = imports
            .client
            .post(imports.url(&format!("/v1/sources/{source}/import")))
            .header("content-type", "application/x-ndjson")
            .body(lines.join("\n"))
            .send()
            .await
            .unwrap();
        let counts = expect_status(r, StatusCode::OK).await;
        assert_eq!(counts["failed"], json!([]), "{counts}");
    }

    for id in FIXTURE_ORDERS {
        let (a, b) = (order(&hooks, id).await, order(&imports, id).await);
        assert_eq!(comparable(&a), comparable(&b), "{id}");
        // The same facts; the order of a few may differ, since the webhooks told some
        // of them (a refund) before the snapshot that the import reads them from.
        let (mut a, mut b) = (
            event_types(&hooks, id).await,
            event_types(&imports, id).await,
        );
        a.sort();
        b.sort();
        assert_eq!(a, b, "{id}");
        // And the same commands: a command's id comes from what it does to which order.
        let (mut a, mut b) = (
            command_ids(&hooks, id).await,
            command_ids(&imports, id).await,
        );
        a.sort();
        b.sort();
        assert_eq!(a, b, "{id}");
    }
    // What the fixtures say the orders are.
    let o = order(&hooks, ORDER_1042).await;
    assert_eq!(o["status"], "refunded", "{o}");
    assert_eq!(o["total"], 5871);
    assert_eq!(o["refunded"], 5871);
    assert_eq!(o["origin"]["external_id"], "5712036428813373457");
    assert_eq!(o["origin"]["external_number"], "#1042");
    assert_eq!(o["shipments"].as_array().unwrap().len(), 2);
    assert_eq!(
        order(&hooks, "myshop-5712036428813402117").await["total"],
        4510,
        "JPY"
    );
    assert_eq!(
        order(&hooks, "myshop-5712036428813415550").await["total"],
        19475,
        "KWD"
    );
    assert_eq!(
        order(&hooks, "myshop-5712036428813389021").await["status"],
        "cancelled"
    );
    let woo = order(&hooks, "mysite-4127").await;
    assert_eq!(woo["status"], "refunded", "{woo}");
    assert_eq!(woo["total"], 5886);
    assert_eq!(
        order(&hooks, "mysite-4128").await["total"],
        2800,
        "JPY sent as 2800.00"
    );
    assert_eq!(order(&hooks, "mysite-4130").await["status"], "cancelled");
    let failed = order(&hooks, "mysite-4129").await;
    assert_eq!(failed["payments"][0]["status"], "failed", "{failed}");
    hooks.stop().await;
    imports.stop().await;
}

async fn duplicate_stale_and_out_of_order_snapshots_change_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    shopify_source(&app, "myshop").await;
    // Paid arrives before create: the order is created and paid.
    send_fixture(&app, "shopify", "orders-paid.json", "orders/paid", "w-paid").await;
    settled(&app, "myshop", 1).await;
    let paid = order(&app, ORDER_1042).await;
    assert_eq!(paid["status"], "paid", "{paid}");
    let events = event_types(&app, ORDER_1042).await;
    assert_eq!(
        events,
        ["order.created", "payment.attempted", "payment.captured"]
    );

    // The late create, the same delivery again, and a stale snapshot after a newer one.
    send_fixture(
        &app,
        "shopify",
        "orders-create.json",
        "orders/create",
        "w-create",
    )
    .await;
    send_fixture(&app, "shopify", "orders-paid.json", "orders/paid", "w-paid").await;
    let all = settled(&app, "myshop", 2).await;
    assert!(
        all.iter()
            .all(|d| d["state"] == "applied" && d["commands"] == 0
                || d["headers"]["x-shopify-webhook-id"] == "w-paid"),
        "{all:?}"
    );
    send_fixture(
        &app,
        "shopify",
        "orders-updated.refunded.json",
        "orders/updated",
        "w-new",
    )
    .await;
    settled(&app, "myshop", 3).await;
    let after_newest = event_types(&app, ORDER_1042).await;
    send_fixture(
        &app,
        "shopify",
        "orders-partially_fulfilled.json",
        "orders/partially_fulfilled",
        "w-old",
    )
    .await;
    send_fixture(
        &app,
        "shopify",
        "refunds-create.partial.json",
        "refunds/create",
        "w-refund",
    )
    .await;
    let all = settled(&app, "myshop", 5).await;
    for d in &all[..2] {
        assert_eq!(d["state"], "applied", "{d}");
        assert_eq!(d["commands"], 0, "stale: {d}");
    }
    assert_eq!(event_types(&app, ORDER_1042).await, after_newest);
    assert_eq!(order(&app, ORDER_1042).await["status"], "refunded");
    app.stop().await;
}

async fn a_short_line_is_backordered_and_a_later_receipt_fills_it(backend: Backend) {
    let app = spawn_app(backend).await;
    shopify_source(&app, "myshop").await;
    let r = app
        .post("/v1/inventory/MUG-BLUE/receipts", &json!({"quantity": 1}))
        .await;
    expect_status(r, StatusCode::CREATED).await;
    // #1042 wants 2 MUG-BLUE: one is there, one is owed. TEE.RED.M is not stocked here.
    send_fixture(
        &app,
        "shopify",
        "orders-create.json",
        "orders/create",
        "w-1",
    )
    .await;
    let applied = settled(&app, "myshop", 1).await;
    assert_eq!(applied[0]["state"], "applied", "{}", applied[0]);
    let o = order(&app, ORDER_1042).await;
    let line = |o: &Value, sku: &str| {
        o["lines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["sku"] == sku)
            .cloned()
            .unwrap()
    };
    assert_eq!(line(&o, "MUG-BLUE")["backordered"], 1, "{o}");
    assert_eq!(line(&o, "TEE.RED.M")["backordered"], 0);
    let stock = eventually(
        "the stock view to show the backorder",
        Duration::from_secs(10),
        || async {
            let s = expect_status(app.get("/v1/inventory/MUG-BLUE").await, StatusCode::OK).await;
            if s["backordered"] == 1 {
                Ok(s)
            } else {
                Err(s)
            }
        },
    )
    .await;
    assert_eq!(stock["available"], 0, "{stock}");
    assert_eq!(stock["reserved"], 1);
    let types: Vec<String> = app
        .inventory_events("MUG-BLUE")
        .await
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "inventory.received",
            "inventory.reserved",
            "inventory.backordered"
        ]
    );

    // Our own API still refuses what is owed to the earlier sale.
    let r = app
        .post("/v1/orders", &order_body("api-1", &[("MUG-BLUE", 1)]))
        .await;
    expect_error(r, StatusCode::CONFLICT, "out_of_stock").await;

    let r = app
        .post("/v1/inventory/MUG-BLUE/receipts", &json!({"quantity": 5}))
        .await;
    expect_status(r, StatusCode::CREATED).await;
    let stock = eventually(
        "the receipt to fill the backorder",
        Duration::from_secs(10),
        || async {
            let s = expect_status(app.get("/v1/inventory/MUG-BLUE").await, StatusCode::OK).await;
            if s["backordered"] == 0 && s["available"] == 4 {
                Ok(s)
            } else {
                Err(s)
            }
        },
    )
    .await;
    assert_eq!(stock["reserved"], 2, "{stock}");
    let filled = app.inventory_events("MUG-BLUE").await;
    let last = filled.last().unwrap();
    assert_eq!(last["event_type"], "inventory.backorder_filled", "{last}");
    assert_eq!(last["payload"]["order_id"], ORDER_1042);
    app.stop().await;
}

async fn a_delivery_the_domain_refuses_is_kept_failed_and_can_be_retried_or_discarded(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    shopify_source(&app, "myshop").await;
    // A refund of an order we have not seen yet, and a body that is not an order.
    send_fixture(
        &app,
        "shopify",
        "refunds-create.partial.json",
        "refunds/create",
        "w-r",
    )
    .await;
    let garbage = br#"{"id": "not a number"}"#;
    let r = send_shopify(
        &app,
        "myshop",
        "orders/create",
        "w-g",
        garbage,
        &sign(SHOPIFY_SECRET, garbage),
    )
    .await;
    expect_status(r, StatusCode::OK).await;
    let all = settled(&app, "myshop", 2).await;
    let by_hook = |id: &str| {
        all.iter()
            .find(|d| d["headers"]["x-shopify-webhook-id"] == id)
            .cloned()
            .unwrap()
    };
    let refund = by_hook("w-r");
    assert_eq!(refund["state"], "failed", "{refund}");
    assert_eq!(refund["error"]["code"], "order_not_found", "{refund}");
    assert_eq!(refund["order_id"], ORDER_1042);
    let bad = by_hook("w-g");
    assert_eq!(bad["state"], "failed");
    assert_eq!(bad["error"]["code"], "invalid_payload", "{bad}");
    let failed = inbox(&app, "myshop", "?state=failed").await;
    assert_eq!(failed.len(), 2);
    assert!(inbox(&app, "myshop", "?state=applied").await.is_empty());
    let r = app.get("/v1/sources/myshop/inbox?state=lost").await;
    expect_error(r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;

    // Once the order is there, the refund that came too early is applied again by
    // itself; the unreadable one stays failed, through a retry too, until discarded.
    send_fixture(&app, "shopify", "orders-paid.json", "orders/paid", "w-p").await;
    let all = settled(&app, "myshop", 3).await;
    let id = refund["id"].as_i64().unwrap();
    let early = all.iter().find(|d| d["id"] == id).unwrap();
    assert_eq!(early["state"], "applied", "{early}");
    assert_eq!(early["commands"], 1);
    assert_eq!(order(&app, ORDER_1042).await["refunded"], 1000);
    let r = app
        .post_empty(&format!("/v1/sources/myshop/inbox/{id}/retry"))
        .await;
    expect_error(r, StatusCode::NOT_FOUND, "delivery_not_failed").await;

    let bad_id = bad["id"].as_i64().unwrap();
    let r = app
        .post_empty(&format!("/v1/sources/myshop/inbox/{bad_id}/retry"))
        .await;
    expect_status(r, StatusCode::ACCEPTED).await;
    let again = eventually(
        "the retry to fail again",
        Duration::from_secs(10),
        || async {
            let failed = inbox(&app, "myshop", "?state=failed").await;
            match failed.first() {
                Some(d) if d["attempts"] == 2 => Ok(d.clone()),
                _ => Err(format!("{failed:?}")),
            }
        },
    )
    .await;
    assert_eq!(again["error"]["code"], "invalid_payload");
    let r = app
        .client
        .delete(app.url(&format!("/v1/sources/myshop/inbox/{bad_id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(inbox(&app, "myshop", "").await.len(), 2);
    app.stop().await;
}

async fn a_crash_between_the_inbox_and_applying_loses_nothing(backend: Backend) {
    let url = fresh_database(backend).await;
    let first = spawn_app_on(&url, |_| {}).await;
    shopify_source(&first, "myshop").await;
    first.stop().await;
    // What a server leaves behind when it dies right after the inbox's commit: the
    // delivery stored and acknowledged, not applied.
    let db = orderlog::store::Database::connect(&url, 1).await.unwrap();
    let body = fixture_bytes("shopify", "orders-paid.json");
    let source = orderlog::domain::values::SourceName::parse("myshop").unwrap();
    let stored = orderlog::store::sources::receive(
        &db,
        &orderlog::store::sources::Arrival {
            source,
            dedup_key: "webhook:w-crash".to_owned(),
            topic: "orders/paid".to_owned(),
            headers: "{}".to_owned(),
            body: String::from_utf8(body.clone()).unwrap(),
            received_at: chrono::Utc::now(),
        },
    )
    .await
    .unwrap();
    assert!(stored);
    db.close().await;

    let second = spawn_app_on(&url, |_| {}).await;
    let applied = settled(&second, "myshop", 1).await;
    assert_eq!(applied[0]["state"], "applied", "{}", applied[0]);
    assert_eq!(order(&second, ORDER_1042).await["status"], "paid");
    // The platform's retry of that delivery is a duplicate.
    let r = send_shopify(
        &second,
        "myshop",
        "orders/paid",
        "w-crash",
        &body,
        &sign(SHOPIFY_SECRET, &body),
    )
    .await;
    assert_eq!(
        expect_status(r, StatusCode::OK).await["status"],
        "duplicate"
    );
    second.stop().await;
}

async fn a_hundred_concurrent_deliveries_for_one_order_apply_once(backend: Backend) {
    let app = spawn_app(backend).await;
    shopify_source(&app, "myshop").await;
    let topics = [
        ("orders-create.json", "orders/create"),
        ("orders-paid.json", "orders/paid"),
        (
            "orders-partially_fulfilled.json",
            "orders/partially_fulfilled",
        ),
        ("fulfillments-create.json", "fulfillments/create"),
        ("orders-fulfilled.json", "orders/fulfilled"),
        ("refunds-create.partial.json", "refunds/create"),
        ("refunds-create.full.json", "refunds/create"),
        ("orders-updated.refunded.json", "orders/updated"),
    ];
    let sends = (0..100).map(|i| {
        let (name, topic) = topics[i % topics.len()];
        let app = &app;
        async move { send_fixture(app, "shopify", name, topic, &format!("w-{i}")).await }
    });
    futures::future::join_all(sends).await;
    let all = settled(&app, "myshop", 100).await;
    // A refund or fulfilment that arrived before any snapshot of its order failed,
    // and was applied again once the order was there.
    let failed: Vec<&Value> = all.iter().filter(|d| d["state"] != "applied").collect();
    assert!(failed.is_empty(), "{failed:?}");
    let o = order(&app, ORDER_1042).await;
    assert_eq!(o["status"], "refunded", "{o}");
    let types = event_types(&app, ORDER_1042).await;
    let count = |t: &str| types.iter().filter(|x| *x == t).count();
    assert_eq!(count("order.created"), 1, "{types:?}");
    assert_eq!(count("payment.captured"), 1);
    assert_eq!(count("shipment.dispatched"), 2);
    assert_eq!(count("order.refunded"), 2);
    app.stop().await;
}

async fn an_import_counts_what_it_applied_left_unchanged_and_failed(backend: Backend) {
    let app = spawn_app(backend).await;
    woocommerce_source(&app, "mysite").await;
    let pending =
        String::from_utf8(fixture_bytes("woocommerce", "order-updated.pending.json")).unwrap();
    let processing = String::from_utf8(fixture_bytes(
        "woocommerce",
        "order-updated.processing.json",
    ))
    .unwrap();
    let body = [
        pending.as_str(),
        "",
        processing.as_str(),
        pending.as_str(),
        r#"{"id": 99, "status": "processing"}"#,
        "this is not JSON",
    ]
    .join("\n");
    let import = |body: String, content_type: &'static str| {
        let app = &app;
        async move {
            app.client
                .post(app.url("/v1/sources/mysite/import"))
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let counts = expect_status(
        import(body.clone(), "application/x-ndjson").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(counts["applied"], 2, "{counts}");
    assert_eq!(counts["unchanged"], 1, "the repeated line: {counts}");
    let failed = counts["failed"].as_array().unwrap();
    assert_eq!(
        failed
            .iter()
            .map(|f| f["line"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [5, 6],
        "{counts}"
    );
    assert!(
        failed.iter().all(|f| f["code"] == "invalid_payload"),
        "{counts}"
    );
    assert_eq!(order(&app, "mysite-4127").await["status"], "paid");

    // The same import again changes nothing.
    let again = expect_status(import(body, "application/x-ndjson").await, StatusCode::OK).await;
    assert_eq!(again["applied"], 0, "{again}");
    assert_eq!(again["unchanged"], 5, "{again}");
    let r = import(pending, "application/json").await;
    expect_error(
        r,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    )
    .await;
    let r = app
        .client
        .post(app.url("/v1/sources/nowhere/import"))
        .header("content-type", "application/x-ndjson")
        .body("{}")
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::NOT_FOUND, "source_not_found").await;
    app.stop().await;
}

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

async fn a_storefront_customer_s_personal_data_is_sealed_shown_and_erased(backend: Backend) {
    let app = spawn_app(backend).await;
    shopify_source(&app, "myshop").await;
    woocommerce_source(&app, "mysite").await;
    send_fixture(
        &app,
        "shopify",
        "orders-create.json",
        "orders/create",
        "w-p1",
    )
    .await;
    send_fixture(
        &app,
        "woocommerce",
        "order-updated.processing.json",
        "order.updated",
        "",
    )
    .await;
    settled(&app, "myshop", 1).await;
    settled(&app, "mysite", 1).await;

    // The platforms' personal data, in our orders: sealed in the log, shown opened.
    let shopify = order(&app, ORDER_1042).await;
    assert_eq!(shopify["customer_id"], "7741203398721");
    assert_eq!(shopify["email"], "ada@example.com", "{shopify}");
    assert_eq!(shopify["shipping_address"]["line1"], "350 Fifth Avenue");
    assert_eq!(shopify["shipping_address"]["country"], "US");
    assert_eq!(shopify["billing_address"]["name"], "Ada Lovelace");
    let woo = order(&app, "mysite-4127").await;
    assert_eq!(woo["email"], "grace@example.com", "{woo}");
    assert_eq!(woo["shipping_address"]["postal_code"], "EH6 6LB");
    let stored = app.events(ORDER_1042).await;
    assert_eq!(stored[0]["payload"]["email"], "ada@example.com");

    // Erasing the Shopify customer erases their order and scrubs its webhook.
    let receipt = expect_status(
        app.post_empty("/v1/customers/7741203398721/erase").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(receipt["state"], "erased");
    let shopify = order(&app, ORDER_1042).await;
    assert_eq!(shopify["erased"], true, "{shopify}");
    assert_eq!(shopify["email"], Value::Null);
    assert_eq!(shopify["shipping_address"], Value::Null);
    let deliveries = inbox(&app, "myshop", "").await;
    assert_eq!(
        deliveries[0]["body"], "{\"erased\":true}",
        "{}",
        deliveries[0]
    );
    let woo = order(&app, "mysite-4127").await;
    assert_eq!(
        woo["email"], "grace@example.com",
        "another customer is untouched"
    );
    let woo_inbox = inbox(&app, "mysite", "").await;
    assert!(woo_inbox[0]["body"]
        .as_str()
        .unwrap()
        .contains("grace@example.com"));
    app.stop().await;
}
