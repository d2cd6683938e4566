//! The operator's view: `GET /ops`, one page embedded in the binary, fed by
//! `GET /v1/ops/stream` (Server-Sent Events, a snapshot a second) and
//! `GET /v1/ops/stats` (the same snapshot, for scripts and tests). Also the layer that
//! times every command for the meter.
//!
//! A snapshot joins the meter's rates (`crate::meter`) with what the database knows:
//! each projection's and subscription's lag and queues, low stock, backorders and the
//! storefront inboxes. It is made at most once a second, however many pages watch,
//! so viewers cost the database a bounded few queries. The page and its assets need no
//! token (they hold no data); the page asks for one and keeps it for the tab's session.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::Serialize;
use tokio::time::MissedTickBehavior;

use super::error::ApiError;
use super::openapi::{string, Op};
use super::scoped::{OpenRoutes, Routes};
use crate::auth::Scope;
use crate::meter::MeterSnapshot;
use crate::projections::inventory::{self, StockRow};
use crate::state::AppState;
use crate::store::sources::{self, InboxDepth};

/// SKUs with fewer units available than this are "low".
pub const LOW_STOCK_BELOW: i64 = 10;
/// How many low-stock and backordered SKUs a snapshot lists.
const STOCK_ROWS: i64 = 20;
/// A snapshot younger than this is served again rather than made anew.
const FRESH_FOR: Duration = Duration::from_millis(900);
/// How often the stream pushes one.
const PUSH_EVERY: Duration = Duration::from_secs(1);

pub fn routes() -> Routes {
    Routes::new()
        .get("/ops/stats", Scope::MetricsRead, stats)
        .get("/ops/stream", Scope::MetricsRead, stream)
}

/// The page and its assets, open to anyone: the data behind it is not.
pub fn open_routes() -> OpenRoutes {
    OpenRoutes::new()
        .get("/ops", || asset(Asset::PAGE))
        .get("/ops/ops.js", || asset(Asset::SCRIPT))
        .get("/ops/ops.css", || asset(Asset::STYLE))
        .get("/ops/vendor/uPlot.iife.min.js", || asset(Asset::UPLOT))
        .get("/ops/vendor/uPlot.min.css", || asset(Asset::UPLOT_STYLE))
}

/// What [`routes`] and [`open_routes`] serve, for `GET /openapi.json`.
pub fn operations() -> Vec<Op> {
    let asset = |path, summary, content_type| {
        Op::get(path, summary).content(200, "the file", content_type, string())
    };
    vec![
        Op::get("/v1/ops/stats", "This server's snapshot for the dashboard")
            .json::<StatsOut>(200, "the snapshot"),
        Op::get(
            "/v1/ops/stream",
            "The snapshot as Server-Sent Events, once a second",
        )
        .content(
            200,
            "`event: stats`, once a second",
            "text/event-stream",
            string(),
        ),
        asset("/ops", "The operations dashboard", "text/html"),
        asset("/ops/ops.js", "The dashboard's script", "text/javascript"),
        asset("/ops/ops.css", "The dashboard's style", "text/css"),
        asset("/ops/vendor/uPlot.iife.min.js", "uPlot", "text/javascript"),
        asset("/ops/vendor/uPlot.min.css", "uPlot's style", "text/css"),
    ]
}

struct Asset {
    body: &'static str,
    content_type: &'static str,
}

impl Asset {
    const PAGE: Asset = Asset {
        body: include_str!("../../assets/ops/index.html"),
        content_type: "text/html; charset=utf-8",
    };
    const SCRIPT: Asset = Asset {
        body: include_str!("../../assets/ops/ops.js"),
        content_type: "text/javascript; charset=utf-8",
    };
    const STYLE: Asset = Asset {
        body: include_str!("../../assets/ops/ops.css"),
        content_type: "text/css; charset=utf-8",
    };
    const UPLOT: Asset = Asset {
        body: include_str!("../../assets/ops/vendor/uplot/uPlot.iife.min.js"),
        content_type: "text/javascript; charset=utf-8",
    };
    const UPLOT_STYLE: Asset = Asset {
        body: include_str!("../../assets/ops/vendor/uplot/uPlot.min.css"),
        content_type: "text/css; charset=utf-8",
    };
}

async fn asset(asset: Asset) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            // Everything the page loads is its own: no inline script, no other origin.
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                     base-uri 'none'; frame-ancestors 'none'; form-action 'none'",
                ),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        asset.body,
    )
        .into_response()
}

/// Times every command (a gated POST, PUT, PATCH or DELETE) from its arrival to its
/// answer, by route, for the meter and `/metrics`.
pub async fn meter_commands(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let command = matches!(
        *request.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let route = request.extensions().get::<MatchedPath>().cloned();
    let (Some(route), true) = (route, command) else {
        return next.run(request).await;
    };
    let kind = format!("{} {}", request.method(), route.as_str());
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .meter
        .command(&kind, response.status().as_u16(), started.elapsed());
    response
}

/// The latest snapshot, shared by every viewer of this server.
#[derive(Clone, Default)]
pub struct Latest(Arc<tokio::sync::Mutex<Option<Made>>>);

/// A snapshot, and when it was made.
type Made = (Instant, Arc<StatsOut>);

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = OpsStats)]
pub struct StatsOut {
    pub at: DateTime<Utc>,
    pub backend: &'static str,
    /// Event streams open on this server now.
    pub streams_open: i64,
    #[serde(flatten)]
    pub meter: MeterSnapshot,
    pub subscriptions: Vec<SubscriptionOut>,
    pub projections: Vec<ProjectionOut>,
    pub stock: StockOut,
    pub inbox: Vec<InboxDepth>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = OpsSubscription)]
pub struct SubscriptionOut {
    pub id: String,
    pub kind: &'static str,
    pub target: String,
    pub state: &'static str,
    /// `closed`, `open` or `half_open`; `None` when no server holds its lease.
    pub breaker: Option<&'static str>,
    /// Messages the lease holder lets be in flight now, and the most it would.
    pub window: Option<u32>,
    pub max_in_flight: u32,
    pub waiting: i64,
    pub dead: i64,
    pub lag_events: i64,
    pub lag_seconds: f64,
    /// This server's attempts: the last second's, and since it started.
    pub attempts_per_second: u64,
    pub attempts: u64,
    pub delivered: u64,
    /// Over the last ten seconds; `None` without attempts.
    pub success_rate: Option<f64>,
    pub attempt_p99_ms: f64,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = OpsProjection)]
pub struct ProjectionOut {
    pub name: &'static str,
    pub state: String,
    pub lag_events: i64,
    pub lag_seconds: f64,
    /// Since this server started: from recorded to applied.
    pub apply_lag_p99_ms: f64,
    pub last_error: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = OpsStock)]
pub struct StockOut {
    pub below: i64,
    pub low: Vec<StockRow>,
    pub backordered: Vec<StockRow>,
}

async fn stats(State(state): State<AppState>) -> Result<Json<Arc<StatsOut>>, ApiError> {
    Ok(Json(snapshot(&state).await?))
}

async fn stream(
    State(state): State<AppState>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // The first snapshot is made before answering, so a failure is an error status
    // rather than a stream that ends at once.
    let first = snapshot(&state).await?;
    // On the second, however long a snapshot takes to make: a busy database delays a
    // push, not every push after it; a push that came late is not followed by a burst
    // catching up (`Delay`).
    let mut every = tokio::time::interval(PUSH_EVERY);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    every.reset();
    let pushes = futures::stream::unfold(
        (state, Some(first), every),
        |(state, ready, mut every)| async move {
            let snapshot = match ready {
                Some(snapshot) => snapshot,
                None => {
                    tokio::select! {
                        _ = state.closing.cancelled() => return None,
                        _ = every.tick() => {}
                    }
                    match snapshot(&state).await {
                        Ok(snapshot) => snapshot,
                        Err(_) => return None,
                    }
                }
            };
            let event = Event::default()
                .event("stats")
                .json_data(&*snapshot)
                .unwrap_or_else(|_| Event::default().comment("unrenderable snapshot"));
            Some((Ok(event), (state, None, every)))
        },
    );
    Ok(Sse::new(pushes).keep_alive(KeepAlive::default()))
}

/// The shared snapshot, made anew when the last is older than [`FRESH_FOR`].
pub async fn snapshot(state: &AppState) -> Result<Arc<StatsOut>, ApiError> {
    let mut latest = state.ops.0.lock().await;
    if let Some((made, snapshot)) = &*latest {
        if made.elapsed() < FRESH_FOR {
            return Ok(snapshot.clone());
        }
    }
    // Stamped when begun: a stream pushing on the second then finds the last one stale
    // however long it took to make.
    let begun = Instant::now();
    let snapshot = Arc::new(make(state).await?);
    *latest = Some((begun, snapshot.clone()));
    Ok(snapshot)
}

async fn make(state: &AppState) -> Result<StatsOut, ApiError> {
    let meter = state.meter.snapshot();
    // The reads are independent, and under load each waits its turn for a connection
    // behind the commands: side by side, a snapshot takes the longest of them rather
    // than their sum (BENCHMARKS.md, the dashboard at 10,000 events/s).
    let (subscriptions, projections, stock, inbox) = tokio::try_join!(
        async { state.deliveries.list().await.map_err(ApiError::from) },
        async { state.projections.status().await.map_err(ApiError::from) },
        stock(state),
        async {
            sources::inbox_depths(&state.db)
                .await
                .map_err(ApiError::from)
        },
    )?;
    let subscriptions = subscriptions
        .into_iter()
        .map(|status| {
            let id = status.subscription.id.to_string();
            let rate = meter.attempts.iter().find(|a| a.subscription_id == id);
            SubscriptionOut {
                kind: status.subscription.kind.as_str(),
                target: status.subscription.target.clone(),
                state: status.subscription.state.as_str(),
                breaker: status.breaker.map(|b| b.as_str()),
                window: status.window,
                max_in_flight: status.subscription.max_in_flight,
                waiting: status.waiting,
                dead: status.dead,
                lag_events: status.lag_events,
                lag_seconds: status.lag_seconds,
                attempts_per_second: rate.map_or(0, |r| r.per_second),
                attempts: rate.map_or(0, |r| r.attempts),
                delivered: rate.map_or(0, |r| r.delivered),
                success_rate: rate.and_then(|r| r.success_rate),
                attempt_p99_ms: rate.map_or(0.0, |r| r.p99_ms),
                id,
            }
        })
        .collect();
    let projections = projections
        .into_iter()
        .map(|status| ProjectionOut {
            name: status.name,
            state: status.state,
            lag_events: status.lag_events,
            lag_seconds: status.lag_seconds,
            apply_lag_p99_ms: status.apply_lag.p99_ms,
            last_error: status.last_error,
        })
        .collect();
    Ok(StatsOut {
        at: Utc::now(),
        backend: state.db.backend_name(),
        streams_open: state.meter.streams_open(),
        meter,
        subscriptions,
        projections,
        stock,
        inbox,
    })
}

async fn stock(state: &AppState) -> Result<StockOut, ApiError> {
    let table = state
        .projections
        .table(inventory::NAME, inventory::ITEMS.name)
        .await?;
    let (low, backordered) = tokio::try_join!(
        inventory::low_stock(&state.db, &table, LOW_STOCK_BELOW, None, STOCK_ROWS),
        inventory::backordered(&state.db, &table, STOCK_ROWS),
    )?;
    Ok(StockOut {
        below: LOW_STOCK_BELOW,
        low,
        backordered,
    })
}
