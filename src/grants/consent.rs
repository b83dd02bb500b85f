//! Starting a consent: a new pending row, or a re-consent of an existing row in place.
//!
//! Each consent gets a 256-bit `state` (only its SHA-256 is stored, so a leaked row cannot be
//! replayed against the callback), an OIDC `nonce` (digest stored, checked against the ID
//! token) and a PKCE verifier (sealed, bound to the row and user).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use secrecy::ExposeSecret;
use url::Url;
use uuid::Uuid;

use crate::audit::{Journal, Subject};
use crate::crypto::{purpose, random_token, sha256, Binding, CryptoError, Keyring};
use crate::oidc::OidcClient;
use crate::vault::{AuditAction, NewConsent, NewReconsent, Status, TokenVault, VaultError};

pub const MAX_TASK_ID_LEN: usize = 200;
pub const MAX_REDIRECT_URI_LEN: usize = 2048;
/// 256 bits of randomness for `state` and `nonce`.
const ONE_TIME_VALUE_BYTES: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ConsentError {
    #[error("{0}")]
    InvalidTaskId(&'static str),
    #[error("redirectUri must be an absolute http(s) URL on an allowed origin")]
    InvalidRedirectUri,
    #[error("`{0}` is not one of DELEGATE_CLIENTS")]
    UnknownDelegate(String),
    #[error("no such token for this caller")]
    NotFound,
    #[error("the token is revoked")]
    Revoked,
    #[error("the consent has not been completed yet")]
    Pending,
    #[error("too many consents waiting for this user")]
    TooManyPending,
    #[error("sealing a PKCE verifier failed: {0}")]
    Sealing(#[from] CryptoError),
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// The knobs of the consent flow.
#[derive(Clone, Debug)]
pub struct ConsentPolicy {
    pub allowed_redirect_origins: Vec<url::Origin>,
    /// How long a consent link works.
    pub consent_ttl: Duration,
    /// How long a grant may be used before the user must consent again.
    pub offline_token_max_age: Duration,
    /// Clients a consent may name as delegates (`DELEGATE_CLIENTS`).
    pub delegate_clients: Vec<String>,
    /// Consents a user may have waiting at once (`MAX_PENDING_CONSENTS`); expired ones do not
    /// count.
    pub max_pending: u32,
}

/// A consent waiting for the user at the provider.
pub struct StartedConsent {
    pub id: Uuid,
    pub consent_url: Url,
    /// The raw state, returned once to the caller (the contract's `stateToken`).
    pub state: String,
    /// A re-consent of a failed or expired row: its task keys ended with it, and the row
    /// comes back with none.
    pub keys_ended: bool,
}

pub struct Consents {
    vault: Arc<dyn TokenVault>,
    oidc: Arc<OidcClient>,
    keyring: Arc<Keyring>,
    journal: Journal,
    policy: ConsentPolicy,
}

/// The one-time values of a consent, the URL that carries them, and what is stored of them.
struct Secrets {
    url: Url,
    state: String,
    state_hash: Vec<u8>,
    nonce_hash: Vec<u8>,
    sealed_verifier: Vec<u8>,
}

impl Consents {
    pub fn new(
        vault: Arc<dyn TokenVault>,
        oidc: Arc<OidcClient>,
        keyring: Arc<Keyring>,
        journal: Journal,
        policy: ConsentPolicy,
    ) -> Self {
        Self {
            vault,
            oidc,
            keyring,
            journal,
            policy,
        }
    }

    pub fn policy(&self) -> &ConsentPolicy {
        &self.policy
    }

    /// Starts a consent for `user` and a task: a pending row and its consent URL. `delegates`
    /// names service accounts that may redeem the row for the user.
    pub async fn start(
        &self,
        user: &str,
        task_id: &str,
        redirect_uri: Option<&str>,
        delegates: &[String],
    ) -> Result<StartedConsent, ConsentError> {
        let task_id = validate_task_id(task_id)?;
        let mut delegates = delegates.to_vec();
        delegates.sort();
        delegates.dedup();
        if let Some(unknown) = delegates
            .iter()
            .find(|d| !self.policy.delegate_clients.contains(d))
        {
            return Err(ConsentError::UnknownDelegate(
                unknown.chars().take(64).collect(),
            ));
        }
        let redirect_uri = redirect_uri
            .map(|uri| validate_redirect_uri(uri, &self.policy.allowed_redirect_origins))
            .transpose()?;
        let id = Uuid::new_v4();
        let secrets = self.secrets(id, user)?;
        let now = Utc::now();
        let stored = self
            .vault
            .create_pending(
                &NewConsent {
                    id,
                    user_id: user.to_owned(),
                    task_id: task_id.to_owned(),
                    state_hash: secrets.state_hash,
                    state_expires_at: now + self.policy.consent_ttl,
                    pkce_verifier: secrets.sealed_verifier,
                    nonce_hash: secrets.nonce_hash,
                    redirect_uri,
                    expires_at: now + self.policy.offline_token_max_age,
                    created_at: now,
                    metadata: serde_json::json!({ "createdBy": "api" }),
                    delegates,
                },
                self.policy.max_pending,
            )
            .await?;
        if !stored {
            return Err(ConsentError::TooManyPending);
        }
        tracing::info!(%id, user, task_id, "consent requested");
        let subject = Subject {
            token_id: id,
            user_id: user,
            task_id,
        };
        self.journal
            .record(user, subject, AuditAction::ConsentRequested, true, None)
            .await;
        Ok(StartedConsent {
            id,
            consent_url: secrets.url,
            state: secrets.state,
            keys_ended: false,
        })
    }

    /// A new consent URL for an existing row of `user` (failed, expired or active): its
    /// callback re-seals into the same row, so tasks holding the id carry on. A revoked row
    /// cannot come back; a pending one still has its own link.
    pub async fn restart(
        &self,
        user: &str,
        id: Uuid,
        redirect_uri: Option<&str>,
    ) -> Result<StartedConsent, ConsentError> {
        let redirect_uri = redirect_uri
            .map(|uri| validate_redirect_uri(uri, &self.policy.allowed_redirect_origins))
            .transpose()?;
        let row = self
            .vault
            .find(id)
            .await?
            .filter(|row| row.user_id == user)
            .ok_or(ConsentError::NotFound)?;
        match row.status {
            Status::Revoked => return Err(ConsentError::Revoked),
            Status::Pending => return Err(ConsentError::Pending),
            Status::Active | Status::Failed | Status::Expired => {}
        }
        let secrets = self.secrets(id, user)?;
        let now = Utc::now();
        let stored = self
            .vault
            .start_reconsent(&NewReconsent {
                id,
                user_id: user.to_owned(),
                state_hash: secrets.state_hash,
                state_expires_at: now + self.policy.consent_ttl,
                pkce_verifier: secrets.sealed_verifier,
                nonce_hash: secrets.nonce_hash,
                redirect_uri,
                now,
            })
            .await?;
        if !stored {
            // Revoked (or purged) between the read and the write.
            return Err(ConsentError::Revoked);
        }
        tracing::info!(%id, user, "re-consent requested");
        let subject = Subject {
            token_id: id,
            user_id: user,
            task_id: &row.task_id,
        };
        self.journal
            .record(user, subject, AuditAction::ReconsentRequested, true, None)
            .await;
        Ok(StartedConsent {
            id,
            consent_url: secrets.url,
            state: secrets.state,
            keys_ended: row.status != Status::Active,
        })
    }

    fn secrets(&self, id: Uuid, user: &str) -> Result<Secrets, ConsentError> {
        let state = random_token(ONE_TIME_VALUE_BYTES);
        let nonce = random_token(ONE_TIME_VALUE_BYTES);
        let authorization = self.oidc.authorization_request(&state, &nonce);
        let sealed = self.keyring.seal(
            authorization.pkce_verifier.expose_secret().as_bytes(),
            Binding {
                purpose: purpose::PKCE_VERIFIER,
                row_id: id,
                user_id: user,
            },
        )?;
        Ok(Secrets {
            url: authorization.url,
            state_hash: sha256(state.as_bytes()),
            nonce_hash: sha256(nonce.as_bytes()),
            state,
            sealed_verifier: sealed.to_bytes(),
        })
    }
}

/// A task id: 1–200 printable characters, trimmed.
pub fn validate_task_id(task_id: &str) -> Result<&str, ConsentError> {
    let trimmed = task_id.trim();
    if trimmed.is_empty() {
        return Err(ConsentError::InvalidTaskId("taskId must not be empty"));
    }
    if trimmed.chars().count() > MAX_TASK_ID_LEN || trimmed.chars().any(char::is_control) {
        return Err(ConsentError::InvalidTaskId(
            "taskId must be at most 200 printable characters",
        ));
    }
    Ok(trimmed)
}

/// A consent may send the browser back only to an origin the operator listed: anything else
/// would make the broker an open redirector that lends its name to phishing links.
pub(crate) fn validate_redirect_uri(
    uri: &str,
    allowed: &[url::Origin],
) -> Result<String, ConsentError> {
    // The URL parser would quietly drop tabs, newlines and surrounding spaces; refuse them so
    // that what is checked is exactly what was sent.
    if uri.len() > MAX_REDIRECT_URI_LEN || uri.chars().any(|c| c.is_control() || c == ' ') {
        return Err(ConsentError::InvalidRedirectUri);
    }
    let parsed = Url::parse(uri).map_err(|_| ConsentError::InvalidRedirectUri)?;
    // Written plainly as `scheme://host`: the parser also takes `https:host`, `https:///host`
    // and backslashes, which a reader (or a pattern in the API document) would not expect.
    let prefix = format!("{}://", parsed.scheme());
    let plain = uri
        .get(..prefix.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(&prefix))
        && !matches!(uri[prefix.len()..].chars().next(), Some('/' | '\\'));
    let ok = plain
        && matches!(parsed.scheme(), "http" | "https")
        && parsed.username().is_empty()
        && parsed.password().is_none()
        && allowed.contains(&parsed.origin());
    if ok {
        // Store the parsed form: it is what was checked, whatever quirks the raw text had.
        Ok(parsed.into())
    } else {
        Err(ConsentError::InvalidRedirectUri)
    }
}
