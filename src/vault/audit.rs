//! The audit trail as stored: records written all or none, read back per row or per user,
//! purged when old. [`AuditStore`] is the role; the statement both backends accept is
//! written once in [`audit_store!`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::VaultError;

/// What happened, for `token_audit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditAction {
    ConsentRequested,
    ReconsentRequested,
    ConsentCompleted,
    ConsentFailed,
    TokenIssued,
    TokenRefreshFailed,
    TokenRevoked,
    TokenExpired,
    TokenResealed,
    TokenPurged,
    TaskKeyCreated,
    TaskKeyRevoked,
    TaskKeyUsed,
    /// A delegated service account was served a row's token (any path: memory, the row, a
    /// refresh); the actor names the client, the reason the token's `sub`.
    DelegateUsed,
    /// The owner bound the row to a workload identity (reason `binding:<id>`).
    WorkloadBound,
    /// The owner revoked a binding.
    WorkloadUnbound,
    /// A workload presented its platform token for the row (reason: `from:<address>`, or why
    /// it was refused).
    WorkloadUsed,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::ConsentRequested => "consent_requested",
            AuditAction::ReconsentRequested => "reconsent_requested",
            AuditAction::ConsentCompleted => "consent_completed",
            AuditAction::ConsentFailed => "consent_failed",
            AuditAction::TokenIssued => "token_issued",
            AuditAction::TokenRefreshFailed => "token_refresh_failed",
            AuditAction::TokenRevoked => "token_revoked",
            AuditAction::TokenExpired => "token_expired",
            AuditAction::TokenResealed => "token_resealed",
            AuditAction::TokenPurged => "token_purged",
            AuditAction::TaskKeyCreated => "task_key_created",
            AuditAction::TaskKeyRevoked => "task_key_revoked",
            AuditAction::TaskKeyUsed => "task_key_used",
            AuditAction::DelegateUsed => "delegate_used",
            AuditAction::WorkloadBound => "workload_bound",
            AuditAction::WorkloadUnbound => "workload_unbound",
            AuditAction::WorkloadUsed => "workload_used",
        }
    }
}

/// One audit record. `reason` is a short code, never token material.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub token_id: Option<Uuid>,
    pub user_id: Option<String>,
    pub task_id: Option<String>,
    pub action: AuditAction,
    pub success: bool,
    pub reason: Option<String>,
}

impl AuditEvent {
    pub fn outcome(&self) -> &'static str {
        if self.success {
            "success"
        } else {
            "failure"
        }
    }
}

/// An audit record as stored.
#[derive(Debug, sqlx::FromRow, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub token_id: Option<Uuid>,
    pub user_id: Option<String>,
    pub task_id: Option<String>,
    pub action: String,
    pub outcome: String,
    pub reason: Option<String>,
}

/// Whose audit trail to read.
#[derive(Debug)]
pub enum AuditQuery {
    Token(Uuid),
    User(String),
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Writes audit records, all or none (one statement).
    async fn record_audits(&self, events: &[AuditEvent]) -> Result<(), VaultError>;

    /// Deletes up to `batch` audit records older than `cutoff`, oldest first; how many.
    async fn purge_audit(&self, cutoff: DateTime<Utc>, batch: u32) -> Result<u64, VaultError>;

    /// Audit records, oldest first, at most `limit`.
    async fn audit_trail(
        &self,
        query: &AuditQuery,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, VaultError>;
}

/// The columns of `token_audit` an [`AuditEvent`] fills, in the order both backends bind.
pub(super) const EVENT_COLUMNS: &str =
    "at, actor, token_id, user_id, task_id, action, outcome, reason";

/// `AuditStore` for `$vault`: the statement both backends accept, in `$dialect`, and the
/// backend's own statements given as `{ … }`.
macro_rules! audit_store {
    ($vault:ty, $dialect:path, { $($own:tt)* }) => {
        #[::async_trait::async_trait]
        impl $crate::vault::AuditStore for $vault {
            $($own)*

            #[tracing::instrument(skip_all)]
            async fn purge_audit(
                &self,
                cutoff: ::chrono::DateTime<::chrono::Utc>,
                batch: u32,
            ) -> Result<u64, $crate::vault::VaultError> {
                let sql = $crate::vault::sql::statement!($dialect,
                    "delete from token_audit where id in \
                     (select id from token_audit where at < $1 order by id limit $2)");
                let result = ::sqlx::query(sql)
                    .bind(cutoff)
                    .bind(i64::from(batch))
                    .execute(self.pool())
                    .await
                    .map_err($crate::vault::db_error("purge old audit records"))?;
                Ok(result.rows_affected())
            }

            async fn audit_trail(
                &self,
                query: &$crate::vault::AuditQuery,
                limit: u32,
            ) -> Result<Vec<$crate::vault::AuditRecord>, $crate::vault::VaultError> {
                let select = match query {
                    $crate::vault::AuditQuery::Token(id) => ::sqlx::query_as(
                        $crate::vault::sql::statement!($dialect,
                            "select id, at, actor, token_id, user_id, task_id, action, outcome, \
                             reason from token_audit where token_id = $1 order by id limit $2"),
                    )
                    .bind(*id),
                    $crate::vault::AuditQuery::User(user) => ::sqlx::query_as(
                        $crate::vault::sql::statement!($dialect,
                            "select id, at, actor, token_id, user_id, task_id, action, outcome, \
                             reason from token_audit where user_id = $1 order by id limit $2"),
                    )
                    .bind(user.clone()),
                };
                select
                    .bind(i64::from(limit))
                    .fetch_all(self.pool())
                    .await
                    .map_err($crate::vault::db_error("read the audit trail"))
            }
        }
    };
}

pub(super) use audit_store;
