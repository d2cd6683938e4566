//! The operator's view: `/v1/ops/stats` and its stream, one order's journey, the
//! Prometheus series, and `/ops` itself in a real headless Chromium.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::deliveries::{subscribe, wait_for_subscription};
use crate::helpers::*;
use crate::on_both_backends;
use crate::receiver::Receiver;

on_both_backends!(
    ops_stats_show_rates_views_subscriptions_stock_and_the_inbox,
    the_ops_stream_pushes_a_snapshot_every_second,
    an_order_s_journey_shows_its_reservations_views_and_every_delivery_attempt,
    the_dashboard_in_a_browser_shows_counters_lags_and_a_journey,
);

fn fast_retries(settings: &mut orderlog::config::Settings) {
    settings.deliveries.retry_schedule = vec![Duration::from_millis(50); 2];
    settings.deliveries.breaker_failures = 10_000;
}

async fn app(backend: Backend) -> TestApp {
    spawn_app_on(&fresh_database(backend).await, fast_retries).await
}

async fn stock(app: &TestApp, sku: &str, quantity: i64) {
    expect_status(
        app.post(
            &format!("/v1/inventory/{sku}/receipts"),
            &json!({ "quantity": quantity }),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
}

async fn token(app: &TestApp, name: &str, scopes: &[&str]) -> String {
    let created = expect_status(
        app.post("/v1/tokens", &json!({ "name": name, "scopes": scopes }))
            .await,
        StatusCode::CREATED,
    )
    .await;
    created["token"].as_str().unwrap().to_owned()
}

async fn stats(app: &TestApp) -> Value {
    expect_status(app.get("/v1/ops/stats").await, StatusCode::OK).await
}

/// Polls the stats until `done` holds (the meter closes a second at a time).
async fn stats_until(app: &TestApp, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    eventually(what, Duration::from_secs(20), || async {
        let s = stats(app).await;
        if done(&s) {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await
}

fn find<'a>(list: &'a Value, key: &str, value: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|item| item[key] == value)
}

async fn ops_stats_show_rates_views_subscriptions_stock_and_the_inbox(backend: Backend) {
    let app = app(backend).await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&app, &receiver.url(), &["order.*"], json!({})).await;
    let id = subscription["id"].as_str().unwrap().to_owned();
    stock(&app, "MUG-BLUE", 5).await;
    stock(&app, "TEE-M", 100).await;
    app.place_order("ops-1").await;
    let refused = app.post("/v1/orders", &json!({"order_id": "ops-2"})).await;
    expect_status(refused, StatusCode::UNPROCESSABLE_ENTITY).await;
    receiver
        .wait_until(Duration::from_secs(20), "order.created delivered", |r| {
            !r.is_empty()
        })
        .await;

    let s = stats_until(&app, "the order and its delivery counted", |s| {
        let created = find(&s["events"]["by_type"], "event_type", "order.created");
        let delivered = find(&s["subscriptions"], "id", &id);
        created.is_some_and(|c| c["total"] == 1)
            && delivered.is_some_and(|d| {
                d["delivered"] == 1 && d["lag_events"] == 0 && d["success_rate"] == 1.0
            })
    })
    .await;
    assert_eq!(s["live"], true);
    assert_eq!(s["backend"], app_backend_name(backend));
    let orders = find(&s["commands"]["by_kind"], "kind", "POST /v1/orders").unwrap();
    assert_eq!(orders["accepted"], 1, "{orders}");
    assert_eq!(orders["refused"], 1, "{orders}");
    assert!(orders["p99_ms"].as_f64().is_some(), "{orders}");
    let reserved = find(&s["events"]["by_type"], "event_type", "inventory.reserved").unwrap();
    assert_eq!(reserved["total"], 2, "one a line");

    let sub = find(&s["subscriptions"], "id", &id).unwrap();
    assert_eq!(sub["kind"], "webhook");
    assert_eq!(sub["state"], "active");
    assert_eq!(sub["breaker"], "closed");
    assert_eq!(
        (sub["waiting"].as_i64(), sub["dead"].as_i64()),
        (Some(0), Some(0))
    );
    assert_eq!(sub["success_rate"], 1.0, "{sub}");

    let names: Vec<&str> = s["projections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for name in [
        "order_summary",
        "inventory",
        "billing",
        "shipping",
        "analytics",
        "reservations",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }

    // MUG-BLUE: 5 received, 2 reserved: 3 available, below the low-stock line.
    let s = stats_until(&app, "the stock view caught up", |s| {
        find(&s["stock"]["low"], "id", "MUG-BLUE").is_some_and(|m| m["available"] == 3)
    })
    .await;
    assert!(
        find(&s["stock"]["low"], "id", "TEE-M").is_none(),
        "99 left is not low"
    );
    assert_eq!(s["inbox"], json!([]));
    assert!(!s["history"].as_array().unwrap().is_empty());

    // Its scope: metrics:read (or admin), not any token.
    let reader = token(&app, "ops-viewer", &["metrics:read"]).await;
    let r = client_for(&reader)
        .get(app.url("/v1/ops/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let orders_only = token(&app, "orders-only", &["orders:read"]).await;
    let r = client_for(&orders_only)
        .get(app.url("/v1/ops/stats"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    app.stop().await;
}

fn app_backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

async fn the_ops_stream_pushes_a_snapshot_every_second(backend: Backend) {
    let app = app(backend).await;
    let response = app.get("/v1/ops/stream").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let started = std::time::Instant::now();
    // Two snapshots: the first at once, the next a second later, with what happened
    // in between.
    let mut placed = false;
    while text.matches("event: stats").count() < 3 {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .expect("a push within 10 s")
            .expect("the stream goes on")
            .unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        if !placed {
            stock(&app, "MUG-BLUE", 10).await;
            placed = true;
        }
    }
    assert!(started.elapsed() >= Duration::from_millis(1500), "paced");
    let last = text
        .split("\n\n")
        .filter(|m| m.contains("event: stats"))
        .last()
        .unwrap();
    let data: String = last
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    let snapshot: Value = serde_json::from_str(&data).unwrap();
    assert!(snapshot["projections"].as_array().unwrap().len() >= 6);
    drop(body);
    app.stop().await;
}

async fn an_order_s_journey_shows_its_reservations_views_and_every_delivery_attempt(
    backend: Backend,
) {
    let app = app(backend).await;
    let flaky = Receiver::start(200).await;
    flaky.answer_next(&[500]);
    let down = Receiver::start(500).await;
    let retried = subscribe(
        &app,
        &flaky.url(),
        &["order.*"],
        json!({"max_in_flight": 1}),
    )
    .await;
    let retried = retried["id"].as_str().unwrap().to_owned();
    let dead = subscribe(
        &app,
        &down.url(),
        &["order.created"],
        json!({"max_in_flight": 1}),
    )
    .await;
    let dead = dead["id"].as_str().unwrap().to_owned();
    let elsewhere = Receiver::start(200).await;
    let stock_only = subscribe(&app, &elsewhere.url(), &["inventory.received"], json!({})).await;
    stock(&app, "MUG-BLUE", 10).await;
    stock(&app, "TEE-M", 10).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let placed = app
        .client
        .post(app.url("/v1/orders"))
        .header("traceparent", traceparent)
        .json(&fixture("place_order.json", "journey-1"))
        .send()
        .await
        .unwrap();
    expect_status(placed, StatusCode::CREATED).await;
    wait_for_subscription(&app, &dead, "the order.created dead-lettered", |s| {
        s["queue"]["dead"] == 1
    })
    .await;
    flaky
        .wait_until(Duration::from_secs(20), "the retry delivered", |r| {
            r.iter().filter(|x| x.status == 200).count() >= 1
        })
        .await;
    app.projections_caught_up().await;

    let journey = eventually("the journey settles", Duration::from_secs(20), || async {
        let j = expect_status(
            app.get("/v1/orders/journey-1/journey").await,
            StatusCode::OK,
        )
        .await;
        let created = j["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event_type"] == "order.created")
            .cloned();
        match created {
            Some(c)
                if find(&c["deliveries"], "subscription_id", &retried)
                    .is_some_and(|d| d["state"] == "delivered") =>
            {
                Ok(j)
            }
            _ => Err(j),
        }
    })
    .await;
    assert_eq!(journey["order_id"], "journey-1");
    let events = journey["events"].as_array().unwrap();
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["inventory.reserved", "inventory.reserved", "order.created"],
        "in time order: the reservations, then the order; never the stock receipts"
    );
    let times: Vec<&str> = events
        .iter()
        .map(|e| e["recorded_at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    for event in events {
        assert_eq!(
            event["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
            "every event of the command carries its trace: {event}"
        );
        let views = event["projections"].as_array().unwrap();
        assert!(views.len() >= 6);
        assert!(views.iter().all(|v| v["applied"] == true), "{views:?}");
    }
    let reservation = &events[0];
    assert_eq!(reservation["aggregate_type"], "inventory");
    assert_eq!(
        reservation["deliveries"],
        json!([]),
        "no subscription takes inventory.reserved"
    );
    let created = &events[2];
    let deliveries = created["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 2, "{deliveries:?}");
    let retried = find(&created["deliveries"], "subscription_id", &retried).unwrap();
    let attempts = retried["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{retried}");
    assert_eq!(attempts[0]["outcome"], "failed");
    assert_eq!(attempts[0]["status"], 500);
    assert_eq!(attempts[1]["outcome"], "delivered");
    assert_eq!(attempts[1]["status"], 200);
    assert!(attempts[1]["latency_ms"].as_i64().is_some());
    let dead = find(&created["deliveries"], "subscription_id", &dead).unwrap();
    assert_eq!(dead["state"], "dead", "{dead}");
    assert_eq!(
        dead["attempts"].as_array().unwrap().len(),
        3,
        "first + 2 retries"
    );
    assert!(dead["dead_at"].is_string(), "{dead}");
    assert!(
        find(
            &created["deliveries"],
            "subscription_id",
            stock_only["id"].as_str().unwrap()
        )
        .is_none(),
        "a subscription that does not take the type is not listed"
    );

    let missing = app.get("/v1/orders/nobody/journey").await;
    expect_error(missing, StatusCode::NOT_FOUND, "order_not_found").await;
    let metrics_only = token(&app, "metrics-only", &["metrics:read"]).await;
    let r = client_for(&metrics_only)
        .get(app.url("/v1/orders/journey-1/journey"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    app.stop().await;
}

/// The browser's half is `tests/browser/ops.mjs`; `scripts/test` installs Chromium and
/// playwright-core. Without them this test fails, saying how to get them: never skips.
async fn the_dashboard_in_a_browser_shows_counters_lags_and_a_journey(backend: Backend) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("tests/browser/ops.mjs");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(
        root.join("tests/browser/node_modules/playwright-core")
            .is_dir()
            && Path::new(&chromium).exists(),
        "the browser test needs Chromium at {chromium} and playwright-core in tests/browser: \
         run scripts/test (it installs both), or `apt-get install chromium` and \
         `npm ci --prefix tests/browser`"
    );
    let app = app(backend).await;
    let receiver = Receiver::start(200).await;
    let subscription = subscribe(&app, &receiver.url(), &["order.*"], json!({})).await;
    stock(&app, "MUG-BLUE", 3).await;
    stock(&app, "TEE-M", 3).await;
    app.place_order("seen-in-browser").await;
    receiver
        .wait_until(Duration::from_secs(20), "order.created delivered", |r| {
            !r.is_empty()
        })
        .await;
    let projections = stats(&app).await["projections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>()
        .join(",");
    let viewer = token(&app, "ops-viewer", &["metrics:read", "orders:read"]).await;
    let mut command = tokio::process::Command::new("node");
    command
        .arg(&script)
        .env("OPS_URL", format!("http://{}", app.addr))
        .env("OPS_TOKEN", &viewer)
        .env("OPS_WRITE_TOKEN", ADMIN_TOKEN)
        .env("OPS_ORDER", "seen-in-browser")
        .env("OPS_SUBSCRIPTION", subscription["id"].as_str().unwrap())
        .env("OPS_PROJECTIONS", projections)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let run = tokio::time::timeout(Duration::from_secs(120), command.output())
        .await
        .expect("the browser checks finish within 2 minutes")
        .expect("node runs (install Node.js 20 or newer)");
    assert!(
        run.status.success(),
        "the browser checks failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_prometheus_naming_with_real_histograms() {
    let app = app(Backend::Sqlite).await;
    stock(&app, "MUG-BLUE", 10).await;
    app.place_order("metrics-1").await;
    let bad = client_for("olk_not-a-token-this-server-knows")
        .get(app.url("/v1/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::UNAUTHORIZED);
    app.projections_caught_up().await;
    let text = app.get("/metrics").await.text().await.unwrap();

    for needed in [
        r#"orderlog_commands_total{kind="POST /v1/orders",outcome="accepted"}"#,
        r#"orderlog_command_duration_seconds_bucket{kind="POST /v1/orders",le="0.005"}"#,
        r#"orderlog_command_duration_seconds_count{kind="POST /v1/orders"}"#,
        r#"orderlog_events_appended_total{type="order.created"}"#,
        r#"orderlog_projection_lag_events{projection="order_summary"}"#,
        r#"orderlog_projection_lag_seconds{projection="inventory"}"#,
        r#"orderlog_auth_failures_total{reason="unknown"}"#,
    ] {
        assert!(text.contains(needed), "{needed} missing from:\n{text}");
    }
    assert!(!text.contains("quantile="), "histograms, never summaries");
    assert!(!text.contains("metrics-1"), "no per-order label");
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split_whitespace().skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        assert!(name.starts_with("orderlog_"), "{line}");
        match kind {
            "counter" => assert!(name.ends_with("_total"), "{line}"),
            "histogram" => assert!(name.ends_with("_seconds"), "{line}"),
            "gauge" => assert!(!name.ends_with("_total"), "{line}"),
            other => panic!("unexpected metric type {other}: {line}"),
        }
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_assets_come_from_the_binary_and_need_no_token() {
    let app = spawn_app(Backend::Sqlite).await;
    let anonymous = reqwest::Client::new();
    for (path, content_type, holds) in [
        ("/ops", "text/html", "/ops/ops.js"),
        ("/ops/ops.js", "text/javascript", "/v1/ops/stream"),
        ("/ops/ops.css", "text/css", "--bg"),
        ("/ops/vendor/uPlot.iife.min.js", "text/javascript", "uPlot"),
        ("/ops/vendor/uPlot.min.css", "text/css", ".uplot"),
    ] {
        let r = anonymous.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let headers = r.headers().clone();
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with(content_type),
            "{path}: {headers:?}"
        );
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'self'"),
            "{path}: nothing from elsewhere"
        );
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert!(r.text().await.unwrap().contains(holds), "{path}");
    }
    let data = anonymous
        .get(app.url("/v1/ops/stats"))
        .send()
        .await
        .unwrap();
    expect_error(data, StatusCode::UNAUTHORIZED, "unauthenticated").await;
    app.stop().await;
}
