use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use url::Url;
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, AuthUser};
use super::state::{AppState, Policy};
use crate::audit::Subject;
use crate::crypto::{purpose, random_token, sha256, Binding};
use crate::vault::{AuditAction, NewConsent};

const MAX_TASK_ID_LEN: usize = 200;
const MAX_REDIRECT_URI_LEN: usize = 2048;
/// 256 bits of randomness for `state` and `nonce`.
const ONE_TIME_VALUE_BYTES: usize = 32;

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConsentRequest {
    /// 1–200 printable characters.
    #[schema(example = "jupyter-task-123")]
    task_id: String,
    /// Where to send the browser after the callback; its origin must be allowed.
    #[serde(default)]
    redirect_uri: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConsentResponse {
    consent_url: String,
    persistent_token_id: Uuid,
    state_token: String,
    message: &'static str,
}

/// `POST /api/auth/manager/offline-consent`: starts a consent for the calling user.
#[utoipa::path(
    post,
    path = "/api/auth/manager/offline-consent",
    tag = "consent",
    request_body = ConsentRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "A pending consent", body = ConsentResponse),
        (status = 400, description = "Bad body, taskId or redirectUri", body = ErrorBody),
        (status = 401, description = "No or bad bearer token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
    )
)]
pub async fn request_offline_consent(
    State(state): State<AppState>,
    user: AuthUser,
    ApiJson(request): ApiJson<ConsentRequest>,
) -> Result<(StatusCode, Json<ConsentResponse>), ApiError> {
    let task_id = validate_task_id(&request.task_id)?;
    let redirect_uri = request
        .redirect_uri
        .as_deref()
        .map(|uri| validate_redirect_uri(uri, &state.policy))
        .transpose()?;

    let id = Uuid::new_v4();
    let state_token = random_token(ONE_TIME_VALUE_BYTES);
    let nonce = random_token(ONE_TIME_VALUE_BYTES);
    let authorization = state.oidc.authorization_request(&state_token, &nonce);
    let sealed_verifier = state
        .keyring
        .seal(
            authorization.pkce_verifier.expose_secret().as_bytes(),
            Binding {
                purpose: purpose::PKCE_VERIFIER,
                row_id: id,
                user_id: &user.subject,
            },
        )
        .map_err(|e| ApiError::internal("sealing a PKCE verifier failed", e))?;

    let now = Utc::now();
    state
        .vault
        .create_pending(&NewConsent {
            id,
            user_id: user.subject.clone(),
            task_id: task_id.to_owned(),
            state_hash: sha256(state_token.as_bytes()),
            state_expires_at: now + state.policy.consent_ttl,
            pkce_verifier: sealed_verifier.to_bytes(),
            nonce_hash: sha256(nonce.as_bytes()),
            redirect_uri,
            expires_at: now + state.policy.offline_token_max_age,
            created_at: now,
            metadata: serde_json::json!({ "createdBy": "api" }),
        })
        .await?;
    tracing::info!(%id, user = %user.subject, task_id, "consent requested");
    let subject = Subject {
        token_id: id,
        user_id: &user.subject,
        task_id,
    };
    state
        .journal
        .record(
            &user.subject,
            subject,
            AuditAction::ConsentRequested,
            true,
            None,
        )
        .await;

    Ok((
        StatusCode::CREATED,
        Json(ConsentResponse {
            consent_url: authorization.url.into(),
            persistent_token_id: id,
            state_token,
            message: "Visit this URL to grant offline_access consent, then the token will be automatically stored",
        }),
    ))
}

pub(super) fn validate_task_id(task_id: &str) -> Result<&str, ApiError> {
    let trimmed = task_id.trim();
    if trimmed.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_request",
            "taskId must not be empty",
        ));
    }
    if trimmed.chars().count() > MAX_TASK_ID_LEN || trimmed.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_request",
            "taskId must be at most 200 printable characters",
        ));
    }
    Ok(trimmed)
}

/// A consent may send the browser back only to an origin the operator listed: anything else
/// would make the broker an open redirector that lends its name to phishing links.
fn validate_redirect_uri(uri: &str, policy: &Policy) -> Result<String, ApiError> {
    let refuse = || {
        ApiError::bad_request(
            "invalid_redirect_uri",
            "redirectUri must be an absolute http(s) URL on an allowed origin",
        )
    };
    if uri.len() > MAX_REDIRECT_URI_LEN {
        return Err(refuse());
    }
    let parsed = Url::parse(uri).map_err(|_| refuse())?;
    let allowed = matches!(parsed.scheme(), "http" | "https")
        && parsed.username().is_empty()
        && parsed.password().is_none()
        && policy.allowed_redirect_origins.contains(&parsed.origin());
    if allowed {
        // Store the parsed form: it is what was checked, whatever quirks the raw text had.
        Ok(parsed.into())
    } else {
        Err(refuse())
    }
}
