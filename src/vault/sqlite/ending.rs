//! How rows end, on SQLite: a revocation reads the row and ends it in one `BEGIN IMMEDIATE`
//! transaction; bulk jobs are one `UPDATE`/`DELETE … WHERE id IN (batch)` each, which SQLite
//! runs as one step.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::SqliteVault;
use crate::vault::ending::{ending_store, expiring, expiry, finished, stale};
use crate::vault::model::{row_columns, RowRecord};
use crate::vault::sql::{sqlite, statement, wipe_secrets};
use crate::vault::{db_error, Ended, Status, StatusReason, VaultError, VaultRow};

/// What bulk changes return (SQLite's `RETURNING` names the table's own columns).
const CHANGED: &str = "returning id, user_id, task_id, status, status_reason";

ending_store!(
    SqliteVault,
    sqlite,
    expire_stale: format!(
                "update token_vault as t set {} where id in \
             (select id from token_vault where {} order by id limit $2) {CHANGED}",
                expiry!(),
                stale!()
            ),
    purge_finished: format!(
                "delete from token_vault where id in \
             (select id from token_vault where {} order by id limit $2) {CHANGED}",
                finished!()
            ),
    mark_expiring: concat!(
                "update token_vault set expiring_notified_at = $2 where id in \
             (select id from token_vault where ",
                expiring!(),
                " order by expires_at limit $3) \
             returning id, user_id, task_id, expires_at"
            ),
    {
    #[tracing::instrument(skip_all, fields(%id, reason))]
    async fn end_grant(
        &self,
        id: Uuid,
        owner: Option<&str>,
        status: Status,
        reason: &StatusReason,
        now: DateTime<Utc>,
    ) -> Result<Ended, VaultError> {
        // The write lock is taken before the read, so the row read is the row ended: nothing
        // can refresh in between.
        let mut tx = self.write_lock("begin ending a grant").await?;
        let select = statement!(
            sqlite,
            format!(
                "select {} from token_vault where id = $1 and ($2 is null or user_id = $2)",
                row_columns(None)
            )
        );
        let record: Option<RowRecord> = sqlx::query_as(select)
            .bind(id)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error("read a grant to end"))?;
        let Some(record) = record else {
            return Ok(Ended::Missing);
        };
        let before = VaultRow::try_from(record)?;
        if before.status == status {
            return Ok(Ended::Unchanged(before));
        }
        let end = statement!(
            sqlite,
            concat!(
                "update token_vault set status = $2, status_reason = $3, updated_at = $4, \
             refresh_fence = refresh_fence + 1, refresh_lease_until = null, ",
                wipe_secrets!(),
                " where id = $1"
            )
        );
        sqlx::query(end)
            .bind(id)
            .bind(status.as_str())
            .bind(reason.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_error("end a grant"))?;
        tx.commit()
            .await
            .map_err(db_error("commit ending a grant"))?;
        Ok(Ended::Ended(before))
    }
    }
);
