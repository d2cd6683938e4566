//! Placing an order (pricing, totals, the lines it may hold) and paying for it
//! (attempts, captures, failures): given/when/then, one test per branch.

use super::*;

// Placing

#[test]
fn placing_an_order_prices_every_line_and_states_the_total() {
    OrderTest::with(())
        .given_no_previous_events()
        .when(place_command())
        .then_expect_events(vec![placed()]);
}

#[test]
fn placing_a_storefront_sale_records_each_lines_backordered_units() {
    let OrderCommand::PlaceOrder(mut cmd) = place_command() else {
        unreachable!()
    };
    cmd.lines[0].backordered = 2;
    let mut expected = placed();
    if let OrderEvent::OrderCreated { lines, .. } = &mut expected {
        lines[0].backordered = 2;
    }
    OrderTest::with(())
        .given_no_previous_events()
        .when(OrderCommand::PlaceOrder(cmd))
        .then_expect_events(vec![expected]);
}

#[test]
fn a_line_stored_without_backordered_units_reads_as_none_and_none_are_stored() {
    let stored = r#"{"sku":"MUG","quantity":2,"unit_price":{"amount":1500,"currency":"USD"},"line_total":{"amount":3000,"currency":"USD"}}"#;
    let line: OrderLine = serde_json::from_str(stored).unwrap();
    assert_eq!(line.backordered, 0);
    let written = serde_json::to_value(&line).unwrap();
    assert!(written.get("backordered").is_none(), "{written}");
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
