//! Invariant 4 at its root: the global log reader never skips an event, even one whose
//! transaction commits after a later position was already visible.

use orderlog::store::reader::{read_after, Cursor, LogEntry};
use orderlog::store::Database;
use sqlx::{Connection, Executor, PgConnection};

use crate::helpers::*;

async fn append(conn: &mut PgConnection, order_id: &str) {
    let payload = serde_json::json!({
        "type": "shipment.delivered", "order_id": order_id, "shipment_id": "s",
        "delivered_at": "2026-11-21T12:00:00Z"
    });
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
         VALUES ('order', $1, 1, 'shipment.delivered', '1.0', $2, '{}')",
    )
    .bind(order_id)
    .bind(payload)
    .execute(conn)
    .await
    .unwrap();
}

/// Reads until `n` events are visible (see [`read_log`]).
async fn read_n(db: &Database, from: Cursor, n: usize) -> Vec<(String, Cursor)> {
    ids_and_cursors(read_log(db, from, n).await)
}

async fn read_all(db: &Database, from: Cursor) -> Vec<(String, Cursor)> {
    ids_and_cursors(read_after(db, from, 100).await.unwrap())
}

fn ids_and_cursors(log: Vec<LogEntry>) -> Vec<(String, Cursor)> {
    log.into_iter()
        .map(|e| (e.aggregate_id, e.cursor))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_is_delivered_in_cursor_order_and_never_skipped() {
    let url = fresh_database(Backend::Postgres).await;
    let db = Database::connect(&url, 4).await.unwrap();
    db.migrate().await.unwrap();

    let mut first = PgConnection::connect(&url).await.unwrap();
    let mut second = PgConnection::connect(&url).await.unwrap();
    first.execute("BEGIN").await.unwrap();
    append(&mut first, "t1").await; // takes the lower position, stays open
    second.execute("BEGIN").await.unwrap();
    append(&mut second, "t2").await;
    second.execute("COMMIT").await.unwrap();

    // t2 is committed, but t1 might still commit below it: the reader waits.
    assert_eq!(
        read_all(&db, Cursor::START).await,
        vec![],
        "nothing is read past an open transaction"
    );

    first.execute("COMMIT").await.unwrap();
    let read = read_n(&db, Cursor::START, 2).await;
    let ids: Vec<&str> = read.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["t1", "t2"], "both, in transaction order");
    assert!(read[0].1 < read[1].1);
    assert!(read[0].1.position < read[1].1.position);

    // A reader that had stopped anywhere resumes without a gap or a repeat.
    assert_eq!(read_n(&db, read[0].1, 1).await, vec![read[1].clone()]);
    assert_eq!(read_all(&db, read[1].1).await, vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_commit_whose_position_is_higher_is_still_read_after_the_cursor_passed_it() {
    // The reverse race: the transaction holding the HIGHER position commits last.
    let url = fresh_database(Backend::Postgres).await;
    let db = Database::connect(&url, 4).await.unwrap();
    db.migrate().await.unwrap();

    let mut early = PgConnection::connect(&url).await.unwrap();
    let mut late = PgConnection::connect(&url).await.unwrap();
    late.execute("BEGIN").await.unwrap();
    late.execute("SELECT pg_current_xact_id()").await.unwrap(); // the lower transaction id
    early.execute("BEGIN").await.unwrap();
    append(&mut early, "early").await;
    append(&mut late, "late").await; // higher position, lower transaction id
    early.execute("COMMIT").await.unwrap();
    assert_eq!(read_all(&db, Cursor::START).await, vec![]);
    late.execute("COMMIT").await.unwrap();
    let ids: Vec<String> = read_n(&db, Cursor::START, 2)
        .await
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(ids, ["late", "early"], "cursor order is transaction order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqlite_reader_follows_positions() {
    let url = fresh_database(Backend::Sqlite).await;
    let app = spawn_app_on(&url, |_| {}).await;
    app.paid_order("s1").await;
    let db = Database::connect(&url, 2).await.unwrap();
    let all = read_after(&db, Cursor::START, 100).await.unwrap();
    assert_eq!(all.len(), 3);
    let rest = read_after(&db, all[0].cursor, 100).await.unwrap();
    assert_eq!(rest, all[1..].to_vec());
    assert_eq!(
        read_after(&db, all[0].cursor, 1).await.unwrap(),
        all[1..2].to_vec()
    );
}
