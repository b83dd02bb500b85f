//! Consents on SQLite: claiming a state and activating a row each read and then write in one
//! `BEGIN IMMEDIATE` transaction, so two callbacks cannot both read the row before either
//! changes it.

use chrono::{DateTime, Utc};

use super::SqliteVault;
use crate::vault::consents::{
    activation, bind_activation, claimable, consent_store, still_claimable, ClaimRecord,
    CLAIM_COLUMNS,
};
use crate::vault::sql::{sqlite, statement};
use crate::vault::{db_error, Activation, ClaimedConsent, Transition, VaultError};

consent_store!(SqliteVault, sqlite, {
    #[tracing::instrument(skip_all)]
    async fn claim_consent(
        &self,
        state_hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<ClaimedConsent>, VaultError> {
        let failed = || db_error("claim a consent");
        let mut tx = self.write_lock("begin a claim").await?;
        let select = statement!(
            sqlite,
            format!(
                "select {CLAIM_COLUMNS} from token_vault where {}",
                claimable!()
            )
        );
        let claimed: Option<ClaimRecord> = sqlx::query_as(select)
            .bind(state_hash)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await
            .map_err(failed())?;
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
            .map_err(failed())?;
            tx.commit().await.map_err(failed())?;
        }
        claimed.map(ClaimedConsent::try_from).transpose()
    }

    #[tracing::instrument(skip_all, fields(id = %consent.id))]
    async fn activate(
        &self,
        consent: ClaimedConsent,
        activation: &Activation<'_>,
    ) -> Result<Option<Transition>, VaultError> {
        let failed = || db_error("activate a consent");
        // The status read is the status replaced.
        let mut tx = self.write_lock("begin an activation").await?;
        let replaced: Option<(String,)> =
            sqlx::query_as("select status from token_vault where id = ?1")
                .bind(consent.id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(failed())?;
        let sql = statement!(
            sqlite,
            concat!(
                "update token_vault as t set ",
                activation!(),
                " where t.id = $1 and ",
                still_claimable!()
            )
        );
        let result = bind_activation!(sqlx::query(sql), consent, activation)
            .execute(&mut *tx)
            .await
            .map_err(failed())?;
        tx.commit().await.map_err(failed())?;
        Transition::activated(
            consent.id,
            replaced
                .filter(|_| result.rows_affected() == 1)
                .map(|(status,)| status),
        )
    }
});
