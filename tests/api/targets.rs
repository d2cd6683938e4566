//! The SSRF guard on webhook targets, over HTTP, on SQLite and on PostgreSQL: what is
//! refused at create and update (422 `forbidden_target`, writing nothing), what is
//! accepted, a subscription made while private networks were allowed that is no longer
//! delivered once they are not, and redirects, which are never followed.

use std::time::Duration;

use axum::http::{header, StatusCode as AxumStatus};
use axum::routing::post;
use axum::Router;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    eventually, expect_error, expect_status, fresh_database, spawn_app_on, Backend, TestApp,
};
use crate::on_both_backends;
use crate::receiver::Receiver;

/// The guard as in production: private networks refused.
fn strict(settings: &mut orderlog::config::Settings) {
    fast_retries(settings);
    settings.deliveries.webhook_allow_private_networks = false;
}

fn fast_retries(settings: &mut orderlog::config::Settings) {
    settings.deliveries.retry_schedule = vec![Duration::from_millis(50); 3];
    settings.deliveries.breaker_failures = 10_000;
    settings.deliveries.webhook_timeout = Duration::from_secs(5);
}

/// Every one of these is refused at create, whatever the spelling.
const FORBIDDEN: &[&str] = &[
    "http://169.254.169.254/",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://[::ffff:169.254.169.254]/",
    "http://metadata.google.internal/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.0.1/",
    "http://[fc00::1]/",
    "http://[fe80::1]/",
    "http://127.0.0.1:22/",
    "http://localhost:5432/",
    "http://api.localhost/",
    "http://0.0.0.0/",
    "http://127.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://017700000001/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
    "http://[::1]/",
    "http://[fec0::1]/",
    "http://[::127.0.0.1]/",
    "http://[64:ff9b::7f00:1]/",
    "https://db.corp.internal/hook",
];

/// Five labels of 49 characters and one of 50, dotted: DNS carries at most 253.
fn host_of_300_characters() -> String {
    let host = format!("{}.", "x".repeat(49)).repeat(5) + &"y".repeat(50);
    assert_eq!(host.len(), 300);
    host
}

async fn create(app: &TestApp, url: &str) -> reqwest::Response {
    app.post(
        "/v1/subscriptions",
        &json!({ "kind": "webhook", "url": url, "event_types": ["*"] }),
    )
    .await
}

async fn patch_url(app: &TestApp, id: &str, url: &str) -> reqwest::Response {
    app.client
        .patch(app.url(&format!("/v1/subscriptions/{id}")))
        .json(&json!({ "url": url }))
        .send()
        .await
        .unwrap()
}

async fn subscriptions(app: &TestApp) -> Vec<Value> {
    expect_status(app.get("/v1/subscriptions").await, StatusCode::OK).await["subscriptions"]
        .as_array()
        .unwrap()
        .clone()
}

async fn attempts(app: &TestApp, id: &str, event_id: &str) -> Vec<Value> {
    expect_status(
        app.get(&format!(
            "/v1/subscriptions/{id}/attempts?event_id={event_id}"
        ))
        .await,
        StatusCode::OK,
    )
    .await["attempts"]
        .as_array()
        .unwrap()
        .clone()
}

async fn forbidden_targets_are_refused_at_create_and_nothing_is_written(backend: Backend) {
    let app = spawn_app_on(&fresh_database(backend).await, strict).await;
    for url in FORBIDDEN {
        let body = expect_error(
            create(&app, url).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "forbidden_target",
        )
        .await;
        assert_eq!(body["field"], "url", "{url}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.starts_with("`url` "), "{url}: {detail}");
    }
    // The reason names the address and what would allow it.
    let body = expect_error(
        create(&app, "http://10.0.0.1/").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "forbidden_target",
    )
    .await;
    assert_eq!(
        body["detail"],
        "`url` points at 10.0.0.1, a private address; set \
         ORDERLOG_WEBHOOK_ALLOW_PRIVATE_NETWORKS=true for on-premises receivers"
    );
    let body = expect_error(
        create(&app, "http://2130706433/").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "forbidden_target",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("127.0.0.1"),
        "{body}"
    );
    // A host DNS cannot carry is malformed, not forbidden.
    let long = format!("http://{}/hook", host_of_300_characters());
    let body = expect_error(
        create(&app, &long).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    assert_eq!(body["field"], "url");
    assert!(subscriptions(&app).await.is_empty());
}

async fn public_targets_and_names_that_do_not_resolve_are_accepted(backend: Backend) {
    let app = spawn_app_on(&fresh_database(backend).await, strict).await;
    for url in [
        "https://93.184.215.14/hook",
        "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/hook",
        "https://example.com/hook",
        // Never resolves (RFC 6761); accepted, and judged when it is connected to.
        "https://receiver.invalid/hook",
    ] {
        let body = expect_status(create(&app, url).await, StatusCode::CREATED).await;
        assert_eq!(body["url"], url);
    }
    assert_eq!(subscriptions(&app).await.len(), 4);
}

async fn a_forbidden_url_is_refused_at_patch_and_the_old_one_stays(backend: Backend) {
    let app = spawn_app_on(&fresh_database(backend).await, strict).await;
    let created = expect_status(
        create(&app, "https://93.184.215.14/hook").await,
        StatusCode::CREATED,
    )
    .await;
    let id = created["id"].as_str().unwrap();
    for url in [
        "http://169.254.169.254/",
        "http://[::ffff:169.254.169.254]/",
        "http://localhost:5432/",
        "http://0x7f000001/",
        "http://[fc00::1]/",
    ] {
        let body = expect_error(
            patch_url(&app, id, url).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "forbidden_target",
        )
        .await;
        assert_eq!(body["field"], "url", "{url}: {body}");
    }
    let long = format!("http://{}/", host_of_300_characters());
    expect_error(
        patch_url(&app, id, &long).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
    )
    .await;
    let after = expect_status(
        app.get(&format!("/v1/subscriptions/{id}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(after["url"], "https://93.184.215.14/hook");
    assert_eq!(after["updated_at"], created["updated_at"]);
}

async fn a_target_allowed_before_a_restart_is_not_sent_to_once_disallowed(backend: Backend) {
    let url = fresh_database(backend).await;
    let receiver = Receiver::start(200).await;

    // Allowed: created, and delivered to.
    let app = spawn_app_on(&url, fast_retries).await;
    let created = expect_status(create(&app, &receiver.url()).await, StatusCode::CREATED).await;
    let id = created["id"].as_str().unwrap().to_owned();
    app.place_order("ord-before").await;
    receiver
        .wait_until(Duration::from_secs(20), "the first delivery", |r| {
            !r.is_empty()
        })
        .await;
    app.stop().await;
    let delivered_before = receiver.received().len();

    // The same database, private networks no longer allowed.
    let app = spawn_app_on(&url, strict).await;
    app.place_order("ord-after").await;
    let event_id = app.event_ids("ord-after", |t| t == "order.created").await[0].clone();
    let failed = eventually(
        "a failed attempt for the new order",
        Duration::from_secs(20),
        || async {
            let attempts = attempts(&app, &id, &event_id).await;
            match attempts.first() {
                Some(first) => Ok(first.clone()),
                None => Err("no attempt yet".to_owned()),
            }
        },
    )
    .await;
    assert_eq!(failed["outcome"], "failed", "{failed}");
    assert_eq!(failed["status"], Value::Null, "{failed}");
    let detail = failed["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("not sent: the webhook url points at 127.0.0.1, a loopback address"),
        "{detail}"
    );
    assert!(
        detail.contains("ORDERLOG_WEBHOOK_ALLOW_PRIVATE_NETWORKS"),
        "{detail}"
    );
    // Let the retries run out: still nothing reaches the receiver.
    eventually("more failed attempts", Duration::from_secs(20), || async {
        let n = attempts(&app, &id, &event_id).await.len();
        if n >= 2 {
            Ok(())
        } else {
            Err(format!("{n} attempts"))
        }
    })
    .await;
    assert_eq!(receiver.received().len(), delivered_before);
}

/// A receiver that answers every request with 307 to `location`.
async fn redirector(location: String) -> String {
    let app = Router::new().route(
        "/hook",
        post(move || {
            let location = location.clone();
            async move {
                (
                    AxumStatus::TEMPORARY_REDIRECT,
                    [(header::LOCATION, location)],
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hook")
}

async fn a_redirect_is_a_failed_attempt_that_says_where_and_is_not_followed(backend: Backend) {
    let app = spawn_app_on(&fresh_database(backend).await, fast_retries).await;
    let second = Receiver::start(200).await;
    let first = redirector(second.url()).await;
    let created = expect_status(create(&app, &first).await, StatusCode::CREATED).await;
    let id = created["id"].as_str().unwrap();
    app.place_order("ord-1").await;
    let event_id = app.event_ids("ord-1", |t| t == "order.created").await[0].clone();
    let failed = eventually("a failed attempt", Duration::from_secs(20), || async {
        match attempts(&app, id, &event_id).await.first() {
            Some(first) => Ok(first.clone()),
            None => Err("no attempt yet".to_owned()),
        }
    })
    .await;
    assert_eq!(failed["outcome"], "failed", "{failed}");
    assert_eq!(failed["status"], 307, "{failed}");
    assert_eq!(
        failed["detail"],
        format!("redirected to {}; redirects are not followed", second.url())
    );
    // Retries redirect again, and are not followed either.
    eventually("a retry", Duration::from_secs(20), || async {
        let n = attempts(&app, id, &event_id).await.len();
        if n >= 2 {
            Ok(())
        } else {
            Err(format!("{n} attempts"))
        }
    })
    .await;
    assert!(second.received().is_empty());
}

on_both_backends!(
    forbidden_targets_are_refused_at_create_and_nothing_is_written,
    public_targets_and_names_that_do_not_resolve_are_accepted,
    a_forbidden_url_is_refused_at_patch_and_the_old_one_stays,
    a_target_allowed_before_a_restart_is_not_sent_to_once_disallowed,
    a_redirect_is_a_failed_attempt_that_says_where_and_is_not_followed,
);
