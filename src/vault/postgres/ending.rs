//! How rows end, on PostgreSQL: a revocation reads the row as it was and ends it in one
//! statement (a CTE under the row lock); bulk jobs take their rows `FOR UPDATE SKIP LOCKED`,
//! leaving any row a request holds right now for their next round.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::PgVault;
use crate::vault::ending::{ending_store, expiring, expiry, finished, stale, CHANGE_COLUMNS};
use crate::vault::model::{row_columns, RowRecord};
use crate::vault::sql::{postgres, statement, wipe_secrets};
use crate::vault::{db_error, Ended, RowReads, Status, StatusReason, VaultError};

ending_store!(
    PgVault,
    postgres,
    expire_stale: format!(
            "with stale as (select id from token_vault where {} limit $2 for update skip locked) \
             update token_vault t set {} from stale where t.id = stale.id \
             returning {CHANGE_COLUMNS}",
            stale!(),
            expiry!()
        ),
    purge_finished: format!(
            "with old as (select id from token_vault where {} limit $2 for update skip locked) \
             delete from token_vault t using old where t.id = old.id returning {CHANGE_COLUMNS}",
            finished!()
        ),
    mark_expiring: concat!(
                "with due as (select id from token_vault where ",
                expiring!(),
                " order by expires_at limit $3 for update skip locked) \
             update token_vault t set expiring_notified_at = $2 from due where t.id = due.id \
             returning t.id, t.user_id, t.task_id, t.expires_at"
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
        // The CTE reads the row as it was (under its row lock); the update ends it. Both in
        // one statement, so nothing can refresh in between.
        let sql = statement!(
            postgres,
            format!(
                "with old as ( \
               select {} from token_vault \
               where id = $1 and ($2::text is null or user_id = $2) for update) \
             update token_vault t set status = $3, status_reason = $4, updated_at = $5, \
               refresh_fence = t.refresh_fence + 1, refresh_lease_until = null, {} \
             from old where t.id = old.id and t.status <> $3 \
             returning {}",
                row_columns(None),
                wipe_secrets!(),
                row_columns(Some("old"))
            )
        );
        let record: Option<RowRecord> = sqlx::query_as(sql)
            .bind(id)
            .bind(owner)
            .bind(status.as_str())
            .bind(reason.as_str())
            .bind(now)
            .fetch_optional(self.pool())
            .await
            .map_err(db_error("end a grant"))?;
        if let Some(record) = record {
            return Ok(Ended::Ended(record.try_into()?));
        }
        Ok(match self.find(id).await? {
            Some(row) if owner.is_none_or(|o| o == row.user_id) => Ended::Unchanged(row),
            _ => Ended::Missing,
        })
    }
    }
);
