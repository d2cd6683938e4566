//! What is shown of each projection (`GET /v1/admin/projections`, `orderlog projections
//! list`): state, checkpoint, lag behind the log, skipped events, rebuild progress, and
//! the apply lag percentiles recorded since this process started.
//!
//! It only reads and records measurements; it never changes a projection's row.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::row::load_row;
use super::{Projections, RunnerError};
use crate::projections::Projection;
use crate::store::reader::{self, Cursor};
use crate::store::views::Param;

/// What `GET /v1/admin/projections` and `orderlog projections list` show.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[schema(as = ProjectionStatus)]
pub struct Status {
    pub name: &'static str,
    pub version: i64,
    pub code_version: i64,
    pub generation: i64,
    /// `running`, `rebuilding`, `stopped` or `failed`.
    pub state: String,
    pub checkpoint: Cursor,
    pub lag_events: i64,
    pub lag_seconds: f64,
    pub last_error: Option<String>,
    pub failed_event: Option<FailedEvent>,
    pub skipped_events: i64,
    pub rebuild: Option<RebuildProgress>,
    /// Since this process started: how long events took from being recorded in the log
    /// to being applied to this view (committed).
    pub apply_lag: LagSummary,
}

#[derive(Debug, Clone, Copy, Default, Serialize, utoipa::ToSchema)]
pub struct LagSummary {
    pub events: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FailedEvent {
    pub position: i64,
    pub event_id: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RebuildProgress {
    pub generation: i64,
    pub version: i64,
    pub checkpoint: Cursor,
}

impl Projections {
    pub async fn status(&self) -> Result<Vec<Status>, RunnerError> {
        let mut out = Vec::with_capacity(self.list.len());
        for projection in self.list.iter() {
            out.push(self.status_of(projection).await?);
        }
        Ok(out)
    }

    pub async fn status_one(&self, name: &str) -> Result<Status, RunnerError> {
        let projection = self.find(name)?.clone();
        self.status_of(&projection).await
    }

    async fn status_of(&self, projection: &Arc<dyn Projection>) -> Result<Status, RunnerError> {
        let name = projection.name();
        let row = load_row(&self.db, name).await?;
        let (lag_events, lag_seconds) = reader::lag(&self.db, row.cursor).await?;
        #[derive(serde::Deserialize)]
        struct Count {
            n: i64,
        }
        let skipped: Vec<Count> = crate::store::views::query(
            &self.db,
            "SELECT count(*) AS n FROM projection_skips WHERE name = $1",
            &["n"],
            &[Param::Text(name.to_owned())],
        )
        .await?;
        let skipped = skipped.first().map_or(0, |c| c.n);
        // A failed rebuild is what an operator must act on (retry or skip act on it
        // first); the serving generation's own failure shows once it is settled.
        let (state, last_error, failed) = match (&row.rebuild, row.rebuild_failure) {
            (Some(_), Some((error, at, event_id))) => {
                ("failed".to_owned(), Some(error), Some((at, event_id)))
            }
            (Some(_), None) => ("rebuilding".to_owned(), row.last_error, row.failed),
            (None, _) => (row.status.clone(), row.last_error, row.failed),
        };
        Ok(Status {
            name,
            version: row.version,
            code_version: projection.version(),
            generation: row.generation,
            state,
            checkpoint: row.cursor,
            lag_events,
            lag_seconds,
            last_error,
            failed_event: failed.map(|(cursor, event_id)| FailedEvent {
                position: cursor.position,
                event_id,
            }),
            skipped_events: skipped,
            rebuild: row
                .rebuild
                .map(|(generation, version, checkpoint)| RebuildProgress {
                    generation,
                    version,
                    checkpoint,
                }),
            apply_lag: self.lag_summary(name),
        })
    }

    pub(super) fn record_lag(
        &self,
        name: &str,
        recorded: &[(Cursor, DateTime<Utc>)],
        upto: Cursor,
    ) {
        let Some(histogram) = self.lags.get(name) else {
            return;
        };
        let now = Utc::now();
        let mut histogram = histogram.lock().unwrap_or_else(|e| e.into_inner());
        for (_, at) in recorded.iter().filter(|(c, _)| *c <= upto) {
            let micros = (now - *at).num_microseconds().unwrap_or(0).max(1) as u64;
            histogram.saturating_record(micros);
        }
    }

    fn lag_summary(&self, name: &str) -> LagSummary {
        let Some(histogram) = self.lags.get(name) else {
            return LagSummary::default();
        };
        let histogram = histogram.lock().unwrap_or_else(|e| e.into_inner());
        if histogram.is_empty() {
            return LagSummary::default();
        }
        LagSummary {
            events: histogram.len(),
            p50_ms: histogram.value_at_quantile(0.5) as f64 / 1000.0,
            p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
            max_ms: histogram.max() as f64 / 1000.0,
        }
    }
}
