//! OpenTelemetry traces end to end: a real OTLP/HTTP collector in the test (axum, `POST
//! /v1/traces`, protobuf or JSON), the real server exporting to it, and a webhook
//! receiver. One command is one trace: the caller's traceparent, then the request span,
//! then its decide and append spans, and the webhook and NATS delivery attempts parented
//! by the traceparent stored on the event, whose own context each receiver is handed.
//!
//! The traced server runs as a child process (`orderlog serve` with the `OTEL_*`
//! variables), not in this binary: a process has one global tracing subscriber, which
//! this binary installs (logs into a sink) before its first server, and the span layer
//! belongs to that subscriber, in production as here (`main` installs it). A provider
//! per `Application` would need a second, dispatching tracer that exists only for
//! tests; running the binary as an operator does tests the real wiring instead, the
//! variables' parsing and the flush at shutdown included.

use std::collections::HashMap;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use serde_json::json;

use crate::helpers::{
    client_for, eventually, expect_status, fixture, fresh_database, test_secret_key, Backend,
    ADMIN_TOKEN,
};
use crate::on_both_backends;
use crate::receiver::Receiver;
use crate::settings::{free_port, orderlog_command};

/// One span as the collector got it: ids in lowercase hex ("" for no parent).
#[derive(Debug, Clone)]
struct Got {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    /// The traces of the span's links.
    linked_traces: Vec<String>,
}

#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Got>>>,
    /// The content types the exporter posted with.
    content_types: Arc<Mutex<Vec<String>>>,
    /// The `service.name` of each resource exported.
    services: Arc<Mutex<Vec<String>>>,
    /// Every export's body as posted, back to back: protobuf keeps strings as UTF-8, so
    /// a text any span carries is found in it as in the JSON.
    raw: Arc<Mutex<Vec<u8>>>,
}

impl Collector {
    /// An OTLP/HTTP receiver on 127.0.0.1; returns its base URL (`http://127.0.0.1:port`).
    async fn start() -> (Collector, String) {
        let collector = Collector::default();
        let app = Router::new()
            .route("/v1/traces", post(export))
            .with_state(collector.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (collector, url)
    }

    fn spans(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }
}

async fn export(State(collector): State<Collector>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    collector.raw.lock().unwrap().extend_from_slice(&body);
    let request = if content_type.starts_with("application/json") {
        match serde_json::from_slice::<ExportTraceServiceRequest>(&body) {
            Ok(request) => request,
            Err(_) => return StatusCode::BAD_REQUEST,
        }
    } else {
        match ExportTraceServiceRequest::decode(body) {
            Ok(request) => request,
            Err(_) => return StatusCode::BAD_REQUEST,
        }
    };
    collector.content_types.lock().unwrap().push(content_type);
    let mut spans = collector.spans.lock().unwrap();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .and_then(|a| a.value.as_ref()?.value.as_ref())
            .map(|v| format!("{v:?}"))
            .unwrap_or_default();
        collector.services.lock().unwrap().push(service);
        for scope in resource.scope_spans {
            for span in scope.spans {
                spans.push(Got {
                    name: span.name,
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    linked_traces: span
                        .links
                        .iter()
                        .map(|l| hex::encode(&l.trace_id))
                        .collect(),
                });
            }
        }
    }
    StatusCode::OK
}

/// `orderlog serve` in a child process, exporting spans as `otel` says.
struct Traced {
    child: Child,
    url: String,
    client: reqwest::Client,
    /// Its log lines (JSON), for failure messages; echoed on stderr with TEST_LOG set.
    logs: Arc<Mutex<Vec<String>>>,
}

impl Traced {
    async fn start(backend: Backend, otel: &[(&str, &str)]) -> Traced {
        let database_url = fresh_database(backend).await;
        let mut command = orderlog_command();
        // A developer's own OTEL_* would change what is exported.
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("OTEL_")) {
            command.env_remove(name);
        }
        command
            .arg("serve")
            .env("ORDERLOG_DATABASE_URL", &database_url)
            // Port 0, read back from the log: a port picked beforehand may be taken (by
            // another test's server, or another suite's) before the server binds it.
            .env("ORDERLOG_BIND", "127.0.0.1:0")
            .env("ORDERLOG_LOG_FORMAT", "json")
            // The default level, as servers run: with `info` logs, per-layer filters
            // once lost spans (`trace::Tracing::layer` says how), which `warn` hid.
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .env("ORDERLOG_BOOTSTRAP_TOKEN", ADMIN_TOKEN)
            .env("ORDERLOG_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
            .env("ORDERLOG_NATS_URL", crate::helpers::nats_url())
            // Batches leave every 100 ms, not every 5 s.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .envs(otel.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if backend == Backend::Postgres {
            command.env("ORDERLOG_SECRET_KEY", test_secret_key().to_base64());
        }
        let mut child = command.spawn().expect("the orderlog binary starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("a piped stderr");
        let lines = logs.clone();
        std::thread::spawn(move || {
            let echo = std::env::var_os("TEST_LOG").is_some();
            for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
                let Ok(line) = line else { break };
                if echo {
                    eprintln!("{line}");
                }
                lines.lock().unwrap().push(line);
            }
        });
        let client = client_for(ADMIN_TOKEN);
        let deadline = Instant::now() + Duration::from_secs(60);
        let url = loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "the server exited before serving: {status}\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
            let serving = logs.lock().unwrap().iter().find_map(|line| {
                let line: serde_json::Value = serde_json::from_str(line).ok()?;
                let fields = &line["fields"];
                (fields["message"] == "orderlog is serving")
                    .then(|| fields["addr"].as_str().map(str::to_owned))
                    .flatten()
            });
            if let Some(addr) = serving {
                break format!("http://{addr}");
            }
            assert!(
                Instant::now() < deadline,
                "the server never started serving"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let ready = client.get(format!("{url}/health")).send().await.unwrap();
        assert!(ready.status().is_success(), "/health: {}", ready.status());
        Traced {
            child,
            url,
            client,
            logs,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    fn logs(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// SIGTERM, as an orchestrator stops it: the server drains, flushes its last spans
    /// and exits. Returns how long that took.
    async fn stop(mut self) -> Duration {
        let started = Instant::now();
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(killed.success());
        let (status, logs) = tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = self.child.try_wait().unwrap() {
                    return (status, self.logs());
                }
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    panic!(
                        "the server did not stop within 30 s of SIGTERM:\n{}",
                        self.logs()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .await
        .unwrap();
        assert!(status.success(), "the server exited with {status}:\n{logs}");
        started.elapsed()
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        // A failed test must not leave its server running.
        let _ = self.child.kill();
    }
}

fn random_hex(bytes: usize) -> String {
    hex::encode(
        (0..bytes)
            .map(|_| rand::random::<u8>() | 1)
            .collect::<Vec<_>>(),
    )
}

/// The span's ancestors' names, nearest first, up to the trace's root.
fn ancestors<'a>(span: &'a Got, by_id: &HashMap<&str, &'a Got>) -> Vec<&'a str> {
    let mut names = Vec::new();
    let mut parent = span.parent_span_id.as_str();
    while let Some(up) = by_id.get(parent) {
        names.push(up.name.as_str());
        parent = up.parent_span_id.as_str();
    }
    names
}

async fn one_command_is_one_trace(backend: Backend, protocol: &str) {
    let (collector, endpoint) = Collector::start().await;
    let receiver = Receiver::start(200).await;
    let server = Traced::start(
        backend,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol),
            ("OTEL_SERVICE_NAME", "orderlog-test"),
        ],
    )
    .await;
    let subscription = json!({
        "kind": "webhook",
        "url": receiver.url(),
        "event_types": ["order.created"],
    });
    let r = server
        .client
        .post(server.url("/v1/subscriptions"))
        .json(&subscription)
        .send()
        .await
        .unwrap();
    expect_status(r, reqwest::StatusCode::CREATED).await;
    let prefix = format!("orderlog_traces_{}", uuid::Uuid::new_v4().simple());
    let r = server
        .client
        .post(server.url("/v1/subscriptions"))
        .json(&json!({"kind": "nats", "subject": prefix, "event_types": ["order.created"]}))
        .send()
        .await
        .unwrap();
    expect_status(r, reqwest::StatusCode::CREATED).await;

    // The caller's trace: the request continues it.
    let trace_id = random_hex(16);
    let caller_span = random_hex(8);
    let r = server
        .client
        .post(server.url("/v1/orders"))
        .header("traceparent", format!("00-{trace_id}-{caller_span}-01"))
        // Answered once every projection applied the events: their spans have ended
        // before the server is stopped.
        .header("x-wait-for", "all")
        .header("x-wait-timeout-ms", "30000")
        .json(&fixture("place_order.json", "ord-traced"))
        .send()
        .await
        .unwrap();
    expect_status(r, reqwest::StatusCode::CREATED).await;

    let r = server
        .client
        .get(server.url("/v1/orders/ord-traced/events"))
        .send()
        .await
        .unwrap();
    let events = expect_status(r, reqwest::StatusCode::OK).await;
    let stored = events["events"][0]["metadata"]["traceparent"]
        .as_str()
        .expect("the event stores a traceparent")
        .to_owned();
    let stored_parts: Vec<&str> = stored.split('-').collect();
    assert_eq!(stored_parts[1], trace_id, "stored {stored}");
    let stored_parent = stored_parts[2].to_owned();
    assert_ne!(
        stored_parent, caller_span,
        "the stored parent is our own span"
    );

    let delivered = receiver
        .wait_until(Duration::from_secs(30), "the webhook", |r| !r.is_empty())
        .await;
    let forwarded = delivered[0].header("traceparent").to_owned();
    let forwarded_parts: Vec<&str> = forwarded.split('-').collect();
    assert_eq!(forwarded_parts.len(), 4, "forwarded {forwarded:?}");
    assert_eq!(forwarded_parts[1], trace_id, "forwarded {forwarded}");

    let published = published_traceparent(&prefix).await;
    let published_parts: Vec<&str> = published.split('-').collect();
    assert_eq!(published_parts.len(), 4, "published {published:?}");
    assert_eq!(published_parts[1], trace_id, "published {published}");

    // The shutdown flushes whatever the batch processor still holds.
    server.stop().await;
    let spans = eventually("the spans of the command", Duration::from_secs(10), || {
        let spans = collector.spans();
        let trace_id = &trace_id;
        async move {
            let names: Vec<&str> = spans
                .iter()
                .filter(|s| &s.trace_id == trace_id)
                .map(|s| s.name.as_str())
                .collect();
            let all = ["request", "decide", "append", "delivery_attempt"];
            if all.iter().all(|n| names.contains(n)) {
                Ok(spans)
            } else {
                Err(format!("spans of the trace: {names:?}"))
            }
        }
    })
    .await;
    let content_types = collector.content_types.lock().unwrap().clone();
    let expected_type = match protocol {
        "http/json" => "application/json",
        _ => "application/x-protobuf",
    };
    assert!(
        content_types.iter().all(|t| t.starts_with(expected_type)),
        "{protocol}: {content_types:?}"
    );

    let services = collector.services.lock().unwrap().clone();
    assert!(
        services.iter().all(|s| s.contains("\"orderlog-test\"")),
        "OTEL_SERVICE_NAME names the service: {services:?}"
    );
    let traced: Vec<&Got> = spans.iter().filter(|s| s.trace_id == trace_id).collect();
    let by_id: HashMap<&str, &Got> = traced.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let requests: Vec<&&Got> = traced
        .iter()
        .filter(|s| s.name == "request" && s.parent_span_id == caller_span)
        .collect();
    assert_eq!(
        requests.len(),
        1,
        "one request span, the caller's child: {traced:#?}"
    );
    for span in traced
        .iter()
        .filter(|s| s.name == "decide" || s.name == "append")
    {
        assert!(
            ancestors(span, &by_id).contains(&"request"),
            "{} is not under the request: {traced:#?}",
            span.name
        );
    }
    let appended = by_id
        .get(stored_parent.as_str())
        .unwrap_or_else(|| panic!("the stored parent {stored_parent} was exported: {traced:#?}"));
    assert_eq!(appended.name, "append");
    let attempts: Vec<&&Got> = traced
        .iter()
        .filter(|s| s.name == "delivery_attempt")
        .collect();
    for attempt in &attempts {
        assert_eq!(
            attempt.parent_span_id, stored_parent,
            "each attempt continues the stored traceparent"
        );
    }
    // Each receiver is handed its own attempt's context: the webhook's, then NATS's.
    for handed in [forwarded_parts[2], published_parts[2]] {
        assert!(
            attempts.iter().any(|a| a.span_id == handed),
            "{handed} is no attempt's span: {attempts:#?}"
        );
    }
    assert_ne!(forwarded_parts[2], published_parts[2]);
    // Projections apply batches: a span per batch, the child of one command's append or
    // linked to each command whose events it applied.
    assert!(
        spans.iter().any(|s| s.name == "projection_apply"
            && (s.trace_id == trace_id || s.linked_traces.contains(&trace_id))),
        "no projection span belongs to the trace: {spans:#?}"
    );
}

/// The `traceparent` header of the one message published under `prefix`; the stream
/// is deleted after.
async fn published_traceparent(prefix: &str) -> String {
    let client = async_nats::connect(crate::helpers::nats_url())
        .await
        .unwrap_or_else(|e| panic!("NATS is not reachable: {e}; run `scripts/test`"));
    let jetstream = async_nats::jetstream::new(client);
    let stream_name = prefix.to_uppercase();
    let stream = eventually("the NATS message", Duration::from_secs(30), || async {
        match jetstream.get_stream(&stream_name).await {
            Ok(stream) if stream.cached_info().state.messages >= 1 => Ok(stream),
            Ok(_) => Err("an empty stream".to_owned()),
            Err(e) => Err(format!("{e:?}")),
        }
    })
    .await;
    let message = stream.get_raw_message(1).await.unwrap();
    let traceparent = message
        .headers
        .get("traceparent")
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default();
    jetstream.delete_stream(&stream_name).await.unwrap();
    traceparent
}

async fn one_command_is_one_trace_over_protobuf(backend: Backend) {
    one_command_is_one_trace(backend, "http/protobuf").await;
}

async fn one_command_is_one_trace_over_json(backend: Backend) {
    one_command_is_one_trace(backend, "http/json").await;
}

on_both_backends!(
    one_command_is_one_trace_over_protobuf,
    one_command_is_one_trace_over_json
);

/// Personal data reaches neither the server's log nor its spans, at the most verbose
/// level: an order with every personal field is placed, read, replayed, its events
/// listed, delivered to a webhook, and its customer erased; another is refused for a
/// malformed email. The receiver gets the data (it is there to leak); the log and the
/// collector never do.
async fn personal_data_reaches_neither_logs_nor_traces(backend: Backend) {
    use crate::privacy::{personal_order, EMAIL, NOTE, PHONE, STREET};
    const MALFORMED: &str = "grace.hopper.at.example.com";
    let (collector, endpoint) = Collector::start().await;
    let receiver = Receiver::start(200).await;
    let server = Traced::start(
        backend,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("RUST_LOG", "debug"),
        ],
    )
    .await;
    let post =
        |path: &str, body: serde_json::Value| server.client.post(server.url(path)).json(&body);
    let r = post(
        "/v1/subscriptions",
        json!({"kind": "webhook", "url": receiver.url(), "event_types": ["order.created"]}),
    )
    .send()
    .await
    .unwrap();
    expect_status(r, reqwest::StatusCode::CREATED).await;
    let order = personal_order("ord-private", "cust-private");
    for _ in 0..2 {
        // The second is a replay of the first, from its kept answer.
        let r = post("/v1/orders", order.clone())
            .header("idempotency-key", "k-private")
            .header("x-wait-for", "all")
            .header("x-wait-timeout-ms", "30000")
            .send()
            .await
            .unwrap();
        let placed = expect_status(r, reqwest::StatusCode::CREATED).await;
        assert_eq!(placed["email"], EMAIL, "{placed}");
    }
    let mut refused = personal_order("ord-refused", "cust-private");
    refused["email"] = json!(MALFORMED);
    let r = post("/v1/orders", refused).send().await.unwrap();
    expect_status(r, reqwest::StatusCode::UNPROCESSABLE_ENTITY).await;
    for path in ["/v1/orders/ord-private", "/v1/orders/ord-private/events"] {
        let r = server.client.get(server.url(path)).send().await.unwrap();
        let text = expect_status(r, reqwest::StatusCode::OK).await.to_string();
        assert!(text.contains(EMAIL), "{path} shows the data: {text}");
    }
    let sent = receiver
        .wait_until(Duration::from_secs(15), "the order delivered", |r| {
            r.iter().any(|r| r.status == 200)
        })
        .await;
    assert!(
        sent.iter().any(|r| r.raw.contains(EMAIL)),
        "the webhook carries it"
    );
    let r = post(
        "/v1/customers/cust-private/erase",
        json!({"reason": "test"}),
    )
    .send()
    .await
    .unwrap();
    expect_status(r, reqwest::StatusCode::OK).await;

    let logs = server.logs.clone();
    server.stop().await;
    let logs = logs.lock().unwrap().join("\n");
    let exported = String::from_utf8_lossy(&collector.raw.lock().unwrap()).into_owned();
    assert!(
        logs.lines().count() > 100 && logs.contains("ord-private"),
        "the debug log is written, and names the order: {logs}"
    );
    assert!(
        collector.spans().iter().any(|s| s.name == "append"),
        "the spans are exported"
    );
    for clear in [
        EMAIL,
        STREET,
        NOTE,
        PHONE,
        "Grace Hopper",
        "1 Billing Row",
        MALFORMED,
    ] {
        assert!(!logs.contains(clear), "`{clear}` is in the server's log");
        assert!(
            !exported.contains(clear),
            "`{clear}` is in an exported span"
        );
    }
}

on_both_backends!(personal_data_reaches_neither_logs_nor_traces);

/// Places 20 orders against a server whose collector is out of reach, each answered
/// within 2 s; then waits for `orderlog_trace_spans_dropped_total{reason}` to count
/// some, and for the server to stop within 15 s of SIGTERM.
async fn commands_go_on_without_the_collector(
    endpoint: &str,
    extra: &[(&str, &str)],
    reason: &str,
) {
    let mut otel = vec![("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)];
    otel.extend_from_slice(extra);
    let server = Traced::start(Backend::Sqlite, &otel).await;
    for i in 0..20 {
        let started = Instant::now();
        let r = server
            .client
            .post(server.url("/v1/orders"))
            .json(&fixture("place_order.json", &format!("ord-down-{i}")))
            .send()
            .await
            .unwrap();
        expect_status(r, reqwest::StatusCode::CREATED).await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "order {i} took {:?}",
            started.elapsed()
        );
    }
    let series = format!("orderlog_trace_spans_dropped_total{{reason=\"{reason}\"}}");
    let dropped = eventually("dropped spans counted", Duration::from_secs(15), || async {
        let text = server
            .client
            .get(server.url("/metrics"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        let count: f64 = text
            .lines()
            .filter(|l| l.starts_with(&series))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if count > 0.0 {
            Ok(count)
        } else {
            Err(format!("{series} is not above 0 yet"))
        }
    })
    .await;
    assert!(dropped >= 1.0);
    let stopping = server.stop().await;
    assert!(
        stopping < Duration::from_secs(15),
        "the stop took {stopping:?} without the collector"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_collector_down_commands_still_succeed_promptly() {
    // A port nothing listens on: every export is refused at once.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    commands_go_on_without_the_collector(&nowhere, &[], "export_failed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_collector_that_never_answers_the_queue_fills_and_commands_go_on() {
    // Accepts connections and never answers: each export waits out its timeout while
    // the spans of new commands fill the (small) queue.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for connection in silent.incoming() {
            held.push(connection);
        }
    });
    commands_go_on_without_the_collector(
        &endpoint,
        &[
            ("OTEL_BSP_MAX_QUEUE_SIZE", "16"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
        ],
        "queue_full",
    )
    .await;
}

#[test]
fn a_bad_otel_variable_stops_the_server_and_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("never.db");
    let url = format!("sqlite://{}", file.display());
    for (name, value) in [
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_RESOURCE_ATTRIBUTES", "team"),
    ] {
        let out = crate::settings::orderlog(
            &["serve"],
            &[
                ("ORDERLOG_DATABASE_URL", &url),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318"),
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                (name, value),
            ],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}={value}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid setting {name}={value:?}: ")),
            "{name}={value}: {stderr}"
        );
        assert!(!file.exists(), "{name}={value} created the database");
    }
}
