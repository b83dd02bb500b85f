//! `/api/auth/manager/offline-tokens`: a user's own tokens — status, list, revoke.

use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::consent::{consent_error, ConsentResponse};
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiQuery, AuthUser};
use super::state::AppState;
use crate::grants::revoke::REVOKED_BY_USER;
use crate::grants::{RevokeError, Revoked};
use crate::vault::{ListFilter, Status, VaultRow};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;

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
    /// When the stored refresh token stops working if unused (the provider's idle limit).
    refresh_expires_at: Option<DateTime<Utc>>,
    /// When the broker last obtained tokens for this grant.
    last_refresh_at: Option<DateTime<Utc>>,
    /// Refreshes that failed in a row since the last success.
    consecutive_failures: u32,
    /// A short code for the last failure, e.g. `provider_unavailable`.
    last_error: Option<String>,
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
            refresh_expires_at: row.health.refresh_expires_at,
            last_refresh_at: row.health.last_refresh_at,
            consecutive_failures: row.health.consecutive_failures,
            last_error: row.health.last_error.clone(),
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
        .map(crate::grants::consent::validate_task_id)
        .transpose()
        .map_err(consent_error)?
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
    let revoked = state
        .revoker
        .revoke(id, Some(&user.subject), &user.subject, REVOKED_BY_USER)
        .await
        .map_err(revoke_error)?;
    Ok(Json(revoked.into()))
}

impl From<Revoked> for RevokeResponse {
    fn from(revoked: Revoked) -> Self {
        Self {
            token: TokenView::from(&revoked.row),
            provider_revocation: revoked.provider.as_str(),
        }
    }
}

pub(super) fn revoke_error(error: RevokeError) -> ApiError {
    match error {
        RevokeError::NotFound => ApiError::token_not_found(),
        RevokeError::Vault(e) => e.into(),
    }
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReconsentRequest {
    /// Where to send the browser after the callback; its origin must be allowed.
    #[serde(default)]
    redirect_uri: Option<String>,
}

/// `POST /api/auth/manager/offline-tokens/{id}/reconsent`: a new consent URL for an existing
/// grant (failed, expired or active). Its callback re-seals into the same row, so tasks that
/// hold the id carry on without being redeployed.
#[utoipa::path(
    post,
    path = "/api/auth/manager/offline-tokens/{id}/reconsent",
    tag = "tokens",
    params(("id" = uuid::Uuid, Path, description = "persistentTokenId")),
    request_body(content = Option<ReconsentRequest>, description = "Optional; `{}` or no body will do"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A consent URL for the same row", body = ConsentResponse),
        (status = 400, description = "Not a UUID, or a bad redirectUri", body = ErrorBody),
        (status = 401, description = "No or bad bearer token", body = ErrorBody),
        (status = 404, description = "No such token for this caller", body = ErrorBody),
        (status = 409, description = "Revoked (start a new consent) or still pending", body = ErrorBody),
    )
)]
pub async fn reconsent_token(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<ConsentResponse>, ApiError> {
    let id = parse_id(&id)?;
    // The body is optional: none at all, or a JSON object.
    let request: ReconsentRequest = if body.is_empty() {
        ReconsentRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "invalid_request",
                format!("The request body is invalid: {e}"),
            )
        })?
    };
    let started = state
        .consents
        .restart(&user.subject, id, request.redirect_uri.as_deref())
        .await
        .map_err(consent_error)?;
    Ok(Json(started.into()))
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::bad_request("invalid_request", "the token id must be a UUID"))
}
