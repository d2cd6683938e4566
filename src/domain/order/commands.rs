//! What may be asked of an order. Every field is already a typed value: the API parsed
//! it. Each command carries `at`, the time the request was received, so that the
//! aggregate stays pure and its tests deterministic.

use chrono::{DateTime, Utc};

use super::events::{Discount, Origin, ShippingLine, TaxLine};

use crate::domain::personal::Personal;
use crate::domain::values::{
    Currency, CustomerId, MinorUnits, Money, OrderId, PaymentId, Quantity, RefundId, ShipmentId,
    Sku, Text,
};

#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    PlaceOrder(PlaceOrder),
    AttemptPayment(AttemptPayment),
    CapturePayment(CapturePayment),
    FailPayment(FailPayment),
    DispatchShipment(DispatchShipment),
    DeliverShipment(DeliverShipment),
    CancelOrder(CancelOrder),
    RefundOrder(RefundOrder),
    ExpireOrder(ExpireOrder),
}

/// One requested line: a SKU, how many, and the price per unit in the order's currency.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestedLine {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price: Money,
    /// No stock was reserved for this line: its SKU is not tracked.
    pub untracked: bool,
    /// Units of the line that stock could not cover, owed to the order: set by the
    /// placement of a storefront's sale, 0 otherwise.
    pub backordered: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlaceOrder {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub currency: Currency,
    pub lines: Vec<RequestedLine>,
    pub charges: Charges,
    /// Sealed at the edge (`domain::personal`): the domain never sees it in the clear.
    pub personal: Option<Personal>,
    /// Set for an order that a storefront platform placed (it arrived through a source).
    pub origin: Option<Box<Origin>>,
    pub at: DateTime<Utc>,
}

/// What an order adds to and takes off its lines, as the storefront priced them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Charges {
    pub discounts: Vec<Discount>,
    pub shipping_lines: Vec<ShippingLine>,
    pub tax_lines: Vec<TaxLine>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AttemptPayment {
    pub payment_id: PaymentId,
    /// In minor units of the order's currency; it must equal the amount due.
    pub amount: MinorUnits,
    pub method: Option<Text>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CapturePayment {
    pub payment_id: PaymentId,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FailPayment {
    pub payment_id: PaymentId,
    pub reason: Text,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DispatchShipment {
    pub shipment_id: ShipmentId,
    pub carrier: Text,
    pub tracking_number: Text,
    /// `None` ships everything not yet shipped.
    pub lines: Option<Vec<(Sku, Quantity)>>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DeliverShipment {
    pub shipment_id: ShipmentId,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CancelOrder {
    pub reason: Text,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RefundOrder {
    pub refund_id: RefundId,
    /// In minor units of the order's currency.
    pub amount: MinorUnits,
    pub reason: Text,
    pub at: DateTime<Utc>,
}

/// Sent by the reservation process manager when an order stayed unpaid too long.
#[derive(Debug, Clone, PartialEq)]
pub struct ExpireOrder {
    pub at: DateTime<Utc>,
}
