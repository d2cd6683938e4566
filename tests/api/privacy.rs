//! Personal data and its erasure (crypto-shredding): the log holds a customer's
//! addresses, email, phone and note only sealed under their data keys; erasing the
//! customer destroys the keys and appends `customer.erased`, and from then on every
//! reader shows the fields as `null` with `"erased": true`, and the database holds no
//! copy of them or of the keys.

use std::time::Duration;

use futures::StreamExt;
use orderlog::store::Database;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::deliveries::{subscribe, wait_for_subscription};
use crate::helpers::*;
use crate::on_both_backends;
use crate::receiver::Receiver;
use crate::settings::orderlog;

on_both_backends!(
    erasure_shows_everywhere_and_leaves_no_copy_in_the_database,
    the_cli_erases_and_shows_the_erasure,
    personal_data_is_checked_at_the_edge,
);

pub(crate) const EMAIL: &str = "grace.hopper@example.com";
pub(crate) const STREET: &str = "7 Harbour Lane Unique";
pub(crate) const NOTE: &str = "leave it with the neighbour at number nine";
pub(crate) const PHONE: &str = "+1 555 010 0199";

pub(crate) fn personal_order(order_id: &str, customer_id: &str) -> Value {
    json!({
        "order_id": order_id,
        "customer_id": customer_id,
        "currency": "USD",
        "lines": [{ "sku": "MUG-BLUE", "quantity": 1, "unit_price": 1500 }],
        "shipping_address": {
            "name": "Grace Hopper",
            "line1": STREET,
            "city": "Arlington",
            "postal_code": "22201",
            "country": "US"
        },
        "billing_address": {
            "name": "Grace Hopper",
            "line1": "1 Billing Row",
            "city": "Arlington",
            "postal_code": "22202",
            "country": "US"
        },
        "email": EMAIL,
        "phone": PHONE,
        "note": NOTE,
    })
}

/// Every personal field erased, on the object that held them.
fn assert_erased(object: &Value, what: &str) {
    for field in [
        "shipping_address",
        "billing_address",
        "email",
        "phone",
        "note",
    ] {
        assert_eq!(object[field], Value::Null, "{what}: {field} in {object}");
    }
    assert_eq!(object["erased"], true, "{what}: {object}");
    assert!(object.get("personal").is_none(), "{what}: {object}");
}

fn assert_shown(object: &Value, what: &str) {
    assert_eq!(object["email"], EMAIL, "{what}: {object}");
    assert_eq!(
        object["shipping_address"]["line1"], STREET,
        "{what}: {object}"
    );
    assert_eq!(object["note"], NOTE, "{what}: {object}");
    assert!(object.get("erased").is_none(), "{what}: {object}");
    assert!(object.get("personal").is_none(), "{what}: {object}");
}

async fn order_created_payload(app: &TestApp, order_id: &str) -> Value {
    app.events(order_id).await[0]["payload"].clone()
}

async fn exported_order_created(app: &TestApp, order_id: &str) -> Value {
    let response = app
        .get("/v1/events/export?format=ndjson&include_personal_data=true&types=order.created")
        .await;
    let text = response.text().await.unwrap();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|r| r["order_id"] == order_id)
        .unwrap_or_else(|| panic!("{order_id} is exported: {text}"))["payload"]
        .clone()
}

/// The first SSE event about `order_id`'s creation, read from the start of the log.
async fn streamed_order_created(app: &TestApp, order_id: &str) -> Value {
    let response = app
        .client
        .get(app.url("/v1/events/stream?types=order.created"))
        .header("Last-Event-ID", "0-0")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.bytes_stream();
    let mut text = String::new();
    loop {
        for line in text.lines() {
            if let Some(data) = line.strip_prefix("data:") {
                let event: Value = serde_json::from_str(data.trim()).unwrap();
                if event["aggregate_id"] == order_id {
                    return event["data"].clone();
                }
            }
        }
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

/// Everything the database holds, as bytes: the SQLite file with its WAL checkpointed,
/// or a `pg_dump` of the test's schema.
/// The order's journey, as served: it carries no payload, so no personal data, before an
/// erasure or after it; it still lists the order's creation.
async fn assert_journey_holds_none(app: &TestApp, order_id: &str, what: &str) {
    let r = app.get(&format!("/v1/orders/{order_id}/journey")).await;
    assert_eq!(r.status(), StatusCode::OK, "{what}");
    let text = r.text().await.unwrap();
    let journey: Value = serde_json::from_str(&text).unwrap();
    assert!(
        journey["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["event_type"] == "order.created"),
        "{what}: {text}"
    );
    for clear in [EMAIL, STREET, NOTE, PHONE] {
        assert!(
            !text.contains(clear),
            "{what}: `{clear}` in the journey {text}"
        );
    }
}

async fn database_bytes(app: &TestApp) -> Vec<u8> {
    if let Some(path) = app.database_url.strip_prefix("sqlite://") {
        let db = Database::connect(&app.database_url, 1).await.unwrap();
        db.checkpoint().await.unwrap();
        db.close().await;
        let mut bytes = std::fs::read(path).unwrap();
        if let Ok(wal) = std::fs::read(format!("{path}-wal")) {
            bytes.extend(wal);
        }
        bytes
    } else {
        let schema = app
            .database_url
            .split("search_path]=")
            .nth(1)
            .expect("a test schema");
        let out = std::process::Command::new("pg_dump")
            .args(["--dbname", &postgres_base_url(), "--schema", schema])
            .output()
            .expect("pg_dump runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

async fn sealed_keys_of(app: &TestApp, customer_id: &str) -> Vec<String> {
    let db = Database::connect(&app.database_url, 1).await.unwrap();
    let keys = match &db {
        Database::Sqlite(pool) => {
            sqlx::query_scalar("SELECT sealed_key FROM customer_keys WHERE customer_id = ?")
                .bind(customer_id)
                .fetch_all(pool)
                .await
        }
        Database::Postgres(pool) => {
            sqlx::query_scalar("SELECT sealed_key FROM customer_keys WHERE customer_id = $1")
                .bind(customer_id)
                .fetch_all(pool)
                .await
        }
    }
    .unwrap();
    db.close().await;
    keys
}

async fn erasure_shows_everywhere_and_leaves_no_copy_in_the_database(backend: Backend) {
    let app = spawn_app_on(&fresh_database(backend).await, |s| {
        s.deliveries.retry_schedule = vec![Duration::from_millis(50); 2];
        s.deliveries.breaker_failures = 10_000;
    })
    .await;
    // A receiver that refuses everything: the order's messages end as dead letters,
    // holding its personal data (sealed) until they are retried.
    let receiver = Receiver::start(503).await;
    let subscription = subscribe(
        &app,
        &receiver.url(),
        &["order.created", "customer.erased"],
        json!({"max_in_flight": 1}),
    )
    .await;
    let id = subscription["id"].as_str().unwrap().to_owned();

    let placed = expect_status(
        app.post_with_key(
            "/v1/orders",
            "k-erase-1",
            &personal_order("pe-1", "cust-erase"),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_shown(&placed, "the order placed");
    let mut other = personal_order("pk-1", "cust-keep");
    other["email"] = json!("kept@example.com");
    expect_status(app.post("/v1/orders", &other).await, StatusCode::CREATED).await;

    // Before: every reader shows the data, and the log holds it only sealed.
    assert_shown(
        &expect_status(app.get("/v1/orders/pe-1").await, StatusCode::OK).await,
        "GET",
    );
    let stored = order_created_payload(&app, "pe-1").await;
    assert_shown(&stored, "the order's events");
    assert_shown(&exported_order_created(&app, "pe-1").await, "the export");
    assert_shown(&streamed_order_created(&app, "pe-1").await, "the stream");
    assert_journey_holds_none(&app, "pe-1", "the journey before").await;
    let replay = app
        .post_with_key(
            "/v1/orders",
            "k-erase-1",
            &personal_order("pe-1", "cust-erase"),
        )
        .await;
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_shown(
        &expect_status(replay, StatusCode::CREATED).await,
        "a replay",
    );
    let bytes = database_bytes(&app).await;
    for clear in [EMAIL, STREET, NOTE, "kept@example.com"] {
        assert!(
            !contains(&bytes, clear),
            "`{clear}` is in the database in the clear"
        );
    }
    let keys = sealed_keys_of(&app, "cust-erase").await;
    assert_eq!(keys.len(), 1, "one data key per order");
    assert!(contains(&bytes, &keys[0]), "the sealed data key is stored");
    let s = wait_for_subscription(&app, &id, "two dead letters", |s| s["queue"]["dead"] == 2).await;
    assert_eq!(s["queue"]["dead"], 2);
    app.projections_caught_up().await;
    let views_before = app.read_side().await;

    // The erasure.
    let receipt = expect_status(
        app.post(
            "/v1/customers/cust-erase/erase",
            &json!({"reason": "GDPR request 4411"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(receipt["state"], "erased", "{receipt}");
    assert_eq!(receipt["data_keys"], 0, "{receipt}");
    assert_eq!(receipt["erasure"]["reason"], "GDPR request 4411");
    assert!(receipt["erasure"]["requested_by"].is_string(), "{receipt}");
    let state = expect_status(
        app.get("/v1/customers/cust-erase/erasure").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(state["erasure"], receipt["erasure"]);
    let never = expect_status(
        app.get("/v1/customers/cust-keep/erasure").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(never["state"], "not_erased");
    assert_eq!(never["data_keys"], 1);

    // After: every reader shows the fields erased; the other customer is untouched.
    let order = expect_status(app.get("/v1/orders/pe-1").await, StatusCode::OK).await;
    assert_erased(&order, "GET");
    assert_eq!(order["customer_id"], "cust-erase", "the pseudonym stays");
    assert_eq!(order["total"], 1500, "the rest of the order stays");
    let kept = expect_status(app.get("/v1/orders/pk-1").await, StatusCode::OK).await;
    assert_eq!(kept["email"], "kept@example.com");
    assert_erased(
        &order_created_payload(&app, "pe-1").await,
        "the order's events",
    );
    assert_erased(&exported_order_created(&app, "pe-1").await, "the export");
    assert_erased(&streamed_order_created(&app, "pe-1").await, "the stream");
    assert_journey_holds_none(&app, "pe-1", "the journey after").await;
    let replay = app
        .post_with_key(
            "/v1/orders",
            "k-erase-1",
            &personal_order("pe-1", "cust-erase"),
        )
        .await;
    assert_erased(
        &expect_status(replay, StatusCode::CREATED).await,
        "a replay",
    );
    let letters = expect_status(
        app.get(&format!("/v1/subscriptions/{id}/dead-letters"))
            .await,
        StatusCode::OK,
    )
    .await;
    let erased_letter = letters["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["stream"] == "order/pe-1")
        .unwrap()["event_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let letter = expect_status(
        app.get(&format!(
            "/v1/subscriptions/{id}/dead-letters/{erased_letter}"
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    assert_erased(&letter["message"]["data"], "a dead letter");

    // The dead letters, retried, go out erased; subscribers hear of the erasure.
    receiver.answer_always(200);
    expect_status(
        app.post_empty(&format!("/v1/subscriptions/{id}/dead-letters/retry"))
            .await,
        StatusCode::ACCEPTED,
    )
    .await;
    let received = receiver
        .wait_until(
            Duration::from_secs(15),
            "the letters and the erasure",
            |r| {
                let ok = |t: &str| r.iter().any(|r| r.status == 200 && r.body["type"] == t);
                ok("customer.erased") && r.iter().filter(|r| r.status == 200).count() >= 3
            },
        )
        .await;
    let sent = received
        .iter()
        .find(|r| r.status == 200 && r.body["aggregate_id"] == "pe-1")
        .unwrap();
    assert_erased(&sent.body["data"], "a delivery after the erasure");
    assert!(!sent.raw.contains(EMAIL));
    let erased = received
        .iter()
        .find(|r| r.body["type"] == "customer.erased")
        .unwrap();
    assert_eq!(erased.body["data"]["customer_id"], "cust-erase");
    let kept = received
        .iter()
        .find(|r| r.status == 200 && r.body["aggregate_id"] == "pk-1")
        .unwrap();
    assert_eq!(kept.body["data"]["email"], "kept@example.com");

    // Nothing is left to open: neither the data nor its key.
    let bytes = database_bytes(&app).await;
    assert!(
        !contains(&bytes, &keys[0]),
        "the data key is gone from the database"
    );
    for clear in [EMAIL, STREET, NOTE] {
        assert!(!contains(&bytes, clear), "`{clear}` is in the database");
    }
    assert!(sealed_keys_of(&app, "cust-erase").await.is_empty());

    // No view held the data; each rebuilds to what it served live.
    app.projections_caught_up().await;
    let views_after = app.read_side().await;
    assert_eq!(views_after, views_before, "an erasure changes no view");
    for name in orderlog::app::all_projections(&orderlog::config::Settings::default())
        .iter()
        .map(|p| p.name())
    {
        let r = app
            .post_empty(&format!("/v1/admin/projections/{name}/rebuild"))
            .await;
        expect_status(r, StatusCode::ACCEPTED).await;
    }
    eventually("every view rebuilt", Duration::from_secs(30), || async {
        let status = app.projections_caught_up().await;
        let done = status["projections"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["generation"] == 2 && p["rebuild"].is_null());
        if done {
            Ok(())
        } else {
            Err(status)
        }
    })
    .await;
    assert_eq!(
        app.read_side().await,
        views_after,
        "a rebuild after erasure"
    );

    // New personal data after the erasure gets a new key, and reads.
    let again = expect_status(
        app.post("/v1/orders", &personal_order("pe-2", "cust-erase"))
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_shown(&again, "an order after the erasure");
    assert_shown(
        &expect_status(app.get("/v1/orders/pe-2").await, StatusCode::OK).await,
        "GET",
    );
    assert_erased(
        &expect_status(app.get("/v1/orders/pe-1").await, StatusCode::OK).await,
        "GET",
    );
    let state = expect_status(
        app.get("/v1/customers/cust-erase/erasure").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(state["data_keys"], 1, "{state}");
    app.stop().await;
}

async fn the_cli_erases_and_shows_the_erasure(backend: Backend) {
    let app = spawn_app(backend).await;
    expect_status(
        app.post("/v1/orders", &personal_order("pc-1", "cust-cli"))
            .await,
        StatusCode::CREATED,
    )
    .await;
    let key = test_secret_key().to_base64();
    let mut env = vec![("ORDERLOG_DATABASE_URL", app.database_url.as_str())];
    if backend == Backend::Postgres {
        env.push(("ORDERLOG_SECRET_KEY", key.as_str()));
    }
    let out = orderlog(
        &[
            "privacy",
            "erase",
            "cust-cli",
            "--reason",
            "ticket 12",
            "--actor",
            "dpo",
        ],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let receipt: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(receipt["state"], "erased", "{receipt}");
    assert_eq!(receipt["erasure"]["requested_by"], "dpo");
    assert_eq!(receipt["erasure"]["reason"], "ticket 12");
    assert_eq!(receipt["data_keys"], 0);

    // The server never opened that key, so it has none in memory: erased at once.
    assert_erased(
        &expect_status(app.get("/v1/orders/pc-1").await, StatusCode::OK).await,
        "GET after the CLI's erasure",
    );
    let out = orderlog(&["privacy", "erasure", "cust-cli"], &env);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["erasures"], 1);
    let out = orderlog(&["privacy", "erase", "no such customer"], &env);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("customer id"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.stop().await;
}

async fn personal_data_is_checked_at_the_edge(backend: Backend) {
    let app = spawn_app(backend).await;
    for (field, value) in [
        ("email", json!("not an email")),
        ("email", json!("a@b")),
        ("phone", json!("call me")),
        ("note", json!("bell\u{7}")),
    ] {
        let mut order = personal_order("pv-1", "cust-v");
        order[field] = value.clone();
        let body = expect_error(
            app.post("/v1/orders", &order).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
        assert_eq!(body["field"], field, "{value}: {body}");
    }
    // A body with no personal data has none to seal, and shows none.
    let mut plain = personal_order("pv-2", "cust-v");
    for field in [
        "shipping_address",
        "billing_address",
        "email",
        "phone",
        "note",
    ] {
        plain.as_object_mut().unwrap().remove(field);
    }
    let placed = expect_status(app.post("/v1/orders", &plain).await, StatusCode::CREATED).await;
    assert!(
        placed.get("email").is_none() && placed.get("erased").is_none(),
        "{placed}"
    );
    assert!(order_created_payload(&app, "pv-2")
        .await
        .get("personal")
        .is_none());
    let erased = expect_status(
        app.post_empty("/v1/customers/cust-v/erase").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(erased["state"], "erased");
    let order = expect_status(app.get("/v1/orders/pv-2").await, StatusCode::OK).await;
    assert!(order.get("erased").is_none(), "nothing to erase: {order}");
    let body = expect_error(
        app.post_empty("/v1/customers/bad%20id/erase").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    assert_eq!(body["field"], "customer_id");
    app.stop().await;
}
