//! `/v1/orders`: place an order and drive it through payment, shipment, cancellation and
//! refunds; read its state and its events.
//!
//! Handlers parse input into typed commands, hand them to the order store and render
//! the result. They decide nothing: every rule lives in the Order aggregate.

use std::borrow::Cow;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, FieldExt};
use super::extract::{parse_time, CommandContext, JsonBody, PathParams, QueryParams};
use super::idempotency::KeptBody;
use super::openapi::Op;
use super::scoped::Routes;
use super::wait_for::{with_wait_result, WaitFor};
use crate::auth::Scope;
use crate::domain::order::*;
use crate::domain::personal::{Personal, PersonalData, SealedPersonal, SEALED_FIELD};
use crate::domain::values::*;
use crate::process::placement::Placement;
use crate::state::AppState;
use crate::store::commands::Executed;
use crate::store::history::{self, AsOf};
use crate::store::log;
use crate::store::reader::LogEntry;
use crate::store::vault::Opened;
use crate::store::writer::Answer;

mod journey;
mod list;

pub fn routes() -> Routes {
    use Scope::{EventsRead, OrdersRead, OrdersWrite};
    list::routes()
        .post("/orders", OrdersWrite, place_order)
        .get("/orders/{order_id}", OrdersRead, get_order)
        .get("/orders/{order_id}/events", EventsRead, get_order_events)
        .get("/orders/{order_id}/journey", OrdersRead, journey::journey)
        .post("/orders/{order_id}/payments", OrdersWrite, attempt_payment)
        .post(
            "/orders/{order_id}/payments/{payment_id}/capture",
            OrdersWrite,
            capture_payment,
        )
        .post(
            "/orders/{order_id}/payments/{payment_id}/fail",
            OrdersWrite,
            fail_payment,
        )
        .post(
            "/orders/{order_id}/shipments",
            OrdersWrite,
            dispatch_shipment,
        )
        .post(
            "/orders/{order_id}/shipments/{shipment_id}/deliver",
            OrdersWrite,
            deliver_shipment,
        )
        .post("/orders/{order_id}/cancel", OrdersWrite, cancel_order)
        .post("/orders/{order_id}/refunds", OrdersWrite, refund_order)
}

/// What [`routes`] serves, for `GET /openapi.json`.
pub fn operations() -> Vec<Op> {
    let command = |op: Op| {
        op.param("order_id", <OrderId as utoipa::PartialSchema>::schema())
            .param("payment_id", <PaymentId as utoipa::PartialSchema>::schema())
            .param(
                "shipment_id",
                <ShipmentId as utoipa::PartialSchema>::schema(),
            )
    };
    let read = |op: Op| op.param("order_id", <OrderId as utoipa::PartialSchema>::schema());
    let mut ops = list::operations();
    ops.extend([
        command(Op::post("/v1/orders", "Place an order, reserving its stock"))
            .json_body::<PlaceOrderIn>()
            .json::<OrderOut>(201, "the order")
            .error(409, "out_of_stock (with `short`), order_exists")
            .error(422, "no_lines, duplicate_line, unknown_sku, line_not_in_order, discount_exceeds_amount, total_too_large")
            .error(503, "placement_pending: an earlier placement of this order id holds its stock and has not created it yet (or was cut off, and its holds are being released)"),
        read(Op::get("/v1/orders/{order_id}", "An order's state, now or `at` a position or time"))
            .query::<GetQuery>()
            .json::<OrderOut>(200, "the order")
            .error(404, "order_not_found"),
        read(Op::get("/v1/orders/{order_id}/events", "An order's events"))
            .json::<EventsOut>(200, "the order's events, in order")
            .error(404, "order_not_found"),
        read(Op::get("/v1/orders/{order_id}/journey", "An order's events, their projections and deliveries"))
            .json::<journey::JourneyOut>(200, "the order's journey, in time order")
            .error(404, "order_not_found"),
        command(Op::post("/v1/orders/{order_id}/payments", "Attempt a payment of the amount due"))
            .json_body::<PaymentIn>()
            .json_inline::<PartOut<PaymentOut>>(201, "the payment")
            .error(404, "order_not_found")
            .error(409, "order_cancelled, order_expired, payment_in_progress, already_paid, payment_exists")
            .error(422, "amount_mismatch"),
        command(Op::post("/v1/orders/{order_id}/payments/{payment_id}/capture", "Capture a pending payment"))
            .json_inline::<PartOut<PaymentOut>>(200, "the payment")
            .error(404, "order_not_found, payment_not_found")
            .error(409, "payment_not_pending"),
        command(Op::post("/v1/orders/{order_id}/payments/{payment_id}/fail", "Record a declined payment"))
            .json_body::<ReasonIn>()
            .json_inline::<PartOut<PaymentOut>>(200, "the payment")
            .error(404, "order_not_found, payment_not_found")
            .error(409, "payment_not_pending"),
        command(Op::post("/v1/orders/{order_id}/shipments", "Dispatch some or all remaining units"))
            .json_body::<ShipmentIn>()
            .json_inline::<PartOut<ShipmentOut>>(201, "the shipment")
            .error(404, "order_not_found")
            .error(409, "order_not_paid, order_cancelled, nothing_to_ship, shipment_exists")
            .error(422, "line_not_in_order, shipment_exceeds_remaining"),
        command(Op::post("/v1/orders/{order_id}/shipments/{shipment_id}/deliver", "Record a shipment's delivery"))
            .json_inline::<PartOut<ShipmentOut>>(200, "the shipment")
            .error(404, "order_not_found, shipment_not_found")
            .error(409, "shipment_already_delivered"),
        command(Op::post("/v1/orders/{order_id}/cancel", "Cancel an order before any shipment"))
            .json_body::<ReasonIn>()
            .json::<OrderOut>(200, "the order")
            .error(404, "order_not_found")
            .error(409, "order_already_shipped, order_cancelled, order_expired"),
        command(Op::post("/v1/orders/{order_id}/refunds", "Refund captured money"))
            .json_body::<RefundIn>()
            .json_inline::<PartOut<RefundOut>>(201, "the refund")
            .error(404, "order_not_found")
            .error(409, "nothing_to_refund, refund_exists")
            .error(422, "refund_exceeds_captured"),
    ]);
    ops
}

// Input

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PlaceOrderIn {
    order_id: Option<OrderId>,
    customer_id: CustomerId,
    currency: Currency,
    lines: Vec<LineIn>,
    #[serde(default)]
    discounts: Vec<DiscountIn>,
    #[serde(default)]
    shipping_lines: Vec<ShippingLineIn>,
    #[serde(default)]
    tax_lines: Vec<TaxLineIn>,
    origin: Option<OriginIn>,
    // The customer's personal data (`domain::personal`), sealed before the command is made.
    shipping_address: Option<ShippingAddress>,
    billing_address: Option<ShippingAddress>,
    email: Option<Email>,
    phone: Option<Phone>,
    note: Option<FreeText>,
}

/// Where a storefront order came from: for finding it again on the platform.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct OriginIn {
    source: SourceName,
    external_id: Text,
    external_number: Option<Text>,
}

/// Off the line of `sku`, or off the whole order without one. Minor units.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct DiscountIn {
    code: Text,
    sku: Option<Sku>,
    amount: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ShippingLineIn {
    title: Text,
    price: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct TaxLineIn {
    title: Text,
    amount: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct LineIn {
    sku: Sku,
    quantity: Quantity,
    /// Minor units of the order's currency.
    unit_price: i64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PaymentIn {
    payment_id: Option<PaymentId>,
    amount: MinorUnits,
    method: Option<Text>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReasonIn {
    reason: Text,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ShipmentIn {
    shipment_id: Option<ShipmentId>,
    carrier: Text,
    tracking_number: Text,
    lines: Option<Vec<ShipmentLineIn>>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ShipmentLineIn {
    sku: Sku,
    quantity: Quantity,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RefundIn {
    refund_id: Option<RefundId>,
    amount: MinorUnits,
    reason: Text,
}

// Output: amounts are integers in minor units of the order's `currency`.

#[derive(Serialize, ToSchema)]
struct OrderOut {
    order_id: OrderId,
    version: usize,
    status: OrderStatus,
    customer_id: CustomerId,
    currency: Currency,
    lines: Vec<LineOut>,
    subtotal: i64,
    discounts: Vec<DiscountOut>,
    shipping_lines: Vec<ShippingLineOut>,
    tax_lines: Vec<TaxLineOut>,
    total: i64,
    amount_due: i64,
    captured: i64,
    refunded: i64,
    #[serde(flatten)]
    personal: PersonalOut,
    #[serde(skip_serializing_if = "Option::is_none")]
    origin: Option<Origin>,
    payments: Vec<PaymentOut>,
    shipments: Vec<ShipmentOut>,
    refunds: Vec<RefundOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cancellation: Option<CancellationOut>,
    placed_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fulfilled_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
struct LineOut {
    sku: Sku,
    quantity: Quantity,
    unit_price: i64,
    line_total: i64,
    /// Units owed to the order when it was placed: stock could not cover them.
    backordered: u32,
}

#[derive(Serialize, ToSchema)]
struct DiscountOut {
    code: Text,
    #[serde(skip_serializing_if = "Option::is_none")]
    sku: Option<Sku>,
    amount: i64,
}

#[derive(Serialize, ToSchema)]
struct ShippingLineOut {
    title: Text,
    price: i64,
}

#[derive(Serialize, ToSchema)]
struct TaxLineOut {
    title: Text,
    amount: i64,
}

#[derive(Serialize, ToSchema)]
struct PaymentOut {
    payment_id: PaymentId,
    amount: i64,
    status: PaymentStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<Text>,
    attempted_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
struct ShipmentOut {
    shipment_id: ShipmentId,
    carrier: Text,
    tracking_number: Text,
    lines: Vec<ShipmentLine>,
    status: ShipmentStatus,
    dispatched_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delivered_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
struct RefundOut {
    refund_id: RefundId,
    amount: i64,
    reason: Text,
    refunded_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
struct CancellationOut {
    reason: Text,
    cancelled_at: DateTime<Utc>,
}

/// The answer to a command on part of an order: that part, plus where the order now is.
#[derive(Serialize, ToSchema)]
struct PartOut<T: Serialize + ToSchema> {
    order_id: OrderId,
    order_status: OrderStatus,
    version: usize,
    #[serde(flatten)]
    part: T,
}

#[derive(Serialize, ToSchema)]
struct EventsOut<'a> {
    order_id: OrderId,
    events: Vec<EventOut<'a>>,
}

/// One stored event as the history shows it. Payload and metadata are the JSON text
/// stored, sent on without being parsed into a tree and printed again.
#[derive(Serialize, ToSchema)]
#[schema(as = StoredEvent)]
struct EventOut<'a> {
    global_position: i64,
    event_id: uuid::Uuid,
    aggregate_type: &'a str,
    aggregate_id: &'a str,
    sequence: i64,
    event_type: &'a str,
    event_version: &'a str,
    #[schema(value_type = Object)]
    payload: &'a RawValue,
    #[schema(value_type = Option<Object>)]
    metadata: Option<&'a RawValue>,
    recorded_at: DateTime<Utc>,
}

impl<'a> EventOut<'a> {
    fn new(entry: &'a LogEntry) -> Result<Self, ApiError> {
        let json = |text: &'a str| {
            serde_json::from_str::<&RawValue>(text).map_err(|e| {
                ApiError::internal(&format!("stored event {} is not JSON: {e}", entry.event_id))
            })
        };
        Ok(Self {
            global_position: entry.cursor.position,
            event_id: entry.event_id,
            aggregate_type: &entry.aggregate_type,
            aggregate_id: &entry.aggregate_id,
            sequence: entry.sequence,
            event_type: &entry.event_type,
            event_version: &entry.event_version,
            payload: json(&entry.payload)?,
            metadata: entry.metadata.as_deref().map(json).transpose()?,
            recorded_at: entry.recorded_at,
        })
    }
}

/// An order's personal data as a response shows it.
enum PersonalOut {
    /// The order has none.
    None,
    /// In the clear, or every field `null` with `"erased": true`.
    Shown(Opened),
    /// Still sealed: the form an answer is kept in for retries (`KeptBody`), opened
    /// when it is replayed (`Vault::reveal`), so that it too shows an erasure.
    Kept(SealedPersonal),
}

impl PersonalOut {
    /// What `order` holds, opened.
    async fn of(state: &AppState, order: &PlacedOrder) -> Result<PersonalOut, ApiError> {
        Ok(match &order.personal {
            None => PersonalOut::None,
            Some(personal) => PersonalOut::Shown(state.vault.open(personal).await?),
        })
    }

    /// What `order` holds, as an answer is kept.
    fn kept(order: &PlacedOrder) -> PersonalOut {
        match &order.personal {
            Some(Personal::Sealed(sealed)) => PersonalOut::Kept(sealed.clone()),
            Some(Personal::Clear(data)) => PersonalOut::Shown(Opened::Clear(data.clone())),
            None => PersonalOut::None,
        }
    }
}

/// The members an order's personal data adds to it: each `null` once the customer is
/// erased, with `"erased": true`.
impl utoipa::PartialSchema for PersonalOut {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
        use utoipa::openapi::RefOr;
        let or_null = |schema: RefOr<Schema>| -> RefOr<Schema> {
            OneOfBuilder::new()
                .item(schema)
                .item(ObjectBuilder::new().schema_type(Type::Null))
                .into()
        };
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("shipping_address", or_null(ShippingAddress::schema()))
            .property("billing_address", or_null(ShippingAddress::schema()))
            .property("email", or_null(Email::schema()))
            .property("phone", or_null(Phone::schema()))
            .property("note", or_null(FreeText::schema()))
            .property("erased", ObjectBuilder::new().schema_type(Type::Boolean))
            .into()
    }
}

impl ToSchema for PersonalOut {}

impl Serialize for PersonalOut {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            PersonalOut::Shown(opened) => opened.serialize(s),
            PersonalOut::Kept(sealed) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry(SEALED_FIELD, sealed)?;
                map.end()
            }
            PersonalOut::None => s.serialize_map(Some(0))?.end(),
        }
    }
}

impl OrderOut {
    fn new(order: &PlacedOrder, version: usize, personal: PersonalOut) -> Self {
        Self {
            order_id: order.order_id.clone(),
            version,
            status: order.status(),
            customer_id: order.customer_id.clone(),
            currency: order.currency,
            lines: order
                .lines
                .iter()
                .map(|l| LineOut {
                    sku: l.sku.clone(),
                    quantity: l.quantity,
                    unit_price: l.unit_price.amount(),
                    line_total: l.line_total.amount(),
                    backordered: l.backordered,
                })
                .collect(),
            subtotal: order.subtotal.amount(),
            discounts: order
                .discounts
                .iter()
                .map(|d| DiscountOut {
                    code: d.code.clone(),
                    sku: d.sku.clone(),
                    amount: d.amount.amount(),
                })
                .collect(),
            shipping_lines: order
                .shipping_lines
                .iter()
                .map(|l| ShippingLineOut {
                    title: l.title.clone(),
                    price: l.price.amount(),
                })
                .collect(),
            tax_lines: order
                .tax_lines
                .iter()
                .map(|t| TaxLineOut {
                    title: t.title.clone(),
                    amount: t.amount.amount(),
                })
                .collect(),
            total: order.total.amount(),
            amount_due: order.amount_due().amount(),
            captured: order.captured.amount(),
            refunded: order.refunded.amount(),
            personal,
            origin: order.origin.as_deref().cloned(),
            payments: order.payments.iter().map(PaymentOut::new).collect(),
            shipments: order.shipments.iter().map(ShipmentOut::new).collect(),
            refunds: order.refunds.iter().map(RefundOut::new).collect(),
            cancellation: order.cancellation.as_ref().map(|c| CancellationOut {
                reason: c.reason.clone(),
                cancelled_at: c.cancelled_at,
            }),
            placed_at: order.placed_at,
            updated_at: order.updated_at,
            fulfilled_at: order.fulfilled_at,
        }
    }
}

impl PaymentOut {
    fn new(p: &Payment) -> Self {
        Self {
            payment_id: p.payment_id.clone(),
            amount: p.amount.amount(),
            status: p.status,
            method: p.method.clone(),
            failure_reason: p.failure_reason.clone(),
            attempted_at: p.attempted_at,
        }
    }
}

impl ShipmentOut {
    fn new(s: &Shipment) -> Self {
        Self {
            shipment_id: s.shipment_id.clone(),
            carrier: s.carrier.clone(),
            tracking_number: s.tracking_number.clone(),
            lines: s.lines.clone(),
            status: s.status,
            dispatched_at: s.dispatched_at,
            delivered_at: s.delivered_at,
        }
    }
}

impl RefundOut {
    fn new(r: &Refund) -> Self {
        Self {
            refund_id: r.refund_id.clone(),
            amount: r.amount.amount(),
            reason: r.reason.clone(),
            refunded_at: r.refunded_at,
        }
    }
}

// Handlers

/// A command the order accepted: the order afterwards, and how a wait went.
struct Accepted {
    order: PlacedOrder,
    version: usize,
    waited: Option<HeaderValue>,
}

/// Runs a command and returns the order as it is afterwards. With `X-Wait-For`, it
/// also waits for the named projections to apply the command's events.
async fn execute(
    state: &AppState,
    order_id: &OrderId,
    command: OrderCommand,
    ctx: CommandContext,
    wait: WaitFor,
) -> Result<Accepted, ApiError> {
    let executed = state
        .orders
        .execute(order_id.as_str(), command, &ctx.0)
        .await?;
    accept(state, order_id, executed, wait).await
}

/// The order after an accepted command, once the projections named in `wait` (if any)
/// have applied its events.
async fn accept(
    state: &AppState,
    order_id: &OrderId,
    executed: Executed<Order>,
    wait: WaitFor,
) -> Result<Accepted, ApiError> {
    let version = executed.state.version();
    let order = executed
        .state
        .placed()
        .cloned()
        .ok_or_else(|| ApiError::internal(&"an accepted command left no order behind"))?;
    let waited = wait
        .wait(
            state,
            <Order as cqrs_es::Aggregate>::TYPE,
            order_id.as_str(),
            version,
        )
        .await?;
    Ok(Accepted {
        order,
        version,
        waited,
    })
}

fn respond<T: Serialize>(status: StatusCode, body: T, accepted: &Accepted) -> Response {
    with_wait_result(
        (status, Json(body)).into_response(),
        accepted.waited.clone(),
    )
}

/// The order after a command, with its personal data as `shown`. With `kept` (the
/// request has an `Idempotency-Key`), the answer kept for retries is rendered too, with
/// the data still sealed; without one nothing is kept, and it is not rendered.
fn respond_order(
    status: StatusCode,
    shown: PersonalOut,
    accepted: &Accepted,
    kept: bool,
) -> Response {
    let (order, version) = (&accepted.order, accepted.version);
    let mut response = respond(status, OrderOut::new(order, version, shown), accepted);
    if kept && matches!(order.personal, Some(Personal::Sealed(_))) {
        let kept = OrderOut::new(order, version, PersonalOut::kept(order));
        // A struct of plain values always serialises.
        let body = serde_json::to_vec(&kept).unwrap_or_default();
        response.extensions_mut().insert(KeptBody(body));
    }
    response
}

/// A placed order's answer, as kept for retries (`respond_order` with `kept`): rendered
/// before the commit, it commits with the request's key, so a placement's answer is
/// never lost to a crash.
fn placed_answer(order: &Order) -> Option<Answer> {
    let placed = order.placed()?;
    let kept = OrderOut::new(placed, order.version(), PersonalOut::kept(placed));
    Some(Answer {
        status: StatusCode::CREATED.as_u16(),
        content_type: Some("application/json".to_owned()),
        // A struct of plain values always serialises.
        body: serde_json::to_vec(&kept).ok()?,
    })
}

fn part<T: Serialize + ToSchema>(order: &PlacedOrder, version: usize, part: T) -> PartOut<T> {
    PartOut {
        order_id: order.order_id.clone(),
        order_status: order.status(),
        version,
        part,
    }
}

/// The body's discounts, shipping and taxes, each amount in the order's currency.
fn charges(body: &PlaceOrderIn) -> Result<Charges, ApiError> {
    let money = |amount: i64, field: String| Money::parse(amount, body.currency).field(field);
    let discounts = body.discounts.iter().enumerate().map(|(i, d)| {
        Ok(Discount {
            code: d.code.clone(),
            sku: d.sku.clone(),
            amount: money(d.amount, format!("discounts[{i}].amount"))?,
        })
    });
    let shipping_lines = body.shipping_lines.iter().enumerate().map(|(i, l)| {
        Ok(ShippingLine {
            title: l.title.clone(),
            price: money(l.price, format!("shipping_lines[{i}].price"))?,
        })
    });
    let tax_lines = body.tax_lines.iter().enumerate().map(|(i, t)| {
        Ok(TaxLine {
            title: t.title.clone(),
            amount: money(t.amount, format!("tax_lines[{i}].amount"))?,
        })
    });
    Ok(Charges {
        discounts: discounts.collect::<Result<_, ApiError>>()?,
        shipping_lines: shipping_lines.collect::<Result<_, ApiError>>()?,
        tax_lines: tax_lines.collect::<Result<_, ApiError>>()?,
    })
}

#[tracing::instrument(skip_all, fields(order_id))]
async fn place_order(
    State(state): State<AppState>,
    ctx: CommandContext,
    wait: WaitFor,
    JsonBody(body): JsonBody<PlaceOrderIn>,
) -> Result<Response, ApiError> {
    let charges = charges(&body)?;
    let order_id = body.order_id.unwrap_or_else(OrderId::generate);
    tracing::Span::current().record("order_id", order_id.as_str());
    let lines = body
        .lines
        .into_iter()
        .enumerate()
        .map(|(i, line)| {
            Ok(RequestedLine {
                unit_price: Money::parse(line.unit_price, body.currency)
                    .field(format!("lines[{i}].unit_price"))?,
                sku: line.sku,
                quantity: line.quantity,
                untracked: false,
                backordered: 0,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let clear = PersonalData {
        shipping_address: body.shipping_address,
        billing_address: body.billing_address,
        email: body.email,
        phone: body.phone,
        note: body.note,
    };
    let mut metadata = ctx.0;
    let personal = if clear.is_empty() {
        None
    } else {
        let (sealed, key) = state.vault.seal(&body.customer_id, &clear);
        metadata.data_key = Some(key);
        Some(sealed)
    };
    let command = PlaceOrder {
        order_id: order_id.clone(),
        customer_id: body.customer_id,
        currency: body.currency,
        lines,
        charges,
        personal,
        origin: body.origin.map(|o| {
            Box::new(Origin {
                source: o.source,
                external_id: o.external_id,
                external_number: o.external_number,
            })
        }),
        at: metadata.received_at,
    };
    let placement = Placement {
        orders: &state.orders,
        inventory: &state.inventory,
        require_tracked_skus: state.settings.require_tracked_skus,
        fault: state.placement_fault.as_ref(),
        answer: Some(placed_answer),
    };
    let executed = placement.place(command, &metadata).await?;
    let accepted = accept(&state, &order_id, executed, wait).await?;
    let shown = match clear.is_empty() {
        true => PersonalOut::None,
        false => PersonalOut::Shown(Opened::Clear(Box::new(clear))),
    };
    let kept = metadata.claim.is_some();
    let mut response = respond_order(StatusCode::CREATED, shown, &accepted, kept);
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/orders/{order_id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct GetQuery {
    /// A global position or an RFC 3339 time: the order as it was then.
    at: Option<String>,
}

#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn get_order(
    State(state): State<AppState>,
    PathParams(order_id): PathParams<OrderId>,
    QueryParams(query): QueryParams<GetQuery>,
) -> Result<Json<OrderOut>, ApiError> {
    let order = match query.at.as_deref() {
        None => state.orders.load(order_id.as_str()).await?,
        Some(at) => {
            history::state_as_of::<Order>(&state.db, order_id.as_str(), parse_at(at)?).await?
        }
    };
    let placed = order.placed().ok_or(OrderError::NotFound)?;
    let personal = PersonalOut::of(&state, placed).await?;
    Ok(Json(OrderOut::new(placed, order.version(), personal)))
}

/// `?at=`: a global position or an RFC 3339 time.
fn parse_at(raw: &str) -> Result<AsOf, ApiError> {
    if let Ok(position) = raw.parse::<i64>() {
        return Ok(AsOf::Position(position));
    }
    parse_time("at", raw)
        .map(AsOf::Time)
        .map_err(|_| ApiError::invalid_field("at", "must be a global position or an RFC 3339 time"))
}

#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn get_order_events(
    State(state): State<AppState>,
    PathParams(order_id): PathParams<OrderId>,
) -> Result<Response, ApiError> {
    let entries = log::aggregate_events(
        &state.db,
        <Order as cqrs_es::Aggregate>::TYPE,
        order_id.as_str(),
    )
    .await?;
    if entries.is_empty() {
        return Err(OrderError::NotFound.into());
    }
    let mut entries = entries;
    for entry in &mut entries {
        if let Cow::Owned(revealed) = state.vault.reveal(&entry.payload).await? {
            entry.payload = revealed;
        }
    }
    let events = entries
        .iter()
        .map(EventOut::new)
        .collect::<Result<_, _>>()?;
    Ok(Json(EventsOut { order_id, events }).into_response())
}

#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn attempt_payment(
    State(state): State<AppState>,
    PathParams(order_id): PathParams<OrderId>,
    ctx: CommandContext,
    wait: WaitFor,
    JsonBody(body): JsonBody<PaymentIn>,
) -> Result<Response, ApiError> {
    let payment_id = body.payment_id.unwrap_or_else(PaymentId::generate);
    let command = OrderCommand::AttemptPayment(AttemptPayment {
        payment_id: payment_id.clone(),
        amount: body.amount,
        method: body.method,
        at: ctx.0.received_at,
    });
    let accepted = execute(&state, &order_id, command, ctx, wait).await?;
    let (order, version) = (&accepted.order, accepted.version);
    let payment = payment_out(order, &payment_id)?;
    Ok(respond(
        StatusCode::CREATED,
        part(order, version, payment),
        &accepted,
    ))
}

fn payment_out(order: &PlacedOrder, id: &PaymentId) -> Result<PaymentOut, ApiError> {
    order
        .payments
        .iter()
        .find(|p| &p.payment_id == id)
        .map(PaymentOut::new)
        .ok_or_else(|| ApiError::internal(&"an accepted payment command left no payment"))
}

fn shipment_out(order: &PlacedOrder, id: &ShipmentId) -> Result<ShipmentOut, ApiError> {
    order
        .shipments
        .iter()
        .find(|s| &s.shipment_id == id)
        .map(ShipmentOut::new)
        .ok_or_else(|| ApiError::internal(&"an accepted shipment command left no shipment"))
}

#[tracing::instrument(skip_all, fields(order_id = %order_id, payment_id = %payment_id))]
async fn capture_payment(
    State(state): State<AppState>,
    PathParams((order_id, payment_id)): PathParams<(OrderId, PaymentId)>,
    ctx: CommandContext,
    wait: WaitFor,
) -> Result<Response, ApiError> {
    let command = OrderCommand::CapturePayment(CapturePayment {
        payment_id: payment_id.clone(),
        at: ctx.0.received_at,
    });
    let accepted = execute(&state, &order_id, command, ctx, wait).await?;
    let (order, version) = (&accepted.order, accepted.version);
    Ok(respond(
        StatusCode::OK,
        part(order, version, payment_out(order, &payment_id)?),
        &accepted,
    ))
}

#[tracing::instrument(skip_all, fields(order_id = %order_id, payment_id = %payment_id))]
async fn fail_payment(
    State(state): State<AppState>,
    PathParams((order_id, payment_id)): PathParams<(OrderId, PaymentId)>,
    ctx: CommandContext,
    wait: WaitFor,
    JsonBody(body): JsonBody<ReasonIn>,
) -> Result<Response, ApiError> {
    let command = OrderCommand::FailPayment(FailPayment {
        payment_id: payment_id.clone(),
        reason: body.reason,
        at: ctx.0.received_at,
    });
    let accepted = execute(&state, &order_id, command, ctx, wait).await?;
    let (order, version) = (&accepted.order, accepted.version);
    Ok(respond(
        StatusCode::OK,
        part(order, version, payment_out(order, &payment_id)?),
        &accepted,
    ))
}

#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn dispatch_shipment(
    State(state): State<AppState>,
    PathParams(order_id): PathParams<OrderId>,
    ctx: CommandContext,
    wait: WaitFor,
    JsonBody(body): JsonBody<ShipmentIn>,
) -> Result<Response, ApiError> {
    let shipment_id = body.shipment_id.unwrap_or_else(ShipmentId::generate);
    if body.lines.as_ref().is_some_and(Vec::is_empty) {
        return Err(ApiError::invalid_field(
            "lines",
            "must list at least one line, or be left out to ship everything remaining",
        ));
    }
    let command = OrderCommand::DispatchShipment(DispatchShipment {
        shipment_id: shipment_id.clone(),
        carrier: body.carrier,
        tracking_number: body.tracking_number,
        lines: body
            .lines
            .map(|lines| lines.into_iter().map(|l| (l.sku, l.quantity)).collect()),
        at: ctx.0.received_at,
    });
    let accepted = execute(&state, &order_id, command, ctx, wait).await?;
    let (order, version) = (&accepted.order, accepted.version);
    let shipment = shipment_out(order, &shipment_id)?;
    Ok(respond(
        StatusCode::CREATED,
        part(order, version, shipment),
        &accepted,
    ))
}

#[tracing::instrument(skip_all, fields(order_id = %order_id, shipment_id = %shipment_id))]
async fn deliver_shipment(
    State(state): State<AppState>,
    PathParams((order_id, shipment_id)): PathParams<(OrderId, ShipmentId)>,
    ctx: CommandContext,
    wait: WaitFor,
) -> Result<Response, ApiError> {
    let command = OrderCommand::DeliverShipment(DeliverShipment {
        shipment_id: shipment_id.clone(),
        at: ctx.0.received_at,
    });
    let accepted = execute(&state, &order_id, command, ctx, wait).await?;
    let (order, version) = (&accepted.order, accepted.version);
    Ok(respond(
        StatusCode::OK,
        part(order, version, shipment_out(order, &shipment_id)?),
        &accepted,
    ))
}

#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn cancel_order(
    State(state): State<AppState>,
    PathParams(order_id): PathParams<OrderId>,
    ctx: CommandContext,
    wait: WaitFor,
    JsonBody(body): JsonBody<ReasonIn>,
) -> Result<Response, ApiError> {
    let command = OrderCommand::CancelOrder(CancelOrder {
        reason: body.reason,
        at: ctx.0.received_at,
    });
    let kept = ctx.0.claim.is_some();
    let accepted = execute(&state, &order_id, command, ctx, wait).await?;
    let shown = PersonalOut::of(&state, &accepted.order).await?;
    Ok(respond_order(StatusCode::OK, shown, &accepted, kept))
}

#[tracing::instrument(skip_all, fields(order_id = %order_id))]
async fn refund_order(
    State(state): State<AppState>,
    PathParams(order_id): PathParams<OrderId>,
    ctx: CommandContext,
    wait: WaitFor,
    JsonBody(body): JsonBody<RefundIn>,
) -> Result<Response, ApiError> {
    let refund_id = body.refund_id.unwrap_or_else(RefundId::generate);
    let command = OrderCommand::RefundOrder(RefundOrder {
        refund_id: refund_id.clone(),
        amount: body.amount,
        reason: body.reason,
        at: ctx.0.received_at,
    });
    let accepted = execute(&state, &order_id, command, ctx, wait).await?;
    let (order, version) = (&accepted.order, accepted.version);
    let refund = order
        .refunds
        .iter()
        .find(|r| r.refund_id == refund_id)
        .map(RefundOut::new)
        .ok_or_else(|| ApiError::internal(&"an accepted refund left no refund"))?;
    Ok(respond(
        StatusCode::CREATED,
        part(order, version, refund),
        &accepted,
    ))
}
