//! WooCommerce's webhook payloads (the REST v3 order) read into a [`Delivery`].
//!
//! Owns the shape of what WooCommerce sends (STOREFRONTS.md): an order whose `status`
//! says where it stands, money as decimal text at the store's own number of decimals
//! (a JPY store may send "1000.00"), refunds as negative text, and `*_gmt` times without
//! an offset, which are UTC. Woo builds the payload when it sends it, so every delivery is
//! the order as it is now, whatever the topic. The ping sent when a webhook is created
//! (the form body `webhook_id=42`) is read as nothing to do. Personal data (billing,
//! shipping) is never read.

use chrono::{DateTime, FixedOffset, NaiveDateTime, Utc};
use serde::{Deserialize, Deserializer};

use super::personal::{self, AddressParts};
use super::snapshot::*;
use super::{amount_error, currency, fixed, from_json, guest, optional_text, Amount, PayloadError};
use crate::domain::personal::PersonalData;
use crate::domain::values::{Currency, CustomerId, Money, Quantity, ShippingAddress, Text};

/// Reads the body of one delivery of `topic` (the `X-WC-Webhook-Topic` header).
pub fn parse(topic: &str, body: &[u8]) -> Result<Delivery, PayloadError> {
    if is_ping(body) {
        return Ok(Delivery::Ignored {
            reason: "a WooCommerce webhook ping",
        });
    }
    match topic {
        "order.created" | "order.updated" => {
            let order: Order = from_json(body)?;
            order.into_delivery()
        }
        "order.deleted" => Ok(Delivery::Ignored {
            reason: "a deleted WooCommerce order is gone from the shop, not undone here",
        }),
        "order.restored" => Ok(Delivery::Ignored {
            reason: "a restored WooCommerce order is followed by its next order.updated",
        }),
        _ => Ok(Delivery::Ignored {
            reason: "this WooCommerce topic moves no order",
        }),
    }
}

/// The form body `webhook_id=<digits>` WooCommerce sends, unsigned, when a webhook is
/// created.
pub fn is_ping(body: &[u8]) -> bool {
    let mut pairs = form_urlencoded::parse(body);
    matches!(
        (pairs.next(), pairs.next()),
        (Some((key, value)), None)
            if key == "webhook_id" && !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())
    )
}

#[derive(Deserialize)]
struct Order {
    id: u64,
    number: Option<String>,
    status: String,
    currency: String,
    #[serde(default)]
    customer_id: u64,
    #[serde(deserialize_with = "time")]
    date_created_gmt: DateTime<Utc>,
    #[serde(deserialize_with = "time")]
    date_modified_gmt: DateTime<Utc>,
    #[serde(default, deserialize_with = "optional_time")]
    date_paid_gmt: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "optional_time")]
    date_completed_gmt: Option<DateTime<Utc>>,
    total: Amount,
    // Personal data (`storefront::personal`).
    billing: Option<Address>,
    shipping: Option<Address>,
    customer_note: Option<String>,
    line_items: Vec<LineItem>,
    #[serde(default)]
    shipping_lines: Vec<ShippingLine>,
    #[serde(default)]
    tax_lines: Vec<TaxLine>,
    #[serde(default)]
    coupon_lines: Vec<CouponLine>,
    #[serde(default)]
    fee_lines: Vec<FeeLine>,
    #[serde(default)]
    refunds: Vec<Refund>,
}

#[derive(Deserialize)]
struct Address {
    first_name: Option<String>,
    last_name: Option<String>,
    address_1: Option<String>,
    address_2: Option<String>,
    city: Option<String>,
    state: Option<String>,
    postcode: Option<String>,
    country: Option<String>,
    email: Option<String>,
    phone: Option<String>,
}

impl Address {
    fn read(&self) -> Option<ShippingAddress> {
        AddressParts {
            name: personal::full_name(self.first_name.as_deref(), self.last_name.as_deref()),
            line1: self.address_1.as_deref(),
            line2: self.address_2.as_deref(),
            city: self.city.as_deref(),
            region: self.state.as_deref(),
            postal_code: self.postcode.as_deref(),
            country: self.country.as_deref(),
        }
        .address()
    }
}

#[derive(Deserialize)]
struct LineItem {
    id: u64,
    sku: Option<String>,
    quantity: i64,
    /// The line before discounts, without tax.
    subtotal: Amount,
    /// The line after discounts, without tax.
    total: Amount,
}

#[derive(Deserialize)]
struct ShippingLine {
    method_title: Option<String>,
    total: Amount,
}

#[derive(Deserialize)]
struct TaxLine {
    label: Option<String>,
    rate_code: Option<String>,
    tax_total: Amount,
    shipping_tax_total: Amount,
}

#[derive(Deserialize)]
struct CouponLine {
    code: String,
}

#[derive(Deserialize)]
struct FeeLine {
    name: Option<String>,
    total: Amount,
}

#[derive(Deserialize)]
struct Refund {
    id: u64,
    reason: Option<String>,
    /// Negative text: "-10.00".
    total: Amount,
}

/// What a status says happened, beyond the lines and charges.
struct Status {
    paid: bool,
    failed: bool,
    cancelled: bool,
    completed: bool,
    fully_refunded: bool,
}

impl Order {
    fn status(&self) -> Result<Option<Status>, PayloadError> {
        let none = Status {
            paid: false,
            failed: false,
            cancelled: false,
            completed: false,
            fully_refunded: false,
        };
        Ok(Some(match self.status.as_str() {
            "pending" | "on-hold" => none,
            "processing" => Status { paid: true, ..none },
            "completed" => Status {
                paid: true,
                completed: true,
                ..none
            },
            // A cancelled order may have been paid first (its refund is a refund).
            "cancelled" => Status {
                paid: self.date_paid_gmt.is_some(),
                cancelled: true,
                ..none
            },
            // A refunded order was paid, and shipped if it was ever completed.
            "refunded" => Status {
                paid: true,
                completed: self.date_completed_gmt.is_some(),
                fully_refunded: true,
                ..none
            },
            "failed" => Status {
                failed: true,
                ..none
            },
            // In the bin, or a cart that is not an order yet: nothing was sold.
            "trash" | "checkout-draft" => return Ok(None),
            other => {
                return Err(PayloadError::UnsupportedStatus {
                    status: other.to_owned(),
                })
            }
        }))
    }

    fn into_delivery(self) -> Result<Delivery, PayloadError> {
        let Some(status) = self.status()? else {
            return Ok(Delivery::Ignored {
                reason: "a WooCommerce order in the bin or still a draft sells nothing",
            });
        };
        let currency = currency(&self.currency)?;
        let coupons = self
            .coupon_lines
            .iter()
            .map(|c| c.code.trim())
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
            .join(", ");
        let coupons = optional_text("coupon_lines.code", Some(&coupons))?
            .unwrap_or_else(|| fixed("discount"));
        let lines = self
            .line_items
            .into_iter()
            .enumerate()
            .map(|(i, line)| line.into_snapshot(i, currency, &coupons))
            .collect::<Result<Vec<_>, _>>()?;
        // Woo's coupons are already in the lines' totals; a negative fee is the one
        // discount on the order as a whole.
        let mut discounts = Vec::new();
        for (i, fee) in self.fee_lines.iter().enumerate() {
            let field = format!("fee_lines[{i}].total");
            let minor = fee
                .total
                .minor_units(currency)
                .map_err(amount_error(&field, &fee.total))?;
            if minor > 0 {
                return Err(PayloadError::UnsupportedCharge { what: "a fee line" });
            }
            if minor < 0 {
                discounts.push(SnapshotCharge {
                    title: optional_text(&format!("fee_lines[{i}].name"), fee.name.as_deref())?
                        .unwrap_or_else(|| fixed("discount")),
                    amount: money(&field, &fee.total, currency, true)?,
                });
            }
        }
        let shipping_lines = self
            .shipping_lines
            .iter()
            .enumerate()
            .map(|(i, s)| {
                Ok(SnapshotCharge {
                    title: optional_text(
                        &format!("shipping_lines[{i}].method_title"),
                        s.method_title.as_deref(),
                    )?
                    .unwrap_or_else(|| fixed("Shipping")),
                    amount: money(
                        &format!("shipping_lines[{i}].total"),
                        &s.total,
                        currency,
                        false,
                    )?,
                })
            })
            .collect::<Result<Vec<_>, PayloadError>>()?;
        let tax_lines = self
            .tax_lines
            .iter()
            .enumerate()
            .map(|(i, t)| t.to_snapshot(i, currency))
            .collect::<Result<Vec<_>, _>>()?;
        let total = money("total", &self.total, currency, false)?;
        let modified = self.date_modified_gmt;
        let payment = if status.paid {
            SnapshotPayment::Paid {
                amount: total,
                at: self.date_paid_gmt,
            }
        } else if status.failed {
            SnapshotPayment::Failed { at: Some(modified) }
        } else {
            SnapshotPayment::None
        };
        let mut refunds = Vec::new();
        let mut refunded = Money::zero(currency);
        for (i, refund) in self.refunds.iter().enumerate() {
            let field = format!("refunds[{i}].total");
            let amount = money(&field, &refund.total, currency, true)?;
            refunded = refunded
                .checked_add(amount)
                .ok_or_else(|| PayloadError::InvalidAmount {
                    field,
                    raw: refund.total.as_str().to_owned(),
                    reason: super::AmountError::TooLarge,
                })?;
            // Woo's refund entries carry no time of their own.
            refunds.push(SnapshotRefund {
                key: RefundKey::Platform(refund.id.to_string()),
                amount,
                reason: optional_text(&format!("refunds[{i}].reason"), refund.reason.as_deref())?,
                at: modified,
            });
        }
        if status.fully_refunded {
            if let Some(rest) = total.checked_sub(refunded).filter(|m| !m.is_zero()) {
                refunds.push(SnapshotRefund {
                    key: RefundKey::Remainder,
                    amount: rest,
                    reason: None,
                    at: modified,
                });
            }
        }
        let completed_at = self.date_completed_gmt.unwrap_or(modified);
        let fulfillments = if status.completed {
            vec![SnapshotFulfillment {
                key: FulfillmentKey::WholeOrder,
                carrier: None,
                tracking_number: None,
                lines: None,
                at: completed_at,
                delivered_at: Some(completed_at),
            }]
        } else {
            Vec::new()
        };
        let customer_id = match self.customer_id {
            0 => guest(),
            id => CustomerId::parse(&id.to_string()).map_err(PayloadError::value("customer_id"))?,
        };
        let billing = self.billing.as_ref();
        let personal = Box::new(PersonalData {
            shipping_address: self.shipping.as_ref().and_then(Address::read),
            billing_address: billing.and_then(Address::read),
            email: personal::email(billing.and_then(|b| b.email.as_deref())),
            phone: personal::phone(
                billing
                    .and_then(|b| b.phone.as_deref())
                    .or_else(|| self.shipping.as_ref().and_then(|s| s.phone.as_deref())),
            ),
            note: personal::note(self.customer_note.as_deref()),
        });
        let snapshot = Snapshot {
            platform: Platform::WooCommerce,
            external_id: self.id.to_string(),
            external_number: optional_text("number", self.number.as_deref())?,
            currency,
            customer_id,
            personal,
            lines,
            discounts,
            shipping_lines,
            tax_lines,
            // Woo's line totals are without tax whatever the store's display setting,
            // and its tax lines are added on top.
            taxes_included: false,
            total,
            payment,
            refunds,
            fulfillments,
            cancellation: status.cancelled.then_some(SnapshotCancellation {
                reason: None,
                at: modified,
            }),
            created_at: self.date_created_gmt,
            updated_at: modified,
        };
        snapshot.check_totals()?;
        Ok(Delivery::Order(snapshot))
    }
}

impl LineItem {
    fn into_snapshot(
        self,
        index: usize,
        currency: Currency,
        coupons: &Text,
    ) -> Result<SnapshotLine, PayloadError> {
        let field = format!("line_items[{index}]");
        let quantity = Quantity::parse(self.quantity)
            .map_err(PayloadError::value(format!("{field}.quantity")))?;
        let subtotal = money(
            &format!("{field}.subtotal"),
            &self.subtotal,
            currency,
            false,
        )?;
        let total = money(&format!("{field}.total"), &self.total, currency, false)?;
        // Woo's `price` is a double (total / quantity); the subtotal is exact, and our
        // line keeps a whole unit price.
        let units = i64::from(quantity.get());
        if subtotal.amount() % units != 0 {
            return Err(PayloadError::UnevenUnitPrice {
                line_id: self.id.to_string(),
                total: subtotal.amount(),
                quantity: quantity.get(),
            });
        }
        let unit_price = Money::parse(subtotal.amount() / units, currency)
            .map_err(PayloadError::value(format!("{field}.subtotal")))?;
        let discount = subtotal
            .checked_sub(total)
            .ok_or_else(|| PayloadError::InvalidField {
                path: format!("{field}.total"),
                detail: "is more than the line's subtotal".to_owned(),
            })?;
        Ok(SnapshotLine {
            line_id: self.id.to_string(),
            sku: self.sku.filter(|s| !s.trim().is_empty()),
            quantity,
            unit_price,
            discounts: if discount.is_zero() {
                Vec::new()
            } else {
                vec![SnapshotCharge {
                    title: coupons.clone(),
                    amount: discount,
                }]
            },
        })
    }
}

impl TaxLine {
    /// One tax rate, on the lines and on shipping together.
    fn to_snapshot(
        &self,
        index: usize,
        currency: Currency,
    ) -> Result<SnapshotCharge, PayloadError> {
        let field = format!("tax_lines[{index}]");
        let lines = money(
            &format!("{field}.tax_total"),
            &self.tax_total,
            currency,
            false,
        )?;
        let shipping = money(
            &format!("{field}.shipping_tax_total"),
            &self.shipping_tax_total,
            currency,
            false,
        )?;
        let title = optional_text(&format!("{field}.label"), self.label.as_deref())?
            .or(optional_text(
                &format!("{field}.rate_code"),
                self.rate_code.as_deref(),
            )?)
            .unwrap_or_else(|| fixed("Tax"));
        Ok(SnapshotCharge {
            title,
            amount: lines
                .checked_add(shipping)
                .ok_or_else(|| PayloadError::InvalidAmount {
                    field: format!("{field}.shipping_tax_total"),
                    raw: self.shipping_tax_total.as_str().to_owned(),
                    reason: super::AmountError::TooLarge,
                })?,
        })
    }
}

/// A non-negative amount, or with `either_sign` the size of one written with a sign
/// (Woo's refunds and negative fees).
fn money(
    field: &str,
    raw: &Amount,
    currency: Currency,
    either_sign: bool,
) -> Result<Money, PayloadError> {
    let money = if either_sign {
        raw.magnitude(currency)
    } else {
        raw.money(currency)
    };
    money.map_err(amount_error(field, raw))
}

/// A `*_gmt` time: ISO 8601 without an offset, in UTC (`2026-11-21T12:05:07`). One with
/// an offset is read as what it says.
fn time<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let raw = String::deserialize(d)?;
    if let Ok(naive) = raw.parse::<NaiveDateTime>() {
        return Ok(naive.and_utc());
    }
    raw.parse::<DateTime<FixedOffset>>()
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| serde::de::Error::custom(format!("`{raw}` is no ISO 8601 time ({e})")))
}

fn optional_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    #[derive(Deserialize)]
    struct Time(#[serde(deserialize_with = "time")] DateTime<Utc>);
    Ok(Option::<Time>::deserialize(d)?.map(|t| t.0))
}
