//! The applier: deliveries in the inbox become commands on our orders.
//!
//! Each delivery is read as a snapshot (`storefront`), and the plan's next step is
//! run, the next one planned on the order as that command left it, and so on until the
//! order shows everything the delivery does. The plan's ids are derived from the platform's, so a delivery
//! applied twice, or an older one after a newer one, runs no command at all; that is
//! also what makes a crash between the inbox's commit and the end of applying harmless:
//! the delivery is still `waiting`, and applying it again finishes the job.
//!
//! Deliveries of one order are applied one after another, in arrival order; different
//! orders go on side by side. A delivery that cannot be read, or whose command the
//! domain refuses, is `failed` with the reason, under the same code the API would
//! answer with. A transient failure (a saturated database) leaves it `waiting` for the
//! next pass.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::api::error::ApiError;
use crate::domain::order::{Order, OrderCommand, OrderError};
use crate::domain::values::{OrderId, SourceName};
use crate::process::placement::{Placement, PlacementError};
use crate::state::AppState;
use crate::store::commands::{CommandError, Executed};
use crate::store::from_millis;
use crate::store::metadata::CommandMetadata;
use crate::store::sources::{self, Arrival, InboxRow, Platform, Settled, Source};
use crate::storefront::plan::{self, Step};
use crate::storefront::{self, Delivery, PayloadError};

/// Deliveries taken per pass.
const BATCH: i64 = 256;
/// Orders applied side by side. Acknowledgements come first: they share the database
/// (and on SQLite its one write lock) with the applier, and 16 at once put the p99 of
/// an acknowledgement on SQLite at 69 ms against 33 ms with 4 (bench_ingest, 64
/// senders), for an applied rate of 654/s against 299/s; a backlog drains after a burst.
const ORDERS_AT_ONCE: usize = 4;
/// A delivery takes at most this many commands (a whole lifecycle takes about ten).
const MAX_STEPS: usize = 32;
/// How often the inbox is looked at without being told (another node's deliveries, a
/// pass that met a transient failure).
const IDLE: Duration = Duration::from_secs(1);

/// Applies waiting deliveries until `shutdown`.
pub async fn run(state: AppState, shutdown: CancellationToken) {
    loop {
        let idle = match sources::waiting(&state.db, BATCH).await {
            Ok(rows) if rows.is_empty() => true,
            Ok(rows) => {
                let full = rows.len() as i64 == BATCH;
                let transient = pass(&state, rows).await;
                !full || transient
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the storefront inbox");
                true
            }
        };
        if idle {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = state.inbox_signal.notified() => {}
                () = tokio::time::sleep(IDLE) => {}
            }
        } else if shutdown.is_cancelled() {
            return;
        }
    }
}

/// Applies one batch, then records how each delivery ended in one transaction (a
/// crash in between applies them again, which changes nothing); whether any delivery
/// met a transient failure.
async fn pass(state: &AppState, rows: Vec<InboxRow>) -> bool {
    let mut sources_by_name: HashMap<String, Option<Arc<Source>>> = HashMap::new();
    let mut by_order: Vec<(OrderId, Vec<Read>)> = Vec::new();
    let mut done: Vec<(i64, Settled)> = Vec::new();
    let mut transient = false;
    for row in rows {
        if !sources_by_name.contains_key(&row.source) {
            let loaded = match SourceName::parse(&row.source) {
                Ok(name) => state.sources.get(&name).await,
                Err(_) => Ok(None),
            };
            match loaded {
                Ok(source) => sources_by_name.insert(row.source.clone(), source),
                Err(e) => {
                    tracing::warn!(error = %e, source = %row.source, "could not load a source");
                    transient = true;
                    continue;
                }
            };
        }
        let Some(Some(source)) = sources_by_name.get(&row.source) else {
            // Deleted meanwhile: its inbox goes with it.
            continue;
        };
        match read(source, &row) {
            Ok(read) => match by_order.iter_mut().find(|(id, _)| *id == read.order_id) {
                Some((_, group)) => group.push(read),
                None => by_order.push((read.order_id.clone(), vec![read])),
            },
            Err(failed) => done.push((row.id, failed)),
        }
    }
    // Each order's deliveries in arrival order, so that a refusal is recorded before
    // the change that puts it back in line.
    let outcomes: Vec<(Vec<(i64, Settled)>, bool)> = futures::stream::iter(by_order)
        .map(|(_, group)| async move {
            let mut settled = Vec::with_capacity(group.len());
            for read in group {
                match apply(state, &read).await {
                    Ok(outcome) => settled.push((read.inbox_id, outcome)),
                    Err(e) => {
                        tracing::warn!(error = %e, inbox_id = read.inbox_id, "a storefront delivery will be applied again");
                        // Later deliveries of this order wait behind it.
                        return (settled, true);
                    }
                }
            }
            (settled, false)
        })
        .buffer_unordered(ORDERS_AT_ONCE)
        .collect()
        .await;
    for (settled, failed) in outcomes {
        done.extend(settled);
        transient |= failed;
    }
    match sources::settle(&state.db, &done, Utc::now()).await {
        Ok(0) => {}
        Ok(_requeued) => state.inbox_signal.notify_one(),
        Err(e) => {
            tracing::warn!(error = %e, "could not record how storefront deliveries ended");
            transient = true;
        }
    }
    transient
}

/// A delivery read: what it says, and the order it is about.
struct Read {
    inbox_id: i64,
    source: SourceName,
    delivery: Delivery,
    order_id: OrderId,
    received_at: DateTime<Utc>,
    /// Shared by every event this delivery causes.
    correlation_id: String,
}

fn failed(order_id: Option<&OrderId>, code: &str, error: String) -> Settled {
    Settled::Failed {
        refused: false,
        order_id: order_id.map(|id| id.as_str().to_owned()),
        code: code.to_owned(),
        error,
    }
}

fn unreadable(error: &PayloadError) -> Settled {
    failed(None, error.code(), error.to_string())
}

fn read(source: &Source, row: &InboxRow) -> Result<Read, Settled> {
    let delivery =
        parse(source.platform, &row.topic, row.body.as_bytes()).map_err(|e| unreadable(&e))?;
    let Some(external_id) = delivery.external_id() else {
        // A topic that moves no order: applied, with nothing to do.
        return Err(Settled::Applied {
            order_id: None,
            commands: 0,
        });
    };
    let order_id = plan::order_id(&source.name, external_id).map_err(|e| unreadable(&e))?;
    Ok(Read {
        inbox_id: row.id,
        source: source.name.clone(),
        delivery,
        order_id,
        received_at: from_millis(row.received_at),
        correlation_id: row.dedup_key.clone(),
    })
}

/// An imported line is a whole order, as an update of it would carry.
fn parse(platform: Platform, topic: &str, body: &[u8]) -> Result<Delivery, PayloadError> {
    let topic = match (platform, topic) {
        (Platform::Shopify, IMPORT_TOPIC) => "orders/updated",
        (Platform::WooCommerce, IMPORT_TOPIC) => "order.updated",
        (_, topic) => topic,
    };
    storefront::parse(platform, topic, body)
}

/// A failure that is nobody's fault and passes (a saturated database, a race that kept
/// being lost): the delivery stays waiting.
#[derive(Debug, thiserror::Error)]
enum Transient {
    #[error("{0}")]
    Command(String),
}

/// What the API would answer for a refused command, as the inbox records it.
fn refused(order_id: &OrderId, error: ApiError) -> Settled {
    Settled::Failed {
        order_id: Some(order_id.as_str().to_owned()),
        code: error.code().to_owned(),
        error: error.detail().to_owned(),
        refused: true,
    }
}

/// Runs the plan's steps for one delivery until the order shows all of it.
async fn apply(state: &AppState, read: &Read) -> Result<Settled, Transient> {
    let metadata = CommandMetadata::system(
        &format!("source:{}", read.source),
        &read.correlation_id,
        &format!("inbox:{}", read.inbox_id),
    );
    let mut commands = 0u32;
    let mut conflicts = 0;
    let load = || async {
        state
            .orders
            .load(read.order_id.as_str())
            .await
            .map_err(|e| Transient::Command(e.to_string()))
    };
    let mut current = load().await?;
    for _ in 0..MAX_STEPS {
        let step = match plan::next_step(
            &read.source,
            &read.delivery,
            current.placed(),
            read.received_at,
        ) {
            Ok(Some(step)) => step,
            Ok(None) => {
                return Ok(Settled::Applied {
                    order_id: Some(read.order_id.as_str().to_owned()),
                    commands,
                })
            }
            Err(e) => return Ok(failed(Some(&read.order_id), e.code(), e.to_string())),
        };
        let mut step_metadata = metadata.caused();
        step_metadata.command_id = command_id(&read.order_id, &step);
        let outcome = match step {
            Step::Place(mut command) => {
                // The customer's personal data is sealed here, at the edge, as the API
                // seals what a storefront posts.
                if let Delivery::Order(snapshot) = &read.delivery {
                    if !snapshot.personal.is_empty() {
                        let (sealed, key) =
                            state.vault.seal(&command.customer_id, &snapshot.personal);
                        command.personal = Some(sealed);
                        step_metadata.data_key = Some(key);
                    }
                }
                place(state, command, &step_metadata).await
            }
            Step::Apply(command) => execute(state, &read.order_id, command, &step_metadata).await,
        };
        match outcome {
            // The order as the command left it: what the next step is planned on.
            Outcome::Done(order) => {
                commands += 1;
                current = *order;
            }
            // Another delivery of the same order (on another node) moved it: look again.
            Outcome::Raced if conflicts < 3 => {
                conflicts += 1;
                current = load().await?;
            }
            Outcome::Raced => {
                return Err(Transient::Command(
                    "the order kept changing concurrently".to_owned(),
                ))
            }
            Outcome::Refused(error) => return Ok(refused(&read.order_id, error)),
            Outcome::Transient(cause) => return Err(Transient::Command(cause)),
        }
    }
    Ok(failed(
        Some(&read.order_id),
        "too_many_commands",
        format!("the delivery still needed commands after {MAX_STEPS}; this is a bug in its plan"),
    ))
}

/// A step's command id, derived from what it does to which order: the same command,
/// planned again from a repeated or an older delivery, carries the same id (UUIDv8 of
/// the SHA-256 of its description), so the log shows one command, however it arrived.
fn command_id(order_id: &OrderId, step: &Step) -> uuid::Uuid {
    use sha2::{Digest, Sha256};
    let what = match step {
        Step::Place(_) => "place".to_owned(),
        Step::Apply(command) => match command {
            OrderCommand::PlaceOrder(_) => "place".to_owned(),
            OrderCommand::AttemptPayment(c) => format!("attempt:{}", c.payment_id),
            OrderCommand::CapturePayment(c) => format!("capture:{}", c.payment_id),
            OrderCommand::FailPayment(c) => format!("fail:{}", c.payment_id),
            OrderCommand::DispatchShipment(c) => format!("dispatch:{}", c.shipment_id),
            OrderCommand::DeliverShipment(c) => format!("deliver:{}", c.shipment_id),
            OrderCommand::CancelOrder(_) => "cancel".to_owned(),
            OrderCommand::RefundOrder(c) => format!("refund:{}", c.refund_id),
            OrderCommand::ExpireOrder(_) => "expire".to_owned(),
        },
    };
    let digest = Sha256::digest(format!("{order_id}/{what}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

enum Outcome {
    // Boxed: an order is large beside the other outcomes (clippy's large_enum_variant).
    Done(Box<Order>),
    Raced,
    Refused(ApiError),
    Transient(String),
}

fn outcome<E>(
    result: Result<Executed<Order>, CommandError<E>>,
    refused: impl FnOnce(E) -> ApiError,
) -> Outcome
where
    E: std::error::Error,
{
    match result {
        Ok(executed) => Outcome::Done(Box::new(executed.state)),
        Err(CommandError::Rejected(e)) => Outcome::Refused(refused(e)),
        Err(CommandError::Conflict) => Outcome::Raced,
        Err(
            e @ (CommandError::Unavailable(_) | CommandError::Saturated | CommandError::Store(_)),
        ) => Outcome::Transient(e.to_string()),
    }
}

async fn execute(
    state: &AppState,
    order_id: &OrderId,
    command: OrderCommand,
    metadata: &CommandMetadata,
) -> Outcome {
    let result = state
        .orders
        .execute(order_id.as_str(), command, metadata)
        .await;
    outcome(result, ApiError::from)
}

/// A storefront's sale already happened: short lines are backordered, never refused.
async fn place(
    state: &AppState,
    command: crate::domain::order::PlaceOrder,
    metadata: &CommandMetadata,
) -> Outcome {
    let placement = Placement {
        orders: &state.orders,
        inventory: &state.inventory,
        require_tracked_skus: false,
        fault: state.placement_fault.as_ref(),
        answer: None,
    };
    match placement.place_sale(command, metadata).await {
        Ok(executed) => Outcome::Done(Box::new(executed.state)),
        Err(PlacementError::Order(CommandError::Rejected(OrderError::AlreadyExists {
            ..
        }))) => Outcome::Raced,
        Err(PlacementError::Order(e)) => outcome::<OrderError>(Err(e), ApiError::from),
        Err(PlacementError::Inventory(e)) => outcome(Err(e), ApiError::from),
        // Applied again later, once the earlier placement finished or was released.
        Err(e @ PlacementError::Pending { .. }) => Outcome::Transient(e.to_string()),
        Err(e) => Outcome::Refused(ApiError::from(e)),
    }
}

/// What an import did.
#[derive(Debug, Default, Serialize, utoipa::ToSchema)]
pub struct ImportCounts {
    /// Lines whose order changed.
    pub applied: u32,
    /// Lines already in the inbox, or whose order already showed everything they do.
    pub unchanged: u32,
    pub failed: Vec<ImportFailure>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ImportFailure {
    /// 1-based, as editors count.
    pub line: usize,
    pub code: String,
    pub detail: String,
}

/// Stores each NDJSON line in the inbox (as the topic `import`), then applies it as
/// the applier would. Blank lines are skipped.
pub async fn import(
    state: &AppState,
    source: &Source,
    text: &str,
) -> Result<ImportCounts, ApiError> {
    let mut counts = ImportCounts::default();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let dedup_key = format!("sha256:{}", super::ingest::body_hash(line.as_bytes()));
        let received_at = Utc::now();
        let stored = sources::receive(
            &state.db,
            &Arrival {
                source: source.name.clone(),
                dedup_key: dedup_key.clone(),
                topic: IMPORT_TOPIC.to_owned(),
                headers: "{}".to_owned(),
                body: line.to_owned(),
                received_at,
            },
        )
        .await?;
        if !stored {
            counts.unchanged += 1;
            continue;
        }
        let Some(row) = sources::find_by_key(&state.db, &source.name, &dedup_key).await? else {
            continue;
        };
        let settled = match read(source, &row) {
            Err(settled) => settled,
            Ok(read) => apply(state, &read)
                .await
                .map_err(|e| ApiError::unavailable(&e))?,
        };
        let recorded = [(row.id, settled)];
        if sources::settle(&state.db, &recorded, Utc::now()).await? > 0 {
            state.inbox_signal.notify_one();
        }
        let [(_, settled)] = recorded;
        match settled {
            Settled::Applied { commands: 0, .. } => counts.unchanged += 1,
            Settled::Applied { .. } => counts.applied += 1,
            Settled::Failed { code, error, .. } => counts.failed.push(ImportFailure {
                line: index + 1,
                code,
                detail: error,
            }),
        }
    }
    Ok(counts)
}

/// The topic of an imported line: a whole order, as the platforms' REST APIs list them.
pub const IMPORT_TOPIC: &str = "import";
