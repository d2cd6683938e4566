//! One storefront delivery as a platform-neutral view: what Shopify or WooCommerce said
//! about one order, already in typed values, with nothing of either platform's shape left.
//!
//! The parsers (`shopify`, `woocommerce`) build these; the plan (`plan`) reads them. A
//! snapshot holds only what our order keeps: no names, emails, phones or addresses
//! (the shipping address is optional on an order and left out here). It never decides
//! anything about our order; it only states what the platform holds.

use chrono::{DateTime, Utc};

use super::PayloadError;
use crate::domain::personal::PersonalData;
use crate::domain::values::{Currency, CustomerId, Money, Quantity, Text};

/// The storefront platforms we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Platform {
    Shopify,
    WooCommerce,
}

impl Platform {
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Shopify => "shopify",
            Platform::WooCommerce => "woocommerce",
        }
    }

    pub fn parse(raw: &str) -> Option<Platform> {
        [Platform::Shopify, Platform::WooCommerce]
            .into_iter()
            .find(|p| p.as_str() == raw)
    }
}

/// What one delivery says.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// A whole order as the platform holds it now (Shopify orders/*, every Woo order.*).
    Order(Snapshot),
    /// Shopify refunds/create: one refund of one order.
    Refund {
        external_id: String,
        refund: SnapshotRefund,
    },
    /// Shopify fulfillments/create|update: one fulfilment of one order.
    Fulfillment {
        external_id: String,
        fulfillment: SnapshotFulfillment,
    },
    /// A topic that moves no order (inventory_levels/update, order.deleted, order.restored, …).
    Ignored { reason: &'static str },
}

impl Delivery {
    /// The platform's id of the order it is about; `None` when it moves no order.
    pub fn external_id(&self) -> Option<&str> {
        match self {
            Delivery::Order(snapshot) => Some(&snapshot.external_id),
            Delivery::Refund { external_id, .. } | Delivery::Fulfillment { external_id, .. } => {
                Some(external_id)
            }
            Delivery::Ignored { .. } => None,
        }
    }
}

/// One order as the platform holds it at the time of the delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub platform: Platform,
    /// The platform's id for the order, as decimal text (Shopify's exceed 2^53).
    pub external_id: String,
    /// What the shop calls it: Shopify's `name` ("#1001"), Woo's `number`.
    pub external_number: Option<Text>,
    pub currency: Currency,
    /// The platform's customer id, or `guest` for an order without an account.
    pub customer_id: CustomerId,
    /// The customer's addresses, email, phone and note, as far as they read
    /// (`domain::personal`): sealed by the applier before the order is placed.
    pub personal: Box<PersonalData>,
    pub lines: Vec<SnapshotLine>,
    /// Discounts on the order as a whole (not allocated to a line), such as a shipping
    /// discount.
    pub discounts: Vec<SnapshotCharge>,
    pub shipping_lines: Vec<SnapshotCharge>,
    pub tax_lines: Vec<SnapshotCharge>,
    /// True when line prices already include the taxes (Shopify `taxes_included`): the
    /// tax lines are then part of the lines' prices, not added to the total.
    pub taxes_included: bool,
    /// The platform's own total for the order.
    pub total: Money,
    pub payment: SnapshotPayment,
    pub refunds: Vec<SnapshotRefund>,
    pub fulfillments: Vec<SnapshotFulfillment>,
    pub cancellation: Option<SnapshotCancellation>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One line of the platform's order.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotLine {
    /// The platform's id for the line, as decimal text.
    pub line_id: String,
    /// The SKU as the platform sent it: `None` when null or empty. It may still be no
    /// valid `Sku`; the plan decides what stands for it.
    pub sku: Option<String>,
    pub quantity: Quantity,
    pub unit_price: Money,
    /// What was taken off this line, each with what the platform calls the discount.
    pub discounts: Vec<SnapshotCharge>,
}

/// A titled amount: a discount (its code or title), a shipping line or a tax line.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotCharge {
    pub title: Text,
    pub amount: Money,
}

/// Where the order's payment stands on the platform.
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotPayment {
    /// Nothing paid or authorised yet (Shopify pending, partially_paid; Woo pending, on-hold).
    None,
    /// Funds held, not captured (Shopify authorized).
    Authorized,
    /// Paid in full: `amount` as the platform states it, `at` when it says so.
    Paid {
        amount: Money,
        at: Option<DateTime<Utc>>,
    },
    /// The payment was declined (Woo failed).
    Failed { at: Option<DateTime<Utc>> },
    /// The authorisation was released without capture (Shopify voided).
    Voided { at: Option<DateTime<Utc>> },
}

/// Which refund of the order this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundKey {
    /// A refund the platform lists with its own id.
    Platform(String),
    /// What a Woo `refunded` status says was refunded beyond the refunds it lists.
    Remainder,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRefund {
    pub key: RefundKey,
    /// What went back to the customer; zero for a refund that only restocked items.
    pub amount: Money,
    pub reason: Option<Text>,
    pub at: DateTime<Utc>,
}

/// Which fulfilment of the order this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FulfillmentKey {
    /// A fulfilment the platform lists with its own id (Shopify).
    Platform(String),
    /// The whole order at once, as a Woo `completed` status says.
    WholeOrder,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotFulfillment {
    pub key: FulfillmentKey,
    pub carrier: Option<Text>,
    pub tracking_number: Option<Text>,
    /// The lines it sent; `None` for everything not yet sent.
    pub lines: Option<Vec<FulfilledLine>>,
    pub at: DateTime<Utc>,
    /// When the platform says it arrived (Shopify `shipment_status: "delivered"`).
    pub delivered_at: Option<DateTime<Utc>>,
}

/// Units of one platform line in a fulfilment.
#[derive(Debug, Clone, PartialEq)]
pub struct FulfilledLine {
    pub line_id: String,
    pub sku: Option<String>,
    pub quantity: Quantity,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotCancellation {
    pub reason: Option<Text>,
    pub at: DateTime<Utc>,
}

impl Snapshot {
    /// Lines − discounts + shipping + taxes (taxes left out when the prices include
    /// them), in minor units: what our order's total will be.
    pub fn computed_total(&self) -> i128 {
        let minor = |m: &Money| i128::from(m.amount());
        let lines: i128 = self
            .lines
            .iter()
            .map(|l| {
                minor(&l.unit_price) * i128::from(l.quantity.get())
                    - l.discounts.iter().map(|d| minor(&d.amount)).sum::<i128>()
            })
            .sum();
        let discounts: i128 = self.discounts.iter().map(|d| minor(&d.amount)).sum();
        let shipping: i128 = self.shipping_lines.iter().map(|s| minor(&s.amount)).sum();
        let taxes: i128 = if self.taxes_included {
            0
        } else {
            self.tax_lines.iter().map(|t| minor(&t.amount)).sum()
        };
        lines - discounts + shipping + taxes
    }

    /// Refuses a snapshot whose parts do not add up to the platform's total: our order
    /// would then charge something else than the shop did.
    pub fn check_totals(&self) -> Result<(), PayloadError> {
        let computed = self.computed_total();
        if computed == i128::from(self.total.amount()) {
            return Ok(());
        }
        Err(PayloadError::TotalsDisagree {
            computed,
            platform: self.total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_platform_reads_back_from_its_name() {
        for platform in [Platform::Shopify, Platform::WooCommerce] {
            assert_eq!(Platform::parse(platform.as_str()), Some(platform));
        }
        assert_eq!(Platform::parse("magento"), None);
    }
}
