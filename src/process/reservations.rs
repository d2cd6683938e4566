//! The reservation process manager: stock held for an order follows that order.
//!
//! - a cancellation or an expiry releases the order's holds;
//! - a failed payment releases them after a grace period, unless a new attempt comes;
//! - an order unpaid for too long expires (`order.expired`), which releases them;
//! - a shipment commits its units;
//! - holds whose order never appeared (a crash mid-placement) are released.
//!
//! A storefront's order (`origin` set on `order.created`) never expires and is never
//! released for a failed payment: its platform decides its payment, and tells us when it
//! cancels. A hold here is what the order holds *or is owed* of a SKU: a backorder is
//! released (dropped) with the order's reservations, and once filled it is reserved
//! stock like any other, committed by the order's shipments.
//!
//! It is durable in two halves. As a projection, it turns events into due *actions*
//! in its own tables, exactly once, with its own checkpoint. A ticker then carries out
//! due actions as commands and deletes each once done. Every action is safe to repeat
//! (a release of nothing, an expiry of a paid order and a second commit of a shipment
//! change nothing), so a crash between a command and the deletion only repeats a no-op.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::domain::inventory::{
    InventoryCommand, InventoryCommandFor, InventoryEvent, InventoryItem,
};
use crate::domain::order::{ExpireOrder, Order, OrderCommand, OrderEvent};
use crate::domain::values::{OrderId, Quantity, ShipmentId, Sku, Text};
use crate::projections::runner::Projections;
use crate::projections::{BoxFuture, Envelope, Projection, ProjectionError, Rows, View, ViewRow};
use crate::store::commands::{AggregateStore, CommandError};
use crate::store::metadata::CommandMetadata;
use crate::store::views::{bigint, fixed_time, select, text, Param, Table, Tx};
use crate::store::{Database, StoreError};

pub const NAME: &str = "reservations";
const ACTOR: &str = "orderlog:reservations";
/// How often due actions are looked for.
const TICK: Duration = Duration::from_millis(200);
const ACTIONS_PER_TICK: i64 = 200;

pub static ORDERS: Table = Table {
    name: "orders",
    columns: &[text("id"), bigint("total"), text("tracked")],
    indexes: &[],
};

pub static HOLDS: Table = Table {
    name: "holds",
    columns: &[
        text("id"),
        text("order_id"),
        text("sku"),
        bigint("quantity"),
        text("reserved_at"),
    ],
    indexes: &[&["order_id"]],
};

pub static ACTIONS: Table = Table {
    name: "actions",
    columns: &[
        text("id"),
        text("order_id"),
        text("kind"),
        text("sku"),
        text("shipment_id"),
        bigint("quantity"),
        text("reason"),
        text("due_at"),
    ],
    indexes: &[&["due_at"]],
};

static TABLES: [Table; 3] = [ORDERS, HOLDS, ACTIONS];

/// What the manager knows of an order: its total and its tracked lines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRow {
    pub id: String,
    pub total: i64,
    /// JSON list of the SKUs that hold stock.
    pub tracked: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldRow {
    pub id: String,
    pub order_id: String,
    pub sku: String,
    /// Units the order holds (reserved) or is owed (backordered) of the SKU.
    pub quantity: i64,
    #[serde(with = "fixed_time")]
    pub reserved_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRow {
    pub id: String,
    pub order_id: String,
    /// `release`, `release_unpaid`, `orphan`, `expire` or `commit`.
    pub kind: String,
    pub sku: Option<String>,
    pub shipment_id: Option<String>,
    pub quantity: Option<i64>,
    pub reason: String,
    #[serde(with = "fixed_time")]
    pub due_at: DateTime<Utc>,
}

impl ViewRow for OrderRow {
    fn id(&self) -> String {
        self.id.clone()
    }
}

impl ViewRow for HoldRow {
    fn id(&self) -> String {
        self.id.clone()
    }
}

impl ViewRow for ActionRow {
    fn id(&self) -> String {
        self.id.clone()
    }
}

pub struct ReservationManager {
    payment_grace: chrono::Duration,
    unpaid_order_ttl: chrono::Duration,
    orphan_hold_timeout: chrono::Duration,
}

impl ReservationManager {
    pub fn new(settings: &Settings) -> Self {
        let duration = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        Self {
            payment_grace: duration(settings.payment_grace),
            unpaid_order_ttl: duration(settings.unpaid_order_ttl),
            orphan_hold_timeout: duration(settings.orphan_hold_timeout),
        }
    }
}

fn hold_id(order_id: &str, sku: &str) -> String {
    [order_id, sku].join("|")
}

fn action_id(order_id: &str, kind: &str) -> String {
    [order_id, kind].join("|")
}

/// The orphan check of one hold. Each hold falls due after its own reservation: a
/// storefront retrying an order whose first placement a crash cut off reserves its other
/// SKUs again and again, and a check per order that each of those moved would never
/// fall due while the retries kept coming (the crash test in `tests/api/crash.rs`).
fn orphan_id(order_id: &str, sku: &str) -> String {
    [order_id, "orphan", sku].join("|")
}

fn commit_id(order_id: &str, shipment_id: &str, sku: &str) -> String {
    [order_id, "commit", shipment_id, sku].join("|")
}

/// Every action id an event may touch, so one load fetches them all.
fn touched_actions(envelope: &Envelope) -> Vec<String> {
    let order_id = match (&envelope.event_order_id(), envelope.order_event()) {
        (Some(id), _) => id.clone(),
        _ => return Vec::new(),
    };
    let mut ids = vec![
        // Kept before checks were per hold, and still carried out.
        action_id(&order_id, "orphan"),
        action_id(&order_id, "expire"),
        action_id(&order_id, "release"),
    ];
    if let Some((_, sku)) = envelope.inventory_event().and_then(held_of) {
        ids.push(orphan_id(&order_id, sku.as_str()));
    }
    match (envelope.order_event(), envelope.inventory_event()) {
        (Some(OrderEvent::OrderCreated { lines, .. }), _) => {
            for line in lines {
                ids.push(orphan_id(&order_id, line.sku.as_str()));
            }
        }
        (
            Some(OrderEvent::ShipmentDispatched {
                shipment_id, lines, ..
            }),
            _,
        ) => {
            for line in lines {
                ids.push(commit_id(
                    &order_id,
                    shipment_id.as_str(),
                    line.sku.as_str(),
                ));
            }
        }
        (
            _,
            Some(InventoryEvent::ReservationCommitted {
                shipment_id, sku, ..
            }),
        ) => {
            ids.push(commit_id(&order_id, shipment_id.as_str(), sku.as_str()));
        }
        _ => {}
    }
    ids
}

impl Envelope {
    /// The order an order or inventory event is about.
    fn event_order_id(&self) -> Option<String> {
        if let Some(event) = self.order_event() {
            return Some(event.order_id().as_str().to_owned());
        }
        held_of(self.inventory_event()?).map(|(order_id, _)| order_id.as_str().to_owned())
    }
}

/// The order and SKU whose hold an inventory event changes.
fn held_of(event: &InventoryEvent) -> Option<(&OrderId, &Sku)> {
    match event {
        InventoryEvent::StockReserved { order_id, sku, .. }
        | InventoryEvent::ReservationReleased { order_id, sku, .. }
        | InventoryEvent::ReservationCommitted { order_id, sku, .. }
        | InventoryEvent::StockBackordered { order_id, sku, .. }
        | InventoryEvent::BackorderFilled { order_id, sku, .. }
        | InventoryEvent::BackorderCancelled { order_id, sku, .. } => Some((order_id, sku)),
        InventoryEvent::StockReceived { .. }
        | InventoryEvent::StockAdjusted { .. }
        | InventoryEvent::ReservationRejected { .. } => None,
    }
}

impl Projection for ReservationManager {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> i64 {
        1
    }

    fn tables(&self) -> &'static [Table] {
        &TABLES
    }

    fn apply<'a>(
        &'a self,
        view: &'a mut View,
        events: &'a [Envelope],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let order_ids = events.iter().filter_map(Envelope::event_order_id);
            let mut orders: Rows<OrderRow> = Rows::load(view, &ORDERS, order_ids).await?;
            let hold_ids = events.iter().filter_map(|e| {
                let (order_id, sku) = held_of(e.inventory_event()?)?;
                Some(hold_id(order_id.as_str(), sku.as_str()))
            });
            let mut holds: Rows<HoldRow> = Rows::load(view, &HOLDS, hold_ids).await?;
            let action_ids = events.iter().flat_map(touched_actions);
            let mut actions: Rows<ActionRow> = Rows::load(view, &ACTIONS, action_ids).await?;
            for envelope in events {
                if let Some(event) = envelope.inventory_event() {
                    self.on_inventory(&orders, &mut holds, &mut actions, event);
                }
                if let Some(event) = envelope.order_event() {
                    self.on_order(&mut orders, &mut actions, event);
                }
            }
            orders.save(view).await?;
            holds.save(view).await?;
            actions.save(view).await?;
            Ok(())
        })
    }
}

fn action(order_id: &str, kind: &str, reason: &str, due_at: DateTime<Utc>) -> ActionRow {
    ActionRow {
        id: action_id(order_id, kind),
        order_id: order_id.to_owned(),
        kind: kind.to_owned(),
        sku: None,
        shipment_id: None,
        quantity: None,
        reason: reason.to_owned(),
        due_at,
    }
}

impl ReservationManager {
    fn on_inventory(
        &self,
        orders: &Rows<OrderRow>,
        holds: &mut Rows<HoldRow>,
        actions: &mut Rows<ActionRow>,
        event: &InventoryEvent,
    ) {
        match event {
            // A storefront's sale reserves what it can and backorders the rest, in one
            // command: both add to the one hold of the order on the SKU.
            InventoryEvent::StockReserved {
                order_id,
                sku,
                quantity,
                reserved_at: at,
                ..
            }
            | InventoryEvent::StockBackordered {
                order_id,
                sku,
                quantity,
                backordered_at: at,
                ..
            } => {
                let order = order_id.as_str();
                let hold = holds.entry(&hold_id(order, sku.as_str()), || HoldRow {
                    id: hold_id(order, sku.as_str()),
                    order_id: order.to_owned(),
                    sku: sku.as_str().to_owned(),
                    quantity: 0,
                    reserved_at: *at,
                });
                hold.quantity += i64::from(quantity.get());
                hold.reserved_at = *at;
                if !orders.contains(order) {
                    actions.insert(ActionRow {
                        id: orphan_id(order, sku.as_str()),
                        sku: Some(sku.as_str().to_owned()),
                        ..action(
                            order,
                            "orphan",
                            "order never placed",
                            *at + self.orphan_hold_timeout,
                        )
                    });
                }
            }
            // A filled backorder changes what the order's hold is made of, not its size:
            // the hold stays, to be released or committed with the order.
            InventoryEvent::BackorderFilled { .. } => {}
            // A release takes both the reservation and the backorder: nothing is left.
            InventoryEvent::ReservationReleased { order_id, sku, .. }
            | InventoryEvent::BackorderCancelled { order_id, sku, .. } => {
                holds.remove(&hold_id(order_id.as_str(), sku.as_str()));
                actions.remove(&orphan_id(order_id.as_str(), sku.as_str()));
            }
            InventoryEvent::ReservationCommitted {
                order_id,
                shipment_id,
                sku,
                from_reservation,
                from_backorder,
                ..
            } => {
                let id = hold_id(order_id.as_str(), sku.as_str());
                if let Some(hold) = holds.get_mut(&id) {
                    hold.quantity -= i64::from(*from_reservation + *from_backorder);
                    if hold.quantity <= 0 {
                        holds.remove(&id);
                    }
                }
                actions.remove(&commit_id(
                    order_id.as_str(),
                    shipment_id.as_str(),
                    sku.as_str(),
                ));
            }
            InventoryEvent::StockReceived { .. }
            | InventoryEvent::StockAdjusted { .. }
            | InventoryEvent::ReservationRejected { .. } => {}
        }
    }

    fn on_order(
        &self,
        orders: &mut Rows<OrderRow>,
        actions: &mut Rows<ActionRow>,
        event: &OrderEvent,
    ) {
        let order = event.order_id().as_str();
        match event {
            OrderEvent::OrderCreated {
                lines,
                total,
                origin,
                placed_at,
                ..
            } => {
                let tracked: Vec<&str> = lines
                    .iter()
                    .filter(|l| !l.untracked)
                    .map(|l| l.sku.as_str())
                    .collect();
                orders.insert(OrderRow {
                    id: order.to_owned(),
                    total: total.amount(),
                    tracked: serde_json::to_string(&tracked).unwrap_or_else(|_| "[]".to_owned()),
                });
                actions.remove(&action_id(order, "orphan"));
                for line in lines {
                    actions.remove(&orphan_id(order, line.sku.as_str()));
                }
                // A storefront's sale already happened: its platform decides its payment.
                if origin.is_none() {
                    actions.insert(action(
                        order,
                        "expire",
                        "order left unpaid",
                        *placed_at + self.unpaid_order_ttl,
                    ));
                }
            }
            OrderEvent::PaymentAttempted { .. } => actions.remove(&action_id(order, "release")),
            // The manager keeps no origin per order (its tables stay as they were), so
            // whether the order is a storefront's is asked of the order when it falls due.
            // It keeps the id of a release: a new attempt removes it, and a cancellation
            // replaces it with a release that always runs.
            OrderEvent::PaymentFailed { failed_at, .. } => {
                let mut release = action(
                    order,
                    "release",
                    "payment failed and no new attempt came in time",
                    *failed_at + self.payment_grace,
                );
                release.kind = "release_unpaid".to_owned();
                actions.insert(release);
            }
            OrderEvent::PaymentCaptured { captured_total, .. } => {
                let paid = orders
                    .get(order)
                    .is_some_and(|o| captured_total.amount() >= o.total);
                if paid {
                    actions.remove(&action_id(order, "expire"));
                    actions.remove(&action_id(order, "release"));
                }
            }
            // A closed order will ship nothing more: forget it, so that the manager's
            // state is as small as the set of open orders.
            OrderEvent::OrderCancelled { cancelled_at, .. } => {
                orders.remove(order);
                actions.remove(&action_id(order, "expire"));
                actions.insert(action(order, "release", "order cancelled", *cancelled_at));
            }
            OrderEvent::OrderExpired { expired_at, .. } => {
                orders.remove(order);
                actions.remove(&action_id(order, "expire"));
                actions.insert(action(order, "release", "order expired", *expired_at));
            }
            OrderEvent::OrderFulfilled { .. } => orders.remove(order),
            OrderEvent::ShipmentDispatched {
                shipment_id,
                lines,
                dispatched_at,
                ..
            } => {
                let tracked: Vec<String> = orders
                    .get(order)
                    .and_then(|o| serde_json::from_str(&o.tracked).ok())
                    .unwrap_or_default();
                for line in lines
                    .iter()
                    .filter(|l| tracked.iter().any(|t| t == l.sku.as_str()))
                {
                    actions.insert(ActionRow {
                        id: commit_id(order, shipment_id.as_str(), line.sku.as_str()),
                        order_id: order.to_owned(),
                        kind: "commit".to_owned(),
                        sku: Some(line.sku.as_str().to_owned()),
                        shipment_id: Some(shipment_id.as_str().to_owned()),
                        quantity: Some(i64::from(line.quantity.get())),
                        reason: "shipped".to_owned(),
                        due_at: *dispatched_at,
                    });
                }
            }
            OrderEvent::ShipmentDelivered { .. } | OrderEvent::OrderRefunded { .. } => {}
        }
    }
}

/// What carrying out actions takes: the manager's tables (through the runner, which
/// knows their serving generation) and the two aggregates it sends commands to.
#[derive(Clone)]
pub struct Ticker {
    pub db: Database,
    pub projections: Projections,
    pub orders: Arc<AggregateStore<Order>>,
    pub inventory: Arc<AggregateStore<InventoryItem>>,
}

/// Carries out due actions until `shutdown`.
pub async fn run(ticker: Ticker, shutdown: CancellationToken) {
    loop {
        match tick(&ticker).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reservation actions failed; retrying"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ActionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Command(String),
}

impl<E: std::error::Error> From<CommandError<E>> for ActionError {
    fn from(e: CommandError<E>) -> Self {
        ActionError::Command(e.to_string())
    }
}

/// One round: every due action, oldest first. Returns how many were done.
async fn tick(state: &Ticker) -> Result<usize, ActionError> {
    let actions_table = state.projections.table(NAME, ACTIONS.name).await?;
    let due: Vec<ActionRow> = select(
        &state.db,
        &actions_table,
        &ACTIONS,
        "WHERE due_at <= $1 ORDER BY due_at LIMIT $2",
        &[
            Param::Text(fixed_time::format(&Utc::now())),
            Param::Int(ACTIONS_PER_TICK),
        ],
    )
    .await?;
    let mut done = 0;
    for action in due {
        match carry_out(state, &action).await {
            Ok(()) => {
                // Only this version of the action: the projection may have rescheduled it.
                let mut tx = Tx::begin(&state.db).await?;
                tx.execute(
                    &format!("DELETE FROM {actions_table} WHERE id = $1 AND due_at = $2"),
                    &[
                        Param::Text(action.id.clone()),
                        Param::Text(fixed_time::format(&action.due_at)),
                    ],
                )
                .await?;
                tx.commit().await?;
                done += 1;
            }
            Err(e) => {
                tracing::warn!(action = %action.id, error = %e, "reservation action failed; will retry")
            }
        }
    }
    Ok(done)
}

async fn carry_out(state: &Ticker, action: &ActionRow) -> Result<(), ActionError> {
    let metadata = CommandMetadata::system(ACTOR, &action.order_id, &action.id);
    // Ids in these rows were taken from the log, so they are read as the log holds
    // them, even one the API would refuse today (a SKU `..` accepted before).
    let order_id = OrderId::from_stored(&action.order_id);
    let reason =
        Text::parse(&action.reason).unwrap_or_else(|_| Text::parse("released").expect("non-empty"));
    match action.kind.as_str() {
        "orphan" => {
            let order = state.orders.load(order_id.as_str()).await?;
            if order.placed().is_none() {
                match &action.sku {
                    Some(sku) => {
                        release_hold(state, &order_id, &Sku::from_stored(sku), &reason, &metadata)
                            .await?
                    }
                    None => release_holds(state, &order_id, &reason, &metadata).await?,
                }
            }
        }
        "release" => release_holds(state, &order_id, &reason, &metadata).await?,
        "release_unpaid" => {
            let order = state.orders.load(order_id.as_str()).await?;
            let storefront = order.placed().is_some_and(|o| o.origin.is_some());
            if !storefront {
                release_holds(state, &order_id, &reason, &metadata).await?;
            }
        }
        "expire" => {
            let expire = OrderCommand::ExpireOrder(ExpireOrder { at: Utc::now() });
            match state
                .orders
                .execute(order_id.as_str(), expire, &metadata)
                .await
            {
                // Paid, cancelled or expired meanwhile: nothing to do.
                Ok(_) | Err(CommandError::Rejected(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        "commit" => {
            let (Some(sku), Some(shipment), Some(quantity)) =
                (&action.sku, &action.shipment_id, action.quantity)
            else {
                return Ok(());
            };
            let (sku, shipment_id) = (Sku::from_stored(sku), ShipmentId::from_stored(shipment));
            let Ok(quantity) = Quantity::parse(quantity) else {
                return Ok(());
            };
            let commit = InventoryCommandFor {
                sku: sku.clone(),
                command: InventoryCommand::CommitReservation {
                    order_id,
                    shipment_id,
                    quantity,
                    at: Utc::now(),
                },
            };
            match state
                .inventory
                .execute(sku.as_str(), commit, &metadata)
                .await
            {
                Ok(_) => {}
                Err(CommandError::Rejected(e)) => {
                    tracing::error!(action = %action.id, error = %e, "a shipment's units could not be committed");
                }
                Err(e) => return Err(e.into()),
            }
        }
        other => tracing::warn!(kind = other, "unknown reservation action; dropped"),
    }
    Ok(())
}

async fn release_holds(
    state: &Ticker,
    order_id: &OrderId,
    reason: &Text,
    metadata: &CommandMetadata,
) -> Result<(), ActionError> {
    let holds_table = state.projections.table(NAME, HOLDS.name).await?;
    let holds: Vec<HoldRow> = select(
        &state.db,
        &holds_table,
        &HOLDS,
        "WHERE order_id = $1",
        &[Param::Text(order_id.to_string())],
    )
    .await?;
    for hold in holds {
        release_hold(
            state,
            order_id,
            &Sku::from_stored(&hold.sku),
            reason,
            metadata,
        )
        .await?;
    }
    Ok(())
}

async fn release_hold(
    state: &Ticker,
    order_id: &OrderId,
    sku: &Sku,
    reason: &Text,
    metadata: &CommandMetadata,
) -> Result<(), ActionError> {
    let release = InventoryCommandFor {
        sku: sku.clone(),
        command: InventoryCommand::ReleaseReservation {
            order_id: order_id.clone(),
            reason: reason.clone(),
            at: Utc::now(),
        },
    };
    state
        .inventory
        .execute(sku.as_str(), release, metadata)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use uuid::Uuid;

    use super::*;
    use crate::domain::order::{OrderLine, Origin};
    use crate::domain::values::{Currency, CustomerId, Money, PaymentId, SourceName};
    use crate::projections::{AnyEvent, MemoryTables, ViewStore};
    use crate::store::reader::{Cursor, LogEntry};

    fn reserved(position: i64, sku: &str, at: DateTime<Utc>) -> Envelope {
        inventory(
            position,
            InventoryEvent::StockReserved {
                sku: Sku::parse(sku).unwrap(),
                order_id: OrderId::parse("ord-1").unwrap(),
                quantity: Quantity::parse(1).unwrap(),
                reserved: 1,
                available: 9,
                reserved_at: at,
            },
        )
    }

    fn inventory(position: i64, event: InventoryEvent) -> Envelope {
        let entry = entry(
            position,
            "inventory",
            event.sku().as_str(),
            event.name(),
            &event,
        );
        Envelope {
            entry,
            event: AnyEvent::Inventory(event),
        }
    }

    fn order(position: i64, event: OrderEvent) -> Envelope {
        let entry = entry(position, "order", "ord-1", event.name(), &event);
        Envelope {
            entry,
            event: AnyEvent::Order(event),
        }
    }

    fn entry(
        position: i64,
        aggregate_type: &str,
        aggregate_id: &str,
        event_type: &str,
        payload: &impl Serialize,
    ) -> LogEntry {
        LogEntry {
            cursor: Cursor {
                transaction_id: 0,
                position,
            },
            event_id: Uuid::nil(),
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
            sequence: 1,
            event_type: event_type.into(),
            event_version: "1.0".into(),
            payload: serde_json::to_string(payload).unwrap(),
            metadata: None,
            recorded_at: at(),
        }
    }

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, 0).unwrap()
    }

    fn mug() -> Sku {
        Sku::parse("MUG").unwrap()
    }

    fn ord() -> OrderId {
        OrderId::parse("ord-1").unwrap()
    }

    fn units(n: i64) -> Quantity {
        Quantity::parse(n).unwrap()
    }

    fn created(origin: Option<Origin>) -> OrderEvent {
        let usd = Currency::parse("USD").unwrap();
        let price = Money::parse(1000, usd).unwrap();
        OrderEvent::OrderCreated {
            order_id: ord(),
            customer_id: CustomerId::parse("cust-1").unwrap(),
            currency: usd,
            lines: vec![OrderLine {
                sku: mug(),
                quantity: units(5),
                unit_price: price,
                line_total: Money::parse(5000, usd).unwrap(),
                untracked: false,
                backordered: 3,
            }],
            subtotal: Money::parse(5000, usd).unwrap(),
            discounts: vec![],
            shipping_lines: vec![],
            tax_lines: vec![],
            total: Money::parse(5000, usd).unwrap(),
            personal: None,
            origin: origin.map(Box::new),
            placed_at: at(),
        }
    }

    fn storefront() -> Option<Origin> {
        Some(Origin {
            source: SourceName::parse("shop").unwrap(),
            external_id: Text::parse("1001").unwrap(),
            external_number: None,
        })
    }

    fn memory_view() -> View {
        View {
            store: ViewStore::Memory(MemoryTables::default()),
            projection: NAME,
            generation: 1,
        }
    }

    /// The orphan check of `ord-1`'s hold on `sku`, if the manager keeps one.
    async fn orphan_check(view: &mut View, sku: &str) -> Option<ActionRow> {
        row(view, &ACTIONS, &orphan_id("ord-1", sku)).await
    }

    /// One row of one of the manager's tables, if it is there.
    async fn row<R>(view: &mut View, table: &'static Table, id: &str) -> Option<R>
    where
        R: ViewRow + Clone + Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
    {
        let rows: Rows<R> = Rows::load(view, table, Vec::new()).await.unwrap();
        let found = rows.get(id).cloned();
        rows.save(view).await.unwrap();
        found
    }

    async fn action_kind(view: &mut View, id: &str) -> Option<String> {
        row::<ActionRow>(view, &ACTIONS, id).await.map(|a| a.kind)
    }

    async fn held(view: &mut View) -> Option<i64> {
        row::<HoldRow>(view, &HOLDS, "ord-1|MUG")
            .await
            .map(|h| h.quantity)
    }

    #[tokio::test]
    async fn each_hold_of_an_order_never_placed_falls_due_after_its_own_reservation() {
        let manager = ReservationManager::new(&Settings::default());
        let first = Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, 0).unwrap();
        let last = first + chrono::Duration::seconds(5);
        let timeout = chrono::Duration::from_std(Settings::default().orphan_hold_timeout).unwrap();
        // One line per batch, then two in one batch: each hold has its own check.
        for batches in [
            vec![
                vec![reserved(1, "MUG", first)],
                vec![reserved(2, "CUP", last)],
            ],
            vec![vec![reserved(1, "MUG", first), reserved(2, "CUP", last)]],
        ] {
            let mut view = memory_view();
            for batch in batches {
                manager.apply(&mut view, &batch).await.unwrap();
            }
            for (sku, reserved_at) in [("MUG", first), ("CUP", last)] {
                assert_eq!(
                    orphan_check(&mut view, sku).await,
                    Some(ActionRow {
                        id: format!("ord-1|orphan|{sku}"),
                        order_id: "ord-1".into(),
                        kind: "orphan".into(),
                        sku: Some(sku.into()),
                        shipment_id: None,
                        quantity: None,
                        reason: "order never placed".into(),
                        due_at: reserved_at + timeout,
                    })
                );
            }
        }
    }

    #[tokio::test]
    async fn a_retry_reserving_and_releasing_other_skus_leaves_the_orphaned_hold_due_and_creation_clears_it(
    ) {
        let manager = ReservationManager::new(&Settings::default());
        let crashed = Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, 0).unwrap();
        let timeout = chrono::Duration::from_std(Settings::default().orphan_hold_timeout).unwrap();
        let mut view = memory_view();
        // A crash left MUG held; each retry holds CUP, finds MUG held, and gives CUP back.
        let mut batches = vec![vec![reserved(1, "MUG", crashed)]];
        for retry in 1..=3 {
            let at = crashed + chrono::Duration::seconds(retry);
            let released = InventoryEvent::ReservationReleased {
                sku: Sku::parse("CUP").unwrap(),
                order_id: ord(),
                quantity: units(1),
                reason: Text::parse("order_not_placed").unwrap(),
                reserved: 0,
                available: 10,
                released_at: at,
            };
            batches.push(vec![
                reserved(2 * retry, "CUP", at),
                inventory(2 * retry + 1, released),
            ]);
        }
        for batch in &batches {
            manager.apply(&mut view, batch).await.unwrap();
        }
        assert_eq!(
            orphan_check(&mut view, "MUG").await.map(|a| a.due_at),
            Some(crashed + timeout),
            "the retries did not move the orphaned hold's check"
        );
        assert_eq!(orphan_check(&mut view, "CUP").await, None);
        // Once released and placed by a later retry, the order has no orphan check.
        manager
            .apply(&mut view, &[order(10, created(None))])
            .await
            .unwrap();
        assert_eq!(orphan_check(&mut view, "MUG").await, None);
    }

    #[tokio::test]
    async fn a_storefront_order_is_never_set_to_expire_and_an_order_through_our_api_is() {
        let manager = ReservationManager::new(&Settings::default());
        for (origin, expires) in [(storefront(), false), (None, true)] {
            let mut view = memory_view();
            manager
                .apply(&mut view, &[order(1, created(origin))])
                .await
                .unwrap();
            assert_eq!(
                action_kind(&mut view, "ord-1|expire").await.is_some(),
                expires
            );
        }
    }

    #[tokio::test]
    async fn a_failed_payment_sets_a_release_that_asks_the_order_whether_it_is_a_storefronts() {
        let manager = ReservationManager::new(&Settings::default());
        let mut view = memory_view();
        let failed = OrderEvent::PaymentFailed {
            order_id: ord(),
            payment_id: PaymentId::parse("pay-1").unwrap(),
            amount: Money::parse(5000, Currency::parse("USD").unwrap()).unwrap(),
            reason: Text::parse("declined").unwrap(),
            failed_at: at(),
        };
        manager
            .apply(
                &mut view,
                &[order(1, created(storefront())), order(2, failed)],
            )
            .await
            .unwrap();
        assert_eq!(
            action_kind(&mut view, "ord-1|release").await.as_deref(),
            Some("release_unpaid")
        );
        // A cancellation replaces it with a release that always runs.
        let cancelled = OrderEvent::OrderCancelled {
            order_id: ord(),
            reason: Text::parse("customer").unwrap(),
            lines: vec![],
            refundable: Money::parse(0, Currency::parse("USD").unwrap()).unwrap(),
            cancelled_at: at(),
        };
        manager
            .apply(&mut view, &[order(3, cancelled)])
            .await
            .unwrap();
        assert_eq!(
            action_kind(&mut view, "ord-1|release").await.as_deref(),
            Some("release")
        );
    }

    #[tokio::test]
    async fn an_orders_backorder_is_part_of_its_hold_until_shipped_or_released() {
        let manager = ReservationManager::new(&Settings::default());
        let mut view = memory_view();
        let placed = [
            inventory(
                1,
                InventoryEvent::StockReserved {
                    sku: mug(),
                    order_id: ord(),
                    quantity: units(2),
                    reserved: 2,
                    available: 0,
                    reserved_at: at(),
                },
            ),
            inventory(
                2,
                InventoryEvent::StockBackordered {
                    sku: mug(),
                    order_id: ord(),
                    quantity: units(3),
                    backordered: 3,
                    backordered_at: at(),
                },
            ),
            order(3, created(storefront())),
        ];
        manager.apply(&mut view, &placed).await.unwrap();
        assert_eq!(held(&mut view).await, Some(5));
        let filled = InventoryEvent::BackorderFilled {
            sku: mug(),
            order_id: ord(),
            quantity: units(1),
            remaining: 2,
            reserved: 3,
            available: 0,
            backordered: 2,
            filled_at: at(),
        };
        let shipped = InventoryEvent::ReservationCommitted {
            sku: mug(),
            order_id: ord(),
            shipment_id: ShipmentId::parse("s1").unwrap(),
            quantity: units(4),
            from_reservation: 3,
            from_backorder: 1,
            on_hand: 0,
            reserved: 0,
            available: 0,
            backordered: 1,
            committed_at: at(),
        };
        manager
            .apply(&mut view, &[inventory(4, filled), inventory(5, shipped)])
            .await
            .unwrap();
        // The fill moved one owed unit into the reservation; the shipment took four.
        assert_eq!(held(&mut view).await, Some(1));
        let dropped = InventoryEvent::BackorderCancelled {
            sku: mug(),
            order_id: ord(),
            quantity: units(1),
            reason: Text::parse("cancelled").unwrap(),
            backordered: 0,
            cancelled_at: at(),
        };
        manager
            .apply(&mut view, &[inventory(6, dropped)])
            .await
            .unwrap();
        assert_eq!(held(&mut view).await, None);
    }

    #[tokio::test]
    async fn a_backorder_for_an_order_never_placed_is_checked_like_a_reservation() {
        let manager = ReservationManager::new(&Settings::default());
        let mut view = memory_view();
        let owed = InventoryEvent::StockBackordered {
            sku: mug(),
            order_id: ord(),
            quantity: units(3),
            backordered: 3,
            backordered_at: at(),
        };
        manager
            .apply(&mut view, &[inventory(1, owed)])
            .await
            .unwrap();
        let timeout = chrono::Duration::from_std(Settings::default().orphan_hold_timeout).unwrap();
        assert_eq!(
            orphan_check(&mut view, "MUG").await.map(|a| a.due_at),
            Some(at() + timeout)
        );
        assert_eq!(held(&mut view).await, Some(3));
    }
}
