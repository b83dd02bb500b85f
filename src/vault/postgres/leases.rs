//! Refresh leases on PostgreSQL: the lease is timed by the database's clock (`now()`), so
//! instances need not agree on the time, and a write-back inserts its audit record in the same
//! statement as the row (a data-modifying CTE): a refresh is never stored without it.

use std::time::Duration;

use uuid::Uuid;

use super::PgVault;
use crate::vault::leases::{bind_write_back, claim_answer, lease_store, write_back};
use crate::vault::model::{row_columns, RowRecord};
use crate::vault::sql::{postgres, statement};
use crate::vault::{db_error, AuditAction, Claim, Lease, RefreshWrite, Unfinished, VaultError};

lease_store!(PgVault, postgres, {
    #[tracing::instrument(skip_all, fields(%id))]
    async fn claim_refresh(&self, id: Uuid, lease: Duration) -> Result<Claim, VaultError> {
        let sql = statement!(
            postgres,
            format!(
                "update token_vault \
             set refresh_lease_until = now() + make_interval(secs => $2), \
                 refresh_fence = refresh_fence + 1 \
             where id = $1 and status = 'active' \
               and (refresh_lease_until is null or refresh_lease_until <= now()) \
             returning {}",
                row_columns(None)
            )
        );
        let claimed: Option<RowRecord> = sqlx::query_as(sql)
            .bind(id)
            .bind(lease.as_secs_f64())
            .fetch_optional(self.pool())
            .await
            .map_err(db_error("claim a row for refresh"))?;
        claim_answer(self, id, claimed).await
    }

    #[tracing::instrument(skip_all, fields(id = %lease.id()))]
    async fn finish_refresh(
        &self,
        lease: Lease,
        write: &RefreshWrite<'_>,
    ) -> Result<bool, Unfinished> {
        let sql = statement!(postgres, concat!(
            "with done as (update token_vault set ", write_back!(),
            " returning id, user_id, task_id) \
             insert into token_audit (at, actor, token_id, user_id, task_id, action, outcome, reason) \
             select $11, $13, id, user_id, task_id, $15, 'success', $14 from done"));
        let result = bind_write_back!(sqlx::query(sql), lease, write)
            .bind(write.actor)
            .bind(write.audit_reason)
            .bind(AuditAction::TokenIssued.as_str())
            .execute(self.pool())
            .await;
        match result {
            Ok(done) => Ok(done.rows_affected() == 1),
            Err(e) => Err(Unfinished {
                lease,
                error: db_error("write a refresh back")(e),
            }),
        }
    }
});
