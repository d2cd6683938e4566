//! Wiring: connect the store, build the shared state, serve HTTP, and shut everything
//! down together.
//!
//! `main` only parses the CLI and calls in here; tests call [`Application::build`]
//! directly with their own settings and port 0.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::admission::Admission;
use crate::auth::{Bootstrap, Tokens};
use crate::config::Settings;
use crate::delivery::Deliveries;
use crate::meter::Meter;
use crate::process::placement::PlacementFault;
use crate::process::reservations::{self, ReservationManager};
use crate::projections::runner::{FaultHook, Projections};
use crate::projections::{analytics, billing, inventory, order_summary, shipping, Projection};
use crate::state::AppState;
use crate::store::commands::AggregateStore;
use crate::store::idempotency::IdempotencyStore;
use crate::store::key_source;
use crate::store::reader::LogSignal;
use crate::store::sealed::{self, KeyRing, SealedColumn};
use crate::store::sources::{InboxWriter, SourceCache};
use crate::store::vault::Vault;
use crate::store::writer::EventWriter;
use crate::store::Database;

/// Every projection the engine runs, the reservation process manager included. A new
/// read model is a module in `projections` and a line here.
pub fn all_projections(settings: &Settings) -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(ReservationManager::new(settings)),
        Arc::new(order_summary::OrderSummary),
        Arc::new(billing::Billing),
        Arc::new(shipping::Shipping),
        Arc::new(analytics::Analytics),
        Arc::new(inventory::StockLevels),
    ]
}

/// What tests may swap: the projections run, and a fault hook inside the runner.
#[derive(Default)]
pub struct Overrides {
    pub projections: Option<Vec<Arc<dyn Projection>>>,
    pub fault: Option<FaultHook>,
    pub placement_fault: Option<PlacementFault>,
}

/// How often expired idempotency keys are swept away.
const IDEMPOTENCY_SWEEP_EVERY: Duration = Duration::from_secs(10 * 60);

pub struct Application {
    listener: TcpListener,
    state: AppState,
}

impl Application {
    /// Connects, migrates and binds; serving starts with [`Application::run`].
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with(settings, Overrides::default()).await
    }

    pub async fn build_with(settings: Settings, overrides: Overrides) -> anyhow::Result<Self> {
        let db = Database::connect(&settings.database_url, settings.db_pool_size)
            .await
            .with_context(|| {
                format!(
                    "connecting to the database at {}",
                    redact(&settings.database_url)
                )
            })?;
        db.migrate()
            .await
            .context("applying the schema migrations")?;
        let tokens = Tokens::new(db.clone());
        bootstrap_token(&tokens, &settings).await?;
        let keys = secret_keys(&settings, &db).await?;
        let listener = TcpListener::bind(settings.bind)
            .await
            .with_context(|| format!("binding {}", settings.bind))?;
        let log_signal = LogSignal::default();
        let projections = Projections::new(
            db.for_views(settings.db_pool_size)
                .await
                .context("connecting the views")?,
            overrides
                .projections
                .unwrap_or_else(|| all_projections(&settings)),
            log_signal.clone(),
            overrides.fault,
        );
        projections
            .init()
            .await
            .context("registering the projections")?;
        let meter = Meter::new(settings.live_stats);
        let writer = EventWriter::start(&db, log_signal.clone(), meter.clone());
        let vault = Vault::new(db.clone(), keys.clone());
        let state = AppState {
            orders: Arc::new(AggregateStore::new(&db, (), writer.clone())),
            inventory: Arc::new(AggregateStore::new(&db, (), writer.clone())),
            customers: Arc::new(AggregateStore::new(&db, (), writer.clone())),
            placement_fault: overrides.placement_fault,
            projections,
            deliveries: Deliveries::new(
                db.clone(),
                settings.deliveries.clone(),
                log_signal.clone(),
                keys.clone(),
                vault.clone(),
                meter.clone(),
            ),
            vault,
            meter,
            ops: Default::default(),
            sources: SourceCache::new(db.clone(), keys.clone()),
            inbox: InboxWriter::start(db.clone()),
            keys,
            inbox_signal: Arc::default(),
            closing: CancellationToken::new(),
            log_signal,
            idempotency: IdempotencyStore::new(db.clone(), settings.idempotency_ttl, writer),
            admission: Admission::new(
                settings.max_concurrent_commands as usize,
                settings.command_deadline,
            ),
            tokens,
            settings: Arc::new(settings),
            db,
        };
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then stops taking requests, lets the ones
    /// in flight finish and stops the background workers.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let sweeper = tokio::spawn(sweep_idempotency_keys(self.state.clone(), shutdown.clone()));
        let meter = self.state.meter.run(shutdown.clone());
        self.state
            .log_signal
            .listen(&self.state.db, shutdown.clone());
        let mut runners = self.state.projections.spawn(shutdown.clone());
        runners.push(tokio::spawn(reservations::run(
            self.state.ticker(),
            shutdown.clone(),
        )));
        runners.push(tokio::spawn(crate::api::sources::apply::run(
            self.state.clone(),
            shutdown.clone(),
        )));
        runners.push(
            self.state
                .deliveries
                .start(shutdown.clone())
                .await
                .context("starting the subscription workers")?,
        );
        crate::telemetry::metrics();
        let router = crate::api::router(self.state.clone());
        tracing::info!(
            addr = %self.listener.local_addr()?,
            database = self.state.db.backend_name(),
            "orderlog is serving"
        );
        let stop = shutdown.clone();
        let closing = self.state.closing.clone();
        axum::serve(self.listener, router)
            .with_graceful_shutdown(async move {
                stop.cancelled().await;
                closing.cancel();
            })
            .await
            .context("serving HTTP")?;
        self.state.idempotency.settle().await;
        shutdown.cancel();
        let _ = sweeper.await;
        let _ = meter.await;
        for runner in runners {
            let _ = runner.await;
        }
        self.state.db.close().await;
        tracing::info!("orderlog stopped");
        Ok(())
    }
}

/// Keeps the two-command quickstart: a database without tokens gets an admin token,
/// written to a file only its owner can read. The token itself is never logged.
async fn bootstrap_token(tokens: &Tokens, settings: &Settings) -> anyhow::Result<()> {
    let file = settings.bootstrap_token_path();
    match tokens
        .bootstrap(settings.bootstrap_token.as_ref(), &file)
        .await
        .context("creating the bootstrap token")?
    {
        Bootstrap::Written(path) => tracing::info!(
            file = %path.display(),
            "no API token existed: an admin token named `bootstrap` was written to this file \
             (send it as `Authorization: Bearer …`; manage tokens with `orderlog tokens`)"
        ),
        Bootstrap::Provisioned => {
            tracing::info!("the admin token `bootstrap` was provisioned from ORDERLOG_BOOTSTRAP_TOKEN")
        }
        Bootstrap::Ignored => tracing::warn!(
            "ORDERLOG_BOOTSTRAP_TOKEN is ignored: the database already holds tokens, and not this one"
        ),
        Bootstrap::Existing => {}
    }
    Ok(())
}

/// Every column that holds a sealed secret; a new one is a line here.
pub fn sealed_columns() -> Vec<SealedColumn> {
    [
        crate::delivery::store::SEALED_COLUMNS,
        crate::store::sources::SEALED_COLUMNS,
        crate::store::vault::SEALED_COLUMNS,
    ]
    .concat()
}

/// The server's keys (`store::key_source`: the settings, or the key file), with every
/// sealed column brought under the sealing key: legacy plain text sealed, values under
/// a previous key sealed again. A value no key opens is logged and left as it is; only
/// its subscription goes undelivered.
pub async fn secret_keys(settings: &Settings, db: &Database) -> anyhow::Result<Arc<KeyRing>> {
    let keys = key_source::load(&settings.key_settings()).context("loading the secret key")?;
    let done = sealed::reseal(db, &keys, &sealed_columns())
        .await
        .context("sealing the stored secrets")?;
    if done.sealed_plain + done.resealed > 0 {
        tracing::info!(
            sealed_plain = done.sealed_plain,
            resealed = done.resealed,
            key_id = %keys.sealing_id(),
            "stored secrets sealed under the current key"
        );
    }
    for (place, error) in &done.failed {
        tracing::error!(%place, code = error.code(), %error, "a stored secret does not open");
    }
    Ok(Arc::new(keys))
}

async fn sweep_idempotency_keys(state: AppState, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(IDEMPOTENCY_SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = every.tick() => {
                match state.idempotency.purge_expired(chrono::Utc::now()).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(purged = n, "expired idempotency keys removed"),
                    Err(e) => tracing::warn!(error = %e, "could not purge expired idempotency keys"),
                }
            }
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown requested; finishing requests in flight");
}

/// A database URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
