//! Cancelling an order and refunding what was captured: given/when/then, one test per
//! branch.

use super::*;

// Cancelling

#[test]
fn cancelling_an_unpaid_order_releases_its_lines_with_nothing_to_refund() {
    given(vec![placed()])
        .when(cancel())
        .then_expect_events(vec![state_cancelled(money(0))]);
}

#[test]
fn cancelling_a_paid_order_states_what_is_refundable() {
    given(paid())
        .when(cancel())
        .then_expect_events(vec![state_cancelled(money(5000))]);
}

#[test]
fn cancelling_a_shipped_order_is_refused() {
    let mut history = paid();
    history.push(dispatched("s1", vec![("MUG", 1)], false));
    given(history)
        .when(cancel())
        .then_expect_error(OrderError::AlreadyShipped {
            shipment_id: ship_id("s1"),
        });
}

#[test]
fn cancelling_twice_is_refused() {
    given(vec![placed(), state_cancelled(money(0))])
        .when(cancel())
        .then_expect_error(OrderError::Cancelled);
}

// Refunds

#[test]
fn refunding_part_of_the_capture_is_a_partial_refund() {
    given(paid())
        .when(refund("r1", 1000))
        .then_expect_events(vec![refunded("r1", 1000, 1000)]);
}

#[test]
fn refunding_the_rest_is_a_full_refund() {
    let mut history = paid();
    history.push(refunded("r1", 1000, 1000));
    given(history)
        .when(refund("r2", 4000))
        .then_expect_events(vec![refunded("r2", 4000, 5000)]);
}

#[test]
fn refunding_more_than_was_captured_is_refused() {
    let mut history = paid();
    history.push(refunded("r1", 1000, 1000));
    given(history)
        .when(refund("r2", 4001))
        .then_expect_error(OrderError::RefundExceedsCaptured {
            refundable: money(4000),
        });
}

#[test]
fn refunding_an_order_with_nothing_captured_is_refused() {
    given(vec![placed(), attempted("p1")])
        .when(refund("r1", 1))
        .then_expect_error(OrderError::NothingCaptured);
}

#[test]
fn reusing_a_refund_id_is_refused() {
    let mut history = paid();
    history.push(refunded("r1", 1000, 1000));
    given(history)
        .when(refund("r1", 1000))
        .then_expect_error(OrderError::RefundExists {
            refund_id: refund_id("r1"),
        });
}

#[test]
fn refunding_a_cancelled_paid_order_is_allowed() {
    let mut history = paid();
    history.push(state_cancelled(money(5000)));
    given(history)
        .when(refund("r1", 5000))
        .then_expect_events(vec![refunded("r1", 5000, 5000)]);
}
