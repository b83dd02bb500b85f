//! Revocation: the owner's DELETE and the admin page's button end a grant the same way.
//!
//! The row is ended first, in one statement that also wipes every secret it holds and voids
//! any refresh in flight; only then is the token (as it was just before) revoked at the
//! provider. A revocation therefore wins over a refresh running at the same moment, and no
//! database lock is held while the provider answers.

use std::sync::Arc;

use chrono::Utc;
use uuid::Uuid;

use super::caller::{Caller, Manages};
use super::changes::announce;
use super::changes::StatusChanges;
use crate::audit::{Journal, Subject};
use crate::crypto::{purpose, Binding, Keyring};
use crate::oidc::OidcClient;
use crate::vault::{Ended, Status, StatusReason, TokenVault, Transition, VaultError, VaultRow};

#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    #[error("no such token for this caller")]
    NotFound,
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// What happened at the provider.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderRevocation {
    Revoked,
    /// The provider was unreachable or refused (logged); our copy is gone regardless.
    Failed,
    /// `PROVIDER_REVOCATION=none`.
    Disabled,
    /// Nothing was stored (a pending consent), or the row was already revoked.
    NotNeeded,
}

impl ProviderRevocation {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderRevocation::Revoked => "revoked",
            ProviderRevocation::Failed => "failed",
            ProviderRevocation::Disabled => "disabled",
            ProviderRevocation::NotNeeded => "not_needed",
        }
    }
}

pub struct Revoked {
    /// The row after revocation.
    pub row: VaultRow,
    pub provider: ProviderRevocation,
}

pub struct Revoker {
    vault: Arc<dyn TokenVault>,
    oidc: Arc<OidcClient>,
    keyring: Arc<Keyring>,
    journal: Journal,
    changes: StatusChanges,
    /// Revoke at the provider too (RFC 7009).
    at_provider: bool,
}

impl Revoker {
    pub fn new(
        vault: Arc<dyn TokenVault>,
        oidc: Arc<OidcClient>,
        keyring: Arc<Keyring>,
        journal: Journal,
        changes: StatusChanges,
        at_provider: bool,
    ) -> Self {
        Self {
            vault,
            oidc,
            keyring,
            journal,
            changes,
            at_provider,
        }
    }

    /// Revokes row `id` for `caller`: its owner (`revoked_by_user`) or an operator
    /// (`revoked_by_admin`). A row the caller may not manage is `NotFound`, checked in the
    /// statement that ends it. Revoking a revoked row changes nothing.
    pub async fn revoke(&self, id: Uuid, caller: &Caller) -> Result<Revoked, RevokeError> {
        let (owner, why) = match caller.manages() {
            Manages::Own(owner) => (Some(owner), StatusReason::RevokedByUser),
            Manages::Any => (None, StatusReason::RevokedByAdmin),
            Manages::Nothing => return Err(RevokeError::NotFound),
        };
        let (actor, why) = (caller.actor(), &why);
        let before = match self
            .vault
            .end_grant(id, owner, Status::Revoked, why, Utc::now())
            .await?
        {
            Ended::Missing => return Err(RevokeError::NotFound),
            Ended::Unchanged(row) => {
                return Ok(Revoked {
                    row,
                    provider: ProviderRevocation::NotNeeded,
                })
            }
            Ended::Ended(before) => before,
        };
        let transition = Transition {
            from: before.status,
            to: Status::Revoked,
            reason: Some(why.clone()),
        };
        self.changes.changed(id);
        let provider = self.revoke_at_provider(&before).await;
        let subject = Subject {
            token_id: id,
            user_id: &before.user_id,
            task_id: &before.task_id,
        };
        // e.g. "revoked_by_user:provider_revoked": what happened here and at the provider.
        let reason = format!("{why}:provider_{}", provider.as_str());
        announce(
            &self.journal,
            &self.changes,
            &transition,
            &actor,
            subject,
            Some(&reason),
        )
        .await;
        let row = self.vault.find(id).await?.ok_or(RevokeError::NotFound)?;
        Ok(Revoked { row, provider })
    }

    /// Revokes the token the row held at the provider. Failure does not undo anything: the user
    /// asked for the token to be gone, and wiping our copy already makes it unusable here.
    async fn revoke_at_provider(&self, row: &VaultRow) -> ProviderRevocation {
        let Some(sealed) = &row.sealed else {
            return ProviderRevocation::NotNeeded;
        };
        if !self.at_provider {
            return ProviderRevocation::Disabled;
        }
        let binding = Binding {
            purpose: purpose::REFRESH_TOKEN,
            row_id: row.id,
            user_id: &row.user_id,
        };
        let token = match self.keyring.open_string(sealed, binding) {
            Ok(token) => token,
            Err(e) => {
                tracing::error!(id = %row.id, error = %e, "cannot open a token to revoke it");
                return ProviderRevocation::Failed;
            }
        };
        match self.oidc.revoke_refresh_token(&token).await {
            Ok(()) => ProviderRevocation::Revoked,
            Err(e) => {
                tracing::warn!(id = %row.id, error = %e, "provider revocation failed");
                ProviderRevocation::Failed
            }
        }
    }
}
