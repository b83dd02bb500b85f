//! `/api/auth/manager/offline-tokens/{id}/workloads`: the owner binds a grant to a workload
//! identity (a Kubernetes service account, a CI job), lists the bindings and revokes them. The
//! workload then redeems at the token exchange with its platform's own token.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, AuthUser};
use super::task_keys::{parse, state_of};
use crate::api::{paths, CreateWorkloadBinding, WorkloadBindingList, WorkloadBindingView};
use crate::grants::{KeyRequest, TaskKeys, WorkloadRequest};
use crate::vault::{CredentialKind, TaskKey};

impl From<TaskKey> for WorkloadBindingView {
    fn from(key: TaskKey) -> Self {
        let state = state_of(&key).to_owned();
        let identity = key
            .workload
            .unwrap_or_else(|| crate::vault::WorkloadIdentity {
                issuer: String::new(),
                subject: String::new(),
                claims: Default::default(),
            });
        Self {
            workload_binding_id: key.id,
            persistent_token_id: key.token_id,
            issuer: identity.issuer,
            subject: identity.subject,
            claims: identity.claims,
            name: key.name,
            scope: key.scope,
            expires_at: key.expires_at,
            max_uses: key.max_uses,
            uses: key.uses,
            allowed_cidrs: key.allowed_cidrs,
            created_at: key.created_at,
            last_used_at: key.last_used_at,
            revoked_at: key.revoked_at,
            state,
        }
    }
}

/// `POST /api/auth/manager/offline-tokens/{id}/workloads`
#[utoipa::path(
    post,
    path = paths::WORKLOADS,
    tag = "workload identity",
    params(("id" = uuid::Uuid, Path, description = "persistentTokenId")),
    request_body(content = CreateWorkloadBinding),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "The binding", body = WorkloadBindingView),
        (status = 400, description = "Bad id, body, issuer, subject, claim or restriction; invalid_scope beyond the grant; workload identities not enabled", body = ErrorBody),
        (status = 401, description = "No or bad bearer token", body = ErrorBody),
        (status = 403, description = "A task key, service account or workload may not manage bindings", body = ErrorBody),
        (status = 404, description = "No such token for this caller", body = ErrorBody),
        (status = 409, description = "Too many live keys and bindings on this token", body = ErrorBody),
        (status = 410, description = "The token is failed, revoked or expired", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
    )
)]
pub async fn create_workload_binding(
    State(keys): State<Arc<TaskKeys>>,
    user: AuthUser,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<CreateWorkloadBinding>,
) -> Result<(StatusCode, Json<WorkloadBindingView>), ApiError> {
    let id = parse(&id, "the token id")?;
    let binding = keys
        .bind(
            &user.subject,
            id,
            WorkloadRequest {
                issuer: request.issuer,
                subject: request.subject,
                claims: request.claims,
            },
            KeyRequest {
                name: request.name,
                scope: request.scope,
                expires_at: request.expires_at,
                max_uses: request.max_uses,
                allowed_cidrs: request.allowed_cidrs,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Json(binding.into())))
}

/// `GET /api/auth/manager/offline-tokens/{id}/workloads`
#[utoipa::path(
    get,
    path = paths::WORKLOADS,
    tag = "workload identity",
    params(("id" = uuid::Uuid, Path, description = "persistentTokenId")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The token's bindings, oldest first", body = WorkloadBindingList),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 401, description = "No or bad bearer token", body = ErrorBody),
        (status = 403, description = "A task key, service account or workload may not manage bindings", body = ErrorBody),
        (status = 404, description = "No such token for this caller", body = ErrorBody),
    )
)]
pub async fn list_workload_bindings(
    State(keys): State<Arc<TaskKeys>>,
    user: AuthUser,
    Path(id): Path<String>,
) -> Result<Json<WorkloadBindingList>, ApiError> {
    let id = parse(&id, "the token id")?;
    let items = keys
        .list(&user.subject, id, CredentialKind::Workload)
        .await?;
    Ok(Json(WorkloadBindingList {
        items: items.into_iter().map(WorkloadBindingView::from).collect(),
    }))
}

/// `DELETE /api/auth/manager/offline-tokens/{id}/workloads/{bindingId}` (idempotent)
#[utoipa::path(
    delete,
    path = paths::WORKLOAD,
    tag = "workload identity",
    params(
        ("id" = uuid::Uuid, Path, description = "persistentTokenId"),
        ("bindingId" = uuid::Uuid, Path, description = "workloadBindingId"),
    ),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Revoked (also when it already was)", body = WorkloadBindingView),
        (status = 400, description = "Not a UUID", body = ErrorBody),
        (status = 401, description = "No or bad bearer token", body = ErrorBody),
        (status = 403, description = "A task key, service account or workload may not manage bindings", body = ErrorBody),
        (status = 404, description = "No such token for this caller, or no such binding", body = ErrorBody),
    )
)]
pub async fn revoke_workload_binding(
    State(keys): State<Arc<TaskKeys>>,
    user: AuthUser,
    Path((id, binding_id)): Path<(String, String)>,
) -> Result<Json<WorkloadBindingView>, ApiError> {
    let id = parse(&id, "the token id")?;
    let binding_id = parse(&binding_id, "the binding id")?;
    let binding = keys
        .revoke(&user.subject, id, binding_id, CredentialKind::Workload)
        .await?;
    Ok(Json(binding.into()))
}
