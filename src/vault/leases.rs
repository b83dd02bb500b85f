//! Refresh leases: a row is claimed for one refresh at a time, and the claim is settled once,
//! by writing the provider's answer back, failing the row, or releasing it. The claim is a
//! [`Lease`] only [`LeaseStore::claim_refresh`] makes and each settling call consumes, so a
//! refresh cannot write with a fence it did not claim, or settle twice.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::lifecycle::{StatusReason, Transition};
use super::model::{StoredAccess, VaultRow};
use super::VaultError;
use crate::crypto::Sealed;

/// A claim on a row for one refresh: its id and the fence the claim raised it to. Not
/// `Clone`, and built only by the vault.
#[derive(Debug, PartialEq, Eq)]
pub struct Lease {
    id: Uuid,
    fence: i64,
}

impl Lease {
    pub(super) fn new(id: Uuid, fence: i64) -> Self {
        Self { id, fence }
    }

    pub fn id(&self) -> Uuid {
        self.id
    }

    pub fn fence(&self) -> i64 {
        self.fence
    }
}

/// The answer to a refresh claim.
#[derive(Debug)]
pub enum Claim {
    /// The row is ours to refresh until the lease ends; the lease proves it on write-back.
    Claimed(Lease, VaultRow),
    /// Not claimed: the row is not active, or another refresh holds a live lease.
    NotClaimed(VaultRow),
    Missing,
}

/// A write-back that did not reach the database: the lease is handed back, still held, so
/// the caller may try again.
#[derive(Debug)]
pub struct Unfinished {
    pub lease: Lease,
    pub error: VaultError,
}

/// What a successful refresh brought back.
#[derive(Debug)]
pub struct RefreshWrite<'a> {
    /// A rotated refresh token, sealed; `None` keeps the stored one.
    pub rotated: Option<&'a Sealed>,
    /// The access token to share with other instances; `None` (a narrowed token) keeps the
    /// one stored.
    pub minted: Option<&'a StoredAccess>,
    /// When the (new) refresh token stops working if unused, when known.
    pub refresh_expires_at: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
    /// Who refreshed, and the audit reason: the `token_issued` record is written with the
    /// row, in the same statement, so a refresh is never stored without its record.
    pub actor: &'a str,
    pub audit_reason: Option<&'a str>,
}

/// A refresh that failed without ending the grant.
#[derive(Debug)]
pub struct RefreshFailure<'a> {
    /// Short code for `last_error`.
    pub error: &'a str,
    /// No refresh before this time (back-off), if any.
    pub retry_at: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

#[async_trait]
pub trait LeaseStore: Send + Sync {
    /// Claims an active row for a refresh unless another claim's lease is still live. The
    /// lease lasts `lease` (on PostgreSQL, by the database's clock, so instances need not
    /// agree on the time) and the fence goes up by one. Nothing stays locked once this
    /// returns: the provider is called with no connection held.
    async fn claim_refresh(&self, id: Uuid, lease: Duration) -> Result<Claim, VaultError>;

    /// Writes a refresh's result back with its `token_issued` audit record, and ends the
    /// lease, if the row is still active and its fence is still the lease's (no newer claim,
    /// no revocation meanwhile). False otherwise: nothing was written, record included.
    async fn finish_refresh(
        &self,
        lease: Lease,
        write: &RefreshWrite<'_>,
    ) -> Result<bool, Unfinished>;

    /// Marks the row failed (the provider ended the grant) and wipes its secrets, if its fence
    /// is still the lease's: only the claim that presented the current token may fail it.
    /// The transition made, or `None`.
    async fn fail_refresh(
        &self,
        lease: Lease,
        reason: &StatusReason,
        now: DateTime<Utc>,
    ) -> Result<Option<Transition>, VaultError>;

    /// Ends a claim without a new token: the lease is released; with a failure, the row's
    /// failure count, last error and back-off are recorded. False if the fence moved on.
    async fn release_refresh(
        &self,
        lease: Lease,
        failure: Option<&RefreshFailure<'_>>,
    ) -> Result<bool, VaultError>;
}

/// The write-back's `SET` list and condition; `$1` id, `$2` fence, `$3`..`$12` the write.
macro_rules! write_back {
    () => {
        "encrypted_token = coalesce($3, encrypted_token), iv = coalesce($4, iv), \
         key_id = coalesce($5, key_id), \
         access_token = case when $12 then $6 else access_token end, \
         access_token_expires_at = case when $12 then $7 else access_token_expires_at end, \
         access_token_type = case when $12 then $8 else access_token_type end, \
         access_token_scope = case when $12 then $9 else access_token_scope end, \
         refresh_expires_at = coalesce($10, refresh_expires_at), \
         last_refresh_at = $11, last_used_at = $11, consecutive_failures = 0, \
         last_error = null, next_refresh_at = null, refresh_lease_until = null, \
         updated_at = case when $3 is null then updated_at else $11 end \
         where id = $1 and refresh_fence = $2 and status = 'active'"
    };
}

/// Binds a write-back's values as `$1`..`$12` (see [`write_back!`]).
macro_rules! bind_write_back {
    ($query:expr, $lease:expr, $write:expr) => {
        $query
            .bind($lease.id())
            .bind($lease.fence())
            .bind($write.rotated.map(|s| &s.ciphertext))
            .bind($write.rotated.map(|s| &s.nonce))
            .bind($write.rotated.map(|s| &s.key_id))
            .bind($write.minted.map(|m| &m.sealed))
            .bind($write.minted.map(|m| m.expires_at))
            .bind($write.minted.map(|m| &m.token_type))
            .bind($write.minted.and_then(|m| m.scope.as_ref()))
            .bind($write.refresh_expires_at)
            .bind($write.now)
            .bind($write.minted.is_some())
    };
}

pub(super) use {bind_write_back, write_back};

/// `LeaseStore` for `$vault`: the statements both backends accept, in `$dialect`, and the
/// backend's own `claim_refresh` and `finish_refresh` given as `{ … }`.
macro_rules! lease_store {
    ($vault:ty, $dialect:path, { $($own:tt)* }) => {
        #[::async_trait::async_trait]
        impl $crate::vault::LeaseStore for $vault {
            $($own)*

            #[tracing::instrument(skip_all, fields(id = %lease.id(), reason))]
            async fn fail_refresh(
                &self,
                lease: $crate::vault::Lease,
                reason: &$crate::vault::StatusReason,
                now: ::chrono::DateTime<::chrono::Utc>,
            ) -> Result<Option<$crate::vault::Transition>, $crate::vault::VaultError> {
                let sql = $crate::vault::sql::statement!($dialect, concat!(
                    "update token_vault set status = 'failed', status_reason = $3, \
                     updated_at = $4, last_error = $3, \
                     consecutive_failures = consecutive_failures + 1, \
                     refresh_lease_until = null, ", $crate::vault::sql::wipe_secrets!(),
                    " where id = $1 and refresh_fence = $2 and status = 'active'"));
                let result = ::sqlx::query(sql)
                    .bind(lease.id())
                    .bind(lease.fence())
                    .bind(reason.as_str())
                    .bind(now)
                    .execute(self.pool())
                    .await
                    .map_err($crate::vault::db_error("mark a grant failed"))?;
                Ok($crate::vault::Transition::made(
                    result.rows_affected(),
                    $crate::vault::Status::Active,
                    $crate::vault::Status::Failed,
                    Some(reason),
                ))
            }

            #[tracing::instrument(skip_all, fields(id = %lease.id()))]
            async fn release_refresh(
                &self,
                lease: $crate::vault::Lease,
                failure: Option<&$crate::vault::RefreshFailure<'_>>,
            ) -> Result<bool, $crate::vault::VaultError> {
                let sql = $crate::vault::sql::statement!($dialect,
                    "update token_vault set refresh_lease_until = null, \
                     consecutive_failures = case when $3 then consecutive_failures + 1 \
                                                 else consecutive_failures end, \
                     last_error = case when $3 then $4 else last_error end, \
                     next_refresh_at = case when $3 then $5 else next_refresh_at end \
                     where id = $1 and refresh_fence = $2");
                let result = ::sqlx::query(sql)
                    .bind(lease.id())
                    .bind(lease.fence())
                    .bind(failure.is_some())
                    .bind(failure.map(|f| f.error))
                    .bind(failure.and_then(|f| f.retry_at))
                    .execute(self.pool())
                    .await
                    .map_err($crate::vault::db_error("release a refresh claim"))?;
                Ok(result.rows_affected() == 1)
            }
        }
    };
}

pub(super) use lease_store;

/// The answer to a claim statement: the claimed row with its lease, or why there is none.
pub(super) async fn claim_answer<V: super::RowReads + ?Sized>(
    vault: &V,
    id: Uuid,
    claimed: Option<super::model::RowRecord>,
) -> Result<Claim, VaultError> {
    if let Some(record) = claimed {
        let row = VaultRow::try_from(record)?;
        return Ok(Claim::Claimed(Lease::new(row.id, row.fence), row));
    }
    Ok(match vault.find(id).await? {
        Some(row) => Claim::NotClaimed(row),
        None => Claim::Missing,
    })
}
