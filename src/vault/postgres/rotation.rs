//! Key rotation on PostgreSQL: a batch of re-seals is one compare-and-swap statement over
//! arrays (`unnest`), and stored access tokens are dropped a batch of ids at a time, so no
//! statement touches a million rows or outlives the statement timeout.

use uuid::Uuid;

use super::PgVault;
use crate::vault::rotation::{prefix_len, rotation_store};
use crate::vault::sql::{postgres, statement};
use crate::vault::{blob_prefix, db_error, Reseal, VaultError};

/// The smallest id: where a scan with no `after` starts.
const FIRST: &str = "'00000000-0000-0000-0000-000000000000'::uuid";

rotation_store!(PgVault, postgres, first_id: FIRST, {

    #[tracing::instrument(skip_all, fields(rows = reseals.len()))]
    async fn reseal(&self, reseals: &[Reseal]) -> Result<Vec<Uuid>, VaultError> {
        let column = |f: fn(&Reseal) -> Vec<u8>| reseals.iter().map(f).collect::<Vec<_>>();
        let text = |f: fn(&Reseal) -> String| reseals.iter().map(f).collect::<Vec<_>>();
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
        .bind(text(|r| r.old.key_id.clone()))
        .bind(column(|r| r.old.nonce.clone()))
        .bind(column(|r| r.old.ciphertext.clone()))
        .bind(text(|r| r.new.key_id.clone()))
        .bind(column(|r| r.new.nonce.clone()))
        .bind(column(|r| r.new.ciphertext.clone()))
        .fetch_all(self.pool())
        .await
        .map_err(db_error("re-seal tokens"))
    }

    async fn drop_access_tokens_under_other_keys(
        &self,
        key_id: &str,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<(u64, Option<Uuid>), VaultError> {
        let prefix = blob_prefix(key_id);
        let (dropped, last): (i64, Option<Uuid>) = sqlx::query_as(statement!(
            postgres,
            format!(
            "with batch as ( \
               select id from token_vault where id > coalesce($3, {FIRST}) order by id limit $4), \
             dropped as ( \
               update token_vault t set access_token = null, access_token_expires_at = null, \
                 access_token_type = null, access_token_scope = null \
               from batch where t.id = batch.id and t.access_token is not null \
                 and substr(t.access_token, 1, $1) <> $2 \
               returning 1) \
             select (select count(*) from dropped), (select id from batch order by id desc limit 1)"
            )
        ))
        .bind(prefix_len(&prefix))
        .bind(&prefix)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_one(self.pool())
        .await
        .map_err(db_error("drop stored access tokens under old keys"))?;
        Ok((u64::try_from(dropped).unwrap_or(0), last))
    }

});
