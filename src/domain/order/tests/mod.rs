//! Given these events, when this command, then these events or this error: one test per
//! branch of every command, named as the sentence it proves.
//!
//! This file holds the fixtures the test files beside it share: one order's commands
//! and events, built from typed values, and the executor that runs them. Each file
//! beside it tests one stage of the order's life. None of them does any I/O or reads a
//! clock: every time is fixed.

use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::TestFramework;

use super::*;
use crate::domain::values::*;

type OrderTest = TestFramework<Order>;

mod cancelling_and_refunding;
mod charges;
mod expiring;
mod placing_and_paying;
mod shipping;
mod status;

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
                backordered: 0,
            },
            RequestedLine {
                sku: sku("TEE"),
                quantity: qty(1),
                unit_price: money(2000),
                untracked: true,
                backordered: 0,
            },
        ],
        charges: Charges::default(),
        personal: None,
        origin: None,
        at: at(0),
    })
}

fn placed() -> OrderEvent {
    OrderEvent::OrderCreated {
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
                backordered: 0,
            },
            OrderLine {
                sku: sku("TEE"),
                quantity: qty(1),
                unit_price: money(2000),
                line_total: money(2000),
                untracked: true,
                backordered: 0,
            },
        ],
        subtotal: money(5000),
        discounts: vec![],
        shipping_lines: vec![],
        tax_lines: vec![],
        total: money(5000),
        personal: None,
        origin: None,
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

fn state_cancelled(refundable: Money) -> OrderEvent {
    OrderEvent::OrderCancelled {
        order_id: order_id(),
        reason: text("changed mind"),
        lines: match placed() {
            OrderEvent::OrderCreated { lines, .. } => lines,
            _ => unreachable!(),
        },
        refundable,
        cancelled_at: at(5),
    }
}
