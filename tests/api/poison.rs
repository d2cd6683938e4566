//! Readers survive any event already in the log. The API refuses text with control
//! characters, but a log written before it did, or by another writer, can hold such
//! text (and `.` or `..` as a SKU): every projection applies it and goes on, a rebuild
//! completes, the aggregate still loads, and a webhook delivers the event as recorded.

use std::time::Duration;

use orderlog::store::views::{bigint, select, text, Param, Table, Tx};
use orderlog::store::Database;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;
use crate::receiver::Receiver;

on_both_backends!(
    every_reader_survives_text_no_client_may_send_any_more,
    a_view_row_holding_a_nul_is_written_found_and_copied,
);

const NUL_CARRIER: &str = "\u{0}";
const TRACKING: &str = "1Z\u{0}\u{1b}[31m";
const REASON: &str = "a\u{0}b\u{7}";
/// What a view shows for a NUL, which PostgreSQL's text cannot hold: U+FFFD.
const SHOWN_CARRIER: &str = "\u{fffd}";

/// The same event with its text replaced by text the API refuses today.
fn poisoned(payload: &Value, order_id: &str) -> Value {
    let mut payload = payload.clone();
    let object = payload.as_object_mut().unwrap();
    if object.contains_key("order_id") {
        object.insert("order_id".into(), json!(order_id));
    }
    for (key, text) in [
        ("carrier", NUL_CARRIER),
        ("tracking_number", TRACKING),
        ("reason", REASON),
        ("method", "card\u{0}"),
    ] {
        if object.contains_key(key) {
            object.insert(key.into(), json!(text));
        }
    }
    if let Some(address) = object.get_mut("shipping_address") {
        address["name"] = json!("Ada\u{0}");
        address["line1"] = json!("\u{1}12 St James's\u{0}");
        address["city"] = json!("Lon\u{0}don");
    }
    if object.contains_key("sku") {
        object.insert("sku".into(), json!(".."));
    }
    if let Some(lines) = object.get_mut("lines").and_then(Value::as_array_mut) {
        for line in lines {
            let sku = if line["sku"] == "MUG-BLUE" { ".." } else { "." };
            line["sku"] = json!(sku);
        }
    }
    payload
}

fn types_and_payloads(events: &[Value]) -> Vec<(String, String, Value)> {
    events
        .iter()
        .map(|e| {
            (
                e["event_type"].as_str().unwrap().to_owned(),
                e["event_version"].as_str().unwrap().to_owned(),
                e["payload"].clone(),
            )
        })
        .collect()
}

/// Asserts that every projection runs, has applied the whole log, and never failed.
async fn all_running(app: &TestApp) -> Value {
    let status = app.projections_caught_up().await;
    for p in status["projections"].as_array().unwrap() {
        assert!(p["last_error"].is_null(), "{p}");
        assert_eq!(p["skipped_events"], 0, "{p}");
    }
    status
}

/// What the views say of the poisoned order and SKU.
async fn poisoned_rows(app: &TestApp) -> Value {
    let shipments = expect_status(
        app.get("/v1/shipping/shipments?limit=1000").await,
        StatusCode::OK,
    )
    .await;
    let shipment = shipments["shipments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["order_id"] == "poison-1")
        .cloned()
        .unwrap_or_else(|| panic!("the shipping view shows the shipment: {shipments}"));
    assert_eq!(shipment["carrier"], SHOWN_CARRIER, "{shipment}");
    assert_eq!(shipment["tracking_number"], "1Z\u{fffd}\u{1b}[31m");

    let orders = expect_status(app.get("/v1/orders?limit=500").await, StatusCode::OK).await;
    let listed: Vec<&str> = orders["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_id"].as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&"poison-1") && listed.contains(&"poison-2"),
        "{orders}"
    );
    let billing = expect_status(app.get("/v1/billing/orders/poison-1").await, StatusCode::OK).await;
    assert_eq!(billing["captured"], 5000, "{billing}");
    assert_eq!(billing["failed_attempts"], 1, "{billing}");

    let stock = expect_status(app.get("/v1/inventory?below=1000000").await, StatusCode::OK).await;
    let item = stock["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == "..")
        .cloned()
        .unwrap_or_else(|| panic!("the stock view shows SKU `..`: {stock}"));
    assert_eq!(item["on_hand"], 9, "{item}");
    let range = "from=2000-01-01&to=2100-01-01";
    let top = expect_status(
        app.get(&format!("/v1/analytics/top-skus?{range}&limit=100"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert!(
        top["skus"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["sku"] == ".."),
        "{top}"
    );
    json!({ "shipment": shipment, "item": item })
}

async fn every_reader_survives_text_no_client_may_send_any_more(backend: Backend) {
    let url = fresh_database(backend).await;
    let app = spawn_app_on(&url, |s| {
        s.deliveries.retry_schedule = vec![Duration::from_millis(100); 200];
        s.deliveries.breaker_failures = 10_000;
    })
    .await;

    // A history written through the API, to copy under other ids with poisoned text.
    app.place_order("src-1").await;
    let pay = |id: &str| json!({"payment_id": id, "amount": 5000, "method": "card"});
    for (path, body) in [
        ("/v1/orders/src-1/payments", pay("p0")),
        (
            "/v1/orders/src-1/payments/p0/fail",
            json!({"reason": "declined"}),
        ),
        ("/v1/orders/src-1/payments", pay("pay-1")),
        ("/v1/orders/src-1/payments/pay-1/capture", json!({})),
        (
            "/v1/orders/src-1/shipments",
            json!({"shipment_id": "shp-1", "carrier": "UPS", "tracking_number": "1Z"}),
        ),
        ("/v1/orders/src-1/shipments/shp-1/deliver", json!({})),
        (
            "/v1/orders/src-1/refunds",
            json!({"refund_id": "r1", "amount": 100, "reason": "broken"}),
        ),
    ] {
        let r = app.post(path, &body).await;
        assert!(
            r.status().is_success(),
            "{path}: {}",
            r.text().await.unwrap()
        );
    }
    app.place_order("src-2").await;
    let r = app
        .post(
            "/v1/orders/src-2/cancel",
            &json!({"reason": "changed my mind"}),
        )
        .await;
    expect_status(r, StatusCode::OK).await;
    let r = app
        .post("/v1/inventory/SRC-SKU/receipts", &json!({"quantity": 10}))
        .await;
    expect_status(r, StatusCode::CREATED).await;
    let r = app
        .post(
            "/v1/inventory/SRC-SKU/adjustments",
            &json!({"delta": -1, "reason": "count"}),
        )
        .await;
    expect_status(r, StatusCode::CREATED).await;
    all_running(&app).await;

    // A webhook subscribed before the poisoned events arrive gets them as they come.
    let live_receiver = Receiver::start(200).await;
    let r = app
        .post(
            "/v1/subscriptions",
            &json!({"kind": "webhook", "url": live_receiver.url(), "event_types": ["*"]}),
        )
        .await;
    expect_status(r, StatusCode::CREATED).await;

    // Every event type with text in it, appended as-is behind the API's back.
    let src1: Vec<(String, String, Value)> = types_and_payloads(&app.events("src-1").await)
        .into_iter()
        .map(|(t, v, p)| (t, v, poisoned(&p, "poison-1")))
        .collect();
    let src2: Vec<(String, String, Value)> = types_and_payloads(&app.events("src-2").await)
        .into_iter()
        .map(|(t, v, p)| (t, v, poisoned(&p, "poison-2")))
        .collect();
    let stock: Vec<(String, String, Value)> =
        types_and_payloads(&app.inventory_events("SRC-SKU").await)
            .into_iter()
            .map(|(t, v, p)| (t, v, poisoned(&p, "unused")))
            .collect();
    assert!(src1.iter().any(|(t, _, _)| t == "shipment.dispatched"));
    assert!(src1.iter().any(|(t, _, _)| t == "payment.failed"));
    assert!(src2.iter().any(|(t, _, _)| t == "order.cancelled"));
    append_directly(&app, "order", "poison-1", &src1).await;
    append_directly(&app, "order", "poison-2", &src2).await;
    append_directly(&app, "inventory", "..", &stock).await;

    // One subscribed afterwards replays the log; its receiver fails at first, so that the
    // poisoned messages also wait in the retry queue.
    let replay_receiver = Receiver::start(500).await;
    let r = app
        .post(
            "/v1/subscriptions",
            &json!({"kind": "webhook", "url": replay_receiver.url(), "event_types": ["*"],
                    "from_position": 1}),
        )
        .await;
    expect_status(r, StatusCode::CREATED).await;

    // Every live projection applies them and goes on, and the views show them.
    all_running(&app).await;
    let live = poisoned_rows(&app).await;
    let read_side = app.read_side().await;

    // The aggregate still loads, for reads and for commands.
    let order = expect_status(app.get("/v1/orders/poison-1").await, StatusCode::OK).await;
    assert_eq!(order["status"], "partially_refunded", "{order}");
    let r = app
        .post(
            "/v1/orders/poison-1/refunds",
            &json!({"refund_id": "r2", "amount": 100, "reason": "second look"}),
        )
        .await;
    expect_status(r, StatusCode::CREATED).await;
    expect_status(app.get("/v1/orders/poison-2").await, StatusCode::OK).await;
    let history = app.events("poison-1").await;
    let dispatched = history
        .iter()
        .find(|e| e["event_type"] == "shipment.dispatched")
        .unwrap();
    assert_eq!(
        dispatched["payload"]["carrier"], NUL_CARRIER,
        "the log keeps what it holds"
    );
    all_running(&app).await;
    let after_refund = app.read_side().await;
    assert_ne!(after_refund, read_side, "the new refund reached the views");

    // A rebuild of every projection replays the poisoned events into fresh tables.
    let status = all_running(&app).await;
    for p in status["projections"].as_array().unwrap() {
        let name = p["name"].as_str().unwrap();
        let r = app
            .post_empty(&format!("/v1/admin/projections/{name}/rebuild"))
            .await;
        expect_status(r, StatusCode::ACCEPTED).await;
    }
    let status = all_running(&app).await;
    for p in status["projections"].as_array().unwrap() {
        assert_eq!(p["generation"], 2, "rebuilt: {p}");
        assert!(p["rebuild"].is_null(), "{p}");
    }
    assert_eq!(
        poisoned_rows(&app).await,
        live,
        "a rebuild shows what live showed"
    );
    assert_eq!(
        app.read_side().await,
        after_refund,
        "a rebuild equals the live views"
    );

    // Webhooks deliver each poisoned event as the log holds it: live, and from the
    // retry queue once the failing receiver recovers.
    replay_receiver
        .wait_until(Duration::from_secs(20), "failed attempts", |r| r.len() >= 6)
        .await;
    replay_receiver.answer_always(200);
    let poisoned_ids: Vec<String> = app.event_ids("poison-1", |_| true).await;
    for receiver in [&live_receiver, &replay_receiver] {
        let received = receiver
            .wait_until(Duration::from_secs(20), "every poisoned event", |r| {
                poisoned_ids
                    .iter()
                    .all(|id| r.iter().any(|r| r.status == 200 && r.webhook_id() == id))
            })
            .await;
        let dispatched = received
            .iter()
            .find(|r| {
                r.status == 200
                    && r.body["type"] == "shipment.dispatched"
                    && r.body["data"]["order_id"] == "poison-1"
            })
            .unwrap();
        assert_eq!(dispatched.body["data"]["carrier"], NUL_CARRIER);
        assert_eq!(dispatched.body["data"]["tracking_number"], TRACKING);
        let stock = receiver
            .wait_until(Duration::from_secs(20), "the events of SKU `..`", |r| {
                r.iter().any(|r| {
                    r.status == 200
                        && r.body["aggregate_id"] == ".."
                        && r.body["data"]["reason"] == REASON
                })
            })
            .await;
        assert!(!stock.is_empty());
    }
}

/// The views' own guard, below the projections: whatever text reaches a view table, a
/// NUL in it is written (live upsert, a rebuild's COPY) and looked up as U+FFFD.
async fn a_view_row_holding_a_nul_is_written_found_and_copied(backend: Backend) {
    static NOTES: Table = Table {
        name: "notes",
        columns: &[text("id"), text("note"), bigint("n")],
        indexes: &[&["note"]],
    };
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Row {
        id: String,
        note: Option<String>,
        n: i64,
    }
    let row = |id: &str, note: &str, n| Row {
        id: id.into(),
        note: Some(note.into()),
        n,
    };
    let url = fresh_database(backend).await;
    let db = Database::connect(&url, 2).await.unwrap();
    let written = vec![row("a\0", "x\0y", 1), row("b", "\\u0000 is text", 2)];
    let shown = vec![
        row("a\u{fffd}", "x\u{fffd}y", 1),
        row("b", "\\u0000 is text", 2),
    ];
    let mut tx = Tx::begin(&db).await.unwrap();
    tx.create_table("notes_live", &NOTES).await.unwrap();
    tx.upsert("notes_live", &NOTES, &written).await.unwrap();
    tx.upsert("notes_live", &NOTES, &written).await.unwrap();
    tx.create_table_unindexed("notes_copy", &NOTES)
        .await
        .unwrap();
    tx.bulk_insert("notes_copy", &NOTES, &written)
        .await
        .unwrap();
    tx.index_table("notes_copy", &NOTES).await.unwrap();
    for name in ["notes_live", "notes_copy"] {
        let ids = ["a\0".to_owned(), "b".to_owned()];
        let mut found: Vec<Row> = tx.load(name, &NOTES, &ids).await.unwrap();
        found.sort_by(|x, y| x.id.cmp(&y.id));
        assert_eq!(found, shown, "{name}");
    }
    tx.delete("notes_live", &["a\0".to_owned()]).await.unwrap();
    tx.commit().await.unwrap();
    let left: Vec<Row> = select(&db, "notes_live", &NOTES, "ORDER BY id", &[])
        .await
        .unwrap();
    assert_eq!(left, shown[1..].to_vec());
    let by_note: Vec<Row> = select(
        &db,
        "notes_copy",
        &NOTES,
        "WHERE note = $1",
        &[Param::Text("x\0y".into())],
    )
    .await
    .unwrap();
    assert_eq!(by_note, shown[..1].to_vec());
}
