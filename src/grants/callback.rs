//! Completing a consent: the provider sent the browser back with a code (or an error).
//!
//! The state is claimed atomically (single use, unexpired); the code is exchanged with the
//! sealed PKCE verifier; the ID token must verify, carry the consent's nonce and name the user
//! who asked; `offline_access` must have been granted. Then the refresh token is sealed into
//! the row (a re-consent re-seals into the same row). Every failure after the claim is stored
//! as the row's reason (pending rows) and audited.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::changes::{announce, StatusChanges};
use crate::audit::{Journal, Subject};
use crate::crypto::{purpose, sha256, Binding, Keyring, Sealed};
use crate::oidc::{peek_expiry, CodeGrant, JwtError, OidcClient, ProviderError, TokenVerifier};
use crate::vault::{
    Activation, AuditAction, ClaimedConsent, ClaimedRow, Status, StatusReason, TokenVault,
    VaultError,
};

pub const MAX_STATE_LEN: usize = 512;

/// What the provider sent back, as the browser delivered it.
#[derive(Debug, Default)]
pub struct ProviderReply {
    pub code: Option<SecretString>,
    pub state: Option<String>,
    pub error: Option<String>,
    /// RFC 9207: the issuer that sent the browser back, to defeat mix-up attacks.
    pub iss: Option<String>,
}

/// Refusals before any row is found: nothing changes.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("the state parameter is required")]
    MissingState,
    #[error("the consent state is unknown, already used, or expired")]
    InvalidState,
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// Why a claimed consent failed, by what the caller should be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// The provider refused, or gave something unusable.
    Refused,
    /// Someone else signed in at the provider.
    SubjectMismatch,
    ProviderUnavailable,
    /// The row was revoked or cleaned up while the consent completed.
    RowGone,
    Internal,
}

#[derive(Clone, Debug)]
pub struct Failure {
    pub kind: FailureKind,
    /// Stored as the row's `status_reason`.
    pub reason: StatusReason,
    /// For people.
    pub message: &'static str,
}

impl Failure {
    fn new(kind: FailureKind, reason: StatusReason, message: &'static str) -> Self {
        Self {
            kind,
            reason,
            message,
        }
    }

    fn refused(reason: StatusReason, message: &'static str) -> Self {
        Self::new(FailureKind::Refused, reason, message)
    }

    fn internal() -> Self {
        Self::new(
            FailureKind::Internal,
            StatusReason::InternalError,
            "Internal server error",
        )
    }
}

/// A consent whose state was claimed, and how it ended.
pub struct Completed {
    pub consent: ClaimedRow,
    pub outcome: Result<(), Failure>,
}

/// The limits a completed consent gets.
#[derive(Clone, Debug)]
pub struct GrantLimits {
    /// A grant's hard end after consent (`OFFLINE_TOKEN_MAX_AGE_SECS`, and the provider's
    /// Offline Session Max when configured).
    pub max_age: Duration,
    /// How long a refresh token works unused when neither the provider nor the token says.
    pub offline_idle: Duration,
    pub provider_revocation: bool,
    /// Revoke the grant a re-consent replaced (per-token revocation at the provider).
    pub revoke_replaced_grant: bool,
}

pub struct Callbacks {
    vault: Arc<dyn TokenVault>,
    oidc: Arc<OidcClient>,
    verifier: Arc<TokenVerifier>,
    keyring: Arc<Keyring>,
    journal: Journal,
    changes: StatusChanges,
    limits: GrantLimits,
}

impl Callbacks {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vault: Arc<dyn TokenVault>,
        oidc: Arc<OidcClient>,
        verifier: Arc<TokenVerifier>,
        keyring: Arc<Keyring>,
        journal: Journal,
        changes: StatusChanges,
        limits: GrantLimits,
    ) -> Self {
        Self {
            vault,
            oidc,
            verifier,
            keyring,
            journal,
            changes,
            limits,
        }
    }

    /// Claims the reply's state and completes (or fails) its consent.
    pub async fn complete(&self, reply: &ProviderReply) -> Result<Completed, CallbackError> {
        let raw_state = reply
            .state
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or(CallbackError::MissingState)?;
        if raw_state.len() > MAX_STATE_LEN {
            return Err(CallbackError::InvalidState);
        }
        let consent = self
            .vault
            .claim_consent(&sha256(raw_state.as_bytes()), Utc::now())
            .await?
            .ok_or(CallbackError::InvalidState)?;
        let row = consent.row.clone();
        let outcome = match self.obtain(&consent, reply).await {
            Ok(obtained) => self.activate(consent, obtained).await?,
            Err(failure) => Err(failure),
        };
        if let Err(failure) = &outcome {
            self.record_failure(&row, failure).await?;
        }
        Ok(Completed {
            consent: row,
            outcome,
        })
    }

    async fn activate(
        &self,
        claimed: ClaimedConsent,
        obtained: Obtained,
    ) -> Result<Result<(), Failure>, VaultError> {
        let row = claimed.row.clone();
        let consent = &row;
        // The grant this re-consent replaces, read before it is overwritten: once the new one
        // is stored, the old one is revoked at the provider rather than left alive there.
        let replaced = if consent.status == Status::Active && self.limits.revoke_replaced_grant {
            self.replaced_refresh_token(consent).await
        } else {
            None
        };
        let now = Utc::now();
        // The hard end counts from the sign-in, as the provider's session maximum does
        // (Keycloak's Offline Session Max): counted from the callback instead, the row would
        // outlive the provider's session by the seconds the consent took, and a refresh in
        // that window would fail the row instead of letting it expire.
        let started = obtained
            .authenticated_at
            .filter(|t| *t <= now)
            .unwrap_or(now);
        let activation = Activation {
            sealed: &obtained.sealed,
            expires_at: started
                + chrono::Duration::from_std(self.limits.max_age).unwrap_or_default(),
            refresh_expires_at: Some(obtained.refresh_expires_at),
            granted_scope: obtained.granted_scope,
            now,
        };
        let Some(transition) = self.vault.activate(claimed, &activation).await? else {
            // Revoked or cleaned up since the claim: the grant the provider just issued would
            // be orphaned there, so end it.
            tracing::warn!(id = %consent.id, "row ended while its consent completed");
            if self.limits.provider_revocation {
                if let Err(e) = self
                    .oidc
                    .revoke_refresh_token(&obtained.refresh_token)
                    .await
                {
                    tracing::warn!(id = %consent.id, error = %e, "could not revoke an orphaned token");
                }
            }
            return Ok(Err(Failure::new(
                FailureKind::RowGone,
                StatusReason::RowEnded,
                "This consent was revoked or expired while it completed; start a new one",
            )));
        };
        let reconsent = consent.status != Status::Pending;
        tracing::info!(id = %consent.id, user = %consent.user_id, reconsent, "offline token stored");
        announce(
            &self.journal,
            &self.changes,
            &transition,
            &consent.user_id,
            subject(consent),
            reconsent.then_some("reconsent"),
        )
        .await;
        if let Some(old) = replaced {
            if old.expose_secret() != obtained.refresh_token.expose_secret() {
                match self.oidc.revoke_refresh_token(&old).await {
                    Ok(()) => tracing::info!(id = %consent.id, "the replaced grant was revoked"),
                    Err(e) => {
                        tracing::warn!(id = %consent.id, error = %e, "could not revoke the replaced grant")
                    }
                }
            }
        }
        Ok(Ok(()))
    }

    /// The refresh token an active row holds now, opened (none if it cannot be read).
    async fn replaced_refresh_token(&self, consent: &ClaimedRow) -> Option<SecretString> {
        let row = match self.vault.find(consent.id).await {
            Ok(row) => row?,
            Err(e) => {
                tracing::warn!(id = %consent.id, error = %e, "cannot read the grant a re-consent replaces");
                return None;
            }
        };
        let sealed = row.sealed.as_ref()?;
        self.keyring
            .open_string(sealed, binding(purpose::REFRESH_TOKEN, consent))
            .map_err(
                |e| tracing::warn!(id = %consent.id, error = %e, "cannot open the replaced grant"),
            )
            .ok()
    }

    /// A first consent that fails marks its row failed; a failed re-consent leaves the row
    /// as it was (a working grant is not thrown away because a new consent went wrong).
    async fn record_failure(
        &self,
        consent: &ClaimedRow,
        failure: &Failure,
    ) -> Result<(), VaultError> {
        // Only a first consent still pending becomes `failed`; a re-consent leaves its row as
        // it was, and a row revoked meanwhile stays revoked.
        let failed_the_row =
            if consent.status == Status::Pending && failure.kind != FailureKind::RowGone {
                self.vault
                    .fail_pending(consent.id, &failure.reason, Utc::now())
                    .await?
            } else {
                None
            };
        tracing::warn!(id = %consent.id, reason = %failure.reason, "consent failed");
        let (actor, subject) = (&consent.user_id, subject(consent));
        match failed_the_row {
            Some(transition) => {
                announce(
                    &self.journal,
                    &self.changes,
                    &transition,
                    actor,
                    subject,
                    None,
                )
                .await
            }
            None => {
                let reason = Some(failure.reason.as_str());
                self.journal
                    .record(actor, subject, AuditAction::ConsentFailed, false, reason)
                    .await
            }
        }
        Ok(())
    }

    async fn obtain(
        &self,
        consent: &ClaimedConsent,
        reply: &ProviderReply,
    ) -> Result<Obtained, Failure> {
        if let Some(error) = &reply.error {
            return Err(Failure::refused(
                StatusReason::from_provider(error),
                "The identity provider did not grant consent",
            ));
        }
        if self.oidc.response_issuer_ok(reply.iss.as_deref()).is_err() {
            return Err(Failure::refused(
                StatusReason::IssuerMismatch,
                "The response came from another identity provider",
            ));
        }
        let code = reply
            .code
            .as_ref()
            .filter(|c| !c.expose_secret().is_empty())
            .ok_or_else(|| {
                Failure::refused(
                    StatusReason::MissingCode,
                    "The provider sent no authorization code",
                )
            })?;
        let verifier = self.open_verifier(consent)?;
        let grant = self
            .oidc
            .exchange_code(code, &verifier)
            .await
            .map_err(|error| {
                tracing::warn!(id = %consent.id, %error, "code exchange failed");
                match error {
                    ProviderError::Unavailable { .. } => Failure::new(
                        FailureKind::ProviderUnavailable,
                        StatusReason::ProviderUnavailable,
                        "The identity provider cannot be reached; start the consent again later",
                    ),
                    _ => Failure::refused(
                        StatusReason::CodeExchangeFailed,
                        "The identity provider refused the authorization code",
                    ),
                }
            })?;
        let authenticated_at = self.check_identity(consent, &grant).await?;
        let refresh_token = grant.refresh_token.ok_or_else(|| {
            Failure::refused(
                StatusReason::MissingRefreshToken,
                "The provider returned no refresh token",
            )
        })?;
        let sealed = self
            .keyring
            .seal(
                refresh_token.expose_secret().as_bytes(),
                binding(purpose::REFRESH_TOKEN, consent),
            )
            .map_err(|error| {
                tracing::error!(id = %consent.id, %error, "sealing the offline token failed");
                Failure::internal()
            })?;
        let now = Utc::now();
        let idle = chrono::Duration::from_std(self.limits.offline_idle).unwrap_or_default();
        let refresh_expires_at = grant
            .refresh_expires_in
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| now + d)
            .or_else(|| peek_expiry(refresh_token.expose_secret()))
            .unwrap_or(now + idle);
        Ok(Obtained {
            sealed,
            refresh_token,
            refresh_expires_at,
            granted_scope: grant.scopes.map(|s| s.join(" ")),
            authenticated_at,
        })
    }

    fn open_verifier(&self, consent: &ClaimedConsent) -> Result<SecretString, Failure> {
        consent
            .pkce_verifier()
            .ok_or(())
            .and_then(|blob| Sealed::from_bytes(blob).map_err(|_| ()))
            .and_then(|sealed| {
                self.keyring
                    .open_string(&sealed, binding(purpose::PKCE_VERIFIER, consent))
                    .map_err(|_| ())
            })
            .map_err(|()| {
                tracing::error!(id = %consent.id, "cannot open the sealed PKCE verifier");
                Failure::internal()
            })
    }

    /// The ID token must verify and carry this consent's nonce, name the user who asked, and
    /// the grant must include `offline_access`. When the user signed in, if the token says.
    async fn check_identity(
        &self,
        consent: &ClaimedConsent,
        grant: &CodeGrant,
    ) -> Result<Option<DateTime<Utc>>, Failure> {
        let id_token = grant.id_token.as_ref().ok_or_else(|| {
            Failure::refused(
                StatusReason::MissingIdToken,
                "The provider returned no ID token",
            )
        })?;
        let nonce_hash = consent.nonce_hash().unwrap_or_default();
        let claims = self
            .verifier
            .verify_id_token(id_token.expose_secret(), nonce_hash)
            .await
            .map_err(|error| {
                tracing::warn!(id = %consent.id, %error, "ID token rejected");
                match error {
                    JwtError::NonceMismatch => Failure::refused(
                        StatusReason::NonceMismatch,
                        "The ID token belongs to another request",
                    ),
                    _ => Failure::refused(
                        StatusReason::InvalidIdToken,
                        "The ID token did not verify",
                    ),
                }
            })?;
        // The consent was requested by one user; the provider may have been signed into by
        // another (shared browser, or an attacker's lure). Storing that token under this user
        // would let them act as someone else.
        if claims.sub != consent.user_id {
            if !same_subject_shape(&claims.sub, &consent.user_id) {
                tracing::warn!(
                    id = %consent.id,
                    "the ID token's subject is not of the same form as the caller's (e.g. a \
                     UUID against a hash): the provider may issue pairwise or salted subjects, \
                     which lock users out of their grants; give the broker's client and the \
                     callers' clients the same public subjects (docs/providers.md)"
                );
            }
            return Err(Failure::new(
                FailureKind::SubjectMismatch,
                StatusReason::SubjectMismatch,
                "Consent was given by a different user than the one who requested it",
            ));
        }
        if let Some(scopes) = &grant.scopes {
            if !scopes.iter().any(|s| s == "offline_access") {
                return Err(Failure::refused(
                    StatusReason::OfflineAccessNotGranted,
                    "The provider did not grant offline_access",
                ));
            }
        }
        Ok(claims
            .auth_time
            .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0)))
    }
}

/// A sealed offline token, ready to store.
struct Obtained {
    sealed: Sealed,
    /// Kept in memory only to revoke it if the row is gone by the time it would be stored.
    refresh_token: SecretString,
    refresh_expires_at: DateTime<Utc>,
    /// As the provider said; `None` = as requested.
    granted_scope: Option<String>,
    /// When the user signed in at the provider (the ID token's `auth_time`).
    authenticated_at: Option<DateTime<Utc>>,
}

fn binding<'a>(purpose: &'static str, consent: &'a ClaimedRow) -> Binding<'a> {
    Binding {
        purpose,
        row_id: consent.id,
        user_id: &consent.user_id,
    }
}

fn subject(consent: &ClaimedRow) -> Subject<'_> {
    Subject {
        token_id: consent.id,
        user_id: &consent.user_id,
        task_id: &consent.task_id,
    }
}

/// The form of a subject: Keycloak's are UUIDs; pairwise and salted ones are long opaque
/// strings (hashes); some providers use names.
#[derive(PartialEq, Eq)]
enum SubjectShape {
    Uuid,
    Opaque,
    Name,
}

fn subject_shape(sub: &str) -> SubjectShape {
    if uuid::Uuid::parse_str(sub).is_ok() {
        SubjectShape::Uuid
    } else if sub.len() >= 32
        && sub
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '+' | '/' | '='))
    {
        SubjectShape::Opaque
    } else {
        SubjectShape::Name
    }
}

/// Two people's subjects from one provider have the same form; a public subject beside a
/// pairwise one usually does not.
fn same_subject_shape(a: &str, b: &str) -> bool {
    subject_shape(a) == subject_shape(b)
}

#[cfg(test)]
mod tests {
    use super::same_subject_shape;

    #[test]
    fn subjects_of_another_form_are_told_apart() {
        let keycloak = "f81d4fae-7dec-11d0-a765-00a0c91e6bf6";
        let other_user = "3d8b9c2e-1a2b-4c5d-8e9f-0a1b2c3d4e5f";
        let pairwise = "Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0Z2FycGx5";
        assert!(same_subject_shape(keycloak, other_user));
        assert!(same_subject_shape("alice", "bob"));
        assert!(!same_subject_shape(keycloak, pairwise));
        assert!(!same_subject_shape("alice", pairwise));
        assert!(!same_subject_shape(keycloak, "alice"));
        // Opaque from 32 characters on: shorter ones may be names.
        assert!(!same_subject_shape(&"a".repeat(32), "alice"));
        assert!(same_subject_shape(&"a".repeat(31), "alice"));
        // A short name is a name, whatever characters it has.
        assert!(same_subject_shape("alice", "bob@example.com"));
    }
}
