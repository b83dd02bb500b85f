use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::ApiError;
use super::extract::{ApiJson, AuthUser};
use super::state::{AppState, Services};
use crate::audit::Subject;
use crate::crypto::{purpose, Binding};
use crate::oidc::{ProviderError, RefreshGrant};
use crate::vault::{AuditAction, RefreshLease, Status, VaultRow};

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
    // Someone else's token id is answered exactly like a missing one, so ids cannot be probed.
    if lease.row().user_id != user.subject {
        return Err(ApiError::token_not_found());
    }
    refuse_unusable(lease.row())?;
    let refresh_token = open_refresh_token(&state, lease.row())?;
    let outcome = state.oidc.refresh(&refresh_token).await;
    let grant = settle(&state, lease, &refresh_token, outcome, &user.subject).await?;

    let now = Utc::now();
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

fn open_refresh_token(state: &Services, row: &VaultRow) -> Result<SecretString, ApiError> {
    let sealed = row
        .sealed
        .as_ref()
        .ok_or_else(|| ApiError::internal("an active row has no sealed token", row.id))?;
    let binding = Binding {
        purpose: purpose::REFRESH_TOKEN,
        row_id: row.id,
        user_id: &row.user_id,
    };
    state.keyring.open_string(sealed, binding).map_err(|e| {
        ApiError::internal(
            &format!("cannot open the sealed token of row {}", row.id),
            e,
        )
    })
}

/// Writes the provider's answer back under the row lock and journals it. A rotated refresh
/// token is sealed and stored in the same transaction that holds the lock: if it were lost, the
/// next refresh would present a spent token and the grant would be gone.
async fn settle(
    state: &Services,
    lease: Box<dyn RefreshLease>,
    presented: &SecretString,
    outcome: Result<RefreshGrant, ProviderError>,
    actor: &str,
) -> Result<RefreshGrant, ApiError> {
    let row = lease.row();
    let (id, user_id, task_id) = (row.id, row.user_id.clone(), row.task_id.clone());
    let subject = Subject {
        token_id: id,
        user_id: &user_id,
        task_id: &task_id,
    };
    let journal = &state.journal;
    match outcome {
        Ok(grant) => {
            let rotated = match &grant.refresh_token {
                Some(new) if new.expose_secret() != presented.expose_secret() => {
                    let binding = Binding {
                        purpose: purpose::REFRESH_TOKEN,
                        row_id: id,
                        user_id: &user_id,
                    };
                    Some(
                        state
                            .keyring
                            .seal(new.expose_secret().as_bytes(), binding)
                            .map_err(|e| ApiError::internal("sealing a rotated token failed", e))?,
                    )
                }
                _ => None,
            };
            lease.finish_used(rotated.as_ref(), Utc::now()).await?;
            let detail = rotated.as_ref().map(|_| "rotated");
            journal
                .record(actor, subject, AuditAction::TokenIssued, true, detail)
                .await;
            Ok(grant)
        }
        Err(ProviderError::InvalidGrant) => {
            lease.finish_failed(REVOKED_BY_PROVIDER, Utc::now()).await?;
            tracing::warn!(%id, "provider refused the offline token; row failed");
            let action = AuditAction::TokenRefreshFailed;
            journal
                .record(actor, subject, action, false, Some(REVOKED_BY_PROVIDER))
                .await;
            Err(gone(Status::Failed, Some(REVOKED_BY_PROVIDER)))
        }
        Err(ProviderError::Unavailable(reason)) => {
            // Dropping the lease rolls back: the row stays exactly as it was.
            drop(lease);
            tracing::warn!(%id, %reason, "provider unavailable during refresh");
            let action = AuditAction::TokenIssued;
            journal
                .record(actor, subject, action, false, Some("provider_unavailable"))
                .await;
            Err(ApiError::provider_unavailable())
        }
        Err(ProviderError::Rejected(reason)) => {
            drop(lease);
            tracing::error!(%id, %reason, "provider rejected the refresh request");
            Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "provider_error",
                "The identity provider rejected the broker's request",
            ))
        }
    }
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

pub(super) fn gone(status: Status, reason: Option<&str>) -> ApiError {
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
