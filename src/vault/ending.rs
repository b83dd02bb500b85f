//! How rows end: revoked by someone, expired by the clock, purged when long finished, and the
//! scans that keep a live grant from ending unannounced (keep-alive, `token.expiring`).
//! [`EndingStore`] is the role; the statement both backends accept is written once in
//! [`ending_store!`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::lifecycle::{Status, StatusReason};
use super::model::VaultRow;
use super::VaultError;

/// The answer to ending a grant (revocation).
#[derive(Debug)]
pub enum Ended {
    /// Ended now; the row as it was just before (with its sealed token, for the provider).
    Ended(VaultRow),
    /// It already had that status; nothing changed.
    Unchanged(VaultRow),
    Missing,
}

/// An active row close to its hard end, for the `token.expiring` webhook.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExpiringRow {
    pub id: Uuid,
    pub user_id: String,
    pub task_id: String,
    pub expires_at: DateTime<Utc>,
}

/// A row whose status a background job changed, for the audit trail and webhooks.
#[derive(Debug, Clone)]
pub struct StatusChange {
    pub id: Uuid,
    pub user_id: String,
    pub task_id: String,
    pub status: Status,
    pub reason: Option<StatusReason>,
}

#[async_trait]
pub trait EndingStore: Send + Sync {
    /// Ends a row's life as `status` (revoked), wiping every secret it holds and voiding any
    /// refresh in flight, in one statement; only a row of `owner` when one is given. Returns
    /// the row as it was, so its token can be revoked at the provider afterwards.
    async fn end_grant(
        &self,
        id: Uuid,
        owner: Option<&str>,
        status: Status,
        reason: &StatusReason,
        now: DateTime<Utc>,
    ) -> Result<Ended, VaultError>;

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

    /// Up to `limit` active rows, soonest first, whose refresh token stops working before
    /// `before` and that nobody is refreshing or backing off from at `now` (keep-alive).
    async fn due_for_keepalive(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<Uuid>, VaultError>;

    /// Marks up to `limit` active rows whose hard end comes before `before` as notified, once,
    /// and returns them (the `token.expiring` webhook).
    async fn mark_expiring(
        &self,
        before: DateTime<Utc>,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ExpiringRow>, VaultError>;
}

/// Which rows the clock ends, and with which reason (`$1` is now).
macro_rules! stale {
    () => {
        "(status = 'pending' and state_expires_at <= $1) or (status = 'active' and expires_at <= $1)"
    };
}

/// The `SET` list that expires a stale row: the fence moves on, so a refresh in flight cannot
/// write into it.
macro_rules! expiry {
    () => {
        concat!(
            "status = 'expired', status_reason = case when t.status = 'pending' \
             then 'consent_timeout' else 'max_age_reached' end, \
             refresh_fence = t.refresh_fence + 1, refresh_lease_until = null, ",
            $crate::vault::sql::wipe_secrets!(),
            ", updated_at = $1"
        )
    };
}

/// Rows finished long enough ago to be deleted (`$1` is the cutoff).
macro_rules! finished {
    () => {
        "status in ('failed', 'expired', 'revoked') and updated_at < $1"
    };
}

/// Active rows whose hard end comes before `$1` and nobody was told of (`token.expiring`).
macro_rules! expiring {
    () => {
        "status = 'active' and expires_at <= $1 and expiring_notified_at is null"
    };
}

/// What the statements that change rows in bulk return, in [`ChangeRecord`]'s order.
pub(super) const CHANGE_COLUMNS: &str = "t.id, t.user_id, t.task_id, t.status, t.status_reason";

pub(super) use {expiring, expiry, finished, stale};

/// `EndingStore` for `$vault`: the statement both backends accept, in `$dialect`; the bulk
/// jobs run as written here with the backend's own statement for each (`$1`, `$2`, `$3` bound
/// as the trait's arguments, in order), and its own `end_grant` given as `{ … }`.
macro_rules! ending_store {
    (
        $vault:ty,
        $dialect:path,
        expire_stale: $expire_stale:expr,
        purge_finished: $purge_finished:expr,
        mark_expiring: $mark_expiring:expr,
        { $($own:tt)* }
    ) => {
        #[::async_trait::async_trait]
        impl $crate::vault::EndingStore for $vault {
            $($own)*

            #[::tracing::instrument(skip_all)]
            async fn expire_stale(
                &self,
                now: ::chrono::DateTime<::chrono::Utc>,
                batch: u32,
            ) -> Result<Vec<$crate::vault::StatusChange>, $crate::vault::VaultError> {
                let rows: Vec<$crate::vault::ending::ChangeRecord> =
                    ::sqlx::query_as($crate::vault::sql::statement!($dialect, $expire_stale))
                        .bind(now)
                        .bind(i64::from(batch))
                        .fetch_all(self.pool())
                        .await
                        .map_err($crate::vault::db_error("expire stale rows"))?;
                $crate::vault::ending::changes(rows)
            }

            #[::tracing::instrument(skip_all)]
            async fn purge_finished(
                &self,
                cutoff: ::chrono::DateTime<::chrono::Utc>,
                batch: u32,
            ) -> Result<Vec<$crate::vault::StatusChange>, $crate::vault::VaultError> {
                let rows: Vec<$crate::vault::ending::ChangeRecord> =
                    ::sqlx::query_as($crate::vault::sql::statement!($dialect, $purge_finished))
                        .bind(cutoff)
                        .bind(i64::from(batch))
                        .fetch_all(self.pool())
                        .await
                        .map_err($crate::vault::db_error("purge finished rows"))?;
                $crate::vault::ending::changes(rows)
            }

            #[::tracing::instrument(skip_all)]
            async fn mark_expiring(
                &self,
                before: ::chrono::DateTime<::chrono::Utc>,
                now: ::chrono::DateTime<::chrono::Utc>,
                limit: u32,
            ) -> Result<Vec<$crate::vault::ExpiringRow>, $crate::vault::VaultError> {
                ::sqlx::query_as($crate::vault::sql::statement!($dialect, $mark_expiring))
                    .bind(before)
                    .bind(now)
                    .bind(i64::from(limit))
                    .fetch_all(self.pool())
                    .await
                    .map_err($crate::vault::db_error("mark grants as expiring"))
            }

            #[::tracing::instrument(skip_all)]
            async fn due_for_keepalive(
                &self,
                before: ::chrono::DateTime<::chrono::Utc>,
                now: ::chrono::DateTime<::chrono::Utc>,
                limit: u32,
            ) -> Result<Vec<::uuid::Uuid>, $crate::vault::VaultError> {
                let sql = $crate::vault::sql::statement!($dialect,
                    "select id from token_vault \
                     where status = 'active' and refresh_expires_at <= $1 \
                       and (refresh_lease_until is null or refresh_lease_until <= $2) \
                       and (next_refresh_at is null or next_refresh_at <= $2) \
                     order by refresh_expires_at limit $3");
                ::sqlx::query_scalar(sql)
                    .bind(before)
                    .bind(now)
                    .bind(i64::from(limit))
                    .fetch_all(self.pool())
                    .await
                    .map_err($crate::vault::db_error("find grants to keep alive"))
            }
        }
    };
}

pub(super) use ending_store;

/// `id, user_id, task_id, status, status_reason` as both backends return them.
#[derive(sqlx::FromRow)]
pub(super) struct ChangeRecord {
    id: Uuid,
    user_id: String,
    task_id: String,
    status: String,
    status_reason: Option<String>,
}

impl TryFrom<ChangeRecord> for StatusChange {
    type Error = VaultError;

    fn try_from(r: ChangeRecord) -> Result<Self, Self::Error> {
        Ok(StatusChange {
            status: r.status.parse().map_err(|_| VaultError::Corrupt {
                id: r.id,
                problem: "unknown status",
            })?,
            id: r.id,
            user_id: r.user_id,
            task_id: r.task_id,
            reason: r.status_reason.and_then(|code| code.parse().ok()),
        })
    }
}

/// The rows a bulk statement changed, as status changes.
pub(super) fn changes(records: Vec<ChangeRecord>) -> Result<Vec<StatusChange>, VaultError> {
    records.into_iter().map(StatusChange::try_from).collect()
}
