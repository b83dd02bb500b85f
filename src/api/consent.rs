//! Starting and completing a consent: `POST …/offline-consent`, `POST …/{id}/reconsent` and
//! the callback's JSON answer.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsentRequest {
    /// 1–200 printable characters.
    #[schema(example = "jupyter-task-123")]
    pub task_id: String,
    /// Where to send the browser after the callback; its origin must be allowed.
    #[serde(default)]
    pub redirect_uri: Option<String>,
    /// Service accounts (client ids listed in the broker's `DELEGATE_CLIENTS`) that may redeem
    /// this token for the user.
    #[serde(default)]
    #[schema(example = json!(["job-runner"]))]
    pub delegates: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsentResponse {
    pub consent_url: String,
    pub persistent_token_id: Uuid,
    pub state_token: String,
    pub message: String,
}

#[derive(Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReconsentRequest {
    /// Where to send the browser after the callback; its origin must be allowed.
    #[serde(default)]
    pub redirect_uri: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallbackSuccess {
    pub success: bool,
    pub persistent_token_id: Uuid,
    pub task_id: String,
    pub message: String,
}
