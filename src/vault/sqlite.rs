use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::SqlitePool;
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

use super::model::{ChangeRecord, RowRecord, SealedRecord, ROW_COLUMNS};
use super::row_locks::RowLocks;
use super::{
    db_error, AuditEvent, AuditQuery, AuditRecord, ClaimedConsent, ListFilter, NewConsent,
    RefreshLease, SealedRow, StatusChange, StoredAccess, TokenVault, VaultError, VaultRow,
};
use crate::crypto::Sealed;

/// The embedded vault: one SQLite file, one broker process.
#[derive(Clone)]
pub struct SqliteVault {
    pool: SqlitePool,
    row_locks: Arc<RowLocks>,
}

impl SqliteVault {
    /// Opens (creating if needed) the database at `url` (`sqlite://path` or `sqlite::memory:`).
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            // WAL lets readers proceed while one writer commits.
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        // An in-memory database exists per connection, so it must stay on one.
        let max = if url.contains(":memory:") { 1 } else { 8 };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            row_locks: Arc::default(),
        })
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("./migrations/sqlite").run(&self.pool).await
    }

    async fn find_row(&self, id: Uuid) -> Result<Option<VaultRow>, VaultError> {
        let record: Option<RowRecord> = sqlx::query_as(&format!(
            "select {ROW_COLUMNS} from token_vault where id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error("read a vault row"))?;
        record.map(VaultRow::try_from).transpose()
    }
}

#[async_trait]
impl TokenVault for SqliteVault {
    #[tracing::instrument(skip_all, fields(id = %consent.id))]
    async fn create_pending(&self, consent: &NewConsent) -> Result<(), VaultError> {
        sqlx::query(
            "insert into token_vault (id, user_id, task_id, status, state_hash, state_expires_at, \
             pkce_verifier, nonce_hash, redirect_uri, expires_at, metadata, created_at, updated_at) \
             values (?1, ?2, ?3, 'pending', ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)",
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
        .execute(&self.pool)
        .await
        .map_err(db_error("store a pending consent"))?;
        Ok(())
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
        let claimed: Option<(
            Uuid,
            String,
            String,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Option<String>,
        )> = sqlx::query_as(
            "select id, user_id, task_id, pkce_verifier, nonce_hash, redirect_uri \
                 from token_vault \
                 where state_hash = ?1 and status = 'pending' and state_expires_at > ?2",
        )
        .bind(state_hash)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error("claim a consent"))?;
        let Some((id, user_id, task_id, pkce_verifier, nonce_hash, redirect_uri)) = claimed else {
            return Ok(None);
        };
        sqlx::query(
            "update token_vault set state_hash = null, pkce_verifier = null, updated_at = ?2 \
             where id = ?1",
        )
        .bind(id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error("claim a consent"))?;
        tx.commit().await.map_err(db_error("commit a claim"))?;
        Ok(Some(ClaimedConsent {
            id,
            user_id,
            task_id,
            pkce_verifier,
            nonce_hash,
            redirect_uri,
        }))
    }

    #[tracing::instrument(skip_all, fields(%id))]
    async fn activate(
        &self,
        id: Uuid,
        sealed: &Sealed,
        now: DateTime<Utc>,
    ) -> Result<bool, VaultError> {
        let result = sqlx::query(
            "update token_vault set status = 'active', status_reason = null, \
             encrypted_token = ?2, iv = ?3, key_id = ?4, nonce_hash = null, updated_at = ?5 \
             where id = ?1 and status = 'pending'",
        )
        .bind(id)
        .bind(&sealed.ciphertext)
        .bind(&sealed.nonce)
        .bind(&sealed.key_id)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_error("activate a consent"))?;
        Ok(result.rows_affected() == 1)
    }

    #[tracing::instrument(skip_all, fields(%id, reason))]
    async fn fail_pending(
        &self,
        id: Uuid,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, VaultError> {
        let result = sqlx::query(
            "update token_vault set status = 'failed', status_reason = ?2, state_hash = null, \
             pkce_verifier = null, nonce_hash = null, updated_at = ?3 \
             where id = ?1 and status = 'pending'",
        )
        .bind(id)
        .bind(reason)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_error("mark a consent failed"))?;
        Ok(result.rows_affected() == 1)
    }

    #[tracing::instrument(skip_all, fields(%id))]
    async fn find(&self, id: Uuid) -> Result<Option<VaultRow>, VaultError> {
        self.find_row(id).await
    }

    #[tracing::instrument(skip_all, fields(%id))]
    async fn lock_for_refresh(
        &self,
        id: Uuid,
    ) -> Result<Option<Box<dyn RefreshLease>>, VaultError> {
        let guard = self.row_locks.lock(id).await;
        Ok(self.find_row(id).await?.map(|row| {
            Box::new(SqliteLease {
                pool: self.pool.clone(),
                row,
                _guard: guard,
            }) as Box<dyn RefreshLease>
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list(&self, filter: &ListFilter) -> Result<Vec<VaultRow>, VaultError> {
        let records: Vec<RowRecord> = sqlx::query_as(&format!(
            "select {ROW_COLUMNS} from token_vault \
             where (?1 is null or user_id = ?1) and (?2 is null or task_id = ?2) \
             and (?3 is null or status = ?3) \
             order by created_at desc, id desc limit ?4 offset ?5"
        ))
        .bind(&filter.user_id)
        .bind(&filter.task_id)
        .bind(filter.status.map(|s| s.as_str()))
        .bind(i64::from(filter.limit))
        .bind(i64::from(filter.offset))
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
        let rows: Vec<ChangeRecord> = sqlx::query_as(
            "update token_vault set status = 'expired', \
               status_reason = case when status = 'pending' then 'consent_timeout' \
                                    else 'max_age_reached' end, \
               state_hash = null, pkce_verifier = null, nonce_hash = null, \
               encrypted_token = null, iv = null, key_id = null, \
             access_token = null, access_token_expires_at = null, access_token_type = null, access_token_scope = null, updated_at = ?1 \
             where id in ( \
               select id from token_vault \
               where (status = 'pending' and state_expires_at <= ?1) \
                  or (status = 'active' and expires_at <= ?1) \
               order by id limit ?2) \
             returning id, user_id, task_id, status, status_reason",
        )
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

    #[tracing::instrument(skip_all, fields(%id))]
    async fn reseal(&self, id: Uuid, old: &Sealed, new: &Sealed) -> Result<bool, VaultError> {
        let result = sqlx::query(
            "update token_vault set encrypted_token = ?2, iv = ?3, key_id = ?4 \
             where id = ?1 and key_id = ?5 and iv = ?6 and encrypted_token = ?7",
        )
        .bind(id)
        .bind(&new.ciphertext)
        .bind(&new.nonce)
        .bind(&new.key_id)
        .bind(&old.key_id)
        .bind(&old.nonce)
        .bind(&old.ciphertext)
        .execute(&self.pool)
        .await
        .map_err(db_error("re-seal a token"))?;
        Ok(result.rows_affected() == 1)
    }

    async fn count_sealed_under_other_keys(&self, key_id: &str) -> Result<u64, VaultError> {
        let count: i64 = sqlx::query_scalar(
            "select count(*) from token_vault where encrypted_token is not null and key_id <> ?1",
        )
        .bind(key_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db_error("count tokens to re-seal"))?;
        Ok(u64::try_from(count).unwrap_or(0))
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

    #[tracing::instrument(skip_all, fields(action = event.action.as_str()))]
    async fn record_audit(&self, event: &AuditEvent) -> Result<(), VaultError> {
        sqlx::query(
            "insert into token_audit (at, actor, token_id, user_id, task_id, action, outcome, reason) \
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
        .execute(&self.pool)
        .await
        .map_err(db_error("write an audit record"))?;
        Ok(())
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

struct SqliteLease {
    pool: SqlitePool,
    row: VaultRow,
    _guard: OwnedMutexGuard<()>,
}

#[async_trait]
impl RefreshLease for SqliteLease {
    fn row(&self) -> &VaultRow {
        &self.row
    }

    async fn finish_used(
        self: Box<Self>,
        rotated: Option<&Sealed>,
        minted: Option<&StoredAccess>,
        now: DateTime<Utc>,
    ) -> Result<(), VaultError> {
        // One statement: absent values keep what the row has.
        sqlx::query(
            "update token_vault set \
             encrypted_token = coalesce(?2, encrypted_token), iv = coalesce(?3, iv), \
             key_id = coalesce(?4, key_id), \
             access_token = coalesce(?5, access_token), \
             access_token_expires_at = coalesce(?6, access_token_expires_at), \
             access_token_type = coalesce(?7, access_token_type), \
             access_token_scope = case when ?5 is null then access_token_scope else ?8 end, \
             last_used_at = ?9, \
             updated_at = case when ?2 is null then updated_at else ?9 end \
             where id = ?1",
        )
        .bind(self.row.id)
        .bind(rotated.map(|s| &s.ciphertext))
        .bind(rotated.map(|s| &s.nonce))
        .bind(rotated.map(|s| &s.key_id))
        .bind(minted.map(|m| &m.sealed))
        .bind(minted.map(|m| m.expires_at))
        .bind(minted.map(|m| &m.token_type))
        .bind(minted.and_then(|m| m.scope.as_ref()))
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_error("record a token use"))?;
        Ok(())
    }

    async fn finish_failed(
        self: Box<Self>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), VaultError> {
        self.close("failed", reason, now).await
    }

    async fn finish_revoked(
        self: Box<Self>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), VaultError> {
        self.close("revoked", reason, now).await
    }
}

impl SqliteLease {
    /// Ends a row's life as `status`: every secret it held (sealed tokens, consent state) is
    /// wiped in the same statement, then the lock is released.
    async fn close(
        self: Box<Self>,
        status: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), VaultError> {
        sqlx::query(
            "update token_vault set status = ?2, status_reason = ?3, updated_at = ?4, \
             encrypted_token = null, iv = null, key_id = null, \
             access_token = null, access_token_expires_at = null, access_token_type = null, \
             access_token_scope = null, state_hash = null, pkce_verifier = null, nonce_hash = null \
             where id = ?1",
        )
        .bind(self.row.id)
        .bind(status)
        .bind(reason)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(db_error("change a token's status"))?;
        Ok(())
    }
}
