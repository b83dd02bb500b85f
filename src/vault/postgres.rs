//! The production vault: PostgreSQL, safe for several broker instances on one database.
//!
//! Atomicity rule: every change of a row is one statement that checks the state it expects
//! (`WHERE status = …`, the refresh fence, the lease) and takes the row lock, so two instances
//! racing for one row serialise on that lock and the loser changes nothing. A change that comes
//! with its audit record writes both in that one statement (a data-modifying CTE).

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres};
use uuid::Uuid;

use super::model::{row_columns, ChangeRecord, ClaimRecord, RowRecord, SealedRecord};
use super::{
    activated, db_error, made, Activation, AuditAction, AuditEvent, AuditQuery, AuditRecord,
    ChangeSink, Claim, ClaimedConsent, Ended, ExpiringRow, ListFilter, NewConsent, NewReconsent,
    RefreshFailure, RefreshWrite, Reseal, ResetSink, SealedBlob, SealedRow, Status, StatusChange,
    StatusReason, TokenVault, Transition, VaultError, VaultRow,
};

/// Every secret a row can hold, set to null: a row that ends keeps none of them.
const WIPE_SECRETS: &str = "encrypted_token = null, iv = null, key_id = null, \
    access_token = null, access_token_expires_at = null, access_token_type = null, \
    access_token_scope = null, state_hash = null, pkce_verifier = null, nonce_hash = null";

/// How long a request may wait for a pooled connection before it is answered 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// The production vault: PostgreSQL, safe for several broker instances on one database.
#[derive(Clone)]
pub struct PgVault {
    pool: PgPool,
}

impl PgVault {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// A pool whose every wait is bounded: acquiring a connection (3 s), a statement (10 s),
    /// waiting for a row lock (3 s), and a transaction left idle (30 s). A slow or stuck
    /// database then answers 503 instead of piling up requests.
    pub async fn connect(url: &str, pool_size: u32) -> Result<Self, sqlx::Error> {
        let options = PgConnectOptions::from_str(url)?.options([
            ("statement_timeout", "10s"),
            ("lock_timeout", "3s"),
            ("idle_in_transaction_session_timeout", "30s"),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        Ok(Self::new(pool))
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
    }

    async fn find_owned(&self, id: Uuid, owner: Option<&str>) -> Result<Ended, VaultError> {
        match self.find(id).await? {
            Some(row) if owner.is_none_or(|o| o == row.user_id) => Ok(Ended::Unchanged(row)),
            _ => Ok(Ended::Missing),
        }
    }
}

#[async_trait]
impl TokenVault for PgVault {
    #[tracing::instrument(skip_all, fields(id = %consent.id))]
    async fn create_pending(
        &self,
        consent: &NewConsent,
        max_pending: u32,
    ) -> Result<bool, VaultError> {
        let result = sqlx::query(
            "insert into token_vault (id, user_id, task_id, status, state_hash, state_expires_at, \
             pkce_verifier, nonce_hash, redirect_uri, expires_at, metadata, created_at, updated_at, \
             delegates) \
             select $1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, $10, $11, $11, $12 \
             where (select count(*) from token_vault where user_id = $2 and status = 'pending' \
                    and state_expires_at > $11) < $13",
        )
        .bind(consent.id)
        .bind(&consent.user_id)
        .bind(&consent.task_id)
        .bind(&consent.state_hash)
        .bind(consent.state_expires_at)
        .bind(&consent.pkce_verifier)
        .bind(&consent.nonce_hash)
        .bind(&consent.redirect_uri)
        .bind(consent.expires_at)
        .bind(&consent.metadata)
        .bind(consent.created_at)
        .bind((!consent.delegates.is_empty()).then(|| consent.delegates.join(",")))
        .bind(i64::from(max_pending))
        .execute(&self.pool)
        .await
        .map_err(db_error("store a pending consent"))?;
        Ok(result.rows_affected() == 1)
    }

    #[tracing::instrument(skip_all, fields(id = %consent.id))]
    async fn start_reconsent(&self, consent: &NewReconsent) -> Result<bool, VaultError> {
        let result = sqlx::query(
            "update token_vault set state_hash = $3, state_expires_at = $4, pkce_verifier = $5, \
             nonce_hash = $6, redirect_uri = $7, updated_at = $8 \
             where id = $1 and user_id = $2 and status in ('active', 'failed', 'expired')",
        )
        .bind(consent.id)
        .bind(&consent.user_id)
        .bind(&consent.state_hash)
        .bind(consent.state_expires_at)
        .bind(&consent.pkce_verifier)
        .bind(&consent.nonce_hash)
        .bind(&consent.redirect_uri)
        .bind(consent.now)
        .execute(&self.pool)
        .await
        .map_err(db_error("store a re-consent"))?;
        Ok(result.rows_affected() == 1)
    }

    #[tracing::instrument(skip_all)]
    async fn claim_consent(
        &self,
        state_hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<ClaimedConsent>, VaultError> {
        // One statement: the row lock taken by the CTE makes a concurrent replay wait, and by
        // then the digest is gone, so exactly one request wins.
        let claimed: Option<ClaimRecord> = sqlx::query_as(
            "with claimed as ( \
                   select id, user_id, task_id, status, pkce_verifier, nonce_hash, redirect_uri \
                   from token_vault \
                   where state_hash = $1 and status <> 'revoked' and state_expires_at > $2 \
                   for update) \
                 update token_vault t \
                 set state_hash = null, pkce_verifier = null, nonce_hash = null, updated_at = $2 \
                 from claimed where t.id = claimed.id \
                 returning claimed.id, claimed.user_id, claimed.task_id, claimed.status, \
                           claimed.pkce_verifier, claimed.nonce_hash, claimed.redirect_uri",
        )
        .bind(state_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error("claim a consent"))?;
        claimed.map(ClaimedConsent::try_from).transpose()
    }

    #[tracing::instrument(skip_all, fields(%id))]
    async fn activate(
        &self,
        id: Uuid,
        from: Status,
        activation: &Activation<'_>,
    ) -> Result<Option<Transition>, VaultError> {
        // The CTE reads the status being replaced under the row lock the update then uses.
        let replaced: Option<(String,)> = sqlx::query_as(
            "with old as (select id, status from token_vault where id = $1 for update) \
             update token_vault t set status = 'active', status_reason = null, \
             encrypted_token = $3, iv = $4, key_id = $5, \
             access_token = null, access_token_expires_at = null, access_token_type = null, \
             access_token_scope = null, refresh_fence = t.refresh_fence + 1, \
             refresh_lease_until = null, refresh_expires_at = $6, last_refresh_at = $7, \
             consecutive_failures = 0, last_error = null, next_refresh_at = null, \
             expiring_notified_at = null, expires_at = $8, updated_at = $7, \
             granted_scope = coalesce($9, t.granted_scope), \
             pkce_verifier = case when t.status = 'pending' then null else t.pkce_verifier end, \
             state_hash = case when t.status = 'pending' then null else t.state_hash end \
             from old where t.id = old.id and (($2 = 'pending' and t.status = 'pending') \
                or ($2 <> 'pending' and t.status in ('active', 'failed', 'expired'))) \
             returning old.status",
        )
        .bind(id)
        .bind(from.as_str())
        .bind(&activation.sealed.ciphertext)
        .bind(&activation.sealed.nonce)
        .bind(&activation.sealed.key_id)
        .bind(activation.refresh_expires_at)
        .bind(activation.now)
        .bind(activation.expires_at)
        .bind(&activation.granted_scope)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error("activate a consent"))?;
        activated(id, replaced.map(|(status,)| status))
    }

    #[tracing::instrument(skip_all, fields(%id, reason))]
    async fn fail_pending(
        &self,
        id: Uuid,
        reason: &StatusReason,
        now: DateTime<Utc>,
    ) -> Result<Option<Transition>, VaultError> {
        let result = sqlx::query(
            "update token_vault set status = 'failed', status_reason = $2, state_hash = null, \
             pkce_verifier = null, nonce_hash = null, updated_at = $3 \
             where id = $1 and status = 'pending'",
        )
        .bind(id)
        .bind(reason.as_str())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_error("mark a consent failed"))?;
        Ok(made(
            result.rows_affected(),
            Status::Pending,
            Status::Failed,
            Some(reason),
        ))
    }

    #[tracing::instrument(skip_all, fields(%id))]
    async fn find(&self, id: Uuid) -> Result<Option<VaultRow>, VaultError> {
        let record: Option<RowRecord> = sqlx::query_as(&format!(
            "select {} from token_vault where id = $1",
            row_columns(None)
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error("read a vault row"))?;
        record.map(VaultRow::try_from).transpose()
    }

    #[tracing::instrument(skip_all, fields(%id))]
    async fn claim_refresh(&self, id: Uuid, lease: Duration) -> Result<Claim, VaultError> {
        let record: Option<RowRecord> = sqlx::query_as(&format!(
            "update token_vault \
             set refresh_lease_until = now() + make_interval(secs => $2), \
                 refresh_fence = refresh_fence + 1 \
             where id = $1 and status = 'active' \
               and (refresh_lease_until is null or refresh_lease_until <= now()) \
             returning {}",
            row_columns(None)
        ))
        .bind(id)
        .bind(lease.as_secs_f64())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error("claim a row for refresh"))?;
        if let Some(record) = record {
            return Ok(Claim::Claimed(record.try_into()?));
        }
        Ok(match self.find(id).await? {
            Some(row) => Claim::NotClaimed(row),
            None => Claim::Missing,
        })
    }

    #[tracing::instrument(skip_all, fields(%id))]
    async fn finish_refresh(
        &self,
        id: Uuid,
        fence: i64,
        write: &RefreshWrite<'_>,
    ) -> Result<bool, VaultError> {
        let result = sqlx::query(
            "with done as (update token_vault set \
             encrypted_token = coalesce($3, encrypted_token), iv = coalesce($4, iv), \
             key_id = coalesce($5, key_id), \
             access_token = case when $12 then $6 else access_token end, \
             access_token_expires_at = case when $12 then $7 else access_token_expires_at end, \
             access_token_type = case when $12 then $8 else access_token_type end, \
             access_token_scope = case when $12 then $9 else access_token_scope end, \
             refresh_expires_at = coalesce($10, refresh_expires_at), \
             last_refresh_at = $11, last_used_at = $11, consecutive_failures = 0, \
             last_error = null, next_refresh_at = null, refresh_lease_until = null, \
             updated_at = case when $3 is null then updated_at else $11 end \
             where id = $1 and refresh_fence = $2 and status = 'active' \
             returning id, user_id, task_id) \
             insert into token_audit (at, actor, token_id, user_id, task_id, action, outcome, reason) \
             select $11, $13, id, user_id, task_id, $15, 'success', $14 from done",
        )
        .bind(id)
        .bind(fence)
        .bind(write.rotated.map(|s| &s.ciphertext))
        .bind(write.rotated.map(|s| &s.nonce))
        .bind(write.rotated.map(|s| &s.key_id))
        .bind(write.minted.map(|m| &m.sealed))
        .bind(write.minted.map(|m| m.expires_at))
        .bind(write.minted.map(|m| &m.token_type))
        .bind(write.minted.and_then(|m| m.scope.as_ref()))
        .bind(write.refresh_expires_at)
        .bind(write.now)
        .bind(write.minted.is_some())
        .bind(write.actor)
        .bind(write.audit_reason)
        .bind(AuditAction::TokenIssued.as_str())
        .execute(&self.pool)
        .await
        .map_err(db_error("write a refresh back"))?;
        Ok(result.rows_affected() == 1)
    }

    #[tracing::instrument(skip_all, fields(%id, reason))]
    async fn fail_refresh(
        &self,
        id: Uuid,
        fence: i64,
        reason: &StatusReason,
        now: DateTime<Utc>,
    ) -> Result<Option<Transition>, VaultError> {
        let result = sqlx::query(&format!(
            "update token_vault set status = 'failed', status_reason = $3, updated_at = $4, \
             last_error = $3, consecutive_failures = consecutive_failures + 1, \
             refresh_lease_until = null, {WIPE_SECRETS} \
             where id = $1 and refresh_fence = $2 and status = 'active'"
        ))
        .bind(id)
        .bind(fence)
        .bind(reason.as_str())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_error("mark a grant failed"))?;
        Ok(made(
            result.rows_affected(),
            Status::Active,
            Status::Failed,
            Some(reason),
        ))
    }

    #[tracing::instrument(skip_all, fields(%id))]
    async fn release_refresh(
        &self,
        id: Uuid,
        fence: i64,
        failure: Option<&RefreshFailure<'_>>,
    ) -> Result<bool, VaultError> {
        let result = sqlx::query(
            "update token_vault set refresh_lease_until = null, \
             consecutive_failures = case when $3 then consecutive_failures + 1 \
                                         else consecutive_failures end, \
             last_error = case when $3 then $4 else last_error end, \
             next_refresh_at = case when $3 then $5 else next_refresh_at end \
             where id = $1 and refresh_fence = $2",
        )
        .bind(id)
        .bind(fence)
        .bind(failure.is_some())
        .bind(failure.map(|f| f.error))
        .bind(failure.and_then(|f| f.retry_at))
        .execute(&self.pool)
        .await
        .map_err(db_error("release a refresh claim"))?;
        Ok(result.rows_affected() == 1)
    }

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
        let record: Option<RowRecord> = sqlx::query_as(&format!(
            "with old as ( \
               select {} from token_vault \
               where id = $1 and ($2::text is null or user_id = $2) for update) \
             update token_vault t set status = $3, status_reason = $4, updated_at = $5, \
               refresh_fence = t.refresh_fence + 1, refresh_lease_until = null, {WIPE_SECRETS} \
             from old where t.id = old.id and t.status <> $3 \
             returning {}",
            row_columns(None),
            row_columns(Some("old"))
        ))
        .bind(id)
        .bind(owner)
        .bind(status.as_str())
        .bind(reason.as_str())
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error("end a grant"))?;
        match record {
            Some(record) => Ok(Ended::Ended(record.try_into()?)),
            None => self.find_owned(id, owner).await,
        }
    }

    #[tracing::instrument(skip_all)]
    async fn list(&self, filter: &ListFilter) -> Result<Vec<VaultRow>, VaultError> {
        let records: Vec<RowRecord> = super::list_query::<Postgres>(&row_columns(None), filter)
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("list vault rows"))?;
        records.into_iter().map(VaultRow::try_from).collect()
    }

    #[tracing::instrument(skip_all)]
    async fn expire_stale(
        &self,
        now: DateTime<Utc>,
        batch: u32,
    ) -> Result<Vec<StatusChange>, VaultError> {
        // SKIP LOCKED: a row another statement holds right now is left for the next round.
        // The fence moves on, so a refresh in flight cannot write into an expired row.
        let rows: Vec<ChangeRecord> = sqlx::query_as(&format!(
            "with stale as ( \
               select id from token_vault \
               where (status = 'pending' and state_expires_at <= $1) \
                  or (status = 'active' and expires_at <= $1) \
               limit $2 for update skip locked) \
             update token_vault t set status = 'expired', \
               status_reason = case when t.status = 'pending' then 'consent_timeout' \
                                    else 'max_age_reached' end, \
               refresh_fence = t.refresh_fence + 1, refresh_lease_until = null, \
               {WIPE_SECRETS}, updated_at = $1 \
             from stale where t.id = stale.id \
             returning t.id, t.user_id, t.task_id, t.status, t.status_reason"
        ))
        .bind(now)
        .bind(i64::from(batch))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("expire stale rows"))?;
        rows.into_iter().map(StatusChange::try_from).collect()
    }

    #[tracing::instrument(skip_all)]
    async fn purge_finished(
        &self,
        cutoff: DateTime<Utc>,
        batch: u32,
    ) -> Result<Vec<StatusChange>, VaultError> {
        let rows: Vec<ChangeRecord> = sqlx::query_as(
            "with old as ( \
               select id from token_vault \
               where status in ('failed', 'expired', 'revoked') and updated_at < $1 \
               limit $2 for update skip locked) \
             delete from token_vault t using old where t.id = old.id \
             returning t.id, t.user_id, t.task_id, t.status, t.status_reason",
        )
        .bind(cutoff)
        .bind(i64::from(batch))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("purge finished rows"))?;
        rows.into_iter().map(StatusChange::try_from).collect()
    }

    #[tracing::instrument(skip_all)]
    async fn due_for_keepalive(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Uuid>, VaultError> {
        sqlx::query_scalar(
            "select id from token_vault \
             where status = 'active' and refresh_expires_at <= $1 \
               and (refresh_lease_until is null or refresh_lease_until <= $2) \
               and (next_refresh_at is null or next_refresh_at <= $2) \
             order by refresh_expires_at limit $3",
        )
        .bind(before)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("find grants to keep alive"))
    }

    #[tracing::instrument(skip_all)]
    async fn mark_expiring(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ExpiringRow>, VaultError> {
        sqlx::query_as(
            "with due as ( \
               select id from token_vault \
               where status = 'active' and expires_at <= $1 and expiring_notified_at is null \
               order by expires_at limit $3 for update skip locked) \
             update token_vault t set expiring_notified_at = $2 from due where t.id = due.id \
             returning t.id, t.user_id, t.task_id, t.expires_at",
        )
        .bind(before)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("mark grants as expiring"))
    }

    #[tracing::instrument(skip_all)]
    async fn sealed_under_other_keys(
        &self,
        key_id: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<SealedRow>, VaultError> {
        let rows: Vec<SealedRecord> = sqlx::query_as(
            "select id, user_id, key_id, iv, encrypted_token from token_vault \
             where encrypted_token is not null and key_id <> $1 \
             and id > coalesce($2, '00000000-0000-0000-0000-000000000000'::uuid) \
             order by id limit $3",
        )
        .bind(key_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("read tokens to re-seal"))?;
        Ok(rows.into_iter().map(SealedRow::from).collect())
    }

    #[tracing::instrument(skip_all, fields(rows = reseals.len()))]
    async fn reseal(&self, reseals: &[Reseal]) -> Result<Vec<Uuid>, VaultError> {
        let column = |f: fn(&Reseal) -> Vec<u8>| reseals.iter().map(f).collect::<Vec<_>>();
        sqlx::query_scalar(
            "update token_vault t set encrypted_token = u.new_ct, iv = u.new_iv, key_id = u.new_kid \
             from unnest($1::uuid[], $2::text[], $3::bytea[], $4::bytea[], \
                         $5::text[], $6::bytea[], $7::bytea[]) \
                  as u(id, old_kid, old_iv, old_ct, new_kid, new_iv, new_ct) \
             where t.id = u.id and t.key_id = u.old_kid and t.iv = u.old_iv \
               and t.encrypted_token = u.old_ct \
             returning t.id",
        )
        .bind(reseals.iter().map(|r| r.id).collect::<Vec<_>>())
        .bind(reseals.iter().map(|r| r.old.key_id.clone()).collect::<Vec<_>>())
        .bind(column(|r| r.old.nonce.clone()))
        .bind(column(|r| r.old.ciphertext.clone()))
        .bind(reseals.iter().map(|r| r.new.key_id.clone()).collect::<Vec<_>>())
        .bind(column(|r| r.new.nonce.clone()))
        .bind(column(|r| r.new.ciphertext.clone()))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("re-seal tokens"))
    }

    fn watch_changes(&self, on_change: ChangeSink, on_reset: ResetSink) -> bool {
        tokio::spawn(listen_for_changes(self.pool.clone(), on_change, on_reset));
        true
    }

    async fn count_sealed_under_other_keys(&self, key_id: &str) -> Result<u64, VaultError> {
        let prefix = super::blob_prefix(key_id);
        let count: i64 = sqlx::query_scalar(
            "select (select count(*) from token_vault \
                     where encrypted_token is not null and key_id <> $1) \
                  + (select count(*) from token_vault \
                     where access_token is not null and substring(access_token from 1 for $2) <> $3) \
                  + (select count(*) from token_vault \
                     where pkce_verifier is not null and substring(pkce_verifier from 1 for $2) <> $3) \
                  + (select count(*) from broker_secrets where key_id <> $1)",
        )
        .bind(key_id)
        .bind(i32::try_from(prefix.len()).unwrap_or(0))
        .bind(&prefix)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error("count values to re-seal"))?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn drop_access_tokens_under_other_keys(
        &self,
        key_id: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<(u64, Option<Uuid>), VaultError> {
        // A batch of rows by id, so no statement touches a million rows (or outlives the
        // statement timeout) and each batch starts where the last one ended.
        let prefix = super::blob_prefix(key_id);
        let (dropped, last): (i64, Option<Uuid>) = sqlx::query_as(
            "with batch as ( \
               select id from token_vault \
               where id > coalesce($3, '00000000-0000-0000-0000-000000000000'::uuid) \
               order by id limit $4), \
             dropped as ( \
               update token_vault t set access_token = null, access_token_expires_at = null, \
                 access_token_type = null, access_token_scope = null \
               from batch where t.id = batch.id and t.access_token is not null \
                 and substring(t.access_token from 1 for $1) <> $2 \
               returning 1) \
             select (select count(*) from dropped), (select id from batch order by id desc limit 1)",
        )
        .bind(i32::try_from(prefix.len()).unwrap_or(0))
        .bind(&prefix)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_one(&self.pool)
        .await
        .map_err(db_error("drop stored access tokens under old keys"))?;
        Ok((u64::try_from(dropped).unwrap_or(0), last))
    }

    async fn verifiers_under_other_keys(
        &self,
        key_id: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<SealedBlob>, VaultError> {
        let prefix = super::blob_prefix(key_id);
        sqlx::query_as(
            "select id, user_id, pkce_verifier as blob from token_vault \
             where pkce_verifier is not null and substring(pkce_verifier from 1 for $2) <> $3 \
             and id > coalesce($4, '00000000-0000-0000-0000-000000000000'::uuid) \
             order by id limit $5",
        )
        .bind(key_id)
        .bind(i32::try_from(prefix.len()).unwrap_or(0))
        .bind(&prefix)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db_error("read PKCE verifiers to re-seal"))
    }

    async fn reseal_verifier(&self, id: Uuid, old: &[u8], new: &[u8]) -> Result<bool, VaultError> {
        let result = sqlx::query(
            "update token_vault set pkce_verifier = $2 where id = $1 and pkce_verifier = $3",
        )
        .bind(id)
        .bind(new)
        .bind(old)
        .execute(&self.pool)
        .await
        .map_err(db_error("re-seal a PKCE verifier"))?;
        Ok(result.rows_affected() == 1)
    }

    async fn ping(&self) -> Result<(), VaultError> {
        sqlx::query("select 1")
            .execute(&self.pool)
            .await
            .map_err(db_error("reach the database"))?;
        Ok(())
    }

    async fn count_by_status(&self) -> Result<Vec<(String, i64)>, VaultError> {
        sqlx::query_as("select status, count(*) from token_vault group by status")
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("count rows by status"))
    }

    #[tracing::instrument(skip_all, fields(records = events.len()))]
    async fn record_audits(&self, events: &[AuditEvent]) -> Result<(), VaultError> {
        let text = |f: fn(&AuditEvent) -> Option<String>| events.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "insert into token_audit (at, actor, token_id, user_id, task_id, action, outcome, reason) \
             select * from unnest($1::timestamptz[], $2::text[], $3::uuid[], $4::text[], \
                                  $5::text[], $6::text[], $7::text[], $8::text[])",
        )
        .bind(events.iter().map(|e| e.at).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.actor.clone()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.token_id).collect::<Vec<_>>())
        .bind(text(|e| e.user_id.clone()))
        .bind(text(|e| e.task_id.clone()))
        .bind(events.iter().map(|e| e.action.as_str()).collect::<Vec<_>>())
        .bind(events.iter().map(|e| e.outcome()).collect::<Vec<_>>())
        .bind(text(|e| e.reason.clone()))
        .execute(&self.pool)
        .await
        .map_err(db_error("write audit records"))?;
        Ok(())
    }

    #[tracing::instrument(skip_all)]
    async fn purge_audit(&self, cutoff: DateTime<Utc>, batch: u32) -> Result<u64, VaultError> {
        let result = sqlx::query(
            "with old as (select id from token_audit where at < $1 limit $2) \
             delete from token_audit a using old where a.id = old.id",
        )
        .bind(cutoff)
        .bind(i64::from(batch))
        .execute(&self.pool)
        .await
        .map_err(db_error("purge old audit records"))?;
        Ok(result.rows_affected())
    }

    async fn audit_trail(
        &self,
        query: &AuditQuery,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, VaultError> {
        let column = match query {
            AuditQuery::Token(_) => "token_id",
            AuditQuery::User(_) => "user_id",
        };
        let sql = format!(
            "select id, at, actor, token_id, user_id, task_id, action, outcome, reason \
             from token_audit where {column} = $1 order by id limit $2"
        );
        let select = sqlx::query_as(&sql);
        let select = match query {
            AuditQuery::Token(id) => select.bind(*id),
            AuditQuery::User(user) => select.bind(user.clone()),
        };
        let rows = select
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(db_error("read the audit trail"))?;
        Ok(rows)
    }
}

/// Follows `token_vault_changed` notifications (sent by the trigger of migrations 3 and 8) until the
/// pool closes, reconnecting after failures.
///
/// `on_reset` runs each time the feed is (re)established, not when it drops: while the
/// connection is down (a database outage) cached tokens keep being served, and anything changed
/// meanwhile is forgotten the moment the feed is back.
async fn listen_for_changes(pool: PgPool, on_change: ChangeSink, on_reset: ResetSink) {
    let closed = pool.close_event();
    tokio::select! {
        () = follow_changes(&pool, &on_change, &on_reset) => {}
        () = closed => {}
    }
}

async fn follow_changes(pool: &PgPool, on_change: &ChangeSink, on_reset: &ResetSink) {
    loop {
        let mut listener = match PgListener::connect_with(pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for vault changes; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANGE_CHANNEL).await {
            tracing::warn!(error = %e, "cannot subscribe to vault changes; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        on_reset();
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => match notification.payload().parse() {
                    Ok(id) => on_change(id),
                    Err(_) => on_reset(),
                },
                // The connection dropped: subscribe again (and reset) from the top.
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "vault change feed failed; reconnecting");
                    break;
                }
            }
        }
    }
}

const CHANGE_CHANNEL: &str = "token_vault_changed";
