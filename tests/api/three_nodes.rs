//! Three real `orderlog serve` processes on one PostgreSQL database, orders spread over
//! all three, and the one delivering the subscription killed with SIGKILL mid-load: a
//! small receiver still gets every acknowledged order's `order.created` at least once,
//! a survivor takes the lease over, and nothing is dead-lettered.

use std::collections::HashSet;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{
    client_for, eventually, expect_status, fixture, fresh_database, test_secret_key, Backend,
    ADMIN_TOKEN,
};
use crate::receiver::Receiver;

/// One `orderlog serve` process, killed however the test ends.
struct Node {
    name: String,
    base: String,
    child: Child,
}

impl Node {
    fn start(name: &str, database_url: &str) -> Node {
        let port = crate::settings::free_port();
        let mut command = crate::settings::orderlog_command();
        let logs = || match std::env::var_os("TEST_LOG") {
            Some(_) => Stdio::inherit(),
            None => Stdio::null(),
        };
        let key = test_secret_key().to_base64();
        let child = command
            .arg("serve")
            .env("ORDERLOG_DATABASE_URL", database_url)
            .env("ORDERLOG_BIND", format!("127.0.0.1:{port}"))
            .env("ORDERLOG_NODE_NAME", name)
            .env("ORDERLOG_BOOTSTRAP_TOKEN", ADMIN_TOKEN)
            .env("ORDERLOG_SECRET_KEY", &key)
            .env("ORDERLOG_DB_POOL_SIZE", "8")
            .env("ORDERLOG_NATS_URL", crate::helpers::nats_url())
            .env("ORDERLOG_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
            // Retries soon enough that a turned-away request is sent again within the
            // test, and many of them: a dead letter here would be a lost event.
            .env("ORDERLOG_WEBHOOK_RETRY_SCHEDULE", ["100ms"; 20].join(","))
            .env("ORDERLOG_WEBHOOK_TIMEOUT", "5s")
            // A small receiver's 503s are pushback, not an outage: the window shrinks,
            // and a breaker open for long would only slow the test down.
            .env("ORDERLOG_BREAKER_FAILURES", "5")
            .env("ORDERLOG_BREAKER_COOLDOWN", "500ms")
            .stdout(logs())
            .stderr(logs())
            .spawn()
            .expect("the orderlog binary starts");
        Node {
            name: name.to_owned(),
            base: format!("http://127.0.0.1:{port}"),
            child,
        }
    }

    /// Waits for `/ready`, failing at once if the process exits instead.
    async fn ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let ready = format!("{}/ready", self.base);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited before it was ready: {status}", self.name);
            }
            if let Ok(r) = reqwest::get(&ready).await {
                if r.status() == StatusCode::OK {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} never became ready",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no shutdown, no lease released by the process itself; only PostgreSQL
    /// seeing its connections close.
    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL the node");
        self.child.wait().expect("reap the node");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
    let mut nodes = vec![Node::start("node-a", &url)];
    nodes[0].ready().await;
    nodes.push(Node::start("node-b", &url));
    nodes.push(Node::start("node-c", &url));
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
