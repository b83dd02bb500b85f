use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use url::Url;
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::ApiQuery;
use super::state::{AppState, Services};
use crate::audit::Subject;
use crate::crypto::{purpose, sha256, Binding, Sealed};
use crate::oidc::{JwtError, ProviderError};
use crate::vault::{AuditAction, ClaimedConsent};

const MAX_STATE_LEN: usize = 512;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    #[serde(default)]
    #[param(value_type = Option<String>)]
    code: Option<SecretString>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    /// RFC 9207: the issuer that sent the browser back, to defeat mix-up attacks.
    #[serde(default)]
    iss: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallbackSuccess {
    success: bool,
    persistent_token_id: Uuid,
    task_id: String,
    message: &'static str,
}

/// Why a claimed consent failed: stored as the row's `status_reason`, answered to the browser.
struct Failure {
    status: StatusCode,
    reason: String,
    message: &'static str,
}

impl Failure {
    fn new(status: StatusCode, reason: &str, message: &'static str) -> Self {
        Self {
            status,
            reason: reason.to_owned(),
            message,
        }
    }

    fn bad(reason: &str, message: &'static str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason, message)
    }
}

/// `GET /api/auth/manager/offline-callback`: where the provider sends the browser back.
#[utoipa::path(
    get,
    path = "/api/auth/manager/offline-callback",
    tag = "consent",
    params(CallbackQuery),
    responses(
        (status = 200, description = "Offline token stored", body = CallbackSuccess),
        (status = 303, description = "Back to the consent's redirectUri, with persistentTokenId and status"),
        (status = 400, description = "Bad, used or expired state; or the consent failed", body = ErrorBody),
        (status = 403, description = "Someone else signed in at the provider", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Provider unreachable", body = ErrorBody),
    )
)]
pub async fn complete_offline_consent(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<CallbackQuery>,
) -> Result<Response, ApiError> {
    let raw_state = query
        .state
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("invalid_request", "The state parameter is required")
        })?;
    if raw_state.len() > MAX_STATE_LEN {
        return Err(invalid_state());
    }
    let now = Utc::now();
    let consent = state
        .vault
        .claim_consent(&sha256(raw_state.as_bytes()), now)
        .await?
        .ok_or_else(invalid_state)?;

    match obtain_sealed_token(&state, &consent, &query).await {
        Ok(sealed) => {
            if !state
                .vault
                .activate(consent.id, &sealed, Utc::now())
                .await?
            {
                return Err(ApiError::internal(
                    "a claimed consent stopped being pending",
                    consent.id,
                ));
            }
            tracing::info!(id = %consent.id, user = %consent.user_id, "offline token stored");
            state
                .journal
                .record(
                    &consent.user_id,
                    subject(&consent),
                    AuditAction::ConsentCompleted,
                    true,
                    None,
                )
                .await;
            Ok(respond_success(&consent))
        }
        Err(failure) => {
            state
                .vault
                .fail_pending(consent.id, &failure.reason, Utc::now())
                .await?;
            tracing::warn!(id = %consent.id, reason = %failure.reason, "consent failed");
            state
                .journal
                .record(
                    &consent.user_id,
                    subject(&consent),
                    AuditAction::ConsentFailed,
                    false,
                    Some(&failure.reason),
                )
                .await;
            Ok(respond_failure(&consent, failure))
        }
    }
}

fn subject(consent: &ClaimedConsent) -> Subject<'_> {
    Subject {
        token_id: consent.id,
        user_id: &consent.user_id,
        task_id: &consent.task_id,
    }
}

fn invalid_state() -> ApiError {
    ApiError::bad_request(
        "invalid_state",
        "The consent state is unknown, already used, or expired; start the consent again",
    )
}

/// Turns the provider's answer into a sealed offline token, or says why not.
async fn obtain_sealed_token(
    services: &Services,
    consent: &ClaimedConsent,
    query: &CallbackQuery,
) -> Result<Sealed, Failure> {
    if let Some(error) = &query.error {
        return Err(Failure::bad(
            &provider_error_reason(error),
            "The identity provider did not grant consent",
        ));
    }
    if let Some(iss) = &query.iss {
        if iss.trim_end_matches('/') != services.policy.issuer {
            return Err(Failure::bad(
                "issuer_mismatch",
                "The response came from another identity provider",
            ));
        }
    }
    let code = query
        .code
        .as_ref()
        .filter(|c| !c.expose_secret().is_empty())
        .ok_or_else(|| Failure::bad("missing_code", "The provider sent no authorization code"))?;

    let binding = Binding {
        purpose: purpose::PKCE_VERIFIER,
        row_id: consent.id,
        user_id: &consent.user_id,
    };
    let verifier = consent
        .pkce_verifier
        .as_deref()
        .ok_or(())
        .and_then(|blob| Sealed::from_bytes(blob).map_err(|_| ()))
        .and_then(|sealed| {
            services
                .keyring
                .open_string(&sealed, binding)
                .map_err(|_| ())
        })
        .map_err(|()| {
            tracing::error!(id = %consent.id, "cannot open the sealed PKCE verifier");
            Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Internal server error",
            )
        })?;

    let grant = services
        .oidc
        .exchange_code(code, &verifier)
        .await
        .map_err(|error| {
            tracing::warn!(id = %consent.id, %error, "code exchange failed");
            match error {
                ProviderError::Unavailable { .. } => Failure::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "provider_unavailable",
                    "The identity provider cannot be reached; start the consent again later",
                ),
                _ => Failure::bad(
                    "code_exchange_failed",
                    "The identity provider refused the authorization code",
                ),
            }
        })?;

    let id_token = grant
        .id_token
        .ok_or_else(|| Failure::bad("missing_id_token", "The provider returned no ID token"))?;
    let nonce_hash = consent.nonce_hash.as_deref().unwrap_or_default();
    let claims = services
        .verifier
        .verify_id_token(id_token.expose_secret(), nonce_hash)
        .await
        .map_err(|error| {
            tracing::warn!(id = %consent.id, %error, "ID token rejected");
            match error {
                JwtError::NonceMismatch => {
                    Failure::bad("nonce_mismatch", "The ID token belongs to another request")
                }
                _ => Failure::bad("invalid_id_token", "The ID token did not verify"),
            }
        })?;
    // The consent was requested by one user; the provider may have been signed into by another
    // (shared browser, or an attacker's lure). Storing that token under this user would let
    // them act as someone else.
    if claims.sub != consent.user_id {
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            "subject_mismatch",
            "Consent was given by a different user than the one who requested it",
        ));
    }
    if let Some(scopes) = &grant.scopes {
        if !scopes.iter().any(|s| s == "offline_access") {
            return Err(Failure::bad(
                "offline_access_not_granted",
                "The provider did not grant offline_access",
            ));
        }
    }
    let refresh_token = grant.refresh_token.ok_or_else(|| {
        Failure::bad(
            "missing_refresh_token",
            "The provider returned no refresh token",
        )
    })?;

    services
        .keyring
        .seal(
            refresh_token.expose_secret().as_bytes(),
            Binding {
                purpose: purpose::REFRESH_TOKEN,
                ..binding
            },
        )
        .map_err(|error| {
            tracing::error!(id = %consent.id, %error, "sealing the offline token failed");
            Failure::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Internal server error",
            )
        })
}

/// Provider error codes are ASCII words (RFC 6749 §4.1.2.1); anything else is not stored as-is.
fn provider_error_reason(error: &str) -> String {
    let well_formed = !error.is_empty()
        && error.len() <= 64
        && error.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if well_formed {
        error.to_owned()
    } else {
        "provider_error".to_owned()
    }
}

fn respond_success(consent: &ClaimedConsent) -> Response {
    if let Some(response) = redirect_back(consent, "active", None) {
        return response;
    }
    Json(CallbackSuccess {
        success: true,
        persistent_token_id: consent.id,
        task_id: consent.task_id.clone(),
        message: "Offline token successfully obtained and stored",
    })
    .into_response()
}

fn respond_failure(consent: &ClaimedConsent, failure: Failure) -> Response {
    if let Some(response) = redirect_back(consent, "failed", Some(&failure.reason)) {
        return response;
    }
    let code: &'static str = match failure.reason.as_str() {
        "provider_unavailable" => "provider_unavailable",
        "internal_error" => "internal_error",
        "subject_mismatch" => "subject_mismatch",
        _ => "consent_failed",
    };
    let message = match code {
        "consent_failed" => format!("{} ({})", failure.message, failure.reason),
        _ => failure.message.to_owned(),
    };
    ApiError::new(failure.status, code, message).into_response()
}

/// A 303 to the consent's `redirectUri`, already checked against the allowed origins.
fn redirect_back(consent: &ClaimedConsent, status: &str, reason: Option<&str>) -> Option<Response> {
    let mut url = Url::parse(consent.redirect_uri.as_deref()?).ok()?;
    {
        let mut query = url.query_pairs_mut();
        query
            .append_pair("persistentTokenId", &consent.id.to_string())
            .append_pair("status", status);
        if let Some(reason) = reason {
            query.append_pair("reason", reason);
        }
    }
    Some((StatusCode::SEE_OTHER, [(header::LOCATION, url.to_string())]).into_response())
}
