//! Status is true on every node: the server holding a subscription's lease reports
//! its breaker and its name, and any server answers with them.

use std::time::Duration;

use orderlog::config::Settings;
use orderlog::store::Database;
use serde_json::json;

use crate::deliveries::{subscribe, wait_for_subscription};
use crate::helpers::{fresh_database, spawn_app_on, Backend};
use crate::receiver::Receiver;

fn node(name: &'static str) -> impl FnOnce(&mut Settings) {
    move |s| {
        s.deliveries.node_name = Some(name.to_owned());
        s.deliveries.breaker_failures = 3;
        s.deliveries.breaker_cooldown = Duration::from_secs(60);
        s.deliveries.retry_schedule = vec![Duration::from_millis(20); 20];
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_answers_with_the_holders_breaker_and_name() {
    let url = fresh_database(Backend::Postgres).await;
    let first = spawn_app_on(&url, node("node-a")).await;
    let receiver = Receiver::start(503).await;
    let sub = subscribe(&first, &receiver.url(), &["order.created"], json!({})).await;
    let id = sub["id"].as_str().unwrap().to_owned();
    wait_for_subscription(&first, &id, "node-a to hold the lease", |s| {
        s["lease"]["node"] == "node-a"
    })
    .await;

    let second = spawn_app_on(&url, node("node-b")).await;
    for i in 0..5 {
        second.place_order(&format!("ord-{i}")).await;
    }
    for app in [&first, &second] {
        let s = wait_for_subscription(app, &id, "the holder's open breaker", |s| {
            s["breaker"] == "open" && s["lease"]["node"] == "node-a"
        })
        .await;
        assert!(s["lease"]["since"].is_string() && s["lease"]["reported_at"].is_string());
    }

    first.stop().await;
    wait_for_subscription(&second, &id, "node-b to take over", |s| {
        s["lease"]["node"] == "node-b"
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_from_a_server_that_stopped_reporting_is_not_believed() {
    let url = fresh_database(Backend::Sqlite).await;
    let app = spawn_app_on(&url, node("only")).await;
    let receiver = Receiver::start(200).await;
    let sub = subscribe(&app, &receiver.url(), &["order.created"], json!({})).await;
    let id = sub["id"].as_str().unwrap().to_owned();
    let s = wait_for_subscription(&app, &id, "the lease", |s| s["lease"]["node"] == "only").await;
    assert_eq!(s["breaker"], "closed");

    let db = Database::connect(&url, 1).await.unwrap();
    let subscription = uuid::Uuid::parse_str(&id).unwrap();
    let now = chrono::Utc::now();
    let held = orderlog::delivery::lease::current(&db, subscription, now)
        .await
        .unwrap();
    assert_eq!(held.map(|l| l.node).as_deref(), Some("only"));
    let later = now + chrono::Duration::seconds(30);
    let held = orderlog::delivery::lease::current(&db, subscription, later)
        .await
        .unwrap();
    assert_eq!(
        held, None,
        "three missed reports: nobody is said to hold it"
    );
    db.close().await;
}
