//! A real webhook receiver on 127.0.0.1 for delivery tests: it records every request
//! and answers as scripted (a status per request, then a default; optional delay).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::Value;

use crate::helpers::eventually;

#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: String,
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn webhook_id(&self) -> &str {
        self.header("webhook-id")
    }
}

#[derive(Default)]
struct Script {
    /// Statuses for the next requests, each with an optional `Retry-After` in seconds.
    next: VecDeque<(u16, Option<u64>)>,
    default: u16,
    delay: Duration,
    received: Vec<Received>,
    /// A small receiver: past this many requests at once, 503 at once.
    capacity: Option<usize>,
    in_flight: usize,
    /// Requests refused for want of capacity (not in `received`).
    turned_away: usize,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    /// A receiver answering `default` to every request.
    pub async fn start(default: u16) -> Receiver {
        let script = Arc::new(Mutex::new(Script {
            default,
            ..Script::default()
        }));
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(script.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { addr, script }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// The next requests get these statuses, in order; then the default again.
    pub fn answer_next(&self, statuses: &[u16]) {
        self.script
            .lock()
            .unwrap()
            .next
            .extend(statuses.iter().map(|s| (*s, None)));
    }

    /// The next request gets `status` with `Retry-After: seconds`.
    pub fn answer_next_retry_after(&self, status: u16, seconds: u64) {
        self.script
            .lock()
            .unwrap()
            .next
            .push_back((status, Some(seconds)));
    }

    pub fn answer_always(&self, status: u16) {
        self.script.lock().unwrap().default = status;
    }

    pub fn delay_each(&self, delay: Duration) {
        self.script.lock().unwrap().delay = delay;
    }

    /// Takes at most `capacity` requests at a time, each taking `delay`; the rest get
    /// 503 at once, as a receiver with a small pool or backlog does.
    pub fn small(&self, capacity: usize, delay: Duration) {
        let mut script = self.script.lock().unwrap();
        script.capacity = Some(capacity);
        script.delay = delay;
    }

    /// How many requests a small receiver turned away.
    pub fn turned_away(&self) -> usize {
        self.script.lock().unwrap().turned_away
    }

    pub fn received(&self) -> Vec<Received> {
        self.script.lock().unwrap().received.clone()
    }

    /// Waits until `done` holds of what arrived, or fails after `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        eventually(what, timeout, || async {
            let received = self.received();
            if done(&received) {
                Ok(received)
            } else {
                Err(format!("{} requests received", received.len()))
            }
        })
        .await
    }
}

async fn receive(
    State(script): State<Arc<Mutex<Script>>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;

    let delay = {
        let mut script = script.lock().unwrap();
        if script.capacity.is_some_and(|c| script.in_flight >= c) {
            script.turned_away += 1;
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        script.in_flight += 1;
        script.delay
    };
    // The slot is given back however the request ends: a sender that dies mid-request
    // (a killed node) has its handler dropped at the `sleep`, and a slot kept then would
    // leave a small receiver full for good.
    let slot = Slot(&script);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    drop(slot);
    let mut script = script.lock().unwrap();
    let (status, retry_after) = script.next.pop_front().unwrap_or((script.default, None));
    let raw = String::from_utf8_lossy(&body).into_owned();
    script.received.push(Received {
        at: Instant::now(),
        headers,
        body: serde_json::from_str(&raw).unwrap_or(Value::Null),
        raw,
        status,
    });
    let status = StatusCode::from_u16(status).unwrap();
    match retry_after {
        Some(seconds) => (status, [("retry-after", seconds.to_string())]).into_response(),
        None => status.into_response(),
    }
}

/// One of a small receiver's request slots, taken until dropped.
struct Slot<'a>(&'a Mutex<Script>);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut script = self.0.lock().unwrap_or_else(|e| e.into_inner());
        script.in_flight -= 1;
    }
}
