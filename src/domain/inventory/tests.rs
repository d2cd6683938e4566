//! Given these events, when this command, then these events or this error.

use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::TestFramework;

use super::*;
use crate::domain::values::{OrderId, Quantity, ShipmentId, Sku, Text};

fn ship(id: &str) -> ShipmentId {
    ShipmentId::parse(id).unwrap()
}

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()
}

fn sku() -> Sku {
    Sku::parse("MUG").unwrap()
}

fn qty(n: i64) -> Quantity {
    Quantity::parse(n).unwrap()
}

fn order(id: &str) -> OrderId {
    OrderId::parse(id).unwrap()
}

fn text(s: &str) -> Text {
    Text::parse(s).unwrap()
}

fn when(command: InventoryCommand) -> InventoryCommandFor {
    InventoryCommandFor {
        sku: sku(),
        command,
    }
}

fn received(n: i64, on_hand: i64, available: i64) -> InventoryEvent {
    InventoryEvent::StockReceived {
        sku: sku(),
        quantity: qty(n),
        on_hand,
        available,
        received_at: at(),
    }
}

fn reserved(o: &str, n: i64, total: i64, available: i64) -> InventoryEvent {
    InventoryEvent::StockReserved {
        sku: sku(),
        order_id: order(o),
        quantity: qty(n),
        reserved: total,
        available,
        reserved_at: at(),
    }
}

fn given(events: Vec<InventoryEvent>) -> cqrs_es::test::AggregateTestExecutor<InventoryItem> {
    TestFramework::<InventoryItem>::with(()).given(events)
}

fn reserve(o: &str, n: i64) -> InventoryCommandFor {
    when(InventoryCommand::ReserveStock {
        order_id: order(o),
        quantity: qty(n),
        at: at(),
    })
}

#[test]
fn receiving_stock_starts_tracking_and_raises_on_hand() {
    TestFramework::<InventoryItem>::with(())
        .given_no_previous_events()
        .when(when(InventoryCommand::ReceiveStock {
            quantity: qty(10),
            at: at(),
        }))
        .then_expect_events(vec![received(10, 10, 10)]);
}

#[test]
fn adjusting_down_within_what_is_available_is_recorded() {
    given(vec![received(10, 10, 10), reserved("o1", 4, 4, 6)])
        .when(when(InventoryCommand::AdjustStock {
            delta: -6,
            reason: text("damaged"),
            at: at(),
        }))
        .then_expect_events(vec![InventoryEvent::StockAdjusted {
            sku: sku(),
            delta: -6,
            reason: text("damaged"),
            on_hand: 4,
            available: 0,
            adjusted_at: at(),
        }]);
}

#[test]
fn adjusting_below_what_is_reserved_is_refused() {
    given(vec![received(10, 10, 10), reserved("o1", 4, 4, 6)])
        .when(when(InventoryCommand::AdjustStock {
            delta: -7,
            reason: text("stocktake"),
            at: at(),
        }))
        .then_expect_error(InventoryError::WouldGoNegative { after: -1 });
}

#[test]
fn an_adjustment_of_nothing_is_refused() {
    given(vec![received(10, 10, 10)])
        .when(when(InventoryCommand::AdjustStock {
            delta: 0,
            reason: text("noop"),
            at: at(),
        }))
        .then_expect_error(InventoryError::ZeroAdjustment);
}

#[test]
fn an_adjustment_tracks_a_sku_that_never_received_stock() {
    TestFramework::<InventoryItem>::with(())
        .given_no_previous_events()
        .when(when(InventoryCommand::AdjustStock {
            delta: 3,
            reason: text("found"),
            at: at(),
        }))
        .then_expect_events(vec![InventoryEvent::StockAdjusted {
            sku: sku(),
            delta: 3,
            reason: text("found"),
            on_hand: 3,
            available: 3,
            adjusted_at: at(),
        }]);
}

#[test]
fn reserving_what_is_available_holds_it_for_the_order() {
    given(vec![received(10, 10, 10)])
        .when(reserve("o1", 4))
        .then_expect_events(vec![reserved("o1", 4, 4, 6)]);
}

#[test]
fn reserving_more_than_is_available_is_rejected_and_holds_nothing() {
    given(vec![received(10, 10, 10), reserved("o1", 8, 8, 2)])
        .when(reserve("o2", 3))
        .then_expect_events(vec![InventoryEvent::ReservationRejected {
            sku: sku(),
            order_id: order("o2"),
            requested: qty(3),
            available: 2,
            rejected_at: at(),
        }]);
}

#[test]
fn reserving_an_untracked_sku_is_refused() {
    TestFramework::<InventoryItem>::with(())
        .given_no_previous_events()
        .when(reserve("o1", 1))
        .then_expect_error(InventoryError::NotTracked { sku: sku() });
}

#[test]
fn reserving_twice_for_one_order_is_refused() {
    given(vec![received(10, 10, 10), reserved("o1", 1, 1, 9)])
        .when(reserve("o1", 1))
        .then_expect_error(InventoryError::AlreadyReserved {
            order_id: order("o1"),
        });
}

#[test]
fn releasing_returns_the_orders_units_to_available() {
    given(vec![received(10, 10, 10), reserved("o1", 4, 4, 6)])
        .when(when(InventoryCommand::ReleaseReservation {
            order_id: order("o1"),
            reason: text("cancelled"),
            at: at(),
        }))
        .then_expect_events(vec![InventoryEvent::ReservationReleased {
            sku: sku(),
            order_id: order("o1"),
            quantity: qty(4),
            reason: text("cancelled"),
            reserved: 0,
            available: 10,
            released_at: at(),
        }]);
}

#[test]
fn releasing_an_order_that_holds_nothing_changes_nothing() {
    given(vec![received(10, 10, 10)])
        .when(when(InventoryCommand::ReleaseReservation {
            order_id: order("o9"),
            reason: text("expired"),
            at: at(),
        }))
        .then_expect_events(vec![]);
}

#[test]
fn committing_takes_shipped_units_from_the_reservation_and_on_hand() {
    given(vec![received(10, 10, 10), reserved("o1", 4, 4, 6)])
        .when(when(InventoryCommand::CommitReservation {
            order_id: order("o1"),
            shipment_id: ship("s1"),
            quantity: qty(3),
            at: at(),
        }))
        .then_expect_events(vec![InventoryEvent::ReservationCommitted {
            sku: sku(),
            order_id: order("o1"),
            shipment_id: ship("s1"),
            quantity: qty(3),
            from_reservation: 3,
            on_hand: 7,
            reserved: 1,
            available: 6,
            committed_at: at(),
        }]);
}

#[test]
fn committing_beyond_the_reservation_takes_the_rest_from_available() {
    given(vec![received(10, 10, 10), reserved("o1", 2, 2, 8)])
        .when(when(InventoryCommand::CommitReservation {
            order_id: order("o1"),
            shipment_id: ship("s1"),
            quantity: qty(5),
            at: at(),
        }))
        .then_expect_events(vec![InventoryEvent::ReservationCommitted {
            sku: sku(),
            order_id: order("o1"),
            shipment_id: ship("s1"),
            quantity: qty(5),
            from_reservation: 2,
            on_hand: 5,
            reserved: 0,
            available: 5,
            committed_at: at(),
        }]);
}

#[test]
fn committing_more_than_exists_is_refused() {
    given(vec![received(2, 2, 2)])
        .when(when(InventoryCommand::CommitReservation {
            order_id: order("o1"),
            shipment_id: ship("s1"),
            quantity: qty(3),
            at: at(),
        }))
        .then_expect_error(InventoryError::InsufficientStock {
            requested: 3,
            available: 2,
        });
}

#[test]
fn receiving_beyond_the_largest_stock_level_is_refused() {
    given(vec![InventoryEvent::StockAdjusted {
        sku: sku(),
        delta: 1_000_000_000_000,
        reason: text("huge"),
        on_hand: 1_000_000_000_000,
        available: 1_000_000_000_000,
        adjusted_at: at(),
    }])
    .when(when(InventoryCommand::ReceiveStock {
        quantity: qty(1),
        at: at(),
    }))
    .then_expect_error(InventoryError::TooMuchStock);
}

#[test]
fn the_levels_never_break_the_invariant() {
    // reserved + committed ≤ received + adjustments, through a busy history.
    let mut item = InventoryItem::default();
    let mut received_total = 0i64;
    let mut committed_total = 0i64;
    let steps = vec![
        received(5, 5, 5),
        reserved("a", 3, 3, 2),
        reserved("b", 2, 5, 0),
        InventoryEvent::ReservationCommitted {
            sku: sku(),
            order_id: order("a"),
            shipment_id: ship("s1"),
            quantity: qty(3),
            from_reservation: 3,
            on_hand: 2,
            reserved: 2,
            available: 0,
            committed_at: at(),
        },
    ];
    for event in steps {
        if let InventoryEvent::StockReceived { quantity, .. } = &event {
            received_total += i64::from(quantity.get());
        }
        if let InventoryEvent::ReservationCommitted { quantity, .. } = &event {
            committed_total += i64::from(quantity.get());
        }
        cqrs_es::Aggregate::apply(&mut item, event);
        assert!(item.reserved() + committed_total <= received_total);
        assert!(item.available() >= 0);
    }
    assert_eq!(item.on_hand(), 2);
    assert_eq!(item.reservation_of(&order("b")), 2);
}

#[test]
fn committing_a_shipment_twice_changes_nothing() {
    given(vec![
        received(10, 10, 10),
        reserved("o1", 4, 4, 6),
        InventoryEvent::ReservationCommitted {
            sku: sku(),
            order_id: order("o1"),
            shipment_id: ship("s1"),
            quantity: qty(4),
            from_reservation: 4,
            on_hand: 6,
            reserved: 0,
            available: 6,
            committed_at: at(),
        },
    ])
    .when(when(InventoryCommand::CommitReservation {
        order_id: order("o1"),
        shipment_id: ship("s1"),
        quantity: qty(4),
        at: at(),
    }))
    .then_expect_events(vec![]);
}
