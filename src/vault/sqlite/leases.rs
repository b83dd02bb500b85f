//! Refresh leases on SQLite: one process, so the lease is timed by its clock; a write-back and
//! its audit record are written in one transaction.

use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use super::SqliteVault;
use crate::vault::leases::{bind_write_back, claim_answer, lease_store, write_back};
use crate::vault::model::{row_columns, RowRecord};
use crate::vault::sql::{sqlite, statement};
use crate::vault::{db_error, AuditAction, Claim, Lease, RefreshWrite, Unfinished, VaultError};

lease_store!(SqliteVault, sqlite, {
    #[tracing::instrument(skip_all, fields(%id))]
    async fn claim_refresh(&self, id: Uuid, lease: Duration) -> Result<Claim, VaultError> {
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        let sql = statement!(
            sqlite,
            format!(
            "update token_vault set refresh_lease_until = $3, refresh_fence = refresh_fence + 1 \
             where id = $1 and status = 'active' \
               and (refresh_lease_until is null or refresh_lease_until <= $2) \
             returning {}",
            row_columns(None)
        )
        );
        let claimed: Option<RowRecord> = sqlx::query_as(sql)
            .bind(id)
            .bind(now)
            .bind(until)
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
        match self.write_back(&lease, write).await {
            Ok(written) => Ok(written),
            Err(error) => Err(Unfinished { lease, error }),
        }
    }
});

impl SqliteVault {
    /// The write-back and its `token_issued` record, in one transaction.
    async fn write_back(
        &self,
        lease: &Lease,
        write: &RefreshWrite<'_>,
    ) -> Result<bool, VaultError> {
        let failed = || db_error("write a refresh back");
        let mut tx = self.pool().begin().await.map_err(failed())?;
        let sql = statement!(sqlite, concat!("update token_vault set ", write_back!()));
        let result = bind_write_back!(sqlx::query(sql), lease, write)
            .execute(&mut *tx)
            .await
            .map_err(failed())?;
        if result.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(
            "insert into token_audit \
             (at, actor, token_id, user_id, task_id, action, outcome, reason) \
             select ?2, ?3, id, user_id, task_id, ?4, 'success', ?5 from token_vault where id = ?1",
        )
        .bind(lease.id())
        .bind(write.now)
        .bind(write.actor)
        .bind(AuditAction::TokenIssued.as_str())
        .bind(write.audit_reason)
        .execute(&mut *tx)
        .await
        .map_err(failed())?;
        tx.commit().await.map_err(failed())?;
        Ok(true)
    }
}
