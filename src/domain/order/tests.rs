//! Given these events, when this command, then these events or this error: one test per
//! branch of every command, named as the sentence it proves.

use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::TestFramework;

use super::*;
use crate::domain::values::*;

type OrderTest = TestFramework<Order>;

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 12, minute, 0).unwrap()
}

fn usd() -> Currency {
    Currency::parse("USD").unwrap()
}

fn money(amount: i64) -> Money {
    Money::parse(amount, usd()).unwrap()
}

fn units(n: i64) -> MinorUnits {
    MinorUnits::parse(n).unwrap()
}

fn qty(n: i64) -> Quantity {
    Quantity::parse(n).unwrap()
}

fn sku(s: &str) -> Sku {
    Sku::parse(s).unwrap()
}

fn text(s: &str) -> Text {
    Text::parse(s).unwrap()
}

fn order_id() -> OrderId {
    OrderId::parse("order-1").unwrap()
}

fn pay_id(s: &str) -> PaymentId {
    PaymentId::parse(s).unwrap()
}

fn ship_id(s: &str) -> ShipmentId {
    ShipmentId::parse(s).unwrap()
}

fn refund_id(s: &str) -> RefundId {
    RefundId::parse(s).unwrap()
}

fn place_command() -> OrderCommand {
    OrderCommand::PlaceOrder(PlaceOrder {
        order_id: order_id(),
        customer_id: CustomerId::parse("cust-1").unwrap(),
        currency: usd(),
        lines: vec![
            RequestedLine {
                sku: sku("MUG"),
                quantity: qty(2),
                unit_price: money(1500),
                untracked: false,
            },
            RequestedLine {
                sku: sku("TEE"),
                quantity: qty(1),
                unit_price: money(2000),
                untracked: true,
            },
        ],
        shipping_address: None,
        at: at(0),
    })
}

fn placed() -> OrderEvent {
    OrderEvent::OrderPlaced {
        order_id: order_id(),
        customer_id: CustomerId::parse("cust-1").unwrap(),
        currency: usd(),
        lines: vec![
            OrderLine {
                sku: sku("MUG"),
                quantity: qty(2),
                unit_price: money(1500),
                line_total: money(3000),
                untracked: false,
            },
            OrderLine {
                sku: sku("TEE"),
                quantity: qty(1),
                unit_price: money(2000),
                line_total: money(2000),
                untracked: true,
            },
        ],
        total: money(5000),
        shipping_address: None,
        placed_at: at(0),
    }
}

fn attempted(id: &str) -> OrderEvent {
    OrderEvent::PaymentAttempted {
        order_id: order_id(),
        payment_id: pay_id(id),
        amount: money(5000),
        method: None,
        attempted_at: at(1),
    }
}

fn captured(id: &str) -> OrderEvent {
    OrderEvent::PaymentCaptured {
        order_id: order_id(),
        payment_id: pay_id(id),
        amount: money(5000),
        captured_total: money(5000),
        captured_at: at(2),
    }
}

fn failed(id: &str) -> OrderEvent {
    OrderEvent::PaymentFailed {
        order_id: order_id(),
        payment_id: pay_id(id),
        amount: money(5000),
        reason: text("card declined"),
        failed_at: at(2),
    }
}

fn paid() -> Vec<OrderEvent> {
    vec![placed(), attempted("p1"), captured("p1")]
}

fn dispatched(id: &str, lines: Vec<(&str, i64)>, fully: bool) -> OrderEvent {
    OrderEvent::ShipmentDispatched {
        order_id: order_id(),
        shipment_id: ship_id(id),
        carrier: text("UPS"),
        tracking_number: text("1Z999"),
        lines: lines
            .into_iter()
            .map(|(s, q)| ShipmentLine {
                sku: sku(s),
                quantity: qty(q),
            })
            .collect(),
        order_fully_shipped: fully,
        dispatched_at: at(3),
    }
}

fn delivered(id: &str) -> OrderEvent {
    OrderEvent::ShipmentDelivered {
        order_id: order_id(),
        shipment_id: ship_id(id),
        delivered_at: at(4),
    }
}

fn refunded(id: &str, amount: i64, total: i64) -> OrderEvent {
    OrderEvent::OrderRefunded {
        order_id: order_id(),
        refund_id: refund_id(id),
        amount: money(amount),
        reason: text("damaged"),
        refunded_total: money(total),
        fully_refunded: total == 5000,
        refunded_at: at(5),
    }
}

fn attempt(id: &str, amount: i64) -> OrderCommand {
    OrderCommand::AttemptPayment(AttemptPayment {
        payment_id: pay_id(id),
        amount: units(amount),
        method: None,
        at: at(1),
    })
}

fn capture(id: &str) -> OrderCommand {
    OrderCommand::CapturePayment(CapturePayment {
        payment_id: pay_id(id),
        at: at(2),
    })
}

fn fail(id: &str) -> OrderCommand {
    OrderCommand::FailPayment(FailPayment {
        payment_id: pay_id(id),
        reason: text("card declined"),
        at: at(2),
    })
}

fn dispatch(id: &str, lines: Option<Vec<(&str, i64)>>) -> OrderCommand {
    OrderCommand::DispatchShipment(DispatchShipment {
        shipment_id: ship_id(id),
        carrier: text("UPS"),
        tracking_number: text("1Z999"),
        lines: lines.map(|ls| ls.into_iter().map(|(s, q)| (sku(s), qty(q))).collect()),
        at: at(3),
    })
}

fn deliver(id: &str) -> OrderCommand {
    OrderCommand::DeliverShipment(DeliverShipment {
        shipment_id: ship_id(id),
        at: at(4),
    })
}

fn cancel() -> OrderCommand {
    OrderCommand::CancelOrder(CancelOrder {
        reason: text("changed mind"),
        at: at(5),
    })
}

fn refund(id: &str, amount: i64) -> OrderCommand {
    OrderCommand::RefundOrder(RefundOrder {
        refund_id: refund_id(id),
        amount: units(amount),
        reason: text("damaged"),
        at: at(5),
    })
}

fn given(events: Vec<OrderEvent>) -> cqrs_es::test::AggregateTestExecutor<Order> {
    OrderTest::with(()).given(events)
}

fn state_after(events: Vec<OrderEvent>) -> Order {
    let mut order = Order::default();
    for event in events {
        cqrs_es::Aggregate::apply(&mut order, event);
    }
    order
}

// Placing

#[test]
fn placing_an_order_prices_every_line_and_states_the_total() {
    OrderTest::with(())
        .given_no_previous_events()
        .when(place_command())
        .then_expect_events(vec![placed()]);
}

#[test]
fn placing_an_order_twice_is_refused() {
    given(vec![placed()])
        .when(place_command())
        .then_expect_error(OrderError::AlreadyExists {
            order_id: order_id(),
        });
}

#[test]
fn placing_an_order_without_lines_is_refused() {
    let OrderCommand::PlaceOrder(mut cmd) = place_command() else {
        unreachable!()
    };
    cmd.lines.clear();
    OrderTest::with(())
        .given_no_previous_events()
        .when(OrderCommand::PlaceOrder(cmd))
        .then_expect_error(OrderError::NoLines);
}

#[test]
fn placing_an_order_with_one_sku_on_two_lines_is_refused() {
    let OrderCommand::PlaceOrder(mut cmd) = place_command() else {
        unreachable!()
    };
    cmd.lines[1].sku = sku("MUG");
    OrderTest::with(())
        .given_no_previous_events()
        .when(OrderCommand::PlaceOrder(cmd))
        .then_expect_error(OrderError::DuplicateLine { sku: sku("MUG") });
}

#[test]
fn placing_an_order_priced_in_another_currency_is_refused() {
    let OrderCommand::PlaceOrder(mut cmd) = place_command() else {
        unreachable!()
    };
    cmd.lines[0].unit_price = Money::parse(1500, Currency::parse("EUR").unwrap()).unwrap();
    OrderTest::with(())
        .given_no_previous_events()
        .when(OrderCommand::PlaceOrder(cmd))
        .then_expect_error(OrderError::CurrencyMismatch);
}

#[test]
fn placing_an_order_whose_total_overflows_is_refused() {
    let OrderCommand::PlaceOrder(mut cmd) = place_command() else {
        unreachable!()
    };
    cmd.lines[0].unit_price = money(Money::MAX_AMOUNT);
    OrderTest::with(())
        .given_no_previous_events()
        .when(OrderCommand::PlaceOrder(cmd))
        .then_expect_error(OrderError::TotalTooLarge);
}

#[test]
fn commands_to_an_order_that_does_not_exist_are_refused() {
    for command in [
        attempt("p1", 5000),
        capture("p1"),
        fail("p1"),
        dispatch("s1", None),
        deliver("s1"),
        cancel(),
        refund("r1", 1),
    ] {
        OrderTest::with(())
            .given_no_previous_events()
            .when(command)
            .then_expect_error(OrderError::NotFound);
    }
}

// Payments

#[test]
fn attempting_payment_of_the_amount_due_is_recorded() {
    given(vec![placed()])
        .when(attempt("p1", 5000))
        .then_expect_events(vec![attempted("p1")]);
}

#[test]
fn attempting_payment_of_another_amount_is_refused() {
    given(vec![placed()])
        .when(attempt("p1", 4999))
        .then_expect_error(OrderError::AmountMismatch { due: money(5000) });
}

#[test]
fn attempting_payment_while_another_is_pending_is_refused() {
    given(vec![placed(), attempted("p1")])
        .when(attempt("p2", 5000))
        .then_expect_error(OrderError::PaymentInProgress {
            payment_id: pay_id("p1"),
        });
}

#[test]
fn attempting_payment_again_after_a_failure_is_allowed() {
    given(vec![placed(), attempted("p1"), failed("p1")])
        .when(attempt("p2", 5000))
        .then_expect_events(vec![attempted("p2")]);
}

#[test]
fn reusing_a_payment_id_is_refused() {
    given(vec![placed(), attempted("p1"), failed("p1")])
        .when(attempt("p1", 5000))
        .then_expect_error(OrderError::PaymentExists {
            payment_id: pay_id("p1"),
        });
}

#[test]
fn attempting_payment_on_a_paid_order_is_refused() {
    given(paid())
        .when(attempt("p2", 5000))
        .then_expect_error(OrderError::AlreadyPaid);
}

#[test]
fn attempting_payment_on_a_cancelled_order_is_refused() {
    given(vec![placed(), state_cancelled(money(0))])
        .when(attempt("p1", 5000))
        .then_expect_error(OrderError::Cancelled);
}

#[test]
fn capturing_a_pending_payment_records_the_running_total() {
    given(vec![placed(), attempted("p1")])
        .when(capture("p1"))
        .then_expect_events(vec![captured("p1")]);
}

#[test]
fn capturing_an_unknown_payment_is_refused() {
    given(vec![placed()])
        .when(capture("nope"))
        .then_expect_error(OrderError::PaymentNotFound {
            payment_id: pay_id("nope"),
        });
}

#[test]
fn capturing_a_payment_twice_is_refused() {
    given(paid())
        .when(capture("p1"))
        .then_expect_error(OrderError::PaymentNotPending {
            payment_id: pay_id("p1"),
        });
}

#[test]
fn capturing_a_payment_on_a_cancelled_order_is_refused() {
    given(vec![placed(), attempted("p1"), state_cancelled(money(0))])
        .when(capture("p1"))
        .then_expect_error(OrderError::Cancelled);
}

#[test]
fn failing_a_pending_payment_is_recorded() {
    given(vec![placed(), attempted("p1")])
        .when(fail("p1"))
        .then_expect_events(vec![failed("p1")]);
}

#[test]
fn failing_an_unknown_payment_is_refused() {
    given(vec![placed()])
        .when(fail("p9"))
        .then_expect_error(OrderError::PaymentNotFound {
            payment_id: pay_id("p9"),
        });
}

#[test]
fn failing_a_captured_payment_is_refused() {
    given(paid())
        .when(fail("p1"))
        .then_expect_error(OrderError::PaymentNotPending {
            payment_id: pay_id("p1"),
        });
}

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

// Cancelling

fn state_cancelled(refundable: Money) -> OrderEvent {
    OrderEvent::OrderCancelled {
        order_id: order_id(),
        reason: text("changed mind"),
        lines: match placed() {
            OrderEvent::OrderPlaced { lines, .. } => lines,
            _ => unreachable!(),
        },
        refundable,
        cancelled_at: at(5),
    }
}

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

// The status clients see

#[test]
fn the_status_follows_the_lifecycle() {
    let status = |events: Vec<OrderEvent>| state_after(events).placed().unwrap().status();
    assert_eq!(status(vec![placed()]), OrderStatus::Placed);
    assert_eq!(
        status(vec![placed(), attempted("p1")]),
        OrderStatus::PaymentPending
    );
    assert_eq!(
        status(vec![placed(), attempted("p1"), failed("p1")]),
        OrderStatus::Placed
    );
    assert_eq!(status(paid()), OrderStatus::Paid);
    let mut history = paid();
    history.push(dispatched("s1", vec![("MUG", 1)], false));
    assert_eq!(status(history.clone()), OrderStatus::PartiallyShipped);
    history.push(dispatched("s2", vec![("MUG", 1), ("TEE", 1)], true));
    assert_eq!(status(history.clone()), OrderStatus::Shipped);
    history.push(delivered("s1"));
    history.push(delivered("s2"));
    history.push(OrderEvent::OrderFulfilled {
        order_id: order_id(),
        total: money(5000),
        fulfilled_at: at(4),
    });
    assert_eq!(status(history.clone()), OrderStatus::Fulfilled);
    history.push(refunded("r1", 1000, 1000));
    assert_eq!(status(history.clone()), OrderStatus::PartiallyRefunded);
    history.push(refunded("r2", 4000, 5000));
    assert_eq!(status(history), OrderStatus::Refunded);
    assert_eq!(
        status(vec![placed(), state_cancelled(money(0))]),
        OrderStatus::Cancelled
    );
}

#[test]
fn the_version_counts_every_applied_event() {
    assert_eq!(state_after(paid()).version(), 3);
    assert_eq!(Order::default().version(), 0);
}

// Expiry

fn expire() -> OrderCommand {
    OrderCommand::ExpireOrder(ExpireOrder { at: at(30) })
}

fn expired() -> OrderEvent {
    OrderEvent::OrderExpired {
        order_id: order_id(),
        lines: match placed() {
            OrderEvent::OrderPlaced { lines, .. } => lines,
            _ => unreachable!(),
        },
        expired_at: at(30),
    }
}

#[test]
fn expiring_an_unpaid_order_states_the_lines_it_no_longer_needs() {
    given(vec![placed(), attempted("p1"), failed("p1")])
        .when(expire())
        .then_expect_events(vec![expired()]);
}

#[test]
fn expiring_a_paid_order_is_refused() {
    given(paid())
        .when(expire())
        .then_expect_error(OrderError::AlreadyPaid);
}

#[test]
fn expiring_a_cancelled_order_is_refused() {
    given(vec![placed(), state_cancelled(money(0))])
        .when(expire())
        .then_expect_error(OrderError::Cancelled);
}

#[test]
fn an_expired_order_takes_no_payment() {
    given(vec![placed(), expired()])
        .when(attempt("p1", 5000))
        .then_expect_error(OrderError::Expired);
}

#[test]
fn an_expired_order_reads_expired() {
    assert_eq!(
        state_after(vec![placed(), expired()])
            .placed()
            .unwrap()
            .status(),
        OrderStatus::Expired
    );
}
