//! Rebuilds end or say why, and the serving view keeps following the log while its
//! successor is rebuilt: a rebuild that fails on an event stops `failed` with that event
//! and is retried or skipped like a live failure, and an order placed during a long
//! rebuild is answered before the switch and after it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use orderlog::app::Overrides;
use orderlog::projections::runner::{FaultHook, Projections, RunnerError};
use orderlog::projections::Envelope;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    a_rebuild_that_fails_on_an_event_stops_failed_and_a_retry_finishes_it,
    skipping_the_event_a_rebuild_failed_on_finishes_the_rebuild,
    the_serving_view_keeps_following_the_log_while_its_successor_rebuilds,
    the_cli_rebuild_of_a_failing_projection_ends_with_its_error,
    a_rebuild_after_a_live_skip_skips_the_event_again_and_equals_the_live_view,
);

/// Fails `projection` on the events of order `order_id` while `on` is set. The live
/// group has applied them before it is set, so only a rebuild meets the fault.
fn fail_on(projection: &'static str, order_id: &'static str, on: Arc<AtomicBool>) -> FaultHook {
    Arc::new(move |name: &str, event: &Envelope| {
        name == projection && event.entry.aggregate_id == order_id && on.load(Ordering::SeqCst)
    })
}

/// Waits until `name` serves `generation` with no rebuild under way.
async fn serving_generation(app: &TestApp, name: &str, generation: i64) {
    let what = format!("{name} to serve generation {generation}");
    eventually(&what, Duration::from_secs(15), || async {
        let status = projection(app, name).await;
        if status["generation"] == generation && status["rebuild"].is_null() {
            Ok(())
        } else {
            Err(status)
        }
    })
    .await;
}

async fn projection(app: &TestApp, name: &str) -> Value {
    expect_status(
        app.get(&format!("/v1/admin/projections/{name}")).await,
        StatusCode::OK,
    )
    .await
}

async fn wait_for_state(app: &TestApp, name: &str, state: &str) -> Value {
    let what = format!("{name} to become {state}");
    eventually(&what, Duration::from_secs(15), || async {
        let status = projection(app, name).await;
        if status["state"] == state {
            Ok(status)
        } else {
            Err(status)
        }
    })
    .await
}

async fn with_poison(backend: Backend, name: &'static str) -> (TestApp, Arc<AtomicBool>) {
    let url = fresh_database(backend).await;
    let on = Arc::new(AtomicBool::new(false));
    let overrides = Overrides {
        fault: Some(fail_on(name, "poison", on.clone())),
        ..Overrides::default()
    };
    let app = spawn_app_with(&url, |_| {}, overrides).await;
    app.place_order("before").await;
    app.place_order("poison").await;
    app.place_order("after").await;
    app.projections_caught_up().await;
    on.store(true, Ordering::SeqCst);
    (app, on)
}

async fn a_rebuild_that_fails_on_an_event_stops_failed_and_a_retry_finishes_it(backend: Backend) {
    let (app, on) = with_poison(backend, "shipping").await;
    let before = app.read_side().await;
    let r = app
        .post_empty("/v1/admin/projections/shipping/rebuild")
        .await;
    expect_status(r, StatusCode::ACCEPTED).await;

    // Within its retries, the rebuild stops on the event and says why.
    let failed = wait_for_state(&app, "shipping", "failed").await;
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("injected fault"),
        "{failed}"
    );
    let poison = &app.events("poison").await[0];
    assert_eq!(failed["failed_event"]["event_id"], poison["event_id"]);
    assert_eq!(
        failed["failed_event"]["position"],
        poison["global_position"]
    );
    assert_eq!(failed["generation"], 1, "the old generation still serves");
    assert_eq!(failed["rebuild"]["generation"], 2);
    // It stays failed, saying so, rather than starting over silently.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let still = projection(&app, "shipping").await;
    assert_eq!(still["state"], "failed", "{still}");
    assert_eq!(still["failed_event"], failed["failed_event"]);

    // A retry before the fix fails again on the same event.
    let r = app.post_empty("/v1/admin/projections/shipping/retry").await;
    expect_status(r, StatusCode::OK).await;
    let again = wait_for_state(&app, "shipping", "failed").await;
    assert_eq!(again["failed_event"], failed["failed_event"]);

    // The fix is deployed: a retry finishes the rebuild, which equals the live view.
    on.store(false, Ordering::SeqCst);
    let r = app.post_empty("/v1/admin/projections/shipping/retry").await;
    expect_status(r, StatusCode::OK).await;
    app.projections_caught_up().await;
    let done = projection(&app, "shipping").await;
    assert_eq!(done["generation"], 2, "{done}");
    assert!(done["rebuild"].is_null() && done["last_error"].is_null());
    assert_eq!(done["skipped_events"], 0);
    assert_eq!(app.read_side().await, before);
    let r = app.post_empty("/v1/admin/projections/shipping/retry").await;
    expect_error(r, StatusCode::CONFLICT, "projection_state_conflict").await;
}

async fn skipping_the_event_a_rebuild_failed_on_finishes_the_rebuild(backend: Backend) {
    let (app, _on) = with_poison(backend, "order_summary").await;
    let r = app
        .post_empty("/v1/admin/projections/order_summary/rebuild")
        .await;
    expect_status(r, StatusCode::ACCEPTED).await;
    let failed = wait_for_state(&app, "order_summary", "failed").await;
    assert_eq!(failed["skipped_events"], 0);

    let r = app
        .post_empty("/v1/admin/projections/order_summary/skip")
        .await;
    let status = expect_status(r, StatusCode::OK).await;
    assert_eq!(
        status["skipped_events"], 1,
        "the skip is recorded and visible"
    );
    app.projections_caught_up().await;
    let done = projection(&app, "order_summary").await;
    assert_eq!(done["generation"], 2, "{done}");
    assert!(done["rebuild"].is_null());
    assert_eq!(done["skipped_events"], 1);
    // The rebuilt list went past the skipped order, and follows the log.
    app.place_order("later").await;
    app.projections_caught_up().await;
    let orders = expect_status(app.get("/v1/orders").await, StatusCode::OK).await;
    let mut ids: Vec<&str> = orders["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["order_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["after", "before", "later"]);
    let r = app
        .post_empty("/v1/admin/projections/order_summary/skip")
        .await;
    expect_error(r, StatusCode::CONFLICT, "projection_state_conflict").await;
}

async fn the_serving_view_keeps_following_the_log_while_its_successor_rebuilds(backend: Backend) {
    // The rebuild is held on order "slow" until the test lets it go: deterministic, not
    // a race with a big log. Live batches never meet the hold (they applied "slow"
    // before it was set).
    let url = fresh_database(backend).await;
    let hold = Arc::new(AtomicBool::new(false));
    let entered = Arc::new(AtomicBool::new(false));
    let (held, seen) = (hold.clone(), entered.clone());
    let hook: FaultHook = Arc::new(move |name: &str, event: &Envelope| {
        if name == "order_summary"
            && event.entry.aggregate_id == "slow"
            && held.load(Ordering::SeqCst)
        {
            seen.store(true, Ordering::SeqCst);
            tokio::task::block_in_place(|| {
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                while held.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
            });
        }
        false
    });
    let overrides = Overrides {
        fault: Some(hook),
        ..Overrides::default()
    };
    let app = spawn_app_with(&url, |_| {}, overrides).await;
    app.place_order("first").await;
    app.place_order("slow").await;
    app.projections_caught_up().await;
    hold.store(true, Ordering::SeqCst);

    let r = app
        .post_empty("/v1/admin/projections/order_summary/rebuild")
        .await;
    expect_status(r, StatusCode::ACCEPTED).await;
    eventually(
        "the rebuild to reach order slow",
        Duration::from_secs(10),
        || async {
            if entered.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("not yet")
            }
        },
    )
    .await;

    // Placed while the successor is still being built: the serving view answers it.
    app.place_order("fresh").await;
    let listed = eventually(
        "the serving view to list the order placed during the rebuild",
        Duration::from_secs(10),
        || async {
            let orders = expect_status(app.get("/v1/orders").await, StatusCode::OK).await;
            let ids: Vec<String> = orders["orders"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["order_id"].as_str().unwrap().to_owned())
                .collect();
            if ids.iter().any(|id| id == "fresh") {
                Ok(ids)
            } else {
                Err(format!("{ids:?}"))
            }
        },
    )
    .await;
    assert_eq!(listed.len(), 3);
    // Every serving view, the rebuilding one's included, has applied the whole log.
    eventually(
        "every serving view to catch up",
        Duration::from_secs(10),
        || async {
            let status =
                expect_status(app.get("/v1/admin/projections").await, StatusCode::OK).await;
            let behind: Vec<Value> = status["projections"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["lag_events"] != 0)
                .cloned()
                .collect();
            if behind.is_empty() {
                Ok(())
            } else {
                Err(format!("{behind:?}"))
            }
        },
    )
    .await;
    let during = projection(&app, "order_summary").await;
    assert_eq!(during["state"], "rebuilding", "{during}");
    assert_eq!(during["generation"], 1);
    let live = app.read_side().await;

    // Let the rebuild go: it catches up with the serving view and takes over.
    hold.store(false, Ordering::SeqCst);
    serving_generation(&app, "order_summary", 2).await;
    app.projections_caught_up().await;
    assert_eq!(
        app.read_side().await,
        live,
        "the rebuilt view equals the one maintained live"
    );
    app.place_order("after-switch").await;
    app.projections_caught_up().await;
    let orders = expect_status(app.get("/v1/orders").await, StatusCode::OK).await;
    assert_eq!(orders["orders"].as_array().unwrap().len(), 4);
}

async fn the_cli_rebuild_of_a_failing_projection_ends_with_its_error(backend: Backend) {
    // `orderlog projections rebuild NAME` runs the rebuild in its own process, as here:
    // it must end with the failure, not retry forever.
    let (app, on) = with_poison(backend, "shipping").await;
    let db = orderlog::store::Database::connect(&app.database_url, 4)
        .await
        .unwrap();
    let cli = Projections::new(
        db,
        orderlog::app::all_projections(&orderlog::config::Settings::default()),
        orderlog::store::reader::LogSignal::default(),
        Some(fail_on("shipping", "poison", on)),
    );
    cli.rebuild("shipping").await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(20), cli.finish_rebuild("shipping"))
        .await
        .expect("the rebuild ends instead of hanging");
    let poison = &app.events("poison").await[0];
    match outcome {
        Err(e @ RunnerError::RebuildFailed { .. }) => {
            let message = e.to_string();
            let position = format!("position {}", poison["global_position"]);
            assert!(message.contains(&position), "{message}");
            assert!(message.contains("injected fault"), "{message}");
            assert!(
                message.contains("retry it after a fix, or skip"),
                "{message}"
            );
        }
        other => panic!("expected the rebuild's failure, got {other:?}"),
    }
    // The server shows the same failure, and its old tables still serve.
    let status = wait_for_state(&app, "shipping", "failed").await;
    assert_eq!(status["failed_event"]["event_id"], poison["event_id"]);
    assert_eq!(status["generation"], 1);
}

async fn a_rebuild_after_a_live_skip_skips_the_event_again_and_equals_the_live_view(
    backend: Backend,
) {
    // The case reported in issue 15: a live failure, a skip, then a rebuild by the
    // same code, which met the same event again and never finished.
    let url = fresh_database(backend).await;
    let on = Arc::new(AtomicBool::new(true));
    let overrides = Overrides {
        fault: Some(fail_on("order_summary", "poison", on)),
        ..Overrides::default()
    };
    let app = spawn_app_with(&url, |_| {}, overrides).await;
    app.place_order("before").await;
    app.place_order("poison").await;
    app.place_order("after").await;
    wait_for_state(&app, "order_summary", "failed").await;
    let r = app
        .post_empty("/v1/admin/projections/order_summary/skip")
        .await;
    expect_status(r, StatusCode::OK).await;
    app.projections_caught_up().await;
    let live = app.read_side().await;

    let r = app
        .post_empty("/v1/admin/projections/order_summary/rebuild")
        .await;
    expect_status(r, StatusCode::ACCEPTED).await;
    serving_generation(&app, "order_summary", 2).await;
    app.projections_caught_up().await;
    let done = projection(&app, "order_summary").await;
    assert_eq!(done["skipped_events"], 1, "{done}");
    assert_eq!(app.read_side().await, live, "the rebuild skipped it too");
    assert_eq!(live["orders"]["orders"].as_array().unwrap().len(), 2);
}
