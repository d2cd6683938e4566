//! Expiring an unpaid order, and what an expired order refuses: given/when/then, one
//! test per branch.

use super::*;

// Expiry

fn expire() -> OrderCommand {
    OrderCommand::ExpireOrder(ExpireOrder { at: at(30) })
}

fn expired() -> OrderEvent {
    OrderEvent::OrderExpired {
        order_id: order_id(),
        lines: match placed() {
            OrderEvent::OrderCreated { lines, .. } => lines,
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
