//! Minting access tokens from sealed offline tokens: the hot path and its fault handling.
//!
//! 1. A token minted for the row and valid beyond the margin is served from memory.
//! 2. Otherwise the row is read (no lock) and its owner checked; a token another instance
//!    stored in the row is served if fresh.
//! 3. Otherwise one refresh per row runs in this process ([`Flights`]), detached from the
//!    request. It claims the row with a lease (a short statement; no connection or lock is held
//!    afterwards), calls the provider, and writes the answer back only if its claim still stands
//!    (the fence) and the row is still active — a revocation meanwhile wins.
//! 4. Waiting instances poll the row until the holder's token appears or its lease runs out.
//!
//! See `docs/reliability.md` for each fault and what the broker promises in it.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

use super::breaker::{Breaker, BreakerSettings, Outcome};
use super::cache::{AccessTokenCache, Minted};
use super::changes::StatusChanges;
use super::flight::Flights;
use crate::audit::{Health, Journal, Subject, SYSTEM};
use crate::crypto::{purpose, Binding, CryptoError, Keyring, Sealed};
use crate::oidc::{peek_expiry, OidcClient, ProviderError, RefreshGrant, MAX_LIFETIME_SECS};
use crate::telemetry;
use crate::vault::{
    AuditAction, Claim, RefreshFailure, RefreshWrite, Status, StoredAccess, TokenVault, VaultError,
    VaultRow,
};

/// Used when the provider omits `expires_in`: short, so callers come back early, not late.
const DEFAULT_EXPIRES_IN_SECS: u64 = 60;
const REVOKED_BY_PROVIDER: &str = "revoked_by_provider";
/// A waiting instance re-reads the row this often at first, backing off to the maximum.
const FIRST_POLL: Duration = Duration::from_millis(20);
const MAX_POLL: Duration = Duration::from_millis(250);
/// Claims lost to a race (another instance, a re-consent) before giving up with a 503.
const MAX_ROUNDS: u32 = 4;
/// How long a write-back keeps trying through a database outage: the provider may have rotated
/// the refresh token, and the new one exists only in this process until it is stored.
const WRITE_BACK_PATIENCE: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, thiserror::Error)]
pub enum AccessError {
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
    ProviderUnavailable { retry_after: Option<Duration> },
    #[error("too many refreshes in flight")]
    ProviderBusy,
    #[error("provider rejected the broker")]
    ProviderRejected { retry_after: Option<Duration> },
    #[error(transparent)]
    Vault(Arc<VaultError>),
    #[error("row {id}: {source}")]
    Sealed { id: Uuid, source: CryptoError },
    #[error("the refresh task died")]
    TaskLost,
}

impl From<VaultError> for AccessError {
    fn from(e: VaultError) -> Self {
        AccessError::Vault(Arc::new(e))
    }
}

#[derive(Clone, Debug)]
pub struct RefreshSettings {
    /// A cached token is handed out only while it has more than this left.
    pub margin: Duration,
    /// Attempts for a refresh that certainly did not reach the provider (connection refused).
    pub attempts: u32,
    pub retry_base: Duration,
    /// One provider call may take this long; then it counts as unavailable.
    pub provider_timeout: Duration,
    /// A refresh claim lasts this long; longer than any provider call may take.
    pub lease: Duration,
    /// Provider calls in flight at once; beyond it, 503 at once.
    pub max_concurrent: usize,
    pub breaker: BreakerSettings,
    /// How long a refresh token works unused when neither the provider nor the token says
    /// (Keycloak's Offline Session Idle).
    pub offline_idle: Duration,
    /// Revoke a token minted for a row that was revoked meanwhile.
    pub provider_revocation: bool,
}

/// What a refresh is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// A caller wants a token: a fresh stored one will do.
    Serve,
    /// Keep-alive: the refresh token itself must be used, to reset the provider's idle timer.
    KeepAlive,
}

#[derive(Clone)]
pub struct Refresher {
    inner: Arc<Inner>,
}

struct Inner {
    vault: Arc<dyn TokenVault>,
    oidc: Arc<OidcClient>,
    keyring: Arc<Keyring>,
    journal: Journal,
    cache: Arc<AccessTokenCache>,
    changes: StatusChanges,
    flights: Flights<Uuid, Result<Minted, AccessError>>,
    breaker: Breaker,
    permits: Arc<Semaphore>,
    settings: RefreshSettings,
}

/// How one claimed refresh ended.
enum Settled {
    Done(Result<Minted, AccessError>),
    /// Our claim no longer stands (another instance took the row over, a re-consent replaced
    /// the token): read the row again and go on.
    ClaimLost,
}

impl Refresher {
    pub fn new(
        vault: Arc<dyn TokenVault>,
        oidc: Arc<OidcClient>,
        keyring: Arc<Keyring>,
        journal: Journal,
        cache: Arc<AccessTokenCache>,
        changes: StatusChanges,
        settings: RefreshSettings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                breaker: Breaker::new(settings.breaker),
                permits: Arc::new(Semaphore::new(settings.max_concurrent.max(1))),
                vault,
                oidc,
                keyring,
                journal,
                cache,
                changes,
                flights: Flights::default(),
                settings,
            }),
        }
    }

    /// A valid access token of row `id` for its owner `caller`.
    pub async fn access_token(&self, caller: &str, id: Uuid) -> Result<Minted, AccessError> {
        let inner = &self.inner;
        let cached = inner.cached(id);
        telemetry::record_cache(cached.is_some());
        if let Some(hit) = cached {
            return owned_by(hit, caller);
        }
        // The owner is checked before anything is claimed: a stranger cannot even make the
        // owner's row wait.
        let row = inner.vault.find(id).await?.ok_or(AccessError::NotFound)?;
        if row.user_id != caller {
            return Err(AccessError::NotFound);
        }
        refuse_unusable(&row)?;
        let epoch = inner.cache.epoch();
        if let Some(minted) = inner.stored_access(&row, None) {
            inner.cache.put(id, minted.clone(), epoch);
            return Ok(minted);
        }
        let minted = self.fly(id, caller, Purpose::Serve).await?;
        owned_by(minted, caller)
    }

    /// Uses the row's refresh token now, so the provider's idle timer starts again.
    pub async fn keep_alive(&self, id: Uuid) -> Result<Minted, AccessError> {
        self.fly(id, SYSTEM, Purpose::KeepAlive).await
    }

    /// Flights running now.
    pub fn flights_running(&self) -> usize {
        self.inner.flights.len()
    }

    async fn fly(&self, id: Uuid, actor: &str, purpose: Purpose) -> Result<Minted, AccessError> {
        let inner = self.inner.clone();
        let actor = actor.to_owned();
        self.inner
            .flights
            .join(
                id,
                move || async move { inner.refresh_row(id, &actor, purpose).await },
                Err(AccessError::TaskLost),
            )
            .await
    }
}

impl Inner {
    fn cached(&self, id: Uuid) -> Option<Minted> {
        self.cache.get(id, Utc::now() + self.settings.margin)
    }

    /// Claims the row and refreshes it, or waits for whoever holds it.
    async fn refresh_row(
        self: Arc<Self>,
        id: Uuid,
        actor: &str,
        purpose: Purpose,
    ) -> Result<Minted, AccessError> {
        let started = Utc::now();
        let patience = tokio::time::Instant::now() + self.settings.lease + Duration::from_secs(2);
        let mut pause = FIRST_POLL;
        let mut rounds = 0;
        loop {
            let epoch = self.cache.epoch();
            let row = self.vault.find(id).await?.ok_or(AccessError::NotFound)?;
            refuse_unusable(&row)?;
            if let Some(wait) = backing_off(&row) {
                return Err(AccessError::ProviderRejected {
                    retry_after: Some(wait),
                });
            }
            if purpose == Purpose::Serve {
                if let Some(minted) = self.stored_access(&row, Some(started)) {
                    self.cache.put(id, minted.clone(), epoch);
                    return Ok(minted);
                }
            }
            let admission =
                self.breaker
                    .admit()
                    .map_err(|wait| AccessError::ProviderUnavailable {
                        retry_after: Some(wait),
                    })?;
            let permit = self
                .permits
                .clone()
                .try_acquire_owned()
                .map_err(|_| AccessError::ProviderBusy)?;
            match self.vault.claim_refresh(id, self.settings.lease).await? {
                Claim::Missing => return Err(AccessError::NotFound),
                Claim::NotClaimed(row) if row.status != Status::Active => {
                    return Err(refusal(&row))
                }
                Claim::NotClaimed(_) => {
                    // Another instance holds the row; its token will appear in the row.
                    drop((admission, permit));
                    if tokio::time::Instant::now() >= patience {
                        return Err(AccessError::ProviderUnavailable {
                            retry_after: Some(Duration::from_secs(1)),
                        });
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_POLL);
                }
                Claim::Claimed(row) => {
                    let call = Call {
                        row: &row,
                        actor,
                        epoch,
                        purpose,
                        started,
                    };
                    match self.refresh_claimed(call, admission, permit).await {
                        Settled::Done(result) => return result,
                        Settled::ClaimLost => {
                            rounds += 1;
                            if rounds >= MAX_ROUNDS {
                                return Err(AccessError::ProviderUnavailable {
                                    retry_after: Some(Duration::from_secs(1)),
                                });
                            }
                        }
                    }
                }
            }
        }
    }

    async fn refresh_claimed(
        &self,
        call: Call<'_>,
        admission: super::breaker::Admission<'_>,
        permit: OwnedSemaphorePermit,
    ) -> Settled {
        let row = call.row;
        if call.purpose == Purpose::Serve {
            // Minted by another instance between our read and our claim.
            if let Some(minted) = self.stored_access(row, Some(call.started)) {
                self.release(row).await;
                self.cache.put(row.id, minted.clone(), call.epoch);
                return Settled::Done(Ok(minted));
            }
        }
        let presented = match self.open_refresh_token(row) {
            Ok(token) => token,
            Err(e) => {
                self.release(row).await;
                return Settled::Done(Err(e));
            }
        };
        let outcome = self.call_provider(&presented).await;
        drop(permit);
        let counted = match &outcome {
            Err(ProviderError::Unavailable { .. }) => Outcome::Unavailable,
            _ => Outcome::Answered,
        };
        self.breaker.record(admission, counted);
        telemetry::record_refresh(match &outcome {
            Ok(_) => "success",
            Err(ProviderError::InvalidGrant) => "invalid_grant",
            Err(ProviderError::Unavailable { .. }) => "unavailable",
            Err(ProviderError::Rejected(_)) => "rejected",
        });
        match outcome {
            Ok(grant) => self.store(call, &presented, grant).await,
            Err(ProviderError::InvalidGrant) => self.end_dead_grant(call).await,
            Err(ProviderError::Unavailable { reason, .. }) => {
                tracing::warn!(id = %row.id, %reason, "provider unavailable during refresh");
                self.record_failure(call, "provider_unavailable", None)
                    .await;
                Settled::Done(Err(AccessError::ProviderUnavailable { retry_after: None }))
            }
            Err(ProviderError::Rejected(reason)) => {
                tracing::error!(
                    id = %row.id, %reason,
                    "the provider refused the broker's refresh request: check the client's \
                     id, secret and grants"
                );
                let wait = backoff(row.health.consecutive_failures + 1);
                self.record_failure(call, "provider_rejected", Some(wait))
                    .await;
                Settled::Done(Err(AccessError::ProviderRejected {
                    retry_after: Some(wait),
                }))
            }
        }
    }

    /// Calls the provider with a deadline per attempt, retrying only what certainly did not
    /// reach it (a refused connection): anything else may have rotated the token already.
    async fn call_provider(&self, token: &SecretString) -> Result<RefreshGrant, ProviderError> {
        let mut delay = self.settings.retry_base;
        let mut attempt = 1;
        loop {
            let result = tokio::time::timeout(
                self.settings.provider_timeout,
                self.oidc.refresh(token, None),
            )
            .await
            .unwrap_or_else(|_| {
                Err(ProviderError::Unavailable {
                    reason: "timed out".into(),
                    retry_now: false,
                })
            });
            match result {
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

    /// Seals and writes back what the provider gave; the token is served only if the write
    /// succeeded (or, through a database outage, once the provider's answer is safe to use).
    async fn store(
        &self,
        call: Call<'_>,
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
                self.release(row).await;
                return Settled::Done(Err(e));
            }
        };
        let current_refresh = rotated_token.unwrap_or(presented);
        let write = RefreshWrite {
            rotated: rotated.as_ref(),
            minted: &stored,
            refresh_expires_at: Some(self.refresh_expiry(&grant, current_refresh, now)),
            now,
        };
        match self.write_back(row, &write).await {
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
        let subject = subject(row);
        let detail = match (call.purpose, rotated.is_some()) {
            (Purpose::KeepAlive, true) => Some("keepalive:rotated"),
            (Purpose::KeepAlive, false) => Some("keepalive"),
            (Purpose::Serve, true) => Some("rotated"),
            (Purpose::Serve, false) => None,
        };
        self.journal
            .record(call.actor, subject, AuditAction::TokenIssued, true, detail)
            .await;
        if row.health.consecutive_failures > 0 {
            let after_failures = row.health.consecutive_failures;
            self.journal
                .health(subject, Health::Recovered { after_failures });
        }
        self.cache.put(row.id, minted.clone(), call.epoch);
        Settled::Done(Ok(minted))
    }

    #[allow(clippy::type_complexity)]
    fn seal_grant(
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
        let minted = Minted {
            user_id: row.user_id.clone(),
            access_token: grant.access_token.clone(),
            token_type: grant.token_type.clone(),
            scope: grant.scope.clone(),
            expires_at,
        };
        Ok((rotated, stored, minted))
    }

    /// When the refresh token stops working if unused: as the provider said
    /// (`refresh_expires_in`), else the token's own `exp` if it is a JWT, else the configured
    /// idle time.
    fn refresh_expiry(
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
    async fn write_back(
        &self,
        row: &VaultRow,
        write: &RefreshWrite<'_>,
    ) -> Result<bool, VaultError> {
        let give_up = tokio::time::Instant::now() + WRITE_BACK_PATIENCE;
        let mut pause = Duration::from_millis(100);
        loop {
            match self.vault.finish_refresh(row.id, row.fence, write).await {
                Err(e) if e.is_unavailable() && tokio::time::Instant::now() < give_up => {
                    tracing::warn!(id = %row.id, error = %e, "database away; retrying the write-back");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                other => return other,
            }
        }
    }

    /// The write-back found the claim gone. A revocation (or expiry) meanwhile wins: the new
    /// token is not served, and a rotated refresh token is revoked at the provider so no live
    /// grant is left behind. A claim taken over by another instance is read again.
    async fn after_lost_write(
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
    async fn end_dead_grant(&self, call: Call<'_>) -> Settled {
        let row = call.row;
        let now = Utc::now();
        match self
            .vault
            .fail_refresh(row.id, row.fence, REVOKED_BY_PROVIDER, now)
            .await
        {
            Ok(true) => {}
            Ok(false) => return Settled::ClaimLost,
            Err(e) => return Settled::Done(Err(e.into())),
        }
        self.changes.changed(row.id);
        tracing::warn!(id = %row.id, "provider refused the offline token; row failed");
        let subject = subject(row);
        self.journal
            .record(
                call.actor,
                subject,
                AuditAction::TokenRefreshFailed,
                false,
                Some(REVOKED_BY_PROVIDER),
            )
            .await;
        self.journal.health(
            subject,
            Health::RefreshFailed {
                status: Status::Failed,
                consecutive_failures: row.health.consecutive_failures + 1,
                error: REVOKED_BY_PROVIDER.into(),
            },
        );
        Settled::Done(Err(AccessError::Gone {
            status: Status::Failed,
            reason: Some(REVOKED_BY_PROVIDER.into()),
        }))
    }

    /// A failed attempt that leaves the grant alive: released, counted, journaled.
    async fn record_failure(&self, call: Call<'_>, error: &str, back_off: Option<Duration>) {
        let row = call.row;
        let now = Utc::now();
        let failure = RefreshFailure {
            error,
            retry_at: back_off
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .map(|d| now + d),
            now,
        };
        if let Err(e) = self
            .vault
            .release_refresh(row.id, row.fence, Some(&failure))
            .await
        {
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

    async fn release(&self, row: &VaultRow) {
        if let Err(e) = self.vault.release_refresh(row.id, row.fence, None).await {
            tracing::warn!(id = %row.id, error = %e, "could not release a refresh claim; it will expire");
        }
    }

    /// The access token stored in the row, if it is valid beyond the margin — or, when `since`
    /// is given, if it was minted since then and is valid at all (another instance just minted
    /// it for the callers waiting on this one). A stored token that cannot be opened (its key
    /// is gone) is a miss, never an error: the refresh token is what matters.
    fn stored_access(&self, row: &VaultRow, since: Option<DateTime<Utc>>) -> Option<Minted> {
        let stored = row.access.as_ref()?;
        let now = Utc::now();
        let fresh = stored.expires_at > now + self.settings.margin;
        let just_minted = since.is_some_and(|since| {
            row.health.last_refresh_at.is_some_and(|at| at >= since) && stored.expires_at > now
        });
        if !fresh && !just_minted {
            return None;
        }
        let opened = Sealed::from_bytes(&stored.sealed).and_then(|sealed| {
            self.keyring
                .open_string(&sealed, binding(purpose::ACCESS_TOKEN, row))
        });
        match opened {
            Ok(access_token) => Some(Minted {
                user_id: row.user_id.clone(),
                access_token,
                token_type: stored.token_type.clone(),
                scope: stored.scope.clone(),
                expires_at: stored.expires_at,
            }),
            Err(e) => {
                tracing::warn!(id = %row.id, error = %e, "stored access token unreadable; refreshing");
                None
            }
        }
    }

    fn open_refresh_token(&self, row: &VaultRow) -> Result<SecretString, AccessError> {
        let sealed = row.sealed.as_ref().ok_or(AccessError::Sealed {
            id: row.id,
            source: CryptoError::Malformed,
        })?;
        self.keyring
            .open_string(sealed, binding(purpose::REFRESH_TOKEN, row))
            .map_err(|source| AccessError::Sealed { id: row.id, source })
    }
}

/// One claimed refresh in progress.
#[derive(Clone, Copy)]
struct Call<'a> {
    row: &'a VaultRow,
    actor: &'a str,
    epoch: u64,
    purpose: Purpose,
    started: DateTime<Utc>,
}

fn binding<'a>(purpose: &'static str, row: &'a VaultRow) -> Binding<'a> {
    Binding {
        purpose,
        row_id: row.id,
        user_id: &row.user_id,
    }
}

fn subject(row: &VaultRow) -> Subject<'_> {
    Subject {
        token_id: row.id,
        user_id: &row.user_id,
        task_id: &row.task_id,
    }
}

fn owned_by(minted: Minted, caller: &str) -> Result<Minted, AccessError> {
    if minted.user_id == caller {
        Ok(minted)
    } else {
        Err(AccessError::NotFound)
    }
}

/// Back-off after a refusal that is not the grant's end: 30 s, doubling, at most an hour.
fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(7);
    Duration::from_secs(30 * 2u64.pow(doublings)).min(Duration::from_secs(3600))
}

/// How long until the row may be refreshed again, if it is backing off.
fn backing_off(row: &VaultRow) -> Option<Duration> {
    let until = row.health.next_refresh_at?;
    (until - Utc::now()).to_std().ok().filter(|d| !d.is_zero())
}

fn refuse_unusable(row: &VaultRow) -> Result<(), AccessError> {
    match row.status {
        Status::Active if row.expires_at <= Utc::now() => Err(AccessError::Gone {
            status: Status::Expired,
            reason: Some("max_age_reached".into()),
        }),
        Status::Active => Ok(()),
        _ => Err(refusal(row)),
    }
}

/// Why a row that is not active cannot give a token.
fn refusal(row: &VaultRow) -> AccessError {
    match row.status {
        Status::Pending => AccessError::Pending,
        status => AccessError::Gone {
            status,
            reason: row.status_reason.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_thirty_seconds_to_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(30));
        assert_eq!(backoff(2), Duration::from_secs(60));
        assert_eq!(backoff(5), Duration::from_secs(480));
        assert_eq!(backoff(50), Duration::from_secs(3600));
    }
}
