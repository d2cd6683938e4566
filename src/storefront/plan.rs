//! The plan: the next command that brings our order closer to what a delivery shows.
//!
//! The applier asks [`next_step`], runs the step, reloads the order and asks again until
//! the answer is `None`. So each step changes the order in a way the next question sees,
//! and the plan is monotonic and idempotent: every id it names is derived from the
//! platform's ids (payments `pay-<order id>`, refunds `r<refund id>`, shipments
//! `f<fulfilment id>`, Woo's completion `done`), and it only ever adds what the order
//! lacks. A duplicate, an older snapshot after a newer one, or a topic that arrives out of
//! order therefore finds nothing to do, and nothing a newer snapshot did is undone: a
//! cancelled order takes no new payment or shipment, a refund is never taken back.
//!
//! Steps come in the order the Order aggregate accepts them: place, pay, ship, refund,
//! cancel. The plan proposes only commands the aggregate accepts when the snapshot is
//! consistent; when it is not (a fulfilment of an unpaid order), the aggregate's refusal
//! is the answer the inbox records.

use chrono::{DateTime, Utc};

use super::snapshot::*;
use super::PayloadError;
use crate::domain::order::{
    AttemptPayment, CancelOrder, CapturePayment, Charges, DeliverShipment, Discount,
    DispatchShipment, FailPayment, OrderCommand, Origin, PaymentStatus, PlaceOrder, PlacedOrder,
    RefundOrder, RequestedLine, ShipmentStatus, ShippingLine, TaxLine,
};
use crate::domain::values::{
    CustomerId, MinorUnits, OrderId, PaymentId, Quantity, RefundId, ShipmentId, Sku, SourceName,
    Text,
};

/// One command for the applier to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Place the order: it is not in our log yet. Placement decides each line's stock and
    /// never refuses a storefront's sale for it.
    Place(PlaceOrder),
    Apply(OrderCommand),
}

/// `{source}-{external id}`, e.g. `myshop-820982911946154508`; an error if it does not fit an OrderId.
pub fn order_id(source: &SourceName, external_id: &str) -> Result<OrderId, PayloadError> {
    OrderId::parse(&format!("{source}-{external_id}")).map_err(PayloadError::value("order id"))
}

/// Whom the order is for: the platform's customer, or, for a guest checkout, a guest of
/// this one order (`guest-<order id>`), so that one guest's erasure is not every
/// guest's. The order's `customer_id` names it.
fn customer_id(snapshot: &Snapshot, order_id: &OrderId) -> Result<CustomerId, PayloadError> {
    if snapshot.customer_id.as_str() != "guest" {
        return Ok(snapshot.customer_id.clone());
    }
    CustomerId::parse(&format!("guest-{order_id}")).or_else(|_| {
        // Past the id's length: a digest of the order id stands for it.
        use sha2::{Digest, Sha256};
        let digest = hex::encode(&Sha256::digest(order_id.as_str().as_bytes())[..12]);
        CustomerId::parse(&format!("guest-{digest}")).map_err(PayloadError::value("customer id"))
    })
}

/// The next command that brings `current` (None: the order is not in our log yet) closer to
/// what the delivery shows, or None when our order already shows all of it.
pub fn next_step(
    source: &SourceName,
    delivery: &Delivery,
    current: Option<&PlacedOrder>,
    received_at: DateTime<Utc>,
) -> Result<Option<Step>, PayloadError> {
    let command = match delivery {
        Delivery::Ignored { .. } => None,
        Delivery::Order(snapshot) => match current {
            None => return place(source, snapshot).map(|p| Some(Step::Place(p))),
            Some(order) => follow(snapshot, order, received_at)?,
        },
        // Without the order there is nothing to compare with: the command goes anyway,
        // and the aggregate answers that the order does not exist.
        Delivery::Refund { refund, .. } => refund_command(refund, current)?,
        Delivery::Fulfillment { fulfillment, .. } => match current {
            Some(order) if !is_open(order) => None,
            _ => fulfillment_command(fulfillment, &[], current)?,
        },
    };
    Ok(command.map(Step::Apply))
}

/// The order as the snapshot shows it when it was created.
fn place(source: &SourceName, snapshot: &Snapshot) -> Result<PlaceOrder, PayloadError> {
    let currency = snapshot.currency;
    let mut lines: Vec<RequestedLine> = Vec::with_capacity(snapshot.lines.len());
    let mut discounts = Vec::new();
    for line in &snapshot.lines {
        let (sku, untracked) = line_sku(line.sku.as_deref(), &line.line_id)?;
        match lines.iter_mut().find(|l| l.sku == sku) {
            // Our order keeps one line per SKU: two platform lines of one SKU (a gift and
            // a purchase, say) become one when nothing tells them apart.
            Some(same) => {
                if same.unit_price != line.unit_price {
                    return Err(PayloadError::ConflictingLinePrices { sku });
                }
                same.quantity = Quantity::parse(
                    i64::from(same.quantity.get()) + i64::from(line.quantity.get()),
                )
                .map_err(PayloadError::value(format!("quantity of SKU {sku}")))?;
            }
            None => lines.push(RequestedLine {
                sku: sku.clone(),
                quantity: line.quantity,
                unit_price: line.unit_price,
                untracked,
                // The placement finds out what stock cannot cover.
                backordered: 0,
            }),
        }
        discounts.extend(line.discounts.iter().map(|d| Discount {
            code: d.title.clone(),
            sku: Some(sku.clone()),
            amount: d.amount,
        }));
    }
    discounts.extend(snapshot.discounts.iter().map(|d| Discount {
        code: d.title.clone(),
        sku: None,
        amount: d.amount,
    }));
    let shipping_lines = snapshot
        .shipping_lines
        .iter()
        .map(|s| ShippingLine {
            title: s.title.clone(),
            price: s.amount,
        })
        .collect();
    // Taxes included in the prices are already in the lines; added again, they would
    // charge them twice.
    let tax_lines = if snapshot.taxes_included {
        Vec::new()
    } else {
        snapshot
            .tax_lines
            .iter()
            .map(|t| TaxLine {
                title: t.title.clone(),
                amount: t.amount,
            })
            .collect()
    };
    let origin = Origin {
        source: source.clone(),
        external_id: Text::parse(&snapshot.external_id).map_err(PayloadError::value("id"))?,
        external_number: snapshot.external_number.clone(),
    };
    let order_id = order_id(source, &snapshot.external_id)?;
    Ok(PlaceOrder {
        customer_id: customer_id(snapshot, &order_id)?,
        order_id,
        currency,
        lines,
        charges: Charges {
            discounts,
            shipping_lines,
            tax_lines,
        },
        personal: None,
        origin: Some(Box::new(origin)),
        at: snapshot.created_at,
    })
}

/// The SKU that stands for a platform line, and whether it is one of ours: the line's
/// own SKU when it is a valid one, else `item-<line id>`, a SKU no stock is kept for.
fn line_sku(raw: Option<&str>, line_id: &str) -> Result<(Sku, bool), PayloadError> {
    if let Some(sku) = raw.and_then(|raw| Sku::parse(raw).ok()) {
        return Ok((sku, false));
    }
    let synthetic =
        Sku::parse(&format!("item-{line_id}")).map_err(PayloadError::value("line id"))?;
    Ok((synthetic, true))
}

fn is_open(order: &PlacedOrder) -> bool {
    order.cancellation.is_none() && order.expired_at.is_none()
}

/// The first thing the snapshot shows that the order does not.
fn follow(
    snapshot: &Snapshot,
    order: &PlacedOrder,
    received_at: DateTime<Utc>,
) -> Result<Option<OrderCommand>, PayloadError> {
    // A cancelled order takes no payment or shipment: a snapshot that shows one is older
    // than the cancellation, or the payment would have come first.
    if is_open(order) {
        if let Some(command) = payment_command(snapshot, order, received_at)? {
            return Ok(Some(command));
        }
        for fulfillment in &snapshot.fulfillments {
            if let Some(command) = fulfillment_command(fulfillment, &snapshot.lines, Some(order))? {
                return Ok(Some(command));
            }
        }
    }
    for refund in &snapshot.refunds {
        if let Some(command) = refund_command(refund, Some(order))? {
            return Ok(Some(command));
        }
    }
    match &snapshot.cancellation {
        Some(cancellation) if is_open(order) => Ok(Some(OrderCommand::CancelOrder(CancelOrder {
            reason: match &cancellation.reason {
                Some(reason) => reason.clone(),
                None => fixed_text("cancelled on the storefront"),
            },
            at: cancellation.at,
        }))),
        _ => Ok(None),
    }
}

fn payment_command(
    snapshot: &Snapshot,
    order: &PlacedOrder,
    received_at: DateTime<Utc>,
) -> Result<Option<OrderCommand>, PayloadError> {
    let due = order.amount_due();
    if due.is_zero() {
        return Ok(None);
    }
    let pending = order
        .payments
        .iter()
        .find(|p| p.status == PaymentStatus::Pending);
    let failed = |reason: &'static str, at: &Option<DateTime<Utc>>| {
        let at = at.unwrap_or(received_at);
        match pending {
            Some(p) => Ok(Some(OrderCommand::FailPayment(FailPayment {
                payment_id: p.payment_id.clone(),
                reason: fixed_text(reason),
                at,
            }))),
            // The failure is recorded once, on an order that saw no payment before:
            // after a later attempt, an old failed snapshot says nothing new.
            None if order.payments.is_empty() => attempt(snapshot, order, at),
            None => Ok(None),
        }
    };
    match &snapshot.payment {
        SnapshotPayment::None => Ok(None),
        SnapshotPayment::Authorized if order.payments.is_empty() => {
            attempt(snapshot, order, received_at)
        }
        SnapshotPayment::Authorized => Ok(None),
        SnapshotPayment::Paid { amount, at } => {
            if *amount != order.total {
                return Err(PayloadError::PaymentDisagrees {
                    paid: *amount,
                    total: order.total,
                });
            }
            let at = at.unwrap_or(received_at);
            match pending {
                Some(p) => Ok(Some(OrderCommand::CapturePayment(CapturePayment {
                    payment_id: p.payment_id.clone(),
                    at,
                }))),
                None => attempt(snapshot, order, at),
            }
        }
        SnapshotPayment::Failed { at } => failed("the payment failed on the storefront", at),
        SnapshotPayment::Voided { at } => {
            failed("the authorisation was voided on the storefront", at)
        }
    }
}

/// An attempt for the amount due, under the first of `pay-<id>`, `pay-<id>-2`, … the
/// order does not have yet (a failed attempt keeps its id).
fn attempt(
    snapshot: &Snapshot,
    order: &PlacedOrder,
    at: DateTime<Utc>,
) -> Result<Option<OrderCommand>, PayloadError> {
    let taken = |id: &PaymentId| order.payments.iter().any(|p| &p.payment_id == id);
    let mut payment_id = payment_id(&format!("pay-{}", snapshot.external_id))?;
    for n in 2.. {
        if !taken(&payment_id) {
            break;
        }
        payment_id = self::payment_id(&format!("pay-{}-{n}", snapshot.external_id))?;
    }
    let amount = MinorUnits::parse(order.amount_due().amount())
        .map_err(PayloadError::value("amount due"))?;
    Ok(Some(OrderCommand::AttemptPayment(AttemptPayment {
        payment_id,
        amount,
        method: None,
        at,
    })))
}

fn payment_id(raw: &str) -> Result<PaymentId, PayloadError> {
    PaymentId::parse(raw).map_err(PayloadError::value("payment id"))
}

/// Dispatches a fulfilment the order lacks, or delivers one it has that arrived since.
fn fulfillment_command(
    fulfillment: &SnapshotFulfillment,
    lines: &[SnapshotLine],
    current: Option<&PlacedOrder>,
) -> Result<Option<OrderCommand>, PayloadError> {
    let shipment_id = match &fulfillment.key {
        FulfillmentKey::Platform(id) => format!("f{id}"),
        FulfillmentKey::WholeOrder => "done".to_owned(),
    };
    let shipment_id =
        ShipmentId::parse(&shipment_id).map_err(PayloadError::value("fulfilment id"))?;
    if let Some(order) = current {
        if let Some(shipment) = order
            .shipments
            .iter()
            .find(|s| s.shipment_id == shipment_id)
        {
            return Ok(match fulfillment.delivered_at {
                Some(at) if shipment.status != ShipmentStatus::Delivered => {
                    Some(OrderCommand::DeliverShipment(DeliverShipment {
                        shipment_id,
                        at,
                    }))
                }
                _ => None,
            });
        }
        // Every unit already left in other shipments (a fulfilment the platform
        // cancelled and made again): ours cannot be taken back, so this one adds nothing.
        if order.remaining_to_ship().is_empty() {
            return Ok(None);
        }
    }
    let shipped = match &fulfillment.lines {
        None => None,
        Some(fulfilled) => Some(shipment_lines(fulfilled, lines)?),
    };
    let placeholder = || fixed_text("unknown");
    Ok(Some(OrderCommand::DispatchShipment(DispatchShipment {
        shipment_id,
        carrier: fulfillment.carrier.clone().unwrap_or_else(placeholder),
        tracking_number: fulfillment
            .tracking_number
            .clone()
            .unwrap_or_else(placeholder),
        lines: shipped,
        at: fulfillment.at,
    })))
}

/// A fulfilment's lines as our SKUs, one entry per SKU: a line is found by its platform
/// id among the order's lines, else taken by its own SKU, as placing the order did.
fn shipment_lines(
    fulfilled: &[FulfilledLine],
    lines: &[SnapshotLine],
) -> Result<Vec<(Sku, Quantity)>, PayloadError> {
    let mut shipped: Vec<(Sku, Quantity)> = Vec::with_capacity(fulfilled.len());
    for line in fulfilled {
        let raw = match lines.iter().find(|l| l.line_id == line.line_id) {
            Some(ordered) => ordered.sku.as_deref(),
            None => line.sku.as_deref(),
        };
        let (sku, _) = line_sku(raw, &line.line_id)?;
        match shipped.iter_mut().find(|(s, _)| *s == sku) {
            Some((_, quantity)) => {
                *quantity =
                    Quantity::parse(i64::from(quantity.get()) + i64::from(line.quantity.get()))
                        .map_err(PayloadError::value(format!(
                            "shipped quantity of SKU {sku}"
                        )))?;
            }
            None => shipped.push((sku, line.quantity)),
        }
    }
    Ok(shipped)
}

/// Refunds a refund the order lacks. A refund of nothing (restock only) is no refund of
/// ours, and a fully refunded order takes no more: the platform's later record of what we
/// already took as the rest of a `refunded` status changes nothing.
fn refund_command(
    refund: &SnapshotRefund,
    current: Option<&PlacedOrder>,
) -> Result<Option<OrderCommand>, PayloadError> {
    if refund.amount.is_zero() {
        return Ok(None);
    }
    let refund_id = match &refund.key {
        RefundKey::Platform(id) => format!("r{id}"),
        RefundKey::Remainder => "r-rest".to_owned(),
    };
    let refund_id = RefundId::parse(&refund_id).map_err(PayloadError::value("refund id"))?;
    if let Some(order) = current {
        let fully_refunded =
            !order.captured.is_zero() && order.refunded.amount() >= order.captured.amount();
        if fully_refunded || order.refunds.iter().any(|r| r.refund_id == refund_id) {
            return Ok(None);
        }
    }
    Ok(Some(OrderCommand::RefundOrder(RefundOrder {
        refund_id,
        amount: MinorUnits::parse(refund.amount.amount())
            .map_err(PayloadError::value("refund amount"))?,
        reason: refund
            .reason
            .clone()
            .unwrap_or_else(|| fixed_text("refunded on the storefront")),
        at: refund.at,
    })))
}

fn fixed_text(text: &'static str) -> Text {
    super::fixed(text)
}
