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
            from_backorder: 0,
            on_hand: 7,
            reserved: 1,
            available: 6,
            backordered: 0,
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
            from_backorder: 0,
            on_hand: 5,
            reserved: 0,
            available: 5,
            backordered: 0,
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
            from_backorder: 0,
            on_hand: 2,
            reserved: 2,
            available: 0,
            backordered: 0,
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
            from_backorder: 0,
            on_hand: 6,
            reserved: 0,
            available: 6,
            backordered: 0,
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

// Backorders: a storefront's sale is never refused for stock.

fn backorder(o: &str, n: i64) -> InventoryCommandFor {
    when(InventoryCommand::ReserveOrBackorder {
        order_id: order(o),
        quantity: qty(n),
        at: at(),
    })
}

fn backordered(o: &str, n: i64, total: i64) -> InventoryEvent {
    InventoryEvent::StockBackordered {
        sku: sku(),
        order_id: order(o),
        quantity: qty(n),
        backordered: total,
        backordered_at: at(),
    }
}

fn filled(o: &str, n: i64, remaining: u32, levels: (i64, i64, i64)) -> InventoryEvent {
    let (reserved, available, backordered) = levels;
    InventoryEvent::BackorderFilled {
        sku: sku(),
        order_id: order(o),
        quantity: qty(n),
        remaining,
        reserved,
        available,
        backordered,
        filled_at: at(),
    }
}

fn release(o: &str, why: &str) -> InventoryCommandFor {
    when(InventoryCommand::ReleaseReservation {
        order_id: order(o),
        reason: text(why),
        at: at(),
    })
}

fn commit(o: &str, shipment: &str, n: i64) -> InventoryCommandFor {
    when(InventoryCommand::CommitReservation {
        order_id: order(o),
        shipment_id: ship(shipment),
        quantity: qty(n),
        at: at(),
    })
}

/// 3 on hand; `a` took them all and is owed 2, then `b` is owed 4.
fn two_backorders() -> Vec<InventoryEvent> {
    vec![
        received(3, 3, 3),
        reserved("a", 3, 3, 0),
        backordered("a", 2, 2),
        backordered("b", 4, 6),
    ]
}

#[test]
fn a_sale_within_what_is_available_is_only_reserved() {
    given(vec![received(10, 10, 10)])
        .when(backorder("o1", 4))
        .then_expect_events(vec![reserved("o1", 4, 4, 6)]);
}

#[test]
fn a_sale_beyond_what_is_available_reserves_it_all_and_backorders_the_rest() {
    given(vec![received(10, 10, 10), reserved("o1", 7, 7, 3)])
        .when(backorder("o2", 5))
        .then_expect_events(vec![reserved("o2", 3, 10, 0), backordered("o2", 2, 2)]);
}

#[test]
fn a_sale_with_nothing_available_is_backordered_in_full_behind_older_backorders() {
    given(two_backorders())
        .when(backorder("c", 1))
        .then_expect_events(vec![backordered("c", 1, 7)]);
}

#[test]
fn a_sale_of_an_untracked_sku_is_refused_so_the_line_goes_untracked() {
    TestFramework::<InventoryItem>::with(())
        .given_no_previous_events()
        .when(backorder("o1", 1))
        .then_expect_error(InventoryError::NotTracked { sku: sku() });
}

#[test]
fn a_second_sale_for_an_order_that_is_owed_units_is_refused() {
    given(two_backorders())
        .when(backorder("b", 1))
        .then_expect_error(InventoryError::AlreadyReserved {
            order_id: order("b"),
        });
}

#[test]
fn reserving_for_an_order_that_is_owed_units_is_refused() {
    given(two_backorders())
        .when(reserve("b", 1))
        .then_expect_error(InventoryError::AlreadyReserved {
            order_id: order("b"),
        });
}

#[test]
fn an_order_through_our_api_cannot_take_units_owed_to_earlier_sales() {
    given(two_backorders())
        .when(reserve("o9", 1))
        .then_expect_events(vec![InventoryEvent::ReservationRejected {
            sku: sku(),
            order_id: order("o9"),
            requested: qty(1),
            available: 0,
            rejected_at: at(),
        }]);
}

#[test]
fn a_receipt_fills_the_backorders_oldest_first_and_keeps_what_is_left() {
    given(two_backorders())
        .when(when(InventoryCommand::ReceiveStock {
            quantity: qty(7),
            at: at(),
        }))
        .then_expect_events(vec![
            received(7, 10, 7),
            filled("a", 2, 0, (5, 5, 4)),
            filled("b", 4, 0, (9, 1, 0)),
        ]);
}

#[test]
fn a_receipt_too_small_for_a_backorder_fills_part_of_it() {
    given(two_backorders())
        .when(when(InventoryCommand::ReceiveStock {
            quantity: qty(3),
            at: at(),
        }))
        .then_expect_events(vec![
            received(3, 6, 3),
            filled("a", 2, 0, (5, 1, 4)),
            filled("b", 1, 3, (6, 0, 3)),
        ]);
}

#[test]
fn a_partly_filled_backorder_is_filled_first_by_the_next_receipt() {
    let mut history = two_backorders();
    history.extend([
        received(3, 6, 3),
        filled("a", 2, 0, (5, 1, 4)),
        filled("b", 1, 3, (6, 0, 3)),
        backordered("c", 2, 5),
    ]);
    given(history)
        .when(when(InventoryCommand::ReceiveStock {
            quantity: qty(4),
            at: at(),
        }))
        .then_expect_events(vec![
            received(4, 10, 4),
            filled("b", 3, 0, (9, 1, 2)),
            filled("c", 1, 1, (10, 0, 1)),
        ]);
}

#[test]
fn an_adjustment_up_fills_a_backorder() {
    given(two_backorders())
        .when(when(InventoryCommand::AdjustStock {
            delta: 1,
            reason: text("found"),
            at: at(),
        }))
        .then_expect_events(vec![
            InventoryEvent::StockAdjusted {
                sku: sku(),
                delta: 1,
                reason: text("found"),
                on_hand: 4,
                available: 1,
                adjusted_at: at(),
            },
            filled("a", 1, 1, (4, 0, 5)),
        ]);
}

#[test]
fn an_adjustment_down_while_units_are_owed_is_refused() {
    given(two_backorders())
        .when(when(InventoryCommand::AdjustStock {
            delta: -1,
            reason: text("damaged"),
            at: at(),
        }))
        .then_expect_error(InventoryError::WouldGoNegative { after: -1 });
}

#[test]
fn releasing_an_order_drops_its_backorder_and_its_units_fill_the_next_one() {
    given(two_backorders())
        .when(release("a", "cancelled"))
        .then_expect_events(vec![
            InventoryEvent::ReservationReleased {
                sku: sku(),
                order_id: order("a"),
                quantity: qty(3),
                reason: text("cancelled"),
                reserved: 0,
                available: 3,
                released_at: at(),
            },
            InventoryEvent::BackorderCancelled {
                sku: sku(),
                order_id: order("a"),
                quantity: qty(2),
                reason: text("cancelled"),
                backordered: 4,
                cancelled_at: at(),
            },
            filled("b", 3, 1, (3, 0, 1)),
        ]);
}

#[test]
fn releasing_an_order_that_is_only_owed_units_cancels_its_backorder() {
    given(two_backorders())
        .when(release("b", "expired"))
        .then_expect_events(vec![InventoryEvent::BackorderCancelled {
            sku: sku(),
            order_id: order("b"),
            quantity: qty(4),
            reason: text("expired"),
            backordered: 2,
            cancelled_at: at(),
        }]);
}

#[test]
fn shipping_units_that_stock_could_not_cover_settles_the_backorder_not_on_hand() {
    given(two_backorders())
        .when(commit("a", "s1", 5))
        .then_expect_events(vec![InventoryEvent::ReservationCommitted {
            sku: sku(),
            order_id: order("a"),
            shipment_id: ship("s1"),
            quantity: qty(5),
            from_reservation: 3,
            from_backorder: 2,
            on_hand: 0,
            reserved: 0,
            available: 0,
            backordered: 4,
            committed_at: at(),
        }]);
}

#[test]
fn shipping_a_filled_backorder_takes_it_from_the_reservation() {
    let mut history = two_backorders();
    history.extend([
        received(7, 10, 7),
        filled("a", 2, 0, (5, 5, 4)),
        filled("b", 4, 0, (9, 1, 0)),
    ]);
    given(history)
        .when(commit("b", "s1", 4))
        .then_expect_events(vec![InventoryEvent::ReservationCommitted {
            sku: sku(),
            order_id: order("b"),
            shipment_id: ship("s1"),
            quantity: qty(4),
            from_reservation: 4,
            from_backorder: 0,
            on_hand: 6,
            reserved: 5,
            available: 1,
            backordered: 0,
            committed_at: at(),
        }]);
}

#[test]
fn shipping_more_than_the_order_holds_and_is_owed_is_refused() {
    given(two_backorders())
        .when(commit("a", "s1", 6))
        .then_expect_error(InventoryError::InsufficientStock {
            requested: 6,
            available: 0,
        });
}

#[test]
fn a_shipment_that_settled_a_backorder_leaves_the_rest_owed() {
    let mut item = InventoryItem::default();
    for event in two_backorders() {
        item.evolve(event);
    }
    for event in item.decide(&sku(), commit("b", "s1", 1).command).unwrap() {
        item.evolve(event);
    }
    assert_eq!(item.backorder_of(&order("b")), 3);
    assert_eq!(item.backordered(), 5);
    assert_eq!(item.on_hand(), 3);
}

#[test]
fn events_stored_before_backorders_read_as_none_and_new_ones_store_no_empty_field() {
    let stored = r#"{"type":"inventory.committed","sku":"MUG","order_id":"o1","shipment_id":"s1","quantity":3,"from_reservation":3,"on_hand":7,"reserved":1,"available":6,"committed_at":"2026-11-21T12:00:00Z"}"#;
    let event: InventoryEvent = serde_json::from_str(stored).unwrap();
    let InventoryEvent::ReservationCommitted {
        from_backorder,
        backordered,
        ..
    } = &event
    else {
        panic!("not a commit: {event:?}");
    };
    assert_eq!((*from_backorder, *backordered), (0, 0));
    let written = serde_json::to_value(&event).unwrap();
    assert!(written.get("from_backorder").is_none(), "{written}");
    assert!(written.get("backordered").is_none(), "{written}");
}

#[test]
fn every_new_event_has_its_stored_name_and_round_trips() {
    for event in [
        backordered("a", 2, 2),
        filled("a", 1, 1, (4, 0, 5)),
        InventoryEvent::BackorderCancelled {
            sku: sku(),
            order_id: order("a"),
            quantity: qty(2),
            reason: text("cancelled"),
            backordered: 0,
            cancelled_at: at(),
        },
    ] {
        assert!(InventoryEvent::NAMES.contains(&event.name()));
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], event.name());
        let back: InventoryEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
    }
}

mod invariants {
    //! Any sequence of commands keeps the aggregate's invariants after every command.

    use proptest::prelude::*;

    use super::*;

    fn command() -> impl Strategy<Value = InventoryCommand> {
        let id = (0..4u8).prop_map(|n| order(&format!("o{n}")));
        let units = 1..6i64;
        prop_oneof![
            units.clone().prop_map(|n| InventoryCommand::ReceiveStock {
                quantity: qty(n),
                at: at(),
            }),
            (-5..6i64).prop_map(|delta| InventoryCommand::AdjustStock {
                delta,
                reason: text("count"),
                at: at(),
            }),
            (id.clone(), units.clone()).prop_map(|(order_id, n)| {
                InventoryCommand::ReserveStock {
                    order_id,
                    quantity: qty(n),
                    at: at(),
                }
            }),
            (id.clone(), units.clone()).prop_map(|(order_id, n)| {
                InventoryCommand::ReserveOrBackorder {
                    order_id,
                    quantity: qty(n),
                    at: at(),
                }
            }),
            id.clone()
                .prop_map(|order_id| InventoryCommand::ReleaseReservation {
                    order_id,
                    reason: text("cancelled"),
                    at: at(),
                }),
            (id, 0..3u8, units).prop_map(|(order_id, s, n)| {
                InventoryCommand::CommitReservation {
                    order_id,
                    shipment_id: ship(&format!("s{s}")),
                    quantity: qty(n),
                    at: at(),
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn no_command_sequence_breaks_the_invariants(
            commands in proptest::collection::vec(command(), 1..60)
        ) {
            let mut item = InventoryItem::default();
            let (mut received_total, mut shipped_from_stock) = (0i64, 0i64);
            for command in commands {
                let Ok(events) = item.decide(&sku(), command) else { continue };
                for event in events {
                    match &event {
                        InventoryEvent::StockReceived { quantity, .. } => {
                            received_total += i64::from(quantity.get())
                        }
                        InventoryEvent::StockAdjusted { delta, .. } => received_total += delta,
                        InventoryEvent::ReservationCommitted { quantity, from_backorder, .. } => {
                            shipped_from_stock += i64::from(quantity.get() - from_backorder)
                        }
                        _ => {}
                    }
                    item.evolve(event);
                    prop_assert!(item.available() >= 0, "{item:?}");
                    prop_assert!(item.on_hand() >= 0, "{item:?}");
                    prop_assert!(item.backordered() >= 0, "{item:?}");
                    prop_assert!(item.reserved() + shipped_from_stock <= received_total);
                    prop_assert_eq!(item.on_hand(), received_total - shipped_from_stock);
                }
                prop_assert!(item.backordered() == 0 || item.available() == 0, "{item:?}");
                let owed: i64 = (0..4u8)
                    .map(|n| i64::from(item.backorder_of(&order(&format!("o{n}")))))
                    .sum();
                prop_assert_eq!(owed, item.backordered());
            }
        }
    }
}
