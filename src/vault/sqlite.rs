//! The embedded vault: SQLite through sqlx, for one broker process.
//!
//! Atomicity rule: every change of a row is one conditional `UPDATE … WHERE` on the state it
//! expects (status, fence, lease), so a change that lost a race changes nothing and reports it;
//! SQLite serialises writers, so one statement is one step. Where a change spans statements (an
//! audit record with it) it runs in one transaction.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Sqlite, SqlitePool};
use uuid::Uuid;

use super::model::{row_columns, ChangeRecord, ClaimRecord, RowRecord, SealedRecord};
use super::{
    activated, db_error, made, Activation, AuditAction, AuditEvent, AuditQuery, AuditRecord, Claim,
    ClaimedConsent, Ended, ExpiringRow, ListFilter, NewConsent, NewReconsent, RefreshFailure,
    RefreshWrite, Reseal, SealedBlob, SealedRow, Status, StatusChange, StatusReason, TokenVault,
    Transition, VaultError, VaultRow,
};

/// Every secret a row can hold, set to null (see the PostgreSQL backend).
const WIPE_SECRETS: &str = "encrypted_token = null, iv = null, key_id = null, \
    access_token = null, access_token_expires_at = null, access_token_type = null, \
    access_token_scope = null, state_hash = null, pkce_verifier = null, nonce_hash = null";

/// The embedded vault: one SQLite file, one broker process.
#[derive(Clone)]
pub struct SqliteVault {
    pool: SqlitePool,
}

impl SqliteVault {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or `sqlite::memory:`).
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // WAL lets readers proceed while one writer commits.
            .journal_mode(SqliteJournalMode::Wal)
            // A writer waits this long for another's commit before giving up (503).
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        // An in-memory database exists per connection, so it must stay on one.
        let max = if url.contains(":memory:") { 1 } else { 8 };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("./migrations/sqlite").run(&self.pool).await
    }

    /// The pool, for tests that look at rows directly.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

#[async_trait]
impl TokenVault for SqliteVault {
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
             select ?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11, ?12 \
             where (select count(*) from token_vault where user_id = ?2 and status = 'pending' \
                    and state_expires_at > ?11) < ?13",
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
        .bind(consent.metadata.to_string())
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
            "update token_vault set state_hash = ?3, state_expires_at = ?4, pkce_verifier = ?5, \
             nonce_hash = ?6, redirect_uri = ?7, updated_at = ?8 \
             where id = ?1 and user_id = ?2 and status in ('active', 'failed', 'expired')",
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
        // BEGIN IMMEDIATE takes the write lock before reading, so two claims cannot both read
        // the row before either erases its state.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error("begin a claim"))?;
        let claimed: Option<ClaimRecord> = sqlx::query_as(
            "select id, user_id, task_id, status, pkce_verifier, nonce_hash, redirect_uri \
             from token_vault \
             where state_hash = ?1 and status <> 'revoked' and state_expires_at > ?2",
        )
        .bind(state_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error("claim a consent"))?;
        if claimed.is_some() {
            sqlx::query(
                "update token_vault \
                 set state_hash = null, pkce_verifier = null, nonce_hash = null, updated_at = ?2 \
                 where state_hash = ?1",
            )
            .bind(state_hash)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(db_error("claim a consent"))?;
            tx.commit().await.map_err(db_error("commit a claim"))?;
        }
        claimed.map(ClaimedConsent::try_from).transpose()
    }

    #[tracing::instrument(skip_all, fields(%id))]
    async fn activate(
        &self,
        id: Uuid,
        from: Status,
        activation: &Activation<'_>,
    ) -> Result<Option<Transition>, VaultError> {
        let failed = || db_error("activate a consent");
        // BEGIN IMMEDIATE: the status read is the status replaced.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(failed())?;
        let replaced: Option<(String,)> =
            sqlx::query_as("select status from token_vault where id = ?1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(failed())?;
        let result = sqlx::query(
            "update token_vault set status = 'active', status_reason = null, \
             encrypted_token = ?3, iv = ?4, key_id = ?5, \
             access_token = null, access_token_expires_at = null, access_token_type = null, \
             access_token_scope = null, refresh_fence = refresh_fence + 1, \
             refresh_lease_until = null, refresh_expires_at = ?6, last_refresh_at = ?7, \
             consecutive_failures = 0, last_error = null, next_refresh_at = null, \
             expiring_notified_at = null, expires_at = ?8, updated_at = ?7, \
             granted_scope = coalesce(?9, granted_scope), \
             pkce_verifier = case when status = 'pending' then null else pkce_verifier end, \
             state_hash = case when status = 'pending' then null else state_hash end \
             where id = ?1 and ((?2 = 'pending' and status = 'pending') \
                or (?2 <> 'pending' and status in ('active', 'failed', 'expired')))",
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
        .execute(&mut *tx)
        .await
        .map_err(failed())?;
        tx.commit().await.map_err(failed())?;
        activated(
            id,
            replaced
                .filter(|_| result.rows_affected() == 1)
                .map(|(status,)| status),
        )
    }

    #[tracing::instrument(skip_all, fields(%id, reason))]
    async fn fail_pending(
        &self,
        id: Uuid,
        reason: &StatusReason,
        now: DateTime<Utc>,
    ) -> Result<Option<Transition>, VaultError> {
        let result = sqlx::query(
            "update token_vault set status = 'failed', status_reason = ?2, state_hash = null, \
             pkce_verifier = null, nonce_hash = null, updated_at = ?3 \
             where id = ?1 and status = 'pending'",
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
            "select {} from token_vault where id = ?1",
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
        let now = Utc::now();
        let until = now + chrono::Duration::from_std(lease).unwrap_or_default();
        let record: Option<RowRecord> = sqlx::query_as(&format!(
            "update token_vault set refresh_lease_until = ?3, refresh_fence = refresh_fence + 1 \
             where id = ?1 and status = 'active' \
               and (refresh_lease_until is null or refresh_lease_until <= ?2) \
             returning {}",
            row_columns(None)
        ))
        .bind(id)
        .bind(now)
        .bind(until)
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
        let failed = || db_error("write a refresh back");
        let mut tx = self.pool.begin().await.map_err(failed())?;
        let result = sqlx::query(
            "update token_vault set \
             encrypted_token = coalesce(?3, encrypted_token), iv = coalesce(?4, iv), \
             key_id = coalesce(?5, key_id), \
             access_token = case when ?12 then ?6 else access_token end, \
             access_token_expires_at = case when ?12 then ?7 else access_token_expires_at end, \
             access_token_type = case when ?12 then ?8 else access_token_type end, \
             access_token_scope = case when ?12 then ?9 else access_token_scope end, \
             refresh_expires_at = coalesce(?10, refresh_expires_at), \
             last_refresh_at = ?11, last_used_at = ?11, consecutive_failures = 0, \
             last_error = null, next_refresh_at = null, refresh_lease_until = null, \
             updated_at = case when ?3 is null then updated_at else ?11 end \
             where id = ?1 and refresh_fence = ?2 and status = 'active'",
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
        .bind(id)
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

    #[tracing::instrument(skip_all, fields(%id, reason))]
    async fn fail_refresh(
        &self,
        id: Uuid,
        fence: i64,
        reason: &StatusReason,
        now: DateTime<Utc>,
    ) -> Result<Option<Transition>, VaultError> {
        let result = sqlx::query(&format!(
            "update token_vault set status = 'failed', status_reason = ?3, updated_at = ?4, \
             last_error = ?3, consecutive_failures = consecutive_failures + 1, \
             refresh_lease_until = null, {WIPE_SECRETS} \
             where id = ?1 and refresh_fence = ?2 and status = 'active'"
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
             consecutive_failures = case when ?3 then consecutive_failures + 1 \
                                         else consecutive_failures end, \
             last_error = case when ?3 then ?4 else last_error end, \
             next_refresh_at = case when ?3 then ?5 else next_refresh_at end \
             where id = ?1 and refresh_fence = ?2",
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
        // BEGIN IMMEDIATE takes the write lock before reading, so the row read is the row
        // ended: nothing can refresh in between.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_error("begin ending a grant"))?;
        let record: Option<RowRecord> = sqlx::query_as(&format!(
            "select {} from token_vault where id = ?1 and (?2 is null or user_id = ?2)",
            row_columns(None)
        ))
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
        sqlx::query(&format!(
            "update token_vault set status = ?2, status_reason = ?3, updated_at = ?4, \
             refresh_fence = refresh_fence + 1, refresh_lease_until = null, {WIPE_SECRETS} \
             where id = ?1"
        ))
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

    #[tracing::instrument(skip_all)]
    async fn list(&self, filter: &ListFilter) -> Result<Vec<VaultRow>, VaultError> {
        let records: Vec<RowRecord> = super::list_query::<Sqlite>(&row_columns(None), filter)
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
        // The fence moves on, so a refresh in flight cannot write into an expired row.
        let rows: Vec<ChangeRecord> = sqlx::query_as(&format!(
            "update token_vault set status = 'expired', \
               status_reason = case when status = 'pending' then 'consent_timeout' \
                                    else 'max_age_reached' end, \
               refresh_fence = refresh_fence + 1, refresh_lease_until = null, \
               {WIPE_SECRETS}, updated_at = ?1 \
             where id in ( \
               select id from token_vault \
               where (status = 'pending' and state_expires_at <= ?1) \
                  or (status = 'active' and expires_at <= ?1) \
               order by id limit ?2) \
             returning id, user_id, task_id, status, status_reason"
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
            "delete from token_vault where id in ( \
               select id from token_vault \
               where status in ('failed', 'expired', 'revoked') and updated_at < ?1 \
               order by id limit ?2) \
             returning id, user_id, task_id, status, status_reason",
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
             where status = 'active' and refresh_expires_at <= ?1 \
               and (refresh_lease_until is null or refresh_lease_until <= ?2) \
               and (next_refresh_at is null or next_refresh_at <= ?2) \
             order by refresh_expires_at limit ?3",
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
            "update token_vault set expiring_notified_at = ?2 where id in ( \
               select id from token_vault \
               where status = 'active' and expires_at <= ?1 and expiring_notified_at is null \
               order by expires_at limit ?3) \
             returning id, user_id, task_id, expires_at",
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
             where encrypted_token is not null and key_id <> ?1 \
             and (?2 is null or id > ?2) order by id limit ?3",
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
        let failed = || db_error("re-seal tokens");
        let mut tx = self.pool.begin().await.map_err(failed())?;
        let mut done = Vec::new();
        for reseal in reseals {
            let (old, new) = (&reseal.old, &reseal.new);
            let result = sqlx::query(
                "update token_vault set encrypted_token = ?2, iv = ?3, key_id = ?4 \
                 where id = ?1 and key_id = ?5 and iv = ?6 and encrypted_token = ?7",
            )
            .bind(reseal.id)
            .bind(&new.ciphertext)
            .bind(&new.nonce)
            .bind(&new.key_id)
            .bind(&old.key_id)
            .bind(&old.nonce)
            .bind(&old.ciphertext)
            .execute(&mut *tx)
            .await
            .map_err(failed())?;
            if result.rows_affected() == 1 {
                done.push(reseal.id);
            }
        }
        tx.commit().await.map_err(failed())?;
        Ok(done)
    }

    async fn count_sealed_under_other_keys(&self, key_id: &str) -> Result<u64, VaultError> {
        let prefix = super::blob_prefix(key_id);
        let count: i64 = sqlx::query_scalar(
            "select (select count(*) from token_vault \
                     where encrypted_token is not null and key_id <> ?1) \
                  + (select count(*) from token_vault \
                     where access_token is not null and substr(access_token, 1, ?2) <> ?3) \
                  + (select count(*) from token_vault \
                     where pkce_verifier is not null and substr(pkce_verifier, 1, ?2) <> ?3) \
                  + (select count(*) from broker_secrets where key_id <> ?1)",
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
        let failed = || db_error("drop stored access tokens under old keys");
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "select id from token_vault where (?1 is null or id > ?1) order by id limit ?2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(failed())?;
        let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
            return Ok((0, None));
        };
        let prefix = super::blob_prefix(key_id);
        let result = sqlx::query(
            "update token_vault set access_token = null, access_token_expires_at = null, \
             access_token_type = null, access_token_scope = null \
             where id >= ?1 and id <= ?2 \
             and access_token is not null and substr(access_token, 1, ?3) <> ?4",
        )
        .bind(first)
        .bind(last)
        .bind(i32::try_from(prefix.len()).unwrap_or(0))
        .bind(&prefix)
        .execute(&self.pool)
        .await
        .map_err(failed())?;
        Ok((result.rows_affected(), Some(*last)))
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
             where pkce_verifier is not null and substr(pkce_verifier, 1, ?2) <> ?3 \
             and (?4 is null or id > ?4) order by id limit ?5",
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
            "update token_vault set pkce_verifier = ?2 where id = ?1 and pkce_verifier = ?3",
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
        let failed = || db_error("write audit records");
        let mut tx = self.pool.begin().await.map_err(failed())?;
        for event in events {
            sqlx::query(
                "insert into token_audit \
                 (at, actor, token_id, user_id, task_id, action, outcome, reason) \
                 values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
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

    #[tracing::instrument(skip_all)]
    async fn purge_audit(&self, cutoff: DateTime<Utc>, batch: u32) -> Result<u64, VaultError> {
        let result = sqlx::query(
            "delete from token_audit where id in \
             (select id from token_audit where at < ?1 order by id limit ?2)",
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
             from token_audit where {column} = ?1 order by id limit ?2"
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
