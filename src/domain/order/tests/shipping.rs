//! Dispatching shipments (partial, full, refused) and delivering them, up to the
//! order's fulfilment: given/when/then, one test per branch.

use super::*;

// Shipments

#[test]
fn dispatching_without_lines_ships_everything_left() {
    given(paid())
        .when(dispatch("s1", None))
        .then_expect_events(vec![dispatched("s1", vec![("MUG", 2), ("TEE", 1)], true)]);
}

#[test]
fn dispatching_some_lines_is_a_partial_shipment() {
    given(paid())
        .when(dispatch("s1", Some(vec![("MUG", 1)])))
        .then_expect_events(vec![dispatched("s1", vec![("MUG", 1)], false)]);
}

#[test]
fn dispatching_the_last_units_marks_the_order_fully_shipped() {
    let mut history = paid();
    history.push(dispatched("s1", vec![("MUG", 1)], false));
    given(history)
        .when(dispatch("s2", Some(vec![("MUG", 1), ("TEE", 1)])))
        .then_expect_events(vec![dispatched("s2", vec![("MUG", 1), ("TEE", 1)], true)]);
}

#[test]
fn dispatching_an_unpaid_order_is_refused() {
    given(vec![placed(), attempted("p1")])
        .when(dispatch("s1", None))
        .then_expect_error(OrderError::NotPaid);
}

#[test]
fn dispatching_a_cancelled_order_is_refused() {
    let mut history = paid();
    history.push(state_cancelled(money(5000)));
    given(history)
        .when(dispatch("s1", None))
        .then_expect_error(OrderError::Cancelled);
}

#[test]
fn dispatching_more_than_remains_is_refused() {
    let mut history = paid();
    history.push(dispatched("s1", vec![("MUG", 1)], false));
    given(history)
        .when(dispatch("s2", Some(vec![("MUG", 2)])))
        .then_expect_error(OrderError::ShipmentExceedsRemaining {
            sku: sku("MUG"),
            requested: qty(2),
            remaining: 1,
        });
}

#[test]
fn dispatching_a_sku_twice_in_one_shipment_counts_both() {
    given(paid())
        .when(dispatch("s1", Some(vec![("MUG", 2), ("MUG", 1)])))
        .then_expect_error(OrderError::ShipmentExceedsRemaining {
            sku: sku("MUG"),
            requested: qty(1),
            remaining: 0,
        });
}

#[test]
fn dispatching_a_sku_not_on_the_order_is_refused() {
    given(paid())
        .when(dispatch("s1", Some(vec![("HAT", 1)])))
        .then_expect_error(OrderError::LineNotInOrder { sku: sku("HAT") });
}

#[test]
fn dispatching_an_empty_shipment_is_refused() {
    given(paid())
        .when(dispatch("s1", Some(vec![])))
        .then_expect_error(OrderError::NothingToShip);
}

#[test]
fn dispatching_when_everything_shipped_is_refused() {
    let mut history = paid();
    history.push(dispatched("s1", vec![("MUG", 2), ("TEE", 1)], true));
    given(history)
        .when(dispatch("s2", None))
        .then_expect_error(OrderError::NothingToShip);
}

#[test]
fn reusing_a_shipment_id_is_refused() {
    let mut history = paid();
    history.push(dispatched("s1", vec![("MUG", 1)], false));
    given(history)
        .when(dispatch("s1", None))
        .then_expect_error(OrderError::ShipmentExists {
            shipment_id: ship_id("s1"),
        });
}

#[test]
fn delivering_a_partial_shipment_does_not_fulfil_the_order() {
    let mut history = paid();
    history.push(dispatched("s1", vec![("MUG", 1)], false));
    given(history)
        .when(deliver("s1"))
        .then_expect_events(vec![delivered("s1")]);
}

#[test]
fn delivering_the_last_shipment_fulfils_the_order() {
    let mut history = paid();
    history.push(dispatched("s1", vec![("MUG", 1)], false));
    history.push(delivered("s1"));
    history.push(dispatched("s2", vec![("MUG", 1), ("TEE", 1)], true));
    given(history).when(deliver("s2")).then_expect_events(vec![
        delivered("s2"),
        OrderEvent::OrderFulfilled {
            order_id: order_id(),
            total: money(5000),
            fulfilled_at: at(4),
        },
    ]);
}

#[test]
fn delivering_everything_shipped_while_another_shipment_is_in_transit_waits_for_it() {
    let mut history = paid();
    history.push(dispatched("s1", vec![("MUG", 2)], false));
    history.push(dispatched("s2", vec![("TEE", 1)], true));
    given(history)
        .when(deliver("s2"))
        .then_expect_events(vec![delivered("s2")]);
}

#[test]
fn delivering_an_unknown_shipment_is_refused() {
    given(paid())
        .when(deliver("s9"))
        .then_expect_error(OrderError::ShipmentNotFound {
            shipment_id: ship_id("s9"),
        });
}

#[test]
fn delivering_a_shipment_twice_is_refused() {
    let mut history = paid();
    history.push(dispatched("s1", vec![("MUG", 1)], false));
    history.push(delivered("s1"));
    given(history)
        .when(deliver("s1"))
        .then_expect_error(OrderError::AlreadyDelivered {
            shipment_id: ship_id("s1"),
        });
}
