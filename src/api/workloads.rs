//! Workload bindings: what the owner binds a grant to, and a binding as shown. A binding holds
//! no secret: the workload proves who it is with its platform's own token.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateWorkloadBinding {
    /// One of the broker's trusted platform issuers (`WORKLOAD_ISSUERS`), exactly as the
    /// platform's tokens write `iss`.
    pub issuer: String,
    /// The platform token's `sub`, matched exactly: `system:serviceaccount:<namespace>:<name>`
    /// on Kubernetes, `repo:<owner>/<repo>:ref:refs/heads/main` on GitHub Actions.
    pub subject: String,
    /// Further claims that must match exactly, by path: a top-level claim
    /// (`repository_id`) or a dotted path into nested ones
    /// (`kubernetes.io.serviceaccount.uid`, where `kubernetes.io` is one key). Values are
    /// strings, numbers or booleans.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub claims: BTreeMap<String, Value>,
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
    /// Networks (CIDRs or addresses) the workload may redeem from; default: anywhere.
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
}

/// A workload binding.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadBindingView {
    pub workload_binding_id: Uuid,
    pub persistent_token_id: Uuid,
    pub issuer: String,
    pub subject: String,
    #[schema(value_type = Object)]
    pub claims: BTreeMap<String, Value>,
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

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkloadBindingList {
    pub items: Vec<WorkloadBindingView>,
}
