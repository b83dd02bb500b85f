//! `/api/auth/manager/offline-tokens/{id}/task-keys`: the owner issues, lists and revokes the
//! keys their tasks redeem with.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use secrecy::ExposeSecret;
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::{optional_body, ApiBody, AuthUser};
use crate::api::{paths, CreateTaskKey, CreatedTaskKey, TaskKeyList, TaskKeyView};
use crate::grants::{KeyRequest, TaskKeys};
use crate::vault::{CredentialKind, TaskKey};

/// `active`, `revoked`, `expired` or `exhausted`: a key's or a binding's state now.
pub(super) fn state_of(key: &TaskKey) -> &'static str {
    if key.revoked_at.is_some() {
        "revoked"
    } else if key.expires_at <= Utc::now() {
        "expired"
    } else if key.max_uses.is_some_and(|max| key.uses >= max) {
        "exhausted"
    } else {
        "active"
    }
}

impl From<TaskKey> for TaskKeyView {
    fn from(key: TaskKey) -> Self {
        let state = state_of(&key);
        Self {
            task_key_id: key.id,
            persistent_token_id: key.token_id,
            name: key.name,
            scope: key.scope,
            expires_at: key.expires_at,
            max_uses: key.max_uses,
            uses: key.uses,
            allowed_cidrs: key.allowed_cidrs,
            created_at: key.created_at,
            last_used_at: key.last_used_at,
            revoked_at: key.revoked_at,
            state: state.into(),
        }
    }
}

pub(super) fn parse(raw: &str, what: &'static str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::invalid_request(format!("{what} must be a UUID")))
}

/// `POST /api/auth/manager/offline-tokens/{id}/task-keys`
#[utoipa::path(
    post,
    path = paths::TASK_KEYS,
    tag = "task keys",
    params(("id" = uuid::Uuid, Path, description = "persistentTokenId")),
    request_body(content = Option<CreateTaskKey>, description = "Optional; `{}` or no body will do"),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "A new key, shown once", body = CreatedTaskKey),
        (status = 400, description = "Bad id, body or restriction; invalid_scope beyond the grant", body = ErrorBody),
        (status = 401, description = "No or bad bearer token", body = ErrorBody),
        (status = 403, description = "A task key or service account may not manage keys", body = ErrorBody),
        (status = 404, description = "No such token for this caller", body = ErrorBody),
        (status = 409, description = "Too many live keys on this token", body = ErrorBody),
        (status = 410, description = "The token is failed, revoked or expired", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
    )
)]
pub async fn create_task_key(
    State(keys): State<Arc<TaskKeys>>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiBody(body): ApiBody,
) -> Result<(StatusCode, Json<CreatedTaskKey>), ApiError> {
    let id = parse(&id, "the token id")?;
    let request: CreateTaskKey = optional_body(&body)?;
    let issued = keys
        .create(
            &user.subject,
            id,
            KeyRequest {
                name: request.name,
                scope: request.scope,
                expires_at: request.expires_at,
                max_uses: request.max_uses,
                allowed_cidrs: request.allowed_cidrs,
            },
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedTaskKey {
            task_key: issued.secret.expose_secret().to_owned(),
            key: issued.key.into(),
        }),
    ))
}

/// `GET /api/auth/manager/offline-tokens/{id}/task-keys`
#[utoipa::path(
    get,
    path = paths::TASK_KEYS,
    tag = "task keys",
    params(("id" = uuid::Uuid, Path, description = "persistentTokenId")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The token's keys, oldest first, without secrets", body = TaskKeyList),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 401, description = "No or bad bearer token", body = ErrorBody),
        (status = 403, description = "A task key or service account may not manage keys", body = ErrorBody),
        (status = 404, description = "No such token for this caller", body = ErrorBody),
    )
)]
pub async fn list_task_keys(
    State(keys): State<Arc<TaskKeys>>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<TaskKeyList>, ApiError> {
    let id = parse(&id, "the token id")?;
    let items = keys
        .list(&user.subject, id, CredentialKind::TaskKey)
        .await?;
    Ok(Json(TaskKeyList {
        items: items.into_iter().map(TaskKeyView::from).collect(),
    }))
}

/// `DELETE /api/auth/manager/offline-tokens/{id}/task-keys/{taskKeyId}` (idempotent)
#[utoipa::path(
    delete,
    path = paths::TASK_KEY,
    tag = "task keys",
    params(
        ("id" = uuid::Uuid, Path, description = "persistentTokenId"),
        ("taskKeyId" = uuid::Uuid, Path, description = "taskKeyId"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Revoked (also when it already was)", body = TaskKeyView),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 401, description = "No or bad bearer token", body = ErrorBody),
        (status = 403, description = "A task key or service account may not manage keys", body = ErrorBody),
        (status = 404, description = "No such token for this caller, or no such key", body = ErrorBody),
    )
)]
pub async fn revoke_task_key(
    State(keys): State<Arc<TaskKeys>>,
    user: AuthUser,
    Path((id, key_id)): Path<(String, String)>,
) -> Result<Json<TaskKeyView>, ApiError> {
    let id = parse(&id, "the token id")?;
    let key_id = parse(&key_id, "the task key id")?;
    let key = keys
        .revoke(&user.subject, id, key_id, CredentialKind::TaskKey)
        .await?;
    Ok(Json(key.into()))
}
