//! Deliveries, end to end: the real server sends to real receivers on 127.0.0.1 (and to
//! the local NATS server), on SQLite and on PostgreSQL.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::helpers::{
    eventually, expect_error, expect_status, fresh_database, spawn_app_on, Backend, TestApp,
};
use crate::on_both_backends;
use crate::receiver::{Received, Receiver};

/// Short retry delays, a breaker that stays out of the way, unless a test says.
fn fast_retries(settings: &mut orderlog::config::Settings) {
    settings.deliveries.retry_schedule = vec![Duration::from_millis(50); 3];
    settings.deliveries.breaker_failures = 10_000;
    settings.deliveries.webhook_timeout = Duration::from_secs(5);
}

/// A subscription whose window starts at its minimum: every failure then counts toward
/// the retry schedule. With a wider one, the first failures only narrow the window, and
/// a receiver's 503 is sent again at once (`small_receivers`), so the tests that count
/// attempts to a dead letter send one at a time.
fn one_at_a_time() -> Value {
    json!({"max_in_flight": 1})
}

async fn app(backend: Backend) -> TestApp {
    spawn_app_on(&fresh_database(backend).await, fast_retries).await
}

pub(crate) async fn subscribe(app: &TestApp, url: &str, types: &[&str], extra: Value) -> Value {
    let mut body = json!({ "kind": "webhook", "url": url, "event_types": types });
    if let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) {
        body.extend(extra.clone());
    }
    expect_status(
        app.post("/v1/subscriptions", &body).await,
        StatusCode::CREATED,
    )
    .await
}

async fn subscription(app: &TestApp, id: &str) -> Value {
    expect_status(
        app.get(&format!("/v1/subscriptions/{id}")).await,
        StatusCode::OK,
    )
    .await
}

/// Polls the subscription until `done` holds.
pub(crate) async fn wait_for_subscription(
    app: &TestApp,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, Duration::from_secs(20), || async {
        let s = subscription(app, id).await;
        if done(&s) {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await
}

async fn set_state(app: &TestApp, id: &str, state: &str) -> reqwest::Response {
    app.client
        .patch(app.url(&format!("/v1/subscriptions/{id}")))
        .json(&json!({ "state": state }))
        .send()
        .await
        .unwrap()
}

async fn cancel(app: &TestApp, order_id: &str) {
    let r = app
        .post(
            &format!("/v1/orders/{order_id}/cancel"),
            &json!({"reason": "changed my mind"}),
        )
        .await;
    expect_status(r, StatusCode::OK).await;
}

fn ids(received: &[Received]) -> Vec<String> {
    received.iter().map(|r| r.webhook_id().to_owned()).collect()
}

/// Verifies a Standard Webhooks signature the way the specification describes it,
/// without any of the server's code: HMAC-SHA256 over `id.timestamp.body`, keyed with
/// the base64 after `whsec_`, compared with each `v1,` signature in the header.
pub(crate) fn verify(secret: &str, received: &Received) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let signed = format!(
        "{}.{}.{}",
        received.header("webhook-id"),
        received.header("webhook-timestamp"),
        received.raw
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(signed.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    received
        .header("webhook-signature")
        .split(' ')
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|s| s == expected)
}

async fn a_receiver_failing_three_times_gets_the_event_on_attempt_four(backend: Backend) {
    let app = app(backend).await;
    let receiver = Receiver::start(200).await;
    receiver.answer_next(&[503, 503, 503]);
    let sub = subscribe(&app, &receiver.url(), &["order.created"], json!({})).await;
    app.place_order("ord-1").await;

    let received = receiver
        .wait_until(Duration::from_secs(10), "a delivery", |r| {
            r.iter().any(|r| r.status == 200)
        })
        .await;
    assert_eq!(
        received.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![503, 503, 503, 200]
    );
    let event_id = app.event_ids("ord-1", |t| t == "order.created").await[0].clone();
    assert!(received.iter().all(|r| r.webhook_id() == event_id));

    let id = sub["id"].as_str().unwrap();
    // The receiver has answered; the worker records that with the queue's change.
    let s = wait_for_subscription(&app, id, "an empty queue", |s| s["queue"]["waiting"] == 0).await;
    assert_eq!(s["queue"]["dead"], 0);
    let attempts = expect_status(
        app.get(&format!(
            "/v1/subscriptions/{id}/attempts?event_id={event_id}"
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    let outcomes: Vec<_> = attempts["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["outcome"].as_str().unwrap().to_owned(),
                a["status"].clone(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        vec![
            ("failed".to_owned(), json!(503)),
            ("failed".to_owned(), json!(503)),
            ("failed".to_owned(), json!(503)),
            ("delivered".to_owned(), json!(200)),
        ]
    );
}

async fn signatures_verify_by_the_specification_and_across_a_rotation(backend: Backend) {
    let app = app(backend).await;
    let receiver = Receiver::start(200).await;
    let sub = subscribe(&app, &receiver.url(), &["order.*"], json!({})).await;
    let id = sub["id"].as_str().unwrap().to_owned();
    let secret = sub["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"));
    assert!(
        subscription(&app, &id).await.get("secret").is_none(),
        "a secret is shown only once"
    );

    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = app
        .client
        .post(app.url("/v1/orders"))
        .header("traceparent", traceparent)
        .json(&crate::helpers::fixture("place_order.json", "ord-sig"))
        .send()
        .await
        .unwrap();
    expect_status(response, StatusCode::CREATED).await;
    let first = receiver
        .wait_until(Duration::from_secs(10), "a delivery", |r| !r.is_empty())
        .await
        .remove(0);
    assert!(
        verify(&secret, &first),
        "signature: {}",
        first.header("webhook-signature")
    );
    assert_eq!(first.header("content-type"), "application/json");
    assert_eq!(first.header("traceparent"), traceparent);
    let sent_at: i64 = first.header("webhook-timestamp").parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - sent_at).abs() < 300);
    assert_eq!(first.body["type"], "order.created");
    assert_eq!(first.body["aggregate_id"], "ord-sig");
    assert_eq!(first.body["data"]["order_id"], "ord-sig");

    let rotated = expect_status(
        app.post_empty(&format!("/v1/subscriptions/{id}/secret/rotate"))
            .await,
        StatusCode::OK,
    )
    .await;
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    cancel(&app, "ord-sig").await;
    let second = receiver
        .wait_until(Duration::from_secs(10), "a second delivery", |r| {
            r.len() >= 2
        })
        .await
        .remove(1);
    assert!(verify(&new_secret, &second), "the new secret signs");
    assert!(
        verify(&secret, &second),
        "the old one signs during the overlap"
    );
    let mut tampered = second.clone();
    tampered.raw = tampered.raw.replace("ord-sig", "ord-evil");
    assert!(!verify(&new_secret, &tampered), "a changed body fails");
}

async fn dead_letters_are_kept_and_a_retry_delivers_them_in_order(backend: Backend) {
    let app = app(backend).await;
    let receiver = Receiver::start(503).await;
    let sub = subscribe(
        &app,
        &receiver.url(),
        &["order.*", "payment.*"],
        one_at_a_time(),
    )
    .await;
    let id = sub["id"].as_str().unwrap().to_owned();
    app.place_order("ord-a").await;
    app.paid_order("ord-b").await;
    let expected_a = app.event_ids("ord-a", |_| true).await;
    let expected_b = app.event_ids("ord-b", |_| true).await;
    let total = expected_a.len() + expected_b.len();

    // Each order's first event dies after 1 + 3 attempts; the rest wait behind it.
    let s = wait_for_subscription(&app, &id, "two dead letters", |s| s["queue"]["dead"] == 2).await;
    assert_eq!(s["queue"]["waiting"], total as i64 - 2);
    let letters = expect_status(
        app.get(&format!("/v1/subscriptions/{id}/dead-letters"))
            .await,
        StatusCode::OK,
    )
    .await;
    let letters = letters["dead_letters"].as_array().unwrap().clone();
    assert_eq!(letters.len(), 2);
    let dead = &letters[0]["event_id"];
    let detail = expect_status(
        app.get(&format!(
            "/v1/subscriptions/{id}/dead-letters/{}",
            dead.as_str().unwrap()
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    let history = detail["history"].as_array().unwrap();
    assert_eq!(history.len(), 4, "{detail}");
    assert!(history
        .iter()
        .all(|a| a["status"] == 503 && a["latency_ms"].is_i64()));
    assert_eq!(detail["message"]["type"], "order.created");

    receiver.answer_always(200);
    let retried = expect_status(
        app.post_empty(&format!("/v1/subscriptions/{id}/dead-letters/retry"))
            .await,
        StatusCode::ACCEPTED,
    )
    .await;
    assert_eq!(retried["retried"], 2);
    let delivered = receiver
        .wait_until(Duration::from_secs(10), "every event delivered", |r| {
            r.iter().filter(|r| r.status == 200).count() >= total
        })
        .await;
    let delivered: Vec<_> = delivered.into_iter().filter(|r| r.status == 200).collect();
    let of = |order: &str| -> Vec<String> {
        delivered
            .iter()
            .filter(|r| r.body["aggregate_id"] == order)
            .map(|r| r.webhook_id().to_owned())
            .collect()
    };
    assert_eq!(of("ord-a"), expected_a, "order a in log order");
    assert_eq!(of("ord-b"), expected_b, "order b in log order");
    let s = wait_for_subscription(&app, &id, "an empty queue", |s| {
        s["queue"]["waiting"] == 0 && s["queue"]["dead"] == 0
    })
    .await;
    assert_eq!(s["breaker"], "closed");
}

async fn a_slow_receiver_does_not_slow_a_fast_one(backend: Backend) {
    let app = app(backend).await;
    let slow = Receiver::start(200).await;
    slow.delay_each(Duration::from_secs(2));
    let fast = Receiver::start(200).await;
    subscribe(
        &app,
        &slow.url(),
        &["order.created"],
        json!({"max_in_flight": 2}),
    )
    .await;
    subscribe(&app, &fast.url(), &["order.created"], json!({})).await;

    let started = Instant::now();
    for i in 0..20 {
        app.place_order(&format!("ord-{i}")).await;
    }
    fast.wait_until(Duration::from_secs(10), "20 fast deliveries", |r| {
        r.len() >= 20
    })
    .await;
    let fast_took = started.elapsed();
    let slow_got = slow.received().len();
    println!(
        "{backend:?}: fast receiver got 20 events in {fast_took:?}; the 2 s receiver beside it had {slow_got}"
    );
    // The slow one needs 20 s for these (2 at a time, 2 s each); the fast one must
    // not be held to that pace.
    assert!(
        fast_took < Duration::from_secs(4),
        "fast took {fast_took:?}"
    );
    assert!(slow_got < 20);
}

async fn each_order_stays_in_order_under_retries(backend: Backend) {
    let app = app(backend).await;
    let receiver = Receiver::start(200).await;
    // Every third request fails at first.
    receiver.answer_next(&[200, 200, 503, 200, 503, 200, 200, 503, 503, 200, 503]);
    subscribe(&app, &receiver.url(), &["*"], json!({"max_in_flight": 8})).await;
    let orders: Vec<String> = (0..6).map(|i| format!("ord-{i}")).collect();
    for order in &orders {
        app.paid_order(order).await;
        cancel(&app, order).await;
    }
    let mut expected = HashMap::new();
    for order in &orders {
        expected.insert(order.clone(), app.event_ids(order, |_| true).await);
    }
    let total: usize = expected.values().map(Vec::len).sum();
    let delivered = receiver
        .wait_until(Duration::from_secs(15), "every order event", |r| {
            r.iter()
                .filter(|r| r.status == 200 && r.body["aggregate_type"] == "order")
                .count()
                >= total
        })
        .await;
    for order in &orders {
        let got: Vec<String> = delivered
            .iter()
            .filter(|r| r.status == 200 && r.body["aggregate_id"] == order.as_str())
            .map(|r| r.webhook_id().to_owned())
            .collect();
        assert_eq!(&got, &expected[order], "{order} out of order");
    }
}

async fn a_restart_mid_delivery_loses_nothing(backend: Backend) {
    let url = fresh_database(backend).await;
    let app = spawn_app_on(&url, fast_retries).await;
    let receiver = Receiver::start(200).await;
    receiver.delay_each(Duration::from_millis(30));
    subscribe(
        &app,
        &receiver.url(),
        &["order.created"],
        json!({"max_in_flight": 1}),
    )
    .await;
    let orders: Vec<String> = (0..30).map(|i| format!("ord-{i}")).collect();
    for order in &orders {
        app.place_order(order).await;
    }
    receiver
        .wait_until(Duration::from_secs(10), "the first deliveries", |r| {
            r.len() >= 5
        })
        .await;
    app.stop().await;
    let before = receiver.received().len();
    assert!(
        before < 30,
        "the restart must come mid-delivery ({before} done)"
    );

    let app = spawn_app_on(&url, fast_retries).await;
    let received = receiver
        .wait_until(
            Duration::from_secs(20),
            "every event after the restart",
            |r| {
                r.iter()
                    .map(|r| r.webhook_id())
                    .collect::<HashSet<_>>()
                    .len()
                    >= 30
            },
        )
        .await;
    // A receiver deduping on webhook-id applies each event exactly once.
    let applied: HashSet<String> = ids(&received).into_iter().collect();
    let mut expected = HashSet::new();
    for order in &orders {
        expected.extend(app.event_ids(order, |t| t == "order.created").await);
    }
    assert_eq!(applied, expected);
}

async fn a_paused_subscription_accumulates_and_catches_up_on_resume(backend: Backend) {
    let app = app(backend).await;
    let receiver = Receiver::start(200).await;
    let sub = subscribe(&app, &receiver.url(), &["order.created"], json!({})).await;
    let id = sub["id"].as_str().unwrap().to_owned();
    let paused = set_state(&app, &id, "paused").await;
    assert_eq!(
        expect_status(paused, StatusCode::OK).await["state"],
        "paused"
    );
    for i in 0..5 {
        app.place_order(&format!("ord-{i}")).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.received().is_empty(), "paused delivers nothing");
    let s = subscription(&app, &id).await;
    assert!(s["lag"]["events"].as_i64().unwrap() >= 5, "{s}");

    let resumed = set_state(&app, &id, "active").await;
    expect_status(resumed, StatusCode::OK).await;
    receiver
        .wait_until(Duration::from_secs(10), "the backlog", |r| r.len() >= 5)
        .await;
    wait_for_subscription(&app, &id, "no lag", |s| s["lag"]["events"] == 0).await;
}

async fn a_410_disables_the_subscription_and_a_resume_sends_again(backend: Backend) {
    let app = app(backend).await;
    let receiver = Receiver::start(200).await;
    receiver.answer_next(&[410]);
    let sub = subscribe(&app, &receiver.url(), &["order.created"], json!({})).await;
    let id = sub["id"].as_str().unwrap().to_owned();
    app.place_order("ord-gone").await;
    let s = wait_for_subscription(&app, &id, "disabled", |s| s["state"] == "disabled").await;
    assert!(s["state_reason"].as_str().unwrap().contains("410"));
    let resumed = set_state(&app, &id, "active").await;
    expect_status(resumed, StatusCode::OK).await;
    let received = receiver
        .wait_until(Duration::from_secs(10), "the event again", |r| {
            r.iter().any(|r| r.status == 200)
        })
        .await;
    assert_eq!(received[0].webhook_id(), received[1].webhook_id());
}

async fn an_open_breaker_holds_events_and_closes_when_the_receiver_recovers(backend: Backend) {
    let app = spawn_app_on(&fresh_database(backend).await, |s| {
        fast_retries(s);
        s.deliveries.breaker_failures = 3;
        s.deliveries.breaker_cooldown = Duration::from_millis(300);
        s.deliveries.retry_schedule = vec![Duration::from_millis(20); 20];
    })
    .await;
    let receiver = Receiver::start(503).await;
    let sub = subscribe(&app, &receiver.url(), &["order.created"], json!({})).await;
    let id = sub["id"].as_str().unwrap().to_owned();
    for i in 0..5 {
        app.place_order(&format!("ord-{i}")).await;
    }
    wait_for_subscription(&app, &id, "an open breaker", |s| s["breaker"] == "open").await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(&format!(
            "orderlog_subscription_breaker_state{{subscription=\"{id}\"}}"
        )),
        "{metrics}"
    );
    // Open, it sends at most a probe per cooldown, where the retry schedule alone
    // would send five messages every 20 ms. (Before it opened, the window had shrunk
    // to one message in flight: the breaker counts failures only from there.)
    let at_open = receiver.received().len();
    tokio::time::sleep(Duration::from_millis(250)).await;
    let while_open = receiver.received().len() - at_open;
    assert!(while_open <= 2, "{while_open} requests while open");
    let s = subscription(&app, &id).await;
    assert_eq!(s["window"], 1, "{s}");

    receiver.answer_always(200);
    receiver
        .wait_until(Duration::from_secs(10), "all five after recovery", |r| {
            r.iter()
                .filter(|r| r.status == 200)
                .map(|r| r.webhook_id())
                .collect::<HashSet<_>>()
                .len()
                >= 5
        })
        .await;
    let s = wait_for_subscription(&app, &id, "a closed breaker", |s| {
        s["breaker"] == "closed" && s["queue"]["waiting"] == 0
    })
    .await;
    assert_eq!(s["queue"]["dead"], 0, "held, not dropped: {s}");
}

async fn a_rewind_replays_history_with_the_same_ids(backend: Backend) {
    let app = app(backend).await;
    app.place_order("ord-old").await;
    // "Now" on PostgreSQL is below every transaction still running (a start never
    // skips, so it may include what committed a moment before): let them all finish.
    app.projections_caught_up().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let receiver = Receiver::start(200).await;
    // A new subscription starts from now: history is not sent…
    let sub = subscribe(&app, &receiver.url(), &["order.created"], json!({})).await;
    let id = sub["id"].as_str().unwrap().to_owned();
    app.place_order("ord-new").await;
    receiver
        .wait_until(Duration::from_secs(10), "the new order", |r| !r.is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(receiver.received().len(), 1);
    // …until the operator rewinds to the start.
    let rewound = app
        .post(
            &format!("/v1/subscriptions/{id}/rewind"),
            &json!({"position": 1}),
        )
        .await;
    expect_status(rewound, StatusCode::OK).await;
    let received = receiver
        .wait_until(Duration::from_secs(10), "the replay", |r| r.len() >= 3)
        .await;
    let old = app.event_ids("ord-old", |t| t == "order.created").await;
    let new = app.event_ids("ord-new", |t| t == "order.created").await;
    // Different orders go in parallel: only each order's own events keep their order.
    let mut replayed = ids(&received)[1..].to_vec();
    replayed.sort();
    let mut expected = vec![old[0].clone(), new[0].clone()];
    expected.sort();
    assert_eq!(replayed, expected);

    // And one created from a position replays from there.
    let replay = Receiver::start(200).await;
    subscribe(
        &app,
        &replay.url(),
        &["order.created"],
        json!({"from_position": 1}),
    )
    .await;
    let got = replay
        .wait_until(Duration::from_secs(10), "history", |r| r.len() >= 2)
        .await;
    let mut history = ids(&got);
    history.sort();
    assert_eq!(history, expected);
}

async fn bad_subscriptions_are_refused_with_their_field(backend: Backend) {
    let app = app(backend).await;
    for (body, field) in [
        (
            json!({"kind": "email", "url": "http://x", "event_types": ["*"]}),
            "kind",
        ),
        (json!({"kind": "webhook", "event_types": ["*"]}), "url"),
        (
            json!({"kind": "webhook", "url": "ftp://x", "event_types": ["*"]}),
            "url",
        ),
        (
            json!({"kind": "webhook", "url": "http://x", "event_types": ["order.craeted"]}),
            "event_types",
        ),
        (
            json!({"kind": "webhook", "url": "http://x", "event_types": []}),
            "event_types",
        ),
        (
            json!({"kind": "webhook", "url": "http://x", "event_types": ["*"], "max_in_flight": 0}),
            "max_in_flight",
        ),
        (
            json!({"kind": "nats", "subject": "orders.>", "event_types": ["*"]}),
            "subject",
        ),
        (
            json!({"kind": "webhook", "url": "http://x", "event_types": ["*"], "from_position": 1, "from_time": "2026-01-01T00:00:00Z"}),
            "from_time",
        ),
    ] {
        let error = expect_error(
            app.post("/v1/subscriptions", &body).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        )
        .await;
        assert_eq!(error["field"], field, "{body}");
    }
    expect_error(
        app.get("/v1/subscriptions/00000000-0000-0000-0000-000000000000")
            .await,
        StatusCode::NOT_FOUND,
        "subscription_not_found",
    )
    .await;
    let sub = subscribe(&app, "http://127.0.0.1:9/hook", &["*"], json!({})).await;
    let id = sub["id"].as_str().unwrap();
    let listed = expect_status(app.get("/v1/subscriptions").await, StatusCode::OK).await;
    assert_eq!(listed["subscriptions"].as_array().unwrap().len(), 1);
    expect_error(
        app.post_empty(&format!(
            "/v1/subscriptions/{id}/dead-letters/00000000-0000-0000-0000-000000000000/retry"
        ))
        .await,
        StatusCode::NOT_FOUND,
        "dead_letter_not_found",
    )
    .await;
    let deleted = app
        .client
        .delete(app.url(&format!("/v1/subscriptions/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    expect_error(
        app.get(&format!("/v1/subscriptions/{id}")).await,
        StatusCode::NOT_FOUND,
        "subscription_not_found",
    )
    .await;
}

async fn nats_subscriptions_publish_to_jetstream_with_the_event_id(backend: Backend) {
    let app = app(backend).await;
    let prefix = format!("orderlog_test_{}", uuid::Uuid::new_v4().simple());
    let sub = expect_status(
        app.post(
            "/v1/subscriptions",
            &json!({"kind": "nats", "subject": prefix, "event_types": ["order.created"]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert!(sub.get("secret").is_none());
    app.place_order("ord-nats").await;
    let event_id = app.event_ids("ord-nats", |t| t == "order.created").await[0].clone();

    let client = async_nats::connect(crate::helpers::nats_url())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "NATS is not reachable at {}: {e}. The suite never skips it: run \
                 `scripts/test`, which starts one when none answers.",
                crate::helpers::nats_url()
            )
        });
    let jetstream = async_nats::jetstream::new(client);
    let stream_name = prefix.to_uppercase();
    let what = format!("a message in stream {stream_name}");
    let mut stream = eventually(&what, Duration::from_secs(10), || async {
        match jetstream.get_stream(&stream_name).await {
            Ok(stream) if stream.cached_info().state.messages >= 1 => Ok(stream),
            Ok(_) => Err("an empty stream".to_owned()),
            Err(e) => Err(format!("{e:?}")),
        }
    })
    .await;
    let message = stream.get_raw_message(1).await.unwrap();
    assert_eq!(message.subject.as_str(), format!("{prefix}.order.created"));
    let headers = message.headers;
    assert_eq!(
        headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str()),
        Some(event_id.as_str())
    );
    assert!(headers.get("traceparent").is_some());
    let body: Value = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(body["id"], event_id.as_str());
    assert_eq!(stream.info().await.unwrap().state.messages, 1);
    jetstream.delete_stream(&stream_name).await.unwrap();
}

async fn the_live_stream_sends_the_log_and_resumes_from_last_event_id(backend: Backend) {
    use futures::StreamExt;

    let app = app(backend).await;
    let response = app
        .client
        .get(app.url("/v1/events/stream?types=order.created,order.cancelled"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    app.place_order("ord-live").await;
    cancel(&app, "ord-live").await;

    let mut body = response.bytes_stream();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while text.matches("\n\n").filter(|_| true).count() < 2 || !text.contains("order.cancelled") {
        assert!(Instant::now() < deadline, "stream so far: {text}");
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let events: Vec<HashMap<String, String>> = text
        .split("\n\n")
        .filter(|block| block.contains("data:"))
        .map(|block| {
            block
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.to_owned(), v.trim_start().to_owned()))
                .collect()
        })
        .collect();
    assert_eq!(events[0]["event"], "order.created");
    assert_eq!(events[1]["event"], "order.cancelled");
    let data: Value = serde_json::from_str(&events[0]["data"]).unwrap();
    assert_eq!(data["aggregate_id"], "ord-live");

    // Resuming after the first event sends the second next.
    let resumed = app
        .client
        .get(app.url("/v1/events/stream?types=order.*"))
        .header("Last-Event-ID", &events[0]["id"])
        .send()
        .await
        .unwrap();
    let mut body = resumed.bytes_stream();
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("an event in time")
            .expect("the stream goes on")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: order.cancelled"), "{text}");
    assert!(text.contains(&format!("id: {}", events[1]["id"])), "{text}");

    let bad = app
        .client
        .get(app.url("/v1/events/stream"))
        .header("Last-Event-ID", "yesterday")
        .send()
        .await
        .unwrap();
    expect_error(bad, StatusCode::BAD_REQUEST, "invalid_cursor").await;
}

/// Two instances on one PostgreSQL: one delivers each subscription (no duplicates),
/// and when it stops the other takes over from the stored cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_deliver_each_event_once_and_one_takes_over_from_the_other() {
    let url = fresh_database(Backend::Postgres).await;
    let first = spawn_app_on(&url, fast_retries).await;
    let second = spawn_app_on(&url, fast_retries).await;
    let receiver = Receiver::start(200).await;
    subscribe(&first, &receiver.url(), &["order.created"], json!({})).await;
    for i in 0..10 {
        first.place_order(&format!("ord-a{i}")).await;
        second.place_order(&format!("ord-b{i}")).await;
    }
    receiver
        .wait_until(Duration::from_secs(15), "20 deliveries", |r| r.len() >= 20)
        .await;
    // The second instance has found the subscription by now and stands by.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let received = receiver.received();
    let distinct: HashSet<String> = ids(&received).into_iter().collect();
    assert_eq!(
        (received.len(), distinct.len()),
        (20, 20),
        "each event once"
    );

    first.stop().await;
    for i in 0..5 {
        second.place_order(&format!("ord-c{i}")).await;
    }
    let received = receiver
        .wait_until(Duration::from_secs(20), "the takeover", |r| r.len() >= 25)
        .await;
    let distinct: HashSet<String> = ids(&received).into_iter().collect();
    assert_eq!(distinct.len(), 25);
}

async fn retry_after_is_honoured(backend: Backend) {
    let app = app(backend).await;
    let receiver = Receiver::start(200).await;
    receiver.answer_next_retry_after(429, 1);
    subscribe(&app, &receiver.url(), &["order.created"], json!({})).await;
    app.place_order("ord-429").await;
    let received = receiver
        .wait_until(Duration::from_secs(10), "the retry", |r| r.len() >= 2)
        .await;
    let waited = received[1].at - received[0].at;
    // The schedule says 50 ms; the receiver said a second.
    assert!(
        waited >= Duration::from_millis(950),
        "retried after {waited:?}"
    );
    assert_eq!(received[1].status, 200);
}

async fn discarding_a_dead_letter_lets_its_order_go_on(backend: Backend) {
    let app = app(backend).await;
    let receiver = Receiver::start(503).await;
    let sub = subscribe(&app, &receiver.url(), &["order.*"], one_at_a_time()).await;
    let id = sub["id"].as_str().unwrap().to_owned();
    app.place_order("ord-x").await;
    wait_for_subscription(&app, &id, "a dead letter", |s| s["queue"]["dead"] == 1).await;
    cancel(&app, "ord-x").await;
    let s = wait_for_subscription(&app, &id, "the cancellation queued behind", |s| {
        s["queue"]["waiting"] == 1
    })
    .await;
    assert_eq!(s["queue"]["dead"], 1);

    receiver.answer_always(200);
    let created = app.event_ids("ord-x", |t| t == "order.created").await;
    let gone = app
        .client
        .delete(app.url(&format!(
            "/v1/subscriptions/{id}/dead-letters/{}",
            created[0]
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), StatusCode::NO_CONTENT);
    let delivered = receiver
        .wait_until(Duration::from_secs(10), "the cancellation", |r| {
            r.iter().any(|r| r.status == 200)
        })
        .await;
    let delivered: Vec<_> = delivered.iter().filter(|r| r.status == 200).collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].body["type"], "order.cancelled");
    let s =
        wait_for_subscription(&app, &id, "an empty queue", |s| s["queue"]["waiting"] == 0).await;
    assert_eq!(s["queue"]["dead"], 0);
    // The history stays: the discarded event's attempts are still on record.
    let attempts = expect_status(
        app.get(&format!(
            "/v1/subscriptions/{id}/attempts?event_id={}",
            created[0]
        ))
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(attempts["attempts"].as_array().unwrap().len(), 4);
}

async fn a_rewind_to_a_time_replays_what_was_recorded_since(backend: Backend) {
    let app = app(backend).await;
    app.place_order("ord-before").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.place_order("ord-after").await;
    let receiver = Receiver::start(200).await;
    let sub = subscribe(&app, &receiver.url(), &["order.created"], json!({})).await;
    let id = sub["id"].as_str().unwrap().to_owned();
    let rewound = app
        .post(
            &format!("/v1/subscriptions/{id}/rewind"),
            &json!({"time": since}),
        )
        .await;
    expect_status(rewound, StatusCode::OK).await;
    let received = receiver
        .wait_until(Duration::from_secs(10), "the replay", |r| !r.is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(received[0].body["aggregate_id"], "ord-after");
    let bad = app
        .post(
            &format!("/v1/subscriptions/{id}/rewind"),
            &json!({"time": "yesterday"}),
        )
        .await;
    expect_error(bad, StatusCode::UNPROCESSABLE_ENTITY, "invalid_field").await;
}

async fn old_attempts_are_swept_but_a_dead_letter_keeps_its_history(backend: Backend) {
    let url = fresh_database(backend).await;
    let app = spawn_app_on(&url, fast_retries).await;
    let good = Receiver::start(200).await;
    let dead = Receiver::start(503).await;
    let delivered = subscribe(&app, &good.url(), &["order.created"], json!({})).await;
    let failing = subscribe(&app, &dead.url(), &["order.created"], one_at_a_time()).await;
    let (delivered, failing) = (
        delivered["id"].as_str().unwrap().to_owned(),
        failing["id"].as_str().unwrap().to_owned(),
    );
    app.place_order("ord-r").await;
    let event = app.event_ids("ord-r", |t| t == "order.created").await[0].clone();
    wait_for_subscription(&app, &failing, "a dead letter", |s| s["queue"]["dead"] == 1).await;
    wait_for_subscription(&app, &delivered, "the delivery", |s| {
        s["lag"]["events"] == 0
    })
    .await;
    app.stop().await;

    // A restart with a retention shorter than the attempts' age sweeps at start.
    let app = spawn_app_on(&url, |s| {
        fast_retries(s);
        s.deliveries.attempt_retention = Duration::from_millis(1);
    })
    .await;
    let attempts = |id: String| {
        let app = &app;
        let event = event.clone();
        async move {
            let body = expect_status(
                app.get(&format!("/v1/subscriptions/{id}/attempts?event_id={event}"))
                    .await,
                StatusCode::OK,
            )
            .await;
            body["attempts"].as_array().unwrap().len()
        }
    };
    eventually(
        "the old attempts to be swept",
        Duration::from_secs(10),
        || async {
            match attempts(delivered.clone()).await {
                0 => Ok(()),
                n => Err(format!("{n} attempts kept")),
            }
        },
    )
    .await;
    assert_eq!(
        attempts(failing.clone()).await,
        4,
        "a dead letter keeps its history"
    );
}

async fn a_subscription_from_a_time_replays_what_was_recorded_since(backend: Backend) {
    let app = app(backend).await;
    app.place_order("ord-early").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let since = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.place_order("ord-late").await;
    let receiver = Receiver::start(200).await;
    subscribe(
        &app,
        &receiver.url(),
        &["order.created"],
        json!({ "from_time": since }),
    )
    .await;
    let received = receiver
        .wait_until(Duration::from_secs(10), "history since then", |r| {
            !r.is_empty()
        })
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(received[0].body["aggregate_id"], "ord-late");
}

on_both_backends!(
    old_attempts_are_swept_but_a_dead_letter_keeps_its_history,
    a_subscription_from_a_time_replays_what_was_recorded_since,
    retry_after_is_honoured,
    discarding_a_dead_letter_lets_its_order_go_on,
    a_rewind_to_a_time_replays_what_was_recorded_since,
    a_receiver_failing_three_times_gets_the_event_on_attempt_four,
    signatures_verify_by_the_specification_and_across_a_rotation,
    dead_letters_are_kept_and_a_retry_delivers_them_in_order,
    a_slow_receiver_does_not_slow_a_fast_one,
    each_order_stays_in_order_under_retries,
    a_restart_mid_delivery_loses_nothing,
    a_paused_subscription_accumulates_and_catches_up_on_resume,
    a_410_disables_the_subscription_and_a_resume_sends_again,
    an_open_breaker_holds_events_and_closes_when_the_receiver_recovers,
    a_rewind_replays_history_with_the_same_ids,
    bad_subscriptions_are_refused_with_their_field,
    nats_subscriptions_publish_to_jetstream_with_the_event_id,
    the_live_stream_sends_the_log_and_resumes_from_last_event_id,
);
