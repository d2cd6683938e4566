//! The Order aggregate: it decides whether a command is allowed and which events it
//! causes (`handle`), and evolves its state from those events (`apply`).
//!
//! It is pure: no clock, no I/O, no ids invented here. Everything it needs arrives in the
//! command, so the same history and command always give the same answer. `apply` never
//! fails and never validates: an event in the log is a fact, whatever today's rules say.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use super::commands::*;
use super::errors::OrderError;
use super::events::{Discount, OrderEvent, OrderLine, Origin, ShipmentLine, ShippingLine, TaxLine};
use crate::domain::personal::Personal;
use crate::domain::values::{
    Currency, CustomerId, Money, OrderId, PaymentId, Quantity, RefundId, ShipmentId, Sku, Text,
};

/// The order's lifecycle as clients see it. Refunds outrank everything else because they
/// are what finance asks about; a cancelled order that was refunded reads `refunded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Placed,
    PaymentPending,
    Paid,
    PartiallyShipped,
    Shipped,
    Fulfilled,
    Cancelled,
    Expired,
    PartiallyRefunded,
    Refunded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Pending,
    Captured,
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShipmentStatus {
    Dispatched,
    Delivered,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Payment {
    pub payment_id: PaymentId,
    pub amount: Money,
    pub method: Option<Text>,
    pub status: PaymentStatus,
    pub failure_reason: Option<Text>,
    pub attempted_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Shipment {
    pub shipment_id: ShipmentId,
    pub carrier: Text,
    pub tracking_number: Text,
    pub lines: Vec<ShipmentLine>,
    pub status: ShipmentStatus,
    pub dispatched_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Refund {
    pub refund_id: RefundId,
    pub amount: Money,
    pub reason: Text,
    pub refunded_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cancellation {
    pub reason: Text,
    pub cancelled_at: DateTime<Utc>,
}

/// An order that exists. Its fields are read by the API; only `apply` writes them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlacedOrder {
    pub order_id: OrderId,
    pub customer_id: CustomerId,
    pub currency: Currency,
    pub lines: Vec<OrderLine>,
    pub subtotal: Money,
    pub discounts: Vec<Discount>,
    pub shipping_lines: Vec<ShippingLine>,
    pub tax_lines: Vec<TaxLine>,
    pub total: Money,
    pub personal: Option<Personal>,
    pub origin: Option<Box<Origin>>,
    pub placed_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub payments: Vec<Payment>,
    pub shipments: Vec<Shipment>,
    pub refunds: Vec<Refund>,
    pub captured: Money,
    pub refunded: Money,
    pub cancellation: Option<Cancellation>,
    pub expired_at: Option<DateTime<Utc>>,
    pub fulfilled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// How many events built this state: the order's stream version.
    version: usize,
    placed: Option<PlacedOrder>,
}

/// What the customer owes: `subtotal − discounts + shipping + taxes`, once every charge
/// is in the order's currency, every line discount names a line of the order and takes
/// no more than that line's total, and the discounts take no more than the subtotal.
fn charged(
    currency: Currency,
    subtotal: Money,
    lines: &[OrderLine],
    charges: &Charges,
) -> Result<Money, OrderError> {
    let discounts = || charges.discounts.iter().map(|d| d.amount);
    let added = || {
        let shipping = charges.shipping_lines.iter().map(|s| s.price);
        shipping.chain(charges.tax_lines.iter().map(|t| t.amount))
    };
    if discounts().chain(added()).any(|m| m.currency() != currency) {
        return Err(OrderError::ChargeCurrencyMismatch);
    }
    for discount in &charges.discounts {
        if let Some(sku) = discount
            .sku
            .as_ref()
            .filter(|s| !lines.iter().any(|l| &l.sku == *s))
        {
            return Err(OrderError::DiscountLineNotInOrder {
                code: discount.code.clone(),
                sku: sku.clone(),
            });
        }
    }
    for line in lines {
        let on_line = charges
            .discounts
            .iter()
            .filter(|d| d.sku.as_ref() == Some(&line.sku));
        if sum(currency, on_line.map(|d| d.amount))?.amount() > line.line_total.amount() {
            return Err(OrderError::DiscountExceedsLine {
                sku: line.sku.clone(),
                line_total: line.line_total,
            });
        }
    }
    let discounted = subtotal
        .checked_sub(sum(currency, discounts())?)
        .ok_or(OrderError::DiscountExceedsSubtotal { subtotal })?;
    discounted
        .checked_add(sum(currency, added())?)
        .ok_or(OrderError::TotalTooLarge)
}

/// Amounts in one currency added up, or `TotalTooLarge` past the accepted range.
fn sum(currency: Currency, amounts: impl Iterator<Item = Money>) -> Result<Money, OrderError> {
    let mut sum = Money::zero(currency);
    for amount in amounts {
        sum = sum.checked_add(amount).ok_or(OrderError::TotalTooLarge)?;
    }
    Ok(sum)
}

impl Order {
    pub fn version(&self) -> usize {
        self.version
    }

    /// The order, or `None` when no `order.created` was ever applied.
    pub fn placed(&self) -> Option<&PlacedOrder> {
        self.placed.as_ref()
    }
}

/// The few facts an order's status follows from. Readers that keep these facts (the
/// order summary view) derive the status with the same rule as the aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusFacts {
    pub total: i64,
    pub captured: i64,
    pub refunded: i64,
    pub pending_payment: bool,
    pub units_ordered: u64,
    pub units_shipped: u64,
    pub cancelled: bool,
    pub expired: bool,
    pub fulfilled: bool,
}

impl OrderStatus {
    /// The status as the API and the views spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Placed => "placed",
            OrderStatus::PaymentPending => "payment_pending",
            OrderStatus::Paid => "paid",
            OrderStatus::PartiallyShipped => "partially_shipped",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Fulfilled => "fulfilled",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
            OrderStatus::PartiallyRefunded => "partially_refunded",
            OrderStatus::Refunded => "refunded",
        }
    }

    /// Every status an order can have.
    pub const ALL: [OrderStatus; 10] = [
        OrderStatus::Placed,
        OrderStatus::PaymentPending,
        OrderStatus::Paid,
        OrderStatus::PartiallyShipped,
        OrderStatus::Shipped,
        OrderStatus::Fulfilled,
        OrderStatus::Cancelled,
        OrderStatus::Expired,
        OrderStatus::PartiallyRefunded,
        OrderStatus::Refunded,
    ];

    pub fn parse(raw: &str) -> Option<OrderStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    pub fn of(facts: &StatusFacts) -> OrderStatus {
        if facts.refunded > 0 {
            return if facts.refunded >= facts.captured {
                OrderStatus::Refunded
            } else {
                OrderStatus::PartiallyRefunded
            };
        }
        if facts.cancelled {
            return OrderStatus::Cancelled;
        }
        if facts.expired {
            return OrderStatus::Expired;
        }
        if facts.fulfilled {
            return OrderStatus::Fulfilled;
        }
        if facts.units_shipped > 0 {
            return if facts.units_shipped >= facts.units_ordered {
                OrderStatus::Shipped
            } else {
                OrderStatus::PartiallyShipped
            };
        }
        if facts.captured >= facts.total {
            return OrderStatus::Paid;
        }
        if facts.pending_payment {
            return OrderStatus::PaymentPending;
        }
        OrderStatus::Placed
    }
}

impl PlacedOrder {
    pub fn status(&self) -> OrderStatus {
        OrderStatus::of(&self.status_facts())
    }

    pub fn status_facts(&self) -> StatusFacts {
        let units = |lines: &mut dyn Iterator<Item = Quantity>| -> u64 {
            lines.map(|q| u64::from(q.get())).sum()
        };
        StatusFacts {
            total: self.total.amount(),
            captured: self.captured.amount(),
            refunded: self.refunded.amount(),
            pending_payment: self.pending_payment().is_some(),
            units_ordered: units(&mut self.lines.iter().map(|l| l.quantity)),
            units_shipped: units(
                &mut self
                    .shipments
                    .iter()
                    .flat_map(|s| &s.lines)
                    .map(|l| l.quantity),
            ),
            cancelled: self.cancellation.is_some(),
            expired: self.expired_at.is_some(),
            fulfilled: self.fulfilled_at.is_some(),
        }
    }

    /// What is still to be captured. Never negative: captures are bounded by the total.
    pub fn amount_due(&self) -> Money {
        self.total
            .checked_sub(self.captured)
            .unwrap_or(Money::zero(self.currency))
    }

    fn pending_payment(&self) -> Option<&Payment> {
        self.payments
            .iter()
            .find(|p| p.status == PaymentStatus::Pending)
    }

    fn payment(&self, id: &PaymentId) -> Result<&Payment, OrderError> {
        self.payments
            .iter()
            .find(|p| &p.payment_id == id)
            .ok_or_else(|| OrderError::PaymentNotFound {
                payment_id: id.clone(),
            })
    }

    fn shipment(&self, id: &ShipmentId) -> Result<&Shipment, OrderError> {
        self.shipments
            .iter()
            .find(|s| &s.shipment_id == id)
            .ok_or_else(|| OrderError::ShipmentNotFound {
                shipment_id: id.clone(),
            })
    }

    /// Units not yet shipped, per SKU, in line order; SKUs fully shipped are left out.
    pub fn remaining_to_ship(&self) -> Vec<(Sku, u32)> {
        self.lines
            .iter()
            .filter_map(|line| {
                let shipped: u32 = self
                    .shipments
                    .iter()
                    .flat_map(|s| &s.lines)
                    .filter(|l| l.sku == line.sku)
                    .map(|l| l.quantity.get())
                    .sum();
                let remaining = line.quantity.get().saturating_sub(shipped);
                (remaining > 0).then(|| (line.sku.clone(), remaining))
            })
            .collect()
    }

    fn refundable(&self) -> Money {
        self.captured
            .checked_sub(self.refunded)
            .unwrap_or(Money::zero(self.currency))
    }

    /// Cancelled and expired orders take no new payments or shipments.
    fn ensure_open(&self) -> Result<(), OrderError> {
        if self.cancellation.is_some() {
            return Err(OrderError::Cancelled);
        }
        if self.expired_at.is_some() {
            return Err(OrderError::Expired);
        }
        Ok(())
    }
}

impl Order {
    fn existing(&self) -> Result<&PlacedOrder, OrderError> {
        self.placed.as_ref().ok_or(OrderError::NotFound)
    }

    /// Decides which events a command causes, without changing any state.
    pub fn decide(&self, command: OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        match command {
            OrderCommand::PlaceOrder(cmd) => self.place(cmd),
            OrderCommand::AttemptPayment(cmd) => self.attempt_payment(cmd),
            OrderCommand::CapturePayment(cmd) => self.capture_payment(cmd),
            OrderCommand::FailPayment(cmd) => self.fail_payment(cmd),
            OrderCommand::DispatchShipment(cmd) => self.dispatch(cmd),
            OrderCommand::DeliverShipment(cmd) => self.deliver(cmd),
            OrderCommand::CancelOrder(cmd) => self.cancel(cmd),
            OrderCommand::RefundOrder(cmd) => self.refund(cmd),
            OrderCommand::ExpireOrder(cmd) => self.expire(cmd),
        }
    }

    fn place(&self, cmd: PlaceOrder) -> Result<Vec<OrderEvent>, OrderError> {
        if let Some(existing) = &self.placed {
            return Err(OrderError::AlreadyExists {
                order_id: existing.order_id.clone(),
            });
        }
        if cmd.lines.is_empty() {
            return Err(OrderError::NoLines);
        }
        let mut lines: Vec<OrderLine> = Vec::with_capacity(cmd.lines.len());
        let mut subtotal = Money::zero(cmd.currency);
        for line in cmd.lines {
            if lines.iter().any(|l| l.sku == line.sku) {
                return Err(OrderError::DuplicateLine { sku: line.sku });
            }
            if line.unit_price.currency() != cmd.currency {
                return Err(OrderError::CurrencyMismatch);
            }
            let line_total = line
                .unit_price
                .checked_mul(line.quantity)
                .ok_or(OrderError::TotalTooLarge)?;
            subtotal = subtotal
                .checked_add(line_total)
                .ok_or(OrderError::TotalTooLarge)?;
            lines.push(OrderLine {
                sku: line.sku,
                quantity: line.quantity,
                unit_price: line.unit_price,
                line_total,
                untracked: line.untracked,
                backordered: line.backordered,
            });
        }
        let total = charged(cmd.currency, subtotal, &lines, &cmd.charges)?;
        let Charges {
            discounts,
            shipping_lines,
            tax_lines,
        } = cmd.charges;
        Ok(vec![OrderEvent::OrderCreated {
            order_id: cmd.order_id,
            customer_id: cmd.customer_id,
            currency: cmd.currency,
            lines,
            subtotal,
            discounts,
            shipping_lines,
            tax_lines,
            total,
            personal: cmd.personal,
            origin: cmd.origin,
            placed_at: cmd.at,
        }])
    }

    fn attempt_payment(&self, cmd: AttemptPayment) -> Result<Vec<OrderEvent>, OrderError> {
        let order = self.existing()?;
        order.ensure_open()?;
        let due = order.amount_due();
        if due.is_zero() {
            return Err(OrderError::AlreadyPaid);
        }
        if let Some(pending) = order.pending_payment() {
            return Err(OrderError::PaymentInProgress {
                payment_id: pending.payment_id.clone(),
            });
        }
        if order.payment(&cmd.payment_id).is_ok() {
            return Err(OrderError::PaymentExists {
                payment_id: cmd.payment_id,
            });
        }
        let amount = cmd.amount.in_currency(order.currency);
        if amount != due {
            return Err(OrderError::AmountMismatch { due });
        }
        Ok(vec![OrderEvent::PaymentAttempted {
            order_id: order.order_id.clone(),
            payment_id: cmd.payment_id,
            amount,
            method: cmd.method,
            attempted_at: cmd.at,
        }])
    }

    fn capture_payment(&self, cmd: CapturePayment) -> Result<Vec<OrderEvent>, OrderError> {
        let order = self.existing()?;
        let payment = order.payment(&cmd.payment_id)?;
        order.ensure_open()?;
        if payment.status != PaymentStatus::Pending {
            return Err(OrderError::PaymentNotPending {
                payment_id: cmd.payment_id,
            });
        }
        // An attempt is always for the amount due, and only one is pending at a time, so
        // the sum stays within the total; saturate rather than trust that blindly.
        let captured_total = order
            .captured
            .checked_add(payment.amount)
            .unwrap_or(order.total);
        Ok(vec![OrderEvent::PaymentCaptured {
            order_id: order.order_id.clone(),
            payment_id: cmd.payment_id,
            amount: payment.amount,
            captured_total,
            captured_at: cmd.at,
        }])
    }

    fn fail_payment(&self, cmd: FailPayment) -> Result<Vec<OrderEvent>, OrderError> {
        let order = self.existing()?;
        let payment = order.payment(&cmd.payment_id)?;
        if payment.status != PaymentStatus::Pending {
            return Err(OrderError::PaymentNotPending {
                payment_id: cmd.payment_id,
            });
        }
        Ok(vec![OrderEvent::PaymentFailed {
            order_id: order.order_id.clone(),
            payment_id: cmd.payment_id,
            amount: payment.amount,
            reason: cmd.reason,
            failed_at: cmd.at,
        }])
    }

    fn dispatch(&self, cmd: DispatchShipment) -> Result<Vec<OrderEvent>, OrderError> {
        let order = self.existing()?;
        order.ensure_open()?;
        if !order.amount_due().is_zero() {
            return Err(OrderError::NotPaid);
        }
        if order.shipment(&cmd.shipment_id).is_ok() {
            return Err(OrderError::ShipmentExists {
                shipment_id: cmd.shipment_id,
            });
        }
        let remaining = order.remaining_to_ship();
        if remaining.is_empty() {
            return Err(OrderError::NothingToShip);
        }
        let lines = match cmd.lines {
            None => remaining
                .iter()
                .map(|(sku, units)| ShipmentLine {
                    sku: sku.clone(),
                    quantity: Quantity::parse(i64::from(*units))
                        .expect("remaining units are positive and bounded by an order line"),
                })
                .collect::<Vec<_>>(),
            Some(requested) => Self::check_shipment_lines(order, &remaining, requested)?,
        };
        let shipped_now: u32 = lines.iter().map(|l| l.quantity.get()).sum();
        let remaining_units: u32 = remaining.iter().map(|(_, units)| units).sum();
        Ok(vec![OrderEvent::ShipmentDispatched {
            order_id: order.order_id.clone(),
            shipment_id: cmd.shipment_id,
            carrier: cmd.carrier,
            tracking_number: cmd.tracking_number,
            lines,
            order_fully_shipped: shipped_now == remaining_units,
            dispatched_at: cmd.at,
        }])
    }

    fn check_shipment_lines(
        order: &PlacedOrder,
        remaining: &[(Sku, u32)],
        requested: Vec<(Sku, Quantity)>,
    ) -> Result<Vec<ShipmentLine>, OrderError> {
        let mut lines: Vec<ShipmentLine> = Vec::with_capacity(requested.len());
        for (sku, quantity) in requested {
            if !order.lines.iter().any(|l| l.sku == sku) {
                return Err(OrderError::LineNotInOrder { sku });
            }
            let left = remaining
                .iter()
                .find(|(s, _)| *s == sku)
                .map_or(0, |(_, units)| *units);
            let already_requested = lines
                .iter()
                .filter(|l| l.sku == sku)
                .map(|l| l.quantity.get())
                .sum::<u32>();
            if already_requested + quantity.get() > left {
                return Err(OrderError::ShipmentExceedsRemaining {
                    sku,
                    requested: quantity,
                    remaining: left - already_requested,
                });
            }
            lines.push(ShipmentLine { sku, quantity });
        }
        if lines.is_empty() {
            return Err(OrderError::NothingToShip);
        }
        Ok(lines)
    }

    fn deliver(&self, cmd: DeliverShipment) -> Result<Vec<OrderEvent>, OrderError> {
        let order = self.existing()?;
        let shipment = order.shipment(&cmd.shipment_id)?;
        if shipment.status == ShipmentStatus::Delivered {
            return Err(OrderError::AlreadyDelivered {
                shipment_id: cmd.shipment_id,
            });
        }
        let everything_delivered = order.remaining_to_ship().is_empty()
            && order
                .shipments
                .iter()
                .all(|s| s.shipment_id == cmd.shipment_id || s.status == ShipmentStatus::Delivered);
        let mut events = vec![OrderEvent::ShipmentDelivered {
            order_id: order.order_id.clone(),
            shipment_id: cmd.shipment_id,
            delivered_at: cmd.at,
        }];
        if everything_delivered {
            events.push(OrderEvent::OrderFulfilled {
                order_id: order.order_id.clone(),
                total: order.total,
                fulfilled_at: cmd.at,
            });
        }
        Ok(events)
    }

    fn cancel(&self, cmd: CancelOrder) -> Result<Vec<OrderEvent>, OrderError> {
        let order = self.existing()?;
        order.ensure_open()?;
        if let Some(first) = order.shipments.first() {
            return Err(OrderError::AlreadyShipped {
                shipment_id: first.shipment_id.clone(),
            });
        }
        Ok(vec![OrderEvent::OrderCancelled {
            order_id: order.order_id.clone(),
            reason: cmd.reason,
            lines: order.lines.clone(),
            refundable: order.refundable(),
            cancelled_at: cmd.at,
        }])
    }

    fn expire(&self, cmd: ExpireOrder) -> Result<Vec<OrderEvent>, OrderError> {
        let order = self.existing()?;
        order.ensure_open()?;
        if order.amount_due().is_zero() {
            return Err(OrderError::AlreadyPaid);
        }
        Ok(vec![OrderEvent::OrderExpired {
            order_id: order.order_id.clone(),
            lines: order.lines.clone(),
            expired_at: cmd.at,
        }])
    }

    fn refund(&self, cmd: RefundOrder) -> Result<Vec<OrderEvent>, OrderError> {
        let order = self.existing()?;
        if order.captured.is_zero() {
            return Err(OrderError::NothingCaptured);
        }
        if order.refunds.iter().any(|r| r.refund_id == cmd.refund_id) {
            return Err(OrderError::RefundExists {
                refund_id: cmd.refund_id,
            });
        }
        let refundable = order.refundable();
        let amount = cmd.amount.in_currency(order.currency);
        let refunded_total = order
            .refunded
            .checked_add(amount)
            .filter(|_| amount.amount() <= refundable.amount())
            .ok_or(OrderError::RefundExceedsCaptured { refundable })?;
        Ok(vec![OrderEvent::OrderRefunded {
            order_id: order.order_id.clone(),
            refund_id: cmd.refund_id,
            amount,
            reason: cmd.reason,
            refunded_total,
            fully_refunded: refunded_total == order.captured,
            refunded_at: cmd.at,
        }])
    }

    /// Evolves the state by one event. Infallible by design: see the module note.
    pub fn evolve(&mut self, event: OrderEvent) {
        self.version += 1;
        if let OrderEvent::OrderCreated {
            order_id,
            customer_id,
            currency,
            lines,
            subtotal,
            discounts,
            shipping_lines,
            tax_lines,
            total,
            personal,
            origin,
            placed_at,
        } = event
        {
            self.placed = Some(PlacedOrder {
                order_id,
                customer_id,
                currency,
                lines,
                subtotal,
                discounts,
                shipping_lines,
                tax_lines,
                total,
                personal,
                origin,
                placed_at,
                updated_at: placed_at,
                payments: Vec::new(),
                shipments: Vec::new(),
                refunds: Vec::new(),
                captured: Money::zero(currency),
                refunded: Money::zero(currency),
                cancellation: None,
                expired_at: None,
                fulfilled_at: None,
            });
            return;
        }
        // Any other event before `order.created` cannot come from this aggregate's
        // `decide`; keeping the version count is all there is to do with it.
        let Some(order) = self.placed.as_mut() else {
            return;
        };
        match event {
            OrderEvent::OrderCreated { .. } => {}
            OrderEvent::PaymentAttempted {
                payment_id,
                amount,
                method,
                attempted_at,
                ..
            } => {
                order.payments.push(Payment {
                    payment_id,
                    amount,
                    method,
                    status: PaymentStatus::Pending,
                    failure_reason: None,
                    attempted_at,
                });
                order.updated_at = attempted_at;
            }
            OrderEvent::PaymentCaptured {
                payment_id,
                captured_total,
                captured_at,
                ..
            } => {
                if let Some(p) = order
                    .payments
                    .iter_mut()
                    .find(|p| p.payment_id == payment_id)
                {
                    p.status = PaymentStatus::Captured;
                }
                order.captured = captured_total;
                order.updated_at = captured_at;
            }
            OrderEvent::PaymentFailed {
                payment_id,
                reason,
                failed_at,
                ..
            } => {
                if let Some(p) = order
                    .payments
                    .iter_mut()
                    .find(|p| p.payment_id == payment_id)
                {
                    p.status = PaymentStatus::Failed;
                    p.failure_reason = Some(reason);
                }
                order.updated_at = failed_at;
            }
            OrderEvent::ShipmentDispatched {
                shipment_id,
                carrier,
                tracking_number,
                lines,
                dispatched_at,
                ..
            } => {
                order.shipments.push(Shipment {
                    shipment_id,
                    carrier,
                    tracking_number,
                    lines,
                    status: ShipmentStatus::Dispatched,
                    dispatched_at,
                    delivered_at: None,
                });
                order.updated_at = dispatched_at;
            }
            OrderEvent::ShipmentDelivered {
                shipment_id,
                delivered_at,
                ..
            } => {
                if let Some(s) = order
                    .shipments
                    .iter_mut()
                    .find(|s| s.shipment_id == shipment_id)
                {
                    s.status = ShipmentStatus::Delivered;
                    s.delivered_at = Some(delivered_at);
                }
                order.updated_at = delivered_at;
            }
            OrderEvent::OrderFulfilled { fulfilled_at, .. } => {
                order.fulfilled_at = Some(fulfilled_at);
                order.updated_at = fulfilled_at;
            }
            OrderEvent::OrderCancelled {
                reason,
                cancelled_at,
                ..
            } => {
                order.cancellation = Some(Cancellation {
                    reason,
                    cancelled_at,
                });
                order.updated_at = cancelled_at;
            }
            OrderEvent::OrderExpired { expired_at, .. } => {
                order.expired_at = Some(expired_at);
                order.updated_at = expired_at;
            }
            OrderEvent::OrderRefunded {
                refund_id,
                amount,
                reason,
                refunded_total,
                refunded_at,
                ..
            } => {
                order.refunds.push(Refund {
                    refund_id,
                    amount,
                    reason,
                    refunded_at,
                });
                order.refunded = refunded_total;
                order.updated_at = refunded_at;
            }
        }
    }
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.evolve(event);
    }
}
