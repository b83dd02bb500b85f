//! The audit trail on SQLite: a batch of records is written in one transaction, all or none.

use super::SqliteVault;
use crate::vault::audit::{audit_store, EVENT_COLUMNS};
use crate::vault::sql::{sqlite, statement};
use crate::vault::{db_error, AuditEvent, VaultError};

audit_store!(SqliteVault, sqlite, {
    #[tracing::instrument(skip_all, fields(records = events.len()))]
    async fn record_audits(&self, events: &[AuditEvent]) -> Result<(), VaultError> {
        let failed = || db_error("write audit records");
        let insert = statement!(
            sqlite,
            format!(
                "insert into token_audit ({EVENT_COLUMNS}) values ($1, $2, $3, $4, $5, $6, $7, $8)"
            )
        );
        let mut tx = self.pool().begin().await.map_err(failed())?;
        for event in events {
            sqlx::query(insert)
                .bind(event.at)
                .bind(&event.actor)
                .bind(event.token_id)
                .bind(&event.user_id)
                .bind(&event.task_id)
                .bind(event.action.as_str())
                .bind(event.outcome())
                .bind(&event.reason)
                .execute(&mut *tx)
                .await
                .map_err(failed())?;
        }
        tx.commit().await.map_err(failed())?;
        Ok(())
    }
});
