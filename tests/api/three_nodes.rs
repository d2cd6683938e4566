//! Three real `orderlog serve` processes on one PostgreSQL database, orders spread over
//! all three, and the one delivering the subscription killed with SIGKILL mid-load: a
//! small receiver still gets every acknowledged order's `order.created` at least once,
//! a survivor takes the lease over, and nothing is dead-lettered.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    client_for, eventually, expect_status, fixture, fresh_database, Backend, ADMIN_TOKEN,
};
use crate::nodes::Node;
use crate::receiver::Receiver;

/// Each node's delivery settings: retries soon enough that a turned-away request is
/// sent again within the test, and many of them (a dead letter here would be a lost
/// event); a small receiver's 503s are pushback, not an outage, so the breaker opens
/// on few failures and not for long.
const DELIVERY: &[(&str, &str)] = &[
    ("ORDERLOG_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true"),
    ("ORDERLOG_WEBHOOK_RETRY_SCHEDULE", RETRIES),
    ("ORDERLOG_WEBHOOK_TIMEOUT", "5s"),
    ("ORDERLOG_BREAKER_FAILURES", "5"),
    ("ORDERLOG_BREAKER_COOLDOWN", "500ms"),
];
const RETRIES: &str = "100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,\
                       100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms,100ms";

async fn subscription(client: &reqwest::Client, base: &str, id: &str) -> Value {
    let r = client
        .get(format!("{base}/v1/subscriptions/{id}"))
        .send()
        .await
        .expect("GET the subscription");
    expect_status(r, StatusCode::OK).await
}

async fn wait_for(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    eventually(what, timeout, || async {
        let s = subscription(client, base, id).await;
        if done(&s) {
            Ok(s)
        } else {
            Err(s)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_lease_holder_mid_load_loses_nothing_and_dead_letters_nothing() {
    let url = fresh_database(Backend::Postgres).await;
    let client = client_for(ADMIN_TOKEN);
    // The first node migrates the fresh schema alone; the others start on a migrated
    // one, as servers added to a running deployment do.
    let mut nodes = vec![Node::start("node-a", &url, DELIVERY)];
    nodes[0].ready().await;
    nodes.push(Node::start("node-b", &url, DELIVERY));
    nodes.push(Node::start("node-c", &url, DELIVERY));
    for node in &mut nodes[1..] {
        node.ready().await;
    }

    let receiver = Receiver::start(200).await;
    receiver.small(4, Duration::from_millis(5));
    let r = client
        .post(format!("{}/v1/subscriptions", nodes[0].base))
        .json(&json!({
            "kind": "webhook",
            "url": receiver.url(),
            "event_types": ["order.created"],
            "max_in_flight": 32,
        }))
        .send()
        .await
        .unwrap();
    let id = expect_status(r, StatusCode::CREATED).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let s = wait_for(
        &client,
        &nodes[0].base,
        &id,
        "a node to take the lease",
        Duration::from_secs(20),
        |s| {
            s["lease"]["node"]
                .as_str()
                .is_some_and(|n| names.iter().any(|m| m == n))
        },
    )
    .await;
    let holder = nodes
        .iter()
        .position(|n| s["lease"]["node"] == n.name.as_str())
        .unwrap();

    let orders = 450;
    let workers = 12;
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    let acknowledged = Arc::new(Mutex::new(Vec::<String>::new()));
    let acked = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..workers)
        .map(|w| {
            let (client, bases) = (client.clone(), bases.clone());
            let (acknowledged, acked) = (acknowledged.clone(), acked.clone());
            tokio::spawn(async move {
                for i in (w..orders).step_by(workers) {
                    let order_id = format!("ord-{i}");
                    let r = client
                        .post(format!("{}/v1/orders", bases[i % bases.len()]))
                        .json(&fixture("place_order.json", &order_id))
                        .send()
                        .await;
                    // A request to the killed node fails, or was cut off after its
                    // commit: neither is a promise, so neither is counted.
                    if r.is_ok_and(|r| r.status() == StatusCode::CREATED) {
                        acknowledged.lock().unwrap().push(order_id);
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();

    // Killed once a third of the load is in: the small receiver keeps the holder behind
    // the writes, so it dies with events in its window and not yet sent, and the
    // survivors keep placing orders after it is gone.
    eventually("a third of the orders", Duration::from_secs(30), || async {
        match acked.load(Ordering::Relaxed) {
            n if n >= orders / 3 => Ok(()),
            n => Err(format!("{n} acknowledged")),
        }
    })
    .await;
    nodes[holder].kill();
    let acked_at_kill = acked.load(Ordering::Relaxed);
    for worker in load {
        worker.await.unwrap();
    }
    let acknowledged: HashSet<String> = acknowledged.lock().unwrap().iter().cloned().collect();
    assert!(
        acknowledged.len() > acked_at_kill,
        "orders were placed after the kill ({acked_at_kill} before, {} in all)",
        acknowledged.len()
    );

    let survivor = &nodes[(holder + 1) % nodes.len()].base;
    let killed = nodes[holder].name.clone();
    receiver
        .wait_until(
            Duration::from_secs(90),
            "every acknowledged order.created",
            |received| {
                let delivered: HashSet<&str> = received
                    .iter()
                    .filter(|r| r.status == 200 && r.body["type"] == "order.created")
                    .filter_map(|r| r.body["aggregate_id"].as_str())
                    .collect();
                acknowledged
                    .iter()
                    .all(|id| delivered.contains(id.as_str()))
            },
        )
        .await;

    let s = wait_for(
        &client,
        survivor,
        &id,
        "a survivor to hold the lease, with an empty queue",
        Duration::from_secs(30),
        |s| {
            s["lease"]["node"].is_string()
                && s["lease"]["node"] != killed.as_str()
                && s["queue"]["waiting"] == 0
                && s["lag"]["events"] == 0
        },
    )
    .await;
    assert_eq!(s["queue"]["dead"], 0, "{s}");
    assert_eq!(s["state"], "active", "{s}");
    let r = client
        .get(format!("{survivor}/v1/subscriptions/{id}/dead-letters"))
        .send()
        .await
        .unwrap();
    let letters = expect_status(r, StatusCode::OK).await;
    assert_eq!(letters["dead_letters"], json!([]), "{letters}");
}
