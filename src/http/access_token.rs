use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::callback::REFRESH_TOKEN_PURPOSE;
use super::error::ApiError;
use super::extract::{ApiJson, AuthUser};
use super::state::AppState;
use crate::crypto::Binding;
use crate::oidc::ProviderError;
use crate::vault::{Status, VaultRow};

/// Used when the provider omits `expires_in`: short, so callers come back early, not late.
const DEFAULT_EXPIRES_IN_SECS: u64 = 60;
const REVOKED_BY_PROVIDER: &str = "revoked_by_provider";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessTokenRequest {
    persistent_token_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessTokenResponse {
    access_token: String,
    token_type: String,
    expires_in: u64,
    expires_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
}

/// `POST /api/auth/manager/access-token`: mints a fresh access token from a sealed offline token.
pub async fn issue_access_token(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<AccessTokenRequest>,
) -> Result<Json<AccessTokenResponse>, ApiError> {
    let id = Uuid::parse_str(request.persistent_token_id.trim()).map_err(|_| {
        ApiError::bad_request("invalid_request", "persistentTokenId must be a UUID")
    })?;
    let lease = state
        .vault
        .lock_for_refresh(id)
        .await?
        .ok_or_else(ApiError::token_not_found)?;
    let row = lease.row();
    // Someone else's token id is answered exactly like a missing one, so ids cannot be probed.
    if row.user_id != user.subject {
        return Err(ApiError::token_not_found());
    }
    refuse_unusable(row)?;
    let sealed = row
        .sealed
        .as_ref()
        .ok_or_else(|| ApiError::internal("an active row has no sealed token", row.id))?;
    let binding = Binding {
        purpose: REFRESH_TOKEN_PURPOSE,
        row_id: row.id,
        user_id: &row.user_id,
    };
    let refresh_token = state.keyring.open_string(sealed, binding).map_err(|e| {
        ApiError::internal(
            &format!("cannot open the sealed token of row {}", row.id),
            e,
        )
    })?;

    let grant = match state.oidc.refresh(&refresh_token).await {
        Ok(grant) => grant,
        Err(ProviderError::InvalidGrant) => {
            lease.finish_failed(REVOKED_BY_PROVIDER, Utc::now()).await?;
            tracing::warn!(%id, "provider refused the offline token; row failed");
            return Err(gone(Status::Failed, Some(REVOKED_BY_PROVIDER)));
        }
        Err(ProviderError::Unavailable(reason)) => {
            tracing::warn!(%id, %reason, "provider unavailable during refresh");
            return Err(ApiError::provider_unavailable());
        }
        Err(ProviderError::Rejected(reason)) => {
            tracing::error!(%id, %reason, "provider rejected the refresh request");
            return Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "provider_error",
                "The identity provider rejected the broker's request",
            ));
        }
    };

    // Store a rotated refresh token in the same transaction that holds the row lock: if we
    // lost it, the next refresh would present a spent token and the grant would be gone.
    let rotated = match &grant.refresh_token {
        Some(new) if new.expose_secret() != refresh_token.expose_secret() => Some(
            state
                .keyring
                .seal(new.expose_secret().as_bytes(), binding)
                .map_err(|e| ApiError::internal("sealing a rotated token failed", e))?,
        ),
        _ => None,
    };
    let now = Utc::now();
    lease.finish_used(rotated.as_ref(), now).await?;

    let expires_in = grant
        .expires_in
        .map(|d| d.as_secs())
        .unwrap_or(DEFAULT_EXPIRES_IN_SECS);
    Ok(Json(AccessTokenResponse {
        access_token: grant.access_token.expose_secret().to_owned(),
        token_type: grant.token_type,
        expires_in,
        expires_at: now + chrono::Duration::seconds(i64::try_from(expires_in).unwrap_or(0)),
        scope: grant.scope,
    }))
}

fn refuse_unusable(row: &VaultRow) -> Result<(), ApiError> {
    match row.status {
        Status::Active if row.expires_at <= Utc::now() => {
            Err(gone(Status::Expired, Some("max_age_reached")))
        }
        Status::Active => Ok(()),
        Status::Pending => Err(ApiError::new(
            StatusCode::CONFLICT,
            "token_pending",
            "Consent has not been completed yet",
        )),
        other => Err(gone(other, row.status_reason.as_deref())),
    }
}

fn gone(status: Status, reason: Option<&str>) -> ApiError {
    let code = match status {
        Status::Revoked => "token_revoked",
        Status::Expired => "token_expired",
        _ => "token_failed",
    };
    let message = match reason {
        Some(reason) => format!("This persistent token is {status}: {reason}"),
        None => format!("This persistent token is {status}"),
    };
    ApiError::new(StatusCode::GONE, code, message)
}
