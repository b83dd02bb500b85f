//! The vault's types: rows, claims and the records sqlx reads them into.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::lifecycle::{Status, StatusReason};
use crate::crypto::Sealed;

/// A consent about to be stored as a pending row. Holds digests and sealed values only.
#[derive(Debug)]
pub struct NewConsent {
    pub id: Uuid,
    pub user_id: String,
    pub task_id: String,
    pub state_hash: Vec<u8>,
    pub state_expires_at: DateTime<Utc>,
    /// `Sealed::to_bytes` of the PKCE verifier.
    pub pkce_verifier: Vec<u8>,
    pub nonce_hash: Vec<u8>,
    pub redirect_uri: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub metadata: serde_json::Value,
    /// Client ids whose service accounts may redeem the row.
    pub delegates: Vec<String>,
}

/// A new consent for a row that already exists (re-consent): the same secrets as a
/// [`NewConsent`], stored beside the row's current token, which keeps working meanwhile.
#[derive(Debug)]
pub struct NewReconsent {
    pub id: Uuid,
    /// Only this user's row is changed.
    pub user_id: String,
    pub state_hash: Vec<u8>,
    pub state_expires_at: DateTime<Utc>,
    pub pkce_verifier: Vec<u8>,
    pub nonce_hash: Vec<u8>,
    pub redirect_uri: Option<String>,
    pub now: DateTime<Utc>,
}

/// What the callback needs from a consent it has just claimed.
#[derive(Debug)]
pub struct ClaimedConsent {
    pub id: Uuid,
    pub user_id: String,
    pub task_id: String,
    /// The row's status when the state was claimed: `Pending` for a first consent; anything
    /// else is a re-consent of an existing row.
    pub status: Status,
    pub pkce_verifier: Option<Vec<u8>>,
    pub nonce_hash: Option<Vec<u8>>,
    pub redirect_uri: Option<String>,
}

/// A completed consent, written into its row.
#[derive(Debug)]
pub struct Activation<'a> {
    pub sealed: &'a Sealed,
    /// The row's hard end: no refresh can pass it.
    pub expires_at: DateTime<Utc>,
    /// When the new refresh token stops working if unused, when known.
    pub refresh_expires_at: Option<DateTime<Utc>>,
    /// The scope the provider granted (space-separated).
    pub granted_scope: Option<String>,
    pub now: DateTime<Utc>,
}

/// The last access token minted for a row, sealed (`Sealed::to_bytes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAccess {
    pub sealed: Vec<u8>,
    pub expires_at: DateTime<Utc>,
    pub token_type: String,
    pub scope: Option<String>,
}

/// How a grant is doing: when it stops working if left alone, and how its refreshes went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrantHealth {
    /// When the current refresh token stops working at the provider if unused.
    pub refresh_expires_at: Option<DateTime<Utc>>,
    pub last_refresh_at: Option<DateTime<Utc>>,
    /// Refreshes that failed in a row since the last success.
    pub consecutive_failures: u32,
    /// A short code for the last failure (e.g. `provider_unavailable`), never provider text.
    pub last_error: Option<String>,
    /// No refresh is attempted before this (back-off after refusals).
    pub next_refresh_at: Option<DateTime<Utc>>,
}

/// A vault row without its consent secrets.
#[derive(Debug)]
pub struct VaultRow {
    pub id: Uuid,
    pub user_id: String,
    pub task_id: String,
    pub status: Status,
    pub status_reason: Option<StatusReason>,
    pub sealed: Option<Sealed>,
    pub access: Option<StoredAccess>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub health: GrantHealth,
    /// Goes up with every refresh claim; a write-back names the fence it claimed with.
    pub fence: i64,
    /// While in the future, another refresh holds the row.
    pub lease_until: Option<DateTime<Utc>>,
    /// The scope the provider granted at consent (space-separated), when known.
    pub granted_scope: Option<String>,
    /// Client ids whose service accounts may redeem the row.
    pub delegates: Vec<String>,
}

/// The columns of a [`VaultRow`], in the order `RowRecord` reads them.
const COLUMNS: [&str; 25] = [
    "id",
    "user_id",
    "task_id",
    "status",
    "status_reason",
    "encrypted_token",
    "iv",
    "key_id",
    "access_token",
    "access_token_expires_at",
    "access_token_type",
    "access_token_scope",
    "expires_at",
    "created_at",
    "updated_at",
    "last_used_at",
    "refresh_expires_at",
    "last_refresh_at",
    "consecutive_failures",
    "last_error",
    "next_refresh_at",
    "refresh_fence",
    "refresh_lease_until",
    "granted_scope",
    "delegates",
];

/// The row's columns, each prefixed with `table.` when a table is named.
pub(super) fn row_columns(table: Option<&str>) -> String {
    COLUMNS
        .iter()
        .map(|c| match table {
            Some(t) => format!("{t}.{c}"),
            None => (*c).to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A row as either backend returns it; the conversion below is the one place that checks it.
#[derive(sqlx::FromRow)]
pub(super) struct RowRecord {
    id: Uuid,
    user_id: String,
    task_id: String,
    status: String,
    status_reason: Option<String>,
    encrypted_token: Option<Vec<u8>>,
    iv: Option<Vec<u8>>,
    key_id: Option<String>,
    access_token: Option<Vec<u8>>,
    access_token_expires_at: Option<DateTime<Utc>>,
    access_token_type: Option<String>,
    access_token_scope: Option<String>,
    expires_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    refresh_expires_at: Option<DateTime<Utc>>,
    last_refresh_at: Option<DateTime<Utc>>,
    consecutive_failures: i32,
    last_error: Option<String>,
    next_refresh_at: Option<DateTime<Utc>>,
    refresh_fence: i64,
    refresh_lease_until: Option<DateTime<Utc>>,
    granted_scope: Option<String>,
    delegates: Option<String>,
}

impl TryFrom<RowRecord> for VaultRow {
    type Error = super::VaultError;

    fn try_from(r: RowRecord) -> Result<Self, Self::Error> {
        let status = r.status.parse().map_err(|_| super::VaultError::Corrupt {
            id: r.id,
            problem: "unknown status",
        })?;
        let sealed = match (r.key_id, r.iv, r.encrypted_token) {
            (Some(key_id), Some(nonce), Some(ciphertext)) => Some(Sealed {
                key_id,
                nonce,
                ciphertext,
            }),
            _ => None,
        };
        let access = match (
            r.access_token,
            r.access_token_expires_at,
            r.access_token_type,
        ) {
            (Some(sealed), Some(expires_at), Some(token_type)) => Some(StoredAccess {
                sealed,
                expires_at,
                token_type,
                scope: r.access_token_scope,
            }),
            _ => None,
        };
        Ok(VaultRow {
            id: r.id,
            user_id: r.user_id,
            task_id: r.task_id,
            status,
            status_reason: r.status_reason.map(|code| match code.parse() {
                Ok(reason) => reason,
                Err(never) => match never {},
            }),
            sealed,
            access,
            expires_at: r.expires_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_used_at: r.last_used_at,
            health: GrantHealth {
                refresh_expires_at: r.refresh_expires_at,
                last_refresh_at: r.last_refresh_at,
                consecutive_failures: u32::try_from(r.consecutive_failures).unwrap_or(0),
                last_error: r.last_error,
                next_refresh_at: r.next_refresh_at,
            },
            fence: r.refresh_fence,
            lease_until: r.refresh_lease_until,
            granted_scope: r.granted_scope,
            delegates: r
                .delegates
                .map(|d| {
                    d.split(',')
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// The answer to a refresh claim.
#[derive(Debug)]
pub enum Claim {
    /// The row is ours to refresh until the lease ends; `row.fence` proves it on write-back.
    Claimed(VaultRow),
    /// Not claimed: the row is not active, or another refresh holds a live lease.
    NotClaimed(VaultRow),
    Missing,
}

/// What a successful refresh brought back.
#[derive(Debug)]
pub struct RefreshWrite<'a> {
    /// A rotated refresh token, sealed; `None` keeps the stored one.
    pub rotated: Option<&'a Sealed>,
    /// The access token to share with other instances; `None` (a narrowed token) keeps the
    /// one stored.
    pub minted: Option<&'a StoredAccess>,
    /// When the (new) refresh token stops working if unused, when known.
    pub refresh_expires_at: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
    /// Who refreshed, and the audit reason: the `token_issued` record is written with the
    /// row, in the same statement, so a refresh is never stored without its record.
    pub actor: &'a str,
    pub audit_reason: Option<&'a str>,
}

/// A refresh that failed without ending the grant.
#[derive(Debug)]
pub struct RefreshFailure<'a> {
    /// Short code for `last_error`.
    pub error: &'a str,
    /// No refresh before this time (back-off), if any.
    pub retry_at: Option<DateTime<Utc>>,
    pub now: DateTime<Utc>,
}

/// The answer to ending a grant (revocation).
#[derive(Debug)]
pub enum Ended {
    /// Ended now; the row as it was just before (with its sealed token, for the provider).
    Ended(VaultRow),
    /// It already had that status; nothing changed.
    Unchanged(VaultRow),
    Missing,
}

/// An active row close to its hard end, for the `token.expiring` webhook.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExpiringRow {
    pub id: Uuid,
    pub user_id: String,
    pub task_id: String,
    pub expires_at: DateTime<Utc>,
}

/// A row's sealed refresh token and what to replace it with.
#[derive(Debug)]
pub struct Reseal {
    pub id: Uuid,
    pub old: Sealed,
    pub new: Sealed,
}

/// Which rows to list, newest first.
#[derive(Debug, Default)]
pub struct ListFilter {
    /// Only this user's rows; None = everybody's (the admin page).
    pub user_id: Option<String>,
    pub task_id: Option<String>,
    pub status: Option<Status>,
    pub limit: u32,
    pub offset: u32,
    /// Only rows after this one in list order (keyset pagination: a deep page costs what the
    /// first one does, where an offset makes the database step over every row before it).
    pub after: Option<ListPosition>,
}

/// A row's place in list order: newest first, ties broken by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListPosition {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

/// A row whose status a background job changed, for the audit trail and webhooks.
#[derive(Debug, Clone)]
pub struct StatusChange {
    pub id: Uuid,
    pub user_id: String,
    pub task_id: String,
    pub status: Status,
    pub reason: Option<StatusReason>,
}

/// A sealed value kept as one blob (`Sealed::to_bytes`), as key rotation sees it.
#[derive(Debug, sqlx::FromRow)]
pub struct SealedBlob {
    pub id: Uuid,
    pub user_id: String,
    pub blob: Vec<u8>,
}

/// A sealed token as key rotation sees it.
#[derive(Debug)]
pub struct SealedRow {
    pub id: Uuid,
    pub user_id: String,
    pub sealed: Sealed,
}

/// What happened, for `token_audit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditAction {
    ConsentRequested,
    ReconsentRequested,
    ConsentCompleted,
    ConsentFailed,
    TokenIssued,
    TokenRefreshFailed,
    TokenRevoked,
    TokenExpired,
    TokenResealed,
    TokenPurged,
    TaskKeyCreated,
    TaskKeyRevoked,
    TaskKeyUsed,
    /// A delegated service account was served a row's token (any path: memory, the row, a
    /// refresh); the actor names the client, the reason the token's `sub`.
    DelegateUsed,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::ConsentRequested => "consent_requested",
            AuditAction::ReconsentRequested => "reconsent_requested",
            AuditAction::ConsentCompleted => "consent_completed",
            AuditAction::ConsentFailed => "consent_failed",
            AuditAction::TokenIssued => "token_issued",
            AuditAction::TokenRefreshFailed => "token_refresh_failed",
            AuditAction::TokenRevoked => "token_revoked",
            AuditAction::TokenExpired => "token_expired",
            AuditAction::TokenResealed => "token_resealed",
            AuditAction::TokenPurged => "token_purged",
            AuditAction::TaskKeyCreated => "task_key_created",
            AuditAction::TaskKeyRevoked => "task_key_revoked",
            AuditAction::TaskKeyUsed => "task_key_used",
            AuditAction::DelegateUsed => "delegate_used",
        }
    }
}

/// One audit record. `reason` is a short code, never token material.
#[derive(Clone, Debug)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub token_id: Option<Uuid>,
    pub user_id: Option<String>,
    pub task_id: Option<String>,
    pub action: AuditAction,
    pub success: bool,
    pub reason: Option<String>,
}

/// An audit record as stored.
#[derive(Debug, sqlx::FromRow, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub token_id: Option<Uuid>,
    pub user_id: Option<String>,
    pub task_id: Option<String>,
    pub action: String,
    pub outcome: String,
    pub reason: Option<String>,
}

/// Whose audit trail to read.
#[derive(Debug)]
pub enum AuditQuery {
    Token(Uuid),
    User(String),
}

impl AuditEvent {
    pub fn outcome(&self) -> &'static str {
        if self.success {
            "success"
        } else {
            "failure"
        }
    }
}

/// `id, user_id, task_id, status, status_reason` as both backends return them.
#[derive(sqlx::FromRow)]
pub(super) struct ChangeRecord {
    id: Uuid,
    user_id: String,
    task_id: String,
    status: String,
    status_reason: Option<String>,
}

impl TryFrom<ChangeRecord> for StatusChange {
    type Error = super::VaultError;

    fn try_from(r: ChangeRecord) -> Result<Self, Self::Error> {
        Ok(StatusChange {
            status: r.status.parse().map_err(|_| super::VaultError::Corrupt {
                id: r.id,
                problem: "unknown status",
            })?,
            id: r.id,
            user_id: r.user_id,
            task_id: r.task_id,
            reason: r.status_reason.and_then(|code| code.parse().ok()),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct SealedRecord {
    id: Uuid,
    user_id: String,
    key_id: String,
    iv: Vec<u8>,
    encrypted_token: Vec<u8>,
}

impl From<SealedRecord> for SealedRow {
    fn from(r: SealedRecord) -> Self {
        SealedRow {
            id: r.id,
            user_id: r.user_id,
            sealed: Sealed {
                key_id: r.key_id,
                nonce: r.iv,
                ciphertext: r.encrypted_token,
            },
        }
    }
}

/// A claimed consent as the claim statement returns it.
#[derive(sqlx::FromRow)]
pub(super) struct ClaimRecord {
    id: Uuid,
    user_id: String,
    task_id: String,
    status: String,
    pkce_verifier: Option<Vec<u8>>,
    nonce_hash: Option<Vec<u8>>,
    redirect_uri: Option<String>,
}

impl TryFrom<ClaimRecord> for ClaimedConsent {
    type Error = super::VaultError;

    fn try_from(r: ClaimRecord) -> Result<Self, super::VaultError> {
        Ok(ClaimedConsent {
            status: r.status.parse().map_err(|()| super::VaultError::Corrupt {
                id: r.id,
                problem: "unknown status",
            })?,
            id: r.id,
            user_id: r.user_id,
            task_id: r.task_id,
            pkce_verifier: r.pkce_verifier,
            nonce_hash: r.nonce_hash,
            redirect_uri: r.redirect_uri,
        })
    }
}
