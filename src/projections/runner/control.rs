//! What an operator drives: requesting a rebuild, retrying a failed or stopped
//! projection, stopping a running one, and skipping the event a failed one stopped on
//! (the skip is recorded). Each is one transaction under the projection's row lock.
//!
//! It never applies events or builds tables' contents; the live group and the
//! rebuilder do that once the row says so.

use super::row::lock_row;
use super::{now, Projections, RunnerError};
use crate::store::views::{physical, Param, Tx};

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
                    rebuild_cursor_position = 0, updated_at = $4
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

    /// Puts a failed or stopped projection back to work, from where it stopped.
    pub async fn retry(&self, name: &str) -> Result<(), RunnerError> {
        self.find(name)?;
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

    /// Skips the event a failed projection stopped on, records the skip, and resumes.
    pub async fn skip(&self, name: &str) -> Result<(), RunnerError> {
        self.find(name)?;
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
        tx.execute(
            "INSERT INTO projection_skips (name, event_id, position, error, skipped_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[
                Param::Text(name.to_owned()),
                Param::Text(event_id),
                Param::Int(cursor.position),
                Param::Text(row.last_error.unwrap_or_default()),
                Param::Text(now()),
            ],
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
