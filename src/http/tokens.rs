//! `/api/auth/manager/offline-tokens`: a user's own tokens — status, list, revoke, re-consent.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde::Deserialize;
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiBody, ApiQuery, AuthUser};
use crate::api::{paths, ConsentResponse, ReconsentRequest, RevokeResponse, TokenPage, TokenView};
use crate::grants::{Caller, Consents, ListQuery as ReadQuery, Page, Reads, Revoked, Revoker};
use crate::vault::{Status, VaultRow};

impl From<&VaultRow> for TokenView {
    fn from(row: &VaultRow) -> Self {
        Self {
            persistent_token_id: row.id,
            task_id: row.task_id.clone(),
            status: row.status,
            status_reason: row.status_reason.as_ref().map(ToString::to_string),
            created_at: row.created_at,
            updated_at: row.updated_at,
            last_used_at: row.last_used_at,
            expires_at: row.expires_at,
            refresh_expires_at: row.health.refresh_expires_at,
            last_refresh_at: row.health.last_refresh_at,
            consecutive_failures: row.health.consecutive_failures,
            last_error: row.health.last_error.clone(),
            granted_scope: (row.status != Status::Pending)
                .then(|| crate::grants::Scope::granted(row.granted_scope.as_deref()).to_string()),
            delegates: row.delegates.clone(),
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListQuery {
    /// Only rows of this task (1–200 printable characters).
    #[serde(default)]
    task_id: Option<String>,
    /// Only rows in this state.
    #[serde(default)]
    #[param(value_type = Option<crate::vault::Status>)]
    status: Option<String>,
    /// Page size, 1–200 (default 50).
    #[serde(default)]
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// Where the page starts: a previous page's `nextOffset`.
    #[serde(default)]
    #[param(value_type = Option<i64>, minimum = 0, maximum = 4294967295_i64)]
    offset: Option<u32>,
    /// Where the page starts: a previous page's `nextCursor` (with `offset` too, that many rows
    /// further). A deep page by cursor costs what the first page does; by offset, the rows
    /// before it are stepped over.
    #[serde(default)]
    #[param(max_length = 128)]
    cursor: Option<String>,
}

/// `GET /api/auth/manager/offline-tokens/{id}`
#[utoipa::path(
    get,
    path = paths::OFFLINE_TOKEN,
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
    State(reads): State<Arc<Reads>>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<TokenView>, ApiError> {
    let row = reads.status(&user.subject, parse_id(&id)?).await?;
    Ok(Json(TokenView::from(&row)))
}

/// `GET /api/auth/manager/offline-tokens?taskId=&status=&limit=&offset=|cursor=`
#[utoipa::path(
    get,
    path = paths::OFFLINE_TOKENS,
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
    State(reads): State<Arc<Reads>>,
    user: AuthUser,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<TokenPage>, ApiError> {
    let page = reads
        .list(&ReadQuery {
            owner: Some(&user.subject),
            task_id: query.task_id.as_deref(),
            status: query.status.as_deref(),
            limit: query.limit,
            offset: query.offset,
            cursor: query.cursor.as_deref(),
        })
        .await?;
    Ok(Json(page.into()))
}

impl From<Page> for TokenPage {
    fn from(page: Page) -> Self {
        Self {
            items: page.rows.iter().map(TokenView::from).collect(),
            next_offset: page.next_offset,
            next_cursor: page.next_cursor,
        }
    }
}

/// `DELETE /api/auth/manager/offline-tokens/{id}`: revokes at the provider (unless
/// `PROVIDER_REVOCATION=none`), wipes the sealed token and marks the row revoked. Idempotent.
#[utoipa::path(
    delete,
    path = paths::OFFLINE_TOKEN,
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
    State(revoker): State<Arc<Revoker>>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<RevokeResponse>, ApiError> {
    let revoked = revoker
        .revoke(parse_id(&id)?, &Caller::User(user.subject))
        .await?;
    Ok(Json(revoked.into()))
}

impl From<Revoked> for RevokeResponse {
    fn from(revoked: Revoked) -> Self {
        Self {
            token: TokenView::from(&revoked.row),
            provider_revocation: revoked.provider.as_str().into(),
        }
    }
}

/// `POST /api/auth/manager/offline-tokens/{id}/reconsent`: a new consent URL for an existing
/// grant (failed, expired or active). Its callback re-seals into the same row, so tasks that
/// hold the id carry on without being redeployed.
#[utoipa::path(
    post,
    path = paths::RECONSENT,
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
        (status = 413, description = "Body too large", body = ErrorBody),
    )
)]
pub async fn reconsent_token(
    State(consents): State<Arc<Consents>>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiBody(body): ApiBody,
) -> Result<Json<ConsentResponse>, ApiError> {
    let id = parse_id(&id)?;
    let request: ReconsentRequest = super::extract::optional_body(&body)?;
    let started = consents
        .restart(&user.subject, id, request.redirect_uri.as_deref())
        .await?;
    Ok(Json(started.into()))
}

fn parse_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::invalid_request("the token id must be a UUID"))
}
