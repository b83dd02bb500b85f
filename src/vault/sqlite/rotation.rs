//! Key rotation on SQLite: a batch of re-seals is one transaction of compare-and-swap updates
//! (SQLite has no arrays to do it in one statement).

use uuid::Uuid;

use super::SqliteVault;
use crate::vault::rotation::{prefix_len, rotation_store};
use crate::vault::sql::sqlite;
use crate::vault::{blob_prefix, db_error, Reseal, VaultError};

rotation_store!(SqliteVault, sqlite, first_id: "x'00000000000000000000000000000000'", {

    #[tracing::instrument(skip_all, fields(rows = reseals.len()))]
    async fn reseal(&self, reseals: &[Reseal]) -> Result<Vec<Uuid>, VaultError> {
        let failed = || db_error("re-seal tokens");
        let mut tx = self.pool().begin().await.map_err(failed())?;
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
        .fetch_all(self.pool())
        .await
        .map_err(failed())?;
        let (Some(first), Some(last)) = (ids.first(), ids.last()) else {
            return Ok((0, None));
        };
        let prefix = blob_prefix(key_id);
        let result = sqlx::query(
            "update token_vault set access_token = null, access_token_expires_at = null, \
             access_token_type = null, access_token_scope = null \
             where id >= ?1 and id <= ?2 \
             and access_token is not null and substr(access_token, 1, ?3) <> ?4",
        )
        .bind(first)
        .bind(last)
        .bind(prefix_len(&prefix))
        .bind(&prefix)
        .execute(self.pool())
        .await
        .map_err(failed())?;
        Ok((result.rows_affected(), Some(*last)))
    }

});
