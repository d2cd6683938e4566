//! Group commit: the appends of many aggregates share one write, and a sequence another
//! writer already took fails only the append that lost it.

use futures::future::join_all;
use orderlog::store::reader::{Cursor, LogSignal};
use orderlog::store::writer::{EventWriter, NewEvent, WriteError};
use orderlog::store::Database;

use crate::helpers::*;

fn event(aggregate_id: &str, sequence: i64) -> NewEvent {
    NewEvent {
        aggregate_type: "test",
        aggregate_id: aggregate_id.to_owned(),
        sequence,
        event_type: "test.happened".to_owned(),
        event_version: "1.0".to_owned(),
        payload: format!(r#"{{"n":{sequence}}}"#),
        metadata: "{}".to_owned(),
    }
}

async fn a_taken_sequence_fails_only_its_own_append(backend: Backend) {
    let url = fresh_database(backend).await;
    let db = Database::connect(&url, 4).await.unwrap();
    db.migrate().await.unwrap();
    let writer = EventWriter::start(&db, LogSignal::default(), Default::default());
    writer.append(vec![event("taken", 1)], None).await.unwrap();

    // One thread: all three are queued before a committer runs, so they form one group.
    let results = join_all([
        writer.append(vec![event("a", 1), event("a", 2)], None),
        writer.append(vec![event("taken", 1)], None),
        writer.append(vec![event("b", 1)], None),
    ])
    .await;
    assert!(results[0].is_ok(), "{:?}", results[0]);
    assert!(
        matches!(results[1], Err(WriteError::Conflict)),
        "{:?}",
        results[1]
    );
    assert!(results[2].is_ok(), "{:?}", results[2]);

    let log = read_log(&db, Cursor::START, 4).await;
    let written: Vec<(&str, i64)> = log
        .iter()
        .map(|e| (e.aggregate_id.as_str(), e.sequence))
        .collect();
    assert_eq!(written, [("taken", 1), ("a", 1), ("a", 2), ("b", 1)]);
}

async fn appends_queued_together_share_one_write(backend: Backend) {
    let url = fresh_database(backend).await;
    let db = Database::connect(&url, 4).await.unwrap();
    db.migrate().await.unwrap();
    let writer = EventWriter::start(&db, LogSignal::default(), Default::default());

    let appends = (0..50).map(|i| writer.append(vec![event(&format!("order-{i}"), 1)], None));
    for result in join_all(appends).await {
        result.unwrap();
    }
    let log = read_log(&db, Cursor::START, 50).await;
    assert_eq!(log.len(), 50);
    // In queue order, each in its own place.
    let ids: Vec<String> = log.iter().map(|e| e.aggregate_id.clone()).collect();
    let expected: Vec<String> = (0..50).map(|i| format!("order-{i}")).collect();
    assert_eq!(ids, expected);
    if backend == Backend::Postgres {
        // One transaction for all fifty.
        let first = log[0].cursor.transaction_id;
        assert!(log.iter().all(|e| e.cursor.transaction_id == first));
    }
}

async fn an_append_still_queued_at_its_deadline_is_not_written(backend: Backend) {
    let url = fresh_database(backend).await;
    let db = Database::connect(&url, 4).await.unwrap();
    db.migrate().await.unwrap();
    let writer = EventWriter::start(&db, LogSignal::default(), Default::default());
    let past = tokio::time::Instant::now() - std::time::Duration::from_millis(1);
    let soon = tokio::time::Instant::now() + std::time::Duration::from_secs(60);

    let results = join_all([
        writer.append(vec![event("late", 1)], Some(past)),
        writer.append(vec![event("in-time", 1)], Some(soon)),
        writer.append(vec![event("unbounded", 1)], None),
    ])
    .await;
    assert!(
        matches!(results[0], Err(WriteError::Saturated)),
        "{:?}",
        results[0]
    );
    assert!(results[1].is_ok() && results[2].is_ok(), "{results:?}");
    let log = read_log(&db, Cursor::START, 2).await;
    let written: Vec<&str> = log.iter().map(|e| e.aggregate_id.as_str()).collect();
    assert_eq!(written, ["in-time", "unbounded"]);
}

async fn a_key_claimed_first_elsewhere_refuses_only_its_own_append(backend: Backend) {
    use orderlog::store::writer::KeyWrite;
    let url = fresh_database(backend).await;
    let db = Database::connect(&url, 4).await.unwrap();
    db.migrate().await.unwrap();
    let writer = EventWriter::start(&db, LogSignal::default(), Default::default());
    let claim = |key: &str| KeyWrite::Claim {
        key: key.to_owned(),
        request_hash: "h".to_owned(),
        answer: None,
        at: chrono::Utc::now(),
    };
    writer
        .append_with(vec![event("first", 1)], vec![claim("k")], Vec::new(), None)
        .await
        .unwrap();

    let results = join_all([
        writer.append_with(vec![event("second", 1)], vec![claim("k")], Vec::new(), None),
        writer.append_with(
            vec![event("other", 1)],
            vec![claim("k-other")],
            Vec::new(),
            None,
        ),
    ])
    .await;
    assert!(
        matches!(results[0], Err(WriteError::KeyTaken)),
        "{:?}",
        results[0]
    );
    assert!(results[1].is_ok(), "{:?}", results[1]);
    let log = read_log(&db, Cursor::START, 2).await;
    let written: Vec<&str> = log.iter().map(|e| e.aggregate_id.as_str()).collect();
    assert_eq!(
        written,
        ["first", "other"],
        "the losing claim's events are not written"
    );
}

#[tokio::test]
async fn a_key_claimed_first_elsewhere_refuses_only_its_own_append_sqlite() {
    a_key_claimed_first_elsewhere_refuses_only_its_own_append(Backend::Sqlite).await
}

#[tokio::test]
async fn a_key_claimed_first_elsewhere_refuses_only_its_own_append_postgres() {
    a_key_claimed_first_elsewhere_refuses_only_its_own_append(Backend::Postgres).await
}

#[tokio::test]
async fn an_append_still_queued_at_its_deadline_is_not_written_sqlite() {
    an_append_still_queued_at_its_deadline_is_not_written(Backend::Sqlite).await
}

#[tokio::test]
async fn an_append_still_queued_at_its_deadline_is_not_written_postgres() {
    an_append_still_queued_at_its_deadline_is_not_written(Backend::Postgres).await
}

#[tokio::test]
async fn a_taken_sequence_fails_only_its_own_append_sqlite() {
    a_taken_sequence_fails_only_its_own_append(Backend::Sqlite).await
}

#[tokio::test]
async fn a_taken_sequence_fails_only_its_own_append_postgres() {
    a_taken_sequence_fails_only_its_own_append(Backend::Postgres).await
}

#[tokio::test]
async fn appends_queued_together_share_one_write_sqlite() {
    appends_queued_together_share_one_write(Backend::Sqlite).await
}

#[tokio::test]
async fn appends_queued_together_share_one_write_postgres() {
    appends_queued_together_share_one_write(Backend::Postgres).await
}
