//! The order's events: the facts the log keeps forever.
//!
//! Each variant's `rename` is its stored `event_type`, a contract with every reader,
//! webhook receiver and replay; it never changes. A change of shape bumps
//! [`OrderEvent::version`] for that event and adds an upcaster, never a rename.
//! Events carry every fact a reader needs (prices, totals, running sums, currency), so no
//! projection or receiver ever has to recompute or look anything up.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::domain::personal::Personal;
use crate::domain::tagged;
use crate::domain::values::{
    utc, Currency, CustomerId, Money, OrderId, PaymentId, Quantity, RefundId, ShipmentId, Sku,
    SourceName, Text,
};

/// One line of an order, priced when the order was placed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price: Money,
    /// `unit_price × quantity`, stated so readers never multiply.
    pub line_total: Money,
    /// True when the SKU's stock is not tracked, so no units were reserved for this line
    /// (digital goods, "don't track inventory"). Absent means tracked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untracked: bool,
    /// Units of the line that stock could not cover when a storefront's sale was placed:
    /// owed to the order, filled as stock arrives. Absent means none (and every order
    /// placed before backorders existed).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub backordered: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Units of one SKU that left in a shipment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentLine {
    pub sku: Sku,
    pub quantity: Quantity,
}

/// Money taken off the order: off one line's total when `sku` names it, else off the
/// order as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discount {
    /// What the storefront calls it: a code ("SUMMER10") or a title.
    pub code: Text,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<Sku>,
    pub amount: Money,
}

/// A shipping charge ("Standard", "Express").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShippingLine {
    pub title: Text,
    pub price: Money,
}

/// A tax charged on the order ("VAT 20%"), as the storefront computed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxLine {
    pub title: Text,
    pub amount: Money,
}

/// Where a storefront order came from: the source it arrived through and the
/// platform's own id and number for it, so that either side can find it in the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    pub source: SourceName,
    /// The platform's id for the order, as a string: Shopify's exceed 2^53.
    pub external_id: Text,
    /// What the shop and its customer call it (`#1001`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_number: Option<Text>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
// Stored as `{"type": <name>, <fields>…}`, through `domain::tagged` (see below): the
// derive gives the externally tagged form, as inherent functions.
#[serde(remote = "Self")]
pub enum OrderEvent {
    /// Emitted once, when a storefront places an order. Version 1.1 added `subtotal`,
    /// `discounts`, `shipping_lines` and `tax_lines`; a 1.0 event reads as an order
    /// with none of them (`domain::upcast`). Version 1.2 holds the personal data sealed
    /// (`personal`); a 1.1 event's clear `shipping_address` reads as legacy clear data.
    /// `origin` is optional since 1.1 and absent
    /// from orders placed without one: a field that readers may lack, not a new shape.
    #[serde(rename = "order.created")]
    OrderCreated {
        order_id: OrderId,
        customer_id: CustomerId,
        currency: Currency,
        lines: Vec<OrderLine>,
        /// The lines' totals added up.
        subtotal: Money,
        discounts: Vec<Discount>,
        shipping_lines: Vec<ShippingLine>,
        tax_lines: Vec<TaxLine>,
        /// `subtotal − discounts + shipping + taxes`: what the customer owes.
        total: Money,
        /// The customer's addresses, email, phone and note, sealed under a data key of
        /// theirs (`domain::personal`). Absent when the order carried none. Version 1.2
        /// moved the clear `shipping_address` of 1.1 in here.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        personal: Option<Personal>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        origin: Option<Box<Origin>>,
        #[serde(deserialize_with = "utc::deserialize")]
        placed_at: DateTime<Utc>,
    },
    /// Emitted when a payment for the amount due is started with a payment provider.
    #[serde(rename = "payment.attempted")]
    PaymentAttempted {
        order_id: OrderId,
        payment_id: PaymentId,
        amount: Money,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        method: Option<Text>,
        #[serde(deserialize_with = "utc::deserialize")]
        attempted_at: DateTime<Utc>,
    },
    /// Emitted when the provider confirms a pending payment's funds.
    #[serde(rename = "payment.captured")]
    PaymentCaptured {
        order_id: OrderId,
        payment_id: PaymentId,
        amount: Money,
        /// Everything captured on the order so far, this payment included.
        captured_total: Money,
        #[serde(deserialize_with = "utc::deserialize")]
        captured_at: DateTime<Utc>,
    },
    /// Emitted when the provider declines a pending payment; a new attempt may follow.
    #[serde(rename = "payment.failed")]
    PaymentFailed {
        order_id: OrderId,
        payment_id: PaymentId,
        amount: Money,
        reason: Text,
        #[serde(deserialize_with = "utc::deserialize")]
        failed_at: DateTime<Utc>,
    },
    /// Emitted when some or all of the remaining units leave the warehouse.
    #[serde(rename = "shipment.dispatched")]
    ShipmentDispatched {
        order_id: OrderId,
        shipment_id: ShipmentId,
        carrier: Text,
        tracking_number: Text,
        lines: Vec<ShipmentLine>,
        /// True when this shipment sent the last unshipped unit of the order.
        order_fully_shipped: bool,
        #[serde(deserialize_with = "utc::deserialize")]
        dispatched_at: DateTime<Utc>,
    },
    /// Emitted when a carrier reports a dispatched shipment as delivered.
    #[serde(rename = "shipment.delivered")]
    ShipmentDelivered {
        order_id: OrderId,
        shipment_id: ShipmentId,
        #[serde(deserialize_with = "utc::deserialize")]
        delivered_at: DateTime<Utc>,
    },
    /// Emitted right after the delivery that leaves no unit undelivered.
    #[serde(rename = "order.fulfilled")]
    OrderFulfilled {
        order_id: OrderId,
        total: Money,
        #[serde(deserialize_with = "utc::deserialize")]
        fulfilled_at: DateTime<Utc>,
    },
    /// Emitted when an order is cancelled before any shipment. `lines` are the units it
    /// no longer needs; `refundable` is what was captured and not yet refunded.
    #[serde(rename = "order.cancelled")]
    OrderCancelled {
        order_id: OrderId,
        reason: Text,
        lines: Vec<OrderLine>,
        refundable: Money,
        #[serde(deserialize_with = "utc::deserialize")]
        cancelled_at: DateTime<Utc>,
    },
    /// Emitted when an order stayed unpaid past its deadline; its stock is released.
    #[serde(rename = "order.expired")]
    OrderExpired {
        order_id: OrderId,
        lines: Vec<OrderLine>,
        #[serde(deserialize_with = "utc::deserialize")]
        expired_at: DateTime<Utc>,
    },
    /// Emitted for each refund, partial or full, of captured money. A refund does not
    /// restock anything: stock comes back only through an explicit receipt.
    #[serde(rename = "order.refunded")]
    OrderRefunded {
        order_id: OrderId,
        refund_id: RefundId,
        amount: Money,
        reason: Text,
        /// Everything refunded on the order so far, this refund included.
        refunded_total: Money,
        /// True when everything captured has now been refunded.
        fully_refunded: bool,
        #[serde(deserialize_with = "utc::deserialize")]
        refunded_at: DateTime<Utc>,
    },
}

tagged::stored_form!(OrderEvent);

impl OrderEvent {
    /// The version this event is stored at today: its shape's version, bumped with an
    /// upcaster from the one before (`domain::upcast`).
    pub fn version(&self) -> &'static str {
        match self {
            OrderEvent::OrderCreated { .. } => "1.2",
            _ => "1.0",
        }
    }

    /// Every stored name, as [`OrderEvent::name`] gives them.
    pub const NAMES: &'static [&'static str] = &[
        "order.created",
        "payment.attempted",
        "payment.captured",
        "payment.failed",
        "shipment.dispatched",
        "shipment.delivered",
        "order.fulfilled",
        "order.cancelled",
        "order.expired",
        "order.refunded",
    ];

    /// The stored name of this event: a contract that never changes.
    pub fn name(&self) -> &'static str {
        match self {
            OrderEvent::OrderCreated { .. } => "order.created",
            OrderEvent::PaymentAttempted { .. } => "payment.attempted",
            OrderEvent::PaymentCaptured { .. } => "payment.captured",
            OrderEvent::PaymentFailed { .. } => "payment.failed",
            OrderEvent::ShipmentDispatched { .. } => "shipment.dispatched",
            OrderEvent::ShipmentDelivered { .. } => "shipment.delivered",
            OrderEvent::OrderFulfilled { .. } => "order.fulfilled",
            OrderEvent::OrderCancelled { .. } => "order.cancelled",
            OrderEvent::OrderExpired { .. } => "order.expired",
            OrderEvent::OrderRefunded { .. } => "order.refunded",
        }
    }
}

impl OrderEvent {
    /// When the fact happened, as the command that caused it stated.
    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            OrderEvent::OrderCreated { placed_at: at, .. }
            | OrderEvent::PaymentAttempted {
                attempted_at: at, ..
            }
            | OrderEvent::PaymentCaptured {
                captured_at: at, ..
            }
            | OrderEvent::PaymentFailed { failed_at: at, .. }
            | OrderEvent::ShipmentDispatched {
                dispatched_at: at, ..
            }
            | OrderEvent::ShipmentDelivered {
                delivered_at: at, ..
            }
            | OrderEvent::OrderFulfilled {
                fulfilled_at: at, ..
            }
            | OrderEvent::OrderCancelled {
                cancelled_at: at, ..
            }
            | OrderEvent::OrderExpired { expired_at: at, .. }
            | OrderEvent::OrderRefunded {
                refunded_at: at, ..
            } => *at,
        }
    }

    pub fn order_id(&self) -> &OrderId {
        match self {
            OrderEvent::OrderCreated { order_id, .. }
            | OrderEvent::PaymentAttempted { order_id, .. }
            | OrderEvent::PaymentCaptured { order_id, .. }
            | OrderEvent::PaymentFailed { order_id, .. }
            | OrderEvent::ShipmentDispatched { order_id, .. }
            | OrderEvent::ShipmentDelivered { order_id, .. }
            | OrderEvent::OrderFulfilled { order_id, .. }
            | OrderEvent::OrderCancelled { order_id, .. }
            | OrderEvent::OrderExpired { order_id, .. }
            | OrderEvent::OrderRefunded { order_id, .. } => order_id,
        }
    }
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> String {
        self.name().to_owned()
    }

    fn event_version(&self) -> String {
        self.version().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_type_tag_is_the_event_type() {
        let event = OrderEvent::ShipmentDelivered {
            order_id: OrderId::parse("o-1").unwrap(),
            shipment_id: ShipmentId::parse("s-1").unwrap(),
            delivered_at: DateTime::<Utc>::UNIX_EPOCH,
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], event.name());
        assert_eq!(event.event_type(), "shipment.delivered");
        assert_eq!(serde_json::from_value::<OrderEvent>(json).unwrap(), event);
    }
}
