//! Task keys' SQL, written once for both backends: the statements use `$n` placeholders, which
//! the SQLite backend reads in its `?n` dialect (`vault::sql`). The two backends differ in
//! nothing else here, so [`task_key_store`] writes the one implementation for each.

/// `TaskKeyStore` for a vault whose `pool()` runs `sqlx` queries, with `$sql` the backend's
/// dialect (`vault::sql::postgres` or `vault::sql::sqlite`).
macro_rules! task_key_store {
    ($vault:ty, $sql:path) => {
        #[async_trait]
        impl TaskKeyStore for $vault {
            #[tracing::instrument(skip_all, fields(id = %key.id, token_id = %key.token_id))]
            async fn create_task_key(&self, key: &NewTaskKey, max_live: u32) -> Result<bool, VaultError> {
                let credential = key.credential.columns();
                let result = sqlx::query(
                    $crate::vault::sql::statement!($sql, "insert into task_keys (id, token_id, user_id, name, key_hash, scope, expires_at, \
                       max_uses, allowed_cidrs, created_at, workload_issuer, workload_subject, workload_claims) \
                     select $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $13, $14, $15 \
                     where exists (select 1 from token_vault where id = $2 and user_id = $3 \
                                   and status in ('pending', 'active')) \
                       and (select count(*) from task_keys where token_id = $2 \
                            and ((revoked_at is null and expires_at > $10) or created_at > $12)) < $11"),
                )
                .bind(key.id)
                .bind(key.token_id)
                .bind(&key.user_id)
                .bind(&key.name)
                .bind(credential.key_hash)
                .bind(&key.scope)
                .bind(key.expires_at)
                .bind(key.max_uses.map(|n| i32::try_from(n).unwrap_or(i32::MAX)))
                .bind(joined(&key.allowed_cidrs))
                .bind(key.created_at)
                .bind(i64::from(max_live))
                .bind(key.created_at - chrono::Duration::from_std(super::KEY_WINDOW).unwrap_or_default())
                .bind(credential.issuer)
                .bind(credential.subject)
                .bind(credential.claims)
                .execute(self.pool())
                .await
                .map_err(db_error("store a task key"))?;
                Ok(result.rows_affected() == 1)
            }

            async fn purge_task_keys(&self, cutoff: DateTime<Utc>, batch: u32) -> Result<u64, VaultError> {
                let result = sqlx::query(
                    $crate::vault::sql::statement!($sql, "delete from task_keys where id in (select id from task_keys \
                     where revoked_at < $1 or expires_at < $1 limit $2)"),
                )
                .bind(cutoff)
                .bind(i64::from(batch))
                .execute(self.pool())
                .await
                .map_err(db_error("purge ended task keys"))?;
                Ok(result.rows_affected())
            }

            async fn task_keys(&self, token_id: Uuid) -> Result<Vec<TaskKey>, VaultError> {
                let rows: Vec<TaskKeyRecord> = sqlx::query_as($crate::vault::sql::statement!($sql, format!(
                    "select {TASK_KEY_COLUMNS} from task_keys where token_id = $1 order by created_at, id"
                )))
                .bind(token_id)
                .fetch_all(self.pool())
                .await
                .map_err(db_error("list task keys"))?;
                Ok(rows.into_iter().map(TaskKey::from).collect())
            }

            async fn find_task_key(&self, key_hash: &[u8]) -> Result<Option<TaskKey>, VaultError> {
                let row: Option<TaskKeyRecord> = sqlx::query_as($crate::vault::sql::statement!($sql, format!(
                    "select {TASK_KEY_COLUMNS} from task_keys where key_hash = $1"
                )))
                .bind(key_hash)
                .fetch_optional(self.pool())
                .await
                .map_err(db_error("find a task key"))?;
                Ok(row.map(TaskKey::from))
            }

            async fn workload_bindings(
                &self,
                issuer: &str,
                subject: &str,
                limit: u32,
            ) -> Result<Vec<TaskKey>, VaultError> {
                let rows: Vec<TaskKeyRecord> = sqlx::query_as($crate::vault::sql::statement!($sql, format!(
                    "select {TASK_KEY_COLUMNS} from task_keys where workload_issuer = $1 \
                     and workload_subject = $2 and revoked_at is null order by created_at, id limit $3"
                )))
                .bind(issuer)
                .bind(subject)
                .bind(i64::from(limit))
                .fetch_all(self.pool())
                .await
                .map_err(db_error("find workload bindings"))?;
                Ok(rows.into_iter().map(TaskKey::from).collect())
            }

            async fn revoke_task_key(
                &self,
                token_id: Uuid,
                key_id: Uuid,
                kind: $crate::vault::CredentialKind,
                now: DateTime<Utc>,
            ) -> Result<Option<TaskKey>, VaultError> {
                let row: Option<TaskKeyRecord> = sqlx::query_as($crate::vault::sql::statement!($sql, format!(
                    "update task_keys set revoked_at = coalesce(revoked_at, $3) \
                     where id = $2 and token_id = $1 and (key_hash is null) = $4 \
                     returning {TASK_KEY_COLUMNS}"
                )))
                .bind(token_id)
                .bind(key_id)
                .bind(now)
                .bind(kind == $crate::vault::CredentialKind::Workload)
                .fetch_optional(self.pool())
                .await
                .map_err(db_error("revoke a task key"))?;
                Ok(row.map(TaskKey::from))
            }

            async fn reserve_task_key_use(
                &self,
                key_id: Uuid,
                now: DateTime<Utc>,
            ) -> Result<bool, VaultError> {
                let result = sqlx::query(
                    $crate::vault::sql::statement!($sql, "update task_keys set uses = uses + 1, last_used_at = $2 \
                     where id = $1 and revoked_at is null and expires_at > $2 \
                       and (max_uses is null or uses < max_uses)"),
                )
                .bind(key_id)
                .bind(now)
                .execute(self.pool())
                .await
                .map_err(db_error("count a task key use"))?;
                Ok(result.rows_affected() == 1)
            }

            async fn refund_task_key_use(&self, key_id: Uuid) -> Result<(), VaultError> {
                sqlx::query($crate::vault::sql::statement!($sql, "update task_keys set uses = uses - 1 where id = $1 and uses > 0"))
                    .bind(key_id)
                    .execute(self.pool())
                    .await
                    .map_err(db_error("give back a task key use"))?;
                Ok(())
            }

            async fn broker_secret(&self, name: &str) -> Result<Option<Sealed>, VaultError> {
                let row: Option<SecretRecord> = sqlx::query_as(
                    $crate::vault::sql::statement!($sql, "select name, key_id, iv, encrypted_value from broker_secrets where name = $1"),
                )
                .bind(name)
                .fetch_optional(self.pool())
                .await
                .map_err(db_error("read a broker secret"))?;
                Ok(row.map(|r| r.sealed().1))
            }

            async fn store_broker_secret(
                &self,
                name: &str,
                sealed: &Sealed,
                now: DateTime<Utc>,
            ) -> Result<(), VaultError> {
                sqlx::query(
                    $crate::vault::sql::statement!($sql, "insert into broker_secrets (name, encrypted_value, iv, key_id, created_at) \
                     values ($1, $2, $3, $4, $5) on conflict (name) do nothing"),
                )
                .bind(name)
                .bind(&sealed.ciphertext)
                .bind(&sealed.nonce)
                .bind(&sealed.key_id)
                .bind(now)
                .execute(self.pool())
                .await
                .map_err(db_error("store a broker secret"))?;
                Ok(())
            }

            async fn broker_secrets_under_other_keys(
                &self,
                key_id: &str,
            ) -> Result<Vec<(String, Sealed)>, VaultError> {
                let rows: Vec<SecretRecord> = sqlx::query_as(
                    $crate::vault::sql::statement!($sql, "select name, key_id, iv, encrypted_value from broker_secrets where key_id <> $1"),
                )
                .bind(key_id)
                .fetch_all(self.pool())
                .await
                .map_err(db_error("read broker secrets to re-seal"))?;
                Ok(rows.into_iter().map(SecretRecord::sealed).collect())
            }

            async fn reseal_broker_secret(
                &self,
                name: &str,
                old: &Sealed,
                new: &Sealed,
            ) -> Result<bool, VaultError> {
                let result = sqlx::query(
                    $crate::vault::sql::statement!($sql, "update broker_secrets set encrypted_value = $2, iv = $3, key_id = $4 \
                     where name = $1 and key_id = $5 and iv = $6 and encrypted_value = $7"),
                )
                .bind(name)
                .bind(&new.ciphertext)
                .bind(&new.nonce)
                .bind(&new.key_id)
                .bind(&old.key_id)
                .bind(&old.nonce)
                .bind(&old.ciphertext)
                .execute(self.pool())
                .await
                .map_err(db_error("re-seal a broker secret"))?;
                Ok(result.rows_affected() == 1)
            }
        }
    };
}

pub(super) use task_key_store;
