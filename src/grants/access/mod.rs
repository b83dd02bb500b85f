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
use secrecy::SecretString;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

mod settle;
mod stored;

use super::breaker::{Breaker, BreakerSettings, Outcome};
use super::cache::{AccessTokenCache, Minted};
use super::caller::Caller;
use super::changes::StatusChanges;
use super::flight::Flights;
use super::scope::Scope;
use crate::audit::{Journal, Subject, SYSTEM};
use crate::crypto::{Binding, CryptoError, Keyring};
use crate::oidc::{OidcClient, ProviderError, RefreshGrant};
use crate::telemetry;
use crate::vault::{Claim, Lease, Status, StatusReason, TokenVault, VaultError, VaultRow};

/// A waiting instance re-reads the row this often at first, backing off to the maximum.
const FIRST_POLL: Duration = Duration::from_millis(20);
const MAX_POLL: Duration = Duration::from_millis(250);
/// Claims lost to a race (another instance, a re-consent) before giving up with a 503.
const MAX_ROUNDS: u32 = 4;

#[derive(Clone, Debug, thiserror::Error)]
pub enum AccessError {
    #[error("no such token for this caller")]
    NotFound,
    #[error("consent not completed")]
    Pending,
    #[error("token is {status}")]
    Gone {
        status: Status,
        reason: Option<StatusReason>,
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
    #[error("the scope asked for is not within the grant")]
    InvalidScope,
    /// The provider answered a narrowed refresh with a token broader than asked for, or did
    /// not say what it granted: the token is not served.
    #[error("the provider did not narrow the token to the scope asked for")]
    ScopeNotNarrowed,
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
    flights: Flights<(Uuid, Option<Scope>), Result<Minted, AccessError>>,
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

    /// A valid access token of row `id` for `caller`, narrowed to `scope` when one is asked
    /// for (it must be within what the row was granted, and what a task key allows).
    pub async fn access_token(
        &self,
        caller: &Caller,
        id: Uuid,
        scope: Option<Scope>,
    ) -> Result<Minted, AccessError> {
        let minted = self.mint(caller, id, scope).await?;
        if let Caller::Delegate { client, subject } = caller {
            // Every delegate redemption leaves a record naming the client and the token's
            // `sub`, on every path: a user's own calls are theirs, a service account's are not.
            let subject_of_row = Subject {
                token_id: id,
                user_id: &minted.user_id,
                task_id: &minted.task_id,
            };
            let reason = format!("sub:{}", subject.chars().take(200).collect::<String>());
            let record = crate::audit::event(
                &format!("client:{client}"),
                subject_of_row,
                crate::vault::AuditAction::DelegateUsed,
                true,
                Some(&reason),
            );
            self.inner.journal.record_soon(record).await;
        }
        Ok(minted)
    }

    async fn mint(
        &self,
        caller: &Caller,
        id: Uuid,
        scope: Option<Scope>,
    ) -> Result<Minted, AccessError> {
        let inner = &self.inner;
        let scope = narrowed(caller, scope)?;
        let cached = inner.cached(id, scope.as_ref());
        telemetry::record_cache(cached.is_some());
        if let Some(hit) = cached {
            return allowed(caller, id, hit);
        }
        // Who may have the row is checked before anything is claimed: a stranger cannot even
        // make the owner's row wait. The epoch is read before the row, so an invalidation
        // after this read keeps what comes of it out of the cache.
        let epoch = inner.cache.epoch();
        let row = inner.vault.find(id).await?.ok_or(AccessError::NotFound)?;
        if !caller.may_use(id, &row.user_id, &row.delegates) {
            return Err(AccessError::NotFound);
        }
        refuse_unusable(&row)?;
        if let Some(scope) = &scope {
            if !scope.is_subset(&Scope::granted(row.granted_scope.as_deref())) {
                return Err(AccessError::InvalidScope);
            }
        }
        if scope.is_none() {
            if let Some(minted) = inner.stored_access(&row, None) {
                inner.cache.put(id, None, minted.clone(), epoch);
                return Ok(minted);
            }
        }
        let read = Read { row, epoch };
        let minted = self
            .fly(id, scope, &caller.actor(), Purpose::Serve, Some(read))
            .await?;
        allowed(caller, id, minted)
    }

    /// Uses the row's refresh token now, so the provider's idle timer starts again.
    pub async fn keep_alive(&self, id: Uuid) -> Result<Minted, AccessError> {
        self.fly(id, None, SYSTEM, Purpose::KeepAlive, None).await
    }

    async fn fly(
        &self,
        id: Uuid,
        scope: Option<Scope>,
        actor: &str,
        purpose: Purpose,
        read: Option<Read>,
    ) -> Result<Minted, AccessError> {
        let inner = self.inner.clone();
        let actor = actor.to_owned();
        let key = (id, scope.clone());
        self.inner
            .flights
            .join(
                key,
                move || async move {
                    inner
                        .refresh_row(id, scope.as_ref(), &actor, purpose, read)
                        .await
                },
                Err(AccessError::TaskLost),
            )
            .await
    }
}

impl Inner {
    fn cached(&self, id: Uuid, scope: Option<&Scope>) -> Option<Minted> {
        self.cache.get(id, scope, Utc::now() + self.settings.margin)
    }

    /// Claims the row and refreshes it, or waits for whoever holds it. `read`: the row as the
    /// caller just read it, which the first round uses instead of reading it again.
    async fn refresh_row(
        self: Arc<Self>,
        id: Uuid,
        scope: Option<&Scope>,
        actor: &str,
        purpose: Purpose,
        mut read: Option<Read>,
    ) -> Result<Minted, AccessError> {
        let started = Utc::now();
        let patience = tokio::time::Instant::now() + self.settings.lease + Duration::from_secs(2);
        let mut pause = FIRST_POLL;
        let mut rounds = 0;
        loop {
            let Read { row, epoch } = match read.take() {
                Some(read) => read,
                None => {
                    let epoch = self.cache.epoch();
                    let row = self.vault.find(id).await?.ok_or(AccessError::NotFound)?;
                    Read { row, epoch }
                }
            };
            refuse_unusable(&row)?;
            if let Some(wait) = backing_off(&row) {
                return Err(AccessError::ProviderRejected {
                    retry_after: Some(wait),
                });
            }
            if purpose == Purpose::Serve && scope.is_none() {
                if let Some(minted) = self.stored_access(&row, Some(started)) {
                    self.cache.put(id, None, minted.clone(), epoch);
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
                Claim::Claimed(lease, row) => {
                    let call = Call {
                        row: &row,
                        scope,
                        actor,
                        epoch,
                        purpose,
                        started,
                    };
                    match self.refresh_claimed(call, lease, admission, permit).await {
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
        lease: Lease,
        admission: super::breaker::Admission<'_>,
        permit: OwnedSemaphorePermit,
    ) -> Settled {
        let row = call.row;
        if call.purpose == Purpose::Serve && call.scope.is_none() {
            // Minted by another instance between our read and our claim.
            if let Some(minted) = self.stored_access(row, Some(call.started)) {
                self.release(lease).await;
                self.cache.put(row.id, None, minted.clone(), call.epoch);
                return Settled::Done(Ok(minted));
            }
        }
        let presented = match self.open_refresh_token(row) {
            Ok(token) => token,
            Err(e) => {
                self.release(lease).await;
                return Settled::Done(Err(e));
            }
        };
        let outcome = self.call_provider(&presented, call.scope).await;
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
            Err(ProviderError::InvalidScope(_)) => "invalid_scope",
        });
        match outcome {
            Ok(grant) => self.store(call, lease, &presented, grant).await,
            Err(ProviderError::InvalidGrant) => self.end_dead_grant(call, lease).await,
            Err(ProviderError::Unavailable { reason, .. }) => {
                tracing::warn!(id = %row.id, %reason, "provider unavailable during refresh");
                self.record_failure(call, lease, "provider_unavailable", None)
                    .await;
                Settled::Done(Err(AccessError::ProviderUnavailable { retry_after: None }))
            }
            Err(ProviderError::InvalidScope(reason)) => {
                // The caller's request, not the grant or the provider: nothing is counted
                // against the row, and the breaker saw an answer.
                tracing::info!(id = %row.id, %reason, "the provider refused a narrowed scope");
                self.release(lease).await;
                Settled::Done(Err(AccessError::InvalidScope))
            }
            Err(ProviderError::Rejected(reason)) => {
                tracing::error!(
                    id = %row.id, %reason,
                    "the provider refused the broker's refresh request: check the client's \
                     id, secret and grants"
                );
                let wait = backoff(row.health.consecutive_failures + 1);
                self.record_failure(call, lease, "provider_rejected", Some(wait))
                    .await;
                Settled::Done(Err(AccessError::ProviderRejected {
                    retry_after: Some(wait),
                }))
            }
        }
    }

    /// Calls the provider with a deadline per attempt, retrying only what certainly did not
    /// reach it (a refused connection): anything else may have rotated the token already.
    async fn call_provider(
        &self,
        token: &SecretString,
        scope: Option<&Scope>,
    ) -> Result<RefreshGrant, ProviderError> {
        let scope = scope.map(Scope::to_string);
        let mut delay = self.settings.retry_base;
        let mut attempt = 1;
        loop {
            let result = tokio::time::timeout(
                self.settings.provider_timeout,
                self.oidc.refresh(token, scope.as_deref()),
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
}

/// A row as read, with the cache epoch read just before it.
struct Read {
    row: VaultRow,
    epoch: u64,
}

/// One claimed refresh in progress.
#[derive(Clone, Copy)]
struct Call<'a> {
    row: &'a VaultRow,
    /// The narrowed scope asked for, if any.
    scope: Option<&'a Scope>,
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

/// A minted token goes to `caller` only if it may use the row it was minted for.
fn allowed(caller: &Caller, id: Uuid, minted: Minted) -> Result<Minted, AccessError> {
    if caller.may_use(id, &minted.user_id, &minted.delegates) {
        Ok(minted)
    } else {
        Err(AccessError::NotFound)
    }
}

/// The scope to ask for: the request's, within a task key's own limit; the key's when the
/// request names none.
fn narrowed(caller: &Caller, asked: Option<Scope>) -> Result<Option<Scope>, AccessError> {
    let limit = match caller {
        Caller::Task(key) => key.scope.as_deref().and_then(|s| Scope::parse(s).ok()),
        _ => None,
    };
    match (asked, limit) {
        (Some(asked), Some(limit)) if !asked.is_subset(&limit) => Err(AccessError::InvalidScope),
        (Some(asked), _) => Ok(Some(asked)),
        (None, limit) => Ok(limit),
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
            reason: Some(StatusReason::MaxAgeReached),
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
