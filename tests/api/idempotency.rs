//! `Idempotency-Key`: a retry gets the first answer and writes nothing new.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;
use orderlog::store::Database;

on_both_backends!(
    a_retry_with_the_same_key_replays_the_first_response_and_appends_nothing,
    a_retry_of_a_refused_command_replays_the_refusal,
    the_same_key_with_another_body_is_refused,
    keys_survive_a_restart,
    an_answer_lost_in_a_crash_is_never_run_again_and_says_so,
    keys_expire_after_their_retention,
    a_malformed_key_is_refused,
    a_replay_keeps_the_first_answers_content_type,
    the_store_keeps_each_answers_content_type,
    a_duplicate_arriving_while_the_answer_is_kept_waits_for_it,
    one_key_sent_to_two_servers_at_once_places_one_order,
    a_placed_orders_answer_commits_with_its_claim,
);

async fn a_retry_with_the_same_key_replays_the_first_response_and_appends_nothing(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    // No order_id: without the key, a retry would create a second order.
    let mut body = fixture("place_order.json", "unused");
    body.as_object_mut().unwrap().remove("order_id");

    let first = app.post_with_key("/v1/orders", "key-1", &body).await;
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first = expect_status(first, StatusCode::CREATED).await;
    let order_id = first["order_id"].as_str().unwrap();

    let second = app.post_with_key("/v1/orders", "key-1", &body).await;
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    let second = expect_status(second, StatusCode::CREATED).await;
    assert_eq!(first, second, "the retry gets the original body");

    let events = app.events(order_id).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["metadata"]["idempotency_key"], "key-1");

    // Each step of the lifecycle is covered the same way.
    let pay = json!({"amount": 5000});
    let path = format!("/v1/orders/{order_id}/payments");
    let a = expect_status(
        app.post_with_key(&path, "key-2", &pay).await,
        StatusCode::CREATED,
    )
    .await;
    let b = expect_status(
        app.post_with_key(&path, "key-2", &pay).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(a, b);
    assert_eq!(app.events(order_id).await.len(), 2);
}

async fn a_retry_of_a_refused_command_replays_the_refusal(backend: Backend) {
    let app = spawn_app(backend).await;
    app.place_order("ord-r").await;
    let wrong = json!({"amount": 1});
    let path = "/v1/orders/ord-r/payments";
    expect_error(
        app.post_with_key(path, "key-w", &wrong).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "amount_mismatch",
    )
    .await;
    let again = app.post_with_key(path, "key-w", &wrong).await;
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    expect_error(again, StatusCode::UNPROCESSABLE_ENTITY, "amount_mismatch").await;
}

async fn the_same_key_with_another_body_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = fixture("place_order.json", "ord-k1");
    expect_status(
        app.post_with_key("/v1/orders", "key-x", &body).await,
        StatusCode::CREATED,
    )
    .await;

    let other = fixture("place_order.json", "ord-k2");
    let r = app.post_with_key("/v1/orders", "key-x", &other).await;
    expect_error(
        r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    let r = app.get("/v1/orders/ord-k2").await;
    expect_error(r, StatusCode::NOT_FOUND, "order_not_found").await;

    // Another endpoint is another request too.
    let r = app
        .post_with_key("/v1/orders/ord-k1/cancel", "key-x", &body)
        .await;
    expect_error(
        r,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
}

async fn keys_survive_a_restart(backend: Backend) {
    let app = spawn_app(backend).await;
    let url = app.database_url.clone();
    let mut body = fixture("place_order.json", "unused");
    body.as_object_mut().unwrap().remove("order_id");
    let first = expect_status(
        app.post_with_key("/v1/orders", "key-r", &body).await,
        StatusCode::CREATED,
    )
    .await;
    app.stop().await;

    let restarted = spawn_app_on(&url, |_| {}).await;
    let replay = restarted.post_with_key("/v1/orders", "key-r", &body).await;
    let replayed = replay.headers().get("idempotent-replayed").cloned();
    let again = expect_status(replay, StatusCode::CREATED).await;
    assert_eq!(
        replayed.as_ref().and_then(|v| v.to_str().ok()),
        Some("true"),
        "the retry after the restart was run again: {again}"
    );
    assert_eq!(again, first);
}

/// As a crash between the claim's commit and the answer's leaves a key: claimed with its
/// command's events, no answer; claimed `ago`.
async fn lose_the_answer(db: &Database, key: &str, ago: std::time::Duration) {
    let claimed_at = chrono::Utc::now() - ago;
    let sql = "UPDATE idempotency_keys SET status_code = NULL, content_type = NULL, \
               response_body = NULL, created_at = $1 WHERE key = $2";
    match db {
        Database::Postgres(pool) => sqlx::query(sql)
            .bind(claimed_at)
            .bind(key)
            .execute(pool)
            .await
            .map(drop),
        // SQLite keeps times as milliseconds since the epoch.
        Database::Sqlite(pool) => sqlx::query(sql)
            .bind(claimed_at.timestamp_millis())
            .bind(key)
            .execute(pool)
            .await
            .map(drop),
    }
    .unwrap();
}

async fn an_answer_lost_in_a_crash_is_never_run_again_and_says_so(backend: Backend) {
    let app = spawn_app(backend).await;
    let url = app.database_url.clone();
    // No order_id: run again, the retry would place a second order.
    let mut body = fixture("place_order.json", "unused");
    body.as_object_mut().unwrap().remove("order_id");
    expect_status(
        app.post_with_key("/v1/orders", "key-lost", &body).await,
        StatusCode::CREATED,
    )
    .await;
    app.stop().await;
    let db = Database::connect(&url, 1).await.unwrap();
    let events = event_count(&db).await;

    // Just claimed: another server may be about to keep its answer.
    lose_the_answer(&db, "key-lost", std::time::Duration::ZERO).await;
    let restarted = spawn_app_on(&url, |_| {}).await;
    expect_error(
        restarted
            .post_with_key("/v1/orders", "key-lost", &body)
            .await,
        StatusCode::CONFLICT,
        "idempotency_key_in_flight",
    )
    .await;
    // Past the grace: the answer is gone, and the retry is told so, not to wait.
    lose_the_answer(&db, "key-lost", std::time::Duration::from_secs(60)).await;
    let lost = expect_error(
        restarted
            .post_with_key("/v1/orders", "key-lost", &body)
            .await,
        StatusCode::CONFLICT,
        "idempotency_answer_lost",
    )
    .await;
    assert_eq!(lost["field"], "idempotency-key");
    assert_eq!(event_count(&db).await, events, "nothing ran twice");
    db.close().await;
}

/// When the key was claimed, and when its answer was kept (`None`: not yet).
async fn key_times(db: &Database, key: &str) -> (String, Option<String>) {
    let row: (String, Option<String>) =
        match db {
            Database::Postgres(pool) => sqlx::query_as(
                "SELECT created_at::text, completed_at::text FROM idempotency_keys WHERE key = $1",
            )
            .bind(key)
            .fetch_one(pool)
            .await,
            Database::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT CAST(created_at AS TEXT), CAST(completed_at AS TEXT)
               FROM idempotency_keys WHERE key = ?",
                )
                .bind(key)
                .fetch_one(pool)
                .await
            }
        }
        .unwrap();
    row
}

async fn a_placed_orders_answer_commits_with_its_claim(backend: Backend) {
    let app = spawn_app(backend).await;
    let db = Database::connect(&app.database_url, 1).await.unwrap();
    let mut body = fixture("place_order.json", "unused");
    body.as_object_mut().unwrap().remove("order_id");
    let placed = expect_status(
        app.post_with_key("/v1/orders", "key-placed", &body).await,
        StatusCode::CREATED,
    )
    .await;
    // Rendered before the commit, the answer was written with the claim, in the same
    // statement, stamped with the claim's own time: no crash can part them.
    let (claimed, answered) = key_times(&db, "key-placed").await;
    assert_eq!(answered.as_deref(), Some(claimed.as_str()));
    let replayed = app.post_with_key("/v1/orders", "key-placed", &body).await;
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    assert_eq!(expect_status(replayed, StatusCode::CREATED).await, placed);

    // A payment's answer is the handler's, kept after its commit.
    let order_id = placed["order_id"].as_str().unwrap();
    let path = format!("/v1/orders/{order_id}/payments");
    let pay = json!({"amount": 5000});
    let paid = expect_status(
        app.post_with_key(&path, "key-paid", &pay).await,
        StatusCode::CREATED,
    )
    .await;
    // A retry meanwhile waits for it (`IdempotencyStore::hold`).
    let replayed = app.post_with_key(&path, "key-paid", &pay).await;
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    assert_eq!(expect_status(replayed, StatusCode::CREATED).await, paid);
    db.close().await;
}

async fn keys_expire_after_their_retention(backend: Backend) {
    let url = fresh_database(backend).await;
    let app = spawn_app_on(&url, |s| {
        s.idempotency_ttl = std::time::Duration::from_millis(300)
    })
    .await;
    let body = json!({"amount": 5000});
    app.place_order("ord-e").await;
    let path = "/v1/orders/ord-e/payments";
    expect_status(
        app.post_with_key(path, "key-e", &body).await,
        StatusCode::CREATED,
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    // The key is gone, so the request runs again, and the order refuses it on its merits.
    let r = app.post_with_key(path, "key-e", &body).await;
    assert!(r.headers().get("idempotent-replayed").is_none());
    expect_error(r, StatusCode::CONFLICT, "payment_in_progress").await;
}

async fn a_malformed_key_is_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let r = app
        .post_with_key(
            "/v1/orders",
            &"k".repeat(300),
            &fixture("place_order.json", "ord-m"),
        )
        .await;
    expect_error(r, StatusCode::BAD_REQUEST, "invalid_header").await;
}

async fn a_replay_keeps_the_first_answers_content_type(backend: Backend) {
    // A limit above axum's own 2 MiB, which the rotation's body used to meet first, and
    // answer in text/plain: a replay then claimed that text was JSON.
    let url = fresh_database(backend).await;
    let app = spawn_app_on(&url, |s| s.body_limit = 4 * 1024 * 1024).await;
    let sub = expect_status(
        app.post(
            "/v1/subscriptions",
            &json!({"kind": "webhook", "url": "http://127.0.0.1:9/hook", "event_types": ["*"]}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let path = format!(
        "/v1/subscriptions/{}/secret/rotate",
        sub["id"].as_str().unwrap()
    );
    let body =
        serde_json::to_vec(&json!({"overlap": "1h", "padding": "x".repeat(3 << 20)})).unwrap();
    let headers = [
        ("content-type", "application/json"),
        ("idempotency-key", "rotate-big"),
    ];
    let first = app.raw("POST", &path, &headers, body.clone()).await;
    let replay = app.raw("POST", &path, &headers, body).await;
    assert!(first.status.is_client_error(), "{}", first.status);
    assert_eq!(replay.status, first.status);
    assert_eq!(
        replay.content_type(),
        first.content_type(),
        "the first answer's type"
    );
    assert_eq!(replay.body, first.body);
    assert_eq!(first.content_type(), "application/json");
    assert!(first.json()["code"].is_string(), "a JSON error");
}

async fn the_store_keeps_each_answers_content_type(backend: Backend) {
    use orderlog::store::idempotency::{Claim, IdempotencyStore, KeyClaim};
    use orderlog::store::reader::LogSignal;
    use orderlog::store::writer::{Answer, EventWriter};
    let url = fresh_database(backend).await;
    let db = orderlog::store::Database::connect(&url, 2).await.unwrap();
    db.migrate().await.unwrap();
    let writer = EventWriter::start(&db, LogSignal::default(), Default::default());
    let store = IdempotencyStore::new(db, std::time::Duration::from_secs(60), writer);
    let now = chrono::Utc::now();
    for (key, content_type, body) in [
        ("k-json", Some("application/json"), &b"{}"[..]),
        (
            "k-text",
            Some("text/plain; charset=utf-8"),
            b"length limit exceeded",
        ),
        ("k-none", None, b""),
    ] {
        assert_eq!(store.check(key, "h", now).await.unwrap(), Claim::Free);
        let answer = Answer {
            status: 413,
            content_type: content_type.map(str::to_owned),
            body: body.to_vec(),
        };
        let held = store.hold(key).await.unwrap();
        store
            .keep(held, &KeyClaim::new(key, "h", now), answer, now)
            .await
            .unwrap();
        assert_eq!(
            store.check(key, "h", now).await.unwrap(),
            Claim::Replay {
                status: 413,
                content_type: content_type.map(str::to_owned),
                body: body.to_vec(),
            },
            "{key}"
        );
        assert_eq!(
            store.check(key, "other", now).await.unwrap(),
            Claim::Mismatch
        );
    }
}

async fn one_key_sent_to_two_servers_at_once_places_one_order(backend: Backend) {
    // Orders without a client-chosen id: only the key tells the two requests are one.
    let url = fresh_database(backend).await;
    let first = &spawn_app_on(&url, |_| {}).await;
    let second = &spawn_app_on(&url, |_| {}).await;
    let mut body = fixture("place_order.json", "unused");
    body.as_object_mut().unwrap().remove("order_id");
    let body = &body;
    let (a, b) = tokio::join!(
        retry_until_answered(first, body),
        retry_until_answered(second, body)
    );
    assert_eq!(a.0, StatusCode::CREATED, "{}", a.1);
    assert_eq!(b.0, StatusCode::CREATED, "{}", b.1);
    assert_eq!(
        a.1["order_id"], b.1["order_id"],
        "one order, answered twice"
    );
    let db = orderlog::store::Database::connect(&url, 1).await.unwrap();
    assert_eq!(event_count(&db).await, 1, "one order.created in the log");
    db.close().await;
}

async fn retry_until_answered(app: &TestApp, body: &Value) -> (StatusCode, Value) {
    eventually(
        "an answer that is not 409",
        std::time::Duration::from_secs(10),
        || async {
            let r = app.post_with_key("/v1/orders", "two-servers", body).await;
            match r.status() {
                StatusCode::CONFLICT => Err("409".to_owned()),
                status => Ok((status, r.json::<Value>().await.unwrap())),
            }
        },
    )
    .await
}

async fn a_duplicate_arriving_while_the_answer_is_kept_waits_for_it(backend: Backend) {
    use orderlog::store::idempotency::{Claim, IdempotencyStore, KeyClaim};
    use orderlog::store::reader::LogSignal;
    use orderlog::store::writer::{Answer, EventWriter};
    let url = fresh_database(backend).await;
    let db = orderlog::store::Database::connect(&url, 2).await.unwrap();
    db.migrate().await.unwrap();
    let writer = EventWriter::start(&db, LogSignal::default(), Default::default());
    let store = IdempotencyStore::new(db, std::time::Duration::from_secs(60), writer.clone());
    let now = chrono::Utc::now();
    // Given a claim committed with its command, as the group commit does it.
    let held = store.hold("k-1").await.unwrap();
    let claim = KeyClaim::new("k-1", "h", now);
    writer
        .append_with(Vec::new(), vec![claim.write(None)], Vec::new(), None)
        .await
        .unwrap();
    claim.mark_taken(false);
    // While the request still runs, a duplicate is turned away at once.
    assert!(store.hold("k-1").await.is_none());
    // When its answer is kept, the call returns before the answer commits...
    let answer = Answer {
        status: 201,
        content_type: Some("application/json".into()),
        body: b"{\"order_id\":\"o-1\"}".to_vec(),
    };
    store.keep(held, &claim, answer, now).await.unwrap();
    // ...and a duplicate arriving meanwhile waits for it, then finds it kept.
    let duplicate = store.hold("k-1").await;
    assert!(duplicate.is_some());
    assert_eq!(
        store.check("k-1", "h", now).await.unwrap(),
        Claim::Replay {
            status: 201,
            content_type: Some("application/json".into()),
            body: b"{\"order_id\":\"o-1\"}".to_vec(),
        }
    );
    drop(duplicate);
    store.settle().await;
}
