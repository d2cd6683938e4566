//! Exports of the log (`GET /v1/events/export`, `orderlog export`): row for row the log
//! as the reader sees it, in the documented schema; resumable from the cursor they end
//! with, with no gap and no repeat while writers run; filtered; personal data only
//! with `privacy:read`; and the real CLI's files parse.

use std::collections::HashSet;
use std::time::Duration;

use chrono::SecondsFormat;
use orderlog::auth::{Scope, Scopes};
use orderlog::store::reader::{read_after_with_metadata, Cursor, LogEntry};
use orderlog::store::Database;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::{Field, Row};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;
use crate::settings::orderlog;

on_both_backends!(
    an_ndjson_export_is_the_log_row_by_row,
    a_parquet_export_reads_back_row_by_row,
    an_export_resumed_from_its_cursor_has_no_gap_and_no_repeat_while_orders_are_placed,
    types_and_times_filter_and_bad_input_is_refused_with_its_code,
    personal_data_leaves_only_when_asked_for_with_privacy_read,
    sequences_give_one_row_per_order_in_log_order,
    the_cli_writes_files_that_parse_and_refuses_bad_input,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_stops_below_an_open_transaction_and_the_next_one_gets_its_late_commit() {
    use sqlx::{Connection, Executor, PgConnection};
    let url = fresh_database(Backend::Postgres).await;
    let app = spawn_app_on(&url, |_| {}).await;
    app.place_order("first").await;
    let (before, trailer) = export(&app, "").await;
    let cursor = trailer["cursor"].as_str().unwrap().to_owned();

    let append = |order_id: &'static str| {
        let payload = json!({
            "type": "shipment.delivered", "order_id": order_id, "shipment_id": "s",
            "delivered_at": "2026-11-21T12:00:00Z"
        });
        sqlx::query(
            "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
             VALUES ('order', $1, 1, 'shipment.delivered', '1.0', $2, '{}')",
        )
        .bind(order_id)
        .bind(payload)
    };
    let mut early = PgConnection::connect(&url).await.unwrap();
    let mut late = PgConnection::connect(&url).await.unwrap();
    early.execute("BEGIN").await.unwrap();
    append("t1").execute(&mut early).await.unwrap(); // the lower position, left open
    late.execute("BEGIN").await.unwrap();
    append("t2").execute(&mut late).await.unwrap();
    late.execute("COMMIT").await.unwrap();

    // t2 is committed, but t1 may still commit below it: the export stops before both.
    let (rows, trailer) = export_once(&app, &format!("after={cursor}")).await;
    assert!(
        rows.is_empty(),
        "nothing past an open transaction: {rows:?}"
    );
    assert_eq!(trailer["cursor"], cursor.as_str(), "the cursor waits too");

    early.execute("COMMIT").await.unwrap();
    let (rows, trailer) = export(&app, &format!("after={cursor}")).await;
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["aggregate_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["t1", "t2"],
        "both, in transaction order, after the first export"
    );
    let (rows, _) = export(
        &app,
        &format!("after={}", trailer["cursor"].as_str().unwrap()),
    )
    .await;
    assert!(rows.is_empty(), "and nothing twice");
    assert_eq!(before.len(), 1);
}

/// The whole log as the reader sees it (with metadata), once every event committed is
/// visible (another session's open transaction may hold a PostgreSQL reader back).
async fn whole_log(db: &Database) -> Vec<LogEntry> {
    let total = event_count(db).await as usize;
    eventually("the whole log visible", Duration::from_secs(10), || async {
        let mut all = Vec::new();
        let mut cursor = Cursor::START;
        loop {
            let batch = read_after_with_metadata(db, cursor, 1000).await.unwrap();
            let Some(last) = batch.last() else { break };
            cursor = last.cursor;
            all.extend(batch);
        }
        if all.len() >= total {
            Ok(all)
        } else {
            Err(format!("{} of {total}", all.len()))
        }
    })
    .await
}

/// An export's event lines and its trailer, checked to be the last line, alone.
fn ndjson(body: &str) -> (Vec<Value>, Value) {
    assert!(body.ends_with('\n'), "the export ends with a whole line");
    let mut lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let trailer = lines.pop().expect("a trailer line");
    assert!(
        trailer["cursor"].is_string(),
        "the last line is the trailer: {trailer}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l.get("cursor").is_none() && l["position"].is_i64()),
        "only the last line is a trailer"
    );
    (lines, trailer)
}

async fn export_once(app: &TestApp, query: &str) -> (Vec<Value>, Value) {
    export_as(&app.client, app, query).await
}

async fn export_as(client: &reqwest::Client, app: &TestApp, query: &str) -> (Vec<Value>, Value) {
    let r = client
        .get(app.url(&format!("/v1/events/export?{query}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    ndjson(&r.text().await.unwrap())
}

/// The export of `query` once its horizon has passed the whole log. An export's horizon
/// is the oldest transaction running anywhere on the server (as a rebuild's is), so
/// the server's own projection batches, and other tests' transactions, can hold it
/// back a moment: that is lag, never a gap.
async fn export(app: &TestApp, query: &str) -> (Vec<Value>, Value) {
    export_by(&app.client, app, query).await
}

async fn export_by(client: &reqwest::Client, app: &TestApp, query: &str) -> (Vec<Value>, Value) {
    let db = Database::connect(&app.database_url, 1).await.unwrap();
    let last = whole_log(&db)
        .await
        .last()
        .map_or(Cursor::START, |e| e.cursor);
    db.close().await;
    eventually(
        "an export up to the end of the log",
        Duration::from_secs(10),
        || async {
            let (rows, trailer) = export_as(client, app, query).await;
            if trailer["cursor"] == last.token() {
                Ok((rows, trailer))
            } else {
                Err(format!(
                    "ended at {} before {}",
                    trailer["cursor"],
                    last.token()
                ))
            }
        },
    )
    .await
}

/// As [`export`], as Parquet.
async fn export_parquet(app: &TestApp, query: &str) -> (Vec<Row>, Vec<(String, String)>) {
    let db = Database::connect(&app.database_url, 1).await.unwrap();
    let last = whole_log(&db)
        .await
        .last()
        .map_or(Cursor::START, |e| e.cursor);
    db.close().await;
    eventually(
        "a Parquet export up to the end of the log",
        Duration::from_secs(10),
        || async {
            let r = app
                .get(&format!("/v1/events/export?format=parquet&{query}"))
                .await;
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(
                r.headers()["content-type"],
                "application/vnd.apache.parquet"
            );
            let (rows, meta) = parquet_rows(r.bytes().await.unwrap().to_vec());
            if footer(&meta, "orderlog.cursor") == last.token() {
                Ok((rows, meta))
            } else {
                Err(format!("ended at {}", footer(&meta, "orderlog.cursor")))
            }
        },
    )
    .await
}

fn without_personal_data(entry: &LogEntry) -> Value {
    let mut payload: Value = serde_json::from_str(&entry.payload).unwrap();
    if entry.event_type == "order.created" {
        payload.as_object_mut().unwrap().remove("personal");
    }
    payload
}

fn metadata(entry: &LogEntry, key: &str) -> Value {
    let metadata: Value = serde_json::from_str(entry.metadata.as_deref().unwrap()).unwrap();
    metadata.get(key).cloned().unwrap_or(Value::Null)
}

fn micros(entry: &LogEntry) -> String {
    entry
        .recorded_at
        .to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A few orders of every stage, and an event of the old `order.created` shape.
async fn some_history(app: &TestApp) {
    app.paid_order("exp-1").await;
    app.place_order("exp-2").await;
    let r = app
        .post(
            "/v1/orders/exp-2/cancel",
            &json!({"reason": "changed my mind"}),
        )
        .await;
    expect_status(r, StatusCode::OK).await;
    app.place_order("exp-3").await;
    // Stored at 1.0 (before the charges): exported as 1.1, as every reader reads it.
    append_directly(
        app,
        "order",
        "exp-old",
        &[(
            "order.created".into(),
            "1.0".into(),
            json!({
                "type": "order.created", "order_id": "exp-old", "customer_id": "cust-7",
                "currency": "EUR",
                "lines": [{"sku": "MUG-BLUE", "quantity": 1,
                           "unit_price": {"amount": 700, "currency": "EUR"},
                           "line_total": {"amount": 700, "currency": "EUR"}}],
                "total": {"amount": 700, "currency": "EUR"},
                // Now: an order placed long ago would expire unpaid meanwhile.
                "placed_at": chrono::Utc::now().to_rfc3339()
            }),
        )],
    )
    .await;
}

async fn an_ndjson_export_is_the_log_row_by_row(backend: Backend) {
    let app = spawn_app(backend).await;
    some_history(&app).await;
    let db = Database::connect(&app.database_url, 2).await.unwrap();
    let log = whole_log(&db).await;
    assert_eq!(
        log.len(),
        7,
        "placed, paid, captured; placed, cancelled; placed; placed at 1.0"
    );
    let (rows, trailer) = export(&app, "format=ndjson").await;
    assert_eq!(rows.len(), log.len(), "one row per event");
    for (row, entry) in rows.iter().zip(&log) {
        assert_eq!(row["position"], entry.cursor.position);
        assert_eq!(row["transaction_id"], entry.cursor.transaction_id);
        assert_eq!(row["event_id"], entry.event_id.to_string());
        assert_eq!(row["event_type"], entry.event_type);
        assert_eq!(row["event_version"], entry.event_version, "upcast");
        assert_eq!(row["aggregate_type"], entry.aggregate_type);
        assert_eq!(row["aggregate_id"], entry.aggregate_id);
        assert_eq!(row["sequence"], entry.sequence);
        assert_eq!(row["recorded_at"], micros(entry));
        assert_eq!(row["payload"], without_personal_data(entry));
        for key in ["correlation_id", "causation_id", "traceparent"] {
            assert_eq!(row[key], metadata(entry, key), "{key}");
        }
        let payload: Value = serde_json::from_str(&entry.payload).unwrap();
        assert_eq!(row["order_id"], payload["order_id"]);
        assert_eq!(row["sku"], payload["sku"]);
    }
    assert_eq!(trailer["cursor"], log.last().unwrap().cursor.token());
    assert_eq!(trailer["events"], log.len());
    assert_eq!(trailer["schema"], "1");

    // The typed columns of an order placed through the API.
    let created = rows
        .iter()
        .find(|r| r["event_type"] == "order.created" && r["order_id"] == "exp-1")
        .unwrap();
    assert_eq!(created["customer_id"], "cust-42");
    assert_eq!(created["amount_minor"], 5000);
    assert_eq!(created["currency"], "USD");
    assert!(created["correlation_id"].is_string());
    let captured = rows
        .iter()
        .find(|r| r["event_type"] == "payment.captured")
        .unwrap();
    assert_eq!(captured["amount_minor"], 5000);
    assert_eq!(captured["customer_id"], Value::Null);
    // The old shape, upcast: its total is its subtotal.
    let old = rows.iter().find(|r| r["order_id"] == "exp-old").unwrap();
    assert_eq!(old["event_version"], "1.2");
    assert_eq!(old["payload"]["subtotal"]["amount"], 700);
    assert_eq!(old["amount_minor"], 700);
    assert_eq!(old["currency"], "EUR");

    // The same as the API's history of an order.
    let history = app.events("exp-1").await;
    let exported: Vec<&Value> = rows
        .iter()
        .filter(|r| r["aggregate_id"] == "exp-1")
        .collect();
    assert_eq!(exported.len(), history.len());
    for (row, event) in exported.iter().zip(&history) {
        assert_eq!(row["event_id"], event["event_id"]);
        assert_eq!(row["event_type"], event["event_type"]);
    }
    db.close().await;
}

fn text(row: &Row, name: &str) -> Option<String> {
    row.get_column_iter()
        .find(|(n, _)| n.as_str() == name)
        .and_then(|(_, f)| match f {
            Field::Str(s) => Some(s.clone()),
            Field::Null => None,
            other => panic!("{name} is {other:?}"),
        })
}

fn long(row: &Row, name: &str) -> Option<i64> {
    row.get_column_iter()
        .find(|(n, _)| n.as_str() == name)
        .and_then(|(_, f)| match f {
            Field::Long(n) => Some(*n),
            Field::TimestampMicros(n) => Some(*n),
            Field::Null => None,
            other => panic!("{name} is {other:?}"),
        })
}

/// A Parquet file's rows and its footer's `orderlog.*` metadata.
fn parquet_rows(bytes: Vec<u8>) -> (Vec<Row>, Vec<(String, String)>) {
    let reader = SerializedFileReader::new(bytes::Bytes::from(bytes)).expect("a Parquet file");
    let footer = reader
        .metadata()
        .file_metadata()
        .key_value_metadata()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|kv| (kv.key, kv.value.unwrap_or_default()))
        .collect();
    let rows = reader
        .get_row_iter(None)
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    (rows, footer)
}

fn footer<'a>(footer: &'a [(String, String)], key: &str) -> &'a str {
    footer
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{key} in the footer: {footer:?}"))
}

async fn a_parquet_export_reads_back_row_by_row(backend: Backend) {
    let app = spawn_app(backend).await;
    some_history(&app).await;
    let db = Database::connect(&app.database_url, 2).await.unwrap();
    let log = whole_log(&db).await;
    let r = app.get("/v1/events/export?format=parquet").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.apache.parquet"
    );
    let (rows, meta) = parquet_rows(r.bytes().await.unwrap().to_vec());
    assert_eq!(rows.len(), log.len());
    for (row, entry) in rows.iter().zip(&log) {
        assert_eq!(long(row, "position"), Some(entry.cursor.position));
        assert_eq!(
            long(row, "transaction_id"),
            Some(entry.cursor.transaction_id)
        );
        assert_eq!(text(row, "event_id"), Some(entry.event_id.to_string()));
        assert_eq!(text(row, "event_type").as_deref(), Some(&*entry.event_type));
        assert_eq!(
            text(row, "event_version").as_deref(),
            Some(&*entry.event_version)
        );
        assert_eq!(
            text(row, "aggregate_type").as_deref(),
            Some(&*entry.aggregate_type)
        );
        assert_eq!(
            text(row, "aggregate_id").as_deref(),
            Some(&*entry.aggregate_id)
        );
        assert_eq!(long(row, "sequence"), Some(entry.sequence));
        assert_eq!(
            long(row, "recorded_at"),
            Some(entry.recorded_at.timestamp_micros())
        );
        let payload: Value = serde_json::from_str(&text(row, "payload").unwrap()).unwrap();
        assert_eq!(payload, without_personal_data(entry));
        for key in ["correlation_id", "causation_id", "traceparent"] {
            assert_eq!(
                text(row, key).map(Value::String).unwrap_or(Value::Null),
                metadata(entry, key),
                "{key}"
            );
        }
        let stored: Value = serde_json::from_str(&entry.payload).unwrap();
        assert_eq!(
            text(row, "order_id")
                .map(Value::String)
                .unwrap_or(Value::Null),
            stored["order_id"]
        );
    }
    let created = rows
        .iter()
        .find(|r| {
            text(r, "event_type").as_deref() == Some("order.created")
                && text(r, "order_id").as_deref() == Some("exp-1")
        })
        .unwrap();
    assert_eq!(text(created, "customer_id").as_deref(), Some("cust-42"));
    assert_eq!(long(created, "amount_minor"), Some(5000));
    assert_eq!(text(created, "currency").as_deref(), Some("USD"));
    assert_eq!(long(created, "quantity"), None);
    assert_eq!(
        footer(&meta, "orderlog.cursor"),
        log.last().unwrap().cursor.token()
    );
    assert_eq!(footer(&meta, "orderlog.schema"), "1");
    db.close().await;
}

async fn an_export_resumed_from_its_cursor_has_no_gap_and_no_repeat_while_orders_are_placed(
    backend: Backend,
) {
    let app = std::sync::Arc::new(spawn_app(backend).await);
    app.place_order("before-1").await;
    let writer = {
        let app = app.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                app.place_order(&format!("during-{i}")).await;
            }
        })
    };
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = Cursor::START;
    let mut exports = 0;
    let mut while_writing = 0;
    // Twice at least while the writer runs (the parquet export alternates with the
    // NDJSON one), then until everything committed has been exported.
    let db = Database::connect(&app.database_url, 2).await.unwrap();
    loop {
        let done_writing = writer.is_finished();
        if !done_writing {
            while_writing += 1;
        }
        let (ids, next) = if exports % 2 == 0 {
            let (rows, trailer) = export_once(&app, &format!("after={}", cursor.token())).await;
            let ids = rows
                .iter()
                .map(|r| r["event_id"].as_str().unwrap().to_owned())
                .collect();
            (
                ids,
                Cursor::parse_token(trailer["cursor"].as_str().unwrap()).unwrap(),
            )
        } else {
            let r = app
                .get(&format!(
                    "/v1/events/export?format=parquet&after={}",
                    cursor.token()
                ))
                .await;
            assert_eq!(r.status(), StatusCode::OK);
            let (rows, meta) = parquet_rows(r.bytes().await.unwrap().to_vec());
            let ids = rows.iter().map(|r| text(r, "event_id").unwrap()).collect();
            (
                ids,
                Cursor::parse_token(footer(&meta, "orderlog.cursor")).unwrap(),
            )
        };
        assert!(next >= cursor, "the cursor never goes back");
        seen.extend::<Vec<String>>(ids);
        cursor = next;
        exports += 1;
        if done_writing && exports >= 2 && seen.len() as i64 == event_count(&db).await {
            break;
        }
        assert!(exports < 500, "the exports never caught up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer.await.unwrap();
    assert!(
        while_writing >= 2,
        "exported twice at least while orders were placed ({while_writing})"
    );
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no event exported twice");
    let log: Vec<String> = whole_log(&db)
        .await
        .iter()
        .map(|e| e.event_id.to_string())
        .collect();
    assert_eq!(seen, log, "every event, once, in log order");
    db.close().await;
}

async fn types_and_times_filter_and_bad_input_is_refused_with_its_code(backend: Backend) {
    let app = spawn_app(backend).await;
    app.paid_order("t-1").await;
    let db = Database::connect(&app.database_url, 2).await.unwrap();
    let first = whole_log(&db).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let between = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    app.paid_order("t-2").await;
    let log = whole_log(&db).await;

    let (rows, trailer) = export(&app, "types=payment.*").await;
    let types: Vec<&str> = rows
        .iter()
        .map(|r| r["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "payment.attempted",
            "payment.captured",
            "payment.attempted",
            "payment.captured"
        ]
    );
    assert_eq!(
        trailer["cursor"],
        log.last().unwrap().cursor.token(),
        "the cursor passes what the filter left out"
    );
    let (rows, _) = export(&app, "types=order.created,payment.captured").await;
    assert_eq!(rows.len(), 4);

    let at = between.to_rfc3339_opts(SecondsFormat::Micros, true);
    let (rows, _) = export(&app, &format!("since={}", at.replace('+', "%2B"))).await;
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["aggregate_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), log.len() - first.len());
    assert!(ids.iter().all(|id| *id == "t-2"), "{ids:?}");
    let (rows, _) = export(&app, &format!("until={at}")).await;
    assert_eq!(rows.len(), first.len());
    assert!(rows.iter().all(|r| r["aggregate_id"] == "t-1"));
    let (rows, _) = export(&app, "since=2000-01-01&until=2000-01-02").await;
    assert!(rows.is_empty());

    for (query, status, code, field) in [
        (
            "format=csv",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "format",
        ),
        (
            "shape=orders",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "shape",
        ),
        (
            "after=12",
            StatusCode::BAD_REQUEST,
            "invalid_cursor",
            "after",
        ),
        (
            "since=yesterday",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "since",
        ),
        (
            "until=2026-13-01",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "until",
        ),
        (
            "types=orders.*",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "types",
        ),
        (
            "colour=red",
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "colour",
        ),
    ] {
        let r = app.get(&format!("/v1/events/export?{query}")).await;
        let body = expect_error(r, status, code).await;
        assert_eq!(body["field"], field, "{query}: {body}");
    }
    db.close().await;
}

async fn personal_data_leaves_only_when_asked_for_with_privacy_read(backend: Backend) {
    let app = spawn_app(backend).await;
    app.place_order("p-1").await;
    let address = |rows: &[Value]| -> Value {
        rows.iter()
            .find(|r| r["event_type"] == "order.created")
            .unwrap()["payload"]
            .get("shipping_address")
            .cloned()
            .unwrap_or(Value::Null)
    };
    let (rows, _) = export(&app, "").await;
    assert_eq!(address(&rows), Value::Null, "cut without the flag");
    let created = rows
        .iter()
        .find(|r| r["event_type"] == "order.created")
        .unwrap();
    assert_eq!(created["payload"]["order_id"], "p-1", "the rest is kept");
    let (rows, _) = export(&app, "include_personal_data=true").await;
    assert_eq!(address(&rows)["name"], "Ada Lovelace");

    let token = |name: &str, scopes: Scopes| {
        let app = &app;
        let name = name.to_owned();
        async move {
            let body = json!({"name": name, "scopes": scopes.names()});
            let created =
                expect_status(app.post("/v1/tokens", &body).await, StatusCode::CREATED).await;
            client_for(created["token"].as_str().unwrap())
        }
    };
    let reader = token("exporter", Scopes::of([Scope::EventsRead])).await;
    let r = reader
        .get(app.url("/v1/events/export?include_personal_data=true"))
        .send()
        .await
        .unwrap();
    let body = expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(body["field"], "privacy:read");
    let r = reader
        .get(app.url("/v1/events/export?format=parquet&include_personal_data=true"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = reader
        .get(app.url("/v1/events/export"))
        .send()
        .await
        .unwrap();
    let (rows, _) = ndjson(&r.text().await.unwrap());
    assert_eq!(address(&rows), Value::Null);

    let privacy = token(
        "privacy-exporter",
        Scopes::of([Scope::EventsRead, Scope::PrivacyRead]),
    )
    .await;
    let (rows, _) = export_by(&privacy, &app, "include_personal_data=true").await;
    assert_eq!(address(&rows)["city"], "London");
    let (rows, _) = export_parquet(&app, "").await;
    let payload = rows
        .iter()
        .find(|r| text(r, "event_type").as_deref() == Some("order.created"))
        .and_then(|r| text(r, "payload"))
        .unwrap();
    assert!(!payload.contains("Lovelace"), "{payload}");

    // Without events:read, the route's own scope, the gate refuses first.
    let other = token(
        "orders-only",
        Scopes::of([Scope::OrdersRead, Scope::PrivacyRead]),
    )
    .await;
    let r = other
        .get(app.url("/v1/events/export"))
        .send()
        .await
        .unwrap();
    expect_error(r, StatusCode::FORBIDDEN, "forbidden").await;
}

async fn sequences_give_one_row_per_order_in_log_order(backend: Backend) {
    let app = spawn_app(backend).await;
    app.paid_order("s-1").await;
    app.place_order("s-2").await;
    let r = app
        .post("/v1/orders/s-2/cancel", &json!({"reason": "no"}))
        .await;
    expect_status(r, StatusCode::OK).await;
    let (_, all) = export(&app, "").await;
    let body = app
        .get("/v1/events/export?shape=sequences&types=order.*,payment.*")
        .await
        .text()
        .await
        .unwrap();
    let mut lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let trailer = lines.pop().unwrap();
    assert_eq!(trailer["cursor"], all["cursor"]);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["order_id"], "s-1");
    assert_eq!(lines[0]["customer_id"], "cust-42");
    assert_eq!(lines[0]["currency"], "USD");
    assert_eq!(
        lines[0]["event_types"],
        json!(["order.created", "payment.attempted", "payment.captured"])
    );
    assert_eq!(lines[0]["amounts_minor"], json!([5000, 5000, 5000]));
    assert_eq!(lines[0]["recorded_ats"].as_array().unwrap().len(), 3);
    assert_eq!(
        lines[1]["event_types"],
        json!(["order.created", "order.cancelled"])
    );
    assert_eq!(lines[1]["amounts_minor"], json!([5000, null]));

    let (rows, meta) = export_parquet(&app, "shape=sequences&types=order.*,payment.*").await;
    assert_eq!(footer(&meta, "orderlog.shape"), "sequences");
    assert_eq!(rows.len(), 2);
    assert_eq!(text(&rows[0], "order_id").as_deref(), Some("s-1"));
    assert_eq!(long(&rows[0], "events"), Some(3));
    let list = rows[1]
        .get_column_iter()
        .find(|(n, _)| n.as_str() == "amounts_minor")
        .map(|(_, f)| match f {
            Field::ListInternal(list) => list
                .elements()
                .iter()
                .map(|e| match e {
                    Field::Long(n) => json!(n),
                    Field::Null => Value::Null,
                    other => panic!("an amount is {other:?}"),
                })
                .collect::<Vec<_>>(),
            other => panic!("amounts_minor is {other:?}"),
        })
        .unwrap();
    assert_eq!(list, vec![json!(5000), Value::Null]);
}

async fn the_cli_writes_files_that_parse_and_refuses_bad_input(backend: Backend) {
    let app = spawn_app(backend).await;
    some_history(&app).await;
    let db = Database::connect(&app.database_url, 2).await.unwrap();
    let log = whole_log(&db).await;
    let dir = tempfile::tempdir().unwrap();
    // The key the test server seals with (SQLite's is in its key file): the CLI opens the
    // personal data with it.
    let key = test_secret_key().to_base64();
    let mut env = vec![("ORDERLOG_DATABASE_URL", app.database_url.as_str())];
    if backend == Backend::Postgres {
        env.push(("ORDERLOG_SECRET_KEY", key.as_str()));
    }

    let file = dir.path().join("log.parquet");
    let last = log.last().unwrap().cursor.token();
    // Run again while another transaction holds the horizon back (see `export`).
    let (stderr, rows, meta) = eventually("a whole CLI export", Duration::from_secs(10), || {
        let out = orderlog(
            &[
                "export",
                "--format",
                "parquet",
                "--out",
                file.to_str().unwrap(),
            ],
            &env,
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        assert!(
            out.stdout.is_empty(),
            "a file export prints nothing on stdout"
        );
        assert!(!dir.path().join("log.parquet.partial").exists());
        let (rows, meta) = parquet_rows(std::fs::read(&file).unwrap());
        let done = footer(&meta, "orderlog.cursor") == last;
        async move {
            if done {
                Ok((stderr, rows, meta))
            } else {
                Err(stderr)
            }
        }
    })
    .await;
    assert!(
        stderr.contains(&format!("resume with --after {last}")),
        "{stderr}"
    );
    assert_eq!(rows.len(), log.len());
    assert_eq!(footer(&meta, "orderlog.cursor"), last);
    assert_eq!(long(&rows[0], "position"), Some(log[0].cursor.position));

    // JSON lines on stdout, from a cursor: the rest of the log.
    let middle = log[log.len() / 2].cursor.token();
    let (rows, trailer) = eventually("a whole CLI export", Duration::from_secs(10), || {
        let out = orderlog(
            &[
                "export",
                "--format",
                "jsonl",
                "--after",
                &middle,
                "--types",
                "order.*,payment.*",
            ],
            &env,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (rows, trailer) = ndjson(&String::from_utf8(out.stdout).unwrap());
        let done = trailer["cursor"] == last;
        async move {
            if done {
                Ok((rows, trailer))
            } else {
                Err(trailer)
            }
        }
    })
    .await;
    let expected: Vec<String> = log[log.len() / 2 + 1..]
        .iter()
        .filter(|e| e.event_type.starts_with("order.") || e.event_type.starts_with("payment."))
        .map(|e| e.event_id.to_string())
        .collect();
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, expected);
    assert_eq!(trailer["cursor"], last);
    let created = rows
        .iter()
        .find(|r| r["aggregate_id"] == "exp-3" && r["event_type"] == "order.created")
        .unwrap();
    assert!(created["payload"].get("personal").is_none());
    assert_eq!(created["payload"]["order_id"], "exp-3");

    // With personal data: the same rows, the address kept.
    let out = orderlog(
        &[
            "export",
            "--format",
            "jsonl",
            "--after",
            &middle,
            "--include-personal-data",
        ],
        &env,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (rows, _) = ndjson(&String::from_utf8(out.stdout).unwrap());
    let created = rows
        .iter()
        .find(|r| r["aggregate_id"] == "exp-3" && r["event_type"] == "order.created")
        .unwrap();
    assert_eq!(
        created["payload"]["shipping_address"]["postal_code"],
        "SW1Y 4JH"
    );

    for (args, says) in [
        (vec!["export", "--format", "csv"], "not a format"),
        (
            vec!["export", "--format", "jsonl", "--after", "x-1"],
            "not a cursor",
        ),
        (
            vec!["export", "--format", "jsonl", "--since", "soon"],
            "not a time",
        ),
        (
            vec!["export", "--format", "jsonl", "--types", "nope.*"],
            "matches no event type",
        ),
        (
            vec!["export", "--format", "jsonl", "--shape", "orders"],
            "not a shape",
        ),
    ] {
        let out = orderlog(&args, &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    db.close().await;
}
