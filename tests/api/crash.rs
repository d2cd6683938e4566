//! A SIGKILL under load, on both backends: the real `orderlog serve` is killed while
//! storefront clients place orders with an `Idempotency-Key` each, and started again on
//! the same database. Every acknowledged order is there as it was acknowledged; a retry
//! of any order, heard or not, never places it twice; and the stock held is exactly the
//! lines of the orders that exist (a reservation whose order was never created is
//! released).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::nodes::Node;
use crate::on_both_backends;

on_both_backends!(killed_mid_load_the_server_loses_no_acknowledged_order_and_holds_no_orphan_stock);

const SKUS: usize = 8;
const STOCK: i64 = 1_000_000;
const WORKERS: usize = 16;
/// Released a second after its reservation, not a minute: the restarted server's
/// reservation manager then frees the orphans within the test.
const SETTINGS: &[(&str, &str)] = &[("ORDERLOG_ORPHAN_HOLD_TIMEOUT", "1s")];

/// One order a client sent, and what it heard.
struct Sent {
    id: String,
    key: String,
    body: Value,
    /// The 201's body; `None` when the kill cut the request off.
    acked: Option<Value>,
}

/// What a retry after the restart heard, once it was not told to wait.
enum Retried {
    Answered(reqwest::Response),
    /// A 409, read.
    Refused(Value),
}

async fn post_keyed(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    body: &Value,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{base}/v1/orders"))
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
}

async fn killed_mid_load_the_server_loses_no_acknowledged_order_and_holds_no_orphan_stock(
    backend: Backend,
) {
    let url = fresh_database(backend).await;
    let client = client_for(ADMIN_TOKEN);
    let mut node = Node::start("before", &url, SETTINGS);
    node.ready().await;
    let base = node.base.clone();
    for s in 0..SKUS {
        let r = client
            .post(format!("{base}/v1/inventory/SKU-{s}/receipts"))
            .json(&json!({ "quantity": STOCK }))
            .send()
            .await
            .unwrap();
        expect_status(r, StatusCode::CREATED).await;
    }

    let sent = Arc::new(Mutex::new(Vec::<Sent>::new()));
    let acked = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (client, base) = (client.clone(), base.clone());
            let (sent, acked, killed) = (sent.clone(), acked.clone(), killed.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let id = format!("ord-{w}-{i}");
                    let lines: Vec<(String, i64)> = (0..1 + (w + i) % 3)
                        .map(|l| {
                            (
                                format!("SKU-{}", (w + i + 3 * l) % SKUS),
                                1 + (i % 2) as i64,
                            )
                        })
                        .collect();
                    let lines: Vec<(&str, i64)> =
                        lines.iter().map(|(s, q)| (s.as_str(), *q)).collect();
                    let body = order_body(&id, &lines);
                    let key = format!("key-{id}");
                    let answer = loop {
                        match post_keyed(&client, &base, &key, &body).await {
                            Ok(r) if r.status() == StatusCode::CREATED => {
                                break r.json::<Value>().await.ok()
                            }
                            // Shed under load: sent again, with its key, as a storefront
                            // does (sooner than `Retry-After`, to keep the test short).
                            Ok(r)
                                if r.status() == StatusCode::SERVICE_UNAVAILABLE
                                    && !killed.load(Ordering::Relaxed) =>
                            {
                                tokio::time::sleep(Duration::from_millis(50)).await
                            }
                            // Under load before the kill, nothing else is right.
                            Ok(r) if !killed.load(Ordering::Relaxed) => {
                                let status = r.status();
                                panic!("{id}: {status} {}", r.text().await.unwrap_or_default())
                            }
                            _ => break None,
                        }
                    };
                    let heard = answer.is_some();
                    if heard {
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    sent.lock().unwrap().push(Sent {
                        id,
                        key,
                        body,
                        acked: answer,
                    });
                    if !heard {
                        break;
                    }
                }
            })
        })
        .collect();

    eventually(
        "300 acknowledged orders",
        Duration::from_secs(60),
        || async {
            match acked.load(Ordering::Relaxed) {
                n if n >= 300 => Ok(()),
                n => Err(format!("{n} acknowledged")),
            }
        },
    )
    .await;
    killed.store(true, Ordering::Relaxed);
    node.kill();
    for worker in load {
        worker.await.unwrap();
    }
    let sent = std::mem::take(&mut *sent.lock().unwrap());
    let unheard = sent.iter().filter(|s| s.acked.is_none()).count();
    assert_eq!(
        unheard, WORKERS,
        "each client stops at its first unheard order"
    );

    let mut node = Node::start("after", &url, SETTINGS);
    node.ready().await;
    let base = node.base.clone();

    // Every acknowledged order is in the log, as it was acknowledged.
    for s in sent.iter().filter(|s| s.acked.is_some()) {
        let r = client
            .get(format!("{base}/v1/orders/{}", s.id))
            .send()
            .await
            .unwrap();
        let order = expect_status(r, StatusCode::OK).await;
        assert_eq!(
            order["lines"],
            s.acked.as_ref().unwrap()["lines"],
            "{}",
            s.id
        );
    }

    // A storefront retries what it sent, heard or not, for as long as it is told to
    // retry: a kept answer comes back as it was (a placement's answer commits with its
    // claim and events, so the kill cannot part them and no retry is ever told that its
    // answer was lost), an order whose stock the kill held without creating it is
    // placed once the hold is released, and nothing runs twice.
    let pending = AtomicUsize::new(0);
    for s in &sent {
        let r = eventually(
            &format!("{} not to be pending", s.id),
            Duration::from_secs(30),
            || async {
                let r = post_keyed(&client, &base, &s.key, &s.body).await.unwrap();
                match r.status() {
                    StatusCode::SERVICE_UNAVAILABLE => {
                        pending.fetch_add(1, Ordering::Relaxed);
                        Err(r.text().await.unwrap())
                    }
                    StatusCode::CONFLICT => {
                        let e = r.json::<Value>().await.unwrap();
                        match e["code"].as_str() {
                            // Until its grace is over, a claim without its answer may
                            // be answered yet.
                            Some("idempotency_key_in_flight") => Err(e.to_string()),
                            _ => Ok(Retried::Refused(e)),
                        }
                    }
                    _ => Ok(Retried::Answered(r)),
                }
            },
        )
        .await;
        match (r, &s.acked) {
            (Retried::Answered(r), Some(first)) if r.status() == StatusCode::CREATED => {
                assert_eq!(r.headers()["idempotent-replayed"], "true", "{}", s.id);
                assert_eq!(&r.json::<Value>().await.unwrap(), first, "{}", s.id);
            }
            (Retried::Answered(r), None) if r.status() == StatusCode::CREATED => {}
            (Retried::Refused(e), _) => {
                panic!("{}: a retry after the crash was refused: {e}", s.id)
            }
            (Retried::Answered(r), _) => panic!(
                "{}: a retry after the crash got {} {}",
                s.id,
                r.status(),
                r.text().await.unwrap()
            ),
        }
    }
    // What the kill left, for a failure's report: how many retries were told to wait
    // (a hold without its order).
    println!(
        "{} acknowledged, {unheard} unheard; after the restart {} retries told to wait",
        sent.len() - unheard,
        pending.load(Ordering::Relaxed)
    );

    // The stock held is the lines of the orders that exist, no more: a reservation the
    // kill parted from its order is released once its hold times out.
    let mut held: BTreeMap<String, i64> = BTreeMap::new();
    for s in &sent {
        let r = client
            .get(format!("{base}/v1/orders/{}", s.id))
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::OK => {
                for line in r.json::<Value>().await.unwrap()["lines"]
                    .as_array()
                    .unwrap()
                {
                    *held
                        .entry(line["sku"].as_str().unwrap().to_owned())
                        .or_default() += line["quantity"].as_i64().unwrap();
                }
            }
            StatusCode::NOT_FOUND => {}
            other => panic!("{}: {other}", s.id),
        }
    }
    for s in 0..SKUS {
        let sku = format!("SKU-{s}");
        let want = held.get(&sku).copied().unwrap_or(0);
        eventually(
            &format!("{sku} to hold {want}"),
            Duration::from_secs(30),
            || async {
                let levels: Value = client
                    .get(format!("{base}/v1/inventory/{sku}"))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if levels["reserved"] == want && levels["available"] == STOCK - want {
                    Ok(())
                } else {
                    Err(levels.to_string())
                }
            },
        )
        .await;
    }
}
