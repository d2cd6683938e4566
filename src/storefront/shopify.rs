//! Shopify's webhook payloads (the REST resources, unwrapped) read into a [`Delivery`].
//!
//! Owns the shape of what Shopify sends for the order, refund and fulfilment topics
//! (STOREFRONTS.md): ids as JSON integers beyond 2^53, read as `u64` and never through a
//! double; money as decimal text in the shop's currency; times in ISO 8601 with the
//! shop's offset. Only the fields our order keeps are read; the hundreds of others, and
//! every piece of personal data, are skipped by serde unread. It never decides what our
//! order should do: that is `plan`.

use chrono::{DateTime, FixedOffset, Utc};
use serde::{Deserialize, Deserializer};

use super::personal::{self, AddressParts};
use super::snapshot::*;
use super::{amount_error, currency, fixed, from_json, guest, optional_text, Amount, PayloadError};
use crate::domain::personal::PersonalData;
use crate::domain::values::{Currency, CustomerId, Money, Quantity, ShippingAddress, Text};

/// Reads the body of one delivery of `topic` (the `X-Shopify-Topic` header).
pub fn parse(topic: &str, body: &[u8]) -> Result<Delivery, PayloadError> {
    match topic {
        "orders/create"
        | "orders/updated"
        | "orders/paid"
        | "orders/cancelled"
        | "orders/fulfilled"
        | "orders/partially_fulfilled" => {
            let order: Order = from_json(body)?;
            order.into_snapshot().map(Delivery::Order)
        }
        "refunds/create" => {
            let refund: Refund = from_json(body)?;
            let external_id = refund.order_id.ok_or_else(|| PayloadError::MissingField {
                path: "order_id".to_owned(),
            })?;
            // The payload names no currency but on its transactions; a refund without any
            // (it only restocked items) gave no money back.
            let Some(code) = refund
                .transactions
                .iter()
                .find_map(|t| t.currency.as_deref())
            else {
                return Ok(Delivery::Ignored {
                    reason: "the refund returned no money (a restock only)",
                });
            };
            let currency = currency(code)?;
            Ok(Delivery::Refund {
                external_id: external_id.to_string(),
                refund: refund.into_snapshot(currency, "")?,
            })
        }
        "fulfillments/create" | "fulfillments/update" => {
            let fulfillment: Fulfillment = from_json(body)?;
            let external_id = fulfillment
                .order_id
                .ok_or_else(|| PayloadError::MissingField {
                    path: "order_id".to_owned(),
                })?;
            match fulfillment.into_snapshot("")? {
                Some(fulfillment) => Ok(Delivery::Fulfillment {
                    external_id: external_id.to_string(),
                    fulfillment,
                }),
                None => Ok(Delivery::Ignored {
                    reason: "the fulfilment did not ship (pending, open, cancelled or failed)",
                }),
            }
        }
        _ => Ok(Delivery::Ignored {
            reason: "this Shopify topic moves no order",
        }),
    }
}

#[derive(Deserialize)]
struct Order {
    id: u64,
    name: Option<String>,
    currency: String,
    #[serde(deserialize_with = "time")]
    created_at: DateTime<Utc>,
    #[serde(deserialize_with = "time")]
    updated_at: DateTime<Utc>,
    #[serde(default, deserialize_with = "optional_time")]
    cancelled_at: Option<DateTime<Utc>>,
    cancel_reason: Option<String>,
    financial_status: Option<String>,
    #[serde(default)]
    taxes_included: bool,
    total_price: Amount,
    customer: Option<Customer>,
    // Personal data (`storefront::personal`).
    email: Option<String>,
    contact_email: Option<String>,
    phone: Option<String>,
    note: Option<String>,
    shipping_address: Option<Address>,
    billing_address: Option<Address>,
    line_items: Vec<LineItem>,
    #[serde(default)]
    discount_applications: Vec<DiscountApplication>,
    #[serde(default)]
    shipping_lines: Vec<ShippingLine>,
    #[serde(default)]
    tax_lines: Vec<TaxLine>,
    #[serde(default)]
    refunds: Vec<Refund>,
    #[serde(default)]
    fulfillments: Vec<Fulfillment>,
}

#[derive(Deserialize)]
struct Customer {
    id: u64,
}

#[derive(Deserialize)]
struct Address {
    name: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    address1: Option<String>,
    address2: Option<String>,
    city: Option<String>,
    province: Option<String>,
    zip: Option<String>,
    country_code: Option<String>,
    phone: Option<String>,
}

impl Address {
    fn read(&self) -> Option<ShippingAddress> {
        AddressParts {
            name: self.name.clone().or_else(|| {
                personal::full_name(self.first_name.as_deref(), self.last_name.as_deref())
            }),
            line1: self.address1.as_deref(),
            line2: self.address2.as_deref(),
            city: self.city.as_deref(),
            region: self.province.as_deref(),
            postal_code: self.zip.as_deref(),
            country: self.country_code.as_deref(),
        }
        .address()
    }
}

#[derive(Deserialize)]
struct LineItem {
    id: u64,
    sku: Option<String>,
    quantity: i64,
    price: Amount,
    total_discount: Option<Amount>,
    #[serde(default)]
    discount_allocations: Vec<DiscountAllocation>,
}

#[derive(Deserialize)]
struct DiscountAllocation {
    amount: Amount,
    discount_application_index: usize,
}

#[derive(Deserialize)]
struct DiscountApplication {
    code: Option<String>,
    title: Option<String>,
}

#[derive(Deserialize)]
struct ShippingLine {
    title: Option<String>,
    price: Amount,
    #[serde(default)]
    discount_allocations: Vec<DiscountAllocation>,
}

#[derive(Deserialize)]
struct TaxLine {
    title: Option<String>,
    price: Amount,
}

#[derive(Deserialize)]
struct Refund {
    id: u64,
    /// Present on refunds/create; inside an order it is the order's own id.
    order_id: Option<u64>,
    #[serde(deserialize_with = "time")]
    created_at: DateTime<Utc>,
    note: Option<String>,
    #[serde(default)]
    transactions: Vec<Transaction>,
}

#[derive(Deserialize)]
struct Transaction {
    kind: String,
    status: Option<String>,
    amount: Amount,
    currency: Option<String>,
}

#[derive(Deserialize)]
struct Fulfillment {
    id: u64,
    order_id: Option<u64>,
    status: Option<String>,
    #[serde(deserialize_with = "time")]
    created_at: DateTime<Utc>,
    #[serde(deserialize_with = "time")]
    updated_at: DateTime<Utc>,
    tracking_company: Option<String>,
    tracking_number: Option<String>,
    shipment_status: Option<String>,
    #[serde(default)]
    line_items: Vec<FulfillmentLine>,
}

#[derive(Deserialize)]
struct FulfillmentLine {
    id: u64,
    sku: Option<String>,
    quantity: i64,
}

impl Order {
    fn into_snapshot(self) -> Result<Snapshot, PayloadError> {
        let currency = currency(&self.currency)?;
        let labels: Vec<Text> = self
            .discount_applications
            .iter()
            .enumerate()
            .map(|(i, application)| application.label(i))
            .collect::<Result<_, _>>()?;
        let lines = self
            .line_items
            .into_iter()
            .enumerate()
            .map(|(i, line)| line.into_snapshot(i, currency, &labels))
            .collect::<Result<Vec<_>, _>>()?;
        let mut discounts = Vec::new();
        let mut shipping_lines = Vec::new();
        for (i, shipping) in self.shipping_lines.into_iter().enumerate() {
            let field = format!("shipping_lines[{i}]");
            discounts.extend(allocations(
                &field,
                &shipping.discount_allocations,
                currency,
                &labels,
            )?);
            shipping_lines.push(SnapshotCharge {
                title: optional_text(&format!("{field}.title"), shipping.title.as_deref())?
                    .unwrap_or_else(|| fixed("Shipping")),
                amount: money(&format!("{field}.price"), &shipping.price, currency)?,
            });
        }
        let tax_lines = self
            .tax_lines
            .iter()
            .enumerate()
            .map(|(i, tax)| {
                let field = format!("tax_lines[{i}]");
                Ok(SnapshotCharge {
                    title: optional_text(&format!("{field}.title"), tax.title.as_deref())?
                        .unwrap_or_else(|| fixed("Tax")),
                    amount: money(&format!("{field}.price"), &tax.price, currency)?,
                })
            })
            .collect::<Result<Vec<_>, PayloadError>>()?;
        let total = money("total_price", &self.total_price, currency)?;
        let payment = match self.financial_status.as_deref() {
            None | Some("pending") | Some("partially_paid") => SnapshotPayment::None,
            Some("authorized") => SnapshotPayment::Authorized,
            // A refunded order was paid first; the refunds say what went back. Shopify's
            // order has no time of payment (that is on its transactions).
            Some("paid") | Some("partially_refunded") | Some("refunded") => SnapshotPayment::Paid {
                amount: total,
                at: None,
            },
            Some("voided") => SnapshotPayment::Voided { at: None },
            Some(other) => {
                return Err(PayloadError::UnsupportedStatus {
                    status: other.to_owned(),
                })
            }
        };
        let refunds = self
            .refunds
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.into_snapshot(currency, &format!("refunds[{i}].")))
            .collect::<Result<Vec<_>, _>>()?;
        let mut fulfillments = Vec::new();
        for (i, f) in self.fulfillments.into_iter().enumerate() {
            fulfillments.extend(f.into_snapshot(&format!("fulfillments[{i}]."))?);
        }
        let cancellation = match self.cancelled_at {
            None => None,
            Some(at) => Some(SnapshotCancellation {
                reason: optional_text("cancel_reason", self.cancel_reason.as_deref())?,
                at,
            }),
        };
        let customer_id = match self.customer {
            Some(customer) => CustomerId::parse(&customer.id.to_string())
                .map_err(PayloadError::value("customer.id"))?,
            None => guest(),
        };
        let phone = self
            .phone
            .as_deref()
            .or_else(|| self.shipping_address.as_ref()?.phone.as_deref());
        let personal = Box::new(PersonalData {
            shipping_address: self.shipping_address.as_ref().and_then(Address::read),
            billing_address: self.billing_address.as_ref().and_then(Address::read),
            email: personal::email(self.email.as_deref().or(self.contact_email.as_deref())),
            phone: personal::phone(phone),
            note: personal::note(self.note.as_deref()),
        });
        let snapshot = Snapshot {
            platform: Platform::Shopify,
            external_id: self.id.to_string(),
            external_number: optional_text("name", self.name.as_deref())?,
            currency,
            customer_id,
            personal,
            lines,
            discounts,
            shipping_lines,
            tax_lines,
            taxes_included: self.taxes_included,
            total,
            payment,
            refunds,
            fulfillments,
            cancellation,
            created_at: self.created_at,
            updated_at: self.updated_at,
        };
        snapshot.check_totals()?;
        Ok(snapshot)
    }
}

impl DiscountApplication {
    /// A discount code when there is one, else the discount's title.
    fn label(&self, index: usize) -> Result<Text, PayloadError> {
        let field = |name| format!("discount_applications[{index}].{name}");
        let code = optional_text(&field("code"), self.code.as_deref())?;
        let title = optional_text(&field("title"), self.title.as_deref())?;
        Ok(code.or(title).unwrap_or_else(|| fixed("discount")))
    }
}

impl LineItem {
    fn into_snapshot(
        self,
        index: usize,
        currency: Currency,
        labels: &[Text],
    ) -> Result<SnapshotLine, PayloadError> {
        let field = format!("line_items[{index}]");
        let mut discounts = allocations(&field, &self.discount_allocations, currency, labels)?;
        // Versions before discount allocations state only the line's total discount.
        if self.discount_allocations.is_empty() {
            if let Some(raw) = &self.total_discount {
                let amount = money(&format!("{field}.total_discount"), raw, currency)?;
                if !amount.is_zero() {
                    discounts.push(SnapshotCharge {
                        title: fixed("discount"),
                        amount,
                    });
                }
            }
        }
        Ok(SnapshotLine {
            line_id: self.id.to_string(),
            sku: self.sku.filter(|s| !s.trim().is_empty()),
            quantity: Quantity::parse(self.quantity)
                .map_err(PayloadError::value(format!("{field}.quantity")))?,
            unit_price: money(&format!("{field}.price"), &self.price, currency)?,
            discounts,
        })
    }
}

/// The non-zero discount allocations of one line or shipping line, each named after its
/// discount application.
fn allocations(
    field: &str,
    allocations: &[DiscountAllocation],
    currency: Currency,
    labels: &[Text],
) -> Result<Vec<SnapshotCharge>, PayloadError> {
    let mut charges = Vec::new();
    for (i, allocation) in allocations.iter().enumerate() {
        let field = format!("{field}.discount_allocations[{i}]");
        let amount = money(&format!("{field}.amount"), &allocation.amount, currency)?;
        if amount.is_zero() {
            continue;
        }
        let title = labels
            .get(allocation.discount_application_index)
            .cloned()
            .ok_or_else(|| PayloadError::InvalidField {
                path: format!("{field}.discount_application_index"),
                detail: "names no entry of `discount_applications`".to_owned(),
            })?;
        charges.push(SnapshotCharge { title, amount });
    }
    Ok(charges)
}

impl Refund {
    /// What went back to the customer: the successful refund transactions added up.
    fn into_snapshot(self, currency: Currency, path: &str) -> Result<SnapshotRefund, PayloadError> {
        let mut amount = Money::zero(currency);
        for (i, t) in self.transactions.iter().enumerate() {
            let succeeded = matches!(t.status.as_deref(), None | Some("success"));
            if t.kind != "refund" || !succeeded {
                continue;
            }
            let field = format!("{path}transactions[{i}].amount");
            let part = t
                .amount
                .magnitude(currency)
                .map_err(amount_error(&field, &t.amount))?;
            amount = amount
                .checked_add(part)
                .ok_or_else(|| PayloadError::InvalidAmount {
                    field,
                    raw: t.amount.as_str().to_owned(),
                    reason: super::AmountError::TooLarge,
                })?;
        }
        Ok(SnapshotRefund {
            key: RefundKey::Platform(self.id.to_string()),
            amount,
            reason: optional_text(&format!("{path}note"), self.note.as_deref())?,
            at: self.created_at,
        })
    }
}

impl Fulfillment {
    /// The fulfilment as our shipment would be, or `None` when nothing left the shop
    /// (it is still pending or open, or it was cancelled or failed).
    fn into_snapshot(self, path: &str) -> Result<Option<SnapshotFulfillment>, PayloadError> {
        if self.status.as_deref() != Some("success") {
            return Ok(None);
        }
        let lines = self
            .line_items
            .into_iter()
            .enumerate()
            .map(|(i, line)| {
                Ok(FulfilledLine {
                    line_id: line.id.to_string(),
                    sku: line.sku.filter(|s| !s.trim().is_empty()),
                    quantity: Quantity::parse(line.quantity).map_err(PayloadError::value(
                        format!("{path}line_items[{i}].quantity"),
                    ))?,
                })
            })
            .collect::<Result<Vec<_>, PayloadError>>()?;
        let delivered = self.shipment_status.as_deref() == Some("delivered");
        Ok(Some(SnapshotFulfillment {
            key: FulfillmentKey::Platform(self.id.to_string()),
            carrier: optional_text(
                &format!("{path}tracking_company"),
                self.tracking_company.as_deref(),
            )?,
            tracking_number: optional_text(
                &format!("{path}tracking_number"),
                self.tracking_number.as_deref(),
            )?,
            lines: Some(lines),
            at: self.created_at,
            delivered_at: delivered.then_some(self.updated_at),
        }))
    }
}

fn money(field: &str, raw: &Amount, currency: Currency) -> Result<Money, PayloadError> {
    raw.money(currency).map_err(amount_error(field, raw))
}

/// An ISO 8601 time with an offset, as Shopify writes them (`2026-11-21T07:05:07-05:00`).
fn time<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let raw = String::deserialize(d)?;
    raw.parse::<DateTime<FixedOffset>>()
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            serde::de::Error::custom(format!("`{raw}` is no ISO 8601 time with an offset ({e})"))
        })
}

fn optional_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    #[derive(Deserialize)]
    struct Time(#[serde(deserialize_with = "time")] DateTime<Utc>);
    Ok(Option::<Time>::deserialize(d)?.map(|t| t.0))
}
