//! The consent statements both backends accept, written once: the conditions a claim and an
//! activation test, the activation's `SET` list, and [`consent_store!`], which implements the
//! shared half of [`super::ConsentStore`] for a backend.

use uuid::Uuid;

use crate::vault::VaultError;

/// The columns a claim returns, in [`ClaimRecord`]'s order.
pub(in crate::vault) const CLAIM_COLUMNS: &str =
    "id, user_id, task_id, status, pkce_verifier, nonce_hash, redirect_uri";

/// The condition a row must meet for its state to be claimed.
macro_rules! claimable {
    () => {
        "state_hash = $1 and status <> 'revoked' and state_expires_at > $2"
    };
}

/// The activation's `SET` list (the fence moves on, so a refresh in flight loses), and the
/// status the row must still have: `$2` is the status it had when claimed.
macro_rules! activation {
    () => {
        "status = 'active', status_reason = null, \
         encrypted_token = $3, iv = $4, key_id = $5, \
         access_token = null, access_token_expires_at = null, access_token_type = null, \
         access_token_scope = null, refresh_fence = t.refresh_fence + 1, \
         refresh_lease_until = null, refresh_expires_at = $6, last_refresh_at = $7, \
         consecutive_failures = 0, last_error = null, next_refresh_at = null, \
         expiring_notified_at = null, expires_at = $8, updated_at = $7, \
         granted_scope = coalesce($9, t.granted_scope), \
         pkce_verifier = case when t.status = 'pending' then null else t.pkce_verifier end, \
         state_hash = case when t.status = 'pending' then null else t.state_hash end"
    };
}

macro_rules! still_claimable {
    () => {
        "(($2 = 'pending' and t.status = 'pending') \
          or ($2 <> 'pending' and t.status in ('active', 'failed', 'expired')))"
    };
}

pub(in crate::vault) use {activation, claimable, still_claimable};

/// Binds an activation's values as `$1`..`$9` (see [`activation!`]).
macro_rules! bind_activation {
    ($query:expr, $consent:expr, $activation:expr) => {
        $query
            .bind($consent.id)
            .bind($consent.status.as_str())
            .bind(&$activation.sealed.ciphertext)
            .bind(&$activation.sealed.nonce)
            .bind(&$activation.sealed.key_id)
            .bind($activation.refresh_expires_at)
            .bind($activation.now)
            .bind($activation.expires_at)
            .bind(&$activation.granted_scope)
    };
}

pub(in crate::vault) use bind_activation;

/// `ConsentStore` for `$vault`: the statements both backends accept, in `$dialect`, and the
/// backend's own `claim_consent` and `activate` given as `{ … }`.
macro_rules! consent_store {
    ($vault:ty, $dialect:path, { $($own:tt)* }) => {
        #[::async_trait::async_trait]
        impl $crate::vault::ConsentStore for $vault {
            $($own)*

            #[tracing::instrument(skip_all, fields(id = %consent.id))]
            async fn create_pending(
                &self,
                consent: &$crate::vault::NewConsent,
                max_pending: u32,
            ) -> Result<bool, $crate::vault::VaultError> {
                let sql = $crate::vault::sql::statement!($dialect,
                    "insert into token_vault (id, user_id, task_id, status, state_hash, \
                     state_expires_at, pkce_verifier, nonce_hash, redirect_uri, expires_at, \
                     metadata, created_at, updated_at, delegates) \
                     select $1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, $10, $11, $11, $12 \
                     where (select count(*) from token_vault where user_id = $2 \
                            and status = 'pending' and state_expires_at > $11) < $13");
                let result = ::sqlx::query(sql)
                    .bind(consent.id)
                    .bind(&consent.user_id)
                    .bind(&consent.task_id)
                    .bind(&consent.state_hash)
                    .bind(consent.state_expires_at)
                    .bind(&consent.pkce_verifier)
                    .bind(&consent.nonce_hash)
                    .bind(&consent.redirect_uri)
                    .bind(consent.expires_at)
                    .bind(::sqlx::types::Json(&consent.metadata))
                    .bind(consent.created_at)
                    .bind((!consent.delegates.is_empty()).then(|| consent.delegates.join(",")))
                    .bind(i64::from(max_pending))
                    .execute(self.pool())
                    .await
                    .map_err($crate::vault::db_error("store a pending consent"))?;
                Ok(result.rows_affected() == 1)
            }

            #[tracing::instrument(skip_all, fields(id = %consent.id))]
            async fn start_reconsent(
                &self,
                consent: &$crate::vault::NewReconsent,
            ) -> Result<bool, $crate::vault::VaultError> {
                let sql = $crate::vault::sql::statement!($dialect,
                    "update token_vault set state_hash = $3, state_expires_at = $4, \
                     pkce_verifier = $5, nonce_hash = $6, redirect_uri = $7, updated_at = $8 \
                     where id = $1 and user_id = $2 and status in ('active', 'failed', 'expired')");
                let result = ::sqlx::query(sql)
                    .bind(consent.id)
                    .bind(&consent.user_id)
                    .bind(&consent.state_hash)
                    .bind(consent.state_expires_at)
                    .bind(&consent.pkce_verifier)
                    .bind(&consent.nonce_hash)
                    .bind(&consent.redirect_uri)
                    .bind(consent.now)
                    .execute(self.pool())
                    .await
                    .map_err($crate::vault::db_error("store a re-consent"))?;
                Ok(result.rows_affected() == 1)
            }

            #[tracing::instrument(skip_all, fields(%id, reason))]
            async fn fail_pending(
                &self,
                id: ::uuid::Uuid,
                reason: &$crate::vault::StatusReason,
                now: ::chrono::DateTime<::chrono::Utc>,
            ) -> Result<Option<$crate::vault::Transition>, $crate::vault::VaultError> {
                let sql = $crate::vault::sql::statement!($dialect,
                    "update token_vault set status = 'failed', status_reason = $2, \
                     state_hash = null, pkce_verifier = null, nonce_hash = null, updated_at = $3 \
                     where id = $1 and status = 'pending'");
                let result = ::sqlx::query(sql)
                    .bind(id)
                    .bind(reason.as_str())
                    .bind(now)
                    .execute(self.pool())
                    .await
                    .map_err($crate::vault::db_error("mark a consent failed"))?;
                Ok($crate::vault::Transition::made(
                    result.rows_affected(),
                    $crate::vault::Status::Pending,
                    $crate::vault::Status::Failed,
                    Some(reason),
                ))
            }
        }
    };
}

pub(in crate::vault) use consent_store;

/// A claimed consent as the claim statement returns it.
#[derive(sqlx::FromRow)]
pub(in crate::vault) struct ClaimRecord {
    id: Uuid,
    user_id: String,
    task_id: String,
    status: String,
    pkce_verifier: Option<Vec<u8>>,
    nonce_hash: Option<Vec<u8>>,
    redirect_uri: Option<String>,
}

impl TryFrom<ClaimRecord> for super::ClaimedConsent {
    type Error = VaultError;

    fn try_from(r: ClaimRecord) -> Result<Self, VaultError> {
        Ok(super::ClaimedConsent {
            row: super::ClaimedRow {
                status: r.status.parse().map_err(|()| VaultError::Corrupt {
                    id: r.id,
                    problem: "unknown status",
                })?,
                id: r.id,
                user_id: r.user_id,
                task_id: r.task_id,
                redirect_uri: r.redirect_uri,
            },
            pkce_verifier: r.pkce_verifier,
            nonce_hash: r.nonce_hash,
        })
    }
}
