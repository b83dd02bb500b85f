//! `POST …/access-token`: what a caller asks for and the token it gets.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessTokenRequest {
    /// The row. A task key names its row, so with a task key this may be left out (if given,
    /// it must be that row); every other caller must send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = uuid::Uuid, required = true)]
    pub persistent_token_id: Option<String>,
    /// Narrows the token: space-separated scopes within the grant (and the task key's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(example = "openid")]
    pub scope: Option<String>,
}

// The server writes it borrowing from the minted token (nothing copied); a client reads it
// into owned strings. `Debug` leaves the token out.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessTokenResponse<'a> {
    #[schema(value_type = String)]
    pub access_token: Cow<'a, str>,
    #[schema(value_type = String)]
    pub token_type: Cow<'a, str>,
    pub expires_in: u64,
    pub expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub scope: Option<Cow<'a, str>>,
}

impl std::fmt::Debug for AccessTokenResponse<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessTokenResponse")
            .field("access_token", &"[redacted]")
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}
