//! Key rotation as the vault sees it: finding values sealed under other keys and replacing
//! each by compare-and-swap, so a refresh that rotated a token meanwhile is never overwritten.
//! [`RotationStore`] is the role; the statements both backends accept are written once in
//! [`rotation_store!`].

use async_trait::async_trait;
use uuid::Uuid;

use super::VaultError;
use crate::crypto::Sealed;

/// A row's sealed refresh token and what to replace it with.
#[derive(Debug)]
pub struct Reseal {
    pub id: Uuid,
    pub old: Sealed,
    pub new: Sealed,
}

/// A sealed value kept as one blob (`Sealed::to_bytes`), as key rotation sees it.
#[derive(Debug, sqlx::FromRow)]
pub struct SealedBlob {
    pub id: Uuid,
    pub user_id: String,
    pub blob: Vec<u8>,
}

/// A sealed token as key rotation sees it.
#[derive(Debug)]
pub struct SealedRow {
    pub id: Uuid,
    pub user_id: String,
    pub sealed: Sealed,
}

#[async_trait]
pub trait RotationStore: Send + Sync {
    /// Up to `limit` sealed tokens not sealed under `key_id`, in id order after `after`.
    async fn sealed_under_other_keys(
        &self,
        key_id: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<SealedRow>, VaultError>;

    /// For each row, replaces `old` with `new` if the row still holds exactly `old`
    /// (compare-and-swap), so a refresh that rotated the token meanwhile is never overwritten.
    /// One statement for the batch; returns the rows that were re-sealed.
    async fn reseal(&self, reseals: &[Reseal]) -> Result<Vec<Uuid>, VaultError>;

    /// Every sealed value not under `key_id`: refresh tokens, stored access tokens, pending
    /// consents' PKCE verifiers, the broker's own secrets.
    async fn count_sealed_under_other_keys(&self, key_id: &str) -> Result<u64, VaultError>;

    /// Stored access tokens are a cache: those not sealed under `key_id` are dropped (the next
    /// call mints a new one). One batch: the next `limit` rows in id order after `after`.
    /// Returns how many were dropped and the last row looked at (None: no rows were left).
    async fn drop_access_tokens_under_other_keys(
        &self,
        key_id: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<(u64, Option<Uuid>), VaultError>;

    /// Up to `limit` PKCE verifiers (`Sealed::to_bytes` blobs) not sealed under `key_id`, in id
    /// order after `after`.
    async fn verifiers_under_other_keys(
        &self,
        key_id: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<SealedBlob>, VaultError>;

    /// Replaces a PKCE verifier blob if the row still holds exactly `old`.
    async fn reseal_verifier(&self, id: Uuid, old: &[u8], new: &[u8]) -> Result<bool, VaultError>;
}

/// The first bytes of every `Sealed::to_bytes` blob sealed under `key_id`: its length and
/// the id itself. Blobs that do not start so are sealed under another key.
pub(crate) fn blob_prefix(key_id: &str) -> Vec<u8> {
    let mut prefix = vec![u8::try_from(key_id.len()).unwrap_or(u8::MAX)];
    prefix.extend_from_slice(key_id.as_bytes());
    prefix
}

/// The length of [`blob_prefix`], as a statement binds it.
pub(super) fn prefix_len(prefix: &[u8]) -> i32 {
    i32::try_from(prefix.len()).unwrap_or(0)
}

/// `RotationStore` for `$vault`: the statements both backends accept (`substr` on bytes is
/// both dialects'), in `$dialect`, and the backend's own statements given as `{ … }`.
/// `$first_id` is the smallest id as a literal of the backend, where a scan with no `after`
/// starts: `id > coalesce($n, first)` lets both planners walk the primary key from there.
macro_rules! rotation_store {
    ($vault:ty, $dialect:path, first_id: $first_id:expr, { $($own:tt)* }) => {
        #[::async_trait::async_trait]
        impl $crate::vault::RotationStore for $vault {
            $($own)*

            #[tracing::instrument(skip_all)]
            async fn sealed_under_other_keys(
                &self,
                key_id: &str,
                after: Option<::uuid::Uuid>,
                limit: u32,
            ) -> Result<Vec<$crate::vault::SealedRow>, $crate::vault::VaultError> {
                let sql = $crate::vault::sql::statement!($dialect, format!(
                    "select id, user_id, key_id, iv, encrypted_token from token_vault \
                     where encrypted_token is not null and key_id <> $1 \
                     and id > coalesce($2, {}) order by id limit $3", $first_id));
                let rows: Vec<$crate::vault::rotation::SealedRecord> = ::sqlx::query_as(sql)
                    .bind(key_id)
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(self.pool())
                    .await
                    .map_err($crate::vault::db_error("read tokens to re-seal"))?;
                Ok(rows.into_iter().map($crate::vault::SealedRow::from).collect())
            }

            async fn verifiers_under_other_keys(
                &self,
                key_id: &str,
                after: Option<::uuid::Uuid>,
                limit: u32,
            ) -> Result<Vec<$crate::vault::SealedBlob>, $crate::vault::VaultError> {
                let prefix = $crate::vault::blob_prefix(key_id);
                let sql = $crate::vault::sql::statement!($dialect, format!(
                    "select id, user_id, pkce_verifier as blob from token_vault \
                     where pkce_verifier is not null and substr(pkce_verifier, 1, $1) <> $2 \
                     and id > coalesce($3, {}) order by id limit $4", $first_id));
                ::sqlx::query_as(sql)
                    .bind($crate::vault::rotation::prefix_len(&prefix))
                    .bind(&prefix)
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(self.pool())
                    .await
                    .map_err($crate::vault::db_error("read PKCE verifiers to re-seal"))
            }

            async fn count_sealed_under_other_keys(
                &self,
                key_id: &str,
            ) -> Result<u64, $crate::vault::VaultError> {
                let prefix = $crate::vault::blob_prefix(key_id);
                let sql = $crate::vault::sql::statement!($dialect,
                    "select (select count(*) from token_vault \
                             where encrypted_token is not null and key_id <> $1) \
                          + (select count(*) from token_vault \
                             where access_token is not null and substr(access_token, 1, $2) <> $3) \
                          + (select count(*) from token_vault \
                             where pkce_verifier is not null and substr(pkce_verifier, 1, $2) <> $3) \
                          + (select count(*) from broker_secrets where key_id <> $1)");
                let count: i64 = ::sqlx::query_scalar(sql)
                    .bind(key_id)
                    .bind($crate::vault::rotation::prefix_len(&prefix))
                    .bind(&prefix)
                    .fetch_one(self.pool())
                    .await
                    .map_err($crate::vault::db_error("count values to re-seal"))?;
                Ok(u64::try_from(count).unwrap_or(0))
            }

            async fn reseal_verifier(
                &self,
                id: ::uuid::Uuid,
                old: &[u8],
                new: &[u8],
            ) -> Result<bool, $crate::vault::VaultError> {
                let sql = $crate::vault::sql::statement!($dialect,
                    "update token_vault set pkce_verifier = $2 where id = $1 and pkce_verifier = $3");
                let result = ::sqlx::query(sql)
                    .bind(id)
                    .bind(new)
                    .bind(old)
                    .execute(self.pool())
                    .await
                    .map_err($crate::vault::db_error("re-seal a PKCE verifier"))?;
                Ok(result.rows_affected() == 1)
            }
        }
    };
}

pub(super) use rotation_store;

#[derive(sqlx::FromRow)]
pub(super) struct SealedRecord {
    id: Uuid,
    user_id: String,
    key_id: String,
    iv: Vec<u8>,
    encrypted_token: Vec<u8>,
}

impl From<SealedRecord> for SealedRow {
    fn from(r: SealedRecord) -> Self {
        SealedRow {
            id: r.id,
            user_id: r.user_id,
            sealed: Sealed {
                key_id: r.key_id,
                nonce: r.iv,
                ciphertext: r.encrypted_token,
            },
        }
    }
}
