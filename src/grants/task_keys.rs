//! Task keys: restricted credentials a row's owner gives a task, so the task can get access
//! tokens after the user has left — and nothing else.
//!
//! A key is `tbk_` + 256 random bits (the prefix lets secret scanners find leaked keys). Only
//! its HMAC-SHA256 under the broker's task-key secret is stored; that secret is made once,
//! sealed under `TOKEN_ENCRYPTION_KEYS` and re-sealed by `keys rotate`. A key is limited to its
//! row, to a scope within the row's grant, until an expiry no later than the row's, to a number
//! of successful uses (counted atomically), and to the addresses it names.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::access::{AccessError, Refresher};
use super::cache::Minted;
use super::caller::Caller;
use super::scope::Scope;
use crate::audit::{Journal, Subject};
use crate::crypto::{keyed_hash, purpose, random_token, Binding, CryptoError, Keyring};
use crate::vault::{
    AuditAction, NewTaskKey, Status, StatusReason, TaskKey, TokenVault, VaultError,
};

pub const KEY_PREFIX: &str = "tbk_";
/// Live (unrevoked, unexpired) keys a row may have at once.
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
    #[error("{0}")]
    Invalid(String),
    #[error("the scope asked for is not within the grant")]
    InvalidScope,
    #[error("the token is {status}")]
    Gone {
        status: Status,
        reason: Option<StatusReason>,
    },
    #[error("this token already has {MAX_LIVE_KEYS} live task keys")]
    TooMany,
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("sealing the task-key secret failed: {0}")]
    Sealing(#[from] CryptoError),
}

/// Why a presented key is refused.
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
    /// A caller other than a task did not say which row.
    #[error("persistentTokenId is required")]
    RowNotNamed,
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Vault(#[from] VaultError),
}

/// What the owner asks a new key to be.
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

pub struct TaskKeys {
    vault: Arc<dyn TokenVault>,
    journal: Journal,
    hash_key: Zeroizing<Vec<u8>>,
    /// `TRUSTED_PROXIES`: a key may not name networks that hold a proxy. An address inside
    /// them is the proxy's or one a caller wrote into `X-Forwarded-For`; neither says who the
    /// task is.
    proxies: Vec<IpNet>,
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
        let binding = Binding {
            purpose: purpose::BROKER_SECRET,
            row_id: Uuid::nil(),
            user_id: SECRET_NAME,
        };
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
        })
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
        let secret = SecretString::from(format!("{KEY_PREFIX}{}", random_token(32)));
        let key = NewTaskKey {
            id: Uuid::new_v4(),
            token_id,
            user_id: owner.to_owned(),
            name,
            key_hash: self.hash(secret.expose_secret()),
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
        let reason = format!("key:{}", key.id);
        let subject = Subject {
            token_id,
            user_id: owner,
            task_id: &row.task_id,
        };
        self.journal
            .record(
                owner,
                subject,
                AuditAction::TaskKeyCreated,
                true,
                Some(&reason),
            )
            .await;
        let stored = self
            .vault
            .task_keys(token_id)
            .await?
            .into_iter()
            .find(|k| k.id == key.id)
            .ok_or(TaskKeyError::KeyNotFound)?;
        Ok(IssuedKey {
            key: stored,
            secret,
        })
    }

    /// The keys of row `token_id` of `owner`, without secrets.
    pub async fn list(&self, owner: &str, token_id: Uuid) -> Result<Vec<TaskKey>, TaskKeyError> {
        self.owned_row(owner, token_id).await?;
        Ok(self.vault.task_keys(token_id).await?)
    }

    /// Revokes a key (idempotent).
    pub async fn revoke(
        &self,
        owner: &str,
        token_id: Uuid,
        key_id: Uuid,
    ) -> Result<TaskKey, TaskKeyError> {
        let task_id = self.owned_row(owner, token_id).await?;
        let key = self
            .vault
            .revoke_task_key(token_id, key_id, Utc::now())
            .await?
            .ok_or(TaskKeyError::KeyNotFound)?;
        let reason = format!("key:{key_id}");
        let subject = Subject {
            token_id,
            user_id: owner,
            task_id: &task_id,
        };
        self.journal
            .record(
                owner,
                subject,
                AuditAction::TaskKeyRevoked,
                true,
                Some(&reason),
            )
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

    /// The key `presented` names, if it may be used now from `from`. Uses are counted only
    /// when a redemption succeeds ([`redeem`](Self::redeem)).
    pub async fn authenticate(
        &self,
        presented: &str,
        from: Option<IpAddr>,
    ) -> Result<TaskKey, RedeemError> {
        let well_formed = presented.len() == KEY_PREFIX.len() + 43
            && presented.starts_with(KEY_PREFIX)
            && presented[KEY_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !well_formed {
            return Err(RedeemError::Refused(KeyRefusal::Unknown));
        }
        let key = self
            .vault
            .find_task_key(&self.hash(presented))
            .await?
            .ok_or(RedeemError::Refused(KeyRefusal::Unknown))?;
        let refusal = if key.revoked_at.is_some() {
            Some(KeyRefusal::Revoked)
        } else if key.expires_at <= Utc::now() {
            Some(KeyRefusal::Expired)
        } else if key.max_uses.is_some_and(|max| key.uses >= max) {
            Some(KeyRefusal::Exhausted)
        } else if !address_allowed(&key.allowed_cidrs, from) {
            Some(KeyRefusal::Address)
        } else {
            None
        };
        match refusal {
            Some(KeyRefusal::Revoked) => {
                self.audit_use(&key, "", from, Err(KeyRefusal::Revoked.as_str()))
                    .await;
                Err(self.revoked(&key).await)
            }
            Some(refusal) => {
                self.audit_use(&key, "", from, Err(refusal.as_str())).await;
                Err(RedeemError::Refused(refusal))
            }
            None => Ok(key),
        }
    }

    /// Why a revoked key is refused: a key that ended with its row says what became of the
    /// row (410 `token_revoked`, `token_failed`, `token_expired`), so the task learns that
    /// its grant is over, not merely its key; one revoked by itself, or whose row came back
    /// through a re-consent, is a revoked key.
    async fn revoked(&self, key: &TaskKey) -> RedeemError {
        match self.vault.find(key.token_id).await {
            Ok(Some(row))
                if matches!(
                    row.status,
                    Status::Failed | Status::Revoked | Status::Expired
                ) =>
            {
                AccessError::Gone {
                    status: row.status,
                    reason: row.status_reason,
                }
                .into()
            }
            Ok(_) => RedeemError::Refused(KeyRefusal::Revoked),
            Err(e) => e.into(),
        }
    }

    /// An access token for `key`'s row (`id`, when given, must be that row), narrowed to
    /// `scope` within the key's own. One use is reserved atomically first and given back if no
    /// token comes of it, so concurrent redemptions never exceed `maxUses`.
    pub async fn redeem(
        &self,
        refresher: &Refresher,
        key: TaskKey,
        id: Option<Uuid>,
        scope: Option<Scope>,
        from: Option<IpAddr>,
    ) -> Result<Minted, RedeemError> {
        if id.is_some_and(|id| id != key.token_id) {
            return Err(AccessError::NotFound.into());
        }
        if !self.vault.reserve_task_key_use(key.id, Utc::now()).await? {
            self.audit_use(&key, "", from, Err(KeyRefusal::Exhausted.as_str()))
                .await;
            return Err(RedeemError::Refused(KeyRefusal::Exhausted));
        }
        let token_id = key.token_id;
        match refresher
            .access_token(&Caller::Task(key.clone()), token_id, scope)
            .await
        {
            Ok(minted) => {
                self.audit_use(&key, &minted.task_id, from, Ok(())).await;
                Ok(minted)
            }
            Err(e) => {
                if let Err(refund) = self.vault.refund_task_key_use(key.id).await {
                    tracing::warn!(key = %key.id, error = %refund, "could not give back a task key use");
                }
                self.audit_use(&key, "", from, Err(access_reason(&e))).await;
                Err(e.into())
            }
        }
    }

    /// Every use is audited: which key, from where, and how it went.
    async fn audit_use(
        &self,
        key: &TaskKey,
        task_id: &str,
        from: Option<IpAddr>,
        outcome: Result<(), &str>,
    ) {
        let from = from.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        let reason = match outcome {
            Ok(()) => format!("from:{from}"),
            Err(why) => format!("{why};from:{from}"),
        };
        let subject = Subject {
            token_id: key.token_id,
            user_id: &key.user_id,
            task_id,
        };
        let actor = format!("task-key:{}", key.id);
        self.journal
            .record(
                &actor,
                subject,
                AuditAction::TaskKeyUsed,
                outcome.is_ok(),
                Some(&reason),
            )
            .await;
    }
}

fn access_reason(error: &AccessError) -> &'static str {
    match error {
        AccessError::NotFound => "not_found",
        AccessError::Pending => "pending",
        AccessError::Gone { .. } => "token_gone",
        AccessError::InvalidScope => "invalid_scope",
        AccessError::ProviderUnavailable { .. } | AccessError::ProviderBusy => {
            "provider_unavailable"
        }
        AccessError::ProviderRejected { .. } => "provider_rejected",
        AccessError::ScopeNotNarrowed => "scope_not_narrowed",
        _ => "internal_error",
    }
}

pub(crate) fn validate_name(name: &str) -> Result<String, TaskKeyError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN || name.chars().any(char::is_control)
    {
        return Err(TaskKeyError::Invalid(
            "name must be 1 to 100 printable characters".into(),
        ));
    }
    Ok(name.to_owned())
}

/// CIDRs (or single addresses), in their canonical form; none may share an address with a
/// trusted proxy network.
fn parse_cidrs(raw: &[String], proxies: &[IpNet]) -> Result<Vec<String>, TaskKeyError> {
    if raw.len() > MAX_CIDRS {
        return Err(TaskKeyError::Invalid(format!(
            "allowedCidrs may list at most {MAX_CIDRS} networks"
        )));
    }
    raw.iter()
        .map(|entry| {
            let entry = entry.trim();
            entry
                .parse::<IpNet>()
                .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                .map(|net| net.trunc())
                .map_err(|_| {
                    TaskKeyError::Invalid(format!(
                        "allowedCidrs: `{}` is not a network like 10.0.0.0/8 or an address",
                        entry.chars().take(64).collect::<String>()
                    ))
                })
                .and_then(|net| match overlapping_proxy(&net, proxies) {
                    Some(proxy) => Err(TaskKeyError::Invalid(format!(
                        "allowedCidrs: {net} overlaps the trusted proxy network {proxy}: \
                             a proxy's addresses do not say who the task is"
                    ))),
                    None => Ok(net.to_string()),
                })
        })
        .collect()
}

/// The trusted proxy network `net` shares an address with, if any.
fn overlapping_proxy<'a>(net: &IpNet, proxies: &'a [IpNet]) -> Option<&'a IpNet> {
    proxies
        .iter()
        .find(|proxy| proxy.contains(net) || net.contains(*proxy))
}

fn address_allowed(cidrs: &[String], from: Option<IpAddr>) -> bool {
    if cidrs.is_empty() {
        return true;
    }
    let Some(from) = from else { return false };
    // An IPv4 client may arrive as an IPv4-mapped IPv6 address on a dual-stack socket.
    let from = match from {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(from, IpAddr::V4),
        v4 => v4,
    };
    cidrs
        .iter()
        .filter_map(|c| c.parse::<IpNet>().ok())
        .any(|net| net.contains(&from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_parsed_canonical_and_bounded() {
        let parsed = parse_cidrs(
            &["10.1.2.3/8".into(), "192.0.2.7".into(), "::1".into()],
            &[],
        )
        .unwrap();
        assert_eq!(parsed, ["10.0.0.0/8", "192.0.2.7/32", "::1/128"]);
        assert!(parse_cidrs(&["10.0.0.0/33".into()], &[]).is_err());
        assert!(parse_cidrs(&["example.com".into()], &[]).is_err());
        let many: Vec<String> = (0..21).map(|i| format!("10.0.0.{i}")).collect();
        assert!(parse_cidrs(&many, &[]).is_err());
    }

    #[test]
    fn networks_that_share_an_address_with_a_proxy_overlap() {
        let proxies: Vec<IpNet> = ["10.0.0.0/8", "192.0.2.1/32"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        for net in ["10.20.0.0/16", "0.0.0.0/0", "192.0.2.0/24", "10.0.0.1/32"] {
            assert!(
                overlapping_proxy(&net.parse().unwrap(), &proxies).is_some(),
                "{net}"
            );
        }
        assert!(overlapping_proxy(&"198.51.100.0/24".parse().unwrap(), &proxies).is_none());
    }

    #[test]
    fn addresses_are_matched_against_the_networks() {
        let nets = vec!["10.0.0.0/8".to_owned()];
        assert!(address_allowed(&nets, Some("10.9.9.9".parse().unwrap())));
        assert!(address_allowed(
            &nets,
            Some("::ffff:10.9.9.9".parse().unwrap())
        ));
        assert!(!address_allowed(&nets, Some("192.0.2.1".parse().unwrap())));
        assert!(!address_allowed(&nets, None), "no address, no entry");
        assert!(address_allowed(&[], None), "no restriction");
    }

    #[test]
    fn names_are_printable_and_short() {
        assert_eq!(validate_name("  nightly ").unwrap(), "nightly");
        assert!(validate_name("").is_err());
        assert!(validate_name("a\nb").is_err());
        assert!(validate_name(&"x".repeat(101)).is_err());
    }
}
