//! A task's credentials: restricted ways a row's owner lets a task get access tokens after the
//! user has left — and nothing else. Two kinds, stored and restricted alike:
//!
//! - a **task key**: `tbk_` + 256 random bits (the prefix lets secret scanners find leaked
//!   keys). Only its HMAC-SHA256 under the broker's task-key secret is stored; that secret is
//!   made once, sealed under `TOKEN_ENCRYPTION_KEYS` and re-sealed by `keys rotate`;
//! - a **workload binding**: no secret at all. The task proves who it is with the token its
//!   platform already gives it (Kubernetes, CI, SPIFFE), matched against the binding's issuer,
//!   subject and claims ([`workload`]).
//!
//! Either is limited to its row, to a scope within the row's grant, until an expiry no later
//! than the row's, to a number of successful uses (counted atomically), and to the addresses it
//! names ([`rules`]); either ends with its row. Redemption is in [`redeem`].

mod redeem;
pub(crate) mod rules;
pub mod workload;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::access::AccessError;
use super::scope::Scope;
use crate::audit::{Journal, Subject};
use crate::crypto::{keyed_hash, purpose, random_token, Binding, CryptoError, Keyring};
use crate::vault::{
    AuditAction, Credential, CredentialKind, NewTaskKey, Status, StatusReason, TaskKey, TokenVault,
    VaultError,
};
use rules::{parse_cidrs, validate_name};
pub use workload::{WorkloadRefusal, WorkloadRequest};

pub const KEY_PREFIX: &str = "tbk_";
/// Live (unrevoked, unexpired) keys and bindings a row may have at once.
pub const MAX_LIVE_KEYS: u32 = 100;
const SECRET_NAME: &str = "task_key_hmac";
pub const MAX_NAME_LEN: usize = 100;
pub const MAX_CIDRS: usize = 20;
pub const MAX_USES: u32 = 1_000_000_000;

#[derive(Debug, thiserror::Error)]
pub enum TaskKeyError {
    #[error("no such token for this caller")]
    NotFound,
    #[error("no such task key")]
    KeyNotFound,
    #[error("no such workload binding")]
    BindingNotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("the scope asked for is not within the grant")]
    InvalidScope,
    #[error("the token is {status}")]
    Gone {
        status: Status,
        reason: Option<StatusReason>,
    },
    #[error("this token already has {MAX_LIVE_KEYS} live task keys and workload bindings")]
    TooMany,
    /// Workload bindings are off: `WORKLOAD_ISSUERS` is not set.
    #[error("workload identities are not enabled on this broker")]
    WorkloadsDisabled,
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("sealing the task-key secret failed: {0}")]
    Sealing(#[from] CryptoError),
}

/// Why a presented key (or a matched binding) is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    #[error("unknown or malformed task key")]
    Unknown,
    #[error("this task key was revoked")]
    Revoked,
    #[error("this task key has expired")]
    Expired,
    #[error("this task key has been used as often as it may")]
    Exhausted,
    #[error("this task key may not be used from this address")]
    Address,
}

impl KeyRefusal {
    fn as_str(self) -> &'static str {
        match self {
            KeyRefusal::Unknown => "unknown",
            KeyRefusal::Revoked => "revoked",
            KeyRefusal::Expired => "expired",
            KeyRefusal::Exhausted => "exhausted",
            KeyRefusal::Address => "address_not_allowed",
        }
    }
}

/// How a redemption went wrong.
#[derive(Debug, thiserror::Error)]
pub enum RedeemError {
    #[error(transparent)]
    Refused(KeyRefusal),
    /// A workload whose token verified, refused for the reason given.
    #[error(transparent)]
    Workload(WorkloadRefusal),
    /// `resource` named a grant the task key or workload binding is not for.
    #[error("`resource` names a grant this credential is not for")]
    NotForResource,
    /// A caller other than a task did not say which row.
    #[error("persistentTokenId is required")]
    RowNotNamed,
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// What the owner asks a new key or binding to be restricted to.
#[derive(Debug, Default)]
pub struct KeyRequest {
    pub name: Option<String>,
    pub scope: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub max_uses: Option<u32>,
    pub allowed_cidrs: Vec<String>,
}

/// A new key: its record, and the key itself, shown once.
pub struct IssuedKey {
    pub key: TaskKey,
    pub secret: SecretString,
}

/// How the audit trail words each kind of credential.
impl CredentialKind {
    /// The actor of a use in the audit trail.
    fn actor(self, id: Uuid) -> String {
        match self {
            CredentialKind::TaskKey => format!("task-key:{id}"),
            CredentialKind::Workload => format!("workload:{id}"),
        }
    }

    fn reason(self, id: Uuid) -> String {
        match self {
            CredentialKind::TaskKey => format!("key:{id}"),
            CredentialKind::Workload => format!("binding:{id}"),
        }
    }

    fn created(self) -> AuditAction {
        match self {
            CredentialKind::TaskKey => AuditAction::TaskKeyCreated,
            CredentialKind::Workload => AuditAction::WorkloadBound,
        }
    }

    fn revoked(self) -> AuditAction {
        match self {
            CredentialKind::TaskKey => AuditAction::TaskKeyRevoked,
            CredentialKind::Workload => AuditAction::WorkloadUnbound,
        }
    }

    fn used(self) -> AuditAction {
        match self {
            CredentialKind::TaskKey => AuditAction::TaskKeyUsed,
            CredentialKind::Workload => AuditAction::WorkloadUsed,
        }
    }
}

pub struct TaskKeys {
    vault: Arc<dyn TokenVault>,
    journal: Journal,
    hash_key: Zeroizing<Vec<u8>>,
    /// `TRUSTED_PROXIES`: a key may not name networks that hold a proxy. An address inside
    /// them is the proxy's or one a caller wrote into `X-Forwarded-For`; neither says who the
    /// task is.
    proxies: Vec<IpNet>,
    /// `WORKLOAD_ISSUERS`: the platforms a binding may name; empty = bindings are off.
    workload_issuers: Vec<String>,
}

impl TaskKeys {
    /// Opens the broker's task-key secret, making it on first start (the first instance to
    /// store one wins; the others read it).
    pub async fn load(
        vault: Arc<dyn TokenVault>,
        keyring: &Keyring,
        journal: Journal,
        proxies: Vec<IpNet>,
    ) -> Result<Self, TaskKeyError> {
        let binding = Self::secret_binding();
        if vault.broker_secret(SECRET_NAME).await?.is_none() {
            let fresh = Zeroizing::new(random_token(32));
            let sealed = keyring.seal(fresh.as_bytes(), binding)?;
            vault
                .store_broker_secret(SECRET_NAME, &sealed, Utc::now())
                .await?;
        }
        let sealed = vault
            .broker_secret(SECRET_NAME)
            .await?
            .ok_or_else(|| TaskKeyError::Invalid("the task-key secret vanished".into()))?;
        let hash_key = keyring.open(&sealed, binding)?;
        Ok(Self {
            vault,
            journal,
            hash_key: Zeroizing::new(hash_key.to_vec()),
            proxies,
            workload_issuers: Vec::new(),
        })
    }

    /// Lets bindings name these platform issuers (`WORKLOAD_ISSUERS`).
    pub fn with_workload_issuers(mut self, issuers: Vec<String>) -> Self {
        self.workload_issuers = issuers;
        self
    }

    /// How the broker's own secret is bound, for key rotation.
    pub fn secret_binding() -> Binding<'static> {
        Binding {
            purpose: purpose::BROKER_SECRET,
            row_id: Uuid::nil(),
            user_id: SECRET_NAME,
        }
    }

    fn hash(&self, key: &str) -> Vec<u8> {
        keyed_hash(&self.hash_key, key.as_bytes())
    }

    /// A new key for row `token_id` of `owner`.
    pub async fn create(
        &self,
        owner: &str,
        token_id: Uuid,
        request: KeyRequest,
    ) -> Result<IssuedKey, TaskKeyError> {
        let secret = SecretString::from(format!("{KEY_PREFIX}{}", random_token(32)));
        let credential = Credential::KeyHash(self.hash(secret.expose_secret()));
        let key = self.store(owner, token_id, request, credential).await?;
        Ok(IssuedKey { key, secret })
    }

    /// Binds row `token_id` of `owner` to a workload identity.
    pub async fn bind(
        &self,
        owner: &str,
        token_id: Uuid,
        workload: WorkloadRequest,
        request: KeyRequest,
    ) -> Result<TaskKey, TaskKeyError> {
        if self.workload_issuers.is_empty() {
            return Err(TaskKeyError::WorkloadsDisabled);
        }
        let identity = workload.validate(&self.workload_issuers)?;
        self.store(owner, token_id, request, Credential::Workload(identity))
            .await
    }

    /// Checks `request` against row `token_id` of `owner` and stores the credential.
    async fn store(
        &self,
        owner: &str,
        token_id: Uuid,
        request: KeyRequest,
        credential: Credential,
    ) -> Result<TaskKey, TaskKeyError> {
        let row = self
            .vault
            .find(token_id)
            .await?
            .filter(|row| row.user_id == owner)
            .ok_or(TaskKeyError::NotFound)?;
        if !matches!(row.status, Status::Active | Status::Pending) {
            return Err(TaskKeyError::Gone {
                status: row.status,
                reason: row.status_reason,
            });
        }
        let now = Utc::now();
        let name = request.name.map(|n| validate_name(&n)).transpose()?;
        let scope = request
            .scope
            .as_deref()
            .map(|s| Scope::parse(s).map_err(|e| TaskKeyError::Invalid(e.to_string())))
            .transpose()?;
        if let Some(scope) = &scope {
            // A pending row is held to what its consent asks for; an active one to its grant.
            if !scope.is_subset(&Scope::granted(row.granted_scope.as_deref())) {
                return Err(TaskKeyError::InvalidScope);
            }
        }
        let expires_at = request.expires_at.unwrap_or(row.expires_at);
        if expires_at <= now {
            return Err(TaskKeyError::Invalid(
                "expiresAt must be in the future".into(),
            ));
        }
        if expires_at > row.expires_at {
            return Err(TaskKeyError::Invalid(format!(
                "expiresAt must not be later than the token's own expiry ({})",
                row.expires_at.to_rfc3339()
            )));
        }
        if request.max_uses.is_some_and(|n| n == 0 || n > MAX_USES) {
            return Err(TaskKeyError::Invalid(
                "maxUses must be between 1 and 1000000000".into(),
            ));
        }
        let allowed_cidrs = parse_cidrs(&request.allowed_cidrs, &self.proxies)?;
        let kind = credential.kind();
        let key = NewTaskKey {
            id: Uuid::new_v4(),
            token_id,
            user_id: owner.to_owned(),
            name,
            credential,
            scope: scope.map(|s| s.to_string()),
            expires_at,
            max_uses: request.max_uses,
            allowed_cidrs,
            created_at: now,
        };
        if !self.vault.create_task_key(&key, MAX_LIVE_KEYS).await? {
            // The row ended meanwhile, or has too many keys.
            return match self.vault.find(token_id).await? {
                Some(row) if matches!(row.status, Status::Active | Status::Pending) => {
                    Err(TaskKeyError::TooMany)
                }
                Some(row) => Err(TaskKeyError::Gone {
                    status: row.status,
                    reason: row.status_reason,
                }),
                None => Err(TaskKeyError::NotFound),
            };
        }
        let subject = Subject {
            token_id,
            user_id: owner,
            task_id: &row.task_id,
        };
        let reason = kind.reason(key.id);
        self.journal
            .record(owner, subject, kind.created(), true, Some(&reason))
            .await;
        self.vault
            .task_keys(token_id)
            .await?
            .into_iter()
            .find(|k| k.id == key.id)
            .ok_or(TaskKeyError::KeyNotFound)
    }

    /// The keys (or the bindings) of row `token_id` of `owner`, without secrets.
    pub async fn list(
        &self,
        owner: &str,
        token_id: Uuid,
        kind: CredentialKind,
    ) -> Result<Vec<TaskKey>, TaskKeyError> {
        self.owned_row(owner, token_id).await?;
        let mut keys = self.vault.task_keys(token_id).await?;
        keys.retain(|key| key.kind() == kind);
        Ok(keys)
    }

    /// Revokes a key or a binding (idempotent). One of the other kind is not found: each
    /// route manages its own.
    pub async fn revoke(
        &self,
        owner: &str,
        token_id: Uuid,
        key_id: Uuid,
        kind: CredentialKind,
    ) -> Result<TaskKey, TaskKeyError> {
        let task_id = self.owned_row(owner, token_id).await?;
        let not_found = match kind {
            CredentialKind::TaskKey => TaskKeyError::KeyNotFound,
            CredentialKind::Workload => TaskKeyError::BindingNotFound,
        };
        let key = self
            .vault
            .revoke_task_key(token_id, key_id, kind, Utc::now())
            .await?
            .ok_or(not_found)?;
        let subject = Subject {
            token_id,
            user_id: owner,
            task_id: &task_id,
        };
        let reason = kind.reason(key_id);
        self.journal
            .record(owner, subject, kind.revoked(), true, Some(&reason))
            .await;
        Ok(key)
    }

    async fn owned_row(&self, owner: &str, token_id: Uuid) -> Result<String, TaskKeyError> {
        self.vault
            .find(token_id)
            .await?
            .filter(|row| row.user_id == owner)
            .map(|row| row.task_id)
            .ok_or(TaskKeyError::NotFound)
    }
}
