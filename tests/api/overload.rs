//! Bounded work under overload: a command that cannot start within
//! `ORDERLOG_COMMAND_DEADLINE` is refused with 503 `saturated` and `Retry-After`, and
//! writes nothing; every answer given under overload is true of the log; reads answer.

use std::time::{Duration, Instant};

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::*;
use crate::on_both_backends;
use orderlog::store::Database;

on_both_backends!(
    a_command_past_its_deadline_is_refused_and_writes_nothing,
    under_overload_every_answer_is_true_of_the_log,
    a_burst_the_server_cannot_take_is_refused_before_its_deadline,
);

async fn a_command_past_its_deadline_is_refused_and_writes_nothing(backend: Backend) {
    let url = fresh_database(backend).await;
    // No command can start within a nanosecond: every one is shed.
    let app = spawn_app_on(&url, |s| s.command_deadline = Duration::from_nanos(1)).await;
    let db = Database::connect(&url, 1).await.unwrap();
    let before = event_count(&db).await;

    let body = fixture("place_order.json", "ord-shed");
    for attempt in 0..2 {
        let r = app.post_with_key("/v1/orders", "key-shed", &body).await;
        assert_eq!(r.headers()["retry-after"], "1");
        assert!(
            r.headers().get("idempotent-replayed").is_none(),
            "attempt {attempt}: a refusal worth retrying gives its key back, not a replay"
        );
        expect_error(r, StatusCode::SERVICE_UNAVAILABLE, "saturated").await;
    }
    let r = app
        .post("/v1/inventory/MUG-BLUE/receipts", &json!({"quantity": 5}))
        .await;
    expect_error(r, StatusCode::SERVICE_UNAVAILABLE, "saturated").await;

    assert_eq!(event_count(&db).await, before, "nothing was written");
    expect_error(
        app.get("/v1/orders/ord-shed").await,
        StatusCode::NOT_FOUND,
        "order_not_found",
    )
    .await;
    // Reads are not commands: they keep answering while commands are shed.
    expect_status(app.get("/v1/inventory?below=10").await, StatusCode::OK).await;
    expect_status(app.get("/v1/orders").await, StatusCode::OK).await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    // The recorder is the process's: other tests' servers count into it too.
    let shed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("orderlog_commands_shed_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no shed counter in {metrics}"));
    assert!(shed >= 3, "{metrics}");
    db.close().await;
}

async fn under_overload_every_answer_is_true_of_the_log(backend: Backend) {
    let url = fresh_database(backend).await;
    let setup = spawn_app_on(&url, |_| {}).await;
    for sku in ["HOT", "COLD-0", "COLD-1", "COLD-2"] {
        let r = setup
            .post(
                &format!("/v1/inventory/{sku}/receipts"),
                &json!({"quantity": STOCK}),
            )
            .await;
        expect_status(r, StatusCode::CREATED).await;
    }
    // Other servers on the same log, each with a deadline short enough that a burst on
    // one hot SKU outruns it. How short that is depends on how busy the machine is: on
    // a loaded one, 5 ms can refuse a whole burst. Each round triples the deadline until
    // the bursts have seen both answers; every answer of every round is checked below.
    let mut deadline = Duration::from_millis(5);
    let mut answers = Vec::new();
    let mut rounds = 0;
    let busy = loop {
        let busy = spawn_app_on(&url, |s| s.command_deadline = deadline).await;
        answers.extend(overload_round(&busy, rounds).await);
        rounds += 1;
        let accepted = answers
            .iter()
            .filter(|a| a.2 == StatusCode::CREATED)
            .count();
        if (accepted > 0 && accepted < answers.len()) || rounds == 5 {
            break busy;
        }
        deadline *= 3;
    };

    let mut accepted = Vec::new();
    let mut cold_accepted = [0i64; 3];
    for (id, cold, status, body) in &answers {
        match *status {
            StatusCode::CREATED => {
                accepted.push(id.clone());
                cold_accepted[cold[5..].parse::<usize>().unwrap()] += 1;
            }
            StatusCode::SERVICE_UNAVAILABLE => assert_eq!(body["code"], "saturated"),
            other => panic!("{id}: {other} {body}"),
        }
    }
    let refused = answers.len() - accepted.len();
    assert!(
        !accepted.is_empty() && refused > 0,
        "{} accepted, {refused} refused in {rounds} rounds up to a {deadline:?} deadline: \
         the bursts should see both",
        accepted.len()
    );

    // Every acknowledged order is in the log, every refused one is not, and stock is
    // held for exactly the acknowledged ones: a placement shed after its first line
    // gave that line back.
    for (id, _, status, _) in &answers {
        let expected = if *status == StatusCode::CREATED {
            StatusCode::OK
        } else {
            StatusCode::NOT_FOUND
        };
        assert_eq!(
            busy.get(&format!("/v1/orders/{id}")).await.status(),
            expected
        );
    }
    // And one warm-up order on each, each round.
    let hot = accepted.len() as i64 + 3 * rounds;
    for (sku, held) in [
        ("HOT", hot),
        ("COLD-0", cold_accepted[0] + rounds),
        ("COLD-1", cold_accepted[1] + rounds),
        ("COLD-2", cold_accepted[2] + rounds),
    ] {
        let what = format!("{sku} to hold {held}");
        eventually(&what, Duration::from_secs(10), || async {
            let levels: Value = busy
                .get(&format!("/v1/inventory/{sku}"))
                .await
                .json()
                .await
                .unwrap();
            if levels["reserved"] == held && levels["available"] == STOCK - held {
                Ok(())
            } else {
                Err(levels.to_string())
            }
        })
        .await;
    }
}

/// Enough for five rounds of bursts on the hot SKU, warm-ups included.
const STOCK: i64 = 2000;

/// One burst of 300 orders on `busy`, each holding the hot SKU and one of three cold
/// ones, with reads alongside: every read answers. Gives (id, cold SKU, status, body).
async fn overload_round(busy: &TestApp, round: i64) -> Vec<(String, String, StatusCode, Value)> {
    // Its first command on each SKU reads the SKU's events; once that is cached, the
    // burst below measures queueing only.
    for cold in ["COLD-0", "COLD-1", "COLD-2"] {
        eventually("a warm-up order", Duration::from_secs(10), || async {
            let id = format!("warm-{round}-{cold}");
            let r = busy
                .post("/v1/orders", &order_body(&id, &[("HOT", 1), (cold, 1)]))
                .await;
            match r.status() {
                StatusCode::CREATED => Ok(()),
                other => Err(other.to_string()),
            }
        })
        .await;
    }
    let orders = (0..300).map(|i| async move {
        let id = format!("ord-{round}-{i}");
        let cold = format!("COLD-{}", i % 3);
        let r = busy
            .post("/v1/orders", &order_body(&id, &[("HOT", 1), (&cold, 1)]))
            .await;
        (id, cold, r.status(), r.json::<Value>().await.unwrap())
    });
    let reads = (0..20).map(|_| async { busy.get("/v1/inventory/HOT").await.status() });
    let (answers, reads) = tokio::join!(join_all(orders), join_all(reads));
    assert!(reads.iter().all(|s| *s == StatusCode::OK), "{reads:?}");
    answers
}

async fn a_burst_the_server_cannot_take_is_refused_before_its_deadline(backend: Backend) {
    let url = fresh_database(backend).await;
    // One command at a time and a deadline of half a second: before the queue knew when
    // it stood, every refused one of the burst heard 503 at that deadline.
    let deadline = Duration::from_millis(500);
    let app = &spawn_app_on(&url, |s| {
        s.max_concurrent_commands = 1;
        s.command_deadline = deadline;
    })
    .await;
    let r = app
        .post("/v1/inventory/SKU-1/receipts", &json!({"quantity": 1000}))
        .await;
    expect_status(r, StatusCode::CREATED).await;
    // The stock view has it before the burst: the reads below are of a known SKU.
    app.projections_caught_up().await;

    // Enough that even a fast machine takes longer than a fifth of the deadline.
    let orders = (0..300).map(|i| async move {
        let id = format!("ord-{i}");
        let asked = Instant::now();
        let r = app
            .post("/v1/orders", &order_body(&id, &[("SKU-1", 1)]))
            .await;
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        (id, status, body, asked.elapsed())
    });
    let reads = (0..10).map(|_| async { app.get("/v1/inventory/SKU-1").await.status() });
    let (answers, reads) = tokio::join!(join_all(orders), join_all(reads));
    assert!(reads.iter().all(|s| *s == StatusCode::OK), "{reads:?}");

    let mut accepted = 0;
    let mut refused_after = Vec::new();
    for (id, status, body, took) in &answers {
        match *status {
            StatusCode::CREATED => accepted += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(body["code"], "saturated", "{body}");
                refused_after.push(*took);
                let r = app.get(&format!("/v1/orders/{id}")).await;
                assert_eq!(r.status(), StatusCode::NOT_FOUND, "{id} was refused");
            }
            other => panic!("{id}: {other} {body}"),
        }
    }
    assert!(
        accepted >= 1 && !refused_after.is_empty(),
        "{accepted} of {} accepted: the burst should see both",
        answers.len()
    );
    refused_after.sort();
    let median = refused_after[refused_after.len() / 2];
    assert!(
        median < deadline * 6 / 10,
        "the refused heard so after {median:?} at the median: they waited toward the deadline"
    );
    let what = format!("SKU-1 to hold {accepted}");
    eventually(&what, Duration::from_secs(10), || async {
        let levels: Value = app.get("/v1/inventory/SKU-1").await.json().await.unwrap();
        if levels["reserved"] == accepted {
            Ok(())
        } else {
            Err(levels.to_string())
        }
    })
    .await;
}
