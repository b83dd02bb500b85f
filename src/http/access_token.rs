//! `POST /api/auth/manager/access-token`: a fresh access token for an owner, a task key or a
//! delegate, from the sealed offline token.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use std::borrow::Cow;

use chrono::Utc;
use secrecy::ExposeSecret;
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::{AccessCaller, ApiJson};
use crate::api::{paths, AccessTokenRequest, AccessTokenResponse};
use crate::grants::{Minted, Scope, TokenIssuer};

// Borrows from the minted token: the answer is written straight from it, nothing copied.

impl<'a> From<&'a Minted> for AccessTokenResponse<'a> {
    fn from(minted: &'a Minted) -> Self {
        let expires_in = (minted.expires_at - Utc::now()).num_seconds().max(0);
        Self {
            access_token: Cow::Borrowed(minted.access_token.expose_secret()),
            token_type: Cow::Borrowed(&minted.token_type),
            expires_in: u64::try_from(expires_in).unwrap_or(0),
            expires_at: minted.expires_at,
            scope: minted.scope.as_deref().map(Cow::Borrowed),
        }
    }
}

/// `POST /api/auth/manager/access-token`: a valid access token from a sealed offline token, for
/// the row's owner, a service account it was delegated to, or a task holding a key for it.
#[utoipa::path(
    post,
    path = paths::ACCESS_TOKEN,
    tag = "tokens",
    request_body = AccessTokenRequest,
    security(("bearer" = []), ("taskKey" = [])),
    responses(
        (status = 200, description = "A valid access token", body = AccessTokenResponse),
        (status = 400, description = "Bad body or id, or a scope broader than allowed (invalid_scope)", body = ErrorBody),
        (status = 401, description = "No or bad bearer token; unknown, revoked, expired or used-up task key", body = ErrorBody),
        (status = 403, description = "A task key used from an address it does not allow", body = ErrorBody),
        (status = 404, description = "No such token for this caller", body = ErrorBody),
        (status = 409, description = "Consent not completed", body = ErrorBody),
        (status = 410, description = "Failed, revoked or expired", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 502, description = "Provider refused the broker (provider_error), or did not narrow the token to the scope asked for (scope_not_narrowed)", body = ErrorBody),
        (status = 503, description = "Provider unreachable or busy, or the database unavailable; see Retry-After", body = ErrorBody),
    )
)]
pub async fn issue_access_token(
    State(issuer): State<Arc<TokenIssuer>>,
    AccessCaller { caller, from }: AccessCaller,
    ApiJson(request): ApiJson<AccessTokenRequest>,
) -> Result<Response, ApiError> {
    let id = request
        .persistent_token_id
        .as_deref()
        .map(|raw| {
            Uuid::parse_str(raw.trim())
                .map_err(|_| ApiError::invalid_request("persistentTokenId must be a UUID"))
        })
        .transpose()?;
    let scope = request
        .scope
        .as_deref()
        .map(|s| Scope::parse(s).map_err(|e| ApiError::invalid_request(e.to_string())))
        .transpose()?;
    let minted = issuer.issue(caller, id, scope, from).await?;
    Ok(Json(AccessTokenResponse::from(&minted)).into_response())
}
