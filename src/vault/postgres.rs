use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::model::{ChangeRecord, RowRecord, SealedRecord, ROW_COLUMNS};
use super::{
    db_error, AuditEvent, AuditQuery, AuditRecord, ChangeSink, ClaimedConsent, ListFilter,
    NewConsent, RefreshLease, ResetSink, SealedRow, StatusChange, StoredAccess, TokenVault,
    VaultError, VaultRow,
};
use crate::crypto::Sealed;

/// The production vault: PostgreSQL, safe for several broker instances on one database.
#[derive(Clone)]
pub struct PgVault {
    pool: PgPool,
}

impl PgVault {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        Ok(Self::new(pool))
    }

    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
            .await
    }
}

#[async_trait]
impl TokenVault for PgVault {
    #[tracing::instrument(skip_all, fields(id = %consent.id))]
    async fn create_pending(&self, consent: &NewConsent) -> Result<(), VaultError> {
        sqlx::query(
            "insert into token_vault (id, user_id, task_id, status, state_hash, state_expires_at, \
             pkce_verifier, nonce_hash, redirect_uri, expires_at, metadata, created_at, updated_at) \
             values ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, $10, $11, $11)",
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
        // One statement: the row lock taken by the CTE makes a concurrent replay wait, and by
        // then the digest is gone, so exactly one request wins.
        let claimed: Option<(
            Uuid,
            String,
            String,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            Option<String>,
        )> = sqlx::query_as(
            "with claimed as ( \
                   select id, user_id, task_id, pkce_verifier, nonce_hash, redirect_uri \
                   from token_vault \
                   where state_hash = $1 and status = 'pending' and state_expires_at > $2 \
                   for update) \
                 update token_vault t \
                 set state_hash = null, pkce_verifier = null, updated_at = $2 \
                 from claimed where t.id = claimed.id \
                 returning claimed.id, claimed.user_id, claimed.task_id, \
                           claimed.pkce_verifier, claimed.nonce_hash, claimed.redirect_uri",
        )
        .bind(state_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error("claim a consent"))?;
        Ok(claimed.map(
            |(id, user_id, task_id, pkce_verifier, nonce_hash, redirect_uri)| ClaimedConsent {
                id,
                user_id,
                task_id,
                pkce_verifier,
                nonce_hash,
                redirect_uri,
            },
        ))
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
             encrypted_token = $2, iv = $3, key_id = $4, nonce_hash = null, updated_at = $5 \
             where id = $1 and status = 'pending'",
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
            "update token_vault set status = 'failed', status_reason = $2, state_hash = null, \
             pkce_verifier = null, nonce_hash = null, updated_at = $3 \
             where id = $1 and status = 'pending'",
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
        let record: Option<RowRecord> = sqlx::query_as(&format!(
            "select {ROW_COLUMNS} from token_vault where id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_error("read a vault row"))?;
        record.map(VaultRow::try_from).transpose()
    }

    #[tracing::instrument(skip_all, fields(%id))]
    async fn lock_for_refresh(
        &self,
        id: Uuid,
    ) -> Result<Option<Box<dyn RefreshLease>>, VaultError> {
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(db_error("begin a refresh"))?;
        let record: Option<RowRecord> = sqlx::query_as(&format!(
            "select {ROW_COLUMNS} from token_vault where id = $1 for update"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error("lock a vault row"))?;
        match record {
            None => Ok(None),
            Some(record) => Ok(Some(Box::new(PgLease {
                tx,
                row: record.try_into()?,
            }))),
        }
    }

    #[tracing::instrument(skip_all)]
    async fn list(&self, filter: &ListFilter) -> Result<Vec<VaultRow>, VaultError> {
        let records: Vec<RowRecord> = sqlx::query_as(&format!(
            "select {ROW_COLUMNS} from token_vault \
             where ($1::text is null or user_id = $1) and ($2::text is null or task_id = $2) \
             and ($3::text is null or status = $3) \
             order by created_at desc, id desc limit $4 offset $5"
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
        // SKIP LOCKED: a row being refreshed right now is left for the next round.
        let rows: Vec<ChangeRecord> = sqlx::query_as(
            "with stale as ( \
               select id from token_vault \
               where (status = 'pending' and state_expires_at <= $1) \
                  or (status = 'active' and expires_at <= $1) \
               order by id limit $2 for update skip locked) \
             update token_vault t set status = 'expired', \
               status_reason = case when t.status = 'pending' then 'consent_timeout' \
                                    else 'max_age_reached' end, \
               state_hash = null, pkce_verifier = null, nonce_hash = null, \
               encrypted_token = null, iv = null, key_id = null, \
             access_token = null, access_token_expires_at = null, access_token_type = null, access_token_scope = null, updated_at = $1 \
             from stale where t.id = stale.id \
             returning t.id, t.user_id, t.task_id, t.status, t.status_reason",
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
            "with old as ( \
               select id from token_vault \
               where status in ('failed', 'expired', 'revoked') and updated_at < $1 \
               order by id limit $2 for update skip locked) \
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
    async fn sealed_under_other_keys(
        &self,
        key_id: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<SealedRow>, VaultError> {
        let rows: Vec<SealedRecord> = sqlx::query_as(
            "select id, user_id, key_id, iv, encrypted_token from token_vault \
             where encrypted_token is not null and key_id <> $1 \
             and ($2::uuid is null or id > $2) order by id limit $3",
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
            "update token_vault set encrypted_token = $2, iv = $3, key_id = $4 \
             where id = $1 and key_id = $5 and iv = $6 and encrypted_token = $7",
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

    fn watch_changes(&self, on_change: ChangeSink, on_reset: ResetSink) -> bool {
        tokio::spawn(listen_for_changes(self.pool.clone(), on_change, on_reset));
        true
    }

    async fn count_sealed_under_other_keys(&self, key_id: &str) -> Result<u64, VaultError> {
        let count: i64 = sqlx::query_scalar(
            "select count(*) from token_vault where encrypted_token is not null and key_id <> $1",
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
             values ($1, $2, $3, $4, $5, $6, $7, $8)",
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

/// Follows `token_vault_changed` notifications (sent by the trigger of migration 3) until the
/// pool closes, reconnecting after failures. Whenever notifications may have been missed,
/// `on_reset` runs.
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
                on_reset();
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
                // The connection dropped; the next call reconnects. Anything may have changed.
                Ok(None) => on_reset(),
                Err(e) => {
                    tracing::warn!(error = %e, "vault change feed failed; reconnecting");
                    on_reset();
                    break;
                }
            }
        }
    }
}

const CHANGE_CHANNEL: &str = "token_vault_changed";

struct PgLease {
    tx: Transaction<'static, Postgres>,
    row: VaultRow,
}

#[async_trait]
impl RefreshLease for PgLease {
    fn row(&self) -> &VaultRow {
        &self.row
    }

    async fn finish_used(
        mut self: Box<Self>,
        rotated: Option<&Sealed>,
        minted: Option<&StoredAccess>,
        now: DateTime<Utc>,
    ) -> Result<(), VaultError> {
        // One statement: absent values keep what the row has.
        sqlx::query(
            "update token_vault set \
             encrypted_token = coalesce($2, encrypted_token), iv = coalesce($3, iv), \
             key_id = coalesce($4, key_id), \
             access_token = coalesce($5, access_token), \
             access_token_expires_at = coalesce($6, access_token_expires_at), \
             access_token_type = coalesce($7, access_token_type), \
             access_token_scope = case when $5 is null then access_token_scope else $8 end, \
             last_used_at = $9, \
             updated_at = case when $2 is null then updated_at else $9 end \
             where id = $1",
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
        .execute(&mut *self.tx)
        .await
        .map_err(db_error("record a token use"))?;
        self.tx
            .commit()
            .await
            .map_err(db_error("commit a token use"))
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

impl PgLease {
    /// Ends a row's life as `status`: every secret it held (sealed tokens, consent state) is
    /// wiped in the same statement, then the lock is released.
    async fn close(
        mut self: Box<Self>,
        status: &str,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), VaultError> {
        sqlx::query(
            "update token_vault set status = $2, status_reason = $3, updated_at = $4, \
             encrypted_token = null, iv = null, key_id = null, \
             access_token = null, access_token_expires_at = null, access_token_type = null, \
             access_token_scope = null, state_hash = null, pkce_verifier = null, nonce_hash = null \
             where id = $1",
        )
        .bind(self.row.id)
        .bind(status)
        .bind(reason)
        .bind(now)
        .execute(&mut *self.tx)
        .await
        .map_err(db_error("change a token's status"))?;
        self.tx
            .commit()
            .await
            .map_err(db_error("commit a status change"))
    }
}
