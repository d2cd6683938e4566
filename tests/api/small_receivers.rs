//! Deliveries adapt to the receiver: a receiver that takes only a few requests at a
//! time gets everything, in order per order, without its breaker opening and without a
//! dead letter, because the subscription's window shrinks to what it takes.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;

use crate::deliveries::{subscribe, wait_for_subscription};
use crate::helpers::{fresh_database, spawn_app_on, Backend};
use crate::on_both_backends;
use crate::receiver::Receiver;

on_both_backends!(
    a_small_receiver_gets_everything_without_the_breaker_opening,
    a_busy_answer_is_sent_again_at_once_and_a_retry_after_is_kept,
);

async fn a_small_receiver_gets_everything_without_the_breaker_opening(backend: Backend) {
    let app = spawn_app_on(&fresh_database(backend).await, |s| {
        s.deliveries.retry_schedule = vec![Duration::from_millis(50); 10];
        s.deliveries.breaker_failures = 5;
        s.deliveries.breaker_cooldown = Duration::from_secs(30);
    })
    .await;
    let receiver = Receiver::start(200).await;
    receiver.small(4, Duration::from_millis(20));
    let orders = 120;
    for i in 0..orders {
        app.place_order(&format!("ord-{i}")).await;
    }
    let sub = subscribe(
        &app,
        &receiver.url(),
        &["order.created"],
        json!({"from_position": 1, "max_in_flight": 64}),
    )
    .await;
    let id = sub["id"].as_str().unwrap().to_owned();

    let watch = {
        let app_url = app.url(&format!("/v1/subscriptions/{id}"));
        let client = app.client.clone();
        tokio::spawn(async move {
            let mut seen = HashSet::new();
            for _ in 0..400 {
                let s: serde_json::Value = client
                    .get(&app_url)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                seen.insert(s["breaker"].as_str().unwrap_or("null").to_owned());
                if s["queue"]["waiting"] == 0 && s["lag"]["events"] == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            seen
        })
    };
    receiver
        .wait_until(Duration::from_secs(30), "every order", |r| {
            r.iter()
                .map(|r| r.webhook_id().to_owned())
                .collect::<HashSet<_>>()
                .len()
                >= orders
        })
        .await;
    // Everything arrived; the cursor's commit and the holder's report may still be on
    // their way.
    let s = wait_for_subscription(&app, &id, "an empty queue, caught up, reported", |s| {
        s["queue"]["waiting"] == 0 && s["lag"]["events"] == 0 && s["breaker"].is_string()
    })
    .await;
    assert_eq!(s["queue"]["dead"], 0, "{s}");
    assert_eq!(s["breaker"], "closed", "{s}");
    let window = s["window"].as_u64().unwrap();
    assert!((1..=64).contains(&window), "{s}");
    let seen = watch.await.unwrap();
    assert!(!seen.contains("open"), "the breaker opened: {seen:?}");
    // It was pushed back, and the window adapted rather than giving up.
    assert!(receiver.turned_away() > 0);
}

async fn a_busy_answer_is_sent_again_at_once_and_a_retry_after_is_kept(backend: Backend) {
    // A schedule no test waits for: whatever arrives twice here was sent again at once.
    let app = spawn_app_on(&fresh_database(backend).await, |s| {
        s.deliveries.retry_schedule = vec![Duration::from_secs(120); 3];
    })
    .await;
    let receiver = Receiver::start(200).await;
    receiver.answer_next(&[503]);
    app.place_order("ord-busy").await;
    let sub = subscribe(
        &app,
        &receiver.url(),
        &["order.created"],
        json!({"from_position": 1}),
    )
    .await;
    let id = sub["id"].as_str().unwrap().to_owned();
    let statuses_for = |received: &[crate::receiver::Received], order: &str| -> Vec<u16> {
        received
            .iter()
            .filter(|r| r.body["aggregate_id"] == order)
            .map(|r| r.status)
            .collect()
    };
    let received = receiver
        .wait_until(Duration::from_secs(10), "ord-busy delivered", |r| {
            statuses_for(r, "ord-busy").contains(&200)
        })
        .await;
    assert_eq!(statuses_for(&received, "ord-busy"), [503, 200]);

    // A 503 that says when to come back is a receiver's schedule, kept to the letter.
    receiver.answer_next_retry_after(503, 120);
    app.place_order("ord-later").await;
    let s = wait_for_subscription(&app, &id, "ord-later queued for its retry", |s| {
        s["queue"]["waiting"] == 1 && s["lag"]["events"] == 0
    })
    .await;
    assert_eq!(s["queue"]["dead"], 0, "{s}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(statuses_for(&receiver.received(), "ord-later"), [503]);
}
