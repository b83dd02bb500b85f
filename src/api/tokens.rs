//! A user's own rows as the API shows them: status, list pages, revocation.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Status;

/// A row as its owner may see it: no secrets.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    pub persistent_token_id: Uuid,
    pub task_id: String,
    pub status: Status,
    pub status_reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    /// When the stored refresh token stops working if unused (the provider's idle limit).
    pub refresh_expires_at: Option<DateTime<Utc>>,
    /// When the broker last obtained tokens for this grant.
    pub last_refresh_at: Option<DateTime<Utc>>,
    /// Refreshes that failed in a row since the last success.
    pub consecutive_failures: u32,
    /// A short code for the last failure, e.g. `provider_unavailable`.
    pub last_error: Option<String>,
    /// The scope the provider granted (space-separated); task keys and narrowed requests ask
    /// within it. Null while pending.
    pub granted_scope: Option<String>,
    /// Service accounts that may redeem this token.
    pub delegates: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenPage {
    pub items: Vec<TokenView>,
    /// Pass as `offset` for the next page; absent on the last page and when paging by cursor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u32>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevokeResponse {
    #[serde(flatten)]
    pub token: TokenView,
    /// `revoked`, `failed` (logged; the token is unusable here regardless), `disabled`, or
    /// `not_needed` (nothing was stored).
    pub provider_revocation: String,
}
