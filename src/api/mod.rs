//! The broker's wire contract, shared by the server (`http/`) and its Rust client (`client/`):
//! where each route lives ([`paths`]) and the JSON each one takes and gives, field for field.
//! The server builds these from its domain types (in `http/`); the client reads them back.

mod access;
mod consent;
mod error;
pub mod paths;
mod task_keys;
mod tokens;
mod workloads;

/// A row's status, as the API writes it.
pub use crate::vault::Status;
pub use access::{AccessTokenRequest, AccessTokenResponse};
pub use consent::{CallbackSuccess, ConsentRequest, ConsentResponse, ReconsentRequest};
pub use error::ErrorBody;
pub use task_keys::{CreateTaskKey, CreatedTaskKey, TaskKeyList, TaskKeyView};
pub use tokens::{RevokeResponse, TokenPage, TokenView};
pub use workloads::{CreateWorkloadBinding, WorkloadBindingList, WorkloadBindingView};

use serde::Deserialize;

/// A count in a JSON body: JSON has one number type, so `38.0` is the integer 38 (as JSON Schema
/// says too); fractions, negatives and numbers beyond `u32` are refused.
pub fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = number.as_u64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= f64::from(u32::MAX))
            .map(|f| f as u64)
    });
    whole
        .and_then(|n| u32::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("{number} is not a whole number in range")))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    #[test]
    fn an_access_token_answer_reads_back_as_written_and_debug_hides_the_token() {
        let written = AccessTokenResponse {
            access_token: Cow::Borrowed("eyJ.secret.sig"),
            token_type: Cow::Borrowed("Bearer"),
            expires_in: 300,
            expires_at: chrono::Utc::now(),
            scope: None,
        };
        let json = serde_json::to_string(&written).unwrap();
        assert!(json.contains("\"accessToken\":\"eyJ.secret.sig\""));
        assert!(!json.contains("scope"), "an absent scope is left out");
        let read: AccessTokenResponse<'static> = serde_json::from_str(&json).unwrap();
        assert_eq!(read.access_token, "eyJ.secret.sig");
        assert_eq!(read.expires_at, written.expires_at);
        assert!(!format!("{read:?}").contains("secret"));
    }

    #[test]
    fn a_created_task_key_hides_its_secret_from_debug() {
        let json = serde_json::json!({
            "taskKey": "tbk_secret", "taskKeyId": uuid::Uuid::nil(),
            "persistentTokenId": uuid::Uuid::nil(), "name": null, "scope": null,
            "expiresAt": "2030-01-01T00:00:00Z", "maxUses": null, "uses": 0,
            "allowedCidrs": [], "createdAt": "2026-01-01T00:00:00Z", "lastUsedAt": null,
            "revokedAt": null, "state": "active",
        });
        let created: CreatedTaskKey = serde_json::from_value(json).unwrap();
        assert_eq!(created.task_key, "tbk_secret");
        assert!(!format!("{created:?}").contains("tbk_secret"));
    }

    #[test]
    fn a_request_without_a_row_leaves_the_field_out() {
        let request = AccessTokenRequest {
            persistent_token_id: None,
            scope: Some("openid".into()),
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            serde_json::json!({ "scope": "openid" })
        );
    }
}
