//! Invariant 3: for random valid command histories, the views maintained live equal a
//! rebuild from scratch.

use proptest::prelude::*;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// One step of a history: an order (of four) and what to ask of it. Commands the
/// order refuses are part of the history too: they must change nothing.
#[derive(Debug, Clone)]
enum Step {
    Place(usize),
    Pay(usize, i64),
    Capture(usize),
    Fail(usize),
    Ship(usize, bool),
    Deliver(usize),
    Cancel(usize),
    Refund(usize, i64),
}

fn step() -> impl Strategy<Value = Step> {
    let order = 0..4usize;
    prop_oneof![
        order.clone().prop_map(Step::Place),
        (order.clone(), prop_oneof![Just(5000i64), 1..6000i64]).prop_map(|(o, a)| Step::Pay(o, a)),
        order.clone().prop_map(Step::Capture),
        order.clone().prop_map(Step::Fail),
        (order.clone(), any::<bool>()).prop_map(|(o, p)| Step::Ship(o, p)),
        order.clone().prop_map(Step::Deliver),
        order.clone().prop_map(Step::Cancel),
        (order, 1..3000i64).prop_map(|(o, a)| Step::Refund(o, a)),
    ]
}

async fn run(app: &TestApp, steps: &[Step]) {
    let mut payments = [0usize; 4];
    let mut shipments = [0usize; 4];
    for step in steps {
        let (path, body) = match step {
            Step::Place(o) => (
                "/v1/orders".to_owned(),
                Some(fixture("place_order.json", &format!("p-{o}"))),
            ),
            Step::Pay(o, amount) => {
                payments[*o] += 1;
                (
                    format!("/v1/orders/p-{o}/payments"),
                    Some(json!({"payment_id": format!("pay-{}", payments[*o]), "amount": amount})),
                )
            }
            Step::Capture(o) => (
                format!(
                    "/v1/orders/p-{o}/payments/pay-{}/capture",
                    payments[*o].max(1)
                ),
                None,
            ),
            Step::Fail(o) => (
                format!("/v1/orders/p-{o}/payments/pay-{}/fail", payments[*o].max(1)),
                Some(json!({"reason": "declined"})),
            ),
            Step::Ship(o, partial) => {
                shipments[*o] += 1;
                let mut body = json!({"shipment_id": format!("s-{}", shipments[*o]), "carrier": "UPS", "tracking_number": "1Z"});
                if *partial {
                    body["lines"] = json!([{"sku": "MUG-BLUE", "quantity": 1}]);
                }
                (format!("/v1/orders/p-{o}/shipments"), Some(body))
            }
            Step::Deliver(o) => (
                format!(
                    "/v1/orders/p-{o}/shipments/s-{}/deliver",
                    shipments[*o].max(1)
                ),
                None,
            ),
            Step::Cancel(o) => (
                format!("/v1/orders/p-{o}/cancel"),
                Some(json!({"reason": "changed mind"})),
            ),
            Step::Refund(o, amount) => (
                format!("/v1/orders/p-{o}/refunds"),
                Some(json!({"amount": amount, "reason": "goodwill"})),
            ),
        };
        let response = match body {
            Some(body) => app.post(&path, &body).await,
            None => app.post_empty(&path).await,
        };
        let status = response.status();
        assert!(!status.is_server_error(), "{step:?} answered {status}");
    }
}

fn check(backend: Backend, steps: Vec<Step>) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let app = spawn_app(backend).await;
        run(&app, &steps).await;
        app.projections_caught_up().await;
        let live = app.read_side().await;
        for name in ["order_summary", "billing", "shipping", "analytics"] {
            let r = app
                .post_empty(&format!("/v1/admin/projections/{name}/rebuild"))
                .await;
            expect_status(r, StatusCode::ACCEPTED).await;
        }
        app.projections_caught_up().await;
        assert_eq!(
            app.read_side().await,
            live,
            "live views differ from a replay of {steps:?}"
        );
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn live_views_equal_a_rebuild_on_sqlite(steps in proptest::collection::vec(step(), 1..40)) {
        check(Backend::Sqlite, steps);
    }

    #[test]
    fn live_views_equal_a_rebuild_on_postgres(steps in proptest::collection::vec(step(), 1..40)) {
        check(Backend::Postgres, steps);
    }
}
