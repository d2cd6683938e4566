//! What an operator drives: requesting a rebuild, retrying a failed or stopped
//! projection, stopping a running one, and skipping the event a failed one stopped on
//! (the skip is recorded). Each is one transaction under the projection's row lock. A
//! failed rebuild is retried or skipped the same way, ahead of the serving generation.
//!
//! It never applies events or builds tables' contents; the live group and the
//! rebuilder do that once the row says so.

use super::row::lock_row;
use super::{now, Projections, RunnerError};
use crate::store::views::{physical, Param, Tx};
use crate::store::StoreError;

impl Projections {
    /// Starts a blue/green rebuild into a fresh generation of tables.
    pub async fn rebuild(&self, name: &str) -> Result<(), RunnerError> {
        let projection = self.find(name)?.clone();
        let mut tx = Tx::begin(&self.db).await?;
        let row = lock_row(&mut tx, name).await?;
        let generation = row
            .generation
            .max(row.rebuild.map_or(0, |r| r.0))
            .max(row.retired.unwrap_or(0))
            + 1;
        if let Some((old, _, _)) = row.rebuild {
            for table in projection.tables() {
                tx.drop_table(&physical(name, old, table.name)).await?;
            }
        }
        for table in projection.tables() {
            tx.create_table(&physical(name, generation, table.name), table)
                .await?;
        }
        tx.execute(
            "UPDATE projections
                SET rebuild_generation = $2, rebuild_version = $3, rebuild_cursor_tx = 0,
                    rebuild_cursor_position = 0, rebuild_last_error = NULL,
                    rebuild_failed_tx = NULL, rebuild_failed_position = NULL,
                    rebuild_failed_event_id = NULL, updated_at = $4
              WHERE name = $1",
            &[
                Param::Text(name.to_owned()),
                Param::Int(generation),
                Param::Int(projection.version()),
                Param::Text(now()),
            ],
        )
        .await?;
        tx.commit().await?;
        self.rebuild_requested.notify_one();
        Ok(())
    }

    /// Puts a failed or stopped projection back to work, from where it stopped. A failed
    /// rebuild is retried first (from the start of the log, as every rebuild pass).
    pub async fn retry(&self, name: &str) -> Result<(), RunnerError> {
        self.find(name)?;
        if self.resume_rebuild(name, false).await? {
            return Ok(());
        }
        self.transition(
            name,
            &["failed", "stopped"],
            "retry",
            "failed or stopped",
            "running",
        )
        .await
    }

    /// Stops a running projection; its view stays as it is until `retry`.
    pub async fn stop(&self, name: &str) -> Result<(), RunnerError> {
        self.find(name)?;
        self.transition(name, &["running"], "stop", "running", "stopped")
            .await
    }

    async fn transition(
        &self,
        name: &str,
        from: &[&str],
        action: &'static str,
        needed: &'static str,
        to: &str,
    ) -> Result<(), RunnerError> {
        let mut tx = Tx::begin(&self.db).await?;
        let row = lock_row(&mut tx, name).await?;
        if !from.contains(&row.status.as_str()) {
            return Err(RunnerError::WrongState {
                name: name.to_owned(),
                state: row.status,
                action,
                needed,
            });
        }
        tx.execute(
            "UPDATE projections
                SET status = $2, last_error = NULL, failed_tx = NULL, failed_position = NULL,
                    failed_event_id = NULL, updated_at = $3
              WHERE name = $1",
            &[
                Param::Text(name.to_owned()),
                Param::Text(to.to_owned()),
                Param::Text(now()),
            ],
        )
        .await?;
        tx.commit().await?;
        self.signal.notify();
        Ok(())
    }

    /// Puts a failed rebuild back to work, skipping (and recording) the event it stopped
    /// on when `skip`. Returns false when no rebuild has failed.
    async fn resume_rebuild(&self, name: &str, skip: bool) -> Result<bool, RunnerError> {
        let mut tx = Tx::begin(&self.db).await?;
        let row = lock_row(&mut tx, name).await?;
        let (Some((_, version, _)), Some((error, at, event_id))) =
            (row.rebuild, row.rebuild_failure)
        else {
            return Ok(false);
        };
        if skip {
            record_skip(&mut tx, name, version, &event_id, at.position, &error).await?;
        }
        tx.execute(
            "UPDATE projections
                SET rebuild_last_error = NULL, rebuild_failed_tx = NULL,
                    rebuild_failed_position = NULL, rebuild_failed_event_id = NULL,
                    updated_at = $2
              WHERE name = $1",
            &[Param::Text(name.to_owned()), Param::Text(now())],
        )
        .await?;
        tx.commit().await?;
        self.rebuild_requested.notify_one();
        Ok(true)
    }

    /// Skips the event a failed projection (or its failed rebuild) stopped on, records
    /// the skip, and resumes.
    pub async fn skip(&self, name: &str) -> Result<(), RunnerError> {
        self.find(name)?;
        if self.resume_rebuild(name, true).await? {
            return Ok(());
        }
        let mut tx = Tx::begin(&self.db).await?;
        let row = lock_row(&mut tx, name).await?;
        let (Some((cursor, event_id)), "failed") = (row.failed.clone(), row.status.as_str()) else {
            return Err(RunnerError::WrongState {
                name: name.to_owned(),
                state: row.status,
                action: "skip",
                needed: "failed",
            });
        };
        let error = row.last_error.unwrap_or_default();
        record_skip(
            &mut tx,
            name,
            row.version,
            &event_id,
            cursor.position,
            &error,
        )
        .await?;
        tx.execute(
            "UPDATE projections
                SET status = 'running', cursor_tx = $2, cursor_position = $3, last_error = NULL,
                    failed_tx = NULL, failed_position = NULL, failed_event_id = NULL,
                    updated_at = $4
              WHERE name = $1",
            &[
                Param::Text(name.to_owned()),
                Param::Int(cursor.transaction_id),
                Param::Int(cursor.position),
                Param::Text(now()),
            ],
        )
        .await?;
        tx.commit().await?;
        self.publish(name, cursor);
        self.signal.notify();
        Ok(())
    }
}

/// Records a skip under the code version that made it: a rebuild by that version skips
/// the event again (so it equals the live view); one by other code applies it. A second
/// skip of the same event (a rebuild by newer code) moves the record to that version.
async fn record_skip(
    tx: &mut Tx,
    name: &str,
    version: i64,
    event_id: &str,
    position: i64,
    error: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO projection_skips (name, event_id, position, error, skipped_at, version)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (name, event_id) DO UPDATE
            SET version = excluded.version, error = excluded.error,
                skipped_at = excluded.skipped_at",
        &[
            Param::Text(name.to_owned()),
            Param::Text(event_id.to_owned()),
            Param::Int(position),
            Param::Text(error.to_owned()),
            Param::Text(now()),
            Param::Int(version),
        ],
    )
    .await?;
    Ok(())
}
