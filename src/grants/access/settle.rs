//! Settling a claimed refresh: writing the provider's answer back, ending a dead grant,
//! recording a failure. Every write names the claim's fence, so only the current claim can
//! change the row, and nothing is written into a row that stopped being active.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;

use super::super::cache::Minted;
use super::super::changes::announce;
use super::super::scope::Scope;
use super::{binding, refusal, subject, AccessError, Call, Inner, Purpose, Settled};
use crate::audit::Health;
use crate::crypto::{purpose, Sealed};
use crate::oidc::{peek_expiry, peek_scope, RefreshGrant, MAX_LIFETIME_SECS};
use crate::vault::{
    AuditAction, Lease, RefreshFailure, RefreshWrite, Status, StatusReason, StoredAccess,
    Unfinished, VaultError, VaultRow,
};

/// Used when the provider omits `expires_in`: short, so callers come back early, not late.
const DEFAULT_EXPIRES_IN_SECS: u64 = 60;
/// How long a write-back keeps trying through a database outage: the provider may have rotated
/// the refresh token, and the new one exists only in this process until it is stored.
const WRITE_BACK_PATIENCE: Duration = Duration::from_secs(60);

impl Inner {
    /// Seals and writes back what the provider gave; the token is served only if the write
    /// succeeded (or, through a database outage, once the provider's answer is safe to use).
    pub(super) async fn store(
        &self,
        call: Call<'_>,
        lease: Lease,
        presented: &SecretString,
        grant: RefreshGrant,
    ) -> Settled {
        let row = call.row;
        let now = Utc::now();
        let rotated_token = grant
            .refresh_token
            .as_ref()
            .filter(|new| new.expose_secret() != presented.expose_secret());
        let sealed = self.seal_grant(row, rotated_token, &grant, now);
        let (rotated, stored, minted) = match sealed {
            Ok(sealed) => sealed,
            Err(e) => {
                self.release(lease).await;
                return Settled::Done(Err(e));
            }
        };
        let current_refresh = rotated_token.unwrap_or(presented);
        let audit_reason = match (call.purpose, rotated.is_some()) {
            (Purpose::KeepAlive, true) => Some("keepalive:rotated"),
            (Purpose::KeepAlive, false) => Some("keepalive"),
            (Purpose::Serve, true) => Some("rotated"),
            (Purpose::Serve, false) => None,
        };
        let write = RefreshWrite {
            rotated: rotated.as_ref(),
            // A narrowed token is for its caller only; the row shares the full-scope one.
            minted: call.scope.is_none().then_some(&stored),
            refresh_expires_at: Some(self.refresh_expiry(&grant, current_refresh, now)),
            now,
            actor: call.actor,
            audit_reason,
        };
        match self.write_back(lease, &write).await {
            Ok(true) => {}
            Ok(false) => return self.after_lost_write(row, rotated_token, minted).await,
            Err(e) => {
                // The provider answered but the database stayed away: serve the token (it is
                // valid), and say loudly that a rotated refresh token may be lost.
                tracing::error!(
                    id = %row.id, error = %e, rotated = rotated.is_some(),
                    "could not store a refresh's result; if the provider rotated the refresh \
                     token, the grant is lost"
                );
                return Settled::Done(Ok(minted));
            }
        }
        if let Some(asked) = call.scope {
            // The refresh token is stored above whatever the answer's scope: a rotated one
            // must not be lost. The access token goes nowhere unless it is as narrow as asked.
            if let Err(refused) = narrowed_as_asked(asked, &grant) {
                tracing::error!(
                    id = %row.id, asked = %asked, %refused,
                    "the provider did not narrow a refresh to the scope asked for; the token \
                     is not served (Keycloak before 24 ignores scope on a refresh)"
                );
                self.journal
                    .record(
                        call.actor,
                        subject(row),
                        AuditAction::TokenIssued,
                        false,
                        Some("scope_not_narrowed"),
                    )
                    .await;
                return Settled::Done(Err(AccessError::ScopeNotNarrowed));
            }
        }
        if row.health.consecutive_failures > 0 {
            let after_failures = row.health.consecutive_failures;
            self.journal
                .health(subject(row), Health::Recovered { after_failures });
        }
        self.cache
            .put(row.id, call.scope.cloned(), minted.clone(), call.epoch);
        Settled::Done(Ok(minted))
    }

    #[allow(clippy::type_complexity)]
    pub(super) fn seal_grant(
        &self,
        row: &VaultRow,
        rotated: Option<&SecretString>,
        grant: &RefreshGrant,
        now: DateTime<Utc>,
    ) -> Result<(Option<Sealed>, StoredAccess, Minted), AccessError> {
        let sealing = |e| AccessError::Sealed {
            id: row.id,
            source: e,
        };
        let rotated = rotated
            .map(|new| {
                self.keyring.seal(
                    new.expose_secret().as_bytes(),
                    binding(purpose::REFRESH_TOKEN, row),
                )
            })
            .transpose()
            .map_err(sealing)?;
        let expires_in = grant
            .expires_in
            .map(|d| d.as_secs())
            .unwrap_or(DEFAULT_EXPIRES_IN_SECS)
            .min(MAX_LIFETIME_SECS);
        let expires_at = now + chrono::Duration::seconds(i64::try_from(expires_in).unwrap_or(0));
        let sealed_access = self
            .keyring
            .seal(
                grant.access_token.expose_secret().as_bytes(),
                binding(purpose::ACCESS_TOKEN, row),
            )
            .map_err(sealing)?;
        let stored = StoredAccess {
            sealed: sealed_access.to_bytes(),
            expires_at,
            token_type: grant.token_type.clone(),
            scope: grant.scope.clone(),
        };
        let minted = Minted::for_row(
            row,
            grant.access_token.clone(),
            &grant.token_type,
            grant.scope.as_deref(),
            expires_at,
        );
        Ok((rotated, stored, minted))
    }

    /// When the refresh token stops working if unused: as the provider said
    /// (`refresh_expires_in`), else the token's own `exp` if it is a JWT, else the configured
    /// idle time.
    pub(super) fn refresh_expiry(
        &self,
        grant: &RefreshGrant,
        refresh_token: &SecretString,
        now: DateTime<Utc>,
    ) -> DateTime<Utc> {
        let idle = chrono::Duration::from_std(self.settings.offline_idle).unwrap_or_default();
        grant
            .refresh_expires_in
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| now + d)
            .or_else(|| peek_expiry(refresh_token.expose_secret()))
            .unwrap_or(now + idle)
    }

    /// Writes back, retrying through a database outage for a while.
    pub(super) async fn write_back(
        &self,
        mut lease: Lease,
        write: &RefreshWrite<'_>,
    ) -> Result<bool, VaultError> {
        let give_up = tokio::time::Instant::now() + WRITE_BACK_PATIENCE;
        let mut pause = Duration::from_millis(100);
        loop {
            match self.vault.finish_refresh(lease, write).await {
                Ok(written) => return Ok(written),
                Err(Unfinished { lease: held, error })
                    if error.is_unavailable() && tokio::time::Instant::now() < give_up =>
                {
                    tracing::warn!(id = %held.id(), %error, "database away; retrying the write-back");
                    lease = held;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(Unfinished { error, .. }) => return Err(error),
            }
        }
    }

    /// The write-back found the claim gone. A revocation (or expiry) meanwhile wins: the new
    /// token is not served, and a rotated refresh token is revoked at the provider so no live
    /// grant is left behind. A claim taken over by another instance is read again.
    pub(super) async fn after_lost_write(
        &self,
        row: &VaultRow,
        rotated: Option<&SecretString>,
        minted: Minted,
    ) -> Settled {
        let now_row = match self.vault.find(row.id).await {
            Ok(found) => found,
            Err(e) => return Settled::Done(Err(e.into())),
        };
        match now_row {
            Some(current) if current.status == Status::Active => {
                tracing::warn!(id = %row.id, "a refresh lost its claim to another; reading again");
                // The minted access token is valid, but the token stored by whoever holds the
                // row now is the one to share; go round again.
                drop(minted);
                Settled::ClaimLost
            }
            ended => {
                if let (Some(token), true) = (rotated, self.settings.provider_revocation) {
                    if let Err(e) = self.oidc.revoke_refresh_token(token).await {
                        tracing::warn!(id = %row.id, error = %e, "could not revoke an orphaned token");
                    }
                }
                Settled::Done(Err(match ended {
                    Some(row) => refusal(&row),
                    None => AccessError::NotFound,
                }))
            }
        }
    }

    /// `invalid_grant`: the grant is dead, if the token we presented is still the row's. If
    /// another claim moved on meanwhile (its refresh rotated the token), ours was merely stale.
    pub(super) async fn end_dead_grant(&self, call: Call<'_>, lease: Lease) -> Settled {
        let row = call.row;
        let now = Utc::now();
        let transition = match self
            .vault
            .fail_refresh(lease, &StatusReason::RevokedByProvider, now)
            .await
        {
            Ok(Some(transition)) => transition,
            Ok(None) => return Settled::ClaimLost,
            Err(e) => return Settled::Done(Err(e.into())),
        };
        tracing::warn!(id = %row.id, "provider refused the offline token; row failed");
        let subject = subject(row);
        announce(
            &self.journal,
            &self.changes,
            &transition,
            call.actor,
            subject,
            None,
        )
        .await;
        self.journal.health(
            subject,
            Health::RefreshFailed {
                status: Status::Failed,
                consecutive_failures: row.health.consecutive_failures + 1,
                error: StatusReason::RevokedByProvider.to_string(),
            },
        );
        Settled::Done(Err(AccessError::Gone {
            status: Status::Failed,
            reason: Some(StatusReason::RevokedByProvider),
        }))
    }

    /// A failed attempt that leaves the grant alive: released, counted, journaled.
    pub(super) async fn record_failure(
        &self,
        call: Call<'_>,
        lease: Lease,
        error: &str,
        back_off: Option<Duration>,
    ) {
        let row = call.row;
        let now = Utc::now();
        let failure = RefreshFailure {
            error,
            retry_at: back_off
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| now + d),
            now,
        };
        if let Err(e) = self.vault.release_refresh(lease, Some(&failure)).await {
            tracing::warn!(id = %row.id, error = %e, "could not record a failed refresh; the lease will expire");
        }
        let subject = subject(row);
        self.journal
            .record(
                call.actor,
                subject,
                AuditAction::TokenIssued,
                false,
                Some(error),
            )
            .await;
        if row.health.consecutive_failures == 0 {
            self.journal.health(
                subject,
                Health::RefreshFailed {
                    status: Status::Active,
                    consecutive_failures: 1,
                    error: error.to_owned(),
                },
            );
        }
    }

    pub(super) async fn release(&self, lease: Lease) {
        let id = lease.id();
        if let Err(e) = self.vault.release_refresh(lease, None).await {
            tracing::warn!(%id, error = %e, "could not release a refresh claim; it will expire");
        }
    }
}

/// Whether a narrowed refresh came back no broader than `asked`: by the answer's `scope`, or
/// else the access token's own `scope` claim (read unverified: it came from the provider over
/// the broker's own connection, and only narrows what is served). `offline_access` is not an
/// access right and may come back with any answer. If neither says, the scope is unknown and
/// the token is refused.
fn narrowed_as_asked(asked: &Scope, grant: &RefreshGrant) -> Result<(), &'static str> {
    let said = grant
        .scope
        .clone()
        .or_else(|| peek_scope(grant.access_token.expose_secret()))
        .ok_or("the provider did not say which scope it granted")?;
    let got = Scope::parse(&said).map_err(|_| "the provider's scope does not parse")?;
    if got.without("offline_access").is_subset(asked) {
        Ok(())
    } else {
        Err("the token is broader than asked for")
    }
}
