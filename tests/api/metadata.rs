//! Every event says who asked, why, and in which trace.

use reqwest::StatusCode;

use crate::helpers::*;
use crate::on_both_backends;

on_both_backends!(
    events_carry_the_request_metadata,
    events_get_a_new_trace_when_the_request_has_none,
);

async fn events_carry_the_request_metadata(backend: Backend) {
    let app = spawn_app(backend).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = app
        .client
        .post(app.url("/v1/orders"))
        .header("traceparent", traceparent)
        .header("x-correlation-id", "checkout-77")
        .header("x-causation-id", "cart-9")
        .header("x-actor", "storefront:shopify")
        .header("idempotency-key", "meta-1")
        .json(&fixture("place_order.json", "ord-meta"))
        .send()
        .await
        .unwrap();
    expect_status(r, StatusCode::CREATED).await;

    let events = app.events("ord-meta").await;
    let event = &events[0];
    let metadata = &event["metadata"];
    assert_eq!(metadata["traceparent"], traceparent);
    assert_eq!(metadata["correlation_id"], "checkout-77");
    assert_eq!(metadata["causation_id"], "cart-9");
    // The actor is the token's name; the client's X-Actor is only whom it acts for.
    assert_eq!(metadata["actor"], "bootstrap");
    assert_eq!(metadata["on_behalf_of"], "storefront:shopify");
    assert_eq!(metadata["idempotency_key"], "meta-1");
    assert!(uuid::Uuid::parse_str(metadata["command_id"].as_str().unwrap()).is_ok());
    assert!(
        chrono::DateTime::parse_from_rfc3339(metadata["received_at"].as_str().unwrap()).is_ok()
    );

    assert!(uuid::Uuid::parse_str(event["event_id"].as_str().unwrap()).is_ok());
    assert!(event["global_position"].as_i64().unwrap() >= 1);
    assert_eq!(event["sequence"], 1);
    assert_eq!(event["event_version"], "1.2");
    assert_eq!(event["payload"]["type"], "order.created");
    assert_eq!(event["payload"]["total"]["amount"], 5000);
    assert!(chrono::DateTime::parse_from_rfc3339(event["recorded_at"].as_str().unwrap()).is_ok());
}

async fn events_get_a_new_trace_when_the_request_has_none(backend: Backend) {
    let app = spawn_app(backend).await;
    app.paid_order("ord-trace").await;
    let events = app.events("ord-trace").await;
    assert_eq!(events.len(), 3);
    let mut positions = Vec::new();
    for event in &events {
        let metadata = &event["metadata"];
        let trace = metadata["traceparent"].as_str().unwrap();
        assert!(trace.starts_with("00-") && trace.len() == 55, "{trace}");
        assert_eq!(metadata["actor"], "bootstrap");
        assert!(metadata.get("on_behalf_of").is_none(), "{metadata}");
        assert_eq!(metadata["causation_id"], metadata["command_id"]);
        assert!(metadata.get("idempotency_key").is_none());
        positions.push(event["global_position"].as_i64().unwrap());
    }
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    let ids: std::collections::HashSet<_> = events.iter().map(|e| e["event_id"].clone()).collect();
    assert_eq!(ids.len(), 3, "event ids are unique");
}
