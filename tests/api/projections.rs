//! The read side: views follow the log exactly once, answer their queries, survive
//! failures and crashes, and are rebuilt by replay without downtime.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use orderlog::app::Overrides;
use orderlog::projections::runner::FaultHook;
use orderlog::projections::{self, BoxFuture, Envelope, Projection, ProjectionError, View};
use orderlog::store::views::Table;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    views_answer_list_billing_shipping_and_analytics_queries,
    orders_are_listed_newest_first_with_filters_and_pages,
    a_command_can_wait_until_its_views_caught_up,
    an_order_can_be_read_as_it_was_at_a_position_or_time,
    a_rebuild_replays_into_fresh_tables_and_switches_without_downtime,
    a_failing_projection_stops_alone_and_an_operator_retries_it,
    an_operator_can_skip_the_event_a_projection_fails_on,
    a_batch_that_fails_after_writing_is_applied_exactly_once,
    a_restart_in_the_middle_of_a_stream_misses_and_repeats_nothing,
    a_buggy_projection_is_fixed_by_a_version_bump_and_rebuilt,
    bad_query_parameters_are_422s,
    repeated_rebuilds_keep_at_most_one_retired_generation,
);

async fn order_summary_tables(app: &TestApp) -> Vec<String> {
    use sqlx::{Connection, Row};
    let sql_pg = "SELECT table_name::text AS name FROM information_schema.tables
                  WHERE table_schema = current_schema() AND table_name LIKE 'order_summary_g%'";
    let sql_lite =
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'order_summary_g%'";
    let mut names: Vec<String> = if app.database_url.starts_with("sqlite") {
        let mut conn = sqlx::SqliteConnection::connect(&app.database_url)
            .await
            .unwrap();
        sqlx::query(sql_lite)
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("name"))
            .collect()
    } else {
        let mut conn = sqlx::PgConnection::connect(&app.database_url)
            .await
            .unwrap();
        sqlx::query(sql_pg)
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("name"))
            .collect()
    };
    names.sort();
    names
}

async fn repeated_rebuilds_keep_at_most_one_retired_generation(backend: Backend) {
    let app = spawn_app(backend).await;
    traffic(&app, "g", 2).await;
    for expected_generation in [2, 3, 4] {
        let r = app
            .post_empty("/v1/admin/projections/order_summary/rebuild")
            .await;
        expect_status(r, StatusCode::ACCEPTED).await;
        let status = app.projections_caught_up().await;
        let summary = status["projections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "order_summary")
            .unwrap()
            .clone();
        assert_eq!(summary["generation"], expected_generation);
    }
    // Serving generation 4; at most generation 3 is kept for queries still running.
    let tables = order_summary_tables(&app).await;
    assert!(
        tables
            .iter()
            .all(|t| t.starts_with("order_summary_g3_") || t.starts_with("order_summary_g4_")),
        "{tables:?}"
    );
    expect_status(app.get("/v1/orders").await, StatusCode::OK).await;
}

/// A mix of order lifecycles: `n` orders, each taken to a different point.
pub async fn traffic(app: &TestApp, prefix: &str, n: usize) {
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        app.place_order(&id).await;
        if i % 5 == 4 {
            let r = app
                .post(
                    &format!("/v1/orders/{id}/cancel"),
                    &json!({"reason": "changed mind"}),
                )
                .await;
            expect_status(r, StatusCode::OK).await;
            continue;
        }
        if i % 5 == 0 {
            continue;
        }
        let r = app
            .post(
                &format!("/v1/orders/{id}/payments"),
                &json!({"payment_id": "p1", "amount": 5000}),
            )
            .await;
        expect_status(r, StatusCode::CREATED).await;
        if i % 7 == 3 {
            let r = app
                .post(
                    &format!("/v1/orders/{id}/payments/p1/fail"),
                    &json!({"reason": "declined"}),
                )
                .await;
            expect_status(r, StatusCode::OK).await;
            let r = app
                .post(
                    &format!("/v1/orders/{id}/payments"),
                    &json!({"payment_id": "p2", "amount": 5000}),
                )
                .await;
            expect_status(r, StatusCode::CREATED).await;
            expect_status(
                app.post_empty(&format!("/v1/orders/{id}/payments/p2/capture"))
                    .await,
                StatusCode::OK,
            )
            .await;
        } else {
            expect_status(
                app.post_empty(&format!("/v1/orders/{id}/payments/p1/capture"))
                    .await,
                StatusCode::OK,
            )
            .await;
        }
        if i % 5 == 1 {
            continue;
        }
        let r = app
            .post(&format!("/v1/orders/{id}/shipments"), &json!({"shipment_id": "s1", "carrier": "UPS", "tracking_number": format!("T{i}"), "lines": [{"sku": "MUG-BLUE", "quantity": 2}]}))
            .await;
        expect_status(r, StatusCode::CREATED).await;
        if i % 5 == 2 {
            continue;
        }
        let r = app
            .post(
                &format!("/v1/orders/{id}/shipments"),
                &json!({"shipment_id": "s2", "carrier": "DHL", "tracking_number": format!("D{i}")}),
            )
            .await;
        expect_status(r, StatusCode::CREATED).await;
        expect_status(
            app.post_empty(&format!("/v1/orders/{id}/shipments/s1/deliver"))
                .await,
            StatusCode::OK,
        )
        .await;
        expect_status(
            app.post_empty(&format!("/v1/orders/{id}/shipments/s2/deliver"))
                .await,
            StatusCode::OK,
        )
        .await;
        let r = app
            .post(
                &format!("/v1/orders/{id}/refunds"),
                &json!({"amount": 500, "reason": "late"}),
            )
            .await;
        expect_status(r, StatusCode::CREATED).await;
    }
}

fn today() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

async fn views_answer_list_billing_shipping_and_analytics_queries(backend: Backend) {
    let app = spawn_app(backend).await;
    traffic(&app, "v", 10).await;
    app.projections_caught_up().await;

    let cancelled =
        expect_status(app.get("/v1/orders?status=cancelled").await, StatusCode::OK).await;
    let ids: Vec<&str> = cancelled["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"v-4") && ids.contains(&"v-9"));

    let summary = expect_status(
        app.get("/v1/orders?status=partially_refunded").await,
        StatusCode::OK,
    )
    .await;
    let fulfilled_then_refunded = &summary["orders"][0];
    assert_eq!(fulfilled_then_refunded["paid"], 5000);
    assert_eq!(fulfilled_then_refunded["refunded"], 500);
    assert_eq!(fulfilled_then_refunded["item_count"], 3);

    let billing = expect_status(app.get("/v1/billing/orders/v-3").await, StatusCode::OK).await;
    assert_eq!(billing["failed_attempts"], 1);
    assert_eq!(billing["captured"], 5000);
    assert_eq!(billing["refunded"], 500);
    assert_eq!(billing["balance"], 4500);
    assert_eq!(billing["amount_due"], 0);
    let unpaid = expect_status(app.get("/v1/billing/orders/v-0").await, StatusCode::OK).await;
    assert_eq!(unpaid["amount_due"], 5000);
    expect_error(
        app.get("/v1/billing/orders/nope").await,
        StatusCode::NOT_FOUND,
        "order_not_found",
    )
    .await;

    let day = today();
    let daily = expect_status(
        app.get(&format!(
            "/v1/billing/daily?from={day}&to={day}&currency=USD"
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    // Paid: orders 1,2,3,6,7,8 (6 × 5000); refunded: 3 and 8 (2 × 500).
    assert_eq!(daily["days"][0]["captured"], 30000);
    assert_eq!(daily["days"][0]["refunded"], 1000);
    assert_eq!(daily["days"][0]["net"], 29000);

    let delivered = expect_status(
        app.get("/v1/shipping/shipments?status=delivered").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        delivered["shipments"].as_array().unwrap().len(),
        4,
        "{delivered}"
    );
    let dispatched = expect_status(
        app.get("/v1/shipping/shipments?status=dispatched").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(dispatched["shipments"].as_array().unwrap().len(), 2);
    let backlog = expect_status(app.get("/v1/shipping/backlog").await, StatusCode::OK).await;
    let waiting: Vec<&str> = backlog["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    // Paid but not fully shipped: 1 and 6 (unshipped), 2 and 7 (partially shipped).
    assert_eq!(waiting.len(), 4, "{backlog}");
    for id in ["v-1", "v-2", "v-6", "v-7"] {
        assert!(waiting.contains(&id), "{id} is in the backlog: {backlog}");
    }

    let analytics = expect_status(
        app.get(&format!("/v1/analytics/summary?from={day}&to={day}"))
            .await,
        StatusCode::OK,
    )
    .await;
    let funnel = &analytics["funnel"];
    assert_eq!(funnel["placed"], 10);
    assert_eq!(funnel["paid"], 6);
    assert_eq!(funnel["shipped"], 2);
    assert_eq!(funnel["delivered"], 2);
    assert_eq!(funnel["placed_to_paid"], 0.6);
    assert_eq!(analytics["totals"]["orders_cancelled"], 2);
    let usd = &analytics["revenue"][0];
    assert_eq!(usd["currency"], "USD");
    assert_eq!(usd["gross_revenue"], 30000);
    assert_eq!(usd["net_revenue"], 29000);
    assert_eq!(usd["average_order_value"], 5000);

    let top = expect_status(
        app.get(&format!(
            "/v1/analytics/top-skus?from={day}&to={day}&limit=1"
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        top["skus"],
        json!([{"sku": "MUG-BLUE", "currency": "USD", "units": 20, "revenue": 30000}])
    );
}

async fn orders_are_listed_newest_first_with_filters_and_pages(backend: Backend) {
    let app = spawn_app(backend).await;
    traffic(&app, "l", 6).await;
    let mut other = fixture("place_order.json", "l-other");
    other["customer_id"] = json!("cust-7");
    expect_status(app.post("/v1/orders", &other).await, StatusCode::CREATED).await;
    app.projections_caught_up().await;

    let orders = app.all_pages("/v1/orders?limit=3", "orders").await;
    let seen: Vec<&str> = orders
        .iter()
        .map(|o| o["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        seen,
        ["l-other", "l-5", "l-4", "l-3", "l-2", "l-1", "l-0"],
        "newest first, each once"
    );

    let mine = expect_status(
        app.get("/v1/orders?customer_id=cust-7").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(mine["orders"].as_array().unwrap().len(), 1);
    let future = expect_status(
        app.get("/v1/orders?created_after=2999-01-01T00:00:00Z")
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(future["orders"], json!([]));
    let past = expect_status(
        app.get("/v1/orders?created_before=2999-01-01T00:00:00Z&status=placed")
            .await,
        StatusCode::OK,
    )
    .await;
    let placed: Vec<&str> = past["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(placed, ["l-other", "l-5", "l-0"]);
}

async fn a_command_can_wait_until_its_views_caught_up(backend: Backend) {
    let app = spawn_app(backend).await;
    for i in 0..5 {
        let r = app
            .client
            .post(app.url("/v1/orders"))
            .header("X-Wait-For", "order_summary,billing")
            .json(&fixture("place_order.json", &format!("w-{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-wait-for-result"], "caught_up");
        expect_status(r, StatusCode::CREATED).await;
        // Read-your-writes: the view already has it.
        let r = app.get(&format!("/v1/billing/orders/w-{i}")).await;
        expect_status(r, StatusCode::OK).await;
    }
    let r = app
        .client
        .post(app.url("/v1/orders"))
        .header("X-Wait-For", "nonsense")
        .json(&fixture("place_order.json", "w-x"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::BAD_REQUEST, "invalid_header").await;

    // A stopped projection never catches up: the wait times out and says which.
    expect_status(
        app.post_empty("/v1/admin/projections/billing/stop").await,
        StatusCode::OK,
    )
    .await;
    let r = app
        .client
        .post(app.url("/v1/orders"))
        .header("X-Wait-For", "all")
        .header("X-Wait-Timeout-Ms", "1500")
        .json(&fixture("place_order.json", "w-late"))
        .send()
        .await
        .unwrap();
    // Others may lag too on a busy PostgreSQL (any open transaction holds readers back);
    // billing, stopped, certainly does.
    let result = r.headers()["x-wait-for-result"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        result.starts_with("timed_out; lagging=") && result.contains("billing"),
        "{result}"
    );
    expect_status(r, StatusCode::CREATED).await;
    expect_status(
        app.post_empty("/v1/admin/projections/billing/retry").await,
        StatusCode::OK,
    )
    .await;
    app.projections_caught_up().await;
}

async fn an_order_can_be_read_as_it_was_at_a_position_or_time(backend: Backend) {
    let app = spawn_app(backend).await;
    app.paid_order("tt").await;
    let events = app.events("tt").await;
    let placed_at = events[0]["global_position"].as_i64().unwrap();
    let then = expect_status(
        app.get(&format!("/v1/orders/tt?at={placed_at}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(then["status"], "placed");
    assert_eq!(then["version"], 1);
    let attempted_at = events[1]["recorded_at"].as_str().unwrap();
    let then = expect_status(
        app.get(&format!("/v1/orders/tt?at={}", urlencode(attempted_at)))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(then["status"], "payment_pending");
    let now = expect_status(app.get("/v1/orders/tt").await, StatusCode::OK).await;
    assert_eq!(now["status"], "paid");
    let before = expect_status(
        app.get("/v1/orders/tt?at=2000-01-01T00:00:00Z").await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert_eq!(before["code"], "order_not_found");
    expect_error(
        app.get("/v1/orders/tt?at=yesterday").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
}

fn urlencode(raw: &str) -> String {
    raw.replace(':', "%3A").replace('+', "%2B")
}

async fn a_rebuild_replays_into_fresh_tables_and_switches_without_downtime(backend: Backend) {
    let app = spawn_app(backend).await;
    traffic(&app, "r", 10).await;
    app.projections_caught_up().await;
    let before = app.read_side().await;

    for name in orderlog::app::all_projections(&orderlog::config::Settings::default())
        .iter()
        .map(|p| p.name())
    {
        let r = app
            .post_empty(&format!("/v1/admin/projections/{name}/rebuild"))
            .await;
        let status = expect_status(r, StatusCode::ACCEPTED).await;
        assert_eq!(status["rebuild"]["generation"], 2);
    }
    // Queries are answered throughout.
    for _ in 0..5 {
        expect_status(app.get("/v1/orders").await, StatusCode::OK).await;
    }
    let status = app.projections_caught_up().await;
    for p in status["projections"].as_array().unwrap() {
        assert_eq!(p["generation"], 2, "{p}");
        assert!(p["rebuild"].is_null());
    }
    assert_eq!(
        app.read_side().await,
        before,
        "a rebuild from scratch equals the live views"
    );

    // And the rebuilt views go on following the log.
    traffic(&app, "r2", 2).await;
    app.projections_caught_up().await;
    let orders = expect_status(app.get("/v1/orders?limit=500").await, StatusCode::OK).await;
    assert_eq!(orders["orders"].as_array().unwrap().len(), 12);
    expect_error(
        app.post_empty("/v1/admin/projections/nope/rebuild").await,
        StatusCode::NOT_FOUND,
        "projection_not_found",
    )
    .await;
}

/// Fails `projection` on every event of order `order_id` while `on` is set.
fn fail_on(projection: &'static str, order_id: &'static str, on: Arc<AtomicBool>) -> FaultHook {
    Arc::new(move |name: &str, event: &Envelope| {
        name == projection && event.entry.aggregate_id == order_id && on.load(Ordering::SeqCst)
    })
}

async fn wait_for_state(app: &TestApp, name: &str, state: &str) -> Value {
    let what = format!("{name} to become {state}");
    eventually(&what, Duration::from_secs(10), || async {
        let status = expect_status(
            app.get(&format!("/v1/admin/projections/{name}")).await,
            StatusCode::OK,
        )
        .await;
        if status["state"] == state {
            Ok(status)
        } else {
            Err(status)
        }
    })
    .await
}

async fn a_failing_projection_stops_alone_and_an_operator_retries_it(backend: Backend) {
    let url = fresh_database(backend).await;
    let on = Arc::new(AtomicBool::new(true));
    let overrides = Overrides {
        fault: Some(fail_on("billing", "bad-1", on.clone())),
        ..Overrides::default()
    };
    let app = spawn_app_with(&url, |_| {}, overrides).await;
    app.place_order("ok-1").await;
    app.place_order("bad-1").await;
    app.place_order("ok-2").await;

    let failed = wait_for_state(&app, "billing", "failed").await;
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("injected fault"),
        "{failed}"
    );
    let bad = &app.events("bad-1").await[0];
    assert_eq!(failed["failed_event"]["event_id"], bad["event_id"]);
    assert_eq!(failed["failed_event"]["position"], bad["global_position"]);
    // The events before the failing one were applied; the others go on.
    expect_status(app.get("/v1/billing/orders/ok-1").await, StatusCode::OK).await;
    expect_error(
        app.get("/v1/billing/orders/ok-2").await,
        StatusCode::NOT_FOUND,
        "order_not_found",
    )
    .await;
    let listed = eventually(
        "the order summary to list all three orders",
        Duration::from_secs(10),
        || async {
            let summary = expect_status(app.get("/v1/orders").await, StatusCode::OK).await;
            match summary["orders"].as_array().unwrap().len() {
                3 => Ok(3),
                n => Err(format!("{n} orders listed")),
            }
        },
    )
    .await;
    assert_eq!(listed, 3, "other projections went on");

    // Retrying before the fix fails again on the same event.
    expect_status(
        app.post_empty("/v1/admin/projections/billing/retry").await,
        StatusCode::OK,
    )
    .await;
    wait_for_state(&app, "billing", "failed").await;
    // The fix is deployed: a retry goes on from where it stopped.
    on.store(false, Ordering::SeqCst);
    let r = app.post_empty("/v1/admin/projections/billing/retry").await;
    expect_status(r, StatusCode::OK).await;
    app.projections_caught_up().await;
    expect_status(app.get("/v1/billing/orders/bad-1").await, StatusCode::OK).await;
    expect_status(app.get("/v1/billing/orders/ok-2").await, StatusCode::OK).await;
    let r = app.post_empty("/v1/admin/projections/billing/retry").await;
    expect_error(r, StatusCode::CONFLICT, "projection_state_conflict").await;
}

async fn an_operator_can_skip_the_event_a_projection_fails_on(backend: Backend) {
    let url = fresh_database(backend).await;
    let on = Arc::new(AtomicBool::new(true));
    let overrides = Overrides {
        fault: Some(fail_on("shipping", "poison", on.clone())),
        ..Overrides::default()
    };
    let app = spawn_app_with(&url, |_| {}, overrides).await;
    app.place_order("before").await;
    app.place_order("poison").await;
    app.place_order("after").await;
    let failed = wait_for_state(&app, "shipping", "failed").await;
    assert_eq!(failed["skipped_events"], 0);

    let r = app.post_empty("/v1/admin/projections/shipping/skip").await;
    let status = expect_status(r, StatusCode::OK).await;
    assert_eq!(status["state"], "running");
    assert_eq!(
        status["skipped_events"], 1,
        "the skip is recorded and visible"
    );
    app.projections_caught_up().await;
    // "after" was applied; "poison" was skipped for good, even though the fault is gone.
    on.store(false, Ordering::SeqCst);
    app.place_order("later").await;
    app.projections_caught_up().await;
    let r = app
        .post("/v1/orders/after/payments", &json!({"amount": 5000}))
        .await;
    let payment = expect_status(r, StatusCode::CREATED).await;
    let id = payment["payment_id"].as_str().unwrap();
    expect_status(
        app.post_empty(&format!("/v1/orders/after/payments/{id}/capture"))
            .await,
        StatusCode::OK,
    )
    .await;
    app.projections_caught_up().await;
    let backlog = expect_status(app.get("/v1/shipping/backlog").await, StatusCode::OK).await;
    assert_eq!(backlog["orders"][0]["id"], "after");
    let r = app.post_empty("/v1/admin/projections/shipping/skip").await;
    expect_error(r, StatusCode::CONFLICT, "projection_state_conflict").await;
}

async fn a_batch_that_fails_after_writing_is_applied_exactly_once(backend: Backend) {
    // The first attempt at every batch holding an order's first event fails after the
    // view was written, before its commit: a crash mid-batch. The retries must neither
    // lose nor repeat any event.
    let url = fresh_database(backend).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let hook: FaultHook = Arc::new(move |name: &str, event: &Envelope| {
        let first_time = event.entry.sequence == 1
            && seen
                .lock()
                .unwrap()
                .insert((name.to_owned(), event.entry.event_id));
        if first_time {
            counter.fetch_add(1, Ordering::SeqCst);
        }
        first_time
    });
    let reference = spawn_app(backend).await;
    let app = spawn_app_with(
        &url,
        |_| {},
        Overrides {
            fault: Some(hook),
            ..Overrides::default()
        },
    )
    .await;
    traffic(&app, "c", 10).await;
    traffic(&reference, "c", 10).await;
    app.projections_caught_up().await;
    reference.projections_caught_up().await;
    assert!(calls.load(Ordering::SeqCst) > 0, "the fault hook ran");
    assert_eq!(
        without_times(app.read_side().await),
        without_times(reference.read_side().await)
    );
}

/// Times differ between two runs of the same traffic; everything else must not.
fn without_times(mut value: Value) -> Value {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.retain(|k, _| !k.ends_with("_at") && k != "day" && k != "from" && k != "to");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut value);
    value
}

async fn a_restart_in_the_middle_of_a_stream_misses_and_repeats_nothing(backend: Backend) {
    let app = spawn_app(backend).await;
    let url = app.database_url.clone();
    traffic(&app, "k", 6).await;
    // Stop while the runners are busy with the last commands: whatever batch is in
    // flight is abandoned mid-transaction.
    app.stop().await;
    let restarted = spawn_app_on(&url, |_| {}).await;
    traffic(&restarted, "k2", 4).await;
    restarted.projections_caught_up().await;
    let live = restarted.read_side().await;
    for name in orderlog::app::all_projections(&orderlog::config::Settings::default())
        .iter()
        .map(|p| p.name())
    {
        expect_status(
            restarted
                .post_empty(&format!("/v1/admin/projections/{name}/rebuild"))
                .await,
            StatusCode::ACCEPTED,
        )
        .await;
    }
    restarted.projections_caught_up().await;
    assert_eq!(
        restarted.read_side().await,
        live,
        "the live views equal a replay from scratch"
    );
    let orders = &live["orders"]["orders"];
    assert_eq!(orders.as_array().unwrap().len(), 10);
}

/// The real order summary with a bug: it never applies refunds.
struct BuggySummary;

impl Projection for BuggySummary {
    fn name(&self) -> &'static str {
        "order_summary"
    }
    fn version(&self) -> i64 {
        1
    }
    fn tables(&self) -> &'static [Table] {
        projections::order_summary::OrderSummary.tables()
    }
    fn apply<'a>(
        &'a self,
        view: &'a mut View,
        events: &'a [Envelope],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let kept: Vec<Envelope> = events
                .iter()
                .filter(|e| e.entry.event_type != "order.refunded")
                .cloned()
                .collect();
            projections::order_summary::OrderSummary
                .apply(view, &kept)
                .await
        })
    }
}

/// The fixed projection: the real code, shipped as version 2.
struct FixedSummary;

impl Projection for FixedSummary {
    fn name(&self) -> &'static str {
        "order_summary"
    }
    fn version(&self) -> i64 {
        2
    }
    fn tables(&self) -> &'static [Table] {
        projections::order_summary::OrderSummary.tables()
    }
    fn apply<'a>(
        &'a self,
        view: &'a mut View,
        events: &'a [Envelope],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        projections::order_summary::OrderSummary.apply(view, events)
    }
}

fn with_summary(summary: Arc<dyn Projection>) -> Overrides {
    let mut list: Vec<Arc<dyn Projection>> =
        orderlog::app::all_projections(&orderlog::config::Settings::default())
            .into_iter()
            .filter(|p| p.name() != "order_summary")
            .collect();
    list.push(summary);
    Overrides {
        projections: Some(list),
        ..Overrides::default()
    }
}

async fn a_buggy_projection_is_fixed_by_a_version_bump_and_rebuilt(backend: Backend) {
    let url = fresh_database(backend).await;
    let buggy = spawn_app_with(&url, |_| {}, with_summary(Arc::new(BuggySummary))).await;
    traffic(&buggy, "b", 10).await;
    buggy.projections_caught_up().await;
    let wrong = expect_status(
        buggy.get("/v1/orders?status=partially_refunded").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        wrong["orders"],
        json!([]),
        "the bug shows: refunds are missing"
    );
    buggy.stop().await;

    // Deploy the fix. The rebuild starts at boot; the old view answers meanwhile.
    let fixed = spawn_app_with(&url, |_| {}, with_summary(Arc::new(FixedSummary))).await;
    let answered = expect_status(fixed.get("/v1/orders").await, StatusCode::OK).await;
    assert_eq!(answered["orders"].as_array().unwrap().len(), 10);
    let status = fixed.projections_caught_up().await;
    let summary = status["projections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "order_summary")
        .unwrap()
        .clone();
    assert_eq!(summary["version"], 2);
    assert_eq!(summary["generation"], 2);
    let right = expect_status(
        fixed.get("/v1/orders?status=partially_refunded").await,
        StatusCode::OK,
    )
    .await;
    let ids: Vec<&str> = right["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["b-8", "b-3"]);
}

async fn bad_query_parameters_are_422s(backend: Backend) {
    let app = spawn_app(backend).await;
    for (path, field) in [
        ("/v1/orders?status=lost", "status"),
        ("/v1/orders?limit=0", "limit"),
        ("/v1/orders?limit=many", "limit"),
        ("/v1/orders?created_after=yesterday", "created_after"),
        ("/v1/orders?cursor=zz", "cursor"),
        ("/v1/orders?colour=red", "colour"),
        ("/v1/billing/daily?from=2026-13-01&to=2026-12-01", "from"),
        ("/v1/billing/daily?from=2026-01-01", "to"),
        (
            "/v1/billing/daily?from=2026-01-01&to=2026-01-02&currency=usd",
            "currency",
        ),
        ("/v1/shipping/shipments?status=lost", "status"),
        (
            "/v1/analytics/top-skus?from=2026-01-01&to=2026-01-02&limit=1000",
            "limit",
        ),
    ] {
        let error = expect_error(
            app.get(path).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
        assert_eq!(error["field"], field, "{path}: {error}");
    }
}
