//! Every rule an order command can break, one variant each. The API maps each variant
//! to a stable code and status; the variant's message is the sentence the client reads.

use crate::domain::values::{Money, OrderId, PaymentId, Quantity, RefundId, ShipmentId, Sku, Text};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrderError {
    #[error("order `{order_id}` already exists")]
    AlreadyExists { order_id: OrderId },
    #[error("the order does not exist")]
    NotFound,
    #[error("an order needs at least one line")]
    NoLines,
    #[error("SKU `{sku}` appears on more than one line; put its whole quantity on one line")]
    DuplicateLine { sku: Sku },
    #[error("unit prices must be in the order's currency")]
    CurrencyMismatch,
    #[error("the order total exceeds the largest amount accepted")]
    TotalTooLarge,
    #[error("discounts, shipping and taxes must be in the order's currency")]
    ChargeCurrencyMismatch,
    #[error("discount `{}` is for SKU `{sku}`, which is not on this order", .code.as_str())]
    DiscountLineNotInOrder { code: Text, sku: Sku },
    #[error("the discounts on SKU `{sku}` exceed its line total, {line_total}")]
    DiscountExceedsLine { sku: Sku, line_total: Money },
    #[error("the discounts exceed the order's subtotal, {subtotal}")]
    DiscountExceedsSubtotal { subtotal: Money },
    #[error("the order is cancelled")]
    Cancelled,
    #[error("the order expired unpaid")]
    Expired,
    #[error("payment `{payment_id}` is still pending; capture or fail it first")]
    PaymentInProgress { payment_id: PaymentId },
    #[error("the order is already paid")]
    AlreadyPaid,
    #[error("the amount must equal the amount due, {due}")]
    AmountMismatch { due: Money },
    #[error("payment `{payment_id}` already exists on this order")]
    PaymentExists { payment_id: PaymentId },
    #[error("payment `{payment_id}` does not exist on this order")]
    PaymentNotFound { payment_id: PaymentId },
    #[error("payment `{payment_id}` is no longer pending")]
    PaymentNotPending { payment_id: PaymentId },
    #[error("the order must be paid in full before it ships")]
    NotPaid,
    #[error("the order has already shipped (shipment `{shipment_id}`)")]
    AlreadyShipped { shipment_id: ShipmentId },
    #[error("every unit of the order has already shipped")]
    NothingToShip,
    #[error("SKU `{sku}` is not on this order")]
    LineNotInOrder { sku: Sku },
    #[error(
        "SKU `{sku}` has {remaining} unit(s) left to ship, fewer than the {requested} requested"
    )]
    ShipmentExceedsRemaining {
        sku: Sku,
        requested: Quantity,
        remaining: u32,
    },
    #[error("shipment `{shipment_id}` already exists on this order")]
    ShipmentExists { shipment_id: ShipmentId },
    #[error("shipment `{shipment_id}` does not exist on this order")]
    ShipmentNotFound { shipment_id: ShipmentId },
    #[error("shipment `{shipment_id}` was already delivered")]
    AlreadyDelivered { shipment_id: ShipmentId },
    #[error("nothing has been captured on this order, so nothing can be refunded")]
    NothingCaptured,
    #[error("the refund exceeds what can still be refunded, {refundable}")]
    RefundExceedsCaptured { refundable: Money },
    #[error("refund `{refund_id}` already exists on this order")]
    RefundExists { refund_id: RefundId },
}
