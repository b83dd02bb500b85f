//! `/api/auth/manager/offline-tokens`: a user's own tokens — status, list, revoke.

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiQuery, AuthUser};
use super::state::{AppState, Services};
use crate::audit::Subject;
use crate::crypto::{purpose, Binding};
use crate::vault::{AuditAction, ListFilter, RefreshLease, Status, VaultRow};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;
const REVOKED_BY_USER: &str = "revoked_by_user";

/// A row as its owner may see it: no secrets.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenView {
    persistent_token_id: Uuid,
    task_id: String,
    status: Status,
    status_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    expires_at: DateTime<Utc>,
}

impl From<&VaultRow> for TokenView {
    fn from(row: &VaultRow) -> Self {
        Self {
            persistent_token_id: row.id,
            task_id: row.task_id.clone(),
            status: row.status,
            status_reason: row.status_reason.clone(),
            created_at: row.created_at,
            updated_at: row.updated_at,
            last_used_at: row.last_used_at,
            expires_at: row.expires_at,
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    task_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    offset: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenPage {
    items: Vec<TokenView>,
    /// Pass as `offset` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_offset: Option<u32>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevokeResponse {
    #[serde(flatten)]
    token: TokenView,
    /// `revoked`, `failed` (logged; the token is unusable here regardless), `disabled`, or
    /// `not_needed` (nothing was stored).
    provider_revocation: &'static str,
}

/// `GET /api/auth/manager/offline-tokens/{id}`
#[utoipa::path(
    get,
    path = "/api/auth/manager/offline-tokens/{id}",
    tag = "tokens",
    params(("id" = uuid::Uuid, Path, description = "persistentTokenId")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The token's status", body = TokenView),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 401, description = "No or bad bearer token", body = ErrorBody),
        (status = 404, description = "No such token for this caller", body = ErrorBody),
    )
)]
pub async fn get_token_status(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<TokenView>, ApiError> {
    let id = parse_id(&id)?;
    let row = state
        .vault
        .find(id)
        .await?
        .filter(|row| row.user_id == user.subject)
        .ok_or_else(ApiError::token_not_found)?;
    Ok(Json(TokenView::from(&row)))
}

/// `GET /api/auth/manager/offline-tokens?taskId=&status=&limit=&offset=`
#[utoipa::path(
    get,
    path = "/api/auth/manager/offline-tokens",
    tag = "tokens",
    params(ListQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's tokens, newest first", body = TokenPage),
        (status = 400, description = "Bad parameters", body = ErrorBody),
        (status = 401, description = "No or bad bearer token", body = ErrorBody),
    )
)]
pub async fn list_tokens(
    State(state): State<AppState>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<TokenPage>, ApiError> {
    let status = query
        .status
        .as_deref()
        .map(|s| {
            s.parse::<Status>().map_err(|()| {
                ApiError::bad_request(
                    "invalid_request",
                    "status must be pending, active, failed, revoked or expired",
                )
            })
        })
        .transpose()?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(
            "invalid_request",
            "limit must be between 1 and 200",
        ));
    }
    let task_id = query
        .task_id
        .as_deref()
        .map(super::consent::validate_task_id)
        .transpose()?
        .map(str::to_owned);
    let offset = query.offset.unwrap_or(0);
    // One extra row tells whether another page exists.
    let filter = ListFilter {
        user_id: Some(user.subject.clone()),
        task_id,
        status,
        limit: limit + 1,
        offset,
    };
    let mut rows = state.vault.list(&filter).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    Ok(Json(TokenPage {
        items: rows.iter().map(TokenView::from).collect(),
        next_offset: more.then(|| offset.saturating_add(limit)),
    }))
}

/// `DELETE /api/auth/manager/offline-tokens/{id}`: revokes at the provider (unless
/// `PROVIDER_REVOCATION=none`), wipes the sealed token and marks the row revoked. Idempotent.
#[utoipa::path(
    delete,
    path = "/api/auth/manager/offline-tokens/{id}",
    tag = "tokens",
    params(("id" = uuid::Uuid, Path, description = "persistentTokenId")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Revoked (also when it already was)", body = RevokeResponse),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 401, description = "No or bad bearer token", body = ErrorBody),
        (status = 404, description = "No such token for this caller", body = ErrorBody),
    )
)]
pub async fn revoke_token(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<RevokeResponse>, ApiError> {
    let id = parse_id(&id)?;
    let lease = state
        .vault
        .lock_for_refresh(id)
        .await?
        .ok_or_else(ApiError::token_not_found)?;
    if lease.row().user_id != user.subject {
        return Err(ApiError::token_not_found());
    }
    revoke_locked(&state, lease, &user.subject, REVOKED_BY_USER)
        .await
        .map(Json)
}

/// Revokes a locked row (the caller checked who may): at the provider, then here, journaled as
/// `actor`. Revoking a revoked row changes nothing.
pub(super) async fn revoke_locked(
    state: &Services,
    lease: Box<dyn RefreshLease>,
    actor: &str,
    why: &str,
) -> Result<RevokeResponse, ApiError> {
    if lease.row().status == Status::Revoked {
        return Ok(RevokeResponse {
            token: TokenView::from(lease.row()),
            provider_revocation: "not_needed",
        });
    }
    let provider_revocation = revoke_at_provider(state, lease.row()).await;
    let (id, task_id, user_id) = {
        let row = lease.row();
        (row.id, row.task_id.clone(), row.user_id.clone())
    };
    lease.finish_revoked(why, Utc::now()).await?;
    let subject = Subject {
        token_id: id,
        user_id: &user_id,
        task_id: &task_id,
    };
    // e.g. "revoked_by_user:provider_revoked": what happened here and at the provider.
    let reason = format!("{why}:provider_{provider_revocation}");
    state
        .journal
        .record(
            actor,
            subject,
            AuditAction::TokenRevoked,
            true,
            Some(&reason),
        )
        .await;
    let row = state
        .vault
        .find(id)
        .await?
        .ok_or_else(|| ApiError::internal("a revoked row vanished", id))?;
    Ok(RevokeResponse {
        token: TokenView::from(&row),
        provider_revocation,
    })
}

/// Revokes the stored offline token at the provider. Failure does not stop the local revocation:
/// the user asked for the token to be gone, and wiping our copy already makes it unusable here.
async fn revoke_at_provider(state: &Services, row: &VaultRow) -> &'static str {
    let Some(sealed) = &row.sealed else {
        return "not_needed";
    };
    if !state.policy.provider_revocation {
        return "disabled";
    }
    let binding = Binding {
        purpose: purpose::REFRESH_TOKEN,
        row_id: row.id,
        user_id: &row.user_id,
    };
    let token = match state.keyring.open_string(sealed, binding) {
        Ok(token) => token,
        Err(e) => {
            tracing::error!(id = %row.id, error = %e, "cannot open a token to revoke it");
            return "failed";
        }
    };
    match state.oidc.revoke_refresh_token(&token).await {
        Ok(()) => "revoked",
        Err(e) => {
            tracing::warn!(id = %row.id, error = %e, "provider revocation failed");
            "failed"
        }
    }
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::bad_request("invalid_request", "the token id must be a UUID"))
}
