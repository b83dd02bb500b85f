use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;
use uuid::Uuid;

use super::error::{ApiError, ErrorBody};
use super::extract::ApiQuery;
use crate::grants::{Callbacks, Failure, ProviderReply};
use crate::vault::ClaimedConsent;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    /// The authorization code; absent when the provider answered with `error`.
    #[serde(default)]
    #[param(value_type = Option<String>)]
    code: Option<SecretString>,
    /// The state of the consent being completed (one use, short-lived).
    #[serde(default)]
    #[param(required = true, min_length = 1, max_length = 512)]
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
        (status = 410, description = "The token was revoked or expired while the consent completed", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Provider unreachable", body = ErrorBody),
    )
)]
pub async fn complete_offline_consent(
    State(callbacks): State<Arc<Callbacks>>,
    ApiQuery(query): ApiQuery<CallbackQuery>,
) -> Result<Response, ApiError> {
    let reply = ProviderReply {
        code: query.code,
        state: query.state,
        error: query.error,
        iss: query.iss,
    };
    let completed = callbacks.complete(&reply).await?;
    Ok(match completed.outcome {
        Ok(()) => respond_success(&completed.consent),
        Err(failure) => respond_failure(&completed.consent, failure),
    })
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
    ApiError::from(failure).into_response()
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
