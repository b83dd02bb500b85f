//! The access-token hot path: cached, single-flight, shared between instances.
//!
//! 1. A token minted for the row and valid beyond the margin is served from memory: no
//!    database, no provider.
//! 2. Otherwise one request per row at a time (in this process) goes on; the others wait and
//!    then find the cache filled.
//! 3. That request takes the row lock in the database (other processes wait there), and reuses
//!    the access token another instance stored meanwhile, if any.
//! 4. Only then does it refresh at the provider, and stores the new access token and any rotated
//!    refresh token in the same transaction.
//!
//! Cached tokens die with their row's status: the journal invalidates on every status change
//! here, and the database's change feed (PostgreSQL LISTEN/NOTIFY) on changes made elsewhere.

mod cache;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

pub use cache::{AccessTokenCache, Minted};

use crate::audit::{Journal, Subject};
use crate::crypto::{purpose, Binding, Keyring, Sealed};
use crate::oidc::{OidcClient, ProviderError, RefreshGrant};
use crate::telemetry;
use crate::vault::row_locks::RowLocks;
use crate::vault::{
    AuditAction, RefreshLease, Status, StoredAccess, TokenVault, VaultError, VaultRow,
};

/// Used when the provider omits `expires_in`: short, so callers come back early, not late.
const DEFAULT_EXPIRES_IN_SECS: u64 = 60;
const REVOKED_BY_PROVIDER: &str = "revoked_by_provider";
const ACCESS_TOKEN_PURPOSE: &str = "access_token";

#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    #[error("no such token for this caller")]
    NotFound,
    #[error("consent not completed")]
    Pending,
    #[error("token is {status}")]
    Gone {
        status: Status,
        reason: Option<String>,
    },
    #[error("provider unavailable")]
    ProviderUnavailable,
    #[error("provider rejected the broker")]
    ProviderRejected,
    #[error("{0}")]
    Internal(String),
}

impl From<VaultError> for RefreshError {
    fn from(e: VaultError) -> Self {
        RefreshError::Internal(e.to_string())
    }
}

pub struct RefreshSettings {
    /// A cached token is handed out only while it has more than this left.
    pub margin: Duration,
    /// Attempts for a refresh that certainly did not reach the provider (connection refused).
    pub attempts: u32,
    pub retry_base: Duration,
}

pub struct Refresher {
    vault: Arc<dyn TokenVault>,
    oidc: Arc<OidcClient>,
    keyring: Arc<Keyring>,
    journal: Journal,
    cache: Arc<AccessTokenCache>,
    flights: RowLocks,
    settings: RefreshSettings,
}

impl Refresher {
    pub fn new(
        vault: Arc<dyn TokenVault>,
        oidc: Arc<OidcClient>,
        keyring: Arc<Keyring>,
        journal: Journal,
        cache: Arc<AccessTokenCache>,
        settings: RefreshSettings,
    ) -> Self {
        Self {
            vault,
            oidc,
            keyring,
            journal,
            cache,
            flights: RowLocks::default(),
            settings,
        }
    }

    /// A valid access token of row `id` for its owner `caller`.
    pub async fn access_token(&self, caller: &str, id: Uuid) -> Result<Minted, RefreshError> {
        let cached = self.cached(id);
        telemetry::record_cache(cached.is_some());
        if let Some(hit) = cached {
            return owned_by(hit, caller);
        }
        let _flight = self.flights.lock(id).await;
        if let Some(hit) = self.cached(id) {
            return owned_by(hit, caller);
        }
        let lease = self
            .vault
            .lock_for_refresh(id)
            .await?
            .ok_or(RefreshError::NotFound)?;
        // Someone else's token id is answered exactly like a missing one.
        if lease.row().user_id != caller {
            return Err(RefreshError::NotFound);
        }
        refuse_unusable(lease.row())?;
        let minted = match self.stored_access(lease.row())? {
            // Another instance minted one while we waited for the row lock. Dropping the lease
            // releases the lock without writing.
            Some(minted) => minted,
            None => {
                let refresh_token = self.open(lease.row())?;
                let outcome = self.refresh(&refresh_token).await;
                self.settle(lease, &refresh_token, outcome, caller).await?
            }
        };
        self.cache.put(id, minted.clone());
        Ok(minted)
    }

    fn cached(&self, id: Uuid) -> Option<Minted> {
        self.cache.get(id, Utc::now() + self.settings.margin)
    }

    fn binding<'a>(purpose: &'static str, row: &'a VaultRow) -> Binding<'a> {
        Binding {
            purpose,
            row_id: row.id,
            user_id: &row.user_id,
        }
    }

    fn stored_access(&self, row: &VaultRow) -> Result<Option<Minted>, RefreshError> {
        let Some(stored) = &row.access else {
            return Ok(None);
        };
        if stored.expires_at <= Utc::now() + self.settings.margin {
            return Ok(None);
        }
        let sealed = Sealed::from_bytes(&stored.sealed).map_err(internal(row.id))?;
        let access_token = self
            .keyring
            .open_string(&sealed, Self::binding(ACCESS_TOKEN_PURPOSE, row))
            .map_err(internal(row.id))?;
        Ok(Some(Minted {
            user_id: row.user_id.clone(),
            access_token,
            token_type: stored.token_type.clone(),
            scope: stored.scope.clone(),
            expires_at: stored.expires_at,
        }))
    }

    fn open(&self, row: &VaultRow) -> Result<SecretString, RefreshError> {
        let sealed = row
            .sealed
            .as_ref()
            .ok_or_else(|| RefreshError::Internal(format!("active row {} has no token", row.id)))?;
        self.keyring
            .open_string(sealed, Self::binding(purpose::REFRESH_TOKEN, row))
            .map_err(internal(row.id))
    }

    /// Refreshes at the provider, retrying with backoff only when the request certainly did
    /// not reach it.
    async fn refresh(&self, refresh_token: &SecretString) -> Result<RefreshGrant, ProviderError> {
        let mut delay = self.settings.retry_base;
        let mut attempt = 1;
        loop {
            match self.oidc.refresh(refresh_token).await {
                Err(ProviderError::Unavailable {
                    retry_now: true,
                    reason,
                }) if attempt < self.settings.attempts => {
                    tracing::info!(attempt, %reason, "provider unreachable; retrying");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Writes the provider's answer back under the row lock and journals it. A rotated refresh
    /// token is sealed and stored in the same transaction that holds the lock: were it lost, the
    /// next refresh would present a spent token and the grant would be gone.
    async fn settle(
        &self,
        lease: Box<dyn RefreshLease>,
        presented: &SecretString,
        outcome: Result<RefreshGrant, ProviderError>,
        actor: &str,
    ) -> Result<Minted, RefreshError> {
        let row = lease.row();
        let (id, user_id, task_id) = (row.id, row.user_id.clone(), row.task_id.clone());
        let subject = Subject {
            token_id: id,
            user_id: &user_id,
            task_id: &task_id,
        };
        telemetry::record_refresh(match &outcome {
            Ok(_) => "success",
            Err(ProviderError::InvalidGrant) => "invalid_grant",
            Err(ProviderError::Unavailable { .. }) => "unavailable",
            Err(ProviderError::Rejected(_)) => "rejected",
        });
        let grant = match outcome {
            Ok(grant) => grant,
            Err(ProviderError::InvalidGrant) => {
                lease.finish_failed(REVOKED_BY_PROVIDER, Utc::now()).await?;
                tracing::warn!(%id, "provider refused the offline token; row failed");
                let action = AuditAction::TokenRefreshFailed;
                self.journal
                    .record(actor, subject, action, false, Some(REVOKED_BY_PROVIDER))
                    .await;
                return Err(RefreshError::Gone {
                    status: Status::Failed,
                    reason: Some(REVOKED_BY_PROVIDER.into()),
                });
            }
            Err(ProviderError::Unavailable { reason, .. }) => {
                // Dropping the lease rolls back: the row stays exactly as it was.
                drop(lease);
                tracing::warn!(%id, %reason, "provider unavailable during refresh");
                let action = AuditAction::TokenIssued;
                self.journal
                    .record(actor, subject, action, false, Some("provider_unavailable"))
                    .await;
                return Err(RefreshError::ProviderUnavailable);
            }
            Err(ProviderError::Rejected(reason)) => {
                drop(lease);
                tracing::error!(%id, %reason, "provider rejected the refresh request");
                return Err(RefreshError::ProviderRejected);
            }
        };

        let rotated = match &grant.refresh_token {
            Some(new) if new.expose_secret() != presented.expose_secret() => Some(
                self.keyring
                    .seal(
                        new.expose_secret().as_bytes(),
                        Self::binding(purpose::REFRESH_TOKEN, row),
                    )
                    .map_err(internal(id))?,
            ),
            _ => None,
        };
        let now = Utc::now();
        let expires_in = grant
            .expires_in
            .map(|d| d.as_secs())
            .unwrap_or(DEFAULT_EXPIRES_IN_SECS);
        let expires_at = now + chrono::Duration::seconds(i64::try_from(expires_in).unwrap_or(0));
        let sealed_access = self
            .keyring
            .seal(
                grant.access_token.expose_secret().as_bytes(),
                Self::binding(ACCESS_TOKEN_PURPOSE, row),
            )
            .map_err(internal(id))?;
        let stored = StoredAccess {
            sealed: sealed_access.to_bytes(),
            expires_at,
            token_type: grant.token_type.clone(),
            scope: grant.scope.clone(),
        };
        lease
            .finish_used(rotated.as_ref(), Some(&stored), now)
            .await?;
        let detail = rotated.as_ref().map(|_| "rotated");
        self.journal
            .record(actor, subject, AuditAction::TokenIssued, true, detail)
            .await;
        Ok(Minted {
            user_id,
            access_token: grant.access_token,
            token_type: grant.token_type,
            scope: grant.scope,
            expires_at,
        })
    }
}

fn owned_by(minted: Minted, caller: &str) -> Result<Minted, RefreshError> {
    if minted.user_id == caller {
        Ok(minted)
    } else {
        Err(RefreshError::NotFound)
    }
}

fn internal<E: std::fmt::Display>(id: Uuid) -> impl Fn(E) -> RefreshError {
    move |e| RefreshError::Internal(format!("row {id}: {e}"))
}

fn refuse_unusable(row: &VaultRow) -> Result<(), RefreshError> {
    match row.status {
        Status::Active if row.expires_at <= Utc::now() => Err(RefreshError::Gone {
            status: Status::Expired,
            reason: Some("max_age_reached".into()),
        }),
        Status::Active => Ok(()),
        Status::Pending => Err(RefreshError::Pending),
        other => Err(RefreshError::Gone {
            status: other,
            reason: row.status_reason.clone(),
        }),
    }
}
