use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, AuthUser};
use crate::grants::Refresher;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessTokenRequest {
    #[schema(value_type = uuid::Uuid)]
    persistent_token_id: String,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessTokenResponse {
    access_token: String,
    token_type: String,
    expires_in: u64,
    expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

/// `POST /api/auth/manager/access-token`: a valid access token from a sealed offline token.
#[utoipa::path(
    post,
    path = "/api/auth/manager/access-token",
    tag = "tokens",
    request_body = AccessTokenRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A valid access token", body = AccessTokenResponse),
        (status = 400, description = "Bad body or id", body = ErrorBody),
        (status = 401, description = "No or bad bearer token", body = ErrorBody),
        (status = 404, description = "No such token for this caller", body = ErrorBody),
        (status = 409, description = "Consent not completed", body = ErrorBody),
        (status = 410, description = "Failed, revoked or expired", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 502, description = "Provider refused the broker", body = ErrorBody),
        (status = 503, description = "Provider unreachable or busy, or the database unavailable; see Retry-After", body = ErrorBody),
    )
)]
pub async fn issue_access_token(
    State(refresher): State<Refresher>,
    user: AuthUser,
    ApiJson(request): ApiJson<AccessTokenRequest>,
) -> Result<Json<AccessTokenResponse>, ApiError> {
    let id = Uuid::parse_str(request.persistent_token_id.trim())
        .map_err(|_| ApiError::invalid_request("persistentTokenId must be a UUID"))?;
    let minted = refresher.access_token(&user.subject, id).await?;
    let expires_in = (minted.expires_at - Utc::now()).num_seconds().max(0);
    Ok(Json(AccessTokenResponse {
        access_token: minted.access_token.expose_secret().to_owned(),
        token_type: minted.token_type,
        expires_in: u64::try_from(expires_in).unwrap_or(0),
        expires_at: minted.expires_at,
        scope: minted.scope,
    }))
}
