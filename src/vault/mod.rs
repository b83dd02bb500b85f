//! The token vault: where consents wait and sealed offline tokens live.
//!
//! One interface, [`TokenVault`], so the HTTP layer never sees SQL. Every statement that touches
//! a secret column lives in the backend module, in one place each.

mod model;
mod postgres;
pub(crate) mod row_locks;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use model::{
    AuditAction, AuditEvent, AuditQuery, AuditRecord, ClaimedConsent, ListFilter, NewConsent,
    SealedRow, Status, StatusChange, StoredAccess, VaultRow,
};
pub use postgres::PgVault;
pub use sqlite::SqliteVault;

use crate::crypto::Sealed;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("database error while trying to {op}: {source}")]
    Database {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("stored row {id} is inconsistent: {problem}")]
    Corrupt { id: Uuid, problem: &'static str },
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("DATABASE_URL must start with postgres://, postgresql:// or sqlite:")]
    UnknownScheme,
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("cannot apply database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Opens the vault a `DATABASE_URL` names and applies its migrations: PostgreSQL for
/// production (several broker instances may share it), SQLite for a single embedded instance.
pub async fn open(url: &str) -> Result<Arc<dyn TokenVault>, OpenError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let vault = PgVault::connect(url).await.map_err(OpenError::Connect)?;
        vault.migrate().await?;
        Ok(Arc::new(vault))
    } else if url.starts_with("sqlite:") {
        let vault = SqliteVault::connect(url)
            .await
            .map_err(OpenError::Connect)?;
        vault.migrate().await?;
        Ok(Arc::new(vault))
    } else {
        Err(OpenError::UnknownScheme)
    }
}

pub type ChangeSink = Arc<dyn Fn(Uuid) + Send + Sync>;
pub type ResetSink = Arc<dyn Fn() + Send + Sync>;

pub(crate) fn db_error(op: &'static str) -> impl FnOnce(sqlx::Error) -> VaultError {
    move |source| VaultError::Database { op, source }
}

#[async_trait]
pub trait TokenVault: Send + Sync + 'static {
    /// Stores a new pending consent.
    async fn create_pending(&self, consent: &NewConsent) -> Result<(), VaultError>;

    /// Atomically redeems a consent `state`: the pending, unexpired row holding this digest is
    /// returned once, and its state digest and PKCE verifier are erased in the same statement.
    /// A replayed, unknown or expired state yields `None` and changes nothing.
    async fn claim_consent(
        &self,
        state_hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<ClaimedConsent>, VaultError>;

    /// Stores the sealed offline token and marks a pending row active. False if the row is no
    /// longer pending.
    async fn activate(
        &self,
        id: Uuid,
        sealed: &Sealed,
        now: DateTime<Utc>,
    ) -> Result<bool, VaultError>;

    /// Marks a pending row failed with a reason. False if the row is no longer pending.
    async fn fail_pending(
        &self,
        id: Uuid,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<bool, VaultError>;

    async fn find(&self, id: Uuid) -> Result<Option<VaultRow>, VaultError>;

    /// Locks a row for the refresh path. While the lease lives, no other request (in this or any
    /// other broker process) can refresh the same row, so a rotated refresh token is never lost
    /// to a race. Dropping the lease without finishing it leaves the row untouched.
    async fn lock_for_refresh(&self, id: Uuid)
        -> Result<Option<Box<dyn RefreshLease>>, VaultError>;

    /// One page of rows matching `filter`, newest first.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<VaultRow>, VaultError>;

    /// Marks up to `batch` stale rows `expired`: pending consents whose state expired
    /// (`consent_timeout`) and active tokens past their maximum age (`max_age_reached`, sealed
    /// token wiped). Returns the rows it changed.
    async fn expire_stale(
        &self,
        now: DateTime<Utc>,
        batch: u32,
    ) -> Result<Vec<StatusChange>, VaultError>;

    /// Deletes up to `batch` failed, expired or revoked rows last changed before `cutoff`.
    async fn purge_finished(
        &self,
        cutoff: DateTime<Utc>,
        batch: u32,
    ) -> Result<Vec<StatusChange>, VaultError>;

    /// Up to `limit` sealed tokens not sealed under `key_id`, in id order after `after`.
    async fn sealed_under_other_keys(
        &self,
        key_id: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<SealedRow>, VaultError>;

    /// Replaces `old` with `new` if the row still holds exactly `old` (compare-and-swap), so a
    /// refresh that rotated the token meanwhile is never overwritten. False if it changed.
    async fn reseal(&self, id: Uuid, old: &Sealed, new: &Sealed) -> Result<bool, VaultError>;

    async fn count_sealed_under_other_keys(&self, key_id: &str) -> Result<u64, VaultError>;

    async fn record_audit(&self, event: &AuditEvent) -> Result<(), VaultError>;

    /// Whether the database answers (readiness).
    async fn ping(&self) -> Result<(), VaultError>;

    /// How many rows each status has (metrics).
    async fn count_by_status(&self) -> Result<Vec<(String, i64)>, VaultError>;

    /// Calls `on_change` with the id of every row whose status changes or that is deleted by
    /// anyone, including other broker processes. Returns false if the backend has no such feed
    /// (SQLite: one process, which sees its own changes). A lost connection calls `on_reset`:
    /// changes may have been missed meanwhile.
    fn watch_changes(&self, _on_change: ChangeSink, _on_reset: ResetSink) -> bool {
        false
    }

    /// Audit records, oldest first, at most `limit`.
    async fn audit_trail(
        &self,
        query: &AuditQuery,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, VaultError>;
}

/// A row held under lock by [`TokenVault::lock_for_refresh`].
#[async_trait]
pub trait RefreshLease: Send {
    fn row(&self) -> &VaultRow;

    /// Records a successful use, storing a rotated refresh token if the provider issued one and
    /// the freshly minted access token if there is one, and releases the lock.
    async fn finish_used(
        self: Box<Self>,
        rotated: Option<&Sealed>,
        minted: Option<&StoredAccess>,
        now: DateTime<Utc>,
    ) -> Result<(), VaultError>;

    /// Marks the row failed (the provider killed the grant) and releases the lock.
    async fn finish_failed(
        self: Box<Self>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), VaultError>;

    /// Marks the row revoked, wipes its sealed token and consent secrets, releases the lock.
    async fn finish_revoked(
        self: Box<Self>,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), VaultError>;
}
