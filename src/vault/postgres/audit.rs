//! The audit trail on PostgreSQL: a batch of records is one `INSERT … SELECT FROM unnest`
//! statement, so it is written all or none without a transaction.

use super::PgVault;
use crate::vault::audit::{audit_store, EVENT_COLUMNS};
use crate::vault::sql::{postgres, statement};
use crate::vault::{db_error, AuditEvent, VaultError};

audit_store!(PgVault, postgres, {
    #[tracing::instrument(skip_all, fields(records = events.len()))]
    async fn record_audits(&self, events: &[AuditEvent]) -> Result<(), VaultError> {
        let text = |f: fn(&AuditEvent) -> Option<String>| events.iter().map(f).collect::<Vec<_>>();
        sqlx::query(statement!(
            postgres,
            format!(
                "insert into token_audit ({EVENT_COLUMNS}) \
             select * from unnest($1::timestamptz[], $2::text[], $3::uuid[], $4::text[], \
                                  $5::text[], $6::text[], $7::text[], $8::text[])"
            )
        ))
        .bind(events.iter().map(|e| e.at).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.actor.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.token_id).collect::<Vec<_>>())
        .bind(text(|e| e.user_id.clone()))
        .bind(text(|e| e.task_id.clone()))
        .bind(events.iter().map(|e| e.action.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.outcome()).collect::<Vec<_>>())
        .bind(text(|e| e.reason.clone()))
        .execute(self.pool())
        .await
        .map_err(db_error("write audit records"))?;
        Ok(())
    }
});
