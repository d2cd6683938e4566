//! Invariant 1: the event log is append-only, and the database itself says so.

use sqlx::{Connection, Executor};

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(the_database_refuses_to_update_or_delete_events);

async fn the_database_refuses_to_update_or_delete_events(backend: Backend) {
    let app = spawn_app(backend).await;
    app.paid_order("ord-ao").await;
    let before = app.events("ord-ao").await;

    let attempts = [
        "UPDATE events SET event_type = 'order.tampered'",
        "UPDATE events SET payload = metadata WHERE sequence = 1",
        "DELETE FROM events WHERE sequence = 3",
        "DELETE FROM events",
    ];
    match backend {
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&app.database_url)
                .await
                .unwrap();
            for sql in attempts.iter().chain(&["TRUNCATE events"]) {
                let error = conn.execute(*sql).await.expect_err(sql);
                assert!(error.to_string().contains("append-only"), "{sql}: {error}");
            }
        }
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&app.database_url)
                .await
                .unwrap();
            for sql in attempts {
                let error = conn.execute(sql).await.expect_err(sql);
                assert!(error.to_string().contains("append-only"), "{sql}: {error}");
            }
        }
    }
    assert_eq!(app.events("ord-ao").await, before, "no event changed");
}
