//! Hostile input on every route of `orderlog::api::route_table()`: control characters
//! in path, query and body strings, huge numbers, wrong types, deep nesting, invalid
//! UTF-8, bytes after the JSON, oversize bodies. Whatever a client sends, the answer is
//! never a 5xx, every 4xx is the API's JSON error (`code` and `detail`), and a refused
//! request appends nothing: each request carries its own `X-Correlation-Id`, which every
//! event it appends would carry in its metadata, and the log is read at the end.

use std::collections::{BTreeMap, HashSet};

use orderlog::store::reader::{read_after, read_after_with_metadata, Cursor};
use orderlog::store::Database;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(no_hostile_input_breaks_the_api_or_reaches_the_log);

/// The body limit of the test servers (the default `ORDERLOG_BODY_LIMIT`).
const LIMIT: usize = 1024 * 1024;

/// Path segments, as sent (percent-encoded where a raw byte could not be).
const SEGMENTS: &[&str] = &[
    "%00",
    "a%00b",
    "%01",
    "%1B%5B31m",
    "%7F",
    "%C2%85",
    "%0A",
    "%09",
    "%0D",
    "%20",
    "%FF",
    "%C3%28",
    "%ED%A0%80",
    ".",
    "..",
    "%2E",
    "%2E%2E",
    "a%2Fb",
    "%2F",
    "%E2%80%AE",
    "%F0%9F%92%A9",
    "-1",
    "0",
];

/// JSON texts put in place of a string field.
const STRINGS: &[&str] = &[
    r#""\u0000""#,
    r#""a\u0000b""#,
    r#""\u0001""#,
    r#""\u001b[31m""#,
    r#""\u007f""#,
    r#""\u0085""#,
    r#""a\rb""#,
    r#""\ud800""#,
    r#""\udfff""#,
    r#""""#,
    r#"" ""#,
    r#"".""#,
    r#""..""#,
    r#""a/b""#,
    r#""\u202e""#,
    r#""\ufeff""#,
];

/// JSON texts put in place of a number field.
const NUMBERS: &[&str] = &[
    "1e400",
    "-1e400",
    "18446744073709551616",
    "-9223372036854775809",
    "9223372036854775807",
    "-9223372036854775808",
    "1.5",
    "-0",
    "0",
    "-1",
    "1e2",
    "4294967296",
];

/// JSON texts of the wrong type, put in place of any field.
const WRONG_TYPES: &[&str] = &["null", "true", "[]", "{}", r#""1""#, "1", r#"{"a": [1]}"#];

/// Whole bodies, valid or not as JSON, that no route accepts.
fn hostile_bodies() -> Vec<Vec<u8>> {
    let mut bodies: Vec<Vec<u8>> = [
        "",
        "null",
        "[]",
        "0",
        "\"x\"",
        "{",
        "}",
        "{}{}",
        "\u{feff}{}",
        "{\"a\":}",
        "nul",
        "{\"\u{0}\": 1}",
        "[1,]",
        "{\"a\" 1}",
        "\u{0}",
    ]
    .iter()
    .map(|b| b.as_bytes().to_vec())
    .collect();
    bodies.push(format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes());
    bodies.push(format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000)).into_bytes());
    bodies.push("[".repeat(100_000).into_bytes());
    bodies.push(b"\xff\xfe\x00{".to_vec());
    bodies.push(b"{\"reason\": \"\xc3\x28\"}".to_vec());
    bodies.push(b"{\"reason\": \"\xed\xa0\x80\"}".to_vec());
    bodies.push(vec![b'x'; LIMIT + 1]);
    bodies.push(format!("{{\"reason\": \"{}\"}}", "x".repeat(LIMIT)).into_bytes());
    bodies
}

/// A body each route's handler accepts, to be made hostile one field at a time.
fn template(method: &str, path: &str) -> Option<Value> {
    let body = match (method, path) {
        ("POST", "/v1/orders") => {
            let mut order = fixture("place_order.json", "hostile-new");
            order["shipping_address"]["line2"] = json!("Flat 2");
            order
        }
        ("POST", "/v1/orders/{order_id}/payments") => {
            json!({"payment_id": "pay-h", "amount": 5000, "method": "card"})
        }
        ("POST", "/v1/orders/{order_id}/payments/{payment_id}/fail") => {
            json!({"reason": "declined"})
        }
        ("POST", "/v1/orders/{order_id}/shipments") => json!({
            "shipment_id": "shp-h", "carrier": "UPS", "tracking_number": "1Z",
            "lines": [{"sku": "MUG-BLUE", "quantity": 1}],
        }),
        ("POST", "/v1/orders/{order_id}/cancel") => json!({"reason": "changed my mind"}),
        ("POST", "/v1/orders/{order_id}/refunds") => {
            json!({"refund_id": "ref-h", "amount": 1, "reason": "broken"})
        }
        ("POST", "/v1/inventory/{sku}/receipts") => json!({"quantity": 1}),
        ("POST", "/v1/inventory/{sku}/adjustments") => json!({"delta": 1, "reason": "count"}),
        ("POST", "/v1/subscriptions") => json!({
            "kind": "webhook", "url": "http://127.0.0.1:9/hook", "event_types": ["order.*"],
            "description": "d", "max_in_flight": 1, "from_position": 1,
        }),
        ("PATCH", "/v1/subscriptions/{id}") => json!({
            "state": "paused", "url": "http://127.0.0.1:9/other", "event_types": ["order.*"],
            "description": "d", "max_in_flight": 2,
        }),
        ("POST", "/v1/subscriptions/{id}/secret/rotate") => json!({"overlap": "1h"}),
        ("POST", "/v1/subscriptions/{id}/rewind") => json!({"position": 1}),
        ("POST", "/v1/tokens") => json!({
            "name": "hostile", "scopes": ["orders:read"], "expires_in": "1d", "rate": "10/s",
        }),
        _ => return None,
    };
    Some(body)
}

/// JSON pointers to every leaf (string, number, boolean) of `value`.
fn leaves(value: &Value, at: String, out: &mut Vec<String>) {
    match value {
        Value::Object(fields) => {
            for (key, field) in fields {
                leaves(field, format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                leaves(item, format!("{at}/{i}"), out);
            }
        }
        _ => out.push(at),
    }
}

/// `body` with the leaf at `pointer` replaced by the raw bytes `raw`.
fn with_leaf(body: &Value, pointer: &str, raw: &[u8]) -> Vec<u8> {
    const MARK: &str = "@@hostile@@";
    let mut marked = body.clone();
    *marked.pointer_mut(pointer).unwrap() = json!(MARK);
    let text = serde_json::to_vec(&marked).unwrap();
    let quoted = format!("\"{MARK}\"");
    let at = text
        .windows(quoted.len())
        .position(|w| w == quoted.as_bytes())
        .unwrap();
    [&text[..at], raw, &text[at + quoted.len()..]].concat()
}

/// Query strings for routes that read one.
fn hostile_queries() -> Vec<String> {
    let keys = [
        "status",
        "customer_id",
        "created_after",
        "created_before",
        "limit",
        "cursor",
        "at",
        "below",
        "from",
        "to",
        "currency",
        "types",
        "after",
        "event_id",
    ];
    let mut queries = Vec::new();
    for key in keys {
        for value in [
            "%00",
            "a%00",
            "%1B%5B31m",
            "%7F",
            "%C2%85",
            "%0A",
            "%FF",
            "%ED%A0%80",
            "99999999999999999999999999",
            "-9223372036854775809",
            "1e400",
        ] {
            queries.push(format!("{key}={value}"));
        }
        queries.push(format!("{key}={}", "9".repeat(5_000)));
    }
    let nul_id = hex::encode("2026-11-21T12:00:00.000000Z|a\u{0}");
    queries.extend([
        "cursor=007c00".to_owned(),
        "cursor=317c00".to_owned(),
        format!("cursor={nul_id}"),
        format!("status=paid&cursor={nul_id}"),
        "below=1000&cursor=317c00".to_owned(),
        format!("below=1000&cursor={}", hex::encode("1|..")),
        format!("cursor={}", hex::encode("\u{0}|\u{0}")),
        "from=2026-01-01&to=2026-01-02&currency=%00".to_owned(),
        "from=2026-01-01%00&to=2026-01-02".to_owned(),
        "event_id=00000000-0000-0000-0000-000000000000%00".to_owned(),
        "types=order.*%00".to_owned(),
        "after=1-1%00".to_owned(),
        "%00=1".to_owned(),
        "limit=1&limit=2".to_owned(),
        "limit".to_owned(),
        "=".to_owned(),
        "&&&".to_owned(),
    ]);
    queries
}

struct Walk<'a> {
    app: &'a TestApp,
    sent: usize,
    /// Correlation ids of the refused requests, and of the others.
    refused: HashSet<String>,
    accepted: HashSet<String>,
    statuses: BTreeMap<u16, usize>,
}

impl Walk<'_> {
    async fn send(&mut self, method: &str, path: &str, content_type: Option<&str>, body: Vec<u8>) {
        self.sent += 1;
        let correlation = format!("hostile-{}", self.sent);
        let mut headers = vec![("x-correlation-id", correlation.as_str())];
        if let Some(content_type) = content_type {
            headers.push(("content-type", content_type));
        }
        let preview = String::from_utf8_lossy(&body[..body.len().min(120)]).into_owned();
        let what = format!("{method} {path} ({} body bytes: {preview:?})", body.len());
        let r = self.app.raw(method, path, &headers, body).await;
        *self.statuses.entry(r.status.as_u16()).or_default() += 1;
        assert!(
            !r.status.is_server_error(),
            "{what} answered {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        );
        if r.status.is_client_error() {
            assert_eq!(r.content_type(), "application/json", "{what}: {}", r.status);
            let error = r.json();
            let said = |key: &str| error[key].as_str().is_some_and(|s| !s.is_empty());
            assert!(
                said("code") && said("detail"),
                "{what}: {} {error}",
                r.status
            );
            self.refused.insert(correlation);
        } else {
            self.accepted.insert(correlation);
        }
    }
}

/// The route's path with each `{param}` filled from `values`, except `hole`, which gets
/// `segment`.
fn fill(template: &str, values: &BTreeMap<&str, String>, hole: Option<(&str, &str)>) -> String {
    template
        .split('/')
        .map(
            |part| match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) => match hole {
                    Some((h, segment)) if h == name => segment.to_owned(),
                    _ => values
                        .get(name)
                        .unwrap_or_else(|| panic!("give `{{{name}}}` of {template} a value"))
                        .clone(),
                },
                None => part.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

async fn no_hostile_input_breaks_the_api_or_reaches_the_log(backend: Backend) {
    let app = spawn_app(backend).await;
    let db = Database::connect(&app.database_url, 2).await.unwrap();
    // The walk's resources, made by requests the log will know by their correlation id.
    let setup = |path: &str, body: Value| {
        app.client
            .post(app.url(path))
            .header("x-correlation-id", "setup")
            .json(&body)
            .send()
    };
    for (path, body) in [
        ("/v1/orders", fixture("place_order.json", "ord-h")),
        (
            "/v1/orders/ord-h/payments",
            json!({"payment_id": "pay-1", "amount": 5000}),
        ),
        ("/v1/orders/ord-h/payments/pay-1/capture", json!({})),
        ("/v1/inventory/SKU-H/receipts", json!({"quantity": 5})),
    ] {
        let r = setup(path, body).await.unwrap();
        assert!(
            r.status().is_success(),
            "{path}: {}",
            r.text().await.unwrap()
        );
    }
    let sub = expect_status(
        setup(
            "/v1/subscriptions",
            json!({"kind": "webhook", "url": "http://127.0.0.1:9/hook", "event_types": ["*"]}),
        )
        .await
        .unwrap(),
        StatusCode::CREATED,
    )
    .await;
    let sub = sub["id"].as_str().unwrap().to_owned();
    let event_id = app.event_ids("ord-h", |_| true).await[0].clone();
    let values: BTreeMap<&str, String> = [
        ("order_id", "ord-h".to_owned()),
        ("customer_id", "cust-h".to_owned()),
        ("payment_id", "pay-1".to_owned()),
        ("shipment_id", "shp-1".to_owned()),
        ("sku", "SKU-H".to_owned()),
        ("id", sub),
        ("event_id", event_id),
        // A projection's or a token's: one that does not exist, so that nothing is
        // rebuilt, stopped or revoked.
        ("name", "hostile-name".to_owned()),
    ]
    .into_iter()
    .collect();

    let mut routes = orderlog::api::route_table();
    // What deletes goes last, so that everything else meets existing resources.
    routes.sort_by_key(|r| r.method == reqwest::Method::DELETE);
    assert!(routes.len() > 30, "the walk covers the whole table");
    let mut walk = Walk {
        app: &app,
        sent: 0,
        refused: HashSet::new(),
        accepted: HashSet::new(),
        statuses: BTreeMap::new(),
    };
    let queries = hostile_queries();
    let json_type = Some("application/json");
    for route in &routes {
        let method = route.method.as_str();
        let body = template(method, &route.path);
        let valid_body = body
            .as_ref()
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        let filled = fill(&route.path, &values, None);

        // Each path parameter, one at a time.
        let params: Vec<&str> = route
            .path
            .split('/')
            .filter_map(|p| p.strip_prefix('{').and_then(|p| p.strip_suffix('}')))
            .collect();
        let long = "x".repeat(5_000);
        for param in &params {
            for segment in SEGMENTS.iter().copied().chain([long.as_str()]) {
                let path = fill(&route.path, &values, Some((param, segment)));
                walk.send(method, &path, json_type, valid_body.clone())
                    .await;
            }
        }

        // Query strings: all of them where a route reads its query, a few elsewhere.
        let reads_query = method == "GET";
        for query in queries
            .iter()
            .take(if reads_query { usize::MAX } else { 3 })
        {
            let path = format!("{filled}?{query}");
            walk.send(method, &path, json_type, valid_body.clone())
                .await;
        }

        // Whole bodies, under every content type a client might claim.
        for hostile in hostile_bodies() {
            walk.send(method, &filled, json_type, hostile).await;
        }
        if body.is_some() {
            walk.send(method, &filled, Some("text/plain"), valid_body.clone())
                .await;
            walk.send(method, &filled, None, valid_body.clone()).await;
            walk.send(
                method,
                &filled,
                Some("application/x-www-form-urlencoded"),
                b"a=1".to_vec(),
            )
            .await;
        }

        // One field at a time: control characters, huge numbers, wrong types, nesting.
        let Some(body) = body else { continue };
        let mut pointers = Vec::new();
        leaves(&body, String::new(), &mut pointers);
        let nested = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        let oversize = format!("\"{}\"", "x".repeat(LIMIT));
        let long_text = format!("\"{}\"", "x".repeat(10_000));
        for pointer in &pointers {
            let leaf = body.pointer(pointer).unwrap();
            let raws: Vec<Vec<u8>> = match leaf {
                Value::String(_) => STRINGS.iter().map(|s| s.as_bytes().to_vec()).collect(),
                Value::Number(_) => NUMBERS.iter().map(|s| s.as_bytes().to_vec()).collect(),
                _ => Vec::new(),
            }
            .into_iter()
            .chain(WRONG_TYPES.iter().map(|s| s.as_bytes().to_vec()))
            .chain([
                nested.clone().into_bytes(),
                oversize.clone().into_bytes(),
                long_text.clone().into_bytes(),
                b"\"\xff\xfe\"".to_vec(),
                b"\"a\x00b\"".to_vec(),
            ])
            .collect();
            for raw in raws {
                walk.send(method, &filled, json_type, with_leaf(&body, pointer, &raw))
                    .await;
            }
        }
        // Bytes after a valid body.
        for trailing in [&b"garbage"[..], b"{}", b"\x00", b"\xff", b" ]"] {
            let bytes = [valid_body.as_slice(), trailing].concat();
            walk.send(method, &filled, json_type, bytes).await;
        }
    }

    // No refused request appended anything; everything appended came from an accepted
    // one (or from the setup, or the engine's own processes). The log is read once the
    // reader sees all the database holds.
    app.projections_caught_up().await;
    let total = event_count(&db).await as usize;
    let log = eventually(
        "the whole log",
        std::time::Duration::from_secs(20),
        || async {
            let log = read_after_with_metadata(&db, Cursor::START, 100_000)
                .await
                .unwrap();
            if log.len() == total {
                Ok(log)
            } else {
                Err(format!("{} of {total} events", log.len()))
            }
        },
    )
    .await;
    assert_eq!(
        read_after(&db, Cursor::START, 100_000).await.unwrap().len(),
        total
    );
    for entry in &log {
        let metadata: Value = serde_json::from_str(entry.metadata.as_deref().unwrap()).unwrap();
        let correlation = metadata["correlation_id"].as_str().unwrap_or_default();
        let actor = metadata["actor"].as_str().unwrap_or_default();
        assert!(
            !walk.refused.contains(correlation),
            "a refused request appended {} to {}: {metadata}",
            entry.event_type,
            entry.aggregate_id
        );
        assert!(
            correlation == "setup"
                || walk.accepted.contains(correlation)
                || actor.starts_with("orderlog:"),
            "an event no request accounts for: {} {metadata}",
            entry.event_type
        );
    }
    assert!(
        walk.refused.len() > walk.accepted.len(),
        "{:?}",
        walk.statuses
    );
    // And the server is still well after all that.
    let status = app.projections_caught_up().await;
    for p in status["projections"].as_array().unwrap() {
        assert!(p["last_error"].is_null(), "{p}");
    }
    expect_status(app.get("/v1/orders/ord-h").await, StatusCode::OK).await;
}
