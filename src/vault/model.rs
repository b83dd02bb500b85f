//! A vault row as the rest of the broker sees it, and the one place that reads it from a
//! database record and checks it.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::lifecycle::{Status, StatusReason};
use crate::crypto::Sealed;

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
pub(crate) fn row_columns(table: Option<&str>) -> String {
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
pub(crate) struct RowRecord {
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
    type Error = super::error::VaultError;

    fn try_from(r: RowRecord) -> Result<Self, Self::Error> {
        let status = r
            .status
            .parse()
            .map_err(|_| super::error::VaultError::Corrupt {
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
