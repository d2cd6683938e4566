//! The status and version clients see, as events are applied (no command is decided
//! here).

use super::*;

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
