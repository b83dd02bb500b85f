//! Task keys, workload bindings and the broker's own secrets, as stored. Every backend
//! implements [`TaskKeyStore`]; [`super::TokenVault`] includes it.
//!
//! A workload binding is stored as a task key without a secret: the same table, restrictions,
//! use counting and end with the row; it names a platform identity instead of a key hash.

mod postgres;
mod sqlite;
mod store;

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::VaultError;
use crate::crypto::Sealed;

/// The workload a binding admits: a platform issuer, the exact subject, and exact matches on
/// further claims (dotted paths, see `grants::workloads`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkloadIdentity {
    pub issuer: String,
    pub subject: String,
    pub claims: BTreeMap<String, Value>,
}

/// What a stored credential is presented as.
#[derive(Debug)]
pub enum Credential {
    /// A task key: its keyed hash, never the key.
    KeyHash(Vec<u8>),
    /// A workload identity: no secret at all.
    Workload(WorkloadIdentity),
}

/// A task key or workload binding about to be stored.
#[derive(Debug)]
pub struct NewTaskKey {
    pub id: Uuid,
    pub token_id: Uuid,
    /// The row's owner; only their row gets the key.
    pub user_id: String,
    pub name: Option<String>,
    pub credential: Credential,
    pub scope: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub max_uses: Option<u32>,
    pub allowed_cidrs: Vec<String>,
    pub created_at: DateTime<Utc>,
}

/// The two kinds of a task's credential: a task key (a secret the task presents) or a workload
/// binding (matched to its platform's token). A route that manages one never finds the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialKind {
    TaskKey,
    Workload,
}

impl Credential {
    pub fn kind(&self) -> CredentialKind {
        match self {
            Credential::KeyHash(_) => CredentialKind::TaskKey,
            Credential::Workload(_) => CredentialKind::Workload,
        }
    }
}

/// A task key or workload binding as stored (no secret in it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskKey {
    pub id: Uuid,
    pub token_id: Uuid,
    pub user_id: String,
    pub name: Option<String>,
    pub scope: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub allowed_cidrs: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Set for a workload binding, none for a task key.
    pub workload: Option<WorkloadIdentity>,
}

impl TaskKey {
    pub fn kind(&self) -> CredentialKind {
        match self.workload {
            Some(_) => CredentialKind::Workload,
            None => CredentialKind::TaskKey,
        }
    }
}

pub(super) const TASK_KEY_COLUMNS: &str = "id, token_id, user_id, name, scope, expires_at, \
    max_uses, uses, allowed_cidrs, created_at, last_used_at, revoked_at, workload_issuer, \
    workload_subject, workload_claims";

#[derive(sqlx::FromRow)]
pub(super) struct TaskKeyRecord {
    id: Uuid,
    token_id: Uuid,
    user_id: String,
    name: Option<String>,
    scope: Option<String>,
    expires_at: DateTime<Utc>,
    max_uses: Option<i32>,
    uses: i32,
    allowed_cidrs: Option<String>,
    created_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
    workload_issuer: Option<String>,
    workload_subject: Option<String>,
    workload_claims: Option<String>,
}

impl From<TaskKeyRecord> for TaskKey {
    fn from(r: TaskKeyRecord) -> Self {
        let workload = match (r.workload_issuer, r.workload_subject) {
            (Some(issuer), Some(subject)) => Some(WorkloadIdentity {
                issuer,
                subject,
                // Written by `claims_json` only; a value that does not read back as an object
                // would match nothing rather than everything.
                claims: r
                    .workload_claims
                    .map(|text| {
                        serde_json::from_str(&text).unwrap_or_else(|_| {
                            BTreeMap::from([(String::new(), Value::Bool(false))])
                        })
                    })
                    .unwrap_or_default(),
            }),
            _ => None,
        };
        TaskKey {
            id: r.id,
            token_id: r.token_id,
            user_id: r.user_id,
            name: r.name,
            scope: r.scope,
            expires_at: r.expires_at,
            max_uses: r.max_uses.and_then(|n| u32::try_from(n).ok()),
            uses: u32::try_from(r.uses).unwrap_or(0),
            allowed_cidrs: r
                .allowed_cidrs
                .map(|c| c.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
            created_at: r.created_at,
            last_used_at: r.last_used_at,
            revoked_at: r.revoked_at,
            workload,
        }
    }
}

/// The columns a credential fills: its key hash, or its workload's issuer, subject and claims.
pub(super) struct CredentialColumns<'a> {
    pub key_hash: Option<&'a [u8]>,
    pub issuer: Option<&'a str>,
    pub subject: Option<&'a str>,
    pub claims: Option<String>,
}

impl Credential {
    pub(super) fn columns(&self) -> CredentialColumns<'_> {
        match self {
            Credential::KeyHash(hash) => CredentialColumns {
                key_hash: Some(hash),
                issuer: None,
                subject: None,
                claims: None,
            },
            Credential::Workload(identity) => CredentialColumns {
                key_hash: None,
                issuer: Some(&identity.issuer),
                subject: Some(&identity.subject),
                claims: (!identity.claims.is_empty())
                    .then(|| serde_json::to_string(&identity.claims).unwrap_or_default()),
            },
        }
    }
}

/// The comma-separated form stored in `allowed_cidrs`.
pub(super) fn joined(cidrs: &[String]) -> Option<String> {
    (!cidrs.is_empty()).then(|| cidrs.join(","))
}

#[derive(sqlx::FromRow)]
pub(super) struct SecretRecord {
    pub name: String,
    pub key_id: String,
    pub iv: Vec<u8>,
    pub encrypted_value: Vec<u8>,
}

impl SecretRecord {
    pub fn sealed(self) -> (String, Sealed) {
        (
            self.name,
            Sealed {
                key_id: self.key_id,
                nonce: self.iv,
                ciphertext: self.encrypted_value,
            },
        )
    }
}

/// Keys made within this window count against a row's limit even once revoked, so that
/// create/revoke cycles cannot grow the table without bound.
pub const KEY_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

#[async_trait]
pub trait TaskKeyStore: Send + Sync {
    /// Stores a key for row `token_id` if that row is `user_id`'s, pending or active, and has
    /// fewer than `max_live` keys that are unrevoked and unexpired or were made within
    /// [`KEY_WINDOW`]. False otherwise.
    async fn create_task_key(&self, key: &NewTaskKey, max_live: u32) -> Result<bool, VaultError>;

    /// Deletes up to `batch` keys revoked or expired before `cutoff` (the clean-up job).
    async fn purge_task_keys(&self, cutoff: DateTime<Utc>, batch: u32) -> Result<u64, VaultError>;

    /// A row's keys, oldest first.
    async fn task_keys(&self, token_id: Uuid) -> Result<Vec<TaskKey>, VaultError>;

    /// The key whose keyed hash this is.
    async fn find_task_key(&self, key_hash: &[u8]) -> Result<Option<TaskKey>, VaultError>;

    /// The unrevoked workload bindings of `issuer`'s `subject` (at most `limit`, oldest first).
    async fn workload_bindings(
        &self,
        issuer: &str,
        subject: &str,
        limit: u32,
    ) -> Result<Vec<TaskKey>, VaultError>;

    /// Revokes key `key_id` of row `token_id` (idempotent); the key as it is afterwards.
    /// One of the other `kind` is not found, so neither route revokes the other's.
    async fn revoke_task_key(
        &self,
        token_id: Uuid,
        key_id: Uuid,
        kind: CredentialKind,
        now: DateTime<Utc>,
    ) -> Result<Option<TaskKey>, VaultError>;

    /// Counts one use of a key that is unrevoked, unexpired and under its limit, atomically:
    /// of N concurrent calls on a key with M uses left, exactly M succeed. False = refused.
    async fn reserve_task_key_use(
        &self,
        key_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<bool, VaultError>;

    /// Gives back a use reserved for a redemption that then failed.
    async fn refund_task_key_use(&self, key_id: Uuid) -> Result<(), VaultError>;

    /// One of the broker's own secrets, sealed.
    async fn broker_secret(&self, name: &str) -> Result<Option<Sealed>, VaultError>;

    /// Stores a secret unless one of that name exists (the first instance to start wins).
    async fn store_broker_secret(
        &self,
        name: &str,
        sealed: &Sealed,
        now: DateTime<Utc>,
    ) -> Result<(), VaultError>;

    /// The broker's secrets not sealed under `key_id` (key rotation).
    async fn broker_secrets_under_other_keys(
        &self,
        key_id: &str,
    ) -> Result<Vec<(String, Sealed)>, VaultError>;

    /// Replaces a secret's ciphertext if it still is `old` (compare-and-swap).
    async fn reseal_broker_secret(
        &self,
        name: &str,
        old: &Sealed,
        new: &Sealed,
    ) -> Result<bool, VaultError>;
}
