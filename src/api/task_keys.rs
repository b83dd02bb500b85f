//! Task keys: what the owner asks for, and a key as shown (its secret once, at creation).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTaskKey {
    /// For people: 1–100 printable characters.
    #[serde(default)]
    pub name: Option<String>,
    /// Space-separated scopes within the token's grant; default: the whole grant.
    #[serde(default)]
    pub scope: Option<String>,
    /// No later than the token's own expiry, which is also the default.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    /// Successful redemptions allowed (1–1000000000); default: no limit.
    #[serde(default, deserialize_with = "super::whole_number")]
    #[schema(value_type = Option<i64>)]
    pub max_uses: Option<u32>,
    /// Networks (CIDRs or addresses) the key may be used from; default: anywhere.
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
}

/// A task key, without its secret.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskKeyView {
    pub task_key_id: Uuid,
    pub persistent_token_id: Uuid,
    pub name: Option<String>,
    pub scope: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub max_uses: Option<u32>,
    pub uses: u32,
    pub allowed_cidrs: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// `active`, `revoked`, `expired` or `exhausted`.
    pub state: String,
}

/// A new key: shown once, never again.
// `Debug` leaves the key out.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedTaskKey {
    /// The key itself (`tbk_…`). Store it where the task can read it; the broker keeps only a
    /// keyed hash and cannot show it again.
    pub task_key: String,
    #[serde(flatten)]
    pub key: TaskKeyView,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskKeyList {
    pub items: Vec<TaskKeyView>,
}

impl std::fmt::Debug for CreatedTaskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedTaskKey")
            .field("task_key", &"[redacted]")
            .field("key", &self.key)
            .finish()
    }
}
