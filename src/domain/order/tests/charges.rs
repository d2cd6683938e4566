//! Discounts, shipping and taxes: what a placed order owes, and the charges it refuses.

use super::*;

fn discount(code: &str, on: Option<&str>, amount: i64) -> Discount {
    Discount {
        code: text(code),
        sku: on.map(sku),
        amount: money(amount),
    }
}

/// The fixture order (MUG 2 × 1500, TEE 1 × 2000: subtotal 5000) with `charges`.
fn place_with(charges: Charges) -> OrderCommand {
    let OrderCommand::PlaceOrder(mut cmd) = place_command() else {
        unreachable!()
    };
    cmd.charges = charges;
    OrderCommand::PlaceOrder(cmd)
}

fn charged() -> Charges {
    Charges {
        discounts: vec![
            discount("MUG-5", Some("MUG"), 500),
            discount("WELCOME", None, 1000),
        ],
        shipping_lines: vec![ShippingLine {
            title: text("Standard"),
            price: money(700),
        }],
        tax_lines: vec![TaxLine {
            title: text("Sales tax"),
            amount: money(336),
        }],
    }
}

#[test]
fn the_total_is_the_subtotal_less_discounts_plus_shipping_and_taxes() {
    let OrderEvent::OrderCreated {
        lines,
        personal,
        origin,
        placed_at,
        customer_id,
        ..
    } = placed()
    else {
        unreachable!()
    };
    let charges = charged();
    OrderTest::with(())
        .given_no_previous_events()
        .when(place_with(charges.clone()))
        .then_expect_events(vec![OrderEvent::OrderCreated {
            order_id: order_id(),
            customer_id,
            currency: usd(),
            lines,
            subtotal: money(5000),
            discounts: charges.discounts,
            shipping_lines: charges.shipping_lines,
            tax_lines: charges.tax_lines,
            // 5000 − 500 − 1000 + 700 + 336
            total: money(4536),
            personal,
            origin,
            placed_at,
        }]);
}

#[test]
fn payments_are_checked_against_the_charged_total() {
    let placed = Order::default().decide(place_with(charged())).unwrap();
    given(placed.clone())
        .when(attempt("pay-1", 5000))
        .then_expect_error(OrderError::AmountMismatch { due: money(4536) });
    let order = state_after(placed);
    assert_eq!(order.placed().unwrap().amount_due(), money(4536));
}

#[test]
fn a_discount_for_a_sku_not_on_the_order_is_refused() {
    let mut charges = charged();
    charges.discounts.push(discount("HAT-1", Some("HAT"), 100));
    OrderTest::with(())
        .given_no_previous_events()
        .when(place_with(charges))
        .then_expect_error(OrderError::DiscountLineNotInOrder {
            code: text("HAT-1"),
            sku: sku("HAT"),
        });
}

#[test]
fn discounts_on_a_line_cannot_take_more_than_its_total() {
    let charges = Charges {
        discounts: vec![
            discount("A", Some("TEE"), 1500),
            discount("B", Some("TEE"), 501),
        ],
        ..Charges::default()
    };
    OrderTest::with(())
        .given_no_previous_events()
        .when(place_with(charges))
        .then_expect_error(OrderError::DiscountExceedsLine {
            sku: sku("TEE"),
            line_total: money(2000),
        });
}

#[test]
fn discounts_cannot_take_more_than_the_subtotal_even_with_shipping_to_pay() {
    let charges = Charges {
        discounts: vec![discount("ALL", None, 5001)],
        shipping_lines: vec![ShippingLine {
            title: text("Express"),
            price: money(2000),
        }],
        ..Charges::default()
    };
    OrderTest::with(())
        .given_no_previous_events()
        .when(place_with(charges))
        .then_expect_error(OrderError::DiscountExceedsSubtotal {
            subtotal: money(5000),
        });
}

#[test]
fn a_charge_in_another_currency_is_refused() {
    let mut charges = charged();
    charges.tax_lines[0].amount = Money::parse(336, Currency::parse("EUR").unwrap()).unwrap();
    OrderTest::with(())
        .given_no_previous_events()
        .when(place_with(charges))
        .then_expect_error(OrderError::ChargeCurrencyMismatch);
}

#[test]
fn a_free_order_is_placed_and_owes_nothing() {
    let charges = Charges {
        discounts: vec![discount("FREE", None, 5000)],
        ..Charges::default()
    };
    let order = state_after(Order::default().decide(place_with(charges)).unwrap());
    assert!(order.placed().unwrap().amount_due().is_zero());
}
