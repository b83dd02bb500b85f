//! Consents on PostgreSQL: claiming a state and activating a row are each one statement whose
//! CTE reads the row under the lock the update then uses, so a replayed state or a revocation
//! racing the callback finds the row already changed.

use chrono::{DateTime, Utc};

use super::PgVault;
use crate::vault::consents::{
    activation, bind_activation, claimable, consent_store, still_claimable, ClaimRecord,
    CLAIM_COLUMNS,
};
use crate::vault::sql::{postgres, statement};
use crate::vault::{db_error, Activation, ClaimedConsent, Transition, VaultError};

consent_store!(PgVault, postgres, {
    #[tracing::instrument(skip_all)]
    async fn claim_consent(
        &self,
        state_hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<ClaimedConsent>, VaultError> {
        // One statement: the row lock taken by the CTE makes a concurrent replay wait, and by
        // then the digest is gone, so exactly one request wins.
        let sql = statement!(
            postgres,
            format!(
                "with claimed as (select {CLAIM_COLUMNS} from token_vault where {} for update) \
             update token_vault t \
             set state_hash = null, pkce_verifier = null, nonce_hash = null, updated_at = $2 \
             from claimed where t.id = claimed.id returning claimed.*",
                claimable!()
            )
        );
        let claimed: Option<ClaimRecord> = sqlx::query_as(sql)
            .bind(state_hash)
            .bind(now)
            .fetch_optional(self.pool())
            .await
            .map_err(db_error("claim a consent"))?;
        claimed.map(ClaimedConsent::try_from).transpose()
    }

    #[tracing::instrument(skip_all, fields(id = %consent.id))]
    async fn activate(
        &self,
        consent: ClaimedConsent,
        activation: &Activation<'_>,
    ) -> Result<Option<Transition>, VaultError> {
        // The CTE reads the status being replaced under the row lock the update then uses.
        let sql = statement!(
            postgres,
            concat!(
                "with old as (select id, status from token_vault where id = $1 for update) \
             update token_vault t set ",
                activation!(),
                " from old where t.id = old.id and ",
                still_claimable!(),
                " returning old.status"
            )
        );
        let replaced: Option<(String,)> =
            bind_activation!(sqlx::query_as(sql), consent, activation)
                .fetch_optional(self.pool())
                .await
                .map_err(db_error("activate a consent"))?;
        Transition::activated(consent.id, replaced.map(|(status,)| status))
    }
});
